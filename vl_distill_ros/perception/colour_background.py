"""The colour proposer's background model (ROS-free, numpy and OpenCV): what the table, floor
and wall look like, learnt per frame from the colours along the image border.

The border's pixels are binned into a coarse Lab colour grid (:func:`border_pixels`), the
colours seen along long stretches of it are background (with a local model per border
segment and the shadows of those colours, ``shadow_min_ratio``), and
:func:`background_distance` gives each pixel its distance in colour from the nearest
background colour: what differs from the background is an object. :func:`refine_extent`
trims a found blob's box to the sub-pixel extent of its distance profile. The settings are
fields of :class:`~.proposal_config.ProposalConfig`; :mod:`.proposals` uses them.
"""
from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from .proposal_config import ProposalConfig

__all__ = ["background_distance", "border_pixels", "refine_extent"]

#: Colour grid cells: 8 lightness levels (32 cells) x 4 a* levels x 4 b* levels, on the
#: 8-bit Lab of OpenCV (L in 0..255, a and b offset by 128).
_L_SHIFT = 3
_AB_SHIFT = 2


def _border_strips(img: np.ndarray, border: int) -> list[np.ndarray]:
    """The four non-overlapping strips, ``border`` pixels wide, along the image edges."""
    h, w = img.shape[:2]
    return [img[:border], img[h - border:], img[border:h - border, :border],
            img[border:h - border, w - border:]]


def border_pixels(img: np.ndarray, border: int) -> np.ndarray:
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
    every pixel of :func:`border_pixels` of an ``h`` x ``w`` image, in the same order
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


def background_distance(lab: np.ndarray, border: int,
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
    occ, local = _background_cells(grid, border_pixels(cell_img, border)[:, 0],
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


def refine_extent(labels: np.ndarray, index: int, box: tuple[int, int, int, int],
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
