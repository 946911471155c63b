"""Export a trained run as a deployable bundle (see vl_distill_ros.model.bundle)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..model.bundle import save_bundle
from ..model.teachers.factory import teacher_spec
from ..model.vocabulary import Vocabulary
from .calibrate import read_calibration, trained_text_embeddings
from .data import LazyTeacher, load_vocabularies, text_classifier
from .trainer import TrainingError, load_trained_student


def export_bundle(run_dir: str | Path, out: str | Path, vocabulary: str | None = None,
                  keys: Sequence[str] | None = None, enrich: bool | None = None,
                  metrics: dict | None = None, onnx: bool = True) -> Path:
    """Write a bundle for a run's student with precomputed teacher text embeddings.

    The vocabulary defaults to all labels of the run's split (ID + OOD); ``vocabulary``
    names another YAML, ``keys`` picks labels from it. ``enrich`` defaults to the run's
    setting: a student distilled with descriptions is deployed with them.
    """
    student, cfg, teacher_id = load_trained_student(run_dir)
    if enrich is not None:
        cfg.data.enrich = enrich
    if vocabulary:
        vocab = Vocabulary.load(vocabulary)
        if not cfg.data.enrich:
            vocab = vocab.without_descriptions()
    else:
        vocab = load_vocabularies(cfg.data).all
    if keys:
        vocab = vocab.subset(list(keys))
    teacher = LazyTeacher(cfg.teacher, seed=cfg.optim.seed)
    if teacher.id != teacher_id:
        raise TrainingError(f"run was distilled from {teacher_id!r}, config gives {teacher.id!r}")
    text = text_classifier(teacher, vocab, cfg.data)
    calibration = read_calibration(run_dir)
    trained = None
    if calibration is not None and calibration.negatives:
        trained = trained_text_embeddings(teacher, cfg, list(calibration.trained_names))
    return save_bundle(out, student, text, vocab, teacher_id, teacher_spec(cfg.teacher),
                       templates=list(cfg.data.templates), enrich=cfg.data.enrich,
                       metrics=metrics, name=cfg.name, onnx=onnx, calibration=calibration,
                       trained_embeddings=trained)
