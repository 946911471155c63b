"""Distillation losses (Li et al., ICCV 2023, "Distilling Large Vision-Language Model with
Out-of-Distribution Generalizability", Sec. 4).

Notation used throughout:

* ``student``  -- S(x), student image embeddings, shape (B, D), expected L2-normalised;
* ``teacher``  -- T_img(x), teacher image embeddings, shape (B, D), expected L2-normalised;
* ``text_emb`` -- T_txt, teacher text embeddings of the training labels, shape (L, D),
  expected L2-normalised;
* ``labels``   -- y, ground-truth label indices into ``text_emb``, shape (B,), int64.

Every loss treats the teacher image and text embeddings as fixed targets: they are
detached, so gradients only ever reach the student. Losses built on cosine similarity
normalise their inputs themselves; :class:`MseLoss` and the ``l2`` variant of
:class:`ImageContrastiveLoss` use the embeddings exactly as given.

Under DistributedDataParallel, :class:`ImageContrastiveLoss` gathers the embeddings of
every rank (:func:`gather_rows`), so each image has the whole global batch as negatives.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..config import LossConfig

__all__ = [
    "ClsLoss",
    "MseLoss",
    "ImageContrastiveLoss",
    "VLProxLoss",
    "VLKLLoss",
    "DistillLoss",
    "cosine_logits",
    "gather_rows",
]


def cosine_logits(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """Return ``cos(a_i, b_j) / tau`` as an (N, M) matrix for ``a`` (N, D) and ``b`` (M, D)."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t() / tau


def _world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised default process group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_rows(local: torch.Tensor, grad_scale: float = 1.0) -> torch.Tensor:
    """The (world * B, D) rows of every rank's ``local`` (B, D) tensor, in rank order.

    Outside a process group (or with one process) ``local`` is returned as is. The other
    ranks' rows are copies without a graph; this rank's block is ``local`` itself, so
    gradients reach the local rows only, multiplied by ``grad_scale`` (the value is
    unchanged). Every rank must pass the same shape (the trainer's shards are equal).
    """
    rank, world = _world()
    if world == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(parts, local.detach().contiguous())
    if grad_scale != 1.0 and local.requires_grad:
        # local + (s - 1) * (local - local.detach()): same value, gradient times s
        local = local + (grad_scale - 1.0) * (local - local.detach())
    parts[rank] = local
    return torch.cat(parts)


def _check_tau(tau: float, name: str = "tau") -> float:
    if not tau > 0:
        raise ValueError(f"{name} must be positive, got {tau!r}")
    return float(tau)


class ClsLoss(nn.Module):
    """L_cls: cross-entropy of the student against the label text embeddings.

    ``logits[i, l] = cos(S(x_i), T_txt[l]) / tau``; the loss is the mean cross-entropy of
    these logits against ``labels`` over the rows whose label is not ``-1`` (unlabelled
    rows are ignored; the loss is 0 when no row is labelled).
    """

    def __init__(self, tau: float = 0.07) -> None:
        super().__init__()
        self.tau = _check_tau(tau)

    def forward(
        self, student: torch.Tensor, text_emb: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Mean cross-entropy over the labelled rows (a scalar tensor)."""
        logits = cosine_logits(student, text_emb.detach(), self.tau)
        # sum / count instead of boolean indexing: no host-device sync per step
        ce = F.cross_entropy(logits, labels, ignore_index=-1, reduction="sum")
        return ce / (labels >= 0).sum().clamp_min(1).to(ce.dtype)


class MseLoss(nn.Module):
    """L_mse: mean over the batch of the squared L2 distance ``||S(x) - T_img(x)||^2``.

    The squared differences are summed over the embedding dimension D and averaged over
    the batch (so this is D times ``torch.nn.functional.mse_loss``).
    """

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Mean squared embedding distance (a scalar tensor)."""
        return (student - teacher.detach()).pow(2).sum(dim=-1).mean()


class ImageContrastiveLoss(nn.Module):
    """L_im-cst: InfoNCE between student and teacher image embeddings.

    ``logits[i, j] = -||S(x_i) - T_img(x_j)||^2 / tau`` (``similarity='l2'``, the paper's
    exp(-||S - T||^2 / tau)) or ``cos(S(x_i), T_img(x_j)) / tau`` (``similarity='cosine'``,
    the authors' code). For unit vectors ``-||s - t||^2 = 2 cos(s, t) - 2``, so ``l2`` at
    tau equals ``cosine`` at tau / 2 (twice as sharp). The positive pair for row ``i`` is
    column ``i``; the loss is ``0.5 * (CE(logits, arange(B)) + CE(logits.T, arange(B)))``
    (``direction='both'``) or ``CE(logits, arange(B))`` alone (``direction='single'``:
    student -> teacher, each student embedding picks its teacher embedding, as the
    authors' ``single`` mode).

    Under torch.distributed (``gather=True``) the student and teacher rows of every rank
    are gathered (:func:`gather_rows`) and the loss is computed over the global batch, the
    same value on every rank. Gradients reach this rank's rows only, scaled by the world
    size, so that DistributedDataParallel's gradient averaging gives exactly the gradient
    of the global-batch loss.
    """

    SIMILARITIES = ("l2", "cosine")
    DIRECTIONS = ("both", "single")

    def __init__(self, tau: float = 0.07, similarity: str = "l2", direction: str = "both",
                 gather: bool = True) -> None:
        super().__init__()
        if similarity not in self.SIMILARITIES:
            raise ValueError(
                f"similarity must be one of {self.SIMILARITIES}, got {similarity!r}"
            )
        if direction not in self.DIRECTIONS:
            raise ValueError(f"direction must be one of {self.DIRECTIONS}, got {direction!r}")
        self.tau = _check_tau(tau)
        self.similarity = similarity
        self.direction = direction
        self.gather = gather

    def logits(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """The (B, B) student-by-teacher logit matrix."""
        teacher = teacher.detach()
        if self.similarity == "cosine":
            return cosine_logits(student, teacher, self.tau)
        # ||s - t||^2 written out; clamp guards tiny negative values from rounding.
        sq = (
            student.pow(2).sum(-1, keepdim=True)
            + teacher.pow(2).sum(-1).unsqueeze(0)
            - 2.0 * student @ teacher.t()
        ).clamp_min(0.0)
        return -sq / self.tau

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Contrastive loss over the (global) batch (a scalar tensor)."""
        if self.gather:
            _, world = _world()
            student = gather_rows(student, grad_scale=float(world))
            teacher = gather_rows(teacher.detach())
        logits = self.logits(student, teacher)
        target = torch.arange(logits.shape[0], device=logits.device)
        s2t = F.cross_entropy(logits, target)
        if self.direction == "single":
            return s2t
        return 0.5 * (s2t + F.cross_entropy(logits.t(), target))


class VLProxLoss(nn.Module):
    """L_vlprox: match the student's label distribution to the teacher's where it is right.

    With ``t = cos(T_img, T_txt) / tau`` and ``s = cos(S, T_txt) / tau`` (both (B, L)):

    * ``I_i = 1`` when ``argmax_l t[i, l] == y_i`` (the teacher classifies sample i
      correctly), else 0;
    * ``K_i`` = indices of the teacher's ``topk`` largest logits for sample i (``topk`` is
      clipped to L);
    * ``P_T_i = softmax(t[i, K_i])`` and ``P_S_i = softmax(s[i, K_i])`` -- both
      renormalised over the same k labels;
    * ``reduction='batch'`` (default): ``loss = sum_i I_i * KL(P_T_i || P_S_i) / B``;
    * ``reduction='masked'`` (the authors' code): ``loss = sum_i I_i * KL(P_T_i || P_S_i) / N'``
      with ``N' = sum_i I_i``, the images the teacher gets right.

    With ``batch`` the division is by the whole batch size B, not by the number of samples
    with ``I_i = 1``: samples where the teacher is wrong contribute zero terms to the mean.
    Both are exactly 0 when the teacher is wrong on every sample (``masked`` is guarded
    against N' = 0, where the authors' code gives NaN). Rows labelled ``-1`` (unlabelled)
    count as neither: they are never "right" and B is the number of labelled rows. The
    teacher side is detached, so no gradient reaches the teacher.
    """

    REDUCTIONS = ("batch", "masked")

    def __init__(self, topk: int = 5, tau: float = 0.07, reduction: str = "batch") -> None:
        super().__init__()
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk!r}")
        if reduction not in self.REDUCTIONS:
            raise ValueError(f"reduction must be one of {self.REDUCTIONS}, got {reduction!r}")
        self.topk = int(topk)
        self.tau = _check_tau(tau)
        self.reduction = reduction

    def forward(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        text_emb: torch.Tensor,
        labels: torch.Tensor,
    ) -> torch.Tensor:
        """Masked KL divergence averaged per ``reduction`` (a scalar tensor)."""
        text_emb = text_emb.detach()
        with torch.no_grad():
            t = cosine_logits(teacher.detach(), text_emb, self.tau)
            correct = (t.argmax(dim=-1) == labels).to(t.dtype)  # I(x), (B,)
            k = min(self.topk, t.shape[-1])
            t_top, idx = t.topk(k, dim=-1)  # (B, k), (B, k)
            log_p_t = F.log_softmax(t_top, dim=-1)
            p_t = log_p_t.exp()
        s = cosine_logits(student, text_emb, self.tau)
        log_p_s = F.log_softmax(s.gather(-1, idx), dim=-1)
        kl = (p_t * (log_p_t - log_p_s)).sum(dim=-1)  # (B,)
        if self.reduction == "masked":
            count = correct.sum()
        else:
            count = (labels >= 0).sum().to(kl.dtype)
        # a tensor denominator (no .item()): no host-device sync; 0 / 1 when nothing counts
        return (correct * kl).sum() / count.clamp_min(1.0)


class VLKLLoss(nn.Module):
    """L_vl-kl: label-free vision-language distillation over a broad text vocabulary.

    With ``broad`` the (M, D) teacher text embeddings of a broad name list (e.g. the 1000
    ImageNet class names), ``t = cos(T_img, broad) / tau`` and ``s = cos(S, broad) / tau``::

        loss = mean_i KL( softmax(t_i) || softmax(s_i) )

    Needs no labels, so it applies to auxiliary images too (as CLIP-KD and DIME-FM distil
    on data beyond the labelled set). The teacher side is detached.
    """

    def __init__(self, tau: float = 0.05) -> None:
        super().__init__()
        self.tau = _check_tau(tau)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor,
                broad: torch.Tensor) -> torch.Tensor:
        """Batch-mean KL divergence (a scalar tensor)."""
        broad = broad.detach()
        with torch.no_grad():
            log_p_t = F.log_softmax(cosine_logits(teacher.detach(), broad, self.tau), dim=-1)
        log_p_s = F.log_softmax(cosine_logits(student, broad, self.tau), dim=-1)
        return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1).mean()


class DistillLoss(nn.Module):
    """Weighted sum of L_cls, L_mse, L_im-cst, L_vlprox and L_vl-kl (:class:`LossConfig`).

    Only terms with a non-zero weight are built and computed. :meth:`forward` returns
    ``(total, components)`` where ``total = sum_name weight_name * loss_name`` is a scalar
    tensor and ``components`` maps each active term's name (``cls``, ``mse``, ``imcst``,
    ``vlprox``, ``vlkl``) to its *unweighted* value as a python float, or, with
    ``as_float=False``, as a detached 0-d tensor (no host-device sync; the trainer sums
    these and converts once per epoch).

    Labels of ``-1`` mark unlabelled (auxiliary) images: L_cls and L_vlprox are computed
    over the labelled rows only (zero when a batch has none); the teacher-only terms use
    every row. The masking uses weights, not boolean indexing, so no step waits for the
    device.
    """

    def __init__(self, cfg: LossConfig) -> None:
        super().__init__()
        self.cfg = cfg
        weights = {
            "cls": cfg.cls_weight,
            "mse": cfg.mse_weight,
            "imcst": cfg.imcst_weight,
            "vlprox": cfg.vlprox_weight,
            "vlkl": cfg.vlkl_weight,
        }
        for name, w in weights.items():
            if w < 0:
                raise ValueError(f"loss weight {name!r} must be >= 0, got {w!r}")
        self.weights = {name: float(w) for name, w in weights.items() if w != 0}
        if not self.weights:
            raise ValueError("all loss weights are zero; nothing to train")
        terms: dict[str, nn.Module] = {}
        if "cls" in self.weights:
            terms["cls"] = ClsLoss(cfg.tau)
        if "mse" in self.weights:
            terms["mse"] = MseLoss()
        if "imcst" in self.weights:
            terms["imcst"] = ImageContrastiveLoss(cfg.tau, cfg.imcst_similarity,
                                                  cfg.imcst_direction)
        if "vlprox" in self.weights:
            terms["vlprox"] = VLProxLoss(cfg.vlprox_topk, cfg.vlprox_tau,
                                         cfg.vlprox_reduction)
        if "vlkl" in self.weights:
            terms["vlkl"] = VLKLLoss(cfg.vlkl_tau)
        self.terms = nn.ModuleDict(terms)

    def forward(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        text_emb: torch.Tensor,
        labels: torch.Tensor,
        broad_text: torch.Tensor | None = None,
        as_float: bool = True,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Return ``(weighted total, {term: unweighted value})`` for the active terms.

        ``broad_text`` (M, D) is required when L_vl-kl is active.
        """
        total: torch.Tensor | None = None
        components: dict = {}
        for name, module in self.terms.items():
            # ClsLoss and VLProxLoss skip rows labelled -1 themselves (0 when none is labelled)
            if name == "cls":
                value = module(student, text_emb, labels)
            elif name in ("mse", "imcst"):
                value = module(student, teacher)
            elif name == "vlkl":
                if broad_text is None:
                    raise ValueError("L_vl-kl needs the broad vocabulary's text embeddings")
                value = module(student, teacher, broad_text)
            else:
                value = module(student, teacher, text_emb, labels)
            components[name] = float(value.detach()) if as_float else value.detach()
            weighted = self.weights[name] * value
            total = weighted if total is None else total + weighted
        assert total is not None
        return total, components
