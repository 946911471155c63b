"""Object proposals from registered depth: the tabletop recipe of robot grasping stacks.

ROS-free and numpy/OpenCV only. :func:`propose_depth_boxes` takes a depth image registered
to the colour image (metres, 0 = no measurement) and the colour camera's intrinsics:

0. **Registration check** (with the colour image and the camera's
   :class:`~.depth_registration.DepthRegistration`, ``registration_search_px``): when the
   depth's occluding edges, over the camera's recent frames, lie clearly closer to the
   colour image's edges a few pixels away, the depth is moved there first; when the colour
   edges lie clearly a few pixels inside its foreground edges (``fattening_search_px``:
   a stereo camera's fattened edges), that rim is taken off the depth.

1. **Cloud**: the depth is sampled on a grid every :attr:`DepthProposalConfig.stride`
   pixels; samples outside ``[min_depth_m, max_depth_m]`` (zeros, holes, out of range) are
   invalid, and so are samples on a depth discontinuity (their 3x3 grid neighbourhood spans
   more than ``edge_jump_frac`` of their depth): that removes the flying pixels real sensors
   leave between an object and the table, and it separates objects that overlap in the
   image at different depths. Valid samples are back-projected with the intrinsics.
2. **Support plane**: RANSAC (``ransac_iterations`` hypotheses from random triples, each
   scored on at most ``ransac_samples`` points, inlier distance
   ``plane_threshold_m + plane_threshold_quadratic * z^2`` to allow for the noise and the
   disparity quantisation growing with depth), then a least-squares refit on the inliers.
   Its normal is turned towards the camera. When more floor than table is in view (a side
   table, a stool), the dominant plane is the floor: a plane parallel to it, well above
   it and holding ``raised_plane_frac`` of the samples is the table instead
   (:func:`.support_plane.raised_plane`).
3. **Objects**: samples between ``min_height_m`` (plus the same depth-dependent noise
   allowance) and ``max_height_m`` above the plane, grouped by connected components of the
   grid (8-connected) after a small closing that joins a thin handle's pieces; the closing
   does not bridge a depth discontinuity (``cut_jump_frac``) or a concave crease
   (``crease_m``: a sample behind the chord of its neighbours about ``crease_cells``
   away; with the colour image its marks are closed along colour edges,
   ``crease_colour_cells``, and a thin line of marks also cuts the cells the closing
   filled next to it), so two objects in contact, one in front of the other or side by
   side, stay apart when each holds ``split_min_frac`` of the cluster or
   ``split_min_points`` samples. Each piece is then also cut along weaker steps
   (``weak_jump_frac``) where the lower of two touching pieces is the nearer one (an
   object in front of a taller one; not a cavity's floor behind its rim). Last, each
   cluster seen from above as a height map on the plane is cut where the map steps
   (``top_view_*``, :mod:`.top_view`: a low object against a taller one) into pieces of
   clearly different heights.
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
Parameters come from ``config/depth_proposals.yaml`` (:func:`load_depth_config`), whose
values are the dataclass defaults.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .camera_model import CameraIntrinsics, DepthError
from .depth_registration import DepthRegistration, shift_depth, strip_fattening
from .proposals import Box, box_iou, sanitize_boxes
from .support_plane import DepthNoiseEstimate, fit_plane_ransac, noise_curve, raised_plane
from .support_region import SupportRegion, support_region
from .top_view import nearest_label, piece_need, split_top_view

__all__ = ["DepthProposalConfig", "DepthProposals", "DepthCloud", "depth_cloud",
           "propose_depth_boxes", "load_depth_config", "object_clusters",
           "boxes_from_clusters", "crease_radii", "stride_for"]


@dataclass(frozen=True)
class DepthProposalConfig:
    """Settings of :func:`propose_depth_boxes` (see the module docstring)."""

    #: Grid step in pixels of the sampled cloud (2: 320x240 samples of a 640x480 frame) for
    #: frames whose shorter side is up to ``stride_short_side_px`` ...
    stride: int = 2
    #: ... and in proportion to the shorter side above it (rounded down: 1280x720 at step
    #: 3, 1280x960 and 1920x1080 at step 4). A camera is set up to see the work area, so an
    #: object covers about the same share of the view whatever the camera's resolution or
    #: field of view: at least the grid cells it covers at 480 (the proposer's geometry is
    #: counted in cells). 0: ``stride`` at any size.
    stride_short_side_px: int = 480
    #: The step also rises in proportion to the focal length above this (pixels; rounded).
    #: 0 (the default): off. With 600, a long-focus camera (YCB-Video's Xtion: 1067 px at
    #: 640x480, a 25-degree view) ran at step 4; it stands farther from the table, where
    #: depth is noisier, and its objects need the finer step (see docs/proposals.md).
    stride_focal_px: float = 0.0
    #: The step is also raised so that the grid is at most this many samples wide, which
    #: bounds the proposer's cost (a 1920x1080 camera: at least step 4). 0: no bound.
    max_grid_width: int = 480
    #: The objects are found per window around each group of raised samples; the smallest
    #: windows, together at most this fraction of the frame, at half the grid step (finer
    #: cuts between objects in contact at a fine grid's cost over a part of the frame
    #: only), the others on the grid. 0: the grid over the whole frame, no windows.
    refine_max_frac: float = 0.12
    #: With the colour image: the depth is moved by up to this many pixels (in ``stride``
    #: steps) where its occluding edges then lie clearly closer to the colour edges (a
    #: driver's registration a few pixels off). 0: depth is taken as registered.
    registration_search_px: int = 8
    #: With the colour image: the camera's foreground edges are checked for fattening (a
    #: stereo or structured-light camera carries the nearer surface a few pixels into the
    #: background) up to this many pixels (in ``stride`` steps), and the rim found is taken
    #: off the depth. 0: not checked.
    fattening_search_px: int = 6
    min_depth_m: float = 0.15
    max_depth_m: float = 2.5
    #: A sample whose 3x3 grid neighbourhood spans more than this fraction of its depth
    #: lies on a discontinuity and is dropped.
    edge_jump_frac: float = 0.03
    ransac_iterations: int = 80
    ransac_samples: int = 2000
    plane_threshold_m: float = 0.006
    plane_threshold_quadratic: float = 0.004
    #: Fraction of the valid samples the plane must hold (else: no plane, colour only).
    min_plane_frac: float = 0.15
    #: A table seen over the floor (:func:`.support_plane.raised_plane`): a plane parallel to
    #: the dominant one (within :data:`.support_plane.RAISED_PLANE_MAX_DEG`), at least
    #: ``raised_plane_min_m`` above it and holding at least this fraction of the valid
    #: samples is the support plane instead (a small table, a stool or a cart with more
    #: floor than table in view: the dominant plane is then the floor, and the table with
    #: all on it one cluster). 0: off.
    raised_plane_frac: float = 0.1
    raised_plane_min_m: float = 0.25
    #: Height band above the plane (m); the lower bound also gets the noise allowance
    #: ``plane_threshold_quadratic * z^2``.
    min_height_m: float = 0.005
    max_height_m: float = 0.45
    #: Diameter (grid cells, odd) of the closing that joins the pieces of one object (a
    #: thin handle below the height band between two parts); 1 disables it. Only the
    #: cluster labels come from the closed mask, never extra points.
    close_cells: int = 5
    #: The closing does not bridge a sample whose 3x3 grid neighbourhood spans more than
    #: this fraction of its depth (a depth step; at or above ``edge_jump_frac`` such
    #: samples are no cluster's own): an object in front of one it touches is cut off it
    #: along the occluding edge. 0: the closing bridges every step (one cluster) ...
    cut_jump_frac: float = 0.05
    #: A weaker step, spanning more than this fraction of the depth (less than
    #: ``cut_jump_frac``), also cuts a piece after the steps and creases, with its crease
    #: cells, when the lower of each two touching pieces is the nearer one along their
    #: contact: an object standing in front of a taller one. A cavity's floor seen past its
    #: rim (a bowl, a mug) or a lower object just behind a taller one stays. 0: off.
    weak_jump_frac: float = 0.035
    #: ... and a cluster is cut only into pieces that each hold at least this fraction of
    #: its samples (and ``min_cluster_points``) ...
    split_min_frac: float = 0.25
    #: ... or at least this many samples (a small object in front of a large one; 200
    #: samples at stride 2 of a 640x480 frame: 5 cm square a metre away; 0: the fraction
    #: only); smaller pieces (a mug's handle in front of its body, a fold of a bag) go to
    #: the nearest large piece.
    split_min_points: int = 200
    #: A concave crease also cuts (two objects side by side, at about the same distance):
    #: a sample lying more than this (m, plus the noise allowance) behind the chord of the
    #: samples ``crease_cells`` grid cells (and 2/3 and 3/2 of that) to either side of it,
    #: along a row, a column or a diagonal, with both of those above the plane; the cut
    #: keeps ``split_min_frac`` / ``split_min_points``. 0: no crease cut.
    crease_m: float = 0.01
    crease_cells: int = 6
    #: Where the colour image is given: a crease also cuts the cells of a colour edge (Canny
    #: on the Lab channels at the grid's resolution, thresholds ``colour_edge_low`` /
    #: ``colour_edge_high``) that a closing of its marks with a disc of this diameter (grid
    #: cells) fills: gaps between blobs of marks narrower than the disc, not the gaps of a
    #: one-cell line of marks nor anything past its ends. Across the contact of two objects
    #: the crease test marks only some cells; where the objects differ in colour their
    #: boundary closes the cut. A colour edge alone (a can's printed label) cuts nothing.
    #: 0 or 1: off.
    crease_colour_cells: int = 7
    colour_edge_low: int = 60
    colour_edge_high: int = 120
    #: A piece that a step or a crease cuts off a cluster but that is too small to split it
    #: (under ``split_min_frac`` / ``split_min_points``) and holds at least this many
    #: samples is also proposed on its own, besides the cluster it stays in (a small object
    #: against a large one; a part of one object gives a box too many). 0: none.
    small_piece_points: int = 60
    min_cluster_points: int = 6
    min_size_m: float = 0.012
    max_size_m: float = 0.6
    #: A cluster with at least this many grid cells next to samples above ``max_height_m``
    #: (no depth step between: a continuous surface) is the bottom of something taller
    #: than any object and is dropped: a wall or a cabinet at the table's edge, a
    #: monitor, the robot's own arm, a person. 0: off.
    taller_contact_cells: int = 6
    #: Most boxes returned (largest first).
    max_count: int = 10
    #: Fraction of the frame's grid samples that must be valid to try at all.
    min_valid_frac: float = 0.1
    #: Seed of the RANSAC sampler (results are deterministic for a frame).
    seed: int = 0
    #: Fusion: a colour box whose IoU with every depth box is at most ``fuse_max_iou`` is
    #: added when less than ``fuse_min_valid_frac`` of it has valid depth (holes,
    #: reflective or black objects, out of range), or when at least ``fuse_raised_frac`` of
    #: its valid samples stand ``fuse_raised_m`` (plus the noise allowance) above the plane
    #: (a flat object below the height band); a colour box on flat table is dropped.
    fuse_min_valid_frac: float = 0.5
    fuse_max_iou: float = 0.1
    fuse_raised_m: float = 0.003
    fuse_raised_frac: float = 0.15
    #: A colour box also replaces the depth boxes that lie (``fuse_containment`` of their
    #: area) inside it when all of them are low (at most ``fuse_flat_height_m`` tall):
    #: depth sees only the thicker parts of a flat object (a fork's head, a knife's handle).
    fuse_containment: float = 0.7
    fuse_flat_height_m: float = 0.04
    #: ... or when two or more lie inside it and at least this fraction of its samples have
    #: no usable depth: one object cut into pieces by holes in its depth (black plastic or
    #: shiny metal, which infrared sensors do not see). 0: off.
    fuse_holes_frac: float = 0.4
    #: A depth box is replaced by the colour boxes inside it (each lying
    #: :data:`~.depth_fusion.SPLIT_CONTAINMENT` inside it, all under
    #: :data:`~.depth_fusion.SPLIT_MAX_AREA` of its area, overlapping each other by at most
    #: :data:`~.depth_fusion.SPLIT_MAX_OVERLAP` of the smaller) when two or more of them cover
    #: ``fuse_split_cover`` of it and their tops (the 90th percentile of their samples' heights
    #: above the plane) differ by at least ``fuse_split_height_m`` and ``fuse_split_height_frac`` of
    #: the tallest: objects of different heights that depth joined where they touch (a golf ball
    #: against a box). One object's colour parts have about one height, so it stays whole. 0: off.
    #: The same two bounds tell a colour box inside a depth box at about its height (a label, a lid:
    #: not added) from another object in front of it.
    fuse_split_height_m: float = 0.015
    fuse_split_height_frac: float = 0.25
    fuse_split_cover: float = 0.6
    #: The box network's boxes come first (:func:`~.depth_fusion.fuse_proposals`); a depth
    #: or colour box is added when its IoU with each of them is at most this ...
    fuse_network_iou: float = 0.1
    #: ... or at most this when it neither holds one of them nor lies in one
    #: (``fuse_containment`` of the smaller's area): an object the network missed beside one
    #: it found, the two boxes overlapping where the objects touch. 0: off.
    fuse_network_partial_iou: float = 0.3
    #: A network box that exactly one depth box matches at IoU at least this (and that
    #: depth box matches no other network box better) becomes the mean of the two boxes:
    #: the same object, its extent estimated twice with independent errors (the network's
    #: size regression, depth's edges). The student still reads the window of the
    #: network's own box (:func:`~.depth_fusion.fuse_proposals_with_views`): made from the
    #: tighter box, that window cost it some naming on the tuning bags. 0: off.
    fuse_network_refine_iou: float = 0.5
    #: A depth or colour box lying at least this fraction of its area inside a network box,
    #: its top at about the network box's (``fuse_split_height_m``,
    #: ``fuse_split_height_frac``), is a part of that object and is not added, however
    #: small its IoU with it (:func:`~.depth_fusion._part_of_network`). 0: off.
    fuse_network_part_containment: float = 0.85
    #: With the box network on, the colour model's boxes (``box_net_colour: apart``) join the fusion
    #: too; off (the default) the fusion takes the network's boxes and depth's
    #: (:func:`~.depth_fusion.fusion_colour_config`): on the tuning bags the colour model added no
    #: object once depth was there, only false boxes, for about 8 ms of CPU a frame. With the
    #: network off the colour model is the colour proposer and runs either way.
    fuse_colour_model: bool = False
    #: The top-view split (:mod:`.top_view`): each cluster, seen from above as a height map
    #: of bins this size on the plane (m), is cut where the map steps by more than
    #: ``top_view_step_m`` (a low object against a taller one; the walls of the taller one
    #: fall onto its outline from above); pieces hold ``split_min_frac`` of the cluster or
    #: ``top_view_min_points`` samples, and touching pieces whose tops differ by less than
    #: ``top_view_tops_m`` or ``top_view_tops_frac`` of the taller join again (one
    #: object's parts stand at about one height). 0: off.
    top_view_bin_m: float = 0.008
    top_view_step_m: float = 0.015
    top_view_min_points: int = 80
    top_view_tops_m: float = 0.015
    top_view_tops_frac: float = 0.25
    #: A cluster is kept only when its top stands at least this many times the frame's
    #: depth noise (measured on the samples just below the plane, :class:`DepthNoiseEstimate`,
    #: at the cluster's depth) above the plane: spatially correlated sensor noise raises
    #: bumps centimetres wide on the table, a few times its standard deviation high. 0: off.
    noise_top_sigmas: float = 6.0
    #: The support surface's extent (:mod:`.support_region`): the convex hull, in the
    #: plane, of the connected pieces of its samples that each hold at least this fraction
    #: of them (and the camera's foot). A cluster is kept only when the centre of its feet
    #: lies at most ``support_margin_m`` outside it, and so is a colour box that the fusion
    #: adds for its raised samples (:data:`~.depth_fusion.SUPPORT_MIN_RAISED`) and a box
    #: network's box: what stands beyond the table (a cabinet, a chair) is not on it. 0: off.
    support_min_frac: float = 0.05
    support_margin_m: float = 0.05

    def __post_init__(self) -> None:
        if not 1 <= int(self.stride) <= 16:
            raise DepthError(f"stride must be in [1, 16], got {self.stride}")
        if not 0 <= int(self.max_grid_width) <= 100_000:
            raise DepthError(f"max_grid_width must be in [0, 100000], got "
                             f"{self.max_grid_width}")
        if not 0 <= int(self.stride_short_side_px) <= 100_000:
            raise DepthError(f"stride_short_side_px must be in [0, 100000], got "
                             f"{self.stride_short_side_px}")
        if not 0.0 <= float(self.stride_focal_px) <= 100_000.0:
            raise DepthError(f"stride_focal_px must be in [0, 100000], got "
                             f"{self.stride_focal_px}")
        for name in ("registration_search_px", "fattening_search_px"):
            if not 0 <= int(getattr(self, name)) <= 16:
                raise DepthError(f"{name} must be in [0, 16], got {getattr(self, name)}")
        if not 0.0 <= self.min_depth_m < self.max_depth_m <= 100.0:
            raise DepthError("need 0 <= min_depth_m < max_depth_m <= 100")
        if not 1 <= int(self.ransac_iterations) <= 10000:
            raise DepthError(f"ransac_iterations must be in [1, 10000], got "
                             f"{self.ransac_iterations}")
        if not 3 <= int(self.ransac_samples) <= 1_000_000:
            raise DepthError(f"ransac_samples must be in [3, 1000000], got {self.ransac_samples}")
        if not 0.0 <= self.min_height_m < self.max_height_m:
            raise DepthError("need 0 <= min_height_m < max_height_m")
        if not 0.0 <= float(self.raised_plane_min_m) <= 10.0:
            raise DepthError(f"raised_plane_min_m must be in [0, 10], got "
                             f"{self.raised_plane_min_m}")
        if not 0.0 <= self.min_size_m < self.max_size_m:
            raise DepthError("need 0 <= min_size_m < max_size_m")
        if not 1 <= int(self.close_cells) <= 15:
            raise DepthError(f"close_cells must be in [1, 15], got {self.close_cells}")
        if not (float(self.top_view_bin_m) == 0.0 or 0.002 <= float(self.top_view_bin_m) <= 0.1):
            raise DepthError(f"top_view_bin_m must be 0 (off) or in [0.002, 0.1], got "
                             f"{self.top_view_bin_m}")
        for name in ("split_min_points", "small_piece_points", "top_view_min_points",
                     "taller_contact_cells"):
            if not 0 <= int(getattr(self, name)) <= 1_000_000:
                raise DepthError(f"{name} must be in [0, 1000000], got "
                                 f"{getattr(self, name)}")
        if not 0.0 <= float(self.noise_top_sigmas) <= 50.0:
            raise DepthError(f"noise_top_sigmas must be in [0, 50], got {self.noise_top_sigmas}")
        if not 1 <= int(self.crease_cells) <= 32:
            raise DepthError(f"crease_cells must be in [1, 32], got {self.crease_cells}")
        if not 0 <= int(self.crease_colour_cells) <= 15:
            raise DepthError(f"crease_colour_cells must be in [0, 15], got "
                             f"{self.crease_colour_cells}")
        if not 0 <= int(self.colour_edge_low) <= int(self.colour_edge_high) <= 1000:
            raise DepthError(f"need 0 <= colour_edge_low <= colour_edge_high <= 1000, got "
                             f"{self.colour_edge_low}, {self.colour_edge_high}")
        if not isinstance(self.fuse_colour_model, (bool, np.bool_)):
            raise DepthError(f"fuse_colour_model must be true or false, got "
                             f"{self.fuse_colour_model!r}")
        if not 0 <= int(self.max_count) <= 256 or int(self.min_cluster_points) < 1:
            raise DepthError("need 0 <= max_count <= 256 and min_cluster_points >= 1")
        for name in ("edge_jump_frac", "plane_threshold_m", "plane_threshold_quadratic"):
            if not float(getattr(self, name)) > 0:
                raise DepthError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("min_plane_frac", "raised_plane_frac", "min_valid_frac",
                     "fuse_min_valid_frac",
                     "fuse_max_iou", "fuse_raised_frac", "fuse_raised_m", "fuse_containment",
                     "fuse_flat_height_m", "fuse_holes_frac", "split_min_frac",
                     "cut_jump_frac", "crease_m",
                     "weak_jump_frac",
                     "fuse_split_height_m", "fuse_split_height_frac", "fuse_split_cover",
                     "fuse_network_iou", "fuse_network_partial_iou", "fuse_network_refine_iou",
                     "fuse_network_part_containment",
                     "top_view_step_m", "top_view_tops_m", "top_view_tops_frac",
                     "refine_max_frac", "support_min_frac", "support_margin_m"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise DepthError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def stride_for(cfg: DepthProposalConfig, width: int, focal: float = 0.0, height: int = 0
               ) -> DepthProposalConfig:
    """``cfg`` with the grid step of a camera of ``width`` x ``height`` pixels (height 0:
    unknown) with the given ``focal`` length (pixels; 0: unknown): ``stride``, times the
    frame's shorter side over ``stride_short_side_px`` (rounded down) and times ``focal /
    stride_focal_px`` (rounded) when those are more, raised so that the grid is at most
    ``max_grid_width`` samples wide, at most 16. ``cfg`` itself when that changes nothing,
    else a copy whose step is final (``stride_short_side_px``, ``stride_focal_px`` and
    ``max_grid_width`` 0: applying it again changes nothing)."""
    step = int(cfg.stride)
    if int(cfg.stride_short_side_px) > 0 and height > 0:
        short = min(int(width), int(height))
        step = max(step, int(step * short / int(cfg.stride_short_side_px)))
    if float(cfg.stride_focal_px) > 0 and focal > 0:
        step = max(step, int(step * float(focal) / float(cfg.stride_focal_px) + 0.5))
    if int(cfg.max_grid_width) > 0:
        step = max(step, -(-int(width) // int(cfg.max_grid_width)))
    step = min(step, 16)
    return cfg if step == int(cfg.stride) else _with_stride(cfg, step)


@functools.lru_cache(maxsize=16)
def _with_stride(cfg: DepthProposalConfig, stride: int) -> DepthProposalConfig:
    """``cfg`` with another grid step, final: made once per setting, not per frame."""
    return replace(cfg, stride=stride, stride_short_side_px=0, stride_focal_px=0.0,
                   max_grid_width=0)


def load_depth_config(path: str | Path) -> DepthProposalConfig:
    """Read a :class:`DepthProposalConfig` from YAML (a mapping of its fields; unknown keys
    and wrong types are errors).

    Raises:
        DepthError: unreadable file, bad YAML, unknown key, wrong type or invalid value.
    """
    import yaml

    from ..config import ConfigError, from_dict

    try:
        data = yaml.safe_load(Path(path).expanduser().read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DepthError(f"cannot read depth proposal config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise DepthError(f"{path}: expected a mapping of DepthProposalConfig fields")
    try:
        return from_dict(DepthProposalConfig, data, where=str(path))
    except ConfigError as exc:
        raise DepthError(str(exc)) from None


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
    #: The support surface's extent (``support_min_frac``), or ``None``; the grid of
    #: sampled depth (m, 0 where not usable) and the camera, for the fusion's colour boxes.
    support: SupportRegion | None = None
    depth_grid: np.ndarray | None = None
    camera: CameraIntrinsics | None = None


@dataclass
class DepthCloud:
    """The sampled, filtered cloud of one depth frame (step 1 of the module docstring)."""

    #: Grid of sampled depth (m, 0 where invalid) and its validity.
    z: np.ndarray
    valid: np.ndarray
    stride: int
    #: Pixel offset of the first grid sample.
    offset: int
    #: Grid row and column of each valid sample, and its ``(N, 3)`` float32 camera-frame
    #: point (x right, y down, z forward, metres).
    rows: np.ndarray
    cols: np.ndarray
    points: np.ndarray
    #: Row-major index of each valid sample in the grid (``rows * width + cols``; computed
    #: from them when not given).
    flat: np.ndarray | None = None

    def flat_index(self) -> np.ndarray:
        """Row-major grid index of each valid sample."""
        if self.flat is None:
            self.flat = self.rows * self.z.shape[1] + self.cols
        return self.flat

    def crop(self, r0: int, r1: int, c0: int, c1: int) -> tuple["DepthCloud", np.ndarray]:
        """The samples of grid rows ``r0:r1`` and columns ``c0:c1`` as the cloud of that
        window (the same points; rows and columns from the window's corner), and their
        indices in this cloud."""
        lo, hi = np.searchsorted(self.rows, [r0, r1])   # samples come in row-major order
        cols = self.cols[lo:hi]
        idx = lo + np.flatnonzero((cols >= c0) & (cols < c1))
        return DepthCloud(self.z[r0:r1, c0:c1], self.valid[r0:r1, c0:c1], self.stride,
                          self.offset, np.take(self.rows, idx) - r0,
                          np.take(self.cols, idx) - c0, np.take(self.points, idx, 0)), idx

    def scatter(self, values: np.ndarray, fill: float, dtype: type) -> np.ndarray:
        """A grid of ``fill`` with each valid sample's cell set to its ``values`` entry."""
        grid = np.full(self.z.size, fill, dtype)
        grid[self.flat_index()] = values   # flat writes: ~2x those by row and column
        return grid.reshape(self.z.shape)


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
            f"{float(np.median(d)):.2f} m: depth in other units than depth_scale says?")


def depth_samples(depth: np.ndarray, cfg: DepthProposalConfig
                  ) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``(z, valid, stride, offset)``: ``depth`` sampled every ``cfg.stride`` pixels
    (float32 metres, 0 where invalid) and the mask of samples in range and not on a depth
    discontinuity (3x3 span above ``edge_jump_frac`` of the depth)."""
    s = int(cfg.stride)
    off = s // 2
    z = np.ascontiguousarray(depth[off::s, off::s], dtype=np.float32)
    valid = np.isfinite(z) & (z >= cfg.min_depth_m) & (z <= cfg.max_depth_m)
    z = np.where(valid, z, np.float32(0.0))
    valid &= depth_span(z, valid) <= cfg.edge_jump_frac * z
    return z, valid, s, off


#: The 8-neighbourhood (3x3).
_K3 = np.ones((3, 3), np.uint8)


def depth_span(z: np.ndarray, has_depth: np.ndarray) -> np.ndarray:
    """Per cell of the sampled depth ``z``: the largest minus the smallest depth of its 3x3
    neighbourhood, over the cells of ``has_depth`` (a step between two surfaces is large)."""
    return cv2.dilate(z, _K3) - cv2.erode(np.where(has_depth, z, np.float32(1e6)), _K3)


def depth_cloud(depth: np.ndarray, k: CameraIntrinsics, cfg: DepthProposalConfig) -> DepthCloud:
    """Sample ``depth`` every ``cfg.stride`` pixels, drop invalid and discontinuity samples
    (:func:`depth_samples`) and back-project the rest with ``k``."""
    z, valid, s, off = depth_samples(depth, cfg)
    flat = np.flatnonzero(valid)
    # the row of each sample from the counts per row, then its column: 4x np.divmod's speed
    rows = np.repeat(np.arange(z.shape[0]), np.count_nonzero(valid, axis=1))
    cols = flat - rows * z.shape[1]
    zz = np.take(z.reshape(-1), flat)
    # per grid column / row first (the same float64 values as per sample), then per sample;
    # written straight into the float32 cloud (the rounding of astype)
    pts = np.empty((flat.size, 3), np.float32)
    if k.distorted:  # along the ray the lens bends onto each sampled pixel
        rx, ry = k.pixel_rays()
        pix = (off + rows * s) * rx.shape[1] + (off + cols * s)
        pts[:, 0] = np.take(rx, pix) * zz
        pts[:, 1] = np.take(ry, pix) * zz
    else:
        u = (off + np.arange(z.shape[1]) * s) - k.cx
        v = (off + np.arange(z.shape[0]) * s) - k.cy
        pts[:, 0] = np.take(u, cols) * zz / k.fx
        pts[:, 1] = np.take(v, rows) * zz / k.fy
    pts[:, 2] = zz
    return DepthCloud(z, valid, s, off, rows, cols, pts, flat)


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
    shift = (0, 0)
    # the colour image is used only when it is a uint8 RGB image of the depth's size
    colour = np.asarray(image_rgb) if image_rgb is not None and np.shape(image_rgb) == (
        *depth.shape, 3) and np.asarray(image_rgb).dtype == np.uint8 else None
    fattening = 0
    if colour is not None and registration is not None and (
            cfg.registration_search_px > 0 or cfg.fattening_search_px > 0):
        shift = registration.update(colour, depth)
        shift = shift if cfg.registration_search_px > 0 else (0, 0)
        fattening = registration.fattening if cfg.fattening_search_px > 0 else 0
        if fattening > 0:
            depth = strip_fattening(depth, fattening)
        if shift != (0, 0):
            depth = shift_depth(depth, *shift)
    cloud = depth_cloud(depth, intrinsics, cfg)
    out = DepthProposals(valid_frac=float(cloud.valid.mean()) if cloud.valid.size else 0.0,
                         stride=cloud.stride, offset=cloud.offset, depth_shift=shift,
                         fattening_px=fattening)
    if out.valid_frac < cfg.min_valid_frac or cfg.max_count == 0:
        out.note = _too_little_depth_note(out.valid_frac, depth, cfg)
        return out
    fit = fit_plane_ransac(cloud.points, cfg, np.random.default_rng(int(cfg.seed)))
    if fit is None or fit[2] < cfg.min_plane_frac:
        out.note = "no support plane in the depth"
        return out
    raised = raised_plane(cloud.points, fit[:2], cfg)
    (n, d), out.raised_plane = raised or fit[:2], raised is not None
    out.plane = (float(n[0]), float(n[1]), float(n[2]), d)
    height = cloud.points @ n.astype(np.float32) + np.float32(d)
    out.height_grid = cloud.scatter(height, np.nan, np.float32)
    out.allowance_grid = cfg.plane_threshold_quadratic * cloud.z * cloud.z
    noise = DepthNoiseEstimate.measure(height, cloud.points[:, 2])
    out.noise_m = noise.scale * float(noise_curve(1.0))
    out.camera = intrinsics
    out.depth_grid = cloud.z
    out.support = _support(cloud, height, n, cfg)
    windows = _object_windows(cloud, height, cfg, intrinsics) \
        if cfg.refine_max_frac > 0 and int(cfg.stride) >= 2 else None
    if windows is not None:
        out.boxes, out.tops = _window_boxes(depth, intrinsics, cfg,
                                            (cloud, height, out.height_grid), windows, colour,
                                            (n, d), (noise, out.support))
    else:
        out.boxes, out.tops = _boxes_on_plane(cloud, height, out.height_grid, intrinsics, cfg,
                                              n, colour, (noise, out.support))
    return out


def _support(cloud: DepthCloud, height: np.ndarray, normal: np.ndarray,
             cfg: DepthProposalConfig) -> SupportRegion | None:
    """The support surface's extent (:func:`.support_region.support_region`) from the
    samples within the plane's inlier distance of it (its unit ``normal``); ``None`` when
    ``support_min_frac`` is 0."""
    if cfg.support_min_frac <= 0:
        return None
    z = cloud.points[:, 2]
    on = np.abs(height) <= cfg.plane_threshold_m + cfg.plane_threshold_quadratic * z * z
    return support_region(cloud.scatter(on.view(np.uint8), 0, np.uint8), cloud.flat_index(),
                          cloud.points, normal, cfg.support_min_frac, cfg.support_margin_m)


#: An object window (:func:`_object_windows`) reaches this many fine grid cells beyond the
#: grid's raised samples it holds: the fine grid's raised samples and its closing reach a
#: few cells past them (creases need only the raised samples; 16 cells found no more).
REFINE_MARGIN_CELLS = 8
#: More groups of raised samples than this (specks of a hostile or broken depth image): no
#: windows, the grid over the whole frame (the windows' joining and per-window passes are
#: bounded; real frames hold up to about 45).
MAX_OBJECT_WINDOWS = 64


def _in_band(points: np.ndarray, height: np.ndarray, cfg: DepthProposalConfig) -> np.ndarray:
    """Which samples stand in the height band: over ``min_height_m`` plus the noise
    allowance at their depth, under ``max_height_m``."""
    low = cfg.min_height_m + cfg.plane_threshold_quadratic * points[:, 2] ** 2
    return (height > low) & (height < cfg.max_height_m)


def _object_windows(cloud: DepthCloud, height: np.ndarray, cfg: DepthProposalConfig,
                    k: CameraIntrinsics) -> list[tuple[int, int, int, int]] | None:
    """``(x0, y0, x1, y1)`` pixel windows that hold the grid's groups of raised samples
    (each group of ``min_cluster_points`` or more, after the ``close_cells`` closing) plus
    :data:`REFINE_MARGIN_CELLS` of the finer grid, joined while any two overlap; their
    corners lie on the grid step (a window's grid is the frame's). ``None`` for more than
    :data:`MAX_OBJECT_WINDOWS` groups."""
    grid = cloud.scatter(_in_band(cloud.points, height, cfg).view(np.uint8), 0, np.uint8)
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
    fine = _with_stride(cfg, int(cfg.stride) // 2)
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
    edges = _ColourEdges(colour, cloud.z.shape, cfg) \
        if colour is not None and int(cfg.crease_colour_cells) > 1 else None
    clusters = object_clusters(cloud, height, height_grid, normal, cfg, edges)
    if int(cfg.taller_contact_cells) > 0 and clusters:
        taller = _below_taller(height_grid, cfg)
        clusters = [c for c in clusters if np.count_nonzero(
            taller[np.take(cloud.rows, c), np.take(cloud.cols, c)])
            < int(cfg.taller_contact_cells)]
    return boxes_from_clusters(clusters, cloud.points, height, normal, k, cfg, *filters)


def _below_taller(height_grid: np.ndarray, cfg: DepthProposalConfig) -> np.ndarray:
    """Grid of the cells next to (3x3) a sample above ``max_height_m``: two valid samples
    side by side lie on one surface (a sample across a depth step is no valid sample)."""
    above = np.nan_to_num(height_grid, nan=-1.0) >= cfg.max_height_m
    return cv2.dilate(above.view(np.uint8), _K3) > 0


def object_clusters(cloud: DepthCloud, height: np.ndarray, height_grid: np.ndarray,
                    normal: np.ndarray, cfg: DepthProposalConfig,
                    edges: _ColourEdges | None = None) -> list[np.ndarray]:
    """Step 3 of the module docstring: index arrays (into ``cloud``) of the objects on the
    plane whose unit ``normal`` gives each sample its ``height`` (and ``height_grid``, the
    same on the sample grid): the samples in the height band, grouped on the grid and cut
    at steps, creases (closed along the colour ``edges`` when given) and weaker steps in
    front, then where each group's height map steps seen from above (``top_view_*``)."""
    clusters = _grid_clusters(cloud, _in_band(cloud.points, height, cfg), cfg, edges,
                              height_grid)
    if cfg.top_view_bin_m > 0:
        clusters = [piece for c in clusters
                    for piece in split_top_view(c, cloud.points, height, normal, cfg)]
    return clusters


#: The 4-neighbourhood (a 3x3 cross).
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
#: Crease marks holding a block of this many cells square are a concave surface, not the
#: contact line of two objects.
_THICK = np.ones((4, 4), np.uint8)


def _thin_marks(crease: np.ndarray) -> np.ndarray:
    """The 8-connected groups of ``crease`` marks that hold no 4x4 block of marks: lines
    along the contact of two objects, not the broad patches that noise leaves on a
    concave surface (the inside of a mug, a cup or a bowl)."""
    thick = cv2.morphologyEx(crease.view(np.uint8), cv2.MORPH_OPEN, _THICK) > 0
    if not thick.any():
        return crease
    _, groups = cv2.connectedComponents(crease.view(np.uint8), connectivity=8)
    return crease & ~np.isin(groups, np.unique(groups[thick]))


class _ColourEdges:
    """The colour image's edges on the depth grid (``crease_colour_cells``), computed per
    cluster window when a crease asks for them (most clusters have none)."""

    #: Cells of context around a window (Canny's gradient and hysteresis see past it).
    PAD = 3

    def __init__(self, image_rgb: np.ndarray, shape: tuple[int, int],
                 cfg: DepthProposalConfig) -> None:
        """``image_rgb``: the uint8 RGB colour image (the depth's size); ``shape``: the
        grid's."""
        self._image, self._shape, self._cfg = image_rgb, shape, cfg
        self._lab: np.ndarray | None = None

    def window(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """``bool`` cells of the grid window ``(x, y, w, h)`` on (or next to) a colour
        edge."""
        if self._lab is None:   # the image on the grid, in Lab, once for all windows
            gh, gw = self._shape
            image = np.ascontiguousarray(self._image)
            if image.shape[:2] != (gh, gw):
                image = cv2.resize(image, (gw, gh), interpolation=cv2.INTER_AREA)
            self._lab = cv2.cvtColor(image, cv2.COLOR_RGB2Lab)
        p = self.PAD
        y0, x0 = max(y - p, 0), max(x - p, 0)
        lab = self._lab[y0:y + h + p, x0:x + w + p]
        edges = np.zeros(lab.shape[:2], np.uint8)
        for c in range(3):
            edges |= cv2.Canny(np.ascontiguousarray(lab[..., c]),
                               int(self._cfg.colour_edge_low), int(self._cfg.colour_edge_high))
        edges = cv2.dilate(edges, _K3) > 0
        return edges[y - y0:y - y0 + h, x - x0:x - x0 + w]


def _colour_crease(crease: np.ndarray, edges: np.ndarray, own: np.ndarray,
                   cells: int) -> np.ndarray:
    """``crease`` closed along the colour ``edges`` (same window): the ``own`` cells on an
    edge that a closing of the crease cells with a ``cells``-wide disc fills (a gap between
    blobs of crease cells narrower than the disc; never past their ends)."""
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (int(cells),) * 2)
    near = cv2.morphologyEx(crease.view(np.uint8), cv2.MORPH_CLOSE, disc).view(bool)
    return crease | (near & edges & own)


def _grid_clusters(cloud: DepthCloud, above: np.ndarray, cfg: DepthProposalConfig,
                   edges: _ColourEdges | None = None,
                   heights: np.ndarray | None = None) -> list[np.ndarray]:
    """Indices (into the cloud) of each connected component of the above-plane samples on
    the grid (labels from the grid closed by ``close_cells``), cut at steps and creases
    (closed along the colour ``edges`` when given), with the grid of ``heights`` above the
    plane also at weaker steps in front (``weak_jump_frac``), and of the small pieces
    proposed besides them (``small_piece_points``)."""
    grid = cloud.scatter(above, 0, np.uint8)
    index = cloud.scatter(np.arange(len(cloud.rows)), -1, np.int64)
    joined = grid
    if int(cfg.close_cells) > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (int(cfg.close_cells) | 1,) * 2)
        joined = cv2.morphologyEx(grid, cv2.MORPH_CLOSE, kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    clusters = []
    for i in range(1, count):
        if stats[i, cv2.CC_STAT_AREA] < cfg.min_cluster_points:
            continue
        x, y, bw, bh = (int(v) for v in stats[i, :4])
        comp = labels[y:y + bh, x:x + bw] == i
        own = comp & (grid[y:y + bh, x:x + bw] > 0)
        parts, kept, crease = [comp], comp, None
        if cfg.cut_jump_frac > 0:  # not across a depth step ...
            kept = comp & ~_steps(cloud, (x, y, bw, bh), cfg)
            parts = _large_parts(comp, kept, own, cfg) or parts
        if cfg.crease_m > 0:  # ... nor across a concave crease
            crease = _creases(cloud, grid, (x, y, bw, bh), cfg) & comp
            if edges is not None and crease.any():
                crease = _colour_crease(crease, edges.window(x, y, bw, bh), own,
                                        cfg.crease_colour_cells)
            if crease.any() and int(cfg.close_cells) > 1:
                # ... nor through a cell the closing filled right next to a thin line of
                # marks (the gap at the objects' feet, below the height band or without
                # depth, where a crease cannot be seen and the pieces would stay joined)
                crease |= cv2.dilate(_thin_marks(crease).view(np.uint8),
                                     _CROSS).view(bool) & comp & ~own
            if crease.any():  # the finer of: steps and creases at once, creases per piece
                kept = kept & ~crease
                joint = _large_parts(comp, kept, own, cfg) or [comp]
                parts = [p for part in parts for p in
                         _large_parts(part, part & ~crease, own & part, cfg) or [part]]
                if len(joint) > len(parts):
                    parts = joint
        if cfg.weak_jump_frac > 0 and heights is not None:  # ... nor a weaker one in front
            parts = _front_parts(cloud, (x, y, bw, bh), parts, own, cfg, crease,
                                 heights[y:y + bh, x:x + bw])
        if cfg.small_piece_points > 0 and kept is not comp:
            parts = parts + _small_pieces(kept, own, cfg)
        for part in parts:
            sel = own & part
            if np.count_nonzero(sel) >= cfg.min_cluster_points:
                clusters.append(index[y:y + bh, x:x + bw][sel])
    return clusters


def _steps(cloud: DepthCloud, roi: tuple[int, int, int, int],
           cfg: DepthProposalConfig, frac: float | None = None) -> np.ndarray:
    """Cells of the grid window ``roi`` = ``(x, y, w, h)`` with depth whose 3x3
    neighbourhood spans more than ``frac`` (default ``cut_jump_frac``) of it."""
    x, y, w, h = roi
    y0, x0 = max(y - 1, 0), max(x - 1, 0)
    z = cloud.z[y0:y + h + 1, x0:x + w + 1]
    frac = cfg.cut_jump_frac if frac is None else frac
    step = (z > 0) & (depth_span(z, z > 0) > frac * z)
    return step[y - y0:y - y0 + h, x - x0:x - x0 + w]


#: :func:`_lower_in_front`: the contact of two pieces is the cells of each within this many
#: grid cells (3x3 dilations) of the other.
CONTACT_CELLS = 2


def _front_parts(cloud: DepthCloud, roi: tuple[int, int, int, int], parts: list[np.ndarray],
                 own: np.ndarray, cfg: DepthProposalConfig, crease: np.ndarray | None,
                 heights: np.ndarray) -> list[np.ndarray]:
    """Each of a cluster's ``parts`` (masks of the grid window ``roi``) cut into the
    pieces that its weaker steps (``weak_jump_frac``) and ``crease`` cells leave, where
    every two touching pieces have the lower one in front (:func:`_lower_in_front`)."""
    x, y, w, h = roi
    weak = _steps(cloud, roi, cfg, cfg.weak_jump_frac)
    if crease is not None:
        weak = weak | crease
    z = cloud.z[y:y + h, x:x + w]
    out = []
    for part in parts:
        pieces = _large_parts(part, part & ~weak, own & part, cfg)
        out.extend(pieces if pieces and _lower_in_front(pieces, own, z, heights) else [part])
    return out


def _lower_in_front(pieces: list[np.ndarray], own: np.ndarray, z: np.ndarray,
                    heights: np.ndarray) -> bool:
    """Whether of every two touching ``pieces`` the lower (median height of its ``own``
    samples) is the nearer (median depth ``z`` along their contact, :data:`CONTACT_CELLS`)."""
    tops = []
    for piece in pieces:
        h = heights[piece & own]
        h = h[np.isfinite(h)]
        tops.append(float(np.median(h)) if h.size else 0.0)
    near = [cv2.dilate(p.view(np.uint8), _K3, iterations=CONTACT_CELLS) > 0 for p in pieces]
    for i, a in enumerate(pieces):
        for j in range(i + 1, len(pieces)):
            za = z[a & own & near[j] & (z > 0)]
            zb = z[pieces[j] & own & near[i] & (z > 0)]
            if za.size and zb.size and \
                    (tops[i] < tops[j]) != (float(np.median(za)) < float(np.median(zb))):
                return False
    return True


def crease_radii(cells: int) -> tuple[int, ...]:
    """The neighbourhood sizes (grid cells) of the crease test: ``cells`` times 2/3, 1 and
    3/2 (small objects have their crease within a few cells, large ones further out)."""
    c = int(cells)
    return tuple(sorted({max(1, round(c * 2 / 3)), c, max(1, round(c * 3 / 2))}))


def _creases(cloud: DepthCloud, above: np.ndarray, roi: tuple[int, int, int, int],
             cfg: DepthProposalConfig) -> np.ndarray:
    """Cells of the grid window ``roi`` = ``(x, y, w, h)`` on a concave crease: behind the
    chord of the above-plane samples (``above`` > 0 on the grid) ``r`` cells away on both
    sides (a row, a column or a diagonal; ``r`` each of :func:`crease_radii`) by more than
    ``crease_m`` plus the noise allowance, where those samples are not on such a concavity
    themselves."""
    x, y, w, h = roi
    radii = crease_radii(cfg.crease_cells)
    m = radii[-1]
    y0, x0 = max(y - m, 0), max(x - m, 0)
    y1, x1 = min(y + h + m, cloud.z.shape[0]), min(x + w + m, cloud.z.shape[1])
    hh, ww = y1 - y0, x1 - x0
    zp = np.zeros((hh + 2 * m, ww + 2 * m), np.float32)  # zero margins (np.pad is slow)
    z = zp[m:m + hh, m:m + ww]
    np.copyto(z, cloud.z[y0:y1, x0:x1], where=above[y0:y1, x0:x1] > 0)
    # behind the chord: z - (a + b) / 2 > thr, i.e. a + b < 2 z - 2 thr
    limit = 2 * z - 2 * (np.float32(cfg.crease_m)
                         + np.float32(cfg.plane_threshold_quadratic) * z * z)
    has = zp > 0
    centre = has[m:m + hh, m:m + ww]
    crease = np.zeros(z.shape, bool)
    concave = np.zeros(zp.shape, bool)
    inner = concave[m:m + hh, m:m + ww]
    for r in radii:
        for dy, dx in ((0, r), (r, 0), (r, r), (r, -r)):
            ia = (slice(m - dy, m - dy + hh), slice(m - dx, m - dx + ww))
            ib = (slice(m + dy, m + dy + hh), slice(m + dx, m + dx + ww))
            np.less(zp[ia] + zp[ib], limit, out=inner)
            inner &= has[ia]
            inner &= has[ib]
            inner &= centre
            # a crease between two surfaces that are not concave there themselves (the
            # inside of a cup or a bowl is concave all over: no crease)
            crease |= inner & ~(concave[ia] | concave[ib])
    return crease[y - y0:y - y0 + h, x - x0:x - x0 + w]


def _large_parts(comp: np.ndarray, cut: np.ndarray, own: np.ndarray,
                 cfg: DepthProposalConfig) -> list[np.ndarray] | None:
    """Masks of the pieces of the grid component ``comp`` when its ``cut`` pixels (``comp``
    less its depth discontinuities) fall apart into two or more pieces that each hold at
    least ``split_min_frac`` of its ``own`` samples or ``split_min_points`` of them (and
    ``min_cluster_points``); each
    large piece grows over the rest of ``comp`` from its interior cells (every cell goes to
    the nearest one).
    ``None`` when ``comp`` stays one cluster."""
    labels, count = _pieces(cut, own)
    big = np.flatnonzero(count >= _split_need(own, cfg))
    if len(big) < 2:
        return None
    # seeds: the interior cells of the large pieces (a piece without any is not one)
    lab = labels.astype(np.float32)
    inner = cv2.dilate(lab, _K3) == cv2.erode(lab, _K3)
    seed = np.isin(labels, big) & inner
    ids = np.unique(labels[seed])
    if len(ids) < 2:
        return None
    # every cell goes to its nearest seed cell's piece (a piece whose interior falls into
    # several blobs keeps all of them)
    piece = nearest_label(labels, seed)
    return [comp & (piece == k) for k in ids]


def _pieces(cut: np.ndarray, own: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8-connected pieces of the ``cut`` mask (labels, 0 outside) and how many ``own``
    samples each holds (``count[0]`` is 0)."""
    _, labels = cv2.connectedComponents(cut.view(np.uint8), connectivity=8)
    count = np.bincount(labels[own], minlength=int(labels.max()) + 1)
    count[0] = 0
    return labels, count


def _split_need(own: np.ndarray, cfg: DepthProposalConfig) -> float:
    """The samples a piece must hold to split a cluster of ``own`` samples off (see
    ``split_min_frac`` and ``split_min_points``)."""
    return piece_need(int(np.count_nonzero(own)), cfg.split_min_frac,
                      int(cfg.split_min_points), int(cfg.min_cluster_points))


def _small_pieces(cut: np.ndarray, own: np.ndarray,
                  cfg: DepthProposalConfig) -> list[np.ndarray]:
    """Masks of the pieces of a cluster's ``cut`` mask too small to split it but holding at
    least ``small_piece_points`` of its ``own`` samples (see ``small_piece_points``)."""
    labels, count = _pieces(cut, own)
    keep = np.flatnonzero((count >= cfg.small_piece_points) & (count < _split_need(own, cfg)))
    return [labels == j for j in keep]


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
    for sel in clusters:
        cloud = points[sel]
        hi = cloud.max(axis=0)
        extent = float((hi - cloud.min(axis=0)).max())
        if not cfg.min_size_m <= extent <= cfg.max_size_m:
            continue
        top = float(height[sel].max())
        # the median depth only when the top is under the noise's bound at the farthest
        if noise is not None and top < cfg.noise_top_sigmas * noise.sigma_bound(
                float(hi[2])) and top < cfg.noise_top_sigmas * noise.sigma(
                float(np.median(cloud[:, 2]))):
            continue
        feet = cloud - height[sel, None] * normal[None, :].astype(np.float32)
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
