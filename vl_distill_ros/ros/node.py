"""``vl_distill_node``: open-vocabulary object classification on ROS 2 camera topics.

A thin layer over :class:`~vl_distill_ros.perception.pipeline.PerceptionPipeline`:

* subscribes to ``image_topics`` (sensor_msgs/Image, or sensor_msgs/CompressedImage when a
  topic ends in ``/compressed``, image_transport's naming) with sensor-data QoS; each camera has a
  one-frame "latest wins" slot, so a fast camera never builds a queue (overwritten frames are
  counted as dropped; when they are many, :class:`~vl_distill_ros.perception.keeping_up.KeepingUp`
  has the next frames prepared with ``proposal_box_net_behind``, and when those still fall
  behind, classified with ``inference_backend_behind``'s student);
* the inference threads (one model in memory for all cameras) decode frames with numpy
  (:func:`~vl_distill_ros.perception.compressed_codec.decode_image_message`, no cv_bridge), run the
  pipeline and publish ``~/labels`` (JSON), ``~/detections`` (vision_msgs, when importable;
  the vocabulary on ``~/label_info``) and optionally ``~/image_annotated``
  (:mod:`.conversions`): with ``pipelined: true`` (the default) the first decodes a frame,
  pairs its depth and finds its boxes
  (:meth:`~vl_distill_ros.perception.pipeline.PerceptionPipeline.prepare`) while the second
  classifies the previous one and publishes, and a one-frame slot between them keeps frames
  in order; with ``pipelined: false`` one thread does both in turn; the executor thread
  only stores messages;
* the vocabulary (``labels``, ``descriptions``, ``vocabulary_file``, ``~/save_vocabulary``,
  ``persist_vocabulary``) is run by a
  :class:`~vl_distill_ros.ros.vocabulary_controller.VocabularyController`; its module
  docstring is the specification of the vocabulary parameter protocol. This node only
  forwards the set-parameters callbacks to it;
* counts, latencies and the vocabulary version go to ``/diagnostics`` (:mod:`.diagnostics`);
* the parameter services are :class:`~vl_distill_ros.ros.parameter_service.GroupedParameterService`
  (a ``ros2 param load`` of a dump restores the vocabulary and the settings whatever their
  order; empty lists are accepted for array parameters);
* start-up is two steps, :meth:`VlDistillNode._configure` (model, vocabulary, pipeline,
  outputs, callbacks) and :meth:`VlDistillNode._activate` (subscriptions, workers, timer),
  which this node takes at once and :mod:`.lifecycle_node`'s managed node on its
  ``configure`` and ``activate`` transitions.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from ..model.bundle import Bundle, BundleError, load_bundle
from ..model.runtime import RuntimeBackendError
from ..model.text_service import TextEmbeddingService
from ..model.vocabulary import Vocabulary, VocabularyError
from ..perception.compressed_codec import (decode_image_message, is_rectified_topic,
                                           topic_transport)
from ..perception.depth_alignment import transform_from_pose
from ..perception.depth_units import unit_warning
from ..perception.camera_model import DepthError
from ..perception.image_codec import ImageDecodeError
from ..perception.keeping_up import KeepingUp
from ..perception.pipeline import (ObjectResult, PerceptionPipeline, PipelineError, PreparedFrame,
                                   PipelineSettings, labels_document)
from ..perception.static_transforms import StaticTransforms
from ..thread_names import os_named
from . import params as P
from .conversions import (annotated_msg, detections_3d_msg, detections_msg, import_vision_msgs,
                          label_info_msg, labels_msg)
from .depth_input import NO_PARTNER, DepthInput, stamp_ns
from . import log_bridge
from .diagnostics import (LATENCY_WINDOW, MAX_DIAGNOSTIC_TEXT, CameraState, camera_status,
                          clip_text, incompatible_qos_text, incompatible_type_text,
                          model_status)
from .parameter_service import GroupedParameterService
from .startup_checks import (StartupCancelled, StartupError, TFMessage, alignments,
                             check_distinct_topics, check_startup_params, default_store_path,
                             depth_cameras, missing_default_model_message,
                             older_store_path)
from .params import default_model_path
from .vocabulary_controller import (SAVE_PENDING_WAIT_S, VOCABULARY_DEBOUNCE_S,
                                    VocabularyController, build_vocabulary, descriptions_param)

__all__ = ["NODE_NAME", "VlDistillNode", "StartupError", "build_vocabulary", "clip_text",
           "default_store_path", "main", "run_node", "usage_text", "BAD_FRAME_LOG_PERIOD",
           "LATENCY_WINDOW", "MAX_DIAGNOSTIC_TEXT", "SAVE_PENDING_WAIT_S",
           "VOCABULARY_DEBOUNCE_S"]

NODE_NAME = "vl_distill_node"
#: Parameters that name topics: each entry is checked as a topic name at start-up.
TOPIC_PARAMS = ("image_topics", "depth_topics", "camera_info_topics",
                "depth_camera_info_topics", "proposal_box_net_close_topics")
#: Seconds between repeated log lines about the same kind of bad frame on one camera.
BAD_FRAME_LOG_PERIOD = 30.0
#: Types of the vocabulary parameters the controller adds to a set.
_VOCABULARY_TYPES = {"labels": Parameter.Type.STRING_ARRAY,
                     "descriptions": Parameter.Type.STRING_ARRAY,
                     "vocabulary_file": Parameter.Type.STRING}
_Camera = CameraState  # the name this module used before the split


def _message_type(topic: str) -> type:
    """The message type of an image topic by image_transport's naming
    (:func:`~vl_distill_ros.perception.compressed_codec.topic_transport`): CompressedImage on
    ``.../compressed`` and ``.../compressedDepth``, Image otherwise."""
    return Image if topic_transport(topic) == "raw" else CompressedImage


def _type_name(msg_type: type) -> str:
    """A message class's ROS type name as the graph gives it (``sensor_msgs/msg/Image``)."""
    return f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}"


def _camera_inputs(cam: CameraState) -> list[tuple[str, str]]:
    """``(topic, type name)`` of each of a camera's subscriptions."""
    inputs = [(cam.resolved, _type_name(_message_type(cam.resolved)))]
    if cam.depth is not None:
        inputs += [(cam.depth.depth_topic, _type_name(_message_type(cam.depth.depth_topic))),
                   (cam.depth.info_topic, _type_name(CameraInfo))]
        if cam.depth.depth_info_topic:
            inputs.append((cam.depth.depth_info_topic, _type_name(CameraInfo)))
    return inputs


def _plain(value: Any) -> Any:
    """A parameter value with arrays as lists."""
    return list(value) if isinstance(value, (list, tuple)) or hasattr(value, "tolist") \
        else value


@dataclass(frozen=True, eq=False)
class _Staged:
    """A frame between the node's two stages: prepared, not yet classified."""

    cam: CameraState
    msg: Image
    t_recv: float
    frame: PreparedFrame
    has_depth: bool
    prepare_s: float
    #: How far behind its cameras the node was when it prepared the frame (0: not behind;
    #: 1: ``proposal_box_net_behind``; 2: ``inference_backend_behind`` too).
    behind: int = 0
    #: A depth image came with the frame (``has_depth``: and was paired; refused depth, of
    #: another size, encoding or without CameraInfo, comes but is not paired).
    depth_came: bool = False


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
        # the parameter services are created once every callback is in place (_start)
        super().__init__(node_name, **{**kwargs, "start_parameter_services": False})
        log_bridge.install(self.get_logger())   # the library's warnings on /rosout
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._tls = threading.local()
        self._threads: list[threading.Thread] = []
        #: The frame stage 1 has prepared and stage 2 has not taken yet (``pipelined``).
        self._staged: _Staged | None = None
        self.vocabulary: VocabularyController | None = None
        #: A ``~/label_info`` skipped while the node was not active, sent on activation.
        self._label_info_due = False
        try:
            self._start()
        except BaseException:
            self._cleanup()
            log_bridge.remove(self.get_logger())
            Node.destroy_node(self)
            raise

    # =========================================================================================
    # start-up
    # =========================================================================================
    def _start(self) -> None:
        """Declare the parameters, then configure and activate at once (the plain node)."""
        p = P.declare_parameters(self)
        self._configure(p)
        self._parameter_service = GroupedParameterService(
            self, (P.VOCABULARY_PARAMS, P.SETTINGS_PARAMS))
        self._activate()

    def _resolve_topics(self, name: str, topics: list[str]) -> list[str]:
        """The resolved names of the topic parameter ``name``'s entries (an empty entry, "no
        topic", stays empty); one that is no valid topic name is a StartupError, before the
        model loads (a subscription would raise it only after, or at activation)."""
        out = []
        for topic in topics:
            if not topic.strip():
                out.append("")
                continue
            try:
                out.append(self.resolve_topic_name(topic.strip()))
            except Exception as exc:  # noqa: BLE001 - rclpy's RCLError or a name exception
                raise StartupError(f"{name}: {topic!r} is not a valid topic name "
                                   f"({' '.join(str(exc).split())[:200]})") from None
        return out

    def _stop_if_shut_down(self) -> None:
        """Between the long steps of the start-up: raise :class:`StartupCancelled` once the
        context is shut down (rclpy's SIGINT/SIGTERM handler), so a stopped node does not
        go on loading its models for seconds and then exit as if it had run."""
        if not self.context.ok():
            raise StartupCancelled("stopped during start-up (SIGINT or SIGTERM)")

    def _configure(self, p: dict) -> None:
        """Everything but the inputs: the model, the vocabulary, the pipeline, the outputs,
        ``~/save_vocabulary`` and the set-parameters callbacks (``p``: the parameters'
        values). Raises :class:`StartupError`."""
        self._p = p
        check_startup_params(p)
        resolved = {name: self._resolve_topics(name, p[name]) for name in TOPIC_PARAMS}
        for name in ("image_topics", "depth_topics"):
            check_distinct_topics(name, list(p[name]), resolved[name])
        #: proposal_box_net_close_topics as the cameras' resolved names (the pipeline's keys)
        self._close_cameras = tuple(resolved["proposal_box_net_close_topics"])
        if p["torch_threads"] > 0:
            import torch

            torch.set_num_threads(int(p["torch_threads"]))
        self.bundle = self._load_model(p["model_path"], p["device"])
        self._stop_if_shut_down()
        cache_dir = os.path.expanduser(p["text_cache_dir"]) if p["text_cache_dir"] else None
        self.text_service = TextEmbeddingService.from_bundle(
            self.bundle, cache_dir=cache_dir, catalogue=p["description_catalogue"])
        if self.text_service.cache_error:
            self.get_logger().warning(self.text_service.cache_error)
        self.store_path = (Path(p["vocabulary_store"]).expanduser() if p["vocabulary_store"]
                           else default_store_path(self.get_namespace(), self.get_name()))
        self.vocabulary = VocabularyController(
            self.text_service, self.store_path, self.get_logger(),
            persist=lambda: bool(self.get_parameter("persist_vocabulary").value),
            older_store=(None if p["vocabulary_store"]
                         else older_store_path(self.get_namespace(), self.get_name())))
        if p["warm_text_encoder"]:
            self.vocabulary.warm()  # before any subscription (see VocabularyController.warm)
            self._stop_if_shut_down()
        vocab, source, vocab_file, emb = self._startup_vocabulary(p)
        self._stop_if_shut_down()
        try:
            settings = self._settings_from(p)
        except PipelineError as exc:
            raise StartupError(str(exc)) from None
        try:
            self.pipeline = PerceptionPipeline(self.bundle, vocabulary=vocab, embeddings=emb,
                                               inference_backend=str(p["inference_backend"]),
                                               inference_threads=int(p["inference_threads"]),
                                               inference_backend_behind=str(
                                                   p["inference_backend_behind"]),
                                               proposal_threads=int(p["proposal_threads"]),
                                               catalogue=self.text_service.catalogue,
                                               **settings.as_kwargs())
        except RuntimeBackendError as exc:  # e.g. onnxruntime_int8 and the bundle has none
            raise StartupError(f"student runtime: {exc}") from None
        self.vocabulary.attach(self.pipeline, vocab, source, default=self.bundle.vocabulary,
                               on_swap=self._publish_label_info)
        self.get_logger().info(f"student runtime: {self.pipeline.runner.backend}, behind "
                               f"the cameras: {self.pipeline.runner_behind_what}")
        #: Whether the node keeps up with its cameras (their latest-wins slots' drops); the
        #: student's cheaper runtime, where there is one, is the second step behind.
        self._keeping_up = KeepingUp(
            levels=2 if self.pipeline.runner_behind is not self.pipeline.runner else 1)
        # mirror the active vocabulary into the parameters (no callbacks registered yet)
        self.set_parameters([
            Parameter("labels", Parameter.Type.STRING_ARRAY, vocab.names),
            Parameter("descriptions", Parameter.Type.STRING_ARRAY, descriptions_param(vocab)),
            Parameter("vocabulary_file", Parameter.Type.STRING, vocab_file)])
        self._publish_annotated = bool(p["publish_annotated"])
        self._create_outputs(any(depth_cameras(p)))
        self._save_srv = self.create_service(Trigger, "~/save_vocabulary", self._on_save)
        # -- parameter callbacks (after every declaration and internal set); rclpy's add_*
        # return None: the callbacks themselves are what _cleanup removes
        self.add_pre_set_parameters_callback(self._pre_set_parameters)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._post_set_parameters)
        self._parameter_callbacks = (self._pre_set_parameters, self._on_set_parameters,
                                     self._post_set_parameters)
        self.vocabulary.start()
        self._ready_text = (f"model {self.bundle.path} (teacher {self.bundle.teacher_id}), "
                            f"{len(vocab)} labels from {source}, "
                            f"crop_source={settings.crop_source}")

    def _activate(self) -> None:
        """Subscribe to the cameras, start the worker threads and the diagnostics timer."""
        p = self._p
        self._stop.clear()
        self._create_inputs(p)
        if p["pipelined"]:
            self._start_thread(self._prepare_loop, "vl_distill_prepare")
            self._start_thread(self._classify_loop, "vl_distill_classify")
        else:
            self._start_thread(self._inference_loop, "vl_distill_inference")
        self._diag_timer = self.create_timer(float(p["diagnostics_period"]),
                                             self._publish_diagnostics)
        if self._label_info_due:  # a change while inactive (lifecycle node)
            self._publish_label_info()
        self.get_logger().info(
            f"ready: {self._ready_text}, cameras {[c.resolved for c in self._cameras]}, labels "
            f"on {self._labels_pub.topic_name}"
            + (f", detections on {self._det_pub.topic_name}" if self._det_pub else ""))

    def _deactivate(self) -> None:
        """Undo :meth:`_activate`: no more frames are taken or published; the model, the
        vocabulary and the outputs stay (a frame being classified is dropped)."""
        timer = getattr(self, "_diag_timer", None)
        if timer is not None:
            self.destroy_timer(timer)
            self._diag_timer = None
        self._stop_workers()
        for sub in getattr(self, "_subs", []):
            self.destroy_subscription(sub)
        self._subs, self._cameras, self._staged = [], [], None

    def _stop_workers(self) -> None:
        """Stop and join the worker threads (``_stop`` stays set until the next activation)."""
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=10.0)
        self._threads = []

    def _cleanup(self) -> None:
        """Undo :meth:`_configure` (after :meth:`_deactivate`): stop the vocabulary
        controller, remove the callbacks, destroy the outputs and free the model."""
        self._stop_workers()
        if self.vocabulary is not None:
            self.vocabulary.stop()
            self.vocabulary = None
        pre, on, post = getattr(self, "_parameter_callbacks", (None, None, None))
        if pre is not None:
            self.remove_pre_set_parameters_callback(pre)
            self.remove_on_set_parameters_callback(on)
            self.remove_post_set_parameters_callback(post)
        self._parameter_callbacks = (None, None, None)
        if getattr(self, "_save_srv", None) is not None:
            self.destroy_service(self._save_srv)
            self._save_srv = None
        if hasattr(self, "_annotated_lock"):
            self._set_annotated(False)
        for name in ("_labels_pub", "_diag_pub", "_det_pub", "_det3d_pub", "_label_info_pub"):
            if getattr(self, name, None) is not None:
                self.destroy_publisher(getattr(self, name))
                setattr(self, name, None)
        pipeline = getattr(self, "pipeline", None)
        if pipeline is not None:
            pipeline.close()
        text_service = getattr(self, "text_service", None)
        if text_service is not None:
            text_service.close()  # its encoder thread holds the text encoder
        self.pipeline = self.bundle = self.text_service = None

    def _settings_from(self, values: dict, depth_cfg=None) -> PipelineSettings:
        """:meth:`PipelineSettings.from_params` of ``values``, the close pass's cameras by
        their resolved names (as the frames' camera keys); ``depth_cfg``: the depth proposer
        settings in use, when ``depth_proposal_config`` is not among the changes."""
        return PipelineSettings.from_params(
            {**values, "proposal_box_net_close_topics": self._close_cameras}, depth_cfg)

    def _start_thread(self, target, name: str) -> None:
        """Start a worker thread named ``name`` (in the OS ``vl_...``, see thread_names)."""
        thread = threading.Thread(target=os_named(target, name.replace("vl_distill_", "vl_")),
                                  name=name, daemon=True)
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

    def _startup_vocabulary(self, p: dict) -> tuple[Vocabulary, str, str, Any]:
        """(vocabulary, source, vocabulary_file, embeddings) of the start-up vocabulary; the
        bundle's own when the chosen one cannot be embedded."""
        assert self.vocabulary is not None
        try:
            vocab, source, vocab_file = self.vocabulary.startup_vocabulary(
                p, self.bundle.vocabulary)
        except VocabularyError as exc:
            raise StartupError(str(exc)) from None
        emb = self.vocabulary.embed_startup(vocab)
        if emb is None:  # embedding failed: fall back to the bundle's own vocabulary
            return self.bundle.vocabulary, "bundle", "", self.bundle.text_embeddings
        return vocab, source, vocab_file, emb

    def _create_outputs(self, with_depth: bool) -> None:
        self._labels_pub = self.create_publisher(String, "~/labels", 10)
        self._annotated_lock = threading.Lock()
        self._annotated_pub = None  # advertised only while publish_annotated is true
        self._set_annotated(self._publish_annotated)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        vm = self._vision_msgs = self._import_vision_msgs()
        self._det_pub = (self.create_publisher(vm["Detection2DArray"], "~/detections", 10)
                         if vm else None)
        # 3-D boxes of the objects placed with depth, for cameras with depth topics
        self._det3d_pub = (
            self.create_publisher(vm["Detection3DArray"], "~/detections_3d", 10)
            if vm and "Detection3DArray" in vm and with_depth else None)
        # the vocabulary as class ids -> names; late joiners get the last one
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._label_info_pub = (self.create_publisher(vm["LabelInfo"], "~/label_info", latched)
                                if vm and "LabelInfo" in vm else None)
        self._publish_label_info()

    def _set_annotated(self, enabled: bool) -> None:
        """Advertise ``~/image_annotated`` while ``publish_annotated`` is true, else not."""
        with self._annotated_lock:
            self._publish_annotated = enabled
            if enabled and self._annotated_pub is None:
                self._annotated_pub = self.create_publisher(Image, "~/image_annotated", 1)
            elif not enabled and self._annotated_pub is not None:
                self.destroy_publisher(self._annotated_pub)
                self._annotated_pub = None

    def _publish_label_info(self, *_: Any) -> None:
        """Publish the active vocabulary and open-set threshold on ``~/label_info`` (at
        start-up, after every vocabulary swap and every change of the scoring settings)."""
        if self._label_info_pub is None:
            return
        if self._stop.is_set():
            self._label_info_due = True
            return
        self._label_info_due = False
        assert self._vision_msgs is not None
        active = self.pipeline.active
        try:
            self._label_info_pub.publish(label_info_msg(
                self._vision_msgs, active.vocabulary.names,
                self.pipeline.effective_unknown_threshold(),
                self.get_clock().now().to_msg()))
        except Exception as exc:  # noqa: BLE001 - e.g. during shutdown
            self.get_logger().debug(f"label info not published: {exc}")

    def _import_vision_msgs(self) -> dict | None:
        vision_msgs = import_vision_msgs()
        if vision_msgs is None:
            self.get_logger().info("vision_msgs is not installed: ~/detections is disabled "
                                   "(~/labels carries the same information)")
        return vision_msgs

    def _create_inputs(self, p: dict) -> None:
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=int(p["qos_depth"]),
            reliability=(ReliabilityPolicy.RELIABLE if p["qos_reliability"] == "reliable"
                         else ReliabilityPolicy.BEST_EFFORT),
            durability=DurabilityPolicy.VOLATILE)
        # a latched CameraInfo reaches a node started after it only through a transient
        # local subscription, which must be reliable to be sent the stored message
        info_qos = qos if p["camera_info_durability"] == "volatile" else QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._cameras: list[CameraState] = []
        self._subs = []
        self._static_tf: StaticTransforms | None = None    # /tf_static, when a pose needs it
        n = len(p["image_topics"])
        pairs = dict(zip((t.strip() for t in p["image_topics"]),
                         zip(p["depth_topics"] or [""] * n, p["camera_info_topics"] or [""] * n,
                             alignments(p))))
        for topic, (depth_topic, info_topic, alignment) in pairs.items():
            # the message type follows the name after remapping (image:=.../compressed)
            resolved = self.resolve_topic_name(topic)
            cam = CameraState(topic=topic, transport=topic_transport(resolved))
            sub = self.create_subscription(_message_type(resolved), topic,
                                           lambda msg, cam=cam: self._on_image(msg, cam), qos,
                                           event_callbacks=self._qos_events(cam, resolved, p))
            cam.resolved = sub.topic_name
            if depth_topic.strip():     # "": this camera has no depth
                depth_name = self.resolve_topic_name(depth_topic.strip())
                self._subs.append(self.create_subscription(
                    _message_type(depth_name), depth_topic.strip(),
                    lambda msg, cam=cam: self._on_depth(msg, cam), qos,
                    event_callbacks=self._qos_events(cam, depth_name, p)))
                self._subs.append(self.create_subscription(
                    CameraInfo, info_topic.strip(), lambda msg, cam=cam: cam.depth.add_info(msg),
                    info_qos, event_callbacks=self._qos_events(
                        cam, self.resolve_topic_name(info_topic.strip()), p, info=True)))
                cam.depth = DepthInput(self._subs[-2].topic_name, self._subs[-1].topic_name,
                                       float(p["depth_sync_tolerance"]),
                                       rectified=is_rectified_topic(resolved),
                                       unit_m=float(p["depth_scale"]))
                if alignment is not None:
                    info, transform = alignment
                    self._subs.append(self.create_subscription(
                        CameraInfo, info, lambda msg, cam=cam: cam.depth.add_depth_info(msg),
                        info_qos, event_callbacks=self._qos_events(
                            cam, self.resolve_topic_name(info), p, info=True)))
                    if transform is None:       # the pose from /tf_static
                        cam.depth.set_alignment(self._subs[-1].topic_name,
                                                lookup=self._static_transform_lookup())
                    else:
                        cam.depth.set_alignment(self._subs[-1].topic_name, *transform)
            self._cameras.append(cam)
            self._subs.append(sub)
        self._depth_wait = float(p["depth_sync_tolerance"])
        self._rr = 0

    def _qos_events(self, cam: CameraState, topic: str, p: dict,
                    info: bool = False) -> SubscriptionEventCallbacks:
        """Event callbacks of one of ``cam``'s input subscriptions: a publisher on ``topic``
        whose QoS it does not match (a best-effort camera with ``qos_reliability:
        reliable``, a volatile CameraInfo with ``camera_info_durability: transient_local``)
        sends it nothing; that is logged and put in the camera's diagnostics."""
        setting = (f"camera_info_durability: {p['camera_info_durability']}" if info
                   else f"qos_reliability: {p['qos_reliability']}")

        def mismatch(event: Any) -> None:
            text = incompatible_qos_text(topic, event, setting)
            with self._lock:
                cam.incompatible_qos = text
            self.get_logger().warning(text)

        return SubscriptionEventCallbacks(incompatible_qos=mismatch)

    def _static_transform_lookup(self):
        """``lookup(target, source) -> (R, t)`` over ``/tf_static`` (subscribed on first use,
        as tf2's static listener does: reliable, transient local; remap ``/tf_static`` for a
        namespaced robot)."""
        if self._static_tf is None:
            self._static_tf = StaticTransforms()
            self._static_tf_lock = threading.Lock()
            latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                                 reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            self._subs.append(self.create_subscription(TFMessage, "/tf_static",
                                                       self._on_static_tf, latched))

        def lookup(target: str, source: str) -> tuple[Any, Any]:
            with self._static_tf_lock:
                found = self._static_tf.lookup(target, source)
            try:
                return transform_from_pose(found.as_pose())   # the parameter's checks
            except DepthError as exc:
                raise ValueError(str(exc)) from None
        return lookup

    def _on_static_tf(self, msg: Any) -> None:
        with self._static_tf_lock:
            self._static_tf.add_message(msg)

    # =========================================================================================
    # parameter callbacks (executor thread; pre -> on -> post run in one thread per set).
    # The vocabulary protocol is the VocabularyController's (see its module docstring).
    # =========================================================================================
    def _current(self, name: str) -> Any:
        return _plain(self.get_parameter(name).value)

    def _pre_set_parameters(self, parameters: list[Parameter]) -> list[Parameter]:
        """Complete a vocabulary change so that the parameters stay mutually consistent; a
        box-network parameter set to ``off`` (YAML's false) gets the string ``off``."""
        assert self.vocabulary is not None
        parameters = P.off_as_string(parameters)
        changes = {p.name: _plain(p.value) for p in parameters}
        extra = self.vocabulary.complete(changes, self._current("vocabulary_file"))
        # a completed value replaces the one given (labels: [] -> the bundle's names)
        return [p for p in parameters if p.name not in extra] + [
            Parameter(name, _VOCABULARY_TYPES[name], value) for name, value in extra.items()]

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Validate a change; nothing is applied here (see :meth:`_post_set_parameters`)."""
        assert self.vocabulary is not None
        self._tls.settings = None
        by = {p.name: _plain(p.value) for p in parameters}
        reason = self.vocabulary.validate(by, self._current)
        if reason is not None:
            return SetParametersResult(successful=False, reason=reason)
        if P.SETTINGS_PARAMS & by.keys():
            values = {name: self._current(name) for name in P.SETTINGS_PARAMS}
            values.update({name: by[name] for name in P.SETTINGS_PARAMS & by.keys()})
            try:
                # the depth file is read when it is set, not again for another change (an
                # edit of it, or a broken file, took effect or refused e.g. a top_k change)
                keep = None if "depth_proposal_config" in by else \
                    self.pipeline.settings.depth_cfg
                self._tls.settings = self._settings_from(values, keep)
            except (PipelineError, ValueError) as exc:
                reason = f"rejected: {exc}"
                self.get_logger().warning(reason)
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _post_set_parameters(self, parameters: list[Parameter]) -> None:
        """Apply an accepted change: swap settings, toggle outputs, queue the vocabulary."""
        assert self.vocabulary is not None
        settings = getattr(self._tls, "settings", None)
        self._tls.settings = None
        if settings is not None:
            self.pipeline.configure(**settings.as_kwargs())
            self._publish_label_info()  # the threshold may have changed
        if "publish_annotated" in {p.name for p in parameters}:
            self._set_annotated(bool(self.get_parameter("publish_annotated").value))
        self.vocabulary.commit()

    def request_vocabulary(self, vocab: Vocabulary) -> None:
        """Queue ``vocab`` for embedding and swapping in (latest request wins)."""
        assert self.vocabulary is not None
        self.vocabulary.request(vocab)

    def _on_save(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """``~/save_vocabulary``: :meth:`VocabularyController.save_requested`."""
        assert self.vocabulary is not None
        response.success, response.message = self.vocabulary.save_requested(SAVE_PENDING_WAIT_S)
        if not response.success and response.message.startswith("not saved"):
            self.get_logger().warning(f"~/save_vocabulary: {response.message}")
        return response

    # =========================================================================================
    # images
    # =========================================================================================
    def _on_image(self, msg: Image, cam: CameraState) -> None:
        """Executor thread: store the frame in the camera's latest-wins slot, nothing else."""
        now = time.monotonic()
        with self._lock:
            cam.received += 1
            cam.image_arrived(now)
            dropped = cam.pending is not None
            if dropped:
                cam.dropped += 1
            cam.pending, cam.pending_t = msg, now
            self._lock.notify_all()
        self._keeping_up.frame(dropped, now)

    def _on_depth(self, msg: Image, cam: CameraState) -> None:
        """Executor thread: buffer a depth image; wake a frame waiting for its partner."""
        cam.depth.add_depth(msg, time.monotonic())
        with self._lock:
            self._lock.notify_all()

    def _depth_for(self, cam: CameraState, msg: Image, image: Any) -> tuple[Any, Any, bool]:
        """``(depth, intrinsics, came)`` paired with this colour frame, waiting at most
        ``depth_sync_tolerance`` for a partner that may still arrive; ``(None, None, came)``
        (colour only, counted by the camera's :class:`DepthInput`) otherwise, ``came``
        saying whether a depth image was near the frame's stamp (and refused)."""
        if cam.depth is None:
            return None, None, False
        stamp = stamp_ns(msg)
        deadline = time.monotonic() + self._depth_wait
        with self._lock:
            while not self._stop.is_set() and cam.depth.may_still_arrive(stamp,
                                                                         time.monotonic()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
        depth, k, reason = cam.depth.pair(stamp, image.shape, str(msg.header.frame_id))
        for note in (cam.depth.distortion_note(), cam.depth.frame_note()):
            if note:
                self.get_logger().warning(f"{cam.resolved}: {note}")
        if reason and reason == cam.depth.last_depth_error:  # bad input, not just late
            now = time.monotonic()
            if now - cam.log_times.get("depth", -BAD_FRAME_LOG_PERIOD) >= BAD_FRAME_LOG_PERIOD:
                cam.log_times["depth"] = now
                self.get_logger().warning(f"{cam.resolved}: processed colour-only: "
                                          f"{clip_text(reason)}")
        return depth, k, depth is not None or not reason.startswith(NO_PARTNER)

    def _next_frame(self) -> tuple[CameraState, Image, float] | None:
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

    def _take_frame(self) -> tuple[CameraState, Image, float] | None:
        """Wait for the next pending frame (round-robin over cameras); None when stopping."""
        with self._lock:
            item = self._next_frame()
            while item is None and not self._stop.is_set():
                self._lock.wait(0.5)
                item = self._next_frame()
        return item

    def _guarded(self, cam: CameraState, step, *args: Any) -> Any:
        """``step(*args)``, or None after reporting its exception (one frame never kills a
        worker thread)."""
        try:
            return step(*args)
        except Exception as exc:  # noqa: BLE001
            if self._stop.is_set() or not self.context.ok():
                return None  # Ctrl-C: the context went down while a frame was in flight
            self._report_frame_problem(cam, "error", f"processing failed: {exc!r}")
            return None

    def _inference_loop(self) -> None:
        """The one worker (``pipelined: false``): each frame prepared, then classified."""
        while (item := self._take_frame()) is not None:
            staged = self._guarded(item[0], self._prepare, *item)
            if staged is not None:
                self._guarded(staged.cam, self._classify_and_publish, staged)

    def _prepare_loop(self) -> None:
        """Stage 1 (``pipelined: true``): decode, pair depth and find the boxes of the next
        frame while stage 2 classifies the previous one; hands over through one slot."""
        while True:
            with self._lock:  # take a frame only once the slot is free: the freshest one
                while self._staged is not None and not self._stop.is_set():
                    self._lock.wait(0.5)
            if (item := self._take_frame()) is None:
                return
            staged = self._guarded(item[0], self._prepare, *item)
            if staged is None:
                continue
            with self._lock:  # still free: this thread is the only one that fills it
                if self._stop.is_set():
                    return
                self._staged = staged
                self._lock.notify_all()

    def _classify_loop(self) -> None:
        """Stage 2 (``pipelined: true``): classify and publish the frames stage 1 hands over,
        in the order it prepared them."""
        while True:
            with self._lock:
                while self._staged is None and not self._stop.is_set():
                    self._lock.wait(0.5)
                if self._staged is None:
                    return
                staged, self._staged = self._staged, None
                self._lock.notify_all()
            self._guarded(staged.cam, self._classify_and_publish, staged)

    def _prepare(self, cam: CameraState, msg: Image, t_recv: float) -> "_Staged | None":
        """Decode a frame, pair its depth and find its boxes (None: a bad frame, reported)."""
        try:
            image = decode_image_message(msg)
        except ImageDecodeError as exc:
            self._report_frame_problem(cam, "bad_frame", f"skipped a frame: {exc}")
            return None
        depth, k, came = self._depth_for(cam, msg, image)
        t0 = time.monotonic()
        behind = self._keeping_up.level(t0, self.pipeline.settings.behind_changes_boxes())
        frame = self.pipeline.prepare(image, depth, None if depth is None else k,
                                      camera=cam.resolved, behind=behind,
                                      stamp=stamp_ns(msg) * 1e-9)
        return _Staged(cam, msg, t_recv, frame, depth is not None, time.monotonic() - t0,
                       behind, came)

    def _log_depth_unused(self, cam: CameraState, reason: str) -> None:
        """Log why a paired depth image was not used (depth in other units than
        ``depth_scale`` says, too little valid depth, no table): when the reason is new for
        the camera, else at most every :data:`BAD_FRAME_LOG_PERIOD` (it was only in
        ``/diagnostics``, and a node whose every frame went colour-only logged nothing)."""
        now = time.monotonic()
        kind = reason.split(":")[0][:60]
        if kind == cam.log_times.get("depth_unused_kind") and \
                now - cam.log_times.get("depth_unused", -BAD_FRAME_LOG_PERIOD) < \
                BAD_FRAME_LOG_PERIOD:
            return
        cam.log_times["depth_unused"], cam.log_times["depth_unused_kind"] = now, kind
        self.get_logger().warning(f"{cam.resolved}: depth paired but not used, processed "
                                  f"colour-only: {clip_text(reason)}")

    def _depth_unit_warning(self, cam: CameraState) -> str:
        """What the camera's depth unit check says (``""``: nothing wrong seen)."""
        verdict = self.pipeline.depth_unit_verdict(cam.resolved)
        if verdict is None:
            return ""
        return unit_warning(verdict, cam.depth.unit_m, cam.depth.float_depth)

    def _log_depth_unit(self, cam: CameraState) -> None:
        """Log the camera's depth unit warning, at most every :data:`BAD_FRAME_LOG_PERIOD`
        (README: depth in the wrong unit)."""
        now = time.monotonic()
        if now - cam.log_times.get("depth_unit", -BAD_FRAME_LOG_PERIOD) < BAD_FRAME_LOG_PERIOD:
            return
        text = self._depth_unit_warning(cam)
        if text:
            cam.log_times["depth_unit"] = now
            self.get_logger().warning(f"{cam.resolved}: {text}")

    def _classify_and_publish(self, staged: "_Staged") -> None:
        cam, msg = staged.cam, staged.msg
        t0 = time.monotonic()
        objects, version = self.pipeline.classify(staged.frame)
        t1 = time.monotonic()
        if staged.has_depth:
            placed = sum(o.position is not None for o in objects)
            cam.depth.record(staged.frame.depth_status, placed, len(objects) - placed)
            if staged.frame.depth_status not in ("used", "not used"):   # "not used": settings
                self._log_depth_unused(cam, staged.frame.depth_status)
                self._log_depth_unit(cam)
        doc = labels_document(msg.header.stamp.sec, msg.header.stamp.nanosec,
                              msg.header.frame_id, cam.resolved, version, objects)
        if self._stop.is_set():
            return
        self._labels_pub.publish(labels_msg(doc))
        if self._det_pub is not None:
            self._det_pub.publish(self._detections_msg(msg, objects))
        if self._det3d_pub is not None and staged.depth_came:   # empty when not used
            assert self._vision_msgs is not None
            self._det3d_pub.publish(detections_3d_msg(self._vision_msgs, msg, objects))
        with self._annotated_lock:
            if self._annotated_pub is not None:
                self._annotated_pub.publish(annotated_msg(msg, staged.frame.image, objects))
        done = time.monotonic()
        with self._lock:
            cam.processed += 1
            cam.processed_in_period += 1
            cam.processed_behind += int(staged.behind >= 1)
            cam.processed_behind_student += int(staged.behind >= 2)
            cam.last_latency = done - staged.t_recv
            cam.latencies.append(done - staged.t_recv)
            cam.processing.append(staged.prepare_s + t1 - t0)

    def _detections_msg(self, src: Image, objects: Sequence[ObjectResult]):
        assert self._vision_msgs is not None
        return detections_msg(self._vision_msgs, src, objects)

    def _report_frame_problem(self, cam: CameraState, kind: str, text: str) -> None:
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

    def _check_topic_types(self) -> None:
        """Note publishers on a camera's topics of another message type than its
        subscription takes (image_transport's zstd or theora topic, a CompressedImage under
        a raw name): DDS matches them with nothing, so nothing comes, and no event says
        why (rmw_fastrtps raises no incompatible_type for another type name). Logged when
        it changes; in the camera's diagnostics (``incompatible_type``)."""
        for cam in self._cameras:
            found = []
            for topic, ours in _camera_inputs(cam):
                try:
                    infos = self.get_publishers_info_by_topic(topic)
                except Exception:  # noqa: BLE001 - e.g. during shutdown
                    return
                theirs = sorted({str(i.topic_type) for i in infos} - {ours})
                if theirs:
                    found.append(incompatible_type_text(topic, ours, theirs))
            text = "; ".join(found)
            with self._lock:
                changed, cam.incompatible_type = text != cam.incompatible_type, text
            if changed and text:
                self.get_logger().warning(text)

    def _publish_diagnostics(self) -> None:
        if self._stop.is_set():
            return
        self._check_duplicate_name()
        self._check_topic_types()
        try:
            self._diag_pub.publish(self.diagnostics())
        except Exception as exc:  # noqa: BLE001 - e.g. during shutdown
            self.get_logger().debug(f"diagnostics not published: {exc}")

    def _model_facts(self, vocabulary: dict[str, str]) -> dict[str, Any]:
        """The model and vocabulary status values after the vocabulary's own."""
        return {
            "vocabulary_store": self.store_path,
            "vocabulary_store_status": vocabulary["store_status"],
            "seen_bias": f"{self.pipeline.effective_seen_bias():.4f}",
            "unknown_threshold": f"{self.pipeline.effective_unknown_threshold():.4f}",
            "calibrated_bundle": self.bundle.calibration is not None,
            "nodes_with_this_name": getattr(self, "_duplicate_count", 1),
            "vocabulary_store_error": vocabulary["store_error"],
            "model_path": self.bundle.path,
            "teacher_id": self.bundle.teacher_id,
            "text_embedding_cache": self.text_service.cache_path or "",
            "text_embedding_stats": json.dumps(self.text_service.stats),
            "catalogued_descriptions": len(self.text_service.catalogued(
                self.pipeline.active.vocabulary.labels)),
            "crop_source": self.pipeline.settings.crop_source,
            **{k: str(v).lower() if isinstance(v, bool) else v
               for k, v in self._keeping_up.status().items()},
            "student_runtime": self.pipeline.runner.backend,
            "student_runtime_behind": self.pipeline.runner_behind_what,
        }

    def diagnostics(self) -> DiagnosticArray:
        """The current diagnostics: one status for the model/vocabulary, one per camera.

        Per-period values (``*_in_period``, latency statistics over the last
        ``LATENCY_WINDOW`` frames) are reset by each call.
        """
        assert self.vocabulary is not None
        fq = self.get_fully_qualified_name()
        active = self.pipeline.active
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        vocabulary = self.vocabulary.status()
        arr.status.append(model_status(fq, active.version, active.vocabulary.names, vocabulary,
                                       getattr(self, "_duplicate_count", 1),
                                       self._model_facts(vocabulary)))
        for cam in self._cameras:
            with self._lock:
                period = cam.take_period()
            if cam.depth is not None:  # the depth's registration check (README: depth)
                period["values"]["depth_registration_shift_px"] = \
                    "{},{}".format(*self.pipeline.depth_shift(cam.resolved))
                period["values"]["depth_fattening_px"] = \
                    str(self.pipeline.depth_fattening(cam.resolved))
                period["values"]["depth_noise_at_1m_mm"] = \
                    f"{1000.0 * self.pipeline.depth_noise(cam.resolved):.2f}"
                period["values"]["depth_sparse"] = \
                    str(self.pipeline.depth_sparse(cam.resolved)).lower()
                period["values"]["depth_unit_warning"] = self._depth_unit_warning(cam)
            if self.pipeline.settings.tracks.enabled:
                active_tracks, started = self.pipeline.tracks.counts(cam.resolved)
                period["values"]["tracks_active"] = active_tracks
                period["values"]["tracks_started"] = started
            arr.status.append(camera_status(fq, period, active.version))
        return arr

    # =========================================================================================
    # shutdown
    # =========================================================================================
    def destroy_node(self) -> None:
        """Stop the worker threads and free the model, then destroy the node."""
        self._cleanup()
        log_bridge.remove(self.get_logger())
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
    return run_node(VlDistillNode, args, exiting=True)


def _init_hint(error: str) -> str:
    """What to do about an ``rclpy.init`` failure ``error`` ("" when there is nothing to
    say): ROS writes its log files below ``$ROS_HOME`` (``~/.ros``), which an unwritable home
    folder refuses."""
    if "log" not in error.lower():
        return ""
    return ("; set ROS_LOG_DIR (or ROS_HOME) to a writable folder, or pass --ros-args "
            "--disable-external-lib-logs")


def run_node(node_class: type, args: Sequence[str] | None = None,
             usage: str | None = None, exiting: bool = False) -> int:
    """Run ``node_class()`` (this node or its managed variant) until Ctrl-C; ``--help``
    prints ``usage`` (default :func:`usage_text`) without starting rclpy. Returns the exit
    code: 1 when the node cannot start. SIGINTs in the node's first seconds of stopping
    are ignored (:func:`quiet_repeated_interrupts`); then the SIGINT handler before the
    call is put back, or, with ``exiting`` (the console scripts: only the process's exit
    follows), SIGINT is left ignored."""
    import sys

    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    argv = list(sys.argv if args is None else args)
    own = argv[1:argv.index("--ros-args")] if "--ros-args" in argv else argv[1:]
    if "-h" in own or "--help" in own:
        print(usage or usage_text())  # without starting rclpy: no DDS participant for --help
        return 0
    try:
        rclpy.init(args=args)
    except Exception as exc:  # noqa: BLE001 - rclpy's RCLError, e.g. no log folder
        print(f"[{NODE_NAME}] cannot start: ROS could not initialise: "
              f"{' '.join(str(exc).split())[:300]}{_init_hint(str(exc))}", file=sys.stderr)
        return 1
    node = None
    code = 0
    previous = signal.getsignal(signal.SIGINT)
    try:
        node = node_class()
        # Ctrl-C shuts the context down before destroy_node: the workers stop at once
        # instead of publishing a frame on the dead context (logged as a failed frame)
        rclpy.get_default_context().on_shutdown(node._stop.set)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except StartupCancelled as exc:     # told to stop: not a failure to start
        print(f"[{NODE_NAME}] {exc}", file=sys.stderr)
    except StartupError as exc:
        msg = f"[{NODE_NAME}] cannot start: {exc}"
        try:
            rclpy.logging.get_logger(NODE_NAME).fatal(msg)
        finally:
            print(msg, file=sys.stderr)
        code = 1
    except Exception:  # noqa: BLE001 - rclpy raising from inside a take during Ctrl-C
        if rclpy.ok():
            raise
    finally:
        quiet_repeated_interrupts()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        if threading.current_thread() is threading.main_thread():
            # exiting: only the process's exit follows: a SIGINT there killed it (exit -2)
            # once Python had put back the default handler, or raised in an atexit
            # callback. Else the caller's (and its children's, which inherit SIG_IGN)
            # Ctrl-C is left as it was.
            signal.signal(signal.SIGINT, signal.SIG_IGN if exiting or previous is None
                          else previous)
    return code


#: Seconds after the node begins to stop in which a further SIGINT is ignored.
REPEATED_INTERRUPT_GRACE_S = 2.0


def quiet_repeated_interrupts(grace_s: float = REPEATED_INTERRUPT_GRACE_S) -> None:
    """While the node stops, ignore SIGINTs of the next ``grace_s`` seconds; a later one
    still interrupts (a person pressing Ctrl-C again).

    Ctrl-C on ``ros2 launch`` sends SIGINT twice within milliseconds: the terminal's to the
    whole process group, then launch's own to the node. The second one raised
    ``KeyboardInterrupt`` wherever the clean-up was (joining the workers, rclpy's shutdown,
    interpreter exit): a traceback, workers and rclpy not shut down, and launch reporting
    "process has died [... exit code -2]". Main thread only (where Python runs handlers).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    since = time.monotonic()

    def handler(signum: int, frame: Any) -> None:
        if time.monotonic() - since > grace_s:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main())
