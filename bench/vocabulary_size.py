#!/usr/bin/env python3
"""What names that are not in view cost: the test renders named among the split's labels
plus K extra names, for K in ``--sizes``.

An operator's vocabulary holds every name the robot may meet, most of them not in any one
frame, and every name competes for every crop. This bench takes training runs (``--run``:
each run's student and calibration record) or a bundle (default: the packaged one, with
``--config``, the training YAML it was made with), the config's test renders
(``test_shift_id`` seen and ``test_ood`` unseen objects; ``vl-distill render`` makes them)
and open-set folder (``calibration.openset_test``), and
names the crops among the split's labels plus K names drawn from ``--names`` (by default
40 household things and tools that no YCB object is), ``--draws`` random draws per K, with
the calibration as the node uses it (seen bias, temperature, negatives, open-set
threshold). The teacher names the same crops with the same text embeddings (top-1 cosine).

Per K (the mean over draws): seen and unseen crops named right (top-1) and named right
and kept by the open-set rule (``*_right_known``, what the node publishes as the label),
the share of the open-set objects' crops called ``unknown``, and the teacher's seen and
unseen top-1; with the largest K, the extra names the wrong answers went to most.
``--plot PNG`` draws unseen and seen accuracy against K, students and teacher.

    .venv/bin/python bench/vocabulary_size.py              # the packaged bundle
    .venv/bin/python bench/vocabulary_size.py --run runs/ablation_gzsl/zero_shot_prior/seed0
"""
from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

import _common
from _common import BenchError, log

#: Names of household things and tools that no YCB object is (the default ``--names``).
EXTRA_NAMES = (
    "pliers", "tape measure", "multimeter", "tweezers", "pencil", "chair", "bucket", "pillow",
    "eraser", "stapler", "remote control", "toothbrush", "book", "candle", "sock", "glove",
    "shoe", "umbrella", "bottle opener", "clock", "lamp", "keyboard", "computer mouse",
    "headphones", "wallet", "keys", "sunglasses", "notebook", "paintbrush", "ruler",
    "paper clip", "comb", "battery", "light bulb", "padlock", "whistle", "teddy bear",
    "toy car", "water bottle", "picture frame")
#: Bounds on what the options control.
MAX_DRAWS = 50
MAX_NAMES = 1000


def parser() -> argparse.ArgumentParser:
    """The bench's options."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, action="append", default=[],
                    help="training run folder (repeat for several seeds); default: the bundle")
    ap.add_argument("--bundle", type=Path, default=None,
                    help="bundle (.vdb) when no --run is given (default: the packaged one)")
    ap.add_argument("--config", type=Path,
                    default=_common.REPO / "config" / "ablation" / "gzsl_zero_shot_prior.yaml",
                    help="with the bundle: the training YAML it was made with (default: the "
                         "packaged bundle's, config/ablation/gzsl_zero_shot_prior.yaml)")
    ap.add_argument("--names", type=Path, default=None,
                    help="text file of extra names, one per line (default: the 40 built-in "
                         "household things and tools)")
    ap.add_argument("--sizes", default="0,5,10,20,40",
                    help="comma-separated numbers of extra names (default 0,5,10,20,40)")
    ap.add_argument("--draws", type=int, default=3,
                    help=f"random draws of the extra names per size, 1..{MAX_DRAWS} (default 3; "
                         "one where the size takes all or none)")
    ap.add_argument("--seed", type=_common.non_negative_int, default=0,
                    help="seed of the draws (default 0)")
    ap.add_argument("--plot", type=_common.png_path, default=None,
                    help="PNG of accuracy against size (.png is added to a name without one)")
    return ap


def _names(path: Path | None) -> list[str]:
    if path is None:
        return list(EXTRA_NAMES)
    try:
        names = [n.strip() for n in path.read_text(encoding="utf-8").splitlines() if n.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"--names {path}: {exc}") from None
    if not names or len(names) > MAX_NAMES or len(set(names)) != len(names):
        raise BenchError(f"--names {path}: 1..{MAX_NAMES} distinct names needed, got "
                         f"{len(names)}")
    return names


def _sizes(text: str, available: int) -> list[int]:
    try:
        sizes = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise BenchError(f"--sizes {text!r}: comma-separated whole numbers needed") from None
    if not sizes or sizes[0] < 0 or sizes[-1] > available:
        raise BenchError(f"--sizes {text!r}: each must be in 0..{available} (the extra names)")
    return sizes


def _from_run(run: Path) -> tuple[Any, Any, Any]:
    """(student, config, calibration) of a training run."""
    from vl_distill_ros.training.calibrate import read_calibration
    from vl_distill_ros.training.trainer import load_trained_student

    if not (run / "config.yaml").is_file():
        raise BenchError(f"--run {run}: not a training run (no config.yaml)")
    student, cfg, _ = load_trained_student(run)
    return student, cfg, read_calibration(run)


def _from_bundle(bundle: Path | None, config: Path) -> tuple[Any, Any, Any]:
    """(student, config, calibration) of a bundle and the training YAML it was made with."""
    from vl_distill_ros.config import ConfigError, load_train_config
    from vl_distill_ros.model.bundle import BundleError, load_bundle
    from vl_distill_ros.ros.params import default_model_path
    from vl_distill_ros.training.data import LazyTeacher

    path = bundle or default_model_path()
    try:
        b = load_bundle(path)
        cfg = load_train_config(config)
    except (BundleError, ConfigError) as exc:
        raise BenchError(str(exc)) from None
    if LazyTeacher(cfg.teacher).id != b.teacher_id:
        raise BenchError(f"{path} was distilled from {b.teacher_id!r}; --config {config} "
                         "gives another teacher")
    return b.student, cfg, b.calibration


def measure(name: str, student: Any, cfg: Any, rec: Any, extra: list[str], sizes: list[int],
            draws: int, seed: int) -> dict[str, Any]:
    """The figures of one student, its config and calibration record (module docstring)."""
    import torch

    from vl_distill_ros.model.vocabulary import Vocabulary
    from vl_distill_ros.training.calibrate import node_scores, trained_text_embeddings
    from vl_distill_ros.training.data import (LazyTeacher, full_vocabulary, load_split_images,
                                              load_vocabularies, outside_split_keys,
                                              teacher_image_targets, text_classifier)
    from vl_distill_ros.training.image_folder import load_image_folder
    from vl_distill_ros.training.trainer import embed_images

    if rec is None:
        raise BenchError(f"{name} has no calibration record (vl-distill eval --run makes one)")
    if not cfg.calibration.openset_test:
        raise BenchError(f"{name}'s config names no calibration.openset_test folder")
    teacher = LazyTeacher(cfg.teacher, seed=cfg.optim.seed)
    vocabs = load_vocabularies(cfg.data)
    clash = sorted({n.casefold() for n in extra} & {n.casefold() for n in vocabs.all.names})
    if clash:
        raise BenchError(f"--names holds labels of the split itself: {clash}")
    cpu = torch.device("cpu")
    s_parts, t_parts, y_parts = [], [], []
    for split, label_set in (("test_shift_id", "id"), ("test_ood", "ood")):
        vocab = vocabs.for_set(label_set)
        data = load_split_images(cfg.data.root, split, vocab)
        if data is None:
            raise BenchError(f"no {split} renders under {cfg.data.root} (vl-distill render "
                             "makes them)")
        log(f"{name}: {split}, {len(data)} crops")
        s_parts.append(rec.center(embed_images(student, data.images, cpu).numpy()))
        t_parts.append(teacher_image_targets(teacher, data, cfg.data.cache_dir,
                                             cfg.teacher.batch_size, progress=False).numpy())
        y_parts.append(np.array([vocabs.all.index(vocab[i].key) for i in data.labels]))
    s_in, t_in, y = np.concatenate(s_parts), np.concatenate(t_parts), np.concatenate(y_parts)
    seen = np.arange(len(y)) < len(y_parts[0])
    full = full_vocabulary(cfg.data)
    keys = outside_split_keys(cfg.calibration.openset_test, full, vocabs, "openset_test")
    oov = load_image_folder(cfg.calibration.openset_test, full, keys=keys)
    s_oov = rec.center(embed_images(student, oov.images, cpu).numpy())
    trained_emb = (trained_text_embeddings(teacher, cfg, list(rec.trained_names))
                   if rec.negatives else None)
    base = text_classifier(teacher, vocabs.all, cfg.data).numpy()
    extra_emb = text_classifier(teacher, Vocabulary.from_names(extra), cfg.data).numpy()
    n_base = len(vocabs.all)
    rng = np.random.default_rng(seed)
    by_size: dict[str, dict[str, float]] = {}
    taken: dict[str, list[tuple[str, int]]] = {}
    for k in sizes:
        rows, stolen, stolen_t = [], Counter(), Counter()
        for _ in range(draws if 0 < k < len(extra) else 1):
            idx = rng.choice(len(extra), k, replace=False) if k else np.array([], int)
            names = list(vocabs.all.names) + [extra[i] for i in idx]
            text = np.concatenate([base, extra_emb[idx]])
            p_in = node_scores(s_in, names, text, rec, trained_emb)
            p_oov = node_scores(s_oov, names, text, rec, trained_emb)
            pred, t_pred = p_in.argmax(1), (t_in @ text.T).argmax(1)
            right, known = pred == y, p_in.max(1) >= rec.unknown_threshold
            rows.append({"seen_right": right[seen].mean(), "unseen_right": right[~seen].mean(),
                         "seen_right_known": (right & known)[seen].mean(),
                         "unseen_right_known": (right & known)[~seen].mean(),
                         "open_set_unknown": (p_oov.max(1) < rec.unknown_threshold).mean(),
                         "teacher_seen_right": (t_pred == y)[seen].mean(),
                         "teacher_unseen_right": (t_pred == y)[~seen].mean()})
            stolen.update(names[j] for j in pred[~right] if j >= n_base)
            stolen_t.update(names[j] for j in t_pred[t_pred != y] if j >= n_base)
        by_size[str(k)] = {m: _common.r(float(np.mean([row[m] for row in rows])), 4)
                           for m in rows[0]}
        taken = {"student": stolen.most_common(8), "teacher": stolen_t.most_common(8)}
        log(f"{name}: {k} extra names: {by_size[str(k)]}")
    crops = {"seen": int(seen.sum()), "unseen": int((~seen).sum()), "open_set": len(oov)}
    return {"student": name, "crops": crops,
            "labels": n_base, "by_extra_names": by_size,
            "wrong_answers_to_extra_names_at_largest_size": taken}


def plot(out: dict[str, Any], path: Path) -> Path:
    """Seen and unseen accuracy against the number of extra names (mean over runs), written
    to exactly ``path``."""
    from vl_distill_ros.plots import pyplot, save_figure

    plt = pyplot()

    sizes = [int(k) for k in out["mean"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label, style, colour in (
            ("unseen_right", "student, unseen", "o-", "tab:blue"),
            ("seen_right", "student, seen", "s-", "tab:orange"),
            ("teacher_unseen_right", "teacher, unseen", "o--", "tab:blue"),
            ("teacher_seen_right", "teacher, seen", "s--", "tab:orange")):
        ax.plot(sizes, [100 * out["mean"][str(k)][key] for k in sizes], style, color=colour,
                label=label, alpha=0.6 if key.startswith("teacher") else 1.0)
    ax.set_xlabel(f"names added to the {out['runs'][0]['labels']} labels")
    ax.set_ylabel("named right (top-1), %")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"Names not in view ({len(out['runs'])} student(s))")
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def run(a: argparse.Namespace, out: dict[str, Any]) -> None:
    """Fill ``out`` (see the module docstring)."""
    if not 1 <= a.draws <= MAX_DRAWS:
        raise BenchError(f"--draws must be in 1..{MAX_DRAWS}, got {a.draws}")
    extra = _names(a.names)
    sizes = _sizes(a.sizes, len(extra))
    out["extra_names"] = extra
    if a.run:
        subjects = [(str(path), *_from_run(path)) for path in a.run]
    else:
        subjects = [(str(a.bundle or "the packaged bundle"), *_from_bundle(a.bundle, a.config))]
    out["runs"] = [measure(*subject, extra, sizes, a.draws, a.seed) for subject in subjects]
    per_size = [{k: r["by_extra_names"][str(k)] for k in sizes} for r in out["runs"]]
    out["mean"] = {str(k): {m: _common.r(float(np.mean([f[k][m] for f in per_size])), 4)
                            for m in per_size[0][k]}
                   for k in sizes}
    if a.plot:
        out["plot"] = str(plot(out, a.plot))


def main(argv: list[str] | None = None) -> int:
    """Run the bench; print one JSON object."""
    return _common.bench_main("vocabulary_size", "names not in view: what they cost",
                              parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
