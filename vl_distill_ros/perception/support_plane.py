"""The support plane of a tabletop depth cloud and the depth noise measured on it (ROS-free).

:func:`fit_plane_ransac` finds the dominant plane of the cloud (RANSAC, then least squares
on the inliers); :func:`raised_plane` finds a table's plane above the floor when more floor
than table is in view; :class:`DepthNoiseEstimate` measures a frame's depth noise on the
samples just below the plane, in units of a camera's noise curve (:func:`noise_curve`).
The depth proposer (:mod:`.depth_proposals`) uses them in its second step; their settings
are fields of its :class:`~.depth_config.DepthProposalConfig`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .depth_cloud import SQUARE_3X3, DepthCloud
from .depth_config import DepthProposalConfig


__all__ = ["fit_plane_ransac", "raised_plane", "DepthNoiseEstimate", "noise_curve",
           "NOISE_CURVE", "RAISED_PLANE_MAX_DEG"]

#: Shape of a depth camera's axial noise over the depth ``z`` (m): ``a + b z^2`` (about a
#: RealSense D435's); :class:`DepthNoiseEstimate` measures each frame's multiple of it.
NOISE_CURVE = (0.0012, 0.0019)
#: The noise is measured on samples at most this many curve units below the plane (not
#: the floor beyond the table's edge) ...
NOISE_BAND = 12.0
#: ... when there are at least this many (else it is not measured: no noise filter), and
#: per depth slice of :data:`NOISE_SLICE_M` holding at least half as many, among every
#: :data:`NOISE_STRIDE`-th sample.
MIN_NOISE_SAMPLES = 500
NOISE_SLICE_M = 0.25
NOISE_STRIDE = 4
#: RANSAC scores its hypotheses on at most this many point-plane distances at a time
#: (float32: 64 MB, plus 16 MB of flags), whatever ``ransac_iterations`` x
#: ``ransac_samples`` (:func:`fit_plane_ransac`).
RANSAC_CHUNK_VALUES = 1 << 24


def noise_curve(z: np.ndarray | float) -> np.ndarray | float:
    """:data:`NOISE_CURVE` at depth ``z`` (m)."""
    return NOISE_CURVE[0] + NOISE_CURVE[1] * z * z


@dataclass(frozen=True)
class DepthNoiseEstimate:
    """One frame's depth noise, measured on the samples just below the support plane:
    nothing stands below a table, so what lies there is the noise of its surface (half of
    it). Its robust standard deviation (median absolute value / 0.6745) in units of
    :func:`noise_curve`, over the whole frame (``scale``; 0: too few samples to tell) and
    per depth slice of :data:`NOISE_SLICE_M` (``slices``, ``NaN`` where too few): the
    curve is one camera's shape, the slices follow the camera at hand."""

    scale: float = 0.0
    slices: tuple[float, ...] = ()

    @classmethod
    def measure(cls, height: np.ndarray, z: np.ndarray) -> "DepthNoiseEstimate":
        """From the samples' heights above the plane and depths (m); every
        :data:`NOISE_STRIDE`-th sample is enough."""
        # contiguous copies first (z is a column of the cloud): each pass is then faster
        h = np.ascontiguousarray(np.asarray(height, np.float32)[::NOISE_STRIDE])
        z = np.ascontiguousarray(np.asarray(z, np.float32)[::NOISE_STRIDE])
        below = h < 0   # np.compress: boolean indexing's elements, 2-3x faster
        h, z = np.compress(below, h), np.compress(below, z)
        r = h / -noise_curve(z)
        keep = r < NOISE_BAND
        if np.count_nonzero(keep) < MIN_NOISE_SAMPLES:
            return cls()
        r, idx = np.compress(keep, r), (np.compress(keep, z) * (1.0 / NOISE_SLICE_M)).astype(
            np.int64)
        slices = [math.nan] * (int(idx.max()) + 1)
        if idx.min() >= 0:   # the slices with samples, in order (np.unique's)
            counts = np.bincount(idx)
            present = np.flatnonzero(counts)
            counts = counts[present]
        else:
            present, counts = np.unique(idx, return_counts=True)
        for i in present[counts >= MIN_NOISE_SAMPLES // 2]:
            slices[int(i)] = _median(np.compress(idx == i, r)) / 0.6745
        return cls(_median(r) / 0.6745, tuple(slices))

    def sigma_bound(self, z: float) -> float:
        """At least :meth:`sigma` at any depth up to ``z``: the largest scale (the frame's
        or a slice's) times the curve at ``z``."""
        return max([self.scale, *(v for v in self.slices if not math.isnan(v))]) * float(
            noise_curve(z))

    def sigma(self, z: float) -> float:
        """The standard deviation (m) at depth ``z``: its slice's, else the frame's."""
        i = int(z / NOISE_SLICE_M)
        scale = self.slices[i] if 0 <= i < len(self.slices) and not math.isnan(
            self.slices[i]) else self.scale
        return scale * float(noise_curve(z))


def _median(values: np.ndarray) -> float:
    """``np.median`` of a non-empty 1-D array without NaN, from one partition (with an even
    count the other middle value is the largest below it): 3-4x faster."""
    k = values.size // 2
    part = np.partition(values, k)
    if values.size % 2:
        return float(part[k])
    return float((part[:k].max() + part[k]) / 2)


def fit_plane_ransac(points: np.ndarray, cfg: DepthProposalConfig,
                     rng: np.random.Generator) -> tuple[np.ndarray, float, float] | None:
    """Dominant plane of ``(N, 3)`` camera-frame points: ``(unit normal towards the camera,
    offset d, inlier fraction)`` with ``n . p + d`` the signed distance, or ``None``.

    Hypotheses are scored on ``ransac_samples`` random points, the winner is refitted by
    least squares (twice) on the inliers among at most ``8 * ransac_samples`` points."""
    n_pts = len(points)
    if n_pts < 3:
        return None
    pts = np.asarray(points, np.float32)
    # np.take / np.compress: the rows that fancy / boolean indexing would give, 3-4x faster
    sub = np.take(pts, rng.integers(0, n_pts, size=min(n_pts, int(cfg.ransac_samples))), 0)
    fit = np.take(pts, rng.integers(0, n_pts, size=min(n_pts, 8 * int(cfg.ransac_samples))),
                  0) if n_pts > 8 * int(cfg.ransac_samples) else pts
    tri = np.take(pts, rng.integers(0, n_pts, size=(int(cfg.ransac_iterations), 3)), 0)
    normals = _cross_rows(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(normals, axis=1)
    ok = norm > 1e-9
    if not ok.any():
        return None
    normals = normals[ok] / norm[ok, None]
    offsets = -np.einsum("ij,ij->i", normals, tri[ok, 0])
    thr_sub = cfg.plane_threshold_m + cfg.plane_threshold_quadratic * sub[:, 2] ** 2
    best = int(np.argmax(_ransac_scores(sub, thr_sub, normals, offsets)))
    n, d = normals[best].astype(np.float64), float(offsets[best])
    thr = cfg.plane_threshold_m + cfg.plane_threshold_quadratic * fit[:, 2] ** 2
    # float64 once (each product with the float64 normal casts it), one row per coordinate:
    # n @ (3, N) is 10x the speed of (N, 3) @ n
    fit = np.ascontiguousarray(fit.T, np.float64)
    for _ in range(2):  # least-squares refits on the inliers (smallest-eigenvalue normal)
        inliers = np.abs(n @ fit + d) < thr
        if np.count_nonzero(inliers) < 3:
            return None
        n, d = _least_squares_plane(np.compress(inliers, fit, axis=1))
    if d < 0:  # the camera (origin) on the positive side: heights above the table > 0
        n, d = -n, -d
    frac = float(np.count_nonzero(np.abs(n @ fit + d) < thr)) / fit.shape[1]
    return n, d, frac


def _cross_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.cross`` of the rows of two ``(N, 3)`` arrays, its products and differences in
    its order (a fifth of its time on RANSAC's few rows)."""
    out = np.empty(a.shape, np.result_type(a, b))
    out[:, 0] = a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1]
    out[:, 1] = a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2]
    out[:, 2] = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    return out


def _ransac_scores(sub: np.ndarray, thr_sub: np.ndarray, normals: np.ndarray,
                   offsets: np.ndarray) -> np.ndarray:
    """Inliers of each hypothesis plane (``normals[k] . p + offsets[k]``) among the points
    ``sub`` (within ``thr_sub`` of it).

    At most :data:`RANSAC_CHUNK_VALUES` distances (or 1024 points' to every hypothesis)
    are held at a time, whatever ``ransac_iterations`` x ``ransac_samples``: the points are
    taken in chunks of a multiple of 1024 rows (OpenBLAS gave the one pass's distances bit
    for bit in every shape tried; the counts add up exactly). Up to that bound, as with
    the default settings (80 x 2000), it is the one pass of before."""
    rows = len(sub)
    if rows * len(normals) > RANSAC_CHUNK_VALUES:
        rows = max(1024, RANSAC_CHUNK_VALUES // len(normals) // 1024 * 1024)
    scores = np.zeros(len(normals), np.int64)
    for start in range(0, len(sub), rows):
        dist = sub[start:start + rows] @ normals.T
        dist += offsets
        np.abs(dist, out=dist)
        inside = np.less(dist, thr_sub[start:start + rows, None]).view(np.uint8)
        # a count per column as uint8 sums of at most 255 rows (no cast, no overflow):
        # 5x count_nonzero(axis=0)'s speed
        for first in range(0, len(inside), 255):
            scores += np.add.reduce(inside[first:first + 255], axis=0, dtype=np.uint8)
    return scores


def _least_squares_plane(sel: np.ndarray) -> tuple[np.ndarray, float]:
    """Unit normal (the covariance's smallest eigenvector) and offset of the plane through
    the float64 points ``sel``, given as ``(3, N)`` rows of coordinates (contiguous rows:
    the products below are then 2-4x faster than on ``(N, 3)`` points)."""
    centre = sel.sum(axis=1) / sel.shape[1]
    dev = sel - centre[:, None]
    cov = np.empty((3, 3))
    prod = np.empty(sel.shape[1])
    for i in range(3):   # six sums of products of contiguous rows, without BLAS: a BLAS
        # call threaded over long rows waits for its threads on a loaded host
        for j in range(i, 3):
            cov[i, j] = cov[j, i] = np.add.reduce(np.multiply(dev[i], dev[j], out=prod))
    n = np.linalg.eigh(cov)[1][:, 0]
    return n, -float(n @ centre)


#: The most a raised plane's normal may turn from the dominant plane's (degrees).
RAISED_PLANE_MAX_DEG = 10.0
#: Height bins (m) the samples above the dominant plane are counted in; a plane is looked
#: for in the two adjacent bins that hold the most.
RAISED_PLANE_BIN_M = 0.01


def raised_plane(points: np.ndarray, plane: tuple[np.ndarray, float],
                 cfg: DepthProposalConfig, cloud: DepthCloud | None = None
                 ) -> tuple[np.ndarray, float] | None:
    """A support plane above the dominant ``plane`` of ``points``: ``(unit normal towards
    the camera, offset)``, or ``None``.

    The samples (every k-th, at most ``8 * ransac_samples``) at least
    ``raised_plane_min_m`` above ``plane`` are counted in height bins;
    where two adjacent bins hold ``raised_plane_frac`` of all samples, a plane is refitted
    by least squares on them (then on its inliers, ``plane_threshold_*``), and taken when
    it stays within :data:`RAISED_PLANE_MAX_DEG` of parallel, below the camera, holds
    that fraction, and has objects on it: at least as many samples within the height band
    (``max_height_m``, above twice the inlier distance) above it as there are above the
    dominant plane and under it (objects on the floor beside a table keep the floor). The
    floor is the dominant plane when a small table fills less of the view; the table is
    still the flat, level surface the objects stand on. With the ``cloud`` (its sample
    grid; ``points`` are its points), the samples are counted on the whole grid, and a
    group of them (8-connected on the grid) that runs into something taller than the band
    along ``taller_contact_cells`` cells or more is not counted on either plane, as the
    depth proposer drops such a cluster: the low part of a cabinet, a box or a wall beside
    the table, or the table's own sides, stand in the band above the floor but are no
    objects on it.
    """
    if float(cfg.raised_plane_frac) <= 0 or len(points) < 3:
        return None
    # every k-th sample, at most 8 * ransac_samples of them (as the plane's refit)
    # (3, N) rows of coordinates: see _least_squares_plane
    pts = np.ascontiguousarray(
        points[::-(-len(points) // (8 * int(cfg.ransac_samples)))].T, np.float64)
    need = float(cfg.raised_plane_frac) * pts.shape[1]
    normal = np.asarray(plane[0], np.float64)
    above = normal @ pts + float(plane[1]) - float(cfg.raised_plane_min_m)
    up = above >= 0
    if np.count_nonzero(up) < need:
        return None
    counts = np.bincount((above[up] / RAISED_PLANE_BIN_M).astype(np.int64))
    pairs = counts[:-1] + counts[1:] if len(counts) > 1 else counts
    peak = int(np.argmax(pairs))
    if pairs[peak] < need:
        return None
    sel = up & (np.abs(above - (peak + 1) * RAISED_PLANE_BIN_M) <= 1.5 * RAISED_PLANE_BIN_M)
    thr = cfg.plane_threshold_m + cfg.plane_threshold_quadratic * pts[2] ** 2
    for _ in range(2):  # least squares on the band, then on the refitted plane's inliers
        if np.count_nonzero(sel) < max(need, 3):
            return None
        n, d = _least_squares_plane(np.compress(sel, pts, axis=1))
        n, d = (n, d) if n @ normal >= 0 else (-n, -d)
        high = n @ pts + d
        sel = np.abs(high) < thr
    if np.count_nonzero(sel) < need or d <= 0 or \
            n @ normal < math.cos(math.radians(RAISED_PLANE_MAX_DEG)):
        return None
    # the support is the plane with the objects: within the height band above the raised
    # plane, not fewer samples than above the dominant one (and under the raised one)
    if cloud is not None:
        every = np.ascontiguousarray(cloud.points.T, np.float64)
        thr = cfg.plane_threshold_m + cfg.plane_threshold_quadratic * every[2] ** 2
        high, low = n @ every + d, normal @ every + float(plane[1])
        on_raised = _standing(cloud, high, 2 * thr, cfg)
        on_dominant = _standing(cloud, low, 2 * thr, cfg, under=high < -2 * thr)
        return (n, d) if on_raised >= on_dominant else None
    low, top = above + float(cfg.raised_plane_min_m), float(cfg.max_height_m)
    on_raised = np.count_nonzero((high > 2 * thr) & (high < top))
    on_dominant = np.count_nonzero((low > 2 * thr) & (low < top) & (high < -2 * thr))
    return (n, d) if on_raised >= on_dominant else None


def _standing(cloud: DepthCloud, height: np.ndarray, low: np.ndarray,
              cfg: DepthProposalConfig, under: np.ndarray | None = None) -> int:
    """How many samples of ``cloud`` stand in the height band above a plane (``height``
    above it per sample, over ``low`` and under ``max_height_m``; among ``under`` only),
    leaving out each group of them (8-connected on the grid) that touches a sample above
    the band in ``taller_contact_cells`` cells or more (:func:`raised_plane`)."""
    band = (height > low) & (height < cfg.max_height_m)
    if under is not None:
        band &= under
    grid = cloud.scatter(band, False, bool)
    if int(cfg.taller_contact_cells) > 0:
        tall = cloud.scatter(height >= cfg.max_height_m, False, bool)
        touch = cv2.dilate(tall.view(np.uint8), SQUARE_3X3) > 0
        count, labels = cv2.connectedComponents(grid.view(np.uint8), connectivity=8)
        contacts = np.bincount(labels[grid & touch], minlength=count)
        grid &= contacts[labels] < int(cfg.taller_contact_cells)
    return int(np.count_nonzero(grid))
