"""Colour proposals for objects cut by the image border: their colours along a short stretch
of the border are not taken for background, while background patches at the border (a floor
in a corner, a far wall along the top edge) still give no box."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from vl_distill_ros.perception.boxes import box_iou
from vl_distill_ros.perception.colour_background import (_BORDER_SEGMENTS, _border_segments,
                                                         border_pixels)
from vl_distill_ros.perception.proposal_config import ProposalConfig
from helpers import colour_model_boxes as propose_boxes  # tests of the colour model


H, W = 480, 640
WOOD = (168, 124, 82)


def table(seed: int, base=WOOD) -> np.ndarray:
    """Float RGB table: wood grain, a lighting gradient and sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    grain = np.sin((yy + 8 * np.sin(xx / 97.0)) / rng.uniform(5, 9))
    base_arr = np.asarray(base, np.float32)
    img = base_arr + (10.0 * grain)[..., None] * (base_arr / base_arr.max())
    img *= (0.92 + 0.16 * (0.6 * xx / W + 0.4 * yy / H))[..., None]
    return img + rng.normal(0, 4.0, img.shape).astype(np.float32)


def finish(img: np.ndarray) -> np.ndarray:
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def fill(img: np.ndarray, mask: np.ndarray, colour, seed: int = 0) -> tuple[int, int, int, int]:
    """Paint ``mask`` a slightly noisy ``colour``; its bounding box."""
    sel = mask > 0
    rng = np.random.default_rng(seed)
    img[sel] = np.asarray(colour, np.float32) + rng.normal(0, 3, (int(sel.sum()), 3))
    return tuple(int(v) for v in cv2.boundingRect(mask))  # type: ignore[return-value]


def best_iou(box, boxes) -> float:
    return max([box_iou(box, b) for b in boxes] or [0.0])


#: Objects cut by each border: (centre, axes) of an ellipse reaching past the frame.
CUT = {"left": ((-30, 240), (120, 90)), "right": ((690, 200), (120, 60)),
       "top": ((300, -30), (80, 90)), "bottom": ((420, 520), (90, 100))}


@pytest.mark.parametrize("side", sorted(CUT))
def test_object_cut_by_the_border_is_proposed(side: str) -> None:
    img = table(1)
    (cx, cy), axes = CUT[side]
    mask = np.zeros((H, W), np.uint8)
    cv2.ellipse(mask, (cx, cy), axes, 0, 0, 360, 255, -1)
    cut = fill(img, mask, (40, 70, 190))
    whole_mask = np.zeros((H, W), np.uint8)
    cv2.circle(whole_mask, (330, 300), 45, 255, -1)
    whole = fill(img, whole_mask, (60, 170, 70), seed=1)
    image = finish(img)
    boxes = propose_boxes(image)
    assert best_iou(cut, boxes) >= 0.5, (side, cut, boxes)
    assert best_iou(whole, boxes) >= 0.5, boxes
    assert len(boxes) == 2, boxes


def test_without_the_local_colour_test_cut_objects_are_lost() -> None:
    """What ``border_object_frac`` fixes: the colours of an object cut by the border were
    taken for background (only an outline on a smooth table could still find it)."""
    lost = []
    for side, ((cx, cy), axes) in sorted(CUT.items()):
        img = table(1)
        mask = np.zeros((H, W), np.uint8)
        cv2.ellipse(mask, (cx, cy), axes, 0, 0, 360, 255, -1)
        cut = fill(img, mask, (40, 70, 190))
        image = finish(img)
        assert best_iou(cut, propose_boxes(image)) >= 0.5, side
        if best_iou(cut, propose_boxes(image, ProposalConfig(border_object_frac=0.0))) < 0.5:
            lost.append(side)
    assert len(lost) >= 3, lost


def test_two_objects_cut_by_opposite_borders() -> None:
    img = table(2)
    truth = []
    for (c, axes), colour in ((CUT["left"], (200, 40, 45)), (CUT["right"], (40, 70, 190))):
        mask = np.zeros((H, W), np.uint8)
        cv2.ellipse(mask, c, axes, 0, 0, 360, 255, -1)
        truth.append(fill(img, mask, colour))
    boxes = propose_boxes(finish(img))
    assert all(best_iou(t, boxes) >= 0.5 for t in truth), (truth, boxes)
    assert len(boxes) == 2, boxes


def test_background_patches_at_the_border_give_no_box() -> None:
    img = table(3)
    # a grey floor in the top-right corner, behind a straight table edge
    floor = np.zeros((H, W), np.uint8)
    cv2.fillPoly(floor, [np.array([(470, 0), (W, 0), (W, 130)], np.int32)], 255)
    fill(img, floor, (110, 110, 120))
    # a thin strip of a far blue wall along the top edge
    img[:9, 60:300] = np.asarray((70, 90, 150), np.float32)
    obj = np.zeros((H, W), np.uint8)
    cv2.rectangle(obj, (250, 220), (360, 300), 255, -1)
    truth = fill(img, obj, (200, 40, 45))
    boxes = propose_boxes(finish(img))
    assert len(boxes) == 1 and box_iou(truth, boxes[0]) >= 0.5, boxes


def test_background_colours_that_recur_along_the_border_stay_background() -> None:
    # stripes (each colour crosses the border many times) and a wall across the top
    img = table(4)
    for x in range(0, W, 80):
        img[:, x:x + 40] = img[:, x:x + 40] * 0.55 + np.float32([60, 80, 120]) * 0.45
    img[:60] = np.asarray((150, 160, 175), np.float32)
    assert propose_boxes(finish(img)) == []


def test_border_segments_follow_the_border_clockwise() -> None:
    h, w, border = 24, 40, 3
    pos = np.zeros((h, w), np.int64)
    # the clockwise position of every pixel: top left to right, right side down, bottom
    # right to left, left side up (the strips' depth does not matter)
    pos[:, :] = -1
    for c in range(w):
        pos[:border, c] = c
        pos[h - border:, c] = w + h + (w - 1 - c)
    for r in range(border, h - border):
        pos[r, w - border:] = w + r
        pos[r, :border] = 2 * w + h + (h - 1 - r)
    want = border_pixels(pos[..., None], border)[:, 0] * _BORDER_SEGMENTS // (2 * (w + h))
    got = _border_segments(h, w, border)
    assert got.shape == want.shape and np.array_equal(got, want)
    assert got.min() == 0 and got.max() >= _BORDER_SEGMENTS - 2


def test_border_object_frac_is_checked() -> None:
    for bad in (-0.1, 1.0, 2.0):
        with pytest.raises(ValueError, match="border_object_frac"):
            ProposalConfig(border_object_frac=bad)
    assert ProposalConfig(border_object_frac=0.0).border_object_frac == 0.0
