#!/usr/bin/env python3
"""Recall of the class-agnostic proposer against the ground truth of camera bags.

For every image of every ``--bags`` bag that has ground truth, :func:`propose_boxes` runs
with the default :class:`ProposalConfig` (changed by ``-p field=value``) and its boxes are
matched to the ground-truth boxes one-to-one, greedily by IoU (``--iou``, 0.5), exactly as
``vl-distill replay-eval`` matches the node's boxes
(:func:`vl_distill_ros.evaluation.scoring.match_boxes`).

Prints ONE JSON object on stdout (progress goes to stderr): recall, precision, false
positives, mean best IoU, recall by object size, by label and by contact (``touching``:
objects whose ground-truth box, grown by 3 pixels, overlaps another's; ``apart``: the
others), by border (``at_border``: objects whose box reaches an image edge, cut by the
frame as ``vl-distill make-bag --cut-border`` renders them; ``inside``: the others),
``split_objects`` (objects with two or more proposals lying mostly inside their
box: one object cut into pieces; per label too), ``missed_by_kind`` (why each missed
object was missed: ``merged``, one proposal over it and another object; ``split``;
``loose``, a proposal at IoU 0.3 or more that did not match it; ``none``, nothing there),
recall by visibility (``recall_by_visibility``: the ground truth's ``visible_fraction``,
which ``make-bag`` and ``import-bop`` record, under 10%, 10-25%, 25-50%, over 50%, or
``unknown``), proposer ms/frame, per bag and over all bags. Exit status 2 with a JSON
``error`` object when a bag cannot be read.

``--min-visible F`` ignores the objects whose recorded visible fraction is under ``F``
(mostly hidden behind others): they are neither found nor missed, and a box that matches
one is not counted as a false box (``ignored`` gives both counts). BOP's
benchmarks leave objects under 10% visible out (``--min-visible 0.1``, as ``import-bop``
does by default); the default 0 counts every labelled object.

With ``--depth`` the bags' registered depth is used too (RGB-D bags from
``vl-distill make-bag --depth``; depth paired with colour as ``replay-eval`` does) and the
result has a ``depth`` section with three proposers on the frames that have depth:
``colour`` (the colour proposer alone), ``depth`` (the depth proposer alone) and ``auto``
(depth fused with colour, what the node's ``proposal_source: auto`` does), each with
recall, false positives per frame and ms/frame (``--depth-config`` names a
``config/depth_proposals.yaml``-style file).

The renderer keeps every object inside the frame, so with ``--cut-border`` each frame is
also cropped so that the crop's edge cuts one of its objects (a random object and side,
40-70% of it left in view, seeded by the frame's index): the ``cut_border`` section has
recall and false positives per frame on these crops, and the recall of the ``cut`` objects
(the ones the crop cuts) and the ``whole`` ones (ground-truth boxes are clipped to the crop;
objects less than 30% in view are left out of the truth). With ``--depth`` the crops are
scored with depth too (depth cropped alike, the principal point moved). A clipped box can be
larger than the box of what stays in view (an object lying across the cut): of 71 cut
objects in 60 rendered scenes, 4 had an IoU under 0.5 between the two and 11 under 0.7, so
these figures understate; bags from ``vl-distill make-bag --cut-border`` have the exact
boxes of objects cut by the frame, scored in ``recall_by_border``.

``--dark-holes L`` (with ``--depth``) zeroes the depth wherever the colour image's Lab
lightness is under ``L`` (0-255): infrared depth sensors return nothing on black plastic and
dark paint, which the renderer's noise model does not do.

``--sparse-depth KIND`` (with ``--depth``) keeps only part of each depth image's
measurements, as sparse depth comes from real cameras: ``columns:K`` and ``grid:K`` every
K-th column, or every K-th row and column (a depth camera of lower resolution registered to
a larger colour image), ``dropout:P`` loses each pixel with probability ``P`` (seeded by the
frame's place).

``--smooth-depth SIGMA`` (with ``--depth``) smooths each depth image with a Gaussian of
``SIGMA`` pixels over its measured pixels only (:func:`smooth_depth`), as stereo cameras and
depth post-processing filters (a RealSense's spatial filter) do: object edges become ramps
towards the table; holes stay holes.

``--vignette A`` and ``--light-gradient A`` light the colour images unevenly first (a lens's
fall-off towards the corners, a lamp to one side; :func:`relight`), for every proposer.
``--degrade CHAIN`` then puts them through real-camera effects (motion and defocus blur,
sensor noise, exposure, white balance, JPEG, lower resolution; the chain's syntax is in
``bench/_degrade.py``, e.g. ``exposure:0.4+noise:8``), seeded by the frame's place.

    .venv/bin/python bench/proposals_recall.py                   # demo/sample_tabletop
    .venv/bin/python bench/proposals_recall.py --bags BAG1 BAG2 -p pad_frac=0.1
    .venv/bin/python bench/proposals_recall.py --bags RGBD_BAG --depth
    .venv/bin/python bench/proposals_recall.py --bags RGBD_BAG --depth --cut-border
    .venv/bin/python bench/proposals_recall.py --bags RGBD_BAG --depth --dark-holes 40
    .venv/bin/python bench/proposals_recall.py --bags BAG --degrade motion:9+jpeg:40
    .venv/bin/python bench/proposals_recall.py --bags RGBD_BAG --depth --sparse-depth grid:3
    .venv/bin/python bench/proposals_recall.py --bags RGBD_BAG --depth --smooth-depth 2
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from _common import (cpu_model, emit_or_error, finite_float, non_negative_float,
                     non_negative_int)

#: Size buckets by the square root of the ground-truth box area, in pixels (as COCO's
#: 32^2 / 96^2 area limits): ``small`` < 32, ``medium`` < 96, ``large`` otherwise.
SIZE_BUCKETS: tuple[tuple[str, float], ...] = (("small", 32.0), ("medium", 96.0),
                                               ("large", float("inf")))
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BAG = REPO_ROOT / "demo" / "sample_tabletop"
HINT = "pass --bags, or write the demo bag with `make sample-bag` (needs the YCB models)"


#: A ground-truth box grown by this many pixels on every side that overlaps another one's
#: marks a ``touching`` object (in contact with, or overlapping, another in the image);
#: the others are ``apart``.
TOUCH_MARGIN_PX = 3
#: A proposal with at least this fraction of its area inside a ground-truth box is a
#: piece of that object; an object with two or more pieces counts as ``split``.
PIECE_CONTAINMENT = 0.7


#: A missed object (no proposal matched it) is ``merged`` when one proposal holds at least
#: this fraction of its box's area and of another ground-truth box's (one box over two
#: objects), else ``split`` (two or more pieces, :data:`PIECE_CONTAINMENT`), else ``loose``
#: when its best IoU with a proposal is at least :data:`LOOSE_IOU` (a box in the right place
#: of the wrong extent), else ``none`` (nothing proposed there): ``missed_by_kind``.
MERGE_COVER = 0.8
LOOSE_IOU = 0.3
MISS_KINDS = ("merged", "split", "loose", "none")


#: A ground-truth box within this many pixels of an image edge is ``at_border`` (cut by the
#: frame, as ``make-bag --cut-border`` renders them); the others are ``inside``.
BORDER_MARGIN_PX = 1

#: Visibility buckets by the ground truth's ``visible_fraction`` (visible pixels / pixels of
#: the whole object; ``make-bag`` and ``import-bop`` record it): an upper limit each;
#: objects without one are ``unknown`` (``recall_by_visibility``).
VISIBILITY_BUCKETS: tuple[tuple[str, float], ...] = (
    ("under_10pct", 0.1), ("10_to_25pct", 0.25), ("25_to_50pct", 0.5),
    ("over_50pct", float("inf")))


def visible_fraction(t: Sequence[Any]) -> float | None:
    """The visible fraction of a truth tuple ``(x, y, w, h, label[, visible_fraction])``."""
    return None if len(t) < 6 or t[5] is None else float(t[5])


def visibility_bucket(t: Sequence[Any]) -> str:
    """The :data:`VISIBILITY_BUCKETS` name of a truth tuple, or ``unknown``."""
    f = visible_fraction(t)
    if f is None:
        return "unknown"
    return next(name for name, limit in VISIBILITY_BUCKETS if f < limit)


def drop_ignored(truth: list, boxes: list, min_visible: float, iou: float) -> tuple[list, list]:
    """``truth`` without the objects less visible than ``min_visible`` (known fractions
    only), and ``boxes`` without those that match one of them (after the counted objects
    took their matches): such objects are neither found nor missed, and a box on one is
    not a false one (the "ignore" regions of COCO and CityPersons; BOP leaves objects
    under 10% visible out of its targets)."""
    from vl_distill_ros.evaluation.scoring import match_boxes

    ignored = [i for i, t in enumerate(truth)
               if (f := visible_fraction(t)) is not None and f < min_visible]
    if not ignored:
        return truth, boxes
    skip = set(ignored)
    kept = [t for i, t in enumerate(truth) if i not in skip]
    taken = {j for _, j, _ in match_boxes([t[:4] for t in kept], boxes, iou)}
    free = [j for j in range(len(boxes)) if j not in taken]
    on_ignored = {free[j] for _, j, _ in match_boxes([truth[i][:4] for i in ignored],
                                                     [boxes[j] for j in free], iou)}
    return kept, [b for j, b in enumerate(boxes) if j not in on_ignored]


def at_border(box: Sequence[float], size: tuple[int, int] | None) -> bool:
    """Whether ``box`` (x, y, w, h) reaches an edge of an image of ``size`` (w, h)."""
    if size is None:
        return False
    x, y, w, h = (float(v) for v in box[:4])
    m = BORDER_MARGIN_PX
    return x <= m or y <= m or x + w >= size[0] - m or y + h >= size[1] - m


def touching(truth: Sequence[Sequence[float]]) -> list[bool]:
    """Per ground-truth box: whether it touches another (see :data:`TOUCH_MARGIN_PX`)."""
    m = TOUCH_MARGIN_PX
    out = []
    for i, (x, y, w, h) in enumerate(t[:4] for t in truth):
        out.append(any(min(x + w + m, o[0] + o[2]) > max(x - m, o[0])
                       and min(y + h + m, o[1] + o[3]) > max(y - m, o[1])
                       for k, o in enumerate(truth) if k != i))
    return out


def pieces(gt: Sequence[float], boxes: Sequence[Sequence[float]]) -> int:
    """How many ``boxes`` lie mostly (:data:`PIECE_CONTAINMENT`) inside the box ``gt``."""
    n = 0
    for b in boxes:
        iw = min(gt[0] + gt[2], b[0] + b[2]) - max(gt[0], b[0])
        ih = min(gt[1] + gt[3], b[1] + b[3]) - max(gt[1], b[1])
        if iw > 0 and ih > 0 and iw * ih >= PIECE_CONTAINMENT * b[2] * b[3]:
            n += 1
    return n


def miss_kind(i: int, truth: Sequence[Sequence[float]],
              boxes: Sequence[Sequence[float]], best_iou: float) -> str:
    """Why ground-truth object ``i`` of ``truth`` found no match among ``boxes``:
    ``merged``, ``split``, ``loose`` or ``none`` (see :data:`MERGE_COVER`)."""
    from vl_distill_ros.perception.boxes import box_containment

    gt = truth[i][:4]
    for b in boxes:
        if box_containment(gt, b) >= MERGE_COVER and any(
                box_containment(o[:4], b) >= MERGE_COVER
                for k, o in enumerate(truth) if k != i):
            return "merged"
    if pieces(gt, boxes) >= 2:
        return "split"
    return "loose" if best_iou >= LOOSE_IOU else "none"


def size_bucket(box: Sequence[float]) -> str:
    side = float(np.sqrt(max(float(box[2]) * float(box[3]), 0.0)))
    for name, limit in SIZE_BUCKETS:
        if side < limit:
            return name
    return SIZE_BUCKETS[-1][0]


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``field=value`` strings -> typed :class:`ProposalConfig` changes (raises ValueError)."""
    from vl_distill_ros.perception.proposal_config import ProposalConfig

    types = {f.name: f.type for f in dataclasses.fields(ProposalConfig)}
    out: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or name not in types:
            raise ValueError(f"bad override {item!r}: expected FIELD=VALUE with FIELD one of "
                             f"{sorted(types)}")
        kind = str(types[name])
        if kind in ("bool", "<class 'bool'>"):
            value: Any = raw.strip().lower() in ("1", "true", "yes", "on")
        elif kind in ("int", "<class 'int'>"):
            value = int(raw)
        elif kind in ("str", "<class 'str'>"):
            value = raw.strip()
        else:
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(f"bad override {item!r}: {name} must be a finite number")
        out[name] = value
    return out


def load_frames(bag: str | Path, max_frames: int = 0,
                topics: Sequence[str] | None = None) -> list[tuple[np.ndarray, list]]:
    """``(RGB image, [(x, y, w, h, label, visible_fraction or None), ...])`` of every image
    with ground truth."""
    from vl_distill_ros.bags.bag_io import read_camera_bag

    contents = read_camera_bag(bag)
    frames = []
    for msg in contents.images(topics):
        objs = contents.objects_for(msg.topic, msg.stamp_ns)
        if objs is None:
            continue
        frames.append((msg.image, [(*o.bbox, o.label, o.visible_fraction) for o in objs]))
        if max_frames and len(frames) >= max_frames:
            break
    return frames


class Tally:
    """Running counts of one set of frames; objects less visible than ``min_visible`` are
    ignored (:func:`drop_ignored`)."""

    def __init__(self, min_visible: float = 0.0) -> None:
        self.min_visible = float(min_visible)
        self.ignored_objects = 0
        self.ignored_proposals = 0
        self.frames = 0
        self.objects = 0
        self.matched = 0
        self.proposals = 0
        self.best_ious: list[float] = []
        self.ms: list[float] = []
        self.by_size: dict[str, list[int]] = {name: [0, 0] for name, _ in SIZE_BUCKETS}
        self.by_label: dict[str, list[int]] = {}
        self.by_contact: dict[str, list[int]] = {"touching": [0, 0], "apart": [0, 0]}
        self.by_border: dict[str, list[int]] = {"at_border": [0, 0], "inside": [0, 0]}
        self.by_visibility: dict[str, list[int]] = {}
        self.split: dict[str, int] = {}
        self.missed_by_kind: dict[str, int] = {k: 0 for k in MISS_KINDS}

    def add(self, truth: list, boxes: list, iou: float, ms: float,
            size: tuple[int, int] | None = None) -> None:
        """Count one frame (``size``: its (width, height), for ``recall_by_border``)."""
        from vl_distill_ros.evaluation.scoring import box_iou, match_boxes

        if self.min_visible > 0:
            kept, kept_boxes = drop_ignored(truth, boxes, self.min_visible, iou)
            self.ignored_objects += len(truth) - len(kept)
            self.ignored_proposals += len(boxes) - len(kept_boxes)
            truth, boxes = kept, kept_boxes
        gt = [t[:4] for t in truth]
        hit = {i for i, _, _ in match_boxes(gt, boxes, iou)}
        self.frames += 1
        self.ms.append(ms)
        self.objects += len(gt)
        self.matched += len(hit)
        self.proposals += len(boxes)
        contact = touching(gt)
        for i, t in enumerate(truth):
            self.best_ious.append(max([box_iou(t[:4], b) for b in boxes] or [0.0]))
            if i not in hit:
                self.missed_by_kind[miss_kind(i, gt, boxes, self.best_ious[-1])] += 1
            if pieces(t[:4], boxes) >= 2:
                self.split[str(t[4])] = self.split.get(str(t[4]), 0) + 1
            for table, key in ((self.by_size, size_bucket(t)), (self.by_label, str(t[4])),
                               (self.by_contact, "touching" if contact[i] else "apart"),
                               (self.by_border,
                                "at_border" if at_border(t, size) else "inside"),
                               (self.by_visibility, visibility_bucket(t))):
                cell = table.setdefault(key, [0, 0])
                cell[0] += 1
                cell[1] += int(i in hit)

    def merge(self, other: "Tally") -> None:
        self.frames += other.frames
        self.ignored_objects += other.ignored_objects
        self.ignored_proposals += other.ignored_proposals
        self.objects += other.objects
        self.matched += other.matched
        self.proposals += other.proposals
        self.best_ious += other.best_ious
        self.ms += other.ms
        for key, n in other.split.items():
            self.split[key] = self.split.get(key, 0) + n
        for key, n in other.missed_by_kind.items():
            self.missed_by_kind[key] += n
        for mine, theirs in ((self.by_size, other.by_size), (self.by_label, other.by_label),
                             (self.by_contact, other.by_contact),
                             (self.by_border, other.by_border),
                             (self.by_visibility, other.by_visibility)):
            for key, (n, m) in theirs.items():
                cell = mine.setdefault(key, [0, 0])
                cell[0] += n
                cell[1] += m

    def summary(self, with_labels: bool = True) -> dict[str, Any]:
        ratio = lambda a, b: round(a / b, 4) if b else None  # noqa: E731
        ms = np.asarray(self.ms or [0.0])
        out: dict[str, Any] = {
            "frames": self.frames, "objects": self.objects, "matched": self.matched,
            "missed": self.objects - self.matched, "proposals": self.proposals,
            "false_positives": self.proposals - self.matched,
            "recall": ratio(self.matched, self.objects),
            "precision": ratio(self.matched, self.proposals),
            "mean_best_iou": round(float(np.mean(self.best_ious)), 4) if self.best_ious else None,
            "proposals_per_frame": ratio(self.proposals, self.frames),
            "recall_by_size": {k: {"objects": n, "recall": ratio(m, n)}
                               for k, (n, m) in self.by_size.items()},
            "recall_by_contact": {k: {"objects": n, "recall": ratio(m, n)}
                                  for k, (n, m) in self.by_contact.items()},
            "recall_by_border": {k: {"objects": n, "recall": ratio(m, n)}
                                 for k, (n, m) in self.by_border.items()},
            "recall_by_visibility": {
                k: {"objects": self.by_visibility[k][0],
                    "recall": ratio(self.by_visibility[k][1], self.by_visibility[k][0])}
                for k in [name for name, _ in VISIBILITY_BUCKETS] + ["unknown"]
                if k in self.by_visibility},
            "ignored": {"min_visible": self.min_visible, "objects": self.ignored_objects,
                        "proposals": self.ignored_proposals},
            "split_objects": sum(self.split.values()),
            "missed_by_kind": dict(self.missed_by_kind),
            "ms_per_frame": {"median": round(float(np.median(ms)), 3),
                             "mean": round(float(np.mean(ms)), 3),
                             "p95": round(float(np.percentile(ms, 95)), 3)},
        }
        if with_labels:
            out["recall_by_label"] = {k: {"objects": n, "recall": ratio(m, n),
                                          "split": self.split.get(k, 0)}
                                      for k, (n, m) in sorted(self.by_label.items())}
        return out


def evaluate(frames: list[tuple[np.ndarray, list]], cfg: Any, iou: float = 0.5,
             min_visible: float = 0.0) -> Tally:
    """Run the proposer on ``frames`` and tally the matches (objects less visible than
    ``min_visible`` ignored)."""
    from vl_distill_ros.perception.proposals import propose_boxes

    tally = Tally(min_visible)
    for image, truth in frames:
        t0 = time.perf_counter()
        boxes = propose_boxes(image, cfg)
        ms = 1000.0 * (time.perf_counter() - t0)
        tally.add(truth, boxes, iou, ms, (image.shape[1], image.shape[0]))
    return tally


def load_rgbd_frames(bag: str | Path, max_frames: int = 0,
                     shift: tuple[int, int] = (0, 0), dark_below: float = 0.0,
                     topics: Sequence[str] | None = None) -> list[tuple]:
    """``(RGB image, truth, depth m, CameraIntrinsics)`` of every frame with ground truth
    and depth (paired as ``replay-eval`` pairs them; of ``topics`` only, when given), the
    depth moved by ``shift`` pixels (right, down; a registration error) and, with
    ``dark_below`` > 0, zeroed where the colour image's Lab lightness (0-255) is under it
    (:func:`dark_holes`)."""
    from vl_distill_ros.bags.bag_io import read_camera_bag
    from vl_distill_ros.perception.depth_registration import shift_depth

    contents = read_camera_bag(bag)
    frames = []
    for msg in contents.rgbd_frames(tolerance_ns=20_000_000):
        if topics and msg.topic not in topics:
            continue
        objs = contents.objects_for(msg.topic, msg.stamp_ns)
        if objs is None or msg.depth is None or msg.camera_info is None:
            continue
        depth = shift_depth(msg.depth, *shift) if any(shift) else msg.depth
        if dark_below > 0:
            depth = dark_holes(msg.image, depth, dark_below)
        frames.append((msg.image, [(*o.bbox, o.label, o.visible_fraction) for o in objs],
                       depth, msg.intrinsics()))
        if max_frames and len(frames) >= max_frames:
            break
    return frames


SPARSE_KINDS = ("columns", "grid", "dropout", "band")


def parse_sparse_depth(text: str) -> tuple[str, float] | None:
    """``KIND:VALUE`` of ``--sparse-depth`` (None for an empty text).

    Raises:
        ValueError: an unknown kind, or a value out of its range (K an integer 2-8, P in
            (0, 1), F in (0, 0.5]).
    """
    if not text.strip():
        return None
    kind, _, value = text.strip().partition(":")
    if kind not in SPARSE_KINDS:
        raise ValueError(f"kind must be one of {', '.join(SPARSE_KINDS)}, got {kind!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{kind} needs a number after ':', got {value!r}") from None
    if kind == "dropout" and not 0.0 < number < 1.0:
        raise ValueError(f"dropout:P needs P in (0, 1), got {value}")
    if kind == "band" and not 0.0 < number <= 0.5:
        raise ValueError(f"band:F needs F in (0, 0.5], got {value}")
    if kind in ("columns", "grid") and (number != int(number) or not 2 <= number <= 8):
        raise ValueError(f"{kind}:K needs an integer K in 2-8, got {value}")
    return kind, number


def sparse_depth(depth: np.ndarray, sparse: tuple[str, float],
                 rng: np.random.Generator) -> np.ndarray:
    """``depth`` measured only every K-th column (``columns``), every K-th row and column
    (``grid``), with each pixel lost with probability P (``dropout``) or not in the left
    fraction F of the image (``band``: the invalid band a stereo camera's depth has where its
    left imager sees what its right one does not, or a depth camera's narrower view
    registered to a wider colour one); 0: no measurement."""
    kind, value = sparse
    keep = np.zeros(depth.shape, bool)
    if kind == "band":
        keep[:, int(round(value * depth.shape[1])):] = True
    elif kind == "columns":
        keep[:, ::int(value)] = True
    elif kind == "grid":
        keep[::int(value), ::int(value)] = True
    else:
        keep = rng.random(depth.shape) >= value
    return np.where(keep, depth, np.float32(0.0)).astype(np.float32)


def smooth_depth(depth: np.ndarray, sigma: float) -> np.ndarray:
    """``depth`` (metres, 0 = none) smoothed by a Gaussian of ``sigma`` pixels over its
    measured pixels only (normalised by the blurred mask of measured pixels, so a hole's
    zeros do not pull its neighbours towards the camera); unmeasured pixels stay 0."""
    import cv2

    valid = (depth > 0).astype(np.float32)
    num = cv2.GaussianBlur(np.where(valid > 0, depth, 0).astype(np.float32), (0, 0), sigma)
    den = cv2.GaussianBlur(valid, (0, 0), sigma)
    return np.where(valid > 0, num / np.maximum(den, 1e-6), 0.0).astype(np.float32)


def relight(image: np.ndarray, vignette: float = 0.0, gradient: float = 0.0) -> np.ndarray:
    """``image`` (RGB, uint8) lit unevenly, as real lenses and rooms light a table: its
    8-bit values times ``1 - vignette * r^2`` (``r``: the distance from the centre over the
    half diagonal, a lens's fall-off towards the corners) and times ``1 - gradient * x / (W
    - 1)`` (a lamp to the left)."""
    if not vignette and not gradient:
        return image
    h, w = image.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((x - (w - 1) / 2) ** 2 + (y - (h - 1) / 2) ** 2) / (((w - 1) / 2) ** 2
                                                              + ((h - 1) / 2) ** 2)
    gain = (1.0 - vignette * r2) * (1.0 - gradient * x / max(w - 1, 1))
    return np.clip(image * gain[..., None], 0, 255).astype(np.uint8)


def dark_holes(image: np.ndarray, depth: np.ndarray, below: float) -> np.ndarray:
    """``depth`` with no measurement (0) where ``image`` is dark: its Lab lightness (0-255)
    under ``below``, opened with a 3x3 square (infrared depth sensors lose black plastic
    and dark paint)."""
    import cv2

    lightness = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2Lab)[..., 0]
    dark = cv2.morphologyEx((lightness < below).astype(np.uint8), cv2.MORPH_OPEN,
                            np.ones((3, 3), np.uint8)) > 0
    return np.where(dark, np.float32(0.0), depth).astype(np.float32)


#: ``--fusion-sweep``: the ``fuse_*`` fields that change what the fusion is given (the colour
#: boxes, the network's weak boxes), not only the fusion: not swept.
SWEEP_EXCLUDED = ("fuse_colour_model", "fuse_close_pass", "fuse_network_weak_score")


def parse_fusion_sweep(items: Iterable[str], depth_cfg: Any) -> dict[str, Any]:
    """``FIELD=V1,V2,...`` items as ``{"FIELD=V": config}``: ``depth_cfg`` with each value of
    a fusion-only field (``fuse_*`` but :data:`SWEEP_EXCLUDED`).

    Raises:
        ValueError: not FIELD=VALUES, not a fusion-only field, a bad or invalid value.
    """
    fields = {f.name for f in dataclasses.fields(depth_cfg)}
    out: dict[str, Any] = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip()
        if not sep or not values.strip():
            raise ValueError(f"expected FIELD=V1,V2,..., got {item!r}")
        if name not in fields or not name.startswith("fuse_") or name in SWEEP_EXCLUDED:
            raise ValueError(f"{name!r} is not a field only the fusion reads (fuse_*, "
                             f"not {', '.join(SWEEP_EXCLUDED)})")
        kind = type(getattr(depth_cfg, name))
        for text in values.split(","):
            try:
                number = float(text)
                if not math.isfinite(number):
                    raise ValueError("not a finite number")
                if kind is int and not number.is_integer():
                    raise ValueError(f"{name} takes whole numbers")
                value = int(number) if kind is int else number
                out[f"{name}={text.strip()}"] = dataclasses.replace(depth_cfg, **{name: value})
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{name}={text.strip()}: {exc}") from None
    if len(out) > 64:
        raise ValueError(f"at most 64 fusion settings a run, got {len(out)}")
    return out


def evaluate_rgbd(frames: list[tuple], cfg: Any, depth_cfg: Any,
                  iou: float = 0.5, min_visible: float = 0.0,
                  sweep: dict[str, Any] | None = None) -> dict[str, Tally]:
    """Colour, depth and fused (auto) proposals on RGB-D ``frames``, one tally each
    (objects less visible than ``min_visible`` ignored); with ``sweep`` (see
    :func:`parse_fusion_sweep`) also ``auto@NAME`` for each of its configs, the fusion alone
    rerun on the same frame's depth, network and colour boxes."""
    from vl_distill_ros.perception.depth_fusion import (fuse_proposals, fusion_colour_config,
                                                        takes_close_pass)
    from vl_distill_ros.perception.depth_config import stride_for
    from vl_distill_ros.perception.depth_proposals import propose_depth_boxes
    from vl_distill_ros.perception.depth_registration import DepthRegistration
    from vl_distill_ros.perception.proposals import (network_detections, propose_boxes,
                                                     with_colour_model)

    tallies = {name: Tally(min_visible) for name in ("colour", "depth", "auto")}
    tallies.update({f"auto@{name}": Tally(min_visible) for name in sweep or {}})
    # one camera's frames in order, as the node sees them (its registration check)
    reg = None
    checks = depth_cfg.registration_search_px > 0 or depth_cfg.fattening_search_px > 0
    for image, truth, depth, k in frames:
        if reg is None and checks:   # the grid step of this camera's frames
            reg = DepthRegistration(depth_cfg.registration_search_px,
                                    stride_for(depth_cfg, image.shape[1], k.focal,
                                               image.shape[0]).stride,
                                    fattening_px=depth_cfg.fattening_search_px)
        t0 = time.perf_counter()
        colour = propose_boxes(image, cfg)
        t1 = time.perf_counter()
        found = propose_depth_boxes(depth, k, depth_cfg, image, reg)
        t2 = time.perf_counter()
        # the fusion's colour boxes, as the node's: the box network of frames with depth
        # (box_net_depth), without the core split, the colour model's only with
        # fuse_colour_model (or without the network), the network's close pass only as
        # takes_close_pass says (no camera is named here)
        with_depth = cfg.for_depth_frames()
        fusion_cfg = fusion_colour_config(
            with_depth if takes_close_pass(depth, depth_cfg, camera=k)
            else dataclasses.replace(with_depth, box_net_close_width=0), depth_cfg)
        net = network_detections(image, fusion_cfg, depth_cfg.fuse_network_weak_score)
        colour_boxes, network = with_colour_model(
            image, None if net is None else net.boxes, fusion_cfg, core_split=False)
        fused = fuse_proposals(found, colour_boxes, depth_cfg, cfg.max_count, network,
                               [] if net is None else net.weak)
        t3 = time.perf_counter()
        size = (image.shape[1], image.shape[0])
        tallies["colour"].add(truth, colour, iou, 1000.0 * (t1 - t0), size)
        tallies["depth"].add(truth, list(found.boxes), iou, 1000.0 * (t2 - t1), size)
        tallies["auto"].add(truth, fused, iou, 1000.0 * (t3 - t1), size)
        for name, other in (sweep or {}).items():
            tallies[f"auto@{name}"].add(
                truth, fuse_proposals(found, colour_boxes, other, cfg.max_count, network,
                                      [] if net is None else net.weak), iou, 0.0, size)
    return tallies


#: Fraction of a cut object left in view (uniform), and the least fraction of a ground-truth
#: box that must stay in view to be counted.
CUT_KEEP: tuple[float, float] = (0.4, 0.7)
CUT_MIN_VISIBLE = 0.3


def cut_frame(image: np.ndarray, truth: list, seed: int, depth: np.ndarray | None = None,
              k: Any = None) -> tuple | None:
    """A crop of one frame whose edge cuts one ground-truth object: ``(image, truth, depth,
    intrinsics)`` with the truth clipped to the crop and labelled ``cut`` or ``whole``
    (``None`` when no object can be cut leaving at least half of the frame's side)."""
    h, w = image.shape[:2]
    rng = np.random.default_rng(seed)
    for i in rng.permutation(len(truth)):
        x, y, bw, bh = (float(v) for v in truth[i][:4])
        f = float(rng.uniform(*CUT_KEEP))
        sides = {"left": (int(x + (1 - f) * bw), 0, w, h), "right": (0, 0, int(x + f * bw), h),
                 "top": (0, int(y + (1 - f) * bh), w, h), "bottom": (0, 0, w, int(y + f * bh))}
        ok = [c for c in sides.values() if c[2] - c[0] >= w / 2 and c[3] - c[1] >= h / 2]
        if not ok:
            continue
        x0, y0, x1, y1 = ok[int(rng.integers(len(ok)))]
        clipped = []
        for t in truth:
            tx0, ty0 = max(float(t[0]), x0), max(float(t[1]), y0)
            tx1, ty1 = min(float(t[0] + t[2]), x1), min(float(t[1] + t[3]), y1)
            if tx1 - tx0 < 4 or ty1 - ty0 < 4 or \
                    (tx1 - tx0) * (ty1 - ty0) < CUT_MIN_VISIBLE * float(t[2] * t[3]):
                continue
            cut = (tx1 - tx0) * (ty1 - ty0) < 0.999 * float(t[2] * t[3])
            clipped.append((tx0 - x0, ty0 - y0, tx1 - tx0, ty1 - ty0, "cut" if cut else "whole"))
        sub_k = None if k is None else k.window(x0, y0, x1, y1)
        return (np.ascontiguousarray(image[y0:y1, x0:x1]), clipped,
                None if depth is None else np.ascontiguousarray(depth[y0:y1, x0:x1]), sub_k)
    return None


def cut_frames(frames: list[tuple], with_depth: bool) -> list[tuple]:
    """:func:`cut_frame` of every frame (``(image, truth)`` or, ``with_depth``, ``(image,
    truth, depth, intrinsics)``) that has an object to cut, in the same layout."""
    out = []
    for n, fr in enumerate(frames):
        c = cut_frame(fr[0], fr[1], n, *(fr[2:4] if with_depth else ()))
        if c is not None:
            out.append(c if with_depth else c[:2])
    return out


def _kind_summary(t: Tally) -> dict[str, Any]:
    """A tally over cut-border frames: ``recall_by_label`` becomes ``recall_by_kind``."""
    s = t.summary(True)
    s["recall_by_kind"] = s.pop("recall_by_label")
    return s


#: ``--depth-shift``: two whole numbers of pixels, each with an optional minus sign.
SHIFT_RE = re.compile(r"^\s*(-?\d+)\s*,\s*(-?\d+)\s*$")


def check_options(ap: argparse.ArgumentParser, args: argparse.Namespace
                  ) -> tuple[list, tuple[str, float] | None, tuple[int, int]]:
    """Refuse options out of their range (``ap.error``: one line, exit status 2); the
    ``--degrade`` chain, the ``--sparse-depth`` kind and the ``--depth-shift`` they give."""
    from _degrade import parse_degradation

    if not 0.0 < args.iou <= 1.0:
        ap.error(f"--iou must be in (0, 1], got {args.iou}")
    for name, high in (("min_visible", 1.0), ("vignette", 0.9), ("light_gradient", 0.9),
                       ("smooth_depth", 10.0), ("dark_holes", 255.0)):
        if not 0.0 <= getattr(args, name) <= high:
            ap.error(f"--{name.replace('_', '-')} must be in [0, {high:g}], got "
                     f"{getattr(args, name)}")
    try:
        degradation = parse_degradation(args.degrade)
    except ValueError as exc:
        ap.error(f"--degrade: {exc}")
    try:
        sparse = parse_sparse_depth(args.sparse_depth)
    except ValueError as exc:
        ap.error(f"--sparse-depth: {exc}")
    match = SHIFT_RE.match(args.depth_shift)
    if match is None:
        ap.error(f"--depth-shift must be DX,DY in whole pixels, got {args.depth_shift!r}")
    return degradation, sparse, (int(match.group(1)), int(match.group(2)))


def build_parser() -> argparse.ArgumentParser:
    """The bench's options."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bags", nargs="+", default=[str(DEFAULT_BAG)],
                    help="camera bags with ground truth (default: demo/sample_tabletop)")
    ap.add_argument("--iou", type=finite_float, default=0.5,
                    help="IoU for a match, in (0, 1] (default: 0.5)")
    ap.add_argument("--min-visible", type=non_negative_float, default=0.0, metavar="F",
                    help="ignore objects whose ground truth records a visible fraction under F "
                         "(neither found nor missed; a box on one is not a false one); "
                         "default 0: every object counts. BOP's convention is 0.1")
    ap.add_argument("-p", "--param", dest="params", action="append", default=[],
                    metavar="FIELD=VALUE", help="ProposalConfig override (repeatable)")
    ap.add_argument("--topics", nargs="*", default=None,
                    help="image topics to use, also with --depth (default: every image "
                         "topic)")
    ap.add_argument("--max-frames", type=non_negative_int, default=0,
                    help="at most this many frames per bag (0: all)")
    ap.add_argument("--no-labels", action="store_true", help="leave out recall_by_label")
    ap.add_argument("--depth", action="store_true",
                    help="also compare colour, depth and fused proposals on frames with depth")
    ap.add_argument("--cut-border", action="store_true",
                    help="also score crops of each frame that cut one object at the border")
    ap.add_argument("--depth-config", default=None, metavar="YAML",
                    help="depth proposer settings (default: DepthProposalConfig defaults)")
    ap.add_argument("--fusion-sweep", action="append", default=[], metavar="FIELD=V1,V2",
                    help="with --depth: also rerun the fusion alone with each value of a "
                         "fusion-only field (fuse_*, not " + ", ".join(SWEEP_EXCLUDED) +
                         ") on each frame's boxes, as depth.fusion_sweep (repeatable; at "
                         "most 64 settings)")
    ap.add_argument("--depth-shift", default="0,0", metavar="DX,DY",
                    help="with --depth: move the depth DX pixels right and DY down first (a "
                         "registration error between depth and colour; default: 0,0)")
    ap.add_argument("--dark-holes", type=non_negative_float, default=0.0, metavar="L",
                    help="with --depth: no depth where the colour image's Lab lightness "
                         "(0-255) is under L, as infrared sensors lose black objects "
                         "(default: 0, off)")
    ap.add_argument("--sparse-depth", default="", metavar="KIND",
                    help="with --depth: keep only part of the depth's measurements: "
                         "columns:K, grid:K (every K-th column, or row and column), "
                         "dropout:P (each pixel lost with probability P) or band:F (none in "
                         "the image's left fraction F, a stereo camera's invalid band; "
                         "default: none)")
    ap.add_argument("--smooth-depth", type=non_negative_float, default=0.0, metavar="SIGMA",
                    help="with --depth: smooth the depth over its measured pixels with a "
                         "Gaussian of SIGMA pixels (0-10), as stereo cameras and depth "
                         "filters do (default: 0, off)")
    ap.add_argument("--vignette", type=non_negative_float, default=0.0, metavar="A",
                    help="darken the colour images towards the corners by A (0-0.9: 1 - A "
                         "r^2, a lens's fall-off; default: 0, off)")
    ap.add_argument("--light-gradient", type=non_negative_float, default=0.0, metavar="A",
                    help="darken the colour images from left to right by A (0-0.9, uneven "
                         "room light; default: 0, off)")
    ap.add_argument("--degrade", default="", metavar="CHAIN",
                    help="real-camera effects on the colour images after the lighting, e.g. "
                         "motion:9, noise:8+jpeg:40 (kinds and ranges: bench/_degrade.py; "
                         "default: none)")
    return ap


def build_result(args: argparse.Namespace, cfg: Any, depth_cfg: Any, light: dict[str, float],
                 shift: tuple[int, int], sweep: dict[str, Any], total: Tally,
                 per_bag: dict[str, Any], depth_total: dict[str, Tally],
                 depth_bags: dict[str, Any], cut_total: dict[str, Tally],
                 total_s: float) -> dict[str, Any]:
    """The run's JSON object from its tallies (all bags, per bag, ``--depth``,
    ``--cut-border``)."""
    import cv2

    return {
        "bench": "proposals_recall",
        "iou_threshold": args.iou,
        "min_visible": args.min_visible,
        "lighting": light,
        "degradation": args.degrade.strip() or "none",
        "config": dataclasses.asdict(cfg),
        "overrides": parse_overrides(args.params),
        "size_buckets_px": {name: limit if np.isfinite(limit) else None
                            for name, limit in SIZE_BUCKETS},
        "all": total.summary(not args.no_labels),
        "bags": per_bag,
        **({"depth": {"config": dataclasses.asdict(depth_cfg), "shift_px": list(shift),
                      "dark_holes_below": args.dark_holes,
                      "sparse_depth": args.sparse_depth.strip() or "none",
                      "smooth_depth_sigma_px": args.smooth_depth,
                      "all": {k: v.summary(not args.no_labels) for k, v in depth_total.items()
                              if "@" not in k},
                      **({"fusion_sweep": {k.split("@", 1)[1]: v.summary(False)
                                           for k, v in depth_total.items() if "@" in k}}
                         if sweep else {}),
                      "bags": depth_bags}} if args.depth else {}),
        **({"cut_border": {"keep_fraction": list(CUT_KEEP), "min_visible": CUT_MIN_VISIBLE,
                           **{k: _kind_summary(v) for k, v in cut_total.items() if v.frames}}}
           if args.cut_border else {}),
        "total_s": total_s,
        "machine": {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "opencv": cv2.__version__,
                    "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
    }


def load_configs(ap: argparse.ArgumentParser, args: argparse.Namespace
                 ) -> tuple[Any, Any, dict[str, Any]]:
    """The proposer's config (with the ``-p`` overrides), the depth proposer's
    (``--depth-config``) and the ``--fusion-sweep`` settings (a bad sweep ends in
    ``ap.error``).

    Raises:
        ValueError: a bad override or a depth config that cannot be read (the message is
            the run's JSON error).
    """
    from vl_distill_ros.perception.camera_model import DepthError
    from vl_distill_ros.perception.depth_config import DepthProposalConfig, load_depth_config
    from vl_distill_ros.perception.proposal_config import ProposalConfig

    try:
        cfg = ProposalConfig(**parse_overrides(args.params))
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    try:
        depth_cfg = load_depth_config(args.depth_config) if args.depth_config \
            else DepthProposalConfig()
    except DepthError as exc:
        raise ValueError(f"--depth-config: {exc}") from None
    try:
        sweep = parse_fusion_sweep(args.fusion_sweep, depth_cfg)
    except ValueError as exc:
        ap.error(f"--fusion-sweep: {exc}")
    if sweep and not args.depth:
        ap.error("--fusion-sweep needs --depth")
    return cfg, depth_cfg, sweep


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    from _degrade import degrade

    degradation, sparse, shift = check_options(ap, args)
    light = {"vignette": args.vignette, "gradient": args.light_gradient}

    def look(bag_index: int, frame_index: int, image: np.ndarray) -> np.ndarray:
        """A colour frame as the run sees it: relit, then degraded (seeded by its place)."""
        rng = np.random.default_rng([bag_index, frame_index])
        return degrade(relight(image, **light), degradation, rng)

    def measured(bag_index: int, frame_index: int, depth: np.ndarray) -> np.ndarray:
        """A depth image as the run sees it: thinned (``--sparse-depth``, seeded by its
        place), then smoothed (``--smooth-depth``)."""
        if sparse is not None:
            depth = sparse_depth(depth, sparse, np.random.default_rng([bag_index, frame_index, 1]))
        return smooth_depth(depth, args.smooth_depth) if args.smooth_depth > 0 else depth

    try:
        cfg, depth_cfg, sweep = load_configs(ap, args)
    except ValueError as exc:
        print(json.dumps({"bench": "proposals_recall", "error": str(exc)}))
        return 2
    mv = args.min_visible
    depth_total = {name: Tally(mv) for name in ("colour", "depth", "auto",
                                                *(f"auto@{n}" for n in sweep))}
    depth_bags: dict[str, Any] = {}
    cut_total = {name: Tally(mv) for name in ("colour", "depth", "auto")}
    total = Tally(mv)
    per_bag: dict[str, Any] = {}
    t_start = time.perf_counter()
    for b, bag in enumerate(args.bags):
        print(f"[bench] proposals_recall: reading {bag}", file=sys.stderr)
        try:
            frames = [(look(b, i, im), t) for i, (im, t)
                      in enumerate(load_frames(bag, args.max_frames, args.topics))]
        except (OSError, ValueError) as exc:
            print(json.dumps({"bench": "proposals_recall", "error": f"{bag}: {exc}",
                              "hint": HINT}))
            print(f"[bench] proposals_recall: {bag}: {exc}; {HINT}", file=sys.stderr)
            return 2
        if frames:  # warm-up (first-call allocations), not timed
            from vl_distill_ros.perception.proposals import propose_boxes
            propose_boxes(frames[0][0], cfg)
        tally = evaluate(frames, cfg, args.iou, mv)
        sizes = sorted({f"{im.shape[1]}x{im.shape[0]}" for im, _ in frames})
        per_bag[str(bag)] = {"image_sizes": sizes, **tally.summary(not args.no_labels)}
        total.merge(tally)
        if args.cut_border and not args.depth:
            cut_total["colour"].merge(evaluate(cut_frames(frames, False), cfg, args.iou, mv))
        if args.depth:
            rgbd_frames = [(look(b, i, im), truth, measured(b, i, depth), k)
                           for i, (im, truth, depth, k) in enumerate(
                               load_rgbd_frames(bag, args.max_frames, shift, args.dark_holes,
                                                args.topics))]
            rgbd = evaluate_rgbd(rgbd_frames, cfg, depth_cfg, args.iou, mv, sweep)
            depth_bags[str(bag)] = {k: v.summary(False) for k, v in rgbd.items()
                                    if "@" not in k}
            for name, t in rgbd.items():
                depth_total[name].merge(t)
            if args.cut_border:
                cut = evaluate_rgbd(cut_frames(rgbd_frames, True), cfg, depth_cfg, args.iou,
                                    mv)
                for name, t in cut.items():
                    cut_total[name].merge(t)
    result = build_result(args, cfg, depth_cfg, light, shift, sweep, total, per_bag,
                          depth_total, depth_bags, cut_total,
                          round(time.perf_counter() - t_start, 2))
    return emit_or_error(result)


if __name__ == "__main__":
    sys.exit(main())
