"""Headless CPU rendering of tabletop scenes: several YCB objects on a table, robot camera.

ROS-free and torch-free. Like :mod:`vl_distill_ros.sim.render` (whose mesh and texture
helpers it reuses), objects are drawn by pybullet's software TinyRenderer in ``DIRECT`` mode,
so no GPU, display or OpenGL is needed.

One call of :func:`render_scene` draws one :class:`SceneFrame`:

* a table top (a procedural texture from :func:`~vl_distill_ros.sim.backgrounds.
  make_background`: wood, plain or cloth patterns) with visible side faces, a floor below and
  a wall beyond it;
* 2-4 objects by default (:attr:`SceneSpec.objects_per_scene`, up to 10) drawn from the
  caller's pool, resting upright as modelled (the YCB google_16k meshes are z-up in a
  resting pose) with their lowest vertex on the table, at random non-overlapping positions
  (oriented footprint boxes with a gap) and random yaw, or, with
  :attr:`SceneSpec.contact_prob`, side by side in contact with an object already placed;
* a random light (direction, colour, ambient/diffuse strength) with soft cast shadows on the
  table;
* a camera 0.6-1.2 m from the objects, 35-70 degrees above the table, any azimuth, aimed at
  the objects' centroid, 640x480 by default; camera poses are redrawn until every object
  projects inside the image, and the frame is redrawn (up to
  :attr:`SceneSpec.camera_attempts` times) while an object is hidden;
* for every object whose visible (unoccluded, in-frame) pixels number at least
  :attr:`SceneSpec.min_visible_pixels`: its key, its 2-D box ``(x, y, w, h)`` from the
  segmentation mask and its visible fraction (visible pixels / pixels of its whole
  silhouette, occluders removed);
* optionally (:attr:`SceneSpec.hand_camera`) a close-up "hand camera" image, 320x240 by
  default, looking at one chosen object from nearby, with the boxes visible in it.

Speed: only the objects go through TinyRenderer (its cost grows with covered pixels); the
table, floor, wall and shadows are drawn with OpenCV from the exact same camera model (each
plane is warped through its plane-to-image homography, clipped at the near plane; shadows are
object silhouettes projected along the light onto the table), so a 640x480 frame with 2-4
objects takes about 100 ms on one busy CPU core.

Everything random comes from the generator handed to :func:`render_scene`: the same seed
gives byte-identical images.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import cv2
import numpy as np

from vl_distill_ros.sim.backgrounds import make_background
from vl_distill_ros.sim.render import (
    MeshBodies,
    RenderError,
    _frustum,
    _look_at,
    load_mesh_vertices,
)
from vl_distill_ros.sim.render import _rounded as _r

__all__ = ["SceneSpec", "SceneObject", "SceneFrame", "SceneRenderer", "render_scene",
           "TABLE_KINDS", "bbox_from_mask"]

#: Table-top textures: ``make_background`` kinds. ``wood`` is wood grain, ``solid`` a plain
#: (painted/laminate) top, ``noise``/``stripes``/``checker`` read as cloths.
TABLE_KINDS: tuple[str, ...] = ("wood", "solid", "noise", "stripes", "checker")
#: Floor textures (``make_background`` kinds).
FLOOR_KINDS: tuple[str, ...] = ("solid", "noise", "wood", "checker")

_FLOOR_Z = -0.74        # floor height below the table top (m)
_ROOM_RADIUS = 3.0      # beyond this horizontal distance from the table the wall is seen (m)
_TABLE_TEXELS = 512     # table texture size
#: Most pieces of furniture (:attr:`SceneSpec.furniture`); their footprints' half sizes, the
#: gap between them and the table's edge, and their tops' height over the table top (m).
MAX_FURNITURE = 8
#: Bounds of the table top's length and width (m).
MIN_TABLE_M = 0.2
MAX_TABLE_M = 4.0
_FURNITURE_HALF = (0.12, 0.45)
_FURNITURE_GAP = (0.05, 0.9)
_FURNITURE_TOP = (-0.2, 0.8)
_NOISE_PAD = 32         # noise bank margin (frames use a random window of it)
_FLOOR_TEXELS = 256     # floor texture size
#: Metres one table texture covers along x and y, for the kinds that repeat: wood planks
#: (grain stretched along the table, longer than it, repeated across it) and a fine cloth
#: weave (mirror-tiled, seamless). Other kinds cover the whole table top once.
_TABLE_SPANS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "wood": ((2.0, 2.6), (0.12, 0.3)),
    "noise": ((0.3, 0.6), (0.3, 0.6)),
}


class SceneObject(NamedTuple):
    """One visible object of a rendered frame."""

    #: Model key (folder name), e.g. ``011_banana``.
    key: str
    #: Box of the visible pixels, ``(x, y, w, h)`` in pixels (x right, y down, inclusive
    #: top-left pixel; ``w``/``h`` count pixels).
    bbox: tuple[int, int, int, int]
    #: Visible pixels / pixels of the object's whole silhouette in [0, 1] (occlusion by other
    #: objects and the image border lower it).
    visible_frac: float


@dataclass
class SceneSpec:
    """Settings of :func:`render_scene` (ranges are ``(low, high)``, drawn uniformly)."""

    #: Main camera image size in pixels.
    width: int = 640
    height: int = 480
    #: How many objects are placed (inclusive range; capped by the pool size).
    objects_per_scene: tuple[int, int] = (2, 4)
    #: Objects with fewer visible pixels are left out of the ground truth.
    min_visible_pixels: int = 64
    #: A frame is redrawn (new camera) while an object shows less than this fraction...
    min_visible_fraction: float = 0.25
    #: ...at most this many times in all; the best attempt is kept.
    camera_attempts: int = 3
    #: Camera elevation above the table plane (degrees) and distance to the aim point (m).
    elevation_deg: tuple[float, float] = (35.0, 70.0)
    distance_m: tuple[float, float] = (0.6, 1.2)
    #: Vertical field of view of the main camera (degrees).
    fov_y_deg: tuple[float, float] = (42.0, 50.0)
    #: Camera roll about its optical axis (degrees).
    roll_deg: tuple[float, float] = (-4.0, 4.0)
    #: Table-top texture kinds (see :data:`TABLE_KINDS`).
    table_kinds: tuple[str, ...] = TABLE_KINDS
    #: Table length (x) and width (y) in metres, and the width of the area objects go in.
    table_length_m: tuple[float, float] = (1.2, 2.0)
    table_width_m: tuple[float, float] = (0.8, 1.2)
    placement_area_m: tuple[float, float] = (0.6, 0.45)
    #: Minimum gap between objects' footprint boxes (m).
    min_gap_m: float = 0.02
    #: Chance that each object after the first is placed in contact with one already on
    #: the table (side by side, at a random side and yaw, the convex hulls of their
    #: footprints ``contact_gap_m`` apart) instead of at a random free spot; objects in
    #: contact are the hard case of class-agnostic proposers. 0 (the default) draws
    #: nothing extra from the random generator, so frames are as without this setting.
    contact_prob: float = 0.0
    #: Distance (m) between the footprint hulls of two objects in contact (low, high).
    contact_gap_m: tuple[float, float] = (0.0005, 0.003)
    #: Pieces of furniture beyond the table (0 to :data:`MAX_FURNITURE`): flat-coloured
    #: boxes standing on the floor a little past the table's edges, some of them rising
    #: above the table top (cabinets, chairs, boxes of a real room's background). They are
    #: not objects of the ground truth and may hide objects. 0 (the default) draws nothing
    #: extra from the random generator, so frames are as without this setting.
    furniture: int = 0
    #: Render a close-up "hand camera" image of one object as well.
    hand_camera: bool = False
    hand_width: int = 320
    hand_height: int = 240
    hand_fov_y_deg: tuple[float, float] = (50.0, 60.0)
    hand_elevation_deg: tuple[float, float] = (35.0, 75.0)
    #: Fraction of the hand image height the chosen object's bounding sphere spans.
    hand_fill: tuple[float, float] = (0.6, 1.0)
    #: Soft shadows cast on the table.
    shadows: bool = True
    #: Sensor noise standard deviation (8-bit levels).
    noise_sigma: tuple[float, float] = (0.5, 2.5)
    #: Also render metric depth (:attr:`SceneFrame.depth`), registered to the colour image.
    #: Depth draws nothing from the random generator: colour images are the same with it.
    depth: bool = False
    #: With :attr:`depth`: see it with a separate depth camera instead, as a RealSense
    #: records without alignment: ``depth_camera_size`` (width, height) pixels, a vertical
    #: field of view of ``depth_camera_fov_y_deg``, ``depth_camera_baseline_m`` along the
    #: colour camera's x axis (its optical frame), axes parallel. The defaults are a D435's
    #: depth stream (848x480, 58 degrees, 15 mm to the left of the colour camera).
    depth_camera: bool = False
    depth_camera_size: tuple[int, int] = (848, 480)
    depth_camera_fov_y_deg: float = 58.0
    depth_camera_baseline_m: float = -0.015

    def validate(self) -> None:
        """Raise :class:`RenderError` naming the first bad setting."""
        for name in ("width", "height", "hand_width", "hand_height"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or not 16 <= value <= 4096:
                raise RenderError(f"scene {name} must be an integer in [16, 4096], got {value!r}")
        lo, hi = self.objects_per_scene
        if not (isinstance(lo, (int, np.integer)) and isinstance(hi, (int, np.integer))
                and 1 <= lo <= hi <= 10):
            raise RenderError("objects_per_scene must be a range (low, high) with "
                              f"1 <= low <= high <= 10, got {self.objects_per_scene!r}")
        for name in ("elevation_deg", "distance_m", "fov_y_deg", "roll_deg", "table_length_m",
                     "table_width_m", "placement_area_m", "hand_fov_y_deg",
                     "hand_elevation_deg", "hand_fill", "noise_sigma", "contact_gap_m"):
            value = getattr(self, name)
            if len(value) != 2 or not all(math.isfinite(float(v)) for v in value):
                raise RenderError(f"scene {name} must be two finite numbers, got {value!r}")
            if name != "placement_area_m" and float(value[0]) > float(value[1]):
                raise RenderError(f"scene {name} must be (low, high) with low <= high, "
                                  f"got {value!r}")
        if not MIN_TABLE_M <= min(self.table_length_m[0], self.table_width_m[0]) or \
                max(self.table_length_m[1], self.table_width_m[1]) > MAX_TABLE_M:
            raise RenderError(f"table_length_m and table_width_m must lie in [{MIN_TABLE_M}, "
                              f"{MAX_TABLE_M}] m, got {self.table_length_m!r}, "
                              f"{self.table_width_m!r}")
        if min(self.placement_area_m) <= 0:
            raise RenderError(f"placement_area_m must be positive, got {self.placement_area_m!r}")
        if not 5.0 <= self.elevation_deg[0] <= self.elevation_deg[1] <= 89.0:
            raise RenderError(f"elevation_deg must lie in [5, 89], got {self.elevation_deg!r}")
        if not 0.05 <= self.distance_m[0] <= self.distance_m[1]:
            raise RenderError(f"distance_m must be >= 0.05 m, got {self.distance_m!r}")
        if not 10.0 <= self.fov_y_deg[0] <= self.fov_y_deg[1] <= 120.0:
            raise RenderError(f"fov_y_deg must lie in [10, 120], got {self.fov_y_deg!r}")
        unknown = [k for k in self.table_kinds if k not in TABLE_KINDS]
        if not self.table_kinds or unknown:
            raise RenderError(f"table_kinds must be a non-empty subset of {list(TABLE_KINDS)}, "
                              f"got {list(self.table_kinds)!r}")
        if not 0.0 <= float(self.contact_prob) <= 1.0:
            raise RenderError(f"contact_prob must lie in [0, 1], got {self.contact_prob!r}")
        if not 0.0 <= float(self.contact_gap_m[0]) <= float(self.contact_gap_m[1]) <= 0.05:
            raise RenderError(f"contact_gap_m must lie in [0, 0.05] m, got {self.contact_gap_m!r}")
        if self.min_visible_pixels < 1 or self.camera_attempts < 1:
            raise RenderError("min_visible_pixels and camera_attempts must be >= 1")
        if not isinstance(self.furniture, (int, np.integer)) or \
                not 0 <= self.furniture <= MAX_FURNITURE:
            raise RenderError(f"furniture must be an integer in [0, {MAX_FURNITURE}], "
                              f"got {self.furniture!r}")
        self._validate_depth_camera()

    def _validate_depth_camera(self) -> None:
        if not all(isinstance(v, (int, np.integer)) and 16 <= v <= 4096
                   for v in self.depth_camera_size) or len(self.depth_camera_size) != 2:
            raise RenderError(f"depth_camera_size must be two integers in [16, 4096], got "
                              f"{self.depth_camera_size!r}")
        if not 10.0 <= float(self.depth_camera_fov_y_deg) <= 120.0:
            raise RenderError(f"depth_camera_fov_y_deg must lie in [10, 120], got "
                              f"{self.depth_camera_fov_y_deg!r}")
        if not abs(float(self.depth_camera_baseline_m)) <= 0.5:
            raise RenderError(f"depth_camera_baseline_m must lie in [-0.5, 0.5] m, got "
                              f"{self.depth_camera_baseline_m!r}")


@dataclass
class SceneFrame:
    """One rendered tabletop frame."""

    #: ``(height, width, 3)`` uint8 RGB main-camera image.
    image: np.ndarray
    #: Visible objects of the main image (placed objects that are hidden are left out).
    objects: list[SceneObject]
    #: ``(hand_height, hand_width, 3)`` uint8 RGB close-up, or ``None``.
    hand_image: np.ndarray | None = None
    #: Visible objects of the hand image (the target and any neighbours in view).
    hand_objects: list[SceneObject] = field(default_factory=list)
    #: Key of the object the hand camera looks at, or ``None``.
    hand_target: str | None = None
    #: JSON-serialisable details: placed objects and poses, table, light, cameras, attempts.
    meta: dict[str, Any] = field(default_factory=dict)
    #: With :attr:`SceneSpec.depth`: ``(height, width)`` float32 depth in metres along the
    #: optical axis, pixel for pixel registered to :attr:`image` (0: no return, e.g. a ray
    #: into the open); noise free (see :mod:`vl_distill_ros.sim.depth_noise`). With
    #: :attr:`SceneSpec.depth_camera` it is the depth camera's own image instead.
    depth: np.ndarray | None = None
    #: With :attr:`SceneSpec.depth_camera`: the depth camera, ``(fx, fy, cx, cy, width,
    #: height)``, and its optical frame in the colour camera's, ``(x, y, z, qx, qy, qz, qw)``.
    depth_camera: tuple[float, ...] | None = None
    depth_pose: tuple[float, ...] | None = None
    #: Pinhole intrinsics ``(fx, fy, cx, cy)`` of the main camera in pixels (OpenCV
    #: convention: pixel ``i`` has its centre at ``i``).
    intrinsics: tuple[float, float, float, float] | None = None
    #: The same for the hand camera (with :attr:`SceneSpec.depth` and a hand image).
    hand_depth: np.ndarray | None = None
    hand_intrinsics: tuple[float, float, float, float] | None = None


# ---------------------------------------------------------------------------------------
# Internal scene description
# ---------------------------------------------------------------------------------------
@dataclass
class _Placed:
    key: str
    body: int
    xy: np.ndarray            # footprint centre (world)
    yaw: float
    half: np.ndarray          # footprint half extents (model x, y)
    height: float
    radius: float             # bounding-sphere radius about the centre
    points: np.ndarray        # (V, 3) world vertices (subsampled)
    base: np.ndarray          # body base position (world)

    @property
    def centre(self) -> np.ndarray:
        return np.array([self.xy[0], self.xy[1], 0.5 * self.height])

    def corners(self) -> np.ndarray:
        """The 8 corners of the object's oriented bounding box (world)."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        rot = np.array([[c, -s], [s, c]])
        out = []
        for sx in (-1, 1):
            for sy in (-1, 1):
                xy = self.xy + rot @ (self.half * [sx, sy])
                out.extend([(xy[0], xy[1], 0.0), (xy[0], xy[1], self.height)])
        return np.array(out)


@dataclass
class _Layout:
    placed: list[_Placed]
    table_half: np.ndarray            # (half length, half width)
    table_thickness: float
    table_kind: str
    table_tile: np.ndarray            # uint8 RGB, seamless (mirrored) tile
    table_scale: np.ndarray           # texels per metre along x, y
    table_offset: np.ndarray          # texture origin offset (m)
    table_colour: np.ndarray          # mean RGB of the texture in [0, 1]
    floor_kind: str
    floor_tile: np.ndarray            # uint8 RGB, seamless tile
    floor_scale: float                # texels per metre
    wall_colour: np.ndarray           # RGB in [0, 1]
    light: "_Light"
    furniture: list["_Furniture"] = field(default_factory=list)


@dataclass
class _Light:
    """A directional light with TinyRenderer's coefficients, plus shadow look."""

    direction: np.ndarray             # unit, towards the light
    colour: np.ndarray
    ambient: float
    diffuse: float
    specular: float
    shadow_strength: float
    shadow_blur: float                # penumbra width (m)

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "_Light":
        az = rng.uniform(0.0, 2 * math.pi)
        el = math.radians(rng.uniform(40.0, 85.0))
        return cls(direction=np.array([math.cos(el) * math.cos(az),
                                       math.cos(el) * math.sin(az), math.sin(el)]),
                   colour=rng.uniform(0.85, 1.0, size=3), ambient=float(rng.uniform(0.35, 0.55)),
                   diffuse=float(rng.uniform(0.35, 0.6)), specular=float(rng.uniform(0.0, 0.1)),
                   shadow_strength=float(rng.uniform(0.6, 0.9)),
                   shadow_blur=float(rng.uniform(0.004, 0.012)))

    def shade(self, normal: np.ndarray) -> np.ndarray:
        """TinyRenderer's Lambert model: ``ambient + diffuse * max(n.l, 0) * colour``."""
        cos = max(float(np.asarray(normal) @ self.direction), 0.0)
        return self.ambient + self.diffuse * cos * self.colour


@dataclass
class _Camera:
    eye: np.ndarray
    target: np.ndarray
    roll: float
    fov_y: float
    width: int
    height: int
    near: float = 0.02
    far: float = 20.0

    def __post_init__(self) -> None:
        self.view, _ = _look_at(np.asarray(self.eye, float), np.asarray(self.target, float),
                                math.radians(self.roll))
        top = self.near * math.tan(math.radians(self.fov_y) / 2)
        right = top * self.width / self.height
        self.proj = _frustum(-right, right, -top, top, self.near, self.far)
        self.focal = (self.height / 2) / math.tan(math.radians(self.fov_y) / 2)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates ``(N, 2)`` and depths ``(N,)`` (metres in front of the camera)."""
        cam = points @ self.view[:3, :3].T + self.view[:3, 3]
        depth = -cam[:, 2]
        safe = np.where(depth > 1e-6, depth, 1e-6)
        u = self.width / 2 + self.focal * cam[:, 0] / safe
        v = self.height / 2 - self.focal * cam[:, 1] / safe
        return np.stack([u, v], axis=1), depth

    def plane_homography(self, z: float) -> np.ndarray:
        """3x3 map from world ``(x, y, 1)`` on the plane at height ``z`` to pixel indices
        (pixel ``i`` has its centre at ``i + 0.5`` in :meth:`project` coordinates)."""
        flip = np.diag([1.0, -1.0, -1.0])  # OpenGL camera -> OpenCV camera axes
        rot = flip @ self.view[:3, :3]
        trans = flip @ self.view[:3, 3]
        k = np.array([[self.focal, 0.0, self.width / 2 - 0.5],
                      [0.0, self.focal, self.height / 2 - 0.5], [0.0, 0.0, 1.0]])
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
        u = self.width / 2 + self.focal * c[:, 0] / d - 0.5
        v = self.height / 2 - self.focal * c[:, 1] / d - 0.5
        return np.stack([u, v], axis=1)

    def intrinsics(self) -> tuple[float, float, float, float]:
        """``(fx, fy, cx, cy)`` in pixels, OpenCV convention (as :meth:`plane_homography`)."""
        return (float(self.focal), float(self.focal), self.width / 2 - 0.5,
                self.height / 2 - 0.5)

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
        return {"eye": _r(self.eye), "target": _r(self.target), "roll": _r(self.roll),
                "fov_y": _r(self.fov_y), "width": self.width, "height": self.height}


# ---------------------------------------------------------------------------------------
# Renderer
# ---------------------------------------------------------------------------------------
class SceneRenderer(MeshBodies):
    """Owns a pybullet ``DIRECT`` client with the objects of a models folder, for
    :func:`render_scene`.

    Each model is loaded on first use (mesh plus a texture downsampled to ``texture_size``,
    via :func:`~vl_distill_ros.sim.render.prepare_mesh_files`) and cached as a hidden
    body; at most ``max_bodies`` are kept. Use it as a context manager or call :meth:`close`.

    Args:
        models_dir: folder with one ``<key>/textured.obj`` per object (YCB google_16k).
        texture_size: longest side object textures are downsampled to.
        max_bodies: cap on cached pybullet bodies (at least 10, the most one scene places).
    """

    _closed_message = "the scene renderer is closed"

    def __init__(self, models_dir: str | Path, texture_size: int = 512,
                 max_bodies: int = 64) -> None:
        super().__init__(models_dir, texture_size, max(10, int(max_bodies)),
                         tmp_prefix="vl_distill_scene_")
        self._visible: set[str] = set()
        self._geometry: dict[str, dict[str, Any]] = {}

    def _forget_visible(self) -> None:
        self._visible.clear()

    # -- models -----------------------------------------------------------------------------
    def geometry(self, key: str) -> dict[str, Any]:
        """Footprint of ``key`` in its model frame: ``centre_xy``, ``half`` (xy half extents),
        ``zmin``, ``height``, ``radius`` and a vertex subsample ``points`` (model frame)."""
        if key not in self._geometry:
            verts = load_mesh_vertices(self._models[key])
            lo, hi = verts.min(axis=0), verts.max(axis=0)
            centre = 0.5 * (lo + hi)
            step = max(1, len(verts) // 4000)
            self._geometry[key] = {
                "centre_xy": centre[:2].copy(), "half": np.maximum(0.5 * (hi - lo)[:2], 1e-3),
                "zmin": float(lo[2]), "height": float(max(hi[2] - lo[2], 1e-3)),
                "radius": float(max(np.linalg.norm(0.5 * (hi - lo)), 1e-3)),
                "points": np.ascontiguousarray(verts[::step]),
            }
        return self._geometry[key]

    def _evict(self) -> None:
        """Least recently used first, but never a visible body (the scene being set up)."""
        p, cid = self._p, self._require_client()
        while len(self._bodies) > self.max_bodies:
            old_key, old_body = next(iter(self._bodies.items()))
            if old_key in self._visible:
                break
            self._bodies.pop(old_key)
            p.removeBody(old_body, physicsClientId=cid)

    def _show(self, poses: dict[str, tuple[np.ndarray, float]]) -> dict[str, int]:
        """Make exactly the keys of ``poses`` visible, at ``(position, yaw)``; body ids."""
        p, cid = self._p, self._require_client()
        for key in list(self._visible - set(poses)):
            if key in self._bodies:
                p.changeVisualShape(self._bodies[key], -1, rgbaColor=[1, 1, 1, 0],
                                    physicsClientId=cid)
            self._visible.discard(key)
        ids = {}
        for key, (pos, yaw) in poses.items():
            self._visible.add(key)  # before loading more, so LRU eviction keeps it
            body = self._body(key)
            quat = p.getQuaternionFromEuler([0.0, 0.0, float(yaw)])
            p.resetBasePositionAndOrientation(body, [float(v) for v in pos], quat,
                                              physicsClientId=cid)
            p.changeVisualShape(body, -1, rgbaColor=[1, 1, 1, 1], physicsClientId=cid)
            ids[key] = body
        return ids

    def _render_objects(self, cam: _Camera, layout: _Layout
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """TinyRenderer pass of the visible objects: RGB uint8, segmentation (body ids) and
        the OpenGL depth buffer (float32 in [0, 1])."""
        p, cid = self._p, self._require_client()
        _, _, px, zbuf, seg = p.getCameraImage(
            cam.width, cam.height, viewMatrix=cam.view.T.reshape(-1).tolist(),
            projectionMatrix=cam.proj.T.reshape(-1).tolist(),
            lightDirection=(layout.light.direction * 10.0).tolist(),
            lightColor=layout.light.colour.tolist(), lightDistance=10.0, shadow=0,
            lightAmbientCoeff=layout.light.ambient, lightDiffuseCoeff=layout.light.diffuse,
            lightSpecularCoeff=layout.light.specular, renderer=p.ER_TINY_RENDERER,
            physicsClientId=cid)
        rgb = np.asarray(px, dtype=np.uint8).reshape(cam.height, cam.width, 4)[..., :3]
        return (rgb, np.asarray(seg, dtype=np.int32).reshape(cam.height, cam.width),
                np.asarray(zbuf, dtype=np.float32).reshape(cam.height, cam.width))

    def render(self, objects: Sequence[str], rng: np.random.Generator,
               spec: SceneSpec | None = None) -> SceneFrame:
        """Shorthand for :func:`render_scene` with this renderer."""
        return render_scene(self, objects, rng, spec)


# ---------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------
def _obb_overlap(a: tuple[np.ndarray, float, np.ndarray], b: tuple[np.ndarray, float, np.ndarray],
                 gap: float) -> bool:
    """Whether two oriented rectangles ``(centre, yaw, half)``, grown by ``gap / 2``, overlap
    (separating axis test)."""
    rects = []
    for centre, yaw, half in (a, b):
        c, s = math.cos(yaw), math.sin(yaw)
        axes = np.array([[c, s], [-s, c]])
        rects.append((np.asarray(centre), axes, np.asarray(half) + gap / 2))
    d = rects[1][0] - rects[0][0]
    for _, axes, _ in rects:
        for axis in axes:
            ra = sum(h * abs(axis @ ax) for h, ax in zip(rects[0][2], rects[0][1]))
            rb = sum(h * abs(axis @ ax) for h, ax in zip(rects[1][2], rects[1][1]))
            if abs(d @ axis) > ra + rb:
                return False
    return True


def _footprint_hull(g: dict[str, Any], yaw: float) -> tuple[np.ndarray, np.ndarray]:
    """Convex hull ``(K, 2)`` of a model's footprint turned by ``yaw``, about the centre of
    its footprint box (where :func:`_sample_layout` puts ``xy``), and its outline sampled
    every 2 mm or finer (vertex distances then approximate hull distances)."""
    c, s = math.cos(yaw), math.sin(yaw)
    pts = (g["points"][:, :2] - g["centre_xy"]) @ np.array([[c, s], [-s, c]])
    hull = cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    nxt = np.roll(hull, -1, axis=0)
    steps = np.maximum(1, np.ceil(np.linalg.norm(nxt - hull, axis=1) / 0.002)).astype(int)
    return hull, np.concatenate([a + (b - a) * np.arange(n)[:, None] / n
                                 for a, b, n in zip(hull, nxt, steps)])


def _hulls_apart(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray],
                 gap: float) -> bool:
    """Whether two footprint hulls (:func:`_footprint_hull` pairs, placed) are disjoint
    and their outlines at least ``gap`` apart."""
    area, _ = cv2.intersectConvexConvex(a[0].astype(np.float32), b[0].astype(np.float32))
    if area > 0:
        return False
    d2 = ((a[1][:, None, :] - b[1][None, :, :]) ** 2).sum(axis=2)
    return float(math.sqrt(d2.min())) >= gap


def _contact_pose(renderer: SceneRenderer, g: dict[str, Any], placed: Sequence[_Placed],
                  rects: Sequence[tuple[np.ndarray, float, np.ndarray]], table_half: np.ndarray,
                  rng: np.random.Generator, spec: SceneSpec) -> tuple[np.ndarray, float] | None:
    """``(xy, yaw)`` of an object with geometry ``g`` put in contact with a random placed
    object (its footprint hull ``contact_gap_m`` from the partner's, found by bisection
    along a random direction), clear of the others by ``min_gap_m``; ``None`` after 20
    tries."""
    for _ in range(20):
        j = int(rng.integers(len(placed)))
        partner = placed[j]
        yaw = float(rng.uniform(0.0, 2 * math.pi))
        ang = float(rng.uniform(0.0, 2 * math.pi))
        gap = float(rng.uniform(*spec.contact_gap_m))
        direction = np.array([math.cos(ang), math.sin(ang)])
        hull, outline = _footprint_hull(g, yaw)
        theirs = [v + partner.xy for v in _footprint_hull(renderer.geometry(partner.key),
                                                          partner.yaw)]
        lo, hi = 0.0, 2.0 * (g["radius"] + partner.radius) + 0.01
        for _ in range(24):  # hull distance is convex in the offset: bisect its rise
            mid = 0.5 * (lo + hi)
            at = partner.xy + mid * direction
            if not _hulls_apart((hull + at, outline + at), theirs, gap):
                lo = mid
            else:
                hi = mid
        xy = partner.xy + hi * direction
        if np.any(np.abs(xy) > table_half - g["radius"] - 0.02):
            continue
        rect = (xy, yaw, g["half"])
        if not any(_obb_overlap(rect, other, spec.min_gap_m)
                   for k, other in enumerate(rects) if k != j):
            return xy, yaw
    return None


def _sample_layout(renderer: SceneRenderer, pool: Sequence[str], rng: np.random.Generator,
                   spec: SceneSpec) -> _Layout:
    lo, hi = spec.objects_per_scene
    count = min(int(rng.integers(lo, hi + 1)), len(pool))
    keys = [str(pool[i]) for i in rng.choice(len(pool), size=count, replace=False)]

    table_half = np.array([rng.uniform(*spec.table_length_m), rng.uniform(*spec.table_width_m)]) / 2
    area = np.array(spec.placement_area_m, float) / 2
    placed: list[_Placed] = []
    rects: list[tuple[np.ndarray, float, np.ndarray]] = []
    for key in keys:
        g = renderer.geometry(key)
        pose = None
        if placed and spec.contact_prob > 0 and rng.uniform() < spec.contact_prob:
            pose = _contact_pose(renderer, g, placed, rects, table_half, rng, spec)
        for attempt in range(0 if pose is not None else 400):
            grow = 1.0 + 0.1 * (attempt // 40)  # widen the area if it is crowded
            region = np.minimum(area * grow, table_half - g["radius"] - 0.02)
            region = np.maximum(region, 0.0)
            xy = rng.uniform(-region, region)
            yaw = float(rng.uniform(0.0, 2 * math.pi))
            rect = (xy, yaw, g["half"])
            if not any(_obb_overlap(rect, other, spec.min_gap_m) for other in rects):
                pose = xy, yaw
                break
        if pose is None:
            continue  # no room: leave this object out
        xy, yaw = pose
        rect = (xy, yaw, g["half"])
        c, s = math.cos(yaw), math.sin(yaw)
        rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        offset = np.array([g["centre_xy"][0], g["centre_xy"][1], g["zmin"]])
        base = np.array([xy[0], xy[1], 0.0]) - rot @ offset
        points = g["points"] @ rot.T + base
        rects.append(rect)
        placed.append(_Placed(key=key, body=-1, xy=xy, yaw=yaw, half=g["half"],
                              height=g["height"], radius=g["radius"], points=points, base=base))

    light = _Light.sample(rng)
    top_gain = light.shade(np.array([0.0, 0.0, 1.0]))
    wall = rng.uniform(0.45, 0.9) * rng.uniform(0.85, 1.0, size=3)
    kind = str(rng.choice(spec.table_kinds))
    tex = make_background(kind, _TABLE_TEXELS, rng, noise_sigma=0.0)
    if kind == "noise":  # a mottled cloth, not a tie-dye: keep a third of the contrast
        mean = tex.reshape(-1, 3).mean(axis=0)
        tex = np.clip(mean + (tex - mean) * 0.35, 0, 255).astype(np.uint8)
    table_colour = tex.reshape(-1, 3).mean(axis=0) / 255.0
    tex = _gain(tex, top_gain)
    offset = rng.uniform(0.0, 5.0, size=2)
    if kind == "wood":
        # planks: the grain runs along the table, planks repeat across it with a dark joint
        span = np.array([rng.uniform(*_TABLE_SPANS[kind][0]), rng.uniform(*_TABLE_SPANS[kind][1])])
        tex[:2] = (tex[:2].astype(np.float32) * 0.55).astype(np.uint8)
        tile = tex
    elif kind in _TABLE_SPANS:  # a fine, seamless weave
        span = 2 * np.array([rng.uniform(*_TABLE_SPANS[kind][0]),
                             rng.uniform(*_TABLE_SPANS[kind][1])])  # 2x2 mirrored copies
        tile = _mirror_tile(tex)
    else:  # one copy over the whole top (patterns would show seams if repeated)
        span = 2.0 * table_half * 1.02
        offset = table_half * 1.01
        tile = tex
    floor_kind = str(rng.choice(FLOOR_KINDS))
    floor = make_background(floor_kind, _FLOOR_TEXELS, rng, noise_sigma=0.0)
    floor = cv2.GaussianBlur(floor, (0, 0), 1.5)  # far away and out of focus
    floor = np.clip(floor.astype(np.float32) * rng.uniform(0.5, 0.9), 0, 255).astype(np.uint8)

    return _Layout(
        placed=placed, table_half=table_half, table_thickness=float(rng.uniform(0.025, 0.05)),
        table_kind=kind, table_tile=tile,
        table_scale=np.array(tile.shape[1::-1], float) / span,
        table_offset=offset, table_colour=table_colour,
        floor_kind=floor_kind, floor_tile=_mirror_tile(_gain(floor, top_gain)),
        floor_scale=2 * _FLOOR_TEXELS / float(rng.uniform(2.0, 4.0)), wall_colour=wall,
        light=light, furniture=_sample_furniture(int(spec.furniture), table_half, rng))


@dataclass
class _Furniture:
    """An axis-aligned box standing on the floor beyond the table."""

    lo: np.ndarray        # (3,) lowest corner (world)
    hi: np.ndarray        # (3,) highest corner (world)
    colour: np.ndarray    # RGB in [0, 1]


def _sample_furniture(count: int, table_half: np.ndarray,
                      rng: np.random.Generator) -> list[_Furniture]:
    """``count`` pieces of furniture, each just past a random edge of the table (draws
    nothing from ``rng`` when ``count`` is 0)."""
    out = []
    for _ in range(count):
        half = rng.uniform(*_FURNITURE_HALF, size=2)
        side = int(rng.integers(4))
        axis, sign = side % 2, (1.0 if side < 2 else -1.0)
        centre = np.zeros(2)
        centre[axis] = sign * (table_half[axis] + rng.uniform(*_FURNITURE_GAP) + half[axis])
        across = table_half[1 - axis] + 0.3
        centre[1 - axis] = rng.uniform(-across, across)
        lo = np.clip(centre - half, -_ROOM_RADIUS + 0.01, _ROOM_RADIUS - 0.01)
        hi = np.clip(centre + half, -_ROOM_RADIUS + 0.01, _ROOM_RADIUS - 0.01)
        top = float(rng.uniform(*_FURNITURE_TOP))
        out.append(_Furniture(lo=np.array([lo[0], lo[1], _FLOOR_Z]),
                              hi=np.array([hi[0], hi[1], top]),
                              colour=rng.uniform(0.15, 0.85, size=3)))
    return out


def _furniture_hits(cam: _Camera, layout: _Layout) -> tuple[np.ndarray, np.ndarray]:
    """Depth (m along the optical axis; inf: none) of the nearest furniture face along each
    pixel's ray, and that face's Lambert-shaded RGB in [0, 1]."""
    rays = cam.rays()
    eye = np.asarray(cam.eye, np.float64)
    best = np.full(rays.shape[:2], np.inf)
    colour = np.zeros((*rays.shape[:2], 3), np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        for piece in layout.furniture:
            for axis in range(3):
                for value, sign in ((piece.lo[axis], -1.0), (piece.hi[axis], 1.0)):
                    if (eye[axis] - value) * sign <= 0:
                        continue  # a face turned away from the camera
                    t, ok = _face_hits(eye, rays, cam.near, axis, value, piece.lo, piece.hi)
                    ok &= t < best
                    normal = np.zeros(3)
                    normal[axis] = sign
                    best = np.where(ok, t, best)
                    colour[ok] = np.clip(piece.colour * layout.light.shade(normal), 0.0, 1.0)
    return best, colour


def _fits(cam: _Camera, placed: Sequence[_Placed], margin: float) -> bool:
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


def _sample_main_camera(layout: _Layout, rng: np.random.Generator, spec: SceneSpec) -> _Camera:
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
        cam = _Camera(eye=eye, target=target, roll=float(rng.uniform(*spec.roll_deg)),
                      fov_y=float(rng.uniform(*spec.fov_y_deg)), width=int(spec.width),
                      height=int(spec.height))
        if _fits(cam, layout.placed, 0.02):
            break
    assert cam is not None
    return cam


def _sample_hand_camera(layout: _Layout, target: _Placed, rng: np.random.Generator,
                        spec: SceneSpec) -> _Camera:
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
        cam = _Camera(eye=eye, target=aim, roll=float(rng.uniform(-10.0, 10.0)), fov_y=fov,
                      width=int(spec.hand_width), height=int(spec.hand_height), near=0.01)
        # the camera must not sit inside (or right next to) another object
        if all(np.linalg.norm(eye - o.centre) > o.radius + 0.03 for o in layout.placed
               if o is not target):
            break
    assert cam is not None
    return cam


# ---------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------
def _mirror_tile(tex: np.ndarray) -> np.ndarray:
    """A seamless tile (twice the size) of ``tex`` and its mirror images, for wrap-around
    sampling without visible seams."""
    top = np.concatenate([tex, tex[:, ::-1]], axis=1)
    return np.ascontiguousarray(np.concatenate([top, top[::-1]], axis=0))


def _splat_mask(uv: np.ndarray, shape: tuple[int, int], spacing_factor: float = 2.0,
                max_kernel: int = 41) -> tuple[np.ndarray, int]:
    """Silhouette of a dense point set: points splatted into a mask, gaps closed with a
    kernel sized from the point spacing. Returns the ``shape`` mask and the kernel size."""
    h, w = shape
    mask = np.zeros((h, w), np.uint8)
    pts = np.round(uv).astype(np.int64)
    ok = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
    pts = pts[ok]
    if len(pts) < 3:
        return mask, 1
    mask[pts[:, 1], pts[:, 0]] = 1
    hull = cv2.convexHull(pts.astype(np.int32).reshape(-1, 1, 2))
    area = max(float(cv2.contourArea(hull)), 1.0)
    spacing = math.sqrt(area / max(len(pts) / 2.0, 1.0))
    k = int(min(max_kernel, max(3, 2 * math.ceil(spacing_factor * spacing / 2) + 1)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    return mask, k


def _amodal_pixels(cam: _Camera, obj: _Placed) -> int:
    """Pixels of the object's whole silhouette (as if unoccluded and the image were
    unbounded), from its projected vertices."""
    uv, depth = cam.project(obj.points)
    uv = uv[depth > cam.near]
    if len(uv) < 3:
        return 0
    lo = np.floor(uv.min(axis=0)).astype(int) - 25
    hi = np.ceil(uv.max(axis=0)).astype(int) + 25
    size = hi - lo
    if size[0] * size[1] > 16 * cam.width * cam.height:
        return 0
    mask, _ = _splat_mask(uv - lo, (int(size[1]), int(size[0])), spacing_factor=1.6)
    return int(mask.sum())


def _gain(tile: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """uint8 RGB ``tile`` times an RGB ``gain`` (rounded, saturating)."""
    return cv2.multiply(tile, (float(gain[0]), float(gain[1]), float(gain[2]), 0.0))


def _fill(img: np.ndarray, poly: np.ndarray | None, colour: Any) -> None:
    if poly is not None:
        cv2.fillPoly(img, [np.round(poly * 16).astype(np.int32)], colour,
                     lineType=cv2.LINE_AA, shift=4)


def _paint_plane(img: np.ndarray, cam: _Camera, poly: np.ndarray, tile: np.ndarray,
                 scale: np.ndarray, offset: np.ndarray, z: float,
                 shadow: tuple[np.ndarray, tuple[int, int], float] | None = None,
                 interpolation: int = cv2.INTER_LINEAR) -> None:
    """Paint the part of the plane at height ``z`` inside the pixel polygon ``poly`` onto
    ``img`` (in place), covered with the wrapped ``tile`` (``scale`` texels per metre, origin
    shifted by ``offset`` metres), darkened by an optional shadow ``(coverage, (x, y), dim)``.
    Only the polygon's bounding box is warped."""
    h, w = img.shape[:2]
    x0 = int(np.clip(np.floor(poly[:, 0].min()), 0, w))
    x1 = int(np.clip(np.ceil(poly[:, 0].max()) + 1, 0, w))
    y0 = int(np.clip(np.floor(poly[:, 1].min()), 0, h))
    y1 = int(np.clip(np.ceil(poly[:, 1].max()) + 1, 0, h))
    if x0 >= x1 or y0 >= y1:
        return
    sx, sy = float(scale[0]), float(scale[1])
    to_plane = np.array([[1.0 / sx, 0.0, -offset[0] + 0.5 / sx],
                         [0.0, 1.0 / sy, -offset[1] + 0.5 / sy],
                         [0.0, 0.0, 1.0]])  # texel index -> world xy
    shift = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
    homography = shift @ cam.plane_homography(z) @ to_plane
    patch = cv2.warpPerspective(tile, homography, (x1 - x0, y1 - y0), flags=interpolation,
                                borderMode=cv2.BORDER_WRAP)
    if shadow is not None:
        coverage, (sx0, sy0), dim = shadow
        ax0, ay0 = max(sx0, x0), max(sy0, y0)
        ax1, ay1 = min(sx0 + coverage.shape[1], x1), min(sy0 + coverage.shape[0], y1)
        if ax0 < ax1 and ay0 < ay1:
            cov = coverage[ay0 - sy0:ay1 - sy0, ax0 - sx0:ax1 - sx0]
            roi = patch[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0]
            roi[:] = (roi.astype(np.float32) * (1.0 - dim * cov)[..., None]).astype(np.uint8)
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    _fill(mask, poly - [x0, y0], 1)
    np.copyto(img[y0:y1, x0:x1], patch, where=mask[..., None].astype(bool))


def _draw_environment(cam: _Camera, layout: _Layout) -> np.ndarray:
    """uint8 RGB ``(H, W, 3)`` of wall, floor, table sides and table top with shadows."""
    h, w = cam.height, cam.width
    light = layout.light
    rows = np.linspace(1.05, 0.85, h, dtype=np.float32)[:, None]
    wall = np.clip(rows * layout.wall_colour[None, :].astype(np.float32) * 255, 0, 255)
    img = np.ascontiguousarray(np.broadcast_to(wall.astype(np.uint8)[:, None, :], (h, w, 3)))

    # floor: a square room floor far below the table
    r = _ROOM_RADIUS
    floor_poly = cam.polygon(np.array([(-r, -r, _FLOOR_Z), (r, -r, _FLOOR_Z), (r, r, _FLOOR_Z),
                                       (-r, r, _FLOOR_Z)]))
    if floor_poly is not None:
        _paint_plane(img, cam, floor_poly, layout.floor_tile,
                     np.array([layout.floor_scale] * 2), np.zeros(2), _FLOOR_Z,
                     interpolation=cv2.INTER_NEAREST)

    # table side faces that face the camera (drawn before the top, which always wins)
    lx, ly = layout.table_half
    t = layout.table_thickness
    for normal, corners in (
            ((1.0, 0, 0), [(lx, -ly, 0), (lx, ly, 0), (lx, ly, -t), (lx, -ly, -t)]),
            ((-1.0, 0, 0), [(-lx, -ly, 0), (-lx, ly, 0), (-lx, ly, -t), (-lx, -ly, -t)]),
            ((0, 1.0, 0), [(-lx, ly, 0), (lx, ly, 0), (lx, ly, -t), (-lx, ly, -t)]),
            ((0, -1.0, 0), [(-lx, -ly, 0), (lx, -ly, 0), (lx, -ly, -t), (-lx, -ly, -t)])):
        n = np.array(normal)
        pts = np.array(corners, float)
        if (cam.eye - pts[0]) @ n <= 0:
            continue
        colour = np.clip(layout.table_colour * 0.8 * light.shade(n) * 255, 0, 255)
        _fill(img, cam.polygon(pts), colour.tolist())

    # table top: texture through the camera's plane homography, Lambert-shaded, shadows
    top_poly = cam.polygon(np.array([(-lx, -ly, 0.0), (lx, -ly, 0.0), (lx, ly, 0.0),
                                     (-lx, ly, 0.0)]))
    if top_poly is not None:
        shadow = None
        found = _shadow_mask(cam, layout) if layout.placed else None
        if found is not None:
            direct = light.diffuse * max(float(light.direction[2]), 0.0)
            dim = light.shadow_strength * direct / (light.ambient + direct)
            shadow = (found[0], found[1], dim)
        _paint_plane(img, cam, top_poly, layout.table_tile, layout.table_scale,
                     layout.table_offset, 0.0, shadow)
    return img


def _shadow_mask(cam: _Camera, layout: _Layout) -> tuple[np.ndarray, tuple[int, int]] | None:
    """Soft shadow coverage in [0, 1] of the objects on the table plane, as a crop of the
    image and its top-left corner ``(x, y)``; ``None`` when no shadow is in view."""
    light = layout.light.direction
    if light[2] <= 0.05:
        return None
    scale = 0.5  # drawn at half resolution: shadows are soft anyway
    hh, hw = max(int(cam.height * scale), 1), max(int(cam.width * scale), 1)
    mask = np.zeros((hh, hw), np.float32)
    for obj in layout.placed:
        pts = obj.points
        on_table = pts - np.outer(pts[:, 2] / light[2], light)  # along the light onto z=0
        uv, depth = cam.project(on_table)
        uv = uv[depth > cam.near] * scale
        if len(uv) < 3:
            continue
        lo = np.floor(uv.min(axis=0)).astype(int) - 20
        hi = np.ceil(uv.max(axis=0)).astype(int) + 20
        size = hi - lo
        if size[0] * size[1] > 4 * hh * hw:
            continue
        local, _ = _splat_mask(uv - lo, (int(size[1]), int(size[0])))
        x0, y0 = max(lo[0], 0), max(lo[1], 0)
        x1, y1 = min(hi[0], hw), min(hi[1], hh)
        if x0 < x1 and y0 < y1:
            np.maximum(mask[y0:y1, x0:x1], local[y0 - lo[1]:y1 - lo[1], x0 - lo[0]:x1 - lo[0]],
                       out=mask[y0:y1, x0:x1])
    box = bbox_from_mask(mask > 0)
    if box is None:
        return None
    sigma = max(0.5, layout.light.shadow_blur * cam.focal * scale / max(
        float(np.linalg.norm(cam.eye - cam.target)), 0.1))
    pad = int(3 * sigma) + 2
    bx0, by0 = max(box[0] - pad, 0), max(box[1] - pad, 0)
    bx1, by1 = min(box[0] + box[2] + pad, hw), min(box[1] + box[3] + pad, hh)
    crop = cv2.GaussianBlur(mask[by0:by1, bx0:bx1], (0, 0), sigma)
    x0, y0 = int(bx0 / scale), int(by0 / scale)
    x1, y1 = min(int(bx1 / scale), cam.width), min(int(by1 / scale), cam.height)
    crop = cv2.resize(crop, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    return crop, (x0, y0)


def bbox_from_mask(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x, y, w, h)`` of the true pixels of a 2-D boolean mask, or ``None`` if empty."""
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    x0, x1, y0, y1 = int(cols[0]), int(cols[-1]), int(rows[0]), int(rows[-1])
    return x0, y0, x1 - x0 + 1, y1 - y0 + 1


@functools.lru_cache(maxsize=8)
def _noise_bank(height: int, width: int) -> np.ndarray:
    """A fixed field of unit Gaussian noise, a little larger than the image; frames take a
    random window of it (drawing fresh normals for every pixel costs ~20 ms a frame)."""
    bank = np.random.default_rng(0x5CE4E).standard_normal(
        (height + _NOISE_PAD, width + _NOISE_PAD, 3), dtype=np.float32)
    bank.setflags(write=False)
    return bank


def _post_process(img: np.ndarray, rng: np.random.Generator, spec: SceneSpec) -> np.ndarray:
    """Camera-like finish of a uint8 RGB image: slight blur, illumination fall-off and
    gradient, white balance and sensor noise; returns uint8."""
    h, w = img.shape[:2]
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.7))
    ys = (np.arange(h, dtype=np.float32) - h / 2) / max(h, w)
    xs = (np.arange(w, dtype=np.float32) - w / 2) / max(h, w)
    ang = rng.uniform(0.0, 2 * math.pi)
    grad = 1.0 + rng.uniform(0.0, 0.25) * (xs[None, :] * math.cos(ang)
                                           + ys[:, None] * math.sin(ang))
    vignette = 1.0 - rng.uniform(0.05, 0.3) * (xs[None, :] ** 2 + ys[:, None] ** 2)
    gains = rng.uniform(0.95, 1.05, size=3).astype(np.float32)
    field = (grad * vignette).astype(np.float32)
    ox, oy = (int(v) for v in rng.integers(0, _NOISE_PAD + 1, size=2))
    sigma = np.float32(rng.uniform(*spec.noise_sigma))
    noise = _noise_bank(h, w)[oy:oy + h, ox:ox + w]
    out = cv2.multiply(img.astype(np.float32), cv2.merge([field * g for g in gains]))
    out = cv2.scaleAdd(noise, float(sigma), out)
    return cv2.convertScaleAbs(out)  # rounds and saturates to uint8


def _environment_depth(cam: _Camera, layout: _Layout) -> np.ndarray:
    """Depth (m, float32 ``(H, W)``) of the drawn environment: the nearest of the table top,
    its side faces, the floor and the room's walls along each pixel's ray (0: none)."""
    rays = cam.rays()
    eye = np.asarray(cam.eye, np.float64)
    lx, ly = (float(v) for v in layout.table_half)
    t_th, r = float(layout.table_thickness), _ROOM_RADIUS
    best = np.full(rays.shape[:2], np.inf)
    # (axis, plane value, lowest and highest corner; the axis' own entry is unused): table
    # top, sides, floor, walls
    planes = [(2, 0.0, (-lx, -ly, 0.0), (lx, ly, 0.0)), (2, _FLOOR_Z, (-r, -r, 0.0), (r, r, 0.0))]
    for sign in (-1.0, 1.0):
        planes += [(0, sign * lx, (0.0, -ly, -t_th), (0.0, ly, 0.0)),
                   (1, sign * ly, (-lx, 0.0, -t_th), (lx, 0.0, 0.0)),
                   (0, sign * r, (0.0, -r, _FLOOR_Z), (0.0, r, np.inf)),
                   (1, sign * r, (-r, 0.0, _FLOOR_Z), (r, 0.0, np.inf))]
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis, value, lo, hi in planes:
            t, ok = _face_hits(eye, rays, cam.near, axis, value, lo, hi)
            best = np.where(ok & (t < best), t, best)
    return np.where(np.isfinite(best), best, 0.0).astype(np.float32)


def _face_hits(eye: np.ndarray, rays: np.ndarray, near: float, axis: int, value: float,
               lo: Sequence[float], hi: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Ray parameter of each pixel's ray where it meets the plane ``axis = value``, and
    whether it meets there, beyond ``near``, the axis-aligned face whose other two
    coordinates lie within ``lo`` and ``hi`` (call under ``np.errstate``: rays parallel to
    the plane divide by zero)."""
    t = (value - eye[axis]) / rays[..., axis]
    hit = eye + t[..., None] * rays
    ok = t > near
    for other in (i for i in range(3) if i != axis):
        ok &= (hit[..., other] >= lo[other]) & (hit[..., other] <= hi[other])
    return t, ok


def _scene_layers(renderer: SceneRenderer, layout: _Layout, cam: _Camera, want_depth: bool
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, tuple | None]:
    """The objects' RGB and segmentation seen from ``cam`` (furniture in front of an object
    takes its pixels), the depth in metres (with ``want_depth`` or furniture, else None) and,
    with furniture, where it shows and its shade."""
    rgb, seg, zbuf = renderer._render_objects(cam, layout)
    depth = _environment_depth(cam, layout) if want_depth or layout.furniture else None
    furniture = None
    if layout.furniture:
        assert depth is not None
        near, shade = _furniture_hits(cam, layout)
        shown = near < np.where(depth > 0, depth, np.inf)
        seg = np.where((seg >= 0) & shown & (near < cam.linear_depth(zbuf)), -1, seg)
        np.copyto(depth, near.astype(np.float32), where=shown)
        furniture = (shown, shade)
    if depth is not None:
        np.copyto(depth, cam.linear_depth(zbuf), where=seg >= 0)
    return rgb, seg, depth, furniture


def _depth_camera_view(renderer: SceneRenderer, layout: _Layout, cam: _Camera,
                       spec: SceneSpec) -> tuple[np.ndarray, tuple, tuple]:
    """The depth image of a separate depth camera beside ``cam`` (see
    :attr:`SceneSpec.depth_camera`), its ``(fx, fy, cx, cy, width, height)`` and its pose in
    ``cam``'s optical frame. Draws nothing from any random generator."""
    shift = float(spec.depth_camera_baseline_m) * cam.view[0, :3]   # the camera's x, in world
    width, height = (int(v) for v in spec.depth_camera_size)
    dcam = _Camera(eye=np.asarray(cam.eye, float) + shift,
                   target=np.asarray(cam.target, float) + shift, roll=cam.roll,
                   fov_y=float(spec.depth_camera_fov_y_deg), width=width, height=height,
                   near=cam.near, far=cam.far)
    _, _, depth, _ = _scene_layers(renderer, layout, dcam, True)
    assert depth is not None
    pose = (float(spec.depth_camera_baseline_m), 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    return depth, (*dcam.intrinsics(), width, height), pose


def _render_camera(renderer: SceneRenderer, layout: _Layout, ids: dict[str, int],
                   cam: _Camera, rng: np.random.Generator, spec: SceneSpec
                   ) -> tuple[np.ndarray, list[SceneObject], dict[str, Any], np.ndarray | None]:
    """One image of the laid-out scene from ``cam``: the image, its visible objects (all
    placed objects with at least ``min_visible_pixels``), per-object pixel statistics and,
    with ``spec.depth``, the registered depth in metres."""
    rgb, seg, depth, furniture = _scene_layers(renderer, layout, cam, spec.depth)
    img = _draw_environment(cam, layout)
    if furniture is not None:
        shown, shade = furniture
        np.copyto(img, (shade * 255 + 0.5).astype(np.uint8), where=shown[..., None])
    depth = depth if spec.depth else None
    np.copyto(img, rgb, where=(seg >= 0)[..., None])
    image = _post_process(img, rng, spec)
    objects: list[SceneObject] = []
    stats: dict[str, Any] = {}
    for obj in layout.placed:
        mask = (seg == ids[obj.key]).view(np.uint8)
        visible = int(cv2.countNonZero(mask))
        full = _amodal_pixels(cam, obj) if visible else 0
        frac = min(1.0, visible / full) if full > 0 else (1.0 if visible else 0.0)
        stats[obj.key] = {"visible_pixels": visible, "visible_frac": round(frac, 4)}
        if visible >= spec.min_visible_pixels:
            x, y, w, h = cv2.boundingRect(mask)
            objects.append(SceneObject(obj.key, (int(x), int(y), int(w), int(h)), round(frac, 4)))
    return image, objects, stats, depth


# ---------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------
def render_scene(renderer: SceneRenderer, objects: Sequence[str], rng: np.random.Generator,
                 spec: SceneSpec | None = None) -> SceneFrame:
    """Render one tabletop frame (and optionally a hand-camera close-up).

    Args:
        renderer: an open :class:`SceneRenderer`.
        objects: the pool of object keys to draw from; each scene places
            ``spec.objects_per_scene`` distinct keys of it (all of them when the pool is
            smaller). Pass exactly the keys wanted with ``objects_per_scene=(n, n)`` to
            place a fixed set.
        rng: the only source of randomness: equal generator states give identical frames.
        spec: scene settings (defaults: :class:`SceneSpec`).

    Returns:
        A :class:`SceneFrame`. Objects whose visible pixels fall below
        ``spec.min_visible_pixels`` are not listed (``meta["placed"]`` lists every placed
        object with its pixel statistics).

    Raises:
        RenderError: empty pool, unknown keys, bad spec or a closed renderer.
    """
    spec = spec or SceneSpec()
    spec.validate()
    pool = list(dict.fromkeys(objects))
    if not pool:
        raise RenderError("no objects to place: give at least one object key")
    renderer.check_keys(pool)

    layout = _sample_layout(renderer, pool, rng, spec)
    poses = {o.key: (o.base, o.yaw) for o in layout.placed}
    ids = renderer._show(poses)
    for o in layout.placed:
        o.body = ids[o.key]

    best = None
    for attempt in range(int(spec.camera_attempts)):
        cam = _sample_main_camera(layout, rng, spec)
        image, found, stats, depth = _render_camera(renderer, layout, ids, cam, rng, spec)
        score = (len(found), min((o.visible_frac for o in found), default=0.0))
        if best is None or score > best[0]:
            best = (score, cam, image, found, stats, attempt + 1, depth)
        if len(found) == len(layout.placed) and all(
                o.visible_frac >= spec.min_visible_fraction for o in found):
            break
    assert best is not None
    _, cam, image, found, stats, attempts, depth = best
    depth_camera = depth_pose = None
    if spec.depth and spec.depth_camera:
        depth, depth_camera, depth_pose = _depth_camera_view(renderer, layout, cam, spec)

    hand_image, hand_objects, hand_target, hand_meta = None, [], None, None
    hand_depth, hcam = None, None
    if spec.hand_camera and layout.placed:
        candidates = [o for o in layout.placed if o.key in {f.key for f in found}] \
            or list(layout.placed)
        target = candidates[int(rng.integers(len(candidates)))]
        hcam = _sample_hand_camera(layout, target, rng, spec)
        hand_image, hand_objects, hstats, hand_depth = _render_camera(renderer, layout, ids,
                                                                      hcam, rng, spec)
        hand_target = target.key
        hand_meta = {"camera": hcam.meta(), "target": target.key, "stats": hstats}

    meta = _scene_meta(layout, stats, cam, attempts, depth_camera, depth_pose, hand_meta)
    return SceneFrame(image=image, objects=found, hand_image=hand_image,
                      hand_objects=hand_objects, hand_target=hand_target, meta=meta,
                      depth=depth, intrinsics=cam.intrinsics() if spec.depth else None,
                      hand_depth=hand_depth,
                      hand_intrinsics=hcam.intrinsics() if spec.depth and hcam else None,
                      depth_camera=depth_camera, depth_pose=depth_pose)


def _scene_meta(layout: _Layout, stats: dict[str, Any], cam: _Camera, attempts: int,
                depth_camera: tuple | None, depth_pose: tuple | None,
                hand_meta: dict[str, Any] | None) -> dict[str, Any]:
    """:attr:`SceneFrame.meta` (JSON-serialisable)."""
    meta = {
        "placed": [{"key": o.key, "xy": _r(o.xy), "yaw_deg": _r(math.degrees(o.yaw)),
                    **stats.get(o.key, {})} for o in layout.placed],
        "table": {"kind": layout.table_kind, "size": _r(2 * layout.table_half),
                  "floor": layout.floor_kind},
        "light": {"direction": _r(layout.light.direction), "colour": _r(layout.light.colour),
                  "ambient": _r(layout.light.ambient), "diffuse": _r(layout.light.diffuse)},
        "camera": cam.meta(),
        "attempts": attempts,
    }
    if depth_camera is not None:
        meta["depth_camera"] = {"intrinsics": _r(depth_camera[:4]),
                                "size": [int(depth_camera[4]), int(depth_camera[5])],
                                "pose": _r(depth_pose)}
    if layout.furniture:
        meta["furniture"] = [{"min": _r(f.lo), "max": _r(f.hi)} for f in layout.furniture]
    if hand_meta is not None:
        meta["hand"] = hand_meta
    return meta
