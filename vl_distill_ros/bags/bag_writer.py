"""Writing camera bags (:func:`write_camera_bag`, ROS-free through ``rosbags``): colour and
depth images, CameraInfo, static transforms and the ``/ground_truth`` documents, in the
layout :mod:`.bag_io`'s module docstring describes, into MCAP or sqlite3 storage, written
to a temporary folder and moved into place.
"""
from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from vl_distill_ros.atomic_io import replace_dir
from vl_distill_ros.bags.bag_frames import (COMPRESSIONS, IMAGE_FORMATS, STORAGES, BagFrame,
                                            BagTopics, ground_truth_document, ns_to_stamp)
from vl_distill_ros.bags.raw_io import (CAMERA_INFO_TYPE, COMPRESSED_IMAGE_TYPE, IMAGE_TYPE,
                                        STRING_TYPE, BagError, typestore)
from vl_distill_ros.bags.unregistered_depth import TF_MESSAGE_TYPE

__all__ = ["write_camera_bag", "written_topics"]


def _image_msg(store: Any, image: np.ndarray, stamp_ns: int, frame_id: str,
               image_format: str = "raw", quality: int = 90) -> tuple[str, Any]:
    """``(message type, message)`` of a colour image: an rgb8 ``Image``, or a
    ``CompressedImage`` of ``image_format`` (see :data:`IMAGE_FORMATS`)."""
    from vl_distill_ros.perception.compressed_codec import encode_compressed_image
    from vl_distill_ros.perception.image_codec import encode_rgb8

    header = _header(store, stamp_ns, frame_id)
    try:
        if image_format != "raw":
            return _compressed_msg(store, header,
                                   *encode_compressed_image(image, image_format, quality))
        return _raw_msg(store, header, *encode_rgb8(image))
    except ValueError as exc:
        raise BagError(f"cannot write image: {exc}") from None


def _compressed_msg(store: Any, header: Any, fmt: str, payload: bytes) -> tuple[str, Any]:
    """``(message type, message)`` of a ``CompressedImage`` holding ``payload``."""
    return COMPRESSED_IMAGE_TYPE, store.types[COMPRESSED_IMAGE_TYPE](
        header=header, format=fmt, data=np.frombuffer(payload, dtype=np.uint8))


def _raw_msg(store: Any, header: Any, encoding: str, height: int, width: int, step: int,
             data: bytes) -> tuple[str, Any]:
    """``(message type, message)`` of an ``Image`` holding ``data``."""
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
            return _compressed_msg(store, header, *encode_compressed_depth(depth))
        return _raw_msg(store, header, *encode_depth_mm(depth))
    except ValueError as exc:
        raise BagError(f"cannot write depth: {exc}") from None


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
