"""Headless CPU rendering of tabletop scenes: several YCB objects on a table, robot camera.

ROS-free and torch-free. Like :mod:`vl_distill_ros.sim.render` (both use the models folder,
mesh and texture helpers of :mod:`vl_distill_ros.sim.meshes`), objects are drawn by
pybullet's software TinyRenderer in ``DIRECT`` mode, so no GPU, display or OpenGL is needed.

One call of :func:`render_scene` draws one :class:`SceneFrame` (:func:`render_views`: one
scene from a camera moving along an arc, a frame per view):

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

The parts: :mod:`~vl_distill_ros.sim.scene_spec` (the settings and the frame),
:mod:`~vl_distill_ros.sim.scene_layout` (objects, table, light, furniture drawn at random),
:mod:`~vl_distill_ros.sim.scene_camera` (the camera model and its placement) and
:mod:`~vl_distill_ros.sim.scene_drawing` (everything but the objects drawn with OpenCV).

Everything random comes from the generator handed to :func:`render_scene`: the same seed
gives byte-identical images.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from vl_distill_ros.sim.meshes import MeshBodies, RenderError, load_mesh_vertices
from vl_distill_ros.sim.render import _rounded as _r
from vl_distill_ros.sim.scene_camera import SceneCamera, sample_hand_camera, sample_main_camera
from vl_distill_ros.sim.scene_drawing import (
    amodal_pixels,
    bbox_from_mask,
    CameraFinish,
    draw_environment,
    draw_finish,
    environment_depth,
    furniture_hits,
    post_process,
)
from vl_distill_ros.sim.scene_layout import SceneLayout, sample_layout
from vl_distill_ros.sim.scene_spec import TABLE_KINDS, SceneFrame, SceneObject, SceneSpec

__all__ = ["SceneSpec", "SceneObject", "SceneFrame", "SceneRenderer", "render_scene",
           "render_views", "TABLE_KINDS", "bbox_from_mask"]


class SceneRenderer(MeshBodies):
    """Owns a pybullet ``DIRECT`` client with the objects of a models folder, for
    :func:`render_scene`.

    Each model is loaded on first use (mesh plus a texture downsampled to ``texture_size``,
    via :func:`~vl_distill_ros.sim.meshes.prepare_mesh_files`) and cached as a hidden
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

    def _render_objects(self, cam: SceneCamera, layout: SceneLayout
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


def _scene_layers(renderer: SceneRenderer, layout: SceneLayout, cam: SceneCamera, want_depth: bool
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, tuple | None]:
    """The objects' RGB and segmentation seen from ``cam`` (furniture in front of an object
    takes its pixels), the depth in metres (with ``want_depth`` or furniture, else None) and,
    with furniture, where it shows and its shade."""
    rgb, seg, zbuf = renderer._render_objects(cam, layout)
    depth = environment_depth(cam, layout) if want_depth or layout.furniture else None
    furniture = None
    if layout.furniture:
        assert depth is not None
        near, shade = furniture_hits(cam, layout)
        shown = near < np.where(depth > 0, depth, np.inf)
        seg = np.where((seg >= 0) & shown & (near < cam.linear_depth(zbuf)), -1, seg)
        np.copyto(depth, near.astype(np.float32), where=shown)
        furniture = (shown, shade)
    if depth is not None:
        np.copyto(depth, cam.linear_depth(zbuf), where=seg >= 0)
    return rgb, seg, depth, furniture


def _depth_camera_view(renderer: SceneRenderer, layout: SceneLayout, cam: SceneCamera,
                       spec: SceneSpec) -> tuple[np.ndarray, tuple, tuple]:
    """The depth image of a separate depth camera beside ``cam`` (see
    :attr:`SceneSpec.depth_camera`), its ``(fx, fy, cx, cy, width, height)`` and its pose in
    ``cam``'s optical frame. Draws nothing from any random generator."""
    shift = float(spec.depth_camera_baseline_m) * cam.view[0, :3]   # the camera's x, in world
    width, height = (int(v) for v in spec.depth_camera_size)
    dcam = SceneCamera(eye=np.asarray(cam.eye, float) + shift,
                       target=np.asarray(cam.target, float) + shift, roll=cam.roll,
                       fov_y=float(spec.depth_camera_fov_y_deg), width=width, height=height,
                       near=cam.near, far=cam.far)
    _, _, depth, _ = _scene_layers(renderer, layout, dcam, True)
    assert depth is not None
    pose = (float(spec.depth_camera_baseline_m), 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    return depth, (*dcam.intrinsics(), width, height), pose


def _render_camera(renderer: SceneRenderer, layout: SceneLayout, ids: dict[str, int],
                   cam: SceneCamera, rng: np.random.Generator, spec: SceneSpec,
                   finish: CameraFinish | None = None
                   ) -> tuple[np.ndarray, list[SceneObject], dict[str, Any], np.ndarray | None]:
    """One image of the laid-out scene from ``cam``: the image, its visible objects (all
    placed objects with at least ``min_visible_pixels``), per-object pixel statistics and,
    with ``spec.depth``, the registered depth in metres (``finish``: the camera's look,
    else drawn)."""
    rgb, seg, depth, furniture = _scene_layers(renderer, layout, cam, spec.depth)
    img = draw_environment(cam, layout)
    if furniture is not None:
        shown, shade = furniture
        np.copyto(img, (shade * 255 + 0.5).astype(np.uint8), where=shown[..., None])
    depth = depth if spec.depth else None
    np.copyto(img, rgb, where=(seg >= 0)[..., None])
    image = post_process(img, rng, spec, finish)
    objects: list[SceneObject] = []
    stats: dict[str, Any] = {}
    for obj in layout.placed:
        mask = (seg == ids[obj.key]).view(np.uint8)
        visible = int(cv2.countNonZero(mask))
        full = amodal_pixels(cam, obj) if visible else 0
        frac = min(1.0, visible / full) if full > 0 else (1.0 if visible else 0.0)
        stats[obj.key] = {"visible_pixels": visible, "visible_frac": round(frac, 4)}
        if visible >= spec.min_visible_pixels:
            x, y, w, h = cv2.boundingRect(mask)
            objects.append(SceneObject(obj.key, (int(x), int(y), int(w), int(h)), round(frac, 4)))
    return image, objects, stats, depth


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
    layout, ids = _lay_out(renderer, objects, rng, spec)
    cam, image, found, stats, attempts, depth = _first_view(renderer, layout, ids, rng, spec)
    return _scene_frame(renderer, layout, ids, cam, rng, spec,
                        (image, found, stats, depth), attempts)


def render_views(renderer: SceneRenderer, objects: Sequence[str], rng: np.random.Generator,
                 spec: SceneSpec | None = None, views: int = 8, sweep_deg: float = 30.0
                 ) -> list[SceneFrame]:
    """One tabletop scene seen ``views`` times by a camera moving along an arc, as a robot's
    camera streams one scene (consecutive frames of the same objects, each a little turned).

    The scene and its first camera are drawn as :func:`render_scene` draws them; the camera
    then turns about the vertical through its aim point by ``sweep_deg`` degrees in all (in
    equal steps, a random direction), keeping its height, distance, roll, lens and look
    (blur, light fall-off, white balance and noise level: one :class:`CameraFinish` for the
    scene, as a video's frames share them). Each view is a :class:`SceneFrame` with its own
    visible objects, sensor noise and (``spec.hand_camera``) hand camera; an object may leave
    the view near the arc's ends.

    Raises:
        RenderError: as :func:`render_scene`, or ``views`` outside 1..1000 or ``sweep_deg``
            outside 0..360.
    """
    spec = spec or SceneSpec()
    spec.validate()           # before the look is drawn from its noise range
    if not 1 <= int(views) <= 1000:
        raise RenderError(f"views must be in 1..1000, got {views}")
    if not 0.0 <= float(sweep_deg) <= 360.0:
        raise RenderError(f"sweep_deg must be in 0..360, got {sweep_deg}")
    finish = dataclasses.replace(draw_finish(rng, spec),
                                 sigma=float(rng.uniform(*spec.noise_sigma)))
    layout, ids = _lay_out(renderer, objects, rng, spec)
    cam, image, found, stats, attempts, depth = _first_view(renderer, layout, ids, rng, spec,
                                                            finish)
    frames = [_scene_frame(renderer, layout, ids, cam, rng, spec,
                           (image, found, stats, depth), attempts)]
    step = math.radians(float(sweep_deg)) / max(int(views) - 1, 1) \
        * (1.0 if rng.random() < 0.5 else -1.0)
    for i in range(1, int(views)):
        turned = _turned(cam, step * i)
        frames.append(_scene_frame(renderer, layout, ids, turned, rng, spec,
                                   _render_camera(renderer, layout, ids, turned, rng, spec,
                                                  finish), attempts))
    return frames


def _turned(cam: SceneCamera, angle: float) -> SceneCamera:
    """``cam`` turned by ``angle`` radians about the vertical (world z) through its target."""
    c, s = math.cos(angle), math.sin(angle)
    rel = np.asarray(cam.eye, float) - np.asarray(cam.target, float)
    eye = np.asarray(cam.target, float) + np.array([c * rel[0] - s * rel[1],
                                                    s * rel[0] + c * rel[1], rel[2]])
    return SceneCamera(eye=eye, target=np.asarray(cam.target, float), roll=cam.roll,
                       fov_y=cam.fov_y, width=cam.width, height=cam.height, near=cam.near,
                       far=cam.far, shift=cam.shift)


def _lay_out(renderer: SceneRenderer, objects: Sequence[str], rng: np.random.Generator,
             spec: SceneSpec) -> tuple[SceneLayout, dict[str, int]]:
    """A random layout of ``objects`` (see :func:`render_scene`), shown in ``renderer``;
    the objects' body ids by key."""
    spec.validate()
    pool = list(dict.fromkeys(objects))
    if not pool:
        raise RenderError("no objects to place: give at least one object key")
    renderer.check_keys(pool)
    layout = sample_layout(renderer.geometry, pool, rng, spec)
    poses = {o.key: (o.base, o.yaw) for o in layout.placed}
    ids = renderer._show(poses)
    for o in layout.placed:
        o.body = ids[o.key]
    return layout, ids


def _first_view(renderer: SceneRenderer, layout: SceneLayout, ids: dict[str, int],
                rng: np.random.Generator, spec: SceneSpec,
                finish: CameraFinish | None = None) -> tuple:
    """The main camera, redrawn (up to ``spec.camera_attempts`` times) while an object is
    hidden: ``(camera, image, visible objects, stats, attempts, depth)`` of the best view
    (``finish``: the camera's look, else drawn for each)."""
    best = None
    for attempt in range(int(spec.camera_attempts)):
        cam = sample_main_camera(layout, rng, spec)
        image, found, stats, depth = _render_camera(renderer, layout, ids, cam, rng, spec,
                                                    finish)
        score = (len(found), min((o.visible_frac for o in found), default=0.0))
        if best is None or score > best[0]:
            best = (score, cam, image, found, stats, attempt + 1, depth)
        if len(found) == len(layout.placed) and all(
                o.visible_frac >= spec.min_visible_fraction for o in found):
            break
    assert best is not None
    return best[1:]


def _scene_frame(renderer: SceneRenderer, layout: SceneLayout, ids: dict[str, int],
                 cam: SceneCamera, rng: np.random.Generator, spec: SceneSpec,
                 view: tuple, attempts: int) -> SceneFrame:
    """The :class:`SceneFrame` of ``cam``'s ``view`` (its image, visible objects, stats and
    depth): the separate depth camera's image and the hand camera (``spec``) added."""
    image, found, stats, depth = view
    depth_camera = depth_pose = None
    if spec.depth and spec.depth_camera:
        depth, depth_camera, depth_pose = _depth_camera_view(renderer, layout, cam, spec)

    hand_image, hand_objects, hand_target, hand_meta = None, [], None, None
    hand_depth, hcam = None, None
    if spec.hand_camera and layout.placed:
        candidates = [o for o in layout.placed if o.key in {f.key for f in found}] \
            or list(layout.placed)
        target = candidates[int(rng.integers(len(candidates)))]
        hcam = sample_hand_camera(layout, target, rng, spec)
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


def _scene_meta(layout: SceneLayout, stats: dict[str, Any], cam: SceneCamera, attempts: int,
                depth_camera: tuple | None, depth_pose: tuple | None,
                hand_meta: dict[str, Any] | None) -> dict[str, Any]:
    """:attr:`SceneFrame.meta` (JSON-serialisable)."""
    meta = {
        "placed": [{"key": o.key, "xy": _r(o.xy), "yaw_deg": _r(math.degrees(o.yaw)),
                    # the centre of its bounding box in the camera's optical frame and the
                    # box's size (model x, model y, height), metres: ground truth of
                    # perception.object_placement
                    "centre_camera": _r(cam.optical(o.centre[None])[0]),
                    "size": _r([2.0 * o.half[0], 2.0 * o.half[1], o.height]),
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
