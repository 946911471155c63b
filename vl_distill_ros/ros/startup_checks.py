"""The node's start-up checks, ROS-message free: the parameter values rclpy's descriptors
cannot check (:func:`check_startup_params`), the pairing of unregistered depth cameras with
their poses (:func:`alignments`), the default vocabulary store path and the message shown
when the packaged default bundle is missing. Each failure is a :class:`StartupError` whose
message says why; the node exits with code 1 and that message."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

try:  # a ROS 2 install has it; the PyPI wheels do not (depth_to_colour_poses then needs poses)
    from tf2_msgs.msg import TFMessage
except ImportError:  # pragma: no cover - depends on the installation
    TFMessage = None

from ..model.runtime import BACKENDS, BEHIND_BACKENDS
from ..perception.camera_model import DepthError
from ..perception.compressed_codec import topic_transport
from ..perception.depth_alignment import transform_from_pose
from ..perception.object_tracks import MAX_CAMERAS

__all__ = ["StartupError", "TFMessage", "missing_default_model_message", "default_store_path",
           "older_store_path",
           "check_startup_params", "check_distinct_topics", "alignments", "depth_cameras",
           "MAX_CAMERAS"]


class StartupError(RuntimeError):
    """The node cannot start (no model, bad start-up vocabulary); the message says why."""


class StartupCancelled(StartupError):
    """The node was told to stop (SIGINT, SIGTERM: its ROS context shut down) while it was
    starting up: the rest of the start-up (seconds of model loading) is not done."""


def missing_default_model_message(path: Path) -> str:
    """The start-up error shown when the packaged default bundle is absent."""
    return (f"no model: model_path is empty and the packaged default bundle {path} does not "
            "exist. Train and export one, e.g.\n"
            "  vl-distill train --config config/train_ycb.yaml   (writes runs/ycb)\n"
            f"  vl-distill export --run runs/ycb --out {path}\n"
            "(then reinstall the package), or start the node with "
            "-p model_path:=/path/to/student.vdb")


def _store_names(namespace: str, name: str) -> tuple[Path, Path]:
    """(the store path of the node, the one it had before '.' stood for '/')."""
    ros_home = Path(os.environ.get("ROS_HOME") or Path.home() / ".ros").expanduser()
    fq = f"{namespace.strip('/')}/{name}".strip("/")
    folder = ros_home / "vl_distill_ros"
    path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', fq.replace('/', '.')) or name}" \
        ".vocabulary.yaml"
    older = folder / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', fq) or name}.vocabulary.yaml"
    return path, older


def default_store_path(namespace: str, name: str) -> Path:
    """``$ROS_HOME/vl_distill_ros/<namespace.node>.vocabulary.yaml`` (ROS_HOME: ~/.ros), the
    node's full name with ``.`` for ``/``: one file per node (``_`` for ``/`` gave
    ``/cam_left/node`` and ``/cam/left/node`` the same file, each restoring the other's
    vocabulary). The store is always saved here; :func:`older_store_path` is only read."""
    return _store_names(namespace, name)[0]


def older_store_path(namespace: str, name: str) -> Path | None:
    """The store name of the node before '.' stood for '/' (``_`` for ``/``), when it is
    another file: read at start-up while the node has no store of its own, never written
    (it may be another node's too: ``/cam_left/node`` and ``/cam/left/node`` shared it,
    and writing it kept them restoring each other's vocabulary after the upgrade)."""
    path, older = _store_names(namespace, name)
    return older if older != path else None


def check_startup_params(p: dict) -> None:
    """Reject start-up parameter values that rclpy's descriptors cannot check.

    Raises:
        StartupError: an unknown ``inference_backend``, ``inference_backend_behind``,
            ``qos_reliability`` or ``camera_info_durability``, no topic, or more than
            :data:`MAX_CAMERAS` cameras (as many as the object tracks keep). Topics
            listed twice are the node's check (:func:`check_distinct_topics`, on the
            resolved names).
    """
    if p["inference_backend"] not in BACKENDS:
        raise StartupError(f"inference_backend must be one of {', '.join(BACKENDS)}, got "
                           f"{p['inference_backend']!r}")
    if p["inference_backend_behind"] not in BEHIND_BACKENDS:
        raise StartupError(f"inference_backend_behind must be one of "
                           f"{', '.join(BEHIND_BACKENDS)}, got {p['inference_backend_behind']!r}")
    if p["qos_reliability"] not in ("best_effort", "reliable"):
        raise StartupError(f"qos_reliability must be best_effort or reliable, got "
                           f"{p['qos_reliability']!r}")
    if p["camera_info_durability"] not in ("volatile", "transient_local"):
        raise StartupError(f"camera_info_durability must be volatile or transient_local, got "
                           f"{p['camera_info_durability']!r}")
    if not p["image_topics"] or any(not t.strip() for t in p["image_topics"]):
        raise StartupError("image_topics must list at least one non-empty topic name")
    n = len(p["image_topics"])
    if n > MAX_CAMERAS:
        raise StartupError(f"image_topics lists {n} cameras; one node serves at most "
                           f"{MAX_CAMERAS} (start another node for more)")
    for name in ("depth_topics", "camera_info_topics"):
        topics = p[name]
        if topics and len(topics) != n:
            raise StartupError(f"{name} must be empty or list one entry per image_topics "
                               f"entry ({n}; \"\" for a camera without depth), got "
                               f"{list(topics)}")
    depth_on_colour = [t for t in p["image_topics"] if topic_transport(t) == "compressedDepth"]
    if depth_on_colour:
        raise StartupError(f"image_topics {depth_on_colour} carry compressedDepth (depth) "
                           "images: list them in depth_topics")
    cameras = {t.strip() for t in p["image_topics"]}
    strays = [t for t in p["proposal_box_net_close_topics"] if t.strip() not in cameras]
    if strays:
        raise StartupError(f"proposal_box_net_close_topics must list entries of image_topics "
                           f"{list(p['image_topics'])}; {strays} are not")
    if bool(p["depth_topics"]) != bool(p["camera_info_topics"]):
        raise StartupError("depth_topics and camera_info_topics go together: depth is "
                           "back-projected with the colour camera's CameraInfo")
    for i, (depth, info) in enumerate(zip(p["depth_topics"], p["camera_info_topics"])):
        if bool(depth.strip()) != bool(info.strip()):
            raise StartupError(f"camera {i} ({p['image_topics'][i]}): depth_topics and "
                               f"camera_info_topics entries go together (both \"\" for a "
                               f"camera without depth), got {depth!r} and {info!r}")
    alignments(p)


def depth_cameras(p: dict) -> list[bool]:
    """Per ``image_topics`` entry, whether the camera has depth (a non-empty
    ``depth_topics`` entry; an empty list: none has)."""
    depth = list(p["depth_topics"]) or [""] * len(p["image_topics"])
    return [bool(t.strip()) for t in depth]


def check_distinct_topics(param: str, topics: list[str], resolved: list[str]) -> None:
    """Reject entries of ``param`` (``image_topics`` or ``depth_topics``: ``topics``) that
    name one topic twice: equal ``resolved`` names (as given, or after name resolution and
    remapping: ``image`` and ``/robot/image`` in the namespace ``/robot``). A camera listed
    twice would be subscribed twice and each of its frames labelled twice; a depth topic
    registered to one colour camera cannot be another's.

    Raises:
        StartupError: the entries and the name they share.
    """
    first: dict[str, str] = {}
    for topic, name in zip(topics, resolved):
        if not name:        # "": a camera without depth
            continue
        if name in first:
            raise StartupError(f"{param} lists {name} twice ({first[name]!r} and {topic!r}): "
                               "each camera has its own topics")
        first[name] = topic


def alignments(p: dict) -> list[tuple[str, Any] | None]:
    """Per image topic, ``(depth camera's CameraInfo topic, (R, t))`` for depth that is not
    registered to colour (``depth_camera_info_topics``, ``depth_to_colour_poses``; ``(R, t)``
    is None for an empty pose: looked up in ``/tf_static``), else None.

    Raises:
        StartupError: lists of the wrong length, an entry without depth or without a depth
            CameraInfo topic, a pose that is not 7 numbers, or an empty pose without
            ``tf2_msgs``.
    """
    n = len(p["image_topics"])
    infos, poses = list(p["depth_camera_info_topics"]), list(p["depth_to_colour_poses"])
    if not infos and not poses:
        return [None] * n
    if len(infos) != n or len(poses) != n:
        raise StartupError(f"depth_camera_info_topics and depth_to_colour_poses must each "
                           f"list one entry per image_topics entry ({n}), got {infos} and "
                           f"{poses}")
    out: list[tuple[str, Any] | None] = []
    for i, (info, pose) in enumerate(zip(infos, poses)):
        if not info.strip() and not pose.strip():
            out.append(None)
            continue
        if not info.strip() or not depth_cameras(p)[i]:
            raise StartupError(f"camera {i}: an unregistered depth camera needs a depth topic "
                               f"and its CameraInfo topic, got {info!r} and {pose!r}")
        if not pose.strip():
            if TFMessage is None:
                raise StartupError(f"camera {i}: an empty depth_to_colour_poses entry reads "
                                   "the pose from /tf_static, which needs the tf2_msgs "
                                   "package (ros-jazzy-tf2-msgs); install it or give the pose "
                                   "as 'x y z qx qy qz qw'")
            out.append((info.strip(), None))
            continue
        try:
            out.append((info.strip(), transform_from_pose([float(v) for v in pose.split()])))
        except (ValueError, DepthError) as exc:
            raise StartupError(f"depth_to_colour_poses entry {i} ({pose!r}): {exc}") from None
    return out
