"""A robot's static transforms (what tf2 reads from ``/tf_static``), resolved without ROS
(numpy only).

A camera driver publishes how its optical frames sit on the camera body once, on the latched
``/tf_static`` topic (a RealSense: ``camera_link`` -> ``camera_depth_frame`` ->
``camera_depth_optical_frame`` and ``camera_link`` -> ``camera_color_frame`` ->
``camera_color_optical_frame``). :class:`StaticTransforms` collects such transforms
(:meth:`StaticTransforms.add_message` takes a ``tf2_msgs/msg/TFMessage`` as rclpy or rosbags
deserialise it) and :meth:`StaticTransforms.lookup` chains them between any two connected
frames, as ``tf2_echo TARGET SOURCE`` does: the result takes a point given in ``source`` into
``target``.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["Transform", "StaticTransforms", "TransformError", "rotation_from_quaternion",
           "MAX_FRAMES", "frame_name"]

#: Most frames one :class:`StaticTransforms` holds (a robot has tens to a few hundred).
MAX_FRAMES = 4096


class TransformError(ValueError):
    """A transform that cannot be used: not finite, a zero quaternion, frames not connected."""


def rotation_from_quaternion(q: Sequence[float]) -> np.ndarray:
    """The 3x3 rotation of the quaternion ``(x, y, z, w)`` (normalised first).

    Raises:
        TransformError: not four finite values, or a zero quaternion.
    """
    vals = [float(v) for v in q]
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise TransformError(f"a rotation is a quaternion of 4 finite values, got {vals[:8]}")
    norm = math.sqrt(sum(v * v for v in vals))
    if norm < 1e-9:
        raise TransformError("the rotation is a zero quaternion")
    x, y, z, w = (v / norm for v in vals)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _quaternion_from_rotation(r: np.ndarray) -> tuple[float, float, float, float]:
    """``(x, y, z, w)`` of a rotation matrix (Shepperd's method; ``w >= 0``)."""
    m = np.asarray(r, np.float64)
    tr = float(np.trace(m))
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2.0
        q = ((m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4)
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2.0
        q = (s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s)
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2.0
        q = ((m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s)
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2.0
        q = ((m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4, (m[1, 0] - m[0, 1]) / s)
    sign = -1.0 if q[3] < 0 else 1.0
    return tuple(float(sign * v) for v in q)  # type: ignore[return-value]


@dataclass(frozen=True)
class Transform:
    """A rigid transform: a point ``p`` becomes ``rotation @ p + translation``."""

    rotation: np.ndarray
    translation: np.ndarray

    @classmethod
    def from_pose(cls, pose: Sequence[float], what: str = "a pose") -> "Transform":
        """From ``[x, y, z, qx, qy, qz, qw]`` (as ``tf2_echo`` prints a transform);
        ``what`` names it in the error.

        Raises:
            TransformError: not 7 finite values, or a zero quaternion.
        """
        vals = [float(v) for v in pose]
        if len(vals) != 7 or not all(math.isfinite(v) for v in vals):
            raise TransformError(f"{what} is 7 finite values (x y z qx qy qz qw), got "
                                 f"{vals[:10]}")
        return cls(rotation_from_quaternion(vals[3:]), np.array(vals[:3]))

    def then(self, outer: "Transform") -> "Transform":
        """This transform followed by ``outer``."""
        return Transform(outer.rotation @ self.rotation,
                         outer.rotation @ self.translation + outer.translation)

    def inverse(self) -> "Transform":
        """The transform that undoes this one."""
        rt = self.rotation.T
        return Transform(rt, -rt @ self.translation)

    def as_pose(self) -> list[float]:
        """``[x, y, z, qx, qy, qz, qw]``."""
        return [float(v) for v in self.translation] + \
            list(_quaternion_from_rotation(self.rotation))


def frame_name(name: Any) -> str:
    """A frame id as tf2 compares them (a leading ``/`` of ROS 1 names dropped)."""
    return str(name).strip().lstrip("/")


class StaticTransforms:
    """A set of static transforms between named frames, looked up along any chain."""

    def __init__(self) -> None:
        #: ``{frame: {neighbour: transform taking points of frame into neighbour}}``
        self._edges: dict[str, dict[str, Transform]] = {}

    def __len__(self) -> int:
        return len(self._edges)

    @property
    def frames(self) -> list[str]:
        """Every frame named by a transform, sorted."""
        return sorted(self._edges)

    def add(self, parent: str, child: str, translation: Sequence[float],
            quaternion: Sequence[float]) -> None:
        """Add (or replace) ``child``'s pose in ``parent``, as a ``TransformStamped`` holds it
        (``header.frame_id``, ``child_frame_id``, translation, rotation ``x y z w``).

        Raises:
            TransformError: empty or equal frame names, non-finite values, a zero
                quaternion, or more than :data:`MAX_FRAMES` frames.
        """
        parent, child = frame_name(parent), frame_name(child)
        if not parent or not child or parent == child:
            raise TransformError(f"a transform links two named frames, got {parent!r} -> "
                                 f"{child!r}")
        pose = Transform.from_pose([*translation, *quaternion])
        new = {parent, child} - set(self._edges)
        if len(self._edges) + len(new) > MAX_FRAMES:
            raise TransformError(f"more than {MAX_FRAMES} frames of static transforms")
        self._edges.setdefault(parent, {})[child] = pose.inverse()
        self._edges.setdefault(child, {})[parent] = pose

    def add_message(self, msg: Any) -> int:
        """Add every transform of a ``tf2_msgs/msg/TFMessage``; returns how many were added.
        A transform that cannot be used is skipped (see :meth:`add`)."""
        added = 0
        for ts in getattr(msg, "transforms", ()) or ():
            try:
                tr, rot = ts.transform.translation, ts.transform.rotation
                self.add(ts.header.frame_id, ts.child_frame_id, (tr.x, tr.y, tr.z),
                         (rot.x, rot.y, rot.z, rot.w))
            except (TransformError, AttributeError, TypeError, ValueError):
                continue
            added += 1
        return added

    def lookup(self, target: str, source: str) -> Transform:
        """The transform that takes points given in ``source`` into ``target`` (the chain of
        transforms between them, whichever way each was published).

        Raises:
            TransformError: a frame is unknown, or the two are not connected.
        """
        target, source = frame_name(target), frame_name(source)
        if target == source:
            return Transform(np.eye(3), np.zeros(3))
        for name in (source, target):
            if name not in self._edges:
                raise TransformError(f"no static transform names frame {name!r} (known: "
                                     f"{self.frames[:12]})")
        found = {source: Transform(np.eye(3), np.zeros(3))}
        queue = deque([source])
        while queue:
            here = queue.popleft()
            for there, step in self._edges[here].items():
                if there not in found:
                    found[there] = found[here].then(step)
                    queue.append(there)
        if target not in found:
            raise TransformError(f"the static transforms do not connect frame {source!r} to "
                                 f"{target!r}")
        return found[target]
