"""The ``vl-distill`` command: one subcommand per module of :mod:`.commands`."""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from typing import Iterator, Sequence

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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is (as Ctrl-C raises KeyboardInterrupt), so that its
    clean-up runs: a live replay stops its node and frees its shared memory, make-bag
    removes its partial bag (both were left behind by ``timeout`` or ``kill``)."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(f"signal {signum}")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While the command runs, SIGTERM raises :class:`Terminated` (main thread only; the
    previous handler comes back after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def printable_output() -> None:
    r"""Let stdout print any text: where it does not encode UTF-8 (the C locale with
    ``PYTHONUTF8=0``: ASCII), a character it cannot encode is written as ``\xe9``, not a
    UnicodeEncodeError that ends the command after its work (an ablation table's non-ASCII
    row names). stderr does so already."""
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    if encoding != "utf8" and hasattr(sys.stdout, "reconfigure"):
        with contextlib.suppress(Exception):   # a replaced stream that cannot be changed
            sys.stdout.reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (143 after SIGTERM, 130 after Ctrl-C
    where the command does not say otherwise)."""
    printable_output()
    parser = build_parser()
    args = parser.parse_args(argv)
    with _sigterm_as_interrupt():
        try:
            return int(args.func(args) or 0)
        except Terminated:
            print(f"vl-distill {args.command}: terminated", file=sys.stderr)
            return 143
        except KeyboardInterrupt:
            print(f"vl-distill {args.command}: interrupted", file=sys.stderr)
            return 130
        except ModuleNotFoundError as exc:
            if not exc.name or exc.name.split(".")[0] == __package__:
                raise               # our own module missing: a broken install, keep the trace
            print(f"error: vl-distill {args.command} needs the Python package that provides "
                  f"'{exc.name}', which is not installed here: install the project's "
                  "requirements (make setup, or pip install -r requirements.txt from its "
                  "source)", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
