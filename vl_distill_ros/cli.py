"""The ``vl-distill`` command: one subcommand per module of :mod:`.commands`."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .commands import (ablate, evaluate, export, import_bop, label, make_bag, render,
                       render_cutouts, replay_eval, train, train_box_net)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="vl-distill",
        description="Distil a vision-language teacher into a small open-vocabulary student "
                    "(Li et al., ICCV 2023) and evaluate it.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (render, render_cutouts, train, evaluate, export, ablate, make_bag, import_bop,
                   replay_eval, label, train_box_net):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
