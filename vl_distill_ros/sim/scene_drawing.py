"""Drawing a laid-out scene with OpenCV and numpy from the exact camera model: the wall,
floor, table sides and textured table top with the objects' soft shadows
(:func:`draw_environment`), the furniture's faces (:func:`furniture_hits`), the environment's
depth (:func:`environment_depth`), each object's whole silhouette (:func:`amodal_pixels`) and
the camera-like finish of an image (:func:`post_process`).

Part of :mod:`vl_distill_ros.sim.scene` (the objects themselves are drawn by TinyRenderer
there); ROS-free and torch-free.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np

from vl_distill_ros.sim.scene_camera import SceneCamera
from vl_distill_ros.sim.scene_layout import FLOOR_Z, ROOM_RADIUS, PlacedObject, SceneLayout
from vl_distill_ros.sim.scene_spec import SceneSpec

__all__ = ["draw_environment", "furniture_hits", "environment_depth", "amodal_pixels",
           "post_process", "draw_finish", "CameraFinish", "bbox_from_mask"]


_NOISE_PAD = 32         # noise bank margin (frames use a random window of it)


def furniture_hits(cam: SceneCamera, layout: SceneLayout) -> tuple[np.ndarray, np.ndarray]:
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


def amodal_pixels(cam: SceneCamera, obj: PlacedObject) -> int:
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


def _fill(img: np.ndarray, poly: np.ndarray | None, colour: Any) -> None:
    if poly is not None:
        cv2.fillPoly(img, [np.round(poly * 16).astype(np.int32)], colour,
                     lineType=cv2.LINE_AA, shift=4)


def _paint_plane(img: np.ndarray, cam: SceneCamera, poly: np.ndarray, tile: np.ndarray,
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


def draw_environment(cam: SceneCamera, layout: SceneLayout) -> np.ndarray:
    """uint8 RGB ``(H, W, 3)`` of wall, floor, table sides and table top with shadows."""
    h, w = cam.height, cam.width
    light = layout.light
    rows = np.linspace(1.05, 0.85, h, dtype=np.float32)[:, None]
    wall = np.clip(rows * layout.wall_colour[None, :].astype(np.float32) * 255, 0, 255)
    img = np.ascontiguousarray(np.broadcast_to(wall.astype(np.uint8)[:, None, :], (h, w, 3)))

    # floor: a square room floor far below the table
    r = ROOM_RADIUS
    floor_poly = cam.polygon(np.array([(-r, -r, FLOOR_Z), (r, -r, FLOOR_Z), (r, r, FLOOR_Z),
                                       (-r, r, FLOOR_Z)]))
    if floor_poly is not None:
        _paint_plane(img, cam, floor_poly, layout.floor_tile,
                     np.array([layout.floor_scale] * 2), np.zeros(2), FLOOR_Z,
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


def _shadow_mask(cam: SceneCamera, layout: SceneLayout
                 ) -> tuple[np.ndarray, tuple[int, int]] | None:
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


@dataclass(frozen=True)
class CameraFinish:
    """The camera's own look in :func:`post_process`: blur, light gradient (angle and
    strength), vignetting, white-balance gains and noise level (``sigma``, 8-bit levels; NaN:
    drawn for each image). A video's frames share it; each frame draws only its noise."""

    blur: float
    angle: float
    gradient: float
    vignette: float
    gains: tuple[float, float, float]
    sigma: float


def draw_finish(rng: np.random.Generator, spec: SceneSpec) -> CameraFinish:
    """A random :class:`CameraFinish` (the draws :func:`post_process` makes without one)."""
    blur = float(rng.uniform(0.3, 0.7))
    angle = float(rng.uniform(0.0, 2 * math.pi))
    gradient = float(rng.uniform(0.0, 0.25))
    vignette = float(rng.uniform(0.05, 0.3))
    gains = tuple(float(g) for g in rng.uniform(0.95, 1.05, size=3))
    return CameraFinish(blur, angle, gradient, vignette, gains,  # type: ignore[arg-type]
                        float("nan"))


def post_process(img: np.ndarray, rng: np.random.Generator, spec: SceneSpec,
                 finish: CameraFinish | None = None) -> np.ndarray:
    """Camera-like finish of a uint8 RGB image: slight blur, illumination fall-off and
    gradient, white balance and sensor noise; returns uint8. ``finish``: the camera's look
    (:func:`draw_finish`, shared by a video's frames; only the noise is drawn then);
    None: all of it drawn from ``rng``."""
    h, w = img.shape[:2]
    if finish is None:
        finish = draw_finish(rng, spec)
    img = cv2.GaussianBlur(img, (0, 0), finish.blur)
    ys = (np.arange(h, dtype=np.float32) - h / 2) / max(h, w)
    xs = (np.arange(w, dtype=np.float32) - w / 2) / max(h, w)
    grad = 1.0 + finish.gradient * (xs[None, :] * math.cos(finish.angle)
                                    + ys[:, None] * math.sin(finish.angle))
    vignette = 1.0 - finish.vignette * (xs[None, :] ** 2 + ys[:, None] ** 2)
    gains = np.asarray(finish.gains, np.float32)
    field = (grad * vignette).astype(np.float32)
    ox, oy = (int(v) for v in rng.integers(0, _NOISE_PAD + 1, size=2))
    sigma = np.float32(finish.sigma if math.isfinite(finish.sigma)
                       else rng.uniform(*spec.noise_sigma))
    noise = _noise_bank(h, w)[oy:oy + h, ox:ox + w]
    out = cv2.multiply(img.astype(np.float32), cv2.merge([field * g for g in gains]))
    out = cv2.scaleAdd(noise, float(sigma), out)
    return cv2.convertScaleAbs(out)  # rounds and saturates to uint8


def environment_depth(cam: SceneCamera, layout: SceneLayout) -> np.ndarray:
    """Depth (m, float32 ``(H, W)``) of the drawn environment: the nearest of the table top,
    its side faces, the floor and the room's walls along each pixel's ray (0: none)."""
    rays = cam.rays()
    eye = np.asarray(cam.eye, np.float64)
    lx, ly = (float(v) for v in layout.table_half)
    t_th, r = float(layout.table_thickness), ROOM_RADIUS
    best = np.full(rays.shape[:2], np.inf)
    # (axis, plane value, lowest and highest corner; the axis' own entry is unused): table
    # top, sides, floor, walls
    planes = [(2, 0.0, (-lx, -ly, 0.0), (lx, ly, 0.0)), (2, FLOOR_Z, (-r, -r, 0.0), (r, r, 0.0))]
    for sign in (-1.0, 1.0):
        planes += [(0, sign * lx, (0.0, -ly, -t_th), (0.0, ly, 0.0)),
                   (1, sign * ly, (-lx, 0.0, -t_th), (lx, 0.0, 0.0)),
                   (0, sign * r, (0.0, -r, FLOOR_Z), (0.0, r, np.inf)),
                   (1, sign * r, (-r, 0.0, FLOOR_Z), (r, 0.0, np.inf))]
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
