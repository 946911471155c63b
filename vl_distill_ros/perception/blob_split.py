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
"""
from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

__all__ = ["NeckSettings", "cut_necks"]


class NeckSettings(Protocol):
    """The rules of the cut: the ``neck_*`` fields of the colour proposer's
    :class:`~.proposals.ProposalConfig`, which documents them and holds their defaults."""

    neck_depth_frac: float
    neck_edge_support: float
    neck_max_len_frac: float
    neck_min_part_frac: float
    neck_colour_dist: float
    neck_compact_solidity: float
    neck_compact_aspect: float


#: Blobs smaller than this (working-image pixels) are never cut.
MIN_BLOB_PX = 160
#: At most this many cuts per blob (three touching objects in a row need two).
MAX_CUTS = 2
#: Candidate segments tried per cut (best edge support first) ...
MAX_TRIES = 3
#: ... between the deepest of at most this many notches (a ragged outline has dozens).
MAX_NOTCHES = 8


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
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    else:
        n, labels, stats = components
    near_edge = cv2.dilate(edges.view(np.uint8), np.ones((3, 3), np.uint8)) > 0
    out = mask
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area < MIN_BLOB_PX:
            continue
        own = labels[y:y + h, x:x + w] == i
        blob, changed = own.view(np.uint8), False
        for _ in range(MAX_CUTS):
            piece = _best_cut(blob, near_edge[y:y + h, x:x + w], lab[y:y + h, x:x + w],
                              area, cut)
            if piece is None:
                break
            blob, changed = piece, True
        if changed:
            out = out.copy() if out is mask else out
            out[y:y + h, x:x + w][own] = blob[own]
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


def _segments(blob: np.ndarray, near_edge: np.ndarray, cut: NeckSettings
              ) -> list[tuple[float, tuple[int, int], tuple[int, int]]]:
    """Candidate cuts ``(score, notch, notch)``, best first: segments between two notches,
    short enough, inside the blob and supported by edges (score: the support less the
    length over the blob's size)."""
    notches, size = _notches(blob, cut.neck_depth_frac)
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


def _compact(piece: np.ndarray, cut: NeckSettings) -> bool:
    """Whether a piece (bool mask) is round or boxy: its outline's solidity and the aspect
    of its minimum-area rectangle (see :class:`NeckSettings`)."""
    contours, _ = cv2.findContours(piece.view(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return False
    contour = max(contours, key=cv2.contourArea)
    hull = cv2.contourArea(cv2.convexHull(contour))
    (_, _), (w, h), _ = cv2.minAreaRect(contour)
    return (hull > 0 and cv2.contourArea(contour) >= cut.neck_compact_solidity * hull
            and max(w, h) <= cut.neck_compact_aspect * max(min(w, h), 1.0))


def _best_cut(blob: np.ndarray, near_edge: np.ndarray, lab: np.ndarray, area: int,
              cut: NeckSettings) -> np.ndarray | None:
    """``blob`` cut along its best candidate segment whose two largest pieces are large
    enough and differ in colour or are both compact, or ``None``."""
    for _, p, q in _segments(blob, near_edge, cut)[:MAX_TRIES]:
        trial = blob.copy()
        cv2.line(trial, p, q, 0, 2)
        k, labels, stats, _ = cv2.connectedComponentsWithStats(trial, connectivity=4)
        big = sorted((j for j in range(1, k) if stats[j, cv2.CC_STAT_AREA]
                      >= cut.neck_min_part_frac * area),
                     key=lambda j: -int(stats[j, cv2.CC_STAT_AREA]))
        if len(big) < 2:
            continue
        pieces = [labels == j for j in big[:2]]
        means = [np.array(cv2.mean(lab, p.view(np.uint8))[:3]) for p in pieces]
        if float(np.linalg.norm(means[0] - means[1])) >= cut.neck_colour_dist:
            return trial
        if cut.neck_compact_solidity > 0 and all(_compact(p, cut) for p in pieces):
            return trial
    return None
