"""Data preparation shared by training and evaluation: vocabularies, splits, teacher targets."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.config import DataConfig, TeacherConfig
from ..core.data.image_folder import LabeledImages, load_image_folder
from ..core.teacher_cache import TeacherImageCache, file_digest
from ..core.teachers import Teacher
from ..core.teachers.factory import build_teacher, teacher_id_for
from ..core.vocabulary import Split, Vocabulary
from ..core.zero_shot import build_zero_shot_classifier

#: Rendered splits and the label set each is scored against.
EVAL_SPLITS = {
    "test_id": "id",          # X_id: held-out views of ID objects, ID labels
    "test_shift_id": "id",    # X_ood, Y_id: ID objects under distribution shift, ID labels
    "test_ood": "ood",        # X_ood, Y_ood: unseen objects under shift, OOD labels
}


@dataclass
class Vocabularies:
    """The label sets of a run (descriptions dropped when enrichment is off)."""

    all: Vocabulary
    id: Vocabulary
    ood: Vocabulary
    split: Split

    def for_set(self, name: str) -> Vocabulary:
        return {"id": self.id, "ood": self.ood, "all": self.all}[name]


def load_vocabularies(cfg: DataConfig) -> Vocabularies:
    """Read the vocabulary and split named in ``cfg``."""
    vocab = Vocabulary.load(cfg.vocabulary)
    split = Split.load(cfg.split)
    if not cfg.enrich:
        vocab = vocab.without_descriptions()
    return Vocabularies(all=vocab.subset(split.all_keys), id=vocab.subset(split.in_distribution),
                        ood=vocab.subset(split.out_of_distribution), split=split)


class LazyTeacher:
    """Builds the teacher on first use, so fully cached runs never load its weights."""

    def __init__(self, cfg: TeacherConfig, seed: int = 0) -> None:
        self.cfg = cfg
        self.seed = seed
        self._teacher: Teacher | None = None
        self.id = teacher_id_for(cfg)

    def get(self) -> Teacher:
        if self._teacher is None:
            # Seeded so a randomly initialised teacher (tests, benchmarks) is reproducible.
            torch.manual_seed(self.seed)
            self._teacher = build_teacher(self.cfg)
            if self._teacher.id != self.id:
                self.id = self._teacher.id
        return self._teacher


def text_classifier(teacher: LazyTeacher, vocab: Vocabulary, cfg: DataConfig) -> torch.Tensor:
    """(L, D) teacher text embeddings of ``vocab`` with the run's templates."""
    return build_zero_shot_classifier(teacher.get().encode_texts, vocab, cfg.templates,
                                      enrich=cfg.enrich)


def teacher_image_targets(teacher: LazyTeacher, data: LabeledImages, cache_dir: str | Path,
                          batch_size: int, progress: bool = True,
                          compute: bool = True) -> torch.Tensor:
    """Teacher embeddings of the un-augmented images, from the on-disk cache when present.

    With ``compute=False`` (DDP ranks other than 0) a cache miss is an error.
    """
    cache = TeacherImageCache(cache_dir, teacher.id)
    keys = [file_digest(p) for p in data.paths]

    def load(indices: list[int]) -> list[np.ndarray]:
        return [data.images[i] for i in indices]

    def encode(images: list[np.ndarray]) -> torch.Tensor:
        if not compute:
            raise RuntimeError("teacher cache miss on a non-zero rank; rank 0 fills the cache")
        return teacher.get().encode_images(images)

    return cache.get_or_compute(keys, load, encode, batch_size=batch_size, progress=progress)


def load_split_images(root: str | Path, split: str, vocab: Vocabulary,
                      size: int = 160) -> LabeledImages | None:
    """Images of a rendered split restricted to ``vocab``; None if the split is absent."""
    folder = Path(root) / split
    if not folder.is_dir():
        return None
    return load_image_folder(folder, vocab, keys=vocab.keys, size=size)

