"""Object proposals from registered depth: the tabletop recipe of robot grasping stacks.

ROS-free and numpy/OpenCV only. :func:`propose_depth_boxes` takes a depth image registered
to the colour image (metres, 0 = no measurement) and the colour camera's intrinsics:

0. **Registration check** (with the colour image and the camera's
   :class:`~.depth_registration.DepthRegistration`, ``registration_search_px``): when the
   depth's occluding edges, over the camera's recent frames, lie clearly closer to the
   colour image's edges a few pixels away, the depth is moved there first; when the colour
   edges lie clearly a few pixels inside its foreground edges (``fattening_search_px``:
   a stereo camera's fattened edges), that rim is taken off the depth.

1. **Cloud** (:mod:`.depth_cloud`): the depth is sampled on a grid every
   :attr:`DepthProposalConfig.stride` pixels; samples outside ``[min_depth_m, max_depth_m]``
   (zeros, holes, out of range) are invalid, and so are samples on a depth discontinuity
   (their 3x3 grid neighbourhood spans more than ``edge_jump_frac`` of their depth): that
   removes the flying pixels real sensors leave between an object and the table, and it
   separates objects that overlap in the image at different depths. Valid samples are
   back-projected with the intrinsics.
2. **Support plane** (:mod:`.support_plane`): RANSAC (``ransac_iterations`` hypotheses
   from random triples, each scored on at most ``ransac_samples`` points, inlier distance
   ``plane_threshold_m + plane_threshold_quadratic * z^2`` to allow for the noise and the
   disparity quantisation growing with depth), then a least-squares refit on the inliers.
   Its normal is turned towards the camera. When more floor than table is in view (a side
   table, a stool), the dominant plane is the floor: a plane parallel to it, well above
   it and holding ``raised_plane_frac`` of the samples is the table instead
   (:func:`.support_plane.raised_plane`).
3. **Objects** (:mod:`.depth_clusters`): samples between ``min_height_m`` (plus the same
   depth-dependent noise allowance) and ``max_height_m`` above the plane, grouped by
   connected components of the grid (8-connected) after a small closing that joins a thin
   handle's pieces; the closing does not bridge a depth discontinuity (``cut_jump_frac``) or
   a concave crease (``crease_m``: a sample behind the chord of its neighbours about
   ``crease_cells`` away; with the colour image its marks are closed along colour edges,
   ``crease_colour_cells``, and a thin line of marks also cuts the cells the closing filled
   next to it), so two objects in contact, one in front of the other or side by side, stay
   apart when each holds ``split_min_frac`` of the cluster or ``split_min_points`` samples.
   Each piece is then also cut along weaker steps (``weak_jump_frac``) where the lower of
   two touching pieces is the nearer one (an object in front of a taller one; not a cavity's
   floor behind its rim). Last, each cluster seen from above as a height map on the plane is
   cut where the map steps (``top_view_*``, :mod:`.top_view`: a low object against a taller
   one; ``top_view_low_*``: a flat object against another low one) into pieces of clearly
   different heights.
4. **Filter and project**: clusters with fewer than ``min_cluster_points`` samples, or whose
   3-D extent is under ``min_size_m`` or over ``max_size_m``, are dropped; each remaining
   cluster's samples, together with their feet on the plane (the object's bottom, cut by
   the height band), are projected to a box in the colour image, padded by one grid step;
   a box overlapping a larger one by :data:`DUPLICATE_IOU` is dropped (one object's box);
   so is a cluster whose top stands within the frame's depth noise (``noise_top_sigmas``,
   measured below the plane by :class:`DepthNoiseEstimate`), and one whose feet lie off
   the support surface (``support_*``, :mod:`.support_region`: the convex hull of the
   table's own samples in the plane; a cabinet beyond the table is not on it).
5. **Object windows, the smallest on a finer grid** (``refine_max_frac``): steps 3 and 4
   run per window around a group of raised samples (:data:`REFINE_MARGIN_CELLS` of
   margin, overlapping windows joined); the smallest windows, together at most
   ``refine_max_frac`` of the frame, on a cloud sampled at half the grid step (the same
   plane and noise), the others on the grid's own samples (more than
   :data:`MAX_OBJECT_WINDOWS` groups: the grid over the frame). The grid step rises with
   the frame's shorter side (``stride_short_side_px``), with its width to bound the cost
   (``max_grid_width``) and optionally with the camera's focal length
   (``stride_focal_px``).

:func:`.depth_fusion.fuse_proposals` merges these boxes with the box network's and the colour
proposer's where depth is missing, and splits a depth box into the colour boxes inside it
where those stand at clearly different heights (:func:`.depth_fusion.split_by_colour`: objects
in contact that depth joined).
Parameters come from ``config/depth_proposals.yaml``
(:func:`.depth_config.load_depth_config`), whose values are the dataclass defaults.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from .boxes import Box, box_iou, sanitize_boxes
from .camera_model import CameraIntrinsics, DepthError
from .depth_cloud import DepthCloud, back_project, depth_cloud
from .depth_clusters import ColourEdges, below_taller, in_band, object_clusters
from .depth_config import DepthProposalConfig, stride_for, with_stride
from .depth_registration import DepthRegistration, shift_depth, strip_fattening
from .support_plane import DepthNoiseEstimate, fit_plane_ransac, noise_curve, raised_plane
from .support_region import SupportRegion, support_region

__all__ = ["DepthProposals", "propose_depth_boxes", "boxes_from_clusters", "box_cells"]


@dataclass
class DepthProposals:
    """What :func:`propose_depth_boxes` found in one frame."""

    #: ``(x, y, w, h)`` boxes in colour pixels, largest first.
    boxes: list[Box] = field(default_factory=list)
    #: Height (m) of the tallest sample of each box's cluster above the plane.
    tops: list[float] = field(default_factory=list)
    #: Fraction of the grid samples with usable depth.
    valid_frac: float = 0.0
    #: ``(nx, ny, nz, d)`` of the support plane (``n . p + d`` = height), or ``None``.
    plane: tuple[float, float, float, float] | None = None
    #: Why depth gave nothing usable ("" when a plane was found).
    note: str = ""
    #: Whether the plane is a raised one over the dominant plane (``raised_plane_frac``:
    #: a table over the floor).
    raised_plane: bool = False
    #: Grid of heights above the plane (m; NaN where depth is not usable), its stride and
    #: the pixel offset of its first sample; for :func:`~.depth_fusion.fuse_proposals`.
    height_grid: np.ndarray | None = None
    stride: int = 1
    offset: int = 0
    #: Noise allowance of each grid sample (m), ``plane_threshold_quadratic * z^2``.
    allowance_grid: np.ndarray | None = None
    #: ``(dx, dy)`` pixels the depth was moved by the registration check before proposing.
    depth_shift: tuple[int, int] = (0, 0)
    #: Width (pixels) of the fattened rim taken off the depth's foreground edges first.
    fattening_px: int = 0
    #: The frame's depth noise (standard deviation, m) at 1 m, measured on the samples
    #: just below the plane (:class:`DepthNoiseEstimate`); 0 when it could not be measured.
    noise_m: float = 0.0
    #: The depth was sparse: samples filled from their cells (``sparse_fill_frac``).
    sparse: bool = False
    #: The support surface's extent (``support_min_frac``), or ``None``; the grid of
    #: sampled depth (m, 0 where not usable) and the camera, for the fusion's colour boxes.
    support: SupportRegion | None = None
    depth_grid: np.ndarray | None = None
    camera: CameraIntrinsics | None = None


def box_cells(depth: DepthProposals, box: Sequence[int]) -> tuple[slice, slice]:
    """The rows and columns of ``depth``'s grids whose samples lie inside ``box``
    (``(x, y, w, h)`` colour pixels)."""
    x, y, w, h = box
    s, off = depth.stride, depth.offset
    c0, r0 = max((x - off + s - 1) // s, 0), max((y - off + s - 1) // s, 0)
    c1, r1 = (x + w - 1 - off) // s + 1, (y + h - 1 - off) // s + 1
    return slice(r0, r1), slice(c0, c1)


def _too_little_depth_note(valid_frac: float, depth: np.ndarray,
                           cfg: DepthProposalConfig) -> str:
    """The note of a frame with too little valid depth; when most of its measurements (every
    8th pixel's) lie outside ``[min_depth_m, max_depth_m]``, also where and at what median,
    since depth read in the wrong units (a 16-bit image in 0.1 or 0.25 mm read as
    millimetres) puts the whole table out of range."""
    note = f"too little valid depth ({100 * valid_frac:.0f}% of the frame)"
    d = np.asarray(depth[::8, ::8], np.float32)
    d = d[np.isfinite(d) & (d > 0)]
    if d.size == 0:
        return note
    far, near = float(np.mean(d > cfg.max_depth_m)), float(np.mean(d < cfg.min_depth_m))
    if max(far, near) < 0.5:
        return note
    where = f"beyond max_depth_m ({cfg.max_depth_m:g} m)" if far >= near \
        else f"nearer than min_depth_m ({cfg.min_depth_m:g} m)"
    return (f"{note}; {100 * max(far, near):.0f}% of the measured depth lies {where}, median "
            f"{float(np.median(d.astype(np.float64))):.2f} m: depth in other units than "
            "depth_scale says?")


def propose_depth_boxes(depth_m: np.ndarray, intrinsics: CameraIntrinsics,
                        cfg: DepthProposalConfig | None = None,
                        image_rgb: np.ndarray | None = None,
                        registration: DepthRegistration | None = None) -> DepthProposals:
    """Boxes around the objects standing on the dominant plane of a registered depth image.

    Args:
        depth_m: ``(H, W)`` depth in metres (0, NaN or inf: no measurement), registered to
            the colour image whose ``intrinsics`` are given.
        intrinsics: the colour camera's; its size must equal the depth image's.
        cfg: settings (defaults: :class:`DepthProposalConfig`).
        image_rgb: the colour image (uint8 RGB, the depth's size; otherwise ignored): its
            edges close broken creases (``crease_colour_cells``), and with ...
        registration: ... the camera's registration check over its frames
            (``registration_search_px``, ``fattening_search_px``), which this frame
            updates and whose shift moves the depth first (and whose fattening width is
            taken off its edges); without both the depth is taken as registered.

    Returns:
        :class:`DepthProposals`; with too little valid depth or no plane, no boxes and a
        ``note`` saying why (the caller falls back to colour).

    Raises:
        DepthError: ``depth_m`` is not 2-D or its size differs from the intrinsics'.
    """
    cfg = cfg or DepthProposalConfig()
    depth = np.asarray(depth_m)
    if depth.ndim != 2:
        raise DepthError(f"depth must be an (H, W) array, got shape {depth.shape}")
    h, w = depth.shape
    if (w, h) != (int(intrinsics.width), int(intrinsics.height)):
        raise DepthError(f"depth is {w}x{h} but the camera info is {intrinsics.width}x"
                         f"{intrinsics.height}: depth must be registered to the colour image")
    cfg = stride_for(cfg, w, intrinsics.focal, h)
    if min(h, w) < MIN_GRID_SAMPLES * int(cfg.stride):
        return DepthProposals(stride=int(cfg.stride), offset=int(cfg.stride) // 2,
                              note=f"the depth image ({w}x{h}) is too small for the depth "
                                   f"proposer: it needs {MIN_GRID_SAMPLES} samples a side at "
                                   f"its grid step of {int(cfg.stride)} px")
    # the colour image is used only when it is a uint8 RGB image of the depth's size
    colour = np.asarray(image_rgb) if image_rgb is not None and np.shape(image_rgb) == (
        *depth.shape, 3) and np.asarray(image_rgb).dtype == np.uint8 else None
    depth, shift, fattening = _registered(depth, colour, registration, cfg)
    cloud = depth_cloud(depth, intrinsics, cfg)
    out = DepthProposals(valid_frac=np.count_nonzero(cloud.valid) / cloud.valid.size
                         if cloud.valid.size else 0.0,
                         stride=cloud.stride, offset=cloud.offset, depth_shift=shift,
                         fattening_px=fattening)
    if out.valid_frac < cfg.min_valid_frac or cfg.max_count == 0:
        out.note = _too_little_depth_note(out.valid_frac, depth, cfg)
        return out
    fit = fit_plane_ransac(cloud.points, cfg, np.random.default_rng(int(cfg.seed)))
    if fit is None or fit[2] < cfg.min_plane_frac:
        out.note = "no support plane in the depth"
        return out
    raised = raised_plane(cloud.points, fit[:2], cfg, cloud)
    (n, d), out.raised_plane = raised or fit[:2], raised is not None
    out.plane = (float(n[0]), float(n[1]), float(n[2]), d)
    height = cloud.points @ n.astype(np.float32) + np.float32(d)
    out.height_grid = cloud.scatter(height, np.nan, np.float32)
    out.allowance_grid = cfg.plane_threshold_quadratic * cloud.z * cloud.z
    noise = DepthNoiseEstimate.measure(height, cloud.points[:, 2])
    out.noise_m = noise.scale * float(noise_curve(1.0))
    out.sparse = cloud.sparse
    out.camera = intrinsics
    out.depth_grid = cloud.z
    allowance = cfg.plane_threshold_quadratic * cloud.points[:, 2] ** 2   # (once)
    out.support = _support(cloud, (height, allowance), (n, d), cfg, intrinsics)
    windows = _object_windows(cloud, (height, allowance), cfg, intrinsics) \
        if cfg.refine_max_frac > 0 and int(cfg.stride) >= 2 else None
    if windows is not None:
        out.boxes, out.tops = _window_boxes(depth, intrinsics, cfg,
                                            (cloud, height, out.height_grid), windows, colour,
                                            (n, d), (noise, out.support))
    else:
        out.boxes, out.tops = _boxes_on_plane(cloud, height, out.height_grid, intrinsics, cfg,
                                              n, colour, (noise, out.support))
    return out


def _registered(depth: np.ndarray, colour: np.ndarray | None,
                registration: DepthRegistration | None, cfg: DepthProposalConfig
                ) -> tuple[np.ndarray, tuple[int, int], int]:
    """``(depth, shift, fattening)``: ``depth`` moved by the camera's registration check's
    shift and its fattened edges taken off (``registration_search_px``,
    ``fattening_search_px``; only with the colour image and the check)."""
    if colour is None or registration is None or (
            cfg.registration_search_px <= 0 and cfg.fattening_search_px <= 0):
        return depth, (0, 0), 0
    shift = registration.update(colour, depth)
    shift = shift if cfg.registration_search_px > 0 else (0, 0)
    fattening = registration.fattening if cfg.fattening_search_px > 0 else 0
    if fattening > 0:
        depth = strip_fattening(depth, fattening)
    if shift != (0, 0):
        depth = shift_depth(depth, *shift)
    return depth, shift, fattening


def _support(cloud: DepthCloud, heights: tuple[np.ndarray, np.ndarray],
             plane: tuple[np.ndarray, float], cfg: DepthProposalConfig,
             camera: CameraIntrinsics) -> SupportRegion | None:
    """The support surface's extent (:func:`.support_region.support_region`) from the grid's
    samples within the plane's inlier distance of it (``heights``: the cloud's samples'
    heights above ``plane``, its unit normal and offset, and their noise allowance,
    ``plane_threshold_quadratic * z ** 2``); ``None`` when ``support_min_frac`` is 0.

    The samples dropped from the cloud as discontinuities count too: seen at a grazing
    angle (a camera low over the table) the far part of the table rises in depth from row
    to row by more than ``edge_jump_frac`` and its samples are dropped, but they lie on the
    plane, and the surface reaches that far.
    """
    if cfg.support_min_frac <= 0:
        return None
    normal, offset = plane
    height, allowance = heights
    z = cloud.z.reshape(-1)
    thr = cfg.plane_threshold_m + allowance
    grid = cloud.scatter((np.abs(height) <= thr).view(np.uint8), 0, np.uint8)
    dropped = np.flatnonzero((z > 0) & ~cloud.valid.reshape(-1))
    extra = None
    if dropped.size:
        rows, cols = np.divmod(dropped, cloud.z.shape[1])
        zz = z[dropped].astype(np.float64)
        pts = back_project(camera, rows, cols, zz, cloud.stride, cloud.offset)
        near = np.abs(pts @ normal + offset) <= cfg.plane_threshold_m + \
            cfg.plane_threshold_quadratic * zz * zz
        extra = (dropped[near], pts[near])
        grid.reshape(-1)[extra[0]] = 1
    return support_region(grid, cloud.flat_index(), cloud.points, normal, cfg.support_min_frac,
                          cfg.support_margin_m, (cloud.z > 0) if cloud.sparse else None, extra)


#: A depth image narrower or lower than this many grid steps gives no boxes (and a note):
#: too few samples for a plane and objects on it (and none at all below one step).
MIN_GRID_SAMPLES = 8
#: An object window (:func:`_object_windows`) reaches this many fine grid cells beyond the
#: grid's raised samples it holds: the fine grid's raised samples and its closing reach a
#: few cells past them (creases need only the raised samples; 16 cells found no more).
REFINE_MARGIN_CELLS = 8
#: More groups of raised samples than this (specks of a hostile or broken depth image): no
#: windows, the grid over the whole frame (the windows' joining and per-window passes are
#: bounded; real frames hold up to about 45).
MAX_OBJECT_WINDOWS = 64


def _object_windows(cloud: DepthCloud, heights: tuple[np.ndarray, np.ndarray],
                    cfg: DepthProposalConfig, k: CameraIntrinsics
                    ) -> list[tuple[int, int, int, int]] | None:
    """``(x0, y0, x1, y1)`` pixel windows that hold the grid's groups of raised samples
    (each group of ``min_cluster_points`` or more, after the ``close_cells`` closing) plus
    :data:`REFINE_MARGIN_CELLS` of the finer grid, joined while any two overlap; their
    corners lie on the grid step (a window's grid is the frame's). ``None`` for more than
    :data:`MAX_OBJECT_WINDOWS` groups. ``heights``: the samples' heights and noise
    allowances, as :func:`_support`'s."""
    height, allowance = heights
    grid = cloud.scatter(in_band(cloud.points, height, cfg, allowance).view(np.uint8), 0,
                         np.uint8)
    if int(cfg.close_cells) > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (int(cfg.close_cells) | 1,) * 2)
        grid = cv2.morphologyEx(grid, cv2.MORPH_CLOSE, kernel)
    _, _, stats, _ = cv2.connectedComponentsWithStats(grid, connectivity=8)
    s = cloud.stride
    margin = REFINE_MARGIN_CELLS * (s // 2)

    groups = [row for row in stats[1:].tolist() if row[4] >= cfg.min_cluster_points]
    if len(groups) > MAX_OBJECT_WINDOWS:
        return None

    def on_grid(v: int, most: int) -> int:
        return min(max(v // s * s, 0), most)
    return _joined([(on_grid(x * s - margin, k.width), on_grid(y * s - margin, k.height),
                     on_grid((x + bw) * s + margin + s - 1, k.width),
                     on_grid((y + bh) * s + margin + s - 1, k.height))
                    for x, y, bw, bh, _ in groups])


def _joined(rects: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """``(x0, y0, x1, y1)`` rectangles, each two that overlap replaced by the rectangle
    around both until none overlap."""
    out = list(rects)
    merged = True
    while merged:
        merged, kept = False, []
        for r in out:
            for i, o in enumerate(kept):
                if r[0] < o[2] and o[0] < r[2] and r[1] < o[3] and o[1] < r[3]:
                    kept[i] = (min(r[0], o[0]), min(r[1], o[1]), max(r[2], o[2]),
                               max(r[3], o[3]))
                    merged = True
                    break
            else:
                kept.append(r)
        out = kept
    return out


def _window_boxes(depth: np.ndarray, k: CameraIntrinsics, cfg: DepthProposalConfig,
                  grid: tuple[DepthCloud, np.ndarray, np.ndarray],
                  windows: Sequence[tuple[int, int, int, int]], colour: np.ndarray | None,
                  plane: tuple[np.ndarray, float],
                  filters: tuple[DepthNoiseEstimate, SupportRegion | None]
                  ) -> tuple[list[Box], list[float]]:
    """Steps 3 and 4 inside each of ``windows`` (from :func:`_object_windows`) on the
    ``grid``'s plane and noise (its cloud, heights and height grid): the boxes (largest
    first, at most ``max_count``) and tops of the objects. The smallest windows, together
    at most ``refine_max_frac`` of the frame, on a cloud sampled at half the grid step (cell
    and sample counts are the fine grid's), the others on the grid's own samples."""
    fine = with_stride(cfg, int(cfg.stride) // 2)
    budget = cfg.refine_max_frac * k.width * k.height
    normal, offset = plane
    found: list[tuple[Box, float]] = []
    for x0, y0, x1, y1 in sorted(windows, key=lambda r: (r[2] - r[0]) * (r[3] - r[1])):
        window = k.window(x0, y0, x1, y1)
        area = (x1 - x0) * (y1 - y0)
        if area <= budget:
            budget -= area
            step = fine
            cloud = depth_cloud(np.ascontiguousarray(depth[y0:y1, x0:x1]), window, fine)
            height = cloud.points @ normal.astype(np.float32) + np.float32(offset)
            height_grid = cloud.scatter(height, np.nan, np.float32)
        else:   # the grid's samples in the window (its corners lie on the grid step)
            step, s = cfg, int(cfg.stride)
            r0, c0 = y0 // s, x0 // s
            r1, c1 = r0 + len(range(s // 2, y1 - y0, s)), c0 + len(range(s // 2, x1 - x0, s))
            cloud, idx = grid[0].crop(r0, r1, c0, c1)
            height, height_grid = np.take(grid[1], idx), grid[2][r0:r1, c0:c1]
        boxes, tops = _boxes_on_plane(
            cloud, height, height_grid, window, step, normal,
            None if colour is None else np.ascontiguousarray(colour[y0:y1, x0:x1]), filters)
        found += [((b[0] + x0, b[1] + y0, b[2], b[3]), t) for b, t in zip(boxes, tops)]
    found.sort(key=lambda bt: bt[0][2] * bt[0][3], reverse=True)
    found = found[:int(cfg.max_count)]
    return [b for b, _ in found], [t for _, t in found]


def _boxes_on_plane(cloud: DepthCloud, height: np.ndarray, height_grid: np.ndarray,
                    k: CameraIntrinsics, cfg: DepthProposalConfig, normal: np.ndarray,
                    colour: np.ndarray | None,
                    filters: tuple[DepthNoiseEstimate, SupportRegion | None]
                    ) -> tuple[list[Box], list[float]]:
    """Steps 3 and 4 on a cloud whose samples stand ``height`` above the plane of unit
    ``normal``: the object clusters (their creases closed along the edges of ``colour``,
    the cloud's image, when given) and their boxes and tops (``filters``: the frame's noise
    and support surface, see :func:`boxes_from_clusters`)."""
    edges = ColourEdges(colour, cloud.z.shape, cfg) \
        if colour is not None and int(cfg.crease_colour_cells) > 1 else None
    clusters = object_clusters(cloud, height, height_grid, normal, cfg, edges)
    if int(cfg.taller_contact_cells) > 0 and clusters:
        taller = below_taller(height_grid, cfg)
        flat = cloud.flat_index()   # (the cells of a cluster's samples on the flat grid)
        clusters = [c for c in clusters if np.count_nonzero(np.take(taller, np.take(flat, c)))
                    < int(cfg.taller_contact_cells)]
    return boxes_from_clusters(clusters, cloud.points, height, normal, k, cfg, *filters)


#: :func:`boxes_from_clusters`: a box overlapping a larger one by this IoU is the same
#: object's (dropped).
DUPLICATE_IOU = 0.7


def boxes_from_clusters(clusters: Sequence[np.ndarray], points: np.ndarray,
                        height: np.ndarray, normal: np.ndarray, k: CameraIntrinsics,
                        cfg: DepthProposalConfig, noise: DepthNoiseEstimate | None = None,
                        support: SupportRegion | None = None
                        ) -> tuple[list[Box], list[float]]:
    """Size-filtered clusters (index arrays into ``points``) -> colour boxes, largest first
    (at most ``max_count``, none overlapping a larger one by :data:`DUPLICATE_IOU`), and the
    height of each cluster's top above the plane. A cluster's samples and their feet on the
    plane are projected; boxes are padded by one grid step. With the frame's ``noise``
    (:class:`DepthNoiseEstimate`), a cluster whose top stands under ``noise_top_sigmas``
    times the noise at its depth is dropped (a bump of the noise on the table); with the
    ``support`` surface, so is a cluster whose feet lie off it (beyond the table)."""
    boxes: list[tuple[Box, float]] = []
    s = int(cfg.stride)
    down = normal[None, :].astype(np.float32)
    for sel in clusters:
        cloud = np.take(points, sel, 0)
        # per coordinate on the transposed copy: 10x a reduction over the (N, 3) rows
        across = np.ascontiguousarray(cloud.T)
        hi = across.max(axis=1)
        extent = float((hi - across.min(axis=1)).max())
        if not cfg.min_size_m <= extent <= cfg.max_size_m:
            continue
        tall = np.take(height, sel)
        top = float(tall.max())
        # the median depth only when the top is under the noise's bound at the farthest
        if noise is not None and top < cfg.noise_top_sigmas * noise.sigma_bound(
                float(hi[2])) and top < cfg.noise_top_sigmas * noise.sigma(
                float(np.median(across[2]))):
            continue
        feet = cloud - tall[:, None] * down
        if support is not None and not support.holds(feet):
            continue
        us, vs = k.project(np.concatenate([cloud, feet]))
        x0, x1 = float(us.min()) - s, float(us.max()) + s
        y0, y1 = float(vs.min()) - s, float(vs.max()) + s
        for box in sanitize_boxes([[x0, y0, x1 - x0, y1 - y0]], k.width, k.height, 4):
            boxes.append((box, top))
    boxes.sort(key=lambda bt: bt[0][2] * bt[0][3], reverse=True)
    kept: list[tuple[Box, float]] = []
    for box, top in boxes:   # one box per object: a small piece proposed besides its
        # cluster and the same piece split off it seen from above give about one box
        if len(kept) >= int(cfg.max_count):
            break
        if all(box_iou(box, b) < DUPLICATE_IOU for b, _ in kept):
            kept.append((box, top))
    return [b for b, _ in kept], [t for _, t in kept]
