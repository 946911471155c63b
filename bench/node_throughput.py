#!/usr/bin/env python3
"""Live ``vl_distill_node`` throughput: fps, drops, latency, CPU and RSS under a camera load.

The node runs as a subprocess (``python -m vl_distill_ros.ros.node``, its own process group,
private namespace) and is fed by ``--cameras`` synthetic 640x480 cameras at ``--fps`` each,
``--objects`` objects per frame, for ``--warmup`` + ``--duration`` seconds. The camera
publisher runs in its own process (``multiprocessing`` spawn), so this recorder process never
starves it; it stamps every frame with the wall clock at publication, cycling through a few
pre-rendered frames (synthetic coloured shapes on a wood-textured table, or YCB scenes with
``--scene ycb``). This process records ``~/labels`` (receive time) and ``/diagnostics`` and
samples the node's ``/proc/<pid>`` every ``--rss-interval`` seconds.

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
import json
import math
import os
import re
import secrets
import shlex
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from _common import (REPO, BenchError, args_config, emit, install_sigterm_handler, loadavg, log,
                     machine_info, percentile, r, run_bench)

if str(REPO) not in sys.path:  # the package, when it is not installed in the venv
    sys.path.insert(1, str(REPO))

from vl_distill_ros.ros import node_process  # noqa: E402 - ROS-free, no rclpy import
from vl_distill_ros.ros.node_process import NODE_NAME, log_tail, node_command  # noqa: E402

ISSUE_TARGET = ("The node sustains 30 frames/s from one 640x480 camera with 5 objects per "
                "frame on 2 cores, p95 latency under 100 ms, no growth in RSS over 5 minutes.")
#: Teacher text prompts of the bench bundles (as config/train_ycb.yaml).
TEMPLATES = ["a photo of a {name}."]
#: Saturated object colours (RGB), none close to a wooden table.
PALETTE = [(200, 30, 35), (30, 80, 200), (40, 160, 60), (240, 210, 40), (130, 40, 160),
           (240, 120, 20), (20, 170, 190), (230, 230, 235), (25, 25, 30), (220, 60, 150),
           (120, 200, 40), (90, 90, 100), (0, 110, 110), (250, 170, 190), (60, 40, 120),
           (180, 180, 40)]
#: Libraries whose versions the JSON records (the node's runtime).
LIBRARIES = ("torch", "onnxruntime", "cv2", "numpy")
#: Vocabulary of a built bundle when config/ycb_vocabulary.yaml is missing.
FALLBACK_NAMES = ["banana", "apple", "mug", "bowl", "power drill", "scissors", "tennis ball",
                  "sugar box", "mustard bottle", "cracker box", "spoon", "marker"]


# ==========================================================================================
# ROS environment (before any rclpy import, in this process and every child)
# ==========================================================================================
def setup_ros_env() -> dict[str, str]:
    """Keep DDS discovery on loopback and give this session its own domain.

    ``ROS_AUTOMATIC_DISCOVERY_RANGE`` is forced to ``LOCALHOST`` (discovery must never leave
    the machine); ``ROS_DOMAIN_ID`` is kept when set, else a random one in 10..99 is chosen.
    Children (node subprocess, spawned publisher) inherit ``os.environ``.
    """
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    if not os.environ.get("ROS_DOMAIN_ID", "").strip():
        os.environ["ROS_DOMAIN_ID"] = str(10 + secrets.randbelow(90))
    return {"ROS_AUTOMATIC_DISCOVERY_RANGE": os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"],
            "ROS_DOMAIN_ID": os.environ["ROS_DOMAIN_ID"]}


ROS_ENV = setup_ros_env()


# ==========================================================================================
# machine
# ==========================================================================================
def other_busy_processes(limit: int = 3, exclude: Sequence[int] = ()) -> list[dict[str, Any]]:
    """The processes that used the most CPU over the last ~1 s (context: a shared CPU)."""
    def ticks() -> dict[int, tuple[int, str]]:
        out = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat", encoding="utf-8") as fh:
                    s = fh.read()
                comm = s[s.index("(") + 1:s.rindex(")")]
                rest = s[s.rindex(")") + 2:].split()
                out[int(d)] = (int(rest[11]) + int(rest[12]), comm)
            except (OSError, ValueError, IndexError):
                continue
        return out

    try:
        a = ticks()
        time.sleep(1.0)
        b = ticks()
    except OSError:
        return []
    hz = os.sysconf("SC_CLK_TCK")
    rows = []
    for pid, (t, comm) in b.items():
        if pid in exclude or pid == os.getpid() or pid not in a:
            continue
        pct = (t - a[pid][0]) / hz * 100.0
        if pct >= 5.0:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                    "utf-8", "replace").strip()
            except OSError:
                cmd = comm
            rows.append({"pid": pid, "cpu_percent": round(pct, 1), "command": cmd[:120]})
    return sorted(rows, key=lambda r: -r["cpu_percent"])[:limit]


class ProcStats:
    """CPU time and memory of one process from /proc (Linux)."""

    HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu_s(self) -> float | None:
        try:
            with open(f"/proc/{self.pid}/stat", encoding="utf-8") as fh:
                rest = fh.read().rsplit(")", 1)[1].split()
            return (int(rest[11]) + int(rest[12])) / self.HZ
        except (OSError, IndexError, ValueError):
            return None

    def status_kb(self, *keys: str) -> dict[str, int]:
        out: dict[str, int] = {}
        try:
            with open(f"/proc/{self.pid}/status", encoding="utf-8") as fh:
                for line in fh:
                    k, _, v = line.partition(":")
                    if k in keys:
                        out[k] = int(v.split()[0])
        except (OSError, ValueError, IndexError):
            pass
        return out

    @staticmethod
    def system_ticks() -> tuple[int, int]:
        """(busy, total) jiffies of all CPUs from /proc/stat."""
        with open("/proc/stat", encoding="utf-8") as fh:
            parts = [int(x) for x in fh.readline().split()[1:]]
        idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
        total = sum(parts[:8])
        return total - idle, total


# ==========================================================================================
# node parameters
# ==========================================================================================
def parse_node_params(items: Sequence[str] | None, controlled: Sequence[str]) -> dict[str, str]:
    """``NAME:=VALUE`` strings -> {name: value text} (values go to ``--ros-args -p`` as is)."""
    from vl_distill_ros.ros import params as P

    out: dict[str, str] = {}
    for item in items or []:
        sep = ":=" if ":=" in item else "="
        name, found, value = item.partition(sep)
        name = name.strip()
        if not found or not name:
            raise BenchError(f"-p expects NAME:=VALUE, got {item!r}")
        if name not in P.BY_NAME:
            raise BenchError(f"-p {name}: not a parameter of {NODE_NAME}; known: "
                             f"{', '.join(sorted(P.BY_NAME))}")
        if name in controlled:
            raise BenchError(f"-p {name}: set by the bench itself ({', '.join(controlled)}); "
                             "use the dedicated option")
        out[name] = value
    return out


def yaml_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


# ==========================================================================================
# model bundle
# ==========================================================================================
def default_model_path() -> Path:
    return REPO / "vl_distill_ros" / "bundles" / "default_student.vdb"


def offline_teacher_service(cache_dir: str | Path | None = None, teacher_factory=None):
    """A TextEmbeddingService for the offline ConSE teacher (MiniLM text side), bench prompts."""
    from vl_distill_ros.config import TeacherConfig
    from vl_distill_ros.model.teachers.factory import teacher_spec
    from vl_distill_ros.model.text_service import TextEmbeddingService

    spec = teacher_spec(TeacherConfig(backend="offline", device="cpu"))
    return spec, TextEmbeddingService(spec, spec["id"], TEMPLATES, enrich=True,
                                      cache_dir=cache_dir, teacher_factory=teacher_factory)


def default_vocabulary():
    from vl_distill_ros.model.vocabulary import Vocabulary, VocabularyError

    path = REPO / "config" / "ycb_vocabulary.yaml"
    try:
        return Vocabulary.load(path), str(path.relative_to(REPO))
    except (VocabularyError, OSError, ValueError):
        return Vocabulary.from_names(FALLBACK_NAMES), "builtin list"


def build_bundle(path: Path, vocab=None, backbone: str = "efficientnet_lite0",
                 image_size: int = 128, pretrained: str = "imagenet",
                 constant_label: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Write a bench bundle like test/helpers.py: offline teacher text embeddings (MiniLM),
    an untrained head. With ``constant_label`` the head's weight is zero and its bias the
    text embedding of that label, so the student outputs that direction for every crop.

    Returns facts about it, including ``teacher_load_s`` (building the teacher and its first
    text encode, i.e. loading MiniLM, in this process) and the
    service (key ``_service``) and teacher (``_teacher``) for reuse.
    """
    import torch

    from vl_distill_ros.model.bundle import save_bundle
    from vl_distill_ros.config import StudentConfig
    from vl_distill_ros.model.student import build_student
    from vl_distill_ros.model.vocabulary import Label

    t0 = time.perf_counter()
    if vocab is None:
        vocab, vocab_source = default_vocabulary()
    else:
        vocab_source = "bench"
    spec, service = offline_teacher_service()
    t1 = time.perf_counter()
    teacher = service.warm()
    with torch.no_grad():  # the text encoder loads lazily, on its first call
        teacher.encode_texts(["a photo of a thing."])
    t2 = time.perf_counter()
    emb = service.embed_vocabulary(vocab)
    t3 = time.perf_counter()
    torch.manual_seed(seed)
    student = build_student(StudentConfig(backbone=backbone, pretrained=pretrained,
                                          image_size=image_size), emb.shape[1]).eval()
    if constant_label is not None:
        target = service.embed([Label(constant_label)])[0]
        with torch.no_grad():
            student.head.weight.zero_()
            student.head.bias.copy_(target)
    save_bundle(path, student, emb, vocab, spec["id"], spec, TEMPLATES, enrich=True)
    t4 = time.perf_counter()
    return {"path": str(path), "source": "built by the bench", "backbone": backbone,
            "image_size": image_size, "pretrained": pretrained, "teacher_id": spec["id"],
            "vocabulary_size": len(vocab), "vocabulary_source": vocab_source,
            "head": f"constant '{constant_label}'" if constant_label else "random init",
            "teacher_load_s": round(t2 - t1, 3), "embed_vocabulary_s": round(t3 - t2, 3),
            "build_s": round(t4 - t0, 2), "size_mb": round(path.stat().st_size / 2**20, 2),
            "_service": service, "_teacher": teacher}


def public(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if not k.startswith("_")}


def describe_bundle(path: Path) -> dict[str, Any]:
    try:
        from vl_distill_ros.model.bundle import read_manifest

        m = read_manifest(path)
        cfg = m.get("student", {}).get("config", {})
        return {"path": str(path), "backbone": cfg.get("backbone"),
                "image_size": cfg.get("image_size"), "teacher_id": m["teacher"].get("id"),
                "vocabulary_size": len(m.get("vocabulary", {}).get("labels", [])),
                "has_onnx": "student.onnx" in m.get("files", {}),
                "size_mb": round(path.stat().st_size / 2**20, 2)}
    except Exception as exc:  # noqa: BLE001 - the node reports a broken bundle itself
        return {"path": str(path), "manifest_error": str(exc)}


# ==========================================================================================
# frames
# ==========================================================================================
def _shape_mask(kind: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    import cv2

    m = np.zeros((h, w), np.uint8)
    if kind == "rect":
        cv2.rectangle(m, (0, 0), (w - 1, h - 1), 255, -1)
    elif kind == "rounded":  # a bottle/can seen from the side
        r = max(2, min(h, w) // 4)
        cv2.rectangle(m, (r, 0), (w - 1 - r, h - 1), 255, -1)
        cv2.rectangle(m, (0, r), (w - 1, h - 1 - r), 255, -1)
        for cx, cy in ((r, r), (w - 1 - r, r), (r, h - 1 - r), (w - 1 - r, h - 1 - r)):
            cv2.circle(m, (cx, cy), r, 255, -1)
    elif kind == "ellipse":
        cv2.ellipse(m, (w // 2, h // 2), (w // 2 - 1, h // 2 - 1), 0, 0, 360, 255, -1)
    elif kind == "rotated":
        angle = float(rng.uniform(15, 40))
        box = cv2.boxPoints(((w / 2, h / 2), (w * 0.62, h * 0.62), angle))
        cv2.fillPoly(m, [np.round(box).astype(np.int32)], 255)
    else:  # polygon
        n = int(rng.integers(3, 7))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n)) if n > 3 else np.array([0.3, 2.4, 4.3])
        pts = np.stack([w / 2 + (w / 2 - 2) * np.cos(ang), h / 2 + (h / 2 - 2) * np.sin(ang)], 1)
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 255)
    return m


def synthetic_tabletop_frames(n: int, k: int, width: int = 640, height: int = 480,
                              seed: int = 0, grain: float = 0.2) -> list[tuple[np.ndarray, list[tuple[int, ...]]]]:
    """``n`` frames of ``k`` distinct coloured shapes on a wood-textured table, with a soft
    shadow each; returns ``[(rgb uint8 image, [object boxes (x, y, w, h)]), ...]``."""
    import cv2

    from vl_distill_ros.sim.backgrounds import make_background

    rng = np.random.default_rng(seed)
    frames = []
    kinds = ("rect", "rounded", "ellipse", "rotated", "polygon")
    margin = max(24, min(width, height) // 14)
    for _ in range(n):
        side = max(width, height)
        tex = make_background("wood", side, rng, noise_sigma=0.0)
        table = cv2.resize(tex, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)
        mean = table.reshape(-1, 3).mean(0)
        table = mean + grain * (table - mean)  # a finished table top: subtle grain
        # a gentle lighting gradient across the table
        gy, gx = np.mgrid[0:height, 0:width].astype(np.float32)
        table *= (0.92 + 0.12 * gx / width - 0.04 * gy / height)[..., None]
        img = table.copy()
        cols = max(1, math.ceil(math.sqrt(k * width / height)))
        rows = max(1, math.ceil(k / cols))
        cw = (width - 2 * margin) / cols
        ch = (height - 2 * margin) / rows
        cells = rng.permutation(rows * cols)[:k]
        colours = rng.permutation(len(PALETTE))
        boxes = []
        for j, cell in enumerate(cells):
            r, c = divmod(int(cell), cols)
            ow = int(cw * rng.uniform(0.45, 0.75))
            oh = int(ch * rng.uniform(0.45, 0.75))
            x = int(margin + c * cw + rng.uniform(0.1, 0.9) * (cw - ow))
            y = int(margin + r * ch + rng.uniform(0.1, 0.9) * (ch - oh))
            mask = _shape_mask(kinds[j % len(kinds)] if k <= len(kinds)
                               else kinds[int(rng.integers(len(kinds)))], oh, ow, rng)
            mf = mask.astype(np.float32) / 255.0
            # shadow: the silhouette shifted down-right, blurred, darkening the table
            sh = np.zeros((height, width), np.float32)
            dx, dy = int(ow * 0.08) + 3, int(oh * 0.08) + 3
            y0, x0 = min(height, y + dy), min(width, x + dx)
            sh[y0:y0 + oh, x0:x0 + ow] = mf[:max(0, min(oh, height - y0)), :max(0, min(ow, width - x0))]
            sh = cv2.GaussianBlur(sh, (0, 0), 4.0)
            img *= (1.0 - 0.35 * sh)[..., None]
            colour = np.array(PALETTE[int(colours[j % len(PALETTE)])], np.float32)
            shade = np.linspace(1.08, 0.82, ow, dtype=np.float32)[None, :, None]
            obj = np.broadcast_to(colour, (oh, ow, 3)) * shade
            if rng.random() < 0.5:  # a printed label band
                b0 = int(oh * rng.uniform(0.3, 0.5))
                obj = obj.copy()
                obj[b0:b0 + max(2, oh // 6)] = obj[b0:b0 + max(2, oh // 6)] * 0.3 + 170
            region = img[y:y + oh, x:x + ow]
            region[:] = region * (1 - mf[..., None]) + obj * mf[..., None]
            ys, xs = np.nonzero(mask)
            boxes.append((x + int(xs.min()), y + int(ys.min()), int(xs.max() - xs.min() + 1),
                          int(ys.max() - ys.min() + 1)))
        img += rng.normal(0.0, 2.0, img.shape).astype(np.float32)
        frames.append((np.clip(img + 0.5, 0, 255).astype(np.uint8), boxes))
    return frames


def ycb_frames(n: int, k: int, models: Path, width: int = 640, height: int = 480,
               seed: int = 0) -> list[tuple[np.ndarray, list[tuple[int, ...]]]]:
    """``n`` rendered YCB tabletop scenes with ``k`` objects (needs pybullet + the models)."""
    from vl_distill_ros.sim.scene import SceneRenderer, SceneSpec, render_scene

    if not 1 <= k <= 10:
        raise BenchError(f"--scene ycb places 1..10 objects, got --objects {k}")
    rng = np.random.default_rng(seed)
    spec = SceneSpec(width=width, height=height, objects_per_scene=(k, k))
    out = []
    with SceneRenderer(models) as renderer:
        for _ in range(n):
            frame = render_scene(renderer, renderer.keys, rng, spec)
            out.append((frame.image, [tuple(int(v) for v in o.bbox) for o in frame.objects]))
    return out


def make_frames(scene: str, n: int, k: int, width: int, height: int, seed: int,
                ycb_models: Path) -> tuple[list, str]:
    if scene == "ycb":
        if not ycb_models.is_dir():
            raise BenchError(f"--scene ycb: no models folder {ycb_models} (--ycb-models)")
        try:
            return ycb_frames(n, k, ycb_models, width, height, seed), f"ycb ({ycb_models})"
        except BenchError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. pybullet missing
            raise BenchError(f"--scene ycb: rendering failed: {exc}") from None
    return synthetic_tabletop_frames(n, k, width, height, seed), "synthetic shapes on wood"


def offline_proposals(frames: list, params: dict[str, str]) -> list[int]:
    """How many boxes the node's proposer gives for each frame (its settings from ``-p``)."""
    from vl_distill_ros.perception.proposals import ProposalConfig, propose_boxes

    kw = {}
    for key, field in (("proposal_min_area_frac", "min_area_frac"),
                       ("proposal_max_area_frac", "max_area_frac"),
                       ("proposal_max_count", "max_count"), ("proposal_pad_frac", "pad_frac")):
        if key in params:
            kw[field] = yaml_value(params[key])
    cfg = ProposalConfig(**kw)
    return [len(propose_boxes(img, cfg)) for img, _ in frames]


# ==========================================================================================
# node subprocess
# ==========================================================================================
class NodeProcess(node_process.NodeProcess):
    """``vl_distill_node`` in its own process group (:class:`vl_distill_ros.ros.node_process.
    NodeProcess`: :meth:`stop` always ends the group) with its /proc statistics."""

    def __init__(self, namespace: str, params: dict[str, Any], raw_params: dict[str, str],
                 log_path: Path, cpus: tuple[int, ...] | None = None) -> None:
        self.namespace = namespace
        self.fqn = f"{namespace}/{NODE_NAME}"
        self.labels_topic = f"{self.fqn}/labels"
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("ROS_LOG_DIR", str(log_path.parent / "ros_log"))
        env["RCUTILS_CONSOLE_OUTPUT_FORMAT"] = "[{severity}] [{time}] [{name}]: {message}"
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        self.t_start = time.monotonic()
        try:
            super().__init__(node_command(namespace, params, raw_params), log_path, env,
                             cwd=REPO, append=True, cpus=cpus)
        except OSError as exc:
            raise BenchError(f"cannot start the node: {exc}", exit_code=3) from None
        self.stats = ProcStats(self.pid)

    def died(self, when: str) -> BenchError:
        return BenchError(f"the node exited with code {self.proc.returncode} {when}",
                          exit_code=3, node_log_tail=log_tail(self.log_path))


# ==========================================================================================
# recorder (this process): labels, diagnostics, parameter calls
# ==========================================================================================
class Recorder:
    """A node in this process that records ``~/labels`` and the node's ``/diagnostics``."""

    def __init__(self, fqn: str, labels_topic: str,
                 on_label: Callable[[int, dict], None] | None = None) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from std_msgs.msg import String

        self.fqn = fqn
        self.labels_topic = labels_topic
        self.labels: list[tuple[int, dict]] = []     # (receive wall ns, document)
        self.diags: list[tuple[int, dict]] = []      # (receive wall ns, {"node": .., cams})
        self.lock = threading.Lock()
        self.on_label = on_label
        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context)
        self.node = rclpy.create_node(f"vl_bench_recorder_{os.getpid()}", context=self.context,
                                      start_parameter_services=False)
        self.node.create_subscription(
            String, labels_topic, self._on_label,
            QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                       reliability=ReliabilityPolicy.RELIABLE))
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, name="vl_bench_spin",
                                       daemon=True)
        self.thread.start()

    def _on_label(self, msg) -> None:
        t = time.time_ns()
        try:
            doc = json.loads(msg.data)
        except ValueError:
            return
        with self.lock:
            self.labels.append((t, doc))
        if self.on_label is not None:
            self.on_label(t, doc)

    def _on_diag(self, msg) -> None:
        t = time.time_ns()
        mine = [st for st in msg.status if st.hardware_id == self.fqn]
        if not mine:
            return
        entry: dict[str, Any] = {"node": None, "cameras": {}}
        for st in mine:
            vals = {kv.key: kv.value for kv in st.values}
            if st.name.endswith("model and vocabulary"):
                entry["node"] = {"message": st.message, **vals}
            elif ": camera " in st.name:
                entry["cameras"][vals.get("topic", st.name)] = vals
        with self.lock:
            self.diags.append((t, entry))

    def label_count(self) -> int:
        with self.lock:
            return len(self.labels)

    def diag_count(self) -> int:
        with self.lock:
            return len(self.diags)

    def last_diag(self) -> dict | None:
        with self.lock:
            return self.diags[-1][1] if self.diags else None

    def wait_ready(self, node: NodeProcess, camera_topics: Sequence[str], timeout: float,
                   since_ns: int = 0) -> float:
        """Wait until the node publishes labels, subscribes to every camera and sent
        diagnostics (after ``since_ns``); returns the seconds waited. Raises BenchError."""
        t0 = time.monotonic()
        while True:
            with self.lock:
                diag_ok = any(t >= since_ns and d["node"] is not None for t, d in self.diags)
            pubs_ok = self.node.count_publishers(node.labels_topic) > 0
            subs_ok = all(self.node.count_subscribers(t) > 0 for t in camera_topics)
            if diag_ok and pubs_ok and subs_ok:
                return time.monotonic() - t0
            if node.poll() is not None:
                raise node.died("before it was ready")
            if time.monotonic() - t0 > timeout:
                raise BenchError(
                    f"the node did not come up within {timeout:g} s (labels publisher "
                    f"{'seen' if pubs_ok else 'not seen'}, camera subscriptions "
                    f"{'matched' if subs_ok else 'not matched'}, diagnostics "
                    f"{'seen' if diag_ok else 'not seen'})", exit_code=3,
                    node_log_tail=log_tail(node.log_path))
            time.sleep(0.05)

    def close(self) -> None:
        try:
            self.executor.shutdown(timeout_sec=2.0)
        except Exception:  # noqa: BLE001
            pass
        try:
            self.node.destroy_node()
        except Exception:  # noqa: BLE001
            pass
        self.context.try_shutdown()
        self.thread.join(timeout=2.0)


# ==========================================================================================
# camera publisher (separate process)
# ==========================================================================================
def publisher_main(topics: list[str], frames: list[np.ndarray], fps: float, duration_s: float,
                   queue, stop_event, wait_subscribers_s: float, frame_id: str = "camera",
                   record_stamps: bool = True, reliability: str = "reliable",
                   depth: int = 10) -> None:
    """Publish ``frames`` cyclically on every topic at ``fps`` (cameras staggered by
    1/(fps*N)), fresh wall-clock stamps, for ``duration_s`` s (inf: until ``stop_event``).

    A slot that is already more than one period late is skipped, as a real camera would.
    Reports ``("started", wall_ns)`` then ``("done", stats)`` (or ``("error", text)``).
    """
    try:
        import rclpy
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        ctx = rclpy.Context()
        rclpy.init(args=[], context=ctx)
        node = rclpy.create_node(f"vl_bench_camera_{os.getpid()}", context=ctx,
                                 start_parameter_services=False)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth),
                         reliability=(ReliabilityPolicy.RELIABLE if reliability == "reliable"
                                      else ReliabilityPolicy.BEST_EFFORT),
                         durability=DurabilityPolicy.VOLATILE)
        pubs = [node.create_publisher(Image, t, qos) for t in topics]
        msgs = []  # per camera, per frame: messages built once, only the stamp changes
        for ci, _ in enumerate(topics):
            row = []
            for img in frames:
                m = Image()
                m.header.frame_id = f"{frame_id}_{ci}"
                m.height, m.width = int(img.shape[0]), int(img.shape[1])
                m.encoding, m.is_bigendian, m.step = "rgb8", 0, int(img.shape[1]) * 3
                m.data = img.tobytes()
                row.append(m)
            msgs.append(row)
        t_wait = time.monotonic()
        while wait_subscribers_s > 0 and not all(p.get_subscription_count() > 0 for p in pubs):
            if time.monotonic() - t_wait > wait_subscribers_s or stop_event.is_set():
                queue.put(("error", f"no subscriber matched {topics} within "
                                    f"{wait_subscribers_s:g} s"))
                return
            time.sleep(0.02)
        time.sleep(0.3 if wait_subscribers_s > 0 else 0.0)  # let matching settle both ways
        n_cam = len(topics)
        period = 1.0 / fps
        stamps: list[list[int]] = [[] for _ in topics]
        published = [0] * n_cam
        skipped = [0] * n_cam
        lags: list[float] = []
        pub_cost: list[float] = []
        ticks0 = os.times()
        t0 = time.monotonic()
        wall0 = time.time_ns()
        queue.put(("started", wall0))
        k = 0
        done = False
        while not done:
            for ci in range(n_cam):
                offset = (k + ci / n_cam) * period
                if offset >= duration_s or stop_event.is_set():
                    done = True
                    break
                target = t0 + offset
                now = time.monotonic()
                if now < target:
                    time.sleep(target - now)
                elif now - target > period:
                    skipped[ci] += 1
                    continue
                msg = msgs[ci][(k + ci) % len(frames)]
                a = time.monotonic()
                stamp = time.time_ns()
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
                pubs[ci].publish(msg)
                b = time.monotonic()
                published[ci] += 1
                if record_stamps:
                    stamps[ci].append(stamp)
                if len(lags) < 200_000:
                    lags.append(a - target)
                    pub_cost.append(b - a)
            k += 1
        elapsed = time.monotonic() - t0
        ticks1 = os.times()
        cpu = (ticks1.user - ticks0.user) + (ticks1.system - ticks0.system)
        lags_ms = sorted(x * 1e3 for x in lags) or [0.0]
        cost_ms = sorted(x * 1e3 for x in pub_cost) or [0.0]
        queue.put(("done", {
            "wall0_ns": wall0, "elapsed_s": elapsed, "published": published,
            "skipped_slots": skipped, "stamps": stamps,
            "lag_ms_p50": lags_ms[len(lags_ms) // 2],
            "lag_ms_p95": lags_ms[min(len(lags_ms) - 1, int(0.95 * len(lags_ms)))],
            "lag_ms_max": lags_ms[-1],
            "publish_call_ms_p50": cost_ms[len(cost_ms) // 2],
            "publish_call_ms_max": cost_ms[-1],
            "cpu_percent": 100.0 * cpu / elapsed if elapsed > 0 else None}))
        try:
            node.destroy_node()
        finally:
            ctx.try_shutdown()
    except Exception as exc:  # noqa: BLE001 - report, never hang the parent
        try:
            queue.put(("error", f"publisher failed: {exc!r}"))
        except Exception:  # noqa: BLE001
            pass


class Publisher:
    """The camera publisher process (multiprocessing, spawn: no fork of an rclpy process)."""

    def __init__(self, topics: list[str], frames: list[np.ndarray], fps: float,
                 duration_s: float, wait_subscribers_s: float = 30.0,
                 record_stamps: bool = True, reliability: str = "reliable",
                 depth: int = 10) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.queue = ctx.Queue()
        self.stop_event = ctx.Event()
        self.proc = ctx.Process(target=publisher_main, name="vl_bench_camera", daemon=True,
                                args=(topics, frames, fps, duration_s, self.queue,
                                      self.stop_event, wait_subscribers_s),
                                kwargs={"record_stamps": record_stamps,
                                        "reliability": reliability, "depth": depth})
        self.proc.start()
        self.started_ns: int | None = None
        self.result: dict | None = None
        self.error: str | None = None

    def poll(self, timeout: float = 0.0) -> None:
        """Take pending reports from the queue."""
        import queue as q

        while True:
            try:
                kind, payload = self.queue.get(timeout=timeout) if timeout else \
                    self.queue.get_nowait()
            except q.Empty:
                return
            timeout = 0.0
            if kind == "started":
                self.started_ns = payload
            elif kind == "done":
                self.result = payload
            else:
                self.error = payload

    def wait_started(self, node: "NodeProcess", timeout: float) -> None:
        """Wait for the "started" report; BenchError when it fails or the node dies."""
        t0 = time.monotonic()
        while self.started_ns is None:
            self.poll(timeout=0.2)
            if self.error:
                raise BenchError(f"camera publisher: {self.error}", exit_code=3,
                                 node_log_tail=log_tail(node.log_path))
            if node.poll() is not None:
                raise node.died("before publishing started")
            if self.started_ns is None and (not self.proc.is_alive()
                                            or time.monotonic() - t0 > timeout):
                self.poll(timeout=0.5)
                if self.started_ns is None:
                    raise BenchError("the camera publisher did not start"
                                     + (f": {self.error}" if self.error else ""), exit_code=3)

    def stop(self) -> None:
        self.stop_event.set()
        if self.proc.is_alive():
            self.proc.join(timeout=5.0)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=5.0)
        if self.proc.is_alive():  # pragma: no cover
            self.proc.kill()
            self.proc.join(timeout=5.0)


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
    ap.add_argument("--scene", choices=("synthetic", "ycb"), default="synthetic",
                    help="synthetic: coloured shapes on a wood texture (numpy/OpenCV); ycb: "
                         "rendered YCB scenes (vl_distill_ros.sim.scene, needs pybullet "
                         "and --ycb-models; at most 10 objects)")
    ap.add_argument("--ycb-models", type=Path, default=REPO.parent / "shared" / "ycb_models",
                    help="YCB models folder for --scene ycb")
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
    ap.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                    help="node parameter, as in 'ros2 run ... -p' (repeatable), e.g. "
                         "-p torch_threads:=2 -p crop_source:=full_frame "
                         "-p proposal_max_count:=5")
    ap.add_argument("--device", default="cpu",
                    help="node 'device' parameter (the target is about CPU cores; 'auto' "
                         "picks cuda when available)")
    ap.add_argument("--node-cpus", default="",
                    help="pin the node to these CPUs, e.g. '0,1' (sched_setaffinity; default: "
                         "no pinning)")
    ap.add_argument("--node-timeout", type=float, default=180.0,
                    help="seconds the node may take to come up")
    ap.add_argument("--drain", type=float, default=3.0,
                    help="seconds to wait for the last labels after publishing stops")
    ap.add_argument("--fps-tolerance", type=float, default=0.05,
                    help="the fps target passes when processed fps >= (1 - this) x requested "
                         "fps x cameras (and the publisher achieved the same)")
    ap.add_argument("--latency-target-ms", type=float, default=100.0,
                    help="p95 latency target (ms)")
    ap.add_argument("--rss-growth-max-mb", type=float, default=5.0,
                    help="'no RSS growth' passes when slope x window length <= this (MB)")
    ap.add_argument("--log-dir", type=Path, default=None,
                    help="keep node.log here (default: a temporary folder, deleted)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the rendered frames")
    return ap


def check_args(a: argparse.Namespace) -> None:
    if a.cameras < 1:
        raise BenchError("--cameras must be >= 1")
    if not a.fps > 0:
        raise BenchError("--fps must be > 0")
    if a.objects < 1:
        raise BenchError("--objects must be >= 1")
    if a.duration <= 0 or a.warmup < 0:
        raise BenchError("--duration must be > 0 and --warmup >= 0")
    if a.frames < 1 or a.width < 32 or a.height < 32:
        raise BenchError("--frames must be >= 1 and the frame at least 32x32")
    if a.rss_interval <= 0:
        raise BenchError("--rss-interval must be > 0")


def run(a: argparse.Namespace, out: dict[str, Any]) -> None:
    check_args(a)
    cpus = tuple(int(c) for c in a.node_cpus.split(",") if c.strip()) if a.node_cpus else None
    raw_params = parse_node_params(a.param, controlled=("model_path", "image_topics",
                                                        "diagnostics_period", "device"))
    out["machine"] = machine_info(LIBRARIES)
    out["ros"] = dict(ROS_ENV)
    tmp = Path(tempfile.mkdtemp(prefix="vl_bench_tp_"))
    out["_tmp"] = tmp
    log_dir = a.log_dir or tmp
    node = publisher = recorder = None
    try:
        # ---- model
        if a.model is not None:
            if not a.model.is_file():
                raise BenchError(f"--model {a.model}: no such file")
            model, model_info = a.model.resolve(), describe_bundle(a.model.resolve())
            model_info["source"] = "--model"
        elif default_model_path().is_file():
            model = default_model_path()
            model_info = {**describe_bundle(model), "source": "packaged default"}
        else:
            log("no packaged default bundle: building an EfficientNet-Lite0 bundle "
                f"({a.student_size} px) ...")
            model = a.keep_bundle.resolve() if a.keep_bundle else tmp / "bench_student.vdb"
            model.parent.mkdir(parents=True, exist_ok=True)
            model_info = public(build_bundle(model, image_size=a.student_size))
            log(f"bundle built in {model_info['build_s']} s")
        out["model"] = model_info

        # ---- frames
        log(f"rendering {a.frames} {a.width}x{a.height} frames with {a.objects} objects ...")
        frames, scene_desc = make_frames(a.scene, a.frames, a.objects, a.width, a.height,
                                         a.seed, a.ycb_models)
        offline = offline_proposals(frames, raw_params)
        crop_source = str(yaml_value(raw_params.get("crop_source", "proposals")))
        expected = {"full_frame": 1}.get(crop_source, a.objects)
        out["frames"] = {"scene": scene_desc, "count": len(frames),
                         "size": [a.width, a.height], "objects_drawn": [len(b) for _, b in frames],
                         "proposals_offline": offline, "crop_source": crop_source}

        # ---- node
        ns = f"/vl_bench_{os.getpid()}_{secrets.token_hex(3)}"
        topics = [f"{ns}/camera_{i}/image_raw" for i in range(a.cameras)]
        params = {"model_path": str(model), "image_topics": topics,
                  "diagnostics_period": 1.0, "device": a.device,
                  "text_cache_dir": str(tmp / "text_cache"),
                  "vocabulary_store": str(tmp / "vocabulary.yaml"),
                  "persist_vocabulary": False}
        params = {k: v for k, v in params.items() if k not in raw_params}
        node = NodeProcess(ns, params, raw_params, Path(log_dir) / "node.log", cpus)
        out["node"] = {"command": shlex.join(node.cmd), "pid": node.pid, "namespace": ns,
                       "params": {**{k: v for k, v in params.items()}, **raw_params},
                       "pinned_cpus": list(cpus) if cpus else None}
        recorder = Recorder(node.fqn, node.labels_topic)
        log(f"node pid {node.pid} starting (namespace {ns}, domain {ROS_ENV['ROS_DOMAIN_ID']})")
        out["node"]["startup_s"] = r(recorder.wait_ready(node, topics, a.node_timeout), 2)
        log(f"node ready after {out['node']['startup_s']} s")
        out["context"] = {"other_busy_processes": other_busy_processes(exclude=[node.pid])}

        # ---- publish
        total = a.warmup + a.duration
        publisher = Publisher(topics, [f for f, _ in frames], a.fps, total,
                              reliability=a.publisher_qos, depth=a.publisher_depth)
        publisher.wait_started(node, timeout=120.0)
        wall0 = publisher.started_ns
        w_start = wall0 + int(a.warmup * 1e9)
        w_end = w_start + int(a.duration * 1e9)
        log(f"publishing {a.cameras} camera(s) at {a.fps:g} fps: {a.warmup:g} s warm-up + "
            f"{a.duration:g} s measured")

        rss_samples: list[tuple[float, float]] = []   # (s relative to window start, MB)
        cpu_mark: dict[str, Any] = {}
        diag_mark: dict[str, Any] = {}
        next_rss = time.time_ns()
        next_progress = w_start
        while publisher.result is None:
            publisher.poll(timeout=0.1)
            if publisher.error:
                raise BenchError(f"camera publisher: {publisher.error}", exit_code=3)
            if node.poll() is not None:
                raise node.died("during the run")
            now = time.time_ns()
            if now >= next_rss:
                kb = node.stats.status_kb("VmRSS").get("VmRSS")
                if kb is not None:
                    rss_samples.append(((now - w_start) / 1e9, kb / 1024.0))
                next_rss += int(a.rss_interval * 1e9)
            if "start" not in cpu_mark and now >= w_start:
                cpu_mark["start"] = (now, node.stats.cpu_s(), ProcStats.system_ticks())
                diag_mark["start_count"] = recorder.diag_count()
            if "end" not in cpu_mark and now >= w_end:
                cpu_mark["end"] = (now, node.stats.cpu_s(), ProcStats.system_ticks())
                diag_mark["end_count"] = recorder.diag_count()
            if now >= next_progress and now >= w_start:
                log(f"  {(now - w_start) / 1e9:5.0f}/{a.duration:g} s: "
                    f"{recorder.label_count()} labels")
                next_progress += int(30e9)
            if not publisher.proc.is_alive() and publisher.result is None:
                publisher.poll(timeout=1.0)
                if publisher.result is None:
                    why = publisher.error or "no report"
                    raise BenchError(f"the camera publisher died ({why})", exit_code=3)
        if "end" not in cpu_mark:
            cpu_mark["end"] = (time.time_ns(), node.stats.cpu_s(), ProcStats.system_ticks())
            diag_mark["end_count"] = recorder.diag_count()
        kb = node.stats.status_kb("VmRSS").get("VmRSS")
        if kb is not None:
            rss_samples.append(((time.time_ns() - w_start) / 1e9, kb / 1024.0))

        # ---- drain: outstanding labels, one more diagnostics message
        t_d = time.monotonic()
        last_n = recorder.label_count()
        last_change = t_d
        while time.monotonic() - t_d < a.drain:
            time.sleep(0.1)
            n = recorder.label_count()
            if n != last_n:
                last_n, last_change = n, time.monotonic()
            elif time.monotonic() - last_change > 1.0 and \
                    recorder.diag_count() > diag_mark["end_count"]:
                break
        end_wait = time.monotonic()
        while recorder.diag_count() <= diag_mark["end_count"] and time.monotonic() - end_wait < 3:
            time.sleep(0.1)
        peak = node.stats.status_kb("VmHWM", "VmRSS")
        out["results"] = summarise(a, publisher.result, recorder, w_start, w_end, cpu_mark,
                                   diag_mark, rss_samples, peak, expected)
        out["publisher"] = out["results"].pop("_publisher")
        out["targets"], out["pass"] = judge(a, out)
    finally:
        if publisher is not None:
            publisher.stop()
        if node is not None:
            rc = node.stop()
            out.setdefault("node", {})["exit_code"] = rc
        if recorder is not None:
            recorder.close()


def summarise(a, pub: dict, rec: Recorder, w_start: int, w_end: int, cpu_mark: dict,
              diag_mark: dict, rss: list, peak: dict, expected: int) -> dict[str, Any]:
    win_s = (w_end - w_start) / 1e9
    # publisher, window only
    published_win = [sum(1 for s in cam if w_start <= s < w_end) for cam in pub["stamps"]]
    published_set = {(i, s) for i, cam in enumerate(pub["stamps"]) for s in cam
                     if w_start <= s < w_end}
    cam_index = {f"camera_{i}": i for i in range(a.cameras)}
    with rec.lock:
        labels = list(rec.labels)
        diags = list(rec.diags)
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
            continue
        if key in seen:
            dup += 1
            continue
        seen.add(key)
        lat_ms.append((t_recv - st) / 1e6)
        objs.append(len(doc.get("objects", [])))
    lat_sorted = sorted(lat_ms)
    labelled = len(seen)
    published = sum(published_win)
    hist: dict[str, int] = {}
    for n in objs:
        hist[str(n)] = hist.get(str(n), 0) + 1

    # node counters from diagnostics: last message before the window vs first after it
    def counters(entry: dict | None) -> dict[str, int]:
        tot = {"received": 0, "processed": 0, "dropped": 0, "errors": 0, "bad_frames": 0}
        if entry:
            for vals in entry["cameras"].values():
                for k in tot:
                    try:
                        tot[k] += int(vals.get(k, 0))
                    except ValueError:
                        pass
        return tot

    # the last diagnostics message before the window and the first one after it
    i0 = diag_mark.get("start_count", 0) - 1
    i1 = diag_mark.get("end_count", len(diags))
    d0 = diags[i0] if 0 <= i0 < len(diags) else None
    d1 = diags[i1] if i1 < len(diags) else (diags[-1] if diags else None)
    c0, c1 = counters(d0[1] if d0 else None), counters(d1[1] if d1 else None)
    node_counts = {k: c1[k] - c0[k] for k in c0}
    if d0 is not None and d1 is not None and d1[0] > d0[0]:
        node_counts["span_s"] = r((d1[0] - d0[0]) / 1e9, 2)
        # frames published in the same span (minus a small transport allowance)
        pub_span = sum(1 for cam in pub["stamps"] for s in cam
                       if d0[0] - 20_000_000 < s <= d1[0] - 20_000_000)
        node_counts["published_in_span"] = pub_span
        lost = pub_span - node_counts["received"]
        node_counts["not_received_by_node"] = lost
        node_counts["not_received_fraction"] = r(lost / pub_span, 4) if pub_span else None
    node_p95 = []
    for t, d in diags:
        if w_start <= t <= w_end + 2e9:
            for vals in d["cameras"].values():
                if "latency_ms_p95" in vals:
                    node_p95.append(float(vals["latency_ms_p95"]))

    # CPU
    (t_a, cpu_a, sys_a), (t_b, cpu_b, sys_b) = cpu_mark["start"], cpu_mark["end"]
    wall = (t_b - t_a) / 1e9
    node_cpu = 100.0 * (cpu_b - cpu_a) / wall if cpu_a is not None and cpu_b is not None \
        and wall > 0 else None
    sys_busy = 100.0 * (sys_b[0] - sys_a[0]) / max(1, sys_b[1] - sys_a[1])

    # RSS
    post = [(t, mb) for t, mb in rss if t >= 0]
    slope_per_s = lstsq_slope(post)
    rss_out = {
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
    pub_rate = published / win_s if win_s > 0 else 0.0
    return {
        "window_s": r(win_s, 2),
        "processed_fps": r(labelled / win_s, 2),
        "published_frames": published,
        "labelled_frames": labelled,
        "dropped_frames": published - labelled,
        "drop_rate": r((published - labelled) / published, 4) if published else None,
        "node_counters_window": node_counts,
        "latency_ms": {"p50": r(percentile(lat_sorted, 50)), "p95": r(percentile(lat_sorted, 95)),
                       "max": r(lat_sorted[-1]) if lat_sorted else None,
                       "mean": r(statistics.fmean(lat_sorted)) if lat_sorted else None,
                       "n": len(lat_sorted),
                       "definition": "label receive time - image header stamp (wall clock)"},
        "node_reported_latency_ms_p95": {
            "median": r(statistics.median(node_p95)) if node_p95 else None,
            "max": r(max(node_p95)) if node_p95 else None,
            "definition": "node-internal: frame received by the node -> labels published, "
                          "per diagnostics period"},
        "objects_per_frame": {"expected": expected,
                              "mean": r(statistics.fmean(objs)) if objs else None,
                              "min": min(objs, default=None), "max": max(objs, default=None),
                              "fraction_equal_expected": r(sum(1 for n in objs if n == expected)
                                                           / len(objs), 3) if objs else None,
                              "histogram": dict(sorted(hist.items(), key=lambda kv: int(kv[0])))},
        "node_cpu_percent": r(node_cpu, 1),
        "node_cpu_cores": r(node_cpu / 100.0, 2) if node_cpu is not None else None,
        "system_cpu_busy_percent": r(sys_busy, 1),
        "loadavg_end": loadavg(),
        "rss": rss_out,
        "transport_hint": (
            "frames never reached the node: with the default best_effort image QoS a large "
            "image is lost whole when one UDP fragment is lost (e.g. the socket receive "
            "buffer, net.core.rmem_default, overflows); compare -p qos_reliability:=reliable"
            if (node_counts.get("not_received_fraction") or 0) > 0.05 else None),
        "labels_outside_published": unknown,
        "duplicate_labels": dup,
        "_publisher": {
            "requested_fps_per_camera": a.fps, "cameras": a.cameras,
            "achieved_fps_total_window": r(pub_rate, 2),
            "achieved_fps_per_camera_window": [r(n / win_s, 2) for n in published_win],
            "published_total": sum(pub["published"]), "skipped_slots": pub["skipped_slots"],
            "lag_ms_p50": r(pub["lag_ms_p50"], 3), "lag_ms_p95": r(pub["lag_ms_p95"], 3),
            "lag_ms_max": r(pub["lag_ms_max"], 3),
            "publish_call_ms_p50": r(pub["publish_call_ms_p50"], 3),
            "publish_call_ms_max": r(pub["publish_call_ms_max"], 3),
            "cpu_percent": r(pub["cpu_percent"], 1),
            "qos": f"{a.publisher_qos}, keep_last {a.publisher_depth}",
            "process": "separate (multiprocessing spawn)"},
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
    install_sigterm_handler()
    a = build_parser().parse_args(argv)
    out: dict[str, Any] = {"bench": "node_throughput", "issue_target": ISSUE_TARGET,
                           "config": args_config(a)}
    code = run_bench(lambda: run(a, out), out)
    emit(out)
    return code


if __name__ == "__main__":
    sys.exit(main())
