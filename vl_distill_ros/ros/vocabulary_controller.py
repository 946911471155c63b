"""The node's vocabulary: parameter protocol, embedding worker and store, without rclpy.

This module is the one place where the vocabulary parameter protocol of ``vl_distill_node``
is specified (the README links here). :class:`VocabularyController` implements it on plain
``{name: value}`` mappings; :class:`~vl_distill_ros.ros.node.VlDistillNode` only forwards its
three set-parameters callbacks to it and turns the returned values into ``Parameter``
objects, so the protocol is testable without a node.

Parameters
----------
``labels`` (string array), ``descriptions`` (string array) and ``vocabulary_file`` (string)
describe the *requested* vocabulary. The *active* vocabulary is the one the pipeline scores
with (``vocabulary_version`` in ``~/labels`` and ``/diagnostics``); a request becomes active
once its text embeddings are ready.

* ``labels`` set alone keeps the description of every name that stays (case-insensitive)
  and clears the others; ``descriptions`` is updated in the same atomic set, so
  ``ros2 param get`` always shows the requested vocabulary.
* ``labels`` set to an empty list means the bundle's vocabulary (names and descriptions),
  at start-up and at runtime; ``descriptions`` given with it must be empty.
* ``descriptions`` set alone must be empty or have one entry per current label.
* both in one ``SetParametersAtomically`` call are validated together. The node's
  ``SetParameters`` service (``ros2 param set``/``load``) also sets the vocabulary
  parameters of one request together, whatever their order
  (:class:`~vl_distill_ros.ros.parameter_service.GroupedParameterService`), so a
  ``ros2 param dump`` (alphabetical: ``descriptions`` before ``labels``) loads back exactly;
  parameters sent in separate requests are applied one after the other, and the embedding
  worker only embeds the latest request.
* ``vocabulary_file`` set to a YAML file replaces ``labels`` and ``descriptions`` (they are
  set to the file's contents in the same atomic set); setting ``labels`` or
  ``descriptions`` clears ``vocabulary_file``. ``labels`` or ``descriptions`` given together
  with a ``vocabulary_file`` must equal the file's (the one not given is set to the file's).
* the parameters show names and descriptions without the spaces around them (as used).
* a rejected change (bad name, duplicate, mismatched lengths, unreadable file) fails the
  whole set with the reason; the active vocabulary is unchanged.

The three callbacks of one set run in one executor thread, in this order:

1. pre-set (:meth:`VocabularyController.complete`): returns the parameters to add so that
   the three stay mutually consistent (the file's labels and descriptions, carried
   descriptions, a cleared ``vocabulary_file``);
2. on-set (:meth:`VocabularyController.validate`): builds the requested
   :class:`~vl_distill_ros.model.vocabulary.Vocabulary` or returns the reason to reject;
   nothing is applied yet (another callback may still reject the set);
3. post-set (:meth:`VocabularyController.commit`): the accepted request replaces the
   previous one and is queued for the worker.

Worker and sequence numbers
---------------------------
Every queued request increments a sequence number and sets ``vocabulary_state`` to
``embedding``. The worker waits :data:`VOCABULARY_DEBOUNCE_S` (so a ``descriptions`` set
right after ``labels`` is embedded together with it), embeds the latest request with the
:class:`~vl_distill_ros.model.text_service.TextEmbeddingService` while frames keep flowing,
and swaps it into the pipeline between frames (``vocabulary_version`` + 1) only if no newer
request arrived meanwhile (the latest request wins; stale embeddings are discarded). A failed
embedding sets ``vocabulary_state`` ``error`` (unless a newer request is pending) and keeps
the active vocabulary.

Start-up and store
------------------
At start-up the vocabulary comes, by precedence, from the store (``persist_vocabulary``),
``vocabulary_file``, ``labels``/``descriptions``, else the bundle. If the start-up vocabulary
cannot be embedded the node falls back to the bundle's vocabulary and reports the error.
``~/save_vocabulary`` saves the active vocabulary to ``vocabulary_store``; right after a
change it waits up to :data:`SAVE_PENDING_WAIT_S` for the request to become active and never
reports success for a vocabulary other than the one last requested. With
``persist_vocabulary`` every change that becomes active is saved.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ..model.text_service import TextEmbeddingService, alike_warning, cut_warning
from ..model.vocab_store import load_vocabulary_store_result, save_vocabulary_atomic
from ..model.vocabulary import (MAX_LABELS, Label, Vocabulary, VocabularyError,
                                check_label_lengths, fold_key)
from ..perception.pipeline import PipelineError
from ..thread_names import os_named
from .diagnostics import clip_text

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..perception.pipeline import PerceptionPipeline

__all__ = ["VOCABULARY_DEBOUNCE_S", "SAVE_PENDING_WAIT_S", "VocabularyController",
           "build_vocabulary", "descriptions_param"]

#: A vocabulary request waits this long for a follow-up change (e.g. ``descriptions`` right
#: after ``labels`` via the non-atomic SetParameters service) before it is embedded.
VOCABULARY_DEBOUNCE_S = 0.005
#: ``~/save_vocabulary`` right after a vocabulary change waits at most this long (in the
#: executor thread, so it stays short) for the change to be embedded and swapped in; if it is
#: still pending the call fails with success=False and saves nothing.
SAVE_PENDING_WAIT_S = 1.0


def build_vocabulary(names: Sequence[str], descriptions: Sequence[str],
                     previous: Vocabulary | None = None) -> Vocabulary:
    """Validate parameter values into a :class:`Vocabulary`.

    ``descriptions`` must be empty or one per name. Keys of names that were in ``previous``
    (case-insensitive) are kept, so a saved store keeps dataset keys, unless one would equal
    another name's key (``previous`` named ``mug`` ``cup``, and ``cup`` is a name now): that
    name then takes its own (its name, ``_`` for spaces).

    Raises:
        VocabularyError: the reason (empty/whitespace name, duplicate, too long, too many,
            mismatched lengths, ...).
    """
    names = list(names)
    descriptions = list(descriptions)
    if descriptions and len(descriptions) != len(names):
        raise VocabularyError(f"{len(names)} labels but {len(descriptions)} descriptions; give "
                              "no descriptions or exactly one per label")
    if len(names) > MAX_LABELS:   # before any per-name work: a huge list is refused at once
        raise VocabularyError(f"vocabulary has {len(names)} labels; the limit is {MAX_LABELS}")
    if not descriptions:
        descriptions = [""] * len(names)
    keys = {fold_key(lb.name): lb.key for lb in previous} if previous is not None else {}
    labels = []
    for i, (name, desc) in enumerate(zip(names, descriptions)):
        labels.append(_checked_label(i, name, desc, keys))
    own = [fold_key(lb.name) for lb in labels]        # each name's own key, folded
    carried = [fold_key(lb.key) for lb in labels]
    # a carried key clashes when another entry's own or carried key equals it; counted once
    # (linear): carried[i] != own[i], so entry i itself adds 1 to its count
    counts = Counter(own) + Counter(carried)
    for i, lb in enumerate(labels):
        if carried[i] != own[i] and counts[carried[i]] > 1:
            labels[i] = Label(name=lb.name, description=lb.description)
    return Vocabulary(tuple(labels))


def _checked_label(i: int, name: Any, desc: Any, keys: Mapping[str, str]) -> Label:
    """Entry ``i`` as a :class:`Label` (stripped, with its carried key from ``keys``), its
    name and description checked against the lengths :class:`Vocabulary` allows before any
    further work on them.

    Raises:
        VocabularyError: an empty or whitespace name, a name or description too long.
    """
    if not isinstance(name, str) or not name.strip():
        raise VocabularyError(f"label {i} is empty or whitespace")
    clean = name.strip()
    description = (desc or "").strip()
    check_label_lengths(i, clean, description)
    return Label(name=clean, description=description, key=keys.get(fold_key(clean), ""))


def descriptions_param(vocab: Vocabulary) -> list[str]:
    """The ``descriptions`` parameter value of ``vocab``: ``[]`` when no label has one."""
    descs = [lb.description for lb in vocab]
    return descs if any(descs) else []


def _same_descriptions(given: Any, vocab: Vocabulary) -> bool:
    """Whether a ``descriptions`` value describes ``vocab``'s labels as they are (``[]``: none
    has one)."""
    if not _is_string_array(given):
        return False
    given = [d.strip() for d in given] or [""] * len(vocab)
    return given == [lb.description for lb in vocab]


def _is_string_array(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


class VocabularyController:
    """The requested and active vocabulary of one node (protocol in the module docstring).

    Args:
        text_service: embeds vocabularies (its ``embed_vocabulary`` is looked up per call).
        store_path: the ``vocabulary_store`` file.
        logger: anything with ``info``/``warning``/``error`` methods (an rclpy logger or a
            :class:`logging.Logger`).
        persist: returns the current ``persist_vocabulary`` value.
        debounce_s: see :data:`VOCABULARY_DEBOUNCE_S`.
        older_store: a store under an older default name, read at start-up while
            ``store_path`` does not exist and never written (saves go to ``store_path``).

    Attributes:
        requested: the vocabulary last requested (shown by the parameters).
        pipeline: the pipeline whose vocabulary is swapped (:meth:`attach`).
    """

    def __init__(self, text_service: TextEmbeddingService, store_path: Path, logger: Any,
                 persist: Callable[[], bool] = lambda: False,
                 debounce_s: float = VOCABULARY_DEBOUNCE_S,
                 older_store: Path | None = None) -> None:
        self.text_service = text_service
        self.store_path = Path(store_path)
        self.older_store = Path(older_store) if older_store is not None else None
        self.log = logger
        self._persist = persist
        self.debounce_s = float(debounce_s)
        self.pipeline: PerceptionPipeline | None = None
        self.requested: Vocabulary | None = None
        #: what ``labels: []`` means (the bundle's vocabulary; :meth:`attach`).
        self.default: Vocabulary | None = None
        #: called with the new version after each swap (:meth:`attach`).
        self.on_swap: Callable[[int], None] | None = None
        self._lock = threading.Condition()
        self._tls = threading.local()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._request: Vocabulary | None = None
        self._seq = 0
        self.state = "ready"
        self.error = ""
        self.source = "bundle"
        self.store_status = "not used"
        self.store_error = ""

    # ------------------------------------------------------------------------------------
    # start-up
    # ------------------------------------------------------------------------------------
    def startup_vocabulary(self, values: Mapping[str, Any],
                           bundle_vocabulary: Vocabulary) -> tuple[Vocabulary, str, str]:
        """(vocabulary, source, vocabulary_file) by precedence store > file > labels > bundle.

        Raises:
            VocabularyError: a bad ``vocabulary_file`` or ``labels``/``descriptions`` (the
                message names the parameter).
        """
        if values.get("persist_vocabulary"):
            result = load_vocabulary_store_result(self.store_path)
            if result.status == "missing" and self.older_store is not None:
                result = load_vocabulary_store_result(self.older_store)   # read, not written
            self.store_status = result.status
            if result.vocabulary is not None:
                saved = ("" if result.path == self.store_path
                         else f"; saved to {self.store_path} from now on")
                self.log.info(f"vocabulary store {result.path}: "
                              f"{len(result.vocabulary)} labels (restored{saved})")
                return result.vocabulary, f"store {result.path}", ""
            if result.error:    # logged by the store's reader (on the node's logger too)
                self.store_error = result.error
        vocab_file = values.get("vocabulary_file") or ""
        if vocab_file:
            try:
                return (Vocabulary.load(Path(vocab_file).expanduser()), f"file {vocab_file}",
                        vocab_file)
            except VocabularyError as exc:
                raise VocabularyError(f"vocabulary_file: {exc}") from None
        if values.get("labels"):
            try:
                return (build_vocabulary(values["labels"], values.get("descriptions") or [],
                                         bundle_vocabulary), "labels parameter", "")
            except VocabularyError as exc:
                raise VocabularyError(f"labels/descriptions: {exc}") from None
        return bundle_vocabulary, "bundle", ""

    def _warn_prompted_alike(self, vocab: Vocabulary, emb: "torch.Tensor | None" = None
                             ) -> None:
        """Log a warning for labels of ``vocab`` that are prompted or (given their
        embeddings ``emb``) embedded alike: the later is never chosen; and for labels whose
        prompts the teacher cut at its context."""
        pairs = self.text_service.prompted_alike(vocab.labels, emb)
        if pairs:
            self.log.warning(alike_warning(pairs))
        cut = self.text_service.cut_labels(vocab.labels)
        if cut:
            self.log.warning(cut_warning(cut))

    def embed_startup(self, vocab: Vocabulary):
        """The embeddings of ``vocab``, or ``None`` (error recorded and logged) on failure."""
        try:
            emb = self.text_service.embed_vocabulary(vocab)
        except Exception as exc:  # noqa: BLE001 - e.g. teacher weights missing offline
            self._warn_prompted_alike(vocab)
            self.error = f"could not embed the start-up vocabulary: {exc}"
            self.state = "error"
            self.log.error(self.error + "; using the bundle's vocabulary")
            return None
        self._warn_prompted_alike(vocab, emb)
        return emb

    def attach(self, pipeline: "PerceptionPipeline", vocab: Vocabulary, source: str,
               default: Vocabulary | None = None,
               on_swap: Callable[[int], None] | None = None) -> None:
        """Use ``pipeline``, built with the start-up vocabulary ``vocab`` from ``source``;
        ``default`` is what an empty ``labels`` requests (the bundle's vocabulary),
        ``on_swap(version)`` is called (worker thread) after each vocabulary swap."""
        self.pipeline = pipeline
        self.requested = vocab
        self.source = source
        self.default = default
        self.on_swap = on_swap

    def start(self) -> None:
        """Start the embedding worker thread."""
        self._thread = threading.Thread(target=os_named(self._worker_loop, "vl_vocabulary"),
                                        name="vl_distill_vocabulary",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker thread and wait for a text encoder still loading (idempotent).

        The encoder's load cannot be interrupted; a process that exits while it runs may be
        aborted by the C++ runtime ("terminate called without an active exception").
        """
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=timeout)

    def warm(self) -> None:
        """Load the teacher's text encoder now, in the calling thread (new names then cost
        ~0.1 s instead of the encoder's load). The node calls it before it subscribes to
        its cameras: loaded in a background thread, the encoder competed with the first
        frames for the interpreter lock and the node dropped its first seconds of frames.
        A teacher that cannot load is logged, not raised (it only matters for new names)."""
        start = time.perf_counter()
        try:
            self.text_service.warm()
        except Exception as exc:  # noqa: BLE001 - a missing teacher only matters for new names
            self.log.warning(f"could not preload the teacher's text encoder: {exc}; "
                             "names not in the cache will fail to embed")
            return
        self.log.info(f"teacher text encoder ready in {time.perf_counter() - start:.1f} s")

    # ------------------------------------------------------------------------------------
    # the parameter protocol (pre -> on -> post in one thread per set)
    # ------------------------------------------------------------------------------------
    def complete(self, changes: Mapping[str, Any], current_file: str) -> dict[str, Any]:
        """Pre-set: the parameters to add to ``changes`` (name -> value).

        Args:
            changes: the parameters being set (name -> value).
            current_file: the current ``vocabulary_file`` value.
        """
        self._tls.file_vocab = None
        vf, lb, ds = (changes.get("vocabulary_file"), changes.get("labels"),
                      changes.get("descriptions"))
        extra: dict[str, Any] = {}
        if isinstance(vf, str) and vf.strip():
            try:
                vocab = Vocabulary.load(Path(vf).expanduser())
            except VocabularyError:
                return extra  # validate() rejects it with the reason
            self._tls.file_vocab = (vf, vocab)
            # labels or descriptions given with the file must be the file's (validate()
            # rejects others); the ones not given are set to the file's
            return {name: value for name, value in (
                ("labels", vocab.names), ("descriptions", descriptions_param(vocab)))
                if name not in changes}
        if (lb is not None or ds is not None) and vf is None and current_file:
            extra["vocabulary_file"] = ""
        if _is_string_array(lb) and len(lb) == 0 and self.default is not None and not ds:
            # labels: [] -> the bundle's vocabulary, with its descriptions
            extra.update(labels=self.default.names,
                         descriptions=descriptions_param(self.default))
            return extra
        # the parameters show what is used: names and descriptions without the spaces
        # around them that the vocabulary drops
        for name, value in (("labels", lb), ("descriptions", ds)):
            if _is_string_array(value) and any(v != v.strip() for v in value):
                extra[name] = [v.strip() for v in value]
        if lb is not None and ds is None and _is_string_array(lb):
            requested = self.requested if self.requested is not None else Vocabulary(())
            old = {fold_key(x.name): x.description for x in requested}
            carried = [old.get(fold_key(str(n)), "") for n in lb]
            extra["descriptions"] = carried if any(carried) else []
        return extra

    def validate(self, changes: Mapping[str, Any],
                 current: Callable[[str], Any]) -> str | None:
        """On-set: build the requested vocabulary of ``changes``; ``None`` when acceptable
        (or not a vocabulary change), else the reason to reject the whole set.

        Args:
            changes: the parameters being set, completed by :meth:`complete`.
            current: the current value of a parameter by name.
        """
        self._tls.vocab = None
        if not {"labels", "descriptions", "vocabulary_file"} & changes.keys():
            return None
        vf = changes.get("vocabulary_file")
        try:
            if vf is not None and vf.strip():
                cached = getattr(self._tls, "file_vocab", None)
                if cached is not None and cached[0] == vf:
                    vocab = cached[1]
                else:
                    vocab = Vocabulary.load(Path(vf).expanduser())
                if "labels" in changes and list(changes["labels"]) != vocab.names:
                    raise VocabularyError("labels and vocabulary_file were both given and "
                                          "disagree; set one of them")
                if "descriptions" in changes and not _same_descriptions(
                        changes["descriptions"], vocab):
                    raise VocabularyError("descriptions and vocabulary_file were both given "
                                          "and disagree; set one of them (the file's "
                                          "descriptions come with it)")
                self._tls.vocab = vocab
            elif "labels" in changes or "descriptions" in changes:
                names = changes["labels"] if "labels" in changes else current("labels")
                descs = (changes["descriptions"] if "descriptions" in changes
                         else current("descriptions"))
                self._tls.vocab = build_vocabulary(list(names), list(descs), self.requested)
        except VocabularyError as exc:
            version = self.pipeline.active.version if self.pipeline is not None else 0
            reason = (f"vocabulary rejected: {exc}; the active vocabulary (version {version}) "
                      "is unchanged")
            self.log.warning(reason)
            return reason
        return None

    def commit(self) -> Vocabulary | None:
        """Post-set: queue the vocabulary :meth:`validate` accepted (returned; ``None`` when
        the set did not change the vocabulary)."""
        vocab = getattr(self._tls, "vocab", None)
        self._tls.vocab = self._tls.file_vocab = None
        if vocab is not None:
            self.requested = vocab
            self.request(vocab)
        return vocab

    # ------------------------------------------------------------------------------------
    # the embedding worker
    # ------------------------------------------------------------------------------------
    def request(self, vocab: Vocabulary) -> int:
        """Queue ``vocab`` for embedding and swapping in (latest request wins); returns its
        sequence number."""
        with self._lock:
            self._request = vocab
            self._seq += 1
            self.state = "embedding"
            self._lock.notify_all()
            return self._seq

    def status(self) -> dict[str, str]:
        """A consistent snapshot: state, error, source, store_status, store_error."""
        with self._lock:
            return {"state": self.state, "error": self.error, "source": self.source,
                    "store_status": self.store_status, "store_error": self.store_error}

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is queued or being embedded (state not ``embedding``)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.state == "embedding":
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.05))
        return True

    def _next_request(self) -> tuple[Vocabulary | None, int] | None:
        """Block until a request is queued; ``None`` when stopping."""
        with self._lock:
            while self._request is None and not self._stop.is_set():
                self._lock.wait(0.5)
            if self._stop.is_set():
                return None
        time.sleep(self.debounce_s)  # let a follow-up set (descriptions) arrive
        with self._lock:
            vocab, seq = self._request, self._seq
            self._request = None
        return vocab, seq

    def _worker_loop(self) -> None:
        while not self._stop.is_set():
            item = self._next_request()
            if item is None:
                return
            if item[0] is not None:
                self._embed_and_swap(*item)

    def _embed_and_swap(self, vocab: Vocabulary, seq: int) -> None:
        assert self.pipeline is not None
        start = time.perf_counter()
        try:
            emb = self.text_service.embed_vocabulary(vocab)
        except Exception as exc:  # noqa: BLE001 - report any teacher failure, keep running
            with self._lock:
                self.error = f"could not embed the new vocabulary ({len(vocab)} labels): {exc}"
                if self._seq == seq:  # else a newer request is pending: 'embedding'
                    self.state = "error"
                self._lock.notify_all()
            self.log.error(self.error + "; the active vocabulary "
                           f"(version {self.pipeline.active.version}) is unchanged")
            return
        with self._lock:
            if self._seq != seq or self._stop.is_set():
                return  # a newer request arrived meanwhile: embed that one instead
        try:
            version = self.pipeline.set_vocabulary(vocab, emb)
        except PipelineError as exc:
            with self._lock:
                self.error = f"embeddings rejected: {exc}"
                self.state = "error"
                self._lock.notify_all()
            self.log.error(self.error)
            return
        with self._lock:
            if self._seq == seq:
                self.state = "ready"
            self.error = ""
            self.source = "parameters"
            self._lock.notify_all()  # a waiting save()
        catalogued = self.text_service.catalogued(vocab.labels)
        self._warn_prompted_alike(vocab, emb)
        self.log.info(f"vocabulary version {version}: {len(vocab)} labels, embedded in "
                      f"{time.perf_counter() - start:.2f} s ({self.text_service.stats})"
                      + (f"; {len(catalogued)} without a description take the bundle's "
                         "catalogued one" if catalogued else ""))
        if self.on_swap is not None:
            self.on_swap(version)
        if self._persist():
            self.save_store(vocab)

    # ------------------------------------------------------------------------------------
    # the store
    # ------------------------------------------------------------------------------------
    def save_store(self, vocab: Vocabulary) -> tuple[bool, str]:
        """Write ``vocab`` to the store atomically; (success, message)."""
        try:
            path = save_vocabulary_atomic(vocab, self.store_path)
        except OSError as exc:
            msg = f"could not save the vocabulary to {self.store_path}: {exc}"
            with self._lock:
                self.store_error, self.store_status = msg, "write failed"
            self.log.error(msg)
            return False, msg
        with self._lock:
            self.store_error, self.store_status = "", "saved"
        return True, f"saved {len(vocab)} labels to {path}"

    def save_requested(self, wait_s: float = SAVE_PENDING_WAIT_S) -> tuple[bool, str]:
        """``~/save_vocabulary``: save the requested vocabulary once it is active, waiting at
        most ``wait_s`` for a pending change; (success, message)."""
        assert self.pipeline is not None
        deadline = time.monotonic() + wait_s
        with self._lock:
            while True:
                active = self.pipeline.active
                requested = self.requested
                if requested == active.vocabulary or self.state == "error":
                    break
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    break
                self._lock.wait(min(left, 0.05))
            state, error = self.state, self.error
        if requested != active.vocabulary:
            assert requested is not None
            if state == "error":
                return False, (f"not saved: the requested vocabulary ({len(requested)} labels) "
                               f"could not be embedded ({clip_text(error)}); the active one "
                               f"is version {active.version}")
            return False, (f"not saved: a vocabulary change ({len(requested)} labels) is still "
                           "being embedded; call again when it is active (vocabulary_state "
                           "'ready' in /diagnostics)")
        ok, msg = self.save_store(active.vocabulary)
        return ok, (f"{msg} (vocabulary version {active.version})" if ok else msg)
