#!/usr/bin/env python3
"""Where the depth proposer's time goes, stage by stage.

Runs :func:`~vl_distill_ros.perception.depth_proposals.propose_depth_boxes` on the RGB-D
frames of a bag (``--bag``, default the shipped sample bag; the first ``--frames``), with
the colour image and one registration check per round over the frames, as
``bench/proposals_recall.py --depth`` and the node call it, ``--repeats`` rounds (the first
not timed: first-call allocations), and times each of its stages (:data:`STAGES`, wrapped
for the run). A stage's time holds the stages it calls (``_boxes_on_plane`` holds
``object_clusters``, which holds ``_grid_clusters``...); ``calls_per_frame`` says how often
each ran. Prints ONE JSON object: the proposer's mean, median and p95 ms a frame, and per
stage its mean ms and calls a frame, largest first. The numbers are the machine's at its
load (``machine.loadavg_start``): compare two versions in one process or back to back.

    .venv/bin/python bench/depth_stages.py [--bag RGBD_BAG] [--frames 8] [--repeats 3]
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import time
from collections import Counter
from typing import Any, Iterator, Sequence

import numpy as np
from _common import BenchError, bag_errors, bench_main, depth_frames_parser, log, machine_info

#: ``(module, function)`` of each timed stage: the function as the module holding the
#: caller looks it up (a name imported into :mod:`.depth_proposals` is wrapped there).
STAGES = (("depth_proposals", "_registered"), ("depth_proposals", "depth_cloud"),
          ("depth_proposals", "fit_plane_ransac"), ("depth_proposals", "raised_plane"),
          ("depth_proposals", "_support"), ("depth_proposals", "_object_windows"),
          ("depth_proposals", "_window_boxes"), ("depth_proposals", "_boxes_on_plane"),
          ("depth_proposals", "object_clusters"), ("depth_proposals", "boxes_from_clusters"),
          ("depth_clusters", "_grid_clusters"), ("depth_clusters", "_creases"),
          ("depth_clusters", "split_top_view"))


@contextlib.contextmanager
def timed_stages(spent: Counter, calls: Counter) -> Iterator[None]:
    """Each of :data:`STAGES` wrapped to add its seconds to ``spent`` and its calls to
    ``calls`` (by name) while inside; the functions are put back after."""
    saved = []
    try:
        for module, name in STAGES:
            mod = importlib.import_module(f"vl_distill_ros.perception.{module}")
            func = getattr(mod, name)
            saved.append((mod, name, func))
            setattr(mod, name, _timed(func, name, spent, calls))
        yield
    finally:
        for mod, name, func in reversed(saved):
            setattr(mod, name, func)


def _timed(func: Any, name: str, spent: Counter, calls: Counter) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - t0
            calls[name] += 1
    return wrapper


def _frames(bag: str, count: int) -> list[tuple]:
    """``(image, depth, intrinsics)`` of the bag's first ``count`` frames with depth and
    camera info (paired as ``replay-eval`` pairs them)."""
    from vl_distill_ros.bags.bag_io import read_camera_bag

    out = []
    with bag_errors(bag):
        for msg in read_camera_bag(bag).rgbd_frames(tolerance_ns=20_000_000):
            if msg.depth is not None and msg.camera_info is not None:
                out.append((msg.image, msg.depth, msg.intrinsics()))
            if len(out) == count:
                break
    if not out:
        raise BenchError(f"{bag} has no frame with depth and camera info")
    return out


def _round(frames: list[tuple], times: list[float] | None) -> int:
    """One pass of the proposer over ``frames`` (one registration check, as one camera's);
    each frame's ms appended to ``times`` (when given); returns the boxes proposed."""
    from vl_distill_ros.perception.depth_config import DepthProposalConfig, stride_for
    from vl_distill_ros.perception.depth_proposals import propose_depth_boxes
    from vl_distill_ros.perception.depth_registration import DepthRegistration

    cfg, reg, boxes = DepthProposalConfig(), None, 0
    for image, depth, k in frames:
        if reg is None:
            reg = DepthRegistration(cfg.registration_search_px,
                                    stride_for(cfg, image.shape[1], k.focal,
                                               image.shape[0]).stride,
                                    fattening_px=cfg.fattening_search_px)
        t0 = time.perf_counter()
        boxes += len(propose_depth_boxes(depth, k, cfg, image, reg).boxes)
        if times is not None:
            times.append(1000.0 * (time.perf_counter() - t0))
    return boxes


def run(a: argparse.Namespace, out: dict[str, Any]) -> None:
    out["machine"] = machine_info(["numpy", "cv2"])
    frames = _frames(a.bag, a.frames)
    log(f"{len(frames)} RGB-D frames of {frames[0][1].shape[1]}x{frames[0][1].shape[0]}")
    _round(frames, None)   # warm-up, not timed
    spent: Counter = Counter()
    calls: Counter = Counter()
    times: list[float] = []
    boxes = 0
    with timed_stages(spent, calls):
        for _ in range(max(1, a.repeats - 1)):
            boxes += _round(frames, times)
    n = len(times)
    out["frames"] = {"count": len(frames), "size": [frames[0][1].shape[1],
                                                    frames[0][1].shape[0]],
                     "timed": n, "boxes_per_frame": round(boxes / n, 2)}
    out["ms_per_frame"] = {"mean": round(float(np.mean(times)), 3),
                           "median": round(float(np.median(times)), 3),
                           "p95": round(float(np.percentile(times, 95)), 3)}
    out["stages"] = {name: {"ms_per_frame": round(1000.0 * spent[name] / n, 3),
                            "calls_per_frame": round(calls[name] / n, 2)}
                     for name, _ in sorted(spent.items(), key=lambda kv: -kv[1])}


def main(argv: Sequence[str] | None = None) -> int:
    p = depth_frames_parser(__doc__, repeats=3)
    return bench_main("depth_stages", "the depth proposer's time per stage (30 fps with "
                      "depth on two cores)", p, run, argv)


if __name__ == "__main__":
    sys.exit(main())
