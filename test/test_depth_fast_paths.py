"""The depth proposer's faster paths give what the paths they replaced gave.

Session 87 made the depth proposer cheaper per frame: the support plane's least-squares
refits on ``(3, N)`` rows of coordinates (a BLAS product 10x faster than on ``(N, 3)``
points; the plane may differ in its last bits, the float32 heights of the samples do not),
the colour edges of a crease asked for only when its closing fills a cell, the support
surface's pieces labelled without connectedComponentsWithStats' statistics, the foreground
edges of the registration check found once per pair of neighbours and the depth range test
without an ``np.isfinite`` pass. Each is checked here against the former code (kept here as
the reference) on noisy rendered depth or random grids.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from helpers import ransac_draws
from test_depth_proposals_identical import K, scene
from vl_distill_ros.perception import depth_clusters, depth_registration, support_region
from vl_distill_ros.perception import support_plane
from vl_distill_ros.perception.depth_cloud import _in_range, depth_cloud
from vl_distill_ros.perception.depth_config import DepthProposalConfig
from vl_distill_ros.perception.support_plane import fit_plane_ransac


# ---------------------------------------------------------------------------------------
# the former code (reference)
# ---------------------------------------------------------------------------------------
def former_refit(points: np.ndarray, cfg: DepthProposalConfig, seed: int
                 ) -> tuple[np.ndarray, float, float]:
    """fit_plane_ransac as it was: the same draws and hypotheses, the winner refitted twice
    on ``(N, 3)`` float64 points (a BLAS product for the centre and the covariance)."""
    rng = np.random.default_rng(seed)
    sub, fit, normals, offsets = ransac_draws(points, int(cfg.ransac_samples),
                                              int(cfg.ransac_iterations), rng,
                                              cross=support_plane._cross_rows)
    thr_sub = cfg.plane_threshold_m + cfg.plane_threshold_quadratic * sub[:, 2] ** 2
    best = int(np.argmax(support_plane._ransac_scores(sub, thr_sub, normals, offsets)))
    n, d = normals[best].astype(np.float64), float(offsets[best])
    thr = cfg.plane_threshold_m + cfg.plane_threshold_quadratic * fit[:, 2] ** 2
    fit = fit.astype(np.float64)
    for _ in range(2):
        sel = np.compress(np.abs(fit @ n + d) < thr, fit, axis=0)
        centre = np.ones(len(sel)) @ sel / len(sel)
        dev = sel - centre
        n = np.linalg.eigh(dev.T @ dev)[1][:, 0]
        d = -float(n @ centre)
    if d < 0:
        n, d = -n, -d
    return n, d, float(np.count_nonzero(np.abs(fit @ n + d) < thr)) / len(fit)


def former_foreground_edges(z: np.ndarray) -> tuple[np.ndarray, ...]:
    """depth_registration._foreground_edges as it was (each direction on its own)."""
    h, w = z.shape
    found = []
    for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        here = z[max(-dr, 0):h - max(dr, 0), max(-dc, 0):w - max(dc, 0)]
        there = z[max(dr, 0):h - max(-dr, 0), max(dc, 0):w - max(-dc, 0)]
        r, c = np.nonzero((here > 0) & (there > 0) &
                          (there - here > depth_registration.FATTENING_STEP_M))
        found.append((r + max(-dr, 0), c + max(-dc, 0), np.full(r.size, -dr),
                      np.full(r.size, -dc)))
    return tuple(np.concatenate(parts) for parts in zip(*found))


def former_surface_cells(mask: np.ndarray, min_frac: float) -> list[np.ndarray]:
    """support_region's contour cells as they were found (connectedComponentsWithStats, each
    piece cut out by its bounding box)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return []
    areas = stats[1:, cv2.CC_STAT_AREA]
    cells = []
    for label in (1 + np.flatnonzero(areas >= min_frac * areas.sum())).tolist():
        x, y, w, h = (int(v) for v in stats[label, :4])
        piece = (labels[y:y + h, x:x + w] == label).view(np.uint8)
        contours, _ = cv2.findContours(piece, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                       offset=(x, y))
        cells += [c.reshape(-1, 2) for c in contours]
    return cells


# ---------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_plane_refit_on_coordinate_rows_matches_the_former_refit(seed: int) -> None:
    cfg = DepthProposalConfig()
    cloud = depth_cloud(scene(seed), K, cfg)
    n, d, frac = fit_plane_ransac(cloud.points, cfg, np.random.default_rng(seed))
    n0, d0, frac0 = former_refit(cloud.points, cfg, seed)
    assert np.abs(n - n0).max() < 1e-9 and abs(d - d0) < 1e-9 and frac == frac0
    # the samples' heights, in float32 as the proposer takes them, are the same
    h = cloud.points @ n.astype(np.float32) + np.float32(d)
    h0 = cloud.points @ n0.astype(np.float32) + np.float32(d0)
    assert np.array_equal(h, h0)


def test_colour_crease_asks_for_the_edges_only_when_its_closing_fills_a_cell() -> None:
    own = np.zeros((20, 30), bool)
    own[9:12, 2:28] = True                     # the cluster's own cells: a band
    edges = np.zeros(own.shape, bool)
    edges[:, 10:20] = True
    asked = []

    def colour_edges() -> np.ndarray:
        asked.append(1)
        return edges

    band = own.copy()                          # creases all along it: nothing to fill
    assert np.array_equal(depth_clusters._colour_crease(band, colour_edges, own, 7), band)
    assert not asked
    broken = band.copy()
    broken[9:12, 13:15] = False                # a gap on a colour edge: its middle filled
    got = depth_clusters._colour_crease(broken, colour_edges, own, 7)
    want = broken.copy()
    want[10, 13:15] = True
    assert asked and np.array_equal(got, want)
    off_edge = band.copy()
    off_edge[9:12, 22:24] = False              # a gap off the colour edges: left open
    assert np.array_equal(depth_clusters._colour_crease(off_edge, colour_edges, own, 7),
                          off_edge)


@pytest.mark.parametrize("seed", range(5))
def test_support_surface_pieces_match_the_statistics_version(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = (cv2.GaussianBlur(rng.random((120, 160)).astype(np.float32), (0, 0), 4) >
            0.5).view(np.uint8) if seed else np.zeros((120, 160), np.uint8)
    mask = np.ascontiguousarray(mask.astype(np.uint8))
    found = []
    real = cv2.findContours

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        found.extend(c.reshape(-1, 2) for c in out[0])   # (offset included)
        return out

    try:
        cv2.findContours = spy
        flat = np.flatnonzero(np.ones(mask.shape[0] * 2 * mask.shape[1] * 2, bool))
        points = np.ones((flat.size, 3), np.float32)
        support_region.support_region(np.kron(mask, np.ones((2, 2), np.uint8)), flat, points,
                                      np.array([0.0, 0.0, 1.0]), 0.05, 0.05)
    finally:
        cv2.findContours = real
    former = former_surface_cells(cv2.morphologyEx(mask, cv2.MORPH_OPEN, support_region._K3),
                                  0.05)
    assert len(found) == len(former) and (len(found) > 0 or seed == 0)
    assert all(np.array_equal(a, b) for a, b in zip(found, former))


@pytest.mark.parametrize("seed", range(4))
def test_foreground_edges_match_the_per_direction_version(seed: int) -> None:
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.3, 1.5, (60, 80)).astype(np.float32)
    z[rng.random(z.shape) < 0.1] = 0.0
    z[10:30, 20:50] -= 0.3                    # a block in front
    new = depth_registration._foreground_edges(z)
    old = former_foreground_edges(z)
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(new, old))
    assert new[0].size > 0


def test_depth_range_test_needs_no_isfinite_pass() -> None:
    cfg = DepthProposalConfig()
    z = np.array([np.nan, np.inf, -np.inf, 0.0, cfg.min_depth_m, 1.0, cfg.max_depth_m,
                  cfg.max_depth_m * 1.01, -1.0], np.float32)
    want = np.isfinite(z) & (z >= cfg.min_depth_m) & (z <= cfg.max_depth_m)
    assert np.array_equal(_in_range(z, cfg), want)
    assert _in_range(z, cfg).tolist() == [False] * 4 + [True] * 3 + [False] * 2


def test_many_support_pieces_are_each_cut_out_by_their_box() -> None:
    # a small support_min_frac keeps up to 1 / min_frac pieces: 2700 pieces (3x3 cells on
    # the grid of every other row and column, 1 apart) each cut out of the whole grid was
    # quadratic (2700 passes over it, 5x the former time on a 720x960 grid); by its box,
    # the contours look at about as many cells as the grid holds, and find the same cells
    tile = np.zeros((8, 8), np.uint8)
    tile[:6, :6] = 1
    grid = np.tile(tile, (45, 60))
    mask = cv2.morphologyEx(np.ascontiguousarray(grid[::2, ::2]), cv2.MORPH_OPEN,
                            support_region._K3)
    looked, found = [], []
    real = cv2.findContours

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        looked.append(args[0].size)
        found.extend(c.reshape(-1, 2) for c in out[0])   # (offset included)
        return out

    flat = np.arange(grid.size)
    points = np.c_[flat % grid.shape[1], np.zeros(flat.size), 1.0 + flat // grid.shape[1]]
    try:
        cv2.findContours = spy
        region = support_region.support_region(grid, flat, points, np.array([0.0, -1.0, 0.0]),
                                               1e-6, 0.05)
    finally:
        cv2.findContours = real
    former = former_surface_cells(mask, 1e-6)
    assert region is not None and len(former) == len(looked) == 45 * 60
    assert sum(looked) <= 2 * mask.size
    assert len(found) == len(former)
    assert all(np.array_equal(a, b) for a, b in zip(found, former))
