"""Class-agnostic object proposals for objects lying on a table.

By default the boxes come from the learned box network (:mod:`.box_net`, a small CenterNet
trained on rendered tabletop scenes): it finds each object by its own look, so objects in
contact stay apart. The colour model below adds its boxes where no network box overlaps
them (``box_net_colour: apart``: an object unlike any the network was trained on);
``box_net: off`` gives the colour model's boxes alone, as before the network.

The colour model (OpenCV only, no learning) takes the scene to be "a background (table top,
floor, wall, table edge) that reaches the image border, with objects on it":

1. The frame is downscaled so its longer side is at most :attr:`ProposalConfig.work_size`
   pixels, or, for a frame wider than 4:3, its shorter side at most 3/4 of that (area
   filter, which also averages out sensor noise; :func:`working_scale`) and lightly
   blurred.
2. The background is modelled **non-parametrically** in OpenCV's 8-bit CIE Lab: the colours
   of a strip along the image border go into a coarse colour grid (cells of 8 lightness x
   4 x 4 chroma levels). Background colours are the cells holding enough samples, rarely
   sampled cells next to them (noise), the blends of colours seen side by side at the
   border (the blurred or minified cells of a checkerboard or a striped cloth) and, for the
   shadow tolerance, every background colour darkened to down to
   :attr:`ProposalConfig.shadow_min_ratio` of its brightness. So any number of background
   colours is modelled at once: wood grain, a two-colour checkerboard, three-colour
   stripes, and the floor and the wall at the top of the frame. A colour found (with its
   neighbouring colours) along one short stretch of the border only (at most
   :attr:`ProposalConfig.border_object_frac` of it) and far from every other border colour
   is not background but an object cut by the image border; its blob is kept unless it is
   a corner patch or a sliver along the edge (a floor or a far wall).
3. Each pixel's distance to the nearest background colour (Lab units, lightness
   down-weighted so lighting changes count less) comes from distance transforms of the
   grid, looked up per pixel. It is thresholded with hysteresis (strong seeds, weak
   extension), and OpenCV's Canny edges of the lightness channel are added; on a textured
   background only where the colour is not a plain background colour (the texture's own
   edges are background colours and their blends, while the outline of a grey fork on a
   white sheet, which looks like shadowed sheet, is not).
4. A morphological closing joins the pieces of one object; a blob of touching objects is
   cut between two notches of its outline, along a straight image edge or else along the
   edges of an object in front, where the two sides differ in colour or are both compact
   (:mod:`.blob_split`); connected components become candidate boxes,
   kept when they hold enough strong pixels or enough outline edges, and enough pixels of
   their own (crumbs that the closing joined are not). Each blob's box is
   tightened, at each end, to half its local colour distance with sub-pixel interpolation
   (thin objects keep their width; a fork's low-contrast tines next to its red handle stay
   in through their outline) after trimming the thin tails of its mass (a crumb, a shadow
   or a texture line touching it), then filtered by area, aspect ratio and "spans the
   whole frame" (table edges).
   A candidate covering :attr:`ProposalConfig.nested_min_area_frac` of the frame or more
   is proposed again as a frame of its own, its border strip then the background model,
   and the candidates found inside replace it: a small table seen inside the floor's
   colours (the frame's border models the floor, so the table with its objects is one
   blob), or objects in contact that one blob joined.
5. Each candidate is scored in [0, 1] (its mean colour distance to the background over
   twice ``strong_thresh``, or the edge support of its outline, whichever is higher; a
   candidate touching the image border is never dropped for its score) and candidates
   below :attr:`ProposalConfig.min_score` are dropped: faint blobs of a busy texture or a
   soft shadow. Overlapping or nested boxes are merged (keeping the better score), boxes
   are padded, sorted by area (largest first) and capped at
   :attr:`ProposalConfig.max_count`.

Cost: about 7 ms of CPU for a 640x480 frame measured on a 2-core machine shared with a
training job (less on a quiet core), independent of the input size beyond the initial
downscale. Recall at IoU 0.5 on rendered YCB tabletop bags (2-4 objects on wood, plain,
cloth, striped and checkered tables with the floor and the wall in view): 0.84-0.91 with
0.3-0.45 false boxes per frame (``bench/proposals_recall.py``).

Known limitations: objects that touch each other (or overlap in the image) are proposed as
one box, and an object touching a line that spans the frame is dropped with it; an object
cut by the image border is found only when its colours differ from the background's and
it does not fill a corner, and one coloured like a background colour seen elsewhere along
the border is not (about 62% of such objects are found on rendered crops); an object
coloured like the background (a wooden block on a wooden table, a white ball on a white
stripe, a grey bottle in front of a grey wall) is missed or only partly boxed, as is a grey
part (a screwdriver's shaft, scissors' blades) on a grey or white table without a crisp
outline; a colour that appears in the image but not at the border (a far, minified part of
a patterned floor) can give a false box; a background that does not reach the image border
(a close-up of a busy shelf) breaks the model; boxes larger than ``max_area_frac`` of the
frame (an object filling the view) are not proposed, so callers should fall back to
:func:`.boxes.full_frame_box`.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Sequence

import cv2
import numpy as np

from .blob_split import cut_necks, split_cores
from .boxes import Box, box_iou, sanitize_boxes
from .box_net import load_box_net, resolve_box_net

__all__ = ["ProposalConfig", "propose_boxes", "propose_with_network", "network_boxes",
           "colour_model_boxes", "with_colour_model", "working_scale"]

#: Values of :attr:`ProposalConfig.box_net_colour`.
BOX_NET_COLOUR = ("none", "apart")
#: Most ONNX Runtime threads :attr:`ProposalConfig.box_net_threads` may ask for (the node's
#: ``proposal_box_net_threads`` has the same bound).
MAX_BOX_NET_THREADS = 8
#: With ``box_net_colour: apart``, a colour box is added when its IoU with every box of the
#: network is under this.
APART_IOU = 0.1


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
    #: Most boxes returned (the largest ones are kept).
    max_count: int = 10
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
    #: Smallest centre probability of a box network's box, in (0, 1).
    box_net_threshold: float = 0.3
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
    #: How the colour model's boxes join the network's: ``apart`` (a colour box is added
    #: where no network box overlaps it: objects unlike any the network was trained on) or
    #: ``none`` (the network's alone).
    box_net_colour: str = "apart"

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
        if self.box_net_colour not in BOX_NET_COLOUR:
            raise ValueError(f"box_net_colour must be one of {list(BOX_NET_COLOUR)}, got "
                             f"{self.box_net_colour!r}")
        path = resolve_box_net(self.box_net)
        if path is not None and not path.is_file():
            raise ValueError(f"box_net: no model file at {path} (use 'default', "
                             f"'default_int8', 'off' or the path of a box network .onnx "
                             f"file)")


# ---------------------------------------------------------------------------------------
# Box helpers of the proposers
# ---------------------------------------------------------------------------------------
def _pad_box(box: Sequence[float], pad_frac: float, width: int, height: int) -> Box:
    x, y, w, h = box
    px, py = pad_frac * w, pad_frac * h
    x0 = max(0, int(round(x - px)))
    y0 = max(0, int(round(y - py)))
    x1 = min(width, int(round(x + w + px)))
    y1 = min(height, int(round(y + h + py)))
    return (x0, y0, x1 - x0, y1 - y0)


def _merge_boxes(boxes: list[list[float]], iou_thresh: float,
                 containment: float) -> list[list[float]]:
    """Repeatedly replace pairs of overlapping/nested boxes by their union (a fifth value,
    the score, becomes the higher of the two)."""
    boxes = [list(b) for b in boxes]
    changed = True
    while changed and len(boxes) > 1:
        changed = False
        boxes.sort(key=lambda b: b[2] * b[3], reverse=True)
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
                ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
                if iw <= 0 or ih <= 0:
                    continue
                inter = iw * ih
                area_a, area_b = a[2] * a[3], b[2] * b[3]
                iou = inter / (area_a + area_b - inter)
                if iou > iou_thresh or inter >= containment * min(area_a, area_b):
                    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
                    x1 = max(a[0] + a[2], b[0] + b[2])
                    y1 = max(a[1] + a[3], b[1] + b[3])
                    score = [max(a[4], b[4])] if len(a) > 4 and len(b) > 4 else []
                    boxes[i] = [x0, y0, x1 - x0, y1 - y0, *score]
                    del boxes[j]
                    changed = True
                    break
            if changed:
                break
    return boxes


# ---------------------------------------------------------------------------------------
# Background model
# ---------------------------------------------------------------------------------------
#: Colour grid cells: 8 lightness levels (32 cells) x 4 a* levels x 4 b* levels, on the
#: 8-bit Lab of OpenCV (L in 0..255, a and b offset by 128).
_L_SHIFT = 3
_AB_SHIFT = 2


def _border_strips(img: np.ndarray, border: int) -> list[np.ndarray]:
    """The four non-overlapping strips, ``border`` pixels wide, along the image edges."""
    h, w = img.shape[:2]
    return [img[:border], img[h - border:], img[border:h - border, :border],
            img[border:h - border, w - border:]]


def _border_pixels(img: np.ndarray, border: int) -> np.ndarray:
    """The pixels of a ``border``-wide strip along the image edges, as ``(N, C)``."""
    c = img.shape[2]
    return np.concatenate([s.reshape(-1, c) for s in _border_strips(img, border)])


#: The border is cut into this many segments of equal length to tell local border colours
#: (an object cut by the border) from recurring ones (background).
_BORDER_SEGMENTS = 50


#: Gaps of up to twice this many segments along the border between two places of one
#: colour are closed (noise, a shading change across one object).
_GAP = 2


def _rotate_bits(bits: np.ndarray, k: int) -> np.ndarray:
    """Border-segment bit masks (uint64, one bit per segment) rotated by ``k`` segments
    around the border: bit ``i`` of the result is bit ``i - k`` of ``bits``."""
    n = _BORDER_SEGMENTS
    k %= n
    if k == 0:
        return bits
    full = np.uint64((1 << n) - 1)
    return ((bits << np.uint64(k)) | (bits >> np.uint64(n - k))) & full


@functools.lru_cache(maxsize=8)
def _border_segments(h: int, w: int, border: int) -> np.ndarray:
    """Segment index (0 .. ``_BORDER_SEGMENTS - 1``, clockwise from the top-left corner) of
    every pixel of :func:`_border_pixels` of an ``h`` x ``w`` image, in the same order
    (cached, read-only)."""
    rows_top = np.broadcast_to(np.arange(w), (border, w))
    rows_bottom = np.broadcast_to(w + h + (w - 1 - np.arange(w)), (border, w))
    side = np.arange(border, h - border)
    left = np.broadcast_to((2 * w + h + (h - 1 - side))[:, None], (side.size, border))
    right = np.broadcast_to((w + side)[:, None], (side.size, border))
    pos = np.concatenate([a.reshape(-1) for a in (rows_top, rows_bottom, left, right)])
    out = (pos * _BORDER_SEGMENTS) // (2 * (w + h))
    out.flags.writeable = False
    return out


def _local_cells(grid: "_ColourGrid", idx: np.ndarray, segments: np.ndarray,
                 occ: np.ndarray, cfg: ProposalConfig) -> np.ndarray:
    """Which background cells ``occ`` (flat) are the colours of an object cut by the image
    border: the cell and its neighbours in the grid (a lighting gradient spreads one surface
    over neighbouring cells) are sampled (cell ``idx`` at border segment ``segments``) in one
    stretch of at most :attr:`ProposalConfig.border_object_frac` of the border's segments,
    and the cell lies at least ``strong_thresh`` from every other background colour."""
    max_segments = int(cfg.border_object_frac * _BORDER_SEGMENTS)
    out = np.zeros(grid.size, bool)
    if max_segments < 1 or idx.size == 0:
        return out
    bits = np.zeros(grid.size, np.uint64)
    np.bitwise_or.at(bits, idx, np.left_shift(np.uint64(1), segments.astype(np.uint64)))
    # the background cells' bits and their 6 neighbours' in the grid
    cells = np.flatnonzero(occ)
    coords = np.unravel_index(cells, grid.shape)
    grown = bits[cells]
    for axis in range(3):
        for step in (-1, 1):
            nb = list(coords)
            nb[axis] = coords[axis] + step
            ok = (nb[axis] >= 0) & (nb[axis] < grid.shape[axis])
            grown[ok] |= bits[np.ravel_multi_index([c[ok] for c in nb], grid.shape)]
    # one stretch of the border, gaps of up to 2 * _GAP segments closed (a colour in two
    # places along the border is a background pattern, e.g. a striped cloth)
    closed = grown
    for op in (np.bitwise_or, np.bitwise_and):  # closing: dilate, then erode
        closed = op.reduce([_rotate_bits(closed, k) for k in range(-_GAP, _GAP + 1)])
    runs = np.bitwise_count(closed & ~_rotate_bits(closed, 1))
    local = np.zeros(grid.size, bool)
    local[cells[(np.bitwise_count(grown) <= max_segments) & (runs <= 1)]] = True
    rest = occ & ~local
    if not local.any() or not rest.any():
        return out
    cells = np.flatnonzero(local)
    far = _cell_distance(rest, grid.shape, cells, cfg.lightness_weight) >= cfg.strong_thresh
    out[cells[far]] = True
    return out


def _border_pairs(img: np.ndarray, border: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel pairs ``offset`` apart along rows and along columns inside the border strip,
    as two ``(N, C)`` arrays."""
    c = img.shape[2]
    first, second = [], []
    for s in _border_strips(img, border):
        if s.shape[0] > offset:
            first.append(s[:-offset].reshape(-1, c))
            second.append(s[offset:].reshape(-1, c))
        if s.shape[1] > offset:
            first.append(s[:, :-offset].reshape(-1, c))
            second.append(s[:, offset:].reshape(-1, c))
    if not first:
        empty = np.zeros((0, c), img.dtype)
        return empty, empty
    return np.concatenate(first), np.concatenate(second)


class _ColourGrid:
    """Cell indices of 8-bit Lab colours in a grid spanning the colours of one frame."""

    def __init__(self, lab: np.ndarray) -> None:
        # OpenCV's min/max of each channel (numpy's strided reductions are ~10x slower)
        (self.a_lo, self.a_hi), (self.b_lo, self.b_hi) = (
            (int(lo), int(hi)) for lo, hi, _, _ in map(cv2.minMaxLoc, cv2.split(lab)[1:]))
        self.shape = (256 >> _L_SHIFT, ((self.a_hi - self.a_lo) >> _AB_SHIFT) + 1,
                      ((self.b_hi - self.b_lo) >> _AB_SHIFT) + 1)
        self.size = int(np.prod(self.shape))

    def index(self, colours: np.ndarray) -> np.ndarray:
        """Flat cell index of ``(N, 3)`` Lab colours inside the grid's range."""
        v = colours.astype(np.int32)
        _, na, nb = self.shape
        return (((v[:, 0] >> _L_SHIFT) * na + ((v[:, 1] - self.a_lo) >> _AB_SHIFT)) * nb
                + ((v[:, 2] - self.b_lo) >> _AB_SHIFT))

    def centres(self, cells: np.ndarray) -> np.ndarray:
        """8-bit Lab colours ``(N, 3)`` float32 of the centres of flat cell indices."""
        cl, ca, cb = np.unravel_index(cells, self.shape)
        half_l, half_ab = (1 << _L_SHIFT) / 2.0, (1 << _AB_SHIFT) / 2.0
        return np.stack([(cl << _L_SHIFT) + half_l, (ca << _AB_SHIFT) + self.a_lo + half_ab,
                         (cb << _AB_SHIFT) + self.b_lo + half_ab], 1).astype(np.float32)

    def inside(self, colours: np.ndarray) -> np.ndarray:
        """Which ``(N, 3)`` Lab colours lie in the grid's range."""
        return ((colours[:, 0] >= 0) & (colours[:, 0] <= 255)
                & (colours[:, 1] >= self.a_lo) & (colours[:, 1] <= self.a_hi)
                & (colours[:, 2] >= self.b_lo) & (colours[:, 2] <= self.b_hi))


def _grow_cells(cells: np.ndarray, steps: int) -> np.ndarray:
    """``cells`` (a boolean grid) dilated ``steps`` times by its 3x3x3 neighbourhood."""
    out = cells.copy()
    for _ in range(steps):
        for axis in range(3):
            a = [slice(None)] * 3
            b = [slice(None)] * 3
            a[axis], b[axis] = slice(None, -1), slice(1, None)
            shifted_up, shifted_down = out[tuple(b)].copy(), out[tuple(a)].copy()
            out[tuple(a)] |= shifted_up
            out[tuple(b)] |= shifted_down
    return out


def _background_cells(grid: _ColourGrid, idx: np.ndarray,
                      pairs: tuple[np.ndarray, np.ndarray], cfg: ProposalConfig,
                      segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean grids (flat) of background colours and of local border colours, from the
    grid cells ``idx`` of the border's samples and ``pairs`` of cells seen side by side.

    Background: well-sampled border colours (but the local ones, found along only a short
    stretch of the border, by the samples' border ``segments``: an object cut by the
    border), rarely sampled ones next to them, and the blends of colours seen side by
    side."""
    counts = np.bincount(idx, minlength=grid.size)
    occ = counts >= max(cfg.min_bin_count, cfg.min_bin_frac * len(idx))
    seen = counts > 0
    local = np.zeros(grid.size, bool)
    if cfg.border_object_frac > 0:
        local = _local_cells(grid, idx, segments, occ, cfg)
        occ &= ~local
        seen &= ~local
    if not occ.any():
        occ[int(np.argmax(counts))] = True
    if cfg.grow_bins > 0:
        # the tails of noise and texture: sampled colours near well-sampled ones
        for _ in range(cfg.grow_bins):
            occ |= _grow_cells(occ.reshape(grid.shape), 1).reshape(-1) & seen
    ia, ib = pairs
    if len(ia):
        keep = occ[ia] & occ[ib] & (ia != ib)
        lo, hi = np.minimum(ia[keep], ib[keep]), np.maximum(ia[keep], ib[keep])
        unique, seen_pairs = np.unique(lo.astype(np.int64) * grid.size + hi,
                                       return_counts=True)
        unique = unique[seen_pairs >= cfg.min_pair_count]
        if unique.size:
            c0 = np.stack(np.unravel_index(unique // grid.size, grid.shape), 1)
            c1 = np.stack(np.unravel_index(unique % grid.size, grid.shape), 1)
            c0, c1 = c0.astype(np.float32), c1.astype(np.float32)
            # cells along each segment, densely enough not to skip one
            t = np.linspace(0.0, 1.0, int(np.abs(c1 - c0).max()) + 2, dtype=np.float32)
            cells = np.rint(c0[None] + t[:, None, None] * (c1 - c0)[None]).astype(np.int64)
            _, na, nb = grid.shape
            occ[((cells[..., 0] * na + cells[..., 1]) * nb + cells[..., 2]).reshape(-1)] = True
    return occ, local


def _with_shadows(grid: _ColourGrid, occ: np.ndarray, min_ratio: float) -> np.ndarray:
    """``occ`` plus every background colour darkened to ``min_ratio`` .. 1 of its brightness.

    Scaling 8-bit RGB by ``k`` scales linear RGB by about ``k ** 2.2``, which scales
    ``(L* + 16, a*, b*)`` by ``k ** (2.2 / 3)``: a ray towards black in Lab.
    """
    centres = grid.centres(np.flatnonzero(occ))
    lum = centres[:, 0] / 2.55 + 16.0          # L* + 16
    a, b = centres[:, 1] - 128.0, centres[:, 2] - 128.0
    out = occ.copy()
    s_min = min_ratio ** (2.2 / 3.0)
    s = np.linspace(s_min, 1.0, int(math.ceil((1.0 - s_min) * 40)) + 2)[:-1, None]
    v = np.stack([(lum * s - 16.0) * 2.55, a * s + 128.0, b * s + 128.0], 2).reshape(-1, 3)
    out[grid.index(np.rint(v[grid.inside(v)]))] = True   # every brightness step at once
    return out


def _cell_distance(occ: np.ndarray, shape: tuple[int, int, int], cells: np.ndarray,
                   lightness_weight: float) -> np.ndarray:
    """Distance (Lab units, lightness weighted) from each of the flat grid ``cells`` to the
    nearest ``occ`` cell, float32: exact 2-D distance transforms of the chroma planes that
    hold background cells, then the minimum over those planes plus the lightness offset."""
    nl, na, nb = shape
    occ3 = occ.reshape(shape)
    levels = np.flatnonzero(occ3.reshape(nl, -1).any(axis=1))
    ab_step = float(1 << _AB_SHIFT)
    planes = np.empty((levels.size, na * nb), np.float32)
    for row, level in enumerate(levels):
        plane = (~occ3[level]).view(np.uint8)   # zero on background cells
        dt = cv2.distanceTransform(plane, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        planes[row] = (dt * ab_step).reshape(-1) ** 2
    cell_l, cell_ab = np.divmod(cells, na * nb)
    step_l = np.float32(lightness_weight * (1 << _L_SHIFT))
    dl = (cell_l[None, :] - levels[:, None]).astype(np.float32) * step_l
    return np.sqrt((planes[:, cell_ab] + dl * dl).min(axis=0))


def _background_distance(lab: np.ndarray, border: int,
                         cfg: ProposalConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel distance of the 8-bit Lab image ``lab`` to the nearest background colour
    (sampled from a ``border``-wide strip), with and without the shadow tolerance, as two
    float32 ``(H, W)`` maps in Lab units (lightness weighted), and the ``(H, W)`` bool map of
    the pixels of local border colours (see :func:`_local_cells`)."""
    grid = _ColourGrid(lab)
    h, w = lab.shape[:2]
    idx = grid.index(lab.reshape(-1, 3))   # each pixel's cell, once
    cell_img = idx.reshape(h, w, 1)
    pairs = (_border_pairs(cell_img, border, cfg.blend_offset) if cfg.blend_offset > 0
             else (np.zeros((0, 1), idx.dtype),) * 2)
    occ, local = _background_cells(grid, _border_pixels(cell_img, border)[:, 0],
                                   (pairs[0][:, 0], pairs[1][:, 0]), cfg,
                                   _border_segments(h, w, border))
    cells = np.flatnonzero(np.bincount(idx, minlength=grid.size))  # colours in the image
    lut = np.zeros(grid.size, np.float32)
    lut[cells] = _cell_distance(occ, grid.shape, cells, cfg.lightness_weight)
    plain = np.take(lut, idx).reshape(h, w)   # np.take: fancy indexing's values, faster
    local_px = np.take(local, idx).reshape(h, w)
    if cfg.shadow_min_ratio >= 1.0:
        return plain, plain, local_px
    lut[cells] = _cell_distance(_with_shadows(grid, occ, cfg.shadow_min_ratio), grid.shape,
                                cells, cfg.lightness_weight)
    return np.take(lut, idx).reshape(h, w), plain, local_px


def _subpixel_extent(profile: np.ndarray, thr: float, frac: float = 0.0,
                     window: int = 3) -> tuple[float, float] | None:
    """Where ``profile`` first rises above and last falls below a threshold, interpolated
    linearly between pixel centres; in pixel-edge coordinates (pixel ``i`` spans
    ``[i, i + 1)``). ``None`` if it never reaches ``thr``.

    The threshold is ``thr``, or at each end ``frac`` times the profile's peak within the
    ``window`` pixels inside that end, if that is higher (the half-maximum of the local
    step, where a blurred edge really is).
    """
    above = np.flatnonzero(profile >= thr)
    if above.size == 0:
        return None
    i0, i1 = int(above[0]), int(above[-1])
    t0 = t1 = thr
    if frac > 0:
        t0 = max(thr, frac * float(profile[i0:i0 + window].max()))
        t1 = max(thr, frac * float(profile[max(i1 - window + 1, 0):i1 + 1].max()))
        while profile[i0] < t0:
            i0 += 1
        while profile[i1] < t1:
            i1 -= 1
    lo, hi = float(i0), float(i1 + 1)
    if i0 > 0:
        p0, p1 = float(profile[i0 - 1]), float(profile[i0])
        lo = i0 - 0.5 + (t0 - p0) / max(p1 - p0, 1e-6)
    if i1 < profile.size - 1:
        p1, p2 = float(profile[i1]), float(profile[i1 + 1])
        hi = i1 + 0.5 + (p1 - t1) / max(p1 - p2, 1e-6)
    return lo, hi


def _trimmed_profile(masked: np.ndarray, axis: int, thr: float, trim: float) -> np.ndarray:
    """Maximum of ``masked`` along ``axis``, zeroed (but for one fringe pixel) where the
    first and last ``trim`` of the object's mass (its above-``thr`` distance) lie: a crumb
    or a texture line touching a blob then does not widen its box."""
    profile = masked.max(axis=axis)
    if trim <= 0:
        return profile
    mass = np.where(masked >= thr, masked, np.float32(0.0)).sum(axis=axis)
    cum = np.cumsum(mass)
    total = float(cum[-1])
    if total <= 0:
        return profile
    first = int(np.searchsorted(cum, trim * total, side="left"))
    last = int(np.searchsorted(cum, (1.0 - trim) * total, side="left"))
    out = profile.copy()
    out[:max(first - 1, 0)] = 0.0
    out[last + 2:] = 0.0
    return out


def _refine_extent(labels: np.ndarray, index: int, box: tuple[int, int, int, int],
                   dist: np.ndarray, edges: np.ndarray, is_blob: bool,
                   cfg: ProposalConfig) -> tuple[float, float, float, float]:
    """Tight ``(x0, y0, x1, y1)`` of component ``index`` in working-image coordinates.

    The closing, the blur and the low (weak) threshold widen an object by a pixel or two on
    every side, which matters for thin objects. A colour blob is cut, at each end, at
    ``refine_frac`` of its local colour distance, with sub-pixel interpolation; its outline
    edges count as reaching the weak threshold, so a low-contrast part (a fork's metal
    tines next to its red handle) stays in the box. An outline-only component is bounded by
    its above-threshold pixels and Canny edges.
    """
    x, y, w, h = box
    hh, ww = labels.shape
    x0, y0, x1, y1 = max(x - 1, 0), max(y - 1, 0), min(x + w + 1, ww), min(y + h + 1, hh)
    comp = labels[y0:y1, x0:x1] == index
    roi_dist = dist[y0:y1, x0:x1]
    roi_edges = edges[y0:y1, x0:x1]
    thr = float(cfg.weak_thresh)
    if is_blob:
        # distances of the component and its 1-pixel fringe, so the crossing is interpolated
        near = cv2.dilate(comp.view(np.uint8), np.ones((3, 3), np.uint8)).view(bool)
        masked = np.where(near, roi_dist, np.float32(0.0))
        outline = comp & roi_edges
        masked[outline] = np.maximum(masked[outline], np.float32(thr))
        xs = _subpixel_extent(_trimmed_profile(masked, 0, thr, cfg.refine_trim), thr,
                              cfg.refine_frac)
        ys = _subpixel_extent(_trimmed_profile(masked, 1, thr, cfg.refine_trim), thr,
                              cfg.refine_frac)
        if xs is not None and ys is not None and xs[1] > xs[0] and ys[1] > ys[0]:
            return x0 + xs[0], y0 + ys[0], x0 + xs[1], y0 + ys[1]
        return float(x), float(y), float(x + w), float(y + h)
    # an outline: Canny edges lie on both sides of the true boundary
    keep = ((roi_dist >= thr) | roi_edges) & comp
    cols, rows = np.flatnonzero(keep.any(axis=0)), np.flatnonzero(keep.any(axis=1))
    if cols.size == 0 or rows.size == 0:
        return float(x), float(y), float(x + w), float(y + h)
    return (float(x0 + cols[0]), float(y0 + rows[0]), float(x0 + cols[-1] + 1),
            float(y0 + rows[-1] + 1))


# ---------------------------------------------------------------------------------------
# Proposals
# ---------------------------------------------------------------------------------------
def _object_maps(image: np.ndarray, cfg: ProposalConfig
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                            float, float]:
    """The working image's colour distance to the background, its edges (for finding
    objects), its gated edges (for bounding blobs), its pixels of local border colours
    (objects cut by the border), the working image in 8-bit Lab, and its scale ``(sx, sy)``
    (frame pixels per working pixel) for a uint8 RGB frame."""
    height, width = image.shape[:2]
    scale = working_scale(width, height, cfg.work_size)
    if scale < 1.0:
        ww, wh = max(8, int(round(width * scale))), max(8, int(round(height * scale)))
        small = cv2.resize(image, (ww, wh), interpolation=cv2.INTER_AREA)
    else:
        ww, wh = width, height
        small = np.ascontiguousarray(image)
    if cfg.blur_sigma > 0:
        small = cv2.GaussianBlur(small, (0, 0), cfg.blur_sigma)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2Lab)
    border = max(2, int(round(cfg.border_frac * min(wh, ww))))
    dist, plain, local = _background_distance(lab, border, cfg)
    edges = cv2.Canny(lab[..., 0].copy(), cfg.canny_low, cfg.canny_high) > 0
    gated = edges
    if cfg.edge_gate > 0:
        gate = cv2.dilate((plain > cfg.edge_gate).view(np.uint8), np.ones((3, 3), np.uint8))
        gated = edges & gate.view(bool)
        if _texture_edge_density(edges, border) > cfg.smooth_border_edges:
            edges = gated
    return dist, edges, gated, local, lab, width / ww, height / wh


def working_scale(width: int, height: int, work_size: int) -> float:
    """The colour proposer's downscale factor (at most 1) for a ``width`` x ``height``
    frame: its longer side to ``work_size``, or, when that leaves the shorter side under
    3/4 of ``work_size`` (a frame wider than 4:3), the shorter side to 3/4 of it, with the
    longer side at most 1.5 times ``work_size``."""
    long_side, short_side = max(width, height), min(width, height)
    scale = max(work_size / long_side,
                min(0.75 * work_size / short_side, 1.5 * work_size / long_side))
    return min(1.0, scale)


def _texture_edge_density(edges: np.ndarray, border: int, min_chain: int = 12) -> float:
    """Fraction of the border strip's pixels on edge chains of at least ``min_chain``
    pixels (a crumb's ring of edges does not make the table textured)."""
    strip = _border_pixels(edges[..., None], border)
    if not strip.any():
        return 0.0
    n, labels, stats, _ = cv2.connectedComponentsWithStats(edges.view(np.uint8), connectivity=8)
    chain = stats[:, cv2.CC_STAT_AREA] >= min_chain
    chain[0] = False
    return float(np.take(chain, _border_pixels(labels[..., None], border)).mean())


def propose_boxes(image_rgb: np.ndarray, cfg: ProposalConfig | None = None, *,
                  core_split: bool = True, learned: bool = True) -> list[Box]:
    """Class-agnostic boxes around the objects in a tabletop frame.

    Args:
        image_rgb: ``(H, W, 3)`` uint8 RGB frame (``(H, W)`` grayscale is accepted too).
        cfg: tuning knobs; the defaults when ``None``.
        core_split: False skips the cut between a blob's cores (``core_split_frac``): the
            colour boxes that the depth proposer's fusion takes, as depth separates those
            objects already (the cut's pieces gained nothing there and added false boxes).
        learned: False skips the box network (:attr:`ProposalConfig.box_net`): the colour
            model's boxes alone.

    Returns:
        Up to ``cfg.max_count`` ``(x, y, w, h)`` boxes in frame pixels, padded by
        ``cfg.pad_frac`` and clipped to the frame, largest first. Each box is at least
        4 pixels wide and high. An empty table gives an empty list.
    """
    return propose_with_network(image_rgb, cfg, core_split=core_split, learned=learned)[0]


def propose_with_network(image_rgb: np.ndarray, cfg: ProposalConfig | None = None, *,
                         core_split: bool = True, learned: bool = True
                         ) -> tuple[list[Box], list[Box]]:
    """:func:`propose_boxes`' boxes, and those of them that the box network found (empty
    when it is off): the depth proposer's fusion gives the network's boxes precedence
    (:func:`~.depth_fusion.fuse_proposals`). Arguments as :func:`propose_boxes`."""
    cfg = cfg or ProposalConfig()
    return with_colour_model(image_rgb, network_boxes(image_rgb, cfg) if learned else None,
                             cfg, core_split=core_split)


def _checked(image_rgb: np.ndarray) -> np.ndarray:
    """The frame as a contiguous ``(H, W, 3)`` uint8 RGB array (grayscale converted).

    Raises:
        ValueError: another shape or dtype.
    """
    image = np.asarray(image_rgb)
    if image.ndim == 2:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_GRAY2RGB)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.strides[1] != 3 or image.strides[2] != 1:  # e.g. a channel-reversed view
        image = np.ascontiguousarray(image)
    return image


def _usable(image_rgb: np.ndarray, cfg: ProposalConfig | None
            ) -> tuple[np.ndarray | None, ProposalConfig]:
    """The checked frame (:func:`_checked`; None when nothing can be proposed in it: under 8
    pixels wide or high, or ``max_count`` 0) and the settings (the defaults for None)."""
    cfg = cfg or ProposalConfig()
    image = _checked(image_rgb)
    return (None if min(image.shape[:2]) < 8 or cfg.max_count == 0 else image), cfg


def network_boxes(image_rgb: np.ndarray, cfg: ProposalConfig | None = None
                  ) -> list[Box] | None:
    """The box network's boxes of a frame, area-filtered and padded as the colour model's
    (``cfg.box_net``), or None when the network is off. A caller may find them in one
    thread and hand them to :func:`with_colour_model` in another.

    Raises:
        ValueError: not an RGB (or grayscale) uint8 frame.
    """
    image, cfg = _usable(image_rgb, cfg)
    if image is None:
        return []
    net = resolve_box_net(cfg.box_net)
    if net is None:
        return None
    height, width = image.shape[:2]
    widths = [w for w in (cfg.box_net_input_width, cfg.box_net_second_width) if w]
    boxes, _ = load_box_net(net, cfg.box_net_threads).detect(
        image, cfg.box_net_threshold, widths, max_count=cfg.max_count)
    area = float(width * height)
    found = [_pad_box(b, cfg.pad_frac, width, height) for b in boxes.tolist()
             if cfg.min_area_frac * area <= b[2] * b[3] <= cfg.max_area_frac * area]
    return sanitize_boxes(found, width, height, min_size=4)


def colour_model_boxes(image_rgb: np.ndarray, cfg: ProposalConfig | None = None, *,
                       core_split: bool = True) -> list[Box]:
    """The colour model's boxes of a frame (the box network aside), as
    :func:`with_colour_model` takes them precomputed.

    Raises:
        ValueError: not an RGB (or grayscale) uint8 frame.
    """
    image, cfg = _usable(image_rgb, cfg)
    return [] if image is None else _colour_boxes(image, cfg, core_split)


def with_colour_model(image_rgb: np.ndarray, network: Sequence[Box] | None,
                      cfg: ProposalConfig | None = None, *, core_split: bool = True,
                      colour: Sequence[Box] | None = None) -> tuple[list[Box], list[Box]]:
    """:func:`propose_with_network`'s result from the network's boxes of the frame
    (:func:`network_boxes`; None: the network is off): the colour model's boxes alone, or
    the network's boxes with the colour model's that no network box overlaps when
    ``box_net_colour`` is ``apart``; and the network's boxes alone. ``colour``: the colour
    model's boxes found already (:func:`colour_model_boxes`, same ``core_split``).

    Raises:
        ValueError: not an RGB (or grayscale) uint8 frame.
    """
    image, cfg = _usable(image_rgb, cfg)
    if image is None:
        return [], []

    def model() -> list[Box]:
        return list(colour) if colour is not None else _colour_boxes(image, cfg, core_split)
    if network is None:
        return model(), []
    network = list(network)
    out = list(network)
    if cfg.box_net_colour == "apart":
        out += [c for c in model() if all(box_iou(c, b) < APART_IOU for b in network)]
    out = out[:cfg.max_count]
    out.sort(key=lambda b: b[2] * b[3], reverse=True)
    network.sort(key=lambda b: b[2] * b[3], reverse=True)
    return out, network


def _colour_boxes(image: np.ndarray, cfg: ProposalConfig, core_split: bool) -> list[Box]:
    """Steps 1-5: the colour model's boxes."""
    height, width = image.shape[:2]
    # 1.-4. working image, background model, colour distance, edges, scored candidates
    if not core_split and cfg.core_split_frac > 0:
        cfg = replace(cfg, core_split_frac=0.0)
    candidates = _candidates(image, cfg)
    if cfg.nested_min_area_frac > 0:
        candidates = _search_inside(image, candidates, cfg)
    # 5. merge, pad, sort, cap
    return _finish(candidates, cfg, width, height)


def _search_inside(image: np.ndarray, candidates: list[list[float]], cfg: ProposalConfig
                   ) -> list[list[float]]:
    """Step 4b: each candidate covering ``nested_min_area_frac`` of the frame is proposed
    again as a frame of its own (its border strip is then the background model); the
    scored candidates found inside (at least ``min_area_frac`` of the whole frame) replace
    it, and it stays when none are."""
    height, width = image.shape[:2]
    frame_area = float(width * height)
    out: list[list[float]] = []
    for cand in candidates:
        x0, y0 = max(0, int(cand[0])), max(0, int(cand[1]))
        x1 = min(width, int(math.ceil(cand[0] + cand[2])))
        y1 = min(height, int(math.ceil(cand[1] + cand[3])))
        inner = []
        if (x1 - x0) * (y1 - y0) >= cfg.nested_min_area_frac * frame_area and \
                min(x1 - x0, y1 - y0) >= 16:
            inner = [[c[0] + x0, c[1] + y0, *c[2:]] for c in _candidates(
                np.ascontiguousarray(image[y0:y1, x0:x1]), cfg)
                if c[4] >= cfg.min_score and c[2] * c[3] >= cfg.min_area_frac * frame_area]
        out += inner or [cand]
    return out


def _candidates(image: np.ndarray, cfg: ProposalConfig) -> list[list[float]]:
    """Steps 1-4: candidate boxes ``[x, y, w, h, score]`` in frame pixels (not padded)."""
    height, width = image.shape[:2]
    dist, edges, gated, local, lab, sx, sy = _object_maps(image, cfg)
    wh, ww = dist.shape
    strong = (dist > cfg.strong_thresh).view(np.uint8)
    weak = (dist > cfg.weak_thresh).view(np.uint8)
    own = (weak | edges).view(np.uint8)
    k = int(cfg.close_kernel) | 1
    mask = own
    if k > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        mask = cv2.morphologyEx(own, cv2.MORPH_CLOSE, kernel)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    cut = cut_necks(mask, edges, lab, cfg, (n, labels, stats))  # touching objects
    # the cores of the blobs (their components as found unless the neck cut changed them)
    cut = split_cores(cut, lab, cfg, (n, labels, stats) if cut is mask else None)
    if cut is not mask:
        mask = cut
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return []
    flat = labels.reshape(-1)
    strong_count, edge_count, own_count, local_count = _component_counts(
        flat, n, (strong, edges, own, local))
    dist_sum = np.bincount(flat, weights=dist.reshape(-1), minlength=n)
    frame_area = float(width * height)
    min_area = cfg.min_area_frac * frame_area
    max_area = cfg.max_area_frac * frame_area
    out: list[list[float]] = []
    for i in range(1, n):
        x, y, w, h, pixels = (int(v) for v in stats[i])
        # coarse pre-filter on the component's box (refinement changes it by a pixel or so)
        if (w + 2) * (h + 2) * sx * sy < min_area or w * h * sx * sy > max_area:
            continue
        if cfg.reject_spanning and (w >= ww - 1 or h >= wh - 1):
            continue
        is_blob = strong_count[i] >= max(1.0, cfg.min_strong_frac * pixels)
        is_outline = edge_count[i] >= cfg.min_edge_perimeter_frac * 2.0 * (w + h)
        if not (is_blob or is_outline):
            continue
        # a few crumbs that the closing joined (an outline alone must cover min_area)
        if own_count[i] * sx * sy < (cfg.min_pixel_frac if is_blob else 1.0) * min_area:
            continue
        bx0, by0, bx1, by1 = _refine_extent(labels, i, (x, y, w, h), dist,
                                            gated if is_blob else edges, is_blob, cfg)
        fx, fy, fw, fh = bx0 * sx, by0 * sy, (bx1 - bx0) * sx, (by1 - by0) * sy
        if not min_area <= fw * fh <= max_area:
            continue
        if max(fw, fh) > cfg.max_aspect * max(min(fw, fh), 1e-6):
            continue
        if local_count[i] > 0.5 * pixels and not _cut_object_shape((x, y, w, h), (ww, wh)):
            continue
        score = _box_score(dist_sum[i] / max(pixels, 1), edge_count[i], w, h,
                           (x, y, x + w, y + h), (ww, wh), cfg)
        out.append([fx, fy, fw, fh, score])
    return out


def _component_counts(flat: np.ndarray, n: int, masks: Sequence[np.ndarray]
                      ) -> list[np.ndarray]:
    """Per component (``flat`` labels ``0 .. n - 1``), how many of its pixels each of the
    (at most 8) 0/1 ``masks`` holds: one integer histogram of the label and the masks'
    bits together (a weighted histogram per mask costs ~4x as much)."""
    code = np.zeros(flat.shape, np.uint8)
    for bit, mask in enumerate(masks):
        code |= mask.reshape(-1).view(np.uint8) << np.uint8(bit)
    width = 1 << len(masks)
    counts = np.bincount(flat * width + code, minlength=n * width).reshape(n, width)
    codes = np.arange(width)
    return [counts[:, (codes >> bit) & 1 == 1].sum(axis=1) for bit in range(len(masks))]


def _cut_object_shape(box: tuple[int, int, int, int], size: tuple[int, int],
                      min_depth_frac: float = 0.3) -> bool:
    """Whether a blob of local border colours looks like an object cut by the image border:
    it touches one border, or two opposite ones, (not a corner: a patch of floor) and
    reaches into the frame at least ``min_depth_frac`` of its length along that border (not
    a sliver of a far background along the edge)."""
    x, y, w, h = box
    left, top = x <= 1, y <= 1
    right, bottom = x + w >= size[0] - 1, y + h >= size[1] - 1
    if (left or right) and (top or bottom):
        return False
    if left or right:
        return w >= min_depth_frac * h
    if top or bottom:
        return h >= min_depth_frac * w
    return True


def _box_score(mean_dist: float, edge_pixels: float, w: int, h: int,
               box: tuple[int, int, int, int], size: tuple[int, int],
               cfg: ProposalConfig) -> float:
    """How object-like a candidate is, in [0, 1]: its mean colour distance to the
    background (relative to ``strong_thresh``) or its outline's edge support, whichever is
    higher. A candidate touching the image border is not penalised (its background model
    saw some of its colours), so objects cut by the border keep their box."""
    contrast = min(1.0, mean_dist / (2.0 * cfg.strong_thresh))
    outline = min(1.0, edge_pixels / max(2.0 * (w + h), 1.0))
    score = max(contrast, outline)
    x0, y0, x1, y1 = box
    if x0 <= 1 or y0 <= 1 or x1 >= size[0] - 1 or y1 >= size[1] - 1:
        score = max(score, cfg.min_score)
    return float(score)


def _finish(candidates: list[list[float]], cfg: ProposalConfig, width: int,
            height: int) -> list[Box]:
    """Step 5: drop low scores, merge overlapping boxes (keeping the best score), suppress
    weak boxes inside stronger ones, pad, sort by area, cap at ``max_count``."""
    max_area = cfg.max_area_frac * float(width * height)
    kept = [c for c in candidates if c[4] >= cfg.min_score]
    # merging is quadratic: keep it to the larger candidates
    kept.sort(key=lambda b: b[2] * b[3], reverse=True)
    kept = kept[:max(4 * cfg.max_count, 40)]
    merged = _merge_boxes(kept, cfg.merge_iou, cfg.merge_containment)
    merged = [b for b in merged if b[2] * b[3] <= max_area]
    merged.sort(key=lambda b: b[2] * b[3], reverse=True)
    padded = [_pad_box(b[:4], cfg.pad_frac, width, height) for b in merged[:cfg.max_count]]
    padded.sort(key=lambda b: b[2] * b[3], reverse=True)  # clipping may reorder
    return sanitize_boxes(padded, width, height, min_size=4)
