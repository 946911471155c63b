"""``bench/lens_bag.py``: a camera bag resampled as a wide distorting lens would see it,
checked against the same scene ray-cast directly through that lens."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import test_depth
from vl_distill_ros.bags.bag_io import BagFrame, GroundTruthObject, read_camera_bag, \
    write_camera_bag
from vl_distill_ros.evaluation.scoring import match_boxes
from vl_distill_ros.perception.camera_model import CameraIntrinsics
from vl_distill_ros.perception.depth_proposals import propose_depth_boxes

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import lens_bag  # noqa: E402

K = CameraIntrinsics(200.0, 200.0, 159.5, 119.5, 320, 240)
LENS = (-0.15, 0.02)
OBJECTS = [(-0.25, -0.1, 0.08, 0.06, 0.1), (0.25, 0.15, 0.07, 0.07, 0.12),
           (0.0, 0.0, 0.1, 0.08, 0.08), (-0.2, 0.3, 0.06, 0.06, 0.09)]


@pytest.fixture()
def pinhole_bag(tmp_path) -> Path:
    depth, boxes = test_depth.render_tabletop(OBJECTS, k=K, distance=0.8)
    image = np.full((240, 320, 3), 150, np.uint8)
    for x, y, w, h in boxes:
        image[y:y + h, x:x + w] = (200, 40, 40)
    frame = BagFrame(1_000_000_000, image, [GroundTruthObject(b, "apple", "013_apple")
                                            for b in boxes],
                     depth=depth, intrinsics=(K.fx, K.fy, K.cx, K.cy))
    return write_camera_bag(tmp_path / "pinhole", [frame])


def test_the_copy_is_the_scene_seen_through_the_lens(pinhole_bag, tmp_path, monkeypatch):
    out = lens_bag.main([str(pinhole_bag), str(tmp_path / "lens"), "--k1", str(LENS[0]),
                         "--k2", str(LENS[1])])
    assert out == 0
    (frame,) = list(read_camera_bag(tmp_path / "lens").rgbd_frames())
    k = frame.intrinsics()
    assert k.distorted and frame.distortion == ("plumb_bob", (*LENS, 0.0, 0.0, 0.0))
    assert (k.fx, k.fy) == (K.fx, K.fy) and k.width < 320 and k.height < 240
    # the same scene ray-cast directly through the lens, in the copy's camera
    monkeypatch.setattr(test_depth, "_rays", lambda kk: test_depth._lens_rays(kk, *LENS))
    depth, boxes = test_depth.render_tabletop(
        OBJECTS, k=CameraIntrinsics(k.fx, k.fy, k.cx, k.cy, k.width, k.height), distance=0.8)
    truth = read_camera_bag(tmp_path / "lens").ground_truth
    (objs,) = truth.values()
    got = sorted(o.bbox for o in objs)
    assert len(got) == len(boxes) == 4
    for a, b in zip(got, sorted(boxes)):
        assert np.abs(np.subtract(a, b)).max() <= 2, (a, b)
    # nearest resampling takes a source pixel within half a pixel of the exact ray: its
    # depth lies within the range of the direct render's 3x3 neighbourhood (mm rounding)
    import cv2

    lo = cv2.erode(depth, np.ones((3, 3), np.uint8)) - 6e-4
    hi = cv2.dilate(depth, np.ones((3, 3), np.uint8)) + 6e-4
    inside = (frame.depth >= lo) & (frame.depth <= hi)
    assert inside.mean() > 0.995, inside.mean()
    found = [tuple(b) for b in propose_depth_boxes(frame.depth, k).boxes]
    assert len(found) == 4 and len(match_boxes([o.bbox for o in objs], found, 0.5)) == 4


def test_hidden_lens_and_the_output_size(pinhole_bag, tmp_path):
    assert lens_bag.main([str(pinhole_bag), str(tmp_path / "hidden"), "--hide-lens"]) == 0
    (frame,) = list(read_camera_bag(tmp_path / "hidden").rgbd_frames())
    assert frame.distortion == ("plumb_bob", (0.0,) * 5) and not frame.intrinsics().distorted
    src = (200.0, 200.0, 159.5, 119.5, 320, 240)
    assert lens_bag.lens_camera(src, [0.1, 0, 0, 0, 0])[4:] == (320, 240)   # pincushion
    barrel = lens_bag.lens_camera(src, [-0.15, 0.02, 0, 0, 0])
    assert barrel[4] < 320 and barrel[5] < 240
    assert barrel[2:4] == ((barrel[4] - 1) / 2, (barrel[5] - 1) / 2)
