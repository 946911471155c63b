"""Where each boxed object stands, in metres, from the depth the proposer already sampled.

ROS-free and numpy/OpenCV only. A robot that picks an object needs its place in the camera's
frame, not only its box in the image. :func:`place_objects` reads it off what
:func:`~.depth_proposals.propose_depth_boxes` found in the frame (the support plane, the
sampled depth and each sample's height above the plane), so it costs no second pass over
the depth image: for each box, the grid samples inside it that stand above the plane
(``min_height_m`` plus their noise allowance, up to ``max_height_m``) are grouped into
8-connected pieces on the grid, and pieces whose tops stand at about the same height are
taken together (one object cut apart by a nearer one in front of it); the group whose
extent on the grid fills most of the box is the object (the box was drawn around it; an
object beside it reaches into an edge of the box, one in front of it covers a part, and
the object's visible rest spans the box), together with the samples of other pieces that lie within the object's own
horizontal extent (a mug's handle cut off by a depth step). Its samples, back-projected
with the camera's lens model, are expressed in the support plane's frame: *up* (the plane's
normal), *along* (the camera's viewing direction laid on the plane) and *across* (the third
axis). Then, robust to noise and flying pixels (2nd to 98th percentiles; the top at the 95th):

* the object's **height** is its top above the plane (it stands on the plane);
* its **centre** lies halfway up, at the middle of its samples' extent along and across
  (its top and the side facing the camera together span its depth; a box seen from low
  down shows only its front, and the centre then lies at that face);
* its **size** is ``[across, along, height]`` (metres).

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
from .depth_cloud import back_project
from .depth_config import DepthProposalConfig
from .depth_proposals import DepthProposals, box_cells

__all__ = ["ObjectPlacement", "place_objects", "MIN_PLACEMENT_SAMPLES", "SAME_TOP_M",
           "SAME_TOP_FRAC"]

#: A box needs at least this many raised grid samples on its object to be placed.
MIN_PLACEMENT_SAMPLES = 6

#: Pieces of a box whose tops differ by at most this (metres) or this fraction of the
#: higher top are taken for parts of one object (cut apart by a nearer one).
SAME_TOP_M, SAME_TOP_FRAC = 0.015, 0.25

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
    """

    position: tuple[float, float, float]
    size: tuple[float, float, float]
    samples: int


def _plane_axes(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit ``along`` (the optical axis laid on the plane) and ``across`` axes of a plane
    with unit ``normal``; a camera looking straight down takes its image's y axis."""
    view = np.array([0.0, 0.0, 1.0])
    along = view - float(view @ normal) * normal
    if np.linalg.norm(along) < 1e-3:
        along = np.array([0.0, 1.0, 0.0]) - float(normal[1]) * normal
    along /= np.linalg.norm(along)
    return along, np.cross(normal, along)


def _object_mask(raised: np.ndarray, heights: np.ndarray) -> np.ndarray | None:
    """The object's samples among a box's ``raised`` grid samples (``heights``: above the
    plane; module docstring), or None when they are too few."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(raised.view(np.uint8), 8)
    if count <= 1:
        return None
    pieces = range(1, count)
    tops = np.array([np.percentile(heights[labels == i], _TOP) for i in pieces])
    left, top = stats[1:, cv2.CC_STAT_LEFT], stats[1:, cv2.CC_STAT_TOP]
    right = left + stats[1:, cv2.CC_STAT_WIDTH]
    bottom = top + stats[1:, cv2.CC_STAT_HEIGHT]
    sizes = stats[1:, cv2.CC_STAT_AREA]
    best, best_key = None, None
    for i in range(count - 1):
        # the pieces of about this piece's height: one object cut apart by a nearer one
        same = np.abs(tops - tops[i]) <= max(SAME_TOP_M, SAME_TOP_FRAC * float(tops[i]))
        cover = (right[same].max() - left[same].min()) * (bottom[same].max() - top[same].min())
        key = (int(cover), int(sizes[same].sum()))
        if best_key is None or key > best_key:
            best, best_key = same, key
    assert best is not None
    if best_key[1] < MIN_PLACEMENT_SAMPLES:
        return None
    return np.isin(labels, np.flatnonzero(best) + 1)


def _place(depth: DepthProposals, box: Sequence[int], cfg: DepthProposalConfig,
           axes: tuple[np.ndarray, np.ndarray, np.ndarray, float]) -> ObjectPlacement | None:
    """The placement of one box's object (None: too few raised samples)."""
    assert depth.height_grid is not None and depth.depth_grid is not None
    window = box_cells(depth, box)
    heights = depth.height_grid[window]
    if heights.size == 0:
        return None
    allowance = depth.allowance_grid[window] if depth.allowance_grid is not None else 0.0
    h = np.nan_to_num(heights, nan=-1.0)
    raised = (h > cfg.min_height_m + allowance) & (h < cfg.max_height_m) \
        & (depth.depth_grid[window] > 0)
    mask = _object_mask(raised, h)
    if mask is None:
        return None
    normal, along, across, offset = axes
    rows, cols = np.nonzero(raised)
    r0, c0 = window[0].start or 0, window[1].start or 0
    assert depth.camera is not None
    points = back_project(depth.camera, rows + r0, cols + c0,
                          depth.depth_grid[window][rows, cols].astype(np.float64),
                          depth.stride, depth.offset)
    on = mask[rows, cols]
    a, c = points @ along, points @ across
    a_lo, a_hi = np.percentile(a[on], [_LOW, _HIGH])
    c_lo, c_hi = np.percentile(c[on], [_LOW, _HIGH])
    # other pieces within the object's own extent (two grid steps of margin): the same
    # object cut by a depth step (a handle, a rim); a neighbour reaching into the box lies
    # beyond it
    margin = 2.0 * depth.stride * float(np.median(points[on, 2])) / depth.camera.focal
    near = (np.abs(a - 0.5 * (a_lo + a_hi)) <= 0.5 * (a_hi - a_lo) + margin) \
        & (np.abs(c - 0.5 * (c_lo + c_hi)) <= 0.5 * (c_hi - c_lo) + margin)
    keep = on | near
    if np.count_nonzero(keep) < MIN_PLACEMENT_SAMPLES:
        return None
    a, c, up = a[keep], c[keep], points[keep] @ normal + offset
    a_lo, a_hi = np.percentile(a, [_LOW, _HIGH])
    c_lo, c_hi = np.percentile(c, [_LOW, _HIGH])
    top = float(np.percentile(up, _TOP))
    mid_a, mid_c = 0.5 * (a_lo + a_hi), 0.5 * (c_lo + c_hi)
    centre = mid_a * along + mid_c * across + (0.5 * top - offset) * normal
    return ObjectPlacement(position=tuple(round(float(v), 4) for v in centre),
                           size=(round(float(c_hi - c_lo), 4), round(float(a_hi - a_lo), 4),
                                 round(top, 4)),
                           samples=int(np.count_nonzero(keep)))


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
    return [_place(depth, [int(round(v)) for v in box], cfg, axes) for box in boxes]
