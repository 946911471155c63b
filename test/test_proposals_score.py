"""Scored colour proposals: low-contrast blobs are dropped by ``min_score``, a candidate
touching the image border is never dropped for its score, merging keeps the better score."""
from __future__ import annotations

import numpy as np

from vl_distill_ros.perception.proposals import _box_score, _candidates, _finish
from vl_distill_ros.perception.proposal_config import ProposalConfig
from helpers import colour_model_boxes as propose_boxes  # tests of the colour model


TABLE = (168, 138, 108)


def _scene(objects, size=(240, 320), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.empty((*size, 3), np.float32)
    img[:] = TABLE
    for (x, y, w, h), colour in objects:
        img[y:y + h, x:x + w] = colour
    img += rng.normal(0.0, 1.5, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def _hits(boxes, box, tol=6) -> bool:
    return any(all(abs(a - b) <= tol for a, b in zip(found, box)) for found in boxes)


def test_scores_rank_contrast_and_the_threshold_drops_faint_blobs():
    strong = (40, 60, 50, 40)
    faint = (200, 150, 50, 40)
    img = _scene([(strong, (30, 60, 200)), (faint, (205, 140, 95))])  # faint: near the table
    cands = {tuple(round(v) for v in c[:2]): c[4] for c in _candidates(img, ProposalConfig())}
    assert cands[(40, 60)] == 1.0 and 0.4 < cands[(200, 150)] < 0.7
    kept = propose_boxes(img, ProposalConfig(min_score=0.4, pad_frac=0.0))
    assert _hits(kept, strong) and _hits(kept, faint)
    strict = propose_boxes(img, ProposalConfig(min_score=0.8, pad_frac=0.0))
    assert _hits(strict, strong) and not _hits(strict, faint)


def test_box_score_and_finish():
    cfg = ProposalConfig(min_score=0.5, pad_frac=0.0)
    size = (160, 120)
    assert _box_score(2 * cfg.strong_thresh, 0, 10, 10, (20, 20, 30, 30), size, cfg) == 1.0
    low = _box_score(0.2 * cfg.strong_thresh, 0, 10, 10, (20, 20, 30, 30), size, cfg)
    assert low < 0.5
    edge = _box_score(0.2 * cfg.strong_thresh, 40, 10, 10, (20, 20, 30, 30), size, cfg)
    assert edge == 1.0                                     # a crisp outline counts too
    at_border = _box_score(0.0, 0, 10, 10, (0, 20, 10, 30), size, cfg)
    assert at_border == cfg.min_score                      # never dropped for the border
    cands = [[10, 10, 40, 40, 0.9], [12, 12, 38, 38, 0.2], [100, 100, 30, 30, 0.1]]
    boxes = _finish(cands, cfg, 320, 240)
    assert boxes == [(10, 10, 40, 40)]                     # low score gone, overlap merged
    assert _finish([], cfg, 320, 240) == []


def test_min_score_is_validated():
    import pytest

    with pytest.raises(ValueError, match="min_score"):
        ProposalConfig(min_score=1.5)
