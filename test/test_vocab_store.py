"""The node's persisted vocabulary: atomic saves, corrupt files set aside, missing -> None."""
import logging
import os

import pytest

from vl_distill_ros import atomic_io
from vl_distill_ros.model.vocab_store import (
    load_vocabulary_store,
    load_vocabulary_store_result,
    save_vocabulary_atomic,
)
from vl_distill_ros.model.vocabulary import Vocabulary

VOCAB = Vocabulary.from_names(["banana", "power drill", "mug"],
                              ["A curved yellow fruit.", "", "A red ceramic cup with a handle."])


def test_round_trip_creates_parents_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "a" / "b" / "vocab.yaml"
    assert save_vocabulary_atomic(VOCAB, path) == path
    assert load_vocabulary_store(path) == VOCAB
    assert Vocabulary.load(path) == VOCAB  # same format as config/ycb_vocabulary.yaml
    assert os.listdir(path.parent) == ["vocab.yaml"]
    other = Vocabulary.from_names(["cup"])
    save_vocabulary_atomic(other, path)
    result = load_vocabulary_store_result(path)
    assert result.vocabulary == other and result.status == "loaded" and result.error is None
    assert os.listdir(path.parent) == ["vocab.yaml"]


def test_missing_file_gives_none(tmp_path):
    path = tmp_path / "nope.yaml"
    assert load_vocabulary_store(path) is None
    result = load_vocabulary_store_result(path)
    assert result.status == "missing" and result.error is None and result.moved_to is None


def test_failed_replace_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "vocab.yaml"
    save_vocabulary_atomic(VOCAB, path)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic_io.os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        save_vocabulary_atomic(Vocabulary.from_names(["cup"]), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["vocab.yaml"]
    assert load_vocabulary_store(path) == VOCAB


@pytest.mark.parametrize("content,reason", [
    (b"labels: [unclosed\n", "not valid YAML"),
    (b"\xff\xfe\x00garbage", "not valid YAML"),
    (b"labels:\n  - name: cup\n  - name: CUP\n", "duplicate label"),
    (b"", "expected a mapping"),
])
def test_corrupt_file_is_set_aside_with_reason(tmp_path, caplog, content, reason):
    path = tmp_path / "vocab.yaml"
    path.write_bytes(content)
    with caplog.at_level(logging.ERROR, logger="vl_distill_ros.model.vocab_store"):
        result = load_vocabulary_store_result(path)
    assert result.vocabulary is None and result.status == "corrupt"
    assert reason in result.error
    assert not path.exists()
    assert result.moved_to is not None and result.moved_to.read_bytes() == content
    assert result.moved_to.name.startswith("vocab.yaml.corrupt-")
    assert str(path) in caplog.text and reason in caplog.text
    # the next save works and the evidence stays
    save_vocabulary_atomic(VOCAB, path)
    assert load_vocabulary_store(path) == VOCAB
    assert result.moved_to.exists()


def test_unreadable_store_is_left_in_place(tmp_path):
    path = tmp_path / "vocab.yaml"
    path.mkdir()  # a directory where the file should be
    result = load_vocabulary_store_result(path)
    assert result.status == "unreadable" and result.vocabulary is None
    assert result.moved_to is None and path.is_dir()


def test_store_that_is_a_fifo_or_device_is_unreadable_without_blocking(tmp_path):
    """A FIFO without a writer (or /dev/zero) as the store never blocks the node's start-up."""
    import threading
    from pathlib import Path

    fifo = tmp_path / "store.yaml"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        out = {}
        thread = threading.Thread(
            target=lambda p=path: out.setdefault("r", load_vocabulary_store_result(p)),
            daemon=True)
        thread.start()
        thread.join(5.0)
        try:
            assert not thread.is_alive(), f"reading {path} blocked"
        finally:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        result = out["r"]
        assert result.status == "unreadable" and "not a regular file" in result.error
        assert path.exists()  # left in place


def test_store_under_a_regular_file_gets_a_clear_message(tmp_path):
    blocker = tmp_path / "notadir"
    blocker.write_text("I am a file\n")
    with pytest.raises(OSError) as err:
        save_vocabulary_atomic(VOCAB, blocker / "sub" / "vocab.yaml")
    assert f"{blocker} is a file, not a directory" in str(err.value)
    assert "File exists" not in str(err.value)
    assert blocker.read_text() == "I am a file\n"


def test_every_vocabulary_the_node_accepts_saves_and_restores(tmp_path, monkeypatch):
    """1000 labels of 64-character names, 300-character descriptions and 128-character keys
    in 3-byte characters pass validation and were saved (1.3 MB), then refused at the next
    start as over the 1 MiB a vocabulary file may have: the store reads back what it
    writes, and refuses up front what it could not."""
    import yaml

    from vl_distill_ros.model import vocab_store
    from vl_distill_ros.model.vocabulary import Label

    vocab = Vocabulary(tuple(Label(name=f"{i:04d}" + "中" * 60, description="中" * 300,
                                   key=f"{i:04d}" + "中" * 124) for i in range(1000)))
    path = save_vocabulary_atomic(vocab, tmp_path / "store.yaml")
    assert path.stat().st_size > 1 << 20
    assert load_vocabulary_store_result(path).vocabulary == vocab
    # characters YAML escapes (10 bytes each) still fit
    big = Vocabulary(tuple(Label(name=f"{i:04d}" + "\U000E0041" * 60,
                                 description="\U000E0041" * 300,
                                 key=f"{i:04d}" + "\U000E0041" * 124) for i in range(1000)))
    assert len(yaml.safe_dump(big.to_dict(), allow_unicode=True).encode()) \
        < vocab_store.MAX_STORE_BYTES
    monkeypatch.setattr(vocab_store, "MAX_STORE_BYTES", 100)
    with pytest.raises(OSError, match="would not be read back"):
        save_vocabulary_atomic(Vocabulary.from_names(["mug", "cup", "bowl"]), path)
    assert load_vocabulary_store_result(path).vocabulary is None     # over the lowered limit


def test_default_store_paths_of_distinct_nodes_differ(tmp_path, monkeypatch):
    """The default vocabulary_store is one file per node: '/' became '_', which ROS names
    also hold, so /cam_left/node and /cam/left/node shared a file (with persist_vocabulary
    each restored the other's vocabulary). A store under the older name is still found."""
    from vl_distill_ros.ros.startup_checks import default_store_path, older_store_path

    monkeypatch.setenv("ROS_HOME", str(tmp_path))
    pairs = [(("/cam_left", "vl_distill_node"), ("/cam/left", "vl_distill_node")),
             (("/robot_front", "vl_distill_node"), ("/robot", "front_vl_distill_node"))]
    for a, b in pairs:
        assert default_store_path(*a) != default_store_path(*b)
    path = default_store_path("/cam/left", "vl_distill_node")
    assert path == tmp_path / "vl_distill_ros" / "cam.left.vl_distill_node.vocabulary.yaml"
    assert default_store_path("/", "vl_distill_node").name == "vl_distill_node.vocabulary.yaml"
    older = tmp_path / "vl_distill_ros" / "cam_left_vl_distill_node.vocabulary.yaml"
    save_vocabulary_atomic(VOCAB, older)                 # written before the change
    # the store is saved under the new name whatever exists; the older is only read
    assert default_store_path("/cam/left", "vl_distill_node") == path
    assert older_store_path("/cam/left", "vl_distill_node") == older
    assert older_store_path("/cam_left", "vl_distill_node") == older
    assert older_store_path("/", "vl_distill_node") is None


def test_temp_files_of_writers_killed_mid_write_are_removed_by_the_next_write(tmp_path):
    """A node killed (SIGKILL) while it rewrote its text cache or store left a hidden
    `.<file>.XXXXXXXX.tmp` behind, one more per crash, never removed. The next write of
    the file removes those older than STALE_TEMP_AGE_S; a live writer's fresh one stays,
    as do other files."""
    import time

    target = tmp_path / "store.yaml"
    old = [tmp_path / f".store.yaml.{c * 8}.tmp" for c in "ab"]
    fresh = tmp_path / ".store.yaml.cccccccc.tmp"
    others = [tmp_path / ".other.yaml.dddddddd.tmp", tmp_path / ".store.yaml.long_name.tmp"]
    for path in (*old, fresh, *others):
        path.write_bytes(b"partial")
    past = time.time() - atomic_io.STALE_TEMP_AGE_S - 60
    for path in (*old, *others):
        os.utime(path, (past, past))
    atomic_io.atomic_write_bytes(target, b"labels: []\n")
    assert target.read_bytes() == b"labels: []\n"
    assert not any(p.exists() for p in old)
    assert fresh.exists() and all(p.exists() for p in others)


def test_a_store_saved_under_the_older_name_rules_is_kept_not_set_aside(tmp_path, caplog):
    """Names are now compared Unicode-normalised, without invisible characters: a store an
    older version saved with `Rubik's cube` and `Rubik’s cube`, or `unknown_`, was called
    corrupt and renamed, losing the saved vocabulary. It is read with those left out."""
    import yaml

    path = tmp_path / "store.yaml"
    path.write_text(yaml.safe_dump({"labels": [
        {"name": "Rubik's cube", "key": "rubiks_cube", "description": "A cube."},
        {"name": "Rubik\u2019s cube", "key": "rubiks_cube_2", "description": ""},
        {"name": "cup", "key": "cup", "description": ""},
        {"name": "unknown_", "key": "unknown_", "description": ""}]}, allow_unicode=True),
        encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        result = load_vocabulary_store_result(path)
    assert result.vocabulary is not None and result.moved_to is None and not result.error
    assert result.vocabulary.names == ["Rubik's cube", "cup"]
    assert result.vocabulary.labels[0].description == "A cube."
    assert path.exists() and "2 change(s)" in caplog.text
    path.write_text("labels: [{name: ''}]\n", encoding="utf-8")   # still corrupt: set aside
    result = load_vocabulary_store_result(path)
    assert result.vocabulary is None and result.moved_to is not None


def test_an_older_store_s_keys_the_rules_now_refuse_are_replaced_not_its_labels(tmp_path):
    """A label whose name is its own but whose key the rules now read as nothing (`_`) or
    as an earlier key (NFC and NFD `tasse_café`) kept its place only if the store was thrown
    away; its key is replaced instead. A store the older rules refused too (keys `k` and
    `K`) is still set aside."""
    import unicodedata

    import yaml

    path = tmp_path / "store.yaml"
    path.write_text(yaml.safe_dump({"labels": [
        {"name": "mug", "key": "tasse_caf\u00e9"},
        {"name": "teacup", "key": unicodedata.normalize("NFD", "tasse_caf\u00e9")},
        {"name": "plate", "key": "_"}]}, allow_unicode=True), encoding="utf-8")
    result = load_vocabulary_store_result(path)
    assert result.vocabulary is not None and result.moved_to is None
    assert result.vocabulary.names == ["mug", "teacup", "plate"]
    assert result.vocabulary.keys == ["tasse_caf\u00e9", "teacup", "plate"]
    path.write_text(yaml.safe_dump({"labels": [{"name": "a", "key": "k"},
                                               {"name": "b", "key": "K"}]}), encoding="utf-8")
    result = load_vocabulary_store_result(path)
    assert result.vocabulary is None and result.moved_to is not None
