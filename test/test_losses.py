"""Losses on hand-made tensors whose values can be written in closed form."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vl_distill_ros.config import LossConfig
from vl_distill_ros.training.losses import (
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


# ---------------------------------------------------------------------------------------
# parity with the authors' reference code (xuanlinli17/large_vlm_distillation_ood,
# main_experiments.py), written out here as plain formulas
# ---------------------------------------------------------------------------------------
def ref_imcst(student, teacher, tau, mode):
    """The reference L_im-cst: cosine / tau, 'single' (student rows) or 'bidirectional'."""
    mat = F.normalize(student, dim=-1) @ F.normalize(teacher, dim=-1).T / tau
    labels = torch.arange(mat.shape[0])
    if mode == "single":
        return F.cross_entropy(mat, labels)
    return 0.5 * (F.cross_entropy(mat, labels) + F.cross_entropy(mat.T, labels))


def ref_vlalign_filtered(student, teacher, text, labels, k, tau):
    """The reference L_vlalign with --clip-filter-out-wrong-alignment: the mean over the
    N' rows whose teacher argmax is the label (NaN when N' = 0)."""
    s = F.normalize(student, dim=-1) @ F.normalize(text, dim=-1).T
    c = F.normalize(teacher, dim=-1) @ F.normalize(text, dim=-1).T
    keep = c.argmax(dim=-1) == labels
    s, c = s[keep] / tau, c[keep] / tau
    top, ids = c.topk(min(k, c.shape[-1]), dim=-1)
    st = s.gather(-1, ids)
    return (F.softmax(top, -1) * (F.log_softmax(top, -1) - F.log_softmax(st, -1))).sum(-1).mean()


def _unit_batch(n: int, d: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    s = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    te = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    return s, te


@pytest.mark.parametrize("direction, mode", [("both", "bidirectional"), ("single", "single")])
def test_imcst_cosine_equals_the_reference_code(direction, mode):
    s, te = _unit_batch(6, 5, 3)
    got = ImageContrastiveLoss(0.07, "cosine", direction)(s, te)
    assert got.item() == pytest.approx(ref_imcst(s, te, 0.07, mode).item(), rel=1e-10)


@pytest.mark.parametrize("direction, mode", [("both", "bidirectional"), ("single", "single")])
def test_imcst_l2_equals_the_reference_at_half_the_temperature(direction, mode):
    """exp(-||s - t||^2 / tau) = exp((2 cos - 2) / tau): for unit vectors the paper's l2
    form at tau is the reference's cosine form at tau / 2 (twice as sharp), not at tau."""
    s, te = _unit_batch(6, 5, 4)
    got = ImageContrastiveLoss(0.1, "l2", direction)(s, te).item()
    assert got == pytest.approx(ref_imcst(s, te, 0.05, mode).item(), rel=1e-10)
    assert got != pytest.approx(ref_imcst(s, te, 0.1, mode).item(), rel=1e-3)


def test_imcst_single_direction_closed_form():
    student = t([[1, 0], [0, 1]])
    teacher = t([[1, 0], [0.5, SQ3 / 2]])
    # logits = [[1, 0.5], [0, sqrt3/2]]: only the rows (student -> teacher) count
    rows = 0.5 * ((-1 + lse(1, 0.5)) + (-SQ3 / 2 + lse(0, SQ3 / 2)))
    loss = ImageContrastiveLoss(tau=1.0, similarity="cosine", direction="single")
    assert loss(student, teacher).item() == pytest.approx(rows, rel=1e-12)
    with pytest.raises(ValueError, match="direction"):
        ImageContrastiveLoss(direction="one")


def test_vlprox_masked_averages_over_the_images_the_teacher_gets_right():
    # sample 0: teacher right (label 0); sample 1: teacher wrong (label 2) -> KL_0 / 1
    args = (t([S_VEC, S_VEC]), t([T_VEC, T_VEC]), TEXT3, torch.tensor([0, 2]))
    masked = VLProxLoss(topk=3, tau=1.0, reduction="masked")(*args)
    assert masked.item() == pytest.approx(kl(softmax(T_VEC), softmax(S_VEC)), rel=1e-10)
    batch = VLProxLoss(topk=3, tau=1.0, reduction="batch")(*args)
    assert batch.item() == pytest.approx(masked.item() / 2, rel=1e-10)
    with pytest.raises(ValueError, match="reduction"):
        VLProxLoss(reduction="mean")


def test_vlprox_masked_equals_the_reference_code():
    g = torch.Generator().manual_seed(5)
    text = F.normalize(torch.randn(6, 8, generator=g, dtype=torch.float64), dim=-1)
    teacher = F.normalize(text[torch.tensor([0, 1, 2, 3, 4, 5, 0, 1])]
                          + 0.3 * torch.randn(8, 8, generator=g, dtype=torch.float64), dim=-1)
    student = F.normalize(torch.randn(8, 8, generator=g, dtype=torch.float64), dim=-1)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 3, 4])  # the last two: teacher wrong
    right = (teacher @ text.T).argmax(-1) == labels
    assert 0 < int(right.sum()) < 8
    for k in (2, 3, 6):
        got = VLProxLoss(topk=k, tau=0.07, reduction="masked")(student, teacher, text, labels)
        ref = ref_vlalign_filtered(student, teacher, text, labels, k, 0.07)
        assert got.item() == pytest.approx(ref.item(), rel=1e-10)
        batch = VLProxLoss(topk=k, tau=0.07)(student, teacher, text, labels)
        assert batch.item() == pytest.approx(ref.item() * int(right.sum()) / 8, rel=1e-10)


def test_vlprox_masked_is_zero_not_nan_when_the_teacher_is_always_wrong():
    student = t([S_VEC, S_VEC]).requires_grad_(True)
    args = (t([T_VEC, T_VEC]), TEXT3, torch.tensor([1, 2]))
    assert math.isnan(ref_vlalign_filtered(student.detach(), *args, 3, 1.0).item())
    loss = VLProxLoss(topk=3, tau=1.0, reduction="masked")(student, *args)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(student.grad).all() and torch.count_nonzero(student.grad) == 0


def test_vlprox_unlabelled_rows_count_in_neither_reduction():
    """Label -1 rows are never 'right' and are not part of B."""
    args = (t([S_VEC, S_VEC, S_VEC]), t([T_VEC, T_VEC, T_VEC]), TEXT3)
    full = kl(softmax(T_VEC), softmax(S_VEC))
    labels = torch.tensor([0, 2, -1])
    assert VLProxLoss(3, 1.0, "batch")(*args, labels).item() == pytest.approx(full / 2)
    assert VLProxLoss(3, 1.0, "masked")(*args, labels).item() == pytest.approx(full)


def test_cls_ignores_unlabelled_rows():
    student, _, text, labels = _toy_batch(6)
    labels = labels.clone()
    labels[1::2] = -1
    keep = labels >= 0
    got = ClsLoss(0.1)(student, text, labels)
    assert got.item() == pytest.approx(ClsLoss(0.1)(student[keep], text, labels[keep]).item())
    none = ClsLoss(0.1)(student, text, torch.full_like(labels, -1))
    assert none.item() == 0.0 and none.requires_grad


def test_distill_passes_the_parity_options_through():
    student, teacher, text, labels = _toy_batch(6)
    cfg = LossConfig(cls_weight=0.0, imcst_weight=1.0, vlprox_weight=1.0, vlprox_topk=2,
                     imcst_direction="single", vlprox_reduction="masked")
    _, parts = DistillLoss(cfg)(student, teacher, text, labels)
    assert parts["imcst"] == pytest.approx(
        ImageContrastiveLoss(cfg.tau, "l2", "single")(student, teacher).item())
    assert parts["vlprox"] == pytest.approx(
        VLProxLoss(2, cfg.vlprox_tau, "masked")(student, teacher, text, labels).item())


def test_distill_components_as_detached_tensors():
    student, teacher, text, labels = _toy_batch(4)
    total, parts = DistillLoss(LossConfig(vlprox_weight=1.0))(student, teacher, text, labels,
                                                              as_float=False)
    assert set(parts) == {"cls", "imcst", "vlprox"}
    for v in parts.values():
        assert isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad
    assert total.item() == pytest.approx(sum(float(v) for v in parts.values()))
    total.backward()  # the total keeps its graph
