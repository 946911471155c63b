"""Helpers shared by the bench scripts (not a bench itself: ``make bench`` skips ``_*.py``).

The scripts run as ``python bench/<name>.py`` from the repository root, so this folder is
on ``sys.path`` and they ``import _common``. Every bench prints ONE JSON object on stdout
(:func:`emit`) and its progress on stderr (:func:`log`); :func:`run_bench` turns a failure
into an ``"error"`` in that object and an exit status, :func:`machine_info` records the
machine the numbers come from.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

#: The repository root (the folder above ``bench/``).
REPO = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    """A progress line on stderr."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def emit(obj: dict) -> None:
    """Print the one JSON object of the run on stdout."""
    print(json.dumps(obj, indent=2, default=str), flush=True)


class BenchError(RuntimeError):
    """The bench cannot run; ``exit_code`` 2 = bad input, 3 = the node failed; ``extra``
    goes into the JSON object."""

    def __init__(self, message: str, exit_code: int = 2, **extra: Any) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.extra = extra


def install_sigterm_handler() -> None:
    """SIGTERM -> KeyboardInterrupt in the main thread, so ``finally`` blocks clean up."""
    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, handler)


def args_config(a: argparse.Namespace) -> dict[str, Any]:
    """The parsed options as JSON values (paths as strings), for the ``"config"`` entry."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}


def run_bench(run: Callable[[], None], out: dict[str, Any]) -> int:
    """Call ``run()``, which fills ``out``; returns the exit status.

    A :class:`BenchError` puts its message (``"error"``) and extras into ``out`` and returns
    its ``exit_code``; an interruption (Ctrl-C, SIGTERM with :func:`install_sigterm_handler`)
    returns 130, any other exception 1 with a ``"traceback"``: the run still ends with one
    JSON object. A temporary folder ``run`` left in ``out["_tmp"]`` is deleted.
    """
    code = 0
    try:
        run()
    except BenchError as exc:
        out["error"] = str(exc)
        out.update(exc.extra)
        code = exc.exit_code
    except KeyboardInterrupt:
        out["error"] = "interrupted"
        code = 130
    except Exception as exc:  # noqa: BLE001 - still one JSON object on stdout
        import traceback

        out["error"] = f"unexpected error: {exc!r}"
        out["traceback"] = traceback.format_exc(limit=8)
        code = 1
    finally:
        tmp = out.pop("_tmp", None)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return code


def depth_frames_parser(doc: str, repeats: int) -> argparse.ArgumentParser:
    """The options of the benches that time work on a bag's depth frames: ``--bag`` (default
    the shipped sample bag), ``--frames`` and ``--repeats``; ``doc``'s first paragraph is
    the description."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--bag", default=str(REPO / "demo" / "sample_tabletop"),
                   help="an RGB-D camera bag (default: the shipped sample bag)")
    p.add_argument("--frames", type=int, default=8, help="depth frames to take (default 8)")
    p.add_argument("--repeats", type=int, default=repeats,
                   help=f"rounds over the frames (default {repeats})")
    return p


def bench_main(name: str, issue_target: Any, parser: argparse.ArgumentParser,
               run: Callable[[argparse.Namespace, dict[str, Any]], None],
               argv: Sequence[str] | None = None, wall_time: bool = True) -> int:
    """The body of a bench's ``main``: parse ``argv``, ``run(args, out)`` under
    :func:`run_bench` (with SIGTERM handled), print the one JSON object, return the status."""
    import time

    install_sigterm_handler()
    a = parser.parse_args(argv)
    out: dict[str, Any] = {"bench": name, "issue_target": issue_target,
                           "config": args_config(a)}
    t0 = time.monotonic()
    code = run_bench(lambda: run(a, out), out)
    if wall_time:
        out["wall_s"] = r(time.monotonic() - t0, 1)
    emit(out)
    return code


# ==========================================================================================
# machine
# ==========================================================================================
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else ``platform.processor()`` or "unknown"."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (2 decimals), None where unsupported."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def module_version(name: str) -> str | None:
    """``name.__version__`` of an importable module, else None (not installed or broken)."""
    try:
        return __import__(name).__version__
    except Exception:  # noqa: BLE001 - optional packages
        return None


def machine_info(modules: Sequence[str] = (), **extra: Any) -> dict[str, Any]:
    """CPU model, core counts, load average at the start, Python version and platform, then
    ``extra``, then the version of each of ``modules`` (None: not installed)."""
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg_start": loadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **extra,
    }
    for mod in modules:
        info[mod] = module_version(mod)
    return info


# ==========================================================================================
# statistics
# ==========================================================================================
def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values (``q`` in [0, 100])."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return float(sorted_values[min(len(sorted_values), rank) - 1])


def r(x: Any, nd: int = 2) -> Any:
    """``x`` rounded to ``nd`` decimals as a float (None stays None)."""
    return None if x is None else round(float(x), nd)
