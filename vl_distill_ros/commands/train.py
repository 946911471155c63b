"""``vl-distill train``: offline distillation from a YAML config plus overrides."""
from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand and its options."""
    p = sub.add_parser(
        "train", help="distil the teacher into a student",
        description="Train a student from a YAML config (config/train_ycb.yaml). Runs on the "
                    "CPU, one GPU, or many under torchrun (DistributedDataParallel).")
    p.add_argument("--config", required=True, help="training YAML (see config/train_ycb.yaml)")
    p.add_argument("--resume", action="store_true",
                   help="continue from <output_dir>/checkpoint.pt when it exists")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides with dotted keys, e.g. optim.epochs=2 loss.mse_weight=1")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``vl-distill train``; returns the exit status."""
    from ..model.teachers.base import TeacherWeightsMissing
    from ..model.calibration import CalibrationError
    from ..config import ConfigError, load_train_config
    from ..model.vocabulary import VocabularyError
    from ..training.image_folder import DatasetError
    from ..training.trainer import TrainingError, train

    try:
        cfg = load_train_config(args.config, args.overrides)
        out = train(cfg, resume=args.resume, progress=not args.no_progress)
    except (TeacherWeightsMissing,  # e.g. open_clip weights not on this machine
            ConfigError, VocabularyError, DatasetError, TrainingError, CalibrationError,
            OSError) as exc:  # OSError: output_dir a file, not writable, disk full
        print(f"vl-distill train: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"[train] done: {out}")
    return 0
