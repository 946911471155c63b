"""On-disk cache of teacher image embeddings, keyed by teacher id and image content.

Teacher image embeddings are fixed for a given teacher, so they are computed once and kept::

    <cache_dir>/<sanitised teacher id>-<sha1(id)[:10]>/
        teacher_id.txt                   the exact id (for people; shards record it too)
        shard-<time>-<pid>-<rand>.npz    keys (N,) str, embeddings (N, D) float32, teacher_id

Keys are content hashes of the images (:func:`file_digest` of the image file or
:func:`array_digest` of the decoded array), so renaming or moving a dataset keeps its cache,
and an edited image is recomputed. Each :meth:`TeacherImageCache.get_or_compute` call appends
new shards (one every ``flush_every`` new embeddings, so an interrupted run keeps most of its
work); each shard is written to a temporary file and moved into place with ``os.replace``, so a
reader never sees half a shard. When shards pile up they are merged (:meth:`compact`).

An unreadable or inconsistent shard is logged (``logging`` warning), renamed aside by
:func:`~vl_distill_ros.atomic_io.set_aside` to ``<shard>.corrupt-<UTC time>`` (a unique name,
so an earlier ``.corrupt`` file is never overwritten) and its entries are computed again; it
never stops training.

Distributed training (DDP): let **rank 0 alone fill the cache**, then synchronise, then let
every rank read it::

    cache = TeacherImageCache(cfg.data.cache_dir, teacher.id)
    if rank == 0:
        cache.get_or_compute(keys, load_images, teacher.encode_images, batch_size)
    torch.distributed.barrier()
    targets = cache.lookup(keys)   # every rank, rank 0 included; KeyError if anything is absent

Every read rescans the folder for shards written by other processes, so an instance created
before the barrier still sees everything rank 0 wrote. Concurrent *writers* never corrupt each
other (unique shard names, atomic renames) but would duplicate work, and a writer's
:meth:`compact` can remove a shard while another process lists the folder (that process then
just recomputes).
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import time
import uuid
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from ..atomic_io import atomic_write_bytes, set_aside

#: Signature of the image loader handed to :meth:`TeacherImageCache.get_or_compute`: it gets
#: positions into the requested key list and returns those images (RGB uint8 arrays).
LoadImages = Callable[[list[int]], Sequence[np.ndarray]]
#: Signature of the encoder: images -> (n, D) tensor (e.g. ``Teacher.encode_images``).
Encode = Callable[[Sequence[np.ndarray]], torch.Tensor]

SHARD_PREFIX = "shard-"
SHARD_SUFFIX = ".npz"
#: Unusable shards are renamed to ``<shard>.corrupt-<UTC time>`` (:func:`set_aside`).
CORRUPT_SUFFIX = ".corrupt"

log = logging.getLogger(__name__)


def file_digest(path: str | os.PathLike, algorithm: str = "sha1") -> str:
    """Hex digest of a file's bytes (the default cache key for an image file)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def array_digest(array: np.ndarray) -> str:
    """SHA-1 hex digest of an array's dtype, shape and bytes (a key for in-memory images)."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha1()
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.data)
    return digest.hexdigest()


def cache_dir_name(teacher_id: str) -> str:
    """Folder name for a teacher id: readable part + 10 hex of its SHA-1 (no collisions)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", teacher_id).strip("._")[:80] or "teacher"
    return f"{readable}-{hashlib.sha1(teacher_id.encode('utf-8')).hexdigest()[:10]}"


def _atomic_write(path: Path, write: Callable[[object], None]) -> None:
    buf = io.BytesIO()
    write(buf)
    atomic_write_bytes(path, buf.getvalue())


class TeacherImageCache:
    """Teacher image embeddings on disk for one teacher id (see the module docstring).

    Args:
        cache_dir: the cache root (``data.cache_dir``); created when first written.
        teacher_id: the teacher's exact ``id``; each id gets its own folder.
        flush_every: write a shard after this many new embeddings (and at the end of a call).
        max_shards: merge all shards into one when a call leaves more than this many.
    """

    def __init__(self, cache_dir: str | os.PathLike, teacher_id: str, flush_every: int = 4096,
                 max_shards: int = 64) -> None:
        if not teacher_id:
            raise ValueError("teacher_id must be a non-empty string")
        self.teacher_id = str(teacher_id)
        self.root = Path(cache_dir) / cache_dir_name(self.teacher_id)
        self.flush_every = max(1, int(flush_every))
        self.max_shards = max(1, int(max_shards))
        self._blocks: list[np.ndarray] = []
        self._block_files: list[str] = []  # the shard each block was read from or written to
        self._index: dict[str, tuple[int, int]] = {}
        self._loaded_files: set[str] = set()
        self._embed_dim: int | None = None

    # -- reading --------------------------------------------------------------------------
    @property
    def embed_dim(self) -> int | None:
        """D of the stored embeddings, or None while the cache is empty."""
        self.refresh()
        return self._embed_dim

    def __len__(self) -> int:
        self.refresh()
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        self.refresh()
        return key in self._index

    def _shard_files(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir()
                      if p.name.startswith(SHARD_PREFIX) and p.name.endswith(SHARD_SUFFIX))

    def _set_aside(self, path: Path, reason: str) -> None:
        target = set_aside(path)
        if target is None and not path.exists():
            return  # removed meanwhile (a concurrent compaction): nothing to report
        log.warning("teacher cache: %s is unusable (%s); %s and recomputing its entries",
                    path, reason, f"moved it aside to {target.name}" if target is not None
                    else "could not move it aside")

    def _read_shard(self, path: Path) -> tuple[np.ndarray, np.ndarray] | None:
        try:
            with np.load(path, allow_pickle=False) as data:
                keys = np.asarray(data["keys"])
                emb = np.asarray(data["embeddings"])
                stored_id = str(data["teacher_id"])
        except FileNotFoundError:
            return None  # removed by a concurrent compaction; its entries are elsewhere
        except Exception as exc:  # noqa: BLE001 - any unreadable file is treated alike
            self._set_aside(path, f"{type(exc).__name__}: {exc}")
            return None
        problem = None
        if stored_id != self.teacher_id:
            problem = f"it belongs to teacher {stored_id!r}"
        elif keys.ndim != 1 or keys.dtype.kind != "U":
            problem = f"bad keys array {keys.dtype} {keys.shape}"
        elif emb.ndim != 2 or emb.shape[0] != keys.shape[0] or emb.dtype.kind != "f":
            problem = f"bad embeddings array {emb.dtype} {emb.shape} for {keys.shape[0]} keys"
        elif not np.isfinite(emb).all():
            problem = "non-finite embeddings"
        if problem:
            self._set_aside(path, problem)
            return None
        return keys, emb.astype(np.float32, copy=False)

    def _add_block(self, keys: Iterable[str], emb: np.ndarray, file: str = "") -> None:
        block = len(self._blocks)
        self._blocks.append(emb)
        self._block_files.append(file)
        if self._embed_dim is None:
            self._embed_dim = int(emb.shape[1])
        for row, key in enumerate(keys):
            self._index.setdefault(str(key), (block, row))

    def refresh(self) -> int:
        """Load shards written since the last look (also by other processes); returns how many."""
        shards = []
        for path in self._shard_files():
            if path.name in self._loaded_files:
                continue
            self._loaded_files.add(path.name)
            shard = self._read_shard(path)
            if shard is not None:
                shards.append((path, shard))
        if self._embed_dim is None and shards:  # the size most entries have, not the first's
            rows: dict[int, int] = {}
            for _, (keys, emb) in shards:
                rows[emb.shape[1]] = rows.get(emb.shape[1], 0) + len(keys)
            self._embed_dim = max(rows, key=lambda d: rows[d])
        added = 0
        for path, (keys, emb) in shards:
            if emb.shape[1] != self._embed_dim:
                self._set_aside(path, f"embedding size {emb.shape[1]} != {self._embed_dim} of "
                                      "the other shards")
                continue
            self._add_block(keys, emb, path.name)
            added += 1
        return added

    def reload(self) -> None:
        """Forget everything in memory and read the folder again."""
        self._blocks, self._index, self._loaded_files = [], {}, set()
        self._block_files = []
        self._embed_dim = None
        self.refresh()

    def missing(self, keys: Sequence[str]) -> list[int]:
        """Positions in ``keys`` whose embeddings are not cached."""
        self.refresh()
        return [i for i, key in enumerate(keys) if key not in self._index]

    def lookup(self, keys: Sequence[str]) -> torch.Tensor:
        """Cached embeddings of ``keys`` as (N, D) float32; ``KeyError`` if any is missing."""
        self.refresh()
        absent = [k for k in keys if k not in self._index]
        if absent:
            raise KeyError(f"{len(absent)} of {len(keys)} keys are not in the teacher cache "
                           f"{self.root} (first: {absent[0]!r})")
        if not keys:
            return torch.zeros(0, self._embed_dim or 0)
        rows = [self._blocks[b][r] for b, r in (self._index[k] for k in keys)]
        return torch.from_numpy(np.stack(rows).astype(np.float32, copy=False))

    # -- writing --------------------------------------------------------------------------
    def _write_shard(self, keys: list[str], emb: np.ndarray) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        id_file = self.root / "teacher_id.txt"
        if not id_file.exists():
            _atomic_write(id_file, lambda fh: fh.write(self.teacher_id.encode("utf-8") + b"\n"))
        name = f"{SHARD_PREFIX}{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SHARD_SUFFIX}"
        path = self.root / name
        key_array = np.asarray(keys, dtype=str)
        _atomic_write(path, lambda fh: np.savez(fh, keys=key_array,
                                                embeddings=emb.astype(np.float32, copy=False),
                                                teacher_id=np.asarray(self.teacher_id)))
        self._loaded_files.add(name)
        return path

    def _discard_other_size(self, size: int) -> None:
        """The teacher itself gives embeddings of ``size``: every loaded shard of another
        size (same teacher id, another network: a stale cache) is set aside and forgotten."""
        reason = (f"its embedding size {self._embed_dim} is not the teacher's {size} (the "
                  "cache is stale)")
        for name in set(self._block_files):
            if name:
                self._set_aside(self.root / name, reason)
        self._blocks, self._block_files, self._index = [], [], {}
        self._embed_dim = size

    def add(self, keys: Sequence[str], embeddings: torch.Tensor | np.ndarray) -> None:
        """Store embeddings for ``keys`` (one new shard); already cached keys are skipped."""
        emb = self._check_embeddings(embeddings, len(keys))
        self.refresh()
        fresh = {}
        for i, key in enumerate(keys):
            if key not in self._index and key not in fresh:
                fresh[key] = i
        if fresh:
            rows = emb[list(fresh.values())]
            path = self._write_shard(list(fresh), rows)
            self._add_block(list(fresh), rows, path.name)

    def _check_embeddings(self, embeddings: torch.Tensor | np.ndarray, count: int) -> np.ndarray:
        if isinstance(embeddings, torch.Tensor):
            emb = embeddings.detach().float().cpu().numpy()
        else:
            emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != count:
            raise ValueError(f"encoder returned shape {tuple(emb.shape)} for {count} images; "
                             f"expected ({count}, D)")
        if not np.isfinite(emb).all():
            raise ValueError("encoder returned non-finite embeddings; not caching them")
        if self._embed_dim is not None and emb.shape[1] != self._embed_dim:
            self._discard_other_size(int(emb.shape[1]))
        return np.ascontiguousarray(emb, dtype=np.float32)

    def get_or_compute(self, keys: Sequence[str], load_images: LoadImages, encode: Encode,
                       batch_size: int = 32, progress: bool = True) -> torch.Tensor:
        """Embeddings for ``keys`` in order, computing and storing only the missing ones.

        Args:
            keys: one content key per image (:func:`file_digest`); repeats are computed once.
            load_images: given positions into ``keys``, returns those images.
            encode: images -> (n, D) embeddings, e.g. ``teacher.encode_images``.
            batch_size: images per ``load_images``/``encode`` call.
            progress: show a tqdm bar while computing.

        Returns:
            (len(keys), D) float32 CPU tensor.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        keys = [str(k) for k in keys]
        self.refresh()
        todo: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in self._index and key not in todo:
                todo[key] = i
        if todo:
            self._compute(list(todo.items()), load_images, encode, batch_size, progress)
        # a stale cache found while computing (embeddings of another size) was dropped:
        # what it held is computed now
        todo = {key: i for i, key in enumerate(keys) if key not in self._index}
        if todo:
            self._compute(list(todo.items()), load_images, encode, batch_size, progress)
        return self.lookup(keys)

    def _compute(self, todo: list[tuple[str, int]], load_images: LoadImages, encode: Encode,
                 batch_size: int, progress: bool) -> None:
        from tqdm.auto import tqdm

        pending_keys: list[str] = []
        pending: list[np.ndarray] = []

        def flush() -> None:
            if pending_keys:
                emb = np.concatenate(pending)
                path = self._write_shard(list(pending_keys), emb)
                self._add_block(list(pending_keys), emb, path.name)
                pending_keys.clear()
                pending.clear()

        bar = tqdm(total=len(todo), desc="teacher embeddings", unit="img",
                   disable=not progress, leave=False)
        try:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start:start + batch_size]
                images = list(load_images([pos for _, pos in chunk]))
                if len(images) != len(chunk):
                    raise ValueError(f"load_images returned {len(images)} images for "
                                     f"{len(chunk)} positions")
                emb = self._check_embeddings(encode(images), len(chunk))
                pending_keys.extend(key for key, _ in chunk)
                pending.append(emb)
                bar.update(len(chunk))
                if len(pending_keys) >= self.flush_every:
                    flush()
        finally:
            bar.close()
            flush()  # keep what was computed even if a later batch failed
        if len(self._shard_files()) > self.max_shards:
            self.compact()

    def compact(self) -> None:
        """Merge all shards of this teacher into one (atomic), dropping duplicate keys."""
        self.refresh()
        old = [p for p in self._shard_files() if p.name in self._loaded_files]
        if len(old) <= 1 or not self._index:
            return
        keys = list(self._index)
        emb = self.lookup(keys).numpy()
        self._write_shard(keys, emb)
        for path in old:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        self.reload()

    def clear(self) -> None:
        """Delete every shard of this teacher (other teachers' folders are untouched)."""
        for path in self._shard_files():
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        self.reload()

    def __repr__(self) -> str:
        return (f"TeacherImageCache(root={str(self.root)!r}, entries={len(self._index)}, "
                f"embed_dim={self._embed_dim})")
