"""Export a trained run as a deployable bundle (see vl_distill_ros.model.bundle)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import TrainConfig
from ..model.bundle import save_bundle
from ..model.descriptions import catalogue_vocabulary
from ..model.student import Student
from ..model.teachers.factory import teacher_spec
from ..model.vocabulary import Vocabulary
from .calibrate import read_calibration, trained_text_embeddings
from .data import LazyTeacher, full_vocabulary, load_training_set, load_vocabularies, \
    text_classifier
from .trainer import TrainingError, load_trained_student

log = logging.getLogger(__name__)


def export_bundle(run_dir: str | Path, out: str | Path, vocabulary: str | None = None,
                  keys: Sequence[str] | None = None, enrich: bool | None = None,
                  metrics: dict | None = None, onnx: bool = True,
                  int8: bool | None = None) -> Path:
    """Write a bundle for a run's student with precomputed teacher text embeddings.

    The vocabulary defaults to all labels of the run's split (ID + OOD); ``vocabulary``
    names another YAML, ``keys`` picks labels from it. ``enrich`` defaults to the run's
    setting: a student distilled with descriptions is deployed with them, and the bundle's
    description catalogue (names given without a description at run time take these) is
    every described label of the run's vocabulary file (``data.vocabulary``) and of
    ``vocabulary``.

    ``int8``: add the student's INT8 ONNX model, calibrated on the run's training images
    (:mod:`.quantize`); None: when those images are on this machine (else a warning),
    True: they must be, False: never.

    Raises:
        TrainingError: ``int8=True`` and the training images are missing, or the INT8
            model cannot be made.
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
    quantized = _int8_model(student, cfg, text.detach().cpu().numpy(), int8)
    return save_bundle(out, student, text, vocab, teacher_id, teacher_spec(cfg.teacher),
                       templates=list(cfg.data.templates), enrich=cfg.data.enrich,
                       metrics=metrics, name=cfg.name, onnx=onnx, calibration=calibration,
                       trained_embeddings=trained, int8=quantized,
                       descriptions=_catalogue(cfg, vocab))


def _catalogue(cfg: TrainConfig, vocab: Vocabulary) -> Vocabulary | None:
    """The bundle's description catalogue: the described labels of ``vocab`` and then of the
    run's vocabulary file; None without enrichment."""
    return catalogue_vocabulary(vocab, full_vocabulary(cfg.data)) if cfg.data.enrich else None


def _int8_model(student: Student, cfg: TrainConfig, text: np.ndarray, want: bool | None
                ) -> tuple[bytes, dict[str, Any]] | None:
    """The INT8 model and its manifest record for :func:`export_bundle` (None: skipped)."""
    from dataclasses import asdict

    from ..model.runtime import RuntimeBackendError
    from .image_folder import DatasetError
    from .quantize import quantize_student

    if want is False:
        return None
    try:
        training = load_training_set(cfg.data, cfg.loss.cls_label_set,
                                     load_vocabularies(cfg.data))
        problem = "" if training is not None else "not on this machine"
    except DatasetError as exc:
        training, problem = None, f"unreadable ({exc})"
    if training is None:
        message = (f"no INT8 model: the run's training images ({cfg.data.root}), which "
                   f"calibrate it, are {problem}")
        if want:
            raise TrainingError(message)
        log.warning("%s; the bundle is written without it", message)
        return None
    try:
        model, parity = quantize_student(student, training.data.images, text)
    except (RuntimeBackendError, ValueError) as exc:  # ValueError: under 2 training images
        if want:
            raise TrainingError(str(exc)) from None
        log.warning("no INT8 model: %s", exc)
        return None
    return model, {**asdict(parity), "calibrated_on": "training images"}
