"""Headless CPU rendering of labelled object crops from textured meshes (YCB "google_16k").

ROS-free and torch-free. Rendering uses pybullet in ``DIRECT`` mode with its software
TinyRenderer (``renderer=p.ER_TINY_RENDERER``), so no GPU, display or OpenGL is needed.

* :class:`ObjectRenderer` renders one framed, square crop of one object per call
  (:meth:`ObjectRenderer.render_view`) in one of two domains:

  - ``clean``: plain or gradient backgrounds, moderate near-white light, mild noise;
  - ``clutter`` (a distribution shift): textured backgrounds, 1-3 partially visible
    distractor objects (other models, never the caller's excluded keys) behind the target
    near the crop edges, harsher coloured light, colour cast, blur and noise.

  Either domain can add ``appearance="varied"`` (:data:`APPEARANCES`): per-view material and
  lighting randomisation on top of the domain's (see :class:`Look`), drawn from a child of
  the view's generator so the viewpoint, background and distractors stay those of the
  default ``standard`` appearance, which renders exactly as before.

Whole data sets of such crops: :mod:`vl_distill_ros.sim.crop_dataset` (``vl-distill
render``). The models folder, the mesh files and the pybullet client both renderers share:
:mod:`vl_distill_ros.sim.meshes`; the ``varied`` appearance: :mod:`vl_distill_ros.sim.
appearance` (their names are also importable from here).

The camera is framed from the mesh's own vertices projected into the image (a visual-only
pybullet body reports a zero AABB), with an off-axis frustum whose square window is the
object's projected bounding box plus a random margin, so thin objects (fork, knife) fill
the crop. Views are rendered at ``supersample`` x the output size and downsampled with
``cv2.INTER_AREA``; the segmentation mask gives a soft alpha for compositing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from vl_distill_ros.sim.appearance import APPEARANCES, Look, kelvin_rgb
from vl_distill_ros.sim.backgrounds import sample_background
from vl_distill_ros.sim.meshes import (DEFAULT_MODELS_DIR, MESH_FILE, MODELS_ENV, MODELS_HELP,
                                       YCB_ATTRIBUTION, MeshBodies, RenderError,
                                       default_models_dir, find_models, load_mesh_vertices,
                                       prepare_mesh_files)

__all__ = ["ObjectRenderer", "RenderedView", "DOMAINS", "project_points",
           # from meshes and appearance, where they live
           "APPEARANCES", "Look", "kelvin_rgb", "DEFAULT_MODELS_DIR", "MESH_FILE", "MODELS_ENV",
           "MODELS_HELP", "YCB_ATTRIBUTION", "MeshBodies", "RenderError", "default_models_dir",
           "find_models", "load_mesh_vertices", "prepare_mesh_files"]

#: Rendering domains.
DOMAINS: tuple[str, ...] = ("clean", "clutter")


# ---------------------------------------------------------------------------------------
# Camera maths (OpenGL conventions, as pybullet expects)
# ---------------------------------------------------------------------------------------
def _look_at(eye: np.ndarray, target: np.ndarray, roll: float) -> tuple[np.ndarray, np.ndarray]:
    """World->camera 4x4 matrix looking from ``eye`` at ``target`` (z-up, rolled by ``roll``
    radians about the viewing axis); also returns the unit forward vector."""
    fwd = target - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, np.array([0.0, 0.0, 1.0]))
    if np.linalg.norm(right) < 1e-6:  # looking straight up/down
        right = np.cross(fwd, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    c, s = math.cos(roll), math.sin(roll)
    right, up = c * right + s * up, -s * right + c * up
    view = np.eye(4)
    view[0, :3], view[1, :3], view[2, :3] = right, up, -fwd
    view[:3, 3] = -view[:3, :3] @ eye
    return view, fwd


def _frustum(left: float, right: float, bottom: float, top: float, near: float,
             far: float) -> np.ndarray:
    """OpenGL off-axis perspective projection matrix (like ``glFrustum``)."""
    proj = np.zeros((4, 4))
    proj[0, 0] = 2 * near / (right - left)
    proj[0, 2] = (right + left) / (right - left)
    proj[1, 1] = 2 * near / (top - bottom)
    proj[1, 2] = (top + bottom) / (top - bottom)
    proj[2, 2] = -(far + near) / (far - near)
    proj[2, 3] = -2 * far * near / (far - near)
    proj[3, 2] = -1.0
    return proj


def project_points(points: np.ndarray, view: np.ndarray, proj: np.ndarray,
                   size: int) -> np.ndarray:
    """Pixel coordinates ``(N, 2)`` (x right, y down) of world ``points`` in a square
    ``size`` x ``size`` image rendered with the given view and projection matrices."""
    homo = np.c_[points, np.ones(len(points))] @ (proj @ view).T
    ndc = homo[:, :2] / homo[:, 3:4]
    return np.c_[(ndc[:, 0] + 1) * 0.5 * size, (1 - ndc[:, 1]) * 0.5 * size]


@dataclass
class RenderedView:
    """One rendered crop."""

    #: ``(size, size, 3)`` uint8 RGB crop.
    image: np.ndarray
    #: ``(size, size)`` bool mask of the target object.
    mask: np.ndarray
    #: View metadata: azimuth/elevation/roll (degrees), distance (m), margin, light,
    #: background kind, distractors, domain, mask fraction. JSON-serialisable.
    meta: dict[str, Any]


@dataclass
class _Layer:
    """A rendered object before compositing: premultiplied RGB and alpha in [0, 1]."""

    rgb: np.ndarray
    alpha: np.ndarray
    meta: dict[str, Any]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _rounded(x: Any) -> Any:
    """Floats rounded for compact, stable JSON metadata."""
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_rounded(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return round(float(x), 5)
    return x


# ---------------------------------------------------------------------------------------
# Renderer
# ---------------------------------------------------------------------------------------
class ObjectRenderer(MeshBodies):
    """Renders framed crops of textured mesh objects with pybullet's CPU TinyRenderer.

    Owns one pybullet ``DIRECT`` client and a temporary folder (downsampled textures);
    use it as a context manager or call :meth:`close`. Each model is loaded once (mesh and a
    texture downsampled to ``texture_size``) and cached as a body; only the body being
    rendered is visible (the others are fully transparent, which TinyRenderer skips). At
    most ``max_bodies`` bodies are kept (least recently used ones are removed).

    Args:
        models_dir: folder with one ``<key>/textured.obj`` per object.
        exclude: keys never used as clutter distractors (e.g. all keys of the ID/OOD split).
        supersample: render at this multiple of the output size, then downsample.
        texture_size: longest side textures are downsampled to before loading.
        max_bodies: cap on cached pybullet bodies.
    """

    def __init__(self, models_dir: str | Path, exclude: Sequence[str] = (),
                 supersample: int = 2, texture_size: int = 1024, max_bodies: int = 128) -> None:
        self.exclude = frozenset(exclude)
        self.supersample = max(1, int(supersample))
        super().__init__(models_dir, texture_size, max(2, int(max_bodies)),
                         tmp_prefix="vl_distill_render_")
        self._visible: str | None = None
        self._geometry: dict[str, tuple[np.ndarray, float]] = {}

    def _forget_visible(self) -> None:
        self._visible = None

    # -- model access -----------------------------------------------------------------------
    @property
    def distractor_pool(self) -> list[str]:
        """Keys that may appear as clutter distractors (all keys minus ``exclude``)."""
        return [k for k in self._models if k not in self.exclude]

    def _geometry_of(self, key: str) -> tuple[np.ndarray, float]:
        """(centre, radius) of the key's mesh bounding sphere (around the AABB centre)."""
        if key not in self._geometry:
            verts = load_mesh_vertices(self._models[key])
            centre = 0.5 * (verts.min(axis=0) + verts.max(axis=0))
            radius = float(np.linalg.norm(verts - centre, axis=1).max())
            self._geometry[key] = (centre, max(radius, 1e-4))
        return self._geometry[key]

    def _evict(self) -> None:
        p, cid = self._p, self._require_client()
        while len(self._bodies) > self.max_bodies:
            old_key, old_body = self._bodies.popitem(last=False)
            p.removeBody(old_body, physicsClientId=cid)
            if self._visible == old_key:
                self._visible = None

    def _show(self, key: str) -> int:
        """Make ``key`` the only visible body and return its id."""
        body = self._body(key)
        if self._visible != key:
            p, cid = self._p, self._require_client()
            if self._visible is not None and self._visible in self._bodies:
                p.changeVisualShape(self._bodies[self._visible], -1, rgbaColor=[1, 1, 1, 0],
                                    physicsClientId=cid)
            p.changeVisualShape(body, -1, rgbaColor=[1, 1, 1, 1], physicsClientId=cid)
            self._visible = key
        return body

    # -- rendering --------------------------------------------------------------------------
    def _render_layer(self, key: str, rng: np.random.Generator, size: int, harsh: bool,
                      elevation: tuple[float, float], supersample: int | None = None,
                      look: Look | None = None) -> _Layer:
        """Render ``key`` framed in a ``size`` crop: premultiplied RGB, alpha and metadata
        (with ``look``'s light coefficients and object colours, when given)."""
        p, cid = self._p, self._require_client()
        body = self._show(key)
        centre, radius = self._geometry_of(key)
        verts = load_mesh_vertices(self._models[key])

        azimuth = rng.uniform(0.0, 360.0)
        elev = rng.uniform(*elevation)
        roll = rng.uniform(-15.0, 15.0)
        distance = radius * rng.uniform(2.5, 5.0)
        margin = rng.uniform(0.05, 0.25)
        az, el = math.radians(azimuth), math.radians(elev)
        to_cam = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        eye = centre + distance * to_cam
        view, fwd = _look_at(eye, centre, math.radians(roll))

        # frame from the mesh's own vertices: tangent-plane bbox of the projection
        cam = verts @ view[:3, :3].T + view[:3, 3]
        depth = -cam[:, 2]
        tx, ty = cam[:, 0] / depth, cam[:, 1] / depth
        x0, x1, y0, y1 = tx.min(), tx.max(), ty.min(), ty.max()
        half = 0.5 * max(x1 - x0, y1 - y0) * (1.0 + margin)
        slack_x, slack_y = half - 0.5 * (x1 - x0), half - 0.5 * (y1 - y0)
        cx = 0.5 * (x0 + x1) + rng.uniform(-0.5, 0.5) * slack_x
        cy = 0.5 * (y0 + y1) + rng.uniform(-0.5, 0.5) * slack_y
        near = 0.5 * float(depth.min())
        far = 2.0 * float(depth.max())
        proj = _frustum((cx - half) * near, (cx + half) * near, (cy - half) * near,
                        (cy + half) * near, near, far)

        # lighting: moderate and frontal-ish (clean) or harsh, coloured, any side (clutter)
        if harsh:
            light_dir = _unit(rng.normal(size=3) + np.array([0.0, 0.0, 0.3]))
            light_colour = rng.uniform(0.6, 1.0, size=3)
            ambient, diffuse = rng.uniform(0.2, 0.5), rng.uniform(0.5, 0.95)
            specular = rng.uniform(0.0, 0.5)
        else:
            light_dir = _unit(to_cam + 0.6 * rng.normal(size=3) + np.array([0.0, 0.0, 0.5]))
            light_colour = rng.uniform(0.9, 1.0, size=3)
            ambient, diffuse = rng.uniform(0.5, 0.7), rng.uniform(0.3, 0.5)
            specular = rng.uniform(0.0, 0.1)
        if look is not None:
            ambient, diffuse, specular = look.light(ambient, diffuse)

        res = size * (self.supersample if supersample is None else max(1, supersample))
        _, _, px, _, seg = p.getCameraImage(
            res, res, viewMatrix=view.T.reshape(-1).tolist(),
            projectionMatrix=proj.T.reshape(-1).tolist(),
            lightDirection=(light_dir * 3.0 * distance).tolist(),
            lightColor=light_colour.tolist(), lightDistance=3.0 * distance, shadow=0,
            lightAmbientCoeff=ambient, lightDiffuseCoeff=diffuse,
            lightSpecularCoeff=specular, renderer=p.ER_TINY_RENDERER, physicsClientId=cid)
        rgba = np.asarray(px, dtype=np.uint8).reshape(res, res, 4)
        alpha = (np.asarray(seg).reshape(res, res) == body).astype(np.float32)
        rgb = rgba[..., :3].astype(np.float32) * (alpha[..., None] / 255.0)  # premultiplied
        if res != size:
            rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
            alpha = cv2.resize(alpha, (size, size), interpolation=cv2.INTER_AREA)
        if look is not None:
            rgb = look.apply(rgb, alpha)
        meta = {
            "key": key, "azimuth": azimuth, "elevation": elev, "roll": roll,
            "distance": distance, "margin": margin,
            "light": {"direction": light_dir, "color": light_colour, "ambient": ambient,
                      "diffuse": diffuse, "specular": specular},
        }
        return _Layer(rgb, alpha, meta)

    def render_view(self, key: str, rng: np.random.Generator, domain: str = "clean",
                    size: int = 160, appearance: str = "standard") -> RenderedView:
        """Render one square crop of object ``key`` in ``domain`` (``clean``/``clutter``).

        All randomness (viewpoint, framing margin, light, background, distractors,
        post-processing) comes from ``rng``, so equal generator states give identical
        output. ``appearance="varied"`` adds a :class:`Look` to the target object, drawn
        from ``rng.spawn(1)[0]`` (which consumes nothing from ``rng``: everything else is
        what ``"standard"`` draws). Returns the uint8 RGB crop, the target's boolean mask
        and metadata (with ``appearance`` holding the look when varied).
        """
        if domain not in DOMAINS:
            raise RenderError(f"unknown domain {domain!r}; choose one of {list(DOMAINS)}")
        if appearance not in APPEARANCES:
            raise RenderError(f"unknown appearance {appearance!r}; choose one of "
                              f"{list(APPEARANCES)}")
        size = int(size)
        if not 8 <= size <= 4096:
            raise RenderError(f"image size must be between 8 and 4096 pixels, got {size}")
        self.check_keys([key])
        clutter = domain == "clutter"
        look = Look.sample(rng.spawn(1)[0]) if appearance == "varied" else None

        target = self._render_layer(key, rng, size, harsh=clutter,
                                    elevation=(10.0, 85.0) if clutter else (15.0, 80.0),
                                    look=look)
        if not (target.alpha >= 0.5).any():  # a crop labelled with an object it does not show
            raise RenderError(f"{key}: the object covers no pixel of its view (a degenerate "
                              "mesh: no surface, or all of it outside the camera)")
        background, bg_kind = sample_background(domain, size, rng)
        canvas = background.astype(np.float32) / 255.0

        distractors: list[dict[str, Any]] = []
        if clutter:
            pool = [k for k in self.distractor_pool if k != key]
            count = int(rng.integers(1, 4))
            for _ in range(count if pool else 0):
                dkey = str(pool[int(rng.integers(len(pool)))])
                dsize = max(8, int(round(size * rng.uniform(0.45, 0.85))))
                # distractors sit behind the target and get blurred: no supersampling
                layer = self._render_layer(dkey, rng, dsize, harsh=True, elevation=(10.0, 85.0),
                                           supersample=1)
                x, y = self._edge_position(size, dsize, rng)
                _paste(canvas, layer, x, y)
                distractors.append({"key": dkey, "size": dsize, "x": x, "y": y})

        # the target goes on top of background and distractors
        canvas = target.rgb + canvas * (1.0 - target.alpha[..., None])
        canvas = self._post_process(canvas, clutter, rng)
        image = np.clip(canvas * 255.0 + 0.5, 0, 255).astype(np.uint8)
        mask = target.alpha >= 0.5
        meta = dict(target.meta)
        meta.update(domain=domain, size=size, background=bg_kind, distractors=distractors,
                    mask_fraction=float(mask.mean()))
        if look is not None:
            meta["appearance"] = look.to_meta()
        return RenderedView(image=image, mask=mask, meta=_rounded_meta(meta))

    @staticmethod
    def _edge_position(size: int, dsize: int, rng: np.random.Generator) -> tuple[int, int]:
        """Top-left corner for a distractor crop centred near a random edge of the canvas,
        20-80 % inside it, so it is only partly visible."""
        side = int(rng.integers(4))
        along = rng.uniform(0.0, size)
        inside = rng.uniform(-0.3, 0.3) * dsize  # centre distance inside the edge
        if side == 0:    # left
            cx, cy = inside, along
        elif side == 1:  # right
            cx, cy = size - inside, along
        elif side == 2:  # top
            cx, cy = along, inside
        else:            # bottom
            cx, cy = along, size - inside
        return int(round(cx - dsize / 2)), int(round(cy - dsize / 2))

    @staticmethod
    def _post_process(img: np.ndarray, clutter: bool, rng: np.random.Generator) -> np.ndarray:
        """Camera-like degradations: mild noise (clean); colour cast, gamma, contrast,
        blur, noise and sometimes JPEG artefacts (clutter). Works on float RGB in [0, 1]."""
        if clutter:
            gains = rng.uniform(0.8, 1.2, size=3).astype(np.float32)
            img = np.clip(img * gains, 0.0, 1.0) ** rng.uniform(0.75, 1.35)
            contrast, bright = rng.uniform(0.75, 1.2), rng.uniform(-0.08, 0.08)
            img = (img - 0.5) * contrast + 0.5 + bright
            if rng.random() < 0.6:
                img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.1))
            sigma = rng.uniform(2.0, 7.0) / 255.0
            do_jpeg = rng.random() < 0.3
            quality = int(rng.integers(35, 85))
        else:
            sigma = rng.uniform(0.5, 2.0) / 255.0
            do_jpeg, quality = False, 0
        img = img + rng.normal(0.0, sigma, size=img.shape).astype(np.float32)
        img = np.clip(img, 0.0, 1.0).astype(np.float32)
        if do_jpeg:
            u8 = (img * 255.0 + 0.5).astype(np.uint8)
            ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if ok:
                img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0
        return img


def _paste(canvas: np.ndarray, layer: _Layer, x: int, y: int) -> None:
    """Composite a premultiplied ``layer`` onto ``canvas`` (in place) at top-left (x, y),
    clipping to the canvas."""
    h, w = layer.alpha.shape
    H, W = canvas.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x0 >= x1 or y0 >= y1:
        return
    src = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
    a = layer.alpha[src][..., None]
    canvas[y0:y1, x0:x1] = layer.rgb[src] + canvas[y0:y1, x0:x1] * (1.0 - a)


def _rounded_meta(meta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in meta.items():
        out[k] = _rounded_meta(v) if isinstance(v, dict) else _rounded(v)
    return out
