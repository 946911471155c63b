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
for a replay publisher. The types are in :mod:`.bag_frames`, the writer in
:mod:`.bag_writer` and the sidecar files in :mod:`.ground_truth_sidecar`; this module
re-exports them. Every problem is a :class:`BagError` (a ``ValueError``) whose
message names the path and what is wrong.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from vl_distill_ros.bags.bag_frames import (COMPRESSIONS, IMAGE_FORMATS, STORAGES, BagFrame,
                                            BagTopics, GroundTruthObject, ImageMessage,
                                            RGBDFrame, camera_info_k, ground_truth_document,
                                            ns_to_stamp, stamp_to_ns)
from vl_distill_ros.bags.bag_writer import write_camera_bag, written_topics
from vl_distill_ros.bags.ground_truth_sidecar import (parse_objects, parse_stamp,
                                                      read_ground_truth_sidecar,
                                                      write_ground_truth_sidecar)
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
    "BagError", "UndecodableImage", "BagTopics", "GroundTruthObject", "BagFrame",
    "ImageMessage", "RawMessage",
    "BagContents", "write_camera_bag", "read_camera_bag", "iter_raw_messages",
    "read_ground_truth_sidecar", "write_ground_truth_sidecar", "ground_truth_document",
    "IMAGE_TYPE", "STRING_TYPE", "STORAGES", "COMPRESSIONS", "CAMERA_INFO_TYPE",
    "RGBDFrame", "is_depth_topic", "pair_camera_topics", "camera_info_k",
    "COMPRESSED_IMAGE_TYPE", "IMAGE_TYPES", "IMAGE_FORMATS", "written_topics",
    "is_registered_depth_topic", "depth_encoded_topics", "first_encodings", "typestore",
    "ns_to_stamp", "stamp_to_ns",
]


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
    #: Keys of :attr:`ground_truth` that more than one document gave (the last is kept):
    #: which of the frames of that camera and stamp each describes cannot be told.
    ground_truth_repeated: set[tuple[str, int]] = field(default_factory=set)
    #: First and last message time (ns); 0 for an empty bag.
    start_ns: int = 0
    end_ns: int = 0
    #: Registered depth topic of each colour topic that has one (see
    #: :func:`pair_camera_topics`).
    depth_topics: dict[str, str] = field(default_factory=dict)
    #: CameraInfo topic of each colour topic that has one.
    camera_info_topics: dict[str, str] = field(default_factory=dict)
    #: Depth topics paired with no colour topic (:func:`unpaired_depth_topics`): read by no
    #: one unless ``--depth-topic`` pairs them.
    unpaired_depth_topics: list[str] = field(default_factory=list)
    #: Colour topics by the naming convention whose first image has a depth encoding
    #: (``16UC1``, ``32FC1``; :func:`depth_encoded_topics`): a depth camera named without
    #: ``depth`` (depthai-ros's ``/oak/stereo/image_raw``), replayed as a grey camera unless
    #: ``--depth-topic`` pairs it or ``--image-topic`` leaves it out.
    depth_encoded_topics: list[str] = field(default_factory=list)
    #: Colour topics whose depth may come from a separate depth camera: how it is aligned
    #: (:func:`~vl_distill_ros.bags.unregistered_depth.plan_depth_alignment`).
    depth_alignment: dict[str, DepthAlignmentPlan] = field(default_factory=dict)

    def objects_for(self, topic: str, stamp_ns: int) -> list[GroundTruthObject] | None:
        """Ground-truth objects of the image on ``topic`` stamped ``stamp_ns`` (``None`` if
        that image has no ground truth)."""
        return self.ground_truth.get((topic, int(stamp_ns)))

    def images(self, topics: Sequence[str] | None = None,
               on_undecodable: OnUndecodable | None = None) -> Iterator[ImageMessage]:
        """Decoded images of ``topics`` (default: every image topic) in bag-time order.

        Raises :class:`BagError` on a storage read error or a message that does not
        deserialise, and :class:`UndecodableImage` on an image that cannot be decoded (the
        message names the topic and time) unless ``on_undecodable`` is given: then that
        image is handed to it and skipped.
        """
        wanted = list(self.image_topics if topics is None else topics)
        bad = [t for t in wanted if t not in self.image_topics]
        if bad:
            raise BagError(f"{self.path}: {bad} are not image topics; image topics: "
                           f"{self.image_topics}")
        for raw in iter_raw_messages(self.path, wanted):
            img = _or_skip(lambda: self._decode(raw), on_undecodable)
            if img is not None:
                yield img

    def rgbd_frames(self, topics: Sequence[str] | None = None, tolerance_ns: int = 0,
                    capacity: int = 30, depth_unit_m: float = MILLIMETRE,
                    defer_alignment: bool = False,
                    on_undecodable: OnUndecodable | None = None) -> Iterator[RGBDFrame]:
        """Decoded colour images of ``topics`` (default: all) in bag-time order, each with its
        depth partner: the depth image of the same stamp, or the nearest within
        ``tolerance_ns`` (:class:`~vl_distill_ros.perception.stamp_sync.StampBuffer`,
        ``capacity`` messages per stream), and the CameraInfo of that stamp, else the one
        read last (as the node takes the latest: a CameraInfo recorded once, or stamped
        otherwise, serves every frame). A colour image waits for its partner until a
        message ``tolerance_ns`` later in bag time was read (at most ``capacity`` images
        wait); then it comes without depth and :attr:`RGBDFrame.depth_note` says why. An
        undecodable depth image or a camera without CameraInfo gives a note, not an error.
        16-bit depth is read in units of ``depth_unit_m`` metres (millimetres by default; the
        node's ``depth_scale``). Depth of a separate depth camera (:attr:`depth_alignment`) is
        aligned to the colour image, or with ``defer_alignment`` comes as an
        :class:`~vl_distill_ros.perception.depth_alignment.UnalignedDepth` that the pipeline
        aligns in its depth thread, as the node hands it over. A colour image that cannot be
        decoded raises :class:`UndecodableImage`, or with ``on_undecodable`` is handed to it
        and skipped (as :meth:`images`).

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
                partner = self._partner(first.topic, stamp, buffers, own_info=True)
                late = raw.timestamp_ns > first.timestamp_ns + tolerance_ns
                if isinstance(partner, str) and not late and len(pending) <= capacity:
                    break
                if isinstance(partner, str):   # waited long enough: the latest CameraInfo
                    partner = self._partner(first.topic, stamp, buffers)
                pending.pop(0)
                frame = _or_skip(lambda: self._rgbd(first, stamp, partner, depth_unit_m,
                                                    defer_alignment), on_undecodable)
                if frame is not None:
                    yield frame
        for first, stamp in pending:
            partner = self._partner(first.topic, stamp, buffers)
            frame = _or_skip(lambda: self._rgbd(first, stamp, partner, depth_unit_m,
                                                defer_alignment), on_undecodable)
            if frame is not None:
                yield frame

    def _partner(self, colour: str, stamp: int, buffers: dict,
                 own_info: bool = False) -> tuple | str:
        """``(depth CDR or None, info CDR or None, depth camera's info CDR or None)`` once
        every partner of the colour image is there (each CameraInfo: that of the stamp,
        else the one read last; the depth camera's, unregistered depth only); while one is
        missing, what is missing. ``(None, None)``: the camera has no depth. ``own_info``:
        the CameraInfo of the frame's stamp is missing too while none was read (a frame
        waits for it within the tolerance: one recorded just after its frame, of a camera
        whose intrinsics change, is the frame's, not the previous frame's)."""
        if ("depth", colour) not in buffers:
            return (None, None)
        depth = buffers[("depth", colour)].match(stamp)
        if depth is None:
            return "no depth image within the tolerance"
        info = (0, None)
        if ("info", colour) in buffers:
            info = buffers[("info", colour)].match(stamp)
            if info is None and own_info:
                return (f"no CameraInfo of the frame's stamp on "
                        f"{self.camera_info_topics[colour]} yet")
            info = info or buffers[("info", colour)].latest()
            if info is None:
                return f"no CameraInfo received on {self.camera_info_topics[colour]} yet"
        if ("depth_info", colour) not in buffers:
            return depth[1], info[1], None
        depth_info = (buffers[("depth_info", colour)].match(depth[0])
                      or buffers[("depth_info", colour)].latest())
        if depth_info is None:
            topic = self.depth_alignment[colour].depth_camera_info_topic
            return f"no depth CameraInfo received on {topic} yet"
        return depth[1], info[1], depth_info[1]

    def _rgbd(self, raw: RawMessage, stamp: int, partner: tuple | str,
              depth_unit_m: float = MILLIMETRE, defer_alignment: bool = False) -> RGBDFrame:
        from vl_distill_ros.perception.compressed_codec import (decode_depth_message,
                                                                is_rectified_topic)
        from vl_distill_ros.perception.camera_model import DepthError
        from vl_distill_ros.perception.image_codec import ImageDecodeError

        img = self._decode(raw)
        if raw.topic not in self.depth_topics:
            return RGBDFrame(*img)
        if isinstance(partner, str):
            return RGBDFrame(*img, depth_note=partner)
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
        from vl_distill_ros.perception.compressed_codec import is_rectified_topic

        camera = CameraIntrinsics.from_camera_info(info_msg, rectified, (shape[1], shape[0]))
        depth_camera = CameraIntrinsics.from_camera_info(       # image_rect: P, no lens
            depth_info_msg, is_rectified_topic(self.depth_topics[colour]),
            image_size=(depth.shape[1], depth.shape[0]))
        if depth.shape != (depth_camera.height, depth_camera.width):
            raise DepthError(f"the depth image is {depth.shape[1]}x{depth.shape[0]} but its "
                             f"CameraInfo is for {depth_camera.width}x{depth_camera.height}")
        unaligned = UnalignedDepth(depth, depth_camera,
                                   *transform_from_pose(self.depth_alignment[colour].pose))
        return unaligned if defer else unaligned.aligned(camera)

    def _decode(self, raw: RawMessage) -> ImageMessage:
        try:
            msg, image = decode_image_cdr(
                raw.data, f"{self.path}: image on {raw.topic} at {raw.timestamp_ns} ns",
                raw.msgtype)
        except UndecodableImage as exc:
            raise UndecodableImage(str(exc), raw.topic, exc.stamp_ns) from None
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


def _transport_copy(topic: str, topics: dict[str, str],
                    counts: dict[str, int] | None = None) -> bool:
    """Whether ``topic`` is an image_transport topic to leave out: a ``compressed`` or
    ``compressedDepth`` copy of a raw ``Image`` topic the bag also holds with messages (the
    raw one is read), a ``compressedDepth`` topic of a colour stream (image_transport
    advertises one for every image, but it only carries depth), a ``CompressedImage`` of
    another transport (``<image topic>/zstd``, which ``ros2 bag record -a`` records beside
    the raw or compressed topic; read where it is the only one, as the raw image it
    carries), or a raw topic without messages (``counts``; a topic not in it counts as
    having some) beside its compressed or zstd topic that has them (recorded where only
    that stream was published)."""
    counts = counts or {}

    def has_messages(t: str) -> bool:
        return counts.get(t, 1) > 0

    def gives_way_to(t: str) -> bool:
        """``topic`` is left for ``t`` unless only ``topic`` has messages (counts of 0 on
        both, a stale metadata.yaml, keep one of them: the one read before)."""
        return has_messages(t) or not has_messages(topic)

    transport, base = topic_transport(topic), base_topic(topic)
    if transport == "raw":
        parent = topic.rstrip("/").rsplit("/", 1)[0]
        if topics.get(topic) == COMPRESSED_IMAGE_TYPE and any(
                topics.get(t) in IMAGE_TYPES and gives_way_to(t)
                for t in (parent, parent + "/compressed", parent + "/compressedDepth")):
            return True
        return not has_messages(topic) and any(
            topics.get(t) == COMPRESSED_IMAGE_TYPE and has_messages(t)
            for t in (topic + "/compressed", topic + "/compressedDepth", topic + "/zstd"))
    if transport == "zstd" and any(     # the compressed stream before the zstd copy
            topics.get(t) == COMPRESSED_IMAGE_TYPE and gives_way_to(t)
            for t in (base + "/compressed", base + "/compressedDepth")):
        return True
    return (topics.get(base) == IMAGE_TYPE and gives_way_to(base)) or (
        transport == "compressedDepth" and not is_depth_topic(base))


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
                       camera_info: dict[str, str] | None = None,
                       counts: dict[str, int] | None = None,
                       cameras: Sequence[str] | None = None
                       ) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Split a bag's topics (``{topic: msgtype}``) into colour cameras and their depth and
    CameraInfo partners.

    Image topics are ``Image`` or ``CompressedImage`` topics (image_transport's
    ``.../compressed`` and ``.../compressedDepth``); a compressed copy of a raw topic the bag
    also holds is left out, as is the ``compressedDepth`` topic of a colour stream, another
    transport's copy (``.../zstd``) and, by ``counts`` (``{topic: messages}``), a raw topic
    without messages beside a compressed one with them.
    By convention (the layout of RealSense, Azure Kinect and OpenNI drivers and of
    ``make-bag --depth``) an image topic is depth when :func:`is_depth_topic`; it belongs to
    the colour topic of the same camera namespace (``/camera/depth/image_raw`` and
    ``/camera/aligned_depth_to_color/image_raw`` to ``/camera/image_raw`` or
    ``/camera/color/image_raw``; when a camera has several, the one whose name says it is
    registered -- ``aligned``, ``registered``, ``depth_to_rgb`` -- before the raw depth,
    which has the depth camera's size), as does a non-depth ``CameraInfo`` topic
    (``/camera/camera_info``, ``/camera/color/camera_info``). ``depth`` and ``camera_info``
    (``{colour topic: topic}``) override the convention; their topics are never colour.
    ``cameras`` (non-empty) names the colour topics instead of the convention (a bag with
    other image topics: infrared, confidence maps).

    Returns:
        ``(colour topics sorted, {colour: depth topic}, {colour: camera_info topic})``.

    Raises:
        BagError: an override or a camera names a missing topic or one of the wrong type.
    """
    depth, camera_info = dict(depth or {}), dict(camera_info or {})
    for t in cameras or ():
        if topics.get(t) not in IMAGE_TYPES:
            raise BagError(f"--image-topic {t} is not a {' or '.join(IMAGE_TYPES)} topic of "
                           f"the bag (its topics: {sorted(topics)})")
    for table, kind in ((depth, IMAGE_TYPES), (camera_info, (CAMERA_INFO_TYPE,))):
        for colour, other in table.items():
            for t, want in ((colour, IMAGE_TYPES), (other, kind)):
                if topics.get(t) not in want:
                    raise BagError(f"topic {t} is not a {' or '.join(want)} topic of the bag "
                                   f"(its topics: {sorted(topics)})")
    chosen = set(depth.values()) | set(camera_info.values())
    images = [t for t, ty in topics.items() if ty in IMAGE_TYPES and t not in chosen
              and (t in depth or not _transport_copy(t, topics, counts))]
    if set(cameras or ()) & chosen:
        raise BagError(f"--image-topic {sorted(set(cameras or ()) & chosen)} also named as "
                       "depth or CameraInfo")
    stray = sorted(c for c in (*depth, *camera_info) if cameras and c not in cameras)
    if stray:
        raise BagError(f"--depth-topic / --camera-info-topic pair {stray}, which --image-topic "
                       f"does not name ({sorted(cameras or ())})")
    colour = sorted(set(cameras) if cameras else
                    (t for t in images if not is_depth_topic(t)))
    by_ns: dict[str, list[str]] = {}
    for t in colour:
        by_ns.setdefault(_camera_namespace(t), []).append(t)
    # a driver's registered depth before its raw depth (another size) of the same camera
    conventional = [(t, depth) for t in sorted(
        (t for t in images if is_depth_topic(t) and t not in colour),
        key=lambda t: (not is_registered_depth_topic(t), t))]
    conventional += [(t, camera_info) for t, ty in topics.items()
                     if ty == CAMERA_INFO_TYPE and not is_depth_topic(t) and t not in chosen]
    for t, table in conventional:
        owners = by_ns.get(_camera_namespace(t), [])
        if len(owners) == 1 and owners[0] not in table:
            table[owners[0]] = t
    return colour, depth, camera_info


def unpaired_depth_topics(topics: dict[str, str], depth_of: dict[str, str],
                          counts: dict[str, int] | None = None) -> list[str]:
    """The depth image topics of ``topics`` that :func:`pair_camera_topics` paired with no
    colour topic although no colour topic of their camera has depth (its namespace holds
    no colour topic, or several: raw and rectified), sorted. A second depth topic of a
    camera that has one (its raw depth beside the registered) is not listed."""
    with_depth = {_camera_namespace(c) for c in depth_of}
    return sorted(t for t, ty in topics.items() if ty in IMAGE_TYPES and is_depth_topic(t)
                  and t not in depth_of.values() and not _transport_copy(t, topics, counts)
                  and _camera_namespace(t) not in with_depth)


class UndecodableImage(BagError):
    """An image message of a bag's camera topic (:attr:`topic`) that deserialises but whose
    image cannot be decoded: a bad encoding, step or data length, a broken JPEG, or no
    colour image at all (a confidence map's 32FC1). The node drops such a frame; a message
    that does not deserialise is a corrupt bag (a plain :class:`BagError`). :attr:`stamp_ns`:
    its header stamp."""

    def __init__(self, message: str, topic: str, stamp_ns: int) -> None:
        super().__init__(message)
        self.topic = topic
        self.stamp_ns = stamp_ns


#: What :meth:`BagContents.images` and :meth:`BagContents.rgbd_frames` call with an image
#: they cannot decode, instead of raising (the frame is skipped).
OnUndecodable = Callable[[UndecodableImage], None]


def _or_skip(decode: Callable[[], Any], on_undecodable: OnUndecodable | None) -> Any:
    """``decode()``, or None for an undecodable image handed to ``on_undecodable`` (raised
    without one)."""
    try:
        return decode()
    except UndecodableImage as exc:
        if on_undecodable is None:
            raise
        on_undecodable(exc)
        return None


def decode_image_cdr(data: bytes, where: str, msgtype: str = IMAGE_TYPE
                     ) -> tuple[Any, np.ndarray]:
    """Deserialise one CDR ``sensor_msgs/msg/Image`` (or ``CompressedImage``, ``msgtype``)
    and decode its pixels, as the offline replay does: ``(message, H x W x 3 uint8 RGB)``.

    Raises:
        BagError: starting with ``where``, when the CDR does not deserialise (a corrupt
            message), and as :class:`UndecodableImage` (with the header stamp, no topic)
            when the image cannot be decoded (bad encoding, step, size or data length).
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
        stamp = stamp_to_ns(msg.header.stamp.sec, msg.header.stamp.nanosec)
        raise UndecodableImage(f"{where}: {exc}", "", stamp) from None
    return msg, image


def _topic_types(path: Path, connections: Sequence[Any]) -> dict[str, str]:
    """``{topic: message type}`` of a bag's connections (a topic of two types this reader
    never reads, ``/rosout`` or a robot's own, keeps its first).

    Raises:
        BagError: a topic recorded with two message types one of which this reader reads
            (an image, CameraInfo, ground-truth String or TFMessage: only one type would be
            read, the other's messages deserialised as the wrong type or silently dropped).
    """
    read = (*IMAGE_TYPES, CAMERA_INFO_TYPE, STRING_TYPE, TF_MESSAGE_TYPE)
    topics: dict[str, str] = {}
    for c in connections:
        first = topics.setdefault(c.topic, c.msgtype)
        if first != c.msgtype and (first in read or c.msgtype in read):
            raise BagError(f"{path}: topic {c.topic} was recorded with two message types "
                           f"({first} and {c.msgtype}); this reader takes one type per topic")
    return topics


def read_camera_bag(path: str | Path, ground_truth: str | Path | None = None,
                    ground_truth_topic: str = BagTopics.ground_truth,
                    depth_topics: dict[str, str] | None = None,
                    camera_info_topics: dict[str, str] | None = None,
                    depth_camera_info_topics: dict[str, str] | None = None,
                    cameras: Sequence[str] | None = None) -> BagContents:
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
        cameras: the colour topics to read (``--image-topic``); default: every image topic
            that is not depth by the convention of :func:`pair_camera_topics`.

    Raises:
        BagError: missing path, not a bag, corrupt metadata or storage, no image topic, an
            unreadable ground-truth message or sidecar line.
    """
    path = Path(path).expanduser()
    reader = open_reader(path)
    try:
        topics = _topic_types(path, reader.connections)
        counts: dict[str, int] = {}
        for c in reader.connections:
            counts[c.topic] = counts.get(c.topic, 0) + int(c.msgcount)
        storage = _storage_of(path)
        start, end = (reader.start_time, reader.end_time) if reader.message_count else (0, 0)
    finally:
        reader.close()
    image_topics, depth_of, info_of = pair_camera_topics(topics, depth_topics,
                                                         camera_info_topics, counts, cameras)
    if not image_topics:
        listing = ", ".join(f"{t} ({ty})" for t, ty in sorted(topics.items())) or "none"
        raise BagError(f"{path} has no image topics (sensor_msgs/msg/Image or "
                       f"CompressedImage, depth aside); its topics: {listing}")
    contents = BagContents(path=path, storage=storage, topics=topics, message_counts=counts,
                           image_topics=image_topics, start_ns=int(start),
                           end_ns=int(max(end - 1, start)) if end else 0,
                           depth_topics=depth_of, camera_info_topics=info_of,
                           unpaired_depth_topics=unpaired_depth_topics(topics, depth_of,
                                                                       counts))
    contents.depth_alignment = plan_depth_alignment(path, topics, depth_of,
                                                    depth_camera_info_topics)
    if not cameras:     # the cameras by the naming convention
        contents.depth_encoded_topics = depth_encoded_topics(path, topics, image_topics, counts)
    if ground_truth is not None:
        contents.ground_truth = read_ground_truth_sidecar(ground_truth,
                                                          contents.ground_truth_repeated)
        contents.ground_truth_source = "sidecar"
    elif ground_truth_topic in topics:
        if topics[ground_truth_topic] != STRING_TYPE:
            raise BagError(f"{path}: ground-truth topic {ground_truth_topic} has type "
                           f"{topics[ground_truth_topic]}, expected {STRING_TYPE}")
        contents.ground_truth = _read_ground_truth_topic(path, ground_truth_topic,
                                                         contents.ground_truth_repeated)
        contents.ground_truth_source = "topic"
    _name_transport_topics(contents)
    return contents


def first_encodings(path: Path, topics: Sequence[str]) -> dict[str, str]:
    """``{topic: encoding}`` of the first message of each of ``topics`` (an ``Image``'s
    encoding, a ``CompressedImage``'s format), reading no further than that. A message
    that does not deserialise, or storage that cannot be read, ends the look quietly (the
    topics not reached are left out): reading the frames reports it."""
    from contextlib import closing

    wanted, found = set(topics), {}
    if not wanted:
        return found
    try:
        with closing(iter_raw_messages(path, sorted(wanted))) as messages:
            for raw in messages:
                if raw.topic in wanted:
                    wanted.discard(raw.topic)
                    msg = typestore().deserialize_cdr(raw.data, raw.msgtype)
                    found[raw.topic] = str(getattr(msg, "encoding", None)
                                           or getattr(msg, "format", ""))
                if not wanted:
                    break
    except Exception:  # noqa: BLE001 - a corrupt bag is reported when its frames are read
        pass
    return found


def depth_encoded_topics(path: Path, topics: dict[str, str], image_topics: Sequence[str],
                         counts: dict[str, int]) -> list[str]:
    """The raw ``Image`` topics of ``image_topics`` whose first message has a depth encoding
    (``16UC1`` or ``32FC1``: what depth drivers publish; a grey camera's is ``mono16``;
    :func:`first_encodings`)."""
    wanted = [t for t in image_topics if topics.get(t) == IMAGE_TYPE and counts.get(t, 0)]
    return sorted(t for t, e in first_encodings(path, wanted).items()
                  if e in ("16UC1", "32FC1"))


def _name_transport_topics(contents: BagContents) -> None:
    """Ground truth naming a camera by its base topic (``/camera/image_raw``) where the bag
    holds only one transport of it (``/camera/image_raw/compressed``): keyed by that
    transport's topic, the camera the frames come from."""
    bases: dict[str, list[str]] = {}
    for t in contents.image_topics:
        if base_topic(t) != t and base_topic(t) not in contents.image_topics:
            bases.setdefault(base_topic(t), []).append(t)
    rename = {b: ts[0] for b, ts in bases.items() if len(ts) == 1}
    if rename:
        contents.ground_truth = {(rename.get(c, c), s): v
                                 for (c, s), v in contents.ground_truth.items()}
        contents.ground_truth_repeated = {(rename.get(c, c), s)
                                          for c, s in contents.ground_truth_repeated}


def _read_ground_truth_topic(path: Path, topic: str, repeated: set | None = None
                             ) -> dict[tuple[str, int], list[GroundTruthObject]]:
    """The ground-truth documents of ``topic``: ``{(camera, stamp ns): objects}`` (a camera
    written without its leading ``/`` gets it, as topics are named); the keys of documents
    that came more than once are added to ``repeated``."""
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
        stamp = parse_stamp(doc["header"].get("stamp"), where)
        key = (camera if camera.startswith("/") else "/" + camera, stamp)
        if key in out and repeated is not None:
            repeated.add(key)
        out[key] = parse_objects(doc.get("objects"), where)
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
