"""The fusion of the depth proposer's boxes with the box network's and the colour proposer's
(:mod:`vl_distill_ros.perception.depth_fusion`), on the synthetic tabletops of test_depth.py
(an analytic tilted table with box-shaped objects; no YCB models needed). The pipeline's use of
it (the box the student reads, the colour model left out) is tested in test_depth.py."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from test_depth import OBJECTS, K, _matched, render_tabletop
from vl_distill_ros.perception.depth_fusion import (fuse_proposals, fuse_proposals_with_views,
                                                    refine_network_boxes, whole_from_depth)
from vl_distill_ros.perception.camera_model import DepthError
from vl_distill_ros.perception.depth_config import DepthProposalConfig
from vl_distill_ros.perception.depth_proposals import propose_depth_boxes
from vl_distill_ros.perception.boxes import box_containment, box_iou


def test_fusion_keeps_colour_where_depth_is_missing_or_flat_and_drops_flat_table():
    knife = (0.0, -0.15, 0.15, 0.02, 0.006)              # flat: under the height band
    depth, truth = render_tabletop(OBJECTS + [knife])
    black = (520, 120, 40, 40)                            # a black object: no depth there
    depth[120:160, 520:560] = 0.0
    cfg = DepthProposalConfig()
    found = propose_depth_boxes(depth, K, cfg)
    assert _matched(truth[:3], found.boxes) == 3 and _matched(truth[3:], found.boxes) == 0
    flat_table = (420, 40, 50, 30)                       # e.g. a printed pattern
    colour = [black, truth[3], flat_table, truth[0]]
    fused = fuse_proposals(found, colour, cfg, max_count=10)
    assert black in fused and truth[3] in fused and flat_table not in fused
    assert sum(box_iou(b, truth[0]) > 0.5 for b in fused) == 1  # not duplicated
    assert _matched(truth, fused) == 4
    # pieces of a flat object inside a colour box are replaced by it
    pieces, parts = render_tabletop([(-0.1, 0.0, 0.03, 0.015, 0.02),
                                     (-0.04, 0.0, 0.03, 0.012, 0.02)])
    found = propose_depth_boxes(pieces, K, cfg)
    assert _matched(parts, found.boxes) == 2
    whole = (245, 224, 65, 24)
    assert fuse_proposals(found, [whole], cfg, max_count=10) == [whole]
    # without a plane: colour alone, capped
    none = propose_depth_boxes(np.zeros((480, 640), np.float32), K, cfg)
    assert fuse_proposals(none, colour, cfg, 2) == colour[:2]


def test_fusion_adds_a_depth_box_beside_a_network_box_not_one_holding_or_inside_it():
    """With the box network's boxes first (``fuse_proposals(..., network_boxes)``), a depth
    box overlapping one of them only at the side (IoU 0.25, neither inside the other: the
    neighbour the network missed) is added under ``fuse_network_partial_iou``, not without
    it; a depth box lying inside a network box (the network joined two objects there) or
    holding one (the network found a part) stays out, as does any overlap over the bound.
    (Here without ``fuse_network_whole_cover``, which makes that part whole: tested below.)"""
    depth, truth = render_tabletop(OBJECTS)
    cfg = DepthProposalConfig(fuse_network_whole_cover=0.0)
    found = propose_depth_boxes(depth, K, cfg)
    assert _matched(truth, found.boxes) == 3
    (x0, y0, w0, h0), (x1, y1, w1, h1), (x2, y2, w2, h2) = [
        max(found.boxes, key=lambda b: box_iou(b, t)) for t in truth]
    beside = (x0 + 0.6 * w0, y0, w0, h0)                  # IoU 0.25 with object 0's box
    around = (x1 - w1, y1 - h1 / 2, 3 * w1, 2 * h1)       # holds object 1's box, IoU 1/6
    part = (x2, y2, w2 / 2, h2 / 2)                        # inside object 2's box, IoU 1/4
    network = [beside, around, part]
    fused = fuse_proposals(found, [], cfg, max_count=10, network_boxes=network)
    assert fused[:3] == network
    added = fused[3:]
    assert _matched(truth[:1], added) == 1 and _matched(truth[1:], added) == 0
    off = dataclasses.replace(cfg, fuse_network_partial_iou=0.0)
    assert _matched(truth, fuse_proposals(found, [], off, 10, network)[3:]) == 0
    tight = dataclasses.replace(cfg, fuse_network_partial_iou=0.2)  # under the IoU 0.25
    assert _matched(truth, fuse_proposals(found, [], tight, 10, network)[3:]) == 0
    far = [(x0 + 2 * w0, y0, w0, h0)]                     # no overlap: added as before
    assert _matched(truth[:1], fuse_proposals(found, [], off, 10, far)[1:]) == 1
    with pytest.raises(DepthError, match="fuse_network_partial_iou"):
        DepthProposalConfig(fuse_network_partial_iou=1.5)


def test_fusion_judges_each_network_box_on_its_own():
    """A depth box overlapping one network box at the side (IoU 0.25) and holding a small
    one (IoU 0.04: a cap or a label the network boxed) is added: the small box alone would
    not keep it out (IoU under ``fuse_network_iou``), so it does not with the other either.
    A larger part inside it (IoU 0.25, held) still keeps it out."""
    depth, truth = render_tabletop(OBJECTS)
    cfg = DepthProposalConfig()
    found = propose_depth_boxes(depth, K, cfg)
    x0, y0, w0, h0 = max(found.boxes, key=lambda b: box_iou(b, truth[0]))
    beside = (x0 + 0.6 * w0, y0, w0, h0)                  # IoU 0.25 with object 0's box
    cap = (x0 + 0.1 * w0, y0 + 0.1 * h0, 0.2 * w0, 0.2 * h0)   # inside it, IoU 0.04
    assert box_iou(cap, (x0, y0, w0, h0)) <= cfg.fuse_network_iou
    fused = fuse_proposals(found, [], cfg, 10, network_boxes=[beside, cap])
    assert fused[:2] == [beside, cap] and _matched(truth[:1], fused[2:]) == 1
    part = (x0 + 0.1 * w0, y0 + 0.1 * h0, 0.5 * w0, 0.5 * h0)  # inside it, IoU 0.25
    fused = fuse_proposals(found, [], cfg, 10, network_boxes=[beside, part])
    assert _matched(truth[:1], fused[2:]) == 0


def test_network_box_moves_halfway_to_the_depth_box_of_its_object():
    """A network box that one depth box matches at IoU >= ``fuse_network_refine_iou``
    becomes the mean of the two; one that two depth boxes match, or whose depth box matches
    another network box better, stays; 0 turns it off (0.5 is the default)."""
    cfg = DepthProposalConfig(fuse_network_refine_iou=0.5)
    assert DepthProposalConfig().fuse_network_refine_iou == 0.5
    loose, tight = (100, 100, 60, 40), (110, 104, 44, 32)   # IoU 0.59
    assert box_iou(loose, tight) >= cfg.fuse_network_refine_iou
    assert refine_network_boxes([loose], [tight], cfg) == [(105, 102, 52, 36)]
    off = dataclasses.replace(cfg, fuse_network_refine_iou=0.0)
    assert refine_network_boxes([loose], [tight], off) == [loose]
    strict = dataclasses.replace(cfg, fuse_network_refine_iou=0.7)
    assert refine_network_boxes([loose], [tight], strict) == [loose]
    twin = (104, 100, 52, 40)                               # a second depth match
    assert box_iou(loose, twin) >= 0.5
    assert refine_network_boxes([loose], [tight, twin], cfg) == [loose]
    closer = (108, 103, 48, 34)                             # matches tight better
    assert refine_network_boxes([loose, closer], [tight], cfg) == [
        loose, refine_network_boxes([closer], [tight], cfg)[0]]
    far = (400, 300, 30, 30)
    assert refine_network_boxes([loose, far], [tight], cfg)[1] == far
    with pytest.raises(DepthError, match="fuse_network_refine_iou"):
        DepthProposalConfig(fuse_network_refine_iou=2.0)


def test_fusion_tightens_a_loose_network_box_with_depth():
    """In :func:`fuse_proposals` a network box padded well beyond a rendered object comes
    out closer to the object's true box, and the depth box of that object is not added
    as a second box."""
    depth, truth = render_tabletop(OBJECTS)
    cfg = DepthProposalConfig(fuse_network_refine_iou=0.5)
    found = propose_depth_boxes(depth, K, cfg)
    x, y, w, h = truth[0]
    loose = (x - 0.2 * w, y - 0.15 * h, 1.4 * w, 1.3 * h)  # IoU ~0.55 with the object
    fused = fuse_proposals(found, [], cfg, 10, network_boxes=[loose])
    assert box_iou(fused[0], truth[0]) > box_iou(loose, truth[0]) + 0.1
    assert sum(box_iou(b, truth[0]) > 0.3 for b in fused) == 1
    off = dataclasses.replace(cfg, fuse_network_refine_iou=0.0)
    assert fuse_proposals(found, [], off, 10, network_boxes=[loose])[0] == loose
    # the student's window stays the network's box; every other box is its own view
    boxes, views = fuse_proposals_with_views(found, [], cfg, 10, network_boxes=[loose])
    assert boxes == fused and views[0] == loose and views[1:] == boxes[1:]
    assert len(boxes) == len(views) > 1
    boxes, views = fuse_proposals_with_views(found, [], off, 10, network_boxes=[loose])
    assert views == boxes and boxes[0] == loose
    boxes, views = fuse_proposals_with_views(found, [], cfg, 1, network_boxes=[loose])
    assert boxes == fused[:1] and views == [loose]


def test_fusion_leaves_out_a_part_of_a_network_box_not_an_object_in_front_of_it():
    """A depth box lying inside a network box with its top at the network box's (a piece of
    that object: a handle, a cap) is not added even at IoU under ``fuse_network_iou``; a
    short object standing in front of a tall one, its box partly inside the network's box of
    the tall one, is (its top differs); wholly inside it (``fuse_network_inside``), it is
    taken for a piece too, as such boxes mostly are; ``fuse_network_part_containment: 0``
    and ``fuse_network_inside: 0`` add both."""
    depth, truth = render_tabletop([(0.0, 0.12, 0.16, 0.08, 0.22),    # tall, behind
                                    (0.0, -0.06, 0.04, 0.04, 0.04)])  # short, in front
    cfg = DepthProposalConfig(fuse_network_refine_iou=0.0)
    found = propose_depth_boxes(depth, K, cfg)
    assert _matched(truth, found.boxes) == 2
    tall, short = truth
    x, y, w, h = tall
    # the network's box of the tall object, reaching down over the short one
    x0, y0 = min(x, short[0]), min(y, short[1])
    network = (x0, y0, max(x + w, short[0] + short[2]) - x0,
               max(y + h, short[1] + short[3]) - y0)
    piece = (x + w // 3, y + h // 8, w // 4, h // 4)         # near the tall one's top
    assert box_iou(piece, network) <= cfg.fuse_network_iou
    assert box_iou(short, network) <= cfg.fuse_network_iou
    pieces = dataclasses.replace(found, boxes=[*found.boxes, piece])
    fused = fuse_proposals(pieces, [], cfg, 10, network_boxes=[network])
    assert fused[0] == network and piece not in fused
    assert _matched([short], fused[1:]) == 0                 # wholly inside: a piece
    # the network's box reaching down over the top third of the short one only
    over = (network[0], network[1], network[2], short[1] + short[3] // 3 - network[1])
    short_box = max(found.boxes, key=lambda b: box_iou(b, short))
    assert 0.2 < (over[1] + over[3] - short_box[1]) / short_box[3] < 0.5
    partly = fuse_proposals(pieces, [], cfg, 10, network_boxes=[over])
    assert partly[0] == over and piece not in partly and _matched([short], partly[1:]) == 1
    off = dataclasses.replace(cfg, fuse_network_part_containment=0.0, fuse_network_inside=0.0)
    both = fuse_proposals(pieces, [], off, 10, network_boxes=[network])
    assert piece in both and _matched([short], both[1:]) == 1
    with pytest.raises(DepthError, match="fuse_network_part_containment"):
        DepthProposalConfig(fuse_network_part_containment=1.5)
    with pytest.raises(DepthError, match="fuse_network_inside"):
        DepthProposalConfig(fuse_network_inside=-0.1)


def test_a_weak_network_box_brings_back_an_object_the_fusion_took_for_a_part():
    """An object beside a taller one, as tall as the network box's top, lying inside the
    network's loose box of its neighbour, is left out as a part of it; one of the network's
    boxes under its threshold (``weak_network_boxes``) that matches its depth box brings it
    back, once. A weak box on the network box's own object adds nothing, and
    ``fuse_network_weak_score: 0`` turns it off."""
    depth, truth = render_tabletop([(0.0, 0.10, 0.16, 0.08, 0.15),    # behind
                                    (0.0, -0.05, 0.05, 0.05, 0.14)])  # in front, as tall
    cfg = DepthProposalConfig(fuse_network_refine_iou=0.0)
    found = propose_depth_boxes(depth, K, cfg)
    assert _matched(truth, found.boxes) == 2
    big, small = truth
    x0, y0 = min(big[0], small[0]), min(big[1], small[1])
    loose = (x0, y0, max(big[0] + big[2], small[0] + small[2]) - x0,
             max(big[1] + big[3], small[1] + small[3]) - y0)
    fused = fuse_proposals(found, [], cfg, 10, network_boxes=[loose])
    assert _matched([small], fused) == 0                  # taken for a part of the loose box
    fused = fuse_proposals(found, [], cfg, 10, [loose], weak_network_boxes=[small])
    assert fused[0] == loose and _matched([small], fused) == 1
    assert sum(box_iou(b, small) >= 0.5 for b in fused) == 1
    assert fuse_proposals(found, [], cfg, 10, [loose], weak_network_boxes=[loose]) == [loose]
    off = dataclasses.replace(cfg, fuse_network_weak_score=0.0)
    assert _matched([small], fuse_proposals(found, [], off, 10, [loose],
                                            weak_network_boxes=[small])) == 0
    with pytest.raises(DepthError, match="fuse_network_weak_score"):
        DepthProposalConfig(fuse_network_weak_score=1.5)


def test_fusion_joins_an_object_cut_by_holes_in_its_depth():
    # a tall box whose middle returns no depth (a black band, as infrared sensors see black
    # plastic): depth gives two pieces; the colour box of the whole object, half of it
    # without depth, replaces them
    depth, (whole,) = render_tabletop([(0.0, 0.0, 0.16, 0.06, 0.12)])
    x, y, w, h = whole
    holey = depth.copy()
    holey[y:y + h, x + w // 4:x + 3 * w // 4] = 0.0
    cfg = DepthProposalConfig()
    found = propose_depth_boxes(holey, K, cfg)
    assert len(found.boxes) == 2 and _matched([whole], found.boxes) == 0
    assert fuse_proposals(found, [whole], cfg, max_count=10) == [whole]
    off = dataclasses.replace(cfg, fuse_holes_frac=0.0)
    assert fuse_proposals(found, [whole], off, max_count=10) == found.boxes
    # under fuse_holes_frac of the box without depth, the pieces stay (two objects that one
    # colour box covers have depth nearly all over)
    assert fuse_proposals(found, [whole], dataclasses.replace(cfg, fuse_holes_frac=0.9),
                          max_count=10) == found.boxes
    # a single depth box inside a colour box without depth is not replaced
    one = propose_depth_boxes(depth, K, cfg)
    assert len(one.boxes) == 1
    assert fuse_proposals(one, [whole], cfg, max_count=10) == one.boxes


def test_fusion_splits_a_depth_box_into_colour_boxes_of_different_heights():
    import dataclasses

    # two boxes in contact side by side; with the step, crease and top-view cuts off, depth
    # joins them
    joined = dataclasses.replace(DepthProposalConfig(), cut_jump_frac=0.0, crease_m=0.0,
                                 top_view_bin_m=0.0)
    pair = [(-0.03, 0.0, 0.06, 0.06, 0.08), (0.03, 0.0, 0.06, 0.06, 0.04)]
    depth, truth = render_tabletop(pair)
    found = propose_depth_boxes(depth, K, joined)
    assert len(found.boxes) == 1 and _matched(truth, found.boxes) <= 1
    fused = fuse_proposals(found, truth, joined, max_count=10)
    assert sorted(fused) == sorted(truth)                  # tops 8 and 4 cm: two objects
    off = dataclasses.replace(joined, fuse_split_height_m=0.0)
    assert fuse_proposals(found, truth, off, max_count=10) == found.boxes
    # the colour proposer also boxed the whole: one object, as depth says
    assert fuse_proposals(found, truth + found.boxes, joined, 10) == found.boxes
    # the same height (two parts of one object's colours): the depth box stays
    level = [(-0.03, 0.0, 0.06, 0.06, 0.06), (0.03, 0.0, 0.06, 0.06, 0.06)]
    depth, truth = render_tabletop(level)
    found = propose_depth_boxes(depth, K, joined)
    assert len(found.boxes) == 1
    assert fuse_proposals(found, truth, joined, max_count=10) == found.boxes
    # the pieces must cover the depth box
    small = [(x, y, w // 3, h // 3) for x, y, w, h in truth]
    assert fuse_proposals(found, small, joined, max_count=10)[:1] == found.boxes
    with pytest.raises(DepthError, match="fuse_split_cover"):
        DepthProposalConfig(fuse_split_cover=1.5)


def test_fusion_adds_a_colour_box_inside_a_depth_box_only_at_another_height():
    # a small low block in front of a tall box, joined by depth (its cuts off): the block's
    # colour box lies inside the depth box and stands lower, so it is another object; a
    # colour box on the tall box's upper part (a label) reaches its height: a part of it
    joined = dataclasses.replace(DepthProposalConfig(), cut_jump_frac=0.0, crease_m=0.0,
                                 top_view_bin_m=0.0)
    pair = [(0.0, 0.02, 0.08, 0.08, 0.12), (0.0, -0.035, 0.025, 0.025, 0.03)]
    depth, (tall, block) = render_tabletop(pair)
    found = propose_depth_boxes(depth, K, joined)
    assert len(found.boxes) == 1 and box_iou(found.boxes[0], block) <= joined.fuse_max_iou
    x, y, w, h = tall
    label = (x + w // 4, y + h // 8, w // 3, h // 5)
    assert box_iou(found.boxes[0], label) <= joined.fuse_max_iou
    assert fuse_proposals(found, [block], joined, max_count=10) == found.boxes + [block]
    assert fuse_proposals(found, [label], joined, max_count=10) == found.boxes
    # a colour box there with no depth under it (a black object) is never a part
    dark = depth.copy()
    bx, by, bw, bh = label
    dark[by:by + bh, bx:bx + bw] = 0.0
    holey = propose_depth_boxes(dark, K, joined)
    assert label in fuse_proposals(holey, [label], joined, max_count=10)


def test_fusion_leaves_out_a_network_box_lying_flat_on_the_table():
    """``fuse_network_flat_m``: a network box whose usable depth lies flat on the table (a
    print on a cloth: 98th percentile of its heights under 8 mm, median not below the
    plane) is left out; a fork-thin object 12 mm high beside it is kept, with sensor-like
    noise too. Kept as well: a box with too little depth to judge (holes), one whose depth
    lies below the plane (a shiny object's multipath returns), and every box with 0."""
    from vl_distill_ros.perception.depth_fusion import FLAT_MIN_SAMPLES, flat_on_support

    fork = (0.0, -0.15, 0.15, 0.02, 0.012)
    depth, truth = render_tabletop(OBJECTS + [fork])
    cfg = DepthProposalConfig()
    printed = (420, 40, 50, 30)                           # bare table in the frame
    assert not any(box_iou(printed, t) > 0 for t in truth)
    network = [truth[0], truth[3], printed]

    def fused_with(d: np.ndarray, c: DepthProposalConfig = cfg) -> list:
        return fuse_proposals(propose_depth_boxes(d, K, c), [], c, 10, network_boxes=network)

    fused = fused_with(depth)
    assert printed not in fused and _matched(truth[:1] + truth[3:], fused) == 2
    found = propose_depth_boxes(depth, K, cfg)
    assert flat_on_support(found, printed, cfg) and not flat_on_support(found, truth[3], cfg)
    assert printed in fused_with(depth, dataclasses.replace(cfg, fuse_network_flat_m=0.0))
    noisy = depth + np.random.default_rng(0).normal(0, 0.0015, depth.shape).astype(np.float32)
    fused = fused_with(noisy)
    assert printed not in fused and _matched(truth[:1] + truth[3:], fused) == 2
    holes = depth.copy()
    holes[40:70, 420:445] = 0.0                           # half of its depth missing
    assert printed in fused_with(holes)
    below = depth.copy()
    below[40:70, 420:470] += 0.03                         # 3 cm behind the table
    assert printed in fused_with(below)
    assert FLAT_MIN_SAMPLES > 0 and not flat_on_support(
        dataclasses.replace(found, height_grid=None), printed, cfg)
    with pytest.raises(DepthError, match="fuse_network_flat_m"):
        DepthProposalConfig(fuse_network_flat_m=1.5)


def test_a_depth_box_replaces_the_network_pieces_of_its_object():
    """A long object whose network box holds only its end (a tool boxed by its handle) comes
    out whole: its depth box replaces the piece (``fuse_network_whole_cover``, default 0.5).
    Two objects that depth joins where they touch, each boxed by the network, stay two; a
    piece whose top is not the depth box's (a low object against a tall one that depth
    joined) stays; a piece reaching out of the depth box stays; 0 turns it off."""
    assert DepthProposalConfig().fuse_network_whole_cover == 0.5
    depth, truth = render_tabletop([(0.0, 0.0, 0.24, 0.04, 0.04)])   # long and low
    cfg = DepthProposalConfig(fuse_network_refine_iou=0.0)
    found = propose_depth_boxes(depth, K, cfg)
    assert _matched(truth, found.boxes) == 1
    x, y, w, h = truth[0]
    handle = (x + 2, y + 2, w // 3, h - 4)                  # a third of it, inside it
    assert box_iou(handle, truth[0]) < 0.5
    whole = [b for b in fuse_proposals(found, [], cfg, 10, network_boxes=[handle])
             if box_iou(b, truth[0]) >= 0.5]
    assert len(whole) == 1 and handle not in fuse_proposals(found, [], cfg, 10, [handle])
    boxes, views = fuse_proposals_with_views(found, [], cfg, 10, network_boxes=[handle])
    assert views == boxes                                  # the student reads the whole box
    off = dataclasses.replace(cfg, fuse_network_whole_cover=0.0)
    fused = fuse_proposals(found, [], off, 10, network_boxes=[handle])
    assert fused[0] == handle and _matched(truth, fused) == 0
    # the piece reaching out of the depth box (less than 90% of it inside): kept as it is
    out = (x - w // 3, y + 2, w // 2, h - 4)
    assert fuse_proposals(found, [], cfg, 10, network_boxes=[out])[0] == out
    # two pieces make it whole, three are too many (more likely several objects)
    pieces = [(x + 2 + k * (w // 3), y + 2, w // 8, h - 4) for k in range(3)]
    d = max(found.boxes, key=lambda b: box_iou(b, truth[0]))
    assert whole_from_depth(found, pieces[:2], cfg) == [d]
    assert whole_from_depth(found, pieces, cfg) == pieces
    # pieces covering half of it or more: the network's boxes stay
    halves = [(x, y, w // 2, h), (x + w // 2, y, w - w // 2, h)]
    assert whole_from_depth(found, halves, cfg) == halves
    # a low object against a tall one, joined in one depth box: the low one's box stays,
    # a piece of the tall one (its top the joined box's) is made whole
    depth, truth = render_tabletop([(0.0, 0.06, 0.14, 0.06, 0.20),   # tall, behind
                                    (0.0, 0.0, 0.05, 0.06, 0.03)])   # low, in front
    found = propose_depth_boxes(depth, K, cfg)
    tall, low = truth
    x0, y0 = min(tall[0], low[0]), min(tall[1], low[1])
    union = (x0, y0, max(tall[0] + tall[2], low[0] + low[2]) - x0,
             max(tall[1] + tall[3], low[1] + low[3]) - y0)
    joined = dataclasses.replace(found, boxes=[union])
    assert whole_from_depth(joined, [low], cfg) == [low]
    top_piece = (tall[0] + tall[2] // 4, tall[1] + 4, tall[2] // 3, tall[3] // 4)
    assert whole_from_depth(joined, [top_piece], cfg) == [union]
    with pytest.raises(DepthError, match="fuse_network_whole_cover"):
        DepthProposalConfig(fuse_network_whole_cover=1.5)


def test_a_loose_network_box_around_one_depth_box_moves_halfway_to_it():
    """A network box reaching well beyond its object (IoU 0.4-0.5 with the object's depth
    box, which lies wholly inside it and alone) moves halfway to the depth box
    (``fuse_network_refine_inside_iou``, default 0.4); it stays with a second depth box
    reaching into it, with the depth box at another height than the network box's top,
    under the IoU bound, without the height grid, or with the setting 0."""
    assert DepthProposalConfig().fuse_network_refine_inside_iou == 0.4
    depth, truth = render_tabletop([(0.0, 0.0, 0.08, 0.08, 0.12)])
    cfg = DepthProposalConfig()
    found = propose_depth_boxes(depth, K, cfg)
    assert _matched(truth, found.boxes) == 1
    d = max(found.boxes, key=lambda b: box_iou(b, truth[0]))
    x, y, w, h = d
    loose = (x - w // 4, y - h // 4, w + 2 * (w // 4), h + 2 * (h // 4))   # IoU ~0.44
    assert 0.4 <= box_iou(loose, d) < cfg.fuse_network_refine_iou
    moved = refine_network_boxes([loose], found.boxes, cfg, found)
    assert moved == [((x + loose[0]) // 2, (y + loose[1]) // 2, moved[0][2], moved[0][3])]
    assert box_iou(moved[0], d) >= 0.6 > box_iou(loose, d)
    fused = fuse_proposals(found, [], cfg, 10, network_boxes=[loose])
    assert fused[0] == moved[0] and _matched(truth, fused) == 1
    boxes, views = fuse_proposals_with_views(found, [], cfg, 10, network_boxes=[loose])
    assert views[0] == loose                           # the student reads the network's box
    assert refine_network_boxes([loose], found.boxes, cfg) == [loose]          # no grid
    off = dataclasses.replace(cfg, fuse_network_refine_inside_iou=0.0)
    assert refine_network_boxes([loose], found.boxes, off, found) == [loose]
    aside = (x + w // 6, y - h // 5, w + w // 5, h + 2 * (h // 5))   # d partly out of it
    assert box_containment(d, aside) < 0.9 and 0.4 <= box_iou(d, aside) < 0.5
    assert refine_network_boxes([aside], found.boxes, cfg, found) == [aside]
    looser = (x - w // 2, y - h // 2, 2 * w, 2 * h)                          # IoU 0.25
    assert refine_network_boxes([looser], found.boxes, cfg, found) == [looser]
    other = (loose[0] - 20, y, 30, h // 2)                  # a second depth box reaching in
    two = dataclasses.replace(found, boxes=[*found.boxes, other])
    assert refine_network_boxes([loose], two.boxes, cfg, two) == [loose]
    # a depth box lower than the network box's top (here the front face's lower part of the
    # object the network boxed whole) leaves the network box as it is
    front = (x, y + int(0.55 * h), w, int(0.45 * h))
    assert 0.4 <= box_iou(front, d) < 0.5 and box_containment(front, d) == 1.0
    lower = dataclasses.replace(found, boxes=[front])
    assert refine_network_boxes([d], lower.boxes, cfg, lower) == [d]
    level = dataclasses.replace(cfg, fuse_split_height_m=1.0)   # heights never differ
    assert refine_network_boxes([d], lower.boxes, level, lower) != [d]
    with pytest.raises(DepthError, match="fuse_network_refine_inside_iou"):
        DepthProposalConfig(fuse_network_refine_inside_iou=1.2)
