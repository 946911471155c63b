"""The colour proposer's cut of a blob of touching objects at a neck of its outline
(``vl_distill_ros.perception.blob_split``, ``ProposalConfig.neck_*``)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from vl_distill_ros.evaluation.scoring import match_boxes
from vl_distill_ros.perception import blob_split
from vl_distill_ros.perception.blob_split import cut_necks, split_cores
from vl_distill_ros.perception.proposal_config import ProposalConfig
from helpers import colour_model_boxes as propose_boxes  # tests of the colour model


RED, BLUE, YELLOW, BROWN = (200, 40, 40), (40, 60, 200), (220, 200, 40), (90, 60, 30)
OFF = ProposalConfig(neck_depth_frac=0.0)


def _table(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((480, 640, 3), (150, 140, 120), np.float64) + rng.normal(0, 3, (480, 640, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def two_discs(c1, c2, overlap: int, r: int = 50) -> tuple[np.ndarray, list]:
    """Two discs of radius ``r`` that overlap by ``overlap`` pixels (objects in contact,
    seen from above) and their boxes."""
    img = _table()
    x1, y = 260, 240
    x2 = x1 + 2 * r - overlap
    cv2.circle(img, (x1, y), r, c1, -1, cv2.LINE_AA)
    cv2.circle(img, (x2, y), r, c2, -1, cv2.LINE_AA)
    return img, [(x1 - r, y - r, 2 * r, 2 * r), (x2 - r, y - r, 2 * r, 2 * r)]


def _found(img, truth, cfg=None) -> tuple[int, int]:
    boxes = propose_boxes(img, cfg or ProposalConfig())
    return len(match_boxes(truth, boxes, 0.5)), len(boxes)


@pytest.mark.parametrize("colours", [(RED, BLUE), (YELLOW, BROWN)])
@pytest.mark.parametrize("overlap", [4, 8])
def test_touching_objects_of_different_colours_are_cut_apart(colours, overlap):
    img, truth = two_discs(*colours, overlap)
    assert _found(img, truth) == (2, 2)
    assert _found(img, truth, OFF)[1] == 1  # one blob, one box, without the cut


def test_one_colour_tool_is_not_cut_at_its_neck():
    # a spoon's bowl and its handle, one colour: notches where they meet and an edge
    # between them, but the two sides do not differ in colour and the handle is long and
    # thin (not a compact piece)
    img = _table()
    cv2.circle(img, (260, 240), 50, RED, -1, cv2.LINE_AA)
    cv2.rectangle(img, (300, 226), (470, 254), RED, -1)
    cv2.line(img, (306, 222), (306, 258), (90, 20, 20), 3)
    assert len(propose_boxes(img)) == 1
    # the cut itself, on the blob's mask: the handle's aspect is what keeps it whole
    mask = np.zeros((120, 200), np.uint8)
    cv2.circle(mask, (60, 60), 25, 1, -1)
    cv2.rectangle(mask, (80, 53), (165, 67), 1, -1)
    edges = cv2.Canny(mask * 255, 50, 100) > 0
    edges[50:71, 83:86] = True                      # the seam between bowl and handle
    lab = np.full((120, 200, 3), (120, 170, 150), np.uint8)
    assert cut_necks(mask, edges, lab, ProposalConfig()) is mask
    for loose in (ProposalConfig(neck_compact_aspect=100.0), ProposalConfig(neck_colour_dist=0)):
        assert cv2.connectedComponents(cut_necks(mask, edges, lab, loose),
                                       connectivity=4)[0] - 1 == 2


def test_two_compact_objects_of_one_colour_are_cut_apart():
    # two round objects of one colour side by side (two apples, two cans from above): the
    # notches, the seam between them, and both pieces compact
    img, truth = two_discs(RED, RED, 8)
    cv2.line(img, (306, 200), (306, 280), (90, 20, 20), 3)
    assert _found(img, truth) == (2, 2)
    assert _found(img, truth, ProposalConfig(neck_compact_solidity=0.0))[1] == 1
    assert _found(img, truth, ProposalConfig(neck_compact_aspect=1.0))[1] == 1


def test_an_object_in_front_of_another_is_cut_along_its_outline():
    # a ball before a box's corner: the two meet along the ball's arc, not a straight
    # segment, and the ball is under 20% of the blob
    def scene(ball_colour):
        img = _table()
        cv2.rectangle(img, (260, 150), (380, 330), RED, -1)
        cv2.circle(img, (380, 330), 40, ball_colour, -1, cv2.LINE_AA)
        return img, [(260, 150, 121, 181), (340, 290, 81, 81)]
    img, truth = scene(YELLOW)
    assert _found(img, truth) == (2, 2)
    assert _found(img, truth, ProposalConfig(neck_path_min_part_frac=0.0))[1] == 1
    # a ball of about the box's colour: the box with a bite out of it is not compact
    img, truth = scene((200, 60, 60))
    assert _found(img, truth)[1] == 1


def _box_and(other_shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A blob mask of a box and another shape over its corner, their edges, and a Lab
    image in which the other shape has another colour."""
    mask = np.zeros((140, 160), np.uint8)
    cv2.rectangle(mask, (20, 20), (90, 110), 1, -1)
    other = np.zeros_like(mask)
    other_shape(other)
    mask |= other
    lab = np.full((140, 160, 3), (100, 160, 150), np.uint8)
    lab[other > 0] = (200, 110, 190)
    edges = (cv2.Canny(mask * 255, 50, 100) > 0) | (cv2.Canny(other * 255, 50, 100) > 0)
    return mask, edges, lab


def test_an_edge_path_cut_needs_a_compact_smaller_piece(monkeypatch):
    def pieces(mask, edges, lab, cfg=ProposalConfig()):
        return cv2.connectedComponents(cut_necks(mask, edges, lab, cfg), connectivity=4)[0] - 1
    disc = _box_and(lambda m: cv2.circle(m, (90, 110), 22, 1, -1))
    bar = _box_and(lambda m: cv2.rectangle(m, (55, 98), (155, 121), 1, -1))
    assert pieces(*disc) == 2
    assert pieces(*disc, ProposalConfig(neck_path_min_part_frac=0.0)) == 1
    assert pieces(*bar) == 1        # a long bar (a tool's shaft) is not cut off
    monkeypatch.setattr(blob_split, "PATH_SMALL_ASPECT", 100.0)
    monkeypatch.setattr(blob_split, "PATH_SMALL_SOLIDITY", 0.0)
    assert pieces(*bar) == 2


def test_a_two_colour_object_without_notches_is_not_cut():
    # a can with a red top and a white bottom: a colour edge straight across, no notch
    img = _table()
    cv2.rectangle(img, (280, 160), (360, 240), RED, -1)
    cv2.rectangle(img, (280, 240), (360, 320), (235, 235, 230), -1)
    assert len(propose_boxes(img)) == 1


def test_cut_necks_returns_the_mask_itself_when_nothing_is_cut():
    mask = np.zeros((120, 160), np.uint8)
    cv2.circle(mask, (80, 60), 30, 1, -1)
    edges = cv2.Canny(mask * 255, 50, 100) > 0
    lab = np.zeros((120, 160, 3), np.uint8)
    assert cut_necks(mask, edges, lab, ProposalConfig()) is mask
    assert cut_necks(mask, edges, lab, OFF) is mask
    # two touching discs of different Lab colours: a copy, cut, the input untouched
    mask2 = np.zeros((120, 200), np.uint8)
    cv2.circle(mask2, (60, 60), 40, 1, -1)
    cv2.circle(mask2, (134, 60), 40, 1, -1)
    lab2 = np.zeros((120, 200, 3), np.uint8)
    lab2[:, 97:] = (200, 100, 200)
    edges2 = (cv2.Canny(mask2 * 255, 50, 100) > 0) | (cv2.Canny(lab2[..., 0], 50, 100) > 0)
    before = mask2.copy()
    out = cut_necks(mask2, edges2, lab2, ProposalConfig())
    assert out is not mask2 and np.array_equal(mask2, before)
    assert cv2.connectedComponents(out, connectivity=4)[0] - 1 == 2
    assert cv2.connectedComponents(mask2, connectivity=4)[0] - 1 == 1


def test_neck_settings_are_validated():
    for bad in ({"neck_depth_frac": -0.1}, {"neck_edge_support": 1.5},
                {"neck_max_len_frac": 2.0}, {"neck_min_part_frac": -1.0},
                {"neck_colour_dist": -1.0}, {"neck_colour_dist": 1000.0},
                {"neck_compact_solidity": 1.5}, {"neck_compact_aspect": 0.5},
                {"neck_path_min_part_frac": 1.5}, {"core_split_frac": 1.5},
                {"core_min_radius_frac": -0.1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ProposalConfig(**bad)


def _joined_by_a_tool() -> tuple[np.ndarray, list]:
    """A red ball and a yellow box on a table, 110 pixels apart, with a grey tool lying
    between them that touches both (16 pixels wide): one blob of three objects, without
    the notches of a neck between the ball and the box."""
    img = _table()
    cv2.circle(img, (200, 240), 45, RED, -1, cv2.LINE_AA)
    cv2.rectangle(img, (400, 200), (479, 279), YELLOW, -1)
    cv2.rectangle(img, (235, 232), (405, 248), (185, 190, 198), -1)
    return img, [(155, 195, 90, 90), (400, 200, 80, 80)]


def test_objects_joined_by_a_tool_are_cut_between_their_cores():
    """The blob's two thick cores (ball and box) seed a watershed over the colours: both
    objects get their own box; without the core split (or with ``core_split=False``, the
    fusion's colour boxes) the three objects are one box, which matches neither."""
    img, truth = _joined_by_a_tool()
    assert _found(img, truth)[0] == 2
    assert _found(img, truth, ProposalConfig(neck_depth_frac=0.0))[0] == 2   # not the neck cut
    assert _found(img, truth, ProposalConfig(core_split_frac=0.0)) == (0, 1)
    fusion = propose_boxes(img, ProposalConfig(), core_split=False)
    assert fusion == propose_boxes(img, ProposalConfig(core_split_frac=0.0))


def test_thin_blobs_are_not_split_at_cores():
    """A blob whose half-thickness is under ``core_min_radius_frac`` of the working image's
    shorter side (cutlery, small tool parts) is never split at cores: the ball of the scene
    above is 22 working pixels in radius, so a bound of 0.1 (24 of 240 pixels) leaves the
    blob whole; a single core is never cut."""
    img, truth = _joined_by_a_tool()
    assert _found(img, truth, ProposalConfig(core_min_radius_frac=0.1)) == (0, 1)
    mask = np.zeros((240, 320), np.uint8)
    cv2.circle(mask, (160, 120), 40, 1, -1)
    lab = np.zeros((240, 320, 3), np.uint8)
    lab[:, 160:] = (200, 100, 200)
    assert split_cores(mask, lab, ProposalConfig()) is mask
    # two discs of different colours side by side on a grey table: cut, a copy, the
    # input untouched
    two = np.zeros((240, 320), np.uint8)
    cv2.circle(two, (110, 120), 40, 1, -1)
    cv2.circle(two, (190, 120), 40, 1, -1)
    lab = np.full((240, 320, 3), (120, 128, 128), np.uint8)
    lab[(two > 0) & (np.arange(320) < 150)] = (60, 170, 150)
    lab[(two > 0) & (np.arange(320) >= 150)] = (200, 100, 200)
    before = two.copy()
    cut = split_cores(two, lab, ProposalConfig())
    assert cut is not two and np.array_equal(two, before)
    _, _, stats, _ = cv2.connectedComponentsWithStats(cut, connectivity=4)
    areas = sorted(stats[1:, cv2.CC_STAT_AREA], reverse=True)
    assert min(areas[:2]) > 0.4 * int(two.sum()) and sum(areas[2:]) < 0.02 * int(two.sum())
    assert split_cores(two, lab, ProposalConfig(core_split_frac=0.0)) is two
