"""Settings of the colour proposer and of the box network it runs with (ROS-free):
:class:`ProposalConfig`, the knobs of :func:`.proposals.propose_boxes` (the colour model's
background, thresholds, cuts and filters, and the box network's model, threshold, threads
and input width).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .box_net import resolve_box_net

__all__ = ["ProposalConfig", "BOX_NET_COLOUR", "MAX_BOX_NET_THREADS"]

#: Values of :attr:`ProposalConfig.box_net_colour`.
BOX_NET_COLOUR = ("none", "apart")
#: Most ONNX Runtime threads :attr:`ProposalConfig.box_net_threads` may ask for (the node's
#: ``proposal_box_net_threads`` has the same bound).
MAX_BOX_NET_THREADS = 8


@dataclass
class ProposalConfig:
    """Tuning knobs of :func:`propose_boxes`. Sizes are fractions of the frame unless noted.

    The defaults suit a 640x480 (or 480x360) camera looking down at a table 0.5-1.5 m away;
    they were tuned on rendered YCB tabletop bags (``bench/proposals_recall.py``).
    """

    #: Smallest box kept, as a fraction of the frame area (bounding-box area, before padding).
    #: 0.0004 is a 12x10-pixel box at 640x480 (a die or a golf ball a metre away).
    min_area_frac: float = 0.0004
    #: Largest box kept, as a fraction of the frame area (larger ones are the background).
    max_area_frac: float = 0.6
    #: Most boxes returned (the network's best-scored, then the colour model's; sorted
    #: largest first). A bound on a frame's work, not a filter: 10 until session 40, when a
    #: real photo of 24 coins showed it binding (the network found all 24, the cap kept 10;
    #: every rendered group found the same objects with either; bench/real_photos.py).
    max_count: int = 32
    #: A candidate box covering at least this fraction of the frame is searched again on
    #: its own, its border as the background (a small table inside the floor's colours, or
    #: objects in contact that one blob joined); the boxes found inside replace it. 0: off.
    nested_min_area_frac: float = 0.2
    #: Fraction of a box's width (height) added on the left and the right (top and bottom);
    #: the padded box is clipped to the frame. Ground-truth boxes hug the visible pixels,
    #: so padding costs IoU; 0.05 keeps a little context for the classifier.
    pad_frac: float = 0.05
    #: Longest side, in pixels, of the internal working image of a 4:3 frame (smaller is
    #: faster but loses thin objects); a wider frame keeps a shorter side of 3/4 of it, up
    #: to 1.5 times it long (a 16:9 camera's 848x480 or 1280x720 frame: 424x240 or
    #: 427x240), so that objects keep their size in working pixels (:func:`working_scale`).
    #: Frames already smaller are not upscaled.
    work_size: int = 320
    #: Standard deviation, in working-image pixels, of the Gaussian blur applied before the
    #: colour model (0 disables it).
    blur_sigma: float = 0.8
    #: Width of the border strip that samples the background, as a fraction of the shorter
    #: image side.
    border_frac: float = 0.04
    #: A colour cell is background if it holds at least this many border samples ...
    min_bin_count: int = 2
    #: ... and at least this fraction of them (an object touching the border covers few
    #: samples of its colours, so it stays an object) ...
    min_bin_frac: float = 0.0005
    #: ... or if it was sampled at all and lies within this many cells (through sampled
    #: cells) of a background cell: the tails of sensor noise and texture.
    grow_bins: int = 2
    #: A border colour seen (with its neighbouring colours) along at most this fraction of
    #: the border's length, and at least ``strong_thresh`` from every other border colour, is
    #: an object cut by the image border, not background (background colours recur along
    #: the border); 0 disables it.
    border_object_frac: float = 0.12
    #: Border pixels this far apart (working-image pixels, along rows and columns) whose
    #: colours are both background make every blend of the two background too (the blurred
    #: or minified cells of a checkerboard); 0 disables it ...
    blend_offset: int = 3
    #: ... for pairs of colour cells seen side by side at least this often.
    min_pair_count: int = 2
    #: Weight of the lightness channel in the colour distance (chroma has weight 1); below 1
    #: so that shadows, lighting gradients and a lens's darker corners count less than
    #: colour changes (0.6 before: the middle of a table under a lens that darkens the
    #: corners by 10% stood out from the border's colours and joined objects in contact).
    lightness_weight: float = 0.45
    #: Every background colour darkened to ``shadow_min_ratio`` .. 1 times its brightness is
    #: background too (shadowed table); 1.0 disables this. Darker same-hue objects (and a
    #: grey object on a white table) are then found by their outline only.
    shadow_min_ratio: float = 0.5
    #: Colour distance (8-bit Lab units, lightness weighted) above which a pixel is a
    #: confident object pixel.
    strong_thresh: float = 14.0
    #: Colour distance above which a pixel may extend an object that has confident pixels.
    weak_thresh: float = 8.0
    #: Canny thresholds on the blurred 8-bit Lab lightness of the working image.
    canny_low: float = 30.0
    canny_high: float = 80.0
    #: On a textured background, Canny edges count only next to pixels at least this far
    #: from every background colour without the shadow tolerance (the texture's own edges
    #: are background colours and their blends); 0 keeps all edges. Blobs are always
    #: bounded with the gated edges.
    edge_gate: float = 4.0
    #: The background is textured if more than this fraction of the border strip lies on
    #: Canny edge chains of 12 or more pixels; on a smoother one every edge counts, so an
    #: object of the table's own colour, a little lighter, is found by its outline.
    smooth_border_edges: float = 0.004
    #: Diameter, in working-image pixels, of the elliptical kernel of the closing that joins
    #: the pieces of one object (made odd; 1 disables it).
    close_kernel: int = 5
    #: A component is an object if at least this fraction of its pixels are confident colour
    #: pixels ...
    min_strong_frac: float = 0.05
    #: ... or if its Canny edge pixels number at least this fraction of its bounding-box
    #: perimeter (an outline rather than a stray texture line).
    min_edge_perimeter_frac: float = 0.6
    #: A blob's own pixels (object colour or edges, before the closing joined them) must
    #: cover at least this fraction of the smallest box area (an outline's all of it), so
    #: crumbs that the closing joined give no box.
    min_pixel_frac: float = 0.5
    #: Each end of a blob's box is placed where its colour distance falls to this fraction
    #: of its peak within the outermost 3 working-image pixels (0: at ``weak_thresh``) ...
    refine_frac: float = 0.5
    #: ... after dropping, at each end, the columns (rows) that hold less than this
    #: fraction of the blob's colour distance in all (a crumb, a shadow or a texture line
    #: that touches it; a sharp corner loses a little too).
    refine_trim: float = 0.01
    #: Largest ratio of the longer to the shorter box side (forks and knives are ~10-20).
    max_aspect: float = 25.0
    #: Drop components that span the whole frame width or height (table edges, walls).
    reject_spanning: bool = True
    #: Boxes whose IoU exceeds this, or where this fraction of the smaller one lies inside
    #: the larger one (see :attr:`merge_containment`), are merged into their union.
    merge_iou: float = 0.5
    #: Fraction of the smaller box inside the larger one above which they are merged.
    merge_containment: float = 0.85
    #: Candidates scoring below this are dropped (score in [0, 1]: the mean colour distance
    #: of the blob to the background over ``2 * strong_thresh``, or the edge support of its
    #: outline, whichever is higher; boxes touching the image border are kept). 0 keeps all.
    min_score: float = 0.4
    #: A blob of touching objects is cut along the segment between two notches of its
    #: outline (convexity defects at least ``neck_depth_frac`` of its size deep; 0
    #: disables the cut) when at least ``neck_edge_support`` of the segment lies on image
    #: edges, it is at most ``neck_max_len_frac`` of the blob's size long, the two largest
    #: pieces each hold ``neck_min_part_frac`` of the blob and their mean colours lie
    #: ``neck_colour_dist`` (8-bit Lab) apart (see :mod:`.blob_split`), or whatever their
    #: colours when both pieces are compact: solidity (area over convex hull area) at least
    #: ``neck_compact_solidity`` and a minimum-area rectangle at most
    #: ``neck_compact_aspect`` times as long as wide (round or boxy objects side by side; a
    #: tool's handle is long and thin). ``neck_compact_solidity`` 0 turns that rule off.
    #: Without a straight cut, a cut along the shortest path through image edges between two
    #: notches is tried (an object in front of another), under the same rules but with
    #: pieces of at least ``neck_path_min_part_frac`` of the blob, the smaller one roughly
    #: compact (:mod:`.blob_split`); 0 turns it off.
    neck_depth_frac: float = 0.1
    neck_edge_support: float = 0.5
    neck_max_len_frac: float = 0.7
    neck_min_part_frac: float = 0.2
    neck_colour_dist: float = 45.0
    neck_compact_solidity: float = 0.9
    neck_compact_aspect: float = 2.0
    neck_path_min_part_frac: float = 0.05
    #: A blob with two or more thick cores (its pixels at least ``core_split_frac`` of its
    #: largest distance to its outline from it) is cut between them along the colour
    #: boundary (a watershed from the cores), under the rules of the neck cut for the two
    #: pieces: objects pressed together without a deep notch (see :mod:`.blob_split`); 0
    #: turns it off. Blobs under ``core_min_radius_frac`` of the working image's shorter
    #: side in half-thickness (8 of 240 working pixels: tools, cutlery) are never split.
    core_split_frac: float = 0.5
    core_min_radius_frac: float = 0.0333
    #: The learned box network (:mod:`.box_net`) that proposes objects by their own look:
    #: ``default`` the one shipped with the package, ``default_int8`` its INT8 copy (about
    #: half the CPU time, a little less exact), a path to another ``.onnx`` file, or ``off``
    #: (or empty) for the colour model above alone.
    box_net: str = "default"
    #: The box network of frames that come with depth (the fusion's network boxes, and the
    #: colour proposals of such a frame whose depth cannot be used): ``same`` (``box_net``'s)
    #: or any value ``box_net`` takes. ``default_int8`` is the slow CPU's option for depth
    #: alone: with depth the network is about half of the node's CPU and its INT8 copy costs
    #: 60% of that (session 56: 30 instead of 25-26 frames a second in a slow hour of the
    #: 2-core host), with nearly the same proposals but unseen objects named a little less
    #: often (300 against 312 of 1021 on 15 RGB-D bags); frames without depth keep
    #: ``box_net``.
    box_net_depth: str = "same"
    #: The box network of frames processed while the node falls behind its cameras (drops
    #: more than 5% of their frames, :mod:`~vl_distill_ros.perception.keeping_up`): ``same``
    #: (no change) or any value ``box_net`` takes. It replaces the shipped network
    #: (``default``) only, never one a user chose. ``default_int8`` (the default): with depth,
    #: 29.75-29.9 frames a second instead of 24.5-25 in a slow hour of the 2-core host
    #: (session 57), a little less exact than the shipped network; a replay that processes
    #: every frame never uses it.
    box_net_behind: str = "default_int8"
    #: Smallest centre probability of a box network's box, in (0, 1) (0.5 for the shipped
    #: network since session 52, measured with it; 0.4 in sessions 44-51, 0.3 before).
    box_net_threshold: float = 0.5
    #: ONNX Runtime threads of the box network (1 to :data:`MAX_BOX_NET_THREADS`). It is the
    #: longest step of a frame with depth and runs beside the depth proposer and the student,
    #: so a second thread takes up the cores they leave idle: on this 2-core machine the node
    #: with depth ran about 7% faster with 2 than with 1 (see the README's Performance).
    box_net_threads: int = 2
    #: The frame is resized to this width for the box network (64-1280, rounded up to a
    #: multiple of 16; the network was trained on 320-wide inputs zoomed 0.5-2.0, so 480
    #: shows small objects larger and close ones within its zooms) ...
    box_net_input_width: int = 480
    #: ... and, unless 0, to this one in a second pass whose boxes are pooled with the
    #: first's (0: one pass, the default; two cost the node its 30 fps with depth).
    box_net_second_width: int = 0
    #: Objects close to the camera (a wrist camera before a grasp, a hand-held close-up)
    #: fill much of the frame: the first pass sees them larger than the network's training
    #: zooms and boxes them in parts. With this > 0, when a first-pass box is at least 2/3
    #: of ``box_net_close_min_px`` long (pixels of the first pass's input) or there is none,
    #: a pass at this narrower width (240) runs too; its boxes longer than
    #: ``box_net_close_min_px`` replace the first pass's that long which they overlap (IoU
    #: 0.3), and the first pass's boxes lying 70% inside one that scores higher (its parts,
    #: at least a tenth of its area) are dropped. 0: off. On by default (240) since session
    #: 39 for colour alone: on tables seen from 0.6-2 m it changes -2..+2 objects a group for
    #: fewer false boxes, on close-ups it finds 10-15% more; frames with depth take it only
    #: when their depth says the camera is close (``DepthProposalConfig.close_view_m``), with
    #: ``fuse_close_pass`` or when their camera is named for it
    #: (``PipelineSettings.close_cameras``; on tables, live with depth, it costs about 3 of
    #: 30 frames a second; the README's "Close objects").
    box_net_close_width: int = 240
    box_net_close_min_px: int = 150
    #: How the colour model's boxes join the network's: ``apart`` (a colour box is added
    #: where no network box overlaps or holds it: objects unlike any the network was
    #: trained on; a colour box inside a network box is a part of its object) or ``none``
    #: (the network's alone).
    box_net_colour: str = "apart"
    #: ... and, with ``apart``, a colour box that does not reach the frame's border
    #: (:data:`~.proposals.APART_BORDER_PX`) joins only when its longer side is at most this
    #: many times its shorter one (0: ``max_aspect`` alone). Long thin boxes the colour
    #: model adds beside the network are shadows, table edges and texture lines: on the
    #: looked-at rendered groups every one of them away from the border was false (the
    #: network boxes thin objects itself), on the real photos two of three false ones.
    apart_max_aspect: float = 4.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_area_frac <= self.max_area_frac <= 1.0:
            raise ValueError(
                f"need 0 <= min_area_frac <= max_area_frac <= 1, got {self.min_area_frac} "
                f"and {self.max_area_frac}")
        if self.max_count < 0:
            raise ValueError(f"max_count must be >= 0, got {self.max_count}")
        if not 0.0 <= self.nested_min_area_frac <= 1.0:
            raise ValueError(f"nested_min_area_frac must be in [0, 1], got "
                             f"{self.nested_min_area_frac}")
        if self.pad_frac < 0:
            raise ValueError(f"pad_frac must be >= 0, got {self.pad_frac}")
        if self.work_size < 16:
            raise ValueError(f"work_size must be >= 16 pixels, got {self.work_size}")
        if self.weak_thresh > self.strong_thresh:
            raise ValueError(f"weak_thresh ({self.weak_thresh}) must be <= strong_thresh "
                             f"({self.strong_thresh})")
        if self.weak_thresh <= 0:
            raise ValueError(f"weak_thresh must be > 0, got {self.weak_thresh}")
        if self.close_kernel < 1:
            raise ValueError(f"close_kernel must be >= 1, got {self.close_kernel}")
        if not 0.0 < self.shadow_min_ratio <= 1.0:
            raise ValueError(f"shadow_min_ratio must be in (0, 1], got {self.shadow_min_ratio}")
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {self.min_score}")
        if self.max_aspect < 1.0:
            raise ValueError(f"max_aspect must be >= 1, got {self.max_aspect}")
        if self.min_bin_count < 1 or not 0.0 <= self.min_bin_frac < 1.0:
            raise ValueError(f"need min_bin_count >= 1 and 0 <= min_bin_frac < 1, got "
                             f"{self.min_bin_count} and {self.min_bin_frac}")
        if self.blend_offset < 0:
            raise ValueError(f"blend_offset must be >= 0, got {self.blend_offset}")
        if self.lightness_weight <= 0:
            raise ValueError(f"lightness_weight must be > 0, got {self.lightness_weight}")
        if not 0.0 <= self.refine_frac < 1.0:
            raise ValueError(f"refine_frac must be in [0, 1), got {self.refine_frac}")
        if not 0.0 <= self.refine_trim < 0.5:
            raise ValueError(f"refine_trim must be in [0, 0.5), got {self.refine_trim}")
        if not 0.0 <= self.border_object_frac < 1.0:
            raise ValueError(f"border_object_frac must be in [0, 1), got "
                             f"{self.border_object_frac}")
        if self.grow_bins < 0 or self.min_pair_count < 1:
            raise ValueError(f"need grow_bins >= 0 and min_pair_count >= 1, got "
                             f"{self.grow_bins} and {self.min_pair_count}")
        for name in ("neck_depth_frac", "neck_edge_support", "neck_max_len_frac",
                     "neck_min_part_frac", "neck_compact_solidity", "neck_path_min_part_frac",
                     "core_split_frac", "core_min_radius_frac"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.neck_colour_dist <= 500.0:
            raise ValueError(f"neck_colour_dist must be in [0, 500], got "
                             f"{self.neck_colour_dist}")
        if not 1.0 <= self.neck_compact_aspect <= 100.0:
            raise ValueError(f"neck_compact_aspect must be in [1, 100], got "
                             f"{self.neck_compact_aspect}")
        self._check_box_net()

    def _check_box_net(self) -> None:
        if self.box_net_close_width and not 64 <= self.box_net_close_width <= 1280:
            raise ValueError(f"box_net_close_width must be 0 or in [64, 1280], got "
                             f"{self.box_net_close_width}")
        if not 16 <= self.box_net_close_min_px <= 1280:
            raise ValueError(f"box_net_close_min_px must be in [16, 1280], got "
                             f"{self.box_net_close_min_px}")
        if not 0.0 < self.box_net_threshold < 1.0:
            raise ValueError(f"box_net_threshold must be in (0, 1), got "
                             f"{self.box_net_threshold}")
        if not 1 <= self.box_net_threads <= MAX_BOX_NET_THREADS:
            raise ValueError(f"box_net_threads must be in [1, {MAX_BOX_NET_THREADS}], got "
                             f"{self.box_net_threads}")
        if not 64 <= self.box_net_input_width <= 1280:
            raise ValueError(f"box_net_input_width must be in [64, 1280], got "
                             f"{self.box_net_input_width}")
        if self.box_net_second_width != 0 and not 64 <= self.box_net_second_width <= 1280:
            raise ValueError(f"box_net_second_width must be 0 or in [64, 1280], got "
                             f"{self.box_net_second_width}")
        if self.apart_max_aspect != 0 and not 1.0 <= self.apart_max_aspect <= 100.0:
            raise ValueError(f"apart_max_aspect must be 0 or in [1, 100], got "
                             f"{self.apart_max_aspect}")
        if self.box_net_colour not in BOX_NET_COLOUR:
            raise ValueError(f"box_net_colour must be one of {list(BOX_NET_COLOUR)}, got "
                             f"{self.box_net_colour!r}")
        for name in ("box_net", "box_net_depth", "box_net_behind"):
            value = getattr(self, name)
            if name != "box_net" and str(value).strip() == "same":
                continue
            path = resolve_box_net(value)
            if path is not None and not path.is_file():
                same = "'same', " if name != "box_net" else ""
                raise ValueError(f"{name}: no model file at {path} (use {same}'default', "
                                 f"'default_int8', 'off' or the path of a box network .onnx "
                                 f"file)")

    def depth_box_net(self) -> str:
        """The ``box_net`` of frames that come with depth: ``box_net_depth``, or ``box_net``
        for ``same``."""
        return self.box_net if str(self.box_net_depth).strip() == "same" else self.box_net_depth

    def for_depth_frames(self) -> "ProposalConfig":
        """These settings for a frame that comes with depth: ``box_net`` replaced by
        :meth:`depth_box_net` (these themselves when that is the same network)."""
        net = self.depth_box_net()
        return self if net == self.box_net else replace(self, box_net=net)

    def behind_box_net(self) -> str:
        """The ``box_net`` of a frame processed while the node is behind its cameras:
        ``box_net_behind`` in place of the shipped network (``default``), else ``box_net``."""
        behind = str(self.box_net_behind).strip()
        return self.box_net if behind == "same" or str(self.box_net).strip() != "default" \
            else behind

    def for_frames_behind(self) -> "ProposalConfig":
        """These settings for a frame processed while the node is behind its cameras:
        ``box_net`` replaced by :meth:`behind_box_net` (these themselves when that is the
        same network)."""
        net = self.behind_box_net()
        return self if net == self.box_net else replace(self, box_net=net)
