"""Crash-safe file writes shared by bundles, checkpoints, caches and the vocabulary store.

:func:`atomic_write_bytes` writes a temporary file in the target's directory, flushes and
fsyncs it, renames it over the target with :func:`os.replace` and fsyncs the directory: a
crash leaves the old file or the new one, never a mix, and no temporary file behind.
:func:`set_aside` moves a corrupt file out of the way, keeping it as evidence.
:func:`replace_dir` publishes a finished folder (a rendered dataset, a bag) in one rename.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger(__name__)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Read once at import (os.umask is process-wide; reading it later would race threads).
_UMASK = _read_umask()


def _fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename in it is durable (best effort; not on all platforms)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably; creates parent directories.

    Temp file in the same directory, flush + fsync, :func:`os.replace`, fsync the directory.
    On any error the temp file is removed, the previous ``path`` (if any) is untouched and
    the error is re-raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide shipped files from others
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def set_aside(path: str | Path) -> Path | None:
    """Rename a corrupt file to ``<path>.corrupt-<UTC timestamp>``; return the new path.

    Returns None (after logging a warning) when the rename itself fails.
    """
    path = Path(path)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    try:
        os.replace(path, target)
    except OSError as exc:
        log.warning("could not move corrupt file %s aside: %s", path, exc)
        return None
    _fsync_dir(path.parent)
    return target


def replace_dir(new: str | Path, out: str | Path) -> Path:
    """Move the finished folder ``new`` to ``out`` (same file system) and return ``out``.

    An existing ``out`` is first renamed aside (``.<name>.old-*`` next to it), then ``new``
    is renamed into place and the old folder deleted, so ``out`` is at every moment either
    the complete old folder or the complete new one.
    """
    new, out = Path(new), Path(out)
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        old.rmdir()
        os.replace(out, old)
        os.replace(new, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, out)
    return out
