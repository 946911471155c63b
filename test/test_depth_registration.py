"""The registration check between depth and colour (``registration_search_px``): a depth
image a few pixels off its colour image is found out over a camera's frames and moved back;
a registered one is left alone; each camera keeps its own check."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_depth import K, OBJECTS, _matched, render_tabletop

from vl_distill_ros.perception.camera_model import DepthError
from vl_distill_ros.perception.depth_config import DepthProposalConfig
from vl_distill_ros.perception.depth_proposals import propose_depth_boxes
from vl_distill_ros.perception.depth_registration import (DepthRegistration, best_shift,
                                                          shift_depth, shift_scores)

CFG = DepthProposalConfig()
OFF = dataclasses.replace(CFG, registration_search_px=0)


def scene(tilt: float = 50.0) -> tuple[np.ndarray, np.ndarray, list]:
    """A colour image whose edges are the depth's steps (grey from depth: the table's
    smooth gradient gives no edge), its registered depth and the objects' boxes."""
    depth, truth = render_tabletop(OBJECTS, tilt_deg=tilt)
    grey = np.clip((depth - 0.5) * 400.0, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2), depth, truth


def test_shift_depth_moves_and_fills_with_no_depth():
    d = np.arange(1, 13, dtype=np.float32).reshape(3, 4)
    right_down = shift_depth(d, 1, 2)
    assert right_down[2, 1:].tolist() == d[0, :3].tolist()
    assert not right_down[:2].any() and not right_down[:, 0].any()
    back = shift_depth(shift_depth(d, -1, 1), 1, -1)   # left and down, then back
    assert back[:2, 1:].tolist() == d[:2, 1:].tolist() and not back[2].any()
    assert not shift_depth(d, 4, 0).any()


@pytest.mark.parametrize("dx, dy", [(0, 4), (6, 0), (-4, -2)])
def test_a_camera_whose_depth_is_off_is_moved_back_after_a_few_frames(dx, dy):
    image, depth, truth = scene()
    off = shift_depth(depth, dx, dy)
    reg = DepthRegistration(CFG.registration_search_px, CFG.stride)
    shifts = [reg.update(image, off) for _ in range(reg.min_frames)]
    assert shifts[:-1] == [(0, 0)] * (reg.min_frames - 1)   # not before min_frames
    assert shifts[-1] == (-dx, -dy)
    # the boxes: as good as with registered depth, better than the misregistered ones
    found = propose_depth_boxes(off, K, CFG, image, reg)
    assert found.depth_shift == (-dx, -dy)
    assert found.boxes == propose_depth_boxes(depth, K, OFF).boxes
    assert _matched(truth, found.boxes, 0.8) > _matched(truth,
                                                        propose_depth_boxes(off, K, OFF).boxes,
                                                        0.8)


def test_registered_depth_is_left_alone():
    for tilt in (40.0, 60.0):
        image, depth, _ = scene(tilt)
        reg = DepthRegistration(CFG.registration_search_px, CFG.stride)
        for _ in range(8):
            found = propose_depth_boxes(depth, K, CFG, image, reg)
        assert reg.frames == 8 and found.depth_shift == (0, 0)
        assert found.boxes == propose_depth_boxes(depth, K, OFF).boxes


def test_no_edges_no_colour_or_switched_off_means_no_shift():
    image, depth, _ = scene()
    table = render_tabletop([])[0]
    assert shift_scores(image, table, 8) is None              # a bare table: no steps
    assert shift_scores(image, depth, 1) is None              # search under one grid step
    reg = DepthRegistration(8)
    for _ in range(10):
        assert reg.update(image, table) == (0, 0)
    assert reg.frames == 0
    off = shift_depth(depth, 0, 4)
    assert propose_depth_boxes(off, K, CFG).depth_shift == (0, 0)          # no image
    assert propose_depth_boxes(off, K, OFF, image, reg).depth_shift == (0, 0)   # 0: off
    grey = image[..., 0]
    assert propose_depth_boxes(off, K, CFG, grey, reg).depth_shift == (0, 0)   # not RGB


def test_a_shift_must_clearly_beat_none():
    scores = np.full((9, 9), 2.0)
    scores[4, 4] = 1.0
    assert best_shift(scores) == (0, 0)
    scores[6, 2] = 0.9          # better, but not by min_gain
    assert best_shift(scores) == (0, 0)
    scores[6, 2] = 0.5
    assert best_shift(scores) == (-4, 4)


def test_settings_are_validated():
    image, depth, _ = scene()
    with pytest.raises(ValueError, match="differ"):
        shift_scores(image[:100], depth, 8)
    with pytest.raises(ValueError, match="decay"):
        DepthRegistration(8, decay=1.0)
    for bad in (-1, 17):
        with pytest.raises(DepthError, match="registration_search_px"):
            DepthProposalConfig(registration_search_px=bad)


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    from helpers import make_colour_bundle

    return make_colour_bundle(tmp_path_factory.mktemp("bundle") / "colour.vdb",
                              ["banana", "apple"], ["banana", "apple"])


@pytest.fixture(scope="module")
def bundle(bundle_path):
    from vl_distill_ros.model.bundle import load_bundle

    return load_bundle(bundle_path, device="cpu")


def test_the_pipeline_keeps_one_check_per_camera(bundle):
    from vl_distill_ros.perception import pipeline as P

    pipe = P.PerceptionPipeline(bundle, inference_backend="torch", proposal_source="depth",
                                proposal_threads=1)
    try:
        image, depth, _ = scene()
        off = shift_depth(depth, 0, 4)
        for _ in range(6):
            pipe.prepare(image, off, K, camera="/left")
            pipe.prepare(image, depth, K, camera="/right")
        assert pipe.depth_shift("/left") == (0, -4)
        assert pipe.depth_shift("/right") == (0, 0)
        assert pipe.depth_shift("/never_seen") == (0, 0)
        # bounded: the oldest camera goes
        for i in range(P.MAX_REGISTERED_CAMERAS):
            pipe.prepare(image, depth, K, camera=f"/cam{i}")
        assert pipe.depth_shift("/left") == (0, 0)
        assert len(pipe.frame_boxes._registrations) == P.MAX_REGISTERED_CAMERAS
    finally:
        pipe.close()


def test_edge_cells_scored_are_bounded(monkeypatch):
    import vl_distill_ros.perception.depth_registration as R

    image, depth, _ = scene()
    off = shift_depth(depth, 0, 4)
    full = shift_scores(image, off, 8)
    monkeypatch.setattr(R, "MAX_EDGE_CELLS", 120)   # fewer than this scene has
    fewer = shift_scores(image, off, 8)
    assert fewer is not None and not np.array_equal(full, fewer)
    assert best_shift(full) == best_shift(fewer) == (0, -4)


def _last_boxes(out) -> list:
    """The boxes of the last frame of an offline replay (its labels.jsonl)."""
    import json

    lines = (out / "labels.jsonl").read_text().splitlines()
    return [o["bbox"] for o in json.loads(lines[-1])["doc"]["objects"]]


def test_offline_replay_moves_a_misregistered_bags_depth_back_and_reports_it(
        bundle_path, tmp_path):
    from test_depth import _replay

    from vl_distill_ros.bags.bag_io import BagFrame, GroundTruthObject, write_camera_bag

    image, depth, truth = scene()
    objects = [GroundTruthObject(b, "apple", "013_apple") for b in truth]
    (tmp_path / "off.yaml").write_text("registration_search_px: 0\n")
    runs = {}
    for name, shift, extra in (("registered", (0, 0), ()), ("moved", (0, 4), ()),
                               ("moved, check off", (0, 4),
                                ("-p", f"depth_proposal_config:={tmp_path / 'off.yaml'}"))):
        frames = [BagFrame(1_000_000_000 + i * 100_000_000, image, objects,
                           depth=shift_depth(depth, *shift),
                           intrinsics=(K.fx, K.fy, K.cx, K.cy)) for i in range(8)]
        bag = write_camera_bag(tmp_path / f"bag{len(runs)}", frames)
        out = tmp_path / f"out{len(runs)}"
        report = _replay(bag, bundle_path, out, "-p", "proposal_source:=depth", *extra)
        runs[name] = (report["node"]["depth"]["registration_shift_px"], _last_boxes(out))
    assert runs["registered"][0] == {"/camera/image_raw": [0, 0]}
    assert runs["moved"][0] == {"/camera/image_raw": [0, -4]}
    assert runs["moved, check off"][0] == {"/camera/image_raw": [0, 0]}
    # once the check has settled, the frames' boxes are those of the registered depth
    assert runs["moved"][1] == runs["registered"][1] != runs["moved, check off"][1]


# ---------------------------------------------------------------------------------------
# fattened edges (fattening_search_px)
# ---------------------------------------------------------------------------------------
def fattened(depth: np.ndarray, px: int) -> np.ndarray:
    """``depth`` with the nearer surface carried ``px`` pixels across every step over 2 cm
    into the farther one, as a stereo camera's matching windows do."""
    import cv2

    z = np.where(depth > 0, depth, np.float32(1e6)).astype(np.float32)
    near = cv2.erode(z, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1)))
    return np.where((depth > 0) & (near < z - 0.02), near, depth).astype(np.float32)


NO_CHECKS = dataclasses.replace(CFG, registration_search_px=0, fattening_search_px=0)


def _checked(depth, image, frames: int = 5):
    reg = DepthRegistration(CFG.registration_search_px, CFG.stride,
                            fattening_px=CFG.fattening_search_px)
    for _ in range(frames):
        found = propose_depth_boxes(depth, K, CFG, image, reg)
    return reg, found


@pytest.mark.parametrize("px", [4, 6])
def test_fattened_edges_are_found_out_and_their_rim_taken_off(px):
    image, depth, truth = scene()
    fat = fattened(depth, px)
    reg, found = _checked(fat, image)
    assert reg.fattening == px and found.fattening_px == px
    assert found.depth_shift == (0, 0)                  # a fattened rim is not a shift
    # the small cube: IoU 0.76-0.78 with the rim off, 0.52-0.59 with it (0.90 exact)
    assert _matched(truth, found.boxes, 0.75) == 3
    assert _matched(truth, propose_depth_boxes(fat, K, NO_CHECKS).boxes, 0.75) < 3
    off = dataclasses.replace(CFG, fattening_search_px=0)    # 0: the rim stays
    assert propose_depth_boxes(fat, K, off, image, reg).fattening_px == 0


def test_sharp_edges_are_not_stripped():
    for tilt in (40.0, 60.0):
        image, depth, _ = scene(tilt)
        reg, found = _checked(depth, image, frames=8)
        assert reg.fat_frames == 8 and reg.fattening == 0 and found.fattening_px == 0
        assert found.boxes == propose_depth_boxes(depth, K, NO_CHECKS).boxes


def test_fattening_helpers():
    from vl_distill_ros.perception.depth_registration import (best_fattening,
                                                              fattening_scores,
                                                              strip_fattening)

    image, depth, _ = scene()
    assert fattening_scores(image, render_tabletop([])[0], 6) is None   # no steps
    assert fattening_scores(image, depth, 1) is None                    # under one cell
    with pytest.raises(ValueError, match="differ"):
        fattening_scores(image[:100], depth, 6)
    assert best_fattening(np.array([1.0, 0.99, 1.0])) == 0               # not clearly better
    assert best_fattening(np.array([1.0, 0.9, 0.95, 1.0]), stride=2) == 2
    wall = np.full((60, 80), 1.0, np.float32)     # a box 20 cm before a wall
    wall[20:40, 30:50] = 0.8
    fat = fattened(wall, 4)
    grown = fat != wall
    assert grown.sum() > 4 * 4 * 20
    stripped = strip_fattening(fat, 4)
    np.testing.assert_array_equal(stripped[~grown], wall[~grown])   # the box and the wall
    assert not stripped[grown].any()                                # the rim: no depth
    assert (strip_fattening(fat, 0) == fat).all()
    with pytest.raises(DepthError, match="fattening_search_px"):
        DepthProposalConfig(fattening_search_px=17)
