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
                    "M_vlalign (k=2,3,5). Writes metrics.json and PNG plots.")
    p.add_argument("--run", required=True, help="training output directory")
    p.add_argument("--data-root", default=None, help="rendered dataset root (default: the run's)")
    p.add_argument("--out", default=None, help="output directory (default: <run>/eval)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``vl-distill eval``; returns the exit status."""
    from ..model.calibration import CalibrationError
    from ..training.image_folder import DatasetError
    from ..model.vocabulary import VocabularyError
    from ..training.evaluate import evaluate_run
    from ..training.trainer import TrainingError

    try:
        result = evaluate_run(args.run, args.data_root, args.out, progress=not args.no_progress)
    except (TrainingError, DatasetError, VocabularyError, CalibrationError) as exc:
        print(f"vl-distill eval: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(json.dumps(result["summary"], indent=2))
    return 0
