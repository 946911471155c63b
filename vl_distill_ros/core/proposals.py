"""Class-agnostic object proposals for objects lying on a table (OpenCV only, no learning).

The scene model is "a background surface (table, floor, plain backdrop) with objects on it":

1. The frame is downscaled so its longer side is at most :attr:`ProposalConfig.work_size`
   pixels (area filter, which also averages out sensor noise) and lightly blurred.
2. The background is modelled in CIE Lab from the pixels of a strip along the image border:
   up to :attr:`ProposalConfig.max_background_modes` dominant colours (the table, and e.g. a
   wall behind it), each with a robust per-channel spread (median absolute deviation), so a
   textured wooden table gets a wider tolerance than a plain white sheet.
3. Each pixel's distance to the nearest background mode, in units of that mode's spread
   (lightness down-weighted so lighting changes count less; pixels with the table's
   chromaticity but 50-100 % of its brightness count as shadow), is thresholded with
   hysteresis (strong seeds, weak extension), and OpenCV's Canny edges of the lightness
   channel are added so low-contrast objects with crisp outlines are found too.
4. A morphological closing joins the pieces of one object; connected components become
   candidate boxes, kept when they hold enough strong pixels or enough outline edges. Each
   box is tightened to the half-maximum of the object's colour distance with sub-pixel
   interpolation (so thin objects such as forks keep their width), then filtered by area,
   aspect ratio and "spans the whole frame" (table edges, walls).
5. Overlapping or nested boxes are merged, boxes are padded, sorted by area (largest
   first) and capped at :attr:`ProposalConfig.max_count`.

Cost: about 5 ms for a 640x480 frame on one (shared) CPU core, independent of the input
size beyond the initial downscale.

Known limitations: objects that touch each other (or overlap in the image) are proposed as
one box, and an object touching a line that spans the frame (the table's edge) is dropped
with it; an object whose colour and outline both match the table is missed, as is a darker
object of the table's own hue without a crisp outline (it looks like a shadow); an object
coloured like a second background colour (a grey object in front of a grey wall) gets less
contrast; a background that does not reach the image border (a close-up of a busy shelf)
breaks the model; boxes larger than ``max_area_frac`` of the frame (an object filling the
view) are not proposed, so callers should fall back to :func:`full_frame_box`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import cv2
import numpy as np

__all__ = ["Box", "ProposalConfig", "propose_boxes", "sanitize_boxes", "crop", "full_frame_box",
           "box_iou"]

#: ``(x, y, w, h)`` in pixels: top-left corner, width and height.
Box = tuple[int, int, int, int]


@dataclass
class ProposalConfig:
    """Tuning knobs of :func:`propose_boxes`. Sizes are fractions of the frame unless noted.

    The defaults suit a 640x480 camera looking down at a table 0.5-1.5 m away.
    """

    #: Smallest box kept, as a fraction of the frame area (bounding-box area, before padding).
    min_area_frac: float = 0.002
    #: Largest box kept, as a fraction of the frame area (larger ones are the background).
    max_area_frac: float = 0.6
    #: Most boxes returned (the largest ones are kept).
    max_count: int = 10
    #: Fraction of a box's width (height) added on the left and the right (top and bottom);
    #: the padded box is clipped to the frame.
    pad_frac: float = 0.1
    #: Longest side, in pixels, of the internal working image (smaller is faster but loses
    #: thin objects); frames already smaller are not upscaled.
    work_size: int = 320
    #: Standard deviation, in working-image pixels, of the Gaussian blur applied before the
    #: colour model (0 disables it).
    blur_sigma: float = 0.8
    #: Width of the border strip that samples the background, as a fraction of the shorter
    #: image side.
    border_frac: float = 0.04
    #: At most this many background colours are modelled (table, wall, ...).
    max_background_modes: int = 3
    #: A further background colour is only modelled if it covers at least this fraction of
    #: the border strip (objects touching the border cover less).
    min_mode_frac: float = 0.15
    #: Floor of a background colour's per-channel spread, in 8-bit Lab units, so a noise-free
    #: plain background does not make every tiny colour change an object.
    min_sigma: float = 2.5
    #: Weight of the lightness channel in the colour distance (chroma has weight 1); below 1
    #: so that shadows and lighting gradients count less than colour changes.
    lightness_weight: float = 0.6
    #: Floor of a background colour's spread in rgb chromaticity ``(r, g) / (r + g + b)``.
    min_chroma_sigma: float = 0.006
    #: Pixels with the background's chromaticity and ``shadow_min_ratio`` to 1 times its
    #: brightness are treated as shadowed table (their lightness change is ignored); 1.0
    #: disables this. Darker same-hue objects are then found by their outline only.
    shadow_min_ratio: float = 0.5
    #: Colour distance (in background spreads) above which a pixel is a confident object pixel.
    strong_thresh: float = 6.0
    #: Colour distance above which a pixel may extend an object that has confident pixels.
    weak_thresh: float = 3.5
    #: Canny thresholds on the blurred 8-bit Lab lightness of the working image.
    canny_low: float = 30.0
    canny_high: float = 80.0
    #: Diameter, in working-image pixels, of the elliptical kernel of the closing that joins
    #: the pieces of one object (made odd; 1 disables it).
    close_kernel: int = 5
    #: A component is an object if at least this fraction of its pixels are confident colour
    #: pixels ...
    min_strong_frac: float = 0.05
    #: ... or if its Canny edge pixels number at least this fraction of its bounding-box
    #: perimeter (an outline rather than a stray texture line).
    min_edge_perimeter_frac: float = 0.6
    #: Largest ratio of the longer to the shorter box side (forks and knives are ~10-20).
    max_aspect: float = 25.0
    #: Drop components that span the whole frame width or height (table edges, walls).
    reject_spanning: bool = True
    #: Boxes whose IoU exceeds this, or where this fraction of the smaller one lies inside
    #: the larger one (see :attr:`merge_containment`), are merged into their union.
    merge_iou: float = 0.5
    #: Fraction of the smaller box inside the larger one above which they are merged.
    merge_containment: float = 0.85

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_area_frac <= self.max_area_frac <= 1.0:
            raise ValueError(
                f"need 0 <= min_area_frac <= max_area_frac <= 1, got {self.min_area_frac} "
                f"and {self.max_area_frac}")
        if self.max_count < 0:
            raise ValueError(f"max_count must be >= 0, got {self.max_count}")
        if self.pad_frac < 0:
            raise ValueError(f"pad_frac must be >= 0, got {self.pad_frac}")
        if self.work_size < 16:
            raise ValueError(f"work_size must be >= 16 pixels, got {self.work_size}")
        if self.weak_thresh > self.strong_thresh:
            raise ValueError(f"weak_thresh ({self.weak_thresh}) must be <= strong_thresh "
                             f"({self.strong_thresh})")
        if self.close_kernel < 1:
            raise ValueError(f"close_kernel must be >= 1, got {self.close_kernel}")
        if not 0.0 < self.shadow_min_ratio <= 1.0:
            raise ValueError(f"shadow_min_ratio must be in (0, 1], got {self.shadow_min_ratio}")
        if self.max_aspect < 1.0:
            raise ValueError(f"max_aspect must be >= 1, got {self.max_aspect}")
        if self.max_background_modes < 1:
            raise ValueError(
                f"max_background_modes must be >= 1, got {self.max_background_modes}")


# ---------------------------------------------------------------------------------------
# Box helpers
# ---------------------------------------------------------------------------------------
def full_frame_box(width: int, height: int) -> Box:
    """The box covering the whole ``width`` x ``height`` frame."""
    return (0, 0, int(width), int(height))


def crop(image: np.ndarray, box: Sequence[int]) -> np.ndarray:
    """The region ``box`` = ``(x, y, w, h)`` of ``image`` as a view (no copy).

    The box is clipped to the image (numpy slicing semantics); run boxes through
    :func:`sanitize_boxes` first to be sure the crop is not empty.
    """
    x, y, w, h = (int(v) for v in box)
    x0, y0 = max(x, 0), max(y, 0)
    return image[y0:max(y + h, y0), x0:max(x + w, x0)]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes (0 when either is empty)."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return float(inter / union) if union > 0 else 0.0


def sanitize_boxes(boxes: Iterable[Sequence[float]], width: int, height: int,
                   min_size: int = 4) -> list[Box]:
    """Clip ``(x, y, w, h)`` boxes to a ``width`` x ``height`` image and make them integers.

    Corners are rounded to the nearest pixel and clipped to the image. Boxes are dropped when
    they have fewer than four values, a NaN or infinite value, a negative width or height,
    lie fully outside the image, or are narrower or shorter than ``min_size`` (at least 1)
    after clipping. Every returned box gives a non-empty :func:`crop` of the image. The order
    of the kept boxes is preserved.
    """
    width, height = int(width), int(height)
    min_size = max(1, int(min_size))
    out: list[Box] = []
    if width <= 0 or height <= 0:
        return out
    for box in boxes:
        try:
            vals = [float(v) for v in box]
        except (TypeError, ValueError):
            continue
        if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
            continue
        x, y, w, h = vals
        if w < 0 or h < 0:
            continue
        x0 = min(max(int(round(x)), 0), width)
        y0 = min(max(int(round(y)), 0), height)
        x1 = min(max(int(round(x + w)), 0), width)
        y1 = min(max(int(round(y + h)), 0), height)
        if x1 - x0 < min_size or y1 - y0 < min_size:
            continue
        out.append((x0, y0, x1 - x0, y1 - y0))
    return out


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
    """Repeatedly replace pairs of overlapping/nested boxes by their union."""
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
                    boxes[i] = [x0, y0, x1 - x0, y1 - y0]
                    del boxes[j]
                    changed = True
                    break
            if changed:
                break
    return boxes


# ---------------------------------------------------------------------------------------
# Background model
# ---------------------------------------------------------------------------------------
def _border_pixels(img: np.ndarray, border: int) -> np.ndarray:
    """The pixels of a ``border``-wide strip along the image edges, as ``(N, C)`` float32."""
    h, w, c = img.shape
    parts = [img[:border].reshape(-1, c), img[h - border:].reshape(-1, c),
             img[border:h - border, :border].reshape(-1, c),
             img[border:h - border, w - border:].reshape(-1, c)]
    return np.concatenate(parts).astype(np.float32)


@dataclass
class _Mode:
    """One background colour: Lab centre/spread, rgb chromaticity centre/spread, brightness."""

    lab: np.ndarray
    lab_sigma: np.ndarray
    chroma: np.ndarray
    chroma_sigma: np.ndarray
    brightness: float


def _chromaticity(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(r, g) / (r + g + b)`` (invariant to shading) and ``r + g + b`` of float RGB."""
    total = rgb.sum(axis=-1) + np.float32(3.0)
    return rgb[..., :2] / total[..., None], total


def _background_modes(lab: np.ndarray, rgb: np.ndarray, cfg: ProposalConfig) -> list[_Mode]:
    """Dominant colours of the border samples (``lab``/``rgb``: ``(N, 3)`` float32 each)."""
    modes: list[_Mode] = []
    total = len(lab)
    bins = np.array([16.0, 8.0, 8.0], np.float32)  # coarse Lab histogram cells
    dims = np.array([16, 32, 32])
    for _ in range(cfg.max_background_modes):
        if len(lab) == 0 or (modes and len(lab) < cfg.min_mode_frac * total):
            break
        q = np.minimum((lab / bins).astype(np.int32), dims - 1)
        key = (q[:, 0] * dims[1] + q[:, 1]) * dims[2] + q[:, 2]
        peak = np.array(np.unravel_index(int(np.argmax(np.bincount(key))), tuple(dims)))
        # the peak cell and its neighbours (a colour may straddle cell edges)
        near = np.all(np.abs(q - peak) <= 1, axis=1)
        if modes and near.sum() < cfg.min_mode_frac * total:
            break
        # robust centre and spread of the peak's members
        members = lab[near]
        centre = np.median(members, axis=0)
        sigma = np.maximum(np.median(np.abs(members - centre), axis=0) * 1.4826, cfg.min_sigma)
        chroma, bright = _chromaticity(rgb[near])
        c_centre = np.median(chroma, axis=0)
        c_sigma = np.maximum(np.median(np.abs(chroma - c_centre), axis=0) * 1.4826,
                             cfg.min_chroma_sigma)
        modes.append(_Mode(centre.astype(np.float32), sigma.astype(np.float32),
                           c_centre.astype(np.float32), c_sigma.astype(np.float32),
                           float(np.median(bright))))
        # drop every sample this mode explains before looking for the next one
        z = (lab - centre) / sigma
        explained = np.einsum("ij,ij->i", z, z) < (cfg.weak_thresh ** 2) * 3.0
        lab, rgb = lab[~(explained | near)], rgb[~(explained | near)]
    return modes


def _colour_distance(lab: np.ndarray, rgb: np.ndarray, modes: list[_Mode],
                     cfg: ProposalConfig) -> np.ndarray:
    """Per-pixel distance to the nearest background mode, in units of its spread.

    Pixels that look like the mode in shadow (same chromaticity, ``shadow_min_ratio`` to 1
    times as bright) get their chromaticity distance instead of the Lab distance.
    """
    best: np.ndarray | None = None
    wl = float(cfg.lightness_weight)
    weak2 = np.float32(cfg.weak_thresh ** 2)
    rgb_flat = rgb.reshape(-1, 3)
    for mode in modes:
        inv = 1.0 / mode.lab_sigma
        # (lab - centre) * scale, squared and summed over channels, in float32 via OpenCV
        z = cv2.multiply(cv2.subtract(lab, tuple(float(c) for c in mode.lab) + (0.0,)),
                         (wl * float(inv[0]), float(inv[1]), float(inv[2]), 0.0))
        d2 = cv2.transform(cv2.multiply(z, z), np.ones((1, 3), np.float32)).reshape(-1)
        if cfg.shadow_min_ratio < 1.0:
            # only pixels that would otherwise count as object can be shadow
            idx = np.flatnonzero(d2 > weak2)
            if idx.size:
                chroma, total = _chromaticity(rgb_flat[idx])
                ratio = total * np.float32(1.0 / mode.brightness)
                zc = (chroma - mode.chroma) * (1.0 / mode.chroma_sigma)
                c2 = np.einsum("ij,ij->i", zc, zc)
                shadow = (ratio >= cfg.shadow_min_ratio) & (ratio <= 1.0) & (c2 < d2[idx])
                d2[idx[shadow]] = c2[shadow]
        best = d2 if best is None else np.minimum(best, d2)
    assert best is not None
    return np.sqrt(best).reshape(lab.shape[:2])


def _subpixel_extent(profile: np.ndarray, thr: float) -> tuple[float, float] | None:
    """Where ``profile`` first rises above and last falls below ``thr``, interpolated
    linearly between pixel centres; in pixel-edge coordinates (pixel ``i`` spans
    ``[i, i + 1)``). ``None`` if it never reaches ``thr``."""
    above = np.flatnonzero(profile >= thr)
    if above.size == 0:
        return None
    i0, i1 = int(above[0]), int(above[-1])
    lo, hi = float(i0), float(i1 + 1)
    if i0 > 0:
        p0, p1 = float(profile[i0 - 1]), float(profile[i0])
        lo = i0 - 0.5 + (thr - p0) / max(p1 - p0, 1e-6)
    if i1 < profile.size - 1:
        p1, p2 = float(profile[i1]), float(profile[i1 + 1])
        hi = i1 + 0.5 + (p1 - thr) / max(p1 - p2, 1e-6)
    return lo, hi


def _refine_extent(labels: np.ndarray, index: int, box: tuple[int, int, int, int],
                   dist: np.ndarray, edges: np.ndarray, is_blob: bool,
                   cfg: ProposalConfig) -> tuple[float, float, float, float]:
    """Tight ``(x0, y0, x1, y1)`` of component ``index`` in working-image coordinates.

    The closing, the blur and the low (weak) threshold widen an object by a pixel or two on
    every side, which matters for thin objects. A colour blob is cut at half its typical
    (90th percentile) distance, with sub-pixel interpolation; an outline-only component is
    bounded by its above-threshold pixels and Canny edges.
    """
    x, y, w, h = box
    hh, ww = labels.shape
    x0, y0, x1, y1 = max(x - 1, 0), max(y - 1, 0), min(x + w + 1, ww), min(y + h + 1, hh)
    comp = labels[y0:y1, x0:x1] == index
    roi_dist = dist[y0:y1, x0:x1]
    vals = roi_dist[comp]
    k90 = int(0.9 * (vals.size - 1))
    thr = max(cfg.weak_thresh, 0.5 * float(np.partition(vals, k90)[k90]))
    if is_blob:
        # distances of the component and its 1-pixel fringe, so the crossing is interpolated
        near = cv2.dilate(comp.view(np.uint8), np.ones((3, 3), np.uint8)).view(bool)
        masked = np.where(near, roi_dist, np.float32(0.0))
        xs = _subpixel_extent(masked.max(axis=0), thr)
        ys = _subpixel_extent(masked.max(axis=1), thr)
        if xs is not None and ys is not None and xs[1] > xs[0] and ys[1] > ys[0]:
            return x0 + xs[0], y0 + ys[0], x0 + xs[1], y0 + ys[1]
        return float(x), float(y), float(x + w), float(y + h)
    # an outline: Canny edges lie on both sides of the true boundary
    keep = ((roi_dist >= thr) | edges[y0:y1, x0:x1]) & comp
    cols, rows = np.flatnonzero(keep.any(axis=0)), np.flatnonzero(keep.any(axis=1))
    if cols.size == 0 or rows.size == 0:
        return float(x), float(y), float(x + w), float(y + h)
    return (float(x0 + cols[0]), float(y0 + rows[0]), float(x0 + cols[-1] + 1),
            float(y0 + rows[-1] + 1))


# ---------------------------------------------------------------------------------------
# Proposals
# ---------------------------------------------------------------------------------------
def propose_boxes(image_rgb: np.ndarray, cfg: ProposalConfig | None = None) -> list[Box]:
    """Class-agnostic boxes around the objects in a tabletop frame.

    Args:
        image_rgb: ``(H, W, 3)`` uint8 RGB frame (``(H, W)`` grayscale is accepted too).
        cfg: tuning knobs; the defaults when ``None``.

    Returns:
        Up to ``cfg.max_count`` ``(x, y, w, h)`` boxes in frame pixels, padded by
        ``cfg.pad_frac`` and clipped to the frame, largest first. Each box is at least
        4 pixels wide and high. An empty table gives an empty list.
    """
    cfg = cfg or ProposalConfig()
    image = np.asarray(image_rgb)
    if image.ndim == 2:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_GRAY2RGB)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.strides[1] != 3 or image.strides[2] != 1:  # e.g. a channel-reversed view
        image = np.ascontiguousarray(image)
    height, width = image.shape[:2]
    if height < 8 or width < 8 or cfg.max_count == 0:
        return []

    # 1. working image
    scale = min(1.0, cfg.work_size / max(height, width))
    if scale < 1.0:
        ww, wh = max(8, int(round(width * scale))), max(8, int(round(height * scale)))
        small = cv2.resize(image, (ww, wh), interpolation=cv2.INTER_AREA)
    else:
        ww, wh = width, height
        small = np.ascontiguousarray(image)
    sx, sy = width / ww, height / wh
    if cfg.blur_sigma > 0:
        small = cv2.GaussianBlur(small, (0, 0), cfg.blur_sigma)
    lab_u8 = cv2.cvtColor(small, cv2.COLOR_RGB2Lab)
    lab = lab_u8.astype(np.float32)
    rgb = small.astype(np.float32)

    # 2.-3. background model, colour distance, edges
    border = max(2, int(round(cfg.border_frac * min(wh, ww))))
    # every third border pixel is plenty for the statistics
    modes = _background_modes(_border_pixels(lab, border)[::3], _border_pixels(rgb, border)[::3],
                              cfg)
    dist = _colour_distance(lab, rgb, modes, cfg)
    strong = (dist > cfg.strong_thresh).view(np.uint8)
    weak = (dist > cfg.weak_thresh).view(np.uint8)
    edges = cv2.Canny(lab_u8[..., 0].copy(), cfg.canny_low, cfg.canny_high) > 0
    mask = (weak | edges).view(np.uint8)

    # 4. join pieces, components
    k = int(cfg.close_kernel) | 1
    if k > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return []
    flat = labels.reshape(-1)
    strong_count = np.bincount(flat, weights=strong.reshape(-1), minlength=n)
    edge_count = np.bincount(flat, weights=edges.reshape(-1).view(np.uint8), minlength=n)

    frame_area = float(width * height)
    min_area = cfg.min_area_frac * frame_area
    max_area = cfg.max_area_frac * frame_area
    candidates: list[list[float]] = []
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
        bx0, by0, bx1, by1 = _refine_extent(labels, i, (x, y, w, h), dist, edges, is_blob, cfg)
        fx, fy, fw, fh = bx0 * sx, by0 * sy, (bx1 - bx0) * sx, (by1 - by0) * sy
        if not min_area <= fw * fh <= max_area:
            continue
        if max(fw, fh) > cfg.max_aspect * max(min(fw, fh), 1e-6):
            continue
        candidates.append([fx, fy, fw, fh])

    # 5. merge, pad, sort, cap (merging is quadratic: keep it to the larger candidates)
    candidates.sort(key=lambda b: b[2] * b[3], reverse=True)
    candidates = candidates[:max(4 * cfg.max_count, 40)]
    merged = _merge_boxes(candidates, cfg.merge_iou, cfg.merge_containment)
    merged = [b for b in merged if b[2] * b[3] <= max_area]
    merged.sort(key=lambda b: b[2] * b[3], reverse=True)
    padded = [_pad_box(b, cfg.pad_frac, width, height) for b in merged[:cfg.max_count]]
    padded.sort(key=lambda b: b[2] * b[3], reverse=True)  # clipping may reorder
    return sanitize_boxes(padded, width, height, min_size=4)
