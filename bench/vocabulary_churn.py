#!/usr/bin/env python3
"""The live ``vl_distill_node`` while a client adds one new label name per second.

A camera publisher process sends ``--fps`` frames/s with ``--objects`` objects (as
``bench/node_throughput.py``), and a parameter client in this process calls the node's
``SetParameters`` service (what ``ros2 param set <node> labels "[...]"`` calls) every
``--interval`` seconds with the bundle's vocabulary plus ONE name:

* ``--names new`` (default): a name never used before (``churn <n> <random tag>``), so every
  change is a text-cache miss and runs the teacher's text encoder in the node;
* ``--names cached``: two names used in turn (cached after their first use): the control;
* ``--names none``: no changes at all: the control of the control.

The node subscribes with ``qos_reliability: reliable`` (``-p qos_reliability:=best_effort``
for the default): on a busy machine best-effort 640x480 frames are lost in transport before
they reach the node, which would hide what the node itself keeps up with. The vocabulary
stays the same size; what accumulates is one new cache entry per change (and
whatever the node keeps per change). Measured over the window after ``--warmup`` (the
``results`` fields are those of ``node_throughput.py``: ``processed_fps``, ``latency_ms``,
``node_cpu_percent``, ``rss`` with ``slope_mb_per_min``), plus ``churn``: changes sent,
answered, swapped in (highest ``vocabulary_version`` seen), the node's text-cache counters
(from ``/diagnostics``) and ``rss.slope_mb_per_min_second_half`` (the slope over the second
half of the window, after caches that fill up to their bound have filled).

Issue target: "Embedding must not starve the inference thread on 2 cores, and the growth
must stop. Keep a bench that shows flat memory over 10 minutes with one new name per second."
``targets.rss_flat``: RSS slope x window <= ``--rss-growth-max-mb``; ``targets.fps``:
processed fps >= (1 - ``--fps-tolerance``) x ``--fps``.

Prints ONE JSON object on stdout (progress on stderr). Exit status: 0 when the measurement
ran (see ``"pass"``), 2 on bad arguments, 3 when the node fails to start or dies, 130 when
interrupted. Run from the repository root:

    .venv/bin/python bench/vocabulary_churn.py [--duration 600] [--names new|cached|none]
"""
from __future__ import annotations

import argparse
import os
import secrets
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _live_node as lv  # noqa: E402 - sets the ROS environment before any rclpy import
import node_throughput as nt  # noqa: E402 - summarise() and lstsq_slope() of its results
from _common import (BenchError, bench_main, log, machine_info, percentile, r)  # noqa: E402
from _frames import make_frames  # noqa: E402
from vocabulary_update import ParamClient  # noqa: E402

from vl_distill_ros.ros.params import default_model_path  # noqa: E402 - the packaged bundle

ISSUE_TARGET = ("One new name per second must neither starve the inference thread on 2 cores "
                "nor grow the node's memory: flat RSS over 10 minutes.")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description="Throughput, latency and RSS of the live vl_distill_node while a client "
                    "sets a new label name every second; prints one JSON object on stdout.",
        epilog=f"Issue target: {ISSUE_TARGET}",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--duration", type=float, default=600.0,
                    help="measured seconds (after the warm-up)")
    ap.add_argument("--warmup", type=float, default=20.0,
                    help="seconds of frames and changes before the window (loads the text "
                         "encoder, fills the first caches)")
    ap.add_argument("--names", choices=("new", "cached", "none"), default="new",
                    help="new: a never-seen name per change; cached: two names in turn; "
                         "none: no changes (controls)")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between changes")
    ap.add_argument("--fps", type=float, default=30.0, help="camera frames/s")
    ap.add_argument("--objects", type=int, default=5, help="objects drawn per frame")
    ap.add_argument("--width", type=int, default=640, help="frame width")
    ap.add_argument("--height", type=int, default=480, help="frame height")
    ap.add_argument("--frames", type=int, default=8, help="pre-rendered frames, cycled")
    ap.add_argument("--model", type=Path, default=None,
                    help="student bundle; default: vl_distill_ros/bundles/default_student.vdb")
    ap.add_argument("--rss-interval", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--rss-growth-max-mb", type=float, default=5.0,
                    help="largest RSS growth over the window (slope x window) that is flat")
    ap.add_argument("--fps-tolerance", type=float, default=0.05,
                    help="processed fps may be this fraction below --fps")
    ap.add_argument("--seed", type=int, default=0, help="seed of the frames")
    lv.add_node_arguments(ap)
    return ap


def check_args(a: argparse.Namespace) -> None:
    if not (a.duration > 0 and a.warmup >= 0 and a.interval > 0 and a.fps > 0):
        raise BenchError("--duration, --interval and --fps must be > 0, --warmup >= 0")
    if a.objects < 1 or a.frames < 1 or a.width < 32 or a.height < 32:
        raise BenchError("--objects and --frames must be >= 1, frames at least 32x32")
    if a.rss_interval <= 0:
        raise BenchError("--rss-interval must be > 0")
    # what nt.summarise expects of a node_throughput namespace
    a.cameras, a.publisher_qos, a.publisher_depth = 1, "reliable", 10


class Churn(threading.Thread):
    """Sets ``base + [one name]`` every ``interval`` seconds until stopped."""

    def __init__(self, client: ParamClient, base: list[str], mode: str, interval: float) -> None:
        super().__init__(name="vl_bench_churn", daemon=True)
        self.client, self.base, self.mode, self.interval = client, base, mode, interval
        self.stop_event = threading.Event()
        self.sent = self.ok = 0
        self.failures: list[str] = []
        self.response_ms: list[float] = []
        self.tag = secrets.token_hex(3)

    def name_for(self, k: int) -> str:
        if self.mode == "cached":
            return f"churn {'ab'[k % 2]} {self.tag}"
        return f"churn {k} {self.tag}"

    def run(self) -> None:
        t0 = time.monotonic()
        k = 0
        while not self.stop_event.is_set():
            t_send, t_resp, ok, reason = self.client.set_labels(self.base + [self.name_for(k)])
            self.sent += 1
            if ok:
                self.ok += 1
                self.response_ms.append((t_resp - t_send) / 1e6)
            elif len(self.failures) < 10:
                self.failures.append(reason)
            k += 1
            self.stop_event.wait(max(0.0, t0 + k * self.interval - time.monotonic()))

    def summary(self) -> dict[str, Any]:
        resp = sorted(self.response_ms)
        return {"mode": self.mode, "interval_s": self.interval, "changes_sent": self.sent,
                "changes_accepted": self.ok, "failures": self.failures,
                "response_ms_p50": r(percentile(resp, 50)),
                "response_ms_p95": r(percentile(resp, 95)),
                "response_ms_max": r(resp[-1]) if resp else None}


def load_model(a: argparse.Namespace) -> tuple[Path, dict[str, Any], list[str]]:
    from vl_distill_ros.model.bundle import read_manifest
    from vl_distill_ros.model.vocabulary import Vocabulary

    model = (a.model or default_model_path()).resolve()
    if not model.is_file():
        raise BenchError(f"model bundle {model}: no such file")
    try:
        base = Vocabulary.from_dict(read_manifest(model)["vocabulary"]).names
    except Exception as exc:  # noqa: BLE001 - not a bundle
        raise BenchError(f"model bundle {model}: {exc}") from None
    return model, {**lv.describe_bundle(model), "base_vocabulary_size": len(base)}, base


def churn_results(recorder: lv.Recorder, churn: Churn | None, rss: list,
                  duration: float) -> dict[str, Any]:
    """Changes swapped in, the node's text-cache counters, the second-half RSS slope."""
    with recorder.lock:
        versions = [int(d.get("vocabulary_version", 0)) for _, d in recorder.labels]
        diags = [d for _, d in recorder.diags if d.get("node")]
    out: dict[str, Any] = churn.summary() if churn else {"mode": "none"}
    out["highest_vocabulary_version"] = max(versions, default=None)
    if diags:
        node = diags[-1]["node"]
        out["text_embedding_stats"] = node.get("text_embedding_stats")
        out["node_diagnostics_last"] = {k: v for k, v in node.items()
                                        if k.startswith(("text_", "vocabulary_"))}
    half = [(t, mb) for t, mb in rss if t >= duration / 2]
    slope = nt.lstsq_slope(half)
    out["rss_slope_mb_per_min_second_half"] = r(slope * 60.0, 3) if slope is not None else None
    return out


def run(a: argparse.Namespace, out: dict[str, Any]) -> None:
    check_args(a)
    cpus = lv.pinned_cpus(a)
    raw = lv.parse_node_params(a.param, controlled=(
        "model_path", "image_topics", "diagnostics_period", "device", "text_cache_dir",
        "labels", "descriptions", "vocabulary_file", "persist_vocabulary", "vocabulary_store"))
    out["machine"] = machine_info(lv.LIBRARIES)
    out["ros"] = dict(lv.ROS_ENV)
    tmp = Path(tempfile.mkdtemp(prefix="vl_bench_churn_"))
    out["_tmp"] = tmp
    node = publisher = recorder = churn = None
    try:
        model, out["model"], base = load_model(a)
        frames, scene = make_frames("synthetic", a.frames, a.objects, a.width, a.height,
                                    a.seed, Path("."))
        out["frames"] = {"scene": scene, "count": len(frames), "size": [a.width, a.height],
                         "objects_drawn": a.objects}
        ns = f"/vl_bench_churn_{os.getpid()}_{secrets.token_hex(3)}"
        topic = f"{ns}/camera_0/image_raw"
        params = {"model_path": str(model), "image_topics": [topic], "diagnostics_period": 1.0,
                  "device": a.device, "text_cache_dir": str(tmp / "text_cache"),
                  "vocabulary_store": str(tmp / "vocabulary.yaml"), "persist_vocabulary": False,
                  "qos_reliability": "reliable"}
        params = {k: v for k, v in params.items() if k not in raw}
        node = lv.NodeProcess(ns, params, raw, Path(a.log_dir or tmp) / "node.log", cpus)
        out["node"] = {"command": shlex.join(node.cmd), "pid": node.pid, "namespace": ns,
                       "params": {**params, **raw}, "pinned_cpus": list(cpus) if cpus else None}
        recorder = lv.Recorder(node.fqn, node.labels_topic)
        log(f"node pid {node.pid} starting (namespace {ns}, domain {lv.ROS_ENV['ROS_DOMAIN_ID']})")
        out["node"]["startup_s"] = r(recorder.wait_ready(node, [topic], a.node_timeout), 2)
        out["context"] = {"other_busy_processes": lv.other_busy_processes(exclude=[node.pid])}
        publisher = lv.Publisher([topic], [f for f, _ in frames], a.fps, a.warmup + a.duration)
        publisher.wait_started(node, timeout=120.0)
        if a.names != "none":
            churn = Churn(ParamClient(recorder, node.fqn), base, a.names, a.interval)
            churn.start()
        w_start = publisher.started_ns + int(a.warmup * 1e9)
        w_end = w_start + int(a.duration * 1e9)
        log(f"{a.fps:g} fps, names={a.names} every {a.interval:g} s: {a.warmup:g} s warm-up + "
            f"{a.duration:g} s measured")
        marks = nt.sample_until_done(a, node, publisher=publisher, recorder=recorder,
                                     w_start=w_start, w_end=w_end)
        rss, cpu_mark, diag_mark = marks.rss, marks.cpu, marks.diag
        if churn is not None:
            churn.stop_event.set()
            churn.join(timeout=20.0)
        time.sleep(2.0)  # outstanding labels and one more diagnostics message
        peak = node.stats.status_kb("VmHWM", "VmRSS")
        out["results"] = nt.summarise(a, publisher.result, recorder, w_start, w_end, cpu_mark,
                                      diag_mark, rss, peak, a.objects)
        out["publisher"] = out["results"].pop("_publisher")
        out["results"]["churn"] = churn_results(recorder, churn, rss, a.duration)
        out["targets"], out["pass"] = judge(a, out["results"])
    finally:
        if churn is not None:
            churn.stop_event.set()
        if publisher is not None:
            publisher.stop()
        if node is not None:
            out.setdefault("node", {})["exit_code"] = node.stop()
        if recorder is not None:
            recorder.close()


def judge(a, res: dict) -> tuple[dict[str, Any], bool]:
    slope = res["rss"]["slope_mb_per_min"]
    growth = slope * a.duration / 60.0 if slope is not None else None
    targets = {
        "rss_flat": {"growth_over_window_mb": r(growth), "max_mb": a.rss_growth_max_mb,
                     "pass": growth is not None and growth <= a.rss_growth_max_mb,
                     "meaningful": a.duration >= 300},
        "fps": {"processed_fps": res["processed_fps"],
                "min": r((1.0 - a.fps_tolerance) * a.fps),
                "pass": res["processed_fps"] >= (1.0 - a.fps_tolerance) * a.fps},
    }
    return targets, all(t["pass"] for t in targets.values())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench; prints one JSON object and returns the exit status."""
    lv.use_dds_profile()
    return bench_main("vocabulary_churn", ISSUE_TARGET, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
