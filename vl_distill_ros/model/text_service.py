"""Label text embeddings for a deployed bundle: cached, lazily computed, thread-safe.

:class:`TextEmbeddingService` turns labels (name + optional description) into the teacher
text embeddings the bundle's student was distilled towards, with exactly the math of
:func:`~vl_distill_ros.model.zero_shot.build_zero_shot_classifier`: per label the mean over
templates of the L2-normalised prompt embeddings, renormalised.

Cache
    Keyed by ``(teacher id, tuple(build_prompts(label, templates, enrich)))``: the same name
    with another description (or other templates) is another entry. At most ``max_entries``
    (default :data:`MAX_CACHE_ENTRIES`, 2048) are kept, as rows of one float32 matrix
    (2048 x 384 x 4 B = 3 MB with the offline teacher, resident as rows are filled); beyond
    that the least recently used entry is dropped (it is only recomputed if needed again), so
    a client that sets a new name every second cannot grow the cache, or its file, without
    bound. Entries live in memory
    and, with a ``cache_dir``, in one file per teacher id,
    ``<cache_dir>/<sanitised id>-<sha256(id)[:12]>.npz`` (no pickles), rewritten atomically
    (temp file + fsync + rename) after each teacher call. A file that cannot be read is
    reported with ``logging.warning`` (naming the path), renamed to
    ``<file>.corrupt-<UTC timestamp>`` and the service starts with an empty cache. A failed
    write is logged and the service keeps working from memory. Processes sharing a cache
    file (a node per camera with the default ``text_cache_dir``) keep each other's entries:
    a write first reads the file again under an advisory lock and keeps the entries it
    lacks, within ``max_entries``. Only a regular file of at most
    :data:`MAX_CACHE_FILE_BYTES` (unpacked too) whose embeddings are floating point and of
    unit length is used (:func:`read_cache_file`).

Description catalogue
    A service made with a ``catalogue`` (:mod:`.descriptions`; :meth:`from_bundle` takes the
    bundle's) prompts a label that has no description with the catalogue's description of
    its name, and a name written as a key or identifier (``004_sugar_box``, ``coffee_mug``)
    with the catalogue's name or as words; keys are the prompts actually sent, so the same
    name with and without a catalogue may be two entries.

Teacher
    Built lazily, on the first cache miss (or :meth:`TextEmbeddingService.warm`), by
    ``teacher_factory`` or ``build_teacher(teacher_config_from_spec(teacher_spec))``; its id
    must equal ``teacher_id``, else :class:`TeacherMismatchError`. All misses of one
    :meth:`~TextEmbeddingService.embed` call go to the teacher in one ``encode_texts`` call.

Threads
    A lock guards the cache (held only for look-ups and inserts, so cached look-ups are not
    blocked by a running teacher call); a second lock serialises teacher loading, teacher
    calls and cache writes.

CPU budget
    The teacher (its text encoder: torch, in the node's process) runs on one encoder thread
    owned by the service, with at most ``encoder_threads`` torch intra-op threads (default
    :data:`TEXT_ENCODER_THREADS`, 1) and its scheduling priority lowered by ``encoder_nice``
    (default :data:`TEXT_ENCODER_NICE`, 10; Linux sets the nice value per thread). On a
    2-core robot the student's inference (ONNX Runtime, its own thread pool) then keeps the
    CPU while a new name is embedded: with torch's default of one thread per core, MiniLM's
    OpenMP threads competed with it and one new name per second cut the node from 30 to 21
    frames/s. The thread budget is set for the duration of each call and restored afterwards
    (``torch.set_num_threads`` also sets torch's process-wide default, so a thread that makes
    its first parallel torch call during an embedding starts with the budget). One thread is
    also the fastest setting on a busy CPU: ~30 ms per name instead of ~200 ms with two
    threads spinning against other work (measured with MiniLM on this 2-core machine).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import threading
import time
import zipfile
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic_io import atomic_write_bytes, read_regular_file, set_aside
from ..thread_names import name_os_thread
from .descriptions import DescriptionCatalogue
from .vocabulary import Label, Vocabulary, build_prompts

if TYPE_CHECKING:  # pragma: no cover
    from .bundle import Bundle
    from .teachers.base import Teacher

log = logging.getLogger(__name__)

#: Format version written into cache files.
CACHE_VERSION = 1
#: Most label embeddings a service keeps (memory and file); least recently used go first.
MAX_CACHE_ENTRIES = 2048
#: Text embeddings at least this close (cosine) are the same to the teacher
#: (:meth:`TextEmbeddingService.prompted_alike`).
ALIKE_COSINE = 0.9999
#: Largest cache file read, and most its members may unpack to (bytes): 2048 entries of a
#: 1024-dimensional teacher with long prompts fit well within it.
MAX_CACHE_FILE_BYTES = 64 << 20
#: How far a cached embedding's length may be from 1 (they are L2-normalised).
UNIT_TOLERANCE = 1e-3
#: torch intra-op threads of the teacher's text encoder while it embeds (0: torch's setting).
TEXT_ENCODER_THREADS = 1
#: How much the encoder thread's nice value is raised (0..19; 0: unchanged).
TEXT_ENCODER_NICE = 10

CacheKey = tuple[str, tuple[str, ...]]


class TeacherMismatchError(ValueError):
    """The teacher that was built (or a bundle) has another id than the service expects."""


def cache_file_name(teacher_id: str) -> str:
    """File name of the cache for ``teacher_id``: a readable prefix plus a hash of the id."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", teacher_id).strip("._")[:80] or "teacher"
    digest = hashlib.sha256(teacher_id.encode("utf-8")).hexdigest()[:12]
    return f"{readable}-{digest}.npz"


def read_cache_file(path: Path, teacher_id: str) -> tuple[list[list[str]], np.ndarray]:
    """``(prompts, embeddings)`` of a cache file for ``teacher_id``, checked: a regular file
    (a FIFO would block, :func:`~vl_distill_ros.atomic_io.read_regular_file`) of at most
    :data:`MAX_CACHE_FILE_BYTES`, whose members unpack to at most as much (a small
    compressed file cannot fill the memory), of this format version and teacher, one
    floating-point row of unit length per prompt list (a zero row would reach the student's
    classifier).

    Raises:
        ValueError, OSError, KeyError: why the file is unusable.
    """
    raw = read_regular_file(path, MAX_CACHE_FILE_BYTES)
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        unpacked = sum(info.file_size for info in zf.infolist())
    if unpacked > MAX_CACHE_FILE_BYTES:
        raise ValueError(f"its members unpack to {unpacked} bytes; the limit is "
                         f"{MAX_CACHE_FILE_BYTES}")
    with np.load(io.BytesIO(raw), allow_pickle=False) as data:
        version = int(data["version"])
        file_teacher = str(data["teacher_id"])
        prompts = json.loads(str(data["prompts"]))
        emb = data["embeddings"]
    if version != CACHE_VERSION:
        raise ValueError(f"cache format version {version}, expected {CACHE_VERSION}")
    if file_teacher != teacher_id:
        raise ValueError(f"cache is for teacher {file_teacher!r}")
    if emb.dtype.kind != "f" or emb.dtype.itemsize < 4:
        raise ValueError(f"embeddings of type {emb.dtype}, expected float32")
    if (not isinstance(prompts, list) or emb.ndim != 2 or emb.shape[0] != len(prompts)
            or not all(isinstance(p, list) and all(isinstance(s, str) for s in p)
                       for p in prompts)):
        raise ValueError(f"inconsistent contents ({len(prompts)} keys, embeddings "
                         f"{emb.shape})")
    emb = np.asarray(emb, dtype=np.float32)
    if not np.isfinite(emb).all():
        raise ValueError("non-finite embeddings")
    norms = np.linalg.norm(emb, axis=1)
    if len(norms) and np.abs(norms - 1.0).max() > UNIT_TOLERANCE:
        bad = int(np.argmax(np.abs(norms - 1.0)))
        raise ValueError(f"embedding {bad} ({prompts[bad][:1]}) has length {norms[bad]:.4g}, "
                         "not 1")
    return prompts, emb


@contextlib.contextmanager
def _folder_lock(path: Path, timeout_s: float = 2.0):
    """An advisory lock on the folder of ``path`` for the duration (no lock file is left:
    other processes sharing the folder wait up to ``timeout_s``; then, or where locking
    fails, the caller goes on unlocked). The folder is made first: the first write of a
    fresh cache folder, two nodes embedding their start-up names at once, is locked too
    (it went unlocked and one node's entries were lost)."""
    fd = None
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(Path(path).parent, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        end = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > end:
                    break
                time.sleep(0.01)
    except OSError:
        pass                  # e.g. a read-only cache folder: the write will say so
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)      # releases the lock


def _combine(prompt_embeddings: torch.Tensor, n_labels: int, n_templates: int) -> torch.Tensor:
    """(n_labels * n_templates, D) prompt embeddings -> (n_labels, D).

    As open_clip's ``build_zero_shot_classifier``.
    """
    emb = F.normalize(prompt_embeddings.float(), dim=-1)
    emb = emb.view(n_labels, n_templates, -1).mean(dim=1)
    return F.normalize(emb, dim=-1)


class _LruVectors:
    """At most ``capacity`` vectors of one dimension by key; the least recently used go first.

    The vectors are rows of one float32 matrix allocated for the whole capacity when the
    first vector arrives (zero pages: a row becomes resident when it is written), so a new
    entry allocates nothing that lives on besides its key. One small tensor per entry, made
    between the text encoder's temporary buffers, pinned heap pages: the node's RSS grew
    ~12 kB per cached name instead of the 1.5 kB of its 384 floats. Not thread-safe (the
    service holds its lock).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.rows: OrderedDict[CacheKey, int] = OrderedDict()  # oldest use first
        self.matrix: np.ndarray | None = None
        self._free: list[int] = []

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, key: object) -> bool:
        return key in self.rows

    def clear(self) -> None:
        """Drop every entry and the matrix."""
        self.rows.clear()
        self._free.clear()
        self.matrix = None

    def get(self, key: CacheKey) -> torch.Tensor | None:
        """A copy of the vector of ``key`` (None if absent), marked as just used."""
        row = self.rows.get(key)
        if row is None:
            return None
        self.rows.move_to_end(key)
        return torch.from_numpy(self.matrix[row].copy())

    def put(self, key: CacheKey, vec: torch.Tensor | np.ndarray) -> None:
        """Insert or overwrite ``key``, dropping the least recently used beyond capacity
        (a vector of another dimension than the stored ones drops them all)."""
        vec = np.asarray(vec, dtype=np.float32).reshape(-1)
        dim = vec.shape[0]
        if self.matrix is None or self.matrix.shape[1] != dim:
            self.clear()
            self.matrix = np.zeros((self.capacity, dim), np.float32)
            self._free = list(range(self.capacity - 1, -1, -1))
        row = self.rows.get(key)
        if row is None:
            while len(self.rows) >= self.capacity:  # room for one more
                self._free.append(self.rows.popitem(last=False)[1])
            if not self._free:  # the capacity grew past the matrix
                old = self.matrix.shape[0]
                self.matrix = np.concatenate(
                    [self.matrix, np.zeros((self.capacity - old, dim), np.float32)])
                self._free = list(range(self.capacity - 1, old - 1, -1))
            row = self._free.pop()
        self.rows[key] = row
        self.rows.move_to_end(key)
        self.matrix[row] = vec

    def set_capacity(self, capacity: int) -> None:
        """Keep at most ``capacity`` entries from now on (the least recently used go)."""
        self.capacity = capacity
        while len(self.rows) > capacity:
            self._free.append(self.rows.popitem(last=False)[1])

    def items(self) -> tuple[list[CacheKey], np.ndarray | None]:
        """Keys (oldest use first) and a copy of their vectors, as one matrix."""
        keys = list(self.rows)
        if self.matrix is None:
            return keys, None
        return keys, self.matrix[[self.rows[k] for k in keys]]


def alike_warning(pairs: Sequence[tuple[str, str]]) -> str:
    """The warning for labels :meth:`TextEmbeddingService.prompted_alike` found (at most 10
    pairs listed)."""
    listed = ", ".join(f"{later!r} (as {first!r})" for first, later in pairs[:10])
    return ("labels the teacher embeds alike (the same prompt, or text it cannot tell "
            f"apart), so the later is never chosen: {listed}"
            + (" ..." if len(pairs) > 10 else "")
            + "; give one of each pair a description of its own, or drop it")


def cut_warning(names: Sequence[str]) -> str:
    """The warning for labels :meth:`TextEmbeddingService.cut_labels` found (at most 10
    names listed)."""
    listed = ", ".join(repr(n) for n in names[:10]) + (" ..." if len(names) > 10 else "")
    return ("the teacher's text encoder embeds only the beginning of the prompts of "
            f"{listed}: a prompt with its description is longer than its context (CLIP: 77 "
            "tokens, about 50 words); shorten the description")


def _cut_texts(teacher: "Teacher", texts: list[str]) -> list[int]:
    """``teacher.cut_texts(texts)``, or none where the teacher cannot tell (never raises:
    the embeddings are good either way)."""
    try:
        return [int(i) for i in teacher.cut_texts(texts)]
    except Exception as exc:  # noqa: BLE001 - a custom teacher, a tokenizer quirk
        log.debug("cannot tell which prompts %s cuts: %s", getattr(teacher, "id", "?"), exc)
        return []


class TextEmbeddingService:
    """Label -> teacher text embedding, cached in memory and on disk (see module doc).

    Args:
        teacher_spec: the teacher record of a bundle (:func:`teacher_spec`), used to build
            the teacher when no ``teacher_factory`` is given.
        teacher_id: the id embeddings must come from (the bundle's teacher id).
        templates: prompt templates, e.g. ``["a photo of a {name}."]``.
        enrich: append each label's description to its prompts.
        cache_dir: folder of the persistent cache; None keeps it in memory only.
        teacher_factory: builds the teacher (called at most once, on first need).
        max_entries: most cached embeddings (>= 1); the least recently used are dropped.
        encoder_threads: torch threads of the teacher calls (>= 0; 0 leaves torch's setting).
        encoder_nice: nice increment of the encoder thread (0..19).
        catalogue: descriptions of known names (:mod:`.descriptions`): a label without a
            description of its own is prompted with the catalogue's, and a name written
            as a key or identifier with the catalogue's name / as words; None: every
            label is prompted exactly as given.
    """

    def __init__(self, teacher_spec: dict, teacher_id: str, templates: Sequence[str],
                 enrich: bool, cache_dir: str | Path | None = None,
                 teacher_factory: Callable[[], "Teacher"] | None = None,
                 max_entries: int = MAX_CACHE_ENTRIES,
                 encoder_threads: int = TEXT_ENCODER_THREADS,
                 encoder_nice: int = TEXT_ENCODER_NICE,
                 catalogue: DescriptionCatalogue | None = None) -> None:
        if isinstance(templates, str):
            raise TypeError("templates must be a sequence of strings, not one string")
        self.templates: tuple[str, ...] = tuple(templates)
        if not self.templates:
            raise ValueError("at least one prompt template is needed")
        if not isinstance(teacher_id, str) or not teacher_id:
            raise ValueError("teacher_id must be a non-empty string")
        limits = (("max_entries", max_entries, 1, None),
                  ("encoder_threads", encoder_threads, 0, 256),
                  ("encoder_nice", encoder_nice, 0, 19))
        for name, value, low, high in limits:
            if (isinstance(value, bool) or not isinstance(value, int) or value < low
                    or (high is not None and value > high)):
                raise ValueError(f"{name} must be an integer in {low}..{high or 'inf'}, "
                                 f"got {value!r}")
        self._cache = _LruVectors(max_entries)
        self.encoder_threads = encoder_threads
        self.encoder_nice = encoder_nice
        self._encoder: ThreadPoolExecutor | None = None  # the encoder thread, on first need
        self._encoder_state: dict[str, object] = {}
        self.teacher_spec = dict(teacher_spec or {})
        self.teacher_id = teacher_id
        self.enrich = bool(enrich)
        self.catalogue = catalogue
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._factory = teacher_factory
        self._teacher: Teacher | None = None
        self._dim: int | None = None
        self._lock = threading.Lock()          # guards _cache, _dim and the counters
        self._teacher_lock = threading.Lock()  # serialises teacher load/calls and writes
        self._hits = 0
        self._misses = 0
        self._teacher_loads = 0
        #: Keys whose prompts the teacher's text encoder cut at its context when this service
        #: embedded them (at most max_entries, the latest kept).
        self._cut: dict[CacheKey, None] = {}
        #: Why the on-disk cache could not be used at start-up (None when fine or absent).
        self.cache_error: str | None = None
        if self.cache_dir is not None:
            self._load_disk_cache()

    # -- construction from a bundle -------------------------------------------------------
    @classmethod
    def from_bundle(cls, bundle: "Bundle", cache_dir: str | Path | None = None,
                    teacher_factory: Callable[[], "Teacher"] | None = None,
                    catalogue: bool = True) -> "TextEmbeddingService":
        """A service for ``bundle``'s teacher and prompt settings, seeded with its embeddings;
        with ``catalogue``, labels without a description are prompted with the bundle's
        catalogue (:meth:`Bundle.description_catalogue`)."""
        service = cls(bundle.teacher_spec, bundle.teacher_id, bundle.templates, bundle.enrich,
                      cache_dir=cache_dir, teacher_factory=teacher_factory,
                      catalogue=bundle.description_catalogue() if catalogue else None)
        service.seed_from_bundle(bundle)
        return service

    def seed_from_bundle(self, bundle: "Bundle") -> int:
        """Put the bundle's precomputed vocabulary embeddings into the cache; returns the count.

        Keys use the bundle's own templates/enrich; the vectors are taken exactly as stored
        (already normalised by the exporter). Seeded entries replace cached ones with
        the same key (the bundle is authoritative) and are written to disk with the next
        teacher call, not now. Raises :class:`TeacherMismatchError` for another teacher.
        """
        if bundle.teacher_id != self.teacher_id:
            raise TeacherMismatchError(
                f"bundle embeddings come from teacher {bundle.teacher_id!r} but this service "
                f"serves {self.teacher_id!r}; they are not comparable")
        emb = bundle.text_embeddings.detach().float().cpu()
        if emb.ndim != 2 or emb.shape[0] != len(bundle.vocabulary):
            raise ValueError(f"bundle text embeddings {tuple(emb.shape)} do not match its "
                             f"{len(bundle.vocabulary)} labels")
        with self._lock:
            if self._dim is not None and self._dim != emb.shape[1]:
                log.warning("text embedding cache for %s holds %d-d entries but the bundle's are "
                            "%d-d; dropping the cached entries", self.teacher_id, self._dim,
                            emb.shape[1])
                self._cache.clear()
            self._dim = int(emb.shape[1])
            for label, vec in zip(bundle.vocabulary, emb):
                key = (self.teacher_id, tuple(build_prompts(label, bundle.templates,
                                                            bundle.enrich)))
                self._cache.put(key, vec)
        return len(bundle.vocabulary)

    # -- public API ------------------------------------------------------------------------
    def key(self, label: Label) -> CacheKey:
        """The cache key of ``label`` under this service's templates and enrichment: the
        prompts of :meth:`prompt_label`."""
        return (self.teacher_id, tuple(build_prompts(self.prompt_label(label), self.templates,
                                                     self.enrich)))

    def prompt_label(self, label: Label) -> Label:
        """The label whose prompts embed ``label``: ``label`` itself without a catalogue,
        else :meth:`DescriptionCatalogue.prompt_label`."""
        return label if self.catalogue is None else self.catalogue.prompt_label(label)

    def prompted_alike(self, labels: Sequence[Label],
                       embeddings: torch.Tensor | None = None) -> list[tuple[str, str]]:
        """Pairs ``(first, later)`` of ``labels`` whose prompts are the same (e.g. ``pitcher``
        and ``pitcher base``, or ``sugar box`` and ``004_sugar_box``, through the catalogue),
        or, given their ``embeddings`` (rows in the order of ``labels``), that the teacher
        embeds alike (cosine >= :data:`ALIKE_COSINE`: text its tokenizer cannot tell apart,
        such as names of emoji or accents only, or prompts that differ only past its context
        length): the later name never wins over the first."""
        first: dict[CacheKey, str] = {}
        pairs = []
        for label in labels:
            key = self.key(label)
            if key in first:
                pairs.append((first[key], label.name))
            else:
                first[key] = label.name
        if embeddings is not None and len(labels) > 1:
            later = {b for _, b in pairs}
            emb = F.normalize(embeddings.detach().float().cpu(), dim=-1)
            close = torch.triu(emb @ emb.T >= ALIKE_COSINE, diagonal=1).nonzero().tolist()
            for i, j in close:      # row-major: each later name with its first alike
                if labels[j].name not in later and labels[i].name not in later:
                    later.add(labels[j].name)
                    pairs.append((labels[i].name, labels[j].name))
        return pairs

    def cut_labels(self, labels: Sequence[Label]) -> list[str]:
        """The names among ``labels`` whose prompts the teacher's text encoder cut at its
        context (CLIP: 77 tokens) when this service embedded them: the end of their
        description is not embedded. (Labels embedded by an earlier run, read from the
        cache, are not known.)"""
        with self._lock:
            return [label.name for label in labels if self.key(label) in self._cut]

    def catalogued(self, labels: Sequence[Label]) -> list[str]:
        """The names among ``labels`` that have no description and are prompted with the
        catalogue's (only when this service enriches prompts)."""
        if self.catalogue is None or not self.enrich:
            return []
        return self.catalogue.described(labels)

    def missing(self, labels: Sequence[Label]) -> list[Label]:
        """The labels (unique, in order) that are not cached, i.e. would need the teacher."""
        out: dict[CacheKey, Label] = {}
        with self._lock:
            for label in labels:
                key = self.key(label)
                if key not in self._cache and key not in out:
                    out[key] = label
        return list(out.values())

    def embed(self, labels: Sequence[Label]) -> torch.Tensor:
        """(L, D) float32 L2-normalised text embeddings of ``labels``, in order.

        Cached labels cost nothing; all others are embedded in one teacher call (building
        the teacher first if needed) and cached. An empty ``labels`` gives a (0, D) tensor
        (D = 0 while nothing is known about the teacher).

        Raises:
            TeacherMismatchError: the built teacher has another id.
            Exception: whatever building the teacher raises (e.g. ``TeacherWeightsMissing``).
        """
        labels = list(labels)
        for i, label in enumerate(labels):
            if not isinstance(label, Label):
                raise TypeError(f"labels[{i}] is a {type(label).__name__}, expected a Label")
        keys = [self.key(label) for label in labels]
        with self._lock:
            found = self._lookup(keys)
        computed = 0
        if len(found) < len(set(keys)):
            with self._teacher_lock:
                with self._lock:  # another thread may have computed some meanwhile
                    found = self._lookup(keys)
                todo: dict[CacheKey, Label] = {}
                for k, label in zip(keys, labels):
                    if k not in found and k not in todo:
                        todo[k] = label
                if todo:
                    new = self._on_encoder(self._compute, list(todo))
                    computed = len(todo)
                    found.update(new)
                    with self._lock:
                        for k, vec in new.items():
                            self._cache.put(k, vec)
                    self._save_disk_cache()
        with self._lock:
            self._misses += computed
            self._hits += len(labels) - computed
            dim = self._dim or 0
        if not labels:
            return torch.zeros(0, dim)
        return torch.stack([found[k] for k in keys]).contiguous()

    def embed_vocabulary(self, vocab: Vocabulary) -> torch.Tensor:
        """(len(vocab), D) embeddings of a vocabulary's labels (see :meth:`embed`)."""
        return self.embed(vocab.labels)

    def warm(self) -> "Teacher":
        """Build the teacher and load its text encoder now, so the first new name costs
        only its embedding; return the teacher. (Nothing is added to the cache.)"""
        def load() -> "Teacher":
            teacher = self._get_teacher()
            teacher.encode_texts(["a photo of an object."])  # lazy encoders load here
            return teacher

        with self._teacher_lock:
            return self._on_encoder(load)

    @property
    def teacher_loaded(self) -> bool:
        """Whether the teacher has been built."""
        return self._teacher is not None

    @property
    def stats(self) -> dict[str, int]:
        """Counters: ``hits``, ``misses`` (labels sent to the teacher), ``teacher_loads``,
        ``cached_entries``."""
        with self._lock:
            return {"hits": self._hits, "misses": self._misses,
                    "teacher_loads": self._teacher_loads, "cached_entries": len(self._cache)}

    @property
    def max_entries(self) -> int:
        """Most cached embeddings (see the module doc); setting it drops the least recently
        used beyond the new value."""
        return self._cache.capacity

    @max_entries.setter
    def max_entries(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"max_entries must be an integer >= 1, got {value!r}")
        with self._lock:
            self._cache.set_capacity(value)

    @property
    def encoder_state(self) -> dict[str, object]:
        """What the encoder thread ran the last teacher call with: ``thread`` (name),
        ``native_id``, ``torch_threads`` and ``nice`` (read inside the call); empty before."""
        with self._lock:
            return dict(self._encoder_state)

    def close(self) -> None:
        """Stop the encoder thread (after a running call); the service builds a new one if
        it is used again."""
        with self._teacher_lock:
            encoder, self._encoder = self._encoder, None
        if encoder is not None:
            encoder.shutdown(wait=True)

    @property
    def cache_path(self) -> Path | None:
        """The on-disk cache file for this teacher (None without a ``cache_dir``)."""
        if self.cache_dir is None:
            return None
        return self.cache_dir / cache_file_name(self.teacher_id)

    # -- internals ---------------------------------------------------------------------------
    def _lookup(self, keys: Sequence[CacheKey]) -> dict[CacheKey, torch.Tensor]:
        """Cached entries of ``keys``, marked as just used (caller holds _lock)."""
        found = {}
        for k in keys:
            if k not in found:
                vec = self._cache.get(k)
                if vec is not None:
                    found[k] = vec
        return found

    def _on_encoder(self, fn: Callable, *args):
        """``fn(*args)`` on the encoder thread, within the CPU budget (caller holds
        _teacher_lock); returns its result or raises its exception."""
        if self._encoder is None:
            self._encoder = ThreadPoolExecutor(1, thread_name_prefix="vl_text_encoder",
                                               initializer=self._lower_priority)
        return self._encoder.submit(self._within_budget, fn, *args).result()

    def _lower_priority(self) -> None:
        """Encoder thread start: name it ``vl_text_encoder`` in the OS and raise its nice
        value by ``encoder_nice``."""
        name_os_thread("vl_text_encoder")
        if self.encoder_nice <= 0 or not hasattr(os, "setpriority"):
            return
        tid = threading.get_native_id()
        try:
            nice = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(19, nice + self.encoder_nice))
        except OSError as exc:
            log.warning("text encoder thread: could not lower its priority (%s)", exc)

    def _within_budget(self, fn: Callable, *args):
        """Run ``fn(*args)`` with at most ``encoder_threads`` torch threads (restored after)."""
        previous = torch.get_num_threads()
        limit = self.encoder_threads
        changed = 0 < limit < previous
        if changed:
            torch.set_num_threads(limit)
        try:
            tid = threading.get_native_id()
            state = {"thread": threading.current_thread().name, "native_id": tid,
                     "torch_threads": torch.get_num_threads(),
                     "nice": (os.getpriority(os.PRIO_PROCESS, tid)
                              if hasattr(os, "getpriority") else None)}
            with self._lock:
                self._encoder_state = state
            return fn(*args)
        finally:
            if changed:
                torch.set_num_threads(previous)

    # -- teacher (callers hold _teacher_lock; run on the encoder thread) ---------------------
    def _get_teacher(self) -> "Teacher":
        if self._teacher is None:
            if self._factory is not None:
                teacher = self._factory()
            else:
                from .teachers.factory import build_teacher, teacher_config_from_spec

                teacher = build_teacher(teacher_config_from_spec(self.teacher_spec))
            with self._lock:
                self._teacher_loads += 1
            if teacher.id != self.teacher_id:
                raise TeacherMismatchError(
                    f"the text teacher that was built is {teacher.id!r} but the embeddings "
                    f"must come from {self.teacher_id!r}; they would not be comparable")
            self._teacher = teacher
            log.info("text embedding service: teacher %s loaded", teacher.id)
        return self._teacher

    def _compute(self, keys: list[CacheKey]) -> dict[CacheKey, torch.Tensor]:
        """Embed the labels behind ``keys`` (their prompts) in one teacher call."""
        teacher = self._get_teacher()
        prompts = [p for _, label_prompts in keys for p in label_prompts]
        n_templates = len(self.templates)
        with torch.no_grad():
            raw = teacher.encode_texts(prompts)
        if raw.ndim != 2 or raw.shape[0] != len(prompts):
            raise ValueError(f"teacher {teacher.id!r} returned {tuple(raw.shape)} for "
                             f"{len(prompts)} prompts")
        emb = _combine(raw.detach().cpu(), len(keys), n_templates)
        cut_rows = {j // n_templates for j in _cut_texts(teacher, prompts)}
        with self._lock:
            for i in sorted(cut_rows):
                self._cut[keys[i]] = None
            while len(self._cut) > self._cache.capacity:
                del self._cut[next(iter(self._cut))]
            if self._dim is not None and self._dim != emb.shape[1]:
                raise ValueError(f"teacher {teacher.id!r} gives {emb.shape[1]}-d embeddings but "
                                 f"the cache holds {self._dim}-d ones")
            self._dim = int(emb.shape[1])
        return {k: emb[i] for i, k in enumerate(keys)}

    def _load_disk_cache(self) -> None:
        path = self.cache_path
        assert path is not None
        if not os.path.lexists(path):
            return
        try:
            prompts, emb = read_cache_file(path, self.teacher_id)
        except Exception as exc:  # noqa: BLE001 - any failure means the file is unusable
            moved = set_aside(path) if os.path.isfile(path) else None   # not a FIFO, a device
            self.cache_error = (f"text embedding cache {path} is corrupt or unreadable ({exc}); "
                                f"{'moved to ' + str(moved) if moved else 'left in place'}; "
                                "starting with an empty cache")
            log.warning("%s", self.cache_error)
            return
        with self._lock:
            self._dim = int(emb.shape[1]) if len(prompts) else self._dim
            for p, vec in zip(prompts, emb):  # oldest use first: the newest are kept
                self._cache.put((self.teacher_id, tuple(p)), vec)
        log.info("text embedding cache %s: %d entries", path, len(prompts))

    def _save_disk_cache(self) -> None:
        """Rewrite the cache file with this service's entries and, when another process
        sharing the file (a second camera's node) wrote entries this one lacks, theirs too
        (read again under an advisory lock on its folder, older than this service's
        entries, within ``max_entries``): nodes sharing ``text_cache_dir`` no longer drop
        each other's names."""
        path = self.cache_path
        if path is None:
            return
        with self._lock:
            keys, emb = self._cache.items()
            dim = self._dim or 0
            capacity = self._cache.capacity
        prompts = [list(k[1]) for k in keys]
        if emb is None:
            emb = np.zeros((0, dim), np.float32)
        with _folder_lock(path):
            try:
                theirs, their_emb = read_cache_file(path, self.teacher_id)
            except Exception:  # noqa: BLE001 - none, or unusable: this service's alone
                theirs, their_emb = [], None
            if their_emb is not None and (not prompts or their_emb.shape[1] == emb.shape[1]):
                mine = {tuple(p) for p in prompts}
                extra = [i for i, p in enumerate(theirs) if tuple(p) not in mine]
                room = max(0, capacity - len(prompts))
                extra = extra[max(0, len(extra) - room):] if room else []   # their newest
                if extra:
                    prompts = [theirs[i] for i in extra] + prompts
                    emb = np.concatenate([their_emb[extra], emb]) if len(emb) \
                        else their_emb[extra]
            buf = io.BytesIO()
            np.savez(buf, version=np.array(CACHE_VERSION), teacher_id=np.array(self.teacher_id),
                     prompts=np.array(json.dumps(prompts, ensure_ascii=False)),
                     embeddings=emb)  # float32 already: no copy
            try:
                atomic_write_bytes(path, buf.getbuffer())  # a view: no copy of the file
            except OSError as exc:
                log.warning("could not write text embedding cache %s: %s (continuing in "
                            "memory)", path, exc)
