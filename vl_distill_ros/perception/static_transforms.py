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

import heapq
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["Transform", "StaticTransforms", "TransformError", "rotation_from_quaternion",
           "MAX_FRAMES", "MAX_FRAME_NAME", "frame_name"]

#: Most frames one :class:`StaticTransforms` holds (a robot has tens to a few hundred).
MAX_FRAMES = 4096
#: Longest frame name kept (characters, after :func:`frame_name`); a transform naming a
#: longer one is refused (URDF frame names are short: ``camera_color_optical_frame``).
MAX_FRAME_NAME = 256
#: Characters of a frame name an error text quotes (the rest is elided).
QUOTED_NAME_CHARS = 64


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


def _quoted(name: str) -> str:
    """``name`` as an error text quotes it: ``repr``, cut to :data:`QUOTED_NAME_CHARS`."""
    if len(name) <= QUOTED_NAME_CHARS:
        return repr(name)
    return f"{name[:QUOTED_NAME_CHARS]!r}... [{len(name)} chars]"


class StaticTransforms:
    """A set of static transforms between named frames, looked up along any chain.

    As tf2 keeps them: one parent per frame (a later transform to a child replaces its
    earlier parent link; the same link published the other way round replaces it too), so
    the store holds at most one link per frame, and :data:`MAX_FRAMES` frames whose names
    are at most :data:`MAX_FRAME_NAME` characters. :meth:`add` costs O(1); :meth:`lookup`
    walks the two frames' parent chains.
    """

    def __init__(self) -> None:
        #: ``{child: (parent, transform taking points of child into parent)}``
        self._parent: dict[str, tuple[str, Transform]] = {}
        #: ``{frame: links naming it}``: the frames held (a frame no link names is dropped)
        self._refs: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._refs)

    @property
    def frames(self) -> list[str]:
        """Every frame named by a transform, sorted."""
        return sorted(self._refs)

    def _checked_names(self, parent: Any, child: Any) -> tuple[str, str]:
        """The two frame names as tf2 compares them, checked.

        Raises:
            TransformError: empty, equal or over-long names.
        """
        parent, child = frame_name(parent), frame_name(child)
        for name in (parent, child):
            if len(name) > MAX_FRAME_NAME:
                raise TransformError(f"frame name {_quoted(name)} is {len(name)} characters; "
                                     f"the limit is {MAX_FRAME_NAME}")
        if not parent or not child or parent == child:
            raise TransformError(f"a transform links two named frames, got {_quoted(parent)} "
                                 f"-> {_quoted(child)}")
        return parent, child

    def _unlink(self, child: str) -> None:
        """Drop ``child``'s parent link (if any), and the frames no link names any more."""
        old = self._parent.pop(child, None)
        if old is None:
            return
        for name in (old[0], child):
            self._refs[name] -= 1
            if not self._refs[name]:
                del self._refs[name]

    def add(self, parent: str, child: str, translation: Sequence[float],
            quaternion: Sequence[float]) -> None:
        """Add (or replace) ``child``'s pose in ``parent``, as a ``TransformStamped`` holds it
        (``header.frame_id``, ``child_frame_id``, translation, rotation ``x y z w``). As in
        tf2, ``child`` has one parent: this replaces its earlier link (and a link from
        ``parent`` to ``child`` published the other way round). O(1).

        Raises:
            TransformError: empty or equal frame names, a name over :data:`MAX_FRAME_NAME`
                characters, non-finite values, a zero quaternion, or more than
                :data:`MAX_FRAMES` frames.
        """
        parent, child = self._checked_names(parent, child)
        pose = Transform.from_pose([*translation, *quaternion])
        replaced = [c for c in (child, parent)
                    if c in self._parent and (c == child or self._parent[c][0] == child)]
        delta = {parent: 1, child: 1}        # links naming each frame, after this add
        for c in replaced:
            for name in (self._parent[c][0], c):
                delta[name] = delta.get(name, 0) - 1
        count = len(self._refs) + sum(
            (self._refs.get(name, 0) + d > 0) - (name in self._refs) for name, d in delta.items())
        if count > MAX_FRAMES:
            raise TransformError(f"more than {MAX_FRAMES} frames of static transforms")
        for c in replaced:
            self._unlink(c)
        self._parent[child] = (parent, pose)
        for name in (parent, child):
            self._refs[name] = self._refs.get(name, 0) + 1

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
        transforms between them, whichever way each was published): up ``source``'s parent
        chain to the first frame of ``target``'s, then down to ``target``.

        Raises:
            TransformError: a frame is unknown, or the two are not connected.
        """
        target, source = frame_name(target), frame_name(source)
        if target == source:
            return Transform(np.eye(3), np.zeros(3))
        for name in (source, target):
            if name not in self._refs:
                known = ", ".join(_quoted(n) for n in heapq.nsmallest(12, self._refs))
                raise TransformError(f"no static transform names frame {_quoted(name)} "
                                     f"(known: [{known}])")
        up = {source: Transform(np.eye(3), np.zeros(3))}   # source -> each of its ancestors
        here = source
        while here in self._parent and self._parent[here][0] not in up:
            parent, pose = self._parent[here]
            up[parent] = up[here].then(pose)
            here = parent
        down, seen = [target], {target}   # target, its parent, ... up to a frame in ``up``
        while down[-1] not in up:
            link = self._parent.get(down[-1])
            if link is None or link[0] in seen:
                raise TransformError(f"the static transforms do not connect frame "
                                     f"{_quoted(source)} to {_quoted(target)}")
            seen.add(link[0])
            down.append(link[0])
        found = up[down[-1]]
        for child in reversed(down[:-1]):
            found = found.then(self._parent[child][1].inverse())
        return found
