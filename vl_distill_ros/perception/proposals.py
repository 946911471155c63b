"""Class-agnostic object proposals for objects lying on a table.

By default the boxes come from the learned box network (:mod:`.box_net`, a small CenterNet
trained on rendered tabletop scenes): it finds each object by its own look, so objects in
contact stay apart. The colour model below adds its boxes where no network box overlaps
or holds them (``box_net_colour: apart``: an object unlike any the network was trained on);
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

import math
from dataclasses import replace
from typing import NamedTuple, Sequence

import cv2
import numpy as np

from .blob_split import cut_necks, split_cores
from .box_net import load_box_net, resolve_box_net
from .boxes import Box, box_containment, box_iou, sanitize_boxes
from .colour_background import background_distance, border_pixels, refine_extent
from .proposal_config import ProposalConfig

__all__ = ["ProposalConfig", "propose_boxes", "propose_with_network", "network_boxes",
           "network_detections", "NetworkBoxes", "colour_model_boxes", "with_colour_model",
           "working_scale"]

#: With ``box_net_colour: apart``, a colour box is added when its IoU with every box of the
#: network is under this.
APART_IOU = 0.1
#: ... and less than this fraction of its area lies inside every box of the network: a
#: colour box inside one is a part of the object the network found (a label, a printed
#: logo, a face of a box), rarely another object (session 40: on the bags it was chosen
#: on, tables and close views, 107 such boxes were false and 1 an object inside a network
#: box that held two; see docs/proposals.md).
APART_INSIDE = 0.8
#: A colour box reaches the frame's border when it lies within this many pixels of it
#: (:attr:`ProposalConfig.apart_max_aspect` does not apply to it: an object the border
#: cuts may leave a thin strip in view).
APART_BORDER_PX = 2.0


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
    dist, plain, local = background_distance(lab, border, cfg)
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
    strip = border_pixels(edges[..., None], border)
    if not strip.any():
        return 0.0
    n, labels, stats, _ = cv2.connectedComponentsWithStats(edges.view(np.uint8), connectivity=8)
    chain = stats[:, cv2.CC_STAT_AREA] >= min_chain
    chain[0] = False
    return float(np.take(chain, border_pixels(labels[..., None], border)).mean())


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


class NetworkBoxes(NamedTuple):
    """The box network's boxes of a frame (:func:`network_detections`), area-filtered and
    padded as the colour model's."""

    #: Scored at least ``box_net_threshold``: the network's proposals.
    boxes: list[Box]
    #: Scored from the weak threshold up to ``box_net_threshold``: never proposed on their
    #: own; the depth fusion takes them as weak evidence (``fuse_network_weak_score``).
    weak: list[Box]


def network_boxes(image_rgb: np.ndarray, cfg: ProposalConfig | None = None
                  ) -> list[Box] | None:
    """The box network's boxes of a frame, area-filtered and padded as the colour model's
    (``cfg.box_net``), or None when the network is off. A caller may find them in one
    thread and hand them to :func:`with_colour_model` in another.

    Raises:
        ValueError: not an RGB (or grayscale) uint8 frame.
    """
    found = network_detections(image_rgb, cfg)
    return None if found is None else found.boxes


def network_detections(image_rgb: np.ndarray, cfg: ProposalConfig | None = None,
                       weak_threshold: float = 0.0) -> NetworkBoxes | None:
    """:func:`network_boxes`' boxes and, with ``weak_threshold`` in (0, ``box_net_threshold``),
    those scored from it up to the threshold (at most ``max_count`` each), from one run of
    the network; None when the network is off. The boxes are those :func:`network_boxes`
    finds at the threshold alone: the overlap suppression keeps the best boxes first, so a
    weaker one never suppresses them.

    Raises:
        ValueError: not an RGB (or grayscale) uint8 frame.
    """
    image, cfg = _usable(image_rgb, cfg)
    if image is None:
        return NetworkBoxes([], [])
    net = resolve_box_net(cfg.box_net)
    if net is None:
        return None
    height, width = image.shape[:2]
    widths = [w for w in (cfg.box_net_input_width, cfg.box_net_second_width) if w]
    threshold = float(cfg.box_net_threshold)
    lowest = float(weak_threshold) if 0.0 < weak_threshold < threshold else threshold
    boxes, scores = load_box_net(net, cfg.box_net_threads).detect(
        image, lowest, widths, max_count=2 * cfg.max_count,
        close_width=cfg.box_net_close_width, close_min_px=cfg.box_net_close_min_px)
    area = float(width * height)

    def kept(strong: bool) -> list[Box]:
        chosen = [b for b, s in zip(boxes.tolist(), scores.tolist())
                  if (s >= threshold) == strong][:cfg.max_count]
        found = [_pad_box(b, cfg.pad_frac, width, height) for b in chosen
                 if cfg.min_area_frac * area <= b[2] * b[3] <= cfg.max_area_frac * area]
        return sanitize_boxes(found, width, height, min_size=4)
    return NetworkBoxes(kept(True), kept(False) if lowest < threshold else [])


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
    the network's boxes with the colour model's that no network box overlaps
    (:data:`APART_IOU`) or holds (:data:`APART_INSIDE`) when ``box_net_colour`` is
    ``apart``; and the network's boxes alone. ``colour``: the colour
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
        height, width = image.shape[:2]
        out += [c for c in model() if all(box_iou(c, b) < APART_IOU
                                          and box_containment(c, b) < APART_INSIDE
                                          for b in network)
                and _apart_shape(c, width, height, cfg.apart_max_aspect)]
    out = out[:cfg.max_count]
    out.sort(key=lambda b: b[2] * b[3], reverse=True)
    network.sort(key=lambda b: b[2] * b[3], reverse=True)
    return out, network


def _apart_shape(box: Box, width: int, height: int, max_aspect: float) -> bool:
    """Whether a colour box added beside the network's is no longer than ``max_aspect``
    times its width (0: any), or reaches the frame's border (:data:`APART_BORDER_PX`)."""
    x, y, w, h = (float(v) for v in box[:4])
    if max_aspect <= 0 or max(w, h) <= max_aspect * max(min(w, h), 1e-6):
        return True
    return x <= APART_BORDER_PX or y <= APART_BORDER_PX or \
        x + w >= width - APART_BORDER_PX or y + h >= height - APART_BORDER_PX


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
        bx0, by0, bx1, by1 = refine_extent(labels, i, (x, y, w, h), dist,
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
