"""Fusion of the depth proposer's boxes with the box network's and the colour proposer's.

ROS-free and numpy only. :func:`fuse_proposals` takes what
:func:`.depth_proposals.propose_depth_boxes` found in a frame (its boxes, support plane and
height grid) and the boxes found in the colour image: the box network's first (it separates
objects in contact that depth joins), then the depth boxes and colour boxes that depth does
not contradict (:func:`fuse_depth_colour`: a hole, a reflective, black or flat object,
standing on the support surface). The parameters are the ``fuse_*`` fields of
:class:`~.depth_config.DepthProposalConfig`.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from .boxes import Box, box_containment, box_iou
from .camera_model import CameraIntrinsics
from .depth_cloud import back_project
from .depth_config import DepthProposalConfig
from .depth_proposals import DepthProposals, box_cells
from .proposal_config import ProposalConfig

__all__ = ["fuse_proposals", "fuse_proposals_with_views", "fusion_colour_config",
           "fuse_depth_colour", "refine_network_boxes", "whole_from_depth", "split_by_colour",
           "flat_on_support",
           "FLAT_MIN_SAMPLES",
           "SUPPORT_MIN_RAISED", "WEAK_MATCH_IOU", "SPLIT_CONTAINMENT", "SPLIT_MAX_AREA",
           "SPLIT_MAX_OVERLAP", "WHOLE_PIECE_CONTAINMENT", "WHOLE_MAX_PIECES", "LOOSE_INSIDE"]


def fuse_proposals(depth: DepthProposals, colour_boxes: Sequence[Box],
                   cfg: DepthProposalConfig, max_count: int,
                   network_boxes: Sequence[Box] = (),
                   weak_network_boxes: Sequence[Box] = ()) -> list[Box]:
    """The box network's boxes (``network_boxes``, found in the colour frame, see
    :mod:`.box_net`) first, then the boxes of :func:`fuse_depth_colour` whose IoU with each
    of them is at most ``fuse_network_iou``: the network separates objects in contact
    that depth joins, and depth adds what the network missed. A network box whose raised
    samples stand beyond the support surface (:func:`_on_support`, as the colour boxes of
    :func:`fuse_depth_colour`; only where depth found ``fuse_network_support_min_boxes``
    boxes itself) is left out, and so is one lying flat on it
    (:func:`flat_on_support`: a print on the table). Without a support plane the colour boxes
    alone; at most ``max_count``. With ``fuse_network_refine_iou``, a network box that a
    depth box matches is moved halfway to it (:func:`refine_network_boxes`). A box left
    out beside the network's is added when one of ``weak_network_boxes`` (the network's
    boxes under its threshold, ``fuse_network_weak_score``) matches it and no network box
    does (:func:`_confirmed_by_weak`). Before all that, a depth box replaces the network's
    boxes of pieces of its object (:func:`whole_from_depth`, ``fuse_network_whole_cover``)."""
    return fuse_proposals_with_views(depth, colour_boxes, cfg, max_count, network_boxes,
                                     weak_network_boxes)[0]


def fuse_proposals_with_views(depth: DepthProposals, colour_boxes: Sequence[Box],
                              cfg: DepthProposalConfig, max_count: int,
                              network_boxes: Sequence[Box] = (),
                              weak_network_boxes: Sequence[Box] = ()
                              ) -> tuple[list[Box], list[Box]]:
    """:func:`fuse_proposals`' boxes and, one for each, the box the classifier's window is
    made from: for a network box that ``fuse_network_refine_iou`` moved, the network's
    own box (the student reads the window around the box as the network drew it, as it
    was calibrated; the refined box is where the object is), for every other box the box
    itself."""
    fused = fuse_depth_colour(depth, colour_boxes, cfg, max_count)
    judge_support = len(depth.boxes) >= cfg.fuse_network_support_min_boxes
    network = [b for b in network_boxes or ()
               if (not judge_support or _on_support(depth, b, cfg))
               and not flat_on_support(depth, b, cfg)] \
        if depth.plane is not None else []
    if not network:
        return fused, list(fused)
    network = whole_from_depth(depth, network, cfg)
    refined = refine_network_boxes(network, depth.boxes, cfg, depth)
    weak = list(weak_network_boxes or ()) if cfg.fuse_network_weak_score > 0 else []
    rest = [b for b in fused if _beside_network(b, refined, cfg, depth)
            or _confirmed_by_weak(b, weak, refined)]
    return (refined + rest)[:max_count], (network + rest)[:max_count]


#: :func:`whole_from_depth`: a network box is a piece of a depth box when it lies at least
#: this fraction of its area inside it.
WHOLE_PIECE_CONTAINMENT = 0.9
#: :func:`whole_from_depth`: at most this many network pieces make one depth box whole.
WHOLE_MAX_PIECES = 2


def whole_from_depth(depth: DepthProposals, network_boxes: Sequence[Box],
                     cfg: DepthProposalConfig) -> list[Box]:
    """``network_boxes`` with the pieces of one object replaced by its depth box: a depth
    box that every network box touching it lies inside (:data:`WHOLE_PIECE_CONTAINMENT` of
    its area; one to :data:`WHOLE_MAX_PIECES` of them), whose tops reach about its own
    (:func:`_heights_differ`), and which together cover less than
    ``fuse_network_whole_cover`` of it. The network boxed a part (a thin tool's handle, a
    cracker box's print) of what depth sees whole; two objects in contact that depth joins
    each have their own network box, covering most of the joined box, and stay as they are.
    ``network_boxes`` itself with ``fuse_network_whole_cover`` 0 or no height grid."""
    out = list(network_boxes)
    if cfg.fuse_network_whole_cover <= 0 or depth.height_grid is None or not out:
        return out
    for d in depth.boxes:
        touching = [n for n in out if box_containment(n, d) > 0]   # sharing any area
        if not 1 <= len(touching) <= WHOLE_MAX_PIECES or any(
                box_containment(n, d) < WHOLE_PIECE_CONTAINMENT for n in touching):
            continue
        if _cover(d, touching) >= cfg.fuse_network_whole_cover:
            continue
        top = _box_top(depth, d, cfg)
        tops = [_box_top(depth, [int(round(v)) for v in n], cfg) for n in touching]
        if top <= 0 or any(t <= 0 or _heights_differ(t, top, cfg) for t in tops):
            continue
        first = out.index(touching[0])        # the whole box takes its first piece's place
        out = [tuple(int(v) for v in d) if i == first else n for i, n in enumerate(out)
               if i == first or n not in touching]
    return out


#: :func:`_confirmed_by_weak`: the IoU at which a weak network box matches a box (and at
#: which a network box already holds that object).
WEAK_MATCH_IOU = 0.5


def _confirmed_by_weak(box: Box, weak_boxes: Sequence[Box],
                       network_boxes: Sequence[Box]) -> bool:
    """Whether one of ``weak_boxes`` (the network's boxes under its threshold) matches
    ``box`` at :data:`WEAK_MATCH_IOU` while none of ``network_boxes`` does: an object that
    depth found and the network saw without confidence, which the fusion would otherwise
    leave out as a part of a network box or as overlapping one (a loose box of its
    neighbour, or a box of its own cap)."""
    return any(box_iou(box, w) >= WEAK_MATCH_IOU for w in weak_boxes) \
        and all(box_iou(box, n) < WEAK_MATCH_IOU for n in network_boxes)


def fusion_colour_config(cfg: ProposalConfig, depth_cfg: DepthProposalConfig
                         ) -> ProposalConfig:
    """The colour proposer's settings for the boxes :func:`fuse_proposals` takes: the box
    network's alone (``box_net_colour: none``) unless ``fuse_colour_model``; ``cfg`` itself
    when that changes nothing. With the network off (``box_net``) the colour model still
    runs: it is then the only colour proposer. (Whether a frame with depth takes the box
    network's close pass is decided before, per frame: :func:`takes_close_pass`.)"""
    if depth_cfg.fuse_colour_model or cfg.box_net_colour == "none":
        return cfg
    return replace(cfg, box_net_colour="none")


#: :func:`close_view`: the lens ``close_view_m`` was chosen for, as its focal length over the
#: image width (fx / width; 1.0 is a 53-degree horizontal view; the rendered tables and the
#: hand camera's close-ups, 42-60 degrees vertical at 4:3, are 0.65-0.97). A longer focus
#: (YCB-Video's Xtion: 1067 / 640 = 1.67) shows what it sees as large from farther away,
#: and its distance bound grows in proportion; a shorter one keeps ``close_view_m``.
CLOSE_VIEW_FOCAL_PER_WIDTH = 1.0


def close_view(depth: np.ndarray, below_m: float,
               camera: CameraIntrinsics | None = None) -> bool:
    """Whether registered ``depth`` (metres, 0 = none) says the camera is close to what it
    sees: the median of every 8th pixel's measured depth nearer than ``below_m`` (times
    the ``camera``'s focal length over its width per :data:`CLOSE_VIEW_FOCAL_PER_WIDTH`,
    when that is above 1: a long-focus lens sees objects as large from farther away), or
    none measured (nearer than the sensor's range, or no depth). Always false for
    ``below_m`` 0."""
    if below_m <= 0:
        return False
    if camera is not None and camera.width > 0:
        below_m *= max(1.0, float(camera.fx) / float(camera.width) / CLOSE_VIEW_FOCAL_PER_WIDTH)
    sample = np.asarray(depth)[::8, ::8]
    measured = sample[sample > 0]
    return measured.size == 0 or float(np.median(measured)) < below_m


def takes_close_pass(depth: np.ndarray, cfg: DepthProposalConfig, named: bool = False,
                     camera: CameraIntrinsics | None = None) -> bool:
    """Whether a frame with registered ``depth`` takes the box network's close pass: its
    camera is ``named`` for it, ``cfg.fuse_close_pass``, or its depth says the camera is
    close (:func:`close_view` with ``cfg.close_view_m`` and the ``camera``'s lens). The
    node's and the bench's rule."""
    return named or cfg.fuse_close_pass or close_view(depth, cfg.close_view_m, camera)


def refine_network_boxes(network_boxes: Sequence[Box], depth_boxes: Sequence[Box],
                         cfg: DepthProposalConfig, depth: DepthProposals | None = None
                         ) -> list[Box]:
    """``network_boxes``, each one that exactly one of ``depth_boxes`` matches at IoU
    ``fuse_network_refine_iou`` or more, while that depth box matches no other network box
    better, replaced by the mean of the two (corner by corner): one object whose extent
    the network and depth estimated with independent errors. With ``depth`` (its height
    grid), a loose network box is moved so too when it holds a depth box at a lower IoU
    (:func:`_loose_around`, ``fuse_network_refine_inside_iou``)."""
    out = list(network_boxes)
    if cfg.fuse_network_refine_iou <= 0:
        return out
    for i, n in enumerate(network_boxes):
        same = [d for d in depth_boxes if box_iou(d, n) >= cfg.fuse_network_refine_iou]
        if len(same) != 1:
            inner = _loose_around(n, depth_boxes, cfg, depth) if not same else None
            if inner is not None:
                out[i] = _mean_box(n, inner)
            continue
        ious = [box_iou(same[0], m) for m in network_boxes]
        if int(np.argmax(ious)) == i:
            out[i] = _mean_box(n, same[0])
    return out


#: :func:`_loose_around`: the depth box lies at least this fraction of its area inside the
#: network box.
LOOSE_INSIDE = 0.9


def _loose_around(network_box: Box, depth_boxes: Sequence[Box], cfg: DepthProposalConfig,
                  depth: DepthProposals | None) -> Box | None:
    """The one depth box that ``network_box`` holds loosely, or None: the only one of
    ``depth_boxes`` touching it, lying :data:`LOOSE_INSIDE` of its area inside it at IoU
    ``fuse_network_refine_inside_iou`` or more (under ``fuse_network_refine_iou``), its
    top at about the network box's (:func:`_heights_differ`). The network's box of that
    object reaches too far (a shadow, the table around it), and depth's edges are tighter;
    a network box holding the depth boxes of two objects, or one at another height (an
    object in front of it), stays."""
    if cfg.fuse_network_refine_inside_iou <= 0 or depth is None or depth.height_grid is None:
        return None
    near = [d for d in depth_boxes if box_containment(d, network_box) > 0]
    if len(near) != 1 or box_containment(near[0], network_box) < LOOSE_INSIDE or \
            box_iou(near[0], network_box) < cfg.fuse_network_refine_inside_iou:
        return None
    top = _box_top(depth, near[0], cfg)
    if top <= 0 or _heights_differ(
            top, _box_top(depth, [int(round(v)) for v in network_box], cfg), cfg):
        return None
    return near[0]


def _mean_box(a: Box, b: Box) -> Box:
    """The box whose corners are the means of ``a``'s and ``b``'s (whole pixels)."""
    x0, y0 = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
    x1, y1 = (a[0] + a[2] + b[0] + b[2]) / 2, (a[1] + a[3] + b[1] + b[3]) / 2
    x0, y0, x1, y1 = (int(round(v)) for v in (x0, y0, x1, y1))
    return (x0, y0, max(x1 - x0, 1), max(y1 - y0, 1))


def _on_support(depth: DepthProposals, box: Box, cfg: DepthProposalConfig) -> bool:
    """Whether a box found in the colour image stands on the support surface by its raised
    samples within the height band (:func:`_supported`; true when they are too few)."""
    if depth.height_grid is None:
        return True
    window = box_cells(depth, [int(round(v)) for v in box])
    cells = depth.height_grid[window]
    return _supported(depth, window, _raised(depth, window, cfg) & (cells < cfg.max_height_m))


#: :func:`flat_on_support`: a box with fewer usable grid samples than this is not judged.
FLAT_MIN_SAMPLES = 16


def flat_on_support(depth: DepthProposals, box: Box, cfg: DepthProposalConfig) -> bool:
    """Whether ``box`` (found in the colour image) lies flat on the support surface: at
    least ``fuse_network_flat_valid`` of its grid samples (and :data:`FLAT_MIN_SAMPLES`)
    have usable depth and the 98th percentile of their heights above the plane is under
    ``fuse_network_flat_m`` while their median is over minus that: the box's depth lies on
    the plane. A pattern printed on the table (a cloth's flowers, a placemat) looks like an
    object to the box network and has no height; every object stands higher somewhere in
    its box, the thinnest (a fork, a knife) by a centimetre. Depth far below the plane (a
    shiny object's multipath returns) is not taken for flat. False without a height grid or
    with ``fuse_network_flat_m`` 0. (A transparent object whose depth is the table's
    behind it would be taken for flat: ``fuse_network_flat_m: 0`` keeps it.)"""
    if cfg.fuse_network_flat_m <= 0 or depth.height_grid is None:
        return False
    cells = depth.height_grid[box_cells(depth, [int(round(v)) for v in box])]
    heights = cells[np.isfinite(cells)]
    if heights.size < max(FLAT_MIN_SAMPLES, cfg.fuse_network_flat_valid * cells.size):
        return False
    middle, high = np.percentile(heights, [50, 98])
    return float(high) < cfg.fuse_network_flat_m and float(middle) > -cfg.fuse_network_flat_m


def _raised(depth: DepthProposals, window: tuple[slice, slice],
            cfg: DepthProposalConfig) -> np.ndarray:
    """Which grid samples of ``window`` stand ``fuse_raised_m`` (plus their noise
    allowance) above the plane."""
    allowance = depth.allowance_grid[window] if depth.allowance_grid is not None else 0.0
    return np.nan_to_num(depth.height_grid[window], nan=-1.0) > cfg.fuse_raised_m + allowance


def _beside_network(box: Box, network_boxes: Sequence[Box], cfg: DepthProposalConfig,
                    depth: DepthProposals | None = None) -> bool:
    """Whether ``box`` is another object than each of ``network_boxes`` (:func:`fuse_proposals`):
    with each one, IoU at most ``fuse_network_iou``, or at most ``fuse_network_partial_iou``
    while neither box holds the other. Each network box is judged on its own: a small one
    that ``box`` holds at IoU under ``fuse_network_iou`` does not make a side overlap with
    another one count as more. With ``depth``, a box lying inside a network box at about
    its height is a part of that object (:func:`_part_of_network`), whatever the IoU."""
    return all(_beside(box, n, cfg) and not _part_of_network(box, n, cfg, depth)
               for n in network_boxes)


def _beside(box: Box, network_box: Box, cfg: DepthProposalConfig) -> bool:
    """Whether ``box`` is another object than ``network_box`` by their overlap alone
    (:func:`_beside_network`); never when it lies ``fuse_network_inside`` of its area inside
    it (a piece of that object, however small its IoU)."""
    if 0 < cfg.fuse_network_inside <= box_containment(box, network_box):
        return False
    iou = box_iou(box, network_box)
    if iou <= cfg.fuse_network_iou:
        return True
    return iou <= cfg.fuse_network_partial_iou \
        and box_containment(network_box, box) < cfg.fuse_containment \
        and box_containment(box, network_box) < cfg.fuse_containment


def _part_of_network(box: Box, network_box: Box, cfg: DepthProposalConfig,
                     depth: DepthProposals | None) -> bool:
    """Whether ``box`` lies (``fuse_network_part_containment`` of its area) inside
    ``network_box`` and its top reaches about the network box's (:func:`_heights_differ`):
    a piece of the object the network found (a cap, a handle, a label), not another object
    in front of it, which stands lower or higher. A box without raised samples (a black or
    flat object) is never a part; 0 or no depth: off."""
    if cfg.fuse_network_part_containment <= 0 or depth is None or depth.height_grid is None:
        return False
    return _part_at_height(depth, box, network_box, cfg.fuse_network_part_containment, cfg)


def _part_at_height(depth: DepthProposals, box: Box, outer: Box, containment: float,
                    cfg: DepthProposalConfig) -> bool:
    """Whether ``box`` lies (``containment`` of its area) inside ``outer`` and its top
    reaches about ``outer``'s (:func:`_heights_differ`); never for a box without raised
    samples."""
    if box_containment(box, outer) < containment:
        return False
    top = _box_top(depth, box, cfg)
    return top > 0 and not _heights_differ(top, _box_top(depth, outer, cfg), cfg)


def fuse_depth_colour(depth: DepthProposals, colour_boxes: Sequence[Box],
                      cfg: DepthProposalConfig, max_count: int) -> list[Box]:
    """Depth boxes first, then the colour boxes that depth does not contradict: each one
    overlapping no depth box by more than ``fuse_max_iou``, not a part of one (inside it at
    about its height, :func:`_part_of`) and either mostly without valid
    depth (a hole, a reflective or black object, out of range) or standing partly above the
    plane (a flat object, see :class:`DepthProposalConfig`); at most ``max_count``. A colour
    box replaces the depth boxes inside it when they are all low (the thick parts of a flat
    object) or when two or more of them lie in a box largely without depth (one object cut
    by holes, ``fuse_holes_frac``). A depth box whose colour boxes inside it stand at
    different heights is replaced by them first (:func:`split_by_colour`). Without a
    support plane the colour boxes alone."""
    if depth.plane is None or depth.height_grid is None:
        return list(colour_boxes)[:max_count]
    out, tops = split_by_colour(depth, colour_boxes, cfg)
    grid = depth.height_grid
    for box in colour_boxes:
        inside = [i for i, b in enumerate(out) if box_containment(b, box) >= cfg.fuse_containment]
        if inside and (all(tops[i] <= cfg.fuse_flat_height_m for i in inside)
                       or _holey(depth, box, inside, cfg)) and not any(
                box_iou(box, b) > cfg.fuse_max_iou for i, b in enumerate(out)
                if i not in inside):
            out = [b for i, b in enumerate(out) if i not in inside] + [box]
            tops = [t for i, t in enumerate(tops) if i not in inside] + [0.0]
            continue
        if len(out) >= max_count or any(box_iou(box, b) > cfg.fuse_max_iou for b in out) \
                or _part_of(depth, box, out, cfg):
            continue
        window = box_cells(depth, box)
        cells = grid[window]
        if cells.size == 0:
            continue
        valid = np.isfinite(cells)
        n_valid = int(np.count_nonzero(valid))
        up = _raised(depth, window, cfg)
        if (n_valid < cfg.fuse_min_valid_frac * cells.size or np.count_nonzero(up)
                >= cfg.fuse_raised_frac * n_valid) and _supported(
                depth, window, up & (cells < cfg.max_height_m)):
            out.append(box)
            tops.append(np.inf)
    return out[:max_count]


#: :func:`_supported`: a colour box with fewer raised grid samples than this is not judged
#: by its feet (a hole in the depth, or a surface the plane is not: then nothing says where
#: it stands).
SUPPORT_MIN_RAISED = 8


def _supported(depth: DepthProposals, window: tuple[slice, slice], raised: np.ndarray) -> bool:
    """Whether a colour box (its grid ``window`` and which of its samples are ``raised``
    within the height band) stands on the support surface: the centre of its raised
    samples' feet lies on it (an object on the table, not something beyond it). True
    without a surface or with fewer than :data:`SUPPORT_MIN_RAISED` raised samples."""
    support = depth.support
    rows, cols = np.nonzero(raised)
    if support is None or depth.depth_grid is None or depth.height_grid is None or \
            depth.camera is None or \
            rows.size < SUPPORT_MIN_RAISED:
        return True
    rows, cols = rows + window[0].start, cols + window[1].start
    z = depth.depth_grid[rows, cols].astype(np.float64)
    points = back_project(depth.camera, rows, cols, z, depth.stride, depth.offset)
    return support.holds(points - depth.height_grid[rows, cols, None] * support.normal[None, :])


def _holey(depth: DepthProposals, box: Box, inside: Sequence[int],
           cfg: DepthProposalConfig) -> bool:
    """Whether the colour ``box`` holds two or more depth boxes (``inside``) and at least
    ``fuse_holes_frac`` of its grid samples have no usable depth: one object that holes in
    its depth (black or shiny parts) cut into pieces."""
    if cfg.fuse_holes_frac <= 0 or len(inside) < 2 or depth.height_grid is None:
        return False
    cells = depth.height_grid[box_cells(depth, box)]
    return cells.size > 0 and \
        np.count_nonzero(np.isnan(cells)) >= cfg.fuse_holes_frac * cells.size


#: :func:`split_by_colour`: a colour box lies at least this fraction of its area inside the
#: depth box, at most this fraction of the depth box's area, and two of them overlap by at
#: most this fraction of the smaller one.
SPLIT_CONTAINMENT = 0.85
SPLIT_MAX_AREA = 0.8
SPLIT_MAX_OVERLAP = 0.3


def split_by_colour(depth: DepthProposals, colour_boxes: Sequence[Box],
                    cfg: DepthProposalConfig) -> tuple[list[Box], list[float]]:
    """``depth``'s boxes and the tops of their clusters, each box replaced by the colour
    boxes inside it where those are objects of different heights that depth joined (see
    ``fuse_split_height_m``; none of the colour boxes may be the depth box itself, at
    :data:`SPLIT_MAX_AREA` of its area). The new boxes keep their cluster's top."""
    out = list(depth.boxes)
    tops = list(depth.tops) if len(depth.tops) == len(out) else [np.inf] * len(out)
    if cfg.fuse_split_height_m <= 0 or depth.height_grid is None or len(colour_boxes) < 2:
        return out, tops
    boxes: list[Box] = []
    heights: list[float] = []
    for box, top in zip(out, tops):
        inside = _split_candidates(box, colour_boxes, cfg)
        parts = [_box_top(depth, c, cfg) for c in inside]
        if parts and _heights_differ(min(parts), max(parts), cfg):
            boxes.extend(inside)   # the pieces keep their cluster's top
            heights.extend([top] * len(inside))
        else:
            boxes.append(box)
            heights.append(top)
    return boxes, heights


def _heights_differ(a: float, b: float, cfg: DepthProposalConfig) -> bool:
    """Whether tops ``a`` and ``b`` (m above the plane) are of different objects: they
    differ by at least ``fuse_split_height_m`` and ``fuse_split_height_frac`` of the
    higher one (one object's parts have about one height)."""
    spread = abs(a - b)
    return spread >= cfg.fuse_split_height_m and spread >= cfg.fuse_split_height_frac * max(a, b)


def _part_of(depth: DepthProposals, box: Box, boxes: Sequence[Box],
             cfg: DepthProposalConfig) -> bool:
    """Whether the colour ``box`` lies (``fuse_containment`` of its area) inside one of the
    depth ``boxes`` and reaches about its height (:func:`_heights_differ`): a part of that
    object (a label, a lid, a handle), not another one in front of it. A box without raised
    samples (a black object depth does not see) is never a part."""
    return any(_part_at_height(depth, box, b, cfg.fuse_containment, cfg) for b in boxes)


def _split_candidates(box: Box, colour_boxes: Sequence[Box],
                      cfg: DepthProposalConfig) -> list[Box]:
    """The colour boxes inside the depth ``box`` that could replace it (two or more, each
    :data:`SPLIT_CONTAINMENT` inside it, all under :data:`SPLIT_MAX_AREA` of its area,
    overlapping each other by at most :data:`SPLIT_MAX_OVERLAP`, covering
    ``fuse_split_cover`` of it), or ``[]``."""
    inside = [c for c in colour_boxes if box_containment(c, box) >= SPLIT_CONTAINMENT]
    if len(inside) < 2 or any(c[2] * c[3] >= SPLIT_MAX_AREA * box[2] * box[3] for c in inside):
        return []
    if any(_overlap(a, b) > SPLIT_MAX_OVERLAP for i, a in enumerate(inside)
           for b in inside[i + 1:]):
        return []
    return inside if _cover(box, inside) >= cfg.fuse_split_cover else []


def _box_top(depth: DepthProposals, box: Sequence[int], cfg: DepthProposalConfig) -> float:
    """90th percentile of the heights above the plane (m) of the samples in ``box`` that
    stand ``min_height_m`` above it (0 when none do)."""
    cells = depth.height_grid[box_cells(depth, box)]
    up = cells[np.nan_to_num(cells, nan=-1.0) > cfg.min_height_m]
    return float(np.percentile(up, 90)) if up.size else 0.0


def _overlap(a: Sequence[int], b: Sequence[int]) -> float:
    """Intersection of boxes ``a`` and ``b`` over the smaller one's area."""
    return max(box_containment(a, b), box_containment(b, a))


def _cover(outer: Sequence[int], boxes: Sequence[Sequence[int]]) -> float:
    """Fraction of box ``outer``'s area inside the union of ``boxes``."""
    x, y, w, h = (int(v) for v in outer)
    mask = np.zeros((max(h, 1), max(w, 1)), bool)
    for b in boxes:
        mask[max(int(b[1]) - y, 0):max(int(b[1] + b[3]) - y, 0),
             max(int(b[0]) - x, 0):max(int(b[0] + b[2]) - x, 0)] = True
    return float(mask.mean())
