"""Operating-system names for the package's worker threads (Linux).

Python names its threads for Python only: ``top -H``, ``ps -L``, ``perf`` and
``/proc/<pid>/task/<tid>/comm`` show every thread of the node as ``python``. The node's
threads (decoding and proposals, the student, the box network, the vocabulary, the text
encoder) call :func:`name_os_thread` when they start, so a robot's operator sees which of
them spends the CPU, and ``bench/node_throughput.py`` reports the CPU time of each.
Threads a library starts from a named thread inherit its name: ONNX Runtime's sessions are
made within :func:`os_thread_named` so that their intra-op pools carry ``vl_box_net`` and
``vl_student``.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import re
import sys
import threading
from typing import Callable, Iterator, TypeVar

__all__ = ["MAX_OS_NAME", "os_thread_name", "name_os_thread", "current_os_thread_name",
           "os_thread_named", "os_named"]

T = TypeVar("T")

#: Longest thread name Linux keeps (16 bytes with the terminating NUL).
MAX_OS_NAME = 15
#: ``prctl`` options that name the calling thread and read its name (linux/prctl.h).
_PR_SET_NAME = 15
_PR_GET_NAME = 16


def os_thread_name(name: str) -> str:
    """``name`` as the kernel keeps it: printable ASCII (others become ``_``), at most
    :data:`MAX_OS_NAME` characters. Raises ``ValueError`` for an empty name."""
    clean = re.sub(r"[^\x21-\x7e]", "_", str(name))[:MAX_OS_NAME]
    if not clean:
        raise ValueError("a thread name must not be empty")
    return clean


@functools.lru_cache(maxsize=1)
def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.prctl
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_ulong,
                   ctypes.c_ulong]
    fn.restype = ctypes.c_int
    return fn


def _set_raw(name: bytes) -> bool:
    """Set the calling thread's OS name to ``name`` as it is; False without ``prctl``."""
    prctl = _prctl()
    return prctl is not None and prctl(_PR_SET_NAME, name, 0, 0, 0) == 0


def _get_raw() -> bytes | None:
    """The calling thread's OS name as the kernel keeps it; None without ``prctl``."""
    prctl = _prctl()
    if prctl is None:
        return None
    buf = ctypes.create_string_buffer(MAX_OS_NAME + 1)
    return buf.value if prctl(_PR_GET_NAME, buf, 0, 0, 0) == 0 else None


def name_os_thread(name: str | None = None) -> bool:
    """Give the calling thread the OS name ``name`` (default: its Python name; see
    :func:`os_thread_name`). Returns whether it was set: False off Linux or when the C
    library has no ``prctl``; naming never raises there."""
    text = os_thread_name(threading.current_thread().name if name is None else name)
    return _set_raw(text.encode("ascii"))


def os_named(target: Callable[..., T], name: str) -> Callable[..., T]:
    """``target`` that first names its thread ``name`` in the OS (for ``threading.Thread``'s
    ``target``)."""
    @functools.wraps(target)
    def run(*args, **kwargs) -> T:
        name_os_thread(name)
        return target(*args, **kwargs)
    return run


def current_os_thread_name() -> str | None:
    """The calling thread's OS name; None off Linux or without ``prctl``."""
    raw = _get_raw()
    return None if raw is None else raw.decode("ascii", "replace")


@contextlib.contextmanager
def os_thread_named(name: str) -> Iterator[None]:
    """Within the block the calling thread carries the OS name ``name``, then its own again
    (byte for byte): the threads a library starts in the block (ONNX Runtime's intra-op
    pool, when a session is made) keep ``name``."""
    old = _get_raw()
    renamed = old is not None and name_os_thread(name)
    try:
        yield
    finally:
        if renamed:
            _set_raw(old)
