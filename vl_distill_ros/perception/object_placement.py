"""Where each boxed object stands, in metres, from the depth the proposer already sampled.

ROS-free and numpy/OpenCV only. A robot that picks an object needs its place in the camera's
frame, not only its box in the image. :func:`place_objects` reads it off what
:func:`~.depth_proposals.propose_depth_boxes` found in the frame (the support plane, the
sampled depth and each sample's height above the plane), so it costs no second pass over
the depth image: for each box, the grid samples inside it that stand above the plane
(``min_height_m`` plus their noise allowance, up to ``max_height_m``) are grouped into
8-connected pieces on the grid, and pieces whose tops stand at about the same height with a
nearer piece between them are taken together (one object cut apart by a nearer one in
front of it); the group whose
extent on the grid fills most of the box is the object (the box was drawn around it; an
object beside it reaches into an edge of the box, one in front of it covers a part, and
the object's visible rest spans the box), together with the samples of other pieces that
lie within the object's own horizontal extent (a mug's handle cut off by a depth step).
Its samples, back-projected with the camera's lens model, are expressed in the support
plane's frame: *up* (the plane's normal), *along* (the camera's viewing direction laid on
the plane) and *across* (the third axis, to the image's right). Then, robust to noise and
flying pixels (2nd to 98th percentiles; the top at the 95th):

* the object's **height** is its top above the plane (it stands on the plane);
* its **centre** lies halfway up, at the middle of its samples' extent along and across
  (its top and the side facing the camera together span its depth; a box seen from low
  down shows only its front, and the centre then lies at that face); for a flat object
  (top under ``FLAT_TOP_M``: a knife, a wrench, whose thin parts fall under the height
  band) the centre along and across is that of its image box laid on the plane at half
  its height;
* its **size** is ``[across, along, height]`` (metres; of a flat object, only its parts
  that stand above the height band);
* its box's **orientation** in the camera's frame is the quaternion ``(x, y, z, w)`` of the
  box axes *across*, *along* and *up* (a right-handed frame whose x, y, z extents are the
  size's three values): with the centre, a 3-D box standing on the table, as
  ``vision_msgs/BoundingBox3D`` holds one.

The centre is reported in the camera's optical frame (x right, y down, z forward), the
frame of the image's header. Boxes with too few raised samples (a hole in the depth, a
black or shiny object, a flat one under the height band) get no placement.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from .boxes import Box
from .camera_model import CameraIntrinsics
from .depth_cloud import back_project
from .depth_config import DepthProposalConfig
from .depth_proposals import DepthProposals, box_cells

__all__ = ["ObjectPlacement", "place_objects", "quaternion_of", "MIN_PLACEMENT_SAMPLES",
           "SAME_TOP_M", "SAME_TOP_FRAC", "OCCLUDER_M", "FLAT_TOP_M", "MAX_PIECES"]

#: A box needs at least this many raised grid samples on its object to be placed.
MIN_PLACEMENT_SAMPLES = 6

#: Pieces of a box whose tops differ by at most this (metres) or this fraction of the
#: higher top are taken for parts of one object cut apart by a nearer one ...
SAME_TOP_M, SAME_TOP_FRAC = 0.015, 0.25
#: ... when another piece at least this much nearer (metres) lies between them.
OCCLUDER_M = 0.01
#: At most this many pieces of a box (the largest) are judged.
MAX_PIECES = 32
#: The samples taken for a box's object that lie along one side of the box, narrower than
#: this fraction of it, are a neighbour reaching in (the object has no depth): not placed.
EDGE_SLIVER_FRAC = 0.3
#: An object whose top stands lower than this (metres) is flat: its centre on the table is
#: its box's laid on the plane (its thin parts fall under the height band).
FLAT_TOP_M = 0.04

#: Percentiles of the robust extents along and across (flying pixels and noise stay
#: outside them) and of the top.
_LOW, _HIGH = 2.0, 98.0
_TOP = 95.0


@dataclass(frozen=True)
class ObjectPlacement:
    """Where one boxed object stands (see the module docstring).

    Attributes:
        position: ``(x, y, z)`` of its centre in the camera's optical frame (metres).
        size: ``(across, along, height)`` extent (metres) in the support plane's frame.
        samples: raised grid samples it was measured from.
        orientation: ``(x, y, z, w)`` quaternion of the box axes (across, along, up) in
            the camera's optical frame.
    """

    position: tuple[float, float, float]
    size: tuple[float, float, float]
    samples: int
    orientation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)


def _plane_axes(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit ``along`` (the optical axis laid on the plane) and ``across`` (to the image's
    right) axes of a plane with unit ``normal``; a camera looking straight down takes its
    image's y axis for ``along``."""
    view = np.array([0.0, 0.0, 1.0])
    along = view - float(view @ normal) * normal
    if np.linalg.norm(along) < 1e-3:
        along = np.array([0.0, 1.0, 0.0]) - float(normal[1]) * normal
    along /= np.linalg.norm(along)
    return along, np.cross(along, normal)


def quaternion_of(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """The unit quaternion ``(x, y, z, w)`` of a 3x3 rotation matrix (``w >= 0``)."""
    m = np.asarray(rotation, np.float64)
    # the largest of 4 w^2, 4 x^2, 4 y^2, 4 z^2 gives a well-conditioned square root
    t = np.array([1.0 + m[0, 0] + m[1, 1] + m[2, 2], 1.0 + m[0, 0] - m[1, 1] - m[2, 2],
                  1.0 - m[0, 0] + m[1, 1] - m[2, 2], 1.0 - m[0, 0] - m[1, 1] + m[2, 2]])
    i = int(np.argmax(t))
    r = 0.5 * np.sqrt(max(t[i], 1e-12))
    f = 0.25 / r
    if i == 0:
        q = (f * (m[2, 1] - m[1, 2]), f * (m[0, 2] - m[2, 0]), f * (m[1, 0] - m[0, 1]), r)
    elif i == 1:
        q = (r, f * (m[0, 1] + m[1, 0]), f * (m[0, 2] + m[2, 0]), f * (m[2, 1] - m[1, 2]))
    elif i == 2:
        q = (f * (m[0, 1] + m[1, 0]), r, f * (m[1, 2] + m[2, 1]), f * (m[0, 2] - m[2, 0]))
    else:
        q = (f * (m[0, 2] + m[2, 0]), f * (m[1, 2] + m[2, 1]), r, f * (m[1, 0] - m[0, 1]))
    out = np.array(q) / np.linalg.norm(q)
    out = -out if out[3] < 0 else out
    return tuple(float(v) for v in out)  # type: ignore[return-value]


def _quantiles(values: np.ndarray, percents: Sequence[float]) -> np.ndarray:
    """``np.percentile(values, percents)`` (linear interpolation) by one sort: the same
    numbers at a fraction of its cost on the few hundred samples of a box."""
    v = np.sort(values, axis=None)
    pos = np.asarray(percents, np.float64) * (0.01 * (v.size - 1))
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, v.size - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def _piece_tops(labels: np.ndarray, heights: np.ndarray, count: int) -> np.ndarray:
    """The :data:`_TOP` percentile of the heights of each piece ``1 .. count - 1`` of a
    label image (nearest rank below), all pieces in one sort."""
    lab = labels.ravel()
    on = lab > 0
    lab, h = lab[on], heights.ravel()[on]
    order = np.lexsort((h, lab))
    sizes = np.bincount(lab, minlength=count)[1:]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return h[order][starts + ((sizes - 1) * (_TOP / 100.0)).astype(np.int64)]


def _object_pieces(raised: np.ndarray, heights: np.ndarray, z: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """The pieces of a box's ``raised`` grid samples (``heights``: above the plane, ``z``:
    depth) and which of them are the object (module docstring): the label image and a
    boolean per label (label 0, the rest, is never the object); None when they are too
    few."""
    count, labels, stats, centres = cv2.connectedComponentsWithStats(
        raised.view(np.uint8), 8)
    if count <= 1:
        return None
    chosen = np.zeros(count, bool)
    if count == 2:                          # one piece (the common case)
        if stats[1, cv2.CC_STAT_AREA] < MIN_PLACEMENT_SAMPLES:
            return None
        chosen[1] = True
        return labels, chosen
    # the largest MAX_PIECES pieces are judged (noise leaves specks; the rest never count)
    ids = np.argsort(-stats[1:, cv2.CC_STAT_AREA], kind="stable")[:MAX_PIECES] + 1
    tops = _piece_tops(labels, heights, count)[ids - 1]
    left, top = stats[ids, cv2.CC_STAT_LEFT], stats[ids, cv2.CC_STAT_TOP]
    right = left + stats[ids, cv2.CC_STAT_WIDTH]
    bottom = top + stats[ids, cv2.CC_STAT_HEIGHT]
    sizes = stats[ids, cv2.CC_STAT_AREA]
    near = (np.bincount(labels.ravel(), weights=np.where(raised, z, 0.0).ravel(),
                        minlength=count)[ids] / np.maximum(sizes, 1))   # mean depth
    # the pieces of about each piece's height that a nearer piece cuts off it: (i, j)
    same = np.abs(tops[:, None] - tops[None, :]) <= np.maximum(
        SAME_TOP_M, SAME_TOP_FRAC * np.maximum(tops[:, None], tops[None, :]))
    group = same & (_cut_apart(centres[ids], near) | np.eye(ids.size, dtype=bool))
    big = np.iinfo(np.int32).max
    extent = ((np.where(group, right, -big).max(1) - np.where(group, left, big).min(1))
              * (np.where(group, bottom, -big).max(1) - np.where(group, top, big).min(1)))
    held = (group * sizes).sum(1)
    best = int(np.lexsort((held, extent))[-1])     # the group that fills most of the box
    if held[best] < MIN_PLACEMENT_SAMPLES:
        return None
    chosen[ids[group[best]]] = True
    return labels, chosen


def _edge_sliver(mask: np.ndarray) -> bool:
    """Whether the chosen samples (``mask``, the box's grid cells) are a strip along a side
    of the box, under :data:`EDGE_SLIVER_FRAC` of its width (or height) and touching that
    side: a neighbour reaching into the box of an object that has no depth of its own
    (black, shiny), not the object the box was drawn around."""
    rows, cols = np.nonzero(mask)
    h, w = mask.shape
    for lo, hi, size in ((cols.min(), cols.max(), w), (rows.min(), rows.max(), h)):
        if size >= 4 and hi - lo + 1 < EDGE_SLIVER_FRAC * size and (lo == 0 or hi == size - 1):
            return True
    return False


def _cut_apart(centre: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """For each pair of pieces (their centres on the grid and mean depths), whether they may
    be one object cut apart by a nearer one: another piece, :data:`OCCLUDER_M` nearer than
    both, has its centre between theirs (in columns or in rows)."""
    lo = np.minimum(centre[:, None, :], centre[None, :, :])[:, :, None, :]   # (n, n, 1, 2)
    hi = np.maximum(centre[:, None, :], centre[None, :, :])[:, :, None, :]
    inside = (centre[None, None] > lo) & (centre[None, None] < hi)             # (n, n, k, 2)
    nearer = depth[None, None, :] < np.minimum(depth[:, None], depth[None, :])[:, :, None] \
        - OCCLUDER_M
    return (nearer & inside.any(-1)).any(-1)


def _place(depth: DepthProposals, box: Sequence[int], cfg: DepthProposalConfig,
           axes: tuple[np.ndarray, np.ndarray, np.ndarray, float],
           orientation: tuple[float, float, float, float]) -> ObjectPlacement | None:
    """The placement of one box's object (None: too few raised samples)."""
    assert depth.height_grid is not None and depth.depth_grid is not None
    assert depth.camera is not None
    window = box_cells(depth, box)
    heights = depth.height_grid[window]          # NaN where depth is not usable
    if heights.size == 0:
        return None
    allowance = depth.allowance_grid[window] if depth.allowance_grid is not None else 0.0
    z_grid = depth.depth_grid[window]
    raised = (heights > cfg.min_height_m + allowance) & (heights < cfg.max_height_m) \
        & (z_grid > 0)
    found = _object_pieces(raised, heights, z_grid)
    if found is None:
        return None
    labels, chosen = found
    normal, along, across, offset = axes
    rows, cols = np.nonzero(raised)
    points = back_project(depth.camera, rows + (window[0].start or 0),
                          cols + (window[1].start or 0),
                          z_grid[rows, cols].astype(np.float64), depth.stride, depth.offset)
    up = heights[rows, cols].astype(np.float64)
    on = chosen[labels[rows, cols]]
    a, c = points @ along, points @ across
    a_lo, a_hi = _quantiles(a[on], [_LOW, _HIGH])
    c_lo, c_hi = _quantiles(c[on], [_LOW, _HIGH])
    if not on.all():
        # other pieces within the object's own extent (two grid steps of margin): the same
        # object cut by a depth step (a handle, a rim); a neighbour reaching into the box
        # lies beyond it
        margin = 2.0 * depth.stride * float(points[on, 2].mean()) / depth.camera.focal
        keep = on | ((np.abs(a - 0.5 * (a_lo + a_hi)) <= 0.5 * (a_hi - a_lo) + margin)
                     & (np.abs(c - 0.5 * (c_lo + c_hi)) <= 0.5 * (c_hi - c_lo) + margin))
        a, c, up = a[keep], c[keep], up[keep]
        a_lo, a_hi = _quantiles(a, [_LOW, _HIGH])
        c_lo, c_hi = _quantiles(c, [_LOW, _HIGH])
    top = float(_quantiles(up, [_TOP])[0])
    if top >= FLAT_TOP_M and _edge_sliver(chosen[labels]):
        # only a neighbour reaching in: the boxed object has no depth (a flat object's few
        # raised samples may lie at one end of its box; its centre comes from the box)
        return None
    mid_a, mid_c = 0.5 * (a_lo + a_hi), 0.5 * (c_lo + c_hi)
    if top < FLAT_TOP_M:
        # a flat object (a knife, a wrench): its thin parts fall under the height band, but
        # its box, laid on the plane at half its height, outlines it
        on_plane = _box_on_plane(depth.camera, box, normal, offset, 0.5 * top)
        if on_plane is not None:
            mid_a = 0.5 * float((on_plane @ along).min() + (on_plane @ along).max())
            mid_c = 0.5 * float((on_plane @ across).min() + (on_plane @ across).max())
    centre = mid_a * along + mid_c * across + (0.5 * top - offset) * normal
    if not (np.isfinite(centre).all() and np.isfinite([a_lo, a_hi, c_lo, c_hi, top]).all()):
        return None       # never a NaN into ~/labels (JSON has none) or a pose
    return ObjectPlacement(position=tuple(round(float(v), 4) for v in centre),
                           size=(round(float(c_hi - c_lo), 4), round(float(a_hi - a_lo), 4),
                                 round(top, 4)),
                           samples=int(up.size), orientation=orientation)


def _box_on_plane(camera: CameraIntrinsics, box: Sequence[int], normal: np.ndarray,
                  offset: float, height: float) -> np.ndarray | None:
    """The corners of ``box`` (colour pixels) laid on the plane ``height`` above the support
    plane (``(4, 3)`` camera-frame points, along the rays the lens bends onto the corner
    pixels), or None when a corner's ray does not meet it in front of the camera."""
    x, y, w, h = box
    cols = np.clip([x, x + w - 1, x, x + w - 1], 0, camera.width - 1)
    rows = np.clip([y, y, y + h - 1, y + h - 1], 0, camera.height - 1)
    rays = back_project(camera, np.asarray(rows), np.asarray(cols), np.ones(4), 1, 0)
    along_normal = rays @ normal
    if not np.isfinite(along_normal).all() or np.any(np.abs(along_normal) < 1e-6):
        return None       # a corner no ray of the lens model reaches (NaN), or parallel
    t = (height - offset) / along_normal
    if np.any(t <= 0):
        return None
    return rays * t[:, None]


def place_objects(depth: DepthProposals, boxes: Sequence[Box], cfg: DepthProposalConfig
                  ) -> list[ObjectPlacement | None]:
    """One :class:`ObjectPlacement` (or None) per box of ``boxes`` (colour pixels), from
    what the depth proposer found in the frame (its plane, sampled depth, heights and
    camera). All None when it found no support plane."""
    if depth.plane is None or depth.height_grid is None or depth.depth_grid is None \
            or depth.camera is None:
        return [None] * len(boxes)
    normal = np.asarray(depth.plane[:3], np.float64)
    offset = float(depth.plane[3])
    along, across = _plane_axes(normal)
    axes = (normal, along, across, offset)
    orientation = tuple(round(v, 6) for v in quaternion_of(
        np.column_stack([across, along, normal])))
    return [_place(depth, [int(round(v)) for v in box], cfg, axes, orientation)
            for box in boxes]
