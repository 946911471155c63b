"""``vl-distill ablate``: the results tables of docs/results.md from configs in config/ablation/."""
from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``ablate`` subcommand and its options."""
    p = sub.add_parser(
        "ablate", help="render, train and evaluate every ablation config; write the table",
        description="Renders the dataset if missing (YCB models folder: "
                    "$VL_DISTILL_YCB_MODELS, default ../shared/ycb_models), trains each row's "
                    "config (resuming finished or interrupted runs), evaluates it and writes "
                    "results.md, results.json and results.png to the ablation's out_dir.")
    p.add_argument("--config", default="config/ablation/ycb_paper.yaml",
                   help="ablation YAML listing {row, config} entries")
    p.add_argument("--skip-render", action="store_true", help="never render; data must exist")
    p.add_argument("--force", action="store_true", help="retrain runs that already finished")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``vl-distill ablate``; returns the exit status."""
    from ..model.teachers.base import TeacherWeightsMissing
    from ..model.calibration import CalibrationError
    from ..config import ConfigError
    from ..training.image_folder import DatasetError
    from ..model.vocabulary import VocabularyError
    from ..sim.meshes import RenderError
    from ..training.ablation import run_ablation
    from ..training.trainer import TrainingError

    try:
        run_ablation(args.config, args.skip_render, args.force, progress=not args.no_progress)
    except (TeacherWeightsMissing,  # e.g. open_clip weights not on this machine
            ConfigError, DatasetError, VocabularyError, TrainingError, CalibrationError,
            RenderError, OSError) as exc:
        print(f"vl-distill ablate: error: {exc}", file=sys.stderr)
        return 2
    return 0
