"""Camera bags with ground truth: write and read rosbag2 bags without ROS (``rosbags``).

ROS-free apart from the pure-Python ``rosbags`` package, which writes and reads rosbag2 bags
(MCAP or sqlite3 storage) in the format ``ros2 bag`` uses; its CDR payloads are byte-for-byte
what ``rclpy.serialization`` produces and consumes, so a replay tool can publish them
unchanged.

Bag layout written by :func:`write_camera_bag` (topic names are settable, see
:class:`BagTopics`):

* ``/camera/image_raw`` -- ``sensor_msgs/msg/Image``, ``rgb8``, ``header.stamp`` = the frame
  time, ``header.frame_id`` = ``camera_color_optical_frame``;
* ``/hand_camera/image_raw`` -- optional second camera (``hand_camera_color_optical_frame``),
  same stamps;
* ``/ground_truth`` -- ``std_msgs/msg/String``, one per camera image, with the image's stamp
  (also as the bag time), whose ``data`` is a JSON document in the schema of the node's
  ``~/labels`` output (:func:`vl_distill_ros.perception.pipeline.labels_document`) plus the
  object ``key``::

    {"header": {"stamp": {"sec": 12, "nanosec": 500000000},
                "frame_id": "camera_color_optical_frame"},
     "camera": "/camera/image_raw",
     "vocabulary_version": 0,
     "objects": [{"bbox": [x, y, w, h], "label": "banana", "key": "011_banana",
                  "score": 1.0, "known": true, "top_k": []}]}

  ``bbox`` is in pixels of that image (x right, y down, top-left corner, width, height).

Ground truth can instead come from a **JSON Lines sidecar** file (:func:`read_camera_bag`'s
``ground_truth`` argument), e.g. for bags recorded on a robot and labelled afterwards. One
JSON object per line (blank lines are skipped)::

    {"stamp": {"sec": 12, "nanosec": 500000000}, "camera": "/camera/image_raw",
     "objects": [{"bbox": [x, y, w, h], "label": "banana"}]}

``stamp`` is the ``header.stamp`` of the image it labels, ``camera`` that image's topic,
``objects`` may be empty (a frame known to show nothing); an object may also carry a
``key``. A later line for the same (camera, stamp) replaces an earlier one.
:func:`write_ground_truth_sidecar` writes such files.

Reading: :func:`read_camera_bag` returns :class:`BagContents` (topics, counts, image topics,
ground truth keyed by ``(camera topic, stamp in ns)``); :meth:`BagContents.images` iterates
the images in bag-time order decoded to RGB numpy arrays (any ``sensor_msgs/Image`` encoding
that :func:`~vl_distill_ros.perception.image_codec.decode_image` supports, honouring ``step`` and
``is_bigendian``); :func:`iter_raw_messages` yields ``(topic, msgtype, timestamp_ns, cdr)``
for a replay publisher. Every problem is a :class:`BagError` (a ``ValueError``) whose
message names the path and what is wrong.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from vl_distill_ros.atomic_io import replace_dir
from vl_distill_ros.bags.raw_io import (CAMERA_INFO_TYPE, COMPRESSED_IMAGE_TYPE, IMAGE_TYPE,
                                        IMAGE_TYPES, STRING_TYPE, BagError, RawMessage,
                                        header_stamp, iter_raw_messages, open_reader,
                                        typestore)
from vl_distill_ros.bags.unregistered_depth import (TF_MESSAGE_TYPE, DepthAlignmentPlan,
                                                    is_registered_depth_topic,
                                                    plan_depth_alignment)
from vl_distill_ros.perception.compressed_codec import base_topic, topic_transport
from vl_distill_ros.perception.image_codec import MILLIMETRE

__all__ = [
    "BagError", "BagTopics", "GroundTruthObject", "BagFrame", "ImageMessage", "RawMessage",
    "BagContents", "write_camera_bag", "read_camera_bag", "iter_raw_messages",
    "read_ground_truth_sidecar", "write_ground_truth_sidecar", "ground_truth_document",
    "IMAGE_TYPE", "STRING_TYPE", "STORAGES", "COMPRESSIONS", "CAMERA_INFO_TYPE",
    "RGBDFrame", "is_depth_topic", "pair_camera_topics", "camera_info_k",
    "COMPRESSED_IMAGE_TYPE", "IMAGE_TYPES", "IMAGE_FORMATS", "written_topics",
    "is_registered_depth_topic", "typestore",
]

#: Storage plugins :func:`write_camera_bag` can write.
STORAGES: tuple[str, ...] = ("mcap", "sqlite3")
#: Compressions :func:`write_camera_bag` can apply: ``zstd`` is MCAP chunk compression for
#: ``mcap`` (standard MCAP, read by ``ros2 bag`` without any setting) and rosbag2 per-message
#: compression for ``sqlite3`` (recorded in ``metadata.yaml``; ``ros2 bag`` decompresses it
#: with its default zstd plugin).
COMPRESSIONS: tuple[str, ...] = ("none", "zstd")
#: How :func:`write_camera_bag` writes images: ``raw`` (``Image``: rgb8 colour, 16UC1 depth)
#: or as image_transport's transports, ``jpeg``/``png`` (colour as ``CompressedImage`` on
#: ``<camera>/compressed``, depth as 16UC1 ``compressedDepth`` PNG on
#: ``<depth>/compressedDepth``), as robots usually record.
IMAGE_FORMATS: tuple[str, ...] = ("raw", "jpeg", "png")


@dataclass(frozen=True)
class BagTopics:
    """Topic names and frame ids of a camera bag."""

    camera: str = "/camera/image_raw"
    hand_camera: str = "/hand_camera/image_raw"
    ground_truth: str = "/ground_truth"
    camera_frame_id: str = "camera_color_optical_frame"
    hand_frame_id: str = "hand_camera_color_optical_frame"
    #: Registered depth (16UC1, mm) and the colour camera's CameraInfo of each camera;
    #: written only for frames that carry depth. Depth shares the colour frame id.
    depth: str = "/camera/depth/image_raw"
    camera_info: str = "/camera/camera_info"
    #: Depth from a separate depth camera (:attr:`BagFrame.depth_camera`): its CameraInfo,
    #: its optical frame and the static transform placing it in the colour camera's.
    depth_camera_info: str = "/camera/depth/camera_info"
    depth_frame_id: str = "camera_depth_optical_frame"
    tf_static: str = "/tf_static"
    hand_depth: str = "/hand_camera/depth/image_raw"
    hand_camera_info: str = "/hand_camera/camera_info"


class GroundTruthObject(NamedTuple):
    """One labelled object of one image."""

    #: ``(x, y, w, h)`` in pixels.
    bbox: tuple[int, int, int, int]
    #: Natural vocabulary name (what the node publishes), e.g. ``banana``.
    label: str
    #: Stable key (model folder name), e.g. ``011_banana``; may be empty.
    key: str = ""


@dataclass
class BagFrame:
    """One time step to write: the main image, its objects, optionally a hand image."""

    #: Stamp (ns since the epoch) of the images, their ground truth and the bag time.
    stamp_ns: int
    #: ``(H, W, 3)`` uint8 RGB.
    image: np.ndarray
    objects: Sequence[GroundTruthObject] = ()
    hand_image: np.ndarray | None = None
    hand_objects: Sequence[GroundTruthObject] = ()
    #: Optional registered depth of the main image: ``(H, W)`` float metres (0 = none) or
    #: uint16 millimetres; written as 16UC1 with a CameraInfo from ``intrinsics``.
    depth: np.ndarray | None = None
    #: ``(fx, fy, cx, cy)`` of the main camera (needed with ``depth``).
    intrinsics: tuple[float, float, float, float] | None = None
    hand_depth: np.ndarray | None = None
    hand_intrinsics: tuple[float, float, float, float] | None = None
    #: The main camera's lens model for its CameraInfo, ``(distortion_model, d)``
    #: (``None``: a distortion-free ``plumb_bob``).
    lens: tuple[str, Sequence[float]] | None = None
    #: ``depth`` comes from a separate depth camera, not registered to the colour image:
    #: ``(fx, fy, cx, cy, width, height)`` of that camera, and its optical frame in the
    #: colour camera's, ``(x, y, z, qx, qy, qz, qw)`` (written once on ``/tf_static``).
    depth_camera: tuple[float, ...] | None = None
    depth_pose: tuple[float, ...] | None = None


class ImageMessage(NamedTuple):
    """One decoded image read from a bag."""

    topic: str
    #: ``header.stamp`` in ns (what ground truth is keyed by).
    stamp_ns: int
    #: Bag (log) time in ns.
    log_time_ns: int
    frame_id: str
    #: Encoding as recorded, e.g. ``rgb8`` (a CompressedImage's ``format``).
    encoding: str
    #: ``(H, W, 3)`` uint8 RGB.
    image: np.ndarray


class RGBDFrame(NamedTuple):
    """One decoded colour image with its depth partner, read by :meth:`BagContents.rgbd_frames`."""

    topic: str
    stamp_ns: int
    log_time_ns: int
    frame_id: str
    encoding: str
    #: ``(H, W, 3)`` uint8 RGB.
    image: np.ndarray
    #: ``(H, W)`` float32 metres (0 = no measurement), or ``None`` (no partner, or bad);
    #: an ``UnalignedDepth`` with :meth:`BagContents.rgbd_frames`'s ``defer_alignment``.
    depth: Any = None
    #: ``(fx, fy, cx, cy, width, height)`` from the paired CameraInfo (its K, or its P for
    #: an ``image_rect`` topic, with its binning and ROI: see :func:`camera_info_k`), or None.
    camera_info: tuple[float, float, float, float, int, int] | None = None
    #: Why there is no depth ("" when paired, or when the camera has no depth topic).
    depth_note: str = ""
    #: The paired CameraInfo's lens model: ``(distortion_model, d)`` (``("", ())``: none,
    #: or the images are rectified).
    distortion: tuple[str, tuple[float, ...]] = ("", ())

    def intrinsics(self):
        """The paired camera as a
        :class:`~vl_distill_ros.perception.camera_model.CameraIntrinsics` (its K, size
        and lens model), or ``None`` without a CameraInfo.

        Raises:
            DepthError: the CameraInfo's values are unusable (e.g. a zero K).
        """
        from vl_distill_ros.perception.camera_model import CameraIntrinsics

        if self.camera_info is None:
            return None
        fx, fy, cx, cy, width, height = self.camera_info
        return CameraIntrinsics.from_k([fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0], width,
                                       height, *self.distortion)


def stamp_to_ns(sec: int, nanosec: int) -> int:
    """``sec`` + ``nanosec`` as integer nanoseconds."""
    return int(sec) * 1_000_000_000 + int(nanosec)


def ns_to_stamp(ns: int) -> tuple[int, int]:
    """Integer nanoseconds as ``(sec, nanosec)``."""
    return int(ns) // 1_000_000_000, int(ns) % 1_000_000_000


def ground_truth_document(stamp_ns: int, frame_id: str, camera: str,
                          objects: Sequence[GroundTruthObject]) -> dict[str, Any]:
    """The ``/ground_truth`` JSON document of one image (the node's ``~/labels`` schema with
    ``score`` 1, ``known`` true, an empty ``top_k`` and each object's ``key``)."""
    sec, nanosec = ns_to_stamp(stamp_ns)
    return {
        "header": {"stamp": {"sec": sec, "nanosec": nanosec}, "frame_id": str(frame_id)},
        "camera": str(camera),
        "vocabulary_version": 0,
        "objects": [{"bbox": [int(v) for v in o.bbox], "label": str(o.label),
                     "key": str(o.key), "score": 1.0, "known": True, "top_k": []}
                    for o in objects],
    }


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------
def _image_msg(store: Any, image: np.ndarray, stamp_ns: int, frame_id: str,
               image_format: str = "raw", quality: int = 90) -> tuple[str, Any]:
    """``(message type, message)`` of a colour image: an rgb8 ``Image``, or a
    ``CompressedImage`` of ``image_format`` (see :data:`IMAGE_FORMATS`)."""
    from vl_distill_ros.perception.compressed_codec import encode_compressed_image
    from vl_distill_ros.perception.image_codec import encode_rgb8

    header = _header(store, stamp_ns, frame_id)
    try:
        if image_format != "raw":
            fmt, payload = encode_compressed_image(image, image_format, quality)
            return COMPRESSED_IMAGE_TYPE, store.types[COMPRESSED_IMAGE_TYPE](
                header=header, format=fmt, data=np.frombuffer(payload, dtype=np.uint8))
        encoding, height, width, step, data = encode_rgb8(image)
    except ValueError as exc:
        raise BagError(f"cannot write image: {exc}") from None
    return IMAGE_TYPE, store.types[IMAGE_TYPE](
        header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
        step=step, data=np.frombuffer(data, dtype=np.uint8))


def _header(store: Any, stamp_ns: int, frame_id: str) -> Any:
    sec, nanosec = ns_to_stamp(stamp_ns)
    types = store.types
    return types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=frame_id)


def _depth_msg(store: Any, depth: np.ndarray, stamp_ns: int, frame_id: str,
               compressed: bool = False) -> tuple[str, Any]:
    """``(message type, message)`` of a depth image: a 16UC1 ``Image`` in millimetres, or
    (``compressed``) a ``CompressedImage`` of compressedDepth's 16UC1 PNG."""
    from vl_distill_ros.perception.compressed_codec import encode_compressed_depth
    from vl_distill_ros.perception.image_codec import encode_depth_mm

    header = _header(store, stamp_ns, frame_id)
    try:
        if compressed:
            fmt, payload = encode_compressed_depth(depth)
            return COMPRESSED_IMAGE_TYPE, store.types[COMPRESSED_IMAGE_TYPE](
                header=header, format=fmt, data=np.frombuffer(payload, dtype=np.uint8))
        encoding, height, width, step, data = encode_depth_mm(depth)
    except ValueError as exc:
        raise BagError(f"cannot write depth: {exc}") from None
    return IMAGE_TYPE, store.types[IMAGE_TYPE](
        header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
        step=step, data=np.frombuffer(data, dtype=np.uint8))


def written_topics(topics: BagTopics, image_format: str = "raw") -> BagTopics:
    """The topics :func:`write_camera_bag` writes with ``image_format``: the names of
    ``topics``, with ``/compressed`` after the colour topics and ``/compressedDepth`` after
    the depth topics unless ``image_format`` is ``raw``."""
    if image_format == "raw":
        return topics
    from dataclasses import replace

    return replace(topics, camera=topics.camera + "/compressed",
                   hand_camera=topics.hand_camera + "/compressed",
                   depth=topics.depth + "/compressedDepth",
                   hand_depth=topics.hand_depth + "/compressedDepth")


def _camera_info_msg(store: Any, intrinsics: Sequence[float], width: int, height: int,
                     stamp_ns: int, frame_id: str,
                     lens: tuple[str, Sequence[float]] | None = None) -> Any:
    """A ``sensor_msgs/CameraInfo`` (identity R): distortion-free (plumb_bob, zero D), or
    with ``lens`` = ``(distortion_model, d)``."""
    if intrinsics is None or len(intrinsics) != 4:
        raise BagError(f"a frame with depth needs its intrinsics (fx, fy, cx, cy), got "
                       f"{intrinsics!r}")
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    types = store.types
    roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                    do_rectify=False)
    return types[CAMERA_INFO_TYPE](
        header=_header(store, stamp_ns, frame_id), height=int(height), width=int(width),
        distortion_model=lens[0] if lens else "plumb_bob",
        d=np.asarray(lens[1], np.float64) if lens else np.zeros(5),
        k=np.array([fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]),
        r=np.array([1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]),
        p=np.array([fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]),
        binning_x=0, binning_y=0, roi=roi)


def camera_info_k(msg: Any, rectified: bool = False,
                  image_size: tuple[int, int] | None = None
                  ) -> tuple[float, float, float, float, int, int]:
    """``(fx, fy, cx, cy, width, height)`` of the images a deserialised
    ``sensor_msgs/CameraInfo`` describes (its ``k`` matrix, row-major 3x3; for
    ``rectified`` images its projection matrix ``p`` when that is not all zeros; reduced by
    its binning and region of interest, REP 104, unless only its full frame fits
    ``image_size``: see :func:`~vl_distill_ros.perception.camera_model.image_camera`);
    otherwise unchecked.

    Raises:
        DepthError: K is not 3x3, or a binning or ROI that cannot be (see ``image_camera``).
    """
    from vl_distill_ros.perception.camera_model import image_camera

    return image_camera(msg, rectified, image_size)


def _write_frame(writer: Any, conn: Any, store: Any, topics: BagTopics, frame: BagFrame,
                 i: int, image_format: str = "raw", quality: int = 90) -> None:
    """Write one frame's messages: per camera (main, then hand) its CameraInfo and depth
    when it has depth, its image and its ground truth; ``conn(topic, type)`` gives the
    writer connection of a topic (``topics`` as :func:`written_topics` names them)."""
    stamp = int(frame.stamp_ns)
    views = [(topics.camera, topics.camera_frame_id, frame.image, frame.objects,
              frame.depth, frame.intrinsics, topics.depth, topics.camera_info, frame.lens,
              frame.depth_camera)]
    if frame.hand_image is not None:
        views.append((topics.hand_camera, topics.hand_frame_id, frame.hand_image,
                      frame.hand_objects, frame.hand_depth, frame.hand_intrinsics,
                      topics.hand_depth, topics.hand_camera_info, None, None))
    for topic, frame_id, image, objects, depth, k, d_topic, i_topic, lens, dcam in views:
        if depth is not None:
            size = np.shape(image)[:2] if dcam is None else (int(dcam[5]), int(dcam[4]))
            if np.shape(depth)[:2] != size:
                raise BagError(f"frame {i}: depth of shape {np.shape(depth)} is not "
                               f"registered to the {np.shape(image)[:2]} image" if dcam is None
                               else f"frame {i}: depth of shape {np.shape(depth)} is not the "
                               f"depth camera's {size}")
            info = _camera_info_msg(store, k, image.shape[1], image.shape[0], stamp, frame_id,
                                    lens)
            writer.write(conn(i_topic, CAMERA_INFO_TYPE), stamp,
                         store.serialize_cdr(info, CAMERA_INFO_TYPE))
            depth_frame = frame_id if dcam is None else topics.depth_frame_id
            if dcam is not None:
                info = _camera_info_msg(store, dcam[:4], size[1], size[0], stamp, depth_frame)
                writer.write(conn(topics.depth_camera_info, CAMERA_INFO_TYPE), stamp,
                             store.serialize_cdr(info, CAMERA_INFO_TYPE))
            dtype, dmsg = _depth_msg(store, depth, stamp, depth_frame, image_format != "raw")
            writer.write(conn(d_topic, dtype), stamp, store.serialize_cdr(dmsg, dtype))
        mtype, msg = _image_msg(store, image, stamp, frame_id, image_format, quality)
        writer.write(conn(topic, mtype), stamp, store.serialize_cdr(msg, mtype))
        doc = ground_truth_document(stamp, frame_id, topic, objects)
        text = store.types[STRING_TYPE](data=json.dumps(doc, separators=(",", ":")))
        writer.write(conn(topics.ground_truth, STRING_TYPE), stamp,
                     store.serialize_cdr(text, STRING_TYPE))


def _write_static_transform(writer: Any, conn: Any, store: Any, topics: BagTopics,
                            frame: BagFrame, i: int) -> None:
    """``/tf_static`` (``tf2_msgs/TFMessage``) with the depth camera's optical frame in the
    colour camera's, as a driver latches it and ``ros2 bag record`` stores it."""
    pose = [float(v) for v in (frame.depth_pose or ())]
    if len(pose) != 7 or not all(math.isfinite(v) for v in pose):
        raise BagError(f"frame {i}: a depth camera needs its pose (x y z qx qy qz qw), got "
                       f"{frame.depth_pose!r}")
    types = store.types
    x, y, z, qx, qy, qz, qw = pose
    link = types["geometry_msgs/msg/TransformStamped"](
        header=_header(store, int(frame.stamp_ns), topics.camera_frame_id),
        child_frame_id=topics.depth_frame_id,
        transform=types["geometry_msgs/msg/Transform"](
            translation=types["geometry_msgs/msg/Vector3"](x=x, y=y, z=z),
            rotation=types["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw)))
    writer.write(conn(topics.tf_static, TF_MESSAGE_TYPE), int(frame.stamp_ns),
                 store.serialize_cdr(types[TF_MESSAGE_TYPE](transforms=[link]),
                                     TF_MESSAGE_TYPE))


def _check_out_path(out: Path, overwrite: bool) -> None:
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise BagError(f"{out} exists already; choose another path or allow overwriting")
        if not out.is_dir() or not (out / "metadata.yaml").is_file():
            raise BagError(f"{out} exists and is not a rosbag2 bag (no metadata.yaml); "
                           "refusing to replace it")


def _check_write_args(storage: str, compression: str, topics: BagTopics, image_format: str,
                      jpeg_quality: int) -> None:
    """:func:`write_camera_bag`'s argument checks (a :class:`BagError` names the bad one)."""
    if storage not in STORAGES:
        raise BagError(f"unknown storage {storage!r}; choose one of {list(STORAGES)}")
    if compression not in COMPRESSIONS:
        raise BagError(f"unknown compression {compression!r}; choose one of {list(COMPRESSIONS)}")
    if image_format not in IMAGE_FORMATS:
        raise BagError(f"unknown image format {image_format!r}; choose one of "
                       f"{list(IMAGE_FORMATS)}")
    if not 1 <= int(jpeg_quality) <= 100:
        raise BagError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    for name in (topics.camera, topics.hand_camera, topics.ground_truth, topics.depth,
                 topics.camera_info, topics.hand_depth, topics.hand_camera_info,
                 topics.depth_camera_info, topics.tf_static):
        if not name.startswith("/") or " " in name:
            raise BagError(f"topic {name!r} must be an absolute ROS topic name")


def write_camera_bag(path: str | Path, frames: Iterable[BagFrame], storage: str = "mcap",
                     topics: BagTopics = BagTopics(), compression: str = "none",
                     overwrite: bool = False, image_format: str = "raw",
                     jpeg_quality: int = 90) -> Path:
    """Write ``frames`` to a new rosbag2 bag folder at ``path`` and return it.

    Each frame gives an ``Image`` on ``topics.camera`` and a ground-truth ``String`` on
    ``topics.ground_truth`` (same stamp, written after the image); a frame with a
    ``hand_image`` adds an ``Image`` on ``topics.hand_camera`` and its own ground-truth
    document. A frame with ``depth`` (``hand_depth``) adds, written just before its colour
    image and with the same stamp, a ``CameraInfo`` on ``topics.camera_info``
    (``hand_camera_info``) and a 16UC1 depth ``Image`` in millimetres on ``topics.depth``
    (``hand_depth``). ``frames`` may be a generator: frames are written as they come. With
    ``image_format`` ``jpeg`` or ``png`` the images are ``CompressedImage`` messages on the
    transport topics (:func:`written_topics`), as a robot records them.

    The bag is written into a hidden temporary sibling folder and renamed to ``path`` only
    when complete, so a half-written bag never sits at ``path``. An existing bag at ``path``
    is replaced only with ``overwrite``; anything else there is refused.

    Args:
        path: the bag folder to create.
        frames: the frames, in time order.
        storage: ``mcap`` or ``sqlite3``.
        topics: topic names and frame ids.
        compression: ``none`` or ``zstd`` (see :data:`COMPRESSIONS`).
        overwrite: replace an existing bag at ``path``.
        image_format: ``raw``, ``jpeg`` or ``png`` (see :data:`IMAGE_FORMATS`).
        jpeg_quality: JPEG quality (1..100) with ``image_format`` ``jpeg``.

    Raises:
        BagError: bad arguments, an existing path, or an image that is not RGB uint8.
    """
    _check_write_args(storage, compression, topics, image_format, jpeg_quality)
    topics = written_topics(topics, image_format)
    from rosbags.rosbag2 import Writer
    from rosbags.rosbag2.enums import CompressionFormat, CompressionMode, StoragePlugin

    out = Path(path).expanduser()
    _check_out_path(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    store = typestore()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    bag_dir = tmp / out.name  # the storage file inside is named after this folder
    try:
        writer = Writer(bag_dir, version=Writer.VERSION_LATEST,
                        storage_plugin=StoragePlugin.MCAP if storage == "mcap"
                        else StoragePlugin.SQLITE3)
        if compression == "zstd":
            writer.set_compression(
                CompressionMode.STORAGE if storage == "mcap" else CompressionMode.MESSAGE,
                CompressionFormat.ZSTD)
        with writer:
            conns: dict[str, Any] = {}

            def conn(topic: str, msgtype: str) -> Any:
                if topic not in conns:
                    conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
                return conns[topic]

            conn(topics.camera, IMAGE_TYPE if image_format == "raw" else COMPRESSED_IMAGE_TYPE)
            conn(topics.ground_truth, STRING_TYPE)
            last, placed = -1, False
            for i, frame in enumerate(frames):
                stamp = int(frame.stamp_ns)
                if stamp < 0 or stamp < last:
                    raise BagError(f"frame {i}: stamp {stamp} ns is negative or earlier than "
                                   f"the previous frame's ({last} ns)")
                last = stamp
                if frame.depth_camera is not None and frame.depth is not None and not placed:
                    _write_static_transform(writer, conn, store, topics, frame, i)
                    placed = True
                _write_frame(writer, conn, store, topics, frame, i, image_format, jpeg_quality)
        replace_dir(bag_dir, out)  # an existing bag there is moved aside, then deleted
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------------------
# Ground-truth sidecar files
# ---------------------------------------------------------------------------------------
def _parse_stamp(value: Any, where: str) -> int:
    if not isinstance(value, dict) or set(value) - {"sec", "nanosec"} or "sec" not in value:
        raise BagError(f"{where}: 'stamp' must be {{\"sec\": int, \"nanosec\": int}}, "
                       f"got {value!r}")
    sec, nanosec = value.get("sec"), value.get("nanosec", 0)
    for name, v in (("sec", sec), ("nanosec", nanosec)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise BagError(f"{where}: stamp.{name} must be a non-negative integer, got {v!r}")
    if nanosec >= 1_000_000_000:
        raise BagError(f"{where}: stamp.nanosec must be < 1000000000, got {nanosec}")
    return stamp_to_ns(sec, nanosec)


def _parse_objects(value: Any, where: str) -> list[GroundTruthObject]:
    if not isinstance(value, list):
        raise BagError(f"{where}: 'objects' must be a list, got {type(value).__name__}")
    out = []
    for j, obj in enumerate(value):
        here = f"{where}: objects[{j}]"
        if not isinstance(obj, dict):
            raise BagError(f"{here} must be an object with 'bbox' and 'label'")
        bbox, label = obj.get("bbox"), obj.get("label")
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           and math.isfinite(v) for v in bbox)):
            raise BagError(f"{here}: 'bbox' must be [x, y, w, h] (4 numbers), got {bbox!r}")
        if bbox[2] < 0 or bbox[3] < 0:
            raise BagError(f"{here}: bbox width and height must be >= 0, got {bbox!r}")
        if not isinstance(label, str) or not label.strip():
            raise BagError(f"{here}: 'label' must be a non-empty string, got {label!r}")
        key = obj.get("key", "")
        if not isinstance(key, str):
            raise BagError(f"{here}: 'key' must be a string, got {key!r}")
        out.append(GroundTruthObject(tuple(int(round(v)) for v in bbox), label, key))
    return out


def read_ground_truth_sidecar(path: str | Path) -> dict[tuple[str, int], list[GroundTruthObject]]:
    """Read a JSON Lines ground-truth file (format in the module docstring).

    Returns ``{(camera topic, stamp ns): objects}``. Raises :class:`BagError` naming the
    file and line of the first bad line.
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BagError(f"ground-truth file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BagError(f"cannot read ground-truth file {path}: {exc}") from None
    out: dict[tuple[str, int], list[GroundTruthObject]] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BagError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(entry, dict):
            raise BagError(f"{where}: expected a JSON object with 'stamp', 'camera' and "
                           f"'objects', got {type(entry).__name__}")
        missing = [k for k in ("stamp", "camera", "objects") if k not in entry]
        if missing:
            raise BagError(f"{where}: missing {', '.join(repr(m) for m in missing)}")
        camera = entry["camera"]
        if not isinstance(camera, str) or not camera.startswith("/"):
            raise BagError(f"{where}: 'camera' must be the image topic (e.g. "
                           f"\"/camera/image_raw\"), got {camera!r}")
        out[(camera, _parse_stamp(entry["stamp"], where))] = _parse_objects(entry["objects"],
                                                                            where)
    return out


def write_ground_truth_sidecar(path: str | Path,
                               entries: Iterable[tuple[str, int, Sequence[GroundTruthObject]]]
                               ) -> Path:
    """Write ``(camera topic, stamp ns, objects)`` entries as a JSON Lines sidecar file
    (atomically: a temporary file renamed into place)."""
    path = Path(path).expanduser()
    lines = []
    for camera, stamp_ns, objects in entries:
        sec, nanosec = ns_to_stamp(stamp_ns)
        obj_list = []
        for o in objects:
            item: dict[str, Any] = {"bbox": [int(v) for v in o.bbox], "label": o.label}
            if o.key:
                item["key"] = o.key
            obj_list.append(item)
        lines.append(json.dumps({"stamp": {"sec": sec, "nanosec": nanosec}, "camera": camera,
                                 "objects": obj_list}, separators=(",", ":")))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------
@dataclass
class BagContents:
    """What :func:`read_camera_bag` found in a bag (images are read lazily)."""

    path: Path
    #: Storage of the bag (``mcap`` or ``sqlite3``).
    storage: str
    #: Message type of every topic.
    topics: dict[str, str]
    #: Message count of every topic.
    message_counts: dict[str, int]
    #: Colour camera topics: ``Image`` and ``CompressedImage`` topics that are not depth (see
    #: :func:`pair_camera_topics`), sorted.
    image_topics: list[str]
    #: Ground truth: ``{(camera topic, header stamp ns): objects}``.
    ground_truth: dict[tuple[str, int], list[GroundTruthObject]] = field(default_factory=dict)
    #: Where the ground truth came from: ``topic``, ``sidecar`` or ``none``.
    ground_truth_source: str = "none"
    #: First and last message time (ns); 0 for an empty bag.
    start_ns: int = 0
    end_ns: int = 0
    #: Registered depth topic of each colour topic that has one (see
    #: :func:`pair_camera_topics`).
    depth_topics: dict[str, str] = field(default_factory=dict)
    #: CameraInfo topic of each colour topic that has one.
    camera_info_topics: dict[str, str] = field(default_factory=dict)
    #: Colour topics whose depth may come from a separate depth camera: how it is aligned
    #: (:func:`~vl_distill_ros.bags.unregistered_depth.plan_depth_alignment`).
    depth_alignment: dict[str, DepthAlignmentPlan] = field(default_factory=dict)

    def objects_for(self, topic: str, stamp_ns: int) -> list[GroundTruthObject] | None:
        """Ground-truth objects of the image on ``topic`` stamped ``stamp_ns`` (``None`` if
        that image has no ground truth)."""
        return self.ground_truth.get((topic, int(stamp_ns)))

    def images(self, topics: Sequence[str] | None = None) -> Iterator[ImageMessage]:
        """Decoded images of ``topics`` (default: every image topic) in bag-time order.

        Raises :class:`BagError` on an image that cannot be decoded (the message names the
        topic and time) or a storage read error.
        """
        wanted = list(self.image_topics if topics is None else topics)
        bad = [t for t in wanted if t not in self.image_topics]
        if bad:
            raise BagError(f"{self.path}: {bad} are not image topics; image topics: "
                           f"{self.image_topics}")
        for raw in iter_raw_messages(self.path, wanted):
            yield self._decode(raw)

    def rgbd_frames(self, topics: Sequence[str] | None = None, tolerance_ns: int = 0,
                    capacity: int = 30, depth_unit_m: float = MILLIMETRE,
                    defer_alignment: bool = False) -> Iterator[RGBDFrame]:
        """Decoded colour images of ``topics`` (default: all) in bag-time order, each with its
        depth partner: the depth image (and CameraInfo) of the same stamp, or the nearest
        within ``tolerance_ns`` (:class:`~vl_distill_ros.perception.stamp_sync.StampBuffer`,
        ``capacity`` messages per stream). A colour image waits for its partner until a
        message ``tolerance_ns`` later in bag time was read (at most ``capacity`` images
        wait); then it comes without depth and :attr:`RGBDFrame.depth_note` says why. An
        undecodable depth image or a camera without CameraInfo gives a note, not an error.
        16-bit depth is read in units of ``depth_unit_m`` metres (millimetres by default; the
        node's ``depth_scale``). Depth of a separate depth camera (:attr:`depth_alignment`) is
        aligned to the colour image, or with ``defer_alignment`` comes as an
        :class:`~vl_distill_ros.perception.depth_alignment.UnalignedDepth` that the pipeline
        aligns in its depth thread, as the node hands it over.

        Raises:
            BagError: unknown topics, an undecodable colour image or a storage read error.
        """
        from vl_distill_ros.perception.stamp_sync import StampBuffer

        wanted = list(self.image_topics if topics is None else topics)
        bad = [t for t in wanted if t not in self.image_topics]
        if bad:
            raise BagError(f"{self.path}: {bad} are not colour image topics; colour topics: "
                           f"{self.image_topics}")
        role = {t: ("colour", t) for t in wanted}
        buffers: dict[tuple[str, str], StampBuffer] = {}
        aligned = {c: p.depth_camera_info_topic for c, p in self.depth_alignment.items()
                   if p.pose is not None and c in self.depth_topics}
        for colour in wanted:
            for kind, table in (("depth", self.depth_topics),
                                ("info", self.camera_info_topics), ("depth_info", aligned)):
                if colour in table:
                    role[table[colour]] = (kind, colour)
                    buffers[(kind, colour)] = StampBuffer(tolerance_ns, capacity)
        pending: list[tuple[RawMessage, int]] = []
        for raw in iter_raw_messages(self.path, list(role)):
            kind, colour = role[raw.topic]
            if kind == "colour":
                pending.append((raw, header_stamp(raw.data, self.path, raw.topic)))
            else:
                buffers[(kind, colour)].add(header_stamp(raw.data, self.path, raw.topic),
                                            raw.data)
            while pending:
                first, stamp = pending[0]
                partner = self._partner(first.topic, stamp, buffers)
                late = raw.timestamp_ns > first.timestamp_ns + tolerance_ns
                if partner is None and not late and len(pending) <= capacity:
                    break
                pending.pop(0)
                yield self._rgbd(first, stamp, partner, depth_unit_m, defer_alignment)
        for first, stamp in pending:
            yield self._rgbd(first, stamp, self._partner(first.topic, stamp, buffers),
                             depth_unit_m, defer_alignment)

    def _partner(self, colour: str, stamp: int, buffers: dict) -> tuple | None:
        """``(depth CDR or None, info CDR or None, depth camera's info CDR or None)`` once
        every partner of the colour image is there (the depth camera's CameraInfo: that of
        the depth image's stamp, unregistered depth only); ``None`` while one is missing.
        ``(None, None)``: the camera has no depth."""
        if ("depth", colour) not in buffers:
            return (None, None)
        depth = buffers[("depth", colour)].match(stamp)
        info = buffers[("info", colour)].match(stamp) if ("info", colour) in buffers \
            else (0, None)
        if depth is None or info is None:
            return None
        if ("depth_info", colour) not in buffers:
            return depth[1], info[1], None
        depth_info = buffers[("depth_info", colour)].match(depth[0])
        return None if depth_info is None else (depth[1], info[1], depth_info[1])

    def _rgbd(self, raw: RawMessage, stamp: int, partner: tuple | None,
              depth_unit_m: float = MILLIMETRE, defer_alignment: bool = False) -> RGBDFrame:
        from vl_distill_ros.perception.compressed_codec import (decode_depth_message,
                                                                is_rectified_topic)
        from vl_distill_ros.perception.camera_model import DepthError
        from vl_distill_ros.perception.image_codec import ImageDecodeError

        img = self._decode(raw)
        if raw.topic not in self.depth_topics:
            return RGBDFrame(*img)
        if partner is None:
            return RGBDFrame(*img, depth_note="no depth image within the tolerance")
        depth_cdr, info_cdr, depth_info_cdr = partner
        if info_cdr is None:
            return RGBDFrame(*img, depth_note=f"no CameraInfo for {raw.topic}")
        store = typestore()
        try:
            dmsg = store.deserialize_cdr(depth_cdr, self.topics[self.depth_topics[raw.topic]])
            depth = decode_depth_message(dmsg, unit_m=depth_unit_m)
            info_msg = store.deserialize_cdr(info_cdr, CAMERA_INFO_TYPE)
            rectified = is_rectified_topic(raw.topic)   # P, and no lens left (REP 104)
            info = camera_info_k(info_msg, rectified,
                                 (img.image.shape[1], img.image.shape[0]))
            lens = ("", ()) if rectified else (str(info_msg.distortion_model),
                                               tuple(float(v) for v in info_msg.d))
            if depth_info_cdr is not None:
                depth = self._aligned(raw.topic, depth, info_msg, rectified,
                                      store.deserialize_cdr(depth_info_cdr, CAMERA_INFO_TYPE),
                                      img.image.shape, defer_alignment)
        except ImageDecodeError as exc:
            return RGBDFrame(*img, depth_note=f"bad depth image: {exc}")
        except DepthError as exc:
            return RGBDFrame(*img, depth_note=f"cannot align the depth: {exc}")
        except Exception as exc:  # noqa: BLE001 - any CDR failure is a corrupt message
            return RGBDFrame(*img, depth_note=f"unreadable depth or CameraInfo: {exc}")
        return RGBDFrame(*img, depth=depth, camera_info=info, distortion=lens)

    def _aligned(self, colour: str, depth: np.ndarray, info_msg: Any, rectified: bool,
                 depth_info_msg: Any, shape: tuple[int, ...], defer: bool = False) -> Any:
        """``depth`` of the colour topic's separate depth camera, aligned to the colour
        camera (:func:`~vl_distill_ros.perception.depth_alignment.align_depth`), or, with
        ``defer``, as an :class:`~vl_distill_ros.perception.depth_alignment.UnalignedDepth`
        for the pipeline to align (as the node does).

        Raises:
            DepthError: unusable CameraInfo, or a depth image not of its CameraInfo's size.
        """
        from vl_distill_ros.perception.depth_alignment import (UnalignedDepth,
                                                               transform_from_pose)
        from vl_distill_ros.perception.camera_model import CameraIntrinsics, DepthError

        camera = CameraIntrinsics.from_camera_info(info_msg, rectified, (shape[1], shape[0]))
        depth_camera = CameraIntrinsics.from_camera_info(
            depth_info_msg, image_size=(depth.shape[1], depth.shape[0]))
        if depth.shape != (depth_camera.height, depth_camera.width):
            raise DepthError(f"the depth image is {depth.shape[1]}x{depth.shape[0]} but its "
                             f"CameraInfo is for {depth_camera.width}x{depth_camera.height}")
        unaligned = UnalignedDepth(depth, depth_camera,
                                   *transform_from_pose(self.depth_alignment[colour].pose))
        return unaligned if defer else unaligned.aligned(camera)

    def _decode(self, raw: RawMessage) -> ImageMessage:
        msg, image = decode_image_cdr(
            raw.data, f"{self.path}: image on {raw.topic} at {raw.timestamp_ns} ns", raw.msgtype)
        return ImageMessage(raw.topic, stamp_to_ns(msg.header.stamp.sec,
                                                   msg.header.stamp.nanosec),
                            raw.timestamp_ns, msg.header.frame_id,
                            getattr(msg, "encoding", None) or getattr(msg, "format", ""), image)


_COLOUR_SEGMENTS = ("color", "colour", "rgb")


def is_depth_topic(topic: str) -> bool:
    """Whether ``topic`` is a depth image by name: a segment of it, image_transport's suffix
    aside, contains ``depth`` (``/camera/depth/image_raw``,
    ``/camera/aligned_depth_to_color/image_raw``, ``/camera/depth_registered/image_rect``,
    ``/camera/depth/image_raw/compressedDepth``)."""
    return any("depth" in seg.lower() for seg in base_topic(topic).strip("/").split("/"))


def _transport_copy(topic: str, topics: dict[str, str]) -> bool:
    """Whether ``topic`` is an image_transport topic to leave out: a ``compressed`` or
    ``compressedDepth`` copy of a raw ``Image`` topic the bag also holds (the raw one is
    read), or a ``compressedDepth`` topic of a colour stream (image_transport advertises one
    for every image, but it only carries depth)."""
    transport, base = topic_transport(topic), base_topic(topic)
    if transport == "raw":
        return False
    return topics.get(base) == IMAGE_TYPE or (transport == "compressedDepth"
                                              and not is_depth_topic(base))


def _camera_namespace(topic: str) -> str:
    """The camera a topic belongs to: the segments before the first ``*depth*`` segment, or
    the parent namespace without a trailing ``color``/``rgb`` segment (image_transport's
    suffix aside)."""
    segs = base_topic(topic).strip("/").split("/")
    for i, seg in enumerate(segs):
        if "depth" in seg.lower():
            return "/" + "/".join(segs[:i])
    segs = segs[:-1]
    if segs and segs[-1].lower() in _COLOUR_SEGMENTS:
        segs = segs[:-1]
    return "/" + "/".join(segs)


def pair_camera_topics(topics: dict[str, str], depth: dict[str, str] | None = None,
                       camera_info: dict[str, str] | None = None
                       ) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Split a bag's topics (``{topic: msgtype}``) into colour cameras and their depth and
    CameraInfo partners.

    Image topics are ``Image`` or ``CompressedImage`` topics (image_transport's
    ``.../compressed`` and ``.../compressedDepth``); a compressed copy of a raw topic the bag
    also holds is left out, as is the ``compressedDepth`` topic of a colour stream.
    By convention (the layout of RealSense, Azure Kinect and OpenNI drivers and of
    ``make-bag --depth``) an image topic is depth when :func:`is_depth_topic`; it belongs to
    the colour topic of the same camera namespace (``/camera/depth/image_raw`` and
    ``/camera/aligned_depth_to_color/image_raw`` to ``/camera/image_raw`` or
    ``/camera/color/image_raw``; when a camera has several, the one whose name says it is
    registered -- ``aligned``, ``registered``, ``depth_to_rgb`` -- before the raw depth,
    which has the depth camera's size), as does a non-depth ``CameraInfo`` topic
    (``/camera/camera_info``, ``/camera/color/camera_info``). ``depth`` and ``camera_info``
    (``{colour topic: topic}``) override the convention; their topics are never colour.

    Returns:
        ``(colour topics sorted, {colour: depth topic}, {colour: camera_info topic})``.

    Raises:
        BagError: an override names a missing topic or one of the wrong type.
    """
    depth, camera_info = dict(depth or {}), dict(camera_info or {})
    for table, kind in ((depth, IMAGE_TYPES), (camera_info, (CAMERA_INFO_TYPE,))):
        for colour, other in table.items():
            for t, want in ((colour, IMAGE_TYPES), (other, kind)):
                if topics.get(t) not in want:
                    raise BagError(f"topic {t} is not a {' or '.join(want)} topic of the bag "
                                   f"(its topics: {sorted(topics)})")
    chosen = set(depth.values()) | set(camera_info.values())
    images = [t for t, ty in topics.items() if ty in IMAGE_TYPES and t not in chosen
              and (t in depth or not _transport_copy(t, topics))]
    colour = sorted(t for t in images if not is_depth_topic(t))
    by_ns: dict[str, list[str]] = {}
    for t in colour:
        by_ns.setdefault(_camera_namespace(t), []).append(t)
    # a driver's registered depth before its raw depth (another size) of the same camera
    conventional = [(t, depth) for t in sorted((t for t in images if is_depth_topic(t)),
                                               key=lambda t: (not is_registered_depth_topic(t), t))]
    conventional += [(t, camera_info) for t, ty in topics.items()
                     if ty == CAMERA_INFO_TYPE and not is_depth_topic(t) and t not in chosen]
    for t, table in conventional:
        owners = by_ns.get(_camera_namespace(t), [])
        if len(owners) == 1 and owners[0] not in table:
            table[owners[0]] = t
    return colour, depth, camera_info


def decode_image_cdr(data: bytes, where: str, msgtype: str = IMAGE_TYPE
                     ) -> tuple[Any, np.ndarray]:
    """Deserialise one CDR ``sensor_msgs/msg/Image`` (or ``CompressedImage``, ``msgtype``)
    and decode its pixels, as the offline replay does: ``(message, H x W x 3 uint8 RGB)``.

    Raises:
        BagError: starting with ``where``, when the CDR does not deserialise or the image
            cannot be decoded (bad encoding, step, size or data length).
    """
    from vl_distill_ros.perception.compressed_codec import decode_image_message
    from vl_distill_ros.perception.image_codec import ImageDecodeError

    if msgtype not in IMAGE_TYPES:
        raise BagError(f"{where}: {msgtype} is not an image message type")
    try:
        msg = typestore().deserialize_cdr(data, msgtype)
    except Exception as exc:  # noqa: BLE001 - any CDR failure is a corrupt message
        raise BagError(f"{where}: cannot deserialise the image: {exc}") from None
    try:
        image = decode_image_message(msg)
    except ImageDecodeError as exc:
        raise BagError(f"{where}: {exc}") from None
    return msg, image


def read_camera_bag(path: str | Path, ground_truth: str | Path | None = None,
                    ground_truth_topic: str = BagTopics.ground_truth,
                    depth_topics: dict[str, str] | None = None,
                    camera_info_topics: dict[str, str] | None = None,
                    depth_camera_info_topics: dict[str, str] | None = None) -> BagContents:
    """Open a camera bag: topics, message counts, image topics and ground truth, and how
    depth not registered to colour is aligned.

    Args:
        path: a rosbag2 bag folder (MCAP or sqlite3 storage; a bare ``.mcap``/``.db3``
            file also works).
        ground_truth: a JSON Lines sidecar file with the ground truth (format in the module
            docstring); when given it is used instead of the bag's ground-truth topic.
        ground_truth_topic: the ``std_msgs/msg/String`` topic holding ground-truth documents
            in the ``~/labels`` schema (read when present and no sidecar is given).
        depth_topics, camera_info_topics: ``{colour topic: topic}`` pairings that override
            the naming convention of :func:`pair_camera_topics`. Depth topics are never
            listed in :attr:`BagContents.image_topics`.
        depth_camera_info_topics: ``{colour topic: the depth camera's CameraInfo topic}``
            for depth not registered to colour, overriding the convention of
            :func:`~vl_distill_ros.bags.unregistered_depth.plan_depth_alignment` (the depth
            is then aligned with the bag's ``/tf_static``).

    Raises:
        BagError: missing path, not a bag, corrupt metadata or storage, no image topic, an
            unreadable ground-truth message or sidecar line.
    """
    path = Path(path).expanduser()
    reader = open_reader(path)
    try:
        topics = {c.topic: c.msgtype for c in reader.connections}
        counts: dict[str, int] = {}
        for c in reader.connections:
            counts[c.topic] = counts.get(c.topic, 0) + int(c.msgcount)
        storage = _storage_of(path)
        start, end = (reader.start_time, reader.end_time) if reader.message_count else (0, 0)
    finally:
        reader.close()
    image_topics, depth_of, info_of = pair_camera_topics(topics, depth_topics,
                                                         camera_info_topics)
    if not image_topics:
        listing = ", ".join(f"{t} ({ty})" for t, ty in sorted(topics.items())) or "none"
        raise BagError(f"{path} has no image topics (sensor_msgs/msg/Image or "
                       f"CompressedImage, depth aside); its topics: {listing}")
    contents = BagContents(path=path, storage=storage, topics=topics, message_counts=counts,
                           image_topics=image_topics, start_ns=int(start),
                           end_ns=int(max(end - 1, start)) if end else 0,
                           depth_topics=depth_of, camera_info_topics=info_of)
    contents.depth_alignment = plan_depth_alignment(path, topics, depth_of,
                                                    depth_camera_info_topics)
    if ground_truth is not None:
        contents.ground_truth = read_ground_truth_sidecar(ground_truth)
        contents.ground_truth_source = "sidecar"
    elif ground_truth_topic in topics:
        if topics[ground_truth_topic] != STRING_TYPE:
            raise BagError(f"{path}: ground-truth topic {ground_truth_topic} has type "
                           f"{topics[ground_truth_topic]}, expected {STRING_TYPE}")
        contents.ground_truth = _read_ground_truth_topic(path, ground_truth_topic)
        contents.ground_truth_source = "topic"
    return contents


def _read_ground_truth_topic(path: Path, topic: str
                             ) -> dict[tuple[str, int], list[GroundTruthObject]]:
    store = typestore()
    out: dict[tuple[str, int], list[GroundTruthObject]] = {}
    for raw in iter_raw_messages(path, [topic]):
        where = f"{path}: {topic} message at {raw.timestamp_ns} ns"
        try:
            text = store.deserialize_cdr(raw.data, STRING_TYPE).data
            doc = json.loads(text)
        except Exception as exc:  # noqa: BLE001 - CDR or JSON: either way unreadable
            raise BagError(f"{where}: not a JSON ground-truth document ({exc})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("header"), dict):
            raise BagError(f"{where}: expected a ~/labels-style document with 'header', "
                           "'camera' and 'objects'")
        camera = doc.get("camera")
        if not isinstance(camera, str):
            raise BagError(f"{where}: 'camera' must be the image topic, got {camera!r}")
        stamp = _parse_stamp(doc["header"].get("stamp"), where)
        out[(camera, stamp)] = _parse_objects(doc.get("objects"), where)
    return out


def _storage_of(path: Path) -> str:
    if path.is_file():
        return "mcap" if path.suffix == ".mcap" else "sqlite3"
    try:
        import yaml

        meta = yaml.safe_load((path / "metadata.yaml").read_text(encoding="utf-8"))
        return str(meta["rosbag2_bagfile_information"]["storage_identifier"])
    except Exception:  # noqa: BLE001 - informational only; the reader already accepted it
        return "unknown"
