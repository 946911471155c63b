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

With ``--pipeline`` the bag must hold a separate depth camera's own depth (``vl-distill
make-bag --depth --depth-camera``, or a RealSense bag recorded without alignment): the
bench then times the node's stage 1 (:meth:`PerceptionPipeline.prepare`, default settings
and the shipped bundle) per frame three ways, interleaved: with depth aligned beforehand
(the cost of registered depth), aligning first and then preparing (serial), and handing
the pipeline the unaligned depth (:class:`UnalignedDepth`: aligned in its depth thread
while the colour proposer runs in the other, as the node does).

    .venv/bin/python bench/depth_alignment.py [--bag RGBD_BAG] [--frames 8] [--repeats 10]
    .venv/bin/python bench/depth_alignment.py --pipeline --bag UNALIGNED_RGBD_BAG
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Sequence

import numpy as np
from _common import (BenchError, bag_errors, bench_main, depth_frames_parser, finite_float,
                     log, machine_info, positive_float)


def run(a: argparse.Namespace, out: dict[str, Any]) -> None:
    if a.pipeline:
        return run_pipeline(a, out)
    from vl_distill_ros.bags.bag_io import read_camera_bag
    from vl_distill_ros.perception.depth_alignment import align_depth, transform_from_pose
    from vl_distill_ros.perception.camera_model import CameraIntrinsics, DepthError

    out["machine"] = machine_info(["numpy", "cv2"])
    frames = []
    with bag_errors(a.bag):
        for frame in read_camera_bag(a.bag).rgbd_frames(tolerance_ns=20_000_000):
            if frame.depth is not None and frame.camera_info is not None:
                frames.append((frame.depth, frame.intrinsics()))
            if len(frames) == a.frames:
                break
    if not frames:
        raise BenchError(f"{a.bag} has no frame with depth and a CameraInfo")
    try:
        rotation, translation = transform_from_pose([a.baseline, 0, 0, 0, 0, 0, 1])
        cams = [(depth, cam, CameraIntrinsics(cam.fx * a.focal_scale, cam.fy * a.focal_scale,
                                              (cam.width - 1) / 2, (cam.height - 1) / 2,
                                              cam.width, cam.height))
                for depth, cam in frames]
    except DepthError as exc:
        raise BenchError(f"--baseline {a.baseline} / --focal-scale {a.focal_scale}: "
                         f"{exc}") from None
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


def run_pipeline(a: argparse.Namespace, out: dict[str, Any]) -> None:
    """``--pipeline``: stage 1 with registered, serially aligned and deferred depth."""
    from vl_distill_ros.bags.bag_io import read_camera_bag
    from vl_distill_ros.evaluation.replay import node_parameter_values, pipeline_settings
    from vl_distill_ros.model.bundle import load_bundle
    from vl_distill_ros.perception.depth_alignment import UnalignedDepth
    from vl_distill_ros.perception.pipeline import PerceptionPipeline
    from vl_distill_ros.ros.params import default_model_path

    out["machine"] = machine_info(["numpy", "cv2", "onnxruntime"])
    with bag_errors(a.bag):
        contents = read_camera_bag(a.bag)
        if not any(p.pose is not None for p in contents.depth_alignment.values()):
            raise BenchError(f"{a.bag} has no depth to align (write one with `vl-distill "
                             "make-bag --depth --depth-camera`)")
        frames = []
        for f in contents.rgbd_frames(tolerance_ns=20_000_000, defer_alignment=True):
            if isinstance(f.depth, UnalignedDepth):
                frames.append((f.image, f.depth, f.intrinsics()))
            if len(frames) == a.frames:
                break
    if not frames:
        raise BenchError(f"{a.bag} has no colour frame with unaligned depth")
    pipe = PerceptionPipeline(load_bundle(default_model_path(), device="cpu"),
                              **pipeline_settings(node_parameter_values()).as_kwargs())
    ways = {"registered": [], "align_then_prepare": [], "deferred": []}
    try:
        aligned = [u.aligned(k) for _, u, k in frames]
        for image, u, k in frames:                            # warm-up
            pipe.prepare(image, u, k)
        for _ in range(a.repeats):
            for (image, u, k), done in zip(frames, aligned):
                t0 = time.perf_counter()
                pipe.prepare(image, done, k)
                t1 = time.perf_counter()
                pipe.prepare(image, u.aligned(k), k)
                t2 = time.perf_counter()
                pipe.prepare(image, u, k)
                t3 = time.perf_counter()
                for name, dt in zip(ways, (t1 - t0, t2 - t1, t3 - t2)):
                    ways[name].append(1000.0 * dt)
    finally:
        pipe.close()
    log(f"{len(frames)} frames, {a.repeats} rounds")
    out["frames"] = {"count": len(frames), "depth_size": [frames[0][1].camera.width,
                                                          frames[0][1].camera.height]}
    out["results"] = {f"{name}_ms_median": round(float(np.median(t)), 2)
                      for name, t in ways.items()}
    out["results"].update({f"{name}_ms_p95": round(float(np.percentile(t, 95)), 2)
                           for name, t in ways.items()})


def main(argv: Sequence[str] | None = None) -> int:
    p = depth_frames_parser(__doc__, repeats=10)
    p.add_argument("--focal-scale", type=positive_float, default=1.15,
                   help="colour focal length over the depth camera's (default 1.15)")
    p.add_argument("--baseline", type=finite_float, default=0.015,
                   help="the depth camera's offset along x in metres (default 0.015)")
    p.add_argument("--pipeline", action="store_true",
                   help="time the pipeline's stage 1 with registered, serially aligned and "
                        "deferred depth on a bag recorded without alignment")
    return bench_main("depth_alignment", "cost of aligning unregistered depth per frame", p,
                      run, argv)


if __name__ == "__main__":
    sys.exit(main())
