"""Depth of a separate depth camera registered to the colour camera
(:mod:`vl_distill_ros.perception.depth_alignment`), against the scene ray-cast directly from
the colour camera."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from test_depth import render_tabletop
from vl_distill_ros.evaluation.scoring import match_boxes
from vl_distill_ros.perception.depth_alignment import (UnalignedDepth, align_depth,
                                                       transform_from_pose)
from vl_distill_ros.perception.camera_model import CameraIntrinsics, DepthError
from vl_distill_ros.perception.depth_proposals import propose_depth_boxes

COLOUR = CameraIntrinsics(270.0, 270.0, 159.5, 119.5, 320, 240)
DEPTH = CameraIntrinsics(230.0, 232.0, 162.0, 117.0, 320, 240)
OFFSET = (0.05, 0.012, 0.0)           # the depth camera 5 cm to the right of the colour one
OBJECTS = [(-0.25, -0.1, 0.08, 0.06, 0.1), (0.25, 0.15, 0.07, 0.07, 0.12),
           (0.0, 0.0, 0.1, 0.08, 0.08), (-0.2, 0.3, 0.06, 0.06, 0.09)]


def test_poses_read_as_ros_prints_them():
    r, t = transform_from_pose([0.1, 0.2, 0.3, 0, 0, 0, 1])
    np.testing.assert_allclose(r, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(t, [0.1, 0.2, 0.3])
    s = math.sqrt(0.5)                                  # 90 degrees about z, not normalised
    r, _ = transform_from_pose([0, 0, 0, 0, 0, 2 * s, 2 * s])
    np.testing.assert_allclose(r @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)
    for bad, message in (([0.0] * 6, "7 finite values"), ([0, 0, 0, 0, 0, 0, 0], "zero"),
                         ([50.0, 0, 0, 0, 0, 0, 1], "more than 10 m"),
                         ([float("nan")] + [0.0] * 6, "7 finite values")):
        with pytest.raises(DepthError, match=message):
            transform_from_pose(bad)


def test_aligned_depth_is_the_scene_as_the_colour_camera_sees_it():
    """The depth camera's image, aligned, agrees with the colour camera's own ray-cast (within
    a pixel's slope of the tilted table) where both see a surface, covers it but for the
    occlusion shadows (not so with the offset left out), and gives
    the depth proposer the four objects at their colour-image boxes; the unaligned image
    read with the colour camera's intrinsics misplaces them."""
    truth_depth, truth = render_tabletop(OBJECTS, k=COLOUR, distance=0.8)
    seen, _ = render_tabletop(OBJECTS, k=DEPTH, distance=0.8, camera_offset=OFFSET)
    r, t = transform_from_pose([*OFFSET, 0, 0, 0, 1])
    aligned = align_depth(seen, DEPTH, COLOUR, r, t)
    assert aligned.shape == (240, 320) and aligned.dtype == np.float32
    both = (aligned > 0) & (truth_depth > 0)
    assert both.sum() >= 0.9 * (truth_depth > 0).sum()
    rel = np.abs(aligned[both] - truth_depth[both]) / truth_depth[both]
    assert np.quantile(rel, 0.5) < 0.003 and np.quantile(rel, 0.9) < 0.008   # a pixel's slope
    r0, t0 = transform_from_pose([0, 0, 0, 0, 0, 0, 1])     # the offset left out
    wrong = align_depth(seen, DEPTH, COLOUR, r0, t0)
    ok = (wrong > 0) & (truth_depth > 0)
    assert np.quantile(np.abs(wrong[ok] - truth_depth[ok]) / truth_depth[ok], 0.5) > 0.01
    boxes = [tuple(b) for b in propose_depth_boxes(aligned, COLOUR).boxes]
    assert len(boxes) == 4 and len(match_boxes(truth, boxes, 0.5)) == 4, (truth, boxes)
    raw = [tuple(b) for b in propose_depth_boxes(seen, COLOUR).boxes]
    assert len(match_boxes(truth, raw, 0.7)) < 4
    with pytest.raises(DepthError, match="CameraInfo is for 320x240"):
        align_depth(seen[:100], DEPTH, COLOUR, r, t)
    assert not align_depth(np.zeros_like(seen), DEPTH, COLOUR, r, t).any()


def test_a_distorted_depth_lens_is_followed():
    """A depth camera with a lens (plumb_bob): its rays are undistorted before moving them,
    so the aligned depth still agrees with the colour camera's ray-cast."""
    import test_depth

    lens = [-0.12, 0.02, 0.0, 0.0, 0.0]
    bent = CameraIntrinsics.from_k([DEPTH.fx, 0, DEPTH.cx, 0, DEPTH.fy, DEPTH.cy, 0, 0, 1],
                                   320, 240, "plumb_bob", lens)
    truth_depth, _ = render_tabletop(OBJECTS, k=COLOUR, distance=0.8)
    original = test_depth._rays
    try:
        test_depth._rays = lambda kk: test_depth._lens_rays(kk, *lens[:2])
        seen, _ = render_tabletop(OBJECTS, k=DEPTH, distance=0.8, camera_offset=OFFSET)
    finally:
        test_depth._rays = original
    r, t = transform_from_pose([*OFFSET, 0, 0, 0, 1])
    aligned = align_depth(seen, bent, COLOUR, r, t)
    both = (aligned > 0) & (truth_depth > 0)
    assert both.sum() >= 0.85 * (truth_depth > 0).sum()
    rel = np.abs(aligned[both] - truth_depth[both]) / truth_depth[both]
    assert np.quantile(rel, 0.5) < 0.003 and np.quantile(rel, 0.9) < 0.008
    pinhole = align_depth(seen, DEPTH, COLOUR, r, t)          # the lens ignored
    ok = (pinhole > 0) & (truth_depth > 0)
    assert np.quantile(np.abs(pinhole[ok] - truth_depth[ok]) / truth_depth[ok], 0.9) > 0.015


def test_points_outside_a_barrel_lens_field_of_view_are_not_folded_onto_the_image():
    """A barrel lens's model (plumb_bob, k1 < 0) turns back beyond its field of view: a
    point 53-58 degrees off-axis projects through it onto the image's right half (the image
    edge is at ~39 degrees). A wider depth camera (a D435's depth is wider than its colour)
    sees such points; they must not land in the aligned depth (no colour pixel sees them),
    as back-projection through the ray table already leaves them out."""
    colour = CameraIntrinsics.from_k([500.0, 0, 319.5, 0, 500.0, 239.5, 0, 0, 1], 640, 480,
                                     "plumb_bob", [-0.3, 0.0, 0.0, 0.0, 0.0])
    wide = CameraIntrinsics(200.0, 200.0, 319.5, 239.5, 640, 480)      # ~116 degrees across
    depth = np.full((480, 640), 2.0, np.float32)                      # a wall 2 m away
    angle = np.degrees(np.arctan((np.arange(640) - 319.5) / 200.0))
    depth[200:280, (angle > 53) & (angle < 58)] = 0.5                 # outside colour's view
    aligned = align_depth(depth, wide, colour, np.eye(3), np.zeros(3))
    assert not np.any((aligned > 0) & (aligned < 1.0))
    # the wall itself still fills the colour image where a narrower depth camera covers it
    narrow = CameraIntrinsics(330.0, 330.0, 319.5, 239.5, 640, 480)
    full = align_depth(np.full((480, 640), 2.0, np.float32), narrow, colour, np.eye(3),
                       np.zeros(3))
    rays = np.isfinite(colour.pixel_rays()[0])
    assert np.mean(full[rays] > 0) > 0.99


def test_depth_input_waits_for_static_transforms_then_aligns_with_them():
    """A DepthInput with a pose lookup (the node's /tf_static) processes colour-only, saying
    why, until the depth frame is linked to the colour frame; then it aligns with the chained
    pose, looked up once, and reports it in its diagnostics."""
    from types import SimpleNamespace

    from test_unregistered_depth_bags import realsense_tree
    from vl_distill_ros.perception.image_codec import encode_depth_mm
    from vl_distill_ros.perception.static_transforms import StaticTransforms
    from vl_distill_ros.ros.depth_input import DepthInput

    seen, _ = render_tabletop(OBJECTS, k=DEPTH, distance=0.8, camera_offset=OFFSET)
    truth_depth, _ = render_tabletop(OBJECTS, k=COLOUR, distance=0.8)
    _, _, _, step, data = encode_depth_mm(seen)

    def header(sec, frame):
        return SimpleNamespace(stamp=SimpleNamespace(sec=sec, nanosec=0), frame_id=frame)

    def info(k):
        return SimpleNamespace(k=[k.fx, 0, k.cx, 0, k.fy, k.cy, 0, 0, 1], width=k.width,
                               height=k.height, distortion_model="plumb_bob", d=[0.0] * 5)
    tree, calls = StaticTransforms(), []

    def lookup(target, source):
        calls.append((target, source))
        return transform_from_pose(tree.lookup(target, source).as_pose())
    inp = DepthInput("/d", "/i", 0.02)
    inp.set_alignment("/depth_info", lookup=lookup)
    inp.add_info(info(COLOUR))
    inp.add_depth_info(info(DEPTH))
    for sec in (1, 2, 3):
        inp.add_depth(SimpleNamespace(header=header(sec, "camera_depth_optical_frame"),
                                      encoding="16UC1", height=240, width=320, step=step,
                                      data=data, is_bigendian=0), 0.0)
    z, _, reason = inp.pair(1_000_000_000, (240, 320, 3), "camera_color_optical_frame")
    assert z is None and "no static transform from the depth frame" in reason
    assert inp.take_period()["values"]["depth_pose"] == ""
    for parent, child, t, q in realsense_tree():
        tree.add(parent, child, t, q)
    for sec in (2, 3):
        unaligned, k, reason = inp.pair(sec * 1_000_000_000, (240, 320, 3),
                                        "camera_color_optical_frame")
        assert reason == "" and isinstance(unaligned, UnalignedDepth)  # the pipeline aligns it
        z = unaligned.aligned(k)
        assert z.shape == (240, 320)
    both = (z > 0) & (truth_depth > 0)
    assert np.quantile(np.abs(z[both] - truth_depth[both]) / truth_depth[both], 0.5) < 0.003
    assert len(calls) == 2                                   # found once, then kept
    values = inp.take_period()["values"]
    assert values["depth_pose_source"] == "tf_static"
    assert [float(v) for v in values["depth_pose"].split()] == pytest.approx(
        [*OFFSET, 0, 0, 0, 1], abs=1e-6)


@pytest.mark.parametrize("depth_frame, colour_frame, noted", [
    ("camera_depth_optical_frame", "camera_color_optical_frame", True),
    ("camera_color_optical_frame", "/camera_color_optical_frame", False),
    ("", "camera_color_optical_frame", False)])
def test_registered_depth_in_another_frame_is_noted_once(depth_frame, colour_frame, noted):
    """Depth read as registered whose frame id is not the colour image's: used (it may be a
    driver's registered depth), with a note, once, that it may be the depth camera's own."""
    from types import SimpleNamespace

    from vl_distill_ros.perception.image_codec import encode_depth_mm
    from vl_distill_ros.ros.depth_input import DepthInput

    _, _, _, step, data = encode_depth_mm(np.ones((24, 32), np.float32))
    inp = DepthInput("/d", "/i", 0.02)
    inp.add_info(SimpleNamespace(k=[25.0, 0, 15.5, 0, 25.0, 11.5, 0, 0, 1], width=32,
                                 height=24, distortion_model="plumb_bob", d=[0.0] * 5))
    for sec in (1, 2):
        inp.add_depth(SimpleNamespace(
            header=SimpleNamespace(stamp=SimpleNamespace(sec=sec, nanosec=0),
                                   frame_id=depth_frame),
            encoding="16UC1", height=24, width=32, step=step, data=data, is_bigendian=0), 0.0)
    notes = []
    for sec in (1, 2):
        z, _, reason = inp.pair(sec * 1_000_000_000, (24, 32, 3), colour_frame)
        assert z is not None and reason == ""
        notes.append(inp.frame_note())
    assert bool(notes[0]) is noted and notes[1] == ""
    if noted:
        assert "depth_camera_info_topics" in notes[0] and depth_frame in notes[0]


def test_the_pipeline_aligns_unaligned_depth_as_aligning_first_does(tmp_path):
    """:class:`UnalignedDepth` handed to the pipeline (aligned in its depth thread) gives
    the boxes and status of depth aligned before the call; a depth image not of its
    camera's size is colour-only with the reason."""
    from helpers import make_colour_bundle
    from vl_distill_ros.model.bundle import load_bundle
    from vl_distill_ros.perception.pipeline import PerceptionPipeline

    seen, _ = render_tabletop(OBJECTS, k=DEPTH, distance=0.8, camera_offset=OFFSET)
    r, t = transform_from_pose([*OFFSET, 0, 0, 0, 1])
    image = np.full((COLOUR.height, COLOUR.width, 3), 150, np.uint8)
    bundle = make_colour_bundle(tmp_path / "b.vdb", ["banana", "apple"], ["banana", "apple"])
    pipe = PerceptionPipeline(load_bundle(bundle, device="cpu"), inference_backend="torch")
    pipe.configure(proposal_source="auto")
    try:
        first = pipe.prepare(image, align_depth(seen, DEPTH, COLOUR, r, t), COLOUR)
        later = pipe.prepare(image, UnalignedDepth(seen, DEPTH, r, t), COLOUR)
        assert first.depth_status == later.depth_status == "used"
        assert len(later.boxes) == 4 and later.boxes == first.boxes
        bad = pipe.prepare(image, UnalignedDepth(seen[:100], DEPTH, r, t), COLOUR)
        assert "CameraInfo is for 320x240" in bad.depth_status
    finally:
        pipe.close()


@pytest.mark.parametrize("model, d", [
    ("plumb_bob", [-0.15, 0.02, 0.001, -0.002, 0.003]),
    ("rational_polynomial", [0.55, -2.6, 0.0006, -0.0002, 1.5, 0.43, -2.4, 1.43]),
    ("equidistant", [0.1, -0.02, 0.003, -0.001]),
    ("rational_polynomial", [0.1, -0.05, 0.001, 0.001, 0.0, 0.02, 0.0, 0.0, 0.001, 0.0,
                             -0.001, 0.0]),
])
def test_projection_through_a_lens_is_opencvs_without_projecting_point_by_point(
        model, d, monkeypatch):
    """``CameraIntrinsics.project`` gives OpenCV's pixels for every lens model, by the numpy
    forward model for up to 8 coefficients and the fisheye model: cv2.projectPoints took
    ~350 ms for the 300k points of a 640x480 depth image that align_depth projects (12 ms
    for the whole alignment with a pinhole colour camera), so unregistered depth beside a
    colour camera with a lens (a D455's colour CameraInfo has coefficients) cost the node
    that every frame."""
    import cv2

    cam = CameraIntrinsics.from_k([600.0, 0, 319.5, 0, 600.0, 239.5, 0, 0, 1], 640, 480,
                                  model, d)
    assert cam.distorted
    rng = np.random.default_rng(0)
    pts = np.stack([rng.uniform(-0.5, 0.5, 2000), rng.uniform(-0.4, 0.4, 2000),
                    np.ones(2000)], 1) * rng.uniform(0.5, 2.0, (2000, 1))
    obj = (pts / pts[:, 2:]).reshape(-1, 1, 3)
    kmat = np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]])
    ref = (cv2.fisheye.projectPoints(obj, np.zeros(3), np.zeros(3), kmat, np.array(d))
           if model == "equidistant" else
           cv2.projectPoints(obj, np.zeros(3), np.zeros(3), kmat, np.array(d)))[0].reshape(-1, 2)
    if len(d) <= 8:
        def refused(*args, **kwargs):
            raise AssertionError("projected point by point by OpenCV")
        monkeypatch.setattr(cv2, "projectPoints", refused)
        monkeypatch.setattr(cv2.fisheye, "projectPoints", refused)
    u, v = cam.project(pts)
    np.testing.assert_allclose(np.stack([u, v], 1), ref, atol=1e-6)


@pytest.mark.parametrize("depth_topic, lens_followed", [
    ("/cam/depth/image_raw", True), ("/cam/depth/image_rect", False),
    ("/cam/depth/image_rect/compressedDepth", False)])
def test_unregistered_depth_on_an_image_rect_topic_is_read_as_rectified(depth_topic,
                                                                        lens_followed):
    """REP 104 for the depth camera as for the colour one: depth on an ``image_rect`` topic
    (image_proc's rectified depth) has the camera of its CameraInfo's P, its lens already
    taken out; read through the raw lens model (k1 -0.25 here) a tilted plane seen by the
    same camera came out up to 12 cm off after alignment."""
    from types import SimpleNamespace

    from sensor_msgs.msg import CameraInfo

    from vl_distill_ros.perception.image_codec import encode_depth_mm
    from vl_distill_ros.ros.depth_input import DepthInput

    k = [380.0, 0, 319.5, 0, 380.0, 239.5, 0, 0, 1]
    p = [380.0, 0, 319.5, 0, 0, 380.0, 239.5, 0, 0, 0, 1, 0]
    xn = (np.arange(640) - 319.5) / 380.0
    depth = np.repeat((1.0 / (1.0 - 0.4 * xn))[None, :], 480, 0).astype(np.float32)
    di = DepthInput(depth_topic, "/cam/color/camera_info", 0.02)
    di.set_alignment("/cam/depth/camera_info", np.eye(3), np.zeros(3))
    di.add_info(CameraInfo(width=640, height=480, distortion_model="plumb_bob", d=[0.0] * 5,
                           k=k, p=p))
    di.add_depth_info(CameraInfo(width=640, height=480, distortion_model="plumb_bob",
                                 d=[-0.25, 0.08, 0.0, 0.0, 0.0], k=k, p=p))
    enc, h, w, step, data = encode_depth_mm(depth)
    header = SimpleNamespace(stamp=SimpleNamespace(sec=1, nanosec=0), frame_id="cam_depth")
    di.add_depth(SimpleNamespace(header=header, encoding=enc, height=h, width=w, step=step,
                                 data=data, is_bigendian=0), 0.0)
    got, colour, reason = di.pair(1_000_000_000, (480, 640, 3), "cam_color")
    assert reason == "" and got.camera.distorted is lens_followed
    if not lens_followed:
        aligned = got.aligned(colour)
        assert np.abs(aligned - depth)[aligned > 0].max() < 0.002
    # a bag's replay reads the depth camera by its topic's name too
    from vl_distill_ros.bags.bag_io import BagContents

    bag = BagContents(Path("b"), "mcap", {}, {}, ["/cam/color/image_raw"],
                      depth_topics={"/cam/color/image_raw": depth_topic})
    bag.depth_alignment = {"/cam/color/image_raw": SimpleNamespace(
        pose=(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0))}
    colour_info = CameraInfo(width=640, height=480, distortion_model="plumb_bob", d=[0.0] * 5,
                             k=k, p=p)
    depth_info = CameraInfo(width=640, height=480, distortion_model="plumb_bob",
                            d=[-0.25, 0.08, 0.0, 0.0, 0.0], k=k, p=p)
    unaligned = bag._aligned("/cam/color/image_raw", depth, colour_info, False, depth_info,
                             (480, 640, 3), defer=True)
    assert unaligned.camera.distorted is lens_followed
