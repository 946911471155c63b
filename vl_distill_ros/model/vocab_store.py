"""Persisting the node's active vocabulary across restarts, crash-safely.

The file is the same YAML as ``config/ycb_vocabulary.yaml`` (:meth:`Vocabulary.to_dict`).

Writing (:func:`save_vocabulary_atomic`) goes to a temporary file in the same directory which
is flushed, fsynced and then renamed over the target with :func:`os.replace`; the directory
is fsynced too. A crash or an error at any point leaves either the old file or the new one,
never a mix, and no temporary file behind (on errors it is removed).

Reading contract (:func:`load_vocabulary_store_result` / :func:`load_vocabulary_store`):

* the file does not exist -> no vocabulary, no error (``status == "missing"``);
* the file is readable but corrupt (not UTF-8, not YAML, not a valid vocabulary) -> an error
  is logged, the file is renamed to ``<path>.corrupt-<UTC timestamp>`` so the next save does
  not destroy the evidence, and no vocabulary is returned; the reason and the new location
  are in the :class:`StoreLoadResult` (``status == "corrupt"``) so the node can publish a
  diagnostic and fall back to its configured vocabulary;
* the file cannot be read at all (permissions, a directory, a FIFO or device, over
  :data:`MAX_STORE_BYTES`, I/O error) -> an error is logged
  and returned, and the file is left where it is (``status == "unreadable"``).

Nothing here raises for a bad store file; only :func:`save_vocabulary_atomic` raises
(``OSError``) when the new file cannot be written, and then the old file is intact.

The crash-safe helpers live in :mod:`vl_distill_ros.atomic_io`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..atomic_io import atomic_write_bytes, read_regular_file, set_aside  # noqa: F401
from .vocabulary import Vocabulary, VocabularyError

log = logging.getLogger(__name__)

#: Largest store file read back (bytes): every vocabulary the node accepts fits (1000 labels
#: of 64-character names, 300-character descriptions and 128-character keys take at most
#: about 5 MB even when YAML escapes every character); a vocabulary file a user writes is
#: held to 1 MiB (``MAX_VOCABULARY_FILE_BYTES``), but a saved store of 3-byte characters
#: could exceed that and was then refused at the next start.
MAX_STORE_BYTES = 8 << 20
#: First lines of a saved store file.
STORE_HEADER = ("# Active vocabulary of the vl_distill_ros node (written automatically; "
                "same format as config/ycb_vocabulary.yaml).\n")


def save_vocabulary_atomic(vocab: Vocabulary, path: str | Path) -> Path:
    """Save ``vocab`` as YAML at ``path`` atomically (see module doc); returns the path.

    Raises:
        OSError: the file could not be written, or would be larger than
            :data:`MAX_STORE_BYTES` (not read back); an existing file at ``path`` is unchanged.
    """
    text = STORE_HEADER + yaml.safe_dump(vocab.to_dict(), sort_keys=False, allow_unicode=True)
    data = text.encode("utf-8")
    if len(data) > MAX_STORE_BYTES:
        raise OSError(f"the vocabulary takes {len(data)} bytes; a store over "
                      f"{MAX_STORE_BYTES} bytes would not be read back")
    return atomic_write_bytes(path, data)


@dataclass(frozen=True)
class StoreLoadResult:
    """What :func:`load_vocabulary_store_result` found.

    Attributes:
        path: the store file asked for.
        vocabulary: the stored vocabulary, or None (missing, corrupt or unreadable file).
        error: why the file could not be used (None when loaded or simply missing).
        moved_to: where a corrupt file was moved (None unless it was set aside).
    """

    path: Path
    vocabulary: Vocabulary | None = None
    error: str | None = None
    moved_to: Path | None = None

    @property
    def status(self) -> str:
        """``loaded``, ``missing``, ``corrupt`` (set aside) or ``unreadable`` (left in place)."""
        if self.vocabulary is not None:
            return "loaded"
        if self.error is None:
            return "missing"
        return "corrupt" if self.moved_to is not None else "unreadable"


def load_vocabulary_store_result(path: str | Path) -> StoreLoadResult:
    """Load the stored vocabulary per the module's reading contract; never raises for bad files."""
    path = Path(path)
    try:
        raw = read_regular_file(path, MAX_STORE_BYTES)  # never blocks (FIFO)
    except FileNotFoundError:
        return StoreLoadResult(path=path)
    except OSError as exc:
        error = f"cannot read vocabulary store {path}: {exc}"
        log.error("%s", error)
        return StoreLoadResult(path=path, error=error)
    try:
        try:
            data = yaml.safe_load(raw.decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise VocabularyError(f"not valid YAML: {exc}") from None
        # a store saved under older name rules keeps what they still accept
        vocabulary, dropped = Vocabulary.from_dict_migrating(data, source=str(path))
    except VocabularyError as exc:
        reason = str(exc)
        moved_to = set_aside(path)
        where = f"moved to {moved_to}" if moved_to else "could not be moved aside"
        error = f"vocabulary store {path} is corrupt ({reason}); {where}"
        log.error("%s", error)
        return StoreLoadResult(path=path, error=error, moved_to=moved_to)
    if dropped:
        log.warning("vocabulary store %s, saved under older name rules: %d change(s), "
                    "labels left out that the rules now read as an earlier name, as nothing "
                    "or as 'unknown', or keys replaced: %s", path, len(dropped),
                    ", ".join(repr(n) for n in dropped[:10]))
    return StoreLoadResult(path=path, vocabulary=vocabulary)


def load_vocabulary_store(path: str | Path) -> Vocabulary | None:
    """The stored vocabulary, or None when the file is missing, corrupt or unreadable.

    A corrupt file is logged and set aside as described in the module doc; call
    :func:`load_vocabulary_store_result` instead to learn why and where it went.
    """
    return load_vocabulary_store_result(path).vocabulary
