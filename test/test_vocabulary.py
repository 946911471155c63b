"""Tests of vl_distill_ros.model.vocabulary and the shipped YCB vocabulary/split files."""
from __future__ import annotations

import re
import time
import unicodedata
from pathlib import Path

import pytest
import yaml

from vl_distill_ros.model.vocabulary import (
    DEFAULT_TEMPLATES,
    DESCRIPTION_QUESTION,
    MAX_DESCRIPTION_LENGTH,
    MAX_KEY_LENGTH,
    MAX_NAME_LENGTH,
    Label,
    Split,
    Vocabulary,
    VocabularyError,
    build_prompts,
    validate_labels,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
VOCAB_FILE = REPO_ROOT / "config" / "ycb_vocabulary.yaml"
SPLIT_FILE = REPO_ROOT / "config" / "splits" / "ycb_paper.yaml"

# The robotics split of Li et al., ICCV 2023, as listed in ../shared/ycb_models/README.md:
# key -> the simple name the paper uses.
PAPER_ID = {
    "002_master_chef_can": "master chef can",
    "006_mustard_bottle": "mustard bottle",
    "011_banana": "banana",
    "013_apple": "apple",
    "015_peach": "peach",
    "024_bowl": "bowl",
    "030_fork": "fork",
    "032_knife": "knife",
    "035_power_drill": "power drill",
    "037_scissors": "scissors",
    "048_hammer": "hammer",
    "056_tennis_ball": "tennis ball",
    "058_golf_ball": "golf ball",
    "062_dice": "dice",
}
PAPER_OOD = {
    "003_cracker_box": "cracker box",
    "012_strawberry": "strawberry",
    "014_lemon": "lemon",
    "016_pear": "pear",
    "017_orange": "orange",
    "021_bleach_cleanser": "bleach cleanser",
    "026_sponge": "sponge",
    "031_spoon": "spoon",
    "036_wood_block": "wood block",
    "043_phillips_screwdriver": "phillips screwdriver",
    "053_mini_soccer_ball": "mini soccer ball",
    "077_rubiks_cube": "Rubik's cube",
}
# Objects with lettered variants (063-a, 065-b, ...): the YCB id prefix of each family.
VARIANT_FAMILIES = ("063", "065", "070", "072", "073")
KEY_PATTERN = re.compile(r"^\d{3}(-[a-z])?_[a-z0-9_]+$")


@pytest.fixture(scope="module")
def ycb_vocab() -> Vocabulary:
    return Vocabulary.load(VOCAB_FILE)


@pytest.fixture
def small_vocab() -> Vocabulary:
    return Vocabulary((
        Label(name="banana", description="A curved yellow fruit.", key="011_banana"),
        Label(name="power drill", description="An orange handheld drill.", key="035_power_drill"),
        Label(name="mug"),
    ))


# -- the shipped YCB vocabulary ---------------------------------------------------------
def test_shipped_vocabulary_loads_with_78_labels(ycb_vocab):
    assert len(ycb_vocab) == 78
    assert len(set(ycb_vocab.keys)) == 78
    assert len({n.casefold() for n in ycb_vocab.names}) == 78


def test_shipped_vocabulary_starts_with_attribution_comment():
    head = VOCAB_FILE.read_text(encoding="utf-8").splitlines()[:12]
    assert head[0].startswith("#")
    comment = " ".join(line for line in head if line.startswith("#"))
    assert "YCB Object and Model Set" in comment
    assert "Calli" in comment and "2015" in comment
    assert "CC BY 4.0" in comment


def test_shipped_vocabulary_has_only_known_fields():
    data = yaml.safe_load(VOCAB_FILE.read_text(encoding="utf-8"))
    assert set(data) == {"labels"}
    for entry in data["labels"]:
        assert set(entry) == {"key", "name", "description"}, entry


def test_shipped_keys_are_folder_style_and_sorted(ycb_vocab):
    for key in ycb_vocab.keys:
        assert KEY_PATTERN.match(key), key
    # Folder order: the keys are sorted as the model folders are listed.
    assert ycb_vocab.keys == sorted(ycb_vocab.keys)


def test_shipped_keys_contain_paper_split_plus_others(ycb_vocab):
    paper = set(PAPER_ID) | set(PAPER_OOD)
    assert len(paper) == 26
    assert paper <= set(ycb_vocab.keys)
    assert len(set(ycb_vocab.keys) - paper) == 78 - 26


def test_shipped_keys_equal_model_folders(ycb_vocab, ycb_models):
    folders = sorted(p.name for p in ycb_models.iterdir() if p.is_dir())
    assert ycb_vocab.keys == folders


def test_paper_objects_keep_simple_names(ycb_vocab):
    for key, name in {**PAPER_ID, **PAPER_OOD}.items():
        assert ycb_vocab[ycb_vocab.index(key)].name == name, key


def test_shipped_names_are_natural(ycb_vocab):
    for label in ycb_vocab:
        assert label.name == label.name.strip()
        assert "_" not in label.name and "  " not in label.name, label.name
        assert 0 < len(label.name) <= MAX_NAME_LENGTH
        assert not re.search(r"\d", label.name), f"ordinal or id in name {label.name!r}"
        if label.key != "077_rubiks_cube":
            assert label.name == label.name.lower(), label.name


def test_variant_names_are_distinct(ycb_vocab):
    for family in VARIANT_FAMILIES:
        names = [lb.name for lb in ycb_vocab if lb.key.startswith(family + "-")]
        assert len(names) >= 2, family
        assert len(set(names)) == len(names), names


def test_every_description_is_one_sentence_within_limits(ycb_vocab):
    for label in ycb_vocab:
        d = label.description
        assert d == d.strip() and d, label.key
        assert len(d) <= MAX_DESCRIPTION_LENGTH, label.key
        assert 8 <= len(d.split()) <= 30, (label.key, len(d.split()))
        assert d[0].isupper(), label.key
        assert d.endswith("."), label.key
        # No further sentence inside: no terminator followed by more text, no line breaks.
        assert not re.search(r"[.!?]\s", d), label.key
        assert "!" not in d and "?" not in d and "\n" not in d, label.key


def test_descriptions_are_distinct(ycb_vocab):
    descriptions = [lb.description for lb in ycb_vocab]
    assert len(set(descriptions)) == len(descriptions)


def test_description_question_is_the_papers():
    q = DESCRIPTION_QUESTION.format(cls="banana")
    assert q == ("Use a single sentence to describe the appearance and shape of banana. "
                 "Only describe the shape and appearance.")


# -- the paper split ----------------------------------------------------------------------
def test_paper_split_resolves_against_vocabulary(ycb_vocab):
    split = Split.load(SPLIT_FILE)
    assert split.name == "ycb_paper"
    assert list(split.in_distribution) == list(PAPER_ID)
    assert list(split.out_of_distribution) == list(PAPER_OOD)
    assert len(split.in_distribution) == 14 and len(split.out_of_distribution) == 12
    assert split.all_keys == split.in_distribution + split.out_of_distribution
    assert set(split.all_keys) <= set(ycb_vocab.keys)

    id_vocab = ycb_vocab.subset(split.in_distribution)
    ood_vocab = ycb_vocab.subset(split.out_of_distribution)
    assert id_vocab.keys == list(split.in_distribution)
    assert ood_vocab.keys == list(split.out_of_distribution)
    assert id_vocab.names == list(PAPER_ID.values())
    assert ood_vocab.names == list(PAPER_OOD.values())
    # Labels carry their descriptions into the subset.
    assert all(lb.description for lb in ycb_vocab.subset(split.all_keys))


def test_subset_accepts_names_and_keeps_order(small_vocab):
    sub = small_vocab.subset(["mug", "011_banana"])
    assert sub.names == ["mug", "banana"]
    with pytest.raises(KeyError, match="kiwi"):
        small_vocab.subset(["kiwi"])


def test_split_rejects_overlap_missing_lists_and_missing_file(tmp_path):
    p = tmp_path / "split.yaml"
    p.write_text("in_distribution: [a, b]\nout_of_distribution: [b]\n", encoding="utf-8")
    with pytest.raises(VocabularyError, match="both ID and OOD"):
        Split.load(p)
    p.write_text("in_distribution: [a]\n", encoding="utf-8")
    with pytest.raises(VocabularyError, match="out_of_distribution"):
        Split.load(p)
    p.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(VocabularyError, match="expected a mapping"):
        Split.load(p)
    with pytest.raises(VocabularyError, match="not found"):
        Split.load(tmp_path / "nope.yaml")


# -- validation ---------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["", "   ", "\t\n"])
def test_rejects_empty_or_whitespace_name(bad):
    with pytest.raises(VocabularyError, match="empty name"):
        Vocabulary.from_names(["banana", bad])
    with pytest.raises(VocabularyError, match="empty name"):
        Vocabulary((Label(name=bad, key="k"),))
    with pytest.raises(VocabularyError, match="empty name"):
        Vocabulary.from_dict({"labels": [{"name": bad}]})


def test_rejects_empty_vocabulary():
    with pytest.raises(VocabularyError, match="empty"):
        Vocabulary.from_names([])
    with pytest.raises(VocabularyError, match="empty"):
        Vocabulary.from_dict({"labels": []})


def test_rejects_duplicates_differing_only_in_case():
    with pytest.raises(VocabularyError, match="duplicate label.*case-insensitive"):
        Vocabulary.from_names(["Banana", "apple", "banana"])
    with pytest.raises(VocabularyError, match="duplicate label"):
        Vocabulary.from_dict({"labels": [{"name": "Mug", "key": "a"}, {"name": "mug", "key": "b"}]})


@pytest.mark.parametrize("name", ["unknown", "Unknown", " UNKNOWN ", "unknown_", "_unknown",
                                  "unk\u200bnown", "\ufeffunknown",
                                  "\uff55\uff4e\uff4b\uff4e\uff4f\uff57\uff4e"])
def test_the_open_set_label_unknown_is_reserved(name, tmp_path):
    from vl_distill_ros.perception.pipeline import UNKNOWN_LABEL

    assert UNKNOWN_LABEL == "unknown"
    with pytest.raises(VocabularyError, match="label 1 .* is reserved: it is what the node "
                                              "publishes for an object it cannot name"):
        Vocabulary.from_names(["mug", name])
    path = tmp_path / "v.yaml"
    path.write_text(yaml.safe_dump({"labels": [{"name": name}]}))
    with pytest.raises(VocabularyError, match="reserved"):
        Vocabulary.load(path)
    assert Vocabulary.from_names(["unknown object", "unknowns"]).names == [
        "unknown object", "unknowns"]


def test_rejects_duplicate_keys():
    with pytest.raises(VocabularyError, match="duplicate key '011_banana'"):
        Vocabulary.from_dict({"labels": [{"name": "banana", "key": "011_banana"},
                                         {"name": "plantain", "key": "011_banana"}]})


def test_from_names_rejects_mismatched_descriptions():
    with pytest.raises(VocabularyError, match="2 labels but 1 descriptions"):
        Vocabulary.from_names(["banana", "apple"], ["A curved yellow fruit."])
    with pytest.raises(VocabularyError, match="2 labels but 3 descriptions"):
        Vocabulary.from_names(["banana", "apple"], ["a", "b", "c"])


def test_from_names_builds_labels_with_default_keys():
    v = Vocabulary.from_names([" power drill ", "mug"], ["An orange drill. ", ""])
    assert v.names == ["power drill", "mug"]
    assert v.keys == ["power_drill", "mug"]
    assert [lb.description for lb in v] == ["An orange drill.", ""]
    # No descriptions (None or empty list): every description is empty.
    assert [lb.description for lb in Vocabulary.from_names(["a", "b"], [])] == ["", ""]
    with pytest.raises(VocabularyError, match="not a string"):
        Vocabulary.from_names(["a", 3])


def test_rejects_over_long_name_and_description():
    ok = "x" * MAX_NAME_LENGTH
    assert Vocabulary.from_names([ok]).names == [ok]
    with pytest.raises(VocabularyError, match=f"{MAX_NAME_LENGTH + 1} characters.*limit is "
                                              f"{MAX_NAME_LENGTH}"):
        Vocabulary.from_names(["x" * (MAX_NAME_LENGTH + 1)])
    with pytest.raises(VocabularyError, match=f"description is {MAX_DESCRIPTION_LENGTH + 1} "
                                              f"characters"):
        Vocabulary.from_names(["mug"], ["d" * (MAX_DESCRIPTION_LENGTH + 1)])


def test_rejects_too_many_labels_and_control_characters():
    with pytest.raises(VocabularyError, match="limit is 2"):
        validate_labels([Label("a"), Label("b"), Label("c")], max_labels=2)
    with pytest.raises(VocabularyError, match="control characters"):
        Vocabulary.from_dict({"labels": [{"name": "ba\x07nana"}]})


def test_rejects_unknown_yaml_fields(tmp_path):
    p = tmp_path / "v.yaml"
    p.write_text("labels:\n  - name: banana\n    colour: yellow\n", encoding="utf-8")
    with pytest.raises(VocabularyError, match=r"unknown fields \['colour'\]") as err:
        Vocabulary.load(p)
    assert str(p) in str(err.value)


@pytest.mark.parametrize("text", ["- banana\n- apple\n", "just a string\n", "42\n", "",
                                  "labels: banana\n", "names: [banana]\n"])
def test_rejects_non_mapping_yaml(tmp_path, text):
    p = tmp_path / "v.yaml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(VocabularyError, match="expected a mapping with a 'labels' list"):
        Vocabulary.load(p)


def test_rejects_entries_without_name_or_with_non_string_name():
    with pytest.raises(VocabularyError, match=r"labels\[0\] needs a 'name'"):
        Vocabulary.from_dict({"labels": [{"key": "011_banana"}]})
    with pytest.raises(VocabularyError, match=r"labels\[1\] name is 7, not text"):
        Vocabulary.from_dict({"labels": ["banana", {"name": 7}]})
    with pytest.raises(VocabularyError, match=r"labels\[1\] name must be a string, not list"):
        Vocabulary.from_dict({"labels": ["banana", {"name": ["a"]}]})


@pytest.mark.parametrize("entry", ["yes", "off", "null", "12", "1.5"])
def test_a_name_yaml_does_not_read_as_text_is_named_so(entry, tmp_path):
    """A names-only file with ``- yes`` (a boolean to YAML) says the entry is not text and
    to quote it (it said "labels[1] needs a 'name'"); quoted, it loads."""
    path = tmp_path / "v.yaml"
    path.write_text(f"labels:\n  - mug\n  - {entry}\n")
    with pytest.raises(VocabularyError, match=r"labels\[1\] is .*, not text: YAML reads "
                                              r"unquoted .*quote it"):
        Vocabulary.load(path)
    path.write_text(f"labels:\n  - mug\n  - '{entry}'\n")
    assert Vocabulary.load(path).names == ["mug", entry]


def test_keys_are_text_of_bounded_length(tmp_path):
    """A key must be a string (``key: 011`` is the octal number 9 to YAML) of at most
    MAX_KEY_LENGTH characters: a 422-byte file whose key was a chain of YAML aliases took
    7 s and 77 MB to turn into text, ten times more per level (four levels here)."""
    path = tmp_path / "v.yaml"
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] + [
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 5)]
    path.write_text("\n".join(levels) + "\nlabels:\n  - name: mug\n    key: *a4\n")
    start = time.perf_counter()
    with pytest.raises(VocabularyError, match=r"labels\[0\] key must be a string, not list"):
        Vocabulary.load(path)
    assert time.perf_counter() - start < 1.0
    path.write_text("labels:\n  - name: mug\n    key: 011\n")
    with pytest.raises(VocabularyError, match=r"key is 9, not text"):
        Vocabulary.load(path)
    with pytest.raises(VocabularyError, match=f"key is {MAX_KEY_LENGTH + 1} characters"):
        Vocabulary((Label("mug", key="k" * (MAX_KEY_LENGTH + 1)),))
    assert Vocabulary((Label("mug", key="k" * MAX_KEY_LENGTH),)).keys == ["k" * MAX_KEY_LENGTH]
    split = tmp_path / "s.yaml"
    split.write_text("\n".join(levels) + "\nname: *a4\nin_distribution: [mug]\n"
                     "out_of_distribution: [cup]\n")
    with pytest.raises(VocabularyError, match="'name' must be a string"):
        Split.load(split)


def test_names_differing_only_in_underscores_are_duplicates():
    """'sugar box' and 'sugar_box' are one name to the keys and lookups (``index``): the
    error says so (it was "duplicate key 'sugar_box'", a key the user never gave)."""
    with pytest.raises(VocabularyError, match=r"duplicate label 'Sugar_Box' .*'_' read as a "
                                              "space"):
        Vocabulary.from_names(["sugar box", "Sugar_Box"])


@pytest.mark.parametrize("first, later", [
    ("banana", "banana_"), ("caf\u00e9 mug", "cafe\u0301 mug"),          # NFC and NFD
    ("mug", "\uff4d\uff55\uff47"), ("sugar box", "sugar  box"),          # full-width, spacing
    ("mug", "mu\u200bg"), ("Rubik's cube", "Rubik\u2019s cube")])          # invisible, quote
def test_names_that_read_alike_are_duplicates(first, later):
    """Names that differ only in their Unicode spelling, invisible characters, spacing, a
    typographic apostrophe or a trailing '_' were accepted as two labels (two identical
    entries in top_k, the later arbitrary)."""
    with pytest.raises(VocabularyError, match="duplicate label"):
        Vocabulary.from_names([first, later])


@pytest.mark.parametrize("name", ["___", "\u200b", "\u200d\u200c", "\u2060", "\ufeff",
                                  "\u00ad", "\u3164", "\u2800", "\u034f", " _ "])
def test_names_that_show_nothing_are_rejected(name):
    """Names of underscores or invisible characters only were accepted (a label published
    as "\u200b" displays as nothing)."""
    with pytest.raises(VocabularyError, match="empty|shows nothing"):
        Vocabulary.from_names(["mug", name])


def test_characters_that_show_are_not_folded_away():
    """Only characters that show nothing are left out when names are compared: the tag
    characters of subdivision flags tell Scotland's from Wales's, U+0600 shows."""
    scotland = "\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F"
    wales = "\U0001F3F4\U000E0067\U000E0062\U000E0077\U000E006C\U000E0073\U000E007F"
    assert Vocabulary.from_names([f"{scotland} flag", f"{wales} flag"]).names == [
        f"{scotland} flag", f"{wales} flag"]
    assert Vocabulary.from_names(["\u0600"]).names == ["\u0600"]
    # the supplementary variation selectors show nothing: "apple" twice
    with pytest.raises(VocabularyError, match="duplicate label"):
        Vocabulary.from_names(["apple", "apple\U000E0100"])


def test_name_length_counts_composed_characters():
    """A decomposed (NFD) name counts its characters as composed: the same visible name was
    accepted in NFC and refused in NFD."""
    nfc = "caf\u00e9 " * 10 + "mug"                       # 53 characters, 63 in NFD
    nfd = unicodedata.normalize("NFD", nfc)
    assert len(nfd) > 64 - 4 and len(nfc) < 64
    assert Vocabulary.from_names([nfd + "s" * 8]).names == [nfd + "s" * 8]
    with pytest.raises(VocabularyError, match="is 65 characters; the limit is 64"):
        Vocabulary.from_names([nfc + "s" * 12])
    # the key made from a decomposed name is composed too (it was 3x the name's length)
    long_nfd = unicodedata.normalize("NFD", "\u1ec7" * 64)
    assert Vocabulary.from_names([long_nfd]).labels[0].key == "\u1ec7" * 64


def test_rejects_missing_file_and_invalid_yaml(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(VocabularyError, match="vocabulary file not found") as err:
        Vocabulary.load(missing)
    assert "nope.yaml" in str(err.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text("labels: [\n", encoding="utf-8")
    with pytest.raises(VocabularyError, match="not valid YAML"):
        Vocabulary.load(bad)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"labels:\n  - name: \xff\xfe\n")
    with pytest.raises(VocabularyError, match="not valid YAML"):
        Vocabulary.load(binary)


def test_errors_are_value_errors():
    assert issubclass(VocabularyError, ValueError)


# -- prompts ------------------------------------------------------------------------------
def test_build_prompts_enriched_and_plain(small_vocab):
    banana = small_vocab[0]
    assert build_prompts(banana) == ["a photo of a banana. A curved yellow fruit."]
    assert build_prompts(banana, enrich=False) == ["a photo of a banana."]
    # No description: the plain prompt even when enriching.
    assert build_prompts(small_vocab[2]) == ["a photo of a mug."]
    assert DEFAULT_TEMPLATES == ("a photo of a {name}.",)


def test_build_prompts_one_per_template_and_strips_description():
    label = Label(name="mug", description="  A red mug.  ")
    prompts = build_prompts(label, templates=("a photo of a {name}.", "a {name} on a table."))
    assert prompts == ["a photo of a mug. A red mug.", "a mug on a table. A red mug."]


def test_build_prompts_for_shipped_vocabulary(ycb_vocab):
    drill = ycb_vocab[ycb_vocab.index("035_power_drill")]
    assert build_prompts(drill) == [f"a photo of a power drill. {drill.description}"]
    plain = ycb_vocab.without_descriptions()
    assert plain.names == ycb_vocab.names and plain.keys == ycb_vocab.keys
    assert all(build_prompts(lb) == [f"a photo of a {lb.name}."] for lb in plain)


# -- lookup -------------------------------------------------------------------------------
def test_index_matches_key_name_and_underscored_name(small_vocab, ycb_vocab):
    assert small_vocab.index("035_power_drill") == 1
    assert small_vocab.index("power drill") == 1
    assert small_vocab.index("power_drill") == 1
    assert small_vocab.index("  Power Drill ") == 1
    assert small_vocab.index("011_BANANA") == 0
    assert small_vocab.index("mug") == 2
    with pytest.raises(KeyError, match="kiwi"):
        small_vocab.index("kiwi")

    i = ycb_vocab.index("077_rubiks_cube")
    assert ycb_vocab.index("Rubik's cube") == i
    assert ycb_vocab.index("rubik's_cube") == i
    assert ycb_vocab.index("phillips_screwdriver") == ycb_vocab.index("043_phillips_screwdriver")
    assert ycb_vocab.index("065-c_cups") == ycb_vocab.index("small green stacking cup")


def test_access_helpers(small_vocab):
    assert len(small_vocab) == 3
    assert [lb.name for lb in small_vocab] == small_vocab.names
    assert small_vocab[1].key == "035_power_drill"
    assert small_vocab.keys == ["011_banana", "035_power_drill", "mug"]


# -- persistence --------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path, small_vocab):
    p = tmp_path / "vocab.yaml"
    small_vocab.save(p)
    again = Vocabulary.load(p)
    assert again == small_vocab
    assert again.to_dict() == small_vocab.to_dict()
    assert Vocabulary.from_dict(small_vocab.to_dict()) == small_vocab


def test_save_load_round_trip_of_shipped_vocabulary(tmp_path, ycb_vocab):
    p = tmp_path / "ycb.yaml"
    ycb_vocab.save(p)
    assert Vocabulary.load(p) == ycb_vocab


# -- formerly known defects, now fixed ------------------------------------------------
def test_load_of_a_directory_raises_vocabulary_error(tmp_path):
    with pytest.raises(VocabularyError):
        Vocabulary.load(tmp_path)


def test_keys_differing_only_in_case_are_rejected():
    with pytest.raises(VocabularyError, match="duplicate key"):
        Vocabulary.from_dict({"labels": [{"name": "a", "key": "Banana"},
                                         {"name": "b", "key": "banana"}]})


def test_non_string_description_is_rejected():
    with pytest.raises(VocabularyError, match="description"):
        Vocabulary.from_dict({"labels": [{"name": "mug", "description": ["red", "round"]}]})


def test_split_fields_must_be_lists(tmp_path):
    p = tmp_path / "split.yaml"
    p.write_text("in_distribution: abc\nout_of_distribution: [x]\n")
    with pytest.raises(VocabularyError, match="list of label keys"):
        Split.load(p)
    p.write_text("in_distribution: [a\n")
    with pytest.raises(VocabularyError, match="cannot read split file"):
        Split.load(p)


def test_names_with_underscores_are_found_by_name():
    v = Vocabulary.from_dict({"labels": [{"name": "big_mug", "key": "k1"}]})
    assert v.index("big_mug") == 0 and v.index("big mug") == 0


# -- hostile input (issue 11) ---------------------------------------------------------------
@pytest.mark.parametrize("name, char", [("\x00nul", "U+0000"), ("c\x85d", "U+0085"),
                                        ("\x1b[31mred", "U+001B"), ("tab\there", "U+0009"),
                                        ("del\x7f", "U+007F"), ("line\u2028sep", "U+2028")])
def test_control_characters_in_names_are_rejected_with_the_code_point(name, char):
    r"""C0, DEL, C1 and Unicode line separators would not survive the YAML store ('c\x85d'
    came back as 'c d', '\x00nul' as ''): rejected at validation instead."""
    with pytest.raises(VocabularyError, match=f"control characters.*{re.escape(char)}"):
        Vocabulary.from_names(["ok", name])
    with pytest.raises(VocabularyError, match="control characters"):
        Vocabulary.from_dict({"labels": [{"name": name}]})


@pytest.mark.parametrize("description", ["A red\x00 cup.", "A\x85cup.", "Two\nlines.",
                                         "\x1b[2J cleared"])
def test_control_characters_in_descriptions_are_rejected(description):
    with pytest.raises(VocabularyError, match="description contains control characters"):
        Vocabulary.from_names(["mug"], [f"x{description}"])


def test_printable_unicode_names_and_descriptions_are_accepted(tmp_path):
    vocab = Vocabulary.from_names(["café crème", "Ölkanne", "茶碗"],
                                  ["A cup — with a saucer.", "", "A small bowl."])
    vocab.save(tmp_path / "v.yaml")
    assert Vocabulary.load(tmp_path / "v.yaml") == vocab


def _finishes_within(fn, seconds: float):
    """Run ``fn`` in a thread; return (finished, result or exception)."""
    import threading

    out: dict = {}

    def run():
        try:
            out["result"] = fn()
        except BaseException as exc:  # noqa: BLE001
            out["result"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive(), out.get("result")


def test_vocabulary_file_must_be_a_small_regular_file(tmp_path):
    """/dev/zero, a FIFO without a writer, a directory and a 2 MB file are rejected at once
    with the reason, without reading them (formerly /dev/zero grew memory without bound and
    a FIFO blocked forever)."""
    import os
    import time

    from vl_distill_ros.model.vocabulary import MAX_VOCABULARY_FILE_BYTES

    fifo = tmp_path / "vocab.fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big.yaml"
    big.write_text("labels: [banana]\n" + "#" * (2 * 1024 * 1024) + "\n")
    # the FIFO first: code that blocks on it fails here, before /dev/zero could eat memory
    cases = [(fifo, "FIFO"), (tmp_path, "directory, not a regular file"),
             (big, f"the limit is {MAX_VOCABULARY_FILE_BYTES} bytes"),
             (Path("/dev/zero"), "character device, not a regular file")]
    try:
        for path, why in cases:
            t0 = time.monotonic()
            done, result = _finishes_within(lambda p=path: Vocabulary.load(p), 5.0)
            assert done, f"Vocabulary.load({path}) blocked"
            assert isinstance(result, VocabularyError), (path, result)
            assert why in str(result) and str(path) in str(result), str(result)
            assert time.monotonic() - t0 < 1.0
    finally:
        try:  # unblock a reader stuck on the FIFO (only if the code regressed)
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    # exactly at the limit is fine
    ok = tmp_path / "ok.yaml"
    body = "labels: [banana]\n"
    ok.write_text(body + "#" * (MAX_VOCABULARY_FILE_BYTES - len(body) - 1) + "\n")
    assert ok.stat().st_size == MAX_VOCABULARY_FILE_BYTES
    assert Vocabulary.load(ok).names == ["banana"]


def test_too_many_labels_in_a_file_are_rejected_before_building_them():
    with pytest.raises(VocabularyError, match="1001 labels; the limit is 1000"):
        Vocabulary.from_dict({"labels": [f"l{i}" for i in range(1001)]})
