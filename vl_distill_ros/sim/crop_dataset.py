"""Rendered crop data sets (``vl-distill render``): the :class:`RenderSpec` of a data set
(read from ``config/render_ycb.yaml``-style files by :func:`load_render_spec`) and
:func:`render_dataset`, which renders it with :class:`~vl_distill_ros.sim.render.
ObjectRenderer` into an image-folder tree ``<out_dir>/<split>/<key>/<key>_<i:05d>.png`` plus
``manifest.json``, deterministically: each (split, key, index) gets its own random
generator (:func:`view_rng`), so the same seed gives byte-identical PNGs.

ROS-free and torch-free.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import yaml

from vl_distill_ros.atomic_io import replace_dir
from vl_distill_ros.sim.appearance import APPEARANCES
from vl_distill_ros.sim.meshes import (YCB_ATTRIBUTION, RenderError, default_models_dir,
                                       find_models, unknown_keys_error)
from vl_distill_ros.sim.render import DOMAINS, ObjectRenderer

LOG = logging.getLogger(__name__)

__all__ = ["MANIFEST_NAME", "MANIFEST_VERSION", "SplitSpec", "RenderSpec", "view_seed",
           "view_rng", "validate_spec", "render_dataset", "read_manifest", "load_render_spec",
           "RenderError", "find_models"]

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
#: Most views of one object in one split (a typo in ``views`` or ``--views-scale`` must not
#: start a render that never ends).
MAX_VIEWS = 100_000
#: Largest render config read, and largest manifest read to recognise a rendered dataset.
MAX_CONFIG_BYTES = 1024 * 1024
MAX_MANIFEST_BYTES = 512 * 1024 * 1024


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
                or name != name.strip() or not name.isprintable() or name == MANIFEST_NAME:
            raise RenderError(f"split name {name!r} is not a valid folder name")
        if split.domain not in DOMAINS:
            raise RenderError(
                f"splits.{name}.domain {split.domain!r} is not one of {list(DOMAINS)}")
        if split.appearance not in APPEARANCES:
            raise RenderError(
                f"splits.{name}.appearance {split.appearance!r} is not one of "
                f"{list(APPEARANCES)}")
        if not isinstance(split.views, int) or not 1 <= split.views <= MAX_VIEWS:
            raise RenderError(f"splits.{name}.views must be an integer in 1..{MAX_VIEWS}, "
                              f"got {split.views!r}")
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


def is_rendered_dataset(folder: Path) -> bool:
    """Whether ``folder`` holds a dataset ``vl-distill render`` wrote: its ``manifest.json``
    has render's version, attribution, counts, spec and image list (any ``manifest.json`` is
    not enough: a web project or a ``render-cutouts`` folder has one too)."""
    from vl_distill_ros.atomic_io import read_regular_file

    try:
        manifest = json.loads(read_regular_file(folder / MANIFEST_NAME, MAX_MANIFEST_BYTES))
    except (OSError, ValueError):
        return False
    return (isinstance(manifest, dict) and manifest.get("version") == MANIFEST_VERSION
            and isinstance(manifest.get("attribution"), str)
            and isinstance(manifest.get("counts"), dict)
            and isinstance(manifest.get("spec"), dict) and "splits" in manifest["spec"]
            and isinstance(manifest.get("images"), list)
            and all(isinstance(r, dict) and {"split", "key", "file"} <= r.keys()
                    for r in manifest["images"]))


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise RenderError(f"output path exists and is not a folder: {out}")
    if out.is_dir() and any(out.iterdir()) and not is_rendered_dataset(out):
        raise RenderError(
            f"output folder {out} is not empty and is not a dataset `vl-distill render` "
            "wrote (no manifest.json of its kind); refusing to replace it. Choose another "
            "--out or empty it.")


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
        raise unknown_keys_error(unknown, list(models), Path(spec.models_dir))
    out = Path(spec.out_dir).expanduser()
    _check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)

    if spec.distractor_pool:
        unknown_pool = [k for k in spec.distractor_pool if k not in models]
        if unknown_pool:
            raise unknown_keys_error(unknown_pool, list(models), Path(spec.models_dir))
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
    from vl_distill_ros.config import ConfigError, apply_overrides, from_dict, load_yaml
    from vl_distill_ros.model.vocabulary import Split, VocabularyError

    config_path = Path(path) if path is not None else None
    where = str(config_path) if config_path is not None else "render config"
    data: Any = {}
    if config_path is not None:
        from vl_distill_ros.atomic_io import read_regular_file

        try:
            data = load_yaml(read_regular_file(config_path, MAX_CONFIG_BYTES)
                             .decode("utf-8")) or {}
        except FileNotFoundError:
            raise RenderError(f"render config not found: {config_path} (give the path of a "
                              "render YAML such as config/render_ycb.yaml)") from None
        except OSError as exc:  # a directory, FIFO, device or a file over the limit
            raise RenderError(f"cannot read render config {config_path}: {exc}") from None
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
    if not isinstance(views_scale, (int, float)) or not 0 < views_scale <= MAX_VIEWS:
        raise RenderError(f"views scale must be a number in (0, {MAX_VIEWS}], got "
                          f"{views_scale!r}")
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
    given_exclude = list(spec.distractor_exclude)
    if split is not None:
        spec.distractor_exclude = list(dict.fromkeys(
            list(spec.distractor_exclude) + list(split.all_keys)))
    spec.models_dir = str(Path(spec.models_dir or default_models_dir()).expanduser())
    validate_spec(spec)
    _check_exclude_keys(given_exclude, spec.models_dir)
    return spec


def _check_exclude_keys(keys: Sequence[str], models_dir: str) -> None:
    """Raise :class:`RenderError` for a ``distractor_exclude`` key with no model in
    ``models_dir`` (a misspelt key excluded nothing: the object it meant stayed a clutter
    distractor); nothing to check when the folder holds no models (reported when rendering)."""
    if not keys:
        return
    try:
        models = find_models(models_dir)
    except RenderError:
        return
    unknown = [k for k in keys if k not in models]
    if unknown:
        raise unknown_keys_error(unknown, list(models), Path(models_dir))
