"""Losses on hand-made tensors whose values can be written in closed form."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vl_distill_ros.core.config import LossConfig
from vl_distill_ros.core.losses import (
    ClsLoss,
    DistillLoss,
    ImageContrastiveLoss,
    MseLoss,
    VLKLLoss,
    VLProxLoss,
)

SQ3 = math.sqrt(3.0)


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def lse(*xs: float) -> float:
    return math.log(sum(math.exp(x) for x in xs))


def softmax(xs: list[float]) -> list[float]:
    z = sum(math.exp(x) for x in xs)
    return [math.exp(x) / z for x in xs]


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


# --------------------------------------------------------------------------- L_cls


def test_cls_closed_form():
    text = t([[1, 0], [0, 1]])
    student = t([[1, 0], [1, 0]])
    labels = torch.tensor([0, 1])
    loss = ClsLoss(tau=0.5)(student, text, labels)
    # logits for both rows: [2, 0]; CE(label 0) = log(1+e^-2), CE(label 1) = log(1+e^2).
    expected = 0.5 * (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(2)))
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_cls_uses_cosine_not_dot_product():
    text = t([[1, 0], [0, 1]])
    labels = torch.tensor([0])
    a = ClsLoss(tau=0.5)(t([[1, 0]]), text, labels)
    b = ClsLoss(tau=0.5)(t([[5, 0]]), text, labels)
    assert a.item() == pytest.approx(b.item())


def test_cls_rejects_bad_tau():
    with pytest.raises(ValueError):
        ClsLoss(tau=0.0)


# --------------------------------------------------------------------------- L_mse


def test_mse_perfect_match_is_zero():
    x = F.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert MseLoss()(x, x.clone()).item() == 0.0


def test_mse_sums_over_dim_means_over_batch():
    student = t([[1, 0], [1, 0]])
    teacher = t([[1, 0], [0, 1]])
    # squared distances 0 and 2 -> mean 1
    assert MseLoss()(student, teacher).item() == pytest.approx(1.0)


# --------------------------------------------------------------------------- L_im-cst


def test_imcst_l2_closed_form():
    e = t([[1, 0], [0, 1]])
    loss = ImageContrastiveLoss(tau=1.0, similarity="l2")(e, e.clone())
    # logits [[0, -2], [-2, 0]]: every row/column CE = log(1 + e^-2)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-12)


def test_imcst_l2_temperature():
    e = t([[1, 0], [0, 1]])
    loss = ImageContrastiveLoss(tau=0.5, similarity="l2")(e, e.clone())
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-4)), rel=1e-12)


def test_imcst_cosine_asymmetric_closed_form():
    student = t([[1, 0], [0, 1]])
    teacher = t([[1, 0], [0.5, SQ3 / 2]])
    # logits = [[1, 0.5], [0, sqrt3/2]]
    rows = 0.5 * ((-1 + lse(1, 0.5)) + (-SQ3 / 2 + lse(0, SQ3 / 2)))
    cols = 0.5 * ((-1 + lse(1, 0)) + (-SQ3 / 2 + lse(0.5, SQ3 / 2)))
    expected = 0.5 * (rows + cols)
    assert rows != pytest.approx(cols)  # the example really is asymmetric
    loss = ImageContrastiveLoss(tau=1.0, similarity="cosine")(student, teacher)
    assert loss.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("similarity", ["l2", "cosine"])
def test_imcst_symmetric_in_student_and_teacher(similarity):
    g = torch.Generator().manual_seed(1)
    s = F.normalize(torch.randn(5, 6, generator=g, dtype=torch.float64), dim=-1)
    te = F.normalize(torch.randn(5, 6, generator=g, dtype=torch.float64), dim=-1)
    loss = ImageContrastiveLoss(tau=0.2, similarity=similarity)
    assert loss(s, te).item() == pytest.approx(loss(te, s).item(), rel=1e-10)


@pytest.mark.parametrize("similarity", ["l2", "cosine"])
def test_imcst_matching_beats_shuffled(similarity):
    g = torch.Generator().manual_seed(2)
    teacher = F.normalize(torch.randn(8, 16, generator=g), dim=-1)
    student = F.normalize(teacher + 0.1 * torch.randn(8, 16, generator=g), dim=-1)
    loss = ImageContrastiveLoss(tau=0.07, similarity=similarity)
    assert loss(student, teacher) < loss(student.roll(1, dims=0), teacher)


def test_imcst_invalid_similarity():
    with pytest.raises(ValueError):
        ImageContrastiveLoss(similarity="dot")


# --------------------------------------------------------------------------- L_vlprox

# With the identity as text embeddings (L = D = 3) and tau = 1, the logits are simply the
# normalised embedding coordinates, which makes the softmaxes easy to write down.
TEXT3 = torch.eye(3, dtype=torch.float64)
T_VEC = unit([3, 2, 1])  # teacher logits; argmax 0
S_VEC = unit([1, 2, 3])  # student logits


def test_vlprox_full_k_equals_hand_kl():
    loss = VLProxLoss(topk=3, tau=1.0)(t([S_VEC]), t([T_VEC]), TEXT3, torch.tensor([0]))
    expected = kl(softmax(T_VEC), softmax(S_VEC))
    assert expected > 0.01
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_vlprox_topk_renormalises_over_teacher_top_labels():
    loss = VLProxLoss(topk=2, tau=1.0)(t([S_VEC]), t([T_VEC]), TEXT3, torch.tensor([0]))
    # teacher's top-2 labels are 0 and 1; both distributions renormalised over them
    expected = kl(softmax(T_VEC[:2]), softmax(S_VEC[:2]))
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    assert expected != pytest.approx(kl(softmax(T_VEC), softmax(S_VEC)))


def test_vlprox_topk_clipped_to_label_count():
    args = (t([S_VEC]), t([T_VEC]), TEXT3, torch.tensor([0]))
    assert VLProxLoss(topk=10, tau=1.0)(*args).item() == pytest.approx(
        VLProxLoss(topk=3, tau=1.0)(*args).item()
    )


def test_vlprox_topk_follows_teacher_order_not_label_order():
    teacher = unit([1, 2, 3])  # teacher top-2 = labels 2, 1; argmax 2
    student = unit([3, 1, 2])
    loss = VLProxLoss(topk=2, tau=1.0)(t([student]), t([teacher]), TEXT3, torch.tensor([2]))
    expected = kl(softmax([teacher[2], teacher[1]]), softmax([student[2], student[1]]))
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_vlprox_zero_when_teacher_always_wrong():
    student = t([S_VEC, S_VEC]).requires_grad_(True)
    loss = VLProxLoss(topk=3, tau=1.0)(student, t([T_VEC, T_VEC]), TEXT3, torch.tensor([1, 2]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(student.grad) == 0


def test_vlprox_mean_over_whole_batch():
    # sample 0: teacher right (label 0); sample 1: teacher wrong (label 2) -> KL_0 / 2
    loss = VLProxLoss(topk=3, tau=1.0)(
        t([S_VEC, S_VEC]), t([T_VEC, T_VEC]), TEXT3, torch.tensor([0, 2])
    )
    expected = kl(softmax(T_VEC), softmax(S_VEC)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_vlprox_zero_when_student_matches_teacher():
    loss = VLProxLoss(topk=2, tau=0.07)(t([T_VEC]), t([T_VEC]), TEXT3, torch.tensor([0]))
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


def test_vlprox_rejects_bad_topk():
    with pytest.raises(ValueError):
        VLProxLoss(topk=0)


# --------------------------------------------------------------------------- gradients


def _toy_batch(seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    text = F.normalize(torch.randn(4, 8, generator=g), dim=-1).requires_grad_(True)
    teacher_raw = text.detach()[[0, 1, 2, 3, 0, 1]] + 0.3 * torch.randn(6, 8, generator=g)
    teacher = F.normalize(teacher_raw, dim=-1).requires_grad_(True)
    student = F.normalize(torch.randn(6, 8, generator=g), dim=-1).requires_grad_(True)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    return student, teacher, text, labels


@pytest.mark.parametrize("name", ["cls", "mse", "imcst", "vlprox"])
def test_gradients_reach_student_only(name):
    student, teacher, text, labels = _toy_batch()
    if name == "cls":
        loss = ClsLoss(0.07)(student, text, labels)
    elif name == "mse":
        loss = MseLoss()(student, teacher)
    elif name == "imcst":
        loss = ImageContrastiveLoss(0.07)(student, teacher)
    else:
        loss = VLProxLoss(topk=3, tau=0.07)(student, teacher, text, labels)
    assert loss.item() > 0
    loss.backward()
    assert student.grad is not None and torch.count_nonzero(student.grad) > 0
    assert teacher.grad is None
    assert text.grad is None


# --------------------------------------------------------------------------- DistillLoss


def test_distill_sums_weighted_components():
    student, teacher, text, labels = _toy_batch(4)
    cfg = LossConfig(
        cls_weight=1.0,
        mse_weight=2.0,
        imcst_weight=3.0,
        vlprox_weight=4.0,
        tau=0.1,
        imcst_similarity="cosine",
        vlprox_topk=2,
        vlprox_tau=0.05,
    )
    total, parts = DistillLoss(cfg)(student, teacher, text, labels)
    expected = {
        "cls": ClsLoss(0.1)(student, text, labels).item(),
        "mse": MseLoss()(student, teacher).item(),
        "imcst": ImageContrastiveLoss(0.1, "cosine")(student, teacher).item(),
        "vlprox": VLProxLoss(2, 0.05)(student, teacher, text, labels).item(),
    }
    assert set(parts) == set(expected)
    for k, v in expected.items():
        assert parts[k] == pytest.approx(v, rel=1e-6)
        assert isinstance(parts[k], float)
    weighted = 1 * expected["cls"] + 2 * expected["mse"] + 3 * expected["imcst"]
    weighted += 4 * expected["vlprox"]
    assert total.item() == pytest.approx(weighted, rel=1e-6)
    total.backward()
    assert student.grad is not None and teacher.grad is None


def test_distill_skips_zero_weight_terms():
    student, teacher, text, labels = _toy_batch(5)
    loss = DistillLoss(LossConfig(cls_weight=0.5, mse_weight=0.0, imcst_weight=0.0))
    assert set(loss.terms.keys()) == {"cls"}
    total, parts = loss(student, teacher, text, labels)
    assert set(parts) == {"cls"}
    assert total.item() == pytest.approx(0.5 * parts["cls"], rel=1e-6)


def test_distill_default_config():
    student, teacher, text, labels = _toy_batch(6)
    total, parts = DistillLoss(LossConfig())(student, teacher, text, labels)
    assert set(parts) == {"cls", "imcst"}
    assert total.item() == pytest.approx(parts["cls"] + parts["imcst"], rel=1e-6)


def test_distill_config_errors():
    with pytest.raises(ValueError):
        DistillLoss(LossConfig(imcst_similarity="dot"))
    with pytest.raises(ValueError):
        DistillLoss(LossConfig(cls_weight=0, mse_weight=0, imcst_weight=0, vlprox_weight=0))
    with pytest.raises(ValueError):
        DistillLoss(LossConfig(mse_weight=-1.0))


# ---------------------------------------------------------------------------------------
# L_vl-kl and unlabelled rows
# ---------------------------------------------------------------------------------------
def test_vlkl_equals_hand_kl_over_the_broad_vocabulary():
    broad = t([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    teacher = t([[1.0, 0.0]])
    student = t([[0.0, 1.0]])
    tau = 0.5
    tl = [1.0 / tau, 0.0, 0.6 / tau]
    sl = [0.0, 1.0 / tau, 0.8 / tau]
    got = VLKLLoss(tau)(student, teacher, broad)
    assert float(got) == pytest.approx(kl(softmax(tl), softmax(sl)))
    assert float(VLKLLoss(tau)(teacher, teacher, broad)) == pytest.approx(0.0, abs=1e-12)


def test_vlkl_needs_no_labels_and_only_trains_the_student():
    student = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    broad = torch.randn(5, 3, dtype=torch.float64)
    VLKLLoss(0.1)(student, teacher, broad).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_unlabelled_rows_only_feed_the_teacher_terms():
    student, teacher, text, labels = _toy_batch()
    cfg = LossConfig(cls_weight=1.0, imcst_weight=1.0, vlprox_weight=1.0)
    loss = DistillLoss(cfg)
    labelled = labels.clone()
    labelled[2:] = -1
    _, parts = loss(student, teacher, text, labelled)
    keep = slice(0, 2)
    assert parts["cls"] == pytest.approx(float(ClsLoss(cfg.tau)(student[keep], text,
                                                                 labels[keep])))
    assert parts["vlprox"] == pytest.approx(float(VLProxLoss(cfg.vlprox_topk, cfg.vlprox_tau)(
        student[keep], teacher[keep], text, labels[keep])))
    assert parts["imcst"] == pytest.approx(float(ImageContrastiveLoss(cfg.tau)(student, teacher)))
    none = torch.full_like(labels, -1)
    total, parts = loss(student, teacher, text, none)
    assert parts["cls"] == 0.0 and parts["vlprox"] == 0.0 and parts["imcst"] > 0


def test_distill_vlkl_term_needs_the_broad_embeddings():
    student, teacher, text, labels = _toy_batch()
    loss = DistillLoss(LossConfig(cls_weight=0.0, imcst_weight=0.0, vlkl_weight=2.0))
    broad = torch.randn(7, student.shape[1], dtype=student.dtype)
    total, parts = loss(student, teacher, text, labels, broad)
    assert float(total) == pytest.approx(2.0 * parts["vlkl"])
    with pytest.raises(ValueError, match="broad"):
        loss(student, teacher, text, labels)
