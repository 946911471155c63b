"""The faster depth proposer gives bit-for-bit the results of its first version.

``depth_cloud`` and ``fit_plane_ransac`` were rewritten for speed (np.take / np.compress in
place of fancy and boolean indexing, the back-projection per grid column and row, written
straight into the float32 cloud). The first versions are kept here as references; the
clouds, the planes and the proposals must be identical on noisy tabletop depth."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vl_distill_ros.perception import depth_proposals as dp
from vl_distill_ros.perception.depth_proposals import (CameraIntrinsics, DepthCloud,
                                                       DepthProposalConfig, depth_cloud,
                                                       fit_plane_ransac, propose_depth_boxes)
from vl_distill_ros.sim.depth_noise import apply_depth_noise

K = CameraIntrinsics(fx=540.0, fy=540.0, cx=319.5, cy=239.5, width=640, height=480)


# ---------------------------------------------------------------------------------------
# the first versions (references)
# ---------------------------------------------------------------------------------------
def reference_fit_plane_ransac(points, cfg, rng):
    n_pts = len(points)
    if n_pts < 3:
        return None
    pts = np.asarray(points, np.float32)
    sub = pts[rng.integers(0, n_pts, size=min(n_pts, int(cfg.ransac_samples)))]
    fit = pts[rng.integers(0, n_pts, size=min(n_pts, 8 * int(cfg.ransac_samples)))] \
        if n_pts > 8 * int(cfg.ransac_samples) else pts
    tri = pts[rng.integers(0, n_pts, size=(int(cfg.ransac_iterations), 3))]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(normals, axis=1)
    ok = norm > 1e-9
    if not ok.any():
        return None
    normals = normals[ok] / norm[ok, None]
    offsets = -np.einsum("ij,ij->i", normals, tri[ok, 0])
    thr_sub = cfg.plane_threshold_m + cfg.plane_threshold_quadratic * sub[:, 2] ** 2
    scores = np.count_nonzero(np.abs(sub @ normals.T + offsets) < thr_sub[:, None], axis=0)
    best = int(np.argmax(scores))
    n, d = normals[best].astype(np.float64), float(offsets[best])
    thr = cfg.plane_threshold_m + cfg.plane_threshold_quadratic * fit[:, 2] ** 2
    for _ in range(2):
        inliers = np.abs(fit @ n + d) < thr
        if np.count_nonzero(inliers) < 3:
            return None
        sel = fit[inliers].astype(np.float64)
        centre = sel.mean(axis=0)
        cov = (sel - centre).T @ (sel - centre)
        n = np.linalg.eigh(cov)[1][:, 0]
        d = -float(n @ centre)
    if d < 0:
        n, d = -n, -d
    frac = float(np.count_nonzero(np.abs(fit @ n + d) < thr)) / len(fit)
    return n, d, frac


def reference_depth_cloud(depth, k, cfg):
    import cv2

    s = int(cfg.stride)
    off = s // 2
    z = np.ascontiguousarray(depth[off::s, off::s], dtype=np.float32)
    valid = np.isfinite(z) & (z >= cfg.min_depth_m) & (z <= cfg.max_depth_m)
    z = np.where(valid, z, np.float32(0.0))
    kernel = np.ones((3, 3), np.uint8)
    hi = cv2.dilate(z, kernel)
    lo = cv2.erode(np.where(valid, z, np.float32(1e6)), kernel)
    valid &= (hi - lo) <= cfg.edge_jump_frac * z
    rows, cols = np.nonzero(valid)
    zz = z[rows, cols]
    pts = np.stack([((off + cols * s) - k.cx) * zz / k.fx,
                    ((off + rows * s) - k.cy) * zz / k.fy, zz], axis=1).astype(np.float32)
    return DepthCloud(z, valid, s, off, rows, cols, pts)


# ---------------------------------------------------------------------------------------
# scenes
# ---------------------------------------------------------------------------------------
def scene(seed: int, k: CameraIntrinsics = K) -> np.ndarray:
    """Metric depth of a tilted table at 0.6-1.2 m with a few boxes on it, sensor noise
    (holes, flying pixels, quantisation) from the renderer's noise model."""
    rng = np.random.default_rng(seed)
    tilt = math.radians(rng.uniform(35, 65))
    dist = rng.uniform(0.6, 1.2)
    v, u = np.mgrid[0:k.height, 0:k.width].astype(np.float64)
    rays = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], -1)
    normal = np.array([0.0, -math.cos(tilt), -math.sin(tilt)])
    point = np.array([0.0, 0.0, dist])

    def plane_depth(height: float) -> np.ndarray:
        denom = rays @ normal
        return ((point + normal * height) @ normal) / np.where(np.abs(denom) > 1e-9, denom, 1e-9)

    depth = plane_depth(0.0)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = int(rng.integers(0, k.width - 120)), int(rng.integers(0, k.height - 120))
        w, h = int(rng.integers(20, 120)), int(rng.integers(20, 120))
        top = plane_depth(float(rng.uniform(0.02, 0.2)))
        depth[y0:y0 + h, x0:x0 + w] = np.minimum(depth[y0:y0 + h, x0:x0 + w],
                                                 top[y0:y0 + h, x0:x0 + w])
    depth = np.where(depth > 0, depth, 0.0).astype(np.float32)
    return apply_depth_noise(depth, rng)


@pytest.mark.parametrize("seed", range(6))
def test_cloud_and_plane_are_identical_to_the_first_version(seed: int) -> None:
    depth = scene(seed)
    for cfg in (DepthProposalConfig(), DepthProposalConfig(stride=3, ransac_samples=500)):
        ref, new = reference_depth_cloud(depth, K, cfg), depth_cloud(depth, K, cfg)
        for name in ("z", "valid", "rows", "cols", "points"):
            a, b = getattr(ref, name), getattr(new, name)
            assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), name
        assert (ref.stride, ref.offset) == (new.stride, new.offset)
        plane_ref = reference_fit_plane_ransac(ref.points, cfg, np.random.default_rng(7))
        plane_new = fit_plane_ransac(new.points, cfg, np.random.default_rng(7))
        assert plane_ref is not None and plane_new is not None
        assert np.array_equal(plane_ref[0], plane_new[0])
        assert plane_ref[1:] == plane_new[1:]


def test_few_points_and_small_clouds_are_identical() -> None:
    cfg = DepthProposalConfig()
    rng = np.random.default_rng(3)
    for n in (0, 2, 3, 50, 1999, 2001, 16001):
        pts = rng.normal(0, 0.3, (n, 3)).astype(np.float32)
        pts[:, 2] = np.abs(pts[:, 2]) + 0.5
        a = reference_fit_plane_ransac(pts, cfg, np.random.default_rng(1))
        b = fit_plane_ransac(pts, cfg, np.random.default_rng(1))
        assert (a is None) == (b is None), n
        if a is not None:
            assert np.array_equal(a[0], b[0]) and a[1:] == b[1:], n


@pytest.mark.parametrize("seed", range(6, 10))
def test_proposals_are_identical_to_the_first_version(seed: int, monkeypatch) -> None:
    depth = scene(seed)
    cfg = DepthProposalConfig()
    new = propose_depth_boxes(depth, K, cfg)
    monkeypatch.setattr(dp, "depth_cloud", reference_depth_cloud)
    monkeypatch.setattr(dp, "fit_plane_ransac", reference_fit_plane_ransac)
    ref = dp.propose_depth_boxes(depth, K, cfg)
    assert new.boxes and new.boxes == ref.boxes and new.tops == ref.tops
    assert new.plane == ref.plane and new.valid_frac == ref.valid_frac
    assert np.array_equal(new.height_grid, ref.height_grid, equal_nan=True)
