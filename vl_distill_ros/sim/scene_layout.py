"""What a tabletop scene holds, drawn at random: the placed objects (free spots or in
contact, footprints that do not overlap), the table and floor textures, the light and the
furniture beyond the table (:func:`sample_layout`).

Part of :mod:`vl_distill_ros.sim.scene`; ROS-free and torch-free. Every random draw comes from
the caller's generator, in a fixed order, so equal generator states give equal layouts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from vl_distill_ros.sim.backgrounds import make_background
from vl_distill_ros.sim.scene_spec import FLOOR_KINDS, SceneSpec

__all__ = ["PlacedObject", "Furniture", "SceneLight", "SceneLayout", "FLOOR_Z",
           "ROOM_RADIUS", "footprint_hull", "sample_layout"]


FLOOR_Z = -0.74        # floor height below the table top (m)
ROOM_RADIUS = 3.0      # beyond this horizontal distance from the table the wall is seen (m)
_TABLE_TEXELS = 512     # table texture size
_FLOOR_TEXELS = 256     # floor texture size
#: Furniture footprints' half sizes, the gap between them and the table's edge, and
#: their tops' height over the table top (m).
_FURNITURE_HALF = (0.12, 0.45)
_FURNITURE_GAP = (0.05, 0.9)
_FURNITURE_TOP = (-0.2, 0.8)
#: Metres one table texture covers along x and y, for the kinds that repeat: wood planks
#: (grain stretched along the table, longer than it, repeated across it) and a fine cloth
#: weave, a tartan or a printed cloth (mirror-tiled, seamless). Other kinds cover the whole
#: table top once.
_TABLE_SPANS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "wood": ((2.0, 2.6), (0.12, 0.3)),
    "noise": ((0.3, 0.6), (0.3, 0.6)),
    "plaid": ((0.4, 0.9), (0.4, 0.9)),
    "print": ((0.4, 0.9), (0.4, 0.9)),
}


@dataclass
class PlacedObject:
    """An object on the table: its model key, pybullet body, pose and footprint (world)."""

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
        """The centre of the object's bounding box (world)."""
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
class Furniture:
    """An axis-aligned box standing on the floor beyond the table."""

    lo: np.ndarray        # (3,) lowest corner (world)
    hi: np.ndarray        # (3,) highest corner (world)
    colour: np.ndarray    # RGB in [0, 1]


@dataclass
class SceneLight:
    """A directional light with TinyRenderer's coefficients, plus shadow look."""

    direction: np.ndarray             # unit, towards the light
    colour: np.ndarray
    ambient: float
    diffuse: float
    specular: float
    shadow_strength: float
    shadow_blur: float                # penumbra width (m)

    @classmethod
    def sample(cls, rng: np.random.Generator) -> SceneLight:
        """A random light from above (40-85 degrees), slightly tinted."""
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
class SceneLayout:
    """One scene as laid out: the placed objects, the table and its texture, the floor, the
    wall's colour, the light and the furniture."""

    placed: list[PlacedObject]
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
    light: SceneLight
    furniture: list[Furniture] = field(default_factory=list)


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


def footprint_hull(g: dict[str, Any], yaw: float) -> tuple[np.ndarray, np.ndarray]:
    """Convex hull ``(K, 2)`` of a model's footprint turned by ``yaw``, about the centre of
    its footprint box (where :func:`sample_layout` puts ``xy``), and its outline sampled
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
    """Whether two footprint hulls (:func:`footprint_hull` pairs, placed) are disjoint
    and their outlines at least ``gap`` apart."""
    area, _ = cv2.intersectConvexConvex(a[0].astype(np.float32), b[0].astype(np.float32))
    if area > 0:
        return False
    d2 = ((a[1][:, None, :] - b[1][None, :, :]) ** 2).sum(axis=2)
    return float(math.sqrt(d2.min())) >= gap


def _contact_pose(geometry: Callable[[str], dict[str, Any]], g: dict[str, Any],
                  placed: Sequence[PlacedObject],
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
        hull, outline = footprint_hull(g, yaw)
        theirs = [v + partner.xy for v in footprint_hull(geometry(partner.key),
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


def _place_objects(geometry: Callable[[str], dict[str, Any]], keys: Sequence[str],
                   table_half: np.ndarray, rng: np.random.Generator,
                   spec: SceneSpec) -> list[PlacedObject]:
    """``keys`` put on the table in turn (an object that finds no room is left out)."""
    area = np.array(spec.placement_area_m, float) / 2
    placed: list[PlacedObject] = []
    rects: list[tuple[np.ndarray, float, np.ndarray]] = []
    for key in keys:
        g = geometry(key)
        pose = None
        if placed and spec.contact_prob > 0 and rng.uniform() < spec.contact_prob:
            pose = _contact_pose(geometry, g, placed, rects, table_half, rng, spec)
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
        placed.append(PlacedObject(key=key, body=-1, xy=xy, yaw=yaw, half=g["half"],
                                   height=g["height"], radius=g["radius"], points=points,
                                   base=base))
    return placed


def sample_layout(geometry: Callable[[str], dict[str, Any]], pool: Sequence[str],
                  rng: np.random.Generator, spec: SceneSpec) -> SceneLayout:
    """The objects of one scene (``spec.objects_per_scene`` distinct keys of ``pool``, each
    at a free spot or, with ``spec.contact_prob``, in contact with one already placed;
    ``geometry(key)`` gives a model's footprint, see
    :meth:`~vl_distill_ros.sim.scene.SceneRenderer.geometry`) with the table, floor, light
    and furniture."""
    lo, hi = spec.objects_per_scene
    count = min(int(rng.integers(lo, hi + 1)), len(pool))
    keys = [str(pool[i]) for i in rng.choice(len(pool), size=count, replace=False)]

    table_half = np.array([rng.uniform(*spec.table_length_m), rng.uniform(*spec.table_width_m)]) / 2
    placed = _place_objects(geometry, keys, table_half, rng, spec)

    light = SceneLight.sample(rng)
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

    return SceneLayout(
        placed=placed, table_half=table_half, table_thickness=float(rng.uniform(0.025, 0.05)),
        table_kind=kind, table_tile=tile,
        table_scale=np.array(tile.shape[1::-1], float) / span,
        table_offset=offset, table_colour=table_colour,
        floor_kind=floor_kind, floor_tile=_mirror_tile(_gain(floor, top_gain)),
        floor_scale=2 * _FLOOR_TEXELS / float(rng.uniform(2.0, 4.0)), wall_colour=wall,
        light=light, furniture=_sample_furniture(int(spec.furniture), table_half, rng))


def _sample_furniture(count: int, table_half: np.ndarray,
                      rng: np.random.Generator) -> list[Furniture]:
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
        lo = np.clip(centre - half, -ROOM_RADIUS + 0.01, ROOM_RADIUS - 0.01)
        hi = np.clip(centre + half, -ROOM_RADIUS + 0.01, ROOM_RADIUS - 0.01)
        top = float(rng.uniform(*_FURNITURE_TOP))
        out.append(Furniture(lo=np.array([lo[0], lo[1], FLOOR_Z]),
                             hi=np.array([hi[0], hi[1], top]),
                             colour=rng.uniform(0.15, 0.85, size=3)))
    return out


def _mirror_tile(tex: np.ndarray) -> np.ndarray:
    """A seamless tile (twice the size) of ``tex`` and its mirror images, for wrap-around
    sampling without visible seams."""
    top = np.concatenate([tex, tex[:, ::-1]], axis=1)
    return np.ascontiguousarray(np.concatenate([top, top[::-1]], axis=0))


def _gain(tile: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """uint8 RGB ``tile`` times an RGB ``gain`` (rounded, saturating)."""
    return cv2.multiply(tile, (float(gain[0]), float(gain[1]), float(gain[2]), 0.0))
