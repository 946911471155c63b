"""The faster depth proposer gives bit-for-bit the results of its first version.

``depth_cloud`` and ``fit_plane_ransac`` were rewritten for speed (np.take / np.compress in
place of fancy and boolean indexing, the back-projection per grid column and row, written
straight into the float32 cloud). The first ``depth_cloud`` is kept here as a reference:
clouds and proposals must be identical on noisy tabletop depth. ``fit_plane_ransac`` was
checked bit-identical to its first version when it was rewritten (the np.take / np.compress
rows are those of the indexing they replace); here it must find each scene's analytic
table plane, deterministically per seed."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vl_distill_ros.perception import depth_proposals as dp
from vl_distill_ros.perception.camera_model import CameraIntrinsics
from vl_distill_ros.perception.depth_cloud import DepthCloud, depth_cloud, depth_samples
from vl_distill_ros.perception.depth_config import DepthProposalConfig
from vl_distill_ros.perception.depth_proposals import propose_depth_boxes
from vl_distill_ros.perception.support_plane import fit_plane_ransac
from vl_distill_ros.sim.depth_noise import apply_depth_noise

K = CameraIntrinsics(fx=540.0, fy=540.0, cx=319.5, cy=239.5, width=640, height=480)


# ---------------------------------------------------------------------------------------
# the first back-projection (reference)
# ---------------------------------------------------------------------------------------
def reference_depth_cloud(depth, k, cfg):
    """The first back-projection (the sampling and validity mask are unchanged and shared)."""
    z, valid, s, off = depth_samples(depth, cfg)
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
    (holes, flying pixels, quantisation) from the renderer's noise model (see
    :func:`table_plane` for the table's plane)."""
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


def table_plane(seed: int) -> tuple[np.ndarray, float]:
    """``(n, d)`` of :func:`scene`'s table (n . p + d = 0, d > 0: n points at the camera)."""
    rng = np.random.default_rng(seed)
    tilt = math.radians(rng.uniform(35, 65))
    dist = rng.uniform(0.6, 1.2)
    normal = np.array([0.0, -math.cos(tilt), -math.sin(tilt)])
    d = -float(normal @ np.array([0.0, 0.0, dist]))
    return (normal, d) if d > 0 else (-normal, -d)


@pytest.mark.parametrize("seed", range(6))
def test_cloud_is_identical_to_the_first_version_and_ransac_finds_the_table(seed: int) -> None:
    depth = scene(seed)
    true_n, true_d = table_plane(seed)
    for cfg in (DepthProposalConfig(), DepthProposalConfig(stride=3, ransac_samples=500)):
        ref, new = reference_depth_cloud(depth, K, cfg), depth_cloud(depth, K, cfg)
        for name in ("z", "valid", "rows", "cols", "points"):
            a, b = getattr(ref, name), getattr(new, name)
            assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), name
        assert (ref.stride, ref.offset) == (new.stride, new.offset)
        plane = fit_plane_ransac(new.points, cfg, np.random.default_rng(7))
        again = fit_plane_ransac(new.points, cfg, np.random.default_rng(7))
        assert plane is not None and again is not None
        assert np.array_equal(plane[0], again[0]) and plane[1:] == again[1:]
        n, d, frac = plane
        assert math.degrees(math.acos(min(1.0, abs(float(n @ true_n))))) < 1.0
        assert float(n @ true_n) > 0 and abs(d - true_d) < 0.005
        assert 0.3 < frac <= 1.0


def test_ransac_on_few_points_and_small_clouds() -> None:
    cfg = DepthProposalConfig()
    rng = np.random.default_rng(3)
    for n in (0, 2):
        assert fit_plane_ransac(np.zeros((n, 3), np.float32), cfg, rng) is None
    for n in (3, 50, 1999, 2001, 16001):   # around ransac_samples and 8x it
        pts = rng.normal(0, 0.3, (n, 3)).astype(np.float32)
        pts[:, 2] = 0.8                      # all on the plane z = 0.8
        plane = fit_plane_ransac(pts, cfg, np.random.default_rng(1))
        assert plane is not None, n
        normal, d, frac = plane
        assert abs(abs(float(normal[2])) - 1.0) < 1e-6 and abs(d - 0.8) < 1e-5, n
        assert frac == 1.0, n


@pytest.mark.parametrize("seed", range(6, 10))
def test_proposals_are_identical_to_the_first_version(seed: int, monkeypatch) -> None:
    depth = scene(seed)
    cfg = DepthProposalConfig()
    new = propose_depth_boxes(depth, K, cfg)
    monkeypatch.setattr(dp, "depth_cloud", reference_depth_cloud)
    ref = dp.propose_depth_boxes(depth, K, cfg)
    assert new.boxes and new.boxes == ref.boxes and new.tops == ref.tops
    assert new.plane == ref.plane and new.valid_frac == ref.valid_frac
    assert np.array_equal(new.height_grid, ref.height_grid, equal_nan=True)
