"""Bags whose depth is not registered to the colour camera: how each camera's depth is
aligned (ROS-free: rosbags and numpy).

A RealSense recorded without ``align_depth.enable`` (the driver's default) writes its depth
in the depth camera's own image (``/camera/camera/depth/image_rect_raw``), with that camera's
CameraInfo beside it (``.../depth/camera_info``), and the two optical frames on
``/tf_static``. :func:`plan_depth_alignment` (which
:func:`~vl_distill_ros.bags.bag_io.read_camera_bag` runs) finds, per colour topic, the depth
camera's CameraInfo (the ``camera_info`` topic next to the depth image, or an override), reads the
frame ids of the first colour and depth images and, when they differ, chains the bag's
static transforms between them (:class:`~vl_distill_ros.perception.static_transforms
.StaticTransforms`). The bag reader then aligns every depth image to its colour image
(:func:`~vl_distill_ros.perception.depth_alignment.align_depth`), as the node does with
``depth_camera_info_topics`` and ``depth_to_colour_poses``.

Depth whose topic name says it is registered (``aligned_depth_to_color``,
``depth_registered``, ``depth_to_rgb``), depth in the colour image's frame, and depth without
a CameraInfo of its own are read as registered, as before. Depth in another frame that the
bag's static transforms do not link to the colour frame is read as registered too, with a
note saying so.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from vl_distill_ros.bags.raw_io import (CAMERA_INFO_TYPE, BagError, header_frame_id,
                                        iter_raw_messages, typestore)
from vl_distill_ros.perception.compressed_codec import base_topic
from vl_distill_ros.perception.depth_alignment import transform_from_pose
from vl_distill_ros.perception.camera_model import DepthError
from vl_distill_ros.perception.static_transforms import (StaticTransforms, TransformError,
                                                         frame_name)

__all__ = ["DepthAlignmentPlan", "TF_MESSAGE_TYPE", "plan_depth_alignment",
           "read_static_transforms", "depth_camera_info_topic", "is_registered_depth_topic"]

#: Message type of ``/tf_static``.
TF_MESSAGE_TYPE = "tf2_msgs/msg/TFMessage"
#: Most ``/tf_static`` messages read from one bag (a driver latches one or a few).
MAX_TF_MESSAGES = 1000


@dataclass(frozen=True)
class DepthAlignmentPlan:
    """How one colour camera's depth is aligned."""

    #: The depth camera's CameraInfo topic.
    depth_camera_info_topic: str
    #: The depth camera's optical frame in the colour camera's, ``[x, y, z, qx, qy, qz, qw]``
    #: (what ``tf2_echo COLOUR DEPTH`` prints); ``None``: read as registered (see ``note``).
    pose: tuple[float, ...] | None
    depth_frame: str
    colour_frame: str
    #: Where the pose came from, or why the depth is read as registered.
    note: str = ""


#: Name parts of depth that drivers registered to the colour camera (RealSense
#: ``aligned_depth_to_color``, OpenNI ``depth_registered``, Azure Kinect ``depth_to_rgb``).
_REGISTERED_PARTS = ("aligned", "registered", "depth_to_rgb", "depth_to_color")


def is_registered_depth_topic(topic: str) -> bool:
    """Whether a depth topic's name says it is registered to the colour camera."""
    return any(part in seg.lower() for seg in base_topic(topic).strip("/").split("/")
               for part in _REGISTERED_PARTS)


def depth_camera_info_topic(depth_topic: str, topics: Mapping[str, str]) -> str | None:
    """The CameraInfo topic next to a depth image topic (image_transport's pairing:
    ``/camera/depth/image_rect_raw`` -> ``/camera/depth/camera_info``), if the bag has it."""
    parent = base_topic(depth_topic).rstrip("/").rpartition("/")[0]
    candidate = f"{parent}/camera_info"
    return candidate if topics.get(candidate) == CAMERA_INFO_TYPE else None


def _first_frame_ids(path: Path, topics: Sequence[str]) -> dict[str, str]:
    """The frame id of each topic's first message (topics without messages are absent)."""
    out: dict[str, str] = {}
    messages = iter_raw_messages(path, list(topics))
    try:
        for raw in messages:
            if raw.topic not in out:
                frame = header_frame_id(raw.data)
                out[raw.topic] = frame if frame is not None else ""
            if len(out) == len(set(topics)):
                break
    finally:
        messages.close()
    return out


def read_static_transforms(path: Path, topics: Mapping[str, str]) -> StaticTransforms:
    """Every transform on the bag's ``tf_static`` topics (``/tf_static``, or a robot's
    namespaced ``/<ns>/tf_static``), as a
    :class:`~vl_distill_ros.perception.static_transforms.StaticTransforms`; at most
    :data:`MAX_TF_MESSAGES` messages. An unreadable message is skipped."""
    tree = StaticTransforms()
    wanted = [t for t, ty in topics.items()
              if ty == TF_MESSAGE_TYPE and t.rstrip("/").rpartition("/")[2] == "tf_static"]
    if not wanted:
        return tree
    store = typestore()
    messages = iter_raw_messages(path, wanted)
    try:
        for i, raw in enumerate(messages):
            if i >= MAX_TF_MESSAGES:
                break
            try:
                tree.add_message(store.deserialize_cdr(raw.data, TF_MESSAGE_TYPE))
            except Exception:  # noqa: BLE001 - a corrupt transform is skipped, not fatal
                continue
    finally:
        messages.close()
    return tree


def plan_depth_alignment(path: Path, topics: Mapping[str, str], depth_of: Mapping[str, str],
                         depth_info_of: Mapping[str, str] | None = None
                         ) -> dict[str, DepthAlignmentPlan]:
    """Per colour topic whose depth may be unregistered, how to align it (see the module
    docstring). ``depth_info_of`` (``{colour: depth CameraInfo topic}``) overrides the
    naming convention, also for a depth topic whose name says it is registered.

    Raises:
        BagError: an override for a colour topic without depth, or naming a topic that is
            not a CameraInfo topic of the bag; an unreadable bag.
    """
    overrides = dict(depth_info_of or {})
    for colour, info in overrides.items():
        if colour not in depth_of:
            raise BagError(f"a depth CameraInfo is given for {colour}, which has no depth "
                           f"topic (depth topics: {dict(depth_of)})")
        if topics.get(info) != CAMERA_INFO_TYPE:
            raise BagError(f"topic {info} is not a {CAMERA_INFO_TYPE} topic of the bag (its "
                           f"topics: {sorted(topics)})")
    candidates: dict[str, str] = {}
    for colour, depth in depth_of.items():
        info = overrides.get(colour)
        if info is None and not is_registered_depth_topic(depth):
            info = depth_camera_info_topic(depth, topics)
        if info is not None:
            candidates[colour] = info
    if not candidates:
        return {}
    frames = _first_frame_ids(path, sorted({*candidates, *(depth_of[c] for c in candidates)}))
    tree = None
    plans: dict[str, DepthAlignmentPlan] = {}
    for colour, info in sorted(candidates.items()):
        cf = frame_name(frames.get(colour, ""))
        df = frame_name(frames.get(depth_of[colour], ""))
        if not cf or not df or cf == df:
            continue                                   # the same frame: registered
        tree = read_static_transforms(path, topics) if tree is None else tree
        try:
            pose = tree.lookup(cf, df).as_pose()
            transform_from_pose(pose)                  # the node's checks (e.g. <= 10 m)
        except (TransformError, DepthError) as exc:
            plans[colour] = DepthAlignmentPlan(
                info, None, df, cf, f"depth frame {df!r} is not the colour frame {cf!r} and "
                f"the bag's static transforms do not place it ({exc}): depth read as "
                "registered")
            continue
        plans[colour] = DepthAlignmentPlan(info, tuple(pose), df, cf,
                                           f"aligned with the bag's tf_static: {df} in {cf}")
    return plans
