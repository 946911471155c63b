"""What a replay evaluation is given and what it records (ROS-free apart from the node's
parameter table): :class:`ReplaySettings`, :class:`Recording`, the errors
(:class:`InputError`, :class:`NodeError`), the node parameters a replay may set
(:func:`parse_param`, :func:`node_parameter_values`, :func:`pipeline_settings`) and the bag
and model checks both replay modes (:mod:`.replay` offline, :mod:`.live_replay` live) share.
"""
from __future__ import annotations

import numbers
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import AbstractSet, Any, Mapping, Sequence

from ..bags.bag_io import (IMAGE_TYPE, BagContents, BagError, UndecodableImage, decode_image_cdr,
                           read_camera_bag)
from ..ros import params as P
from ..ros.params import default_model_path  # the packaged bundle, as the node resolves it
from .scoring import FrameKey

__all__ = ["ReplayError", "InputError", "NodeError", "ReplaySettings", "Recording",
           "TUNABLE_PARAMS", "default_model_path", "parse_param", "node_parameter_values",
           "with_bag_close_topics", "pipeline_settings", "reported_settings", "open_bag",
           "check_model", "check_bundle_loads", "load_vocabulary_file", "manifest_names",
           "stamp_from_cdr", "undecodable_hint", "UndecodableImages",
           "resolve_device", "progress_bar", "image_count"]

#: Node parameters that ``--param`` may set (the others have dedicated options or are
#: controlled by the replay).
TUNABLE_PARAMS: frozenset[str] = frozenset(P.SETTINGS_PARAMS | {
    "qos_reliability", "qos_depth", "torch_threads", "publish_annotated",
    "inference_backend", "inference_backend_behind", "inference_threads", "proposal_threads",
    "proposal_box_net_close_topics", "description_catalogue", "depth_scale",
    "depth_sync_tolerance"})
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
        image_topics: the colour topics to replay (``--image-topic``); empty: every image
            topic that is not depth by the naming convention.
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
    image_topics: list[str] = field(default_factory=list)


@dataclass
class UndecodableImages:
    """Image messages that deserialise but whose image cannot be decoded (offline skips
    them; live publishes them and the node drops them): their frames, how many per topic
    and the first reason of each topic."""

    counts: dict[str, int] = field(default_factory=dict)
    first_error: dict[str, str] = field(default_factory=dict)
    frames: set[FrameKey] = field(default_factory=set)

    def add(self, key: FrameKey, why: str) -> None:
        """Count the frame ``key`` (camera topic, stamp), undecodable for ``why``."""
        self.frames.add(key)
        self.counts[key[0]] = self.counts.get(key[0], 0) + 1
        self.first_error.setdefault(key[0], why)

    def total(self) -> int:
        """How many images could not be decoded."""
        return sum(self.counts.values())

    def refuse_if_all(self, frames: Sequence[FrameKey], settings: "ReplaySettings") -> None:
        """Raise :class:`InputError` (with the ``--image-topic`` hint) when no image of
        ``frames``, the replay's input, could be decoded: there is nothing to score."""
        if self.counts and self.total() >= len(frames):
            why = next(iter(self.first_error.values()))
            raise InputError(f"{why}{undecodable_hint(settings)}")


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
        undecodable: images that could not be decoded (their frames count as input,
            unlabelled).
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
    undecodable: UndecodableImages = field(default_factory=UndecodableImages)
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
            # 3.0 is a double to the node (rclpy refuses it for an integer parameter), so
            # refused here too: a command tried offline must run on the node as written
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError
            out: Any = int(value)
        elif kind == "double":
            if isinstance(value, bool):
                raise TypeError
            out = float(value)
        elif kind == "string":
            out = str(value)
        elif kind == "integer_array":
            if not isinstance(value, (list, tuple)) or any(
                    isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in value):
                raise TypeError
            out = [int(v) for v in value]
        elif kind == "string_array":
            if not isinstance(value, (list, tuple)):
                raise TypeError
            out = [str(v) for v in value]
        else:  # pragma: no cover - every type is listed above
            raise TypeError
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(.inf)
        raise InputError(f"parameter {name} must be of type {kind}, got {value!r}") from None
    if name == "qos_reliability" and out not in ("best_effort", "reliable"):
        raise InputError(f"parameter qos_reliability must be best_effort or reliable, got "
                         f"{out!r}")
    if name in ("inference_backend", "inference_backend_behind"):
        # the node's start-up check (startup_checks): offline, make_runner's ValueError was a
        # traceback, and an unknown inference_backend_behind was taken as "same"
        from ..model.runtime import BACKENDS, BEHIND_BACKENDS

        allowed = BACKENDS if name == "inference_backend" else BEHIND_BACKENDS
        if out not in allowed:
            raise InputError(f"parameter {name} must be one of {', '.join(allowed)}, got "
                             f"{out!r}")
    if spec.range is not None and kind in ("integer", "double"):
        lo, hi = spec.range
        if not lo <= out <= hi:
            raise InputError(f"parameter {name} must lie in [{lo}, {hi}], got {out}")
    return out


def parse_param(text: str, tunable: AbstractSet[str] = TUNABLE_PARAMS) -> tuple[str, Any]:
    """``NAME:=VALUE`` (or ``NAME=VALUE``) -> ``(name, typed value)``; the value is read as
    YAML like ``ros2 run ... -p`` does (``0.3``, ``true``, ``[0, 0, 64, 64]``); ``tunable``:
    the names taken (a command that has no use for some narrows it).

    Raises:
        InputError: bad syntax, a name not in ``tunable``, or a bad value.
    """
    import yaml

    sep = ":=" if ":=" in text else "="
    name, _, raw = text.partition(sep)
    name = name.strip()
    if not _ or not name:
        raise InputError(f"--param expects NAME:=VALUE, got {text!r}")
    if name not in tunable:
        raise InputError(f"--param {name}: not a tunable node parameter; choose one of "
                         f"{sorted(tunable)} (model, vocabulary, device and text "
                         "cache have their own options)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise InputError(f"--param {name}: cannot parse {raw!r}: {exc}") from None
    if name in P.OFF_STRING_PARAMS and (value is False or raw.strip() in ("n", "N")):
        value = "off"   # the node's rule (params.off_as_string) on rcl's booleans: off, no, n
    elif P.BY_NAME[name].type == "string" and not isinstance(value, (str, list, dict)):
        # another string parameter takes the text as written (YAML 1.1 reads on/yes/...
        # as booleans and 1e3 as a number)
        value = raw.strip()
    elif P.BY_NAME[name].type == "double" and isinstance(value, int) \
            and not isinstance(value, bool):
        # 0 is an integer to the node (rclpy refuses it for a double parameter, README: a
        # start-up value of another type), so refused here too, as 3.0 for an integer is
        raise InputError(f"parameter {name} must be of type double, got {value!r}: write "
                         f"{value}.0 (the node refuses an integer for a double)")
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


def with_bag_close_topics(values: Mapping[str, Any], image_topics: Sequence[str]
                          ) -> dict[str, Any]:
    """``values`` with ``proposal_box_net_close_topics`` spelled as the bag spells its image
    topics (with or without a leading ``/``), the names a replay keys cameras by.

    Raises:
        InputError: a topic the bag has no images on.
    """
    def key(topic: str) -> str:
        return "/" + str(topic).strip().strip("/")

    by_key = {key(t): t for t in image_topics}
    asked = list(values["proposal_box_net_close_topics"])
    strays = [t for t in asked if key(t) not in by_key]
    if strays:
        raise InputError(f"proposal_box_net_close_topics {strays} are not image topics of the "
                         f"bag ({sorted(image_topics)})")
    return {**values, "proposal_box_net_close_topics": [by_key[key(t)] for t in asked]}


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


def reported_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """The tunable parameter values a report lists (sorted by name)."""
    return {k: values[k] for k in sorted(TUNABLE_PARAMS - {"publish_annotated"})}


def open_bag(path: str | Path, sidecar: str | Path | None = None,
             depth_topics: Mapping[str, str] | None = None,
             camera_info_topics: Mapping[str, str] | None = None,
             depth_camera_info_topics: Mapping[str, str] | None = None,
             cameras: Sequence[str] = ()) -> BagContents:
    """:func:`~vl_distill_ros.bags.bag_io.read_camera_bag`, with every problem an
    :class:`InputError` (missing or corrupt bag, no image topics, bad ground truth, a
    depth or camera-info pairing or a camera (``--image-topic``) naming a missing topic)."""
    try:
        return read_camera_bag(path, ground_truth=sidecar,
                               depth_topics=dict(depth_topics or {}),
                               camera_info_topics=dict(camera_info_topics or {}),
                               depth_camera_info_topics=dict(depth_camera_info_topics or {}),
                               cameras=list(cameras))
    except BagError as exc:
        raise InputError(str(exc)) from None


def check_model(model: Path | None) -> Path:
    """The bundle file ``model`` (the packaged default when None), resolved.

    Raises:
        InputError: no such file.
    """
    path = Path(model).expanduser() if model else default_model_path()
    if not path.is_file():
        if model:
            raise InputError(f"model bundle not found: {path}")
        raise InputError(f"no --model given and the packaged default bundle {path} does not "
                         "exist; pass --model /path/to/student.vdb (made by 'vl-distill "
                         "export')")
    return path.resolve()


def check_bundle_loads(model: Path) -> None:
    """Load the bundle once on the CPU (as the node will) and drop it: a truncated, corrupt
    or inconsistent bundle is an :class:`InputError` here instead of a node that dies."""
    from ..model.bundle import BundleError, load_bundle

    try:
        load_bundle(model, device="cpu")
    except BundleError as exc:
        raise InputError(f"cannot load model bundle: {exc}") from None


def load_vocabulary_file(path: Path | None):
    """The vocabulary file at ``path`` (None when no path is given).

    Raises:
        InputError: an unreadable or invalid vocabulary file.
    """
    if path is None:
        return None
    from ..model.vocabulary import Vocabulary, VocabularyError

    try:
        return Vocabulary.load(Path(path).expanduser())
    except VocabularyError as exc:
        raise InputError(f"--vocabulary: {exc}") from None


def manifest_names(model: Path) -> list[str] | None:
    """The bundle's vocabulary names from its manifest (None when unreadable)."""
    try:
        from ..model.bundle import read_manifest
        from ..model.vocabulary import Vocabulary

        return Vocabulary.from_dict(read_manifest(model)["vocabulary"]).names
    except Exception:  # noqa: BLE001 - the node reports a broken bundle itself
        return None


def stamp_from_cdr(data: bytes, msgtype: str = IMAGE_TYPE) -> tuple[int, str | None]:
    """``header.stamp`` (ns) of a serialised ``sensor_msgs/msg/Image`` or ``CompressedImage``
    (``msgtype``; the stamp starts either message, right after the 4-byte CDR encapsulation
    header), after checking that the whole message deserialises and its image decodes,
    exactly as the offline replay reads it: ``(stamp, None)``, or ``(stamp, why)`` for a
    message whose image cannot be decoded (the node drops such a frame, and ``--offline``
    skips it). So the live replay stops on a corrupt message with exit code 2 as
    ``--offline`` does, instead of publishing bytes the node can only drop.

    Raises:
        InputError: too short, an unknown encapsulation, an invalid stamp, or CDR that does
            not deserialise.
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
    except UndecodableImage as exc:
        return sec * 1_000_000_000 + nanosec, str(exc)
    except BagError as exc:
        raise InputError(f"{exc} (corrupt bag)") from None
    return sec * 1_000_000_000 + nanosec, None


def undecodable_hint(settings: ReplaySettings) -> str:
    """The ``--image-topic`` hint for images that cannot be decoded (without the option)."""
    return ("; if that topic is no colour camera (infrared, a confidence map), name the "
            "cameras with --image-topic" if not settings.image_topics else "")


def progress_bar(total: int, enabled: bool, desc: str):
    """A tqdm progress bar over ``total`` frames on stderr (hidden unless ``enabled``)."""
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


def image_count(contents: BagContents) -> int:
    """How many image messages the bag's image topics hold."""
    return sum(contents.message_counts.get(t, 0) for t in contents.image_topics)
