#!/usr/bin/env python3
"""Seconds per training epoch on the paper's YCB split, with the teacher cache warm.

Loads ``config/train_ycb.yaml`` (``--config``) with ``optim.epochs=1`` and a temporary
``output_dir``, checks that the rendered split exists and that every training image already
has a cached teacher embedding (so the teacher's cost is excluded, as in every epoch after
the first run), trains one epoch with :func:`vl_distill_ros.training.trainer.train` and
reports the trainer's own epoch time (the optimisation loop; validation and checkpointing
are reported separately in ``total_s``).

Prints ONE JSON object on stdout (the trainer's log goes to stderr). Exit status 2 with a
JSON ``error`` object when the data or the teacher cache are missing.

    .venv/bin/python bench/train_epoch.py [--config config/train_ycb.yaml] [--set key=value ...]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from _common import cpu_model, loadavg

HINT = ("run `make results` (renders the split and trains, filling the teacher cache) or "
        "`vl-distill render` followed by one `vl-distill train` first")


def fail(message: str, **extra: Any) -> int:
    """Print the JSON error object and the message; exit status 2."""
    print(json.dumps({"bench": "train_epoch", "error": message, "hint": HINT, **extra}))
    print(f"[bench] train_epoch: {message}; {HINT}", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="config/train_ycb.yaml", help="training config")
    ap.add_argument("--data-root", default=None,
                    help="rendered dataset root (default: the config's data.root, "
                         "data/ycb_renders)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (optim.threads); 0 keeps the config's value")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    metavar="KEY=VALUE", help="extra config override (repeatable)")
    return ap


def check_warm_cache(cfg) -> tuple[list, Any, str] | str:
    """(training images, vocabularies, teacher id) when every training image has a cached
    teacher embedding; else the reason (a string)."""
    from vl_distill_ros.model.teachers.factory import teacher_id_for
    from vl_distill_ros.training.data import load_vocabularies
    from vl_distill_ros.training.image_folder import list_image_folder
    from vl_distill_ros.training.teacher_cache import TeacherImageCache, file_digest

    train_dir = Path(cfg.data.root) / "train"
    if not train_dir.is_dir():
        return f"no rendered training split at {train_dir}"
    vocabs = load_vocabularies(cfg.data)
    paths, _ = list_image_folder(train_dir, vocabs.id, vocabs.id.keys)
    if not paths:
        return f"no training images for the split's labels under {train_dir}"
    teacher_id = teacher_id_for(cfg.teacher)
    cache = TeacherImageCache(cfg.data.cache_dir, teacher_id)
    missing = cache.missing([file_digest(p) for p in paths])
    if missing:
        return (f"teacher cache is cold: {len(missing)} of {len(paths)} training images have "
                f"no cached embedding for teacher {teacher_id!r} in {cfg.data.cache_dir}")
    return paths, vocabs, teacher_id


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    import torch

    from vl_distill_ros.config import ConfigError, load_train_config
    from vl_distill_ros.model.teachers.factory import teacher_id_for
    from vl_distill_ros.training.trainer import train

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_train_epoch_") as tmp:
        overrides = ["optim.epochs=1", f"output_dir={tmp}/run"]
        if args.data_root:
            overrides.append(f"data.root={args.data_root}")
        if args.threads > 0:
            overrides.append(f"optim.threads={args.threads}")
        overrides += list(args.overrides)
        try:
            cfg = load_train_config(args.config, overrides)
        except ConfigError as exc:
            return fail(f"invalid config: {exc}")
        checked = check_warm_cache(cfg)
        if isinstance(checked, str):
            extra = ({"teacher_id": teacher_id_for(cfg.teacher)}
                     if checked.startswith("teacher cache is cold") else {})
            return fail(checked, **extra)
        paths, vocabs, teacher_id = checked
        t_train = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # the trainer logs on stdout
            out = train(cfg, resume=False, progress=False)
        total_s = time.perf_counter() - t_train
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
                if line.strip()]
    row = rows[-1]
    n = len(paths)
    steps = max(1, n // cfg.optim.batch_size)
    if cfg.optim.max_steps_per_epoch > 0:
        steps = min(steps, cfg.optim.max_steps_per_epoch)
    epoch_s = float(row["epoch_time_s"])
    result = {
        "bench": "train_epoch",
        "machine": {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.is_available(),
                    "loadavg": loadavg()},
        "seconds_per_epoch": round(epoch_s, 2),
        "images_per_s": round(steps * cfg.optim.batch_size / epoch_s, 1),
        "steps_per_epoch": steps,
        "total_s": round(total_s, 2),
        "wall_s": round(time.perf_counter() - t_start, 2),
        "config": config_summary(args, cfg, overrides, n, len(vocabs.id), teacher_id),
        "val_id_acc": row.get("val_id_acc"),
        "loss": row.get("loss"),
    }
    print(json.dumps(result))
    return 0


def config_summary(args: argparse.Namespace, cfg, overrides: list[str], n: int, labels: int,
                   teacher_id: str) -> dict[str, Any]:
    """The ``config`` entry of the JSON object."""
    return {
        "config_file": args.config,
        # the temporary output_dir is left out
        "overrides": [o for o in overrides if not o.startswith("output_dir=")],
        "data_root": cfg.data.root, "train_images": n, "labels": labels,
        "teacher_id": teacher_id, "teacher_cache": "warm",
        "student": f"{cfg.student.backbone}@{cfg.student.image_size}",
        "freeze_stages": cfg.student.freeze_stages, "batch_size": cfg.optim.batch_size,
        "loss": {k: v for k, v in vars(cfg.loss).items() if k.endswith("_weight")},
        "device": cfg.optim.device,
    }


if __name__ == "__main__":
    sys.exit(main())
