"""Objects on the support plane as clusters of the depth cloud: step 3 of the depth proposer
(ROS-free).

:func:`object_clusters` groups the samples in the height band above the plane
(:func:`in_band`) by connected components of the sample grid after a small closing, which
does not bridge a depth step (``cut_jump_frac``) or a concave crease (``crease_m``, closed
along colour edges with the colour image, :class:`ColourEdges`); pieces too small to split
a cluster rejoin it or stand alone (``small_piece_points``); weaker steps cut where the
lower piece is in front (``weak_jump_frac``); last each cluster seen from above is cut
where its height map steps (:mod:`.top_view`). The settings are fields of
:class:`~.depth_config.DepthProposalConfig`; the module docstring of
:mod:`.depth_proposals` tells the whole recipe.
"""
from __future__ import annotations

import functools
from typing import Callable

import cv2
import numpy as np

from .depth_cloud import SQUARE_3X3, DepthCloud, depth_span
from .depth_config import DepthProposalConfig
from .top_view import nearest_label, piece_need, split_top_view


__all__ = ["object_clusters", "in_band", "below_taller", "crease_radii", "ColourEdges"]


def in_band(points: np.ndarray, height: np.ndarray, cfg: DepthProposalConfig,
            allowance: np.ndarray | None = None) -> np.ndarray:
    """Which samples stand in the height band: over ``min_height_m`` plus the noise
    allowance at their depth (``plane_threshold_quadratic * z ** 2``; ``allowance`` when
    already at hand), under ``max_height_m``."""
    if allowance is None:
        allowance = cfg.plane_threshold_quadratic * points[:, 2] ** 2
    low = cfg.min_height_m + allowance
    return (height > low) & (height < cfg.max_height_m)


def below_taller(height_grid: np.ndarray, cfg: DepthProposalConfig) -> np.ndarray:
    """Grid of the cells next to (3x3) a sample above ``max_height_m``: two valid samples
    side by side lie on one surface (a sample across a depth step is no valid sample)."""
    above = height_grid >= cfg.max_height_m   # NaN (no sample): False
    return cv2.dilate(above.view(np.uint8), SQUARE_3X3) > 0


def object_clusters(cloud: DepthCloud, height: np.ndarray, height_grid: np.ndarray,
                    normal: np.ndarray, cfg: DepthProposalConfig,
                    edges: ColourEdges | None = None) -> list[np.ndarray]:
    """Step 3 of the module docstring: index arrays (into ``cloud``) of the objects on the
    plane whose unit ``normal`` gives each sample its ``height`` (and ``height_grid``, the
    same on the sample grid): the samples in the height band, grouped on the grid and cut
    at steps, creases (closed along the colour ``edges`` when given) and weaker steps in
    front, then where each group's height map steps seen from above (``top_view_*``)."""
    clusters = _grid_clusters(cloud, in_band(cloud.points, height, cfg), cfg, edges,
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
    n, groups = cv2.connectedComponents(crease.view(np.uint8), connectivity=8)
    has_thick = np.zeros(n, bool)   # a lookup table: np.isin's cells, 10x faster
    has_thick[groups[thick]] = True
    return crease & ~np.take(has_thick, groups)


class ColourEdges:
    """The colour image's edges on the depth grid (``crease_colour_cells``), computed per
    cluster window when a crease asks for them (most clusters have none)."""

    #: Cells of context around a window (Canny's gradient and hysteresis see past it).
    PAD = 3

    def __init__(self, image_rgb: np.ndarray, shape: tuple[int, int],
                 cfg: DepthProposalConfig) -> None:
        """``image_rgb``: the uint8 RGB colour image (the depth's size); ``shape``: the
        grid's."""
        self._image, self._shape, self._cfg = image_rgb, tuple(shape), cfg
        self._lab: np.ndarray | None = None

    def window(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """``bool`` cells of the grid window ``(x, y, w, h)`` on (or next to) a colour
        edge."""
        p = self.PAD
        y0, x0 = max(y - p, 0), max(x - p, 0)
        if self._image.shape[:2] == self._shape:   # the grid is the image: the window only
            lab = cv2.cvtColor(np.ascontiguousarray(self._image[y0:y + h + p, x0:x + w + p]),
                               cv2.COLOR_RGB2Lab)   # (Lab is per pixel)
        else:
            if self._lab is None:   # the image on the grid, in Lab, once for all windows
                gh, gw = self._shape
                image = cv2.resize(np.ascontiguousarray(self._image), (gw, gh),
                                   interpolation=cv2.INTER_AREA)
                self._lab = cv2.cvtColor(image, cv2.COLOR_RGB2Lab)
            lab = self._lab[y0:y + h + p, x0:x + w + p]
        edges = np.zeros(lab.shape[:2], np.uint8)
        for channel in cv2.split(lab):
            edges |= cv2.Canny(channel, int(self._cfg.colour_edge_low),
                               int(self._cfg.colour_edge_high))
        edges = cv2.dilate(edges, SQUARE_3X3) > 0
        return edges[y - y0:y - y0 + h, x - x0:x - x0 + w]


def _colour_crease(crease: np.ndarray, edges: Callable[[], np.ndarray], own: np.ndarray,
                   cells: int) -> np.ndarray:
    """``crease`` closed along the colour edges (``edges()``: those of the same window, only
    asked for when the closing fills a cell): the ``own`` cells on an edge that a closing
    of the crease cells with a ``cells``-wide disc fills (a gap between blobs of crease
    cells narrower than the disc; never past their ends)."""
    near = cv2.morphologyEx(crease.view(np.uint8), cv2.MORPH_CLOSE, _disc(int(cells))).view(bool)
    near &= own
    if not np.greater(near, crease).any():   # it fills none (a quarter of the clusters)
        return crease
    return crease | (near & edges())


@functools.lru_cache(maxsize=16)
def _disc(cells: int) -> np.ndarray:
    """The ``cells``-wide elliptic structuring element (made once)."""
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (cells, cells))
    disc.setflags(write=False)
    return disc


def _grid_clusters(cloud: DepthCloud, above: np.ndarray, cfg: DepthProposalConfig,
                   edges: ColourEdges | None = None,
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
        joined = cv2.morphologyEx(grid, cv2.MORPH_CLOSE, _disc(int(cfg.close_cells) | 1))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    clusters, spans = [], _Spans(cloud)
    for i in range(1, count):
        if stats[i, cv2.CC_STAT_AREA] < cfg.min_cluster_points:
            continue
        x, y, bw, bh = (int(v) for v in stats[i, :4])
        comp = labels[y:y + bh, x:x + bw] == i
        own = comp & (grid[y:y + bh, x:x + bw] > 0)
        parts, kept, crease, kept_pieces = [comp], comp, None, None
        if cfg.cut_jump_frac > 0:  # not across a depth step ...
            kept = comp & ~spans.steps((x, y, bw, bh), cfg.cut_jump_frac)
            kept_pieces = _pieces(kept, own, comp)
            parts = _large_parts(comp, kept, own, cfg, kept_pieces) or parts
        if cfg.crease_m > 0:  # ... nor across a concave crease
            crease = _creases(cloud, grid, (x, y, bw, bh), cfg) & comp
            if edges is not None and crease.any():
                crease = _colour_crease(crease, functools.partial(edges.window, x, y, bw, bh),
                                        own, cfg.crease_colour_cells)
            if crease.any() and int(cfg.close_cells) > 1:
                # ... nor through a cell the closing filled right next to a thin line of
                # marks (the gap at the objects' feet, below the height band or without
                # depth, where a crease cannot be seen and the pieces would stay joined)
                crease |= cv2.dilate(_thin_marks(crease).view(np.uint8),
                                     _CROSS).view(bool) & comp & ~own
            if crease.any():  # the finer of: steps and creases at once, creases per piece
                kept = kept & ~crease
                kept_pieces = _pieces(kept, own)
                joint = _large_parts(comp, kept, own, cfg, kept_pieces) or [comp]
                parts = [p for part in parts for p in
                         _large_parts(part, part & ~crease, own & part, cfg) or [part]]
                if len(joint) > len(parts):
                    parts = joint
        if cfg.weak_jump_frac > 0 and heights is not None:  # ... nor a weaker one in front
            parts = _front_parts(spans, (x, y, bw, bh), (comp, parts), own, cfg, crease,
                                 heights[y:y + bh, x:x + bw])
        if cfg.small_piece_points > 0 and kept is not comp:
            parts = parts + _small_pieces(kept, own, cfg, kept_pieces)
        for part in parts:
            sel = own & part
            if np.count_nonzero(sel) >= cfg.min_cluster_points:
                clusters.append(index[y:y + bh, x:x + bw][sel])
    return clusters


class _Spans:
    """The 3x3 depth span (:func:`.depth_cloud.depth_span`) of every cell of a cloud's
    grid, computed once (on first use) for all the clusters of the grid."""

    def __init__(self, cloud: DepthCloud) -> None:
        self.z = cloud.z
        self._has: np.ndarray | None = None
        self._span = cloud.span   # the sampling's, when the cloud kept it

    def steps(self, roi: tuple[int, int, int, int], frac: float) -> np.ndarray:
        """Cells of the grid window ``roi`` = ``(x, y, w, h)`` with depth whose 3x3
        neighbourhood spans more than ``frac`` of it."""
        if self._has is None:
            self._has = self.z > 0
            if self._span is None:
                self._span = depth_span(self.z, self._has)
        x, y, w, h = roi
        z = self.z[y:y + h, x:x + w]
        return self._has[y:y + h, x:x + w] & (self._span[y:y + h, x:x + w] > frac * z)


#: :func:`_lower_in_front`: the contact of two pieces is the cells of each within this many
#: grid cells (3x3 dilations) of the other.
CONTACT_CELLS = 2


def _front_parts(spans: _Spans, roi: tuple[int, int, int, int],
                 split: tuple[np.ndarray, list[np.ndarray]], own: np.ndarray,
                 cfg: DepthProposalConfig, crease: np.ndarray | None,
                 heights: np.ndarray) -> list[np.ndarray]:
    """Each of a cluster's parts (``split``: its component and the masks of the grid window
    ``roi`` it was cut into, or the component itself) cut into the pieces that its weaker
    steps (``weak_jump_frac``, on the grid of ``spans``) and ``crease`` cells leave, where
    every two touching pieces have the lower one in front (:func:`_lower_in_front`)."""
    comp, parts = split
    x, y, w, h = roi
    weak = spans.steps(roi, cfg.weak_jump_frac)
    if crease is not None:
        weak = weak | crease
    z = spans.z[y:y + h, x:x + w]
    out = []
    for part in parts:
        cut, mine = part & ~weak, own & part
        pieces = _large_parts(part, cut, mine, cfg,
                              _pieces(cut, mine, comp) if part is comp else None)
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
    near = [cv2.dilate(p.view(np.uint8), SQUARE_3X3, iterations=CONTACT_CELLS) > 0 for p in pieces]
    for i, a in enumerate(pieces):
        for j in range(i + 1, len(pieces)):
            za = z[a & own & near[j] & (z > 0)]
            zb = z[pieces[j] & own & near[i] & (z > 0)]
            if za.size and zb.size and \
                    (tops[i] < tops[j]) != (float(np.median(za)) < float(np.median(zb))):
                return False
    return True


@functools.lru_cache(maxsize=16)
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
    # a cell without a sample is infinitely far: a sum with it is under no limit, and the
    # limit of a cell without one is negative (the test needs all three samples)
    np.copyto(zp, np.float32(np.inf), where=zp <= 0)
    crease = np.zeros(z.shape, bool)
    concave = np.zeros(zp.shape, bool)
    inner = concave[m:m + hh, m:m + ww]
    total = np.empty(z.shape, np.float32)
    beside = np.empty(z.shape, bool)
    for r in radii:
        for dy, dx in ((0, r), (r, 0), (r, r), (r, -r)):
            ia = (slice(m - dy, m - dy + hh), slice(m - dx, m - dx + ww))
            ib = (slice(m + dy, m + dy + hh), slice(m + dx, m + dx + ww))
            np.less(np.add(zp[ia], zp[ib], out=total), limit, out=inner)
            if not inner.any():   # (often: the rest would add nothing)
                continue
            # a crease between two surfaces that are not concave there themselves (the
            # inside of a cup or a bowl is concave all over: no crease): inner > beside
            np.logical_or(concave[ia], concave[ib], out=beside)
            crease |= np.greater(inner, beside, out=beside)
    return crease[y - y0:y - y0 + h, x - x0:x - x0 + w]


def _large_parts(comp: np.ndarray, cut: np.ndarray, own: np.ndarray,
                 cfg: DepthProposalConfig,
                 pieces: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> list[np.ndarray] | None:
    """Masks of the pieces of the grid component ``comp`` when its ``cut`` pixels (``comp``
    less its depth discontinuities) fall apart into two or more pieces that each hold at
    least ``split_min_frac`` of its ``own`` samples or ``split_min_points`` of them (and
    ``min_cluster_points``); each
    large piece grows over the rest of ``comp`` from its interior cells (every cell goes to
    the nearest one).
    ``None`` when ``comp`` stays one cluster. ``pieces``: :func:`_pieces` of ``cut`` and
    ``own`` when already at hand."""
    labels, count = pieces or _pieces(cut, own)
    big = np.flatnonzero(count >= _split_need(own, cfg))
    if len(big) < 2:
        return None
    # seeds: the interior cells of the large pieces (a piece without any is not one)
    lab = labels.astype(np.float32)
    inner = cv2.dilate(lab, SQUARE_3X3) == cv2.erode(lab, SQUARE_3X3)
    is_big = np.zeros(len(count), bool)
    is_big[big] = True
    seed = np.take(is_big, labels) & inner
    ids = np.flatnonzero(np.bincount(labels[seed], minlength=len(count)))
    if len(ids) < 2:
        return None
    # every cell goes to its nearest seed cell's piece (a piece whose interior falls into
    # several blobs keeps all of them)
    piece = nearest_label(labels, seed)
    return [comp & (piece == k) for k in ids]


def _pieces(cut: np.ndarray, own: np.ndarray, whole: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """The 8-connected pieces of the ``cut`` mask (labels, 0 outside) and how many ``own``
    samples each holds (``count[0]`` is 0). With ``whole``, one 8-connected mask holding
    ``cut`` and ``own``: when ``cut`` is all of it, its one piece, without labelling."""
    if whole is not None and not np.greater(whole, cut).any():
        return whole.view(np.uint8), np.array([0, np.count_nonzero(own)], np.int64)
    n, labels = cv2.connectedComponents(cut.view(np.uint8), connectivity=8)
    count = np.bincount(labels[own], minlength=n)
    count[0] = 0
    return labels, count


def _split_need(own: np.ndarray, cfg: DepthProposalConfig) -> float:
    """The samples a piece must hold to split a cluster of ``own`` samples off (see
    ``split_min_frac`` and ``split_min_points``)."""
    return piece_need(int(np.count_nonzero(own)), cfg.split_min_frac,
                      int(cfg.split_min_points), int(cfg.min_cluster_points))


def _small_pieces(cut: np.ndarray, own: np.ndarray, cfg: DepthProposalConfig,
                  pieces: tuple[np.ndarray, np.ndarray] | None = None
                  ) -> list[np.ndarray]:
    """Masks of the pieces of a cluster's ``cut`` mask too small to split it but holding at
    least ``small_piece_points`` of its ``own`` samples (see ``small_piece_points``;
    ``pieces``: as :func:`_large_parts`')."""
    labels, count = pieces or _pieces(cut, own)
    keep = np.flatnonzero((count >= cfg.small_piece_points) & (count < _split_need(own, cfg)))
    return [labels == j for j in keep]
