"""``vl-distill export``: write the deployable bundle the ROS node loads."""
from __future__ import annotations

import argparse
from pathlib import Path
import sys


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand and its options."""
    p = sub.add_parser(
        "export", help="export a trained student as a bundle for the node",
        description="Bundle = student weights + input spec + vocabulary with precomputed "
                    "teacher text embeddings + teacher id, in one checked zip file.")
    p.add_argument("--run", required=True, help="training output directory")
    p.add_argument("--out", required=True, help="bundle file to write, e.g. models/student.vdb")
    p.add_argument("--vocabulary", default=None,
                   help="vocabulary YAML (default: the run's split, ID + OOD labels)")
    p.add_argument("--labels", nargs="*", default=None, help="keep only these label keys/names")
    enrich = p.add_mutually_exclusive_group()
    enrich.add_argument("--enrich", dest="enrich", action="store_true", default=None,
                        help="embed labels with their descriptions")
    enrich.add_argument("--no-enrich", dest="enrich", action="store_false",
                        help="embed plain label names")
    p.add_argument("--no-onnx", dest="onnx", action="store_false",
                   help="leave out the ONNX copy of the student (halves the file; the node then "
                        "exports it in memory at start-up, ~1 s)")
    int8 = p.add_mutually_exclusive_group()
    int8.add_argument("--int8", dest="int8", action="store_true", default=None,
                      help="add the INT8 ONNX model (student_int8.onnx), calibrated on the run's "
                           "training images; fail if they are missing (default: add it when "
                           "they are on this machine)")
    int8.add_argument("--no-int8", dest="int8", action="store_false",
                      help="leave out the INT8 model (the node then runs in float32)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``vl-distill export``; returns the exit status."""
    from ..model.teachers.base import TeacherWeightsMissing
    from ..model.calibration import CalibrationError
    from ..model.bundle import BundleError, load_bundle
    from ..model.vocabulary import VocabularyError
    from ..training.export import export_bundle
    from ..training.trainer import TrainingError

    if Path(args.out).is_dir():
        print(f"vl-distill export: error: --out {args.out} is a directory; name the bundle "
              "file (e.g. models/ycb.vdb)", file=sys.stderr)
        return 2
    try:
        path = export_bundle(args.run, args.out, args.vocabulary, args.labels, args.enrich,
                             onnx=args.onnx, int8=args.int8)
        bundle = load_bundle(path)  # validate what was written
    except (TeacherWeightsMissing,  # e.g. open_clip weights not on this machine
            TrainingError, VocabularyError, BundleError, KeyError, CalibrationError,
            OSError) as exc:  # OSError: --out in a folder that is a file, not writable
        print(f"vl-distill export: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"[export] {path}: {len(bundle.vocabulary)} labels, teacher {bundle.teacher_id}")
    int8 = bundle.manifest["student"].get("onnx_int8")
    if int8:
        print(f"[export] INT8 model: top-1 agreement {int8['top1_agreement']:.4f}, mean cosine "
              f"{int8['mean_cosine']:.4f} with the float student on {int8['images']} images")
    return 0
