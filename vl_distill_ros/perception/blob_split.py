"""Cutting a colour blob of touching objects in two at a neck of its outline.

ROS-free, numpy/OpenCV only; used by the colour proposer (:mod:`.proposals`). Objects that
touch give one connected blob of object pixels. Where two of them meet, the blob's outline
has a notch on both sides (two deep convexity defects), the image has an edge between the
notches (the objects' boundary), and the two sides differ in colour. :func:`cut_necks` cuts
a blob along the straight segment between two such notches when all of that holds; one
object with a narrow waist (a spoon's neck, a drill's grip) has the notches and often the
edge, but mostly one colour on both sides, so it stays whole. Two pieces that are both
compact (round or boxy, as two fruits, cans or boxes side by side) are cut whatever their
colours: a tool cut at its neck leaves a long, thin handle.

An object in front of another meets it along its own outline, a curve or a corner, not a
straight segment: when no straight cut is made, the blob is cut along the shortest path
through image edges between two notches (edge pixels away from the blob's outline), under
the same rules for the two pieces, of which the smaller may be small (a ball before a box).

Objects pressed together often leave no notch deep enough (a can against a box, a fruit in
a bowl's curve): :func:`split_cores` finds a blob's thick cores instead (where its distance
to its own outline is at least a fraction of its largest) and, with two or more, floods the
blob from them, and from its outside, over the colour image (a watershed): the line between
two objects follows their colour boundary, and a thin part between them (a tool lying
across) is flooded from its outline and cut off both; the pieces must pass the same
rules. A handle or a fork's tines are thin, so a tool alone gives one core, and a blob
thinner than ``core_min_radius_frac`` of the working image is never split this way.
"""
from __future__ import annotations

from typing import Callable, Protocol

import cv2
import numpy as np

__all__ = ["NeckSettings", "cut_necks", "split_cores"]


class NeckSettings(Protocol):
    """The rules of the cut: the ``neck_*`` fields of the colour proposer's
    :class:`~.proposal_config.ProposalConfig`, which documents them and holds their defaults."""

    neck_depth_frac: float
    neck_edge_support: float
    neck_max_len_frac: float
    neck_min_part_frac: float
    neck_colour_dist: float
    neck_compact_solidity: float
    neck_compact_aspect: float
    neck_path_min_part_frac: float
    core_split_frac: float
    core_min_radius_frac: float


#: Blobs smaller than this (working-image pixels) are never cut.
MIN_BLOB_PX = 160
#: At most this many cuts per blob (three touching objects in a row need two).
MAX_CUTS = 2
#: Candidate segments tried per cut (best edge support first) ...
MAX_TRIES = 3
#: ... between the deepest of at most this many notches (a ragged outline has dozens).
MAX_NOTCHES = 8
#: Edge-path cuts: notch pairs tried (nearest first), the longest path in chord lengths,
#: and how far inside the blob's outline (pixels) the path's edge pixels must lie.
PATH_PAIRS = 3
PATH_WIND = 1.6
PATH_INSET = 2
#: The smaller piece of an edge-path cut must be roughly compact (solidity and aspect, see
#: :func:`_compact`): the object in front is seen whole; a tool's shaft or a bottle's label
#: cut off along its edges is not taken for one.
PATH_SMALL_SOLIDITY = 0.8
PATH_SMALL_ASPECT = 3.0
#: :func:`split_cores`: a core holding less than this fraction of a blob's core pixels is
#: no object's (a bump of the outline).
CORE_MIN_SHARE = 0.1
_K3 = np.ones((3, 3), np.uint8)
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def cut_necks(mask: np.ndarray, edges: np.ndarray, lab: np.ndarray, cut: NeckSettings,
              components: tuple[int, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """``mask`` (uint8 0/1 blobs) with each blob of touching objects cut at its necks.

    Args:
        mask: the colour proposer's blob mask (working image).
        edges: its Canny edges (same size, bool).
        lab: the working image in 8-bit Lab (same size, uint8).
        cut: the rules (:class:`NeckSettings`; a ``ProposalConfig``).
        components: ``(count, labels, stats)`` of ``mask``'s 8-connected components, if
            the caller has them.

    Returns:
        A copy of ``mask`` with the cut segments (2 pixels wide) cleared; ``mask`` itself
        (the same object) when nothing is cut.
    """
    if cut.neck_depth_frac <= 0:
        return mask
    if components is None:
        components = cv2.connectedComponentsWithStats(mask, connectivity=8)[:3]
    near_edge = cv2.dilate(edges.view(np.uint8), _K3) > 0

    def cut_blob(own: np.ndarray, window: tuple[slice, slice], area: int) -> np.ndarray | None:
        blob, changed = own.view(np.uint8), False
        for _ in range(MAX_CUTS):
            piece = _best_cut(blob, near_edge[window], lab[window], area, cut)
            if piece is None:
                break
            blob, changed = piece, True
        return blob if changed else None

    return _cut_each_blob(mask, components, cut_blob)


def _cut_each_blob(mask: np.ndarray, components: tuple[int, np.ndarray, np.ndarray],
                   cut_blob: Callable[[np.ndarray, tuple[slice, slice], int],
                                      np.ndarray | None]) -> np.ndarray:
    """``mask`` with each blob of :data:`MIN_BLOB_PX` or more (``components``: ``(count,
    labels, stats)`` of its 8-connected components) replaced by ``cut_blob(own, window,
    area)``: the blob (bool, over its bounding box ``window`` of rows and columns) cut, as
    uint8, or ``None`` to leave it whole. A copy when a blob was cut, else ``mask`` itself."""
    n, labels, stats = components
    out = mask
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area < MIN_BLOB_PX:
            continue
        window = (slice(y, y + h), slice(x, x + w))
        own = labels[window] == i
        piece = cut_blob(own, window, area)
        if piece is not None:
            out = out.copy() if out is mask else out
            out[window][own] = piece[own]
    return out


def _notches(blob: np.ndarray, depth_frac: float) -> tuple[list[tuple[int, int]], float]:
    """Deepest points of the convexity defects of ``blob``'s largest outline that are at
    least ``depth_frac`` of its size deep, and that size (square root of its area)."""
    contours, _ = cv2.findContours(blob, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return [], 0.0
    contour = max(contours, key=cv2.contourArea)
    size = float(np.sqrt(max(cv2.contourArea(contour), 1.0)))
    if len(contour) < 8:
        return [], size
    try:
        defects = cv2.convexityDefects(contour, cv2.convexHull(contour, returnPoints=False))
    except cv2.error:  # a self-touching outline
        return [], size
    if defects is None:
        return [], size
    defects = defects.reshape(-1, 4)
    defects = defects[defects[:, 3] / 256.0 >= depth_frac * size]
    defects = defects[np.argsort(-defects[:, 3], kind="stable")[:MAX_NOTCHES]]
    return [(int(contour[d[2]][0][0]), int(contour[d[2]][0][1])) for d in defects], size


def _segments(blob: np.ndarray, near_edge: np.ndarray, notches: list[tuple[int, int]],
              size: float, cut: NeckSettings
              ) -> list[tuple[float, tuple[int, int], tuple[int, int]]]:
    """Candidate cuts ``(score, notch, notch)``, best first: segments between two of the
    blob's ``notches``, short enough, inside the blob and supported by edges (score: the
    support less the length over the blob's ``size``)."""
    h, w = blob.shape
    found = []
    for a, p in enumerate(notches):
        for q in notches[a + 1:]:
            length = float(np.hypot(p[0] - q[0], p[1] - q[1]))
            if length < 2 or length > cut.neck_max_len_frac * size:
                continue
            m = max(int(length), 2)
            xs = np.clip(np.round(np.linspace(p[0], q[0], m)).astype(int), 0, w - 1)
            ys = np.clip(np.round(np.linspace(p[1], q[1], m)).astype(int), 0, h - 1)
            if np.count_nonzero(blob[ys, xs]) < 0.8 * m:
                continue
            support = float(np.count_nonzero(near_edge[ys, xs])) / m
            if support >= cut.neck_edge_support:
                found.append((support - length / size, p, q))
    found.sort(key=lambda c: c[0], reverse=True)
    return found


def _compact(piece: np.ndarray, solidity: float, aspect: float) -> bool:
    """Whether a piece (bool mask) is round or boxy: its outline's solidity (area over
    convex hull area) is at least ``solidity`` and its minimum-area rectangle at most
    ``aspect`` times as long as wide."""
    contours, _ = cv2.findContours(piece.view(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return False
    contour = max(contours, key=cv2.contourArea)
    hull = cv2.contourArea(cv2.convexHull(contour))
    (_, _), (w, h), _ = cv2.minAreaRect(contour)
    return (hull > 0 and cv2.contourArea(contour) >= solidity * hull
            and max(w, h) <= aspect * max(min(w, h), 1.0))


def _best_cut(blob: np.ndarray, near_edge: np.ndarray, lab: np.ndarray, area: int,
              cut: NeckSettings) -> np.ndarray | None:
    """``blob`` cut along its best candidate segment, or else along an edge path, whose two
    largest pieces pass :func:`_two_pieces`; ``None`` when there is none."""
    notches, size = _notches(blob, cut.neck_depth_frac)
    if len(notches) < 2:
        return None
    for _, p, q in _segments(blob, near_edge, notches, size, cut)[:MAX_TRIES]:
        trial = blob.copy()
        cv2.line(trial, p, q, 0, 2)
        if _two_pieces(trial, lab, area, cut.neck_min_part_frac, cut):
            return trial
    if cut.neck_path_min_part_frac <= 0:
        return None
    return _path_cut(blob, near_edge, lab, area, notches, size, cut)


def _two_pieces(trial: np.ndarray, lab: np.ndarray, area: int, min_frac: float,
                cut: NeckSettings, small_compact: bool = False) -> bool:
    """Whether a cut blob's two largest pieces each hold ``min_frac`` of its ``area`` and
    differ in colour or are both compact; with ``small_compact`` the smaller one must also
    be roughly compact (:data:`PATH_SMALL_SOLIDITY`, :data:`PATH_SMALL_ASPECT`)."""
    k, labels, stats, _ = cv2.connectedComponentsWithStats(trial, connectivity=4)
    big = sorted((j for j in range(1, k) if stats[j, cv2.CC_STAT_AREA] >= min_frac * area),
                 key=lambda j: -int(stats[j, cv2.CC_STAT_AREA]))
    if len(big) < 2:
        return False
    pieces = [labels == j for j in big[:2]]
    if small_compact and not _compact(pieces[1], PATH_SMALL_SOLIDITY, PATH_SMALL_ASPECT):
        return False
    means = [np.array(cv2.mean(lab, p.view(np.uint8))[:3]) for p in pieces]
    if float(np.linalg.norm(means[0] - means[1])) >= cut.neck_colour_dist:
        return True
    return cut.neck_compact_solidity > 0 and all(
        _compact(p, cut.neck_compact_solidity, cut.neck_compact_aspect) for p in pieces)


def _path_cut(blob: np.ndarray, near_edge: np.ndarray, lab: np.ndarray, area: int,
              notches: list[tuple[int, int]], size: float, cut: NeckSettings
              ) -> np.ndarray | None:
    """``blob`` cut along the shortest path through edge pixels between two notches (the
    nearest pairs first) whose pieces pass :func:`_two_pieces`, or ``None``."""
    inner = cv2.erode(blob, _K3, iterations=PATH_INSET)
    passable = (near_edge & (inner > 0)).view(np.uint8)
    ends = passable.copy()
    for end in notches:
        cv2.circle(ends, end, 3, 1, -1)
    _, linked = cv2.connectedComponents(ends, connectivity=8)  # no path between parts
    pairs = sorted((float(np.hypot(p[0] - q[0], p[1] - q[1])), p, q)
                   for a, p in enumerate(notches) for q in notches[a + 1:]
                   if linked[p[1], p[0]] == linked[q[1], q[0]])
    pairs = [t for t in pairs if 2.0 <= t[0] <= cut.neck_max_len_frac * size]
    for chord, p, q in pairs[:PATH_PAIRS]:
        path = _edge_path(passable, p, q, int(PATH_WIND * chord) + 2)
        if path is None:
            continue
        line = np.zeros_like(blob)
        line[path[:, 1], path[:, 0]] = 1
        trial = blob.copy()
        trial[cv2.dilate(line, _CROSS) > 0] = 0
        if _two_pieces(trial, lab, area, cut.neck_path_min_part_frac, cut, small_compact=True):
            return trial
    return None


def _edge_path(passable: np.ndarray, p: tuple[int, int], q: tuple[int, int],
               max_steps: int) -> np.ndarray | None:
    """The shortest 8-connected path from ``p`` to ``q`` (``(x, y)``) through the
    ``passable`` pixels (and 3 pixels around each end), as ``(N, 2)`` ``(x, y)`` rows, or
    ``None`` when it is longer than ``max_steps``. Searched in the window that a path of
    that length can reach (breadth first, one dilation per step)."""
    h, w = passable.shape
    reach = (max_steps + 1) // 2 + 1
    x0, y0 = max(min(p[0], q[0]) - reach, 0), max(min(p[1], q[1]) - reach, 0)
    x1, y1 = min(max(p[0], q[0]) + reach + 1, w), min(max(p[1], q[1]) + reach + 1, h)
    ok = passable[y0:y1, x0:x1].copy()
    (px, py), (qx, qy) = (p[0] - x0, p[1] - y0), (q[0] - x0, q[1] - y0)
    for end in ((px, py), (qx, qy)):
        cv2.circle(ok, end, 3, 1, -1)
    dist = np.full(ok.shape, -1, np.int32)
    dist[py, px] = 0
    front = np.zeros_like(ok)
    front[py, px] = 1
    for step in range(1, max_steps + 1):
        grown = (cv2.dilate(front, _K3) > 0) & (ok > 0) & (dist < 0)
        if not grown.any():
            return None
        dist[grown] = step
        if dist[qy, qx] >= 0:
            break
        front = grown.view(np.uint8)
    else:
        return None
    path, (x, y) = [(qx, qy)], (qx, qy)
    for d in range(int(dist[qy, qx]) - 1, -1, -1):   # back along decreasing distance
        ys, xs = np.nonzero(dist[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] == d)
        x, y = int(xs[0]) + max(x - 1, 0), int(ys[0]) + max(y - 1, 0)
        path.append((x, y))
    return np.array(path, np.int64) + (x0, y0)


def split_cores(mask: np.ndarray, lab: np.ndarray, cut: NeckSettings,
                components: tuple[int, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """``mask`` (uint8 0/1 blobs) with each blob of two or more thick cores cut between them.

    A blob's cores are its pixels at least ``core_split_frac`` of its largest distance to
    its outline from it, each holding :data:`CORE_MIN_SHARE` of them; blobs whose largest
    distance is under ``core_min_radius_frac`` of the working image's shorter side, or
    smaller than :data:`MIN_BLOB_PX`, are left whole. The cores and the blob's outside seed
    a watershed over ``lab`` (the working image in 8-bit Lab); the cut (its lines, 2 pixels
    wide) is kept when the two largest pieces pass the rules of :func:`cut_necks`
    (``neck_min_part_frac``, ``neck_colour_dist`` or both compact). ``components``:
    ``(count, labels, stats)`` of ``mask``'s 8-connected components, if the caller has them.

    Returns:
        A copy of ``mask`` with the cuts cleared; ``mask`` itself when nothing is cut.
    """
    if cut.core_split_frac <= 0:
        return mask
    if components is None:
        components = cv2.connectedComponentsWithStats(mask, connectivity=8)[:3]
    min_radius = cut.core_min_radius_frac * min(mask.shape)
    return _cut_each_blob(
        mask, components,
        lambda own, window, area: _core_cut(own, lab[window], area, min_radius, cut))


def _core_cut(own: np.ndarray, lab: np.ndarray, area: int, min_radius: float,
              cut: NeckSettings) -> np.ndarray | None:
    """The blob ``own`` (bool, its bounding box) cut between its cores over ``lab``, or
    ``None`` (one core, too thin, or pieces that fail :func:`_two_pieces`)."""
    dist = cv2.distanceTransform(np.pad(own.view(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    peak = float(dist.max())
    if peak < max(min_radius, 1.0):
        return None
    core = (dist >= cut.core_split_frac * peak).view(np.uint8)
    k, core_labels, core_stats, _ = cv2.connectedComponentsWithStats(core, connectivity=8)
    seeds = [j for j in range(1, k)
             if core_stats[j, cv2.CC_STAT_AREA] >= CORE_MIN_SHARE * np.count_nonzero(core)]
    if len(seeds) < 2:
        return None
    # the outside floods too: a part thinner than the cores (a tool lying between two
    # objects) is reached from its outline first and cut off both of them
    markers = np.full(own.shape, len(seeds) + 1, np.int32)
    markers[own] = 0
    for m, j in enumerate(seeds, 1):
        markers[core_labels == j] = m
    flooded = cv2.watershed(np.ascontiguousarray(lab), markers)
    lines = ((flooded == -1) & own).view(np.uint8)
    trial = own.view(np.uint8).copy()
    trial[cv2.dilate(lines, np.ones((2, 2), np.uint8)) > 0] = 0
    return trial if _two_pieces(trial, lab, area, cut.neck_min_part_frac, cut) else None
