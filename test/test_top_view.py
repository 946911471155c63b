"""The top-view split (:mod:`vl_distill_ros.perception.top_view`) on synthetic clusters: a
table seen straight from above, flat-topped blocks sampled every 3 mm on their footprints."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vl_distill_ros.perception.camera_model import DepthError
from vl_distill_ros.perception.depth_config import DepthProposalConfig
from vl_distill_ros.perception.top_view import height_map, plane_basis, split_top_view

CFG = DepthProposalConfig()
#: The table 1 m below a camera looking straight down: height = 1 - z, normal towards it.
NORMAL = np.array([0.0, 0.0, -1.0])


def blocks(*specs: tuple[float, float, float, float, float]
           ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Samples of the tops of blocks ``(x0, y0, width, depth, height)`` (m) every 3 mm:
    camera-frame points, heights, and each block's sample indices."""
    points, owners = [], []
    for i, (x0, y0, w, d, h) in enumerate(specs):
        xs, ys = np.meshgrid(np.arange(x0, x0 + w, 0.003), np.arange(y0, y0 + d, 0.003))
        pts = np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, 1.0 - h)], axis=1)
        points.append(pts)
        owners.append(np.full(len(pts), i))
    p = np.concatenate(points).astype(np.float32)
    owner = np.concatenate(owners)
    heights = (1.0 - p[:, 2]).astype(np.float32)
    return p, heights, [np.flatnonzero(owner == i) for i in range(len(specs))]


def _split(points, heights, cfg=CFG) -> list[np.ndarray]:
    return split_top_view(np.arange(len(points)), points, heights, NORMAL, cfg)


def test_a_low_block_against_a_tall_one_is_cut_off():
    # a 3 cm block touching a 10 cm one: seen from above, a step of 7 cm between them
    points, heights, truth = blocks((0.0, 0.0, 0.06, 0.06, 0.10), (0.06, 0.0, 0.04, 0.04, 0.03))
    pieces = _split(points, heights)
    assert len(pieces) == 2
    assert sorted(map(sorted, map(list, pieces))) == sorted(map(sorted, map(list, truth)))


def test_one_block_and_alike_tops_stay_whole():
    points, heights, _ = blocks((0.0, 0.0, 0.06, 0.06, 0.10))
    assert len(_split(points, heights)) == 1
    # tops of 10 and 8 cm: the 2 cm step cuts, but they differ by 20% of the taller (under
    # top_view_tops_frac 0.25), so the pieces join again: one object's parts
    points, heights, _ = blocks((0.0, 0.0, 0.06, 0.06, 0.10), (0.06, 0.0, 0.06, 0.06, 0.08))
    assert len(_split(points, heights)) == 1
    assert len(_split(points, heights, dataclasses.replace(CFG, top_view_tops_frac=0.1))) == 2
    # a step under top_view_step_m (1 cm between 5 and 4 cm) cuts nothing
    points, heights, _ = blocks((0.0, 0.0, 0.06, 0.06, 0.05), (0.06, 0.0, 0.06, 0.06, 0.04))
    assert len(_split(points, heights, dataclasses.replace(CFG, top_view_tops_frac=0.0,
                                                           top_view_tops_m=0.0))) == 1


def test_a_flat_object_against_a_low_one_is_cut_off():
    # a 2 cm sponge lying against 6 mm scissors' blades: a 1.4 cm step, under
    # top_view_step_m and top_view_tops_m, but 70% of the sponge's height (over
    # top_view_low_step_frac 0.6) and both under top_view_low_m: two pieces
    points, heights, truth = blocks((0.0, 0.0, 0.06, 0.06, 0.02), (0.06, 0.0, 0.06, 0.04, 0.006))
    pieces = _split(points, heights)
    assert len(pieces) == 2
    for piece in pieces:   # each piece one block (but for the bins on their contact)
        assert max(np.isin(piece, t).mean() for t in truth) > 0.95
    for off in ({"top_view_low_m": 0.0}, {"top_view_low_step_frac": 0.0},
                {"top_view_low_m": 0.015}):   # off, or the sponge above it
        assert len(_split(points, heights, dataclasses.replace(CFG, **off))) == 1
    # a drop of 40% of the top (2 cm beside 1.2 cm) cuts nothing: the slope of one object
    points, heights, _ = blocks((0.0, 0.0, 0.06, 0.06, 0.02), (0.06, 0.0, 0.06, 0.04, 0.012))
    assert len(_split(points, heights)) == 1
    # taller objects keep the absolute step: a 6 cm block beside a 3 cm one stays whole
    # under top_view_step_m 0.04 whatever top_view_low_step_frac says
    points, heights, _ = blocks((0.0, 0.0, 0.06, 0.06, 0.06), (0.06, 0.0, 0.06, 0.04, 0.03))
    assert len(_split(points, heights, dataclasses.replace(
        CFG, top_view_step_m=0.04, top_view_tops_m=0.04, top_view_tops_frac=0.6))) == 1


def test_pieces_need_enough_samples_and_the_split_can_be_turned_off():
    # a 2.4 cm cube (64 samples) against a large block: under 80 samples and 25% of the
    # cluster, so it stays; with 20 it is cut off
    points, heights, _ = blocks((0.0, 0.0, 0.09, 0.09, 0.10), (0.09, 0.0, 0.024, 0.024, 0.024))
    assert len(_split(points, heights)) == 1
    assert len(_split(points, heights, dataclasses.replace(CFG, top_view_min_points=20))) == 2
    # known limit: a 1.5 cm die spans two 8 mm bins, all of them next to the step: no piece
    points, heights, _ = blocks((0.0, 0.0, 0.09, 0.09, 0.10), (0.09, 0.0, 0.015, 0.015, 0.015))
    assert len(_split(points, heights, dataclasses.replace(CFG, top_view_min_points=6))) == 1
    points, heights, _ = blocks((0.0, 0.0, 0.06, 0.06, 0.10), (0.06, 0.0, 0.04, 0.04, 0.03))
    assert len(_split(points, heights, dataclasses.replace(CFG, top_view_bin_m=0.0))) == 1
    # two small blocks (64 samples each): fewer than twice top_view_min_points in all, so
    # the cluster is left whole; with 30 it is cut
    points, heights, _ = blocks((0.0, 0.0, 0.024, 0.024, 0.08), (0.024, 0.0, 0.024, 0.024, 0.02))
    assert len(heights) == 128
    assert len(_split(points, heights)) == 1
    assert len(_split(points, heights, dataclasses.replace(CFG, top_view_min_points=30))) == 2


def test_the_height_map_keeps_each_bins_highest_sample_and_is_bounded():
    pts = np.array([[0.0, 0.0, 0.9], [0.001, 0.001, 0.95], [0.02, 0.0, 0.97]], np.float32)
    hmap, rows, cols = height_map(pts, 1.0 - pts[:, 2], NORMAL, 0.008)
    assert rows[0] == rows[1] and cols[0] == cols[1]
    assert hmap[rows[0], cols[0]] == pytest.approx(0.1)          # the higher of the two
    assert hmap[rows[2], cols[2]] == pytest.approx(0.03)
    assert (hmap >= 0).sum() == 2                                 # the rest is empty (-1)
    far = np.array([[0.0, 0.0, 0.9], [5.0, 0.0, 0.9]], np.float32)  # 5 m apart: too wide
    assert height_map(far, 1.0 - far[:, 2], NORMAL, 0.008) is None
    e1, e2 = plane_basis(np.array([0.0, -0.6, -0.8]))
    assert abs(e1 @ e2) < 1e-9 and abs(e1 @ np.array([0.0, -0.6, -0.8])) < 1e-9


def test_top_view_settings_are_validated():
    for bad in ({"top_view_bin_m": 0.0005}, {"top_view_bin_m": 0.5},
                {"top_view_step_m": -0.01}, {"top_view_min_points": -1},
                {"top_view_tops_frac": 1.5}, {"top_view_low_m": -0.01},
                {"top_view_low_step_frac": 1.5}):
        with pytest.raises(DepthError, match="top_view"):
            DepthProposalConfig(**bad)


def test_boxes_of_one_object_twice_are_one_box():
    # the same cluster twice (a small piece proposed beside its cluster and the same piece
    # cut off by the top view): one box; a cluster half its size stays a box of its own
    from test_depth import K

    from vl_distill_ros.perception.depth_proposals import boxes_from_clusters

    points, heights, (block,) = blocks((-0.05, -0.05, 0.1, 0.1, 0.05))
    normal = NORMAL.astype(np.float32)
    half = block[points[block, 0] < 0.0]
    boxes, tops = boxes_from_clusters([block, block.copy(), half], points, heights, normal,
                                      K, CFG)
    assert len(boxes) == 2 and len(tops) == 2
    boxes, _ = boxes_from_clusters([block, half], points, heights, normal, K,
                                   dataclasses.replace(CFG, max_count=1))
    assert len(boxes) == 1
