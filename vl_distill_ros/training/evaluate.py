"""Evaluation of a trained student against its teacher (ROS-free).

Columns follow Li et al. (ICCV 2023): ``X_id`` (held-out views of in-distribution
objects, ID labels), ``Y_id on X_ood`` (ID objects under distribution shift: cluttered
backgrounds, other lighting; ID labels), ``Y_ood on X_ood`` (objects never trained on,
under the same shift; OOD labels), and every test image over all labels. The teacher's
zero-shot accuracy is measured on the same images with the same prompts.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .metrics import (accuracy, confusion_matrix, embedding_distances, macro_f1,
                      vl_alignment)
from .data import (EVAL_SPLITS, LazyTeacher, load_split_images, load_vocabularies,
                   teacher_image_targets, text_classifier)
from ..model.calibration import (DEFAULT_TEMPERATURE, DEFAULT_UNKNOWN_THRESHOLD, Calibration,
                                 adjusted_scores, auroc, bias_curve, bias_vector,
                                 gzsl_accuracies, negative_mask)
from .calibrate import (calibrate, node_scores, read_calibration, trained_text_embeddings,
                        write_calibration)
from .trainer import TrainingError, embed_images, load_trained_student

SUMMARY_COLUMNS = {
    "X_id": ("test_id", "student_acc"),
    "Y_id on X_ood": ("test_shift_id", "student_acc"),
    "Y_ood on X_ood": ("test_ood", "student_acc"),
}


def _scores(pred: np.ndarray, target: np.ndarray, num: int) -> dict:
    return {"acc": accuracy(pred, target), "macro_f1": macro_f1(pred, target, num)}


def evaluate_run(run_dir: str | Path, data_root: str | None = None,
                 out_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Evaluate a run's student; write ``metrics.json`` and plots; return the metrics."""
    student, cfg, teacher_id = load_trained_student(run_dir)
    if data_root:
        cfg.data.root = data_root
    out = Path(out_dir) if out_dir else Path(run_dir) / "eval"
    teacher = LazyTeacher(cfg.teacher, seed=cfg.optim.seed)
    if teacher.id != teacher_id:
        raise TrainingError(f"run was distilled from {teacher_id!r} but its config now gives "
                            f"teacher {teacher.id!r}")
    calibration = _run_calibration(run_dir, student, cfg, teacher)
    return _evaluate(student, cfg, teacher, calibration, out, {"run": str(run_dir)},
                     progress)


def evaluate_bundle(bundle_path: str | Path, config: str | Path, out_dir: str | Path,
                    data_root: str | None = None, overrides: Sequence[str] = (),
                    progress: bool = True) -> dict:
    """Evaluate an exported bundle's student and calibration like :func:`evaluate_run`.

    A bundle holds no data settings, so ``config`` (a training YAML plus ``overrides``, e.g.
    the one the bundle was trained with) names the teacher, the vocabulary and split files,
    the prompts, the test renders (``data.root``, or ``data_root``) and the open-set folder.
    The config must give the bundle's teacher, exactly the bundle's label names and, with
    its prompts, the bundle's text embeddings; anything else raises :class:`TrainingError`.
    The bundle's calibration record (if any) is used as stored; none is computed.
    """
    from ..config import ConfigError, load_train_config
    from ..model.bundle import BundleError, load_bundle

    try:
        bundle = load_bundle(bundle_path)
        cfg = load_train_config(config, overrides)
    except (BundleError, ConfigError) as exc:
        raise TrainingError(str(exc)) from None
    if data_root:
        cfg.data.root = data_root
    teacher = LazyTeacher(cfg.teacher, seed=cfg.optim.seed)
    if teacher.id != bundle.teacher_id:
        raise TrainingError(f"{bundle_path} was distilled from {bundle.teacher_id!r} but the "
                            f"config {config} gives teacher {teacher.id!r}")
    vocabs = load_vocabularies(cfg.data)
    if list(vocabs.all.names) != list(bundle.vocabulary.names):
        raise TrainingError(f"the config's labels ({cfg.data.vocabulary} restricted to "
                            f"{cfg.data.split}: {len(vocabs.all)}) differ from the bundle's "
                            f"{len(bundle.vocabulary)} labels; evaluate with the config the "
                            "bundle was trained with")
    text = text_classifier(teacher, vocabs.all, cfg.data)
    if not torch.allclose(text, bundle.text_embeddings, atol=1e-4):
        raise TrainingError("the config's prompts (data.templates, data.enrich) give other "
                            f"text embeddings than those stored in {bundle_path}")
    return _evaluate(bundle.student, cfg, teacher, bundle.calibration, Path(out_dir),
                     {"run": None, "bundle": str(bundle_path), "config": str(config)},
                     progress)


def _evaluate(student, cfg, teacher: LazyTeacher, calibration: Calibration | None, out: Path,
              source: dict, progress: bool) -> dict:
    """The body of :func:`evaluate_run` / :func:`evaluate_bundle` (``source`` names what
    was evaluated in ``metrics.json``)."""
    out.mkdir(parents=True, exist_ok=True)
    vocabs = load_vocabularies(cfg.data)
    device = torch.device("cpu")
    text = {name: text_classifier(teacher, vocabs.for_set(name), cfg.data)
            for name in ("id", "ood", "all")}

    result: dict = {**source, "name": cfg.name, "teacher_id": teacher.id,
                    "data_root": str(cfg.data.root), "enrich": cfg.data.enrich, "splits": {}}
    all_s, all_t, all_y, all_raw = [], [], [], []
    for split, label_set in EVAL_SPLITS.items():
        vocab = vocabs.for_set(label_set)
        data = load_split_images(cfg.data.root, split, vocab)
        if data is None:
            continue
        raw = embed_images(student, data.images, device)
        s = _centred(raw, calibration)
        t = teacher_image_targets(teacher, data, cfg.data.cache_dir, cfg.teacher.batch_size,
                                  progress=progress)
        emb = text[label_set]
        sp = (s @ emb.T).argmax(1).numpy()
        tp = (t @ emb.T).argmax(1).numpy()
        stu, tea = _scores(sp, data.labels, len(vocab)), _scores(tp, data.labels, len(vocab))
        result["splits"][split] = {
            "labels": label_set, "n": len(data),
            "student_acc": stu["acc"], "student_macro_f1": stu["macro_f1"],
            "teacher_acc": tea["acc"], "teacher_macro_f1": tea["macro_f1"],
        }
        all_s.append(s)
        all_raw.append(raw)
        all_t.append(t)
        all_y.append(np.array([vocabs.all.index(vocab[i].key) for i in data.labels]))
    if not all_s:
        raise TrainingError(f"no evaluation splits ({', '.join(EVAL_SPLITS)}) under "
                            f"{cfg.data.root}")
    s, t, y = torch.cat(all_s), torch.cat(all_t), np.concatenate(all_y)
    per_split = {split: (s_, t_, y_) for split, s_, t_, y_ in zip(
        [k for k in EVAL_SPLITS if k in result["splits"]], all_s, all_t, all_y)}
    result.update(generalised_zero_shot(per_split, text["all"], vocabs, calibration, out))
    if cfg.calibration.openset_test:
        result["open_set"] = open_set_metrics(student, teacher, cfg, per_split, text["all"],
                                              vocabs, calibration, device, progress)
    emb = text["all"]
    sp = (s @ emb.T).argmax(1).numpy()
    tp = (t @ emb.T).argmax(1).numpy()
    n_all = len(vocabs.all)
    cm = confusion_matrix(sp, y, n_all)
    result["all_labels"] = {"n": int(len(y)), "student_acc": accuracy(sp, y),
                            "student_macro_f1": macro_f1(sp, y, n_all),
                            "teacher_acc": accuracy(tp, y),
                            "teacher_macro_f1": macro_f1(tp, y, n_all)}
    # the student's own space against the teacher's (before any calibration centring)
    raw = torch.cat(all_raw)
    result["embedding"] = embedding_distances(raw, t)
    result["vlalign"] = vl_alignment(raw, t, emb, ks=(2, 3, 5))
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.diag(cm) / cm.sum(axis=1)
    result["per_class_acc"] = {vocabs.all[i].name: float(per_class[i])
                               for i in range(n_all) if cm[i].sum() > 0}
    result["summary"] = summary_row(result)

    (out / "metrics.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    from ..plots import drawn_or_warned, plot_confusion_matrix, plot_per_class_accuracy

    drawn_or_warned(lambda: plot_confusion_matrix(
        cm, vocabs.all.names, out / "confusion_matrix.png",
        title=f"{cfg.name}: student, all {n_all} labels"), "confusion matrix")
    drawn_or_warned(lambda: plot_per_class_accuracy(
        result["per_class_acc"], out / "per_class_accuracy.png",
        title=f"{cfg.name}: per-class accuracy (all labels)"), "per-class accuracy")
    return result


def _centred(embeddings: torch.Tensor, calibration: Calibration | None) -> torch.Tensor:
    """Student embeddings as the node scores them: centred by the calibration record."""
    if calibration is None:
        return embeddings
    return torch.as_tensor(calibration.center(embeddings.numpy()))


def summary_row(result: dict) -> dict[str, float]:
    """The results-table row: student accuracy per column plus the teacher's."""
    row: dict[str, float] = {}
    for col, (split, key) in SUMMARY_COLUMNS.items():
        if split in result["splits"]:
            row[col] = result["splits"][split][key]
            row[f"teacher {col}"] = result["splits"][split]["teacher_acc"]
    row["all labels"] = result["all_labels"]["student_acc"]
    row["teacher all labels"] = result["all_labels"]["teacher_acc"]
    g = result.get("gzsl")
    if g:
        for col, key in GZSL_COLUMNS.items():
            row[col] = g["student_calibrated"][key]
            row[f"teacher {col}"] = g["teacher"][key]
            row[f"uncalibrated {col}"] = g["student"][key]
    o = result.get("open_set")
    if o:
        row["open-set AUROC"] = o["auroc"]
        row["teacher open-set AUROC"] = o["teacher_auroc"]
        row["unknown rate OOV"] = o["unknown_rate_oov"]
        row["known rate ID-correct"] = o["known_rate_correct_in_vocab"]
    return row


#: Generalised zero-shot columns: clutter renders, all labels of the split at once.
GZSL_COLUMNS = {"seen (all)": "seen", "unseen (all)": "unseen", "H (all)": "h"}


def _run_calibration(run_dir, student, cfg, teacher) -> Calibration | None:
    """The run's calibration record; computed (and saved) now for a run that predates it."""
    record = read_calibration(run_dir)
    if record is None and cfg.calibration.seen and cfg.calibration.unseen:
        from .trainer import FINAL, load_checkpoint

        final = Path(run_dir) / FINAL
        names = None
        if final.exists():
            names = load_checkpoint(final).get("trained_names")
        if names is None:
            names = load_vocabularies(cfg.data).id.names
        record, curve = calibrate(student, cfg, teacher, list(names), embed_images,
                                  torch.device("cpu"))
        write_calibration(run_dir, record, curve)
    return record


def generalised_zero_shot(per_split: dict, text_all: torch.Tensor, vocabs,
                          calibration: Calibration | None, out: Path) -> dict:
    """Seen / unseen / H over ALL labels on the shifted (clutter) renders: seen = ID objects
    (``test_shift_id``), unseen = OOD objects (``test_ood``); per-class mean top-1, for the
    student (raw and with the calibrated seen bias) and the teacher. Also writes
    ``gzsl_bias_curve.png`` (seen vs unseen accuracy as the bias varies)."""
    if "test_shift_id" not in per_split or "test_ood" not in per_split:
        return {}
    s = torch.cat([per_split["test_shift_id"][0], per_split["test_ood"][0]]).numpy()
    t = torch.cat([per_split["test_shift_id"][1], per_split["test_ood"][1]]).numpy()
    y = np.concatenate([per_split["test_shift_id"][2], per_split["test_ood"][2]])
    is_seen = np.arange(len(y)) < len(per_split["test_shift_id"][2])
    text = text_all.numpy()
    trained = calibration.trained_names if calibration else vocabs.id.names
    mask = bias_vector(vocabs.all.names, trained, 1.0) > 0
    bias = calibration.seen_bias if calibration else 0.0

    def pack(cos: np.ndarray, b: float) -> dict:
        seen, unseen, h = gzsl_accuracies(cos, y, is_seen, mask, b)
        return {"seen": seen, "unseen": unseen, "h": h, "bias": b}

    cos_s, cos_t = s @ text.T, t @ text.T
    curve = bias_curve(cos_s, y, is_seen, mask, max_bias=0.3)
    from ..plots import drawn_or_warned, plot_bias_curve

    drawn_or_warned(lambda: plot_bias_curve(curve, out / "gzsl_bias_curve.png", chosen=bias,
                                            teacher=pack(cos_t, 0.0)), "seen-bias curve")
    return {"gzsl": {"student": pack(cos_s, 0.0), "student_calibrated": pack(cos_s, bias),
                     "teacher": pack(cos_t, 0.0), "bias_curve": curve,
                     "calibration": calibration.to_dict() if calibration else None}}


def open_set_metrics(student, teacher, cfg, per_split: dict, text_all: torch.Tensor, vocabs,
                     calibration: Calibration | None, device, progress: bool) -> dict:
    """Open set over all labels: in-vocabulary crops (``test_shift_id`` + ``test_ood``)
    against crops of objects outside the vocabulary (``calibration.openset_test``, never
    trained or calibrated on). Scores are the best calibrated softmax score, as the node
    publishes it; reports AUROC and the unknown rates at the calibrated threshold."""
    from .image_folder import load_image_folder
    from .data import full_vocabulary, outside_split_keys

    full = full_vocabulary(cfg.data)
    keys = outside_split_keys(cfg.calibration.openset_test, full, vocabs, "openset_test")
    data = load_image_folder(cfg.calibration.openset_test, full, keys=keys)
    s_oov = _centred(embed_images(student, data.images, device), calibration).numpy()
    t_oov = teacher_image_targets(teacher, data, cfg.data.cache_dir, cfg.teacher.batch_size,
                                  progress=progress).numpy()
    splits = [k for k in ("test_shift_id", "test_ood") if k in per_split]
    s_in = torch.cat([per_split[k][0] for k in splits]).numpy()
    t_in = torch.cat([per_split[k][1] for k in splits]).numpy()
    y_in = np.concatenate([per_split[k][2] for k in splits])
    text = text_all.numpy()
    temp = calibration.score_temperature if calibration else DEFAULT_TEMPERATURE
    thr = calibration.unknown_threshold if calibration else DEFAULT_UNKNOWN_THRESHOLD
    trained_emb = None
    if calibration is not None and calibration.negatives:
        trained_emb = trained_text_embeddings(teacher, cfg, list(calibration.trained_names))
        n_negatives = int(negative_mask(vocabs.all.names, text, calibration.trained_names,
                                        trained_emb, calibration.negative_similarity).sum())
    names = list(vocabs.all.names)
    p_in = node_scores(s_in, names, text, calibration, trained_emb)
    p_oov = node_scores(s_oov, names, text, calibration, trained_emb)
    pt_in = adjusted_scores(t_in @ text.T, 0.0, DEFAULT_TEMPERATURE)
    pt_oov = adjusted_scores(t_oov @ text.T, 0.0, DEFAULT_TEMPERATURE)
    best_in, best_oov = p_in.max(1), p_oov.max(1)
    correct = p_in.argmax(1) == y_in
    return {
        "n_in_vocabulary": int(len(y_in)), "n_out_of_vocabulary": int(len(data)),
        "oov_objects": keys, "unknown_threshold": thr, "score_temperature": temp,
        "negatives": n_negatives if trained_emb is not None else 0,
        "unknown_rate_per_oov_object": {
            full[int(lab)].name: float(np.mean(best_oov[data.labels == lab] < thr))
            for lab in np.unique(data.labels)},
        "auroc": auroc(best_in, best_oov),
        "teacher_auroc": auroc(pt_in.max(1), pt_oov.max(1)),
        "unknown_rate_in_vocab": float(np.mean(best_in < thr)),
        "unknown_rate_oov": float(np.mean(best_oov < thr)),
        "known_rate_correct_in_vocab": float(np.mean(best_in[correct] >= thr))
        if correct.any() else float("nan"),
    }
