"""Vocabularies: labels with optional one-sentence appearance descriptions.

A vocabulary is an ordered list of :class:`Label`. Each label has a natural ``name`` (what
goes into the prompt and what the node publishes), a stable ``key`` (folder names of image
datasets, split files; defaults to the name with spaces replaced by underscores) and an
optional ``description`` used for language enrichment (Li et al., ICCV 2023, Sec. 4.3).

YAML format (``config/ycb_vocabulary.yaml``)::

    labels:
      - key: 011_banana          # optional; default: name with '_' for ' '
        name: banana
        description: A curved yellow fruit with a green stem and brown tips.
"""
from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import yaml

from ..atomic_io import FileRejected, read_regular_file
from ..config import load_yaml

log = logging.getLogger(__name__)

#: The question asked of a language model to write a label's description (the paper's).
DESCRIPTION_QUESTION = (
    "Use a single sentence to describe the appearance and shape of {cls}. "
    "Only describe the shape and appearance."
)

#: Default prompt: "a photo of a {name}." followed by the description when enriched.
DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {name}.",)

MAX_NAME_LENGTH = 64
#: Longest key (a dataset folder name such as ``011_banana``; by default the name's).
MAX_KEY_LENGTH = 128
MAX_DESCRIPTION_LENGTH = 300
MAX_LABELS = 1000
#: The label of a crop the open-set rule rejects (``known: false``); reserved, so no
#: vocabulary entry can be mistaken for a rejection.
UNKNOWN_NAME = "unknown"
#: Largest vocabulary (or split) file read, in bytes (1 MiB); only regular files are read.
MAX_VOCABULARY_FILE_BYTES = 1 << 20


class VocabularyError(ValueError):
    """A vocabulary entry or file is invalid; the message says which and why."""


@dataclass(frozen=True)
class Label:
    """One vocabulary entry."""

    name: str
    description: str = ""
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key and isinstance(self.name, str):
            # composed (NFC), as lengths are counted: a decomposed name's key is no longer
            object.__setattr__(self, "key", unicodedata.normalize(
                "NFC", self.name.strip()).replace(" ", "_"))


def build_prompts(label: Label, templates: Sequence[str] = DEFAULT_TEMPLATES,
                  enrich: bool = True) -> list[str]:
    """Return one prompt per template: ``template.format(name=...)`` plus the description.

    With ``enrich`` and a non-empty description the prompt is
    ``"a photo of a {name}. {description}"``.
    """
    prompts = []
    for template in templates:
        text = template.format(name=label.name)
        if enrich and label.description:
            text = f"{text} {label.description.strip()}"
        prompts.append(text)
    return prompts


def _read_yaml(path: Path, what: str) -> object:
    """Parse a YAML file; any problem becomes a :class:`VocabularyError` naming ``what``.

    Only a regular file of at most :data:`MAX_VOCABULARY_FILE_BYTES` is read, without ever
    blocking (see :func:`~vl_distill_ros.atomic_io.read_regular_file`): a FIFO, a device
    such as ``/dev/zero``, a directory or a bigger file is rejected with the reason.
    """
    try:
        text = read_regular_file(path, MAX_VOCABULARY_FILE_BYTES).decode("utf-8")
        return load_yaml(text)   # the C parser when PyYAML has it; duplicate keys refused
    except FileNotFoundError:
        raise VocabularyError(f"{what} file not found: {path}") from None
    except FileRejected as exc:
        raise VocabularyError(f"cannot read {what} file: {exc}") from None
    except OSError as exc:
        raise VocabularyError(f"cannot read {what} file {path}: {exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise VocabularyError(f"cannot read {what} file {path}: not valid YAML: {exc}") from None


#: Characters that show nothing (Unicode's default-ignorable code points, and blank
#: letters): the soft hyphen, the combining grapheme joiner, the Arabic letter mark, the
#: Hangul fillers, Khmer's inherent vowels, Mongolian's variation selectors and vowel
#: separator, the zero-width space, (non-)joiners and direction marks, bidirectional
#: embeddings, the word joiner and invisible operators, the blank Braille pattern, variation
#: selectors (also the supplementary ones), the byte-order mark, the shorthand format
#: controls, the musical formatting characters and the unassigned default-ignorables. Not
#: every format character: U+0600's number signs show, and the tag characters of a
#: subdivision flag (U+E0020-E007F) tell Scotland's from Wales's.
_INVISIBLE = frozenset(
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180e\u180f"
    "\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    + "".join(chr(c) for c in range(0x2060, 0x2070))
    + "\u2800\u3164" + "".join(chr(c) for c in range(0xFE00, 0xFE10)) + "\ufeff\uffa0"
    + "".join(chr(c) for c in (*range(0xFFF0, 0xFFF9), *range(0x1BCA0, 0x1BCA4),
                               *range(0x1D173, 0x1D17B), *range(0xE0000, 0xE0020),
                               *range(0xE0080, 0xE1000))))
#: Typographic apostrophes and quotes read as ASCII ones (a phone keyboard's ``Rubik’s``).
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'", "\u201c": '"',
                         "\u201d": '"'})


def visible_text(text: str) -> str:
    """``text`` without the characters that show nothing (:data:`_INVISIBLE`: zero-width
    spaces and joiners, the byte-order mark, soft hyphens, blank letters)."""
    return "".join(c for c in text if c not in _INVISIBLE)


def normalised_text(text: str) -> str:
    """``text`` Unicode compatibility-normalised (NFKC: NFC and NFD spellings, full-width
    letters) without the characters that show nothing (:func:`visible_text`), stripped."""
    return visible_text(unicodedata.normalize("NFKC", text)).strip()


def fold_key(text: str) -> str:
    """The form under which names and keys are compared (duplicates, the reserved
    ``unknown``, lookups): Unicode compatibility-normalised (NFKC: NFC and NFD spellings,
    full-width letters), without invisible characters (:func:`visible_text`), typographic
    apostrophes as ``'``, case-folded, ``_`` read as a space and runs of spaces as one."""
    text = normalised_text(text).translate(_QUOTES)
    return " ".join(text.casefold().replace("_", " ").split())


def _not_text(value: object) -> str:
    """Why a YAML value that should be a name is not one (with the usual cause)."""
    if isinstance(value, (bool, int, float)) or value is None:
        return (f"is {value!r}, not text: YAML reads unquoted yes/no/on/off/true/false, null "
                "and numbers as such; quote it")
    return f"must be a string, not {type(value).__name__}"


def _bad_characters(text: str) -> str:
    """The control characters of ``text`` (C0, DEL, C1) and Unicode line/paragraph
    separators, as a readable list; empty when there are none."""
    bad = sorted({c for c in text if unicodedata.category(c) in ("Cc", "Zl", "Zp")})
    return ", ".join(f"U+{ord(c):04X}" for c in bad)


def check_label_lengths(i: int, name: str, description: str = "",
                        max_name_length: int = MAX_NAME_LENGTH) -> None:
    """Raise :class:`VocabularyError` when label ``i``'s ``name`` is longer than
    ``max_name_length`` or its ``description`` longer than :data:`MAX_DESCRIPTION_LENGTH`
    (checked before any other work on a list of names: the node's ``labels`` parameter)."""
    if len(name) > max_name_length:
        # counted as composed characters (NFC): a decomposed é is one character, not two
        length = len(unicodedata.normalize("NFC", name))
        if length > max_name_length:
            raise VocabularyError(f"label {i} name {name[:20]!r}... is {length} characters; "
                                  f"the limit is {max_name_length}")
    if len(description) > MAX_DESCRIPTION_LENGTH:
        length = len(unicodedata.normalize("NFC", description))
        if length > MAX_DESCRIPTION_LENGTH:
            raise VocabularyError(f"label {i} ({name!r}) description is {length} "
                                  f"characters; the limit is {MAX_DESCRIPTION_LENGTH}")


def validate_labels(labels: Sequence[Label], max_labels: int = MAX_LABELS,
                    max_name_length: int = MAX_NAME_LENGTH) -> None:
    """Raise :class:`VocabularyError` with a reason if the labels do not form a vocabulary.

    Rejects: no labels, too many labels, names of nothing visible (empty, whitespace, ``_``
    or invisible characters only), names that are too long or contain control characters,
    over-long descriptions, duplicate names (compared by :func:`fold_key`: case, ``_`` and
    spacing aside, Unicode-normalised, invisible characters left out, as keys and lookups
    read them), empty, over-long or duplicate keys and the reserved name ``unknown``
    (:data:`UNKNOWN_NAME`, in any of those spellings).
    """
    if len(labels) == 0:
        raise VocabularyError("vocabulary is empty: give at least one label")
    if len(labels) > max_labels:
        raise VocabularyError(f"vocabulary has {len(labels)} labels; the limit is {max_labels}")
    seen: dict[str, int] = {}
    keys: dict[str, int] = {}
    for i, label in enumerate(labels):
        if not isinstance(label.name, str) or not label.name.strip():
            raise VocabularyError(f"label {i} has an empty name")
        check_label_lengths(i, label.name, "", max_name_length)
        bad = _bad_characters(label.name)
        if bad:
            raise VocabularyError(f"label {i} name {label.name!r} contains control characters "
                                  f"({bad}); names must be printable text")
        if not isinstance(label.description, str):
            raise VocabularyError(f"label {i} ({label.name!r}) description must be a string")
        bad = _bad_characters(label.description)
        if bad:
            raise VocabularyError(f"label {i} ({label.name!r}) description contains control "
                                  f"characters ({bad}); descriptions must be one line of "
                                  "printable text")
        check_label_lengths(i, label.name, label.description, max_name_length)
        folded = fold_key(label.name)
        if not folded:
            raise VocabularyError(f"label {i} name {label.name!r} shows nothing (only spaces, "
                                  "'_' or invisible characters)")
        if folded == UNKNOWN_NAME:
            raise VocabularyError(
                f"label {i} {label.name!r} is reserved: it is what the node publishes for an "
                "object it cannot name (known: false); use another name")
        if folded in seen:
            raise VocabularyError(
                f"duplicate label {label.name!r} (entries {seen[folded]} and {i}, "
                "compared case-insensitively, '_' read as a space, spacing aside, "
                "Unicode-normalised, invisible characters left out)")
        seen[folded] = i
        if not isinstance(label.key, str) or not fold_key(label.key) \
                or _bad_characters(label.key):
            raise VocabularyError(f"label {i} ({label.name!r}) has an empty or invalid key")
        if len(label.key) > MAX_KEY_LENGTH:
            raise VocabularyError(f"label {i} ({label.name!r}) key is {len(label.key)} "
                                  f"characters; the limit is {MAX_KEY_LENGTH}")
        if fold_key(label.key) in keys:
            raise VocabularyError(f"duplicate key {label.key!r} (entries "
                                  f"{keys[fold_key(label.key)]} and {i})")
        keys[fold_key(label.key)] = i


def _unknown_top_keys(data: object, known: tuple[str, ...], path: Path, hint: str) -> str:
    """What to say of the top-level keys of a vocabulary or split file that are not in
    ``known`` ("" for none): they are not read (``descriptions: [...]`` beside ``labels``
    dropped every description without a word)."""
    if not isinstance(data, dict):
        return ""
    unknown = [k for k in data if k not in known]
    if not unknown:
        return ""
    return (f"{path}: unknown top-level keys {unknown[:10]}; known: {list(known)}"
            + (f" ({hint})" if hint else ""))


def _labels_from_dict(data: object, source: str) -> list[Label]:
    """The labels of the parsed YAML structure ``{"labels": [{name, description, key}]}``,
    each checked for its fields' types (the vocabulary's rules are :class:`Vocabulary`'s).

    Raises:
        VocabularyError: not that structure, too many labels, a field of the wrong type.
    """
    if not isinstance(data, dict) or not isinstance(data.get("labels"), list):
        raise VocabularyError(f"{source}: expected a mapping with a 'labels' list")
    if len(data["labels"]) > MAX_LABELS:
        raise VocabularyError(f"{source}: vocabulary has {len(data['labels'])} labels; the "
                              f"limit is {MAX_LABELS}")
    labels = []
    for i, entry in enumerate(data["labels"]):
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, (dict, list)):
            raise VocabularyError(f"{source}: labels[{i}] {_not_text(entry)}")
        if not isinstance(entry, dict) or "name" not in entry:
            raise VocabularyError(f"{source}: labels[{i}] needs a 'name'")
        unknown = set(entry) - {"name", "description", "key"}
        if unknown:
            raise VocabularyError(f"{source}: labels[{i}] has unknown fields {sorted(unknown)}")
        name = entry["name"]
        if not isinstance(name, str):
            raise VocabularyError(f"{source}: labels[{i}] name {_not_text(name)}")
        description = entry.get("description")
        if description is not None and not isinstance(description, str):
            raise VocabularyError(f"{source}: labels[{i}] description must be a string")
        key = entry.get("key")
        if key is not None and not isinstance(key, str):   # e.g. key: 011 (octal 9)
            raise VocabularyError(f"{source}: labels[{i}] key {_not_text(key)}")
        labels.append(Label(name=name.strip(),
                            description=(description or "").strip(),
                            key=key or ""))
    return labels


@dataclass(frozen=True)
class Vocabulary:
    """An ordered, validated list of labels."""

    labels: tuple[Label, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        validate_labels(self.labels)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_names(cls, names: Iterable[str],
                   descriptions: Sequence[str] | None = None) -> "Vocabulary":
        """Build from parallel lists of names and (optional, same length) descriptions."""
        names = list(names)
        if descriptions is None or len(descriptions) == 0:
            descriptions = [""] * len(names)
        if len(descriptions) != len(names):
            raise VocabularyError(
                f"{len(names)} labels but {len(descriptions)} descriptions; give none or one "
                "per label")
        for i, name in enumerate(names):
            if not isinstance(name, str):
                raise VocabularyError(f"label {i} is not a string: {name!r}")
        return cls(tuple(Label(name=n.strip(), description=(d or "").strip())
                         for n, d in zip(names, descriptions)))

    @classmethod
    def from_dict(cls, data: object, source: str = "<dict>") -> "Vocabulary":
        """Build from the parsed YAML structure ``{"labels": [{name, description, key}]}``."""
        labels = _labels_from_dict(data, source)
        try:
            return cls(tuple(labels))
        except VocabularyError as exc:
            raise VocabularyError(f"{source}: {exc}") from None

    @classmethod
    def from_dict_migrating(cls, data: object, source: str = "<dict>"
                            ) -> tuple["Vocabulary", list[str]]:
        """:meth:`from_dict` for a vocabulary saved under older, looser name rules (a store
        written before names were compared Unicode-normalised): the labels the rules now
        refuse (a later spelling of an earlier name, a name that shows nothing or spells
        ``unknown``) are left out, and a key they read as nothing or as an earlier one is
        replaced by one made from the name; returns the vocabulary and what changed (the
        names left out, the keys replaced).

        Raises:
            VocabularyError: not a vocabulary even then (the reason of :meth:`from_dict`).
        """
        try:
            return cls.from_dict(data, source), []
        except VocabularyError as exc:
            error = exc
        labels = _labels_from_dict(data, source)
        old_names: set[str] = set()
        old_keys: set[str] = set()
        for label in labels:
            # what the older rules compared: refused by them too is no older vocabulary
            old = label.name.strip().casefold().replace("_", " ")
            old_key = label.key.strip().casefold().replace("_", " ")
            if not old or old == UNKNOWN_NAME or old in old_names or not old_key \
                    or old_key in old_keys:
                raise error
            old_names.add(old)
            old_keys.add(old_key)
        kept: list[Label] = []
        dropped: list[str] = []
        seen_names: set[str] = set()
        keys: set[str] = set()
        for label in labels:
            name = fold_key(label.name)
            if not name or name == UNKNOWN_NAME or name in seen_names:
                dropped.append(label.name)
                continue
            seen_names.add(name)
            key = label.key
            if not fold_key(key) or fold_key(key) in keys:
                # a key the rules now read as nothing or as another's: a fresh one
                base = unicodedata.normalize("NFC", label.name.strip()).replace(" ", "_")
                key, n = base, 2
                while fold_key(key) in keys:
                    key, n = f"{base}_{n}", n + 1
                dropped.append(f"{label.name} (key {label.key!r} now {key!r})")
            keys.add(fold_key(key))
            kept.append(Label(label.name, label.description, key))
        try:
            return cls(tuple(kept)), dropped
        except VocabularyError:
            raise error from None

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        """Load a vocabulary YAML file, raising :class:`VocabularyError` on any problem."""
        path = Path(path)
        data = _read_yaml(path, "vocabulary")
        vocabulary = cls.from_dict(data, source=str(path))
        unknown = _unknown_top_keys(data, ("labels",), path, "a vocabulary file holds "
                                    "'labels' only; a description goes with its label: - "
                                    "{name: ..., description: ...}")
        if unknown:     # warned, not refused: a file others write may carry more
            log.warning("%s; they are not read", unknown)
        return vocabulary

    def to_dict(self) -> dict:
        """The YAML-ready structure that :meth:`from_dict` reads."""
        return {"labels": [{"key": lb.key, "name": lb.name, "description": lb.description}
                           for lb in self.labels]}

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as YAML (not atomic; see the node's store for that)."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True),
                              encoding="utf-8")

    # -- access -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self):
        return iter(self.labels)

    def __getitem__(self, i: int) -> Label:
        return self.labels[i]

    @property
    def names(self) -> list[str]:
        """The label names, in order."""
        return [lb.name for lb in self.labels]

    @property
    def keys(self) -> list[str]:
        """The dataset keys of the labels, in order ('' when none)."""
        return [lb.key for lb in self.labels]

    def index(self, key_or_name: str) -> int:
        """Index of the label whose key or name (case-insensitive, '_' = ' ') matches."""
        want = fold_key(key_or_name)
        for i, lb in enumerate(self.labels):
            if fold_key(lb.key) == want or fold_key(lb.name) == want:
                return i
        raise KeyError(f"{key_or_name!r} is not in the vocabulary")

    def subset(self, keys: Sequence[str]) -> "Vocabulary":
        """The labels named by ``keys`` (keys or names), in that order."""
        return Vocabulary(tuple(self.labels[self.index(k)] for k in keys))

    def without_descriptions(self) -> "Vocabulary":
        """The same labels with descriptions removed (no language enrichment)."""
        return Vocabulary(tuple(Label(name=lb.name, key=lb.key) for lb in self.labels))


@dataclass(frozen=True)
class Split:
    """An in-distribution / out-of-distribution split of a vocabulary's labels (by key)."""

    name: str
    in_distribution: tuple[str, ...]
    out_of_distribution: tuple[str, ...]

    @classmethod
    def load(cls, path: str | Path) -> "Split":
        """Load a split YAML: ``{name, in_distribution: [keys], out_of_distribution: [keys]}``."""
        path = Path(path)
        data = _read_yaml(path, "split")
        if not isinstance(data, dict):
            raise VocabularyError(f"{path}: expected a mapping")
        for field_name in ("in_distribution", "out_of_distribution"):
            value = data.get(field_name)
            if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
                raise VocabularyError(f"{path}: '{field_name}' must be a list of label keys")
        if not isinstance(data.get("name", path.stem), str):
            raise VocabularyError(f"{path}: 'name' must be a string")
        try:
            split = cls(name=data.get("name", path.stem),
                        in_distribution=tuple(data["in_distribution"]),
                        out_of_distribution=tuple(data["out_of_distribution"]))
        except (KeyError, TypeError) as exc:
            raise VocabularyError(
                f"{path}: needs 'in_distribution' and 'out_of_distribution' lists "
                f"({exc})") from None
        overlap = set(split.in_distribution) & set(split.out_of_distribution)
        if overlap:
            raise VocabularyError(f"{path}: keys in both ID and OOD: {sorted(overlap)}")
        unknown = _unknown_top_keys(data, ("name", "in_distribution", "out_of_distribution"),
                                    path, "")
        if unknown:
            raise VocabularyError(unknown)
        return split

    @property
    def all_keys(self) -> tuple[str, ...]:
        """The ID keys followed by the OOD keys."""
        return self.in_distribution + self.out_of_distribution
