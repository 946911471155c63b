"""Calibrated stacking and open-set scoring (vl_distill_ros.model.calibration)."""
from __future__ import annotations

import numpy as np
import pytest

from vl_distill_ros.model.calibration import (Calibration, CalibrationError, adjusted_scores,
                                              auroc, bias_curve, bias_vector, center_embeddings,
                                              choose_seen_bias,
                                              gzsl_accuracies, harmonic_mean,
                                              mean_class_accuracy, threshold_for_coverage)


def test_bias_vector_matches_trained_names_case_and_space_insensitively():
    v = bias_vector(["Banana", "zebra", "power  drill"], ["banana", "power drill"], 0.2)
    assert v.tolist() == pytest.approx([0.2, 0.0, 0.2])


def test_adjusted_scores_subtract_the_bias_before_the_softmax():
    cos = np.array([[0.50, 0.45]])
    plain = adjusted_scores(cos, np.zeros(2), 0.01)
    biased = adjusted_scores(cos, np.array([0.1, 0.0]), 0.01)
    assert plain.argmax() == 0 and biased.argmax() == 1
    assert biased.sum() == pytest.approx(1.0)
    # softmax((0.40, 0.45) / 0.01) by hand
    assert biased[0, 1] == pytest.approx(1 / (1 + np.exp(-5.0)))


def test_mean_class_accuracy_weights_classes_equally():
    target = np.array([0, 0, 0, 0, 1])
    pred = np.array([0, 0, 0, 0, 0])
    assert mean_class_accuracy(pred, target) == pytest.approx(0.5)
    assert harmonic_mean(1.0, 0.0) == 0.0
    assert harmonic_mean(0.5, 0.5) == pytest.approx(0.5)


def test_auroc_against_hand_counts():
    assert auroc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auroc([0.1], [0.9]) == 0.0
    # one tie counts one half: pairs (0.5 vs 0.5) = 0.5, (0.5 vs 0.1) = 1 -> 0.75
    assert auroc([0.5], [0.5, 0.1]) == pytest.approx(0.75)
    assert np.isnan(auroc([], [0.1]))


def _toy_gzsl():
    # labels 0, 1 are trained ("seen"), 2 is not; unseen samples (true label 2) score a bit
    # higher on label 0 than on their own label unless a bias is subtracted.
    cos = np.array([[0.9, 0.1, 0.2],    # seen, class 0
                    [0.1, 0.8, 0.2],    # seen, class 1
                    [0.55, 0.1, 0.5],   # unseen, class 2
                    [0.52, 0.1, 0.5]])  # unseen, class 2
    target = np.array([0, 1, 2, 2])
    is_seen = np.array([True, True, False, False])
    mask = np.array([True, True, False])
    return cos, target, is_seen, mask


def test_calibrated_stacking_recovers_unseen_classes():
    cos, target, is_seen, mask = _toy_gzsl()
    assert gzsl_accuracies(cos, target, is_seen, mask, 0.0) == (1.0, 0.0, 0.0)
    seen, unseen, h = gzsl_accuracies(cos, target, is_seen, mask, 0.1)
    assert (seen, unseen, h) == (1.0, 1.0, 1.0)
    curve = bias_curve(cos, target, is_seen, mask, max_bias=0.3, step=0.01)
    best = choose_seen_bias(curve)
    # the smallest bias that flips both unseen samples: > 0.05, and seen stays right
    assert 0.05 < best["bias"] <= 0.06 and best["h"] == 1.0
    # too much bias costs the seen classes
    assert gzsl_accuracies(cos, target, is_seen, mask, 0.75)[0] < 1.0


def test_threshold_keeps_the_requested_coverage():
    scores = np.linspace(0.0, 1.0, 101)
    thr = threshold_for_coverage(scores, 0.9)
    assert np.mean(scores >= thr) >= 0.9
    assert np.mean(scores >= thr + 0.011) < 0.9
    with pytest.raises(CalibrationError):
        threshold_for_coverage(scores, 0.0)


def test_record_round_trip_and_validation():
    rec = Calibration(seen_bias=0.05, unknown_threshold=0.4, score_temperature=0.01,
                      trained_names=("banana", "bowl"), chosen_on={"n_seen": 3})
    assert Calibration.from_dict(rec.to_dict()) == rec
    bad = [dict(rec.to_dict(), seen_bias=1.5), dict(rec.to_dict(), unknown_threshold=-0.1),
           dict(rec.to_dict(), seen_bias="x"), dict(rec.to_dict(), score_temperature=0),
           dict(rec.to_dict(), trained_names="banana"), dict(rec.to_dict(), extra=1)]
    for data in bad:
        with pytest.raises(CalibrationError):
            Calibration.from_dict(data)
    centred = Calibration(seen_bias=0.05, unknown_threshold=0.4, score_temperature=0.01,
                          trained_names=("banana",), embedding_center=[0.3, -0.4, 0.0])
    assert Calibration.from_dict(centred.to_dict()) == centred
    assert centred.embedding_center == (0.3, -0.4, 0.0) and rec.embedding_center == ()
    for centre in ([0.8, 0.8], [float("nan")], "0.1", [True], [0.1] * 5000):
        with pytest.raises(CalibrationError, match="embedding_center"):
            Calibration.from_dict(dict(rec.to_dict(), embedding_center=centre))
    incomplete = rec.to_dict()
    del incomplete["unknown_threshold"]
    with pytest.raises(CalibrationError, match="lacks"):
        Calibration.from_dict(incomplete)


def test_centring_subtracts_the_mean_and_renormalises():
    rng = np.random.default_rng(3)
    e = rng.normal(size=(6, 5))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    c = 0.5 * e.mean(axis=0)
    out = center_embeddings(e, c)
    want = (e - c) / np.linalg.norm(e - c, axis=1, keepdims=True)
    assert out.dtype == np.float32 and np.allclose(out, want, atol=1e-6)
    assert center_embeddings(e, ()) is e
    rec = Calibration(0.0, 0.5, 0.01, ("a",), embedding_center=tuple(c))
    assert np.allclose(rec.center(e), want, atol=1e-6)


@pytest.mark.parametrize("n, coverage", [(10, 0.9), (20, 0.9), (500, 0.9), (5, 0.8), (7, 0.9)])
def test_the_threshold_keeps_the_coverage_not_one_more(n, coverage):
    """(1 - 0.9) * 10 is 0.9999999999999998 in floats: the threshold came out one rank too
    low, keeping every correct crop known, whenever their count was a multiple of 10."""
    import math

    from vl_distill_ros.model.calibration import threshold_for_coverage

    scores = np.linspace(0.5, 0.6, n)
    threshold = threshold_for_coverage(scores, coverage)
    kept = int((scores >= threshold).sum())
    assert kept == math.ceil(round(coverage * n, 9)), (kept, threshold)


def test_adjusted_scores_normalise_over_the_largest_logits_only():
    """With more labels and negatives than ``max_competitors``, a row is normalised over
    its M largest logits; a row that fits is scored exactly as without the cap."""
    rng = np.random.default_rng(3)
    cos = rng.uniform(-0.2, 0.6, (5, 40))
    neg = rng.uniform(-0.2, 0.6, (5, 7))
    bias = np.where(np.arange(40) < 10, 0.07, 0.0)
    full = adjusted_scores(cos, bias, 0.1, neg)
    assert np.array_equal(adjusted_scores(cos, bias, 0.1, neg, max_competitors=47), full)
    assert np.array_equal(adjusted_scores(cos, bias, 0.1, neg, max_competitors=None), full)
    capped = adjusted_scores(cos, bias, 0.1, neg, max_competitors=6)
    z = np.concatenate([cos - bias, neg], axis=1) / 0.1
    for row in range(5):
        keep = np.argsort(z[row])[::-1][:6]
        expect = np.zeros(47)
        expect[keep] = np.exp(z[row, keep]) / np.exp(z[row, keep]).sum()
        assert capped[row] == pytest.approx(expect[:40], abs=1e-12)
    assert (capped > 0).sum(axis=1).max() <= 6
    assert np.all(capped.max(axis=1) >= full.max(axis=1))


def test_softmax_size_is_the_calibrations_recorded_size_or_an_upper_bound():
    """Calibration records the size of the softmax its threshold was chosen on (its
    vocabulary plus the negatives it used); an older record gives an upper bound, its
    vocabulary plus every trained name with negatives, only its vocabulary without."""
    unseen = [f"u{i}" for i in range(10)]
    trained = tuple(f"t{i}" for i in range(46))           # 14 of them the ID names
    older = Calibration(seen_bias=0.07, unknown_threshold=0.06, score_temperature=0.1,
                        trained_names=trained, negatives=True,
                        chosen_on={"vocabulary_size": 24, "unseen_objects": unseen})
    assert older.softmax_size == 24 + 46
    plain = Calibration(seen_bias=0.07, unknown_threshold=0.06, score_temperature=0.1,
                        trained_names=("a", "b", "c"), chosen_on={"vocabulary_size": 24})
    assert plain.softmax_size == 24
    exact = Calibration(seen_bias=0.07, unknown_threshold=0.06, score_temperature=0.1,
                        trained_names=trained, negatives=True,
                        chosen_on={"vocabulary_size": 24, "unseen_objects": unseen,
                                   "softmax_size": 54})
    assert exact.softmax_size == 54
    assert Calibration(seen_bias=0.0, unknown_threshold=0.5, score_temperature=0.01,
                       trained_names=("a",)).softmax_size is None


def test_the_shipped_bundles_softmax_cap_leaves_its_default_vocabulary_as_it_was():
    """The shipped record predates the recorded size: its bound is 24 + 46 = 70 (the
    threshold was chosen on 54 entries, 24 names and the 30 negatives outside them), above
    its default vocabulary's 26 names and 31 negatives, which are scored as before."""
    from vl_distill_ros.model.bundle import load_bundle
    from vl_distill_ros.ros.params import default_model_path

    b = load_bundle(default_model_path(), device="cpu")
    rec = b.calibration
    assert rec.chosen_on["vocabulary_size"] == 24 and len(rec.trained_names) == 46
    assert "softmax_size" not in rec.chosen_on and rec.softmax_size == 70
    names = b.vocabulary.names
    outside = [n for n in rec.trained_names if n not in names]
    assert len(names) + len(outside) <= rec.softmax_size
