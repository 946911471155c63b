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

* :func:`render_dataset` renders a whole dataset described by a :class:`RenderSpec` into an
  image-folder tree ``<out_dir>/<split>/<key>/<key>_<i:05d>.png`` plus ``manifest.json``,
  deterministically: each (split, key, index) gets its own random generator derived from
  ``(seed, crc32(split), crc32(key), index)``, so the same seed gives byte-identical PNGs.

* :func:`load_render_spec` reads ``config/render_ycb.yaml``-style files.

The camera is framed from the mesh's own vertices projected into the image (a visual-only
pybullet body reports a zero AABB), with an off-axis frustum whose square window is the
object's projected bounding box plus a random margin, so thin objects (fork, knife) fill
the crop. Views are rendered at ``supersample`` x the output size and downsampled with
``cv2.INTER_AREA``; the segmentation mask gives a soft alpha for compositing.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import logging
import math
import os
import shutil
import tempfile
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence, TypeVar

import cv2
import numpy as np
import yaml

from vl_distill_ros.atomic_io import replace_dir
from vl_distill_ros.sim.backgrounds import sample_background

LOG = logging.getLogger(__name__)

#: Rendering domains.
DOMAINS: tuple[str, ...] = ("clean", "clutter")

#: Appearance randomisations: ``standard`` (the domain's own light and materials, what every
#: shipped data set used) or ``varied`` (adds :class:`Look`: colour temperature, light
#: intensity, specularity, object texture jitter and a shading gradient).
APPEARANCES: tuple[str, ...] = ("standard", "varied")

#: Environment variable naming the YCB models folder (``render``, ``make-bag``, ``ablate``,
#: the tests); an explicit ``--models-dir`` or a config's ``models_dir`` wins over it.
MODELS_ENV = "VL_DISTILL_YCB_MODELS"
#: The models folder when neither an option, a config nor :data:`MODELS_ENV` names one
#: (relative to the working directory: ``../shared/ycb_models`` next to the checkout).
DEFAULT_MODELS_DIR = "../shared/ycb_models"

#: Where the models come from; part of every "models not found" error.
MODELS_HELP = (
    "Get the YCB object models from https://www.ycbbenchmarks.com/ (object models, the "
    "'google_16k' textured meshes): one folder per object named by its key (e.g. "
    "011_banana/) holding textured.obj, textured.mtl and texture_map.jpg. Set "
    f"{MODELS_ENV}=/path/to/that/folder (default {DEFAULT_MODELS_DIR}); "
    "render and make-bag also take --models-dir.")


def default_models_dir(relative_to: str | Path | None = None) -> str:
    """The YCB models folder to use when none is given: ``$VL_DISTILL_YCB_MODELS`` when set
    and not empty, else :data:`DEFAULT_MODELS_DIR` (relative to the working directory, or
    to ``relative_to``, e.g. the checkout for the tests and benches)."""
    from_env = os.environ.get(MODELS_ENV, "").strip()
    if from_env:
        return from_env
    return str(Path(relative_to) / DEFAULT_MODELS_DIR) if relative_to else DEFAULT_MODELS_DIR


#: Attribution required by the YCB models' licence (CC BY 4.0); written into manifests.
YCB_ATTRIBUTION = (
    "Rendered from the YCB Object and Model Set (Calli et al., 'The YCB object and model "
    "set', ICAR 2015; ycbbenchmarks.com), licensed CC BY 4.0.")

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
MESH_FILE = "textured.obj"


class RenderError(ValueError):
    """Rendering cannot proceed (missing models, unknown object key, bad spec)."""


# ---------------------------------------------------------------------------------------
# Mesh helpers
# ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def _load_vertices_cached(path: str, mtime_ns: int) -> np.ndarray:
    data = Path(path).read_bytes()
    rows = [line[2:] for line in data.split(b"\n") if line.startswith(b"v ")]
    if not rows:
        raise RenderError(f"{path}: no vertices ('v x y z' lines) found")
    ncols = len(rows[0].split())
    flat = np.array(b" ".join(rows).split(), dtype=np.float64)
    if ncols >= 3 and flat.size == ncols * len(rows):
        verts = flat.reshape(len(rows), ncols)[:, :3]
    else:  # rows of mixed length (optional w / vertex colours): parse one by one
        verts = np.array([[float(t) for t in r.split()[:3]] for r in rows], dtype=np.float64)
    verts = np.ascontiguousarray(verts)
    verts.setflags(write=False)
    return verts


def load_mesh_vertices(obj_path: str | Path) -> np.ndarray:
    """Return the ``(V, 3)`` float64 vertex positions of a Wavefront OBJ file (read-only).

    Only ``v`` lines are parsed (with NumPy, ~10 ms for a 16k-face YCB mesh); results are
    cached per path and modification time.
    """
    path = Path(obj_path)
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        raise RenderError(f"mesh not found: {path}. {MODELS_HELP}") from None
    return _load_vertices_cached(str(path.resolve()), mtime)


def _obj_mtllibs(obj_path: Path) -> list[str]:
    """Names of the material libraries an OBJ file refers to (``mtllib`` lines)."""
    names: list[str] = []
    with obj_path.open("rb") as fh:
        for line in fh:
            if line.startswith(b"mtllib"):
                names.extend(t.decode("utf-8", "replace") for t in line.split()[1:])
            elif line.startswith((b"v ", b"f ")) and names:
                break
    return names


def _texture_file(obj_path: Path) -> Path | None:
    """The diffuse texture (``map_Kd``) of an OBJ's materials, or a ``texture_map.*`` file."""
    folder = obj_path.parent
    for lib in _obj_mtllibs(obj_path):
        mtl = folder / lib
        if not mtl.is_file():
            continue
        for line in mtl.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.strip().split()
            if len(parts) >= 2 and parts[0] == "map_Kd":
                candidate = folder / parts[-1]
                if candidate.is_file():
                    return candidate
    for name in ("texture_map.jpg", "texture_map.png"):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_texture(path: Path, max_size: int) -> np.ndarray | None:
    """Read a BGR texture at roughly ``max_size`` on its longer side, cheaply.

    JPEG decoding at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) is several times faster
    than decoding a 4096^2 YCB texture fully and then shrinking it.
    """
    for factor, flag in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                         (2, cv2.IMREAD_REDUCED_COLOR_2), (1, cv2.IMREAD_COLOR)):
        img = cv2.imread(str(path), flag)
        if img is None:
            return None
        if factor == 1 or max(img.shape[:2]) >= max_size:
            return img
    return None


def prepare_mesh_files(src: Path, folder: Path, texture_size: int, key: str = "") -> Path:
    """Prepare ``folder`` for loading the OBJ ``src`` into pybullet; return the OBJ to load.

    ``folder`` gets the OBJ (symlinked, else copied), a downsampled copy of its diffuse
    texture (``texture.bmp``, longest side at most ``texture_size``) and an MTL file for
    every material library the OBJ names, each holding one material that points at that
    texture. pybullet loads an OBJ's ``map_Kd`` texture itself; pointing it at a downsampled
    copy keeps a 4096^2 YCB texture from costing ~100 MB per loaded object. ``key`` only
    names the object in log messages.
    """
    src = Path(src)
    name = key or src.parent.name
    folder.mkdir(parents=True, exist_ok=True)
    obj = folder / MESH_FILE
    if not obj.exists():
        try:
            os.symlink(src.resolve(), obj)
        except OSError:
            shutil.copyfile(src, obj)
    texture = _texture_file(src)
    mtl_body = "newmtl material_0\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\n"
    if texture is not None:
        img = _read_texture(texture, texture_size)
        if img is None:
            LOG.warning("%s: could not read texture %s; rendering untextured", name, texture)
        else:
            h, w = img.shape[:2]
            scale = texture_size / max(h, w)
            if scale < 1:
                img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))),
                                 interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(folder / "texture.bmp"), img)  # BMP: fastest to write and read
            mtl_body += "map_Kd texture.bmp\n"
    else:
        LOG.warning("%s: no texture found next to %s; rendering untextured", name, src)
    # every material library the OBJ names gets the same single material; YCB meshes use
    # one material ('material_0'), and unknown 'usemtl' names fall back to the first one
    for lib in _obj_mtllibs(src) or ["textured.mtl"]:
        (folder / lib).write_text(mtl_body, encoding="utf-8")
    return obj


def find_models(models_dir: str | Path) -> dict[str, Path]:
    """Map object key (folder name) -> ``textured.obj`` for every model under ``models_dir``.

    Raises :class:`RenderError` with instructions for getting the YCB models when the
    folder does not exist or holds no ``<key>/textured.obj``.
    """
    root = Path(models_dir).expanduser()
    if not root.is_dir():
        raise RenderError(f"models folder not found: {root.resolve()}. {MODELS_HELP}")
    found = {d.name: d / MESH_FILE for d in sorted(root.iterdir())
             if d.is_dir() and (d / MESH_FILE).is_file()}
    if not found:
        raise RenderError(f"no '<key>/{MESH_FILE}' models in {root.resolve()}. {MODELS_HELP}")
    return found


def _unknown_keys_error(unknown: Sequence[str], available: Sequence[str],
                        root: Path) -> RenderError:
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, available, n=3, cutoff=0.5)
        hints.append(f"{key!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    return RenderError(
        f"object key(s) not found in the models folder {root.resolve()}: {'; '.join(hints)}. "
        f"Each key must be a folder holding {MESH_FILE}. {MODELS_HELP}")


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
# Varied appearance (materials and lighting)
# ---------------------------------------------------------------------------------------
#: (kelvin, RGB) anchors of a light's colour by colour temperature, relative to daylight
#: (6500 K = white); linear interpolation between them (approximate black-body colours).
_KELVIN_ANCHORS = np.array([
    [2500.0, 1.00, 0.62, 0.32],
    [3500.0, 1.00, 0.77, 0.55],
    [4500.0, 1.00, 0.87, 0.74],
    [5500.0, 1.00, 0.94, 0.89],
    [6500.0, 1.00, 1.00, 1.00],
    [8000.0, 0.88, 0.93, 1.00],
    [10000.0, 0.78, 0.87, 1.00],
])


def kelvin_rgb(kelvin: float) -> np.ndarray:
    """Approximate RGB gains (max 1) of light at colour temperature ``kelvin`` (2500-10000 K,
    clamped), white at 6500 K: warm light is reddish, cool light bluish."""
    k = float(np.clip(kelvin, _KELVIN_ANCHORS[0, 0], _KELVIN_ANCHORS[-1, 0]))
    return np.array([np.interp(k, _KELVIN_ANCHORS[:, 0], _KELVIN_ANCHORS[:, c])
                     for c in (1, 2, 3)], dtype=np.float32)


@dataclass(frozen=True)
class Look:
    """The extra material and lighting randomisation of one ``varied`` view.

    Applied to the rendered target object only (premultiplied layer), never to the
    background or the distractors: the light's colour temperature (white balance of the
    object's light), an intensity factor on the ambient and diffuse terms, the specular
    coefficient (matte to glossy), a jitter of the object's texture colours (hue shift in
    degrees, saturation, brightness and contrast factors) and a linear shading gradient
    (``shade``: darkening on the far side, 0 = none, along ``shade_angle`` radians), like a
    second, weaker light on one side.
    """

    kelvin: float
    intensity: float
    specular: float
    hue: float
    saturation: float
    brightness: float
    contrast: float
    shade: float
    shade_angle: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Look":
        """Draw a look; every field's range is fixed here (see the README's Data section)."""
        return cls(kelvin=float(rng.uniform(2500.0, 10000.0)),
                   intensity=float(rng.uniform(0.6, 1.4)),
                   specular=float(rng.uniform(0.0, 0.9)),
                   hue=float(rng.uniform(-12.0, 12.0)),
                   saturation=float(rng.uniform(0.6, 1.4)),
                   brightness=float(rng.uniform(0.75, 1.25)),
                   contrast=float(rng.uniform(0.7, 1.3)),
                   shade=float(rng.uniform(0.0, 0.6) if rng.random() < 0.6 else 0.0),
                   shade_angle=float(rng.uniform(0.0, 2.0 * math.pi)))

    def light(self, ambient: float, diffuse: float) -> tuple[float, float, float]:
        """(ambient, diffuse, specular) coefficients for pybullet after this look."""
        return ambient * self.intensity, diffuse * self.intensity, self.specular

    def apply(self, rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """The premultiplied object ``rgb`` (float32, [0, 1]) with this look's colour
        temperature, texture jitter and shading applied; ``alpha`` is unchanged."""
        a = alpha[..., None]
        inside = alpha > 1e-3
        if not inside.any():
            return rgb
        colour = np.where(a > 1e-3, rgb / np.maximum(a, 1e-3), 0.0).astype(np.float32)
        colour = np.clip(colour, 0.0, 1.0)
        hsv = cv2.cvtColor(colour, cv2.COLOR_RGB2HSV)  # float: H in [0, 360), S, V in [0, 1]
        hsv[..., 0] = np.mod(hsv[..., 0] + self.hue, 360.0)
        hsv[..., 1] = np.clip(hsv[..., 1] * self.saturation, 0.0, 1.0)
        colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        colour = colour * kelvin_rgb(self.kelvin) * self.brightness
        mean = float(colour[inside].mean())
        colour = (colour - mean) * self.contrast + mean
        if self.shade > 0:
            h, w = alpha.shape
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            t = ((xx / max(w - 1, 1) - 0.5) * math.cos(self.shade_angle)
                 + (yy / max(h - 1, 1) - 0.5) * math.sin(self.shade_angle)) / math.sqrt(0.5)
            colour = colour * (1.0 - self.shade * 0.5 * (t + 1.0))[..., None]
        return (np.clip(colour, 0.0, 1.0) * a).astype(np.float32)

    def to_meta(self) -> dict[str, float]:
        """JSON-serialisable fields (the view's ``appearance`` metadata)."""
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------
# Renderer
# ---------------------------------------------------------------------------------------
_MeshBodiesT = TypeVar("_MeshBodiesT", bound="MeshBodies")


class MeshBodies:
    """A pybullet ``DIRECT`` client holding the textured meshes of a models folder as bodies:
    what :class:`ObjectRenderer` and :class:`~vl_distill_ros.sim.scene.SceneRenderer`
    share.

    Each model is loaded on first use (:meth:`_body`: the mesh plus a texture downsampled to
    ``texture_size``, see :func:`prepare_mesh_files`, in a temporary folder) and cached as a
    hidden body; after each load the subclass's :meth:`_evict` keeps the cache at about
    ``max_bodies`` bodies. Use it as a context manager or call :meth:`close`.

    Raises:
        RenderError: no models in ``models_dir``, or pybullet is not installed.
    """

    #: Message of the :class:`RenderError` raised once the client is closed.
    _closed_message = "the renderer is closed"

    def __init__(self, models_dir: str | Path, texture_size: int, max_bodies: int,
                 tmp_prefix: str) -> None:
        self.models_dir = Path(models_dir).expanduser()
        self._models = find_models(self.models_dir)
        self.texture_size = int(texture_size)
        self.max_bodies = int(max_bodies)
        try:
            import pybullet  # local: keeps `import vl_distill_ros.sim.render` light
        except ImportError as exc:
            raise RenderError(f"rendering needs pybullet ({exc}); install it with "
                              "'pip install pybullet'") from None
        self._p = pybullet
        self._client: int | None = pybullet.connect(pybullet.DIRECT)
        self._tmp = tempfile.TemporaryDirectory(prefix=tmp_prefix)
        self._bodies: OrderedDict[str, int] = OrderedDict()

    # -- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        """Disconnect the pybullet client and delete the temporary textures."""
        client = getattr(self, "_client", None)  # absent if __init__ failed early
        if client is not None:
            try:
                self._p.disconnect(physicsClientId=client)
            finally:
                self._client = None
                self._bodies.clear()
                self._forget_visible()
                self._tmp.cleanup()

    def _forget_visible(self) -> None:
        """Called by :meth:`close` once every body is gone (subclasses track what shows)."""

    def __enter__(self: _MeshBodiesT) -> _MeshBodiesT:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; close() is the contract
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # -- models -----------------------------------------------------------------------------
    @property
    def keys(self) -> list[str]:
        """All object keys found in the models folder (sorted)."""
        return list(self._models)

    def check_keys(self, keys: Sequence[str]) -> None:
        """Raise :class:`RenderError` naming any key that has no model."""
        unknown = [k for k in keys if k not in self._models]
        if unknown:
            raise _unknown_keys_error(unknown, list(self._models), self.models_dir)

    def _require_client(self) -> int:
        if self._client is None:
            raise RenderError(self._closed_message)
        return self._client

    def _prepare_files(self, key: str) -> Path:
        """A folder with the OBJ (linked), an MTL naming a downsampled texture, the texture
        (see :func:`prepare_mesh_files`)."""
        return prepare_mesh_files(self._models[key], Path(self._tmp.name) / key,
                                  self.texture_size, key=key)

    def _body(self, key: str) -> int:
        """The (cached) pybullet body of ``key``, loading it on first use (hidden)."""
        if key in self._bodies:
            self._bodies.move_to_end(key)
            return self._bodies[key]
        self.check_keys([key])
        p, cid = self._p, self._require_client()
        obj = self._prepare_files(key)
        shape = p.createVisualShape(p.GEOM_MESH, fileName=str(obj), physicsClientId=cid)
        if shape < 0:
            raise RenderError(f"pybullet could not load the mesh {self._models[key]}")
        body = p.createMultiBody(baseMass=0, baseVisualShapeIndex=shape, physicsClientId=cid)
        p.changeVisualShape(body, -1, rgbaColor=[1, 1, 1, 0], physicsClientId=cid)
        self._bodies[key] = body
        self._evict()
        return body

    def _evict(self) -> None:
        """Remove least recently used bodies while more than ``max_bodies`` are cached."""
        raise NotImplementedError


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


# ---------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------
@dataclass
class SplitSpec:
    """One output split: which objects, how many views each, which domain and appearance."""

    objects: list[str]
    views: int
    domain: str = "clean"
    #: ``standard`` (default: the domain's own light and materials) or ``varied`` (adds a
    #: per-view :class:`Look`); see :data:`APPEARANCES`.
    appearance: str = "standard"


@dataclass
class RenderSpec:
    """A whole rendered dataset (``vl-distill render``)."""

    #: Folder with one ``<key>/textured.obj`` per object (the YCB google_16k models).
    #: Empty: :func:`default_models_dir` ($VL_DISTILL_YCB_MODELS or ../shared/ycb_models).
    models_dir: str = ""
    #: Output dataset folder (replaced atomically when rendering finishes).
    out_dir: str = "data/ycb_renders"
    #: Square crop size in pixels.
    image_size: int = 160
    #: Master seed; each (split, key, view index) derives its own generator from it.
    seed: int = 0
    #: Output splits by name (folder names), e.g. ``train``, ``test_id``, ``test_ood``.
    splits: dict[str, SplitSpec] = field(default_factory=dict)
    #: Keys never used as clutter distractors (besides every rendered object).
    distractor_exclude: list[str] = field(default_factory=list)
    #: When non-empty, clutter distractors come only from these keys (rendered objects
    #: included; ``distractor_exclude`` still applies). Empty: every model that is neither
    #: rendered nor excluded.
    distractor_pool: list[str] = field(default_factory=list)


def view_seed(seed: int, split: str, key: str, index: int) -> list[int]:
    """The entropy of one view's generator: ``[seed, crc32(split), crc32(key), index]``.

    Uses ``zlib.crc32`` (stable across processes), never Python's salted ``hash()``.
    """
    return [int(seed), zlib.crc32(split.encode("utf-8")), zlib.crc32(key.encode("utf-8")),
            int(index)]


def view_rng(seed: int, split: str, key: str, index: int) -> np.random.Generator:
    """The random generator of view ``index`` of ``key`` in ``split`` (see :func:`view_seed`)."""
    return np.random.default_rng(np.random.SeedSequence(view_seed(seed, split, key, index)))


def validate_spec(spec: RenderSpec) -> None:
    """Raise :class:`RenderError` if ``spec`` is malformed (models are checked later)."""
    if not isinstance(spec.image_size, int) or not 16 <= spec.image_size <= 2048:
        raise RenderError(f"image_size must be an integer in [16, 2048], got {spec.image_size!r}")
    if not isinstance(spec.seed, int) or spec.seed < 0:
        raise RenderError(f"seed must be a non-negative integer, got {spec.seed!r}")
    if not spec.splits:
        raise RenderError("no splits to render: give at least one under 'splits'")
    for name, split in spec.splits.items():
        if not name or name.startswith(".") or any(c in name for c in "/\\:") \
                or name != name.strip():
            raise RenderError(f"split name {name!r} is not a valid folder name")
        if split.domain not in DOMAINS:
            raise RenderError(
                f"splits.{name}.domain {split.domain!r} is not one of {list(DOMAINS)}")
        if split.appearance not in APPEARANCES:
            raise RenderError(
                f"splits.{name}.appearance {split.appearance!r} is not one of "
                f"{list(APPEARANCES)}")
        if not isinstance(split.views, int) or split.views < 1:
            raise RenderError(
                f"splits.{name}.views must be a positive integer, got {split.views!r}")
        if not split.objects:
            raise RenderError(f"splits.{name}.objects is empty")
        for key in split.objects:
            if not isinstance(key, str) or not key or key.startswith(".") \
                    or any(c in key for c in "/\\"):
                raise RenderError(f"splits.{name}: {key!r} is not a valid object key")
        dupes = sorted({k for k in split.objects if split.objects.count(k) > 1})
        if dupes:
            raise RenderError(f"splits.{name}.objects lists {dupes} more than once")


def _jobs(spec: RenderSpec) -> Iterator[tuple[str, SplitSpec, str, int]]:
    for split_name, split in spec.splits.items():
        for key in split.objects:
            for index in range(split.views):
                yield split_name, split, key, index


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise RenderError(f"output path exists and is not a folder: {out}")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
        raise RenderError(
            f"output folder {out} is not empty and holds no {MANIFEST_NAME} (not a rendered "
            "dataset); refusing to replace it. Choose another --out or empty it.")


def render_dataset(spec: RenderSpec, progress: bool = True) -> Path:
    """Render every split of ``spec`` and return the output folder.

    Layout: ``<out_dir>/<split>/<key>/<key>_<i:05d>.png`` and ``<out_dir>/manifest.json``
    (the spec, per-image metadata, the YCB attribution). Images are written to a hidden
    sibling folder ``.<name>.partial-*`` that replaces ``out_dir`` only when everything,
    manifest last, has been written; an existing rendered dataset (one with a manifest) at
    ``out_dir`` is replaced, any other non-empty folder is refused. Deterministic: the same
    spec and seed give byte-identical PNGs.
    """
    validate_spec(spec)
    if not spec.models_dir:
        spec = dataclasses.replace(spec, models_dir=default_models_dir())
    models = find_models(spec.models_dir)
    wanted = list(dict.fromkeys(k for s in spec.splits.values() for k in s.objects))
    unknown = [k for k in wanted if k not in models]
    if unknown:
        raise _unknown_keys_error(unknown, list(models), Path(spec.models_dir))
    out = Path(spec.out_dir).expanduser()
    _check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)

    if spec.distractor_pool:
        unknown_pool = [k for k in spec.distractor_pool if k not in models]
        if unknown_pool:
            raise _unknown_keys_error(unknown_pool, list(models), Path(spec.models_dir))
        clash = sorted(set(spec.distractor_pool) & set(spec.distractor_exclude))
        if clash:
            raise RenderError(f"distractor_pool lists excluded keys {clash}")
        exclude = set(models) - set(spec.distractor_pool)
    else:
        exclude = set(spec.distractor_exclude) | set(wanted)
    total = sum(len(s.objects) * s.views for s in spec.splits.values())
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        from tqdm import tqdm

        with ObjectRenderer(spec.models_dir, exclude=sorted(exclude)) as renderer, \
                tqdm(total=total, disable=not progress, unit="view", desc="render") as bar:
            if not renderer.distractor_pool and any(
                    s.domain == "clutter" for s in spec.splits.values()):
                LOG.warning("no models left for clutter distractors (all excluded); "
                            "clutter views will have none")
            for split_name, split, key, index in _jobs(spec):
                rng = view_rng(spec.seed, split_name, key, index)
                view = renderer.render_view(key, rng, split.domain, spec.image_size,
                                            appearance=split.appearance)
                rel = Path(split_name) / key / f"{key}_{index:05d}.png"
                ok, buf = cv2.imencode(".png", cv2.cvtColor(view.image, cv2.COLOR_RGB2BGR))
                if not ok:
                    raise RenderError(f"could not encode {rel}")
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp / rel).write_bytes(buf.tobytes())
                records.append({"split": split_name, "key": key, "index": index,
                                "file": rel.as_posix(), "domain": split.domain,
                                "appearance": split.appearance,
                                "seed": view_seed(spec.seed, split_name, key, index),
                                "view": view.meta})
                bar.update(1)
        elapsed = time.perf_counter() - started
        manifest = {
            "version": MANIFEST_VERSION,
            "spec": dataclasses.asdict(spec),
            "attribution": YCB_ATTRIBUTION,
            "counts": {name: len(s.objects) * s.views for name, s in spec.splits.items()},
            "images": records,
        }
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    LOG.info("rendered %d views in %.1f s (%.1f ms/view) into %s", total, elapsed,
             1000.0 * elapsed / max(total, 1), out)
    return out


def _replace_dir(new: Path, out: Path) -> None:
    """Move ``new`` to ``out``; an existing ``out`` (checked by :func:`_check_out_dir`) is
    moved aside first and deleted afterwards."""
    if out.exists():
        _check_out_dir(out)
    replace_dir(new, out)


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The ``manifest.json`` of a rendered dataset (raises :class:`RenderError` if absent)."""
    path = Path(out_dir) / MANIFEST_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RenderError(f"{path} not found: not a (finished) rendered dataset") from None


# ---------------------------------------------------------------------------------------
# Config files
# ---------------------------------------------------------------------------------------
def _resolve_file(name: str, config_path: Path | None) -> Path:
    """``name`` relative to the working directory, else to the config file's folder or the
    folder above it (an installed package's ``share/<pkg>/config`` layout)."""
    path = Path(name).expanduser()
    if path.is_absolute() or path.exists() or config_path is None:
        return path
    for base in (config_path.parent, config_path.parent.parent):
        if (base / path).exists():
            return base / path
    return path


def _resolve_objects(value: Any, split_name: str, split: Any, where: str) -> list[str]:
    if isinstance(value, str):
        word = value.strip()
        if word in ("id", "ood", "all"):
            if split is None:
                raise RenderError(
                    f"{where}.splits.{split_name}.objects is {word!r}, which needs a 'split' "
                    "file (e.g. split: config/splits/ycb_paper.yaml)")
            return list({"id": split.in_distribution, "ood": split.out_of_distribution,
                         "all": split.all_keys}[word])
        value = [k.strip() for k in word.split(",") if k.strip()]
    if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
        raise RenderError(
            f"{where}.splits.{split_name}.objects must be 'id', 'ood', 'all' or a list of "
            f"object keys, got {value!r}")
    return [str(k) for k in value]


def load_render_spec(path: str | Path | None, overrides: Sequence[str] = (),
                     views_scale: float = 1.0) -> RenderSpec:
    """Read a render YAML (see ``config/render_ycb.yaml``) plus ``key=value`` overrides.

    ``objects`` of a split may be ``id``, ``ood`` or ``all`` (keys of the file named by the
    top-level ``split`` key, read with :class:`~vl_distill_ros.model.vocabulary.Split`), a
    list of keys, or a comma-separated string of keys. With a split file, its ID+OOD keys
    are added to ``distractor_exclude``. ``views_scale`` multiplies every split's ``views``
    (rounded, at least 1). Raises :class:`RenderError` on any problem.
    """
    from vl_distill_ros.config import ConfigError, apply_overrides, from_dict
    from vl_distill_ros.model.vocabulary import Split, VocabularyError

    config_path = Path(path) if path is not None else None
    where = str(config_path) if config_path is not None else "render config"
    data: Any = {}
    if config_path is not None:
        try:
            data = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise RenderError(f"render config not found: {config_path} (give the path of a "
                              "render YAML such as config/render_ycb.yaml)") from None
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise RenderError(f"{config_path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise RenderError(f"{config_path}: expected a mapping at the top level")
    try:
        apply_overrides(data, overrides)
    except ConfigError as exc:
        raise RenderError(str(exc)) from None

    split = None
    split_file = data.pop("split", None)
    if split_file:
        try:
            split = Split.load(_resolve_file(str(split_file), config_path))
        except VocabularyError as exc:
            raise RenderError(str(exc)) from None
    raw_splits = data.pop("splits", None) or {}
    if not isinstance(raw_splits, dict):
        raise RenderError(f"{where}: 'splits' must be a mapping of split name -> settings")
    if not isinstance(views_scale, (int, float)) or not views_scale > 0:
        raise RenderError(f"views scale must be positive, got {views_scale!r}")
    try:
        spec = from_dict(RenderSpec, data, where)
        splits: dict[str, SplitSpec] = {}
        for name, entry in raw_splits.items():
            if not isinstance(entry, dict):
                raise RenderError(f"{where}.splits.{name}: expected a mapping "
                                  "{objects, views, domain, appearance}")
            entry = dict(entry)
            if "objects" not in entry or "views" not in entry:
                raise RenderError(f"{where}.splits.{name}: needs 'objects' and 'views'")
            entry["objects"] = _resolve_objects(entry["objects"], str(name), split, where)
            sp = from_dict(SplitSpec, entry, f"{where}.splits.{name}")
            sp.views = max(1, int(round(sp.views * views_scale)))
            splits[str(name)] = sp
    except ConfigError as exc:
        raise RenderError(str(exc)) from None
    spec.splits = splits
    if split is not None:
        spec.distractor_exclude = list(dict.fromkeys(
            list(spec.distractor_exclude) + list(split.all_keys)))
    spec.models_dir = str(Path(spec.models_dir or default_models_dir()).expanduser())
    validate_spec(spec)
    return spec
