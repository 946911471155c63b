"""Metrics on tiny hand-made cases with answers worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vl_distill_ros.training.metrics import (
    accuracy,
    classify,
    confusion_matrix,
    embedding_distances,
    macro_f1,
    per_class_accuracy,
    vl_alignment,
    vl_alignment_inversions,
)

# 5 samples, 4 classes; class 3 appears in neither target nor pred.
TARGET = [0, 0, 1, 1, 2]
PRED = [0, 1, 1, 1, 0]


def test_accuracy():
    assert accuracy(PRED, TARGET) == pytest.approx(3 / 5)
    assert accuracy(torch.tensor(PRED), np.array(TARGET)) == pytest.approx(3 / 5)
    assert accuracy([], []) == 0.0
    with pytest.raises(ValueError):
        accuracy([0, 1], [0])


def test_confusion_matrix_rows_are_true_class():
    cm = confusion_matrix(PRED, TARGET, 4)
    expected = np.array([[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    assert cm.dtype.kind == "i"
    np.testing.assert_array_equal(cm, expected)
    with pytest.raises(ValueError):
        confusion_matrix([4], [0], 4)


def test_macro_f1_by_hand():
    # class 0: TP 1, FP 1, FN 1 -> 2/4 = 0.5
    # class 1: TP 2, FP 1, FN 0 -> 4/5 = 0.8
    # class 2: TP 0, FP 0, FN 1 -> 0
    # class 3: absent from both -> excluded
    assert macro_f1(PRED, TARGET, 4) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_macro_f1_predicted_only_class_counts_as_zero():
    # class 1 is predicted but never true: F1 0, included. class 0: TP 1, FN 1 -> 2/3.
    assert macro_f1([0, 1], [0, 0], 3) == pytest.approx((2 / 3 + 0.0) / 2)


def test_macro_f1_perfect():
    assert macro_f1([2, 0, 2], [2, 0, 2], 5) == pytest.approx(1.0)


def test_per_class_accuracy():
    acc = per_class_accuracy(PRED, TARGET, 4)
    assert acc[:3] == pytest.approx([0.5, 1.0, 0.0])
    assert math.isnan(acc[3])
    assert all(isinstance(a, float) for a in acc)


def test_embedding_distances_orthogonal():
    s = np.array([[1.0, 0.0], [0.0, 1.0]])
    t = np.array([[0.0, 1.0], [-1.0, 0.0]])
    d = embedding_distances(s, t)
    assert d["mean_sq_distance"] == pytest.approx(2.0)
    assert d["mean_angle_deg"] == pytest.approx(90.0)


def test_embedding_distances_identical_and_opposite():
    x = torch.tensor([[0.6, 0.8]])
    assert embedding_distances(x, x)["mean_angle_deg"] == pytest.approx(0.0, abs=1e-5)
    d = embedding_distances(x, -x)
    assert d["mean_sq_distance"] == pytest.approx(4.0)
    assert d["mean_angle_deg"] == pytest.approx(180.0)


# ---------------------------------------------------------------------------- M_vlalign


def ang(deg: float) -> list[float]:
    r = math.radians(deg)
    return [math.cos(r), math.sin(r)]


# Texts on the unit circle at 10..50 degrees plus two far decoys; the teacher image sits at
# 0 degrees, so its nearest texts in order are 10, 20, 30, 40, 50.
TEXTS = np.array([ang(a) for a in (30, 170, 10, 50, 190, 20, 40)])
TEACHER = np.array([ang(0)])


def test_vlalign_identical_is_zero():
    g = np.random.default_rng(0)
    img = g.normal(size=(6, 8))
    txt = g.normal(size=(5, 8))
    for k in (1, 2, 3, 5):
        assert vl_alignment_inversions(img, img, txt, k) == 0.0


@pytest.mark.parametrize("k", [2, 3, 5])
def test_vlalign_fully_reversed(k):
    # Student at 10*k + 10 degrees: distances to texts 10..10k are decreasing.
    student = np.array([ang(10 * k + 10)])
    assert vl_alignment_inversions(student, TEACHER, TEXTS, k) == k * (k - 1) / 2


def test_vlalign_one_swap():
    # Student at 16 degrees: distances to 10, 20, 30 are 6, 4, 14 -> only (10, 20) swapped.
    assert vl_alignment_inversions(np.array([ang(16)]), TEACHER, TEXTS, 3) == 1.0


def test_vlalign_mean_over_images_and_torch_input():
    student = torch.tensor([ang(40), ang(16)], dtype=torch.float32)
    teacher = torch.tensor([ang(0), ang(0)], dtype=torch.float32)
    # image 0 fully reversed (3), image 1 one swap (1) -> mean 2
    assert vl_alignment_inversions(student, teacher, torch.tensor(TEXTS), 3) == 2.0


def test_vlalign_scale_invariant():
    student = np.array([ang(16)]) * 7.0
    assert vl_alignment_inversions(student, TEACHER * 3.0, TEXTS, 3) == 1.0


def test_vlalign_bad_k():
    with pytest.raises(ValueError):
        vl_alignment_inversions(TEACHER, TEACHER, TEXTS, 8)
    with pytest.raises(ValueError):
        vl_alignment_inversions(TEACHER, TEACHER, TEXTS, 0)


def test_vl_alignment_keys_skip_large_k():
    student = np.array([ang(60)])
    out = vl_alignment(student, TEACHER, TEXTS, ks=(2, 3, 5, 10))
    assert out == {"vlalign@2": 1.0, "vlalign@3": 3.0, "vlalign@5": 10.0}
    assert all(isinstance(v, float) for v in out.values())


def test_classify():
    txt = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    img = torch.tensor([[0.1, 0.9], [-3.0, 0.5], [1.0, 0.0]])
    pred, scores = classify(img, txt)
    np.testing.assert_array_equal(pred, [1, 2, 0])
    assert scores.shape == (3, 3)
    assert scores[2, 0] == pytest.approx(1.0)
    assert scores[2, 1] == pytest.approx(0.0)
