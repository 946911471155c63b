#!/usr/bin/env python3
"""Cost of aligning a depth camera's own images to the colour camera
(:func:`vl_distill_ros.perception.depth_alignment.align_depth`, the node's
``depth_camera_info_topics`` / ``depth_to_colour_poses``).

The depth images of an RGB-D bag (``--bag``, default the sample bag; the first ``--frames``
with depth) are taken as a depth camera's, with the bag's CameraInfo as its intrinsics, and
aligned to a colour camera of the same size whose focal length is ``--focal-scale`` times
the depth camera's, ``--baseline`` metres along x (a RealSense's imagers lie 15-50 mm
apart). Prints ONE JSON object: the median / p95 ms per frame over ``--repeats`` rounds and
the fraction of the colour image the aligned depth covers against the depth image's own
coverage.

    .venv/bin/python bench/depth_alignment.py [--bag RGBD_BAG] [--frames 8] [--repeats 10]
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Sequence

import numpy as np
from _common import BenchError, bench_main, depth_frames_parser, log, machine_info


def run(a: argparse.Namespace, out: dict[str, Any]) -> None:
    from vl_distill_ros.bags.bag_io import read_camera_bag
    from vl_distill_ros.perception.depth_alignment import align_depth, transform_from_pose
    from vl_distill_ros.perception.depth_proposals import CameraIntrinsics

    out["machine"] = machine_info(["numpy", "cv2"])
    frames = []
    for frame in read_camera_bag(a.bag).rgbd_frames(tolerance_ns=20_000_000):
        if frame.depth is not None and frame.camera_info is not None:
            frames.append((frame.depth, frame.intrinsics()))
        if len(frames) == a.frames:
            break
    if not frames:
        raise BenchError(f"{a.bag} has no frame with depth and a CameraInfo")
    rotation, translation = transform_from_pose([a.baseline, 0, 0, 0, 0, 0, 1])
    cams = []
    for depth, cam in frames:
        colour = CameraIntrinsics(cam.fx * a.focal_scale, cam.fy * a.focal_scale,
                                  (cam.width - 1) / 2, (cam.height - 1) / 2, cam.width,
                                  cam.height)
        cams.append((depth, cam, colour))
    log(f"{len(frames)} depth frames of {cams[0][1].width}x{cams[0][1].height}")
    times, cover, own = [], [], []
    for depth, cam, colour in cams:
        aligned = align_depth(depth, cam, colour, rotation, translation)
        cover.append(float((aligned > 0).mean()))
        own.append(float((depth > 0).mean()))
    for _ in range(a.repeats):
        for depth, cam, colour in cams:
            t0 = time.perf_counter()
            align_depth(depth, cam, colour, rotation, translation)
            times.append(1000.0 * (time.perf_counter() - t0))
    out["frames"] = {"count": len(cams), "size": [cams[0][1].width, cams[0][1].height]}
    out["results"] = {"ms_median": round(float(np.median(times)), 2),
                      "ms_p95": round(float(np.percentile(times, 95)), 2),
                      "aligned_coverage": round(float(np.mean(cover)), 4),
                      "depth_coverage": round(float(np.mean(own)), 4)}


def main(argv: Sequence[str] | None = None) -> int:
    p = depth_frames_parser(__doc__, repeats=10)
    p.add_argument("--focal-scale", type=float, default=1.15,
                   help="colour focal length over the depth camera's (default 1.15)")
    p.add_argument("--baseline", type=float, default=0.015,
                   help="the depth camera's offset along x in metres (default 0.015)")
    return bench_main("depth_alignment", "cost of aligning unregistered depth per frame", p,
                      run, argv)


if __name__ == "__main__":
    sys.exit(main())
