"""Crash-safe file writes shared by bundles, checkpoints, caches and the vocabulary store.

:func:`atomic_write_bytes` writes a temporary file in the target's directory, flushes and
fsyncs it, renames it over the target with :func:`os.replace` and fsyncs the directory: a
crash leaves the old file or the new one, never a mix, and no temporary file behind.
:func:`set_aside` moves a corrupt file out of the way, keeping it as evidence.
:func:`replace_dir` publishes a finished folder (a rendered dataset, a bag) in one rename.
:func:`read_regular_file` reads a small input file without ever blocking or exhausting memory
(FIFOs, devices and directories are refused before they are opened).
"""
from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import stat
import tempfile
import time
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


class FileRejected(OSError):
    """An input file that is not a regular file or is over its size limit (says which)."""


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def read_regular_file(path: str | Path, max_bytes: int) -> bytes:
    """Read ``path`` whole, refusing anything but a regular file of at most ``max_bytes``.

    The file type and size are checked with :func:`os.stat` before opening, and the file is
    opened with ``O_NONBLOCK`` and checked again on the open descriptor, so a FIFO without a
    writer, ``/dev/zero`` or a file that grows meanwhile can neither block the caller nor fill
    its memory (at most ``max_bytes + 1`` bytes are read).

    Raises:
        FileNotFoundError: no such file.
        FileRejected: not a regular file, or larger than ``max_bytes`` (the message says which).
        OSError: any other error opening or reading it.
    """
    path = Path(path)
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise FileRejected(f"{path} is {_file_kind(st.st_mode)}, not a regular file")
    if st.st_size > max_bytes:
        raise FileRejected(f"{path} is {st.st_size} bytes; the limit is {max_bytes} bytes")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)  # the path may have been replaced between stat and open
        if not stat.S_ISREG(st.st_mode):
            raise FileRejected(f"{path} is {_file_kind(st.st_mode)}, not a regular file")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > max_bytes:
        raise FileRejected(f"{path} is larger than the limit of {max_bytes} bytes")
    return b"".join(chunks)


def _make_parent(path: Path) -> None:
    """``mkdir -p`` of ``path``'s folder; a regular file in the way gets a clear error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (path.parent, *path.parent.parents)
                        if p.exists() and not p.is_dir()), None)
        if blocker is None:
            raise
        raise NotADirectoryError(errno.ENOTDIR, f"cannot create the folder of {path}: "
                                                f"{blocker} is a file, not a directory") from None


#: Age (s) after which a temp file of :func:`atomic_write_bytes` is a crashed writer's.
STALE_TEMP_AGE_S = 600.0


def remove_stale_temporaries(path: Path, max_age_s: float = STALE_TEMP_AGE_S) -> int:
    """Remove the temp files that writers of ``path`` killed mid-write (SIGKILL, power
    loss) left beside it (``.<name>.XXXXXXXX.tmp``, older than ``max_age_s``: a live
    writer's is seconds old); returns how many. Errors are ignored."""
    pattern = re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}\.tmp")
    removed = 0
    now = time.time()
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return 0
    for entry in entries:
        try:
            if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False) \
                    and now - entry.stat(follow_symlinks=False).st_mtime > max_age_s:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return removed


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably; creates parent directories.

    Temp file in the same directory, flush + fsync, :func:`os.replace`, fsync the directory.
    On any error the temp file is removed, the previous ``path`` (if any) is untouched and
    the error is re-raised. Temp files of earlier writers of ``path`` that were killed
    mid-write are removed (:func:`remove_stale_temporaries`).
    """
    path = Path(path)
    _make_parent(path)
    remove_stale_temporaries(path)
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
