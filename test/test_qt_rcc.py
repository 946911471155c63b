"""tools/qt_rcc.py: reading Qt binary resource files (how tools/fetch_gcompris_photos.sh takes
the real photos of bench/real_photos_gcompris.json out of Debian's gcompris-qt-data).

The files are written here by :func:`write_rcc`, this test's own writer of the layout Qt's
``rcc`` tool produces (breadth-first tree, children of a folder contiguous); damaged copies
of them check that a bad file is an error, not a crash or a silent partial read."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
qt_rcc = load_script(ROOT / "tools" / "qt_rcc.py")


def write_rcc(files: dict[str, bytes], version: int = 2, compress: tuple[str, ...] = ()
              ) -> bytes:
    """A resource file holding ``files`` (path -> bytes); the paths in ``compress`` stored
    zlib-compressed, as rcc does for files that shrink."""
    tree: dict = {}
    for path, blob in files.items():
        *folders, leaf = path.split("/")
        node = tree
        for folder in folders:
            node = node.setdefault(folder, {})
        node[leaf] = (path, blob)
    names, blobs, nodes = bytearray(), bytearray(), []

    def name_offset(name: str) -> int:
        offset = len(names)
        names.extend(struct.pack(">HI", len(name), 0) + name.encode("utf-16-be"))
        return offset

    queue = [("", tree)]
    nodes.append(None)                       # the root, filled in below
    index_of = {id(tree): 0}
    while queue:
        name, folder = queue.pop(0)
        first = len(nodes)
        children = sorted(folder.items())
        nodes.extend([None] * len(children))
        index = index_of[id(folder)]
        nodes[index] = (name, 2, struct.pack(">II", len(children), first))
        for k, (child, value) in enumerate(children):
            if isinstance(value, dict):
                index_of[id(value)] = first + k
                queue.append((child, value))
                continue
            path, blob = value
            flags = 0
            if path in compress:
                blob, flags = struct.pack(">I", len(blob)) + zlib.compress(blob), 1
            nodes[first + k] = (child, flags, struct.pack(">HHI", 0, 0, len(blobs)))
            blobs.extend(struct.pack(">I", len(blob)) + blob)
    node_bytes = bytearray()
    for name, flags, rest in nodes:
        offset = name_offset(name) if name else 0
        node_bytes.extend(struct.pack(">IH", offset, flags) + rest
                          + (b"\0" * 8 if version >= 2 else b""))
    header = 20 if version < 3 else 24
    tree_at = header
    data_at = tree_at + len(node_bytes)
    names_at = data_at + len(blobs)
    head = b"qres" + struct.pack(">IIII", version, tree_at, data_at, names_at)
    if version >= 3:
        head += struct.pack(">I", 0)
    return head + bytes(node_bytes) + bytes(blobs) + bytes(names)


FILES = {
    "app/images/tools/hammer.webp": b"RIFF-hammer" * 50,
    "app/images/tools/README": b"Copyright: someone\nLicense: CC0-1.0\n",
    "app/images/others/plate.webp": b"RIFF-plate",
    "app/Main.qml": b"import QtQuick 2.0\n",
}


@pytest.mark.parametrize("version", [1, 2, 3])
def test_every_file_reads_back_with_its_bytes(version):
    data = write_rcc(FILES, version, compress=("app/images/tools/hammer.webp",))
    assert qt_rcc.read_rcc(data) == FILES


def test_extract_writes_the_files_below_a_folder_and_nothing_else(tmp_path):
    src = tmp_path / "a.rcc"
    src.write_bytes(write_rcc(FILES, compress=("app/Main.qml",)))
    written = qt_rcc.extract(src, tmp_path / "out", under="app/images/tools/")
    assert sorted(p.name for p in written) == ["README", "hammer.webp"]
    assert (tmp_path / "out" / "hammer.webp").read_bytes() == FILES["app/images/tools/hammer.webp"]
    assert not (tmp_path / "out" / "plate.webp").exists()
    with pytest.raises(qt_rcc.RccError, match="nothing below 'app/sounds'"):
        qt_rcc.extract(src, tmp_path / "out2", under="app/sounds")
    assert qt_rcc.main([str(src), str(tmp_path / "out3"), "--under", "app/images"]) == 0
    assert (tmp_path / "out3" / "others" / "plate.webp").read_bytes() == b"RIFF-plate"


def _corrupt(data: bytes, at: int, value: bytes) -> bytes:
    return data[:at] + value + data[at + len(value):]


def test_damaged_files_are_errors_that_say_what_is_wrong(tmp_path):
    good = write_rcc(FILES, compress=("app/images/tools/hammer.webp",))
    _, tree_at, data_at, names_at = struct.unpack(">IIII", good[4:20])
    # the compressed file's zlib stream follows its unpacked size
    zlib_at = good.index(struct.pack(">I", len(FILES["app/images/tools/hammer.webp"])),
                         data_at) + 4
    cases = {
        "no 'qres' header": b"PK\x03\x04" + good[4:],
        "unknown resource format 9": _corrupt(good, 4, struct.pack(">I", 9)),
        "outside the file": good[:names_at + 3],
        "outside the file ": _corrupt(good, 16, struct.pack(">I", len(good) + 10)),
        "visits node 0 twice": _corrupt(good, tree_at + 10, struct.pack(">I", 0)),
        "does not unpack": _corrupt(good, zlib_at, b"\xff\xff\xff\xff"),
    }
    for message, data in cases.items():
        with pytest.raises(qt_rcc.RccError, match=message.strip()):
            qt_rcc.read_rcc(data)
    bad = tmp_path / "bad.rcc"
    bad.write_bytes(b"not a resource file at all")
    assert qt_rcc.main([str(bad)]) == 1
    assert qt_rcc.main([str(tmp_path / "missing.rcc")]) == 1


def test_a_zstd_file_is_refused_and_a_bomb_is_bounded(monkeypatch):
    good = write_rcc({"a/b.bin": b"x" * 1000}, compress=("a/b.bin",))
    _, tree_at, _, _ = struct.unpack(">IIII", good[4:20])
    # node 2 is the file (root, folder a, then b.bin); its flags sit after the name offset
    zstd = _corrupt(good, tree_at + 2 * 22 + 4, struct.pack(">H", 4))
    with pytest.raises(qt_rcc.RccError, match="zstd"):
        qt_rcc.read_rcc(zstd)
    monkeypatch.setattr(qt_rcc, "MAX_FILE_BYTES", 500)
    with pytest.raises(qt_rcc.RccError, match="unpacks to 1000 bytes, more than 500"):
        qt_rcc.read_rcc(good)


def test_shared_data_names_and_a_root_file_are_refused_and_all_files_are_bounded(
        tmp_path, monkeypatch):
    """Eight file nodes pointing at one 256 MiB zlib bomb (a 261 kB file) took 2.4 GB: each
    file's bound held, all of them together had none. A name with a NUL gave a ValueError
    traceback when written; a root node that is a file wrote DEST itself; a FIFO hung."""
    import os

    good = write_rcc({"a/x.bin": b"x" * 1000, "a/y.bin": b"y" * 1000},
                     compress=("a/x.bin", "a/y.bin"))
    _, tree_at, _, _ = struct.unpack(">IIII", good[4:20])
    x_offset = good[tree_at + 2 * 22 + 10:tree_at + 2 * 22 + 14]   # node 2: a/x.bin
    shared = _corrupt(good, tree_at + 3 * 22 + 10, x_offset)     # node 3 reads x's data
    with pytest.raises(qt_rcc.RccError, match="its data is another file's"):
        qt_rcc.read_rcc(shared)
    monkeypatch.setattr(qt_rcc, "MAX_TOTAL_BYTES", 1500)
    with pytest.raises(qt_rcc.RccError, match="more than 1500 bytes in all"):
        qt_rcc.read_rcc(good)
    monkeypatch.undo()
    assert len(qt_rcc.read_rcc(good)) == 2
    with pytest.raises(qt_rcc.RccError, match=r"named 'a\\x00b'"):
        qt_rcc.read_rcc(write_rcc({"a\x00b": b"x"}))
    root_file = _corrupt(good, tree_at + 4, struct.pack(">H", 0))
    with pytest.raises(qt_rcc.RccError, match="root of the tree is a file"):
        qt_rcc.read_rcc(root_file)
    fifo = tmp_path / "pipe.rcc"
    os.mkfifo(fifo)
    assert qt_rcc.main([str(fifo), str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out").exists()
