"""A registration check between a depth image and the colour image it should be registered
to (numpy and OpenCV, no ROS).

A driver's "aligned" depth can sit a few pixels off the colour image (a calibration that
drifted, a hardware registration tuned for another range). The depth proposer then puts its
boxes a few pixels off the objects, and cuts the objects' edges against the table, which
costs found objects (see the README). :func:`shift_scores` scores each shift by how well it
lays the depth image's occluding edges (both sides of a depth step) onto the colour image's
edges (chamfer matching on a grid of every ``stride``-th pixel); one frame can mislead it
(3-5% of single frames here), so :class:`DepthRegistration` averages a camera's frames
(the error is the camera's) before :func:`best_shift` picks a shift, which
:func:`shift_depth` applies.

Stereo and structured-light cameras also *fatten* foreground edges: their matching windows
carry the nearer surface a few pixels into the background all around an object.
:func:`fattening_scores` scores how far inside the depth's foreground edges the colour
edges lie (0, 1, 2, ... grid cells), the same camera average picks the width
(:func:`best_fattening`), and :func:`strip_fattening` takes that rim off the depth.
"""
from __future__ import annotations

import threading
from typing import Callable

import cv2
import numpy as np

__all__ = ["DepthRegistration", "best_fattening", "best_shift", "fattening_scores",
           "shift_depth", "shift_scores", "strip_fattening"]

#: Colour edges (Canny on the grey image, after a light blur) and the distance to them that
#: still counts, in grid cells (a depth edge farther from any colour edge scores this).
_CANNY = (30.0, 80.0)
_CAP_CELLS = 4.0
#: A depth step: the neighbour is farther by more than this fraction of the depth.
_STEP_FRAC = 0.04
#: Depth edge cells needed to judge, and how much better (relative) than no shift the best
#: shift must match the colour edges to be taken.
MIN_EDGE_CELLS = 80
MIN_GAIN = 0.25
#: At most this many edge cells are scored (evenly spaced): bounds the work and memory of
#: one frame (edge cells x shifts).
MAX_EDGE_CELLS = 4000
#: Fattening: a foreground edge cell has a 4-neighbour farther by more than this (m); the
#: distance to the colour edges is capped at this many cells (most depth edges have none
#: near: the table's far edge, noise) ...
FATTENING_STEP_M = 0.02
_FAT_CAP_CELLS = 1.5
#: ... and a width is taken when it matches them this much better (relative) than none.
FATTENING_MIN_GAIN = 0.02


def shift_depth(depth: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``depth`` moved ``dx`` pixels right and ``dy`` down (either may be negative), with
    no depth (0) where nothing moved in."""
    out = np.zeros_like(depth)
    h, w = depth.shape[:2]
    if abs(dx) >= w or abs(dy) >= h:
        return out
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        depth[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def _depth_edges(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the grid cells on either side of a depth step between two
    measured cells (both sides: the colour edge lies between them)."""
    edge = np.zeros(z.shape, bool)
    for axis in (0, 1):
        a = z[:-1, :] if axis == 0 else z[:, :-1]
        b = z[1:, :] if axis == 0 else z[:, 1:]
        step = (a > 0) & (b > 0) & (np.abs(a - b) > _STEP_FRAC * np.minimum(a, b))
        if axis == 0:
            edge[:-1, :] |= step
            edge[1:, :] |= step
        else:
            edge[:, :-1] |= step
            edge[:, 1:] |= step
    return np.nonzero(edge)


def _colour_edge_distance(image_rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Per cell of a grid of ``shape``: the distance (cells) to the nearest edge of the
    colour image resized to it (Canny on the grey image after a light blur)."""
    grey = cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2GRAY)
    grey = cv2.resize(grey, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    edges = cv2.Canny(cv2.GaussianBlur(grey, (0, 0), 0.8), *_CANNY)
    return cv2.distanceTransform((edges == 0).view(np.uint8), cv2.DIST_L2, 3)


#: The distance (cells) to the colour edges per cell of a grid of a shape (see
#: :func:`_colour_edge_distance`): what :func:`shift_scores` and :func:`fattening_scores`
#: score depth edges on.
EdgeDistance = Callable[[tuple[int, int]], np.ndarray]


def _edge_distance(image_rgb: np.ndarray) -> EdgeDistance:
    """:func:`_colour_edge_distance` of ``image_rgb``, computed once per grid shape (the
    fattening and the shift scores of one frame share it)."""
    known: dict[tuple[int, int], np.ndarray] = {}

    def distance(shape: tuple[int, int]) -> np.ndarray:
        key = (int(shape[0]), int(shape[1]))
        if key not in known:
            known[key] = _colour_edge_distance(image_rgb, key)
        return known[key]
    return distance


def _at_most_scored(*cells: np.ndarray) -> tuple[np.ndarray, ...]:
    """The edge cells' arrays (rows, columns, ...), cut to at most :data:`MAX_EDGE_CELLS`
    evenly spaced cells."""
    if cells[0].size <= MAX_EDGE_CELLS:
        return cells
    keep = np.linspace(0, cells[0].size - 1, MAX_EDGE_CELLS).astype(np.int64)
    return tuple(a[keep] for a in cells)


def _grid(depth_m: np.ndarray, stride: int) -> np.ndarray:
    """``depth_m`` every ``stride`` pixels, float32, 0 where not finite."""
    return np.nan_to_num(np.asarray(depth_m, np.float32)[::stride, ::stride], nan=0.0,
                         posinf=0.0, neginf=0.0)


def shift_scores(image_rgb: np.ndarray, depth_m: np.ndarray, search_px: int,
                 stride: int = 2, distance: EdgeDistance | None = None) -> np.ndarray | None:
    """How well each shift of ``depth_m`` lays its occluding edges onto the edges of
    ``image_rgb`` (same size): a ``(2r + 1, 2r + 1)`` array (``r = search_px // stride``;
    row: dy, column: dx, in ``stride`` steps, centre: no shift) of the mean distance, in
    grid cells and capped, from the moved depth edges to the nearest colour edge (lower is
    better); ``None`` when the depth has fewer than ``MIN_EDGE_CELLS`` edge cells or
    ``r`` < 1. ``distance``: the image's :func:`_edge_distance` when already at hand.

    Raises:
        ValueError: the image and the depth differ in size, or ``stride`` < 1.
    """
    if image_rgb.shape[:2] != depth_m.shape[:2]:
        raise ValueError(f"image {image_rgb.shape[:2]} and depth {depth_m.shape[:2]} differ")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    r = int(search_px) // int(stride)
    if r < 1:
        return None
    z = _grid(depth_m, stride)
    rows, cols = _depth_edges(z)
    if rows.size < MIN_EDGE_CELLS:
        return None
    rows, cols = _at_most_scored(rows, cols)
    dist = (distance or _edge_distance(image_rgb))(z.shape)
    dist = np.pad(np.minimum(dist, _CAP_CELLS), r, constant_values=_CAP_CELLS)
    steps = np.arange(-r, r + 1)
    sy, sx = np.meshgrid(steps, steps, indexing="ij")
    # moving the depth by s puts its edge cell q at q + s
    score = dist[rows[:, None] + r + sy.reshape(1, -1),
                 cols[:, None] + r + sx.reshape(1, -1)].mean(axis=0)
    return score.reshape(sy.shape)


def _foreground_edges(z: np.ndarray) -> tuple[np.ndarray, ...]:
    """Rows, columns and inward steps ``(dr, dc)`` of the grid cells that have a
    4-neighbour farther by more than :data:`FATTENING_STEP_M` (both measured): a
    foreground edge, whose inside lies away from that neighbour."""
    found = []
    measured = z > 0
    for axis in (1, 0):   # each pair of neighbours once: a step up one way is down the other
        a, b = (z[:, :-1], z[:, 1:]) if axis else (z[:-1, :], z[1:, :])
        both = measured[:, :-1] & measured[:, 1:] if axis else measured[:-1, :] & measured[1:, :]
        rise = b - a   # (a - b is exactly -rise)
        for sign in (1, -1):   # the farther neighbour after (1) or before (-1) the cell
            dr, dc = (0, sign) if axis else (sign, 0)
            r, c = np.nonzero(both & (rise > FATTENING_STEP_M if sign > 0
                                      else rise < -FATTENING_STEP_M))
            found.append((r + max(-dr, 0), c + max(-dc, 0), np.full(r.size, -dr),
                          np.full(r.size, -dc)))
    return tuple(np.concatenate(parts) for parts in zip(*found))


def fattening_scores(image_rgb: np.ndarray, depth_m: np.ndarray, search_px: int,
                     stride: int = 2, distance: EdgeDistance | None = None
                     ) -> np.ndarray | None:
    """How well the colour edges lie 0, 1, ..., ``search_px // stride`` grid cells inside
    the foreground edges of ``depth_m`` (same size as ``image_rgb``): the mean distance,
    in cells and capped, from each foreground edge cell moved that far inward (away from
    its farther neighbour) to the nearest colour edge (lower is better); ``None`` when
    there are fewer than ``MIN_EDGE_CELLS`` such cells or the range is under one cell
    (``distance``: as :func:`shift_scores`')."""
    if image_rgb.shape[:2] != depth_m.shape[:2]:
        raise ValueError(f"image {image_rgb.shape[:2]} and depth {depth_m.shape[:2]} differ")
    r = int(search_px) // int(stride)
    if r < 1:
        return None
    z = _grid(depth_m, stride)
    rows, cols, dr, dc = _foreground_edges(z)
    if rows.size < MIN_EDGE_CELLS:
        return None
    rows, cols, dr, dc = _at_most_scored(rows, cols, dr, dc)
    dist = np.minimum((distance or _edge_distance(image_rgb))(z.shape), _FAT_CAP_CELLS)
    dist = np.pad(dist, r, constant_values=_FAT_CAP_CELLS)
    return np.array([dist[rows + r + f * dr, cols + r + f * dc].mean() for f in range(r + 1)])


def best_fattening(scores: np.ndarray, stride: int = 2,
                   min_gain: float = FATTENING_MIN_GAIN) -> int:
    """The width (pixels) of the lowest of :func:`fattening_scores`' ``scores``, or 0 when
    it is not at least ``min_gain`` (relative) below no width's."""
    f = int(np.argmin(scores))
    return f * int(stride) if scores[f] <= (1.0 - min_gain) * scores[0] else 0


def strip_fattening(depth_m: np.ndarray, width_px: int) -> np.ndarray:
    """``depth_m`` without the rim ``width_px`` wide inside every foreground edge (no depth
    there, 0): the pixels that have a pixel farther by more than :data:`FATTENING_STEP_M`
    within that distance."""
    depth = np.asarray(depth_m, np.float32)
    if width_px <= 0:
        return depth
    z = depth if np.isfinite(depth).all() else \
        np.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width_px + 1, 2 * width_px + 1))
    far = cv2.dilate(z, disc)
    far -= np.float32(FATTENING_STEP_M)
    rim = far > z
    rim &= z > 0
    out = z.copy()
    out[rim] = 0.0
    return out


def best_shift(scores: np.ndarray, stride: int = 2, min_gain: float = MIN_GAIN
               ) -> tuple[int, int]:
    """The shift ``(dx, dy)`` in pixels of the lowest of :func:`shift_scores`' ``scores``,
    or ``(0, 0)`` when it is not at least ``min_gain`` (relative) below no shift's."""
    r = scores.shape[0] // 2
    dy, dx = np.unravel_index(int(np.argmin(scores)), scores.shape)
    if scores[dy, dx] > (1.0 - min_gain) * scores[r, r]:
        return 0, 0
    return (int(dx) - r) * int(stride), (int(dy) - r) * int(stride)


class DepthRegistration:
    """The registration check of one camera over its frames: an exponential moving
    average of :func:`shift_scores` (the error is the camera's, not the frame's), and the
    shift it gives once ``min_frames`` frames were scored; likewise of
    :func:`fattening_scores` and the fattening width (scored first: the shift is scored
    on the depth without that rim).
    After ``2 * min_frames`` scored frames only every ``every``-th frame is scored (a
    camera's registration changes slowly; scoring costs ~4 ms per 640x480 frame here).

    Args:
        search_px: largest shift tried, pixels.
        stride: grid step (the shifts and widths are multiples of it).
        decay: weight of the older frames in the average.
        min_frames: frames scored before any shift or width is applied.
        every: then one frame in this many is scored.
        fattening_px: largest fattening width tried, pixels (0: not checked).
    """

    def __init__(self, search_px: int, stride: int = 2, decay: float = 0.9,
                 min_frames: int = 5, every: int = 10, fattening_px: int = 0) -> None:
        if not 0.0 <= decay < 1.0 or int(min_frames) < 1 or int(every) < 1:
            raise ValueError(f"need 0 <= decay < 1, min_frames >= 1 and every >= 1, got "
                             f"{decay}, {min_frames}, {every}")
        self.search_px, self.stride = int(search_px), int(stride)
        self.fattening_px = int(fattening_px)
        self.decay, self.min_frames, self.every = float(decay), int(min_frames), int(every)
        self.scores: np.ndarray | None = None
        self.fat_scores: np.ndarray | None = None
        self.frames = 0
        self.fat_frames = 0
        self.calls = 0
        self.shift: tuple[int, int] = (0, 0)
        #: The camera's fattening width (pixels) that :func:`strip_fattening` takes off.
        self.fattening = 0
        self._lock = threading.Lock()

    def update(self, image_rgb: np.ndarray, depth_m: np.ndarray) -> tuple[int, int]:
        """Score this frame (when due) and return the camera's current shift ``(dx, dy)``
        (its fattening width is then :attr:`fattening`)."""
        with self._lock:
            self.calls += 1
            counts = [n for n, on in ((self.frames, self.search_px >= self.stride),
                                      (self.fat_frames, self.fattening_px >= self.stride))
                      if on]
            due = any(n < 2 * self.min_frames for n in counts) or self.calls % self.every == 0
        if not due:
            return self.shift
        distance = _edge_distance(image_rgb)   # the colour edges once for both scores
        if self.fattening_px >= self.stride:   # symmetric: a shift moves it both ways
            fat = fattening_scores(image_rgb, depth_m, self.fattening_px, self.stride,
                                   distance)
            with self._lock:
                self._add_fattening(fat)
                width = self.fattening
            if width > 0:   # a fattened rim would pull the shift towards one side
                depth_m = strip_fattening(depth_m, width)
        scores = shift_scores(image_rgb, depth_m, self.search_px, self.stride, distance)
        with self._lock:
            return self._add(scores)

    def _add(self, scores: np.ndarray | None) -> tuple[int, int]:
        """Average in one frame's scores (None: the frame could not be scored)."""
        if scores is not None:  # always (2r + 1, 2r + 1): search_px and stride are fixed
            self.scores = scores if self.scores is None else \
                self.decay * self.scores + (1.0 - self.decay) * scores
            self.frames += 1
        if self.scores is not None and self.frames >= self.min_frames:
            self.shift = best_shift(self.scores, self.stride)
        return self.shift

    def _add_fattening(self, scores: np.ndarray | None) -> None:
        """Average in one frame's fattening scores (None: it could not be scored)."""
        if scores is not None:
            self.fat_scores = scores if self.fat_scores is None else \
                self.decay * self.fat_scores + (1.0 - self.decay) * scores
            self.fat_frames += 1
        if self.fat_scores is not None and self.fat_frames >= self.min_frames:
            self.fattening = best_fattening(self.fat_scores, self.stride)
