"""The YCB models folder, mesh and texture files, and the pybullet client holding them as
bodies (:class:`MeshBodies`) that the crop renderer (:mod:`vl_distill_ros.sim.render`) and
the scene renderer (:mod:`vl_distill_ros.sim.scene`) share.

ROS-free and torch-free; pybullet is imported when a :class:`MeshBodies` is made.
"""
from __future__ import annotations

import difflib
import functools
import logging
import os
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Sequence, TypeVar

import cv2
import numpy as np

from ..perception.image_files import read_file_bytes, write_image_file

LOG = logging.getLogger(__name__)

__all__ = ["MODELS_ENV", "DEFAULT_MODELS_DIR", "MODELS_HELP", "YCB_ATTRIBUTION", "MESH_FILE",
           "RenderError", "default_models_dir", "load_mesh_vertices", "prepare_mesh_files",
           "find_models", "unknown_keys_error", "MeshBodies"]

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
MESH_FILE = "textured.obj"


class RenderError(ValueError):
    """Rendering cannot proceed (missing models, unknown object key, bad spec)."""


@functools.lru_cache(maxsize=256)
def _load_vertices_cached(path: str, mtime_ns: int) -> np.ndarray:
    lines = Path(path).read_bytes().split(b"\n")
    rows = [line[2:] for line in lines if line.startswith(b"v ")]
    if not rows:
        raise RenderError(f"{path}: no vertices ('v x y z' lines) found")
    try:
        ncols = len(rows[0].split())
        flat = np.array(b" ".join(rows).split(), dtype=np.float64)
        if ncols >= 3 and flat.size == ncols * len(rows):
            verts = flat.reshape(len(rows), ncols)[:, :3]
        else:  # rows of mixed length (optional w / vertex colours): parse one by one
            verts = np.array([[float(t) for t in r.split()[:3]] for r in rows],
                             dtype=np.float64)
    except ValueError as exc:  # a coordinate that is no number, rows of two coordinates
        raise RenderError(f"{path}: not a mesh this renderer can read: a 'v' line is not "
                          f"three numbers ({exc})") from None
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise RenderError(f"{path}: not a mesh this renderer can read: a 'v' line has fewer "
                          "than three coordinates")
    if not np.isfinite(verts).all():
        raise RenderError(f"{path}: a vertex is not finite (NaN or infinity)")
    if len(verts) < 3 or not (np.ptp(verts, axis=0) > 0).sum() >= 2:
        raise RenderError(f"{path}: its vertices span no surface (fewer than 3, or all on "
                          "one line)")
    if not any(line.startswith(b"f ") for line in lines):
        raise RenderError(f"{path}: no faces ('f' lines): nothing to draw")
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
    buf = read_file_bytes(path)  # bytes, not a path: OpenCV crashes on non-UTF-8 names
    if buf is None:
        return None
    for factor, flag in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                         (2, cv2.IMREAD_REDUCED_COLOR_2), (1, cv2.IMREAD_COLOR)):
        try:
            img = cv2.imdecode(buf, flag)
        except cv2.error:
            return None
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
            # BMP: fastest to write and read; encoded in memory (OpenCV's own writer crashes
            # on a path that is not UTF-8)
            if not write_image_file(folder / "texture.bmp", img):
                raise RenderError(f"{name}: cannot write its texture into {folder}")
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
             if d.is_dir() and (d / MESH_FILE).is_file() and _usable_key(d)}
    if not found:
        raise RenderError(f"no '<key>/{MESH_FILE}' models in {root.resolve()}. {MODELS_HELP}")
    return found


def _usable_key(folder: Path) -> bool:
    """Whether ``folder``'s name can be an object key: UTF-8 text (keys go into labels,
    manifests and ROS messages, which hold UTF-8 only) without control characters. Other
    folders are skipped with a warning."""
    name = folder.name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        LOG.warning("skipping %r in the models folder: its name is not UTF-8 text, so it "
                    "cannot be an object key", name)
        return False
    if not name.isprintable():
        LOG.warning("skipping %r in the models folder: its name holds control characters",
                    name)
        return False
    return True


def unknown_keys_error(unknown: Sequence[str], available: Sequence[str],
                       root: Path) -> RenderError:
    """The :class:`RenderError` for object keys with no model under ``root``, with the
    closest keys that exist and where the models come from."""
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, available, n=3, cutoff=0.5)
        hints.append(f"{key!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    return RenderError(
        f"object key(s) not found in the models folder {root.resolve()}: {'; '.join(hints)}. "
        f"Each key must be a folder holding {MESH_FILE}. {MODELS_HELP}")


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
            import pybullet  # local: keeps `import vl_distill_ros.sim.meshes` light
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
            raise unknown_keys_error(unknown, list(self._models), self.models_dir)

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
