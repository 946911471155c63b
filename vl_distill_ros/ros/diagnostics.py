"""``/diagnostics`` of ``vl_distill_node``: per-camera counters and the status messages.

:class:`CameraState` holds one camera's latest-wins slot and counters (guarded by the node's
lock); :func:`model_status` and :func:`camera_status` build the
``diagnostic_msgs/DiagnosticStatus`` entries the node publishes (one for the model and
vocabulary, one per camera). Error texts and other free texts (``last_colour_only_reason``)
may quote input from the wire or from files, so they are cut with :func:`clip_text` to
:data:`MAX_DIAGNOSTIC_TEXT` characters; every other value to :data:`MAX_VALUE_TEXT`.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from ..model.vocabulary import MAX_NAME_LENGTH

__all__ = ["MAX_DIAGNOSTIC_TEXT", "LATENCY_WINDOW", "CameraState", "clip_text",
           "key_values", "model_status", "camera_status", "incompatible_type_text"]

#: Longest text (error messages, encodings from the wire) copied into logs and /diagnostics.
MAX_DIAGNOSTIC_TEXT = 200
#: Latency samples kept per camera for diagnostics.
LATENCY_WINDOW = 200
#: Label names listed in the ``labels`` value (the rest is elided).
MAX_LISTED_LABELS = 50
#: Longest value that is not free text (a topic, a path, the ``labels`` listing: at most
#: :data:`MAX_LISTED_LABELS` names of :data:`~vl_distill_ros.model.vocabulary.MAX_NAME_LENGTH`
#: characters): cut only there, so that readers of the status (replay-eval keys cameras by
#: ``topic``) get them whole.
MAX_VALUE_TEXT = max(4096, MAX_LISTED_LABELS * (MAX_NAME_LENGTH + 2) + 4)
#: A camera that sent images and then none for this long (s), or for
#: :data:`SILENT_INTERVALS` of its recent intervals between images when that is longer, is
#: reported WARN (a driver that died, a cable, a bag that ended).
SILENT_AFTER_S = 5.0
SILENT_INTERVALS = 10.0
#: Free-text values, which may quote input from the wire: cut to :data:`MAX_DIAGNOSTIC_TEXT`.
FREE_TEXT_KEYS = ("error", "reason")


def clip_text(text: object, limit: int = MAX_DIAGNOSTIC_TEXT) -> str:
    """``str(text)``, cut to ``limit`` characters (with a note of the full length)."""
    text = str(text)
    if len(text) <= limit:
        return text
    note = f"... [{len(text)} chars]"
    return text[:max(0, limit - len(note))] + note


@dataclass
class CameraState:
    """Per-camera state: the latest-wins slot and counters (guarded by the node's lock)."""

    topic: str
    resolved: str = ""
    #: ``raw`` (sensor_msgs/Image) or ``compressed`` (sensor_msgs/CompressedImage).
    transport: str = "raw"
    pending: Any = None
    pending_t: float = 0.0
    received: int = 0
    processed: int = 0
    #: Frames processed while the node was behind its cameras (with
    #: ``proposal_box_net_behind``'s network where it replaces the shipped one).
    processed_behind: int = 0
    #: Of those, the frames processed a step further behind (with the student runtime of
    #: ``inference_backend_behind``).
    processed_behind_student: int = 0
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
    #: The camera's :class:`~vl_distill_ros.ros.depth_input.DepthInput`, or ``None``.
    depth: Any = None
    #: The last publisher found on one of the camera's topics with a QoS its subscription
    #: does not match (:func:`incompatible_qos_text`; "" for none).
    incompatible_qos: str = ""
    #: Publishers found on the camera's topics with another message type than its
    #: subscription takes (:func:`incompatible_type_text`; "" for none).
    incompatible_type: str = ""
    #: When the last image arrived (``time.monotonic``; 0: none yet), and the camera's
    #: recent interval between images (s, smoothed; 0: fewer than two images).
    last_received_t: float = 0.0
    interval: float = 0.0

    def image_arrived(self, now: float) -> None:
        """Note an image's arrival at ``now`` (``time.monotonic``) for :meth:`silent_for`."""
        if self.last_received_t:
            gap = max(0.0, now - self.last_received_t)
            self.interval = gap if not self.interval else 0.8 * self.interval + 0.2 * gap
        self.last_received_t = now

    def silent_for(self, now: float) -> float:
        """Seconds since the last image when that is longer than the camera's silence bound
        (:data:`SILENT_AFTER_S`, or :data:`SILENT_INTERVALS` of its recent interval), else
        0.0 (also before the first image: a camera not started yet is not silent)."""
        if not self.last_received_t:
            return 0.0
        age = now - self.last_received_t
        return age if age > max(SILENT_AFTER_S, SILENT_INTERVALS * self.interval) else 0.0

    def take_period(self) -> dict[str, Any]:
        """Counters and the period's latency samples; resets the per-period values (the
        caller holds the node's lock)."""
        now = time.monotonic()
        period = {
            "values": {
                "topic": self.resolved,
                "transport": self.transport,
                "received": self.received,
                "processed": self.processed,
                "dropped": self.dropped,
                "processed_behind": self.processed_behind,
                "processed_behind_student": self.processed_behind_student,
                "bad_frames": self.bad_frames,
                "errors": self.errors,
                "processed_in_period": self.processed_in_period,
                "bad_frames_in_period": self.bad_in_period,
                "last_error": self.last_error,
                "incompatible_qos": self.incompatible_qos,
                "incompatible_type": self.incompatible_type,
            },
            "latencies": sorted(self.latencies),
            "processing": list(self.processing),
            "bad_recent": self.bad_in_period,
            "last_error": self.last_error,
            "last_latency": self.last_latency,
            "silent_s": self.silent_for(now),
            "interval": self.interval,
        }
        if self.last_received_t:
            period["values"]["last_image_age_s"] = \
                f"{now - self.last_received_t:.1f}"
        if self.depth is not None:
            depth = self.depth.take_period()
            period["values"].update(depth["values"])
            period["depth_errors_recent"] = depth["errors_recent"]
        self.bad_in_period = self.processed_in_period = 0
        self.latencies.clear()
        self.processing.clear()
        return period


def key_values(pairs: Mapping[str, Any]) -> list[KeyValue]:
    """``pairs`` as ``KeyValue`` messages, each value cut with :func:`clip_text`: free texts
    (keys ending in :data:`FREE_TEXT_KEYS`: ``last_depth_error``,
    ``last_colour_only_reason``, which may quote an encoding string from the wire) to
    :data:`MAX_DIAGNOSTIC_TEXT` characters, every other value to :data:`MAX_VALUE_TEXT`."""
    return [KeyValue(key=str(k), value=clip_text(
        v, MAX_DIAGNOSTIC_TEXT if str(k).endswith(FREE_TEXT_KEYS) else MAX_VALUE_TEXT))
        for k, v in pairs.items()]


def model_status(fq_name: str, version: int, names: list[str], vocabulary: Mapping[str, str],
                 duplicates: int, facts: Mapping[str, Any]) -> DiagnosticStatus:
    """The ``<node>: model and vocabulary`` status.

    Args:
        fq_name: the node's fully qualified name (also the hardware id).
        version: the active vocabulary version.
        names: the active label names.
        vocabulary: :meth:`VocabularyController.status
            <vl_distill_ros.ros.vocabulary_controller.VocabularyController.status>`.
        duplicates: nodes in the graph with this node's name (1 = only this one).
        facts: the remaining values, in order (store, thresholds, model, cache, ...).

    Level: ERROR when the vocabulary has an error, WARN when the name is shared or the store
    failed, else OK.
    """
    status = DiagnosticStatus(name=f"{fq_name}: model and vocabulary", hardware_id=fq_name)
    error, store_error = vocabulary["error"], vocabulary["store_error"]
    if error:
        status.level, status.message = DiagnosticStatus.ERROR, clip_text(error)
    elif duplicates > 1:
        status.level = DiagnosticStatus.WARN
        status.message = f"{duplicates} nodes share the name {fq_name}"
    elif store_error:
        status.level, status.message = DiagnosticStatus.WARN, clip_text(store_error)
    else:
        status.level = DiagnosticStatus.OK
        status.message = (f"vocabulary version {version}: {len(names)} labels "
                          f"({vocabulary['state']})")
    values: dict[str, Any] = {
        "vocabulary_version": version,
        "vocabulary_size": len(names),
        "labels": ", ".join(names[:MAX_LISTED_LABELS])
        + (" ..." if len(names) > MAX_LISTED_LABELS else ""),
        "vocabulary_state": vocabulary["state"],
        "vocabulary_source": vocabulary["source"],
        "vocabulary_error": error,
    }
    values.update(facts)
    status.values = key_values(values)
    return status


def incompatible_qos_text(topic: str, event: Any, setting: str) -> str:
    """What a subscription's ``incompatible_qos`` event (rclpy's
    ``QoSRequestedIncompatibleQoSInfo``) means, for the log and ``/diagnostics``."""
    kind = getattr(event, "last_policy_kind", "")
    policy = str(getattr(kind, "name", kind)).removeprefix("RMW_QOS_POLICY_").lower()
    return (f"{topic}: {getattr(event, 'total_count', '?')} publisher(s) found whose QoS this "
            f"node's subscription does not match (last: {policy}; this node's {setting}): "
            "nothing is received from them")


def incompatible_type_text(topic: str, ours: str, theirs: Sequence[str]) -> str:
    """Publishers of other message types (``theirs``) on ``topic``, read as ``ours``: DDS
    matches them with nothing, and no event says so (for the log and ``/diagnostics``)."""
    hint = ""
    if ours.endswith("/Image") and any(t.endswith("/CompressedImage") for t in theirs):
        hint = (" (a compressed stream under another name: subscribe it by a name ending "
                "in /compressed, /compressedDepth for depth, e.g. with a remapping)")
    return (f"{topic} has publishers of {', '.join(theirs)}; this node reads {ours} there "
            f"(image_transport's naming): nothing comes from them{hint}")


def camera_status(fq_name: str, period: Mapping[str, Any], version: int) -> DiagnosticStatus:
    """The ``<node>: camera <topic>`` status from :meth:`CameraState.take_period`: counters
    (with depth: received, used, colour-only frames, errors), latency statistics of the period
    (ms); WARN when frames were skipped or depth was unusable in the period, or the camera
    went silent (:meth:`CameraState.silent_for`)."""
    values = dict(period["values"])
    lat, proc = period["latencies"], period["processing"]
    values["latency_ms_last"] = f"{period['last_latency'] * 1e3:.1f}"
    if lat:
        values["latency_ms_mean"] = f"{sum(lat) / len(lat) * 1e3:.1f}"
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
        values["latency_ms_p95"] = f"{p95 * 1e3:.1f}"
        values["latency_ms_max"] = f"{lat[-1] * 1e3:.1f}"
        values["processing_ms_mean"] = f"{sum(proc) / max(1, len(proc)) * 1e3:.1f}"
    values["vocabulary_version"] = version
    status = DiagnosticStatus(name=f"{fq_name}: camera {values['topic']}", hardware_id=fq_name)
    depth_errors = int(period.get("depth_errors_recent", 0))
    if period["bad_recent"]:
        status.level = DiagnosticStatus.WARN
        status.message = clip_text(f"{period['bad_recent']} frame(s) skipped: "
                                   f"{period['last_error']}")
    elif depth_errors:
        status.level = DiagnosticStatus.WARN
        status.message = clip_text(f"{depth_errors} frame(s) processed colour-only, bad depth: "
                                   f"{values['last_depth_error']}")
    elif period.get("silent_s"):
        status.level = DiagnosticStatus.WARN
        rate = f" (before: {1.0 / period['interval']:.1f} images/s)" \
            if period.get("interval") else ""
        status.message = f"no image for {period['silent_s']:.1f} s{rate}"
    elif values.get("depth_unit_warning"):   # after silence: the outage first
        status.level = DiagnosticStatus.WARN
        status.message = clip_text(values["depth_unit_warning"])
    elif (values.get("incompatible_type") or values.get("incompatible_qos")) and (
            values.get("colour_only_in_period", 0) >= values["processed_in_period"]):
        # nothing processed, or (with depth) every frame colour only: the mismatch may be
        # why (a QoS mismatch is never cleared: rclpy reports no publisher that left)
        status.level = DiagnosticStatus.WARN
        status.message = clip_text(values.get("incompatible_type")
                                   or values["incompatible_qos"])
    else:
        status.level = DiagnosticStatus.OK
        status.message = (f"{values['processed']} processed, {values['dropped']} dropped"
                          if values["received"] else "no images received yet")
    status.values = key_values(values)
    return status
