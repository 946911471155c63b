"""Blend two box networks' weights: ``(1 - weight) * FIRST + weight * SECOND`` (WiSE-FT).

FIRST and SECOND are ``box_net.onnx`` files of ``vl-distill train-box-net``, SECOND
usually a further stage trained from FIRST (``init_from: FIRST``); see
:mod:`vl_distill_ros.training.box_net_blend`. The result loads as ``proposal_box_net``
(the node) or ``-p box_net=PATH`` (``bench/proposals_recall.py``,
``tools/make_proposal_groups.py --measure``).

Usage::

    .venv/bin/python tools/blend_box_nets.py runs/box_net_finetune/box_net.onnx \\
        runs/box_net_third/box_net.onnx --weight 0.4 --out runs/blend_04/box_net.onnx

(the shipped network's blend, as ``make box-net`` writes it)
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from vl_distill_ros.config import ConfigError
from vl_distill_ros.training.box_net_blend import blend_box_nets


def main(argv: Sequence[str] | None = None) -> int:
    """Write the blend; 0 on success, 2 (with the reason on stderr) on bad input."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", help="box_net.onnx weighted by 1 - WEIGHT")
    parser.add_argument("second", help="box_net.onnx weighted by WEIGHT")
    parser.add_argument("--weight", type=float, required=True, help="in [0, 1]")
    parser.add_argument("--out", required=True, help="the blended box_net.onnx to write")
    args = parser.parse_args(argv)
    try:
        path = blend_box_nets(args.first, args.second, args.weight, args.out)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
