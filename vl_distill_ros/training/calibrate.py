"""Choose a run's calibration (seen bias, open-set threshold) on calibration images.

Uses only ID objects (``calibration.seen``) and pseudo-unseen objects outside the split
(``calibration.unseen``): never an image of the split's OOD objects. The result is written
to ``<run>/calibration.json`` and exported into the bundle (see
:mod:`vl_distill_ros.model.calibration`).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..model.calibration import (DEFAULT_TEMPERATURE, Calibration, CalibrationError,
                                 adjusted_scores, auroc,
                                 bias_curve, bias_vector, center_embeddings, choose_seen_bias,
                                 negative_mask, threshold_for_coverage)
from ..config import TrainConfig
from .image_folder import DatasetError, load_image_folder
from ..model.student import Student
from ..model.vocabulary import Vocabulary, fold_key
from .data import (LazyTeacher, full_vocabulary, load_vocabularies, outside_split_keys,
                   text_classifier)

CALIBRATION_FILE = "calibration.json"


def trained_text_embeddings(teacher: LazyTeacher, cfg: TrainConfig,
                            trained_names: list[str]) -> np.ndarray:
    """(T, D) teacher text embeddings of the trained names, with the run's prompts (the
    descriptions of the vocabulary file when the run is enriched)."""
    full = full_vocabulary(cfg.data)
    vocab = Vocabulary([full[full.index(n)] if _has(full, n) else
                        Vocabulary.from_names([n])[0] for n in trained_names])
    return text_classifier(teacher, vocab, cfg.data).cpu().numpy()


def node_scores(embeddings: np.ndarray, names: list[str], text: np.ndarray,
                calibration: Calibration | None,
                trained_emb: np.ndarray | None = None) -> np.ndarray:
    """(N, L) scores of ``embeddings`` (centred as the record says) over the labels ``names``
    (text embeddings ``text``), as the node computes them: the seen bias on trained names,
    the record's temperature, and, when the record has negatives, the trained names outside
    ``names`` (``trained_emb``: :func:`trained_text_embeddings`) in the softmax. Without a
    record: no bias, the default temperature, no negatives."""
    if calibration is None:
        return adjusted_scores(embeddings @ text.T, 0.0, DEFAULT_TEMPERATURE)
    bias = bias_vector(names, calibration.trained_names, calibration.seen_bias)
    negatives = None
    if calibration.negatives:
        if trained_emb is None:
            raise ValueError("the calibration record has negatives: trained_emb is needed")
        keep = negative_mask(names, text, calibration.trained_names, trained_emb,
                             calibration.negative_similarity)
        negatives = embeddings @ trained_emb[keep].T
    return adjusted_scores(embeddings @ text.T, bias, calibration.score_temperature, negatives,
                           calibration.softmax_size)


def _has(vocab: Vocabulary, name: str) -> bool:
    try:
        vocab.index(name)
        return True
    except KeyError:
        return False


def _open_set_auroc(cos_v: np.ndarray, bias: np.ndarray, cos_n: np.ndarray,
                    in_vocab: np.ndarray, temperature: float) -> float:
    best = adjusted_scores(cos_v, bias, temperature, cos_n).max(1)
    return auroc(best[in_vocab], best[~in_vocab])


def _check_new_to_the_student(full: Vocabulary, unseen_keys: list[str],
                              trained_names: list[str]) -> None:
    """Raise :class:`DatasetError` when a pseudo-unseen calibration object was trained on."""
    trained_fold = {fold_key(n) for n in trained_names}    # as the seen bias matches them
    overlap = [full[full.index(k)].name for k in unseen_keys
               if fold_key(full[full.index(k)].name) in trained_fold]
    if overlap:
        raise DatasetError(f"calibration.unseen objects {overlap} were trained on; pseudo-unseen "
                           "objects must be new to the student")


def _calibration_embeddings(emb: np.ndarray, center: bool
                            ) -> tuple[np.ndarray, tuple[float, ...]]:
    """The calibration crops' embeddings and the centre (their mean; empty without
    ``center``), centred when there is one."""
    if not center:
        return emb, ()
    mean = tuple(float(v) for v in emb.astype(np.float64).mean(axis=0))
    return center_embeddings(emb, mean), mean


def calibrate(student: Student, cfg: TrainConfig, teacher: LazyTeacher,
              trained_names: list[str], embed, device: torch.device) -> tuple[Calibration, list]:
    """Choose the calibration record on calibration images (never an OOD object):

    0. with ``calibration.center``, the mean embedding of these crops is subtracted from
       every embedding (here and wherever the record is used);
    1. the seen bias: highest H of seen vs pseudo-unseen accuracy among the biases that
       keep ``keep_seen`` of the unbiased seen accuracy (vocabulary: ID + pseudo-unseen);
    2. the temperature: best open-set AUROC when half of the pseudo-unseen objects are left
       out of the vocabulary (both halves, averaged), with the negatives in place;
    3. the threshold: ``known_coverage`` of the correctly classified calibration crops
       (whole vocabulary, seen and pseudo-unseen crops pooled) stay known.

    ``embed(student, images, device)`` returns student embeddings. Returns the record and
    the bias curve.
    """
    cal = cfg.calibration
    vocabs = load_vocabularies(cfg.data)
    full = full_vocabulary(cfg.data)
    unseen_keys = outside_split_keys(cal.unseen, full, vocabs, "calibration.unseen")
    _check_new_to_the_student(full, unseen_keys, trained_names)
    vocab = full.subset(list(vocabs.id.keys) + unseen_keys)
    seen = load_image_folder(cal.seen, vocabs.id, keys=vocabs.id.keys)
    unseen = load_image_folder(cal.unseen, full, keys=unseen_keys)
    text = text_classifier(teacher, vocab, cfg.data).cpu().numpy()
    emb, center = _calibration_embeddings(
        torch.cat([embed(student, seen.images, device),
                   embed(student, unseen.images, device)]).numpy(), cal.center)
    cos = emb @ text.T
    target = np.concatenate([np.array([vocab.index(vocabs.id[i].key) for i in seen.labels]),
                             np.array([vocab.index(full[i].key) for i in unseen.labels])])
    is_seen = np.arange(len(target)) < len(seen)
    trained_mask = bias_vector(vocab.names, trained_names, 1.0) > 0
    curve = bias_curve(cos, target, is_seen, trained_mask, cal.max_bias)
    best = choose_seen_bias(curve, cal.keep_seen)
    bias = best["bias"] * trained_mask

    trained_emb = trained_text_embeddings(teacher, cfg, trained_names)
    cos_t = emb @ trained_emb.T

    def negatives_for(names: list[str], name_emb: np.ndarray) -> np.ndarray:
        if not cal.negatives:
            return cos_t[:, :0]
        keep = negative_mask(names, name_emb, trained_names, trained_emb,
                             cal.negative_similarity)
        return cos_t[:, keep]

    # temperature: open set on the calibration objects, half of the pseudo-unseen objects
    # held out of the vocabulary in turn
    halves = [unseen_keys[0::2], unseen_keys[1::2]]
    sample_key = [vocabs.id[i].key for i in seen.labels] + [full[i].key for i in unseen.labels]
    aurocs: dict[str, float] = {}
    for t in cal.temperatures:
        values = []
        for held in halves:
            cols = [j for j, lab in enumerate(vocab) if lab.key not in held]
            names = [vocab[j].name for j in cols]
            in_vocab = np.array([k not in held for k in sample_key])
            values.append(_open_set_auroc(cos[:, cols], bias[cols],
                                          negatives_for(names, text[cols]), in_vocab, t))
        aurocs[f"{t:g}"] = float(np.nanmean(values))
    temperature = float(max(cal.temperatures, key=lambda t: (aurocs[f"{t:g}"], -t)))

    final_negatives = negatives_for(vocab.names, text)
    probs = adjusted_scores(cos, bias, temperature, final_negatives)
    correct = probs.argmax(1) == target
    threshold = threshold_for_coverage(probs.max(1)[correct], cal.known_coverage)
    record = Calibration(
        seen_bias=best["bias"], unknown_threshold=threshold, score_temperature=temperature,
        trained_names=tuple(trained_names), negatives=bool(cal.negatives),
        negative_similarity=cal.negative_similarity, embedding_center=center,
        chosen_on={"seen": str(cal.seen), "unseen": str(cal.unseen),
                   "unseen_objects": unseen_keys, "n_seen": int(len(seen)),
                   "n_unseen": int(len(unseen)), "vocabulary_size": len(vocab),
                   "softmax_size": len(vocab) + int(final_negatives.shape[1]),
                   "seen_acc": best["seen"], "unseen_acc": best["unseen"], "h": best["h"],
                   "keep_seen": cal.keep_seen, "known_coverage": cal.known_coverage,
                   "auroc_by_temperature": aurocs})
    return record, curve


def write_calibration(run_dir: str | Path, record: Calibration, curve: list) -> Path:
    """Write ``calibration.json`` (the record and its bias curve) into the run folder."""
    path = Path(run_dir) / CALIBRATION_FILE
    path.write_text(json.dumps({"calibration": record.to_dict(), "curve": curve}, indent=1),
                    encoding="utf-8")
    return path


def read_calibration(run_dir: str | Path) -> Calibration | None:
    """The run's calibration record, or None when it has none."""
    path = Path(run_dir) / CALIBRATION_FILE
    if not path.exists():
        return None
    try:
        return Calibration.from_dict(json.loads(path.read_text(encoding="utf-8"))["calibration"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CalibrationError(f"{path}: {exc}") from None
