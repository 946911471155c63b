"""Calibration of mixed vocabularies: calibrated stacking and the open-set threshold.

A student distilled with labels scores the names it was trained on higher than names it
never saw, so with a vocabulary mixing both, unseen objects are labelled as trained ones.
Calibrated stacking (Chao et al., ECCV 2016) subtracts a constant ``seen_bias`` from the
cosine similarity of every trained name::

    adjusted[i, l] = cos(S(x_i), T_txt(l)) - seen_bias * [l is a trained name]
    score[i, l]    = softmax_l(adjusted[i, l] / temperature)

**Negative names** (open set). The student also learned names outside any operator's
vocabulary (the auxiliary objects it was distilled on with labels). Those trained names
that are not in the active vocabulary, and whose text embedding is not close to an active
name (cosine below ``negative_similarity``), join the softmax as negatives, but are never
published::

    score[i, l] = exp(adjusted[i, l] / T) / (sum_active exp(adjusted / T)
                                              + sum_negatives exp(cos(S(x_i), neg) / T))

so a crop that looks like an object the student knows by another name gets a low score for
every active name (cf. negative-label open-set detection, Jiang et al., ICLR 2024). The
scores of a frame then sum to at most 1.

**Centring** (optional, ``embedding_center``). Student embeddings share a common
direction, so every crop lies near the same trained names (hubness: Radovanovic et al.,
JMLR 2010; in zero-shot learning, Dinu et al., ICLR 2015 workshop). The mean embedding
``c`` of the calibration crops is subtracted before anything is scored::

    S'(x) = normalise(S(x) - c)

and the cosines above are taken with S'(x).

**Competitors** (``max_competitors``). The threshold is a softmax probability, so it is
only meaningful at the size of softmax it was chosen at: with hundreds of names every
name's share shrinks, and a crop the student names right would fall below it (the shipped
bundle, 78 YCB names plus 900 others: 31 of 150 seen renders named right stayed known). The
normalisation therefore takes only the ``max_competitors`` largest adjusted logits of a
crop (active names and negatives together; :attr:`Calibration.softmax_size`, the size of
the calibration's softmax: its vocabulary plus the trained names outside it); a
vocabulary that fits scores exactly as before.

A crop whose best score is below ``unknown_threshold`` is ``unknown``. The bias, the
temperature and the threshold are chosen after training on calibration images that never
include the split's OOD objects (ID objects plus pseudo-unseen auxiliary objects) and
stored in the bundle as a :class:`Calibration` record. This module is ROS-free and
training-free: the node, the evaluator and the calibration step all import it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from .vocabulary import fold_key

__all__ = ["Calibration", "CalibrationError", "center_embeddings", "bias_vector",
           "adjusted_scores", "negative_mask",
           "mean_class_accuracy", "harmonic_mean", "auroc", "choose_seen_bias",
           "threshold_for_coverage"]

#: Fallbacks used when a bundle has no calibration record (behaviour before calibration).
DEFAULT_UNKNOWN_THRESHOLD = 0.5
DEFAULT_TEMPERATURE = 0.01


class CalibrationError(ValueError):
    """A calibration record or setting is out of range; the message says which."""


def _fold(name: str) -> str:
    """How a name is matched to the trained names (:func:`~.vocabulary.fold_key`:
    ``coffee_mug`` is the trained ``coffee mug``)."""
    return fold_key(name)


@dataclass(frozen=True)
class Calibration:
    """The calibration record stored in a bundle's manifest.

    Attributes:
        seen_bias: cosine subtracted from the trained names' similarities, in [0, 1].
        unknown_threshold: best softmax score below this -> ``unknown``, in [0, 1].
        score_temperature: softmax temperature the threshold was chosen at, > 0.
        trained_names: the names the student was trained on with labels (L_cls).
        chosen_on: how the numbers were chosen (image folders, counts, accuracies).
    """

    seen_bias: float
    unknown_threshold: float
    score_temperature: float
    trained_names: tuple[str, ...]
    chosen_on: dict = field(default_factory=dict)
    #: Trained names not in the active vocabulary act as negatives (needs their text
    #: embeddings in the bundle); negatives this close (cosine) to an active name are dropped.
    negatives: bool = False
    negative_similarity: float = 0.8
    #: Mean student embedding of the calibration crops, subtracted from every embedding
    #: before scoring (:meth:`center`); empty: none.
    embedding_center: tuple[float, ...] = ()

    #: Numeric fields: (lowest, highest, lowest excluded).
    _RANGES = {"seen_bias": (0.0, 1.0, False), "unknown_threshold": (0.0, 1.0, False),
               "score_temperature": (0.0, 10.0, True), "negative_similarity": (-1.0, 1.0, False)}

    def __post_init__(self) -> None:
        for name, (lo, hi, open_lo) in self._RANGES.items():
            value = getattr(self, name)
            ok = not isinstance(value, bool) and isinstance(value, (int, float)) and \
                (lo < value if open_lo else lo <= value) and value <= hi
            if not ok:
                interval = f"{'(' if open_lo else '['}{lo:g}, {hi:g}]"
                raise CalibrationError(f"calibration {name} must be a number in {interval}, "
                                       f"got {value!r}")
            object.__setattr__(self, name, float(value))
        names = self.trained_names
        if isinstance(names, str) or not isinstance(names, (list, tuple)) or \
                not all(isinstance(n, str) and n.strip() for n in names):
            raise CalibrationError("calibration trained_names must be a list of non-empty "
                                   f"names, got {names!r}")
        object.__setattr__(self, "trained_names", tuple(names))
        if not isinstance(self.chosen_on, dict):
            raise CalibrationError("calibration chosen_on must be a mapping")
        if not isinstance(self.negatives, bool):
            raise CalibrationError(f"calibration negatives must be true/false, got "
                                   f"{self.negatives!r}")
        object.__setattr__(self, "embedding_center", _center_tuple(self.embedding_center))

    @property
    def softmax_size(self) -> int | None:
        """At most how many entries the softmax had where the threshold was chosen: the
        record's ``chosen_on["softmax_size"]`` (the calibration vocabulary plus the negatives
        it used), which calibration writes since session 80; for an older record (the
        shipped bundle's) an upper bound, the calibration vocabulary
        (``chosen_on["vocabulary_size"]``) plus, with negatives, every trained name (the
        in-distribution names counted twice: 70 for the shipped bundle, whose threshold was
        chosen on 54 entries), so that such a bundle scores every vocabulary of up to that
        many entries exactly as before; None when the record does not say (no cap)."""
        exact = self.chosen_on.get("softmax_size")
        if not isinstance(exact, bool) and isinstance(exact, int) and exact >= 1:
            return exact
        size = self.chosen_on.get("vocabulary_size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            return None
        return size + len(self.trained_names) if self.negatives else size

    def center(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, D) unit embeddings -> the same, centred (``embedding_center`` subtracted) and
        re-normalised; unchanged when the record has no centre."""
        return center_embeddings(embeddings, self.embedding_center)

    def check_embed_dim(self, embed_dim: int) -> None:
        """Raise :class:`CalibrationError` when the centre does not fit a student whose
        embeddings have ``embed_dim`` values (a record without a centre fits any)."""
        if self.embedding_center and len(self.embedding_center) != embed_dim:
            raise CalibrationError(f"the calibration centre (embedding_center) has "
                                   f"{len(self.embedding_center)} values, the student's "
                                   f"embeddings {embed_dim}")

    def to_dict(self) -> dict:
        """JSON-ready form (the manifest's ``calibration`` entry)."""
        d = asdict(self)
        d["trained_names"] = list(self.trained_names)
        d["embedding_center"] = list(self.embedding_center)
        return d

    @classmethod
    def from_dict(cls, data: Any) -> "Calibration":
        """Validate a manifest entry; raises :class:`CalibrationError` naming the problem."""
        if not isinstance(data, dict):
            raise CalibrationError(f"calibration record must be a mapping, got "
                                   f"{type(data).__name__}")
        required = {"seen_bias", "unknown_threshold", "score_temperature", "trained_names"}
        missing = sorted(required - set(data))
        if missing:
            raise CalibrationError(f"calibration record lacks {missing}")
        unknown = sorted(set(data) - required - {"chosen_on", "negatives",
                                                 "negative_similarity", "embedding_center"})
        if unknown:
            raise CalibrationError(f"calibration record has unknown keys {unknown}")
        return cls(seen_bias=data["seen_bias"], unknown_threshold=data["unknown_threshold"],
                   score_temperature=data["score_temperature"],
                   trained_names=data["trained_names"], chosen_on=data.get("chosen_on", {}),
                   negatives=data.get("negatives", False),
                   negative_similarity=data.get("negative_similarity", 0.8),
                   embedding_center=data.get("embedding_center", ()))


#: Largest embedding dimension a calibration centre may have (bounds a manifest's size).
MAX_CENTER_DIM = 4096


def _center_tuple(value: Any) -> tuple[float, ...]:
    """``embedding_center`` validated: a list of finite numbers (a mean of unit vectors:
    norm below 1), at most :data:`MAX_CENTER_DIM` long, or empty."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, np.ndarray)):
        raise CalibrationError(f"calibration embedding_center must be a list of numbers, got "
                               f"{type(value).__name__}")
    if len(value) > MAX_CENTER_DIM:
        raise CalibrationError(f"calibration embedding_center has {len(value)} values, more "
                               f"than {MAX_CENTER_DIM}")
    if not all(not isinstance(v, bool) and isinstance(v, (int, float, np.floating))
               for v in value):
        raise CalibrationError("calibration embedding_center must hold numbers only")
    out = np.asarray(value, np.float64)
    if out.size and (not np.isfinite(out).all() or float(np.linalg.norm(out)) >= 1.0):
        raise CalibrationError("calibration embedding_center must be finite with a norm "
                               "below 1 (a mean of unit embeddings)")
    return tuple(float(v) for v in out)


def center_embeddings(embeddings: np.ndarray, center: Sequence[float]) -> np.ndarray:
    """(N, D) embeddings minus ``center`` (D,), re-normalised to unit length, float32;
    ``embeddings`` unchanged when ``center`` is empty."""
    if len(center) == 0:
        return embeddings
    e = np.asarray(embeddings, np.float32) - np.asarray(center, np.float32)
    return (e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-6)).astype(np.float32)


def bias_vector(names: Sequence[str], trained_names: Sequence[str], seen_bias: float) -> np.ndarray:
    """(L,) float32: ``seen_bias`` for each of ``names`` that matches a trained name
    (case- and whitespace-insensitive), else 0."""
    trained = {_fold(n) for n in trained_names}
    return np.array([seen_bias if _fold(n) in trained else 0.0 for n in names], np.float32)


def adjusted_scores(cos: np.ndarray, bias: np.ndarray, temperature: float,
                    negative_cos: np.ndarray | None = None,
                    max_competitors: int | None = None) -> np.ndarray:
    """Softmax over ``(cos - bias) / temperature`` along the last axis; with
    ``negative_cos`` (N, K) the negatives join the normalisation but are not returned.
    With ``max_competitors`` M and more than M labels and negatives, each row is normalised
    over its M largest logits; the others score 0."""
    z = (np.asarray(cos, np.float64) - np.asarray(bias, np.float64)) / float(temperature)
    zn = None
    if negative_cos is not None and np.asarray(negative_cos).shape[-1] > 0:
        zn = np.asarray(negative_cos, np.float64) / float(temperature)
    every = z if zn is None else np.concatenate([z, zn], axis=-1)
    top = every.max(axis=-1, keepdims=True)
    e = np.exp(z - top)
    en = None if zn is None else np.exp(zn - top)
    if max_competitors is not None and 0 < int(max_competitors) < every.shape[-1]:
        # exactly M: of logits tied at the M-th, which are kept does not change the sum
        cut = every.shape[-1] - int(max_competitors)
        kept = np.zeros(every.shape, bool)
        np.put_along_axis(kept, np.argpartition(every, cut, axis=-1)[..., cut:], True, -1)
        e = np.where(kept[..., :z.shape[-1]], e, 0.0)
        en = None if en is None else np.where(kept[..., z.shape[-1]:], en, 0.0)
    denom = e.sum(axis=-1, keepdims=True)
    if en is not None:
        denom = denom + en.sum(axis=-1, keepdims=True)
    return e / denom


def negative_mask(active_names: Sequence[str], active_emb: np.ndarray,
                  trained_names: Sequence[str], trained_emb: np.ndarray,
                  max_similarity: float) -> np.ndarray:
    """(K,) bool over the trained names: True for those that act as negatives (not an
    active name, and text cosine to every active name below ``max_similarity``)."""
    active = {_fold(n) for n in active_names}
    keep = np.array([_fold(n) not in active for n in trained_names], bool)
    if keep.any() and len(active_names):
        a = np.asarray(active_emb, np.float64)
        t = np.asarray(trained_emb, np.float64)
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
        keep &= (t @ a.T).max(axis=1) < max_similarity
    return keep


def mean_class_accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    """Per-class mean top-1 accuracy over the classes present in ``target`` (0 if empty)."""
    pred, target = np.asarray(pred), np.asarray(target)
    classes = np.unique(target)
    if classes.size == 0:
        return 0.0
    return float(np.mean([np.mean(pred[target == c] == c) for c in classes]))


def harmonic_mean(a: float, b: float) -> float:
    """H = 2ab / (a + b) (0 when both are 0)."""
    return 0.0 if a + b <= 0 else 2.0 * a * b / (a + b)


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Area under the ROC curve of scores where ``positive`` should score higher (ties
    count one half); NaN when either side is empty."""
    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    neg = np.sort(neg)
    below = np.searchsorted(neg, pos, side="left")       # negatives strictly below each pos
    ties = np.searchsorted(neg, pos, side="right") - below
    return float((below.sum() + 0.5 * ties.sum()) / (pos.size * neg.size))


def gzsl_accuracies(cos: np.ndarray, target: np.ndarray, is_seen_sample: np.ndarray,
                    trained_mask: np.ndarray, bias: float) -> tuple[float, float, float]:
    """(seen, unseen, H) per-class mean accuracies with the bias applied to trained names."""
    pred = (np.asarray(cos) - bias * np.asarray(trained_mask, np.float64)).argmax(axis=1)
    seen = mean_class_accuracy(pred[is_seen_sample], target[is_seen_sample])
    unseen = mean_class_accuracy(pred[~is_seen_sample], target[~is_seen_sample])
    return seen, unseen, harmonic_mean(seen, unseen)


def bias_curve(cos: np.ndarray, target: np.ndarray, is_seen_sample: np.ndarray,
               trained_mask: np.ndarray, max_bias: float = 0.3,
               step: float = 0.0025) -> list[dict[str, float]]:
    """Seen/unseen accuracy and H for each bias in ``[0, max_bias]`` (the plot's data)."""
    biases = np.round(np.arange(0.0, max_bias + 1e-9, step), 6)
    out = []
    for b in biases:
        s, u, h = gzsl_accuracies(cos, target, is_seen_sample, trained_mask, float(b))
        out.append({"bias": float(b), "seen": s, "unseen": u, "h": h})
    return out


def choose_seen_bias(curve: list[dict[str, float]], keep_seen: float = 0.0) -> dict[str, float]:
    """The row of :func:`bias_curve` with the highest H (the smallest bias among ties),
    among the biases that keep at least ``keep_seen`` of the unbiased seen accuracy
    (``keep_seen = 0``: plain calibrated stacking, H alone)."""
    if not curve:
        raise CalibrationError("empty bias curve")
    if not 0.0 <= keep_seen <= 1.0:
        raise CalibrationError(f"keep_seen must be in [0, 1], got {keep_seen}")
    floor = keep_seen * min(curve, key=lambda r: r["bias"])["seen"]
    allowed = [r for r in curve if r["seen"] >= floor - 1e-12] or curve[:1]
    best = max(allowed, key=lambda r: (round(r["h"], 9), -r["bias"]))
    return dict(best)


def threshold_for_coverage(correct_scores: np.ndarray, coverage: float) -> float:
    """The largest threshold that keeps ``coverage`` of ``correct_scores`` at or above it."""
    if not 0.0 < coverage <= 1.0:
        raise CalibrationError(f"coverage must be in (0, 1], got {coverage}")
    scores = np.sort(np.asarray(correct_scores, np.float64))
    if scores.size == 0:
        return DEFAULT_UNKNOWN_THRESHOLD
    # how many may fall below: (1 - 0.9) * 10 is 0.9999999999999998 in floats, which kept
    # all 10 (the threshold one rank too low whenever the count is a multiple of 10)
    k = int(np.floor((1.0 - coverage) * scores.size + 1e-9))
    return float(np.clip(scores[min(k, scores.size - 1)], 0.0, 1.0))
