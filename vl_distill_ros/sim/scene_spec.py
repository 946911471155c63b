"""What a tabletop scene render is asked for and what it returns: :class:`SceneSpec` (the
settings of :func:`~vl_distill_ros.sim.scene.render_scene`, validated), :class:`SceneObject`
(one visible object's box) and :class:`SceneFrame` (the images, boxes, depth and metadata).

ROS-free and torch-free; draws nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from vl_distill_ros.sim.meshes import RenderError

__all__ = ["SceneSpec", "SceneObject", "SceneFrame", "TABLE_KINDS", "BUSY_TABLE_KINDS",
           "FLOOR_KINDS",
           "MAX_FURNITURE", "MIN_TABLE_M", "MAX_TABLE_M"]


#: Table-top textures: ``make_background`` kinds. ``wood`` is wood grain, ``solid`` a plain
#: (painted/laminate) top, ``noise``/``stripes``/``checker`` read as cloths.
TABLE_KINDS: tuple[str, ...] = ("wood", "solid", "noise", "stripes", "checker")
#: Busy table cloths, drawn only when named (``table_kinds``, ``make-bag --table-kinds``):
#: a tartan (``plaid``), a printed cloth of small motifs (``print``) and large overlapping
#: shapes (``blobs``).
BUSY_TABLE_KINDS: tuple[str, ...] = ("plaid", "print", "blobs")
#: Floor textures (``make_background`` kinds).
FLOOR_KINDS: tuple[str, ...] = ("solid", "noise", "wood", "checker")

#: Most pieces of furniture (:attr:`SceneSpec.furniture`).
MAX_FURNITURE = 8
#: Bounds of the table top's length and width (m).
MIN_TABLE_M = 0.2
MAX_TABLE_M = 4.0


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
    #: Chance that the main camera's image is moved (its principal point shifted: the image
    #: is then a crop of a larger frame) so that its edge cuts one object at a random side,
    #: leaving ``border_cut_keep`` (low, high) of the object's projected width or height in
    #: view; other objects may be cut too. Real cameras see objects at the image border; the
    #: ground truth is the box of what is in view. 0 (the default) draws nothing extra from
    #: the random generator, so frames are as without this setting.
    border_cut_prob: float = 0.0
    border_cut_keep: tuple[float, float] = (0.4, 0.7)
    #: The main camera is redrawn, farther away after 15 tries, until every object's box
    #: projects inside the image (a long lens so ends up far beyond ``distance_m``); False
    #: keeps the first camera drawn at ``distance_m``, objects may leave the view (a long
    #: lens close to a crowded table, as YCB-Video's Xtion; the ground truth is what is in
    #: view, objects out of it left out).
    fit_view: bool = True
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
        if not -180.0 <= self.roll_deg[0] <= self.roll_deg[1] <= 180.0:
            raise RenderError(f"roll_deg must lie in [-180, 180], got {self.roll_deg!r}")
        if not 0.05 <= self.distance_m[0] <= self.distance_m[1]:
            raise RenderError(f"distance_m must be >= 0.05 m, got {self.distance_m!r}")
        if not 10.0 <= self.fov_y_deg[0] <= self.fov_y_deg[1] <= 120.0:
            raise RenderError(f"fov_y_deg must lie in [10, 120], got {self.fov_y_deg!r}")
        known = TABLE_KINDS + BUSY_TABLE_KINDS
        unknown = [k for k in self.table_kinds if k not in known]
        if not self.table_kinds or unknown:
            raise RenderError(f"table_kinds must be a non-empty subset of {list(known)}, "
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
        self._validate_border_cut()
        self._validate_depth_camera()

    def _validate_border_cut(self) -> None:
        if not 0.0 <= float(self.border_cut_prob) <= 1.0:
            raise RenderError(f"border_cut_prob must lie in [0, 1], got {self.border_cut_prob!r}")
        keep = self.border_cut_keep
        if len(keep) != 2 or not 0.05 <= float(keep[0]) <= float(keep[1]) <= 1.0:
            raise RenderError(f"border_cut_keep must be (low, high) with 0.05 <= low <= high "
                              f"<= 1, got {keep!r}")

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
