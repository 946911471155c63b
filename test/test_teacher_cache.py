"""TeacherImageCache: only missing entries are computed, persistence, isolation, corruption."""
from __future__ import annotations

import hashlib
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from vl_distill_ros.training.teacher_cache import (
    TeacherImageCache,
    array_digest,
    cache_dir_name,
    file_digest,
)

D = 6


def _image_for(key: str) -> np.ndarray:
    seed = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)
    return np.random.default_rng(seed).integers(0, 256, (4, 5, 3), dtype=np.uint8)


class CountingEncoder:
    """Deterministic fake teacher: embedding = normalised first D pixel values."""

    def __init__(self) -> None:
        self.calls = 0
        self.images = 0

    def __call__(self, images):
        self.calls += 1
        self.images += len(images)
        flat = torch.tensor(np.stack([img.reshape(-1)[:D] for img in images]), dtype=torch.float32)
        return torch.nn.functional.normalize(flat + 1.0, dim=-1)


def _loader(keys):
    return lambda positions: [_image_for(keys[i]) for i in positions]


def _expected(keys) -> torch.Tensor:
    return CountingEncoder()([_image_for(k) for k in keys])


def test_computes_only_missing_and_keeps_order(tmp_path: Path) -> None:
    cache = TeacherImageCache(tmp_path, "teacher:a")
    enc = CountingEncoder()
    keys = [f"k{i}" for i in range(10)]
    out = cache.get_or_compute(keys, _loader(keys), enc, batch_size=4, progress=False)
    assert out.shape == (10, D) and out.dtype == torch.float32
    assert torch.allclose(out, _expected(keys))
    assert (enc.calls, enc.images) == (3, 10)

    more = list(reversed(keys)) + ["new1", "k3", "new2", "new1"]  # repeats, new keys
    out2 = cache.get_or_compute(more, _loader(more), enc, batch_size=4, progress=False)
    assert enc.images == 12  # only new1 and new2 were encoded, each once
    assert torch.allclose(out2, _expected(more))
    assert len(cache) == 12 and "new2" in cache and cache.embed_dim == D
    assert cache.missing(["k1", "zzz"]) == [1]


def test_persists_across_instances(tmp_path: Path) -> None:
    keys = [f"k{i}" for i in range(5)]
    first = TeacherImageCache(tmp_path, "teacher:a").get_or_compute(
        keys, _loader(keys), CountingEncoder(), batch_size=2, progress=False)

    def never(_images):
        raise AssertionError("nothing should be recomputed")

    again = TeacherImageCache(tmp_path, "teacher:a")
    assert torch.equal(again.get_or_compute(keys, _loader(keys), never, progress=False), first)
    assert torch.equal(again.lookup(keys[::-1]), first.flip(0))
    with pytest.raises(KeyError):
        again.lookup(["absent"])


def test_other_teacher_id_has_its_own_cache(tmp_path: Path) -> None:
    keys = ["a", "b"]
    TeacherImageCache(tmp_path, "teacher:a").get_or_compute(
        keys, _loader(keys), CountingEncoder(), progress=False)
    enc = CountingEncoder()
    other = TeacherImageCache(tmp_path, "teacher/b")
    other.get_or_compute(keys, _loader(keys), enc, progress=False)
    assert enc.images == 2
    dirs = sorted(p.name for p in tmp_path.iterdir())
    assert dirs == sorted([cache_dir_name("teacher:a"), cache_dir_name("teacher/b")])
    assert (tmp_path / cache_dir_name("teacher/b") / "teacher_id.txt").read_text().strip() \
        == "teacher/b"
    # Sanitising alone would map these two ids to one name; the hash suffix keeps them apart.
    assert cache_dir_name("x:y") != cache_dir_name("x/y")


def test_other_process_writes_are_seen(tmp_path: Path) -> None:
    reader = TeacherImageCache(tmp_path, "t")
    assert len(reader) == 0
    keys = ["a", "b", "c"]
    TeacherImageCache(tmp_path, "t").get_or_compute(keys, _loader(keys), CountingEncoder(),
                                                    progress=False)
    assert torch.allclose(reader.lookup(keys), _expected(keys))  # e.g. a DDP rank > 0


@pytest.mark.parametrize("damage", ["garbage", "truncate"])
def test_corrupt_shard_is_reported_and_recomputed(tmp_path: Path, damage: str, caplog) -> None:
    keys = [f"k{i}" for i in range(4)]
    cache = TeacherImageCache(tmp_path, "t")
    cache.get_or_compute(keys, _loader(keys), CountingEncoder(), progress=False)
    (shard,) = cache.root.glob("shard-*.npz")
    data = shard.read_bytes()
    shard.write_bytes(b"not a zip file" if damage == "garbage" else data[: len(data) // 2])

    enc = CountingEncoder()
    with caplog.at_level(logging.WARNING, logger="vl_distill_ros.training.teacher_cache"):
        out = TeacherImageCache(tmp_path, "t").get_or_compute(keys, _loader(keys), enc,
                                                              progress=False)
    assert enc.images == 4
    assert torch.allclose(out, _expected(keys))
    assert any("unusable" in r.getMessage() for r in caplog.records)
    assert len(list(shard.parent.glob(shard.name + ".corrupt-*"))) == 1
    caplog.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the recomputed cache reads cleanly, no warnings
        TeacherImageCache(tmp_path, "t").lookup(keys)
    assert not caplog.records


def test_a_second_corruption_keeps_the_first_corrupt_file(tmp_path: Path, caplog) -> None:
    """The same shard name corrupted twice: both damaged files are kept, side by side."""
    keys = ["a", "b"]
    cache = TeacherImageCache(tmp_path, "t")
    cache.get_or_compute(keys, _loader(keys), CountingEncoder(), progress=False)
    (shard,) = cache.root.glob("shard-*.npz")
    good = shard.read_bytes()
    contents = []
    for damage in (b"first damage", b"second damage"):
        shard.write_bytes(damage)
        contents.append(damage)
        with caplog.at_level(logging.WARNING, logger="vl_distill_ros.training.teacher_cache"):
            TeacherImageCache(tmp_path, "t").refresh()
        for extra in cache.root.glob("shard-*.npz"):
            extra.unlink()  # the recomputation is not part of this test
    aside = sorted(shard.parent.glob(shard.name + ".corrupt-*"))
    assert len(aside) == 2
    assert sorted(p.read_bytes() for p in aside) == sorted(contents)
    assert sum("unusable" in r.getMessage() for r in caplog.records) == 2
    shard.write_bytes(good)
    assert TeacherImageCache(tmp_path, "t").missing(keys) == []


def test_partial_work_survives_a_failing_batch(tmp_path: Path) -> None:
    keys = [f"k{i}" for i in range(6)]
    enc = CountingEncoder()

    def flaky(images):
        if enc.calls == 2:
            raise RuntimeError("boom")
        return enc(images)

    cache = TeacherImageCache(tmp_path, "t", flush_every=1)
    with pytest.raises(RuntimeError, match="boom"):
        cache.get_or_compute(keys, _loader(keys), flaky, batch_size=2, progress=False)
    assert len(TeacherImageCache(tmp_path, "t")) == 4


def test_bad_encoder_output_is_rejected(tmp_path: Path) -> None:
    cache = TeacherImageCache(tmp_path, "t")
    keys = ["a", "b"]
    with pytest.raises(ValueError, match="shape"):
        cache.get_or_compute(keys, _loader(keys), lambda imgs: torch.zeros(1, D), progress=False)
    with pytest.raises(ValueError, match="non-finite"):
        cache.get_or_compute(keys, _loader(keys), lambda imgs: torch.full((2, D), float("nan")),
                             progress=False)


def test_teacher_of_another_size_drops_the_stale_cache_and_recomputes(tmp_path: Path, caplog
                                                                      ) -> None:
    """The teacher is what the embeddings must match: a cache of its id holding another
    size (a stale cache) is set aside and what it held recomputed; it used to stop training
    ("encoder returned D=..."), even for keys the cache did not hold."""
    cache = TeacherImageCache(tmp_path, "t")
    cache.get_or_compute(["a"], _loader(["a"]), CountingEncoder(), progress=False)
    wider = lambda imgs: torch.ones(len(imgs), D + 1)  # noqa: E731
    out = cache.get_or_compute(["a", "b"], _loader(["a", "b"]), wider, progress=False)
    assert out.shape == (2, D + 1) and torch.equal(out, torch.ones(2, D + 1))
    assert "not the teacher's" in caplog.text
    assert len(list(cache.root.glob("shard-*.npz.corrupt-*"))) == 1
    assert TeacherImageCache(tmp_path, "t").embed_dim == D + 1


def test_one_shard_of_another_size_does_not_discard_the_others(tmp_path: Path) -> None:
    """The size is the one most entries have: an older-named shard of another size was read
    first, fixed the size, and every good shard was set aside (then training stopped)."""
    keys = ["a", "b", "c"]
    first = TeacherImageCache(tmp_path, "t")
    first.get_or_compute(keys, _loader(keys), CountingEncoder(), progress=False)
    cache = TeacherImageCache(tmp_path, "t")
    np.savez(cache.root / "shard-0000-odd.npz", keys=np.asarray(["x"]),
             embeddings=np.ones((1, 10), np.float32), teacher_id=np.asarray("t"))
    fresh = TeacherImageCache(tmp_path, "t")
    assert fresh.embed_dim == D and len(fresh) == 3
    assert torch.allclose(fresh.lookup(keys), _expected(keys))
    assert [p.name for p in fresh.root.glob("*.corrupt-*")][0].startswith("shard-0000-odd")


def test_compaction_merges_shards(tmp_path: Path) -> None:
    cache = TeacherImageCache(tmp_path, "t", max_shards=2)
    enc = CountingEncoder()
    for key in ["a", "b", "c"]:
        cache.get_or_compute([key], _loader([key]), enc, progress=False)
    assert len(list(cache.root.glob("shard-*.npz"))) == 1
    keys = ["a", "b", "c"]
    assert torch.allclose(TeacherImageCache(tmp_path, "t").lookup(keys), _expected(keys))


def test_digests_follow_content_not_names(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.png", tmp_path / "renamed.png", tmp_path / "c.png"
    a.write_bytes(b"\x89PNG same bytes")
    b.write_bytes(b"\x89PNG same bytes")
    c.write_bytes(b"\x89PNG other bytes")
    assert file_digest(a) == file_digest(b) != file_digest(c)
    img = _image_for("x")
    assert array_digest(img) == array_digest(img.copy())
    assert array_digest(img) != array_digest(img.reshape(5, 4, 3))
