#!/usr/bin/env python3
"""Naming objects in real photos by names the student never trained on.

``bench/real_photos.py`` scores the proposer on the real photos that two packages ship
(``bench/real_photos.json``); this bench scores what the node would *call* their objects.
Every hand-checked box is handed to the pipeline as a region of interest (``crop_source:
rois``, the node's square window around it), and the student names it among an operator's
vocabulary of names alone: the photos' own object names (coin, saucer, cup, spoon, jar lid,
pencil, sweet, book, rubber whale, shell, ...; none of them a name the student was trained
with, a few of them in the bundle's description catalogue), once alone and once beside the
bundle's 26 names (what a robot's vocabulary usually also holds). The teacher the bundle was
distilled from names the same windows with the same text embeddings (top-1 cosine, no
calibration), as the reference a 24x faster student is measured against.

Per vocabulary and network: objects named right (top-1, whether or not the open-set rule
would call them ``unknown``), per-name accuracy and its mean over names, and for the student
how many come out ``unknown``. Chance is one over the vocabulary's size. A first look, like
the proposals' bench: 67 objects, 24 of them coins.

    .venv/bin/python bench/real_photo_naming.py
"""
from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

import _common
from _common import BenchError, log
from real_photos import LABELS, load_photos


def parser() -> argparse.ArgumentParser:
    """The bench's options."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None,
                    help="bundle (default: the packaged one)")
    ap.add_argument("--labels", type=Path, default=LABELS,
                    help="the photos' boxes and names (default: bench/real_photos.json)")
    ap.add_argument("--no-teacher", action="store_true",
                    help="score the student alone (the teacher takes most of the time)")
    return ap


def _tally(rows: list[tuple[str, str, bool]]) -> dict[str, Any]:
    """``rows`` of (true name, predicted name, unknown) -> counts, per-name accuracy.
    ``right``: the top-1 name is right; ``right_known``: and the open-set rule keeps it
    (``known``), so the node publishes it as the label."""
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for truth, pred, _ in rows:
        per[truth][0] += int(pred == truth)
        per[truth][1] += 1
    return {"objects": len(rows), "right": sum(r for r, _ in per.values()),
            "right_known": sum(int(pred == truth and not u) for truth, pred, u in rows),
            "unknown": sum(int(u) for *_, u in rows),
            "mean_over_names": _common.r(float(np.mean([r / n for r, n in per.values()])), 4),
            "per_name": {k: f"{r}/{n}" for k, (r, n) in sorted(per.items())},
            "most_given": dict(Counter(pred for _, pred, _ in rows).most_common(8))}


def run(a: argparse.Namespace, out: dict[str, Any]) -> None:
    """Fill ``out`` with each vocabulary's and network's scores."""
    import torch

    from vl_distill_ros.model.bundle import BundleError, load_bundle
    from vl_distill_ros.model.teachers.factory import build_teacher_from_spec
    from vl_distill_ros.model.text_service import TextEmbeddingService
    from vl_distill_ros.model.vocabulary import Vocabulary
    from vl_distill_ros.perception.boxes import classification_window, crop
    from vl_distill_ros.perception.pipeline import PerceptionPipeline
    from vl_distill_ros.perception.preprocess import pad_long_crop
    from vl_distill_ros.ros.params import default_model_path

    try:
        bundle = load_bundle(a.model or default_model_path(), device="cpu")
    except BundleError as exc:
        raise BenchError(f"--model: {exc}") from None
    skipped: list[str] = []
    photos = load_photos(a.labels, skipped)
    if not photos:
        raise BenchError("no real photos here: " + "; ".join(skipped))
    out["skipped"] = skipped
    names = sorted({name for *_, labels in photos for name in labels})
    vocabularies = {"photo_names": Vocabulary.from_names(names),
                    "photo_names_and_26": Vocabulary.from_names(
                        names + [n for n in bundle.vocabulary.names if n not in names])}
    service = TextEmbeddingService.from_bundle(bundle)
    teacher = None if a.no_teacher else build_teacher_from_spec(bundle.teacher_spec, "cpu")
    out["photos"] = {name: len(truth) for name, _, truth, _ in photos}
    results: dict[str, Any] = {}
    for key, vocab in vocabularies.items():
        emb = service.embed_vocabulary(vocab)
        student, teacher_rows = [], []
        for name, image, truth, labels in photos:
            pipe = PerceptionPipeline(bundle, crop_source="rois", rois=truth, vocabulary=vocab,
                                      embeddings=emb, catalogue=service.catalogue,
                                      proposal_threads=1)
            try:
                objects, _ = pipe.process(image)
            finally:
                pipe.close()
            if len(objects) != len(truth):
                raise BenchError(f"{name}: {len(objects)} objects for {len(truth)} boxes")
            student += [(t, o.top_k[0][0], not o.known) for t, o in zip(labels, objects)]
            if teacher is not None:
                height, width = image.shape[:2]
                crops = [pad_long_crop(crop(image, classification_window(
                    tuple(b), width, height, True, pipe.settings.crop_context)))
                    for b in truth]
                with torch.inference_mode():
                    cos = teacher.encode_images(crops) @ emb.T
                teacher_rows += [(t, vocab.names[int(i)], False)
                                 for t, i in zip(labels, cos.argmax(1))]
        results[key] = {"names": len(vocab), "chance": _common.r(1 / len(vocab), 4),
                        "student": _tally(student)}
        if teacher is not None:
            results[key]["teacher"] = _tally(teacher_rows)
        log(f"{key}: student {results[key]['student']['right']} of {len(student)} right"
            + (f", teacher {results[key]['teacher']['right']}" if teacher is not None else ""))
    out["results"] = results
    out["catalogued"] = service.catalogued(vocabularies["photo_names"].labels)


def main(argv: list[str] | None = None) -> int:
    """Run the bench; prints one JSON object, returns the exit status."""
    return _common.bench_main(
        "real_photo_naming", "the product's promise on real photos: objects named by names "
        "the student never trained on", parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
