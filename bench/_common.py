"""Helpers shared by the bench scripts (not a bench itself: ``make bench`` skips ``_*.py``).

The scripts run as ``python bench/<name>.py`` from the repository root, so this folder is
on ``sys.path`` and they ``import _common``. Every bench prints ONE JSON object on stdout
(:func:`emit`) and its progress on stderr (:func:`log`); :func:`run_bench` turns a failure
into an ``"error"`` in that object and an exit status, :func:`machine_info` records the
machine the numbers come from.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

#: The repository root (the folder above ``bench/``).
REPO = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    """A progress line on stderr."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def non_finite(obj: Any, where: str = "") -> str | None:
    """The place (``a.b[2]``) of the first NaN or infinity in ``obj``, else None: strict JSON
    has no such numbers."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (where or "the value")
    if isinstance(obj, dict):
        items: Any = ((f"{where}.{k}" if where else str(k), v) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(obj))
    else:
        return None
    for place, value in items:
        found = non_finite(value, place)
        if found is not None:
            return found
    return None


def json_text(obj: dict) -> str:
    """``obj`` as strict JSON (indented; other types as ``str``).

    Raises:
        BenchError: ``obj`` holds a NaN or an infinity, which strict JSON cannot carry.
    """
    try:
        return json.dumps(obj, indent=2, default=str, allow_nan=False)
    except ValueError:
        place = non_finite(obj) or "a value"
        raise BenchError(f"the result is not strict JSON: {place} is not a finite "
                         "number") from None


def emit(obj: dict) -> None:
    """Print the one JSON object of the run on stdout (strict JSON: nothing is printed and
    :class:`BenchError` is raised when it holds a NaN or an infinity)."""
    print(json_text(obj), flush=True)


def emit_or_error(obj: dict, code: int = 0) -> int:
    """:func:`emit` ``obj`` and return ``code``; when it is not strict JSON, print a JSON
    object with the bench's name and the reason instead and return the error's exit status."""
    try:
        emit(obj)
    except BenchError as exc:
        emit({"bench": obj.get("bench"), "error": str(exc)})
        return exc.exit_code
    return code


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


# ==========================================================================================
# option types (argparse ``type=``): bad values end in argparse's one-line error, exit 2
# ==========================================================================================
def finite_float(text: str) -> float:
    """A finite number (NaN and infinities refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _checked(value: Any, text: str, ok: bool, need: str) -> Any:
    """``value``, or an ``ArgumentTypeError`` saying it ``must be {need}``."""
    if not ok:
        raise argparse.ArgumentTypeError(f"must be {need}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0."""
    value = finite_float(text)
    return _checked(value, text, value > 0, "above 0")


def non_negative_float(text: str) -> float:
    """A finite number, 0 or above."""
    value = finite_float(text)
    return _checked(value, text, value >= 0, "0 or above")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def positive_int(text: str) -> int:
    """An integer, 1 or above."""
    value = _integer(text)
    return _checked(value, text, value >= 1, "1 or above")


def non_negative_int(text: str) -> int:
    """An integer, 0 or above."""
    value = _integer(text)
    return _checked(value, text, value >= 0, "0 or above")


def write_first_or_refuse(out: Any, frames: Any, prog: str, nothing: str) -> int:
    """Write the camera bag ``out`` of ``frames`` (a generator) when it yields a frame: 0;
    else say ``{prog}: {nothing}: nothing to write`` on stderr, write nothing and return 2
    (an empty bag was written and reported as done)."""
    import itertools

    from vl_distill_ros.bags.bag_io import write_camera_bag

    first = next(frames, None)
    if first is None:
        print(f"{prog}: {nothing}: nothing to write", file=sys.stderr)
        return 2
    write_camera_bag(out, itertools.chain([first], frames))
    return 0


def png_path(text: str) -> Path:
    """Where a PNG figure goes: ``.png`` is added to a name without a suffix (the figure is
    written to exactly the path returned, which the JSON object names); another suffix, an
    empty name or an existing folder is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path")
    path = Path(text)
    if path.is_dir() or text.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"{text} is a folder: name a .png file")
    if not path.suffix:
        path = path.with_name(path.name + ".png")
    if path.suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"a figure is a .png file, got {text!r}")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder: name a .png file")
    return path


def args_config(a: argparse.Namespace) -> dict[str, Any]:
    """The parsed options as JSON values (paths, NaN and infinities as strings: an option
    that slipped past its checks must not make the run's JSON object invalid), for the
    ``"config"`` entry."""
    return {k: (str(v) if isinstance(v, Path) or (isinstance(v, float) and not math.isfinite(v))
                else v) for k, v in vars(a).items()}


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
    p.add_argument("--frames", type=positive_int, default=8,
                   help="depth frames to take (default 8)")
    p.add_argument("--repeats", type=positive_int, default=repeats,
                   help=f"rounds over the frames (default {repeats})")
    return p


@contextlib.contextmanager
def bag_errors(bag: Any) -> Iterator[None]:
    """A bag that cannot be read (``BagError`` inside: missing, not a bag, corrupt) as a
    :class:`BenchError` naming it (exit status 2)."""
    from vl_distill_ros.bags.raw_io import BagError

    try:
        yield
    except BagError as exc:
        text = str(exc)
        raise BenchError(text if str(bag) in text else f"{bag}: {text}") from None


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
    return emit_or_error(out, code)


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
