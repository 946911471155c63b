"""The live-node harness of the node benches (not a bench: ``make bench`` skips ``_*.py``).

What ``node_throughput.py`` and ``vocabulary_update.py`` share, so that each bench reads as
its measurement:

* :data:`ROS_ENV`: DDS discovery forced onto loopback and a private ``ROS_DOMAIN_ID``, set
  when this module is imported (before any rclpy import, inherited by every child), and the
  Fast DDS profile (:func:`use_dds_profile`: the shared-memory one unless one is named);
* :class:`NodeProcess`: ``vl_distill_node`` started by the library's
  :class:`vl_distill_ros.ros.node_process.NodeProcess` (own process group, always stopped
  with the group), plus its ``/proc`` statistics (:class:`ProcStats`);
* :class:`Recorder`: a node in this process recording ``~/labels`` and ``/diagnostics``;
* :class:`Publisher`: synthetic cameras in a separate process (``multiprocessing`` spawn);
* bench bundles (:func:`build_bundle`, :func:`describe_bundle`) and ``-p`` parsing.

Frames come from ``_frames.py``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from _common import REPO, BenchError

if str(REPO) not in sys.path:  # the package, when it is not installed in the venv
    sys.path.insert(1, str(REPO))

from vl_distill_ros.bags.bag_frames import ns_to_stamp
from vl_distill_ros.perception.compressed_codec import (encode_compressed_depth,
                                                        encode_compressed_image)
from vl_distill_ros.perception.image_codec import encode_depth_mm, encode_rgb8
from vl_distill_ros.ros import node_process
from vl_distill_ros.ros.node_process import NODE_NAME, log_tail, node_command

#: The package's Fast DDS profile for one host (camera frames through shared memory).
SHM_PROFILE = REPO / "config" / "fastdds_shm_localhost.xml"
#: Teacher text prompts of the bench bundles (as config/train_ycb.yaml).
TEMPLATES = ["a photo of a {name}."]
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


def use_dds_profile(environ: dict | None = None) -> str:
    """Give the bench's processes a Fast DDS profile; the benches call it first in ``main``
    (not on import: the tests import this module) and :data:`ROS_ENV` records it.

    ``FASTRTPS_DEFAULT_PROFILES_FILE``, when absent from ``environ`` (``os.environ``), is set
    to the package's shared-memory profile (:data:`SHM_PROFILE`, as ``make bench`` and the
    README's "Running it" do): without it Fast DDS sends 640x480 frames over loopback UDP,
    loses most of them with depth, and a bench of the node measures the transport instead
    (session 75, ``--scene ycb --depth``: 8.6 frames/s against 22.7 with the profile, 71% of
    the frames never reaching the node, which sat waiting for them). Set it to an empty value
    to measure Fast DDS's built-in transports: it is then taken out of ``environ`` (Fast DDS
    given an empty path prints an XML error on stdout, into the JSON). Returns the profile
    used ("" for none)."""
    env = os.environ if environ is None else environ
    profile = env.get("FASTRTPS_DEFAULT_PROFILES_FILE", str(SHM_PROFILE)).strip()
    if profile:
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = profile
    else:
        env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    if environ is None:
        ROS_ENV["FASTRTPS_DEFAULT_PROFILES_FILE"] = profile
    return profile


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

    @classmethod
    def _stat(cls, path: str) -> tuple[str, float]:
        """(name, utime + stime in seconds) of a ``/proc`` ``stat`` file (a process's or a
        thread's). Raises OSError, IndexError or ValueError when it cannot be read."""
        with open(path, encoding="utf-8") as fh:
            raw = fh.read()
        rest = raw[raw.rindex(")") + 1:].split()
        return raw[raw.index("(") + 1:raw.rindex(")")], (int(rest[11]) + int(rest[12])) / cls.HZ

    def cpu_s(self) -> float | None:
        try:
            return self._stat(f"/proc/{self.pid}/stat")[1]
        except (OSError, IndexError, ValueError):
            return None

    def thread_cpu_s(self) -> dict[int, tuple[str, float]]:
        """``{thread id: (its OS name, CPU seconds)}`` of the process's threads (their
        ``/proc/<pid>/task/<tid>/stat``; empty when it cannot be read)."""
        out: dict[int, tuple[str, float]] = {}
        try:
            tids = os.listdir(f"/proc/{self.pid}/task")
        except OSError:
            return out
        for tid in tids:
            try:
                out[int(tid)] = self._stat(f"/proc/{self.pid}/task/{tid}/stat")
            except (OSError, IndexError, ValueError):
                continue          # a thread that ended meanwhile
        return out

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
def add_node_arguments(ap: argparse.ArgumentParser, pin: bool = True) -> None:
    """The node's options every live bench takes: ``-p/--param``, ``--device``,
    ``--node-timeout``, ``--log-dir`` and, with ``pin``, ``--node-cpus`` (read back with
    :func:`pinned_cpus`)."""
    ap.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                    help="node parameter, as in 'ros2 run ... -p' (repeatable), e.g. "
                         "-p torch_threads:=2 -p crop_source:=full_frame")
    ap.add_argument("--device", default="cpu",
                    help="node 'device' parameter (the targets are about CPU cores; 'auto' "
                         "picks cuda when available)")
    if pin:
        ap.add_argument("--node-cpus", default="",
                        help="pin the node to these CPUs, e.g. '0,1' (sched_setaffinity; "
                             "default: no pinning)")
    ap.add_argument("--node-timeout", type=float, default=180.0,
                    help="seconds a node may take to come up")
    ap.add_argument("--log-dir", type=Path, default=None,
                    help="keep the node logs here (default: a temporary folder, deleted)")


def pinned_cpus(a: argparse.Namespace) -> tuple[int, ...] | None:
    """The CPUs of ``--node-cpus`` (:func:`add_node_arguments`), or None (no pinning)."""
    text = getattr(a, "node_cpus", "") or ""
    return tuple(int(c) for c in text.split(",") if c.strip()) or None


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


# ==========================================================================================
# model bundle
# ==========================================================================================
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
def camera_messages(topics: Sequence[str], frames: Sequence[np.ndarray],
                    frame_id: str = "camera", image_format: str = "raw") -> list[list[Any]]:
    """Per camera, per frame: an rgb8 ``sensor_msgs/Image`` built once (only the stamp
    changes when it is published); the pixels are encoded by the library's
    :func:`~vl_distill_ros.perception.image_codec.encode_rgb8`. With ``image_format``
    ``jpeg``/``png``: a ``sensor_msgs/CompressedImage`` of
    :func:`~vl_distill_ros.perception.compressed_codec.encode_compressed_image` instead."""
    from sensor_msgs.msg import CompressedImage, Image

    if image_format != "raw":
        payloads = [encode_compressed_image(img, image_format) for img in frames]
        return [[_compressed(CompressedImage, fmt, data, f"{frame_id}_{ci}")
                 for fmt, data in payloads] for ci, _ in enumerate(topics)]
    encoded = [encode_rgb8(img) for img in frames]
    msgs = []
    for ci, _ in enumerate(topics):
        row = []
        for encoding, height, width, step, data in encoded:
            m = Image()
            m.header.frame_id = f"{frame_id}_{ci}"
            m.height, m.width, m.encoding, m.is_bigendian, m.step = height, width, encoding, 0, step
            m.data = data
            row.append(m)
        msgs.append(row)
    return msgs


def _compressed(cls: type, fmt: str, data: bytes, frame_id: str) -> Any:
    m = cls()
    m.header.frame_id, m.format, m.data = frame_id, fmt, data
    return m


#: Depth for :func:`publisher_main`, per camera: its depth topic and CameraInfo topic, and per
#: frame the depth (metres, 0 = none; registered, or an ``UnalignedDepth``: a depth camera's
#: own image) and the colour camera's intrinsics ``(fx, fy, cx, cy)``; with unaligned depth a
#: fifth list, the depth cameras' CameraInfo topics.
RGBD = tuple[list[str], list[str], list[Any], list[tuple[float, float, float, float]]]


def _camera_info(frame_id: str, width: int, height: int, k: Sequence[float]) -> Any:
    """A distortion-free CameraInfo (plumb_bob, zero D) as ``make-bag --depth`` writes."""
    from sensor_msgs.msg import CameraInfo

    fx, fy, cx, cy = (float(v) for v in k[:4])
    info = CameraInfo()
    info.header.frame_id = frame_id
    info.height, info.width = int(height), int(width)
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def depth_messages(rgbd: RGBD, n_cameras: int, frame_id: str = "camera",
                   compressed: bool = False, sizes: Sequence[tuple[int, int]] = ()
                   ) -> list[list[Any]]:
    """Per camera, per frame: its ``(CameraInfo, 16UC1 depth Image)`` built once (only the
    stamps change when they are published), or ``(CameraInfo, the depth camera's
    CameraInfo, its depth Image)`` for unaligned depth (the colour frames' ``sizes``, width
    and height, give the colour CameraInfo's size). ``compressed``: the depth as a
    compressedDepth ``CompressedImage`` (16UC1 PNG)."""
    from sensor_msgs.msg import CompressedImage, Image

    _, _, depths, intrinsics = rgbd[:4]
    out = []
    for ci in range(n_cameras):
        row = []
        for i, (depth, k) in enumerate(zip(depths, intrinsics)):
            unaligned = getattr(depth, "camera", None)
            image = depth.depth if unaligned is not None else depth
            encoding, height, width, step, data = encode_depth_mm(image)
            d = Image()
            d.header.frame_id = f"{frame_id}_{ci}" + ("_depth" if unaligned else "")
            d.height, d.width, d.encoding, d.is_bigendian, d.step = height, width, encoding, 0, step
            d.data = data
            if compressed:
                d = _compressed(CompressedImage, *encode_compressed_depth(image),
                                d.header.frame_id)
            if unaligned is None:
                row.append((_camera_info(d.header.frame_id, width, height, k), d))
                continue
            cam = depth.camera
            row.append((_camera_info(f"{frame_id}_{ci}", *sizes[i], k),
                        _camera_info(d.header.frame_id, width, height,
                                     (cam.fx, cam.fy, cam.cx, cam.cy)), d))
        out.append(row)
    return out


def _wait_for_subscribers(pubs: list, topics: Sequence[str], wait_s: float, queue,
                          stop_event) -> bool:
    """Wait until every camera publisher has a subscriber (reports an error when not)."""
    t_wait = time.monotonic()
    while wait_s > 0 and not all(p.get_subscription_count() > 0 for p in pubs):
        if time.monotonic() - t_wait > wait_s or stop_event.is_set():
            queue.put(("error", f"no subscriber matched {topics} within {wait_s:g} s"))
            return False
        time.sleep(0.02)
    time.sleep(0.3 if wait_s > 0 else 0.0)  # let matching settle both ways
    return True


def _camera_loop(pubs: list, msgs: list[list[Any]], fps: float, duration_s: float, stop_event,
                 record_stamps: bool, extras: list[tuple[list, list[list[Any]]]] = ()
                 ) -> dict[str, Any]:
    """Publish on schedule (cameras staggered by 1/(fps*N); a slot already a full period late
    is skipped); returns the counters, stamps, lags and publish-call costs. Each of
    ``extras``, ``(publishers per camera, messages per camera per frame as tuples)``, is
    published just before the colour image, with its stamp (CameraInfo and depth)."""
    n_cam, n_frames = len(pubs), len(msgs[0])
    period = 1.0 / fps
    st: dict[str, Any] = {"stamps": [[] for _ in pubs], "published": [0] * n_cam,
                          "skipped_slots": [0] * n_cam, "lags": [], "costs": [],
                          "t0": time.monotonic()}
    k = 0
    while True:
        for ci in range(n_cam):
            offset = (k + ci / n_cam) * period
            if offset >= duration_s or stop_event.is_set():
                return st
            target = st["t0"] + offset
            now = time.monotonic()
            if now < target:
                time.sleep(target - now)
            elif now - target > period:
                st["skipped_slots"][ci] += 1
                continue
            msg = msgs[ci][(k + ci) % n_frames]
            a = time.monotonic()
            stamp = time.time_ns()
            sec_nsec = ns_to_stamp(stamp)
            for extra_pubs, extra_msgs in extras:
                for pub, m in zip(extra_pubs[ci], extra_msgs[ci][(k + ci) % n_frames]):
                    m.header.stamp.sec, m.header.stamp.nanosec = sec_nsec
                    pub.publish(m)
            msg.header.stamp.sec, msg.header.stamp.nanosec = sec_nsec
            pubs[ci].publish(msg)
            b = time.monotonic()
            st["published"][ci] += 1
            if record_stamps:
                st["stamps"][ci].append(stamp)
            if len(st["lags"]) < 200_000:
                st["lags"].append(a - target)
                st["costs"].append(b - a)
        k += 1


def _publisher_report(st: dict[str, Any], wall0: int, ticks0) -> dict[str, Any]:
    """The ``("done", ...)`` report of :func:`publisher_main`."""
    elapsed = time.monotonic() - st["t0"]
    ticks1 = os.times()
    cpu = (ticks1.user - ticks0.user) + (ticks1.system - ticks0.system)
    lags_ms = sorted(x * 1e3 for x in st["lags"]) or [0.0]
    cost_ms = sorted(x * 1e3 for x in st["costs"]) or [0.0]
    return {
        "wall0_ns": wall0, "elapsed_s": elapsed, "published": st["published"],
        "skipped_slots": st["skipped_slots"], "stamps": st["stamps"],
        "lag_ms_p50": lags_ms[len(lags_ms) // 2],
        "lag_ms_p95": lags_ms[min(len(lags_ms) - 1, int(0.95 * len(lags_ms)))],
        "lag_ms_max": lags_ms[-1],
        "publish_call_ms_p50": cost_ms[len(cost_ms) // 2],
        "publish_call_ms_max": cost_ms[-1],
        "cpu_percent": 100.0 * cpu / elapsed if elapsed > 0 else None}


def publisher_main(topics: list[str], frames: list[np.ndarray], fps: float, duration_s: float,
                   queue, stop_event, wait_subscribers_s: float, frame_id: str = "camera",
                   record_stamps: bool = True, reliability: str = "reliable",
                   depth: int = 10, rgbd: RGBD | None = None,
                   image_format: str = "raw") -> None:
    """Publish ``frames`` cyclically on every topic at ``fps`` (cameras staggered by
    1/(fps*N)), fresh wall-clock stamps, for ``duration_s`` s (inf: until ``stop_event``).
    With ``rgbd`` each camera's CameraInfo and 16UC1 depth (and, for unaligned depth, the
    depth camera's CameraInfo) go out just before its colour image, with the same stamp
    (``depth`` is the QoS history depth). ``image_format``
    ``jpeg``/``png`` publishes CompressedImage colour and compressedDepth depth.

    A slot that is already more than one period late is skipped, as a real camera would.
    Reports ``("started", wall_ns)`` then ``("done", stats)`` (or ``("error", text)``).
    """
    try:
        import rclpy
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image

        ctx = rclpy.Context()
        rclpy.init(args=[], context=ctx)
        node = rclpy.create_node(f"vl_bench_camera_{os.getpid()}", context=ctx,
                                 start_parameter_services=False)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth),
                         reliability=(ReliabilityPolicy.RELIABLE if reliability == "reliable"
                                      else ReliabilityPolicy.BEST_EFFORT),
                         durability=DurabilityPolicy.VOLATILE)
        image_type = Image if image_format == "raw" else CompressedImage
        pubs = [node.create_publisher(image_type, t, qos) for t in topics]
        msgs = camera_messages(topics, frames, frame_id, image_format)
        extras: list = []
        if rgbd is not None:
            from sensor_msgs.msg import CameraInfo

            depth_infos = rgbd[4] if len(rgbd) > 4 else [None] * len(topics)
            extra_pubs = [(node.create_publisher(CameraInfo, i_t, qos),
                           *((node.create_publisher(CameraInfo, di_t, qos),) if di_t else ()),
                           node.create_publisher(image_type, d_t, qos))
                          for d_t, i_t, di_t in zip(rgbd[0], rgbd[1], depth_infos)]
            sizes = [(f.shape[1], f.shape[0]) for f in frames]
            extras.append((extra_pubs, depth_messages(rgbd, len(topics), frame_id,
                                                      image_format != "raw", sizes)))
        if not _wait_for_subscribers(pubs, topics, wait_subscribers_s, queue, stop_event):
            return
        ticks0 = os.times()
        wall0 = time.time_ns()
        queue.put(("started", wall0))
        st = _camera_loop(pubs, msgs, fps, duration_s, stop_event, record_stamps, extras)
        queue.put(("done", _publisher_report(st, wall0, ticks0)))
        try:
            node.destroy_node()
        finally:
            ctx.try_shutdown()
    except Exception as exc:  # noqa: BLE001 - report, never hang the parent
        try:
            queue.put(("error", f"publisher failed: {exc!r}"))
        except Exception:  # noqa: BLE001
            pass


#: Highest camera rate a bench publishes at (a rate of inf scheduled every frame at once and
#: never reached the end of its duration).
MAX_FPS = 1000.0


class StopFlag:
    """A stop flag shared with the publisher process, without a lock: a
    ``multiprocessing.Event`` takes a lock on every ``is_set()``, and a publisher killed while
    holding it (a SIGTERM to the process group) left ``set()`` in the bench blocked for good,
    with the node still running."""

    def __init__(self, ctx: Any) -> None:
        self._value = ctx.RawValue("b", 0)

    def set(self) -> None:
        """Ask the publisher to stop."""
        self._value.value = 1

    def is_set(self) -> bool:
        """Whether a stop was asked for."""
        return bool(self._value.value)


class Publisher:
    """The camera publisher process (multiprocessing, spawn: no fork of an rclpy process).

    Raises:
        BenchError: ``fps`` not in (0, :data:`MAX_FPS`] or ``duration_s`` not > 0 (inf:
            until stopped).
    """

    def __init__(self, topics: list[str], frames: list[np.ndarray], fps: float,
                 duration_s: float, wait_subscribers_s: float = 30.0,
                 record_stamps: bool = True, reliability: str = "reliable",
                 depth: int = 10, rgbd: RGBD | None = None,
                 image_format: str = "raw") -> None:
        import multiprocessing as mp

        if not (math.isfinite(fps) and 0 < fps <= MAX_FPS):
            raise BenchError(f"--fps must be a number in (0, {MAX_FPS:g}], got {fps}")
        if not duration_s > 0:
            raise BenchError(f"the publishing duration must be > 0 s, got {duration_s}")
        ctx = mp.get_context("spawn")
        self.queue = ctx.Queue()
        self.stop_event = StopFlag(ctx)
        self.proc = ctx.Process(target=publisher_main, name="vl_bench_camera", daemon=True,
                                args=(topics, frames, fps, duration_s, self.queue,
                                      self.stop_event, wait_subscribers_s),
                                kwargs={"record_stamps": record_stamps,
                                        "reliability": reliability, "depth": depth,
                                        "rgbd": rgbd, "image_format": image_format})
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
