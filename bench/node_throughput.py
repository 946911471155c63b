#!/usr/bin/env python3
"""Live ``vl_distill_node`` throughput: fps, drops, latency, CPU and RSS under a camera load.

The node runs as a subprocess (``python -m vl_distill_ros.ros.node``, its own process group,
private namespace) and is fed by ``--cameras`` synthetic 640x480 cameras at ``--fps`` each,
``--objects`` objects per frame, for ``--warmup`` + ``--duration`` seconds. The camera
publisher runs in its own process (``multiprocessing`` spawn), so this recorder process never
starves it; it stamps every frame with the wall clock at publication, cycling through a few
pre-rendered frames (synthetic coloured shapes on a wood-textured table, or YCB scenes with
``--scene ycb``, or the frames of a bag with ``--scene bag --bag BAG``). This process records
``~/labels`` (receive time) and ``/diagnostics`` and samples the node's ``/proc/<pid>`` every
``--rss-interval`` seconds.

With ``--depth`` every colour image is preceded by its registered depth (16UC1, mm) and the
colour camera's CameraInfo, same stamp, on ``<camera>/depth/image_raw`` and
``<camera>/camera_info``, which the node gets as ``depth_topics`` / ``camera_info_topics``
(its default ``proposal_source: auto`` then runs the depth proposer). The RGB-D frames are
rendered YCB scenes with the renderer's depth and sensor noise model (``--scene ycb``) or
an RGB-D bag's (``--scene bag``; a bag recorded without alignment, ``make-bag --depth
--depth-camera``, is published as recorded: the depth camera's own image and CameraInfo, and
the node gets ``depth_camera_info_topics`` and the pose in ``depth_to_colour_poses``).
``--compare-colour-only`` then runs the same frames again
without depth, with a fresh node, right after, and reports both and their fps ratio (the
machine's load changes less between back-to-back runs).

Measured over the window after the warm-up (frames whose stamp falls in it):

* processed fps (labelled frames / s), published frames, dropped = published - labelled, and
  the node's own received/processed/dropped counters (from ``/diagnostics``);
* latency = label receive time - image stamp (both wall clock, same machine): p50/p95/max;
* objects per labelled frame (does the proposer find about ``--objects``?);
* node CPU% (utime + stime over the window; 100 = one core busy) and RSS: a VmRSS time series,
  VmHWM (peak), first/last post-warm-up sample and the least-squares slope (MB/min);
* the publisher's achieved rate (it must reach the requested rate for the run to count).

Targets (the issue): "The node sustains 30 frames/s from one 640x480 camera with 5 objects
per frame on 2 cores, p95 latency under 100 ms, no growth in RSS over 5 minutes."

ROS: DDS discovery is kept on loopback (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` is forced)
and a random ``ROS_DOMAIN_ID`` is chosen when none is set; both go to the node's environment.

Prints ONE JSON object on stdout (progress on stderr). Exit status: 0 when the measurement
ran (whether or not the targets were met: see ``"pass"``), 2 on bad arguments or inputs, 3
when the node fails to start or dies, 130 when interrupted. Run from the repository root:

    .venv/bin/python bench/node_throughput.py --duration 300 --warmup 10
"""
from __future__ import annotations

import argparse
import math
import os
import re
import secrets
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from _common import (REPO, BenchError, bench_main, loadavg, log, machine_info, percentile, r)
# _live_node sets the ROS environment (loopback discovery, own domain) before rclpy loads
from _live_node import (LIBRARIES, MAX_FPS, ROS_ENV, NodeProcess, ProcStats, Publisher,
                        Recorder,
                        add_node_arguments, pinned_cpus,
                        build_bundle, describe_bundle, other_busy_processes, parse_node_params,
                        public, use_dds_profile)
from _frames import make_frames, offline_proposals, rgbd_frames, yaml_value

from vl_distill_ros.ros.params import default_model_path  # noqa: E402 - the packaged bundle
from vl_distill_ros.sim.meshes import MODELS_ENV, default_models_dir  # noqa: E402

ISSUE_TARGET = ("The node sustains 30 frames/s from one 640x480 camera with 5 objects per "
                "frame on 2 cores, p95 latency under 100 ms, no growth in RSS over 5 minutes.")


# ==========================================================================================
# statistics
# ==========================================================================================
def lstsq_slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope dy/dx of (x, y) points (None for fewer than 2 distinct x)."""
    if len(points) < 2:
        return None
    xs = np.array([p[0] for p in points], float)
    ys = np.array([p[1] for p in points], float)
    if np.ptp(xs) == 0:
        return None
    return float(np.polyfit(xs, ys, 1)[0])


def stamp_ns(doc: dict) -> int:
    st = doc["header"]["stamp"]
    return int(st["sec"]) * 1_000_000_000 + int(st["nanosec"])


# ==========================================================================================
# the bench
# ==========================================================================================
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description="Throughput, latency, CPU and memory of the live vl_distill_node under "
                    "synthetic camera load; prints one JSON object on stdout.",
        epilog=f"Issue target: {ISSUE_TARGET}",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", type=Path, default=None,
                    help="student bundle (.vdb) for the node; default: the packaged "
                         "vl_distill_ros/bundles/default_student.vdb when it exists, else a "
                         "temporary bundle built here (EfficientNet-Lite0, 128 px, packaged "
                         "ImageNet backbone weights, untrained head, YCB vocabulary embedded "
                         "by the offline teacher's MiniLM text encoder)")
    ap.add_argument("--keep-bundle", type=Path, default=None, metavar="PATH",
                    help="write a bundle built here to PATH and keep it (reuse it with "
                         "--model PATH)")
    ap.add_argument("--student-size", type=int, default=128,
                    help="input size of a bundle built here (no effect with --model)")
    ap.add_argument("--cameras", type=int, default=1, help="camera topics published")
    ap.add_argument("--fps", type=float, default=30.0, help="frames/s per camera")
    ap.add_argument("--objects", type=int, default=5, help="objects per frame")
    ap.add_argument("--width", type=int, default=640, help="frame width (pixels)")
    ap.add_argument("--height", type=int, default=480, help="frame height (pixels)")
    ap.add_argument("--frames", type=int, default=8,
                    help="distinct pre-rendered frames, published cyclically")
    ap.add_argument("--scene", choices=("synthetic", "ycb", "bag"), default="synthetic",
                    help="synthetic: coloured shapes on a wood texture (numpy/OpenCV); ycb: "
                         "rendered YCB scenes (vl_distill_ros.sim.scene, needs pybullet "
                         "and --ycb-models; at most 10 objects); bag: the first --frames "
                         "frames of --bag (their own size and objects)")
    ap.add_argument("--bag", type=Path, default=None,
                    help="camera bag for --scene bag (an RGB-D bag for --depth)")
    ap.add_argument("--depth", action="store_true",
                    help="also publish registered depth (16UC1 mm) and CameraInfo with every "
                         "frame and give the node depth_topics/camera_info_topics (needs "
                         "--scene ycb or bag)")
    ap.add_argument("--image-format", choices=("raw", "jpeg", "png"), default="raw",
                    help="raw: rgb8 Image (and 16UC1 depth); jpeg/png: CompressedImage on "
                         "image_transport's topics (<camera>/image_raw/compressed, depth as "
                         "compressedDepth PNG), which the node decodes (default: %(default)s)")
    ap.add_argument("--compare-colour-only", action="store_true",
                    help="with --depth: then run the same frames without depth (fresh node) "
                         "and report both and the fps ratio")
    ap.add_argument("--ycb-models", type=Path,
                    default=Path(default_models_dir(relative_to=REPO)),
                    help=f"YCB models folder for --scene ycb (default: ${MODELS_ENV}, else "
                         "../shared/ycb_models next to the checkout)")
    ap.add_argument("--publisher-qos", choices=("reliable", "best_effort"), default="reliable",
                    help="reliability of the camera publishers (the node's subscription is set "
                         "by its qos_reliability parameter, best_effort by default)")
    ap.add_argument("--publisher-depth", type=int, default=10,
                    help="history depth (KEEP_LAST) of the camera publishers")
    ap.add_argument("--duration", type=float, default=300.0,
                    help="measured seconds after the warm-up")
    ap.add_argument("--warmup", type=float, default=10.0,
                    help="seconds of publishing before the measurement window (excluded)")
    ap.add_argument("--rss-interval", type=float, default=5.0,
                    help="seconds between RSS samples of the node (/proc/<pid>/status VmRSS)")
    add_node_arguments(ap)
    ap.add_argument("--drain", type=float, default=3.0,
                    help="seconds to wait for the last labels after publishing stops")
    ap.add_argument("--fps-tolerance", type=float, default=0.05,
                    help="the fps target passes when processed fps >= (1 - this) x requested "
                         "fps x cameras (and the publisher achieved the same)")
    ap.add_argument("--latency-target-ms", type=float, default=100.0,
                    help="p95 latency target (ms)")
    ap.add_argument("--rss-growth-max-mb", type=float, default=5.0,
                    help="'no RSS growth' passes when slope x window length <= this (MB)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the rendered frames")
    return ap


def check_args(a: argparse.Namespace) -> None:
    if a.cameras < 1:
        raise BenchError("--cameras must be >= 1")
    if not (math.isfinite(a.fps) and 0 < a.fps <= MAX_FPS):
        raise BenchError(f"--fps must be in (0, {MAX_FPS:g}]")
    if a.objects < 1:
        raise BenchError("--objects must be >= 1")
    if not (math.isfinite(a.duration) and math.isfinite(a.warmup)
            and a.duration > 0 and a.warmup >= 0):
        raise BenchError("--duration must be > 0 and --warmup >= 0 (finite)")
    if a.frames < 1 or a.width < 32 or a.height < 32:
        raise BenchError("--frames must be >= 1 and the frame at least 32x32")
    if a.rss_interval <= 0:
        raise BenchError("--rss-interval must be > 0")
    if a.compare_colour_only and not a.depth:
        raise BenchError("--compare-colour-only needs --depth")
    if a.scene == "bag" and a.bag is None:
        raise BenchError("--scene bag needs --bag BAG")


def _model(a: argparse.Namespace, tmp: Path) -> tuple[Path, dict[str, Any]]:
    """The bundle the node runs: --model, the packaged default, or one built here."""
    if a.model is not None:
        if not a.model.is_file():
            raise BenchError(f"--model {a.model}: no such file")
        return a.model.resolve(), {**describe_bundle(a.model.resolve()), "source": "--model"}
    if default_model_path().is_file():
        model = default_model_path()
        return model, {**describe_bundle(model), "source": "packaged default"}
    log("no packaged default bundle: building an EfficientNet-Lite0 bundle "
        f"({a.student_size} px) ...")
    model = a.keep_bundle.resolve() if a.keep_bundle else tmp / "bench_student.vdb"
    model.parent.mkdir(parents=True, exist_ok=True)
    info = public(build_bundle(model, image_size=a.student_size))
    log(f"bundle built in {info['build_s']} s")
    return model, info


def _frames(a: argparse.Namespace, raw_params: dict[str, str]) -> tuple[list, int, dict]:
    """(frames, objects expected per labelled frame, the JSON ``frames`` entry); a frame is
    ``(rgb, boxes)``, or ``(rgb, boxes, depth m, (fx, fy, cx, cy))`` for RGB-D scenes."""
    log(f"reading {a.frames} frames of {a.bag} ..." if a.scene == "bag" else
        f"rendering {a.frames} {a.width}x{a.height} frames with {a.objects} objects"
        f"{' and depth' if a.depth else ''} ...")
    if a.depth or a.scene == "bag":
        frames, scene_desc = rgbd_frames(a.scene, a.frames, a.objects, a.width, a.height,
                                         a.seed, a.ycb_models, a.bag)
    else:
        frames, scene_desc = make_frames(a.scene, a.frames, a.objects, a.width, a.height,
                                         a.seed, a.ycb_models)
    offline, offline_ms = offline_proposals(frames, raw_params)
    crop_source = str(yaml_value(raw_params.get("crop_source", "proposals")))
    drawn = [len(fr[1]) for fr in frames]
    expected = {"full_frame": 1}.get(crop_source, a.objects if a.scene != "bag"
                                     else round(statistics.fmean(drawn)))
    size = [int(frames[0][0].shape[1]), int(frames[0][0].shape[0])]
    return frames, expected, {"scene": scene_desc, "count": len(frames), "size": size,
                              "objects_drawn": drawn, "depth": bool(a.depth),
                              "proposals_offline": offline,
                              "proposals_offline_ms_median": r(statistics.median(offline_ms), 2)
                              if offline_ms else None,
                              "proposals_offline_ms_definition": (
                                  "the node's colour proposer (box network included) on these "
                                  "frames in the bench's process before the node starts: "
                                  "how fast the host ran at the time"),
                              "crop_source": crop_source}


def _start_node(a: argparse.Namespace, model: Path, tmp: Path, raw_params: dict[str, str],
                cpus: tuple[int, ...] | None, out: dict[str, Any], depth: bool = False,
                depth_pose: str = "") -> tuple[NodeProcess, list, list, list, list]:
    """Start the node on ``--cameras`` private topics; returns it, the colour topics and
    (with ``depth``) the depth and CameraInfo topics, and (with ``depth_pose``, depth of a
    separate depth camera, "x y z qx qy qz qw") the depth cameras' CameraInfo topics."""
    ns = f"/vl_bench_{os.getpid()}_{secrets.token_hex(3)}"
    fmt = getattr(a, "image_format", "raw")
    c_sfx, d_sfx = ("", "") if fmt == "raw" else ("/compressed", "/compressedDepth")
    topics = [f"{ns}/camera_{i}/image_raw{c_sfx}" for i in range(a.cameras)]
    d_topics = [f"{ns}/camera_{i}/depth/image_raw{d_sfx}" for i in range(a.cameras)] \
        if depth else []
    i_topics = [f"{ns}/camera_{i}/camera_info" for i in range(a.cameras)] if depth else []
    di_topics = [f"{ns}/camera_{i}/depth/camera_info" for i in range(a.cameras)] \
        if depth and depth_pose else []
    params = {"model_path": str(model), "image_topics": topics,
              **({"depth_topics": d_topics, "camera_info_topics": i_topics} if depth else {}),
              **({"depth_camera_info_topics": di_topics,
                  "depth_to_colour_poses": [depth_pose] * a.cameras} if di_topics else {}),
              "diagnostics_period": 1.0, "device": a.device,
              "text_cache_dir": str(tmp / "text_cache"),
              "vocabulary_store": str(tmp / "vocabulary.yaml"),
              "persist_vocabulary": False}
    params = {k: v for k, v in params.items() if k not in raw_params}
    node = NodeProcess(ns, params, raw_params, Path(a.log_dir or tmp) / "node.log", cpus)
    out["node"] = {"command": shlex.join(node.cmd), "pid": node.pid, "namespace": ns,
                   "params": {**params, **raw_params},
                   "pinned_cpus": list(cpus) if cpus else None}
    log(f"node pid {node.pid} starting (namespace {ns}, domain {ROS_ENV['ROS_DOMAIN_ID']})")
    return node, topics, d_topics, i_topics, di_topics


class Marks:
    """What the sampling loop records: RSS samples (s from the window start, MB), the node's
    CPU time and the system's ticks at the window's start and end, and how many diagnostics
    messages had arrived then."""

    def __init__(self) -> None:
        self.rss: list[tuple[float, float]] = []
        self.cpu: dict[str, Any] = {}
        self.diag: dict[str, int] = {}

    def sample_rss(self, node: NodeProcess, w_start: int) -> None:
        kb = node.stats.status_kb("VmRSS").get("VmRSS")
        if kb is not None:
            self.rss.append(((time.time_ns() - w_start) / 1e9, kb / 1024.0))

    def mark(self, which: str, node: NodeProcess, recorder: Recorder) -> None:
        if which not in self.cpu:
            self.cpu[which] = (time.time_ns(), node.stats.cpu_s(), ProcStats.system_ticks(),
                               node.stats.thread_cpu_s())
            self.diag[f"{which}_count"] = recorder.diag_count()


def sample_until_done(a: argparse.Namespace, node: NodeProcess, recorder: Recorder,
                      publisher: Publisher, w_start: int, w_end: int) -> Marks:
    """Poll the publisher until it reports, sampling the node's RSS and CPU meanwhile."""
    marks = Marks()
    next_rss, next_progress = time.time_ns(), w_start
    while publisher.result is None:
        publisher.poll(timeout=0.1)
        if publisher.error:
            raise BenchError(f"camera publisher: {publisher.error}", exit_code=3)
        if node.poll() is not None:
            raise node.died("during the run")
        now = time.time_ns()
        if now >= next_rss:
            marks.sample_rss(node, w_start)
            next_rss += int(a.rss_interval * 1e9)
        if now >= w_start:
            marks.mark("start", node, recorder)
        if now >= w_end:
            marks.mark("end", node, recorder)
        if now >= next_progress and now >= w_start:
            rss_now = f"{marks.rss[-1][1]:.0f} MB" if marks.rss else "?"
            log(f"  {(now - w_start) / 1e9:5.0f}/{a.duration:g} s: "
                f"{recorder.label_count()} labels, RSS {rss_now}")
            next_progress += int(30e9)
        if not publisher.proc.is_alive() and publisher.result is None:
            publisher.poll(timeout=1.0)
            if publisher.result is None:
                why = publisher.error or "no report"
                raise BenchError(f"the camera publisher died ({why})", exit_code=3)
    marks.mark("end", node, recorder)
    marks.sample_rss(node, w_start)
    return marks


def _drain(a: argparse.Namespace, recorder: Recorder, end_count: int) -> None:
    """Wait for outstanding labels (at most --drain s) and one more diagnostics message."""
    t_d = time.monotonic()
    last_n = recorder.label_count()
    last_change = t_d
    while time.monotonic() - t_d < a.drain:
        time.sleep(0.1)
        n = recorder.label_count()
        if n != last_n:
            last_n, last_change = n, time.monotonic()
        elif time.monotonic() - last_change > 1.0 and recorder.diag_count() > end_count:
            break
    end_wait = time.monotonic()
    while recorder.diag_count() <= end_count and time.monotonic() - end_wait < 3:
        time.sleep(0.1)


def run(a: argparse.Namespace, out: dict[str, Any]) -> None:
    """The measurement: model, frames, then one node run (with ``--compare-colour-only`` a
    second one without depth, reported under ``colour_only`` with the fps ratio)."""
    check_args(a)
    cpus = pinned_cpus(a)
    raw_params = parse_node_params(
        a.param, controlled=("model_path", "image_topics", "diagnostics_period", "device",
                             *(("depth_topics", "camera_info_topics", "depth_camera_info_topics",
                                "depth_to_colour_poses") if a.depth else ())))
    out["machine"] = machine_info(LIBRARIES)
    out["ros"] = dict(ROS_ENV)
    tmp = Path(tempfile.mkdtemp(prefix="vl_bench_tp_"))
    out["_tmp"] = tmp
    model, out["model"] = _model(a, tmp)
    frames, expected, out["frames"] = _frames(a, raw_params)
    _run_node(a, out, model, tmp, frames, expected, raw_params, cpus, a.depth)
    if a.compare_colour_only:
        log("the same frames again without depth ...")
        other: dict[str, Any] = {"machine": out["machine"]}
        _run_node(a, other, model, tmp, frames, expected, raw_params, cpus, False)
        other.pop("machine")
        out["colour_only"] = other
        with_d, without = out["results"]["processed_fps"], other["results"]["processed_fps"]
        out["fps_ratio_depth_to_colour_only"] = r(with_d / without, 3) if without else None


def _depth_pose(frames: list) -> str:
    """The depth camera's pose in the colour camera's ("x y z qx qy qz qw") when the frames'
    depth is a separate depth camera's own image (a bag recorded without alignment), else
    ""."""
    depth = frames[0][2]
    if getattr(depth, "camera", None) is None:
        return ""
    from vl_distill_ros.perception.static_transforms import Transform

    return " ".join(repr(float(v))
                    for v in Transform(depth.rotation, depth.translation).as_pose())


def _run_node(a: argparse.Namespace, out: dict[str, Any], model: Path, tmp: Path,
              frames: list, expected: int, raw_params: dict[str, str],
              cpus: tuple[int, ...] | None, depth: bool) -> None:
    """One run: node, publisher (with depth and CameraInfo when ``depth``), sampling, drain,
    summary into ``out`` (``node``, ``results``, ``publisher``, ``targets``, ``pass``)."""
    node = publisher = recorder = None
    try:
        node, topics, d_topics, i_topics, di_topics = _start_node(
            a, model, tmp, raw_params, cpus, out, depth, _depth_pose(frames) if depth else "")
        recorder = Recorder(node.fqn, node.labels_topic)
        out["node"]["startup_s"] = r(recorder.wait_ready(node, topics, a.node_timeout), 2)
        log(f"node ready after {out['node']['startup_s']} s")
        out["context"] = {"other_busy_processes": other_busy_processes(exclude=[node.pid])}
        rgbd = (d_topics, i_topics, [f[2] for f in frames], [f[3] for f in frames],
                *((di_topics,) if di_topics else ())) if depth else None
        publisher = Publisher(topics, [f[0] for f in frames], a.fps, a.warmup + a.duration,
                              reliability=a.publisher_qos, depth=a.publisher_depth, rgbd=rgbd,
                              image_format=a.image_format)
        publisher.wait_started(node, timeout=120.0)
        w_start = publisher.started_ns + int(a.warmup * 1e9)
        w_end = w_start + int(a.duration * 1e9)
        log(f"publishing {a.cameras} camera(s) at {a.fps:g} fps{' with depth' if depth else ''}"
            f": {a.warmup:g} s warm-up + {a.duration:g} s measured")
        marks = sample_until_done(a, node, recorder, publisher, w_start, w_end)
        _drain(a, recorder, marks.diag["end_count"])
        peak = node.stats.status_kb("VmHWM", "VmRSS")
        out["results"] = summarise(a, publisher.result, recorder, w_start, w_end, marks.cpu,
                                   marks.diag, marks.rss, peak, expected)
        out["publisher"] = out["results"].pop("_publisher")
        out["targets"], out["pass"] = judge(a, out)
    finally:
        if publisher is not None:
            publisher.stop()
        if node is not None:
            out.setdefault("node", {})["exit_code"] = node.stop()
        if recorder is not None:
            recorder.close()


def _label_stats(a, pub: dict, labels: list, w_start: int, w_end: int) -> dict[str, Any]:
    """First label per published frame of the window: latencies, objects, oddities."""
    published_set = {(i, s) for i, cam in enumerate(pub["stamps"]) for s in cam
                     if w_start <= s < w_end}
    cam_index = {f"camera_{i}": i for i in range(a.cameras)}
    seen: set[tuple[int, int]] = set()
    lat_ms: list[float] = []
    objs: list[int] = []
    unknown = dup = 0
    for t_recv, doc in labels:
        try:
            st = stamp_ns(doc)
            m = re.search(r"camera_(\d+)/", str(doc.get("camera", "")))
            ci = int(m.group(1)) if m else cam_index.get(str(doc.get("camera")), -1)
        except (KeyError, TypeError, ValueError):
            continue
        if not w_start <= st < w_end:
            continue
        key = (ci, st)
        if key not in published_set:
            unknown += 1
        elif key in seen:
            dup += 1
        else:
            seen.add(key)
            lat_ms.append((t_recv - st) / 1e6)
            objs.append(len(doc.get("objects", [])))
    return {"labelled": len(seen), "latencies": sorted(lat_ms), "objects": objs,
            "unknown": unknown, "duplicates": dup}


def _counters(entry: dict | None) -> dict[str, int]:
    """The node's counters summed over its cameras in one diagnostics entry."""
    tot = {"received": 0, "processed": 0, "dropped": 0, "errors": 0, "bad_frames": 0,
           "depth_used": 0, "colour_only": 0, "depth_errors": 0, "processed_behind": 0,
           "processed_behind_student": 0}
    for vals in (entry or {}).get("cameras", {}).values():
        for k in tot:
            try:
                tot[k] += int(vals.get(k, 0))
            except ValueError:
                pass
    return tot


def _node_counter_window(pub: dict, diags: list, diag_mark: dict) -> dict[str, Any]:
    """The node's counters from the last diagnostics message before the window to the first
    one after it, and the frames published in that span."""
    i0 = diag_mark.get("start_count", 0) - 1
    i1 = diag_mark.get("end_count", len(diags))
    d0 = diags[i0] if 0 <= i0 < len(diags) else None
    d1 = diags[i1] if i1 < len(diags) else (diags[-1] if diags else None)
    c0, c1 = _counters(d0[1] if d0 else None), _counters(d1[1] if d1 else None)
    node_counts: dict[str, Any] = {k: c1[k] - c0[k] for k in c0}
    if d0 is not None and d1 is not None and d1[0] > d0[0]:
        node_counts["span_s"] = r((d1[0] - d0[0]) / 1e9, 2)
        # frames published in the same span (minus a small transport allowance)
        pub_span = sum(1 for cam in pub["stamps"] for s in cam
                       if d0[0] - 20_000_000 < s <= d1[0] - 20_000_000)
        node_counts["published_in_span"] = pub_span
        lost = pub_span - node_counts["received"]
        node_counts["not_received_by_node"] = lost
        node_counts["not_received_fraction"] = r(lost / pub_span, 4) if pub_span else None
    return node_counts


def _node_p95(diags: list, w_start: int, w_end: int) -> dict[str, Any]:
    """The node's own p95 latency per diagnostics period during the window."""
    node_p95 = [float(vals["latency_ms_p95"]) for t, d in diags if w_start <= t <= w_end + 2e9
                for vals in d["cameras"].values() if "latency_ms_p95" in vals]
    return {"median": r(statistics.median(node_p95)) if node_p95 else None,
            "max": r(max(node_p95)) if node_p95 else None,
            "definition": "node-internal: frame received by the node -> labels published, "
                          "per diagnostics period"}


def _cpu(cpu_mark: dict) -> tuple[float | None, float]:
    """(node CPU %, system busy %) over the window."""
    (t_a, cpu_a, sys_a, _), (t_b, cpu_b, sys_b, _) = cpu_mark["start"], cpu_mark["end"]
    wall = (t_b - t_a) / 1e9
    node_cpu = 100.0 * (cpu_b - cpu_a) / wall if cpu_a is not None and cpu_b is not None \
        and wall > 0 else None
    return node_cpu, 100.0 * (sys_b[0] - sys_a[0]) / max(1, sys_b[1] - sys_a[1])


def thread_group(name: str) -> str:
    """The group a thread's OS name counts under: Fast DDS's threads (``dds.shm.7001``,
    ``dds.ev.0``, ...) as ``dds``, every other name as itself."""
    return "dds" if name.startswith("dds.") else name


def thread_cpu(cpu_mark: dict, frames: int) -> dict[str, Any]:
    """The node's CPU time over the window per thread name (the node's workers are named
    ``vl_...``, see ``vl_distill_ros.thread_names``; ONNX Runtime's pool threads carry the
    name of the thread that made their session): cores, milliseconds per labelled frame and
    how many threads, busiest first. A thread started in the window counts from 0; one
    that ended in it is not seen."""
    (t_a, _, _, before), (t_b, _, _, after) = cpu_mark["start"], cpu_mark["end"]
    wall = (t_b - t_a) / 1e9
    groups: dict[str, list[float]] = {}
    for tid, (name, cpu) in after.items():
        used = cpu - before.get(tid, (name, 0.0))[1]
        g = groups.setdefault(thread_group(name), [0.0, 0])
        g[0] += max(used, 0.0)
        g[1] += 1
    by_name = {name: {"cores": r(cpu / wall, 3) if wall > 0 else None,
                      "ms_per_frame": r(1000.0 * cpu / frames, 2) if frames else None,
                      "threads": n}
               for name, (cpu, n) in sorted(groups.items(), key=lambda kv: -kv[1][0])}
    return {"by_name": by_name,
            "definition": "CPU time (user + system) of the node's threads in the window, "
                          "grouped by OS thread name; ms_per_frame over labelled frames"}


def _rss(a, rss: list, peak: dict) -> dict[str, Any]:
    """RSS series, peak, first/last post-warm-up sample and the least-squares slope."""
    post = [(t, mb) for t, mb in rss if t >= 0]
    slope_per_s = lstsq_slope(post)
    return {
        "peak_vmhwm_mb": r(peak.get("VmHWM", 0) / 1024.0, 1) if peak.get("VmHWM") else None,
        "peak_sampled_mb": r(max((mb for _, mb in rss), default=None), 1),
        "first_mb": r(post[0][1], 1) if post else None,
        "last_mb": r(post[-1][1], 1) if post else None,
        "last_minus_first_mb": r(post[-1][1] - post[0][1], 1) if post else None,
        "slope_mb_per_min": r(slope_per_s * 60.0, 3) if slope_per_s is not None else None,
        "samples_post_warmup": len(post),
        "interval_s": a.rss_interval,
        "series_s_mb": [[r(t, 1), r(mb, 1)] for t, mb in rss],
    }


def _objects(objs: list[int], expected: int) -> dict[str, Any]:
    hist: dict[str, int] = {}
    for n in objs:
        hist[str(n)] = hist.get(str(n), 0) + 1
    return {"expected": expected, "mean": r(statistics.fmean(objs)) if objs else None,
            "min": min(objs, default=None), "max": max(objs, default=None),
            "fraction_equal_expected": r(sum(1 for n in objs if n == expected) / len(objs), 3)
            if objs else None,
            "histogram": dict(sorted(hist.items(), key=lambda kv: int(kv[0])))}


def _publisher(a, pub: dict, published_win: list[int], win_s: float) -> dict[str, Any]:
    pub_rate = sum(published_win) / win_s if win_s > 0 else 0.0
    return {
        "requested_fps_per_camera": a.fps, "cameras": a.cameras,
        "image_format": getattr(a, "image_format", "raw"),
        "achieved_fps_total_window": r(pub_rate, 2),
        "achieved_fps_per_camera_window": [r(n / win_s, 2) for n in published_win],
        "published_total": sum(pub["published"]), "skipped_slots": pub["skipped_slots"],
        "lag_ms_p50": r(pub["lag_ms_p50"], 3), "lag_ms_p95": r(pub["lag_ms_p95"], 3),
        "lag_ms_max": r(pub["lag_ms_max"], 3),
        "publish_call_ms_p50": r(pub["publish_call_ms_p50"], 3),
        "publish_call_ms_max": r(pub["publish_call_ms_max"], 3),
        "cpu_percent": r(pub["cpu_percent"], 1),
        "qos": f"{a.publisher_qos}, keep_last {a.publisher_depth}",
        "process": "separate (multiprocessing spawn)"}


TRANSPORT_HINT = (
    "frames never reached the node: with the default best_effort image QoS a large image is "
    "lost whole when one UDP fragment is lost (e.g. the socket receive buffer, "
    "net.core.rmem_default, overflows); compare -p qos_reliability:=reliable")


def summarise(a, pub: dict, rec: Recorder, w_start: int, w_end: int, cpu_mark: dict,
              diag_mark: dict, rss: list, peak: dict, expected: int) -> dict[str, Any]:
    """The ``results`` of the window (and ``_publisher``, moved out by :func:`run`)."""
    win_s = (w_end - w_start) / 1e9
    published_win = [sum(1 for s in cam if w_start <= s < w_end) for cam in pub["stamps"]]
    with rec.lock:
        labels = list(rec.labels)
        diags = list(rec.diags)
    ls = _label_stats(a, pub, labels, w_start, w_end)
    lat = ls["latencies"]
    labelled, published = ls["labelled"], sum(published_win)
    node_counts = _node_counter_window(pub, diags, diag_mark)
    node_cpu, sys_busy = _cpu(cpu_mark)
    return {
        "window_s": r(win_s, 2),
        "processed_fps": r(labelled / win_s, 2),
        "published_frames": published,
        "labelled_frames": labelled,
        "dropped_frames": published - labelled,
        "drop_rate": r((published - labelled) / published, 4) if published else None,
        "node_counters_window": node_counts,
        "latency_ms": {"p50": r(percentile(lat, 50)), "p95": r(percentile(lat, 95)),
                       "max": r(lat[-1]) if lat else None,
                       "mean": r(statistics.fmean(lat)) if lat else None,
                       "n": len(lat),
                       "definition": "label receive time - image header stamp (wall clock)"},
        "node_reported_latency_ms_p95": _node_p95(diags, w_start, w_end),
        "objects_per_frame": _objects(ls["objects"], expected),
        "node_cpu_percent": r(node_cpu, 1),
        "node_cpu_cores": r(node_cpu / 100.0, 2) if node_cpu is not None else None,
        "system_cpu_busy_percent": r(sys_busy, 1),
        "thread_cpu": thread_cpu(cpu_mark, labelled),
        "loadavg_end": loadavg(),
        "rss": _rss(a, rss, peak),
        "transport_hint": (TRANSPORT_HINT if (node_counts.get("not_received_fraction") or 0)
                           > 0.05 else None),
        "labels_outside_published": ls["unknown"],
        "duplicate_labels": ls["duplicates"],
        "_publisher": _publisher(a, pub, published_win, win_s),
    }


def judge(a, out: dict) -> tuple[dict[str, Any], bool]:
    res, pub = out["results"], out["publisher"]
    want = a.fps * a.cameras
    floor = (1.0 - a.fps_tolerance) * want
    pub_ok = pub["achieved_fps_total_window"] >= floor
    fps_ok = res["processed_fps"] >= floor and pub_ok
    p95 = res["latency_ms"]["p95"]
    lat_ok = p95 is not None and p95 < a.latency_target_ms
    slope = res["rss"]["slope_mb_per_min"]
    growth = slope * res["window_s"] / 60.0 if slope is not None else None
    rss_ok = growth is not None and growth <= a.rss_growth_max_mb
    cores = out["machine"].get("cpus_usable")
    pinned = out.get("node", {}).get("pinned_cpus")
    setup_ok = (a.cameras == 1 and a.fps == 30 and a.objects == 5 and a.width == 640
                and a.height == 480 and a.duration >= 300)
    targets = {
        "processed_fps": {"target": f">= {floor:g} (30 fps x {a.cameras} camera(s), "
                                    f"{a.fps_tolerance:g} tolerance)",
                          "value": res["processed_fps"], "pass": fps_ok,
                          "publisher_reached_rate": pub_ok},
        "latency_p95_ms": {"target": f"< {a.latency_target_ms:g}", "value": p95,
                           "pass": lat_ok},
        "rss_no_growth": {"target": f"slope x window <= {a.rss_growth_max_mb:g} MB",
                          "value_mb": r(growth, 2), "slope_mb_per_min": slope, "pass": rss_ok,
                          "meaningful": a.duration >= 300,
                          "note": None if a.duration >= 300 else
                          "window shorter than the 5 minutes of the target"},
        "conditions": {"target": "1 camera, 640x480, 30 fps, 5 objects/frame, 2 cores, "
                                 ">= 300 s",
                       "cores_usable": cores, "node_pinned_cpus": pinned,
                       "matches_issue_setup": setup_ok and (cores == 2 or
                                                            (pinned is not None
                                                             and len(pinned) == 2)),
                       "objects_found_mean": res["objects_per_frame"]["mean"]},
    }
    return targets, bool(fps_ok and lat_ok and rss_ok)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench; prints one JSON object and returns the exit status."""
    use_dds_profile()
    return bench_main("node_throughput", ISSUE_TARGET, build_parser(), run, argv, wall_time=False)


if __name__ == "__main__":
    sys.exit(main())
