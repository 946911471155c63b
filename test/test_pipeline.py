"""PerceptionPipeline (ROS-free): scoring math, open set, top-k, crop sources, box sanitising,
atomic vocabulary swaps, the labels JSON document and annotation drawing.

The bundles here use a fake 16-d teacher space (random unit text embeddings) and an untrained
student whose projection head is overwritten: weight = 0 and bias = a chosen direction, so the
student outputs that direction for every crop and the expected scores can be computed by hand.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vl_distill_ros.model.bundle import load_bundle, save_bundle
from vl_distill_ros.config import StudentConfig
from vl_distill_ros.perception.pipeline import (UNKNOWN_LABEL, PerceptionPipeline, PipelineError,
                                                draw_annotations, labels_document, rois_from_flat)
from vl_distill_ros.perception.proposal_config import ProposalConfig
from vl_distill_ros.model.student import build_student
from vl_distill_ros.model.vocabulary import Vocabulary

DIM = 16
SMALL = StudentConfig(backbone="mobilenet_v3_small", pretrained="none", image_size=64)
NAMES = ["banana", "mug", "power drill", "scissors"]


def unit(v: torch.Tensor) -> torch.Tensor:
    return F.normalize(v.float(), dim=-1)


@pytest.fixture(scope="module")
def text_emb() -> torch.Tensor:
    return unit(torch.randn(len(NAMES), DIM, generator=torch.Generator().manual_seed(0)))


@pytest.fixture(scope="module")
def direction(text_emb) -> torch.Tensor:
    """What the student outputs for every crop: close to 'power drill', not equal to it."""
    noise = torch.randn(DIM, generator=torch.Generator().manual_seed(1))
    return unit(text_emb[2] + 0.3 * unit(noise))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, text_emb, direction):
    student = build_student(SMALL, DIM)
    with torch.no_grad():  # constant output: the trick described in the module docstring
        student.head.weight.zero_()
        student.head.bias.copy_(direction)
    path = save_bundle(tmp_path_factory.mktemp("bundle") / "b.vdb", student, text_emb,
                       Vocabulary.from_names(NAMES), "fake-teacher:v1",
                       {"backend": "fake", "id": "fake-teacher:v1"},
                       ["a photo of a {name}."], enrich=False)
    return load_bundle(path)


def expected_scores(direction, text_emb, temperature):
    return torch.softmax((text_emb @ direction) / temperature, dim=0)


def frame(h=48, w=64, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), np.uint8)


class BatchRecorder:
    """Forward hook that records the batch shapes the student sees."""

    def __init__(self, student):
        self.shapes = []
        self.handle = student.register_forward_hook(
            lambda mod, inp, out: self.shapes.append(tuple(inp[0].shape)))

    def close(self):
        self.handle.remove()


@pytest.fixture
def student_crops(monkeypatch) -> list[np.ndarray]:
    """Every crop the pipeline hands to the student's preprocessing, in order (copies)."""
    import vl_distill_ros.perception.pipeline as pipeline_module

    crops_seen: list[np.ndarray] = []
    real = pipeline_module.preprocess_crops

    def spy(crops, spec):
        crops_seen.extend(np.array(c) for c in crops)
        return real(crops, spec)

    monkeypatch.setattr(pipeline_module, "preprocess_crops", spy)
    return crops_seen


def _shapes(crops: list[np.ndarray]) -> list[tuple[int, int]]:
    return [c.shape[:2] for c in crops]


def test_full_frame_scores_match_softmax_of_cosines(bundle, direction, text_emb):
    pipe = PerceptionPipeline(bundle, crop_source="full_frame", unknown_threshold=0.0, top_k=3)
    objects, version = pipe.process(frame())
    assert version == 1 and len(objects) == 1
    o = objects[0]
    probs = expected_scores(direction, text_emb, 0.01)
    assert o.bbox == (0, 0, 64, 48)
    assert o.label == "power drill" and o.known
    assert o.score == pytest.approx(float(probs.max()), abs=1e-4)
    order = torch.argsort(probs, descending=True)[:3].tolist()
    assert [name for name, _ in o.top_k] == [NAMES[i] for i in order]
    assert [s for _, s in o.top_k] == pytest.approx([float(probs[i]) for i in order], abs=1e-4)


def test_top_k_is_capped_sorted_and_scores_sum_to_one(bundle):
    pipe = PerceptionPipeline(bundle, crop_source="full_frame", top_k=10, score_temperature=1.0,
                              unknown_threshold=0.0)
    (o,), _ = pipe.process(frame())
    scores = [s for _, s in o.top_k]
    assert len(o.top_k) == len(NAMES)
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0, abs=1e-5)
    pipe.configure(top_k=1)
    (o,), _ = pipe.process(frame())
    assert len(o.top_k) == 1 and o.top_k[0][0] == o.label


def test_unknown_threshold_and_min_similarity(bundle, direction, text_emb):
    # temperature 1: scores are nearly uniform over 4 labels, far below 0.9
    pipe = PerceptionPipeline(bundle, crop_source="full_frame", unknown_threshold=0.9,
                              score_temperature=1.0)
    (o,), _ = pipe.process(frame())
    assert o.label == UNKNOWN_LABEL and o.known is False
    assert o.score < 0.9 and o.top_k[0][0] == "power drill"  # closest labels still reported
    pipe.configure(unknown_threshold=0.0)
    (o,), _ = pipe.process(frame())
    assert o.label == "power drill" and o.known
    best_cos = float((text_emb @ direction).max())
    pipe.configure(min_similarity=min(1.0, best_cos + 0.01))
    (o,), _ = pipe.process(frame())
    assert o.label == UNKNOWN_LABEL and not o.known
    pipe.configure(min_similarity=best_cos - 0.01)
    (o,), _ = pipe.process(frame())
    assert o.known


def test_rois_degenerate_boxes_dropped_and_one_batch(bundle):
    rois = [(-20, -20, 10, 10),   # fully outside -> dropped
            (5, 5, 0, 10),        # zero width -> dropped
            (50, 30, 100, 100),   # partly outside -> clipped to (50, 30, 14, 18)
            (1, 1, 2, 2),         # smaller than min_box_size -> dropped
            (10, 10, 20, 20)]     # fine
    pipe = PerceptionPipeline(bundle, crop_source="rois", rois=rois, unknown_threshold=0.0,
                              inference_backend="torch")  # the recorder hooks torch
    rec = BatchRecorder(bundle.student)
    try:
        objects, _ = pipe.process(frame(48, 64))
    finally:
        rec.close()
    assert [o.bbox for o in objects] == [(50, 30, 14, 18), (10, 10, 20, 20)]
    assert rec.shapes == [(2, 3, 64, 64)]  # the crops of one frame: ONE batch
    # all boxes degenerate: nothing reaches the network
    pipe.configure(rois=[(-5, -5, 3, 3), (70, 0, 10, 10)])
    rec = BatchRecorder(bundle.student)
    try:
        objects, version = pipe.process(frame(48, 64))
    finally:
        rec.close()
    assert objects == [] and version == 1 and rec.shapes == []


def test_proposals_mode_finds_objects_on_a_plain_table(bundle):
    image = np.full((120, 160, 3), (200, 190, 170), np.uint8)
    image[20:60, 20:60] = (200, 30, 30)
    image[70:110, 100:150] = (30, 60, 200)
    pipe = PerceptionPipeline(bundle, crop_source="proposals", unknown_threshold=0.0,
                              proposal_cfg=ProposalConfig(max_count=5),
                              inference_backend="torch")  # the recorder hooks torch
    rec = BatchRecorder(bundle.student)
    try:
        objects, _ = pipe.process(image)
        empty, _ = pipe.process(np.full((120, 160, 3), 128, np.uint8))
    finally:
        rec.close()
    assert len(objects) == 2
    for o in objects:
        x, y, w, h = o.bbox
        assert x >= 0 and y >= 0 and w >= 4 and h >= 4 and x + w <= 160 and y + h <= 120
    assert empty == []
    assert rec.shapes == [(2, 3, 64, 64)]
    pipe.configure(fallback_full_frame=True)  # nothing proposed -> the whole frame
    (whole,), _ = pipe.process(np.full((120, 160, 3), 128, np.uint8))
    assert whole.bbox == (0, 0, 160, 120)


def test_a_prepared_frame_is_classified_with_the_settings_it_was_prepared_with(bundle):
    """Settings changed between the node's two stages apply from the next frame: a frame
    keeps the snapshot :meth:`prepare` took (its boxes and its thresholds agree)."""
    pipe = PerceptionPipeline(bundle, crop_source="full_frame", unknown_threshold=0.9,
                              score_temperature=1.0)
    prepared = pipe.prepare(frame())
    pipe.configure(unknown_threshold=0.0, crop_source="rois", rois=[(0, 0, 10, 10)])
    (o,), _ = pipe.classify(prepared)
    assert o.label == UNKNOWN_LABEL and o.bbox == (0, 0, 64, 48)
    (o,), _ = pipe.classify(pipe.prepare(frame()))
    assert o.known and o.bbox == (0, 0, 10, 10)
    with pytest.raises(PipelineError, match="uint8"):
        pipe.prepare(frame().astype(np.float32))


def test_vocabulary_swap_is_atomic_and_versioned(bundle, direction, text_emb):
    pipe = PerceptionPipeline(bundle, crop_source="full_frame", unknown_threshold=0.0,
                              inference_backend="torch")  # the swap hook is on torch
    new_vocab = Vocabulary.from_names(["cup", "cordless drill"])
    new_emb = torch.stack([text_emb[1], direction])  # 'cordless drill' == student output
    # a swap that happens while a frame is in the network does not affect that frame
    swapped = {}

    def swap_mid_frame(mod, inp, out):
        if not swapped:
            swapped["version"] = pipe.set_vocabulary(new_vocab, new_emb)

    handle = bundle.student.register_forward_hook(swap_mid_frame)
    try:
        (o,), version = pipe.process(frame())
    finally:
        handle.remove()
    assert swapped["version"] == 2
    assert version == 1 and o.label == "power drill"       # in-flight frame: old vocabulary
    (o,), version = pipe.process(frame())
    assert version == 2 and o.label == "cordless drill"    # next frame: new vocabulary
    assert o.score == pytest.approx(1.0, abs=1e-3)
    assert pipe.active.version == 2 and pipe.active.names == ["cup", "cordless drill"]
    with pytest.raises(PipelineError, match="shape"):
        pipe.set_vocabulary(new_vocab, text_emb)          # 4 rows for 2 labels
    with pytest.raises(PipelineError, match="NaN"):
        pipe.set_vocabulary(new_vocab, torch.full((2, DIM), float("nan")))
    assert pipe.active.version == 2                         # failed swaps change nothing


def test_settings_validation(bundle):
    pipe = PerceptionPipeline(bundle, crop_source="full_frame")
    for bad in ({"crop_source": "everything"}, {"top_k": 0}, {"score_temperature": -1.0},
                {"unknown_threshold": 1.5}, {"crop_source": "rois", "rois": []},
                {"nonsense": 1}, {"proposal_cfg": {"min_area_frac": 0.9, "max_area_frac": 0.1}}):
        with pytest.raises(PipelineError):
            pipe.configure(**bad)
    assert pipe.settings.crop_source == "full_frame"
    # a subnormal temperature overflowed the cosines to inf: NaN scores, not JSON
    for tiny in (5e-324, 1e-310, 5e-5):
        with pytest.raises(PipelineError, match="score_temperature must be >= 0.0001"):
            pipe.configure(score_temperature=tiny)
    pipe.configure(score_temperature=1e-4)
    (obj,) = pipe.process(frame(32, 32))[0]
    assert all(math.isfinite(score) for _, score in obj.top_k) and math.isfinite(obj.score)
    pipe.configure(score_temperature=0.0)
    s = pipe.configure(crop_source="rois", rois=[0, 0, 8, 8, 4, 4, 10, 10])
    assert s.rois == ((0, 0, 8, 8), (4, 4, 10, 10))
    assert rois_from_flat([1, 2, 3, 4]) == ((1, 2, 3, 4),)
    with pytest.raises(PipelineError, match="multiple|4 integers"):
        rois_from_flat([1, 2, 3, 4, 5])
    with pytest.raises(PipelineError, match="RGB uint8"):
        pipe.process(np.zeros((10, 10), np.uint8))
    with pytest.raises(PipelineError):
        PerceptionPipeline(bundle, crop_source="bogus")


def test_the_student_sees_a_square_window_around_each_box(bundle, student_crops):
    """With crop_square (the default) a tall box reaches the student as a square crop of
    its longer side plus crop_context; without it, as the box itself. The published bbox is
    the box either way; bad crop_context values are refused and change nothing."""
    pipe = PerceptionPipeline(bundle, crop_source="rois", rois=[(40, 20, 10, 30)],
                              unknown_threshold=0.0)
    assert pipe.settings.crop_square and pipe.settings.crop_context == pytest.approx(0.15)
    (obj,), _ = pipe.process(frame(120, 160))
    assert obj.bbox == (40, 20, 10, 30) and _shapes(student_crops) == [(34, 34)]  # 30 * 1.15
    pipe.configure(crop_square=False, crop_context=0.0)
    (obj,), _ = pipe.process(frame(120, 160))
    assert obj.bbox == (40, 20, 10, 30) and _shapes(student_crops)[-1] == (30, 10)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(PipelineError, match="crop_context"):
            pipe.configure(crop_context=bad)
    assert pipe.settings.crop_context == 0.0


def test_the_student_sees_the_window_of_a_boxs_view_box(bundle, student_crops):
    """A prepared frame whose box has a view box (a network box that depth refined: the
    box reported is the refined one, the student reads the window of the network's box)
    is classified from the view box's window and published with its own box; without
    view boxes the window is the box's."""
    from vl_distill_ros.perception.pipeline import PreparedFrame

    pipe = PerceptionPipeline(bundle, crop_source="rois", rois=[(40, 20, 10, 30)],
                              unknown_threshold=0.0)
    prepared = pipe.prepare(frame(120, 160))
    assert prepared.view_boxes == prepared.boxes == [(40, 20, 10, 30)]
    viewed = PreparedFrame(prepared.image, [(40, 20, 10, 30)], prepared.settings, "used",
                           [(30, 10, 40, 60)])
    (obj,), _ = pipe.classify(viewed)
    assert obj.bbox == (40, 20, 10, 30) and _shapes(student_crops) == [(69, 69)]  # 60 * 1.15
    (obj,), _ = pipe.classify(prepared)
    assert obj.bbox == (40, 20, 10, 30) and _shapes(student_crops)[-1] == (34, 34)
    with pytest.raises(PipelineError, match="view boxes"):
        pipe.classify(PreparedFrame(prepared.image, [(40, 20, 10, 30)], prepared.settings,
                                    "used", []))


def test_labels_document_schema(bundle):
    pipe = PerceptionPipeline(bundle, crop_source="rois", rois=[(0, 0, 32, 24), (32, 24, 32, 24)],
                              unknown_threshold=0.0, top_k=2)
    objects, version = pipe.process(frame())
    doc = labels_document(12, 345, "cam_optical", "/cam/image", version, objects)
    doc = json.loads(json.dumps(doc))  # JSON-serialisable as published
    assert set(doc) == {"header", "camera", "vocabulary_version", "objects"}
    assert doc["header"] == {"stamp": {"sec": 12, "nanosec": 345}, "frame_id": "cam_optical"}
    assert doc["camera"] == "/cam/image" and doc["vocabulary_version"] == 1
    assert len(doc["objects"]) == 2
    for obj, o in zip(doc["objects"], objects):
        assert set(obj) == {"bbox", "label", "score", "known", "top_k"}
        assert obj["bbox"] == list(o.bbox) and all(isinstance(v, int) for v in obj["bbox"])
        assert obj["label"] == o.label and isinstance(obj["known"], bool)
        assert isinstance(obj["score"], float)
        assert len(obj["top_k"]) == 2 and all(len(p) == 2 for p in obj["top_k"])


def test_draw_annotations_draws_on_a_copy(bundle):
    pipe = PerceptionPipeline(bundle, crop_source="rois", rois=[(10, 10, 30, 20)],
                              unknown_threshold=0.0)
    image = np.zeros((48, 64, 3), np.uint8)
    objects, _ = pipe.process(image)
    out = draw_annotations(image, objects)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert image.max() == 0                  # input untouched
    assert out[10:30, 10].any()               # left edge of the box drawn
    assert not out[45:, 50:].any()            # far from the box: untouched


# ---------------------------------------------------------------------------------------
# Calibration from the bundle: seen bias (calibrated stacking) and the open-set threshold
# ---------------------------------------------------------------------------------------
def _calibrated_bundle(tmp_path, text_emb, direction, trained_embeddings=None, **record):
    from vl_distill_ros.model.calibration import Calibration

    student = build_student(SMALL, DIM)
    with torch.no_grad():
        student.head.weight.zero_()
        student.head.bias.copy_(direction)
    cal = Calibration(**{"seen_bias": 0.0, "unknown_threshold": 0.0, "score_temperature": 0.01,
                         "trained_names": ("power drill",), **record})
    path = save_bundle(tmp_path / "cal.vdb", student, text_emb, Vocabulary.from_names(NAMES),
                       "fake-teacher:v1", {"backend": "fake", "id": "fake-teacher:v1"},
                       ["a photo of a {name}."], enrich=False, calibration=cal, onnx=False,
                       trained_embeddings=trained_embeddings)
    return load_bundle(path)


def test_bundle_seen_bias_moves_the_label_off_trained_names(tmp_path, text_emb, direction):
    cos = (text_emb @ direction)
    order = torch.argsort(cos, descending=True).tolist()
    assert NAMES[order[0]] == "power drill"
    gap = float(cos[order[0]] - cos[order[1]])
    b = _calibrated_bundle(tmp_path, text_emb, direction, seen_bias=min(1.0, gap + 0.02))
    pipe = PerceptionPipeline(b, crop_source="full_frame", unknown_threshold=0.0)
    (o,), _ = pipe.process(frame())
    assert o.label == NAMES[order[1]]                  # the bias comes from the bundle (-1)
    adjusted = cos.clone()
    adjusted[NAMES.index("power drill")] -= min(1.0, gap + 0.02)
    assert o.score == pytest.approx(float(torch.softmax(adjusted / 0.01, 0).max()), abs=1e-4)
    pipe.configure(seen_bias=0.0)                      # 0 turns it off
    (o,), _ = pipe.process(frame())
    assert o.label == "power drill"
    # a renamed vocabulary without the trained name gets no bias at all
    pipe.configure(seen_bias=-1.0)
    other = Vocabulary.from_names(["a", "b", "c", "d"])
    pipe.set_vocabulary(other, text_emb)
    (o,), _ = pipe.process(frame())
    assert o.label == "c"                              # index of 'power drill' in text_emb


def test_min_similarity_takes_the_best_raw_cosine_not_the_biased_top_labels(
        tmp_path, text_emb, direction):
    """min_similarity is documented as the crop's best raw cosine: with the seen bias moving
    the label off the trained name, a threshold between the two labels' cosines kept the
    crop only when checked against the best raw cosine (it was the top label's)."""
    cos = (text_emb @ direction)
    order = torch.argsort(cos, descending=True).tolist()
    gap = float(cos[order[0]] - cos[order[1]])
    b = _calibrated_bundle(tmp_path, text_emb, direction, seen_bias=min(1.0, gap + 0.02))
    between = float(cos[order[0]] + cos[order[1]]) / 2
    pipe = PerceptionPipeline(b, crop_source="full_frame", unknown_threshold=0.0,
                              min_similarity=between)
    (o,), _ = pipe.process(frame())
    assert o.known and o.label == NAMES[order[1]]
    pipe.configure(min_similarity=float(cos[order[0]]) + 0.01)
    (o,), _ = pipe.process(frame())
    assert not o.known


@pytest.mark.parametrize("size", [3, 5, 26, 100])
def test_labels_embedded_alike_publish_the_first_whatever_the_size_or_top_k(
        bundle, direction, size):
    """Two names the teacher embeds alike tie: torch.topk's order among ties depends on the
    vocabulary's size and k, so the published one changed with top_k (a reporting setting).
    Now the first in the vocabulary wins, and the tie is listed in vocabulary order."""
    rng = torch.Generator().manual_seed(size)
    emb = unit(torch.randn(size, DIM, generator=rng))
    first, later = 1, size - 1
    emb[first] = emb[later] = direction                     # the best, twice
    names = [f"thing {i}" for i in range(size)]
    pipe = PerceptionPipeline(bundle, vocabulary=Vocabulary.from_names(names), embeddings=emb,
                              crop_source="full_frame", unknown_threshold=0.0)
    for k in sorted({1, 2, 3, min(10, size), size}):
        pipe.configure(top_k=k)
        (o,), _ = pipe.process(frame())
        assert o.label == names[first], (size, k)
        if k >= 2:
            assert [n for n, _ in o.top_k[:2]] == [names[first], names[later]]
            assert o.top_k[0][1] == o.top_k[1][1]


def test_bundle_threshold_is_the_default_and_can_be_overridden(tmp_path, text_emb, direction):
    b = _calibrated_bundle(tmp_path, text_emb, direction, unknown_threshold=1.0)
    pipe = PerceptionPipeline(b, crop_source="full_frame", score_temperature=1.0)
    (o,), _ = pipe.process(frame())
    assert not o.known and pipe.effective_unknown_threshold() == 1.0
    pipe.configure(unknown_threshold=0.0)
    (o,), _ = pipe.process(frame())
    assert o.known


def test_old_bundle_without_calibration_behaves_as_before(bundle):
    pipe = PerceptionPipeline(bundle, crop_source="full_frame")
    assert bundle.calibration is None
    assert pipe.effective_unknown_threshold() == 0.5 and pipe.effective_seen_bias() == 0.0
    for bad in ({"seen_bias": -0.5}, {"seen_bias": 1.5}, {"unknown_threshold": -0.2}):
        with pytest.raises(PipelineError, match="-1"):
            pipe.configure(**bad)


def test_bundle_with_a_bad_calibration_record_is_rejected(tmp_path, text_emb, direction):
    import json as _json

    from helpers import rewrite_zip
    from vl_distill_ros.model.bundle import BundleError

    good = _calibrated_bundle(tmp_path, text_emb, direction).path

    def tamper(members):
        m = _json.loads(members["manifest.json"])
        m["calibration"]["seen_bias"] = 7
        members["manifest.json"] = _json.dumps(m).encode()

    bad = rewrite_zip(good, tmp_path / "bad.vdb", tamper)
    with pytest.raises(BundleError, match="calibration"):
        load_bundle(bad)


def test_bundle_centre_is_subtracted_before_scoring(tmp_path, text_emb, direction):
    """A calibration centre is subtracted from the student's embedding (then re-normalised)
    before the cosines: a centre along 'power drill' moves the label off it; the scores are
    the softmax of the centred cosines. A centre of the wrong size is refused."""
    from vl_distill_ros.model.bundle import BundleError

    centre = 0.9 * text_emb[2]
    b = _calibrated_bundle(tmp_path, text_emb, direction,
                           embedding_center=tuple(centre.tolist()))
    pipe = PerceptionPipeline(b, crop_source="full_frame", unknown_threshold=0.0)
    (o,), _ = pipe.process(frame())
    centred = unit(direction - centre)
    probs = torch.softmax((text_emb @ centred) / 0.01, dim=0)
    assert o.label == NAMES[int(probs.argmax())] != "power drill"
    assert o.score == pytest.approx(float(probs.max()), abs=1e-4)
    with pytest.raises(BundleError, match="centre"):
        _calibrated_bundle(tmp_path, text_emb, direction, embedding_center=(0.1,) * (DIM + 1))


def test_negative_names_lower_the_score_of_look_alikes(tmp_path, text_emb, direction):
    """A trained name outside the vocabulary whose embedding is what the crop looks like
    takes the probability mass: every active name scores low, the crop becomes unknown."""
    trained = torch.stack([text_emb[2], direction])          # 'power drill', 'zebra'
    b = _calibrated_bundle(tmp_path, text_emb, direction, trained_embeddings=trained,
                           trained_names=("power drill", "zebra"), negatives=True,
                           negative_similarity=0.999, unknown_threshold=0.5)
    assert b.trained_embeddings.shape == (2, DIM)
    pipe = PerceptionPipeline(b, crop_source="full_frame", seen_bias=0.0)
    assert pipe.active.negatives.shape == (1, DIM)             # only 'zebra'
    (o,), _ = pipe.process(frame())
    cos = text_emb @ direction
    cos64 = cos.double()
    # softmax over the 4 labels plus the negative (cosine 1: the crop's own direction)
    expect = torch.exp((cos64 - 1) / 0.01) / (torch.exp((cos64 - 1) / 0.01).sum() + 1.0)
    assert o.top_k[0][0] == "power drill" and not o.known
    assert o.score == pytest.approx(float(expect.max()), rel=1e-3)
    assert sum(s for _, s in o.top_k) < 1.0
    pipe.configure(negative_names=False)
    (o,), _ = pipe.process(frame())
    assert o.known and o.label == "power drill"
    # 'zebra' in the vocabulary is a label, not a negative
    pipe.configure(negative_names=True)
    pipe.set_vocabulary(Vocabulary.from_names(NAMES + ["zebra"]),
                        torch.cat([text_emb, direction[None]]))
    assert pipe.active.negatives.shape == (0, DIM)
    (o,), _ = pipe.process(frame())
    assert o.label == "zebra" and o.known


def test_negatives_without_their_embeddings_are_refused(tmp_path, text_emb, direction):
    from vl_distill_ros.model.bundle import BundleError

    with pytest.raises(BundleError, match="embeddings"):
        _calibrated_bundle(tmp_path, text_emb, direction, negatives=True)
    with pytest.raises(BundleError, match="do not match"):
        _calibrated_bundle(tmp_path, text_emb, direction, negatives=True,
                           trained_embeddings=torch.zeros(3, DIM))


# -- bounded work per frame (issue 11) ------------------------------------------------------
def test_rois_are_capped_at_256_regions(bundle):
    from vl_distill_ros.perception.pipeline import MAX_ROIS, PipelineSettings

    assert MAX_ROIS == 256
    many = [(i % 60, i % 40, 4, 4) for i in range(MAX_ROIS + 1)]
    with pytest.raises(PipelineError, match="rois holds 257 regions; the limit is 256"):
        PerceptionPipeline(bundle, crop_source="rois", rois=many)
    pipe = PerceptionPipeline(bundle, crop_source="rois", rois=many[:MAX_ROIS])
    assert len(pipe.settings.rois) == MAX_ROIS
    with pytest.raises(PipelineError, match="the limit is 256"):
        pipe.configure(rois=[v for box in many for v in box])  # flat, as the node passes it
    assert len(pipe.settings.rois) == MAX_ROIS  # unchanged
    with pytest.raises(PipelineError, match="the limit is 256"):
        PipelineSettings.from_params({
            "crop_source": "rois", "rois": [1] * 4 * 1000, "proposal_min_area_frac": 0.0004,
            "proposal_max_area_frac": 0.6, "proposal_max_count": 10, "proposal_pad_frac": 0.05,
            "unknown_threshold": -1.0, "min_similarity": -1.0, "top_k": 3,
            "score_temperature": 0.01, "min_box_size": 4, "proposal_fallback_full_frame": False})


def test_many_crops_go_through_the_student_in_chunks_of_64(tmp_path, text_emb):
    """200 regions: the student sees batches of at most 64 crops, and every crop gets the
    same scores as when it is classified alone (a student with a random head, so crops
    differ)."""
    from vl_distill_ros.perception.pipeline import MAX_CROPS_PER_BATCH

    torch.manual_seed(3)
    student = build_student(SMALL, DIM)
    path = save_bundle(tmp_path / "r.vdb", student, text_emb, Vocabulary.from_names(NAMES),
                       "fake-teacher:v1", {"backend": "fake", "id": "fake-teacher:v1"},
                       ["a photo of a {name}."], enrich=False, onnx=False)
    b = load_bundle(path)
    image = frame(120, 160, seed=5)
    rois = [((7 * i) % 140, (11 * i) % 100, 8 + i % 13, 6 + i % 17) for i in range(200)]
    pipe = PerceptionPipeline(b, crop_source="rois", rois=rois, unknown_threshold=0.0,
                              top_k=4, inference_backend="torch")
    rec = BatchRecorder(b.student)
    try:
        objects, _ = pipe.process(image)
    finally:
        rec.close()
    assert MAX_CROPS_PER_BATCH == 64
    assert len(objects) == 200
    assert [s[0] for s in rec.shapes] == [64, 64, 64, 8]
    for i in (0, 63, 64, 130, 199):  # crops from every chunk, classified alone
        pipe.configure(rois=[rois[i]])
        (alone,), _ = pipe.process(image)
        assert alone.bbox == objects[i].bbox
        assert [n for n, _ in alone.top_k] == [n for n, _ in objects[i].top_k]
        assert [p for _, p in alone.top_k] == pytest.approx([p for _, p in objects[i].top_k],
                                                            abs=1e-4)


def test_a_window_that_cannot_be_square_is_padded_not_stretched(bundle, student_crops):
    """crop_square: a full frame (or region) longer than 4:3 reaches the student padded to
    a square with its edge pixels; a 4:3 frame stays as it is (the student saw that much
    stretch); crop_square false stretches every crop, as before."""
    from vl_distill_ros.perception.preprocess import pad_long_crop

    seen = student_crops
    pipe = PerceptionPipeline(bundle, crop_source="full_frame", unknown_threshold=0.0)
    wide = frame(60, 160)
    pipe.process(wide)
    assert seen[-1].shape[:2] == (160, 160)
    np.testing.assert_array_equal(seen[-1][50:110], wide)          # the frame, centred
    np.testing.assert_array_equal(seen[-1][:50], np.repeat(wide[:1], 50, axis=0))  # its edge
    pipe.process(frame(120, 160))
    assert seen[-1].shape[:2] == (120, 160)                        # 4:3: as it is
    pipe.configure(crop_square=False)
    pipe.process(wide)
    assert seen[-1].shape[:2] == (60, 160)
    tall = np.zeros((50, 10, 3), np.uint8)
    assert pad_long_crop(tall).shape == (50, 50, 3)
    assert pad_long_crop(tall[:13]).shape == (13, 10, 3)             # 1.3: within 4:3
    assert pad_long_crop(tall[:0]).shape == (0, 10, 3)


def test_a_thin_frame_is_padded_within_bounded_memory():
    """A valid thin frame (4 x 20000, 234 kB) was padded to a 20000-pixel square (1.2 GB)
    before the resize to the student's input: a crop longer than MAX_PADDED_SIDE is shrunk
    first, and crops within it are padded as before."""
    import tracemalloc

    from vl_distill_ros.perception.preprocess import MAX_PADDED_SIDE, pad_long_crop

    thin = np.random.default_rng(0).integers(0, 256, (4, 20000, 3), dtype=np.uint8)
    tracemalloc.start()
    try:
        out = pad_long_crop(thin)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (MAX_PADDED_SIDE, MAX_PADDED_SIDE, 3)
    assert peak < 4 * MAX_PADDED_SIDE ** 2 * 3
    assert (out == out[:1]).all()          # one row after shrinking, its edge repeated
    wide = np.zeros((100, 1000, 3), np.uint8)
    assert pad_long_crop(wide).shape == (1000, 1000, 3)             # within: unchanged


def test_hundreds_of_names_do_not_turn_a_named_crop_unknown(tmp_path, text_emb, direction):
    """The threshold is a softmax probability chosen at the calibration's softmax size
    (vocabulary plus negatives). Hundreds of names, each a little below the crop's best,
    took every name's share below it: a crop named right was published 'unknown' (the
    shipped bundle: 78 YCB names plus 900 others kept 31 of 150 seen renders named right).
    Only the calibration's number of largest logits now share the probability."""
    b = _calibrated_bundle(tmp_path, text_emb, direction, unknown_threshold=0.5,
                           chosen_on={"vocabulary_size": 3})     # no negatives: 3 entries
    pipe = PerceptionPipeline(b, crop_source="full_frame", seen_bias=0.0)
    (small,), _ = pipe.process(frame())
    assert small.known and small.label == "power drill"
    # 300 names each 0.03 below the crop's best cosine (other directions around the crop's)
    gen = torch.Generator().manual_seed(7)
    side = torch.randn(300, DIM, generator=gen)
    side = unit(side - (side @ direction)[:, None] * direction[None])   # orthogonal to it
    c = float(text_emb[2] @ direction) - 0.03 - 1e-4 * torch.arange(300)[:, None]
    others = unit(c * direction[None] + torch.sqrt(1 - c * c) * side)
    names = NAMES + [f"thing {i}" for i in range(300)]
    pipe.set_vocabulary(Vocabulary.from_names(names), torch.cat([text_emb, others]))
    (big,), _ = pipe.process(frame())
    z = (torch.cat([text_emb, others]) @ direction).double() / 0.01
    full = torch.softmax(z, 0)
    assert float(full.max()) < 0.5                     # the whole softmax: below the threshold
    top = torch.topk(z, 3).values
    assert big.label == "power drill" and big.known
    assert big.score == pytest.approx(float(torch.softmax(top, 0)[0]), rel=1e-4)


@pytest.mark.parametrize("noise", [0.0, 2e-7], ids=["equal", "float-noise"])
def test_labels_embedded_alike_publish_the_first_with_the_shipped_students_size(noise):
    """The shipped bundle (384-d): 'master chef can' then '002_master_chef_can' (prompted
    alike) published the later on 7 of 14 renders of the can, as a 1 x 384 @ 384 x 27
    product gave the equal columns cosines 1e-8 apart (not with 26 + 26 labels: a multiple
    of the kernel's width). The same tokens embedded in another batch (or one label read
    from the text cache, the other embedded now) come out ~1e-7 apart, not equal:
    prompted_alike reports them (cosine >= ALIKE_COSINE) and the node warns the later never
    wins. Whatever the vocabulary's size, the first now wins, tied."""
    from vl_distill_ros.ros.params import default_model_path

    b = load_bundle(default_model_path(), device="cpu")
    names, emb = b.vocabulary.names, b.text_embeddings.float()
    # no seen bias: a copy named otherwise than a trained name would not get it
    pipe = PerceptionPipeline(b, crop_source="full_frame", unknown_threshold=0.0,
                              seen_bias=0.0, inference_backend="torch")
    gen = torch.Generator().manual_seed(5)
    try:
        for seed in range(6):
            image = frame(96, 96, seed)
            pipe.set_vocabulary(b.vocabulary, emb)
            (o,), _ = pipe.process(image)
            top = names.index(o.label)
            for extra in range(1, 8):              # 27 .. 33 labels
                noisy = emb[top] + noise * torch.randn(emb.shape[1], generator=gen)
                copy = torch.nn.functional.normalize(noisy, dim=0) if noise else emb[top]
                assert torch.equal(copy, emb[top]) == (noise == 0.0)
                vocab = Vocabulary.from_names(names + [f"copy {i}" for i in range(extra)])
                rest = [emb[(top + i) % len(names)] for i in range(1, extra)]
                pipe.set_vocabulary(vocab, torch.stack([*emb, copy, *rest]))
                (o,), _ = pipe.process(image)
                assert o.label == names[top], (seed, extra, o.top_k)
                assert o.top_k[1] == ("copy 0", o.top_k[0][1]), (seed, extra, o.top_k)
    finally:
        pipe.close()
