"""``vl_distill_node``: open-vocabulary object classification on ROS 2 camera topics.

A thin layer over :class:`~vl_distill_ros.perception.pipeline.PerceptionPipeline`:

* subscribes to ``image_topics`` (sensor_msgs/Image) with sensor-data QoS; each camera has a
  one-frame "latest wins" slot, so a fast camera never builds a queue (overwritten frames are
  counted as dropped);
* one inference thread (one model in memory for all cameras) decodes frames with numpy
  (:func:`~vl_distill_ros.perception.image_codec.decode_image`, no cv_bridge), runs the pipeline
  and publishes ``~/labels`` (JSON), ``~/detections`` (vision_msgs, when importable) and
  optionally ``~/image_annotated``; the executor thread only stores messages;
* the vocabulary is changed with the standard parameter services (``labels``,
  ``descriptions``, ``vocabulary_file``): changes are validated in the set-parameters
  callbacks, embedded by a worker thread with the
  :class:`~vl_distill_ros.model.text_service.TextEmbeddingService` while frames keep flowing,
  and swapped in atomically between frames (``vocabulary_version`` + 1);
* ``~/save_vocabulary`` (std_srvs/Trigger) and ``persist_vocabulary`` keep the operator's
  vocabulary across restarts (:mod:`~vl_distill_ros.model.vocab_store`);
* counts, latencies and the vocabulary version go to ``/diagnostics``.

Vocabulary parameter semantics (see the README):

* ``labels`` set alone keeps the description of every name that stays (case-insensitive)
  and clears the others; ``descriptions`` is updated in the same atomic set, so
  ``ros2 param get`` always shows the requested vocabulary.
* ``descriptions`` set alone must be empty or have one entry per current label.
* both in one ``SetParametersAtomically`` call are validated together; with the plain
  ``SetParameters`` service (``ros2 param set``/``load``) they are applied one after the
  other, labels first, and the embedding worker only embeds the latest request.
* ``vocabulary_file`` set to a YAML file replaces ``labels`` and ``descriptions`` (they are
  set to the file's contents in the same atomic set); setting ``labels`` or
  ``descriptions`` clears ``vocabulary_file``.
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from ..model.bundle import Bundle, BundleError, load_bundle
from ..perception.image_codec import ImageDecodeError, decode_image, encode_rgb8
from ..perception.pipeline import (ObjectResult, PerceptionPipeline, PipelineError, PipelineSettings,
                             draw_annotations, labels_document)
from ..model.text_service import TextEmbeddingService
from ..model.vocab_store import load_vocabulary_store_result, save_vocabulary_atomic
from ..model.vocabulary import Label, Vocabulary, VocabularyError
from . import params as P
from .params import default_model_path

NODE_NAME = "vl_distill_node"
#: Seconds between repeated log lines about the same kind of bad frame on one camera.
BAD_FRAME_LOG_PERIOD = 30.0
#: A vocabulary request waits this long for a follow-up change (e.g. ``descriptions`` right
#: after ``labels`` via the non-atomic SetParameters service) before it is embedded.
VOCABULARY_DEBOUNCE_S = 0.005
#: Latency samples kept per camera for diagnostics.
LATENCY_WINDOW = 200
#: ``~/save_vocabulary`` right after a vocabulary change waits at most this long (in the
#: executor thread, so it stays short) for the change to be embedded and swapped in; if it is
#: still pending the call fails with success=False and saves nothing.
SAVE_PENDING_WAIT_S = 1.0
#: Longest text (error messages, encodings from the wire) copied into logs and /diagnostics.
MAX_DIAGNOSTIC_TEXT = 200


def clip_text(text: object, limit: int = MAX_DIAGNOSTIC_TEXT) -> str:
    """``str(text)``, cut to ``limit`` characters (with a note of the full length)."""
    text = str(text)
    if len(text) <= limit:
        return text
    note = f"... [{len(text)} chars]"
    return text[:max(0, limit - len(note))] + note


class StartupError(RuntimeError):
    """The node cannot start (no model, bad start-up vocabulary); the message says why."""


def missing_default_model_message(path: Path) -> str:
    """The start-up error shown when the packaged default bundle is absent."""
    return (f"no model: model_path is empty and the packaged default bundle {path} does not "
            "exist. Train and export one, e.g.\n"
            "  vl-distill train --config config/train_ycb.yaml   (writes runs/ycb)\n"
            f"  vl-distill export --run runs/ycb --out {path}\n"
            "(then reinstall the package), or start the node with "
            "-p model_path:=/path/to/student.vdb")


def default_store_path(namespace: str, name: str) -> Path:
    """``$ROS_HOME/vl_distill_ros/<namespace_node>.vocabulary.yaml`` (ROS_HOME: ~/.ros)."""
    ros_home = Path(os.environ.get("ROS_HOME") or Path.home() / ".ros").expanduser()
    fq = f"{namespace.strip('/')}/{name}".strip("/")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", fq) or name
    return ros_home / "vl_distill_ros" / f"{safe}.vocabulary.yaml"


def build_vocabulary(names: Sequence[str], descriptions: Sequence[str],
                     previous: Vocabulary | None = None) -> Vocabulary:
    """Validate parameter values into a :class:`Vocabulary`.

    ``descriptions`` must be empty or one per name. Keys of names that were in ``previous``
    (case-insensitive) are kept, so a saved store keeps dataset keys.

    Raises:
        VocabularyError: the reason (empty/whitespace name, duplicate, too long, too many,
            mismatched lengths, ...).
    """
    names = list(names)
    descriptions = list(descriptions)
    if descriptions and len(descriptions) != len(names):
        raise VocabularyError(f"{len(names)} labels but {len(descriptions)} descriptions; give "
                              "no descriptions or exactly one per label")
    if not descriptions:
        descriptions = [""] * len(names)
    keys = {lb.name.casefold(): lb.key for lb in previous} if previous is not None else {}
    labels = []
    for i, (name, desc) in enumerate(zip(names, descriptions)):
        if not isinstance(name, str) or not name.strip():
            raise VocabularyError(f"label {i} is empty or whitespace")
        clean = name.strip()
        labels.append(Label(name=clean, description=(desc or "").strip(),
                            key=keys.get(clean.casefold(), "")))
    return Vocabulary(tuple(labels))


def _descriptions_param(vocab: Vocabulary) -> list[str]:
    descs = [lb.description for lb in vocab]
    return descs if any(descs) else []


@dataclass
class _Camera:
    """Per-camera state: the latest-wins slot and counters (guarded by the node's lock)."""

    topic: str
    resolved: str = ""
    pending: Any = None
    pending_t: float = 0.0
    received: int = 0
    processed: int = 0
    dropped: int = 0
    bad_frames: int = 0
    errors: int = 0
    last_error: str = ""
    last_error_t: float = 0.0
    bad_in_period: int = 0
    processed_in_period: int = 0
    log_times: dict = field(default_factory=dict)
    suppressed: dict = field(default_factory=dict)
    latencies: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    processing: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    last_latency: float = 0.0


class VlDistillNode(Node):
    """The perception node (see the module docstring; parameters in :mod:`.params`).

    Args:
        node_name: ROS node name.
        **kwargs: passed to :class:`rclpy.node.Node` (``namespace``,
            ``parameter_overrides``, ``context``, ``cli_args``, ...).

    Raises:
        StartupError: no usable model bundle or an invalid start-up vocabulary.
    """

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._tls = threading.local()
        self._threads: list[threading.Thread] = []
        try:
            self._start()
        except BaseException:
            self._shutdown_threads()
            Node.destroy_node(self)
            raise

    # =========================================================================================
    # start-up
    # =========================================================================================
    def _start(self) -> None:
        p = P.declare_parameters(self)
        self._p = p
        if p["inference_backend"] not in ("auto", "onnxruntime", "torch"):
            raise StartupError(f"inference_backend must be auto, onnxruntime or torch, got "
                               f"{p['inference_backend']!r}")
        if p["qos_reliability"] not in ("best_effort", "reliable"):
            raise StartupError(f"qos_reliability must be best_effort or reliable, got "
                               f"{p['qos_reliability']!r}")
        if not p["image_topics"] or any(not t.strip() for t in p["image_topics"]):
            raise StartupError("image_topics must list at least one non-empty topic name")
        if p["torch_threads"] > 0:
            import torch

            torch.set_num_threads(int(p["torch_threads"]))

        self.bundle = self._load_model(p["model_path"], p["device"])
        cache_dir = os.path.expanduser(p["text_cache_dir"]) if p["text_cache_dir"] else None
        self.text_service = TextEmbeddingService.from_bundle(self.bundle, cache_dir=cache_dir)
        if self.text_service.cache_error:
            self.get_logger().warning(self.text_service.cache_error)
        if p["warm_text_encoder"]:
            threading.Thread(target=self._warm_text_encoder, name="warm_text_encoder",
                             daemon=True).start()
        self.store_path = (Path(p["vocabulary_store"]).expanduser() if p["vocabulary_store"]
                           else default_store_path(self.get_namespace(), self.get_name()))
        self._store_status = "not used"
        self._store_error = ""
        self._vocab_error = ""
        self._vocab_state = "ready"
        self._vocab_source = "bundle"

        vocab, source, vocab_file = self._startup_vocabulary(p)
        emb = self._embed_startup(vocab)
        if emb is None:  # embedding failed: fall back to the bundle's own vocabulary
            vocab, source, vocab_file = self.bundle.vocabulary, "bundle", ""
            emb = self.bundle.text_embeddings
        self._vocab_source = source
        self._requested_vocab = vocab
        try:
            settings = PipelineSettings.from_params(p)
        except PipelineError as exc:
            raise StartupError(str(exc)) from None
        self.pipeline = PerceptionPipeline(self.bundle, vocabulary=vocab, embeddings=emb,
                                           inference_backend=str(p["inference_backend"]),
                                           inference_threads=int(p["inference_threads"]),
                                           **settings.as_kwargs())
        self.get_logger().info(f"student runtime: {self.pipeline.runner.backend}")
        # mirror the active vocabulary into the parameters (no callbacks registered yet)
        self.set_parameters([
            Parameter("labels", Parameter.Type.STRING_ARRAY, vocab.names),
            Parameter("descriptions", Parameter.Type.STRING_ARRAY, _descriptions_param(vocab)),
            Parameter("vocabulary_file", Parameter.Type.STRING, vocab_file)])
        self._publish_annotated = bool(p["publish_annotated"])

        # -- outputs
        self._labels_pub = self.create_publisher(String, "~/labels", 10)
        self._annotated_pub = self.create_publisher(Image, "~/image_annotated", 1)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._vision_msgs = self._import_vision_msgs()
        self._det_pub = (self.create_publisher(self._vision_msgs["Detection2DArray"],
                                               "~/detections", 10)
                         if self._vision_msgs else None)

        # -- inputs
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=int(p["qos_depth"]),
            reliability=(ReliabilityPolicy.RELIABLE if p["qos_reliability"] == "reliable"
                         else ReliabilityPolicy.BEST_EFFORT),
            durability=DurabilityPolicy.VOLATILE)
        self._cameras: list[_Camera] = []
        self._subs = []
        for topic in dict.fromkeys(t.strip() for t in p["image_topics"]):
            cam = _Camera(topic=topic)
            sub = self.create_subscription(Image, topic,
                                           lambda msg, cam=cam: self._on_image(msg, cam), qos)
            cam.resolved = sub.topic_name
            self._cameras.append(cam)
            self._subs.append(sub)
        self._rr = 0

        self._save_srv = self.create_service(Trigger, "~/save_vocabulary", self._on_save)

        # -- parameter callbacks (after every declaration and internal set)
        self.add_pre_set_parameters_callback(self._pre_set_parameters)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._post_set_parameters)

        # -- workers
        self._vocab_request: Vocabulary | None = None
        self._vocab_seq = 0
        self._start_thread(self._inference_loop, "vl_distill_inference")
        self._start_thread(self._vocabulary_loop, "vl_distill_vocabulary")
        self._diag_timer = self.create_timer(float(p["diagnostics_period"]),
                                             self._publish_diagnostics)
        self.get_logger().info(
            f"ready: model {self.bundle.path} (teacher {self.bundle.teacher_id}), "
            f"{len(vocab)} labels from {source}, crop_source={settings.crop_source}, cameras "
            f"{[c.resolved for c in self._cameras]}, labels on {self._labels_pub.topic_name}")

    def _start_thread(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _load_model(self, model_path: str, device: str) -> Bundle:
        if model_path:
            path = Path(model_path).expanduser()
        else:
            path = default_model_path()
            if not path.is_file():
                raise StartupError(missing_default_model_message(path))
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            bundle = load_bundle(path, device=device)
        except BundleError as exc:
            raise StartupError(f"cannot load model bundle: {exc}") from None
        except (RuntimeError, ValueError) as exc:  # e.g. an unknown torch device
            raise StartupError(f"cannot load model bundle {path} on device {device!r}: "
                               f"{exc}") from None
        return bundle

    def _startup_vocabulary(self, p: dict) -> tuple[Vocabulary, str, str]:
        """(vocabulary, source, vocabulary_file) by precedence store > file > labels > bundle."""
        if p["persist_vocabulary"]:
            result = load_vocabulary_store_result(self.store_path)
            self._store_status = result.status
            if result.vocabulary is not None:
                self.get_logger().info(f"vocabulary store {self.store_path}: "
                                       f"{len(result.vocabulary)} labels (restored)")
                return result.vocabulary, f"store {self.store_path}", ""
            if result.error:
                self._store_error = result.error
                self.get_logger().error(result.error)
        if p["vocabulary_file"]:
            try:
                return (Vocabulary.load(Path(p["vocabulary_file"]).expanduser()),
                        f"file {p['vocabulary_file']}", p["vocabulary_file"])
            except VocabularyError as exc:
                raise StartupError(f"vocabulary_file: {exc}") from None
        if p["labels"]:
            try:
                return (build_vocabulary(p["labels"], p["descriptions"], self.bundle.vocabulary),
                        "labels parameter", "")
            except VocabularyError as exc:
                raise StartupError(f"labels/descriptions: {exc}") from None
        return self.bundle.vocabulary, "bundle", ""

    def _embed_startup(self, vocab: Vocabulary):
        try:
            return self.text_service.embed_vocabulary(vocab)
        except Exception as exc:  # noqa: BLE001 - e.g. teacher weights missing offline
            self._vocab_error = f"could not embed the start-up vocabulary: {exc}"
            self._vocab_state = "error"
            self.get_logger().error(self._vocab_error + "; using the bundle's vocabulary")
            return None

    def _import_vision_msgs(self) -> dict | None:
        try:
            from vision_msgs.msg import (Detection2D, Detection2DArray, ObjectHypothesis,
                                         ObjectHypothesisWithPose)
        except ImportError:
            self.get_logger().info("vision_msgs is not installed: ~/detections is disabled "
                                   "(~/labels carries the same information)")
            return None
        return {"Detection2DArray": Detection2DArray, "Detection2D": Detection2D,
                "ObjectHypothesis": ObjectHypothesis,
                "ObjectHypothesisWithPose": ObjectHypothesisWithPose}

    # =========================================================================================
    # parameter callbacks (executor thread; pre -> on -> post run in one thread per set)
    # =========================================================================================
    def _current(self, name: str) -> Any:
        value = self.get_parameter(name).value
        return list(value) if isinstance(value, (list, tuple)) or hasattr(value, "tolist") \
            else value

    def _pre_set_parameters(self, parameters: list[Parameter]) -> list[Parameter]:
        """Complete a vocabulary change so that the parameters stay mutually consistent."""
        self._tls.file_vocab = None
        by = {p.name: p for p in parameters}
        out = list(parameters)
        vf, lb, ds = by.get("vocabulary_file"), by.get("labels"), by.get("descriptions")
        if (vf is not None and vf.type_ == Parameter.Type.STRING and vf.value.strip()
                and lb is None and ds is None):
            try:
                vocab = Vocabulary.load(Path(vf.value).expanduser())
            except VocabularyError:
                return out  # _on_set_parameters rejects it with the reason
            self._tls.file_vocab = (vf.value, vocab)
            out.append(Parameter("labels", Parameter.Type.STRING_ARRAY, vocab.names))
            out.append(Parameter("descriptions", Parameter.Type.STRING_ARRAY,
                                 _descriptions_param(vocab)))
            return out
        if (lb is not None or ds is not None) and vf is None and self._current("vocabulary_file"):
            out.append(Parameter("vocabulary_file", Parameter.Type.STRING, ""))
        if lb is not None and ds is None and lb.type_ == Parameter.Type.STRING_ARRAY:
            old = {x.name.casefold(): x.description for x in self._requested_vocab}
            carried = [old.get(str(n).strip().casefold(), "") for n in lb.value]
            out.append(Parameter("descriptions", Parameter.Type.STRING_ARRAY,
                                 carried if any(carried) else []))
        return out

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Validate a change; nothing is applied here (see :meth:`_post_set_parameters`)."""
        self._tls.vocab = None
        self._tls.settings = None
        by = {p.name: p for p in parameters}
        active = self.pipeline.active
        unchanged = f"; the active vocabulary (version {active.version}) is unchanged"
        if P.VOCABULARY_PARAMS & by.keys():
            vf = by.get("vocabulary_file")
            try:
                if vf is not None and vf.value.strip():
                    cached = getattr(self._tls, "file_vocab", None)
                    if cached is not None and cached[0] == vf.value:
                        vocab = cached[1]
                    else:
                        vocab = Vocabulary.load(Path(vf.value).expanduser())
                    if "labels" in by and list(by["labels"].value) != vocab.names:
                        raise VocabularyError("labels and vocabulary_file were both given and "
                                              "disagree; set one of them")
                    self._tls.vocab = vocab
                elif "labels" in by or "descriptions" in by:
                    names = by["labels"].value if "labels" in by else self._current("labels")
                    descs = (by["descriptions"].value if "descriptions" in by
                             else self._current("descriptions"))
                    self._tls.vocab = build_vocabulary(list(names), list(descs),
                                                       self._requested_vocab)
            except VocabularyError as exc:
                reason = f"vocabulary rejected: {exc}{unchanged}"
                self.get_logger().warning(reason)
                return SetParametersResult(successful=False, reason=reason)
        if P.SETTINGS_PARAMS & by.keys():
            values = {name: self._current(name) for name in P.SETTINGS_PARAMS}
            values.update({name: by[name].value for name in P.SETTINGS_PARAMS & by.keys()})
            try:
                self._tls.settings = PipelineSettings.from_params(values)
            except (PipelineError, ValueError) as exc:
                reason = f"rejected: {exc}"
                self.get_logger().warning(reason)
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _post_set_parameters(self, parameters: list[Parameter]) -> None:
        """Apply an accepted change: queue the vocabulary, swap settings, toggle outputs."""
        vocab = getattr(self._tls, "vocab", None)
        settings = getattr(self._tls, "settings", None)
        self._tls.vocab = self._tls.settings = self._tls.file_vocab = None
        names = {p.name for p in parameters}
        if settings is not None:
            self.pipeline.configure(**settings.as_kwargs())
        if "publish_annotated" in names:
            self._publish_annotated = bool(self.get_parameter("publish_annotated").value)
        if vocab is not None:
            self._requested_vocab = vocab
            self.request_vocabulary(vocab)

    # =========================================================================================
    # vocabulary worker
    # =========================================================================================
    def request_vocabulary(self, vocab: Vocabulary) -> None:
        """Queue ``vocab`` for embedding and swapping in (latest request wins)."""
        with self._lock:
            self._vocab_request = vocab
            self._vocab_seq += 1
            self._vocab_state = "embedding"
            self._lock.notify_all()

    def _vocabulary_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                while self._vocab_request is None and not self._stop.is_set():
                    self._lock.wait(0.5)
                if self._stop.is_set():
                    return
            time.sleep(VOCABULARY_DEBOUNCE_S)  # let a follow-up set (descriptions) arrive
            with self._lock:
                vocab, seq = self._vocab_request, self._vocab_seq
                self._vocab_request = None
            if vocab is None:
                continue
            start = time.perf_counter()
            try:
                emb = self.text_service.embed_vocabulary(vocab)
            except Exception as exc:  # noqa: BLE001 - report any teacher failure, keep running
                with self._lock:
                    self._vocab_error = (f"could not embed the new vocabulary ({len(vocab)} "
                                         f"labels): {exc}")
                    if self._vocab_seq == seq:  # else a newer request is pending: 'embedding'
                        self._vocab_state = "error"
                    self._lock.notify_all()
                self.get_logger().error(self._vocab_error + "; the active vocabulary "
                                        f"(version {self.pipeline.active.version}) is unchanged")
                continue
            with self._lock:
                if self._vocab_seq != seq or self._stop.is_set():
                    continue  # a newer request arrived meanwhile: embed that one instead
            try:
                version = self.pipeline.set_vocabulary(vocab, emb)
            except PipelineError as exc:
                with self._lock:
                    self._vocab_error = f"embeddings rejected: {exc}"
                    self._vocab_state = "error"
                self.get_logger().error(self._vocab_error)
                continue
            with self._lock:
                if self._vocab_seq == seq:
                    self._vocab_state = "ready"
                self._vocab_error = ""
                self._vocab_source = "parameters"
                self._lock.notify_all()  # a waiting ~/save_vocabulary
            self.get_logger().info(
                f"vocabulary version {version}: {len(vocab)} labels, embedded in "
                f"{time.perf_counter() - start:.2f} s ({self.text_service.stats})")
            if self.get_parameter("persist_vocabulary").value:
                self._save_store(vocab)

    def _warm_text_encoder(self) -> None:
        """Load the teacher's text encoder in the background (new names then cost ~0.1 s)."""
        start = time.perf_counter()
        try:
            self.text_service.warm()
        except Exception as exc:  # noqa: BLE001 - a missing teacher only matters for new names
            self.get_logger().warning(f"could not preload the teacher's text encoder: {exc}; "
                                      "names not in the cache will fail to embed")
            return
        self.get_logger().info(f"teacher text encoder ready in {time.perf_counter() - start:.1f} s")

    def _save_store(self, vocab: Vocabulary) -> tuple[bool, str]:
        try:
            path = save_vocabulary_atomic(vocab, self.store_path)
        except OSError as exc:
            msg = f"could not save the vocabulary to {self.store_path}: {exc}"
            with self._lock:
                self._store_error, self._store_status = msg, "write failed"
            self.get_logger().error(msg)
            return False, msg
        with self._lock:
            self._store_error, self._store_status = "", "saved"
        return True, f"saved {len(vocab)} labels to {path}"

    def _on_save(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """Save the requested vocabulary: wait (briefly) for a pending change to be swapped in;
        never report success for a vocabulary other than the one last requested."""
        deadline = time.monotonic() + SAVE_PENDING_WAIT_S
        with self._lock:
            while True:
                active = self.pipeline.active
                requested = self._requested_vocab
                if requested == active.vocabulary or self._vocab_state == "error":
                    break
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    break
                self._lock.wait(min(left, 0.05))
            state, error = self._vocab_state, self._vocab_error
        if requested != active.vocabulary:
            response.success = False
            if state == "error":
                response.message = (f"not saved: the requested vocabulary ({len(requested)} "
                                    f"labels) could not be embedded ({clip_text(error)}); the "
                                    f"active one is version {active.version}")
            else:
                response.message = (f"not saved: a vocabulary change ({len(requested)} labels) "
                                    "is still being embedded; call again when it is active "
                                    "(vocabulary_state 'ready' in /diagnostics)")
            self.get_logger().warning(f"~/save_vocabulary: {response.message}")
            return response
        ok, msg = self._save_store(active.vocabulary)
        response.success = ok
        response.message = f"{msg} (vocabulary version {active.version})" if ok else msg
        return response

    # =========================================================================================
    # images
    # =========================================================================================
    def _on_image(self, msg: Image, cam: _Camera) -> None:
        """Executor thread: store the frame in the camera's latest-wins slot, nothing else."""
        now = time.monotonic()
        with self._lock:
            cam.received += 1
            if cam.pending is not None:
                cam.dropped += 1
            cam.pending, cam.pending_t = msg, now
            self._lock.notify_all()

    def _next_frame(self) -> tuple[_Camera, Image, float] | None:
        """Round-robin over cameras with a pending frame (caller holds the lock)."""
        n = len(self._cameras)
        for i in range(n):
            cam = self._cameras[(self._rr + i) % n]
            if cam.pending is not None:
                self._rr = (self._rr + i + 1) % n
                msg, t = cam.pending, cam.pending_t
                cam.pending = None
                return cam, msg, t
        return None

    def _inference_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                item = self._next_frame()
                while item is None and not self._stop.is_set():
                    self._lock.wait(0.5)
                    item = self._next_frame()
            if item is None:
                return
            try:
                self._process(*item)
            except Exception as exc:  # noqa: BLE001 - never let one frame kill the thread
                self._report_frame_problem(item[0], "error", f"processing failed: {exc!r}")

    def _process(self, cam: _Camera, msg: Image, t_recv: float) -> None:
        try:
            image = decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                                 msg.is_bigendian)
        except ImageDecodeError as exc:
            self._report_frame_problem(cam, "bad_frame", f"skipped a frame: {exc}")
            return
        t0 = time.monotonic()
        objects, version = self.pipeline.process(image)
        t1 = time.monotonic()
        doc = labels_document(msg.header.stamp.sec, msg.header.stamp.nanosec,
                              msg.header.frame_id, cam.resolved, version, objects)
        if self._stop.is_set():
            return
        self._labels_pub.publish(String(data=json.dumps(doc)))
        if self._det_pub is not None:
            self._det_pub.publish(self._detections_msg(msg, objects))
        if self._publish_annotated:
            self._annotated_pub.publish(self._annotated_msg(msg, image, objects))
        done = time.monotonic()
        with self._lock:
            cam.processed += 1
            cam.processed_in_period += 1
            cam.last_latency = done - t_recv
            cam.latencies.append(done - t_recv)
            cam.processing.append(t1 - t0)

    def _report_frame_problem(self, cam: _Camera, kind: str, text: str) -> None:
        """Count a skipped frame; log the first one per camera and kind, then rate-limited."""
        text = clip_text(text)  # e.g. a 100 kB encoding string from the wire
        now = time.monotonic()
        with self._lock:
            if kind == "bad_frame":
                cam.bad_frames += 1
                cam.bad_in_period += 1
            else:
                cam.errors += 1
            cam.last_error, cam.last_error_t = text, now
            last = cam.log_times.get(kind)
            if last is not None and now - last < BAD_FRAME_LOG_PERIOD:
                cam.suppressed[kind] = cam.suppressed.get(kind, 0) + 1
                return
            suppressed = cam.suppressed.pop(kind, 0)
            cam.log_times[kind] = now
        more = f" ({suppressed} similar frames since the last report)" if suppressed else ""
        self.get_logger().warning(f"{cam.resolved}: {text}{more}")

    def _annotated_msg(self, src: Image, image, objects: Sequence[ObjectResult]) -> Image:
        encoding, height, width, step, data = encode_rgb8(draw_annotations(image, objects))
        out = Image()
        out.header = src.header
        out.encoding, out.height, out.width, out.step = encoding, height, width, step
        out.is_bigendian = 0
        out.data = data
        return out

    def _detections_msg(self, src: Image, objects: Sequence[ObjectResult]):
        vm = self._vision_msgs
        assert vm is not None
        arr = vm["Detection2DArray"]()
        arr.header = src.header
        for i, o in enumerate(objects):
            det = vm["Detection2D"]()
            det.header = src.header
            x, y, w, h = o.bbox
            center = det.bbox.center
            if hasattr(center, "position"):  # vision_msgs >= 4 (Jazzy): vision_msgs/Pose2D
                center.position.x, center.position.y = x + w / 2.0, y + h / 2.0
            else:  # vision_msgs 3 (Humble): geometry_msgs/Pose2D
                center.x, center.y = x + w / 2.0, y + h / 2.0
            det.bbox.size_x, det.bbox.size_y = float(w), float(h)
            if hasattr(det, "id"):
                det.id = str(i)
            hyp = vm["ObjectHypothesisWithPose"]()
            if hasattr(hyp, "hypothesis"):
                hyp.hypothesis.class_id, hyp.hypothesis.score = o.label, float(o.score)
            else:  # pragma: no cover - very old vision_msgs
                hyp.id, hyp.score = o.label, float(o.score)
            det.results.append(hyp)
            arr.detections.append(det)
        return arr

    # =========================================================================================
    # diagnostics
    # =========================================================================================
    def duplicate_name_count(self) -> int:
        """How many nodes in the ROS graph share this node's name and namespace (1 = only
        this one). Two nodes with one name clash on parameters and services."""
        try:
            found = self.get_node_names_and_namespaces()
        except Exception:  # noqa: BLE001 - graph not available during shutdown
            return 1
        return sum(1 for name, ns in found
                   if name == self.get_name() and ns == self.get_namespace())

    def _check_duplicate_name(self) -> None:
        count = self.duplicate_name_count()
        if count > 1 and not getattr(self, "_duplicate_warned", False):
            self._duplicate_warned = True
            self.get_logger().warning(
                f"{count} nodes named {self.get_fully_qualified_name()} are running; their "
                "parameters and services clash. Give each its own name or namespace "
                "(--ros-args -r __node:=NAME or -r __ns:=/NS).")
        self._duplicate_count = count

    def _publish_diagnostics(self) -> None:
        if self._stop.is_set():
            return
        self._check_duplicate_name()
        try:
            self._diag_pub.publish(self.diagnostics())
        except Exception as exc:  # noqa: BLE001 - e.g. during shutdown
            self.get_logger().debug(f"diagnostics not published: {exc}")

    def diagnostics(self) -> DiagnosticArray:
        """The current diagnostics: one status for the model/vocabulary, one per camera.

        Per-period values (``*_in_period``, latency statistics over the last
        ``LATENCY_WINDOW`` frames) are reset by each call.
        """
        fq = self.get_fully_qualified_name()
        active = self.pipeline.active
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()

        def kv(pairs: dict) -> list[KeyValue]:
            # error texts may quote input from the wire or from files: cut them
            return [KeyValue(key=str(k), value=clip_text(v) if k.endswith("error") else str(v))
                    for k, v in pairs.items()]

        with self._lock:
            vocab_state, vocab_error = self._vocab_state, self._vocab_error
            store_status, store_error = self._store_status, self._store_error
            source = self._vocab_source
        status = DiagnosticStatus(name=f"{fq}: model and vocabulary", hardware_id=fq)
        duplicates = getattr(self, "_duplicate_count", 1)
        if vocab_error:
            status.level, status.message = DiagnosticStatus.ERROR, clip_text(vocab_error)
        elif duplicates > 1:
            status.level = DiagnosticStatus.WARN
            status.message = f"{duplicates} nodes share the name {fq}"
        elif store_error:
            status.level, status.message = DiagnosticStatus.WARN, clip_text(store_error)
        else:
            status.level = DiagnosticStatus.OK
            status.message = (f"vocabulary version {active.version}: {len(active.vocabulary)} "
                              f"labels ({vocab_state})")
        names = active.vocabulary.names
        status.values = kv({
            "vocabulary_version": active.version,
            "vocabulary_size": len(names),
            "labels": ", ".join(names[:50]) + (" ..." if len(names) > 50 else ""),
            "vocabulary_state": vocab_state,
            "vocabulary_source": source,
            "vocabulary_error": vocab_error,
            "vocabulary_store": self.store_path,
            "vocabulary_store_status": store_status,
            "seen_bias": f"{self.pipeline.effective_seen_bias():.4f}",
            "unknown_threshold": f"{self.pipeline.effective_unknown_threshold():.4f}",
            "calibrated_bundle": self.bundle.calibration is not None,
            "nodes_with_this_name": getattr(self, "_duplicate_count", 1),
            "vocabulary_store_error": store_error,
            "model_path": self.bundle.path,
            "teacher_id": self.bundle.teacher_id,
            "text_embedding_cache": self.text_service.cache_path or "",
            "text_embedding_stats": json.dumps(self.text_service.stats),
            "crop_source": self.pipeline.settings.crop_source,
        })
        arr.status.append(status)
        for cam in self._cameras:
            with self._lock:
                lat = sorted(cam.latencies)
                proc = list(cam.processing)
                values = {
                    "topic": cam.resolved,
                    "received": cam.received,
                    "processed": cam.processed,
                    "dropped": cam.dropped,
                    "bad_frames": cam.bad_frames,
                    "errors": cam.errors,
                    "processed_in_period": cam.processed_in_period,
                    "bad_frames_in_period": cam.bad_in_period,
                    "last_error": cam.last_error,
                }
                bad_recent = cam.bad_in_period
                cam.bad_in_period = cam.processed_in_period = 0
                cam.latencies.clear()
                cam.processing.clear()
                last_error = cam.last_error
            values["latency_ms_last"] = f"{cam.last_latency * 1e3:.1f}"
            if lat:
                values["latency_ms_mean"] = f"{sum(lat) / len(lat) * 1e3:.1f}"
                p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
                values["latency_ms_p95"] = f"{p95 * 1e3:.1f}"
                values["latency_ms_max"] = f"{lat[-1] * 1e3:.1f}"
                values["processing_ms_mean"] = f"{sum(proc) / max(1, len(proc)) * 1e3:.1f}"
            values["vocabulary_version"] = active.version
            cs = DiagnosticStatus(name=f"{fq}: camera {cam.resolved}", hardware_id=fq)
            if bad_recent:
                cs.level = DiagnosticStatus.WARN
                cs.message = clip_text(f"{bad_recent} frame(s) skipped: {last_error}")
            else:
                cs.level = DiagnosticStatus.OK
                cs.message = (f"{values['processed']} processed, {values['dropped']} dropped"
                              if values["received"] else "no images received yet")
            cs.values = kv(values)
            arr.status.append(cs)
        return arr

    # =========================================================================================
    # shutdown
    # =========================================================================================
    def _shutdown_threads(self) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=10.0)

    def destroy_node(self) -> None:
        """Stop the worker threads, then destroy the node."""
        self._shutdown_threads()
        super().destroy_node()


def usage_text() -> str:
    """``vl_distill_node --help``: how to run it and every parameter with its default."""
    from .params import PARAMETERS

    lines = [f"usage: {NODE_NAME} [--ros-args -p NAME:=VALUE ... -r image:=/camera/topic]",
             "",
             "Open-vocabulary object labels from camera images (see the README). Keep DDS",
             "discovery local with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST where required.",
             "", "parameters (read-only ones are start-up only):"]
    for spec in PARAMETERS:
        ro = " (read-only)" if spec.read_only else ""
        lines.append(f"  {spec.name} [{spec.type}] = {spec.default!r}{ro}")
        lines.append(f"      {spec.description}")
    return "\n".join(lines)


def main(args: Sequence[str] | None = None) -> int:
    """Console script ``vl_distill_node``: run the node until Ctrl-C; returns the exit code."""
    import sys

    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    argv = list(sys.argv if args is None else args)
    own = argv[1:argv.index("--ros-args")] if "--ros-args" in argv else argv[1:]
    if "-h" in own or "--help" in own:
        print(usage_text())  # without starting rclpy: no DDS participant for --help
        return 0
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = VlDistillNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except StartupError as exc:
        import sys

        msg = f"[{NODE_NAME}] cannot start: {exc}"
        try:
            rclpy.logging.get_logger(NODE_NAME).fatal(msg)
        finally:
            print(msg, file=sys.stderr)
        code = 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main())
