"""Image-folder datasets: ``<root>/<label key or name>/*.png|jpg``, one folder per label.

``vl-distill render`` writes this layout, and users' own data uses it too. Folder names
match vocabulary labels by key, by name, or by name with underscores for spaces.
"""
from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..atomic_io import FileRejected, read_regular_file
from ..model.vocabulary import MAX_NAME_LENGTH, Vocabulary, VocabularyError, fold_key
from ..perception.image_files import read_image_file

#: Largest ``manifest.json`` of a named image folder read, in bytes (16 MiB).
MAX_MANIFEST_BYTES = 16 << 20

#: Most pixels a training image may declare (checked in its header before decoding).
MAX_IMAGE_PIXELS = 50_000_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class DatasetError(ValueError):
    """A dataset folder is missing, empty or does not match the vocabulary."""


@dataclass
class LabeledImages:
    """Images held in memory with integer labels into ``vocabulary``."""

    images: np.ndarray  # (N, S, S, 3) uint8 RGB
    labels: np.ndarray  # (N,) int64
    paths: list[Path]
    vocabulary: Vocabulary

    def __len__(self) -> int:
        return len(self.labels)


def read_rgb(path: Path, size: int | None = None) -> np.ndarray:
    """Read an image file as RGB uint8; with ``size``, centre-crop square and resize."""
    bgr = read_image_file(path, cv2.IMREAD_COLOR, max_pixels=MAX_IMAGE_PIXELS)
    if bgr is None:
        raise DatasetError(f"cannot read image {path} (missing, not a regular file, corrupt "
                           f"or over {MAX_IMAGE_PIXELS} pixels)")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if size is not None:
        h, w = rgb.shape[:2]
        s = min(h, w)
        y0, x0 = (h - s) // 2, (w - s) // 2
        rgb = rgb[y0:y0 + s, x0:x0 + s]
        if s != size:
            rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA if s > size
                             else cv2.INTER_LINEAR)
    return rgb


def list_image_folder(root: str | Path, vocabulary: Vocabulary,
                      keys: Sequence[str] | None = None) -> tuple[list[Path], list[int]]:
    """Paths and label indices (into ``vocabulary``) of the images under ``root``.

    ``keys`` restricts to those labels (folders for other labels are ignored); without it,
    every folder must match a label.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    wanted = None if keys is None else {vocabulary.index(k) for k in keys}
    paths: list[Path] = []
    labels: list[int] = []
    unknown = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            idx = vocabulary.index(folder.name)
        except KeyError:
            unknown.append(folder.name)
            continue
        if wanted is not None and idx not in wanted:
            continue
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        paths.extend(files)
        labels.extend([idx] * len(files))
    if unknown and keys is None:
        raise DatasetError(f"{root}: folders {unknown[:10]} match no vocabulary label")
    if not paths:
        raise DatasetError(f"{root}: no images found for the requested labels")
    return paths, labels


def load_unlabelled_folder(root: str | Path, vocabulary: Vocabulary,
                           size: int = 160) -> LabeledImages:
    """Every image under ``root`` (recursively, any folder names) with the label ``-1``.

    ``vocabulary`` is only carried along (the images have no label in it).

    Raises:
        DatasetError: the folder is missing or holds no image.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    paths = sorted(p for p in root.rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise DatasetError(f"{root}: no images found")
    images = np.stack([read_rgb(p, size) for p in paths])
    return LabeledImages(images=images, labels=np.full(len(paths), -1, np.int64), paths=paths,
                         vocabulary=vocabulary)


def load_named_folder(root: str | Path, vocabulary: Vocabulary,
                      size: int = 160) -> tuple[LabeledImages, list[str]]:
    """The images a folder's ``manifest.json`` lists (``images: [{file, name}, ...]``, as
    ``vl-distill render-cutouts`` writes it) and each one's name; the images' labels are
    ``-1`` until the caller maps the names to its label set (``vocabulary`` is only carried
    along).

    Raises:
        DatasetError: the folder or its manifest is missing, unreadable or malformed (an
            entry without a usable name, a file outside the folder or missing).
    """
    root = Path(root)
    manifest = root / "manifest.json"
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    try:
        entries = json.loads(read_regular_file(manifest, MAX_MANIFEST_BYTES))["images"]
        if not isinstance(entries, list) or not entries:
            raise TypeError("'images' is not a non-empty list")
        pairs = [(str(e["file"]), e["name"]) for e in entries]
    except FileNotFoundError:
        raise DatasetError(f"{manifest} not found: a named folder lists its images and their "
                           "names there (`vl-distill render-cutouts` writes one)") from None
    except (FileRejected, OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{manifest}: not a manifest of named images "
                           f"({{'images': [{{'file', 'name'}}, ...]}}): {exc}") from None
    paths, names = [], []
    top = root.resolve()
    for file, name in pairs:
        if not isinstance(name, str) or not name.strip() \
                or len(unicodedata.normalize("NFC", name)) > MAX_NAME_LENGTH:  # as labels
            raise DatasetError(f"{manifest}: {file!r} has no usable name ({name!r}: 1-"
                               f"{MAX_NAME_LENGTH} characters)")
        path = root / file
        if not path.resolve().is_relative_to(top) or path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DatasetError(f"{manifest}: {file!r} is not an image file inside {root}")
        paths.append(path)
        names.append(" ".join(name.split()))
    try:
        Vocabulary.from_names(sorted({fold_key(n): n for n in names}.values()))
    except VocabularyError as exc:
        raise DatasetError(f"{manifest}: {exc}") from None
    images = np.stack([read_rgb(p, size) for p in paths])
    return LabeledImages(images=images, labels=np.full(len(paths), -1, np.int64), paths=paths,
                         vocabulary=vocabulary), names


def load_image_folder(root: str | Path, vocabulary: Vocabulary,
                      keys: Sequence[str] | None = None, size: int = 160) -> LabeledImages:
    """Load an image folder into memory as square ``size`` RGB crops."""
    paths, labels = list_image_folder(root, vocabulary, keys)
    images = np.stack([read_rgb(p, size) for p in paths])
    return LabeledImages(images=images, labels=np.asarray(labels, np.int64), paths=paths,
                         vocabulary=vocabulary)
