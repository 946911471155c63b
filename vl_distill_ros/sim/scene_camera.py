"""The scene's pinhole camera (:class:`SceneCamera`: view and projection matrices,
projection of points and plane polygons, pixel rays, OpenCV intrinsics) and where cameras
are put: the main camera aimed at the objects, the hand camera close to one of them.

Part of :mod:`vl_distill_ros.sim.scene`; ROS-free and torch-free.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from vl_distill_ros.sim.render import _frustum, _look_at
from vl_distill_ros.sim.render import _rounded as _r
from vl_distill_ros.sim.scene_layout import PlacedObject, SceneLayout
from vl_distill_ros.sim.scene_spec import SceneSpec

__all__ = ["SceneCamera", "sample_main_camera", "sample_hand_camera"]


@dataclass
class SceneCamera:
    """A pinhole camera at ``eye`` looking at ``target`` (``roll`` and ``fov_y`` in degrees),
    ``width`` x ``height`` pixels, with OpenGL view and projection matrices for TinyRenderer.

    ``shift`` moves the principal point by ``(dx, dy)`` pixels from the image centre (an
    off-axis projection): the image is then a window, moved by ``(-dx, -dy)``, of the one
    the unshifted camera would see if it were larger, as a crop of a larger frame is."""

    eye: np.ndarray
    target: np.ndarray
    roll: float
    fov_y: float
    width: int
    height: int
    near: float = 0.02
    far: float = 20.0
    shift: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        self.view, _ = _look_at(np.asarray(self.eye, float), np.asarray(self.target, float),
                                math.radians(self.roll))
        self.focal = (self.height / 2) / math.tan(math.radians(self.fov_y) / 2)
        #: The principal point in :meth:`project` coordinates (pixel ``i`` spans ``[i, i+1)``).
        self.cx = self.width / 2 + float(self.shift[0])
        self.cy = self.height / 2 + float(self.shift[1])
        top = self.near * math.tan(math.radians(self.fov_y) / 2)
        right = top * self.width / self.height
        dx = float(self.shift[0]) * self.near / self.focal
        dy = float(self.shift[1]) * self.near / self.focal
        self.proj = _frustum(-right - dx, right - dx, -top + dy, top + dy, self.near, self.far)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates ``(N, 2)`` and depths ``(N,)`` (metres in front of the camera)."""
        cam = points @ self.view[:3, :3].T + self.view[:3, 3]
        depth = -cam[:, 2]
        safe = np.where(depth > 1e-6, depth, 1e-6)
        u = self.cx + self.focal * cam[:, 0] / safe
        v = self.cy - self.focal * cam[:, 1] / safe
        return np.stack([u, v], axis=1), depth

    def optical(self, points: np.ndarray) -> np.ndarray:
        """World ``points`` (N, 3) in the camera's optical frame (x right, y down, z forward,
        metres): the frame of its images and of :meth:`intrinsics`."""
        cam = np.asarray(points, float) @ self.view[:3, :3].T + self.view[:3, 3]
        return cam * np.array([1.0, -1.0, -1.0])

    def plane_homography(self, z: float) -> np.ndarray:
        """3x3 map from world ``(x, y, 1)`` on the plane at height ``z`` to pixel indices
        (pixel ``i`` has its centre at ``i + 0.5`` in :meth:`project` coordinates)."""
        flip = np.diag([1.0, -1.0, -1.0])  # OpenGL camera -> OpenCV camera axes
        rot = flip @ self.view[:3, :3]
        trans = flip @ self.view[:3, 3]
        k = np.array([[self.focal, 0.0, self.cx - 0.5],
                      [0.0, self.focal, self.cy - 0.5], [0.0, 0.0, 1.0]])
        return k @ np.column_stack([rot[:, 0], rot[:, 1], rot[:, 2] * z + trans])

    def polygon(self, points: np.ndarray) -> np.ndarray | None:
        """A convex world polygon projected to pixels, as float ``(N, 2)`` points, clipped to
        the part in front of the near plane; ``None`` if nothing of it is in front."""
        cam = points @ self.view[:3, :3].T + self.view[:3, 3]
        depth = -cam[:, 2]
        limit = 1.5 * self.near
        kept = []
        n = len(cam)
        for i in range(n):  # Sutherland-Hodgman against depth >= limit
            a, b = cam[i], cam[(i + 1) % n]
            da, db = depth[i], depth[(i + 1) % n]
            if da >= limit:
                kept.append(a)
            if (da >= limit) != (db >= limit):
                t = (limit - da) / (db - da)
                kept.append(a + t * (b - a))
        if len(kept) < 3:
            return None
        c = np.array(kept)
        d = -c[:, 2]
        u = self.cx + self.focal * c[:, 0] / d - 0.5
        v = self.cy - self.focal * c[:, 1] / d - 0.5
        return np.stack([u, v], axis=1)

    def intrinsics(self) -> tuple[float, float, float, float]:
        """``(fx, fy, cx, cy)`` in pixels, OpenCV convention (as :meth:`plane_homography`)."""
        return (float(self.focal), float(self.focal), self.cx - 0.5, self.cy - 0.5)

    def rays(self) -> np.ndarray:
        """``(H, W, 3)`` world directions of the pixel centres, scaled so that a point
        ``eye + t * ray`` lies ``t`` metres in front of the camera (along its optical axis)."""
        fx, fy, cx, cy = self.intrinsics()
        u = (np.arange(self.width, dtype=np.float64) - cx) / fx
        v = -(np.arange(self.height, dtype=np.float64) - cy) / fy
        cam = np.stack(np.broadcast_arrays(u[None, :], v[:, None], -np.ones((1, 1))), -1)
        return cam @ self.view[:3, :3]  # rotation transposed: camera -> world

    def linear_depth(self, buffer: np.ndarray) -> np.ndarray:
        """Metres along the optical axis from an OpenGL depth buffer in [0, 1]."""
        d = np.asarray(buffer, np.float64)
        return (self.far * self.near / (self.far - (self.far - self.near) * d)).astype(
            np.float32)

    def meta(self) -> dict[str, Any]:
        """The camera for :attr:`~vl_distill_ros.sim.scene_spec.SceneFrame.meta` (JSON)."""
        out = {"eye": _r(self.eye), "target": _r(self.target), "roll": _r(self.roll),
               "fov_y": _r(self.fov_y), "width": self.width, "height": self.height}
        if any(self.shift):
            out["shift"] = _r(np.asarray(self.shift, float))
        return out


def _fits(cam: SceneCamera, placed: Sequence[PlacedObject], margin: float) -> bool:
    """Whether every object's bounding box projects in front of and inside the image."""
    for obj in placed:
        uv, depth = cam.project(obj.corners())
        if depth.min() <= cam.near * 2:
            return False
        if (uv[:, 0].min() < margin * cam.width or uv[:, 0].max() > (1 - margin) * cam.width
                or uv[:, 1].min() < margin * cam.height
                or uv[:, 1].max() > (1 - margin) * cam.height):
            return False
    return True


def sample_main_camera(layout: SceneLayout, rng: np.random.Generator,
                       spec: SceneSpec) -> SceneCamera:
    """The main camera: aimed near the objects' centroid at a random azimuth, elevation and
    distance (``spec``), redrawn (up to 40 times, farther after 15) until every object's box
    projects inside the image; the first one drawn without ``spec.fit_view``."""
    centres = np.array([o.centre for o in layout.placed]) if layout.placed else np.zeros((1, 3))
    aim = centres.mean(axis=0)
    cam = None
    for attempt in range(40):
        target = aim + np.array([*rng.normal(0.0, 0.03, size=2), 0.0])
        az = math.radians(rng.uniform(0.0, 360.0))
        el = math.radians(rng.uniform(*spec.elevation_deg))
        dist = rng.uniform(*spec.distance_m) * (1.0 + 0.05 * max(0, attempt - 15))
        eye = target + dist * np.array([math.cos(el) * math.cos(az),
                                        math.cos(el) * math.sin(az), math.sin(el)])
        cam = SceneCamera(eye=eye, target=target, roll=float(rng.uniform(*spec.roll_deg)),
                          fov_y=float(rng.uniform(*spec.fov_y_deg)), width=int(spec.width),
                          height=int(spec.height))
        if not spec.fit_view or _fits(cam, layout.placed, 0.02):
            break
    assert cam is not None
    if spec.border_cut_prob > 0 and layout.placed and rng.random() < spec.border_cut_prob:
        cam = _cut_by_border(cam, layout.placed, rng, spec.border_cut_keep)
    return cam


def _cut_by_border(cam: SceneCamera, placed: Sequence[PlacedObject], rng: np.random.Generator,
                   keep: tuple[float, float]) -> SceneCamera:
    """``cam`` with its principal point shifted so that one side of the image cuts a random
    object of ``placed``, ``keep`` (drawn uniformly) of its projected extent left in view."""
    obj = placed[int(rng.integers(len(placed)))]
    uv, depth = cam.project(obj.points)
    uv = uv[depth > cam.near]
    frac = float(rng.uniform(*keep))
    side = int(rng.integers(4))
    if len(uv) == 0:
        return cam
    (x0, y0), (x1, y1) = uv.min(axis=0), uv.max(axis=0)
    out = (1.0 - frac) * (x1 - x0 if side < 2 else y1 - y0)
    shift = [(-out - x0, 0.0), (cam.width + out - x1, 0.0),
             (0.0, -out - y0), (0.0, cam.height + out - y1)][side]
    return dataclasses.replace(cam, shift=(float(shift[0]), float(shift[1])))


def sample_hand_camera(layout: SceneLayout, target: PlacedObject, rng: np.random.Generator,
                       spec: SceneSpec) -> SceneCamera:
    """A close-up "hand camera" on ``target``, the object's bounding sphere filling
    ``spec.hand_fill`` of the image, redrawn while it would sit inside another object."""
    fov = float(rng.uniform(*spec.hand_fov_y_deg))
    cam = None
    for _ in range(30):
        fill = rng.uniform(*spec.hand_fill)
        dist = target.radius / math.tan(math.radians(fov) / 2) / fill
        az = math.radians(rng.uniform(0.0, 360.0))
        el = math.radians(rng.uniform(*spec.hand_elevation_deg))
        aim = target.centre + np.array([*rng.normal(0.0, 0.1 * target.radius, size=2), 0.0])
        eye = aim + dist * np.array([math.cos(el) * math.cos(az),
                                     math.cos(el) * math.sin(az), math.sin(el)])
        cam = SceneCamera(eye=eye, target=aim, roll=float(rng.uniform(-10.0, 10.0)),
                          fov_y=fov, width=int(spec.hand_width), height=int(spec.hand_height),
                          near=0.01)
        # the camera must not sit inside (or right next to) another object
        if all(np.linalg.norm(eye - o.centre) > o.radius + 0.03 for o in layout.placed
               if o is not target):
            break
    assert cam is not None
    return cam
