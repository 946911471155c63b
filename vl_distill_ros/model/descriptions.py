"""The description catalogue: appearance descriptions of the names a bundle knows.

Language enrichment (Li et al., ICCV 2023, Sec. 4.3) prompts the teacher with a label's
name *and* a one-sentence description of its look. An operator who writes a vocabulary of
names alone (``labels: [sugar box, mug]``, or a vocabulary file without ``description``
fields) would lose that at inference although the student was distilled with it: on the
second renderer's crops of the 26 paper objects the default bundle named 466 / 213 seen /
unseen objects right with names alone against 505 / 237 with the descriptions (README,
"Vocabulary and language enrichment").

A bundle therefore carries the descriptions of every label of the vocabulary file it was
exported from (the 78 YCB objects of ``config/ycb_vocabulary.yaml`` for the shipped one),
and the text-embedding service prompts a label that has no description of its own with the
catalogue's. Names are matched by :func:`catalogue_key`: case, ``_`` / ``-`` / spacing and a
leading YCB-style number (``004_``) do not matter, and a label may also match an entry's
key, so ``004_sugar_box``, ``sugar_box`` and ``Sugar Box`` all find *sugar box*. A name
the catalogue holds is prompted with the catalogue's own name ("a photo of a sugar box.", not
"a photo of a 004_sugar_box."); a name the catalogue does not hold is prompted as written,
except that an identifier-style name (underscores, no spaces) is read as words. The
published name is always the operator's.
"""
from __future__ import annotations

import re
from typing import Iterable

from .vocabulary import Label, Vocabulary, fold_key, normalised_text

__all__ = ["DescriptionCatalogue", "catalogue_key", "catalogue_vocabulary", "readable_name",
           "singular_key"]

#: A dataset key's leading number as prompts drop it (YCB's and BOP's three digits:
#: ``004_sugar_box``, ``065-a_cups``); a name such as ``7_up_can`` or ``3_in_1_oil`` keeps
#: its number in its prompt.
_KEY_NUMBER = re.compile(r"^\d{3}[_\-]+(?=\S)")
#: Any leading number, as lookups and scoring compare names (``25-mug`` is a mug's label).
_NUMBER_PREFIX = re.compile(r"^\d+[_\-]+(?=\S)")


def readable_name(name: str) -> str:
    """``name`` as words: an identifier-style name (``coffee_mug``, ``004_sugar_box``; no
    spaces) has its underscores read as spaces and a dataset key's three-digit leading
    number dropped (``7_up_can`` reads ``7 up can``); any other name is returned stripped,
    unchanged."""
    name = name.strip()
    plain = normalised_text(name)     # a full-width ＿ is an underscore too
    if " " in plain or "_" not in plain:
        return name
    words = _KEY_NUMBER.sub("", plain).replace("_", " ")
    return " ".join(words.split()) or name


def singular_key(key: str) -> str:
    """A :func:`catalogue_key` with an English plural ending of its last word taken off
    (``tennis balls``, ``peaches``, ``strawberries`` -> ``tennis ball``, ``peach``,
    ``strawberry``; a word ending in ``ss``, ``us`` or ``is`` is left alone), the form in
    which :meth:`DescriptionCatalogue.lookup` matches names that are not found as written."""
    head, _, last = key.rpartition(" ")
    if len(last) > 3 and last.endswith("ies"):
        last = last[:-3] + "y"
    elif len(last) > 3 and last.endswith(("ches", "shes", "sses", "xes", "zes")):
        last = last[:-2]
    elif len(last) > 2 and last.endswith("s") and not last.endswith(("ss", "us", "is")):
        last = last[:-1]
    return f"{head} {last}" if head else last


def catalogue_key(text: str) -> str:
    """The form under which the catalogue compares names and keys: the vocabulary's
    :func:`~vl_distill_ros.model.vocabulary.fold_key` (case, ``_`` and spacing aside,
    Unicode-normalised, typographic apostrophes as ``'``), ``-`` read as a space too and a
    leading number (``004_``, ``25-``) dropped."""
    text = normalised_text(text)
    text = fold_key(_NUMBER_PREFIX.sub("", text) or text)
    return re.sub(r"[\-\s]+", " ", text).strip()


class DescriptionCatalogue:
    """Descriptions of known names, looked up by name or key (see the module doc).

    Args:
        labels: the known labels; those without a description are ignored, and the first
            label of a name wins.
    """

    def __init__(self, labels: Iterable[Label]) -> None:
        self._entries: dict[str, Label] = {}
        #: The entries' names in their singular form (:func:`singular_key`), for a name
        #: written in the plural (or singular) of a catalogued one; keys are not folded.
        self._singular: dict[str, Label] = {}
        for label in labels:
            if not label.description:
                continue
            for form in (label.name, label.key):
                if form:
                    self._entries.setdefault(catalogue_key(form), label)
            self._singular.setdefault(singular_key(catalogue_key(label.name)), label)

    @classmethod
    def from_vocabularies(cls, *vocabularies: Vocabulary | None) -> "DescriptionCatalogue":
        """The labels of ``vocabularies`` in order (earlier ones win); None is skipped."""
        return cls(label for vocab in vocabularies if vocab is not None for label in vocab)

    def __len__(self) -> int:
        return len({id(label) for label in self._entries.values()})

    def lookup(self, name: str) -> Label | None:
        """The catalogued label of ``name`` (a name or key in any of the matched forms), else
        of the entry whose name is ``name`` in another number (``bananas``, ``tennis
        balls``, ``scissor``: :func:`singular_key`)."""
        key = catalogue_key(name)
        found = self._entries.get(key)
        return found if found is not None else self._singular.get(singular_key(key))

    def prompt_label(self, label: Label) -> Label:
        """The label whose prompts stand for ``label``: its own description, else the
        catalogue's; the catalogue's name when the catalogue holds it (in any written form:
        a key, another case, underscores), else :func:`readable_name`. ``label`` itself when
        nothing changes."""
        entry = self.lookup(label.name)
        if entry is None:
            name, description = readable_name(label.name), label.description
        else:
            name, description = entry.name, label.description or entry.description
        if name == label.name and description == label.description:
            return label
        return Label(name=name, description=description, key=label.key)

    def described(self, labels: Iterable[Label]) -> list[str]:
        """The names among ``labels`` that have no description and take the catalogue's."""
        return [label.name for label in labels
                if not label.description and self.lookup(label.name) is not None]


def catalogue_vocabulary(*vocabularies: Vocabulary | None) -> Vocabulary | None:
    """The described labels of ``vocabularies`` as one vocabulary (what a bundle stores as
    its catalogue): a label whose name or key another one took first (by
    :func:`catalogue_key`) is left out; None when no label has a description."""
    labels: list[Label] = []
    taken: set[str] = set()
    for vocab in vocabularies:
        for label in vocab or ():
            forms = {catalogue_key(label.name), catalogue_key(label.key)}
            if label.description and not forms & taken:
                taken |= forms
                labels.append(label)
    return Vocabulary(tuple(labels)) if labels else None
