#!/usr/bin/env python3
"""Write a copy of a camera bag whose colour frames went through real-camera effects.

The main camera's frames (``/camera/image_raw``) of ``BAG`` that have ground truth are
written to ``OUT`` (the project's bag format, ``docs/bags.md``) with their colour image
degraded by ``--degrade CHAIN`` (the chain of ``bench/proposals_recall.py --degrade``, see
``bench/_degrade.py``; seeded by the frame's place), their ground truth, and their
registered depth and intrinsics unchanged.
Score the copy with ``vl-distill replay-eval OUT --offline`` to see what the effects do to
naming as well as to proposals:

    .venv/bin/python bench/degrade_bag.py BAG OUT --degrade exposure:0.4+noise:10
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from _common import write_first_or_refuse
from _degrade import Step, degrade, parse_degradation


def degraded_frames(bag: str | Path, steps: Sequence[Step]) -> Iterator:
    """The ``BagFrame`` of every frame of ``bag`` with ground truth, its colour image
    degraded by ``steps`` (:func:`parse_degradation`; ``numpy.random.default_rng([0, i])``
    for the i-th frame)."""
    from vl_distill_ros.bags.bag_io import BagFrame, BagTopics, read_camera_bag

    contents = read_camera_bag(bag)
    labelled = ((m, contents.objects_for(m.topic, m.stamp_ns)) for m in
                contents.rgbd_frames([BagTopics().camera], tolerance_ns=20_000_000))
    for i, (msg, objects) in enumerate((m, o) for m, o in labelled if o is not None):
        image = degrade(msg.image, steps, np.random.default_rng([0, i]))
        with_depth = msg.depth is not None and msg.camera_info is not None
        yield BagFrame(msg.stamp_ns, image, list(objects),
                       depth=msg.depth if with_depth else None,
                       intrinsics=tuple(msg.camera_info[:4]) if with_depth else None)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and write the degraded copy."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bag", help="camera bag with ground truth (make-bag output)")
    ap.add_argument("out", help="folder of the degraded copy (must not exist)")
    ap.add_argument("--degrade", required=True, metavar="CHAIN",
                    help="real-camera effects, e.g. motion:9 or exposure:0.4+noise:10")
    args = ap.parse_args(argv)
    try:
        steps = parse_degradation(args.degrade)
    except ValueError as exc:
        ap.error(f"--degrade: {exc}")
    from vl_distill_ros.bags.bag_io import BagError

    try:
        status = write_first_or_refuse(
            args.out, degraded_frames(args.bag, steps), "degrade_bag",
            f"{args.bag} has no frame of the main camera with ground truth")
        if status:
            return status
    except (BagError, OSError) as exc:
        print(f"degrade_bag: {exc}", file=sys.stderr)
        return 2
    print(f"degrade_bag: wrote {args.out} ({args.degrade})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
