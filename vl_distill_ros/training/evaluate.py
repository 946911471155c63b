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

import numpy as np
import torch

from ..core.metrics import (accuracy, confusion_matrix, embedding_distances, macro_f1,
                            vl_alignment)
from .data import (EVAL_SPLITS, LazyTeacher, load_split_images, load_vocabularies,
                   teacher_image_targets, text_classifier)
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
    out.mkdir(parents=True, exist_ok=True)
    vocabs = load_vocabularies(cfg.data)
    teacher = LazyTeacher(cfg.teacher, seed=cfg.optim.seed)
    if teacher.id != teacher_id:
        raise TrainingError(f"run was distilled from {teacher_id!r} but its config now gives "
                            f"teacher {teacher.id!r}")
    device = torch.device("cpu")
    text = {name: text_classifier(teacher, vocabs.for_set(name), cfg.data)
            for name in ("id", "ood", "all")}

    result: dict = {"run": str(run_dir), "name": cfg.name, "teacher_id": teacher_id,
                    "enrich": cfg.data.enrich, "splits": {}}
    all_s, all_t, all_y = [], [], []
    for split, label_set in EVAL_SPLITS.items():
        vocab = vocabs.for_set(label_set)
        data = load_split_images(cfg.data.root, split, vocab)
        if data is None:
            continue
        s = embed_images(student, data.images, device)
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
        all_t.append(t)
        all_y.append(np.array([vocabs.all.index(vocab[i].key) for i in data.labels]))
    if not all_s:
        raise TrainingError(f"no evaluation splits ({', '.join(EVAL_SPLITS)}) under "
                            f"{cfg.data.root}")
    s, t, y = torch.cat(all_s), torch.cat(all_t), np.concatenate(all_y)
    emb = text["all"]
    sp = (s @ emb.T).argmax(1).numpy()
    tp = (t @ emb.T).argmax(1).numpy()
    n_all = len(vocabs.all)
    cm = confusion_matrix(sp, y, n_all)
    result["all_labels"] = {"n": int(len(y)), "student_acc": accuracy(sp, y),
                            "student_macro_f1": macro_f1(sp, y, n_all),
                            "teacher_acc": accuracy(tp, y),
                            "teacher_macro_f1": macro_f1(tp, y, n_all)}
    result["embedding"] = embedding_distances(s, t)
    result["vlalign"] = vl_alignment(s, t, emb, ks=(2, 3, 5))
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.diag(cm) / cm.sum(axis=1)
    result["per_class_acc"] = {vocabs.all[i].name: float(per_class[i])
                               for i in range(n_all) if cm[i].sum() > 0}
    result["summary"] = summary_row(result)

    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    from ..core.plots import plot_confusion_matrix, plot_per_class_accuracy

    plot_confusion_matrix(cm, vocabs.all.names, out / "confusion_matrix.png",
                          title=f"{cfg.name}: student, all {n_all} labels")
    plot_per_class_accuracy(result["per_class_acc"], out / "per_class_accuracy.png",
                            title=f"{cfg.name}: per-class accuracy (all labels)")
    return result


def summary_row(result: dict) -> dict[str, float]:
    """The results-table row: student accuracy per column plus the teacher's."""
    row: dict[str, float] = {}
    for col, (split, key) in SUMMARY_COLUMNS.items():
        if split in result["splits"]:
            row[col] = result["splits"][split][key]
            row[f"teacher {col}"] = result["splits"][split]["teacher_acc"]
    row["all labels"] = result["all_labels"]["student_acc"]
    row["teacher all labels"] = result["all_labels"]["teacher_acc"]
    return row
