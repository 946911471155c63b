"""Choose a run's calibration (seen bias, open-set threshold) on calibration images.

Uses only ID objects (``calibration.seen``) and pseudo-unseen objects outside the split
(``calibration.unseen``): never an image of the split's OOD objects. The result is written
to ``<run>/calibration.json`` and exported into the bundle (see
:mod:`vl_distill_ros.core.calibration`).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..core.calibration import (DEFAULT_TEMPERATURE, Calibration, CalibrationError,
                                adjusted_scores, bias_curve, bias_vector, choose_seen_bias,
                                threshold_for_coverage)
from ..core.config import TrainConfig
from ..core.data.image_folder import DatasetError, list_image_folder, load_image_folder
from ..core.student import Student
from ..core.vocabulary import Vocabulary
from .data import LazyTeacher, Vocabularies, load_vocabularies, text_classifier

CALIBRATION_FILE = "calibration.json"


def full_vocabulary(cfg: TrainConfig) -> Vocabulary:
    """The run's whole vocabulary file (descriptions dropped without enrichment)."""
    vocab = Vocabulary.load(cfg.data.vocabulary)
    return vocab if cfg.data.enrich else vocab.without_descriptions()


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


def calibrate(student: Student, cfg: TrainConfig, teacher: LazyTeacher,
              trained_names: list[str], embed, device: torch.device) -> tuple[Calibration, list]:
    """Choose the seen bias (max H of seen vs pseudo-unseen accuracy) and the open-set
    threshold (``known_coverage`` of correct calibration crops stay known).

    ``embed(student, images, device)`` returns student embeddings. Returns the record and
    the bias curve.
    """
    cal = cfg.calibration
    vocabs = load_vocabularies(cfg.data)
    full = full_vocabulary(cfg)
    unseen_keys = outside_split_keys(cal.unseen, full, vocabs, "calibration.unseen")
    trained_fold = {n.casefold() for n in trained_names}
    overlap = [full[full.index(k)].name for k in unseen_keys
               if full[full.index(k)].name.casefold() in trained_fold]
    if overlap:
        raise DatasetError(f"calibration.unseen objects {overlap} were trained on; pseudo-unseen "
                           "objects must be new to the student")
    vocab = full.subset(list(vocabs.id.keys) + unseen_keys)
    seen = load_image_folder(cal.seen, vocabs.id, keys=vocabs.id.keys)
    unseen = load_image_folder(cal.unseen, full, keys=unseen_keys)
    text = text_classifier(teacher, vocab, cfg.data).cpu().numpy()
    emb = torch.cat([embed(student, seen.images, device), embed(student, unseen.images, device)])
    cos = emb.numpy() @ text.T
    target = np.concatenate([np.array([vocab.index(vocabs.id[i].key) for i in seen.labels]),
                             np.array([vocab.index(full[i].key) for i in unseen.labels])])
    is_seen = np.arange(len(target)) < len(seen)
    trained_mask = bias_vector(vocab.names, trained_names, 1.0) > 0
    curve = bias_curve(cos, target, is_seen, trained_mask, cal.max_bias)
    best = choose_seen_bias(curve)
    probs = adjusted_scores(cos, best["bias"] * trained_mask, DEFAULT_TEMPERATURE)
    correct = probs.argmax(1) == target
    threshold = threshold_for_coverage(probs.max(1)[correct], cal.known_coverage)
    record = Calibration(
        seen_bias=best["bias"], unknown_threshold=threshold,
        score_temperature=DEFAULT_TEMPERATURE, trained_names=tuple(trained_names),
        chosen_on={"seen": str(cal.seen), "unseen": str(cal.unseen),
                   "unseen_objects": unseen_keys, "n_seen": int(len(seen)),
                   "n_unseen": int(len(unseen)), "vocabulary_size": len(vocab),
                   "seen_acc": best["seen"], "unseen_acc": best["unseen"], "h": best["h"],
                   "known_coverage": cal.known_coverage})
    return record, curve


def write_calibration(run_dir: str | Path, record: Calibration, curve: list) -> Path:
    """Write ``calibration.json`` (the record and its bias curve) into the run folder."""
    path = Path(run_dir) / CALIBRATION_FILE
    path.write_text(json.dumps({"calibration": record.to_dict(), "curve": curve}, indent=1))
    return path


def read_calibration(run_dir: str | Path) -> Calibration | None:
    """The run's calibration record, or None when it has none."""
    path = Path(run_dir) / CALIBRATION_FILE
    if not path.exists():
        return None
    try:
        return Calibration.from_dict(json.loads(path.read_text())["calibration"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CalibrationError(f"{path}: {exc}") from None
