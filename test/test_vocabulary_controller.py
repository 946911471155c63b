"""VocabularyController without a node: the parameter protocol on plain name -> value
mappings, the embedding worker and the store.

The controller drives a real :class:`PerceptionPipeline` built on the tiny colour bundle of
``helpers.make_colour_bundle`` and a real :class:`TextEmbeddingService` (the offline
teacher's text encoder), so a request really is embedded and swapped in. No rclpy node is
created: the three callbacks are called the way the node's glue calls them (pre -> on ->
post in one thread).
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
import yaml

from helpers import OBJECTS, make_colour_bundle
from vl_distill_ros.model.bundle import load_bundle
from vl_distill_ros.model.text_service import TextEmbeddingService
from vl_distill_ros.model.vocab_store import load_vocabulary_store_result, save_vocabulary_atomic
from vl_distill_ros.model.vocabulary import Label, Vocabulary, VocabularyError
from vl_distill_ros.perception.pipeline import PerceptionPipeline
from vl_distill_ros.ros.vocabulary_controller import VocabularyController

NAMES = ["banana", "apple", "power drill"]
DESCRIPTIONS = ["A curved yellow fruit.", "", ""]
LOG = logging.getLogger("test_vocabulary_controller")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    path = make_colour_bundle(tmp_path_factory.mktemp("bundle") / "b.vdb", NAMES,
                              NAMES,
                              vocabulary=Vocabulary(tuple(
                                  Label(name=n, description=d, key=OBJECTS[n][1])
                                  for n, d in zip(NAMES, DESCRIPTIONS))))
    return load_bundle(path, device="cpu")


@pytest.fixture(scope="module")
def service(bundle):
    return TextEmbeddingService.from_bundle(bundle, cache_dir=None)


class Params:
    """The node's parameter table, reduced to the three vocabulary parameters: applies a set
    through the controller exactly as the node's callbacks do."""

    def __init__(self, ctl: VocabularyController, vocab: Vocabulary, vocab_file: str = "") -> None:
        self.ctl = ctl
        descs = [lb.description for lb in vocab]
        self.values = {"labels": vocab.names, "descriptions": descs if any(descs) else [],
                       "vocabulary_file": vocab_file}

    def set(self, **changes) -> str | None:
        """One atomic set; returns the rejection reason or None (and then applies it)."""
        changes = dict(changes)
        changes.update(self.ctl.complete(changes, self.values["vocabulary_file"]))
        reason = self.ctl.validate(changes, self.values.__getitem__)
        if reason is None:
            self.values.update(changes)
            self.ctl.commit()
        return reason


@pytest.fixture
def ctl(bundle, service, tmp_path):
    c = VocabularyController(service, tmp_path / "store.yaml", LOG)
    pipe = PerceptionPipeline(bundle, vocabulary=bundle.vocabulary,
                              embeddings=bundle.text_embeddings)
    c.attach(pipe, bundle.vocabulary, "bundle")
    c.start()
    yield c
    c.stop()


def wait_swaps(swaps: list[int], count: int, timeout: float = 10.0) -> list[int]:
    """``swaps`` once it holds ``count`` versions (on_swap runs in the worker thread after
    the swap's state is reported ready: after the warnings and the log line), or at the
    timeout."""
    end = time.monotonic() + timeout
    while len(swaps) < count and time.monotonic() < end:
        time.sleep(0.01)
    return swaps


def wait_version(ctl: VocabularyController, version: int, timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ctl.pipeline.active.version >= version and ctl.status()["state"] != "embedding":
            return True
        time.sleep(0.01)
    return False


def test_labels_alone_carry_descriptions_and_clear_the_file(ctl, bundle):
    params = Params(ctl, bundle.vocabulary, vocab_file="/some/file.yaml")
    extra = ctl.complete({"labels": ["BANANA ", "zebra"]}, "/some/file.yaml")
    assert extra == {"vocabulary_file": "", "descriptions": ["A curved yellow fruit.", ""],
                     "labels": ["BANANA", "zebra"]}    # the parameter shows the names used
    # a name whose description is dropped: no descriptions at all
    assert ctl.complete({"labels": ["mug", "zebra"]}, "") == {"descriptions": []}
    # a name that stays in another spelling (as names are compared: '_' for a space,
    # Unicode forms) keeps its description too; it was dropped for the '_' spellings
    for spelling in ("Banana_", "\uff42anana", "ba\u200bnana"):
        assert ctl.complete({"labels": [spelling, "zebra"]}, "") == {
            "descriptions": ["A curved yellow fruit.", ""]}, spelling
    v0 = ctl.pipeline.active.version
    assert params.set(labels=["banana", "zebra"]) is None
    assert params.values["vocabulary_file"] == ""
    assert params.values["descriptions"] == ["A curved yellow fruit.", ""]
    assert ctl.requested.names == ["banana", "zebra"]
    assert wait_version(ctl, v0 + 1)
    active = ctl.pipeline.active
    assert active.vocabulary.names == ["banana", "zebra"]
    assert active.vocabulary.labels[0].description == "A curved yellow fruit."
    assert ctl.status() == {"state": "ready", "error": "", "source": "parameters",
                            "store_status": "not used", "store_error": ""}


def test_empty_labels_request_the_default_vocabulary_and_swaps_are_reported(
        bundle, service, tmp_path):
    """labels [] (alone, or with empty descriptions) = the default (bundle's) vocabulary
    with its descriptions; on_swap gets each new version."""
    swaps: list[int] = []
    c = VocabularyController(service, tmp_path / "store.yaml", LOG)
    pipe = PerceptionPipeline(bundle, vocabulary=bundle.vocabulary,
                              embeddings=bundle.text_embeddings)
    c.attach(pipe, bundle.vocabulary, "bundle", default=bundle.vocabulary,
             on_swap=swaps.append)
    c.start()
    try:
        params = Params(c, bundle.vocabulary)
        assert params.set(labels=["mug", "zebra"]) is None
        assert wait_version(c, 2) and wait_swaps(swaps, 1) == [2]
        want = {"labels": NAMES, "descriptions": DESCRIPTIONS}
        assert c.complete({"labels": []}, "") == want
        assert c.complete({"labels": [], "descriptions": []}, "/f.yaml") == {
            **want, "vocabulary_file": ""}
        assert c.complete({"labels": [], "descriptions": ["x"]}, "") == {}  # then rejected
        assert "0 labels but 1 descriptions" in params.set(labels=[], descriptions=["x"])
        assert params.set(labels=[]) is None
        assert params.values["labels"] == NAMES
        assert wait_version(c, 3) and wait_swaps(swaps, 2) == [2, 3]
        assert c.pipeline.active.vocabulary.names == NAMES
        assert [lb.description for lb in c.pipeline.active.vocabulary] == DESCRIPTIONS
    finally:
        c.stop()


def test_a_file_replaces_labels_and_descriptions(ctl, bundle, tmp_path):
    vfile = tmp_path / "v.yaml"
    vfile.write_text(yaml.safe_dump({"labels": [
        {"name": "zebra", "description": "A striped horse."}, {"name": "mug"}]}))
    params = Params(ctl, bundle.vocabulary)
    assert ctl.complete({"vocabulary_file": str(vfile)}, "") == {
        "labels": ["zebra", "mug"], "descriptions": ["A striped horse.", ""]}
    v0 = ctl.pipeline.active.version
    assert params.set(vocabulary_file=str(vfile)) is None
    assert params.values["labels"] == ["zebra", "mug"]
    assert wait_version(ctl, v0 + 1)
    assert ctl.pipeline.active.vocabulary.names == ["zebra", "mug"]
    # labels that disagree with the file in one set are rejected
    reason = ctl.validate({"vocabulary_file": str(vfile), "labels": ["mug"]},
                          params.values.__getitem__)
    assert reason is not None and "disagree" in reason


def test_a_file_set_with_labels_or_descriptions_keeps_the_three_consistent(ctl, bundle,
                                                                           tmp_path):
    """labels or descriptions given in the file's set: the file's, or the set is rejected;
    the one not given is set to the file's (the parameters showed the old labels, or none of
    the file's descriptions, while the file's vocabulary was used)."""
    vfile = tmp_path / "v.yaml"
    vfile.write_text(yaml.safe_dump({"labels": [
        {"name": "zebra", "description": "A striped horse."}, {"name": "kettle"}]}))
    params = Params(ctl, bundle.vocabulary)
    before = dict(params.values)
    for given in ({"descriptions": []}, {"descriptions": ["x1", "x2"]},
                  {"labels": ["zebra", "kettle"], "descriptions": []}):
        reason = params.set(vocabulary_file=str(vfile), **given)
        assert reason is not None and "disagree" in reason, given
        assert params.values == before and ctl.requested == bundle.vocabulary
    assert params.set(vocabulary_file=str(vfile), labels=["zebra", "kettle"]) is None
    assert params.values == {"labels": ["zebra", "kettle"], "vocabulary_file": str(vfile),
                             "descriptions": ["A striped horse.", ""]}
    assert params.set(labels=["banana"]) is None
    assert params.set(vocabulary_file=str(vfile),
                      descriptions=[" A striped horse. ", ""]) is None
    assert params.values["labels"] == ["zebra", "kettle"]
    assert [lb.description for lb in ctl.requested] == ["A striped horse.", ""]


def test_the_parameters_show_names_without_the_spaces_dropped(ctl, bundle):
    """Names and descriptions are used without the spaces around them; the parameters show
    them so (they kept "  mug " while the node published mug)."""
    params = Params(ctl, bundle.vocabulary)
    assert params.set(labels=["  mug ", "banana\u00a0"], descriptions=[" A cup. ", ""]) is None
    assert params.values["labels"] == ["mug", "banana"]
    assert params.values["descriptions"] == ["A cup.", ""]
    assert ctl.requested.names == ["mug", "banana"]


def test_a_kept_dataset_key_never_rejects_a_new_name(bundle, tmp_path, service):
    """A name keeps its key from the previous vocabulary unless another name now has that
    key as its own: {mug, key cup} then labels [mug, cup] was rejected as "duplicate key
    'cup'", though the names are distinct (and accepted after any other change)."""
    from vl_distill_ros.ros.vocabulary_controller import build_vocabulary

    previous = Vocabulary((Label("mug", key="cup"), Label("banana", key="011_banana")))
    vocab = build_vocabulary(["mug", "cup", "banana"], [], previous)
    assert vocab.keys == ["mug", "cup", "011_banana"]
    assert build_vocabulary(["mug", "zebra"], [], previous).keys == ["cup", "zebra"]
    with pytest.raises(VocabularyError, match="read as a space"):
        build_vocabulary(["sugar box", "Sugar_Box"], [], None)


def test_bad_changes_are_rejected_with_the_reason_and_change_nothing(ctl, bundle, tmp_path):
    params = Params(ctl, bundle.vocabulary)
    before = dict(params.values)
    v0 = ctl.pipeline.active.version
    reason = params.set(descriptions=["only one"])
    assert reason is not None and "3 labels but 1 descriptions" in reason
    assert f"active vocabulary (version {v0}) is unchanged" in reason
    assert params.set(labels=["mug", "MUG"]) is not None        # duplicate (case-insensitive)
    assert params.set(labels=["mug", "  "]) is not None         # whitespace name
    missing = tmp_path / "missing.yaml"
    assert ctl.complete({"vocabulary_file": str(missing)}, "") == {}
    assert "vocabulary rejected" in params.set(vocabulary_file=str(missing))
    assert params.values == before and ctl.requested == bundle.vocabulary
    assert ctl.commit() is None                                 # nothing accepted, nothing queued
    assert ctl.status()["state"] == "ready" and ctl.pipeline.active.version == v0
    # a set without vocabulary parameters is not the controller's business
    assert ctl.validate({"top_k": 5}, params.values.__getitem__) is None
    assert ctl.commit() is None


def test_the_latest_request_wins(ctl, service):
    """Requests arriving while one is embedded: only the newest is swapped in."""
    gate = threading.Event()
    real = service.embed_vocabulary
    calls: list[list[str]] = []

    def slow(vocab):
        calls.append(vocab.names)
        gate.wait(30.0)
        return real(vocab)

    service.embed_vocabulary = slow
    v0 = ctl.pipeline.active.version
    try:
        seq1 = ctl.request(Vocabulary.from_names(["banana", "zebra"]))
        end = time.monotonic() + 10.0
        while not calls and time.monotonic() < end:
            time.sleep(0.005)
        ctl.request(Vocabulary.from_names(["mug"]))
        seq3 = ctl.request(Vocabulary.from_names(["mug", "zebra"]))
        assert seq3 == seq1 + 2
        assert ctl.status()["state"] == "embedding"
        gate.set()
        assert ctl.wait_idle(60.0)
    finally:
        service.embed_vocabulary = real
    assert ctl.pipeline.active.vocabulary.names == ["mug", "zebra"]
    assert ctl.pipeline.active.version == v0 + 1  # the stale first request was never swapped in
    assert ["mug"] not in calls                    # debounced away by the newer request


def test_a_failed_embedding_keeps_the_active_vocabulary(ctl, service):
    real = service.embed_vocabulary

    def failing(vocab):
        raise RuntimeError("teacher weights missing")

    service.embed_vocabulary = failing
    v0 = ctl.pipeline.active.version
    try:
        ctl.request(Vocabulary.from_names(["zebra"]))
        assert ctl.wait_idle(30.0)
    finally:
        service.embed_vocabulary = real
    status = ctl.status()
    assert status["state"] == "error" and "teacher weights missing" in status["error"]
    assert ctl.pipeline.active.version == v0 and ctl.pipeline.active.vocabulary.names == NAMES


def test_save_waits_for_the_requested_vocabulary(ctl, bundle, service, tmp_path):
    params = Params(ctl, bundle.vocabulary)
    gate = threading.Event()
    real = service.embed_vocabulary
    service.embed_vocabulary = lambda vocab: (gate.wait(30.0), real(vocab))[1]
    v0 = ctl.pipeline.active.version
    try:
        assert params.set(labels=["banana", "zebra"]) is None
        ok, msg = ctl.save_requested(wait_s=0.2)
        assert not ok and "still being embedded" in msg
        assert not ctl.store_path.exists()
        gate.set()
        ok, msg = ctl.save_requested(wait_s=30.0)
    finally:
        service.embed_vocabulary = real
    assert ok and f"(vocabulary version {v0 + 1})" in msg, msg
    stored = load_vocabulary_store_result(ctl.store_path)
    assert stored.vocabulary.names == ["banana", "zebra"]
    assert ctl.status()["store_status"] == "saved"


def test_persist_saves_every_change(bundle, service, tmp_path):
    ctl = VocabularyController(service, tmp_path / "persist.yaml", LOG, persist=lambda: True)
    ctl.attach(PerceptionPipeline(bundle, vocabulary=bundle.vocabulary,
                                  embeddings=bundle.text_embeddings), bundle.vocabulary, "bundle")
    ctl.start()
    try:
        v0 = ctl.pipeline.active.version
        ctl.request(Vocabulary.from_names(["mug", "zebra"]))
        assert wait_version(ctl, v0 + 1)
        end = time.monotonic() + 10.0
        while ctl.status()["store_status"] != "saved" and time.monotonic() < end:
            time.sleep(0.01)
    finally:
        ctl.stop()
    assert load_vocabulary_store_result(tmp_path / "persist.yaml").vocabulary.names == [
        "mug", "zebra"]


def test_startup_precedence_store_file_labels_bundle(bundle, service, tmp_path):
    store = tmp_path / "store.yaml"
    ctl = VocabularyController(service, store, LOG)
    vfile = tmp_path / "v.yaml"
    vfile.write_text(yaml.safe_dump({"labels": [{"name": "zebra"}]}))
    base = {"persist_vocabulary": False, "vocabulary_file": "", "labels": [],
            "descriptions": []}
    assert ctl.startup_vocabulary(base, bundle.vocabulary) == (bundle.vocabulary, "bundle", "")
    vocab, source, vf = ctl.startup_vocabulary({**base, "labels": ["Banana", "zebra"]},
                                               bundle.vocabulary)
    assert (vocab.names, source, vf) == (["Banana", "zebra"], "labels parameter", "")
    assert vocab.labels[0].key == "011_banana"   # the dataset key of a name that stays
    vocab, source, vf = ctl.startup_vocabulary(
        {**base, "labels": ["mug"], "vocabulary_file": str(vfile)}, bundle.vocabulary)
    assert (vocab.names, source, vf) == (["zebra"], f"file {vfile}", str(vfile))
    save_vocabulary_atomic(Vocabulary.from_names(["mug"]), store)
    vocab, source, _ = ctl.startup_vocabulary(
        {**base, "persist_vocabulary": True, "vocabulary_file": str(vfile)}, bundle.vocabulary)
    assert (vocab.names, source) == (["mug"], f"store {store}")
    with pytest.raises(VocabularyError, match="^vocabulary_file: "):
        ctl.startup_vocabulary({**base, "vocabulary_file": str(tmp_path / "none.yaml")},
                               bundle.vocabulary)
    with pytest.raises(VocabularyError, match="^labels/descriptions: "):
        ctl.startup_vocabulary({**base, "labels": ["a", "b"], "descriptions": ["x"]},
                               bundle.vocabulary)
    # a corrupt store is reported and skipped
    store.write_text("labels: [ {name: 'unterminated\n")
    vocab, source, _ = ctl.startup_vocabulary({**base, "persist_vocabulary": True},
                                              bundle.vocabulary)
    assert source == "bundle" and ctl.status()["store_error"]


def test_startup_embedding_failure_is_reported(bundle, service, tmp_path):
    ctl = VocabularyController(service, tmp_path / "s.yaml", LOG)
    real = service.embed_vocabulary
    service.embed_vocabulary = lambda vocab: (_ for _ in ()).throw(RuntimeError("offline"))
    try:
        assert ctl.embed_startup(Vocabulary.from_names(["zebra"])) is None
    finally:
        service.embed_vocabulary = real
    status = ctl.status()
    assert status["state"] == "error" and "start-up vocabulary: offline" in status["error"]
    assert isinstance(Path(ctl.store_path), Path)


def test_nodes_that_shared_an_older_store_name_save_to_their_own_stores(bundle, service,
                                                                        tmp_path, monkeypatch):
    """/cam_left/vl_distill_node and /cam/left/vl_distill_node shared one store before '.'
    stood for '/' (cam_left_vl_distill_node.vocabulary.yaml). After the upgrade both still
    restored that file and both saved into it, so /cam/left's change was /cam_left's
    vocabulary at its next start. The older file is only read: each node saves its own."""
    from vl_distill_ros.ros.startup_checks import default_store_path, older_store_path

    monkeypatch.setenv("ROS_HOME", str(tmp_path))
    older = tmp_path / "vl_distill_ros" / "cam_left_vl_distill_node.vocabulary.yaml"
    save_vocabulary_atomic(Vocabulary.from_names(["mug", "teapot"]), older)
    values = {"persist_vocabulary": True, "vocabulary_file": "", "labels": [],
              "descriptions": []}

    def node(ns: str) -> VocabularyController:
        return VocabularyController(service, default_store_path(ns, "vl_distill_node"), LOG,
                                    persist=lambda: True,
                                    older_store=older_store_path(ns, "vl_distill_node"))

    left, cam_left = node("/cam/left"), node("/cam_left")
    for ctl in (left, cam_left):   # the store both had before the upgrade
        assert ctl.startup_vocabulary(values, bundle.vocabulary)[0].names == ["mug", "teapot"]
    assert left.save_store(Vocabulary.from_names(["zebra", "giraffe"]))[0]
    # /cam_left restarts: not /cam/left's vocabulary
    vocab, source, _ = node("/cam_left").startup_vocabulary(values, bundle.vocabulary)
    assert vocab.names == ["mug", "teapot"], source
    vocab, source, _ = node("/cam/left").startup_vocabulary(values, bundle.vocabulary)
    assert vocab.names == ["zebra", "giraffe"], source
