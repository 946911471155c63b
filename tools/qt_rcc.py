#!/usr/bin/env python3
"""Read a Qt binary resource file (``.rcc``, formats 1-3) and write out the files it holds.

Some Debian packages ship their pictures only inside such files (GCompris's
``gcompris-qt-data``: ``/usr/share/gcompris-qt/rcc/*.rcc``). ``tools/fetch_gcompris_photos.sh``
uses this to take the real photos of ``bench/real_photos_gcompris.json`` out of one, without
Qt. Standard library only, so it runs before the project's environment exists.

The format (Qt's ``rcc`` tool, ``QResourceRoot``): a 20-byte header (``qres``, version, and
the offsets of the tree, the data and the names), a tree of fixed-size nodes (14 bytes in
format 1, 22 from format 2 on: name offset, flags, then a directory's child count and first
child, or a file's locale and data offset), each file's data as a 4-byte length and its bytes
(zlib-compressed after a 4-byte size when flag 1 is set; flag 4, zstd, is not read here), and
each name as a 2-byte length, a 4-byte hash and UTF-16 text.

    python3 tools/qt_rcc.py FILE.rcc                       # list what it holds
    python3 tools/qt_rcc.py FILE.rcc DEST --under PREFIX   # write the files below PREFIX
"""
from __future__ import annotations

import argparse
import os
import stat
import struct
import sys
import zlib
from pathlib import Path

#: Node flags of the tree.
COMPRESSED, DIRECTORY, COMPRESSED_ZSTD = 1, 2, 4
#: Bound on the files one resource file may hold, on one file's unpacked size, on all its
#: files' unpacked sizes together (file nodes may share one compressed blob: without it, a
#: 261 kB file of 8 nodes pointing at one 256 MiB zlib bomb took 2.4 GB), and on its own size.
MAX_FILES = 100_000
MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_TOTAL_BYTES = 512 * 1024 * 1024
MAX_RCC_BYTES = 512 * 1024 * 1024


class RccError(ValueError):
    """The file is not a Qt resource file this reader understands, or it is damaged."""


def read_rcc(data: bytes) -> dict[str, bytes]:
    """Every file of the resource file ``data``: its path (``/``-separated, from the root,
    without a leading ``/``) -> its bytes, unpacked.

    Raises:
        RccError: no ``qres`` header, an unknown format, offsets or lengths outside the
            file, a directory loop, a name with control characters, a file at the root, two
            files sharing their data, a zstd-compressed file, a file that does not unpack, or
            more than :data:`MAX_TOTAL_BYTES` unpacked in all.
    """
    if len(data) < 20 or data[:4] != b"qres":
        raise RccError("not a Qt resource file (no 'qres' header)")
    version, tree, blobs, names = struct.unpack(">IIII", data[4:20])
    if version not in (1, 2, 3):
        raise RccError(f"unknown resource format {version} (1-3 are read)")
    node_size = 14 if version == 1 else 22

    def take(offset: int, size: int, what: str) -> bytes:
        if offset < 0 or size < 0 or offset + size > len(data):
            raise RccError(f"{what} lies outside the file (offset {offset}, {size} bytes)")
        return data[offset:offset + size]

    def name_at(offset: int) -> str:
        (length,) = struct.unpack(">H", take(names + offset, 2, "a name's length"))
        text = take(names + offset + 6, 2 * length, "a name")
        try:
            name = text.decode("utf-16-be")
        except UnicodeDecodeError as exc:
            raise RccError(f"a name does not decode: {exc}") from None
        if not name or "/" in name or name in (".", "..") or \
                any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
            raise RccError(f"a file or folder is named {name!r}")
        return name

    out: dict[str, bytes] = {}
    total = 0
    seen: set[int] = set()
    data_offsets: set[int] = set()     # rcc writes each file's data once
    stack: list[tuple[int, str]] = [(0, "")]
    while stack:
        index, prefix = stack.pop()
        if index in seen:
            raise RccError(f"the tree visits node {index} twice")
        seen.add(index)
        node = take(tree + index * node_size, 14, f"tree node {index}")
        name_offset, flags = struct.unpack(">IH", node[:6])
        path = prefix + name_at(name_offset) if index else ""
        if flags & DIRECTORY:
            count, first = struct.unpack(">II", node[6:14])
            if count > MAX_FILES or first + count > MAX_FILES:
                raise RccError(f"{path or '/'}: {count} children, more than this reader takes")
            stack += [(child, path + "/" if path else "") for child in range(first, first + count)]
            continue
        if not index:
            raise RccError("the root of the tree is a file, not a folder")
        if len(out) >= MAX_FILES:
            raise RccError(f"more than {MAX_FILES} files")
        (offset,) = struct.unpack(">I", node[10:14])
        if offset in data_offsets:
            raise RccError(f"{path}: its data is another file's (offset {offset})")
        data_offsets.add(offset)
        (length,) = struct.unpack(">I", take(blobs + offset, 4, f"{path}'s length"))
        blob = take(blobs + offset + 4, length, f"{path}'s data")
        if flags & COMPRESSED_ZSTD:
            raise RccError(f"{path} is zstd-compressed (not read here)")
        if flags & COMPRESSED:
            if length < 4:
                raise RccError(f"{path}: compressed data without its size")
            (size,) = struct.unpack(">I", blob[:4])
            if size > MAX_FILE_BYTES:
                raise RccError(f"{path} unpacks to {size} bytes, more than {MAX_FILE_BYTES}")
            if total + size > MAX_TOTAL_BYTES:
                raise RccError(f"the files unpack to more than {MAX_TOTAL_BYTES} bytes in all")
            unpacker = zlib.decompressobj()
            try:
                blob = unpacker.decompress(blob[4:], MAX_FILE_BYTES + 1)
            except zlib.error as exc:
                raise RccError(f"{path} does not unpack: {exc}") from None
            if len(blob) != size:
                raise RccError(f"{path} unpacks to {len(blob)} bytes, its header says {size}")
        total += len(blob)
        if total > MAX_TOTAL_BYTES:
            raise RccError(f"the files unpack to more than {MAX_TOTAL_BYTES} bytes in all")
        out[path] = blob
    return out


def read_rcc_file(source: Path) -> dict[str, bytes]:
    """:func:`read_rcc` of the regular file ``source`` (at most :data:`MAX_RCC_BYTES`).

    Raises:
        RccError: not a regular file, too large, or see :func:`read_rcc`.
        OSError: it cannot be read.
    """
    fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK)   # a FIFO does not block the open
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RccError(f"{source} is not a regular file")
        if info.st_size > MAX_RCC_BYTES:
            raise RccError(f"{source} holds {info.st_size} bytes, more than {MAX_RCC_BYTES}")
        return read_rcc(f.read(MAX_RCC_BYTES + 1))


def extract(source: Path, dest: Path, under: str = "") -> list[Path]:
    """Write the files of resource file ``source`` whose path starts with ``under`` into
    ``dest``, keeping their paths below ``under``; returns the paths written.

    Raises:
        RccError: see :func:`read_rcc`; also when nothing lies below ``under``.
        OSError: ``source`` cannot be read or ``dest`` written.
    """
    prefix = under.strip("/")
    prefix = prefix + "/" if prefix else ""
    written = []
    for path, blob in sorted(read_rcc_file(source).items()):
        if not path.startswith(prefix):
            continue
        target = dest / path[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)
        written.append(target)
    if not written:
        raise RccError(f"{source}: nothing below {under!r}")
    return written


def main(argv: list[str] | None = None) -> int:
    """List a resource file, or write out its files; exit status 1 on a bad file."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rcc", type=Path, help="the .rcc file")
    ap.add_argument("dest", type=Path, nargs="?", help="folder to write the files into")
    ap.add_argument("--under", default="", help="only the files below this path")
    a = ap.parse_args(argv)
    try:
        if a.dest is None:
            for path, blob in sorted(read_rcc_file(a.rcc).items()):
                print(f"{len(blob):>10} {path}")
        else:
            print(f"qt_rcc: {len(extract(a.rcc, a.dest, a.under))} files into {a.dest}")
    except (RccError, OSError) as exc:
        print(f"qt_rcc: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
