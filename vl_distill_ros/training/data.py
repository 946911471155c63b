"""Data preparation shared by training and evaluation: vocabularies, splits, teacher targets."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig, TeacherConfig
from .image_folder import (DatasetError, LabeledImages, list_image_folder, load_named_folder,
                           load_image_folder, load_unlabelled_folder)
from .teacher_cache import TeacherImageCache, file_digest
from ..model.teachers import Teacher
from ..model.teachers.factory import build_teacher, teacher_id_for
from ..model.vocabulary import Label, Split, Vocabulary, VocabularyError
from ..model.zero_shot import build_zero_shot_classifier

LOG = logging.getLogger(__name__)

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
        """The vocabulary of set ``name`` (``id``, ``ood`` or ``all``)."""
        return {"id": self.id, "ood": self.ood, "all": self.all}[name]


def load_vocabularies(cfg: DataConfig) -> Vocabularies:
    """Read the vocabulary and split named in ``cfg``."""
    vocab = Vocabulary.load(cfg.vocabulary)
    split = Split.load(cfg.split)
    if not cfg.enrich:
        vocab = vocab.without_descriptions()
    id_vocab = _split_part(vocab, split.in_distribution, "in_distribution", cfg)
    ood_vocab = _split_part(vocab, split.out_of_distribution, "out_of_distribution", cfg)
    return Vocabularies(all=vocab.subset(split.all_keys), id=id_vocab, ood=ood_vocab,
                        split=split)


def _split_part(vocab: Vocabulary, keys: tuple[str, ...], field: str,
                cfg: DataConfig) -> Vocabulary:
    """The labels of one list of the split, or a :class:`VocabularyError` naming the split
    file: an empty list (an empty vocabulary's bare message said neither file nor list) or
    a key the vocabulary file does not hold (was a bare ``KeyError`` traceback)."""
    if not keys:
        need = ("at least one object to train on" if field == "in_distribution" else
                "at least one object held out of training (it needs no images: a split "
                "folder without its images, such as test_ood, is skipped)")
        raise VocabularyError(f"{cfg.split}: '{field}' is empty; a training split needs {need}")
    missing = [k for k in keys if not _has(vocab, k)]
    if missing:
        raise VocabularyError(f"{cfg.split}: '{field}' names {', '.join(map(repr, missing))}, "
                              f"which the vocabulary {cfg.vocabulary} does not hold (by key "
                              "or name)")
    return vocab.subset(keys)


class LazyTeacher:
    """Builds the teacher on first use, so fully cached runs never load its weights."""

    def __init__(self, cfg: TeacherConfig, seed: int = 0) -> None:
        self.cfg = cfg
        self.seed = seed
        self._teacher: Teacher | None = None
        self.id = teacher_id_for(cfg)

    def get(self) -> Teacher:
        """The teacher, built on first use."""
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
    folder = split_folder(root, split)
    if not folder.is_dir():
        return None
    return load_image_folder(folder, vocab, keys=vocab.keys, size=size)


def split_folder(root: str | Path, split: str) -> Path:
    """``split`` as a folder: a plain name is a split under ``root``; a name with a ``/``
    is a folder path of its own (e.g. ``data/ycb_aux/train_id_clutter``)."""
    return Path(split) if "/" in split else Path(root) / split


def _concat(parts: list[LabeledImages], vocab: Vocabulary) -> LabeledImages:
    return LabeledImages(images=np.concatenate([p.images for p in parts]),
                         labels=np.concatenate([p.labels for p in parts]),
                         paths=[q for p in parts for q in p.paths], vocabulary=vocab)


@dataclass
class TrainingSet:
    """Everything a run trains on.

    Attributes:
        data: all training images; ``labels`` index ``cls_vocab`` or are -1 (unlabelled
            auxiliary images, used by the teacher-only losses alone).
        cls_vocab: the label set of L_cls (the ID labels, plus the auxiliary names with
            ``loss.cls_label_set: id+aux``, plus the names of ``data.named_splits``); these
            are the names the student was trained on.
        n_labelled_id: images of the split's ID objects.
        n_aux: auxiliary images.
        first_named_label: index in ``cls_vocab`` of the first name a named folder added
            (``len(cls_vocab)`` when none did).
    """

    data: LabeledImages
    cls_vocab: Vocabulary
    n_labelled_id: int
    n_aux: int
    first_named_label: int = -1

    def __post_init__(self) -> None:
        if self.first_named_label < 0:
            self.first_named_label = len(self.cls_vocab)


def load_training_set(data_cfg: DataConfig, cls_label_set: str,
                      vocabs: Vocabularies) -> TrainingSet | None:
    """Labelled ID images of ``data.train_splits`` plus ``data.aux_splits`` plus the images
    of ``data.named_splits`` (labelled with their names, which join L_cls) plus those of
    ``data.unlabelled_splits`` (label -1); None when the first training split is missing
    (nothing rendered yet).

    Raises:
        DatasetError: an auxiliary folder holds an object of the split (ID or OOD), or a
            named folder names one of its OOD objects: only objects outside the split may
            be auxiliary, so no OOD image or name is ever trained on.
    """
    parts = []
    full = full_vocabulary(data_cfg)
    for name in data_cfg.train_splits:
        _refuse_unnamed_folders(split_folder(data_cfg.root, name), full, data_cfg.vocabulary)
        part = load_split_images(data_cfg.root, name, vocabs.id)
        if part is None:
            if not parts:
                return None
            raise DatasetError(f"training split {split_folder(data_cfg.root, name)} not found")
        parts.append(part)
    _warn_untrained(parts, vocabs.id, data_cfg)
    n_id = sum(len(p) for p in parts)
    aux_keys: list[str] = []
    aux_parts = []
    for name in data_cfg.aux_splits:
        folder = split_folder(data_cfg.root, name)
        keys = outside_split_keys(folder, full, vocabs, "auxiliary")
        aux_parts.append((folder, keys))
        aux_keys += [k for k in keys if k not in aux_keys]
    cls_vocab = vocabs.id
    if cls_label_set == "id+aux" and aux_keys:
        cls_vocab = full.subset(list(vocabs.id.keys) + aux_keys)
    for folder, keys in aux_parts:
        part = load_image_folder(folder, full, keys=keys)
        if cls_label_set == "id+aux":
            part.labels = np.array([cls_vocab.index(full[i].key) for i in part.labels])
        else:
            part.labels = np.full(len(part), -1, np.int64)
        parts.append(part)
    first_named = len(cls_vocab)
    for name in data_cfg.named_splits:
        part, cls_vocab = _named_part(split_folder(data_cfg.root, name), cls_vocab, vocabs,
                                      full)
        parts.append(part)
    for name in data_cfg.unlabelled_splits:
        folder = split_folder(data_cfg.root, name)
        if not folder.is_dir():
            raise DatasetError(f"unlabelled folder {folder} not found (`vl-distill "
                               "render-cutouts` writes data/cutouts: `make cutouts`)")
        parts.append(load_unlabelled_folder(folder, cls_vocab))
    return TrainingSet(data=_concat(parts, cls_vocab), cls_vocab=cls_vocab,
                       n_labelled_id=n_id, n_aux=sum(len(p) for p in parts) - n_id,
                       first_named_label=first_named)


def _refuse_unnamed_folders(folder: Path, full: Vocabulary, vocabulary_file: str) -> None:
    """A training split's label folders must each name a label of the vocabulary file (by
    key or name): a misspelt folder (``tape_measures`` for *tape measure*) was left out
    without a word, its images never trained on."""
    if not folder.is_dir():
        return
    unknown = sorted(p.name for p in folder.iterdir()         # hidden folders aside
                     if p.is_dir() and not p.name.startswith(".") and not _has(full, p.name))
    if unknown:
        raise DatasetError(f"{folder}: folders {unknown[:10]} match no label of the vocabulary "
                           f"{vocabulary_file} (by key or name); name each folder after a "
                           "label's key or name, or add the label")


def _warn_untrained(parts: list[LabeledImages], id_vocab: Vocabulary,
                    data_cfg: DataConfig) -> None:
    """Log the split's training objects that no training split has an image of."""
    seen = {int(i) for p in parts for i in np.unique(p.labels)}
    missing = [lb.name for i, lb in enumerate(id_vocab.labels) if i not in seen]
    if missing:
        LOG.warning("no training images of %s (in_distribution of %s) in %s: they are "
                    "trained on as names only", ", ".join(missing), data_cfg.split,
                    ", ".join(str(split_folder(data_cfg.root, n)) for n in data_cfg.train_splits))


def merge_similar_names(train_set: TrainingSet, text_emb: torch.Tensor,
                        max_similarity: float) -> tuple[TrainingSet, torch.Tensor]:
    """Fold each name a named folder added into the most similar label before it when their
    teacher text embeddings' cosine is at least ``max_similarity`` (``candle`` into ``lit
    candle``, ``red apple`` into ``apple``): L_cls then never asks the student to tell apart
    names its teacher cannot. Returns the training set relabelled over the kept labels and
    their rows of ``text_emb``; unchanged when ``max_similarity`` is 1 or more or no name
    was added."""
    start, n = train_set.first_named_label, len(train_set.cls_vocab)
    if max_similarity >= 1.0 or start >= n:
        return train_set, text_emb
    t = torch.nn.functional.normalize(text_emb.detach().float().cpu(), dim=-1)
    keep = list(range(start))
    into = np.arange(n)
    for i in range(start, n):
        sims = t[i] @ t[keep].T if keep else torch.zeros(0)
        if len(sims) and float(sims.max()) >= max_similarity:
            into[i] = keep[int(sims.argmax())]
        else:
            keep.append(i)
    new_index = np.full(n, -1, np.int64)
    new_index[keep] = np.arange(len(keep))
    labels = train_set.data.labels
    relabelled = np.where(labels >= 0, new_index[into[np.maximum(labels, 0)]], -1)
    vocab = Vocabulary(tuple(train_set.cls_vocab.labels[i] for i in keep))
    data = LabeledImages(images=train_set.data.images, labels=relabelled,
                         paths=train_set.data.paths, vocabulary=vocab)
    return (TrainingSet(data=data, cls_vocab=vocab, n_labelled_id=train_set.n_labelled_id,
                        n_aux=train_set.n_aux, first_named_label=start),
            text_emb[torch.as_tensor(keep, device=text_emb.device)])


def _named_part(folder: Path, cls_vocab: Vocabulary, vocabs: Vocabularies,
                full: Vocabulary | None = None) -> tuple[LabeledImages, Vocabulary]:
    """A named folder's images labelled by name, and ``cls_vocab`` with its new names
    appended (a name already in it, such as an ID object's, labels that class). A new name
    that ``full`` (the run's vocabulary file) holds joins as that entry, with its
    description, as the trained names are prompted after training (calibration negatives,
    the bundle's description catalogue)."""
    if not folder.is_dir():
        raise DatasetError(f"named folder {folder} not found (`vl-distill render-cutouts` "
                           "writes data/cutouts: `make cutouts`)")
    part, names = load_named_folder(folder, cls_vocab)
    distinct = list(dict.fromkeys(names))
    ood = sorted({vocabs.ood[vocabs.ood.index(n)].name for n in distinct if _has(vocabs.ood, n)})
    if ood:
        raise DatasetError(f"named folder {folder} names objects the split holds out as "
                           f"unseen ({', '.join(ood)}); no OOD name may be trained on")
    for n in distinct:   # a name matching a label (case, underscores aside) labels that class
        if not _has(cls_vocab, n):
            label = full[full.index(n)] if full is not None and _has(full, n) else Label(name=n)
            cls_vocab = Vocabulary(cls_vocab.labels + (label,))  # key: the name's
    part.labels = np.array([cls_vocab.index(n) for n in names], np.int64)
    return part, cls_vocab


def _has(vocab: Vocabulary, key_or_name: str) -> bool:
    try:
        vocab.index(key_or_name)
    except KeyError:
        return False
    return True


def full_vocabulary(data_cfg: DataConfig) -> Vocabulary:
    """The run's whole vocabulary file (descriptions dropped without enrichment)."""
    vocab = Vocabulary.load(data_cfg.vocabulary)
    return vocab if data_cfg.enrich else vocab.without_descriptions()


def outside_split_keys(folder: str | Path, full: Vocabulary, vocabs: Vocabularies,
                       what: str) -> list[str]:
    """Object keys of an image folder, which must all lie outside the split (so no image
    of an OOD object is ever used for calibration or as an open-set negative)."""
    _, idx = list_image_folder(folder, full)
    keys = [full[i].key for i in sorted(set(idx))]
    bad = sorted(set(keys) & set(vocabs.split.all_keys))
    if bad:
        raise DatasetError(f"{what} folder {folder} holds objects of the split {bad}; it must "
                           "show objects outside the split only")
    return keys


def broad_text_embeddings(teacher: LazyTeacher, data_cfg: DataConfig) -> torch.Tensor | None:
    """(M, D) teacher text embeddings of ``data.broad_vocabulary`` (plain names with the
    run's templates), or None when it is empty."""
    spec = data_cfg.broad_vocabulary
    if not spec:
        return None
    if spec == "imagenet":
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        names = list({n.strip().lower(): n.strip() for n in IMAGENET_CLASSNAMES}.values())
        vocab = Vocabulary.from_names(names)
    else:
        vocab = Vocabulary.load(spec).without_descriptions()
    return build_zero_shot_classifier(teacher.get().encode_texts, vocab, data_cfg.templates,
                                      enrich=False)
