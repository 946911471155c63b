"""Settings of the depth proposer (:mod:`.depth_proposals`) and of its fusion with the colour
boxes (:mod:`.depth_fusion`), ROS-free: :class:`DepthProposalConfig`, read from YAML by
:func:`load_depth_config` (``config/depth_proposals.yaml`` holds the defaults), and
:func:`stride_for`, the grid step a camera's frames are sampled at.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .camera_model import DepthError

__all__ = ["DepthProposalConfig", "load_depth_config", "stride_for", "with_stride",
           "MAX_RANSAC_DISTANCES"]

#: Most ``ransac_iterations`` x ``ransac_samples`` (the point-plane distances RANSAC scores
#: its hypotheses on per frame: about 0.1-0.4 s of CPU at this bound; 312x the defaults').
#: The scoring's memory is bounded apart from it (``support_plane.RANSAC_CHUNK_VALUES``).
MAX_RANSAC_DISTANCES = 50_000_000


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
    #: Sparse depth: when more than this fraction of the grid's samples have no
    #: measurement while another pixel of their cell has one (pixels lost at random, a
    #: depth camera of lower resolution registered to a larger colour image: measured only
    #: every second or third pixel), each such sample takes the nearest measured pixel of
    #: its cell, and the support surface's gaps between its cells on the plane are filled.
    #: Dense depth leaves at most 1.6% so (holes' borders; rendered bags with the sensor
    #: noise), sparse depth 13% and more. 0: always; 1: never.
    sparse_fill_frac: float = 0.05
    #: A sample whose 3x3 grid neighbourhood spans more than this fraction of its depth
    #: lies on a discontinuity and is dropped.
    edge_jump_frac: float = 0.03
    #: RANSAC: hypotheses, and the points each is scored on; their product at most
    #: :data:`MAX_RANSAC_DISTANCES`.
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
    #: ... and a network box that holds a depth box loosely (the only depth box touching
    #: it, lying 90% of its area inside it at IoU at least this, its top at about the
    #: network box's) is moved halfway to it too: the network's box reaches beyond the
    #: object (a shadow, the table around it), depth's edges are tighter
    #: (:func:`~.depth_fusion._loose_around`). Session 55, on the looked-at groups: 0.4
    #: found 2 more objects at 2 fewer false boxes (0.35 the same; 0.45 none). 0: off.
    fuse_network_refine_inside_iou: float = 0.4
    #: A depth or colour box lying at least this fraction of its area inside a network box,
    #: its top at about the network box's (``fuse_split_height_m``,
    #: ``fuse_split_height_frac``), is a part of that object and is not added, however
    #: small its IoU with it (:func:`~.depth_fusion._part_of_network`). 0: off.
    fuse_network_part_containment: float = 0.85
    #: A depth or colour box lying at least this fraction of its area inside a network box
    #: is never beside it by a small IoU alone (``fuse_network_iou``), whatever its height:
    #: on the looked-at rendered bags such boxes were mostly pieces of the object the network
    #: boxed (a handle, a lid's rim, a fragment of noisy depth: of 109 kept 70% or more
    #: inside one, 85 matched no object), seldom a small object in front of it.
    #: A weak network box matching it still brings it back (``fuse_network_weak_score``).
    #: 0: off (such a box was added when its IoU was at most ``fuse_network_iou``).
    fuse_network_inside: float = 0.9
    #: A depth box that holds the only network boxes touching it (one or two, each lying
    #: :data:`~.depth_fusion.WHOLE_PIECE_CONTAINMENT` of its area inside it, their tops at about
    #: the depth box's), which cover less than this fraction of it, replaces them: the network
    #: boxed pieces of one object (a thin tool by its handle, a box's print) that depth sees
    #: whole (:func:`~.depth_fusion.whole_from_depth`). Session 55, on the looked-at groups:
    #: 0.5 found 4 more objects at 7 fewer false boxes (0.4: +2 / -4; 0.6 as 0.5). 0: off.
    fuse_network_whole_cover: float = 0.5
    #: The box network's boxes scored from this up to its threshold
    #: (``proposal_box_net_threshold``) are weak: never proposed on their own, but a depth
    #: box that the fusion would leave out beside the network's boxes (a part of one, or
    #: overlapping one) is added when a weak box matches it (IoU 0.5,
    #: :data:`~.depth_fusion.WEAK_MATCH_IOU`) and no network box does: depth and the
    #: network each saw that object, the network without confidence. 0: off.
    fuse_network_weak_score: float = 0.15
    #: A network box lying flat on the support surface is left out: at least
    #: ``fuse_network_flat_valid`` of its grid samples have usable depth (at least
    #: :data:`~.depth_fusion.FLAT_MIN_SAMPLES` of them), the 98th percentile of their
    #: heights above the plane is under ``fuse_network_flat_m`` and their median over minus
    #: that (:func:`~.depth_fusion.flat_on_support`): a print on the table (a patterned
    #: cloth's flowers, a placemat, a magazine), which looks like an object in colour and
    #: has no height. The thinnest objects stand higher (a fork's 98th percentile 11 mm or
    #: more on the rendered bags; a printed cloth's motifs 3 mm, 90% of them under 5 mm);
    #: a box with too little depth (a black or shiny object) is kept. 0: off.
    fuse_network_flat_m: float = 0.008
    fuse_network_flat_valid: float = 0.7
    #: The network's boxes are left out for standing beyond the support surface
    #: (``support_*``, :func:`~.depth_fusion._on_support`) only in a frame where depth found
    #: at least this many boxes itself. Depth that finds no object where the network finds
    #: some has not seen the table: its plane is another surface (a cabinet's or a large
    #: box's side, the floor under a small table), and the network's objects on the table
    #: stand "beyond" it (session 48: 2 of 690 objects on small tables with furniture, no
    #: other change on the looked-at groups). 0: the support test always applies.
    fuse_network_support_min_boxes: int = 1
    #: With the box network on, the colour model's boxes (``box_net_colour: apart``) join the fusion
    #: too; off (the default) the fusion takes the network's boxes and depth's
    #: (:func:`~.depth_fusion.fusion_colour_config`): on the tuning bags the colour model added no
    #: object once depth was there, only false boxes, for about 8 ms of CPU a frame. With the
    #: network off the colour model is the colour proposer and runs either way.
    fuse_colour_model: bool = False
    #: The box network's close pass (``ProposalConfig.box_net_close_width``, the node's
    #: ``proposal_box_net_close_width``) on every frame with depth too; off (the default)
    #: frames with depth take it only when their depth says the camera is close
    #: (``close_view_m``) or their camera is named in the node's
    #: ``proposal_box_net_close_topics``: on tables, live with depth, it cost about 3 of 30
    #: frames a second on 2 cores and up to 1 object a group (README "Close objects").
    fuse_close_pass: bool = False
    #: ... and a frame whose depth says the camera is close takes it without being asked:
    #: the median of its measured depth (every 8th pixel) nearer than this (m), or no depth
    #: measured at all (nearer than the sensor's range). Chosen between the hand camera's
    #: close-ups (medians 0.2-0.55 m) and the tables seen from 0.45 m on (0.64 m and more);
    #: a long-focus lens's bound grows with its focal length over its image width
    #: (``depth_fusion.CLOSE_VIEW_FOCAL_PER_WIDTH``: 0.83 m for YCB-Video's Xtion). 0: off.
    close_view_m: float = 0.5
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
    #: Low objects seen from above (:mod:`.top_view`): where a bin's 3x3 neighbourhood
    #: tops out under ``top_view_low_m`` (m), the map is also cut where it drops by more
    #: than ``top_view_low_step_frac`` of that top (a flat object against another low one:
    #: a sponge beside scissors); touching pieces both topping out under it join again only
    #: by ``top_view_tops_frac`` (not ``top_view_tops_m``). 0 (either): off.
    top_view_low_m: float = 0.045
    top_view_low_step_frac: float = 0.6
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
        if int(self.seed) < 0:   # numpy's default_rng refuses a negative seed (any other int
            # is fine: a seed of 2^32 or more loaded before)
            raise DepthError(f"seed must be in [0, inf) (a non-negative integer), got "
                             f"{self.seed}")
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
        self._check_ransac()
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
                     "taller_contact_cells", "fuse_network_support_min_boxes"):
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
        for name in ("fuse_colour_model", "fuse_close_pass"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise DepthError(f"{name} must be true or false, got "
                                 f"{getattr(self, name)!r}")
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
                     "fuse_network_refine_inside_iou",
                     "fuse_network_part_containment", "fuse_network_inside",
                     "fuse_network_whole_cover",
                     "fuse_network_weak_score", "fuse_network_flat_m", "fuse_network_flat_valid",
                     "top_view_step_m", "top_view_tops_m", "top_view_tops_frac",
                     "top_view_low_m", "top_view_low_step_frac",
                     "refine_max_frac", "support_min_frac", "support_margin_m",
                     "sparse_fill_frac", "close_view_m"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise DepthError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    def _check_ransac(self) -> None:
        """Raise :class:`DepthError` unless the RANSAC settings are in range and their
        product is at most :data:`MAX_RANSAC_DISTANCES`."""
        if not 1 <= int(self.ransac_iterations) <= 10000:
            raise DepthError(f"ransac_iterations must be in [1, 10000], got "
                             f"{self.ransac_iterations}")
        if not 3 <= int(self.ransac_samples) <= 1_000_000:
            raise DepthError(f"ransac_samples must be in [3, 1000000], got {self.ransac_samples}")
        if int(self.ransac_iterations) * int(self.ransac_samples) > MAX_RANSAC_DISTANCES:
            raise DepthError(
                f"ransac_iterations x ransac_samples must be at most {MAX_RANSAC_DISTANCES:,} "
                f"(point-plane distances a frame's RANSAC computes; the defaults, 80 x 2000: "
                f"160,000), got {self.ransac_iterations} x {self.ransac_samples}")


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
    return cfg if step == int(cfg.stride) else with_stride(cfg, step)


@functools.lru_cache(maxsize=16)
def with_stride(cfg: DepthProposalConfig, stride: int) -> DepthProposalConfig:
    """``cfg`` with another grid step, final: made once per setting, not per frame."""
    return replace(cfg, stride=stride, stride_short_side_px=0, stride_focal_px=0.0,
                   max_grid_width=0)


#: Largest depth proposal config file read (bytes).
MAX_DEPTH_CONFIG_BYTES = 1 << 20


def load_depth_config(path: str | Path) -> DepthProposalConfig:
    """Read a :class:`DepthProposalConfig` from YAML (a mapping of its fields; unknown keys
    and wrong types are errors).

    Raises:
        DepthError: unreadable file, bad YAML, unknown key, wrong type or invalid value.
    """
    import yaml

    from ..atomic_io import read_regular_file
    from ..config import ConfigError, from_dict, load_yaml

    try:   # a regular file of bounded size: a FIFO or /dev/zero blocked the executor
        raw = read_regular_file(Path(path).expanduser(), MAX_DEPTH_CONFIG_BYTES)
        data = load_yaml(raw.decode("utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DepthError(f"cannot read depth proposal config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise DepthError(f"{path}: expected a mapping of DepthProposalConfig fields")
    try:
        return from_dict(DepthProposalConfig, data, where=str(path))
    except ConfigError as exc:
        raise DepthError(str(exc)) from None
