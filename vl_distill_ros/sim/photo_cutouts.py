"""Crops of real photographed things, cut out of their photos, on the renderer's backgrounds.

The renders show 78 YCB objects; a robot's camera sees many more kinds of things. Cut-out
photos (an RGBA image per thing, transparent around it, such as the stamps Debian's
``tuxpaint-stamps-default`` ships: animals, food, tools, dishes, plants, vehicles) are
composited, one per crop, onto the procedural backgrounds of :mod:`.backgrounds` with a
soft shadow, a random scale, turn, flip and offset, and in the ``clutter`` domain a second
cut-out partly behind it. Each crop's manifest entry names the thing it shows (``name``:
:func:`name_of`, from the stamp's English description), so training can use the crops
unlabelled with the teacher-only losses (``data.unlabelled_splits``) or with their names in
L_cls as well (``data.named_splits``).

``vl-distill render-cutouts --config config/render_cutouts.yaml`` writes them as
``<out_dir>/<category path>/<stem>_<i>.png`` plus ``manifest.json``; cut-outs whose path or
English description (the stamp's ``<stem>.txt``, first line) holds one of ``exclude_words``
are skipped, so no kind of object a test scores as unseen is ever shown.
"""
from __future__ import annotations

import itertools
import json
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..atomic_io import read_regular_file, replace_dir
from ..perception.image_files import read_image_file, write_image_file
from ..model.vocabulary import MAX_NAME_LENGTH, UNKNOWN_NAME
from .backgrounds import sample_background

#: Largest side (pixels) a cut-out is read at; bigger sources are downsampled first.
MAX_SOURCE_SIDE = 1024
#: Largest crop side ``image_size`` may ask for, and the most crops per cut-out.
MAX_IMAGE_SIZE = 1024
MAX_VIEWS = 1000
#: Most pixels a source cut-out may declare (read from its header before decoding: a small
#: PNG can declare 10000 x 10000).
MAX_SOURCE_PIXELS = 50_000_000
#: Largest cut-out config read, and largest manifest read to recognise an earlier output.
MAX_CONFIG_BYTES = 1024 * 1024
MAX_MANIFEST_BYTES = 512 * 1024 * 1024


class CutoutError(ValueError):
    """A cut-out source folder or its settings cannot be used."""


@dataclass
class CutoutSpec:
    """Settings of ``vl-distill render-cutouts`` (``config/render_cutouts.yaml``)."""

    #: Folder searched (recursively) for RGBA ``*.png`` cut-outs.
    source_dir: str = "data/tuxpaint/usr/share/tuxpaint/stamps"
    out_dir: str = "data/cutouts"
    #: Crops per cut-out.
    views: int = 3
    image_size: int = 160
    seed: int = 0
    #: Folder names anywhere in a cut-out's path that exclude it (e.g. drawings, symbols).
    exclude_dirs: list[str] = field(default_factory=list)
    #: Words (case-insensitive, whole words) whose presence in a cut-out's path or English
    #: description excludes it: the kinds of object the tests score as unseen.
    exclude_words: list[str] = field(default_factory=list)
    #: Share of crops drawn in the ``clutter`` domain (busy background, a second cut-out).
    clutter_prob: float = 0.5
    #: The thing's longest side as a share of the crop side.
    scale: tuple[float, float] = (0.5, 0.95)
    #: Largest turn, degrees either way.
    max_turn: float = 25.0
    #: Cut-outs whose opaque part covers less than this share of their bounding box, or
    #: whose box is under 16 pixels a side, are skipped (lines, sparks, text).
    min_fill: float = 0.15


@dataclass
class Cutout:
    """One source cut-out: straight (not premultiplied) RGB and alpha, both float 0-1."""

    rgb: np.ndarray
    alpha: np.ndarray
    path: Path


def load_cutout_spec(path: str | Path) -> CutoutSpec:
    """Read ``path`` (YAML) into a :class:`CutoutSpec`, checking keys, types and bounds.

    Raises:
        CutoutError: unknown keys, wrong types or values out of range.
    """
    import yaml

    from ..config import ConfigError, from_dict, load_yaml

    try:
        raw = load_yaml(read_regular_file(path, MAX_CONFIG_BYTES).decode("utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CutoutError(f"cannot read cut-out config {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise CutoutError(f"{path}: expected a mapping")
    try:
        spec = from_dict(CutoutSpec, raw, str(path))   # scale: a list of two numbers
        spec.exclude_dirs = [str(d) for d in spec.exclude_dirs]
        spec.exclude_words = [str(w) for w in spec.exclude_words]
    except (ConfigError, TypeError, IndexError, ValueError) as exc:
        raise CutoutError(str(exc)) from exc
    check_spec(spec)
    return spec


def check_spec(spec: CutoutSpec) -> None:
    """Raise :class:`CutoutError` when a setting is out of its range."""
    if not 1 <= int(spec.views) <= MAX_VIEWS:
        raise CutoutError(f"views must be 1-{MAX_VIEWS}, got {spec.views}")
    if not 16 <= int(spec.image_size) <= MAX_IMAGE_SIZE:
        raise CutoutError(f"image_size must be 16-{MAX_IMAGE_SIZE}, got {spec.image_size}")
    if int(spec.seed) < 0:
        raise CutoutError(f"seed must be non-negative, got {spec.seed}")
    lo, hi = spec.scale
    if not 0.05 <= lo <= hi <= 1.5:
        raise CutoutError(f"scale must be [lo, hi] with 0.05 <= lo <= hi <= 1.5, got "
                          f"{list(spec.scale)}")
    if not 0.0 <= spec.clutter_prob <= 1.0 or not 0.0 <= spec.min_fill < 1.0:
        raise CutoutError("clutter_prob must be 0-1 and min_fill 0-1 (exclusive)")
    if not 0.0 <= spec.max_turn <= 180.0:
        raise CutoutError(f"max_turn must be 0-180 degrees, got {spec.max_turn}")


def description_of(png: Path) -> str:
    """The English description next to a stamp (first line of ``<stem>.txt``), or ''."""
    txt = png.with_suffix(".txt")
    try:
        with txt.open(encoding="utf-8", errors="replace") as f:
            return f.readline(500).strip()
    except OSError:
        return ""


_ARTICLE = re.compile(r"^(?:a pair of|a bunch of|a head of|an|a|the|some|two)\s+", re.I)
_QUOTES = re.compile("[\"\u201c\u201d\u2018\u2019']")


def name_of(png: Path) -> str:
    """A short, lower-case name of the thing a stamp shows: its English description's first
    clause without the article when that is 1-4 plain words ("A \u201cFuji\u201d apple." ->
    ``fuji apple``), else the file stem without digits and ``_mirror`` (``fireman200b`` ->
    ``fireman``). A ``*_mirror`` stamp reads the description of the stamp it mirrors. Always
    a valid vocabulary name: ASCII letters, digits, spaces and hyphens, at most 64
    characters, never the reserved ``unknown`` (``thing`` when nothing else is left)."""
    stem = re.sub(r"_mirror$", "", png.stem)
    text = description_of(png) or description_of(png.with_name(stem + png.suffix))
    first = _QUOTES.sub("", re.split(r"[.!?(:;\u2014]", text, maxsplit=1)[0]).replace(",", " ")
    words = _ARTICLE.sub("", first.strip()).split()
    name = ""
    if 1 <= len(words) <= 4 and all(re.fullmatch(r"[A-Za-z][A-Za-z-]*", w) for w in words):
        name = " ".join(words).lower()
    if not name or name == UNKNOWN_NAME or len(name) > MAX_NAME_LENGTH:
        stem = re.sub(r"^\d+_|[-_ ]*\d+[a-z]?$", "", stem)
        name = " ".join(re.sub(r"[^a-z0-9]+", " ", stem.lower()).split())[:MAX_NAME_LENGTH]
    return name.strip() if name.strip() not in ("", UNKNOWN_NAME) else "thing"


def find_cutouts(spec: CutoutSpec) -> list[Path]:
    """The source's ``*.png`` files that pass ``exclude_dirs`` and ``exclude_words``, sorted.

    Raises:
        CutoutError: the source folder is missing or nothing in it passes.
    """
    root = Path(spec.source_dir)
    if not root.is_dir():
        raise CutoutError(f"cut-out source folder not found: {root} (tools/fetch_cutouts.sh "
                          "fetches the default one)")
    dirs = {d.lower() for d in spec.exclude_dirs}
    words = [re.compile(rf"(?<![a-z]){re.escape(w.lower())}(?![a-z])")
             for w in spec.exclude_words]
    kept = []
    for png in sorted(root.rglob("*.png")):
        rel = png.relative_to(root)
        if dirs & {p.lower() for p in rel.parts[:-1]}:
            continue
        text = f"{rel.with_suffix('').as_posix()} {description_of(png)}".lower()
        text = text.replace("_", " ").replace("-", " ").replace("/", " ")
        if any(w.search(text) for w in words):
            continue
        kept.append(png)
    if not kept:
        raise CutoutError(f"{root}: no cut-out passes exclude_dirs / exclude_words")
    return kept


def read_cutout(path: Path, min_fill: float = 0.15) -> Cutout | None:
    """Read an RGBA cut-out trimmed to its opaque part; None when it is not a usable one
    (unreadable, no alpha, too small, or too thin by ``min_fill``)."""
    img = read_image_file(path, cv2.IMREAD_UNCHANGED, max_pixels=MAX_SOURCE_PIXELS)
    if img is None or img.ndim != 3 or img.shape[2] != 4:
        return None
    if img.dtype != np.uint8:
        img = (img.astype(np.float32) / np.iinfo(img.dtype).max * 255.0).astype(np.uint8)
    h, w = img.shape[:2]
    if max(h, w) > MAX_SOURCE_SIDE:
        s = MAX_SOURCE_SIDE / max(h, w)
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))),
                         interpolation=cv2.INTER_AREA)
    alpha = img[..., 3].astype(np.float32) / 255.0
    ys, xs = np.nonzero(alpha > 0.5)
    if len(ys) == 0:
        return None
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    if min(y1 - y0, x1 - x0) < 16 or len(ys) < min_fill * (y1 - y0) * (x1 - x0):
        return None
    rgb = cv2.cvtColor(img[y0:y1, x0:x1, :3], cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    return Cutout(rgb=rgb, alpha=alpha[y0:y1, x0:x1], path=path)


def _placed(cut: Cutout, side: float, turn: float, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """The cut-out scaled so its longest side is ``side`` px, turned and maybe flipped."""
    rgb, alpha = cut.rgb, cut.alpha
    if flip:
        rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
    h, w = alpha.shape
    s = side / max(h, w)
    size = (max(2, round(w * s)), max(2, round(h * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    rgb = cv2.resize(np.ascontiguousarray(rgb), size, interpolation=interp)
    alpha = cv2.resize(np.ascontiguousarray(alpha), size, interpolation=interp)
    if turn:
        h, w = alpha.shape
        diag = int(np.ceil(np.hypot(h, w)))
        m = cv2.getRotationMatrix2D((w / 2, h / 2), turn, 1.0)
        m[:, 2] += ((diag - w) / 2, (diag - h) / 2)
        rgb = cv2.warpAffine(rgb, m, (diag, diag), flags=cv2.INTER_LINEAR)
        alpha = cv2.warpAffine(alpha, m, (diag, diag), flags=cv2.INTER_LINEAR)
    return rgb, np.clip(alpha, 0.0, 1.0)


def _composite(canvas: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, cx: float, cy: float,
               rng: np.random.Generator) -> None:
    """Paste a placed cut-out centred at (cx, cy) onto ``canvas`` (float RGB, in place),
    with a soft shadow down and to one side."""
    H, W = canvas.shape[:2]
    h, w = alpha.shape
    x, y = int(round(cx - w / 2)), int(round(cy - h / 2))
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x0 >= x1 or y0 >= y1:
        return
    shadow = np.zeros((H, W), np.float32)
    dx, dy = (int(v * max(h, w)) for v in rng.uniform([-0.06, 0.0], [0.06, 0.08]))
    sx0, sy0, sx1, sy1 = max(x + dx, 0), max(y + dy, 0), min(x + dx + w, W), min(y + dy + h, H)
    if sx0 < sx1 and sy0 < sy1:
        shadow[sy0:sy1, sx0:sx1] = alpha[sy0 - y - dy:sy1 - y - dy, sx0 - x - dx:sx1 - x - dx]
        k = max(3, int(0.08 * max(h, w)) | 1)
        shadow = cv2.GaussianBlur(shadow, (k, k), 0) * rng.uniform(0.2, 0.5)
        canvas *= 1.0 - shadow[..., None]
    a = alpha[y0 - y:y1 - y, x0 - x:x1 - x, None]
    canvas[y0:y1, x0:x1] = rgb[y0 - y:y1 - y, x0 - x:x1 - x] * a + canvas[y0:y1, x0:x1] * (1 - a)


def compose_crop(cut: Cutout, spec: CutoutSpec, rng: np.random.Generator,
                 other: Cutout | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """One ``image_size`` RGB uint8 crop of ``cut`` on a random background.

    With ``other`` (the clutter domain), that cut-out is placed first, smaller and off to
    a side, so the main thing stands in front of it. Returns the crop and what was drawn.
    """
    size = int(spec.image_size)
    domain = "clutter" if other is not None else "clean"
    background, kind = sample_background(domain, size, rng)
    canvas = background.astype(np.float32) / 255.0
    meta: dict[str, Any] = {"domain": domain, "background": kind}
    if other is not None:
        side = size * rng.uniform(0.35, 0.7)
        o_rgb, o_alpha = _placed(other, side, rng.uniform(-spec.max_turn, spec.max_turn),
                                 bool(rng.random() < 0.5))
        corner = rng.uniform(0.1, 0.9, size=2) * size
        _composite(canvas, o_rgb, o_alpha, corner[0], corner[1], rng)
        meta["behind"] = other.path.name
    side = size * rng.uniform(*spec.scale)
    turn = float(rng.uniform(-spec.max_turn, spec.max_turn))
    rgb, alpha = _placed(cut, side, turn, bool(rng.random() < 0.5))
    centre = size / 2 + rng.uniform(-0.12, 0.12, size=2) * size
    _composite(canvas, rgb, alpha, centre[0], centre[1], rng)
    meta.update(side=round(float(side), 1), turn=round(turn, 1))
    return (np.clip(canvas * 255.0 + 0.5, 0, 255)).astype(np.uint8), meta


def _check_out_dir(out: Path) -> None:
    """Refuse an output path that is a file, or a non-empty folder that is not an earlier
    ``render-cutouts`` output (its ``manifest.json`` with the spec's ``source_dir``, the
    cut-out and crop counts and the crop list): it is not ours to replace."""
    if out.exists() and not out.is_dir():
        raise CutoutError(f"output path exists and is not a folder: {out}")
    if not out.is_dir() or not any(out.iterdir()):
        return
    try:
        earlier = json.loads(read_regular_file(out / "manifest.json", MAX_MANIFEST_BYTES))
        ours = (isinstance(earlier, dict) and isinstance(earlier.get("spec"), dict)
                and "source_dir" in earlier["spec"] and isinstance(earlier.get("cutouts"), int)
                and isinstance(earlier.get("crops"), int)
                and isinstance(earlier.get("images"), list))
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise CutoutError(f"output folder {out} is not empty and is not an earlier output of "
                          "render-cutouts (no manifest.json of its kind); refusing to replace "
                          "it. Choose another --out or empty it.")


def render_cutouts(spec: CutoutSpec, progress: bool = True) -> dict[str, Any]:
    """Write ``views`` crops of every usable cut-out under ``spec.out_dir`` and its
    ``manifest.json``; returns the manifest. An earlier ``render-cutouts`` output there is
    replaced once the new one is complete; a folder holding anything else is refused.

    Deterministic for a seed: crop ``v`` of cut-out ``i`` draws from ``(seed, i, v)``.
    """
    check_spec(spec)
    root = Path(spec.source_dir)
    cutouts = [c for c in (read_cutout(p, spec.min_fill) for p in find_cutouts(spec))
               if c is not None]
    if not cutouts:
        raise CutoutError(f"{root}: no usable RGBA cut-out (they need an alpha channel)")
    out = Path(spec.out_dir)
    _check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # written into a hidden sibling that replaces ``out`` only when complete: an interrupted
    # or failed run leaves the earlier crops as they were (and no stray crops that training,
    # which reads every image of the folder, would take)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        manifest = _write_crops(spec, cutouts, root, tmp, progress)
        _check_out_dir(out)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _write_crops(spec: CutoutSpec, cutouts: list, root: Path, out: Path, progress: bool
                 ) -> dict[str, Any]:
    """Write every crop of :func:`render_cutouts` and the manifest into ``out``; return the
    manifest."""
    from tqdm import tqdm

    written = []
    for i, v in tqdm(list(itertools.product(range(len(cutouts)), range(int(spec.views)))),
                     desc="cut-outs", unit="crop", disable=not progress):
        rng = np.random.default_rng([int(spec.seed), i, v])
        other = None
        if len(cutouts) > 1 and rng.random() < spec.clutter_prob:
            j = int(rng.integers(len(cutouts) - 1))
            other = cutouts[j + (j >= i)]
        crop, meta = compose_crop(cutouts[i], spec, rng, other)
        rel = cutouts[i].path.relative_to(root).with_suffix("")
        dest = out / rel.parent / f"{rel.name}_{v}.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not write_image_file(dest, cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)):
            raise CutoutError(f"cannot write {dest}")
        written.append({"file": dest.relative_to(out).as_posix(),
                        "name": name_of(cutouts[i].path), **meta})
    manifest = {"spec": {**asdict(spec), "scale": list(spec.scale)},
                "cutouts": len(cutouts), "crops": len(written), "images": written}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest
