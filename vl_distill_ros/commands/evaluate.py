"""``vl-distill eval``: score a trained run against its teacher."""
from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``eval`` subcommand and its options."""
    p = sub.add_parser(
        "eval", help="evaluate a trained student",
        description="ID accuracy, accuracy under shift among ID labels, accuracy on unseen "
                    "objects among OOD labels, all labels, macro F1, the teacher's zero-shot "
                    "accuracy on the same images, student-teacher embedding distances and "
                    "M_vlalign (k=2,3,5), generalised zero-shot seen/unseen/H. Evaluates a "
                    "training run (--run) or an exported bundle (--bundle with --config). "
                    "Writes metrics.json and PNG plots.")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="training output directory")
    which.add_argument("--bundle", help="an exported bundle (.vdb) to evaluate instead of a run; "
                                        "needs --config and --out")
    p.add_argument("--config", default=None,
                   help="with --bundle: the training YAML naming the teacher, vocabulary, "
                        "split, prompts, data root and open-set folder (the bundle's own, "
                        "e.g. config/ablation/gzsl_zero_shot_prior.yaml for the default bundle)")
    p.add_argument("--data-root", default=None,
                   help="rendered dataset root (default: the run's or the config's data.root)")
    p.add_argument("--out", default=None, help="output directory (default: <run>/eval)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="with --bundle: overrides of --config, e.g. "
                        "data.cache_dir=cache/teacher")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``vl-distill eval``; returns the exit status."""
    from ..model.teachers.base import TeacherWeightsMissing
    from ..model.calibration import CalibrationError
    from ..config import ConfigError
    from ..training.image_folder import DatasetError
    from ..model.vocabulary import VocabularyError
    from ..training.evaluate import evaluate_bundle, evaluate_run
    from ..training.trainer import TrainingError

    if args.bundle is None and (args.config or args.overrides):
        print("vl-distill eval: error: --config and KEY=VALUE overrides go with --bundle (a "
              "run's evaluation uses the run's own config)", file=sys.stderr)
        return 2
    if args.bundle is not None and not (args.config and args.out):
        print("vl-distill eval: error: --bundle needs --config (the training YAML naming the "
              "data, vocabulary and teacher) and --out (where to write the metrics)",
              file=sys.stderr)
        return 2
    try:
        if args.bundle is not None:
            result = evaluate_bundle(args.bundle, args.config, args.out, args.data_root,
                                     args.overrides, progress=not args.no_progress)
        else:
            result = evaluate_run(args.run, args.data_root, args.out,
                                  progress=not args.no_progress)
    except (TeacherWeightsMissing,  # e.g. open_clip weights not on this machine
            TrainingError, DatasetError, VocabularyError, CalibrationError, ConfigError,
            OSError) as exc:  # OSError: --out a file, not writable
        print(f"vl-distill eval: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(json.dumps(result["summary"], indent=2))
    return 0
