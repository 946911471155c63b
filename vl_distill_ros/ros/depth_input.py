"""Registered depth for one colour camera of ``vl_distill_node`` (no rclpy import).

:class:`DepthInput` holds a camera's depth images in a bounded stamp buffer
(:class:`~vl_distill_ros.perception.stamp_sync.StampBuffer`) and its latest
``sensor_msgs/CameraInfo``, pairs a colour frame with the depth image of the same stamp (or
the nearest within ``depth_sync_tolerance``), decodes it (16UC1 in ``depth_scale`` units,
mm by default, or 32FC1 m) and checks it against the colour image and the intrinsics. Depth
comes as a ``sensor_msgs/Image`` or, on a ``.../compressedDepth`` topic, as a
``sensor_msgs/CompressedImage``
(:func:`~vl_distill_ros.perception.compressed_codec.decode_depth_message`); depth that is not
registered to colour is aligned with the depth camera's own CameraInfo and pose
(:meth:`DepthInput.set_alignment`; the pose given, or looked up in the static transforms
between the depth image's and the colour image's frame ids). Anything wrong
-- no partner in time, no CameraInfo yet, a wrong encoding, a size mismatch, a CameraInfo
with zeros -- gives ``(None, None)`` with a reason: the colour frame is then processed
colour-only, and the counters and the last problem go to the camera's ``/diagnostics``
status.

Messages are duck-typed (``header.stamp``, ``encoding``, ``height``, ``width``, ``step``,
``data``, ``is_bigendian``, or ``format`` and ``data``; ``k``, ``width``, ``height``), so
this module is tested without ROS as well as through the node.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np

from ..perception.compressed_codec import decode_depth_message, is_rectified_topic
from ..perception.depth_alignment import UnalignedDepth
from ..perception.depth_units import float_encoding
from ..perception.camera_model import (DISTORTION_MODELS, MAX_DISTORTION_COEFFS, CameraIntrinsics,
                                       DepthError, distortion_corner_px)
from ..perception.image_codec import MILLIMETRE, ImageDecodeError
from ..perception.stamp_sync import StampBuffer
from ..perception.static_transforms import Transform

__all__ = ["DepthInput", "DEPTH_BUFFER", "DEPTH_BUFFER_BYTES", "MAX_DEPTH_PIXELS", "NO_PARTNER",
           "stamp_ns"]

#: Depth images kept per camera (the matcher's bounded buffer), and the bytes they may hold
#: together (30 depth images of 640x480 32FC1 hold 37 MB; of 1920x1080, 249 MB).
DEPTH_BUFFER = 30
DEPTH_BUFFER_BYTES = 256 * 1024 * 1024
#: Largest depth image taken, in pixels (the decoders' bound, checked on arrival too).
MAX_DEPTH_PIXELS = 50_000_000
#: How :meth:`DepthInput.pair`'s reason starts when no depth image was near the frame's
#: stamp (any other reason: one was, and could not be used).
NO_PARTNER = "no depth image within"
#: Said with "no CameraInfo received yet": the usual cause when it lasts.
LATCHED_INFO_HINT = ("a CameraInfo published once before the node started needs "
                     "camera_info_durability: transient_local")
#: A depth stream silent for longer than this (s) is not waited for.
STALE_AFTER_S = 1.0


def stamp_ns(msg: Any) -> int:
    """``header.stamp`` of a message in nanoseconds."""
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


class DepthInput:
    """Depth and camera info of one colour camera (see the module docstring).

    Args:
        depth_topic: the depth topic (as configured; for diagnostics).
        info_topic: the CameraInfo topic.
        tolerance_s: largest stamp difference accepted when pairing (``depth_sync_tolerance``).
        capacity: depth images buffered (bounded).
        rectified: the colour topic is rectified (:func:`~vl_distill_ros.perception.
            compressed_codec.is_rectified_topic`).
        unit_m: metres per unit of 16-bit depth images (``depth_scale``).
    """

    def __init__(self, depth_topic: str, info_topic: str, tolerance_s: float,
                 capacity: int = DEPTH_BUFFER, rectified: bool = False,
                 unit_m: float = MILLIMETRE) -> None:
        self.depth_topic = depth_topic
        self.unit_m = float(unit_m)
        #: Unregistered depth (:meth:`set_alignment`): the depth camera's CameraInfo topic,
        #: its latest CameraInfo and the depth-to-colour ``(R, t)``; None: registered depth.
        self.depth_info_topic = ""
        self.depth_info: Any = None
        self.alignment: tuple[np.ndarray, np.ndarray] | None = None
        #: Where the pose comes from when it is not given: ``lookup(colour frame, depth
        #: frame) -> (R, t)``, raising ``ValueError`` while the frames are not linked.
        self.pose_lookup: Callable[[str, str], tuple[np.ndarray, np.ndarray]] | None = None
        #: The frames the looked-up pose is for (it is static: looked up once).
        self._pose_frames: tuple[str, str] | None = None
        self.info_topic = info_topic
        #: The colour images are rectified (an ``image_rect`` topic): the camera is the
        #: CameraInfo's P, without its lens model.
        self.rectified = bool(rectified)
        self.tolerance_s = float(tolerance_s)
        self.buffer: StampBuffer[Any] = StampBuffer(int(round(tolerance_s * 1e9)), capacity,
                                                    DEPTH_BUFFER_BYTES, _message_bytes)
        self._lock = threading.Lock()
        self.info: Any = None
        self.last_receipt = float("-inf")
        self.counts = {"depth_received": 0, "camera_info_received": 0, "depth_used": 0,
                       "colour_only": 0, "depth_errors": 0, "objects_placed": 0,
                       "objects_not_placed": 0}
        self.errors_in_period = 0
        self.colour_only_in_period = 0
        self.last_depth_error = ""
        self.last_colour_only_reason = ""
        #: The last decoded depth image was 32FC1 (True), 16-bit (False), or not known yet.
        self.float_depth: bool | None = None
        #: :func:`~vl_distill_ros.perception.camera_model.distortion_corner_px` of the
        #: CameraInfo in use (None: not measured yet, or an unknown model).
        self.distortion_px: float | None = None
        self._distortion_of: Any = None
        self._distortion_key: Any = None
        self._distortion_noted = False
        #: ``(depth frame, colour frame)`` of registered depth in another frame (noted once).
        self._frames_differ: tuple[str, str] | None = None
        self._frames_noted = False
        #: The stamp of the colour frame paired last (:meth:`pair`; None: none yet): the
        #: camera's time went back when a frame is older than it by over STALE_AFTER_S.
        self._last_colour: int | None = None

    # -- executor thread ------------------------------------------------------------------
    def add_depth(self, msg: Any, now: float) -> None:
        """Buffer a depth image (by its header stamp); one larger than
        :data:`MAX_DEPTH_PIXELS` or :data:`DEPTH_BUFFER_BYTES` is counted as an error and
        not kept (it was held until a colour frame paired with it)."""
        with self._lock:
            self.counts["depth_received"] += 1
            self.last_receipt = now
        pixels = int(getattr(msg, "height", 0) or 0) * int(getattr(msg, "width", 0) or 0)
        size = _message_bytes(msg)
        if pixels > MAX_DEPTH_PIXELS or size > DEPTH_BUFFER_BYTES:
            with self._lock:
                self.counts["depth_errors"] += 1
                self.errors_in_period += 1
                self.last_depth_error = (
                    f"depth on {self.depth_topic}: a {getattr(msg, 'width', '?')}x"
                    f"{getattr(msg, 'height', '?')} image of {size} bytes is larger than "
                    f"{MAX_DEPTH_PIXELS} pixels or {DEPTH_BUFFER_BYTES} bytes: not kept")
            return
        self.buffer.add(stamp_ns(msg), msg)

    def add_info(self, msg: Any) -> None:
        """Keep the latest CameraInfo (intrinsics rarely change; they are checked on use)."""
        with self._lock:
            self.info = msg
            self.counts["camera_info_received"] += 1

    def set_alignment(self, depth_info_topic: str, rotation: np.ndarray | None = None,
                      translation: np.ndarray | None = None,
                      lookup: Callable[[str, str], tuple[np.ndarray, np.ndarray]] | None = None
                      ) -> None:
        """The depth is not registered to colour: align each depth image to the colour
        camera (:func:`~vl_distill_ros.perception.depth_alignment.align_depth`) with the depth
        camera's CameraInfo (from ``depth_info_topic``) and the depth-to-colour transform:
        ``rotation`` and ``translation``, or (both None) what ``lookup(colour frame id,
        depth frame id)`` gives for the frames of the images (looked up until found)."""
        self.depth_info_topic = depth_info_topic
        if rotation is None or translation is None:
            if lookup is None:
                raise ValueError("set_alignment needs a pose or a lookup")
            self.pose_lookup = lookup
            return
        self.alignment = (np.asarray(rotation, np.float64), np.asarray(translation, np.float64))

    @property
    def aligns(self) -> bool:
        """Whether the depth is aligned to colour (not registered)."""
        return self.alignment is not None or self.pose_lookup is not None

    def _pose(self, colour_frame: str, depth_frame: str
              ) -> tuple[np.ndarray, np.ndarray] | str:
        """The depth-to-colour ``(R, t)`` in use, or why there is none yet."""
        if self.pose_lookup is None:
            return self.alignment  # type: ignore[return-value]
        frames = (str(colour_frame), str(depth_frame))
        if self.alignment is not None and frames == self._pose_frames:
            return self.alignment
        try:
            pose = self.pose_lookup(*frames)
        except ValueError as exc:
            return (f"no static transform from the depth frame {depth_frame!r} to the colour "
                    f"frame {colour_frame!r} yet: {exc}")
        with self._lock:
            self.alignment, self._pose_frames = pose, frames
        return pose

    def add_depth_info(self, msg: Any) -> None:
        """Keep the depth camera's latest CameraInfo (unregistered depth only)."""
        with self._lock:
            self.depth_info = msg

    # -- inference thread -----------------------------------------------------------------
    def may_still_arrive(self, stamp: int, now: float) -> bool:
        """Whether a depth partner of ``stamp`` may still come: none matches yet, the stream
        is alive and the stamp of the depth image it received last is older than ``stamp``
        plus the tolerance, or newer by more than :data:`STALE_AFTER_S` while the colour
        frames' own time went back by as much (``ros2 bag play --loop`` starting over: that
        image is from before, and the first frame after the jump went colour-only without
        waiting for its depth). Colour stamps that never meet the depth's (left 0 by a
        driver, another clock), or depth stamps that never meet the colour's (left 0, a clock
        behind), are not waited for: no partner can come."""
        if self.buffer.match(stamp) is not None:
            return False
        latest = self.buffer.latest_stamp()
        stale_ns = STALE_AFTER_S * 1e9
        with self._lock:
            alive = now - self.last_receipt < STALE_AFTER_S
            went_back = self._last_colour is not None and self._last_colour - stamp > stale_ns
        # depth stamps over STALE_AFTER_S older than the frame's while depth keeps coming
        # (a depth driver's stamps left 0, a depth clock behind the colour's): none can
        # pair, as colour stamps that never meet the depth's
        return alive and (latest is None
                          or (latest < stamp + self.buffer.tolerance_ns
                              and stamp - latest <= stale_ns)
                          or (went_back and latest - stamp > stale_ns))

    def pair(self, stamp: int, image_shape: tuple[int, ...], colour_frame: str = ""
             ) -> tuple[np.ndarray | UnalignedDepth | None, CameraIntrinsics | None, str]:
        """``(depth m, intrinsics, "")`` for the colour frame stamped ``stamp`` of
        ``image_shape`` (its frame id ``colour_frame``), or ``(None, None, reason)``;
        problems are counted. Depth to align comes as
        :class:`~vl_distill_ros.perception.depth_alignment.UnalignedDepth` (the pipeline
        aligns it in its depth thread)."""
        with self._lock:
            self._last_colour = int(stamp)
        found = self.buffer.match(stamp)
        if found is None:
            return self._colour_only(f"{NO_PARTNER} {self.tolerance_s:g} s")
        with self._lock:
            info = self.info
        if info is None:
            return self._colour_only(f"no CameraInfo received on {self.info_topic} yet "
                                     f"({LATCHED_INFO_HINT})")
        msg = found[1]
        height, width = int(image_shape[0]), int(image_shape[1])
        try:
            k = CameraIntrinsics.from_camera_info(info, self.rectified, (width, height))
            self._measure_distortion(info, k)
            depth = decode_depth_message(msg, unit_m=self.unit_m)
            self.float_depth = float_encoding(getattr(msg, "encoding", "")
                                              or getattr(msg, "format", ""))
        except DepthError as exc:
            return self._error(f"CameraInfo on {self.info_topic}: {exc}")
        except ImageDecodeError as exc:
            return self._error(f"depth on {self.depth_topic}: {exc}")
        depth_frame = str(getattr(msg.header, "frame_id", ""))
        result: np.ndarray | UnalignedDepth | tuple[None, None, str] = depth
        if self.aligns:
            result = self._unaligned(depth, colour_frame, depth_frame)
            if isinstance(result, tuple):
                return result
        else:
            self._check_frames(depth_frame, colour_frame)
            if depth.shape != (height, width):
                return self._error(f"depth on {self.depth_topic} is {depth.shape[1]}x"
                                   f"{depth.shape[0]} but the colour image is {width}x"
                                   f"{height}: depth must be registered (aligned) to the "
                                   "colour image")
        if (k.width, k.height) != (width, height):
            return self._error(f"CameraInfo on {self.info_topic} is for {k.width}x{k.height} "
                               f"images but the colour image is {width}x{height}")
        return result, k, ""

    def _unaligned(self, depth: np.ndarray, colour_frame: str, depth_frame: str
                   ) -> UnalignedDepth | tuple[None, None, str]:
        """The depth camera's image with its camera and pose, or why not (counted)."""
        with self._lock:
            depth_info = self.depth_info
        if depth_info is None:
            return self._colour_only(f"no depth CameraInfo received on "
                                     f"{self.depth_info_topic} yet ({LATCHED_INFO_HINT})")
        pose = self._pose(colour_frame, depth_frame)
        if isinstance(pose, str):
            return self._colour_only(pose)
        try:
            # a depth image on an image_rect topic (image_proc's rectified depth) is read as
            # the colour images are: P, its lens taken out already (REP 104)
            camera = CameraIntrinsics.from_camera_info(
                depth_info, is_rectified_topic(self.depth_topic),
                image_size=(depth.shape[1], depth.shape[0]))
        except DepthError as exc:
            return self._error(f"depth CameraInfo on {self.depth_info_topic}: {exc}")
        if depth.shape != (camera.height, camera.width):
            return self._error(f"depth on {self.depth_topic} is {depth.shape[1]}x"
                               f"{depth.shape[0]} but its CameraInfo on "
                               f"{self.depth_info_topic} is for {camera.width}x"
                               f"{camera.height} images")
        return UnalignedDepth(depth, camera, *pose)

    def _check_frames(self, depth_frame: str, colour_frame: str) -> None:
        """Remember (for :meth:`frame_note`) registered depth in another frame."""
        if colour_frame and depth_frame and not self._frames_noted and \
                self._frames_differ is None and \
                depth_frame.lstrip("/") != str(colour_frame).lstrip("/"):
            with self._lock:
                self._frames_differ = (depth_frame, str(colour_frame))

    def _measure_distortion(self, info: Any, k: CameraIntrinsics) -> None:
        """Measure the lens of the CameraInfo in use unless it is the one measured last (a
        driver sends the same CameraInfo with every frame): how far it moves the frame's
        corner, 0 without one, None for a lens the proposer cannot follow."""
        d = getattr(info, "d", ())
        unknown = not self.rectified and not k.distorted and (
            len(d) > MAX_DISTORTION_COEFFS or any(float(v) for v in d))
        key = (k, unknown)
        if key == self._distortion_key:
            return
        px = None if unknown else (distortion_corner_px(k, k.distortion_model, k.distortion)
                                   if k.distorted else 0.0)
        with self._lock:
            self._distortion_key, self._distortion_of, self.distortion_px = key, info, px

    def distortion_note(self) -> str:
        """Once per camera, a note when the CameraInfo's lens distortion is of a model the
        depth proposer cannot follow (else "")."""
        with self._lock:
            info = self._distortion_of
            if self._distortion_noted or info is None or self.distortion_px is not None:
                return ""
            self._distortion_noted = True
        model = str(getattr(info, "distortion_model", ""))[:40]
        return (f"CameraInfo on {self.info_topic} has a lens model the depth proposer does "
                f"not know ({model!r} with {len(info.d)} coefficients; known: "
                f"{', '.join(DISTORTION_MODELS)}): depth is back-projected with K alone, so "
                "near the edges the table may look curved. Use rectified colour and "
                "registered depth (image_proc's image_rect topics)")

    def frame_note(self) -> str:
        """Once per camera, a note when depth read as registered comes in another frame than
        the colour images (a depth camera's own image, misplaced if read as registered)."""
        with self._lock:
            if self._frames_noted or self._frames_differ is None:
                return ""
            self._frames_noted = True
            depth_frame, colour_frame = self._frames_differ
        return (f"depth on {self.depth_topic} is in frame {depth_frame[:80]!r}, the colour "
                f"images in {colour_frame[:80]!r}: it is read as registered to the colour "
                "image. If it is the depth camera's own image (a RealSense without "
                "align_depth), give depth_camera_info_topics and depth_to_colour_poses (an "
                "empty pose reads /tf_static)")

    def record(self, status: str, placed: int = 0, not_placed: int = 0) -> None:
        """Count how the pipeline used a paired depth image (``used`` or why not) and, when
        used, how many of the frame's objects were placed with it and how many not."""
        with self._lock:
            if status == "used":
                self.counts["depth_used"] += 1
                self.counts["objects_placed"] += int(placed)
                self.counts["objects_not_placed"] += int(not_placed)
            else:
                self.counts["colour_only"] += 1
                self.colour_only_in_period += 1
                self.last_colour_only_reason = status

    def _colour_only(self, reason: str) -> tuple[None, None, str]:
        with self._lock:
            self.counts["colour_only"] += 1
            self.colour_only_in_period += 1
            self.last_colour_only_reason = reason
        return None, None, reason

    def _error(self, reason: str) -> tuple[None, None, str]:
        with self._lock:
            self.counts["depth_errors"] += 1
            self.counts["colour_only"] += 1
            self.errors_in_period += 1
            self.colour_only_in_period += 1
            self.last_depth_error = reason
            self.last_colour_only_reason = reason
        return None, None, reason

    # -- diagnostics ----------------------------------------------------------------------
    def take_period(self) -> dict[str, Any]:
        """Diagnostic values (counters, last problem) and the period's error count; resets
        the per-period counts."""
        with self._lock:
            values = {"depth_topic": self.depth_topic, "camera_info_topic": self.info_topic,
                      "depth_camera_info_topic": self.depth_info_topic,
                      "depth_pose_source": ("" if not self.aligns else "parameter"
                                            if self.pose_lookup is None else "tf_static"),
                      "depth_pose": _pose_text(self.alignment),
                      **self.counts, "colour_only_in_period": self.colour_only_in_period,
                      "depth_errors_in_period": self.errors_in_period,
                      "last_colour_only_reason": self.last_colour_only_reason,
                      "last_depth_error": self.last_depth_error,
                      "camera_info_distortion_px": "" if self.distortion_px is None
                      else f"{self.distortion_px:.1f}"}
            errors = self.errors_in_period
            self.errors_in_period = self.colour_only_in_period = 0
        return {"values": values, "errors_recent": errors}


def _message_bytes(msg: Any) -> int:
    """Bytes of a depth message's data (what its buffer holds)."""
    try:
        return len(msg.data)
    except TypeError:
        return 0


def _pose_text(alignment: tuple[np.ndarray, np.ndarray] | None) -> str:
    """``"x y z qx qy qz qw"`` of a depth-to-colour ``(R, t)`` (``""`` for none)."""
    if alignment is None:
        return ""
    return " ".join(f"{v:.6g}" for v in Transform(*alignment).as_pose())
