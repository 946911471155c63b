#!/usr/bin/env python3
"""Plane fit and clustering of the depth proposer: numpy/OpenCV (shipped) vs Open3D.

Both backends get the same downsampled, filtered cloud of each frame
(:func:`vl_distill_ros.perception.depth_cloud.depth_cloud`, every ``stride``-th pixel)
and the same size and noise filters and projection
(:func:`~vl_distill_ros.perception.depth_proposals.boxes_from_clusters`, with the noise
measured below each backend's plane):

* ``numpy``: :func:`~vl_distill_ros.perception.support_plane.fit_plane_ransac` and
  :func:`~vl_distill_ros.perception.depth_clusters.object_clusters` (connected components
  on the sample grid and their cuts: what ``propose_depth_boxes`` does on its grid, without
  the colour image and without the finer grid in the objects' window);
* ``open3d``: ``PointCloud.segment_plane`` (RANSAC, same iterations, the inlier distance at
  the median depth) and ``cluster_dbscan`` (``eps`` = the grid spacing at the median depth
  times ``--eps-cells``, ``min_points`` = ``min_cluster_points``) on the points in the
  height band.

Prints ONE JSON object: per backend, recall at IoU 0.5 and false positives per frame of the
depth boxes alone, and ms/frame of plane + clustering (the cloud itself is shared).
Open3D is not a requirement of the package: install ``open3d-cpu`` to run this (its
``__init__`` imports plotly/dash for visualisation only; ``--stub-visualization`` skips that
import so the geometry runs without them).

    .venv/bin/python bench/depth_backends.py --bags RGBD_BAG [--stub-visualization]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from typing import Any, Sequence

import numpy as np
from _common import cpu_model, emit_or_error, non_negative_int, positive_float


def _numpy_backend(cloud, k, cfg):
    from vl_distill_ros.perception import depth_proposals as dp
    from vl_distill_ros.perception.depth_clusters import object_clusters
    from vl_distill_ros.perception.support_plane import DepthNoiseEstimate, fit_plane_ransac

    fit = fit_plane_ransac(cloud.points, cfg, np.random.default_rng(int(cfg.seed)))
    if fit is None:
        return []
    n, d, _ = fit
    height = cloud.points @ n.astype(np.float32) + np.float32(d)
    clusters = object_clusters(cloud, height, cloud.scatter(height, np.nan, np.float32), n,
                               cfg)
    noise = DepthNoiseEstimate.measure(height, cloud.points[:, 2])
    return dp.boxes_from_clusters(clusters, cloud.points, height, n, k, cfg, noise)[0]


def _open3d_backend(o3d, cloud, k, cfg, eps_cells: float):
    from vl_distill_ros.perception import depth_proposals as dp
    from vl_distill_ros.perception.support_plane import DepthNoiseEstimate

    pts = cloud.points.astype(np.float64)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    z = float(np.median(pts[:, 2]))
    thr = cfg.plane_threshold_m + cfg.plane_threshold_quadratic * z * z
    model, _ = pcd.segment_plane(distance_threshold=thr, ransac_n=3,
                                 num_iterations=int(cfg.ransac_iterations))
    n, d = np.asarray(model[:3], float), float(model[3])
    norm = np.linalg.norm(n)
    n, d = n / norm, d / norm
    if d < 0:
        n, d = -n, -d
    height = (pts @ n + d).astype(np.float32)
    low = cfg.min_height_m + cfg.plane_threshold_quadratic * pts[:, 2] ** 2
    above = np.flatnonzero((height > low) & (height < cfg.max_height_m))
    if above.size == 0:
        return []
    sub = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts[above]))
    eps = eps_cells * cloud.stride * z / k.fx
    labels = np.asarray(sub.cluster_dbscan(eps=eps, min_points=int(cfg.min_cluster_points)))
    clusters = [above[labels == i] for i in range(int(labels.max()) + 1)] if labels.size else []
    clusters = [c for c in clusters if c.size >= cfg.min_cluster_points]
    noise = DepthNoiseEstimate.measure(height, pts[:, 2])
    return dp.boxes_from_clusters(clusters, cloud.points, height, n, k, cfg, noise)[0]


def _error(message: str) -> int:
    """Print the run's JSON object with ``message`` as its error; exit status 2."""
    print(json.dumps({"bench": "depth_backends", "error": message}))
    return 2


def _tallies(o3d: Any, bags: Sequence[str], max_frames: int, eps_cells: float
             ) -> dict[str, Any]:
    """Both backends on every frame of ``bags`` with ground truth and depth: their
    ``Tally`` (raises ``BagError`` for a bag that cannot be read)."""
    from proposals_recall import Tally, load_rgbd_frames

    from vl_distill_ros.perception.depth_cloud import depth_cloud
    from vl_distill_ros.perception.depth_config import DepthProposalConfig

    cfg = DepthProposalConfig()
    tallies = {"numpy": Tally(), "open3d": Tally()}
    for bag in bags:
        for image, truth, depth, k in load_rgbd_frames(bag, max_frames):
            cloud = depth_cloud(depth, k, cfg)
            for name, run in (("numpy", lambda: _numpy_backend(cloud, k, cfg)),
                              ("open3d", lambda: _open3d_backend(o3d, cloud, k, cfg,
                                                                 eps_cells))):
                t0 = time.perf_counter()
                boxes = run()
                tallies[name].add(truth, boxes, 0.5, 1000.0 * (time.perf_counter() - t0))
    return tallies


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bags", nargs="+", required=True, help="RGB-D bags with ground truth")
    ap.add_argument("--max-frames", type=non_negative_int, default=0, help="per bag (0: all)")
    ap.add_argument("--eps-cells", type=positive_float, default=2.5,
                    help="DBSCAN eps in grid spacings at the median depth (default 2.5)")
    ap.add_argument("--stub-visualization", action="store_true",
                    help="do not import open3d.visualization (needs plotly and dash)")
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from vl_distill_ros.bags.bag_io import BagError, read_camera_bag
    from vl_distill_ros.perception.depth_config import DepthProposalConfig

    try:
        for bag in args.bags:       # every bag readable before Open3D is needed
            read_camera_bag(bag)
    except BagError as exc:
        return _error(str(exc))
    if args.stub_visualization:
        sys.modules.setdefault("open3d.visualization", types.ModuleType("open3d.visualization"))
    try:
        import open3d as o3d
    except ImportError as exc:
        return _error(f"open3d not importable: {exc}")
    try:
        tallies = _tallies(o3d, args.bags, args.max_frames, args.eps_cells)
    except BagError as exc:
        return _error(str(exc))
    out: dict[str, Any] = {"bench": "depth_backends", "open3d_version": o3d.__version__,
                           "stride": DepthProposalConfig().stride, "eps_cells": args.eps_cells}
    for name, t in tallies.items():
        s = t.summary(False)
        out[name] = {"frames": s["frames"], "objects": s["objects"], "recall": s["recall"],
                     "false_positives_per_frame": round((s["proposals"] - s["matched"])
                                                        / max(s["frames"], 1), 3),
                     "ms_per_frame": s["ms_per_frame"]}
    out["machine"] = {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
                      "loadavg": list(os.getloadavg())}
    return emit_or_error(out)


if __name__ == "__main__":
    sys.exit(main())
