"""Live replay: a camera bag played through ``vl_distill_node`` (see :mod:`.replay`'s module
docstring for the steps): the node started as a subprocess, a replay node publishing the
bag's stored CDR bytes on its namespaced topics at the bag's pace, the labels and the
node's diagnostics recorded, and everything torn down whatever happens.
"""
from __future__ import annotations

import bisect
import json
import math
import os
import secrets
import shlex
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Container, Iterable, Iterator, Mapping, Sequence

from ..bags.bag_io import (COMPRESSED_IMAGE_TYPE, IMAGE_TYPE, BagContents, BagError,
                           iter_raw_messages)
from ..perception.compressed_codec import topic_transport
from ..ros.node_process import (NODE_NAME, NodeProcess, default_node_command, log_tail,
                                node_command)
from .replay_settings import (DIAGNOSTICS_PERIOD, LOG_TAIL_LINES, InputError, NodeError,
                              Recording, ReplaySettings, UndecodableImages,
                              check_bundle_loads, check_model,
                              image_count, load_vocabulary_file, manifest_names,
                              node_parameter_values, pipeline_settings, progress_bar,
                              reported_settings, stamp_from_cdr, with_bag_close_topics)
from .scoring import FrameKey, doc_frame_key

__all__ = ["run_live", "LivePlan", "plan_live", "DiagnosticsLog", "ReplayNode", "start_node",
           "wait_for_node", "PacedRun", "publish_paced", "drain", "collect_documents",
           "node_counters"]


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
    """The bag's depth and CameraInfo topics in ``image_topics`` order (``""`` for a camera
    without both: the node runs it colour only), when the replay uses depth and a camera
    has both; else empty lists (colour only)."""
    depth = getattr(contents, "depth_topics", None) or {}
    info = getattr(contents, "camera_info_topics", None) or {}
    has = [t in depth and t in info for t in topics]
    if not settings.depth or not any(has):
        return {"depth_topics": [], "camera_info_topics": []}
    return {"depth_topics": [depth[t] if h else "" for t, h in zip(topics, has)],
            "camera_info_topics": [info[t] if h else "" for t, h in zip(topics, has)]}


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
    with_depth = [t for t, d in zip(topics, depth["depth_topics"]) if d]
    aligned = _alignment_plan(contents, with_depth)
    side = {t: contents.topics[t] for t in [*depth["depth_topics"], *depth["camera_info_topics"],
                                            *(info for info, _ in aligned.values())] if t}
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
    if values.get("proposal_box_net_close_topics"):   # the bag's cameras, as replayed
        close = with_bag_close_topics(values, topics)["proposal_box_net_close_topics"]
        node_values["proposal_box_net_close_topics"] = [replay_topic[t] for t in close]
    if side:
        node_values.update({name: [replay_topic[t] if t else "" for t in listed]
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


def _init_with_log_dir(rclpy: Any, context: Any, log_dir: str | None) -> None:
    """``rclpy.init`` of the replay's own context, its ROS log files in ``log_dir`` (the
    node's) unless ``ROS_LOG_DIR`` is set: with an unwritable home folder ``~/.ros/log``
    cannot be made and the replay failed with a traceback (exit 1).

    Raises:
        InputError: ROS cannot initialise (the reason, and what to set).
    """
    set_here = bool(log_dir) and not os.environ.get("ROS_LOG_DIR")
    if set_here:
        os.environ["ROS_LOG_DIR"] = str(log_dir)
    try:
        rclpy.init(args=[], context=context)
    except Exception as exc:  # noqa: BLE001 - rclpy's RCLError
        raise InputError(f"ROS could not initialise: {' '.join(str(exc).split())[:300]} (set "
                         "ROS_LOG_DIR or ROS_HOME to a writable folder)") from None
    finally:
        if set_here:
            os.environ.pop("ROS_LOG_DIR", None)


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
        _init_with_log_dir(rclpy, self.context, plan.env.get("ROS_LOG_DIR"))
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
    #: every publication time of each frame key, in order (a bag whose stamps start over
    #: publishes one key more than once; :attr:`pub_time` holds the last)
    pub_times: dict[FrameKey, list[float]] = field(default_factory=dict)
    t_start: float | None = None
    t_last: float = 0.0
    #: messages published per depth / CameraInfo topic (they expect no labels)
    side_published: dict[str, int] = field(default_factory=dict)
    #: frames whose image cannot be decoded (published: the node drops them, so no labels
    #: are waited for)
    undecodable: UndecodableImages = field(default_factory=UndecodableImages)


def partners_first(messages: Iterable[Any], frame_topics: Container[str],
                   window_ns: int, owner: Mapping[str, str] | None = None) -> Iterator[Any]:
    """``messages`` (bag-time order), except that a depth or CameraInfo message recorded at
    most ``window_ns`` after a colour frame (the node's ``depth_sync_tolerance``) comes just
    before that frame, at the frame's bag time.

    ``--offline`` pairs a frame with every partner recorded up to the tolerance after it (in
    bag time); the node waits for a partner at most the tolerance in wall time, and a replay
    at ``--rate`` r stretches a partner recorded d after its frame to d / r: depth a
    RealSense records 10 ms after its colour frame reached the node 50 ms late at
    ``--rate 0.2`` and the frame was labelled colour only. Sent first, it is paired as
    offline, whatever the rate.

    Only the frame's own partners move: those of its camera (``owner``: side topic ->
    colour topic; a side topic it does not name may go with any frame) recorded nearer to
    it than to that camera's next frame. With a tolerance of a frame period or more, the
    next frames' depth went in front too, in one burst that the node's ``qos_depth`` 1 queue
    overwrote (their frames labelled colour only)."""
    if window_ns <= 0:
        yield from messages
        return
    buf: deque[Any] = deque()

    def release() -> Iterator[Any]:
        first = buf.popleft()
        if first.topic not in frame_topics:
            yield first
            return
        end = first.timestamp_ns + window_ns
        # that camera's next frame (None: beyond the window): a partner nearer to it in bag
        # time is that frame's (a depth recorded with it, just before it, stays there)
        after = next((m.timestamp_ns for m in buf if m.topic == first.topic), None)
        early = [m for m in buf if m.timestamp_ns <= end and m.topic not in frame_topics
                 and (owner or {}).get(m.topic, first.topic) == first.topic
                 and (after is None or m.timestamp_ns - first.timestamp_ns
                      < after - m.timestamp_ns)]
        for m in early:
            buf.remove(m)
            yield m._replace(timestamp_ns=first.timestamp_ns)
        yield first

    for raw in messages:
        buf.append(raw)
        while buf and raw.timestamp_ns - buf[0].timestamp_ns > window_ns:
            yield from release()
    while buf:
        yield from release()


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
        key = None
        if is_frame:
            stamp, undecodable = stamp_from_cdr(raw.data, raw.msgtype)
            key = (raw.topic, stamp)
            if undecodable is not None:
                run.undecodable.add(key, undecodable)
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
            run.side_published[raw.topic] = run.side_published.get(raw.topic, 0) + 1
            continue
        run.pub_time[key] = time.monotonic()
        run.pub_times.setdefault(key, []).append(run.pub_time[key])
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
    bar = progress_bar(image_count(contents), settings.progress, f"replay x{settings.rate:g}")

    def check(n: int) -> None:
        _check_running(node, f"during the replay (after {n} frames)")

    def progress(n: int) -> None:
        bar.update(1)
        if n % 10 == 0:
            bar.set_postfix_str(f"{len(replay.arrivals)} labelled")

    try:
        plan = replay.plan
        frames = set(plan.topics)
        tolerance = float(node_parameter_values(settings.params)["depth_sync_tolerance"])
        owner = {side: colour for table in (contents.depth_topics, contents.camera_info_topics,
                                            {c: a.depth_camera_info_topic for c, a in
                                             contents.depth_alignment.items()})
                 for colour, side in table.items() if side}
        messages = partners_first(
            iter_raw_messages(contents.path, [*plan.topics, *plan.side_topics]), frames,
            int(round(tolerance * 1e9)), owner)
        return publish_paced(messages, settings.rate, replay.publish, check, progress,
                             frame_topics=frames)
    except BagError as exc:
        raise InputError(str(exc)) from None
    finally:
        bar.close()


def published_before(run: PacedRun, key: FrameKey, t_recv: float) -> float | None:
    """When the frame a labels document received at ``t_recv`` was published: the last
    publication of ``key`` at or before ``t_recv`` (a key published again later, a bag whose
    stamps start over, gave the first pass's labels the second pass's time: a latency of
    minus the loop's length), else ``run.pub_time``'s."""
    times = run.pub_times.get(key)
    if not times:
        return run.pub_time.get(key)
    i = bisect.bisect_right(times, t_recv)   # times grow (time.monotonic): no scan
    return times[i - 1] if i else times[0]


def drain(arrivals: Sequence[tuple[float, str]], run: PacedRun, camera_map: Mapping[str, str],
          timeout: float, check: Callable[[], None]) -> None:
    """Phase 4: wait until every published frame is labelled, or no label arrived for a
    quiet period (2 s, or 3x the recent latency when longer), or ``timeout`` seconds after
    the last publication (frames whose image cannot be decoded are not waited for: the node
    drops them). ``check`` is called between polls (raises to abort)."""
    wanted = Counter(k for k in run.frames if k not in run.undecodable.frames)
    got: Counter[FrameKey] = Counter()   # a key published n times is waited for n times
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
            got[key] += 1
            t_pub = published_before(run, key, t_recv)
            if t_pub is not None:
                recent_latency.append(t_recv - t_pub)
        parsed = current
        del recent_latency[:-20]
        if all(got[k] >= n for k, n in wanted.items()):
            return
        last_arrival = arrivals[-1][0] if arrivals else run.t_last
        quiet = max(2.0, 3.0 * max(recent_latency, default=0.0))
        now = time.monotonic()
        # the quiet rule needs a node that has answered; until its first labels (a slow
        # first frame, a warming device) the whole --drain-timeout is waited
        if (arrivals and now - max(last_arrival, run.t_last) > quiet) or now >= deadline:
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
        t_pub = published_before(run, key, t_recv)
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
    for name in ("received", "processed", "dropped", "bad_frames", "errors",
                 "processed_behind", "processed_behind_student", "depth_received",
                 "camera_info_received"):
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
    units = {t: v["depth_unit_warning"] for t, v in sorted(cams.items())
             if v.get("depth_unit_warning")}
    if units:   # as offline (README: depth in the wrong unit)
        rec.node.setdefault("depth", {})["unit_warnings"] = units


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


def _live_depth_note(contents: BagContents, settings: ReplaySettings, plan: LivePlan) -> str:
    """Whether the live node gets the bag's depth (``used``, or ``used for k of the n
    cameras`` where only some have depth and CameraInfo: the others run colour only, as
    offline), and if not why (``none in the bag`` / ``--no-depth`` / ``not used: ...``)."""
    depth = getattr(contents, "depth_topics", None) or {}
    if not settings.depth:
        return "--no-depth"
    if not depth:
        return "none in the bag"
    cameras = list(contents.image_topics)
    used = [t for t in cameras if depth.get(t) in plan.side_topics]
    if len(used) == len(cameras):
        return "used"
    if used:
        return f"used for {len(used)} of the {len(cameras)} cameras (the others have none)"
    return ("not used: no camera has both a depth topic and a CameraInfo topic in the bag "
            "(bag.depth_topics, bag.camera_info_topics)")


def _check_device(device: str) -> None:
    """Raise :class:`InputError` unless ``device`` is ``auto`` or a device torch knows
    (and, for CUDA, has)."""
    import torch

    if device == "auto":
        return
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError, ValueError) as exc:
        raise InputError(f"--device {device!r} is not a device: {exc}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device!r}: no CUDA device is available")


def _check_namespace(namespace: str | None) -> None:
    """Raise :class:`InputError` unless ``namespace`` (when given) is a valid ROS namespace."""
    if not namespace:
        return
    from rclpy.validate_namespace import validate_namespace

    try:
        validate_namespace("/" + namespace.strip("/"))
    except Exception as exc:  # noqa: BLE001 - rclpy's InvalidNamespaceException
        raise InputError(f"--namespace {namespace!r}: {' '.join(str(exc).split())}") from None


def run_live(contents: BagContents, settings: ReplaySettings) -> Recording:
    """Replay the bag into a live node and record its labels (see the module docstring).

    Raises:
        InputError: bad model, vocabulary, parameters or a corrupt message in the bag.
        NodeError: the node never answered or exited.
    """
    if not math.isfinite(settings.rate) or settings.rate <= 0:
        raise InputError(f"--rate must be a finite number > 0, got {settings.rate}")
    _check_device(settings.device)  # as --offline: bad input (2), not a node failure (3)
    _check_namespace(settings.namespace)
    model = check_model(settings.model)
    check_bundle_loads(model)  # a corrupt bundle is bad input (2), found before the node runs
    vocab_file = load_vocabulary_file(settings.vocabulary)
    values = node_parameter_values(settings.params)
    pipeline_settings(values)  # invalid settings are bad input, not a node failure
    _import_ros()
    plan = plan_live(contents, settings, model, vocab_file, values)
    rec = Recording(mode="live", settings=reported_settings(values))
    rec.vocabulary = {"source": f"file {settings.vocabulary}" if vocab_file is not None
                      else "bundle",
                      "names": vocab_file.names if vocab_file is not None
                      else manifest_names(model)}
    node = replay = None
    completed = False
    try:
        replay = ReplayNode(plan)
        node = start_node(plan)
        rec.node = {"command": plan.cmd, "pid": node.pid, "namespace": plan.namespace,
                    "labels_topic": plan.labels_topic, "log": str(plan.log_path),
                    "depth_input": _live_depth_note(contents, settings, plan)}
        t_launch = time.monotonic()
        status = wait_for_node(replay, node, settings.node_timeout)
        rec.node["startup_s"] = time.monotonic() - t_launch
        rec.node["vocabulary_size"] = int(status.get("vocabulary_size", 0) or 0)
        rec.node["model_path"] = status.get("model_path", str(model))
        time.sleep(0.3)  # let the endpoint matching settle on both sides
        run = _replay_bag(contents, replay, node, settings)
        rec.frames, rec.published = list(run.frames), len(run.frames)
        rec.node["side_published"] = dict(run.side_published)
        rec.undecodable = run.undecodable
        rec.undecodable.refuse_if_all(rec.frames, settings)
        drain(replay.arrivals, run, plan.camera_map, settings.drain_timeout,
              lambda: _check_running(node, "while its last frames were processed"))
        _finish(rec, replay, node, run)
        completed = True
    finally:
        _teardown(rec, plan, node, replay, completed)
    return rec
