#!/usr/bin/env python3
"""Naming a bag's ground-truth objects: the student against its teacher, object by object.

``vl-distill replay-eval`` scores the whole pipeline, so an object the proposer missed and
one the student misnamed both count against it. This bench takes the proposer out: every
ground-truth box of a camera bag (``docs/bags.md``; the bag's ``/ground_truth`` topic or
``--sidecar``) is handed to the pipeline as a region of interest (``crop_source: rois``,
the node's square window around it) and named among the vocabulary (the bundle's own, or
``--vocabulary``), with the bundle's calibration as the node uses it. The teacher the
bundle was distilled from names the same windows with the same text embeddings (top-1
cosine, no calibration). Objects are grouped by ``--split`` (ID: the student's trained
objects, OOD: unseen ones, other), and counted per object key.

Per group and per object: objects named right by the student (top-1, whether or not the
open-set rule calls them ``unknown``), how many it calls ``unknown``, named right by the
teacher, and the names each gives most. ``--plot PNG`` draws the per-object accuracies of
both side by side.

    .venv/bin/python bench/bag_naming.py [BAG] --plot /tmp/naming.png
"""
from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

import _common
from _common import BenchError, REPO, log

#: Bound on the frames read (``--max-frames``): a bound on the bench's time and memory.
MAX_FRAMES = 100_000


def parser() -> argparse.ArgumentParser:
    """The bench's options."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bag", type=Path, nargs="?", default=REPO / "demo" / "sample_tabletop",
                    help="camera bag with ground truth (docs/bags.md; default: the shipped "
                         "sample bag)")
    ap.add_argument("--model", type=Path, default=None,
                    help="bundle (default: the packaged one)")
    ap.add_argument("--vocabulary", type=Path, default=None,
                    help="vocabulary YAML (default: the bundle's own vocabulary)")
    ap.add_argument("--split", type=Path, default=REPO / "config" / "splits" / "ycb_paper.yaml",
                    help="ID/OOD split YAML grouping the objects by key "
                         "(default: config/splits/ycb_paper.yaml)")
    ap.add_argument("--sidecar", type=Path, default=None,
                    help="ground truth from this JSON Lines file instead of the bag's topic")
    ap.add_argument("--max-frames", type=int, default=0,
                    help="frames with ground truth to read, 0 = all (at most "
                         f"{MAX_FRAMES})")
    ap.add_argument("--no-teacher", action="store_true",
                    help="score the student alone (the teacher takes most of the time)")
    ap.add_argument("--plot", type=_common.png_path, default=None,
                    help="PNG of the per-object accuracies (student and teacher; .png is "
                         "added to a name without one)")
    return ap


def _tally(rows: list[tuple[str, str, str, bool]]) -> dict[str, Any]:
    """``rows`` of (key, true name, predicted name, unknown) -> counts and the most given.
    ``right``: the top-1 name is right; ``right_known``: and the open-set rule keeps it
    (``known``), so the node publishes it as the label."""
    right = sum(int(pred == truth) for _, truth, pred, _ in rows)
    return {"objects": len(rows), "right": right,
            "right_known": sum(int(pred == truth and not u) for _, truth, pred, u in rows),
            "accuracy": _common.r(right / len(rows), 4) if rows else None,
            "unknown": sum(int(u) for *_, u in rows),
            "most_given": dict(Counter(pred for _, _, pred, _ in rows).most_common(3))}


def _group_of(key: str, split: Any) -> str:
    if key in split.in_distribution:
        return "id"
    if key in split.out_of_distribution:
        return "ood"
    return "other"


def plot_per_object(per_object: dict[str, dict[str, Any]], path: Path, title: str) -> Path:
    """Horizontal bars: each object's accuracy for the student and, where measured, the
    teacher."""
    from vl_distill_ros.plots import pyplot, save_figure

    plt = pyplot()
    names = list(per_object)
    ys = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7.5, max(2.5, 0.32 * len(names) + 1.4)))
    student = [per_object[n]["student"]["accuracy"] or 0.0 for n in names]
    ax.barh(ys - 0.2, student, height=0.4, color="tab:blue", label="student")
    if all("teacher" in per_object[n] for n in names):
        teacher = [per_object[n]["teacher"]["accuracy"] or 0.0 for n in names]
        ax.barh(ys + 0.2, teacher, height=0.4, color="tab:gray", label="teacher")
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{n} ({per_object[n]['group']}, {per_object[n]['student']['objects']})"
                        for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("named right (top-1)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title)
    return save_figure(fig, path)


def _grouped(student: list[tuple[str, str, str, bool]],
             teacher_rows: list[tuple[str, str, str, bool]], split: Any
             ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The student's (and the teacher's, when measured) :func:`_tally` per group of
    ``split`` and per object key."""
    groups: dict[str, Any] = {}
    per_object: dict[str, dict[str, Any]] = {}
    by_group: dict[str, list[int]] = defaultdict(list)
    by_key: dict[str, list[int]] = defaultdict(list)
    for i, (key, *_rest) in enumerate(student):
        by_group[_group_of(key, split)].append(i)
        by_key[key].append(i)
    for g, idx in sorted(by_group.items()):
        groups[g] = {"student": _tally([student[i] for i in idx])}
        if teacher_rows:
            groups[g]["teacher"] = _tally([teacher_rows[i] for i in idx])
    for key in sorted(by_key, key=lambda k: (_group_of(k, split), k)):
        idx = by_key[key]
        per_object[key] = {"group": _group_of(key, split),
                           "student": _tally([student[i] for i in idx])}
        if teacher_rows:
            per_object[key]["teacher"] = _tally([teacher_rows[i] for i in idx])
    return groups, per_object


def _inputs(a: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """The bag, the split, the vocabulary (``--vocabulary`` or the bundle's) and the bundle.

    Raises:
        BenchError: one of them cannot be read, or the bag has no ground-truth object.
    """
    from vl_distill_ros.bags.bag_io import BagError, read_camera_bag
    from vl_distill_ros.model.bundle import BundleError, load_bundle
    from vl_distill_ros.model.vocabulary import Split, Vocabulary, VocabularyError
    from vl_distill_ros.ros.params import default_model_path

    if not 0 <= a.max_frames <= MAX_FRAMES:
        raise BenchError(f"--max-frames must be in 0..{MAX_FRAMES}, got {a.max_frames}")
    try:
        bag = read_camera_bag(a.bag, ground_truth=a.sidecar)
        split = Split.load(a.split)
        vocab = Vocabulary.load(a.vocabulary) if a.vocabulary else None
    except (BagError, VocabularyError, OSError) as exc:
        raise BenchError(str(exc), exit_code=2) from None
    if not any(bag.ground_truth.values()):
        raise BenchError(f"{a.bag}: no ground-truth object (a /ground_truth topic or "
                         "--sidecar)", exit_code=2)
    try:
        bundle = load_bundle(a.model or default_model_path(), device="cpu")
    except BundleError as exc:
        raise BenchError(f"--model: {exc}") from None
    return bag, split, vocab or bundle.vocabulary, bundle


def run(a: argparse.Namespace, out: dict[str, Any]) -> None:
    """Fill ``out`` with the scores per group and per object."""
    import torch

    from vl_distill_ros.model.teachers.factory import build_teacher_from_spec
    from vl_distill_ros.model.text_service import TextEmbeddingService
    from vl_distill_ros.perception.boxes import classification_window, crop
    from vl_distill_ros.perception.pipeline import PerceptionPipeline
    from vl_distill_ros.perception.preprocess import pad_long_crop

    bag, split, vocab, bundle = _inputs(a)
    service = TextEmbeddingService.from_bundle(bundle)
    emb = service.embed_vocabulary(vocab)
    names = set(vocab.names)
    teacher = None if a.no_teacher else build_teacher_from_spec(bundle.teacher_spec, "cpu")
    pipe = PerceptionPipeline(bundle, crop_source="rois", rois=[(0, 0, 1, 1)],  # per frame below
                              vocabulary=vocab, embeddings=emb, catalogue=service.catalogue,
                              proposal_threads=1)
    student: list[tuple[str, str, str, bool]] = []
    teacher_rows: list[tuple[str, str, str, bool]] = []
    outside: Counter[str] = Counter()
    frames = 0
    limit = a.max_frames or MAX_FRAMES
    try:
        for msg in bag.images():
            if frames == limit:
                break
            objects = list(bag.objects_for(msg.topic, msg.stamp_ns) or [])
            outside.update(o.label for o in objects if o.label not in names)
            objects = [o for o in objects if o.label in names]
            if not objects:
                continue
            frames += 1
            boxes = [tuple(int(v) for v in o.bbox) for o in objects]
            pipe.configure(rois=boxes)
            found, _ = pipe.process(msg.image)
            if len(found) != len(objects):
                raise BenchError(f"{msg.topic} at {msg.stamp_ns}: {len(found)} results for "
                                 f"{len(objects)} boxes (a box outside the frame?)")
            student += [(o.key or o.label, o.label, r.top_k[0][0], not r.known)
                        for o, r in zip(objects, found)]
            if teacher is not None:
                height, width = msg.image.shape[:2]
                crops = [pad_long_crop(crop(msg.image, classification_window(
                    b, width, height, True, pipe.settings.crop_context))) for b in boxes]
                with torch.inference_mode():
                    cos = teacher.encode_images(crops) @ emb.T
                teacher_rows += [(o.key or o.label, o.label, vocab.names[int(i)], False)
                                 for o, i in zip(objects, cos.argmax(1))]
    finally:
        pipe.close()
    if not student:
        raise BenchError("no ground-truth object of the bag has a name in the vocabulary",
                         exit_code=2, not_in_vocabulary=dict(outside))
    out.update(machine=_common.machine_info(["torch", "onnxruntime"]),
               frames=frames, vocabulary_size=len(vocab),
               not_in_vocabulary=dict(outside))
    groups, per_object = _grouped(student, teacher_rows, split)
    out["groups"] = groups
    out["per_object"] = per_object
    for g, v in groups.items():
        log(f"{g}: student {v['student']['right']} of {v['student']['objects']}"
            + (f", teacher {v['teacher']['right']}" if "teacher" in v else ""))
    if a.plot:
        out["plot"] = str(plot_per_object(per_object, a.plot, f"{a.bag.name}: named right "
                                          f"among {len(vocab)} names"))


def main(argv: list[str] | None = None) -> int:
    """Run the bench; prints one JSON object, returns the exit status."""
    return _common.bench_main(
        "bag_naming", "naming alone, proposals taken out: the student against its teacher "
        "on a bag's ground-truth objects", parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
