"""Score recorded ``~/labels`` documents against ground truth (ROS-free).

The input is what a replay produced: for every image frame of a bag, its ground-truth
objects (or ``None`` when the frame has no ground truth) and the labels document the node
published for it (or nothing, when the frame was dropped); the output is a JSON-ready dict.

Matching (per frame)
    Predicted boxes are matched to ground-truth boxes greedily by IoU: all pairs with
    ``IoU >= iou_threshold`` are sorted by IoU (highest first; ties by ground-truth then
    prediction order) and accepted when neither side is matched yet. Every ground-truth
    object then has one outcome:

    * ``correct``: matched, and the predicted label equals the ground-truth label (compared
      case-insensitively, ``_`` = space; with the active vocabulary known, an object whose
      label is not in it but whose label or key it holds in another written form, e.g. the
      name ``004_sugar_box`` for the label *sugar box*, is scored under the vocabulary's
      name and counted in ``not_in_vocabulary.renamed``);
    * ``unknown``: matched, but the node said ``"unknown"`` (below its open-set threshold);
      counted as wrong: the object was seen but not named;
    * ``wrong``: matched with another label;
    * ``missed``: no predicted box matches it (no proposal covered it).

    Predicted boxes that match no ground truth are false positives (background boxes).

Groups
    Objects are grouped into ``id`` / ``ood`` by the split (keys of ``config/splits/*.yaml``,
    mapped to label names through vocabularies, see :class:`Membership`); anything else is
    ``other``. ``all`` holds every object.

Metrics per group
    ``objects``, ``matched``, ``missed``, ``correct``, ``wrong``, ``unknown``;
    ``accuracy`` = correct / matched (classification accuracy of the objects that got a
    box), ``recall`` = correct / objects (end to end, missed objects count as wrong),
    ``unknown_rate`` = unknown / matched, ``missed_rate`` = missed / objects. A ratio with a
    zero denominator is ``None``.

Per object (label)
    ``tp`` = correct predictions of the label; ``fp`` = predictions of the label on objects
    of another label (``fp_confused``) or on background boxes (``fp_background``);
    ``fn`` = objects of the label not predicted as it (wrong, unknown or missed);
    ``precision``, ``recall``, ``f1`` (``None`` when undefined).

Confusion matrix
    Rows: ground-truth labels (ID first, then OOD, then other, each sorted); columns: the
    same labels, then labels only ever predicted, then ``unknown`` and ``(missed)``.

Generalised zero-shot and open set
    ``gzsl``: per-class mean accuracy over matched objects (each label's correct / matched,
    averaged over the labels of the group) for ``seen`` (ID group) and ``unseen`` (OOD
    group), and their harmonic mean ``h``. ``open_set`` (with ``vocabulary_names``): the
    AUROC of the published ``score`` between matched objects whose label is in the active
    vocabulary and those whose label is not, and the ``unknown`` rate of each.

Positions
    ``placement``: of the matched objects whose ground truth has a ``position`` (the centre
    of the object's 3-D bounding box in the camera's optical frame, which ``make-bag
    --depth`` writes), how many were published with one (``placed``; the node places
    objects only with depth) and the distance between the two (``error_m``: p50 / p95 /
    mean / max, metres), with the shares within 2 and 5 cm. ``None`` when no ground truth
    has positions.

Frames and latency
    ``frames``: total, labelled, dropped (= total - labelled), with ground truth, evaluated
    (labelled and with ground truth), unexpected (labels for frames not in the input),
    ``left_out_repeated_stamps`` (frames left out of every metric because another frame of
    the same camera has their stamp, or several ground-truth documents name it: labels and
    ground truth are matched by camera and stamp, so which belongs to which cannot be told)
    and ``ground_truth_without_frame`` (ground-truth documents whose camera and stamp no
    input frame has; up to 3 of them in ``ground_truth_without_frame_examples``).
    ``latency_ms``: p50 / p95 / mean / max over the labelled frames' latencies when given.

Only frames that were labelled are scored: objects in dropped frames are counted in
``frames.ground_truth_objects_in_dropped_frames`` but not in the metrics, so the numbers
describe the labels the node actually published.
"""
from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

# the proposer's IoU (re-exported: ``scoring.box_iou`` is part of this module's API)
from ..model.descriptions import catalogue_key
from ..model.vocabulary import fold_key
from ..perception.boxes import box_iou

__all__ = ["FrameKey", "GTObject", "Membership", "UNKNOWN_LABEL", "MISSED_COLUMN", "GROUPS",
           "box_iou", "match_boxes", "fold_label", "score_frames", "percentiles",
           "compare_documents", "doc_frame_key"]

#: A frame: ``(camera topic, header stamp in ns)``.
FrameKey = tuple[str, int]
#: What the node publishes below its open-set threshold.
UNKNOWN_LABEL = "unknown"
#: Column of the confusion matrix for objects no box matched.
MISSED_COLUMN = "(missed)"
#: Object groups, in report order.
GROUPS: tuple[str, ...] = ("all", "id", "ood", "other")


class GTObject(NamedTuple):
    """One ground-truth object (the fields of
    :class:`vl_distill_ros.bags.bag_io.GroundTruthObject`)."""

    bbox: tuple[int, int, int, int]
    label: str
    key: str = ""
    #: The object's centre in the camera's optical frame (metres), where known.
    position: tuple[float, float, float] | None = None


def fold_label(text: str) -> str:
    """Case- and underscore-insensitive form of a label or key
    (``Power_Drill`` -> ``power drill``): the vocabulary's
    :func:`~vl_distill_ros.model.vocabulary.fold_key`."""
    return fold_key(str(text))


def match_boxes(gt_boxes: Sequence[Sequence[float]], pred_boxes: Sequence[Sequence[float]],
                iou_threshold: float = 0.5) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching by IoU.

    Returns ``(gt index, prediction index, iou)`` triples, highest IoU first. Pairs below
    ``iou_threshold`` are never matched.
    """
    pairs = []
    for i, g in enumerate(gt_boxes):
        for j, p in enumerate(pred_boxes):
            iou = box_iou(g, p)
            if iou >= iou_threshold and iou > 0.0:
                pairs.append((-iou, i, j))
    pairs.sort()
    used_g: set[int] = set()
    used_p: set[int] = set()
    out = []
    for neg, i, j in pairs:
        if i in used_g or j in used_p:
            continue
        used_g.add(i)
        used_p.add(j)
        out.append((i, j, -neg))
    return out


@dataclass
class Membership:
    """Which objects are in-distribution (``id``) and out-of-distribution (``ood``).

    Built from split keys; a key is also known by the label *name* that any of the given
    vocabularies assigns to it, so ground truth carrying only names is grouped too.
    Everything else is ``other``.
    """

    id_keys: frozenset[str] = frozenset()
    ood_keys: frozenset[str] = frozenset()
    names: dict[str, str] = field(default_factory=dict)  # folded name or key -> group
    split_name: str = ""

    @classmethod
    def from_split(cls, split: Any | None, vocabularies: Iterable[Any] = ()) -> "Membership":
        """``split``: a :class:`~vl_distill_ros.model.vocabulary.Split` (or ``None``: all
        objects are ``other``); ``vocabularies``: :class:`Vocabulary` objects mapping keys
        to names (first one wins for a key)."""
        if split is None:
            return cls()
        id_keys = frozenset(fold_label(k) for k in split.in_distribution)
        ood_keys = frozenset(fold_label(k) for k in split.out_of_distribution)
        names: dict[str, str] = {}
        for k in id_keys:
            names[k] = "id"
        for k in ood_keys:
            names[k] = "ood"
        for vocab in vocabularies:
            if vocab is None:
                continue
            for lb in vocab:
                group = names.get(fold_label(lb.key))
                if group is not None and fold_label(lb.name) not in names:
                    names[fold_label(lb.name)] = group
        return cls(id_keys, ood_keys, names, str(getattr(split, "name", "")))

    def group(self, label: str, key: str = "") -> str:
        """``id``, ``ood`` or ``other`` for an object with this label (and key): by its key,
        else its label, each folded (case, ``_``), then in any written form (``Sugar-Box``,
        ``004_sugar_box``: :func:`~vl_distill_ros.model.descriptions.catalogue_key`)."""
        for fold in (fold_label, catalogue_key):
            table = self.names if fold is fold_label else self._forms
            for form in (key, label):
                g = table.get(fold(form)) if form else None
                if g is not None:
                    return g
        return "other"

    @functools.cached_property
    def _forms(self) -> dict[str, str]:
        """:attr:`names` keyed by :func:`catalogue_key`."""
        return {catalogue_key(n): g for n, g in self.names.items()}


def percentiles(values: Sequence[float]) -> dict[str, float | int | None]:
    """``{"n", "p50", "p95", "mean", "max"}`` of ``values`` (linear interpolation), in the
    input's unit; ``None`` entries when empty."""
    vals = sorted(float(v) for v in values if v is not None and math.isfinite(float(v)))
    if not vals:
        return {"n": 0, "p50": None, "p95": None, "mean": None, "max": None}

    def pct(q: float) -> float:
        pos = (len(vals) - 1) * q
        lo = math.floor(pos)
        hi = min(lo + 1, len(vals) - 1)
        return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)

    return {"n": len(vals), "p50": pct(0.5), "p95": pct(0.95),
            "mean": sum(vals) / len(vals), "max": vals[-1]}


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


def _position(value: Any) -> tuple[float, float, float] | None:
    """A ground-truth or published ``position`` as three finite floats, or None."""
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if all(math.isfinite(v) for v in out) else None  # type: ignore[return-value]


def _gt_list(objects: Iterable[Any]) -> list[GTObject]:
    out = []
    for o in objects:
        if isinstance(o, Mapping):
            out.append(GTObject(tuple(int(v) for v in o["bbox"]), str(o["label"]),
                                str(o.get("key", "") or ""), _position(o.get("position"))))
        elif hasattr(o, "bbox"):
            out.append(GTObject(tuple(int(v) for v in o.bbox), str(o.label),
                                str(getattr(o, "key", "") or ""),
                                _position(getattr(o, "position", None))))
        else:  # a plain (bbox, label[, key]) tuple
            bbox, label, *rest = o
            out.append(GTObject(tuple(int(v) for v in bbox), str(label),
                                str(rest[0]) if rest and rest[0] else ""))
    return out


def doc_frame_key(doc: Mapping[str, Any], camera_map: Mapping[str, str] | None = None
                  ) -> FrameKey:
    """``(camera, stamp ns)`` of a labels document; ``camera_map`` renames cameras (e.g.
    strips a replay namespace)."""
    stamp = doc["header"]["stamp"]
    camera = str(doc.get("camera", ""))
    if camera_map:
        camera = camera_map.get(camera, camera)
    return camera, int(stamp["sec"]) * 1_000_000_000 + int(stamp.get("nanosec", 0))


class _Tally:
    """The counters :func:`score_frames` fills frame by frame (labels are folded)."""

    def __init__(self, membership: Membership, vocabulary_names: Sequence[str] | None,
                 vocabulary_keys: Sequence[str] | None = None) -> None:
        self.membership = membership
        self.vocab_fold = ({fold_label(n) for n in vocabulary_names} if vocabulary_names
                           else None)
        #: another written form of a vocabulary name (catalogue_key) -> that name
        self.vocab_forms: dict[str, str] = {}
        for name in vocabulary_names or ():
            self.vocab_forms.setdefault(catalogue_key(name), name)
        # then each name's key: an object whose label or key is the key's (011_banana,
        # banana) is the vocabulary's name for it (香蕉)
        for name, key in zip(vocabulary_names or (), vocabulary_keys or ()):
            if key:
                self.vocab_forms.setdefault(catalogue_key(key), name)
        self.groups = {g: {"objects": 0, "matched": 0, "missed": 0, "correct": 0, "wrong": 0,
                           "unknown": 0} for g in GROUPS}
        self.display: dict[str, str] = {}        # folded label -> display name (first seen)
        self.label_group: dict[str, str] = {}    # folded GT label -> group
        self.support: dict[str, int] = {}
        self.tp: dict[str, int] = {}
        self.fp_confused: dict[str, int] = {}
        self.fp_background: dict[str, int] = {}
        self.per_gt: dict[str, dict[str, int]] = {}   # folded GT label -> outcome counts
        self.confusion: dict[tuple[str, str], int] = {}
        self.fp_boxes = {"boxes": 0, "known": 0, "unknown": 0}
        self.vocab_scores: dict[bool, list[float]] = {True: [], False: []}
        self.vocab_unknown = {True: 0, False: 0}
        self.not_in_vocab = {"objects": 0, "rejected": 0, "renamed": 0}
        #: matched objects with a true position, those published with one, their errors (m)
        self.placement = {"objects": 0, "placed": 0}
        self.placement_errors: list[float] = []

    def name_of(self, label: str) -> str:
        return self.display.setdefault(fold_label(label), str(label))

    def add_frame(self, gt: list[GTObject], preds: list[Mapping[str, Any]],
                  iou_threshold: float) -> None:
        """Match one frame's predictions to its ground truth and count every outcome."""
        matches = match_boxes([g.bbox for g in gt], [p["bbox"] for p in preds], iou_threshold)
        by_gt = {i: j for i, j, _ in matches}
        for i, g in enumerate(gt):
            j = by_gt.get(i)
            self.add_object(g, None if j is None else preds[j])
        matched_preds = {j for _, j, _ in matches}
        for j, p in enumerate(preds):
            if j not in matched_preds:
                self.add_unmatched(p)

    def _outcome(self, gl: str, pred: Mapping[str, Any] | None) -> tuple[str, str]:
        """(outcome, confusion column) of a ground-truth object and its matched prediction."""
        if pred is None:
            return "missed", MISSED_COLUMN
        pl_raw = str(pred.get("label", ""))
        pl = fold_label(pl_raw)
        if pl == fold_label(UNKNOWN_LABEL) and not pred.get("known", False):
            if self.vocab_fold is not None and gl not in self.vocab_fold:
                self.not_in_vocab["rejected"] += 1
            return "unknown", UNKNOWN_LABEL
        if pl == gl:
            self.tp[gl] = self.tp.get(gl, 0) + 1
            return "correct", pl
        self.name_of(pl_raw)
        self.fp_confused[pl] = self.fp_confused.get(pl, 0) + 1
        return "wrong", pl

    def vocabulary_form(self, g: GTObject) -> GTObject:
        """``g`` under the vocabulary's name when the vocabulary holds its label, or its key,
        in another written form (``004_sugar_box`` for *sugar box*: case, ``_`` / ``-`` and
        a leading number aside; :func:`~vl_distill_ros.model.descriptions.catalogue_key`),
        else ``g`` itself."""
        if self.vocab_fold is None or fold_label(g.label) in self.vocab_fold:
            return g
        for form in (g.label, g.key):
            name = self.vocab_forms.get(catalogue_key(form)) if form else None
            if name is not None:
                self.not_in_vocab["renamed"] += 1
                return g._replace(label=name)
        return g

    def add_object(self, g: GTObject, pred: Mapping[str, Any] | None) -> None:
        """One ground-truth object and its matched prediction (None: missed)."""
        g = self.vocabulary_form(g)
        gl = fold_label(g.label)
        self.name_of(g.label)
        # by the (renamed) label: 'Sugar-Box' is grouped as 'sugar box' whatever frame
        # came first (its group was the first written form's, 'other' for some)
        grp = self.membership.group(g.label, g.key)
        if self.label_group.get(gl, "other") == "other":
            self.label_group[gl] = grp
        self.support[gl] = self.support.get(gl, 0) + 1
        outcome_counts = self.per_gt.setdefault(gl, {"matched": 0, "missed": 0, "correct": 0,
                                                     "wrong": 0, "unknown": 0})
        if self.vocab_fold is not None and gl not in self.vocab_fold:
            self.not_in_vocab["objects"] += 1
        outcome, pred_col = self._outcome(gl, pred)
        if pred is not None and g.position is not None:
            self.placement["objects"] += 1
            placed = _position(pred.get("position"))
            if placed is not None:
                self.placement["placed"] += 1
                self.placement_errors.append(math.dist(placed, g.position))
        if pred is not None and self.vocab_fold is not None:
            in_vocab = gl in self.vocab_fold
            self.vocab_scores[in_vocab].append(float(pred.get("score", 0.0) or 0.0))
            self.vocab_unknown[in_vocab] += outcome == "unknown"
        self.confusion[(gl, pred_col)] = self.confusion.get((gl, pred_col), 0) + 1
        outcome_counts[outcome] += 1
        if outcome != "missed":
            outcome_counts["matched"] += 1
        for grp_name in ("all", grp):
            c = self.groups[grp_name]
            c["objects"] += 1
            c[outcome] += 1
            if outcome != "missed":
                c["matched"] += 1

    def add_unmatched(self, p: Mapping[str, Any]) -> None:
        """A predicted box that matches no ground-truth object: a false positive."""
        self.fp_boxes["boxes"] += 1
        pl_raw = str(p.get("label", ""))
        pl = fold_label(pl_raw)
        if pl == fold_label(UNKNOWN_LABEL) and not p.get("known", False):
            self.fp_boxes["unknown"] += 1
        else:
            self.fp_boxes["known"] += 1
            self.name_of(pl_raw)
            self.fp_background[pl] = self.fp_background.get(pl, 0) + 1

    # -- summaries ----------------------------------------------------------------------
    def placement_summary(self) -> dict[str, Any] | None:
        """The published positions of matched objects against their true positions (None
        when no ground truth has positions)."""
        if not self.placement["objects"]:
            return None
        errors = self.placement_errors
        return {**self.placement,
                "placed_rate": _ratio(self.placement["placed"], self.placement["objects"]),
                "error_m": percentiles(errors),
                # to 0.1 mm: an error of exactly 2 cm is 0.020000000000000018 in floats
                "within_2cm": _ratio(sum(round(e, 4) <= 0.02 for e in errors), len(errors)),
                "within_5cm": _ratio(sum(round(e, 4) <= 0.05 for e in errors), len(errors))}

    def group_summary(self) -> dict[str, dict[str, Any]]:
        return {g: {**c, "accuracy": _ratio(c["correct"], c["matched"]),
                    "recall": _ratio(c["correct"], c["objects"]),
                    "unknown_rate": _ratio(c["unknown"], c["matched"]),
                    "missed_rate": _ratio(c["missed"], c["objects"])}
                for g, c in self.groups.items()}

    def row_labels(self) -> tuple[list[str], list[str]]:
        """(ground-truth labels by group then name, labels only ever predicted)."""
        order = {"id": 0, "ood": 1, "other": 2}
        gt_labels = sorted(self.support,
                           key=lambda lb: (order[self.label_group[lb]], self.display[lb]))
        pred_only = sorted((lb for lb in set(self.fp_confused) | set(self.fp_background)
                            if lb not in self.support), key=lambda lb: self.display[lb])
        return gt_labels, pred_only

    def per_object(self, labels: list[str]) -> tuple[dict[str, dict[str, Any]], list[float]]:
        """Per-object counts, precision, recall and F1; and the F1s of supported objects."""
        per_object: dict[str, dict[str, Any]] = {}
        f1s = []
        for lb in labels:
            t = self.tp.get(lb, 0)
            fpc, fpb = self.fp_confused.get(lb, 0), self.fp_background.get(lb, 0)
            fp = fpc + fpb
            sup = self.support.get(lb, 0)
            fn = sup - t
            f1 = _ratio(2 * t, 2 * t + fp + fn)
            counts = self.per_gt.get(lb, {"matched": 0, "missed": 0, "correct": 0, "wrong": 0,
                                          "unknown": 0})
            per_object[self.display[lb]] = {
                "group": self.label_group.get(lb, self.membership.group(self.display[lb])),
                "support": sup, "matched": counts["matched"], "missed": counts["missed"],
                "unknown": counts["unknown"], "tp": t, "fp": fp, "fp_confused": fpc,
                "fp_background": fpb, "fn": fn, "precision": _ratio(t, t + fp),
                "recall": _ratio(t, sup), "f1": f1}
            if sup and f1 is not None:
                f1s.append(f1)
        return per_object, f1s

    def confusion_matrix(self, gt_labels: list[str], pred_only: list[str]) -> dict[str, Any]:
        reserved = [fold_label(UNKNOWN_LABEL), MISSED_COLUMN]
        # a ground-truth or predicted label named like a reserved column is that column (it
        # was listed twice, and each of its rows counted twice)
        columns = [c for c in gt_labels + pred_only if c not in reserved] + reserved
        matrix = [[self.confusion.get((r, c), 0) for c in columns] for r in gt_labels]
        col_names = [self.display.get(c, c) if c not in (MISSED_COLUMN,) else c
                     for c in columns]
        col_names[-2] = UNKNOWN_LABEL
        return {"rows": [self.display[r] for r in gt_labels], "columns": col_names,
                "matrix": matrix}

    def gzsl(self) -> dict[str, Any]:
        """Class-mean accuracy of matched ID (seen) and OOD (unseen) objects, and their H."""
        def class_mean(group: str) -> float | None:
            accs = [c["correct"] / c["matched"] for lb, c in self.per_gt.items()
                    if self.label_group.get(lb) == group and c["matched"]]
            return sum(accs) / len(accs) if accs else None

        seen_acc, unseen_acc = class_mean("id"), class_mean("ood")
        return {"seen": seen_acc, "unseen": unseen_acc,
                "h": None if seen_acc is None or unseen_acc is None else
                (0.0 if seen_acc + unseen_acc == 0 else
                 2 * seen_acc * unseen_acc / (seen_acc + unseen_acc))}

    def open_set(self) -> dict[str, Any] | None:
        """Scores of matched in- vs out-of-vocabulary objects (None without a vocabulary)."""
        if self.vocab_fold is None:
            return None
        from ..model.calibration import auroc

        n_in, n_out = len(self.vocab_scores[True]), len(self.vocab_scores[False])
        a = auroc(self.vocab_scores[True], self.vocab_scores[False])
        return {"in_vocabulary": n_in, "out_of_vocabulary": n_out,
                "auroc": None if math.isnan(a) else a,
                "unknown_rate_in_vocabulary": _ratio(self.vocab_unknown[True], n_in),
                "unknown_rate_out_of_vocabulary": _ratio(self.vocab_unknown[False], n_out)}


def _frame_counts(frames: Sequence[FrameKey], ground_truth: Mapping[FrameKey, Any],
                  labels: Mapping[FrameKey, Any], counts: Mapping[str, int]) -> dict[str, Any]:
    """The ``frames`` section of :func:`score_frames`' result (``counts``: those counted
    while scoring)."""
    frame_set = set(frames)
    no_frame = [k for k in ground_truth if k not in frame_set]
    labelled = sum(1 for k in frames if k in labels)
    return {"total": len(frames), "labelled": labelled, "dropped": len(frames) - labelled,
            "with_ground_truth": counts["with_ground_truth"],
            "evaluated": counts["evaluated"],
            "unexpected": sum(1 for k in labels if k not in frame_set),
            "ground_truth_objects_in_dropped_frames":
                counts["ground_truth_objects_in_dropped_frames"],
            "left_out_repeated_stamps": counts["left_out_repeated_stamps"],
            "ground_truth_without_frame": len(no_frame),
            "ground_truth_without_frame_examples": [list(k) for k in no_frame[:3]]}


def score_frames(frames: Sequence[FrameKey],
                 ground_truth: Mapping[FrameKey, Sequence[Any] | None],
                 labels: Mapping[FrameKey, Mapping[str, Any]],
                 membership: Membership | None = None, iou_threshold: float = 0.5,
                 latencies_s: Mapping[FrameKey, float] | None = None,
                 vocabulary_names: Sequence[str] | None = None,
                 vocabulary_keys: Sequence[str] | None = None,
                 ambiguous: Iterable[FrameKey] = ()) -> dict[str, Any]:
    """Score labels documents against ground truth (see the module docstring).

    Args:
        frames: every frame that was input (replayed or processed), in order.
        ground_truth: ``{frame: objects}``; objects are ``(bbox, label, key)`` tuples or
            dicts; a frame missing from it (or ``None``) has no ground truth.
        labels: ``{frame: labels document}`` in the ``~/labels`` schema.
        membership: ID/OOD grouping (default: everything is ``other``).
        iou_threshold: minimum IoU of a match.
        latencies_s: ``{frame: seconds}`` from input to labels, for the latency summary.
        vocabulary_names: the active vocabulary; when given, objects whose label is not in
            it are counted in ``not_in_vocabulary`` (``objects``; ``renamed``: scored under
            the vocabulary's form of their label or key, see ``correct`` above).
        vocabulary_keys: the keys of ``vocabulary_names`` (same order): an object whose
            label or key is a name's key in another written form (``banana`` or
            ``011_banana`` for the key ``011_banana``) is scored under that name too.
        ambiguous: frames whose ground truth is not known to be theirs (several documents
            named them); left out, as are frames whose key repeats in ``frames``.

    Returns:
        A JSON-ready dict: ``frames``, ``groups``, ``per_object``, ``macro_f1``,
        ``false_positives``, ``confusion``, ``latency_ms``, ``iou_threshold`` and
        ``placement`` (matched objects whose ground truth has a ``position``: how many were
        published with one, the distances between the two in metres, the shares within 2 and
        5 cm; None without such ground truth).
    """
    if not 0.0 < float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    tally = _Tally(membership or Membership(), vocabulary_names, vocabulary_keys)
    vocab_fold = tally.vocab_fold
    gt_in_dropped = with_gt = evaluated = left_out = 0
    repeated = {k for k, n in Counter(frames).items() if n > 1} | set(ambiguous)
    for key in frames:
        if key in repeated:
            left_out += 1
            continue
        gt_raw = ground_truth.get(key)
        if gt_raw is None:
            continue
        with_gt += 1
        gt = _gt_list(gt_raw)
        doc = labels.get(key)
        if doc is None:
            gt_in_dropped += len(gt)
            continue
        evaluated += 1
        tally.add_frame(gt, list(doc.get("objects") or []), iou_threshold)
    gt_labels, pred_only = tally.row_labels()
    per_object, f1s = tally.per_object(gt_labels + pred_only)
    lat = [latencies_s[k] * 1e3 for k in frames if latencies_s and k in labels
           and latencies_s.get(k) is not None]
    counts = {"with_ground_truth": with_gt, "evaluated": evaluated,
              "ground_truth_objects_in_dropped_frames": gt_in_dropped,
              "left_out_repeated_stamps": left_out}
    return {
        "iou_threshold": float(iou_threshold),
        "frames": _frame_counts(frames, ground_truth, labels, counts),
        "groups": tally.group_summary(),
        "per_object": per_object,
        "macro_f1": (sum(f1s) / len(f1s)) if f1s else None,
        "false_positives": tally.fp_boxes,
        "not_in_vocabulary": tally.not_in_vocab if vocab_fold is not None else None,
        "gzsl": tally.gzsl(),
        "open_set": tally.open_set(),
        "placement": tally.placement_summary(),
        "confusion": tally.confusion_matrix(gt_labels, pred_only),
        "latency_ms": percentiles(lat),
    }


def compare_documents(a: Mapping[FrameKey, Mapping[str, Any]],
                      b: Mapping[FrameKey, Mapping[str, Any]],
                      score_tolerance: float = 1e-4) -> dict[str, Any]:
    """Compare two runs' labels documents on the frames both labelled.

    Two documents agree when they have the same boxes with the same labels, ``known`` flags
    and top-k label order, in the same order, and every score differs by at most
    ``score_tolerance``. Returns ``{"common", "agree", "disagree": [frame keys],
    "max_score_diff"}``.
    """
    common = sorted(set(a) & set(b))
    disagree = []
    max_diff = 0.0
    for key in common:
        oa, ob = list(a[key].get("objects") or []), list(b[key].get("objects") or [])
        same = len(oa) == len(ob)
        for x, y in zip(oa, ob):
            if (list(x["bbox"]) != list(y["bbox"]) or x["label"] != y["label"]
                    or bool(x["known"]) != bool(y["known"])
                    or [t[0] for t in x.get("top_k", [])] != [t[0] for t in y.get("top_k", [])]):
                same = False
            diffs = [abs(float(x["score"]) - float(y["score"]))]
            diffs += [abs(float(s) - float(t)) for (_, s), (_, t)
                      in zip(x.get("top_k", []), y.get("top_k", []))]
            d = max(diffs)
            max_diff = max(max_diff, d)
            if d > score_tolerance:
                same = False
        if not same:
            disagree.append(key)
    return {"common": len(common), "agree": len(common) - len(disagree),
            "disagree": disagree, "max_score_diff": max_diff}
