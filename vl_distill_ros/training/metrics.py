"""Evaluation metrics: classification scores, embedding distances and M_vlalign.

Inputs may be numpy arrays, torch tensors or plain sequences; results are python floats,
lists or numpy arrays (never tensors). Embeddings are (N, D) float arrays; labels and
predictions are (N,) integer arrays.

M_vlalign (Li et al., ICCV 2023, Sec. 5) measures whether the student reproduces the
teacher's *ranking* of label texts around an image: see :func:`vl_alignment_inversions`.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

__all__ = [
    "accuracy",
    "macro_f1",
    "confusion_matrix",
    "per_class_accuracy",
    "embedding_distances",
    "vl_alignment_inversions",
    "vl_alignment",
    "classify",
]


def _np(x: Any, dtype: Any = None) -> np.ndarray:
    """Convert a tensor/array/sequence to a numpy array (detached, on the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _labels(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _np(pred).astype(np.int64).reshape(-1)
    t = _np(target).astype(np.int64).reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"pred and target differ in length: {p.shape[0]} vs {t.shape[0]}")
    return p, t


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def accuracy(pred: Any, target: Any) -> float:
    """Fraction of predictions equal to the target (0.0 for empty input)."""
    p, t = _labels(pred, target)
    if p.size == 0:
        return 0.0
    return float(np.mean(p == t))


def confusion_matrix(pred: Any, target: Any, num_classes: int) -> np.ndarray:
    """Integer (C, C) confusion matrix; ``cm[true, predicted]`` counts (rows = true class)."""
    p, t = _labels(pred, target)
    if p.size and (min(p.min(), t.min()) < 0 or max(p.max(), t.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def macro_f1(pred: Any, target: Any, num_classes: int) -> float:
    """Unweighted mean of the per-class F1 scores ``2 TP / (2 TP + FP + FN)``.

    Classes that occur neither in ``target`` nor in ``pred`` are excluded from the average
    (their F1 is undefined); a class that is predicted but never true, or true but never
    predicted, counts with F1 = 0. Returns 0.0 for empty input.
    """
    cm = confusion_matrix(pred, target, num_classes)
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(axis=0) - tp  # predicted as c, truly something else
    fn = cm.sum(axis=1) - tp  # truly c, predicted as something else
    denom = 2 * tp + fp + fn
    present = denom > 0
    if not present.any():
        return 0.0
    return float(np.mean(2 * tp[present] / denom[present]))


def per_class_accuracy(pred: Any, target: Any, num_classes: int) -> list[float]:
    """Per-class recall: fraction of class-c samples predicted as c.

    Returns a list of length ``num_classes``; classes with no samples in ``target`` get
    ``float('nan')``.
    """
    cm = confusion_matrix(pred, target, num_classes)
    support = cm.sum(axis=1)
    return [
        float(cm[c, c] / support[c]) if support[c] > 0 else math.nan
        for c in range(num_classes)
    ]


def embedding_distances(student: Any, teacher: Any) -> dict[str, float]:
    """Mean squared L2 distance and mean angle (degrees) between paired embeddings.

    ``mean_sq_distance`` uses the embeddings as given (for unit vectors it lies in
    [0, 4]); ``mean_angle_deg`` is the mean of ``arccos(cos(S_i, T_i))`` in degrees.
    """
    s = _np(student, np.float64)
    t = _np(teacher, np.float64)
    if s.shape != t.shape or s.ndim != 2:
        raise ValueError(f"expected two (N, D) arrays of equal shape, got {s.shape}, {t.shape}")
    sq = np.sum((s - t) ** 2, axis=1)
    cos = np.clip(np.sum(_unit(s) * _unit(t), axis=1), -1.0, 1.0)
    return {
        "mean_sq_distance": float(sq.mean()) if len(sq) else 0.0,
        "mean_angle_deg": float(np.degrees(np.arccos(cos)).mean()) if len(cos) else 0.0,
    }


def _inversions(values: np.ndarray) -> int:
    """Pairs i < j with ``values[i] > values[j]`` (ties are not inversions)."""
    v = np.asarray(values)
    return int(np.sum(np.triu(v[:, None] > v[None, :], k=1)))


def vl_alignment_inversions(
    student_img: Any, teacher_img: Any, text_emb: Any, k: int
) -> float:
    """M_vlalign@k: mean number of reversed pairs in the student's ranking of texts.

    For each image: take the k text embeddings nearest to the teacher image embedding,
    ordered by the teacher's distance (nearest first); then count the pairs (i < j in that
    teacher order) whose order is reversed when the same k texts are ranked by distance to
    the student image embedding (Kendall inversions; exact ties do not count). The result
    is the mean over images: 0 means perfectly aligned, ``k(k-1)/2`` fully reversed.

    All embeddings are L2-normalised first, so "distance" is the Euclidean distance on the
    unit sphere (equivalently, descending cosine similarity). ``k`` must lie in [1, L].
    """
    s = _unit(_np(student_img, np.float64))
    t = _unit(_np(teacher_img, np.float64))
    txt = _unit(_np(text_emb, np.float64))
    if s.shape != t.shape:
        raise ValueError(f"student and teacher shapes differ: {s.shape} vs {t.shape}")
    num_labels = txt.shape[0]
    if not 1 <= k <= num_labels:
        raise ValueError(f"k must lie in [1, {num_labels}], got {k}")
    if s.shape[0] == 0:
        return 0.0
    teacher_d = np.sum((t[:, None, :] - txt[None, :, :]) ** 2, axis=-1)  # (N, L)
    student_d = np.sum((s[:, None, :] - txt[None, :, :]) ** 2, axis=-1)
    order = np.argsort(teacher_d, axis=1, kind="stable")[:, :k]  # teacher's k nearest
    ranked = np.take_along_axis(student_d, order, axis=1)  # student distances, teacher order
    return float(np.mean([_inversions(row) for row in ranked]))


def vl_alignment(
    student_img: Any, teacher_img: Any, text_emb: Any, ks: Iterable[int] = (2, 3, 5)
) -> dict[str, float]:
    """:func:`vl_alignment_inversions` for several k, keyed ``vlalign@k``.

    Values of k larger than the number of labels are skipped.
    """
    num_labels = _np(text_emb).shape[0]
    return {
        f"vlalign@{k}": vl_alignment_inversions(student_img, teacher_img, text_emb, k)
        for k in ks
        if k <= num_labels
    }


def classify(image_emb: Any, text_emb: Any) -> tuple[np.ndarray, np.ndarray]:
    """Zero-shot classification by cosine similarity.

    Returns ``(pred, scores)``: ``pred`` is the (N,) int64 index of the most similar text
    for each image and ``scores`` the full (N, L) cosine-similarity matrix (so the score of
    the prediction is ``scores[arange(N), pred]``).
    """
    img = _unit(_np(image_emb, np.float64))
    txt = _unit(_np(text_emb, np.float64))
    if img.ndim == 1:
        img = img[None, :]
    scores = img @ txt.T
    return scores.argmax(axis=1).astype(np.int64), scores
