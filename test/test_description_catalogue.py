"""The description catalogue: names given without a description are prompted with a bundle's."""
import json
import zipfile
from pathlib import Path

import pytest
import torch

from test_text_service import SMALL, SPEC, TEMPLATES, Factory, FakeTeacher
from vl_distill_ros.model.bundle import (BundleError, load_bundle, read_manifest,
                                         replace_descriptions, save_bundle)
from vl_distill_ros.model.descriptions import (DescriptionCatalogue, catalogue_key,
                                               catalogue_vocabulary, readable_name)
from vl_distill_ros.model.student import build_student
from vl_distill_ros.model.text_service import TextEmbeddingService
from vl_distill_ros.model.vocabulary import Label, Vocabulary
from vl_distill_ros.model.zero_shot import build_zero_shot_classifier
from vl_distill_ros.ros.params import default_model_path

REPO = Path(__file__).resolve().parents[1]
SUGAR = Label("sugar box", "A narrow white and yellow box.", "004_sugar_box")
CUPS = Label("small orange stacking cup", "A small orange plastic cup.", "065-a_cups")
CATALOGUE = DescriptionCatalogue([SUGAR, CUPS, Label("mug", "", "025_mug")])


@pytest.mark.parametrize("written, key", [
    ("004_sugar_box", "sugar box"), ("sugar_box", "sugar box"), ("  Sugar   Box ", "sugar box"),
    ("sugar-box", "sugar box"), ("065-a_cups", "a cups"), ("2 forks", "2 forks"),
    ("7up", "7up"), ("42", "42"), ("7_up_can", "up can"), ("Rubik\u2019s cube", "rubik's cube"),
    ("\uff53\uff55\uff47\uff41\uff52 box", "sugar box"), ("sugar\u200b box", "sugar box"),
    # normalised before the number is dropped: a BOM from a CSV export, a full-width _
    ("\ufeff004_sugar_box", "sugar box"), ("004\uff3fsugar_box", "sugar box"),
    ("004\u200b_sugar_box", "sugar box")])
def test_catalogue_key_forms(written, key):
    assert catalogue_key(written) == key


@pytest.mark.parametrize("written, readable", [
    ("coffee_mug", "coffee mug"), ("004_sugar_box", "sugar box"), ("coffee mug", "coffee mug"),
    ("my_red cup", "my_red cup"), ("banana", "banana"), ("007", "007"), ("_", "_"),
    # only a dataset key's three digits are a prefix to drop: these numbers are the name's
    ("7_up_can", "7 up can"), ("3_in_1_oil", "3 in 1 oil"), ("2_liter_bottle", "2 liter bottle"),
    ("004\uff3fsugar\uff3fbox", "sugar box")])
def test_readable_name(written, readable):
    assert readable_name(written) == readable


def test_prompt_label_fills_descriptions_and_names():
    # a name alone takes the description; the published label keeps its key
    got = CATALOGUE.prompt_label(Label("sugar box"))
    assert (got.name, got.description, got.key) == ("sugar box", SUGAR.description, "sugar_box")
    # written as the key, or in another case: the catalogue's name is prompted
    for written in ("004_sugar_box", "Sugar_Box", "SUGAR BOX"):
        got = CATALOGUE.prompt_label(Label(written))
        assert (got.name, got.description) == ("sugar box", SUGAR.description)
    assert CATALOGUE.prompt_label(Label("065-a_cups")).name == CUPS.name
    # an own description wins
    own = Label("sugar box", "A blue box.")
    assert CATALOGUE.prompt_label(own) is own
    # not catalogued (an undescribed entry does not count): as given, identifiers as words
    plain = Label("mug")
    assert CATALOGUE.prompt_label(plain) is plain
    got = CATALOGUE.prompt_label(Label("coffee_mug", "A cup."))
    assert (got.name, got.description, got.key) == ("coffee mug", "A cup.", "coffee_mug")
    assert CATALOGUE.described([Label("sugar box"), own, plain, Label("065-a_cups")]) == \
        ["sugar box", "065-a_cups"]
    assert len(CATALOGUE) == 2


def test_catalogue_vocabulary_first_of_a_name_or_key_wins():
    first = Vocabulary((Label("sugar box", "first"), Label("banana")))
    second = Vocabulary((Label("Sugar Box", "second", "x"), Label("domino", "third",
                                                                  "004_sugar_box"),
                         Label("mug", "a mug")))
    merged = catalogue_vocabulary(first, None, second)
    assert [(lb.name, lb.description) for lb in merged] == [("sugar box", "first"),
                                                            ("mug", "a mug")]
    assert catalogue_vocabulary(Vocabulary((Label("banana"),))) is None


def _service(catalogue, factory):
    return TextEmbeddingService(SPEC, SPEC["id"], TEMPLATES, True, teacher_factory=factory,
                                catalogue=catalogue)


def test_service_prompts_with_the_catalogue_and_only_with_it():
    f = Factory()
    with_cat = _service(CATALOGUE, f)
    emb = with_cat.embed([Label("004_sugar_box"), Label("banana")])
    assert f.teacher.calls == [[f"a photo of a sugar box. {SUGAR.description}",
                                f"a close-up photo of the sugar box. {SUGAR.description}",
                                "a photo of a banana.", "a close-up photo of the banana."]]
    ref = build_zero_shot_classifier(FakeTeacher().encode_texts,
                                     Vocabulary((SUGAR, Label("banana"))), TEMPLATES, True)
    assert torch.allclose(emb, ref, atol=1e-6)
    assert with_cat.catalogued([Label("004_sugar_box"), Label("banana")]) == ["004_sugar_box"]
    g = Factory()
    without = _service(None, g)
    plain = without.embed([Label("004_sugar_box")])
    assert g.teacher.calls == [["a photo of a 004_sugar_box.",
                                "a close-up photo of the 004_sugar_box."]]
    assert not torch.allclose(plain, emb[:1]) and without.catalogued([Label("sugar box")]) == []
    # without enrichment the description is never used, so nothing is reported as catalogued
    bare = TextEmbeddingService(SPEC, SPEC["id"], TEMPLATES, False, teacher_factory=Factory(),
                                catalogue=CATALOGUE)
    assert bare.catalogued([Label("sugar box")]) == []


def _small_bundle(tmp_path, descriptions=None):
    vocab = Vocabulary((SUGAR, Label("banana", "A curved yellow fruit.")))
    emb = build_zero_shot_classifier(FakeTeacher().encode_texts, vocab, TEMPLATES, True)
    student = build_student(SMALL, emb.shape[1], load_weights=False)
    return save_bundle(tmp_path / "b.vdb", student, emb, vocab, SPEC["id"], SPEC, TEMPLATES,
                       True, onnx=False, descriptions=descriptions)


def test_bundle_stores_and_replaces_its_catalogue(tmp_path):
    path = _small_bundle(tmp_path, Vocabulary((CUPS, Label("mug"))))
    bundle = load_bundle(path)
    assert [lb.name for lb in bundle.descriptions] == [CUPS.name]  # undescribed left out
    catalogue = bundle.description_catalogue()
    assert catalogue.lookup("sugar_box") == SUGAR and catalogue.lookup("065-a_cups") == CUPS
    # the bundle's seeded embeddings answer a name given alone, without the teacher
    f = Factory()
    svc = TextEmbeddingService.from_bundle(bundle, teacher_factory=f)
    assert torch.equal(svc.embed([Label("Sugar Box")]), bundle.text_embeddings[:1])
    assert f.builds == 0
    off = TextEmbeddingService.from_bundle(bundle, teacher_factory=Factory(), catalogue=False)
    assert off.catalogue is None
    # replace: every member byte for byte, the new record loads
    before = read_manifest(path)["files"]
    out = replace_descriptions(path, tmp_path / "c.vdb", Vocabulary((Label("mug", "A mug."),)))
    assert read_manifest(out)["files"] == before
    assert [lb.name for lb in load_bundle(out).descriptions] == ["mug"]
    with pytest.raises(BundleError, match="no label with a description"):
        replace_descriptions(path, tmp_path / "d.vdb", Vocabulary((Label("mug"),)))
    # older bundles have none; a broken record is a clear error
    (tmp_path / "old").mkdir()
    assert load_bundle(_small_bundle(tmp_path / "old")).descriptions is None
    with zipfile.ZipFile(out) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    manifest = json.loads(members["manifest.json"])
    manifest["descriptions"] = {"labels": [{"name": "unknown", "description": "x"}]}
    members["manifest.json"] = json.dumps(manifest).encode()
    bad = tmp_path / "bad.vdb"
    with zipfile.ZipFile(bad, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    with pytest.raises(BundleError, match="descriptions"):
        load_bundle(bad)


def test_shipped_bundle_names_alone_hit_its_enriched_embeddings():
    """The packaged bundle's catalogue holds the 78 YCB objects; its 26 names given alone, or
    as their YCB keys, are prompted exactly as the bundle's enriched vocabulary (the seeded
    embeddings come back and the teacher is never built); without the catalogue they are
    not."""
    bundle = load_bundle(default_model_path())
    ycb = Vocabulary.load(REPO / "config/ycb_vocabulary.yaml")
    assert len(bundle.descriptions) == len(ycb) == 78
    f = Factory(bundle.teacher_id)
    svc = TextEmbeddingService.from_bundle(bundle, teacher_factory=f)
    for names in (bundle.vocabulary.names, bundle.vocabulary.keys):
        emb = svc.embed([Label(n) for n in names])
        assert torch.equal(emb, bundle.text_embeddings)
    assert f.builds == 0
    assert len(svc.catalogued([Label(n) for n in bundle.vocabulary.names])) == 26
    off = TextEmbeddingService.from_bundle(bundle, teacher_factory=Factory(bundle.teacher_id),
                                           catalogue=False)
    assert off.missing([Label(n) for n in bundle.vocabulary.names])


def test_pipeline_counts_catalogued_key_names_as_trained_names():
    """Names written as YCB keys are the trained names they stand for: the same seen bias and
    the same negatives as the bundle's own names (without the catalogue no seen bias)."""
    from vl_distill_ros.perception.pipeline import PerceptionPipeline

    bundle = load_bundle(default_model_path())
    keys = Vocabulary(tuple(Label(k) for k in bundle.vocabulary.keys))
    svc = TextEmbeddingService.from_bundle(bundle, teacher_factory=Factory(bundle.teacher_id))
    own = PerceptionPipeline(bundle, crop_source="full_frame", inference_backend="torch")
    by_key = PerceptionPipeline(bundle, crop_source="full_frame", inference_backend="torch",
                                vocabulary=keys, embeddings=svc.embed_vocabulary(keys),
                                catalogue=svc.catalogue)
    plain = PerceptionPipeline(bundle, crop_source="full_frame", inference_backend="torch",
                               vocabulary=keys, embeddings=svc.embed_vocabulary(keys))
    try:
        assert own.active.trained_mask.sum() == 14    # the paper split's seen objects
        assert torch.equal(by_key.active.trained_mask, own.active.trained_mask)
        assert torch.equal(by_key.active.negatives, own.active.negatives)
        assert plain.active.trained_mask.sum() == 0
    finally:
        for pipe in (own, by_key, plain):
            pipe.close()


def test_labels_prompted_alike_are_reported():
    svc = _service(CATALOGUE, Factory())
    labels = [Label("sugar box"), Label("banana"), Label("004_sugar_box"), Label("Sugar_Box"),
              Label("sugar box?", SUGAR.description)]
    assert svc.prompted_alike(labels) == [("sugar box", "004_sugar_box"),
                                          ("sugar box", "Sugar_Box")]
    assert _service(None, Factory()).prompted_alike(labels[:3]) == []


def test_labels_the_teacher_embeds_alike_are_reported_from_their_embeddings():
    """Names the teacher cannot tell apart (MiniLM's tokenizer reads every emoji as [UNK];
    prompts that differ only past the context length) have equal embeddings though their
    prompts differ: given the embeddings, they are reported too, each later name once."""
    svc = _service(None, Factory())
    labels = [Label("apple"), Label("banana"), Label("pear"), Label("plum")]
    emb = torch.nn.functional.normalize(torch.randn(4, 8, generator=torch.Generator()
                                                    .manual_seed(0)), dim=-1)
    assert svc.prompted_alike(labels, emb) == []
    emb[2] = emb[0] * 1.00001
    emb[3] = emb[0]
    assert svc.prompted_alike(labels, emb) == [("apple", "pear"), ("apple", "plum")]


class _Log:
    """A logger that keeps what it is told."""

    def __init__(self):
        self.lines = []

    def warning(self, text):
        self.lines.append(text)

    info = error = debug = warning


def test_the_vocabulary_controller_warns_of_labels_prompted_alike(tmp_path):
    from vl_distill_ros.ros.vocabulary_controller import VocabularyController

    log = _Log()
    controller = VocabularyController(_service(CATALOGUE, Factory()), tmp_path / "s.yaml", log)
    controller.embed_startup(Vocabulary((Label("sugar box"), Label("004_sugar_box"))))
    assert any("'004_sugar_box' (as 'sugar box')" in line for line in log.lines)


def test_descriptions_past_the_teachers_context_are_named_and_warned_of(tmp_path):
    """A description within 300 characters can exceed the teacher's context (CLIP: 77
    tokens); the teacher embeds only its beginning. The labels so cut are named, and the
    vocabulary controller warns of them, as of labels embedded alike."""
    from vl_distill_ros.ros.vocabulary_controller import VocabularyController

    class Cutting(FakeTeacher):
        def cut_texts(self, texts):
            return [i for i, t in enumerate(texts) if len(t.split()) > 20]

    factory = Factory()
    factory.teacher = Cutting()
    svc = _service(None, factory)
    long = Label("kettle", "a tall steel kettle " + "with a black handle " * 6)
    labels = [Label("mug", "a white mug."), long, Label("pan")]
    log = _Log()
    controller = VocabularyController(svc, tmp_path / "s.yaml", log)
    controller.embed_startup(Vocabulary(tuple(labels)))
    assert svc.cut_labels(labels) == ["kettle"]
    assert [line for line in log.lines if "'kettle'" in line and "beginning" in line]
    assert not [line for line in log.lines if "'mug'" in line]


def test_an_older_bundles_catalogue_with_spellings_now_read_as_one_loads(tmp_path, caplog):
    """A bundle exported before names were compared Unicode-normalised may hold `Rubik's
    cube` and `Rubik’s cube` in its catalogue; the bundle was refused as invalid. Its
    catalogue is now read as an older vocabulary store is: the later spelling left out,
    with a warning."""
    path = replace_descriptions(_small_bundle(tmp_path), tmp_path / "c.vdb",
                                Vocabulary((Label("Rubik's cube", "A cube of colours."),
                                            Label("mug", "A mug."))))
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    manifest = json.loads(members["manifest.json"])
    manifest["descriptions"]["labels"].insert(
        1, {"name": "Rubik\u2019s cube", "key": "rubiks_cube_2", "description": "Another."})
    members["manifest.json"] = json.dumps(manifest).encode()
    old = tmp_path / "old.vdb"
    with zipfile.ZipFile(old, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    with caplog.at_level("WARNING"):
        bundle = load_bundle(old)
    assert [lb.name for lb in bundle.descriptions] == ["Rubik's cube", "mug"]
    assert "Rubik\u2019s cube" in caplog.text
    assert bundle.description_catalogue().lookup("Rubik\u2019s cube").description == \
        "A cube of colours."


@pytest.mark.parametrize("written", ["sugar boxes", "Sugar_Boxes", "small orange stacking cups"])
def test_a_catalogued_name_in_the_plural_is_prompted_as_the_catalogue_holds_it(written):
    got = CATALOGUE.prompt_label(Label(written))
    entry = CUPS if "cup" in written else SUGAR
    assert (got.name, got.description) == (entry.name, entry.description)
    # keys are not folded, and a name that is no entry's in either number stays as given
    assert CATALOGUE.lookup("065-a_cup") is None and CATALOGUE.lookup("sugar bowls") is None


PLURALS = {"master chef can": "master chef cans", "mustard bottle": "mustard bottles",
           "banana": "bananas", "apple": "apples", "peach": "peaches", "bowl": "bowls",
           "fork": "forks", "knife": "knifes", "power drill": "power drills",
           "hammer": "hammers", "tennis ball": "tennis balls", "golf ball": "golf balls",
           "strawberry": "strawberries", "cracker box": "cracker boxes"}


def test_pipeline_counts_plural_names_as_the_trained_names():
    """``hammers`` beside (or instead of) the trained ``hammer`` was prompted as written,
    without the seen bias and with ``hammer`` as a negative or not: the plural took 11 of 14
    hammer renders from ``hammer`` (13 of 14 for apples, tennis balls), and with the seen
    names in the plural the unseen objects named right fell from 77 to 61 of 168. Now a
    catalogued name in another number is prompted, biased and negated as the name itself."""
    from vl_distill_ros.perception.pipeline import PerceptionPipeline

    bundle = load_bundle(default_model_path())
    names = [PLURALS.get(n, n) for n in bundle.vocabulary.names]
    assert sum(n != m for n, m in zip(names, bundle.vocabulary.names)) == len(PLURALS)
    plural = Vocabulary(tuple(Label(n) for n in names))
    f = Factory(bundle.teacher_id)
    svc = TextEmbeddingService.from_bundle(bundle, teacher_factory=f)
    emb = svc.embed_vocabulary(plural)
    assert f.builds == 0 and torch.equal(emb, bundle.text_embeddings)
    own = PerceptionPipeline(bundle, crop_source="full_frame", inference_backend="torch")
    pipe = PerceptionPipeline(bundle, crop_source="full_frame", inference_backend="torch",
                              vocabulary=plural, embeddings=emb, catalogue=svc.catalogue)
    try:
        assert torch.equal(pipe.active.trained_mask, own.active.trained_mask)
        assert torch.equal(pipe.active.negatives, own.active.negatives)
    finally:
        for p in (own, pipe):
            p.close()
