"""Replay a camera bag through ``vl_distill_node`` (live) or the same pipeline (offline).

Live mode (:func:`run_live`) does what ``ros2 bag play`` plus a recorder would do, without
either being installed:

1. the node is started as a subprocess (``python -m vl_distill_ros.ros.node``) in a private
   namespace (default ``/vl_replay_<pid>_<random>``) with the bundle, the vocabulary file
   and the pipeline parameters, its output going to ``node.log``; it runs in its own process
   group, so it is stopped (SIGINT, then SIGTERM / SIGKILL to the group) whatever happens,
   and on Linux it also receives SIGTERM should this process die;
2. a replay node in this process publishes each image message of the bag, as the stored CDR
   bytes (``Publisher.publish(bytes)``, exactly what ``ros2 bag play`` sends), on
   ``<namespace><topic>`` at ``t0 + (bag time - first bag time) / rate``; the node's
   ``image_topics`` are those namespaced topics, so other publishers of the bag's topic
   names in the same ROS domain cannot mix in;
3. it records ``<namespace>/vl_distill_node/labels`` (reliable QoS, deep queue) with the
   receive time, and the node's ``/diagnostics`` (its received / processed / dropped
   counters and its vocabulary state);
4. replay starts only once the node is up: its labels publisher is discovered, every image
   topic has its subscription matched and a first diagnostics message arrived; if that does
   not happen within ``node_timeout`` seconds, or the node exits, a :class:`NodeError`
   quotes the end of ``node.log``;
5. after the last frame it waits until every published frame is labelled, or no label has
   arrived for a quiet period (frames the node dropped under its latest-wins policy, or lost
   in best-effort transport, are never labelled), at most ``drain_timeout`` seconds.

End-to-end latency of a frame is the time from its publication by the replay node to the
arrival of its labels document (both measured here with one monotonic clock).

Offline mode (:func:`run_offline`) decodes the bag's images and runs
:class:`~vl_distill_ros.perception.pipeline.PerceptionPipeline` frame by frame, as fast as the CPU
allows, with the same bundle, the same vocabulary (embedded by the same
:class:`~vl_distill_ros.model.text_service.TextEmbeddingService`) and the same settings
(built from the same parameter values as the node's, see :func:`pipeline_settings`), and
makes the same documents with :func:`~vl_distill_ros.perception.pipeline.labels_document`. The
two modes therefore give the same labels for the frames both labelled.

Errors: :class:`InputError` (exit code 2: missing or corrupt bag, no image topics, bad
sidecar, bad model or vocabulary file, bad parameter) and :class:`NodeError` (exit code 3:
the node never answered, or exited).
"""
from __future__ import annotations

import json
import math
import os
import secrets
import shlex
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Container, Iterable, Mapping, Sequence

from ..bags.bag_io import (COMPRESSED_IMAGE_TYPE, IMAGE_TYPE, BagContents, BagError,
                           decode_image_cdr, iter_raw_messages, read_camera_bag)
from ..perception.compressed_codec import topic_transport
from ..ros import params as P
from ..ros.node_process import (NODE_NAME, NodeProcess, default_node_command, log_tail,
                                node_command)
from ..ros.params import default_model_path  # the packaged bundle, as the node resolves it
from .scoring import FrameKey, doc_frame_key

__all__ = ["ReplayError", "InputError", "NodeError", "ReplaySettings", "Recording",
           "TUNABLE_PARAMS", "NODE_NAME", "default_model_path", "parse_param",
           "node_parameter_values", "pipeline_settings", "open_bag", "run_live",
           "run_offline", "stamp_from_cdr", "resolve_device", "LivePlan", "plan_live",
           "DiagnosticsLog", "ReplayNode", "start_node", "wait_for_node", "PacedRun",
           "publish_paced", "drain", "collect_documents", "node_counters"]

#: Node parameters that ``--param`` may set (the others have dedicated options or are
#: controlled by the replay).
TUNABLE_PARAMS: frozenset[str] = frozenset(P.SETTINGS_PARAMS | {
    "qos_reliability", "qos_depth", "torch_threads", "publish_annotated",
    "inference_backend", "inference_threads", "proposal_threads"})
#: Diagnostics period requested from the node (s): counters are read from diagnostics.
DIAGNOSTICS_PERIOD = 0.5
#: Lines of node output quoted in errors.
LOG_TAIL_LINES = 25


class ReplayError(RuntimeError):
    """A replay evaluation cannot complete; :attr:`exit_code` is the CLI exit status."""

    exit_code = 1


class InputError(ReplayError):
    """Bad input: missing or corrupt bag, no image topics, bad sidecar, model, vocabulary or
    parameter (exit code 2)."""

    exit_code = 2


class NodeError(ReplayError):
    """The node never answered, or exited during the replay (exit code 3)."""

    exit_code = 3


@dataclass
class ReplaySettings:
    """What to replay the bag through.

    Attributes:
        model: bundle (.vdb); ``None``: the packaged default bundle.
        vocabulary: vocabulary YAML; ``None``: the bundle's own vocabulary.
        params: extra node parameters (names in :data:`TUNABLE_PARAMS`), already typed.
        device: torch device of the student (``auto``: cuda when available).
        text_cache_dir: label text-embedding cache folder ("" disables it).
        rate: replay speed factor (live mode).
        node_timeout: seconds the node may take to come up (live mode).
        drain_timeout: seconds to wait for outstanding labels after the last frame.
        namespace: namespace of the node and the replayed topics (default: a unique one).
        node_command: command that starts the node (``--ros-args ...`` is appended);
            default ``python -m vl_distill_ros.ros.node``.
        log_dir: where ``node.log`` goes (default: a temporary folder).
        progress: show a progress bar on stderr.
        depth: use the bag's registered depth (paired to colour topics by
            :func:`~vl_distill_ros.bags.bag_io.pair_camera_topics`); False replays colour
            only. Depth topics are never replayed as cameras either way.
        depth_topics, camera_info_topics: ``{colour topic: topic}`` pairings that override
            the naming convention.
        depth_camera_info_topics: ``{colour topic: the depth camera's CameraInfo topic}`` for
            depth not registered to colour (aligned with the bag's ``/tf_static``; see
            :mod:`~vl_distill_ros.bags.unregistered_depth`), overriding its convention.
    """

    model: Path | None = None
    vocabulary: Path | None = None
    params: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    text_cache_dir: str = str(P.BY_NAME["text_cache_dir"].default)
    rate: float = 1.0
    node_timeout: float = 60.0
    drain_timeout: float = 30.0
    namespace: str | None = None
    node_command: Sequence[str] | None = None
    log_dir: Path | None = None
    progress: bool = True
    depth: bool = True
    depth_topics: dict[str, str] = field(default_factory=dict)
    camera_info_topics: dict[str, str] = field(default_factory=dict)
    depth_camera_info_topics: dict[str, str] = field(default_factory=dict)


@dataclass
class Recording:
    """What one replay produced.

    Attributes:
        mode: ``live`` or ``offline``.
        frames: every image frame that was input (published or processed), in order.
        labels: the first labels document of each frame, keyed by ``(topic, stamp ns)``
            (topics are the bag's, without the replay namespace).
        rows: every document in arrival order with its times (what ``labels.jsonl`` holds).
        latencies_s: input-to-labels time per labelled frame (live: publication to arrival;
            offline: processing time).
        published: frames published (live) or processed (offline).
        duplicates: extra documents for an already labelled frame.
        unexpected: documents for frames that were not input.
        node: facts about the node run (command, pid, return code, counters, log file).
        vocabulary: ``{"source", "names"}`` of the vocabulary in use.
        settings: the pipeline parameter values used.
        duration_s: wall time of the replay (first input to last label).
    """

    mode: str
    frames: list[FrameKey] = field(default_factory=list)
    labels: dict[FrameKey, dict] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    latencies_s: dict[FrameKey, float] = field(default_factory=dict)
    published: int = 0
    duplicates: int = 0
    unexpected: int = 0
    node: dict[str, Any] = field(default_factory=dict)
    vocabulary: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0


# -------------------------------------------------------------------------------------------
# inputs and parameters
# -------------------------------------------------------------------------------------------
def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu`` (the node's rule); others unchanged."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _coerce(name: str, value: Any) -> Any:
    spec = P.BY_NAME[name]
    kind = spec.type
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            raise TypeError
        if kind == "integer":
            if isinstance(value, bool) or float(value) != int(value):
                raise TypeError
            out: Any = int(value)
        elif kind == "double":
            if isinstance(value, bool):
                raise TypeError
            out = float(value)
        elif kind == "string":
            out = str(value)
        elif kind == "integer_array":
            if not isinstance(value, (list, tuple)):
                raise TypeError
            out = [int(v) for v in value]
        elif kind == "string_array":
            if not isinstance(value, (list, tuple)):
                raise TypeError
            out = [str(v) for v in value]
        else:  # pragma: no cover - every type is listed above
            raise TypeError
    except (TypeError, ValueError):
        raise InputError(f"parameter {name} must be of type {kind}, got {value!r}") from None
    if name == "qos_reliability" and out not in ("best_effort", "reliable"):
        raise InputError(f"parameter qos_reliability must be best_effort or reliable, got "
                         f"{out!r}")
    if spec.range is not None and kind in ("integer", "double"):
        lo, hi = spec.range
        if not lo <= out <= hi:
            raise InputError(f"parameter {name} must lie in [{lo}, {hi}], got {out}")
    return out


def parse_param(text: str) -> tuple[str, Any]:
    """``NAME:=VALUE`` (or ``NAME=VALUE``) -> ``(name, typed value)``; the value is read as
    YAML like ``ros2 run ... -p`` does (``0.3``, ``true``, ``[0, 0, 64, 64]``).

    Raises:
        InputError: bad syntax, a name not in :data:`TUNABLE_PARAMS`, or a bad value.
    """
    import yaml

    sep = ":=" if ":=" in text else "="
    name, _, raw = text.partition(sep)
    name = name.strip()
    if not _ or not name:
        raise InputError(f"--param expects NAME:=VALUE, got {text!r}")
    if name not in TUNABLE_PARAMS:
        raise InputError(f"--param {name}: not a tunable node parameter; choose one of "
                         f"{sorted(TUNABLE_PARAMS)} (model, vocabulary, device and text "
                         "cache have their own options)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise InputError(f"--param {name}: cannot parse {raw!r}: {exc}") from None
    return name, _coerce(name, value)


def node_parameter_values(params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every node parameter's value: the declared defaults updated with ``params``."""
    values = {spec.name: (list(spec.default) if isinstance(spec.default, list) else spec.default)
              for spec in P.PARAMETERS}
    for name, value in (params or {}).items():
        if name not in P.BY_NAME:
            raise InputError(f"unknown node parameter {name!r}")
        values[name] = _coerce(name, value)
    if values["depth_camera_info_topics"] or values["depth_to_colour_poses"]:
        raise InputError("replay-eval pairs a bag's registered depth; depth_camera_info_topics "
                         "and depth_to_colour_poses (unregistered depth) are for the node only")
    return values


def pipeline_settings(values: Mapping[str, Any]):
    """The :class:`~vl_distill_ros.perception.pipeline.PipelineSettings` the node builds from these
    parameter values (the node's own rule, :meth:`PipelineSettings.from_params`), without ROS.

    Raises:
        InputError: invalid settings.
    """
    from ..perception.pipeline import PipelineError, PipelineSettings

    try:
        return PipelineSettings.from_params(values)
    except (PipelineError, ValueError) as exc:
        raise InputError(f"invalid pipeline settings: {exc}") from None


def _reported_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: values[k] for k in sorted(TUNABLE_PARAMS - {"publish_annotated"})}


def open_bag(path: str | Path, sidecar: str | Path | None = None,
             depth_topics: Mapping[str, str] | None = None,
             camera_info_topics: Mapping[str, str] | None = None,
             depth_camera_info_topics: Mapping[str, str] | None = None) -> BagContents:
    """:func:`~vl_distill_ros.bags.bag_io.read_camera_bag`, with every problem an
    :class:`InputError` (missing or corrupt bag, no image topics, bad ground truth, a
    depth or camera-info pairing naming a missing topic)."""
    try:
        return read_camera_bag(path, ground_truth=sidecar,
                               depth_topics=dict(depth_topics or {}),
                               camera_info_topics=dict(camera_info_topics or {}),
                               depth_camera_info_topics=dict(depth_camera_info_topics or {}))
    except BagError as exc:
        raise InputError(str(exc)) from None


def _check_model(model: Path | None) -> Path:
    path = Path(model).expanduser() if model else default_model_path()
    if not path.is_file():
        if model:
            raise InputError(f"model bundle not found: {path}")
        raise InputError(f"no --model given and the packaged default bundle {path} does not "
                         "exist; pass --model /path/to/student.vdb (made by 'vl-distill "
                         "export')")
    return path.resolve()


def _check_bundle_loads(model: Path) -> None:
    """Load the bundle once on the CPU (as the node will) and drop it: a truncated, corrupt
    or inconsistent bundle is an :class:`InputError` here instead of a node that dies."""
    from ..model.bundle import BundleError, load_bundle

    try:
        load_bundle(model, device="cpu")
    except BundleError as exc:
        raise InputError(f"cannot load model bundle: {exc}") from None


def _load_vocabulary_file(path: Path | None):
    if path is None:
        return None
    from ..model.vocabulary import Vocabulary, VocabularyError

    try:
        return Vocabulary.load(Path(path).expanduser())
    except VocabularyError as exc:
        raise InputError(f"--vocabulary: {exc}") from None


def _manifest_names(model: Path) -> list[str] | None:
    """The bundle's vocabulary names from its manifest (None when unreadable)."""
    try:
        from ..model.bundle import read_manifest
        from ..model.vocabulary import Vocabulary

        return Vocabulary.from_dict(read_manifest(model)["vocabulary"]).names
    except Exception:  # noqa: BLE001 - the node reports a broken bundle itself
        return None


def stamp_from_cdr(data: bytes, msgtype: str = IMAGE_TYPE) -> int:
    """``header.stamp`` (ns) of a serialised ``sensor_msgs/msg/Image`` or ``CompressedImage``
    (``msgtype``; the stamp starts either message, right after the 4-byte CDR encapsulation
    header), after checking that the whole message
    deserialises and its image decodes, exactly as the offline replay reads it; so the live
    replay stops on a corrupt image message with exit code 2 as ``--offline`` does, instead
    of publishing bytes the node can only drop.

    Raises:
        InputError: too short, an unknown encapsulation, an invalid stamp, CDR that does not
            deserialise or an image that cannot be decoded.
    """
    if len(data) < 12 or data[0] != 0 or data[1] not in (0, 1, 2, 3):
        raise InputError("an image message in the bag is not a CDR-serialised "
                         "sensor_msgs/msg/Image (corrupt bag)")
    order = "<" if data[1] & 1 else ">"
    sec, nanosec = struct.unpack_from(order + "iI", data, 4)
    if sec < 0 or nanosec >= 1_000_000_000:
        raise InputError(f"an image message in the bag has an invalid stamp ({sec} s, "
                         f"{nanosec} ns) (corrupt bag)")
    try:
        decode_image_cdr(data, f"the image message stamped {sec}.{nanosec:09d} s", msgtype)
    except BagError as exc:
        raise InputError(f"{exc} (corrupt bag)") from None
    return sec * 1_000_000_000 + nanosec


def _progress(total: int, enabled: bool, desc: str):
    try:
        from tqdm import tqdm

        return tqdm(total=total, disable=not enabled, unit="frame", desc=desc,
                    file=sys.stderr, leave=False)
    except ImportError:  # pragma: no cover - tqdm is a requirement
        class _Null:
            def update(self, n: int = 1) -> None: ...
            def set_postfix_str(self, s: str) -> None: ...
            def close(self) -> None: ...
        return _Null()


def _image_count(contents: BagContents) -> int:
    return sum(contents.message_counts.get(t, 0) for t in contents.image_topics)


# -------------------------------------------------------------------------------------------
# offline
# -------------------------------------------------------------------------------------------
def _offline_frames(contents: BagContents, settings: ReplaySettings, values: Mapping[str, Any]):
    """The bag's colour frames: RGB-D frames (depth paired by stamp within the node's
    ``depth_sync_tolerance``) when the bag has depth and ``settings.depth``, else images."""
    if settings.depth and contents.depth_topics:
        tol = int(round(float(values["depth_sync_tolerance"]) * 1e9))
        return contents.rgbd_frames(tolerance_ns=tol, depth_unit_m=float(values["depth_scale"]),
                                    defer_alignment=True)   # aligned as the node does
    return contents.images()


def _frame_depth(frame: Any) -> tuple[Any, Any]:
    """``(depth, intrinsics)`` for :meth:`PerceptionPipeline.process` from an RGB-D frame;
    a CameraInfo with unusable values gives no intrinsics (the pipeline notes it)."""
    from ..perception.camera_model import DepthError

    depth = getattr(frame, "depth", None)
    if depth is None or frame.camera_info is None:
        return None, None
    try:
        return depth, frame.intrinsics()
    except DepthError:
        return depth, None


def _offline_pipeline(model: Path, settings: ReplaySettings, values: Mapping[str, Any],
                      device: str):
    """The :class:`PerceptionPipeline` of an offline replay, its vocabulary and where the
    vocabulary came from (the node's rules; every problem is an :class:`InputError`)."""
    import torch

    from ..model.bundle import BundleError, load_bundle
    from ..model.runtime import RuntimeBackendError
    from ..model.text_service import TextEmbeddingService
    from ..perception.pipeline import PerceptionPipeline, PipelineError

    vocab_file = _load_vocabulary_file(settings.vocabulary)
    pipe_settings = pipeline_settings(values)
    if int(values["torch_threads"]) > 0:
        torch.set_num_threads(int(values["torch_threads"]))
    try:
        bundle = load_bundle(model, device=device)
    except BundleError as exc:
        raise InputError(f"cannot load model bundle: {exc}") from None
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"cannot load model bundle {model} on device {device!r}: "
                         f"{exc}") from None
    if vocab_file is not None:
        cache = os.path.expanduser(settings.text_cache_dir) if settings.text_cache_dir else None
        service = TextEmbeddingService.from_bundle(bundle, cache_dir=cache)
        try:
            emb = service.embed_vocabulary(vocab_file)
        except Exception as exc:  # noqa: BLE001 - e.g. teacher weights missing offline
            raise InputError(f"could not embed the vocabulary {settings.vocabulary}: "
                             f"{exc}") from None
        vocab, source = vocab_file, f"file {settings.vocabulary}"
    else:
        vocab, emb, source = bundle.vocabulary, bundle.text_embeddings, "bundle"
    try:
        pipe = PerceptionPipeline(bundle, vocabulary=vocab, embeddings=emb,
                                  inference_backend=str(values["inference_backend"]),
                                  inference_threads=int(values["inference_threads"]),
                                  proposal_threads=int(values["proposal_threads"]),
                                  **pipe_settings.as_kwargs())
    except (PipelineError, RuntimeBackendError) as exc:
        raise InputError(f"cannot build the pipeline: {exc}") from None
    return pipe, vocab, source


def run_offline(contents: BagContents, settings: ReplaySettings) -> Recording:
    """Run the pipeline on every image of the bag (see the module docstring).

    Raises:
        InputError: bad model, vocabulary, settings or an undecodable image.
    """
    from ..perception.pipeline import PipelineError, labels_document

    model = _check_model(settings.model)
    values = node_parameter_values(settings.params)
    device = resolve_device(settings.device)
    pipe, vocab, source = _offline_pipeline(model, settings, values, device)
    rec = Recording(mode="offline", settings=_reported_settings(values),
                    vocabulary={"source": source, "names": vocab.names},
                    node={"model_path": str(model), "device": device})
    bar = _progress(_image_count(contents), settings.progress, "offline")
    t_start = time.monotonic()
    depth_counts: dict[str, int] = {}
    try:
        for img in _offline_frames(contents, settings, values):
            key = (img.topic, int(img.stamp_ns))
            t0 = time.perf_counter()
            objects, version = pipe.process(img.image, *_frame_depth(img), camera=img.topic)
            dt = time.perf_counter() - t0
            if getattr(img, "depth_note", None) is not None and \
                    img.topic in contents.depth_topics:
                status = pipe.last_depth_status if img.depth is not None else img.depth_note
                depth_counts[status] = depth_counts.get(status, 0) + 1
            sec, nanosec = divmod(int(img.stamp_ns), 1_000_000_000)
            # the JSON round trip makes the document exactly what a subscriber would decode
            doc = json.loads(json.dumps(labels_document(sec, nanosec, img.frame_id, img.topic,
                                                        version, objects)))
            rec.frames.append(key)
            rec.published += 1
            now = time.monotonic() - t_start
            rec.rows.append({"frame": [key[0], key[1]], "received_s": now,
                             "published_s": now - dt, "latency_s": dt, "doc": doc})
            if key in rec.labels:
                rec.duplicates += 1
            else:
                rec.labels[key] = doc
                rec.latencies_s[key] = dt
            bar.update(1)
    except BagError as exc:
        raise InputError(str(exc)) from None
    except PipelineError as exc:
        raise InputError(f"an image of the bag cannot be processed: {exc}") from None
    finally:
        bar.close()
        pipe.close()
    if depth_counts:
        rec.node["depth"] = {"topics": dict(contents.depth_topics),
                             "frames_by_status": depth_counts,
                             # the registration check's shift at the end, per colour topic
                             "registration_shift_px": {
                                 topic: list(pipe.depth_shift(topic))
                                 for topic in contents.depth_topics}}
    rec.duration_s = time.monotonic() - t_start
    return rec


# -------------------------------------------------------------------------------------------
# live
# -------------------------------------------------------------------------------------------
def _tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    return log_tail(path, lines, indent="    ")


def _check_running(node: NodeProcess, when: str) -> None:
    """Raise :class:`NodeError` quoting the end of the node's log if the node has exited."""
    rc = node.poll()
    if rc is not None:
        raise NodeError(f"the node exited with code {rc} {when}. Last lines of its output "
                        f"({node.log_path}):\n{_tail(node.log_path)}")


def _wait_until(cond: Callable[[], bool], deadline: float, node: NodeProcess,
                what: str, interval: float = 0.05) -> bool:
    """Poll ``cond`` until true or ``deadline``; a node that exits raises :class:`NodeError`."""
    while True:
        if cond():
            return True
        _check_running(node, what)
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


@dataclass
class LivePlan:
    """Names, command and log of one live replay (made without ROS by :func:`plan_live`).

    Attributes:
        namespace: namespace of the node and of the replayed topics.
        topics: the bag's image topics.
        replay_topic: bag topic -> the namespaced topic it is replayed on.
        cmd: the node's full command line; ``base_cmd`` is its part before ``--ros-args``.
        log_path: the node's ``node.log``; ``tmp_log``: a temporary folder to remove after a
            completed replay (when no log folder was given).
        env: the node's environment.
        side_topics: the bag's depth and CameraInfo topics replayed with the images (their
            namespaced names are in ``replay_topic`` too), topic -> message type.
        image_types: the message type of each of ``topics`` (``Image`` or
            ``CompressedImage``).
    """

    namespace: str
    topics: list[str]
    replay_topic: dict[str, str]
    cmd: list[str]
    base_cmd: list[str]
    log_path: Path
    env: dict[str, str]
    tmp_log: str | None = None
    side_topics: dict[str, str] = field(default_factory=dict)
    image_types: dict[str, str] = field(default_factory=dict)

    @property
    def fqn(self) -> str:
        """The node's fully qualified name."""
        return f"{self.namespace}/{NODE_NAME}"

    @property
    def labels_topic(self) -> str:
        """The node's ``~/labels``."""
        return f"{self.fqn}/labels"

    @property
    def camera_map(self) -> dict[str, str]:
        """Namespaced topic -> the bag's topic (to key documents by the bag's topics)."""
        return {v: k for k, v in self.replay_topic.items()}


def _depth_plan(contents: BagContents, settings: ReplaySettings,
                topics: Sequence[str]) -> dict[str, list[str]]:
    """The bag's depth and CameraInfo topics in ``image_topics`` order, when the replay
    uses depth and every camera has both; else empty lists (colour only)."""
    depth = getattr(contents, "depth_topics", None) or {}
    info = getattr(contents, "camera_info_topics", None) or {}
    if not settings.depth or not all(t in depth and t in info for t in topics):
        return {"depth_topics": [], "camera_info_topics": []}
    return {"depth_topics": [depth[t] for t in topics],
            "camera_info_topics": [info[t] for t in topics]}


def _alignment_plan(contents: BagContents, topics: Sequence[str]) -> dict[str, tuple[str, str]]:
    """``{colour topic: (depth camera's CameraInfo topic, pose as the node's
    depth_to_colour_poses entry)}`` of the cameras whose depth the bag's static transforms
    align."""
    plans = getattr(contents, "depth_alignment", None) or {}
    return {t: (plans[t].depth_camera_info_topic, " ".join(repr(float(v)) for v in plans[t].pose))
            for t in topics if t in plans and plans[t].pose is not None}


def _transport_suffix(topic: str, msgtype: str, transport: str) -> str:
    """What to append to a replayed topic so that the node, which picks the message type by
    image_transport's naming, subscribes with the bag's type: ``/compressed`` or
    ``/compressedDepth`` after a CompressedImage topic not already named so, else nothing."""
    if msgtype != COMPRESSED_IMAGE_TYPE or topic_transport(topic) != "raw":
        return ""
    return "/" + transport


def plan_live(contents: BagContents, settings: ReplaySettings, model: Path, vocab_file: Any,
              values: Mapping[str, Any]) -> LivePlan:
    """Phase 1a: the namespace, topics, node command, log folder and environment."""
    ns = settings.namespace or f"/vl_replay_{os.getpid()}_{secrets.token_hex(3)}"
    ns = "/" + ns.strip("/")
    topics = list(contents.image_topics)
    depth = _depth_plan(contents, settings, topics)
    aligned = _alignment_plan(contents, topics) if depth["depth_topics"] else {}
    side = {t: contents.topics[t] for t in [*depth["depth_topics"], *depth["camera_info_topics"],
                                            *(info for info, _ in aligned.values())]}
    types = getattr(contents, "topics", None) or {}
    suffix = {t: _transport_suffix(t, types.get(t, IMAGE_TYPE),
                                   "compressedDepth" if t in depth["depth_topics"]
                                   else "compressed") for t in [*topics, *side]}
    replay_topic = {t: ns + (t if t.startswith("/") else "/" + t) + suffix[t]
                    for t in [*topics, *side]}
    node_values = {"model_path": str(model), "image_topics": [replay_topic[t] for t in topics],
                   "persist_vocabulary": False, "text_cache_dir": settings.text_cache_dir,
                   "device": settings.device, "diagnostics_period": DIAGNOSTICS_PERIOD,
                   **{k: values[k] for k in settings.params}}
    if side:
        node_values.update({name: [replay_topic[t] for t in listed]
                            for name, listed in depth.items()})
        node_values["depth_sync_tolerance"] = values["depth_sync_tolerance"]
    if aligned:
        node_values["depth_camera_info_topics"] = [
            replay_topic[aligned[t][0]] if t in aligned else "" for t in topics]
        node_values["depth_to_colour_poses"] = [aligned[t][1] if t in aligned else ""
                                                for t in topics]
    if vocab_file is not None:
        node_values["vocabulary_file"] = str(Path(settings.vocabulary).expanduser().resolve())
    base_cmd = list(settings.node_command or default_node_command())
    log_dir, tmp_log = settings.log_dir, None
    if log_dir is None:
        import tempfile

        tmp_log = tempfile.mkdtemp(prefix="vl_replay_")
        log_dir = Path(tmp_log)
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("ROS_LOG_DIR", str(Path(log_dir) / "ros_log"))
    return LivePlan(namespace=ns, topics=topics, replay_topic=replay_topic,
                    cmd=node_command(ns, node_values, base_cmd=base_cmd), base_cmd=base_cmd,
                    log_path=Path(log_dir) / "node.log", env=env, tmp_log=tmp_log,
                    side_topics=side,
                    image_types={t: types.get(t, IMAGE_TYPE) for t in topics})


class DiagnosticsLog:
    """The node's ``/diagnostics`` as last seen: its model/vocabulary status, its cameras'
    values and how many messages arrived (thread-safe; :meth:`on_message` is the
    subscription callback)."""

    def __init__(self, fqn: str) -> None:
        self.fqn = fqn
        self.lock = threading.Lock()
        self.node: dict[str, Any] | None = None
        self.cameras: dict[str, dict[str, str]] = {}
        self.count = 0
        self.t = 0.0

    def on_message(self, msg: Any) -> None:
        """Absorb a ``DiagnosticArray``; statuses of other nodes are ignored."""
        mine = [st for st in msg.status if st.hardware_id == self.fqn]
        if not mine:
            return
        with self.lock:
            for st in mine:
                vals = {kv.key: kv.value for kv in st.values}
                if st.name.endswith("model and vocabulary"):
                    self.node = {"level": int.from_bytes(st.level, "little")
                                 if isinstance(st.level, bytes) else int(st.level),
                                 "message": st.message, **vals}
                elif ": camera " in st.name:
                    self.cameras[vals.get("topic", st.name)] = vals
            self.count += 1
            self.t = time.monotonic()

    def seen(self) -> bool:
        """Whether a model/vocabulary status arrived."""
        with self.lock:
            return self.node is not None

    def received(self) -> int:
        """How many of the node's diagnostics messages arrived."""
        with self.lock:
            return self.count


def _import_ros() -> dict[str, Any]:
    try:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image
        from std_msgs.msg import String
    except ImportError as exc:
        raise NodeError(f"live replay needs rclpy and the ROS 2 message packages ({exc}); "
                        "use --offline to evaluate without ROS") from None
    return {"rclpy": rclpy, "DiagnosticArray": DiagnosticArray, "Image": Image,
            "CameraInfo": CameraInfo, "CompressedImage": CompressedImage,
            "String": String, "SingleThreadedExecutor": SingleThreadedExecutor,
            "QoSProfile": QoSProfile, "HistoryPolicy": HistoryPolicy,
            "ReliabilityPolicy": ReliabilityPolicy, "DurabilityPolicy": DurabilityPolicy}


class ReplayNode:
    """The replay side in this process, in its own rclpy context: one image publisher per
    replayed topic, the labels recorder (:attr:`arrivals`: ``(receive time, JSON)``) and the
    :class:`DiagnosticsLog`, spun by a background executor. :meth:`close` tears it down."""

    def __init__(self, plan: LivePlan) -> None:
        ros = _import_ros()
        rclpy, qos = ros["rclpy"], ros["QoSProfile"]
        self.plan = plan
        self.arrivals: list[tuple[float, str]] = []
        self.diagnostics = DiagnosticsLog(plan.fqn)
        self.executor = self.spin_thread = self.node = None
        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context)
        try:
            self.node = rclpy.create_node("vl_distill_replay", namespace=plan.namespace,
                                          context=self.context, start_parameter_services=False)
            pub_qos = qos(history=ros["HistoryPolicy"].KEEP_LAST, depth=10,
                          reliability=ros["ReliabilityPolicy"].RELIABLE,
                          durability=ros["DurabilityPolicy"].VOLATILE)
            types = {t: ros[ty.rsplit("/", 1)[-1]]
                     for t, ty in {**plan.image_types, **plan.side_topics}.items()}
            self.pubs = {t: self.node.create_publisher(types.get(t, ros["Image"]),
                                                       plan.replay_topic[t], pub_qos)
                         for t in [*plan.topics, *plan.side_topics]}
            self.node.create_subscription(
                ros["String"], plan.labels_topic,
                lambda msg: self.arrivals.append((time.monotonic(), msg.data)),
                qos(history=ros["HistoryPolicy"].KEEP_LAST, depth=1000,
                    reliability=ros["ReliabilityPolicy"].RELIABLE))
            self.node.create_subscription(ros["DiagnosticArray"], "/diagnostics",
                                          self.diagnostics.on_message, 50)
            self.executor = ros["SingleThreadedExecutor"](context=self.context)
            self.executor.add_node(self.node)
            self.spin_thread = threading.Thread(target=self.executor.spin,
                                                name="vl_replay_spin", daemon=True)
            self.spin_thread.start()
        except BaseException:
            self.close()
            raise

    def publish(self, topic: str, data: bytes) -> None:
        """Publish the stored CDR bytes of an image of the bag's ``topic``."""
        self.pubs[topic].publish(data)

    def labels_publisher_seen(self) -> bool:
        """Whether the node's labels publisher is discovered."""
        return self.node.count_publishers(self.plan.labels_topic) > 0

    def matched_subscriptions(self) -> int:
        """How many replayed topics have the node's subscription matched."""
        return sum(1 for p in self.pubs.values() if p.get_subscription_count() > 0)

    def node_ready(self) -> bool:
        """The node is up: diagnostics seen, labels publisher and every subscription matched."""
        return (self.diagnostics.seen() and self.labels_publisher_seen()
                and self.matched_subscriptions() == len(self.pubs))

    def close(self) -> None:
        """Stop spinning, destroy the node and shut the context down."""
        if self.executor is not None:
            self.executor.shutdown(timeout_sec=5.0)
        if self.spin_thread is not None:
            self.spin_thread.join(timeout=5.0)
        if self.node is not None:
            self.node.destroy_node()
        self.context.try_shutdown()


def start_node(plan: LivePlan) -> NodeProcess:
    """Phase 1b: start the node process (:class:`NodeError` when it cannot be started)."""
    try:
        return NodeProcess(plan.cmd, plan.log_path, plan.env)
    except OSError as exc:
        raise NodeError(f"cannot start the node ({shlex.join(plan.cmd[:3])} ...): "
                        f"{exc}") from None


def wait_for_node(replay: ReplayNode, node: NodeProcess, timeout: float) -> dict[str, Any]:
    """Phase 2: wait until the node is discovered and ready; returns its first
    model/vocabulary status.

    Raises:
        NodeError: not ready within ``timeout`` seconds (saying what was missing), or exited.
        InputError: the node could not use the vocabulary.
    """
    plan = replay.plan
    if not _wait_until(replay.node_ready, time.monotonic() + timeout, node,
                       "before it was ready"):
        raise NodeError(
            f"the node never answered: not ready within {timeout:g} s "
            f"(labels publisher {'seen' if replay.labels_publisher_seen() else 'not seen'} "
            f"on {plan.labels_topic}, image subscriptions matched "
            f"{replay.matched_subscriptions()}/{len(replay.pubs)}, diagnostics "
            f"{'seen' if replay.diagnostics.seen() else 'not seen'}). Command: "
            f"{shlex.join(plan.base_cmd)} ... Last lines of its output ({plan.log_path}):\n"
            f"{_tail(plan.log_path) or '    (no output)'}")
    with replay.diagnostics.lock:
        status = dict(replay.diagnostics.node or {})
    if status.get("vocabulary_error"):
        raise InputError(f"the node could not use the vocabulary: "
                         f"{status['vocabulary_error']}")
    return status


@dataclass
class PacedRun:
    """What :func:`publish_paced` did: frames in order, their publication times, the
    monotonic time of the first and last publication."""

    frames: list[FrameKey] = field(default_factory=list)
    pub_time: dict[FrameKey, float] = field(default_factory=dict)
    t_start: float | None = None
    t_last: float = 0.0


def publish_paced(messages: Iterable[Any], rate: float, publish: Callable[[str, bytes], None],
                  check: Callable[[int], None],
                  progress: Callable[[int], None] | None = None,
                  frame_topics: Container[str] | None = None) -> PacedRun:
    """Phase 3: publish each raw image message at ``t0 + (bag time - first bag time) / rate``.

    Args:
        messages: :class:`~vl_distill_ros.bags.bag_io.RawMessage` items in bag-time order.
        rate: speed factor.
        publish: ``publish(topic, CDR bytes)``.
        check: called with the number of frames published so far while waiting, and every
            20 frames (raises to abort, e.g. when the node exited).
        progress: called with that number after each frame.
        frame_topics: the topics whose messages are frames (the others, depth and
            CameraInfo, are published but expect no labels); ``None``: every topic.
    """
    run = PacedRun()
    t_bag0 = 0
    for raw in messages:
        is_frame = frame_topics is None or raw.topic in frame_topics
        # colour frames are checked as --offline reads them; depth and CameraInfo messages
        # go to the node as they are (it reports bad depth per camera)
        key = (raw.topic, stamp_from_cdr(raw.data, raw.msgtype)) if is_frame else None
        if run.t_start is None:
            run.t_start, t_bag0 = time.monotonic(), raw.timestamp_ns
        target = run.t_start + (raw.timestamp_ns - t_bag0) / 1e9 / rate
        while True:
            now = time.monotonic()
            if now >= target:
                break
            check(len(run.frames))
            time.sleep(min(0.05, target - now))
        publish(raw.topic, raw.data)
        if not is_frame:
            continue
        run.pub_time[key] = time.monotonic()
        run.frames.append(key)
        n = len(run.frames)
        if progress is not None:
            progress(n)
        if n % 20 == 0:
            check(n)
    run.t_last = time.monotonic()
    return run


def _replay_bag(contents: BagContents, replay: ReplayNode, node: NodeProcess,
                settings: ReplaySettings) -> PacedRun:
    """:func:`publish_paced` over the bag's images into the node, with a progress bar."""
    bar = _progress(_image_count(contents), settings.progress, f"replay x{settings.rate:g}")

    def check(n: int) -> None:
        _check_running(node, f"during the replay (after {n} frames)")

    def progress(n: int) -> None:
        bar.update(1)
        if n % 10 == 0:
            bar.set_postfix_str(f"{len(replay.arrivals)} labelled")

    try:
        plan = replay.plan
        return publish_paced(iter_raw_messages(contents.path, [*plan.topics, *plan.side_topics]),
                             settings.rate, replay.publish, check, progress,
                             frame_topics=set(plan.topics))
    except BagError as exc:
        raise InputError(str(exc)) from None
    finally:
        bar.close()


def drain(arrivals: Sequence[tuple[float, str]], run: PacedRun, camera_map: Mapping[str, str],
          timeout: float, check: Callable[[], None]) -> None:
    """Phase 4: wait until every published frame is labelled, or no label arrived for a
    quiet period (2 s, or 3x the recent latency when longer), or ``timeout`` seconds after
    the last publication. ``check`` is called between polls (raises to abort)."""
    wanted = set(run.frames)
    got: set[FrameKey] = set()
    recent_latency: list[float] = []
    parsed = 0
    deadline = run.t_last + timeout
    while True:
        current = len(arrivals)
        for t_recv, data in arrivals[parsed:current]:
            try:
                key = doc_frame_key(json.loads(data), camera_map)
            except (ValueError, KeyError, TypeError):
                continue
            got.add(key)
            if key in run.pub_time:
                recent_latency.append(t_recv - run.pub_time[key])
        parsed = current
        del recent_latency[:-20]
        if wanted <= got:
            return
        last_arrival = arrivals[-1][0] if arrivals else run.t_last
        quiet = max(2.0, 3.0 * max(recent_latency, default=0.0))
        now = time.monotonic()
        if now - max(last_arrival, run.t_last) > quiet or now >= deadline:
            return
        check()
        time.sleep(0.05)


def collect_documents(rec: Recording, arrivals: Sequence[tuple[float, str]], run: PacedRun,
                      camera_map: Mapping[str, str]) -> None:
    """Phase 5a: the recorded documents into ``rec`` (rows, first label per frame, its
    latency, duplicates, unexpected and unparsable documents, duration)."""
    wanted = set(run.frames)
    t_start = run.t_start
    for t_recv, data in list(arrivals):
        try:
            doc = json.loads(data)
            key = doc_frame_key(doc, camera_map)
        except (ValueError, KeyError, TypeError):
            rec.unexpected += 1
            continue
        t_pub = run.pub_time.get(key)
        latency = (t_recv - t_pub) if t_pub is not None else None
        rec.rows.append({"frame": [key[0], key[1]],
                         "received_s": t_recv - (t_start or t_recv),
                         "published_s": (t_pub - t_start) if t_pub is not None
                         and t_start is not None else None,
                         "latency_s": latency, "doc": doc})
        if key not in wanted:
            rec.unexpected += 1
        elif key in rec.labels:
            rec.duplicates += 1
        else:
            rec.labels[key] = doc
            if latency is not None:
                rec.latencies_s[key] = latency
    rec.duration_s = ((arrivals[-1][0] if arrivals else run.t_last) - t_start
                      if t_start is not None else 0.0)


def node_counters(cameras: Mapping[str, Mapping[str, str]]) -> dict[str, int | None]:
    """The node's counters summed over its cameras' diagnostics (None when unreadable)."""
    counters: dict[str, int | None] = {}
    for name in ("received", "processed", "dropped", "bad_frames", "errors"):
        try:
            counters[name] = sum(int(c.get(name, 0)) for c in cameras.values())
        except ValueError:
            counters[name] = None
    return counters


def _finish(rec: Recording, replay: ReplayNode, node: NodeProcess, run: PacedRun) -> None:
    """Phase 5: fail when nothing was labelled, wait for the final counters, collect."""
    plan = replay.plan
    if rec.published and not replay.arrivals:
        raise NodeError(f"the node never answered: it came up but published no labels for "
                        f"any of the {rec.published} frames within "
                        f"{time.monotonic() - run.t_last:.0f} s of the last one. Last lines "
                        f"of its output ({plan.log_path}):\n{_tail(plan.log_path) or '    (none)'}")
    before = replay.diagnostics.received()  # one more diagnostics message: final counters
    _wait_until(lambda: replay.diagnostics.received() > before,
                time.monotonic() + 4 * DIAGNOSTICS_PERIOD + 1.0, node, "after the replay")
    collect_documents(rec, replay.arrivals, run, plan.camera_map)
    with replay.diagnostics.lock:
        cams = {plan.camera_map.get(t, t): dict(v)
                for t, v in replay.diagnostics.cameras.items()}
    rec.node["counters"] = node_counters(cams)
    rec.node["cameras"] = cams


def _teardown(rec: Recording, plan: LivePlan, node: NodeProcess | None,
              replay: ReplayNode | None, completed: bool) -> None:
    """Phase 6: stop the node (its exit code into ``rec``), close the replay node and remove
    a temporary log folder after a completed replay."""
    try:
        if node is not None:
            rec.node["returncode"] = node.stop()
    finally:
        if replay is not None:
            replay.close()
        if plan.tmp_log is not None and completed:
            import shutil

            shutil.rmtree(plan.tmp_log, ignore_errors=True)


def run_live(contents: BagContents, settings: ReplaySettings) -> Recording:
    """Replay the bag into a live node and record its labels (see the module docstring).

    Raises:
        InputError: bad model, vocabulary, parameters or a corrupt message in the bag.
        NodeError: the node never answered or exited.
    """
    if not math.isfinite(settings.rate) or settings.rate <= 0:
        raise InputError(f"--rate must be a finite number > 0, got {settings.rate}")
    model = _check_model(settings.model)
    _check_bundle_loads(model)  # a corrupt bundle is bad input (2), found before the node runs
    vocab_file = _load_vocabulary_file(settings.vocabulary)
    values = node_parameter_values(settings.params)
    pipeline_settings(values)  # invalid settings are bad input, not a node failure
    _import_ros()
    plan = plan_live(contents, settings, model, vocab_file, values)
    rec = Recording(mode="live", settings=_reported_settings(values))
    rec.vocabulary = {"source": f"file {settings.vocabulary}" if vocab_file is not None
                      else "bundle",
                      "names": vocab_file.names if vocab_file is not None
                      else _manifest_names(model)}
    node = replay = None
    completed = False
    try:
        replay = ReplayNode(plan)
        node = start_node(plan)
        rec.node = {"command": plan.cmd, "pid": node.pid, "namespace": plan.namespace,
                    "labels_topic": plan.labels_topic, "log": str(plan.log_path)}
        t_launch = time.monotonic()
        status = wait_for_node(replay, node, settings.node_timeout)
        rec.node["startup_s"] = time.monotonic() - t_launch
        rec.node["vocabulary_size"] = int(status.get("vocabulary_size", 0) or 0)
        rec.node["model_path"] = status.get("model_path", str(model))
        time.sleep(0.3)  # let the endpoint matching settle on both sides
        run = _replay_bag(contents, replay, node, settings)
        rec.frames, rec.published = list(run.frames), len(run.frames)
        drain(replay.arrivals, run, plan.camera_map, settings.drain_timeout,
              lambda: _check_running(node, "while its last frames were processed"))
        _finish(rec, replay, node, run)
        completed = True
    finally:
        _teardown(rec, plan, node, replay, completed)
    return rec


# -------------------------------------------------------------------------------------------
# the whole evaluation
# -------------------------------------------------------------------------------------------
def evaluate_bag(bag: str | Path, settings: ReplaySettings, out_dir: str | Path, *,
                 offline: bool = False, sidecar: str | Path | None = None,
                 split: Any | None = None, split_path: str = "",
                 reference_vocabularies: Sequence[Any] = (), iou_threshold: float = 0.5,
                 plots: bool = True) -> dict[str, Any]:
    """Read the bag, replay it (live or offline), score the labels and write the report.

    Args:
        bag: rosbag2 bag folder (or a single ``.mcap`` / ``.db3`` file).
        settings: model, vocabulary, parameters and replay options.
        out_dir: where ``report.json``, ``report.md``, ``labels.jsonl``, ``node.log`` (live)
            and the plots go.
        offline: run the pipeline directly instead of the node.
        sidecar: JSON Lines ground truth instead of the bag's ``/ground_truth`` topic.
        split: :class:`~vl_distill_ros.model.vocabulary.Split` for the ID / OOD groups.
        split_path: where the split came from (reported).
        reference_vocabularies: vocabularies that map split keys to label names (besides the
            evaluated vocabulary and the bundle's own).
        iou_threshold: minimum IoU of a prediction-to-ground-truth match.
        plots: write the PNG plots.

    Returns:
        The report (also written to ``out_dir/report.json``).

    Raises:
        InputError, NodeError: see the module docstring.
    """
    from ..model.vocabulary import Vocabulary
    from .report import build_report, write_report
    from .scoring import Membership, score_frames

    if not 0.0 < float(iou_threshold) <= 1.0:
        raise InputError(f"--iou must be in (0, 1], got {iou_threshold}")
    contents = open_bag(bag, sidecar, settings.depth_topics, settings.camera_info_topics,
                        settings.depth_camera_info_topics)
    if settings.depth:
        for colour, plan in sorted(contents.depth_alignment.items()):
            if plan.pose is None:
                print(f"warning: {colour}: {plan.note}", file=sys.stderr)
    if _image_count(contents) == 0:
        raise InputError(f"{contents.path} has image topics {contents.image_topics} but no "
                         "image messages")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if settings.log_dir is None:
        settings.log_dir = out
    rec = run_offline(contents, settings) if offline else run_live(contents, settings)

    vocabularies: list[Any] = []
    names = rec.vocabulary.get("names") or []
    if settings.vocabulary is not None:
        vocabularies.append(_load_vocabulary_file(settings.vocabulary))
    model = _check_model(settings.model)
    try:
        from ..model.bundle import read_manifest

        vocabularies.append(Vocabulary.from_dict(read_manifest(model)["vocabulary"]))
    except Exception:  # noqa: BLE001 - only used to map keys to names
        pass
    vocabularies += [v for v in reference_vocabularies if v is not None]
    membership = Membership.from_split(split, vocabularies)
    gt = {k: list(v) for k, v in contents.ground_truth.items()}
    scores = score_frames(rec.frames, gt, rec.labels, membership, iou_threshold,
                          latencies_s=rec.latencies_s, vocabulary_names=names or None)
    report = build_report(contents, rec, scores, rate=settings.rate if not offline else None,
                          split_name=membership.split_name, split_path=split_path,
                          model=str(model))
    lat_ms = [rec.latencies_s[k] * 1e3 for k in rec.frames if k in rec.latencies_s]
    write_report(out, report, rec.rows, lat_ms, plots=plots)
    return report
