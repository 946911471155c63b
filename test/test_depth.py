"""Depth input without ROS: stamp matching, depth decoding, the depth proposer (its fusion
with the colour boxes: test_depth_fusion.py), the noise model, RGB-D bags (write, pair by
convention, read) and the pipeline / offline replay with depth. Scenes are synthetic (an
analytic tilted table with box-shaped objects), so no YCB models are needed; rendered RGB-D
bags are tested in test_scene_bag.py."""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from vl_distill_ros.bags.bag_io import (BagError, BagFrame, BagTopics, GroundTruthObject,
                                        is_depth_topic, pair_camera_topics, read_camera_bag,
                                        write_camera_bag)
from vl_distill_ros.perception.depth_fusion import fuse_proposals
from vl_distill_ros.perception.camera_model import CameraIntrinsics, DepthError
from vl_distill_ros.perception.depth_config import DepthProposalConfig, load_depth_config
from vl_distill_ros.perception.depth_proposals import propose_depth_boxes
from vl_distill_ros.perception.image_codec import (ImageDecodeError, decode_depth,
                                                   encode_depth_mm)
from vl_distill_ros.perception.boxes import box_iou
from vl_distill_ros.perception.stamp_sync import StampBuffer
from vl_distill_ros.sim.depth_noise import DepthNoise, apply_depth_noise

REPO = Path(__file__).resolve().parents[1]
K = CameraIntrinsics(fx=540.0, fy=540.0, cx=319.5, cy=239.5, width=640, height=480)


# ---------------------------------------------------------------------------------------
# a synthetic tabletop: a table plane seen from above at an angle, box-shaped objects
# ---------------------------------------------------------------------------------------
def _rays(k: CameraIntrinsics) -> np.ndarray:
    u, v = np.meshgrid(np.arange(k.width), np.arange(k.height))
    return np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u, float)], -1)


def render_tabletop(objects: list[tuple[float, float, float, float, float]],
                    tilt_deg: float = 50.0, distance: float = 0.9,
                    k: CameraIntrinsics = K, camera_offset: tuple[float, ...] = (0, 0, 0)
                    ) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Ray-cast depth (m) of a table whose centre lies ``distance`` m along the optical
    axis, its normal tilted ``tilt_deg`` from the axis, with cuboids ``(a, b, length, width,
    height)`` (m: centre in table coordinates, a to the right, b away from the camera)
    standing on it; seen from a camera moved by ``camera_offset`` (m, same orientation).
    Returns the depth and each cuboid's visible box (x, y, w, h)."""
    depth, owner = cast_tabletop(objects, tilt_deg, distance, k, camera_offset)
    return depth_and_boxes(depth, owner, len(objects))


def cast_tabletop(objects: list[tuple[float, float, float, float, float]],
                  tilt_deg: float = 50.0, distance: float = 0.9, k: CameraIntrinsics = K,
                  camera_offset: tuple[float, ...] = (0, 0, 0)
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The ray-cast depth of :func:`render_tabletop` (inf where no surface) and its owner
    map (per pixel: the cuboid's index, or -1 for the table)."""
    t = math.radians(tilt_deg)
    n = np.array([0.0, -math.sin(t), -math.cos(t)])     # towards the camera (origin)
    e1 = np.array([1.0, 0.0, 0.0])
    e2 = np.cross(n, e1)                                  # away from the camera, on the table
    basis = np.stack([e1, e2, n])                         # rows: table axes
    origin = np.array([0.0, 0.0, distance]) - np.asarray(camera_offset, float)
    rays = _rays(k)
    dirs = rays @ basis.T                                 # ray in table coordinates per unit z
    start = -(basis @ origin)                             # camera in table coordinates
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.where(dirs[..., 2] < 0, -start[2] / dirs[..., 2], np.inf)
        owner = np.full(depth.shape, -1)
        for i, (a, b, length, width, height) in enumerate(objects):
            lo = np.array([a - length / 2, b - width / 2, 0.0])
            hi = np.array([a + length / 2, b + width / 2, height])
            t0 = (lo - start) / dirs
            t1 = (hi - start) / dirs
            near = np.nanmax(np.minimum(t0, t1), axis=-1)
            far = np.nanmin(np.maximum(t0, t1), axis=-1)
            hit = (near <= far) & (near > 0) & (near < depth)
            depth = np.where(hit, near, depth)
            owner[hit] = i
    return depth, owner


def cuboid_centre(obj: tuple[float, ...], tilt_deg: float = 50.0,
                  distance: float = 0.9) -> np.ndarray:
    """The centre of a cuboid of :func:`cast_tabletop` (``(a, b, length, width, height)``)
    in the camera's optical frame."""
    a, b, _, _, height = obj
    t = math.radians(tilt_deg)
    n = np.array([0.0, -math.sin(t), -math.cos(t)])
    e1 = np.array([1.0, 0.0, 0.0])
    e2 = np.cross(n, e1)
    return np.array([0.0, 0.0, distance]) + a * e1 + b * e2 + 0.5 * height * n


def depth_and_boxes(depth: np.ndarray, owner: np.ndarray, count: int
                    ) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A ray-cast depth image as float32 (0 where no surface) and the visible box of each
    of the ``count`` objects that ``owner`` (per pixel: an object's index, or -1) names."""
    boxes = []
    for i in range(count):
        ys, xs = np.nonzero(owner == i)
        boxes.append((int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                      int(ys.max() - ys.min() + 1)))
    return np.where(np.isfinite(depth), depth, 0.0).astype(np.float32), boxes


def tabletop(objects, tilt_deg: float = 50.0) -> np.ndarray:
    """Depth only of :func:`render_tabletop`."""
    return render_tabletop(objects, tilt_deg)[0]


#: A cereal-box-like, a can-like and a small cube-like object.
OBJECTS = [(-0.2, 0.0, 0.12, 0.06, 0.16), (0.05, 0.1, 0.07, 0.07, 0.1),
           (0.2, -0.1, 0.03, 0.03, 0.03)]


def _matched(truth, boxes, iou=0.5) -> int:
    from vl_distill_ros.evaluation.scoring import match_boxes

    return len(match_boxes(truth, boxes, iou))


# ---------------------------------------------------------------------------------------
# stamp matching
# ---------------------------------------------------------------------------------------
def test_stamp_buffer_exact_nearest_tolerance_and_bound():
    buf: StampBuffer[str] = StampBuffer(tolerance_ns=10, capacity=3)
    assert buf.match(100) is None
    for stamp in (100, 120, 140):
        buf.add(stamp, f"d{stamp}")
    assert buf.match(120) == (120, "d120")                  # exact
    assert buf.match(127) == (120, "d120")                  # nearest within 10 ns
    assert buf.match(130) == (120, "d120")                  # a tie goes to the earlier
    assert buf.match(133) == (140, "d140")
    assert buf.match(151) is None and buf.match(89) is None  # beyond the tolerance
    buf.add(160, "d160")                                     # over capacity: 100 goes
    assert len(buf) == 3 and buf.evicted == 1 and buf.match(100) is None
    assert buf.latest_stamp() == 160
    buf.add(140, "again")                                    # same stamp replaces
    assert buf.match(140) == (140, "again") and len(buf) == 3
    assert buf.latest_stamp() == 140                         # ... and was received last
    buf.add(170, "d170")                                     # 120 was received first
    assert buf.match(120) is None and buf.match(160) == (160, "d160")
    buf.add(180, "d180")                                     # then 160, before 140
    assert buf.match(160) == (170, "d170") and buf.match(140) == (140, "again")
    exact = StampBuffer(0, 2)
    exact.add(5, "x")
    assert exact.match(5) == (5, "x") and exact.match(6) is None
    with pytest.raises(ValueError, match="capacity"):
        StampBuffer(0, 0)
    with pytest.raises(ValueError, match="tolerance"):
        StampBuffer(-1, 3)


def test_stamp_buffer_bounds_the_bytes_it_holds_and_depth_input_refuses_huge_images(
        monkeypatch):
    """A camera's depth buffer kept 30 messages of any size until a colour frame paired with
    one: 35 depth images of 5000x5000 32FC1 that could never pair took the node from 1.1 to
    4.4 GB. The buffer is bounded in bytes too (the newest is always kept), and a depth
    image over the pixel or byte bound is an error on arrival, not buffered."""
    from types import SimpleNamespace

    from vl_distill_ros.ros import depth_input

    buf: StampBuffer[bytes] = StampBuffer(0, capacity=30, max_bytes=100, size_of=len)
    for stamp in range(5):
        buf.add(stamp, bytes(30))
    assert len(buf) == 3 and buf.evicted == 2 and buf.match(1) is None   # 90 of 100 bytes
    buf.add(4, bytes(10))                         # a replaced item gives its bytes back
    buf.add(5, bytes(30))
    assert len(buf) == 4
    buf.add(6, bytes(500))                        # alone over the bound: kept, the rest go
    assert len(buf) == 1 and buf.match(6) is not None
    buf.clear()
    buf.add(7, bytes(100))
    assert len(buf) == 1

    def depth(stamp: int, width: int, height: int, size: int):
        return SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=stamp,
                                                                            nanosec=0)),
                               width=width, height=height, encoding="16UC1", data=bytes(size))
    monkeypatch.setattr(depth_input, "DEPTH_BUFFER_BYTES", 1000)
    cam = depth_input.DepthInput("/d", "/i", 0.02)
    cam.add_depth(depth(1, 20, 20, 800), 0.0)
    cam.add_depth(depth(2, 20, 20, 800), 0.0)     # the first goes: 1600 > 1000 bytes
    assert len(cam.buffer) == 1 and cam.buffer.match(2 * 10**9) is not None
    cam.add_depth(depth(3, 40, 40, 3200), 0.0)    # larger than the whole bound
    cam.add_depth(depth(4, 10_000, 6_000, 0), 0.0)   # 60 M pixels declared
    assert len(cam.buffer) == 1 and cam.counts["depth_errors"] == 2
    assert cam.counts["depth_received"] == 4
    assert "a 10000x6000 image of 0 bytes is larger than" in cam.last_depth_error


# ---------------------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------------------
def test_depth_encodings_round_trip_and_bad_input():
    z = np.array([[0.0, 0.5], [1.2344, np.nan]], np.float32)
    enc, h, w, step, data = encode_depth_mm(z)
    assert (enc, h, w, step, len(data)) == ("16UC1", 2, 2, 4, 8)
    back = decode_depth(enc, h, w, step, data)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, [[0.0, 0.5], [1.234, 0.0]], atol=1e-6)  # mm, NaN -> 0
    f32 = np.array([[1.5, -1.0, np.inf]], "<f4")
    np.testing.assert_allclose(decode_depth("32FC1", 1, 3, 12, f32.tobytes()), [[1.5, 0, 0]])
    big = np.array([[1000, 2]], ">u2")
    np.testing.assert_allclose(decode_depth("16UC1", 1, 2, 4, big.tobytes(), 1), [[1.0, 0.002]])
    padded = np.zeros((2, 6), np.uint8)  # step 6 > 2 * 2 bytes
    padded[:, :4] = np.frombuffer(np.array([[10, 20], [30, 40]], "<u2").tobytes(),
                                  np.uint8).reshape(2, 4)
    np.testing.assert_allclose(decode_depth("16UC1", 2, 2, 6, padded), [[.01, .02], [.03, .04]])
    with pytest.raises(ImageDecodeError, match="unsupported depth encoding 'rgb8'"):
        decode_depth("rgb8", 1, 1, 3, b"abc")
    with pytest.raises(ImageDecodeError, match="expected step\\*height"):
        decode_depth("16UC1", 2, 2, 4, b"\0" * 6)


# ---------------------------------------------------------------------------------------
# depth proposer
# ---------------------------------------------------------------------------------------
def test_depth_proposals_find_objects_on_a_tilted_table():
    depth, truth = render_tabletop(OBJECTS)
    found = propose_depth_boxes(depth, K)
    assert found.plane is not None and found.note == ""
    assert _matched(truth, found.boxes, iou=0.8) == 3 and len(found.boxes) == 3
    for box, (*_, height) in zip(truth, OBJECTS):  # tops: the object's height
        best = max(range(3), key=lambda i: box_iou(box, found.boxes[i]))
        assert found.tops[best] == pytest.approx(height, abs=0.005)
    assert propose_depth_boxes(tabletop([]), K).boxes == []   # an empty table


def test_depth_proposals_survive_sensor_noise_holes_and_flying_pixels():
    hits = boxes = 0
    for seed in range(4):
        depth, truth = render_tabletop(OBJECTS, tilt_deg=40 + 5 * seed)
        noisy = apply_depth_noise(depth, np.random.default_rng(seed), DepthNoise(hole_frac=0.08))
        assert (noisy == 0).mean() > 0.05  # holes and shadows
        enc = encode_depth_mm(noisy)        # quantised to millimetres, as 16UC1 carries it
        found = propose_depth_boxes(decode_depth(*enc), K)
        hits += _matched(truth, found.boxes)
        boxes += len(found.boxes)
    assert hits >= 11 and boxes <= 13  # 12 objects in all


def test_depth_proposals_fall_back_without_usable_depth():
    found = propose_depth_boxes(np.zeros((480, 640), np.float32), K)
    assert found.boxes == [] and found.plane is None and "too little valid depth" in found.note
    wall = np.full((480, 640), 9.0, np.float32)   # beyond max_depth_m
    assert "too little valid depth" in propose_depth_boxes(wall, K).note
    # a table read in the wrong units (0.1 mm read as mm: ten times as far) says so; one
    # in range whose depth is mostly missing does not blame the units
    table = tabletop([])
    note = propose_depth_boxes(table * 10.0, K).note
    assert "lies beyond max_depth_m (2.5 m)" in note and "depth_scale" in note
    note = propose_depth_boxes(np.full((480, 640), 0.08, np.float32), K).note
    assert "100% of the measured depth lies nearer than min_depth_m (0.15 m)" in note
    # (every 32nd column measured: even filled from their cells, 1 sample in 16 has depth)
    holes = np.where(np.arange(640) % 32 == 0, table, 0.0).astype(np.float32)
    note = propose_depth_boxes(holes, K).note
    assert "too little valid depth" in note and "depth_scale" not in note
    # float32 depths near its largest value: the median is taken in float64 (float32's mean
    # of the two middle values overflowed to inf, with a RuntimeWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        note = propose_depth_boxes(np.full((480, 640), 3e38, np.float32), K).note
    assert "beyond max_depth_m" in note and " inf m" not in note
    with pytest.raises(DepthError, match="registered to the colour image"):
        propose_depth_boxes(np.ones((240, 320), np.float32), K)
    with pytest.raises(DepthError, match="focal lengths must be > 0"):
        CameraIntrinsics.from_k([0.0] * 9, 640, 480)
    with pytest.raises(DepthError, match="width/height 0"):
        CameraIntrinsics(500, 500, 320, 240, 0, 480)


def _hostile(kind: str, depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``depth`` spoilt as broken drivers and sensors spoil it."""
    speck = rng.random(depth.shape)
    return {"inf": np.where(speck < 0.3, np.inf, depth),
            "negative": np.where(speck < 0.2, -1.0, depth),
            "salt": np.where(speck < 0.1, rng.uniform(0, 10, depth.shape), depth),
            "nan_half": np.where(np.arange(depth.shape[1])[None] < 320, np.nan, depth),
            "float_max": np.full_like(depth, np.finfo(np.float32).max),
            "subnormal": np.full_like(depth, 1e-40)}[kind].astype(np.float32)


@pytest.mark.parametrize("kind", ["inf", "negative", "salt", "nan_half", "float_max",
                                  "subnormal"])
def test_hostile_depth_gives_boxes_or_a_note_never_an_error(kind):
    # speckled inf, negative or random values once broke the support region (a plane in
    # many small pieces, none large enough: nothing to take the hull of)
    depth, truth = render_tabletop(OBJECTS)
    found = propose_depth_boxes(_hostile(kind, depth, np.random.default_rng(3)), K)
    assert found.plane is not None or found.note
    assert all(w > 0 and h > 0 for _, _, w, h in found.boxes)


@pytest.mark.parametrize("size", [(1, 1), (1, 640), (480, 1), (5, 7), (12, 640)])
def test_a_depth_image_too_small_for_the_grid_gives_a_note(size):
    h, w = size
    k = CameraIntrinsics(max(w, 2) * 0.9, max(w, 2) * 0.9, w / 2, h / 2, w, h)
    found = propose_depth_boxes(np.full(size, 0.8, np.float32), k)
    assert found.boxes == [] and found.plane is None and "too small" in found.note


def _measured_only(depth: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """``depth`` with only every second column, every third row and column, or half its
    pixels at random measured (sparse depth of real cameras)."""
    keep = np.zeros(depth.shape, bool)
    if kind == "columns2":
        keep[:, ::2] = True
    elif kind == "grid3":
        keep[::3, ::3] = True
    else:
        keep = rng.random(depth.shape) >= 0.5
    return np.where(keep, depth, np.float32(0.0))


@pytest.mark.parametrize("kind", ["columns2", "grid3", "dropout"])
def test_sparse_depth_is_filled_from_each_samples_cell(kind):
    # measured only on every second column the grid's own pixels (odd columns at step 2)
    # held nothing: too little valid depth; at random, half the samples were lost and the
    # support surface broke into pieces, which dropped objects standing on it
    depth, truth = render_tabletop(OBJECTS)
    sparse = _measured_only(depth, kind, np.random.default_rng(5))
    found = propose_depth_boxes(sparse, K)
    assert found.plane is not None and found.note == "" and found.support is not None
    assert _matched(truth, found.boxes) == 3 and len(found.boxes) == 3
    never = dataclasses.replace(DepthProposalConfig(), sparse_fill_frac=1.0)
    before = propose_depth_boxes(sparse, K, never)
    assert found.valid_frac > 0.4 and before.valid_frac < 0.6 * found.valid_frac
    if kind == "columns2":
        assert before.boxes == [] and "too little valid depth" in before.note


def test_dense_depth_is_not_filled():
    # holes in dense depth leave few samples that their cells could fill: left as they are
    from vl_distill_ros.perception.depth_cloud import depth_cloud

    depth, _ = render_tabletop(OBJECTS)
    noisy = apply_depth_noise(depth, np.random.default_rng(1))
    assert not depth_cloud(noisy, K, DepthProposalConfig()).sparse
    never = dataclasses.replace(DepthProposalConfig(), sparse_fill_frac=1.0)
    assert propose_depth_boxes(noisy, K).boxes == propose_depth_boxes(noisy, K, never).boxes
    always = dataclasses.replace(DepthProposalConfig(), sparse_fill_frac=0.0)
    assert depth_cloud(noisy, K, always).sparse


@pytest.mark.parametrize("tilt_deg", [60.0, 75.0, 78.0])
def test_objects_on_a_table_seen_at_a_grazing_angle_stand_on_its_surface(tilt_deg):
    # a camera 12-15 degrees over the table: the far table rises in depth from row to row
    # by more than edge_jump_frac, its samples left the cloud, the support surface ended
    # in front of the objects and they were dropped as standing beyond it (1 of 3 found at
    # 75 degrees, none at 78); its samples on the plane now count for the surface
    far = [(-0.15, 0.35, 0.08, 0.08, 0.12), (0.1, 0.45, 0.07, 0.07, 0.1),
           (0.0, 0.1, 0.06, 0.06, 0.08)]
    depth, truth = render_tabletop(far, tilt_deg=tilt_deg, distance=1.2)
    found = propose_depth_boxes(depth, K)
    assert found.support is not None
    assert _matched(truth, found.boxes) == 3 and len(found.boxes) == 3


def test_every_depth_setting_is_in_the_yaml_and_the_readme_table():
    """Each ``DepthProposalConfig`` field is set in ``config/depth_proposals.yaml`` (the file
    the node's ``depth_proposal_config`` copies) and has a row in the README's table."""
    import re

    yaml_text = (REPO / "config" / "depth_proposals.yaml").read_text()
    rows = [line for line in (REPO / "README.md").read_text().splitlines()
            if line.startswith("| `")]
    names = [f.name for f in dataclasses.fields(DepthProposalConfig)]
    assert len(names) > 60
    assert [n for n in names if not re.search(rf"^{n}:", yaml_text, re.M)] == []
    assert [n for n in names if not any(f"`{n}`" in r.split(" | ")[0] for r in rows)] == []


def test_depth_config_yaml_holds_the_defaults_and_bad_files_are_rejected(tmp_path):
    assert load_depth_config(REPO / "config" / "depth_proposals.yaml") == DepthProposalConfig()
    bad = tmp_path / "bad.yaml"
    bad.write_text("stride: 2\nmin_heigth_m: 0.01\n")
    with pytest.raises(DepthError, match="unknown keys.*min_heigth_m"):
        load_depth_config(bad)
    bad.write_text("stride: 0\n")
    with pytest.raises(DepthError, match="stride"):
        load_depth_config(bad)
    bad.write_text("stride: two\n")
    with pytest.raises(DepthError, match="expected an integer"):
        load_depth_config(bad)


# ---------------------------------------------------------------------------------------
# RGB-D bags
# ---------------------------------------------------------------------------------------
def test_depth_topic_convention():
    assert is_depth_topic("/camera/depth/image_raw")
    assert is_depth_topic("/camera/aligned_depth_to_color/image_raw")
    assert not is_depth_topic("/camera/color/image_raw")
    img, info = "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo"
    topics = {"/camera/color/image_raw": img, "/camera/aligned_depth_to_color/image_raw": img,
              "/camera/color/camera_info": info, "/camera/depth/camera_info": info,
              "/hand/image_raw": img, "/hand/depth/image_raw": img, "/hand/camera_info": info,
              "/ground_truth": "std_msgs/msg/String"}
    colour, depth, cinfo = pair_camera_topics(topics)
    assert colour == ["/camera/color/image_raw", "/hand/image_raw"]
    assert depth == {"/camera/color/image_raw": "/camera/aligned_depth_to_color/image_raw",
                     "/hand/image_raw": "/hand/depth/image_raw"}
    assert cinfo == {"/camera/color/image_raw": "/camera/color/camera_info",
                     "/hand/image_raw": "/hand/camera_info"}
    odd = {"/rgb": img, "/z16": img, "/k": info}
    colour, depth, cinfo = pair_camera_topics(odd, {"/rgb": "/z16"}, {"/rgb": "/k"})
    assert colour == ["/rgb"] and depth == {"/rgb": "/z16"} and cinfo == {"/rgb": "/k"}
    with pytest.raises(BagError, match="/missing is not a sensor_msgs/msg/Image"):
        pair_camera_topics(odd, {"/rgb": "/missing"})


@pytest.mark.parametrize("colour, raw_depth, registered, info", [
    ("/camera/camera/color/image_raw", "/camera/camera/depth/image_rect_raw",
     "/camera/camera/aligned_depth_to_color/image_raw", "/camera/camera/color/camera_info"),
    ("/rgb/image_raw", "/depth/image_raw", "/depth_to_rgb/image_raw", "/rgb/camera_info"),
    ("/camera/rgb/image_rect_color", "/camera/depth/image_raw",
     "/camera/depth_registered/image_raw", "/camera/rgb/camera_info")])
def test_a_drivers_registered_depth_is_paired_before_its_raw_depth(colour, raw_depth,
                                                                   registered, info):
    """RealSense, Azure Kinect and OpenNI bags often hold both depth streams; the raw one
    has the depth camera's size, so the registered one is paired, whatever the order."""
    img = "sensor_msgs/msg/Image"
    for order in ((raw_depth, registered), (registered, raw_depth)):
        topics = {colour: img, **{t: img for t in order}, info: "sensor_msgs/msg/CameraInfo",
                  raw_depth.rsplit("/", 1)[0] + "/camera_info": "sensor_msgs/msg/CameraInfo"}
        got, depth, cinfo = pair_camera_topics(topics)
        assert got == [colour] and depth == {colour: registered} and cinfo == {colour: info}


def _rgbd_bag(path: Path, n: int = 4, drop_depth: tuple[int, ...] = (),
              noisy: bool = False, camouflage: bool = False,
              k: CameraIntrinsics = K, image_format: str = "raw") -> Path:
    """A bag of ``n`` synthetic RGB-D frames (red objects on a grey table, or grey ones
    with ``camouflage``: invisible in colour), ground truth from the ray caster; frames
    listed in ``drop_depth`` carry no depth; ``image_format`` as
    :func:`~vl_distill_ros.bags.bag_io.write_camera_bag`'s."""
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        objs = [(-0.15 + 0.02 * i, 0.0, 0.08, 0.06, 0.08),
                (0.15, 0.05 - 0.01 * i, 0.05, 0.07, 0.12)]
        depth, boxes = render_tabletop(objs, k=k)
        if noisy:
            depth = apply_depth_noise(depth, rng)
        image = np.full((k.height, k.width, 3), 150, np.uint8)
        for x, y, w, h in boxes:
            image[y:y + h, x:x + w] = (150, 150, 150) if camouflage else (200, 40, 40)
        truth = [GroundTruthObject(b, "apple", "013_apple") for b in boxes]
        has = i not in drop_depth
        frames.append(BagFrame(1_000_000_000 + i * 100_000_000, image, truth,
                               depth=depth if has else None,
                               intrinsics=(k.fx, k.fy, k.cx, k.cy) if has else None))
    return write_camera_bag(path, frames, image_format=image_format)


def test_stamp_buffer_pairs_again_when_the_stamps_go_back():
    """A stream whose time goes back (``ros2 bag play --loop`` starting over, a simulator
    restarted): the full buffer lets go of what it received first, so the new messages
    are kept and matched at once; dropping the smallest stamp would drop each new one."""
    buf: StampBuffer[int] = StampBuffer(tolerance_ns=5, capacity=4)
    for stamp in range(1000, 1100, 10):
        buf.add(stamp, stamp)
    assert buf.latest_stamp() == 1090 and buf.evicted == 6
    buf.add(100, 100)                                       # back to the start
    assert buf.match(100) == (100, 100) and buf.match(1090) == (1090, 1090)
    assert buf.latest_stamp() == 100 and len(buf) == 4
    for stamp in range(110, 150, 10):
        buf.add(stamp, stamp)
        assert buf.match(stamp + 3) == (stamp, stamp)
    assert buf.match(1090) is None and len(buf) == 4          # the old pass is gone
    buf.clear()
    assert len(buf) == 0 and buf.latest_stamp() is None


def test_the_first_frame_after_the_stamps_go_back_waits_for_its_depth():
    """``ros2 bag play --loop`` starting over, depth arriving just after its colour frame:
    the depth received last is from the end of the pass before, newer than the frame, and
    the first frame of every pass went colour-only without waiting for its own depth."""
    from types import SimpleNamespace

    from vl_distill_ros.ros.depth_input import DepthInput

    def depth(stamp: int) -> SimpleNamespace:
        sec, nanosec = divmod(stamp, 10**9)
        return SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(
            sec=sec, nanosec=nanosec)), height=2, width=2, data=bytes(8))

    inp = DepthInput("/d", "/i", 0.02)
    start = 100 * 10**9
    for i in range(60):                                     # a 2 s pass at 30 fps
        inp.add_depth(depth(start + i * 33_000_000), now=10.0 + i * 0.033)
    now = 10.0 + 60 * 0.033
    inp.pair(start + 59 * 33_000_000, (2, 2))               # the pass's last colour frame
    assert not inp.may_still_arrive(start + 59 * 33_000_000, now)     # it is here
    assert not inp.may_still_arrive(start + 59 * 33_000_000 - 15_000_000, now)  # near
    assert inp.may_still_arrive(start + 60 * 33_000_000, now)         # the next: wait
    assert inp.may_still_arrive(start, now)                 # the pass starts over: wait
    assert not inp.may_still_arrive(start + 59 * 33_000_000 - 100_000_000, now)  # a late one
    assert not inp.may_still_arrive(start, now + 5.0)       # the stream went silent


@pytest.mark.parametrize("colour_stamp", [0, 97 * 10**9], ids=["stamps-0", "clock-3s-behind"])
def test_colour_stamps_that_never_meet_the_depth_s_are_not_waited_for(colour_stamp):
    """A colour driver that leaves its stamps 0, or stamps on a clock over 1 s behind the
    depth camera's: no depth image can pair with its frames, and each went colour-only at
    once; the wait for a looped bag's first frame made every one of them wait the whole
    depth_sync_tolerance (0.02 s by default, up to 1 s) as depth kept arriving."""
    from types import SimpleNamespace

    from vl_distill_ros.ros.depth_input import DepthInput

    inp = DepthInput("/d", "/i", 0.02)
    for i in range(10):
        sec, nanosec = divmod(100 * 10**9 + i * 33_000_000, 10**9)
        inp.add_depth(SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(
            sec=sec, nanosec=nanosec)), height=2, width=2, data=bytes(8)), now=10.0)
    for _ in range(3):                                      # frame after frame
        assert not inp.may_still_arrive(colour_stamp, 10.1)
        inp.pair(colour_stamp, (2, 2))


@pytest.mark.parametrize("depth_start", [0, 3 * 10**9], ids=["depth-0", "depth-97s-behind"])
def test_depth_stamps_that_never_meet_the_colour_s_are_not_waited_for(depth_start):
    """The mirror case: a depth driver that leaves its stamps 0, or a depth clock over 1 s
    behind the colour camera's, while depth keeps arriving: no depth image can pair, and
    each colour frame waited the whole depth_sync_tolerance for one."""
    from types import SimpleNamespace

    from vl_distill_ros.ros.depth_input import DepthInput

    inp = DepthInput("/d", "/i", 0.02)
    for i in range(10):
        sec, nanosec = divmod(depth_start + (i * 33_000_000 if depth_start else 0), 10**9)
        inp.add_depth(SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(
            sec=sec, nanosec=nanosec)), height=2, width=2, data=bytes(8)), now=10.0)
    for k in range(3):                                      # frame after frame
        colour = 100 * 10**9 + k * 33_000_000
        assert not inp.may_still_arrive(colour, 10.1)
        inp.pair(colour, (2, 2))
    # depth a frame behind the colour (ordinary latency) is still waited for
    assert inp.may_still_arrive(3 * 10**9 + 10 * 33_000_000 if depth_start else 50_000_000, 10.1)


def test_rgbd_bag_round_trip_pairs_depth_and_camera_info(tmp_path):
    bag = read_camera_bag(_rgbd_bag(tmp_path / "rgbd", n=4, drop_depth=(2,)))
    topics = BagTopics()
    assert bag.image_topics == [topics.camera]             # depth is never a camera
    assert bag.depth_topics == {topics.camera: topics.depth}
    assert bag.camera_info_topics == {topics.camera: topics.camera_info}
    assert bag.topics[topics.camera_info] == "sensor_msgs/msg/CameraInfo"
    frames = list(bag.rgbd_frames())
    assert [f.stamp_ns for f in frames] == [1_000_000_000 + i * 100_000_000 for i in range(4)]
    assert [f.depth is None for f in frames] == [False, False, True, False]
    assert "no depth image within the tolerance" in frames[2].depth_note
    assert frames[0].camera_info == pytest.approx((K.fx, K.fy, K.cx, K.cy, 640, 480))
    exact = tabletop([(-0.15, 0.0, 0.08, 0.06, 0.08), (0.15, 0.05, 0.05, 0.07, 0.12)])
    np.testing.assert_allclose(frames[0].depth, exact, atol=5.1e-4)  # millimetres
    assert len(list(bag.images())) == 4


def _write_rgbd_messages(path: Path, frames, colour: str = "/cam/image_raw",
                         log_times: list[int] | None = None) -> Path:
    """A bag of one camera's ``colour`` topic, ``/cam/depth/image_raw`` and
    ``/cam/camera_info``: per item of ``frames``, ``(stamp, bag time of the depth and
    CameraInfo, size, intrinsics, change(info))``, with ``change`` editing the CameraInfo.
    ``log_times``: each item's bag time for all three messages instead (the depth and
    CameraInfo then carry the colour's stamp)."""
    from rosbags.rosbag2 import Writer

    from vl_distill_ros.bags import bag_io, bag_writer

    store = bag_io.typestore()
    with Writer(path, version=Writer.VERSION_LATEST) as writer:
        col = writer.add_connection(colour, bag_io.IMAGE_TYPE, typestore=store)
        dep = writer.add_connection("/cam/depth/image_raw", bag_io.IMAGE_TYPE, typestore=store)
        inf = writer.add_connection("/cam/camera_info", bag_io.CAMERA_INFO_TYPE, typestore=store)
        for i, (t, t_depth, n, k, change) in enumerate(frames):
            log = None if log_times is None else log_times[i]
            info = bag_writer._camera_info_msg(store, k, n, n, t, "f")
            change(info)
            writer.write(inf, log or t_depth, store.serialize_cdr(info, bag_io.CAMERA_INFO_TYPE))
            _, dmsg = bag_writer._depth_msg(store, np.ones((n, n), np.float32), t_depth, "f")
            writer.write(dep, log or t_depth, store.serialize_cdr(dmsg, bag_io.IMAGE_TYPE))
            _, img = bag_writer._image_msg(store, np.zeros((n, n, 3), np.uint8), t, "f")
            writer.write(col, log or t, store.serialize_cdr(img, bag_io.IMAGE_TYPE))
    return path


def _write_info_stamped(path: Path, n_frames: int, info_at: dict[int, int]) -> Path:
    """A bag of ``/cam/image_raw`` with ``/cam/depth/image_raw`` of the same stamps, and a
    CameraInfo before frame ``i`` stamped ``info_at[i]`` (frames not in it get none)."""
    from rosbags.rosbag2 import Writer

    from vl_distill_ros.bags import bag_io, bag_writer

    store = bag_io.typestore()
    with Writer(path, version=Writer.VERSION_LATEST) as writer:
        col = writer.add_connection("/cam/image_raw", bag_io.IMAGE_TYPE, typestore=store)
        dep = writer.add_connection("/cam/depth/image_raw", bag_io.IMAGE_TYPE, typestore=store)
        inf = writer.add_connection("/cam/camera_info", bag_io.CAMERA_INFO_TYPE, typestore=store)
        for i in range(n_frames):
            t = 1_000_000_000 + i * 100_000_000
            if i in info_at:
                info = bag_writer._camera_info_msg(store, (2, 2, 1.5, 1.5), 4, 4, info_at[i], "f")
                writer.write(inf, t, store.serialize_cdr(info, bag_io.CAMERA_INFO_TYPE))
            _, dmsg = bag_writer._depth_msg(store, np.ones((4, 4), np.float32), t, "f")
            writer.write(dep, t, store.serialize_cdr(dmsg, bag_io.IMAGE_TYPE))
            _, img = bag_writer._image_msg(store, np.zeros((4, 4, 3), np.uint8), t, "f")
            writer.write(col, t, store.serialize_cdr(img, bag_io.IMAGE_TYPE))
    return path


def test_rgbd_frames_take_the_latest_camera_info_as_the_node_does(tmp_path):
    """A CameraInfo recorded once, stamped 0, or on every other frame serves every frame
    after it, as the node takes the latest (offline, those frames went colour-only with
    "no depth image within the tolerance", live they had depth); frames before the first
    say that no CameraInfo came yet."""
    for name, info_at in (("once", {0: 1_000_000_000}), ("zero", {i: 0 for i in range(4)}),
                          ("every_other", {0: 1_000_000_000, 2: 1_200_000_000})):
        bag = read_camera_bag(_write_info_stamped(tmp_path / name, 4, info_at))
        frames = list(bag.rgbd_frames(tolerance_ns=20_000_000))
        assert [f.depth is not None for f in frames] == [True] * 4, (
            name, [f.depth_note for f in frames])
        assert all(f.camera_info[:4] == pytest.approx((2, 2, 1.5, 1.5)) for f in frames)
    bag = read_camera_bag(_write_info_stamped(tmp_path / "late", 4, {2: 1_200_000_000}))
    frames = list(bag.rgbd_frames(tolerance_ns=20_000_000))
    # frame 1 waits for it until a message past the tolerance comes: the CameraInfo itself
    assert [f.depth is not None for f in frames] == [False, True, True, True]
    assert frames[0].depth_note == "no CameraInfo received on /cam/camera_info yet"


def test_rgbd_frames_take_their_own_camera_info_recorded_just_after_them(tmp_path):
    """A CameraInfo recorded after its colour frame (at the same bag time or within the
    tolerance: the order of messages of one bag time is the recorder's) is that frame's, not
    the previous frame's: with intrinsics that change (a new scene of make-bag, BOP scenes)
    the previous one placed objects with the other camera's K (offline 7 of 32 frames of a
    make-bag bag changed with the order alone, live kept them)."""
    from rosbags.rosbag2 import Writer

    from vl_distill_ros.bags import bag_io, bag_writer

    store = bag_io.typestore()
    ks = [(2, 2, 1.5, 1.5), (3, 3, 1.5, 1.5), (4, 4, 1.5, 1.5)]
    for name, info_after_ns in (("same_time", 0), ("ten_ms_later", 10_000_000)):
        path = tmp_path / name
        with Writer(path, version=Writer.VERSION_LATEST) as writer:
            col = writer.add_connection("/cam/image_raw", bag_io.IMAGE_TYPE, typestore=store)
            dep = writer.add_connection("/cam/depth/image_raw", bag_io.IMAGE_TYPE,
                                        typestore=store)
            inf = writer.add_connection("/cam/camera_info", bag_io.CAMERA_INFO_TYPE,
                                        typestore=store)
            for i, k in enumerate(ks):
                t = 1_000_000_000 + i * 100_000_000
                _, img = bag_writer._image_msg(store, np.zeros((4, 4, 3), np.uint8), t, "f")
                writer.write(col, t, store.serialize_cdr(img, bag_io.IMAGE_TYPE))
                _, dmsg = bag_writer._depth_msg(store, np.ones((4, 4), np.float32), t, "f")
                writer.write(dep, t, store.serialize_cdr(dmsg, bag_io.IMAGE_TYPE))
                info = bag_writer._camera_info_msg(store, k, 4, 4, t, "f")
                writer.write(inf, t + info_after_ns,
                             store.serialize_cdr(info, bag_io.CAMERA_INFO_TYPE))
        frames = list(read_camera_bag(path).rgbd_frames(tolerance_ns=20_000_000))
        assert [f.depth is not None for f in frames] == [True] * 3, name
        assert [tuple(f.camera_info[:4]) for f in frames] == [pytest.approx(k) for k in ks], name


def test_rgbd_frames_match_nearest_stamp_within_tolerance(tmp_path):
    """Depth 5 ms after its colour frame pairs with a 10 ms tolerance, not with 1 ms."""
    frames = [(2_000_000_000 + i * 100_000_000, 2_005_000_000 + i * 100_000_000, 4,
               (2, 2, 1.5, 1.5), lambda info: None) for i in range(3)]
    bag = read_camera_bag(_write_rgbd_messages(tmp_path / "skew", frames))
    assert bag.image_topics == ["/cam/image_raw"]
    ok = list(bag.rgbd_frames(tolerance_ns=10_000_000))
    assert len(ok) == 3 and all(f.depth is not None for f in ok)
    tight = list(bag.rgbd_frames(tolerance_ns=1_000_000))
    assert len(tight) == 3 and all(f.depth is None for f in tight)


def test_rgbd_frames_pair_depth_after_the_stamps_go_back(tmp_path):
    """A recording whose stamps start over part way (a simulator restarted while
    recording, recordings put together): every colour frame still gets its depth, also
    when more frames came before the jump than the matcher buffers."""
    stamps = [5_000_000_000 + i * 100_000_000 for i in range(8)] + \
        [1_000_000_000 + i * 100_000_000 for i in range(6)]
    frames = [(t, t, 4, (2, 2, 1.5, 1.5), lambda info: None) for t in stamps]
    log_times = [9_000_000_000 + i * 100_000_000 for i in range(len(stamps))]
    bag = read_camera_bag(_write_rgbd_messages(tmp_path / "again", frames,
                                               log_times=log_times))
    got = list(bag.rgbd_frames(tolerance_ns=10_000_000, capacity=5))
    assert [f.stamp_ns for f in got] == stamps
    assert all(f.depth is not None for f in got), [f.depth_note for f in got]


def test_write_refuses_unregistered_depth(tmp_path):
    frame = BagFrame(0, np.zeros((8, 8, 3), np.uint8), depth=np.ones((4, 4), np.float32),
                     intrinsics=(1, 1, 1, 1))
    with pytest.raises(BagError, match="not registered"):
        write_camera_bag(tmp_path / "bad", [frame])
    frame = BagFrame(0, np.zeros((8, 8, 3), np.uint8), depth=np.ones((8, 8), np.float32))
    with pytest.raises(BagError, match="needs its intrinsics"):
        write_camera_bag(tmp_path / "bad2", [frame])


def test_noise_model_is_seeded_and_realistic():
    clean = tabletop(OBJECTS)
    a = apply_depth_noise(clean, np.random.default_rng(1))
    b = apply_depth_noise(clean, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    valid = a > 0
    assert 0.01 < 1 - valid.mean() < 0.3                      # holes, shadows
    err = np.abs(a[valid] - clean[valid])
    assert np.median(err) < 0.005 and err.max() > 0.02        # small noise, flying pixels
    assert apply_depth_noise(np.full((8, 8), 9.0, np.float32), np.random.default_rng(0)).max() == 0


#: Axial noise alone, 3 mm at every depth (no steps, flying pixels, shadows or holes).
PLAIN_3MM = DepthNoise(axial_sigma_m=0.003, axial_sigma_quadratic=0.0, quant_per_m2=0.0,
                       flying_prob=0.0, shadow_px=0, hole_frac=0.0)


@pytest.mark.parametrize("correlation_px", [0.0, 4.0])
def test_correlated_noise_keeps_its_sigma_and_correlates_neighbours(correlation_px):
    flat = np.full((240, 320), 1.0, np.float32)
    err = apply_depth_noise(flat, np.random.default_rng(3), dataclasses.replace(
        PLAIN_3MM, correlation_px=correlation_px)) - flat
    assert float(err.std()) == pytest.approx(0.003, rel=0.05)
    neighbours = float(np.corrcoef(err[:, :-1].ravel(), err[:, 1:].ravel())[0, 1])
    assert (neighbours > 0.9) if correlation_px else (abs(neighbours) < 0.05)
    with pytest.raises(ValueError, match="correlation_px"):
        DepthNoise(correlation_px=40.0)


@pytest.mark.parametrize("correlation_px", [0.0, 4.0])
def test_noise_estimate_measures_the_noise_below_the_plane(correlation_px):
    from vl_distill_ros.perception.depth_cloud import depth_cloud
    from vl_distill_ros.perception.support_plane import DepthNoiseEstimate, fit_plane_ransac

    cfg = DepthProposalConfig()
    clean = tabletop(OBJECTS, tilt_deg=0.0)   # looking straight down: height error = depth's
    noisy = apply_depth_noise(clean, np.random.default_rng(5), dataclasses.replace(
        PLAIN_3MM, correlation_px=correlation_px))
    cloud = depth_cloud(noisy, K, cfg)
    n, d, _ = fit_plane_ransac(cloud.points, cfg, np.random.default_rng(0))
    height = cloud.points @ n.astype(np.float32) + np.float32(d)
    noise = DepthNoiseEstimate.measure(height, cloud.points[:, 2])
    assert noise.sigma(0.9) == pytest.approx(0.003, rel=0.15)   # the objects stand above
    assert propose_depth_boxes(noisy, K).noise_m == pytest.approx(
        noise.scale * (0.0012 + 0.0019), rel=1e-6)
    few = DepthNoiseEstimate.measure(height[:1000], cloud.points[:1000, 2])
    assert few.scale == 0.0 and few.sigma(0.9) == 0.0             # too few: not measured


def test_noise_filter_drops_bumps_of_correlated_noise_and_keeps_the_objects():
    from vl_distill_ros.sim.depth_noise import NOISE_MODELS

    from vl_distill_ros.perception.boxes import box_containment

    on = DepthProposalConfig(refine_max_frac=0.0)   # the grid over the frame: the filter alone
    off = dataclasses.replace(on, noise_top_sigmas=0.0)
    found = {"off": [0, 0], "on": [0, 0], "default": [0, 0]}
    for seed in range(4):
        depth, truth = render_tabletop(OBJECTS, tilt_deg=40 + 3 * seed)
        noisy = apply_depth_noise(depth, np.random.default_rng(seed), NOISE_MODELS["coarse"])
        for name, cfg in (("off", off), ("on", on), ("default", DepthProposalConfig())):
            boxes = propose_depth_boxes(noisy, K, cfg).boxes
            found[name][0] += _matched(truth, boxes)
            # boxes off the objects: bumps of the noise on the table
            found[name][1] += sum(max(box_containment(b, t) for t in truth) < 0.5 for b in boxes)
    assert found["on"] == [12, 0]                        # every object, no bump
    assert found["off"][0] == 12 and found["off"][1] >= 4    # bumps of the noise as boxes
    # with the object windows on the finer grid too (it may cut a piece off the tall box)
    assert found["default"] == [12, 0]
    with pytest.raises(DepthError, match="noise_top_sigmas"):
        DepthProposalConfig(noise_top_sigmas=-1.0)


# ---------------------------------------------------------------------------------------
# pipeline and offline replay with depth (a tiny real bundle)
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    from helpers import make_colour_bundle

    return make_colour_bundle(tmp_path_factory.mktemp("bundle") / "colour.vdb",
                              ["banana", "apple"], ["banana", "apple"])


def _replay(bag: Path, bundle: Path, out: Path, *extra: str) -> dict:
    import json

    from vl_distill_ros import cli

    code = cli.main(["replay-eval", str(bag), "--offline", "--model", str(bundle), "--out",
                     str(out), "--text-cache-dir", "", "--split", "none", "--no-plots",
                     "--no-progress", *extra])
    assert code == 0
    return json.loads((out / "report.json").read_text())


def test_offline_replay_uses_the_bags_depth_and_never_scores_it_as_a_camera(bundle, tmp_path):
    """Objects the colour of the table: only depth finds them."""
    bag = _rgbd_bag(tmp_path / "camo", n=4, noisy=True, camouflage=True)
    with_depth = _replay(bag, bundle, tmp_path / "d")
    assert with_depth["bag"]["image_topics"] == ["/camera/image_raw"]
    assert with_depth["bag"]["depth_topics"] == {"/camera/image_raw": "/camera/depth/image_raw"}
    assert with_depth["frames"]["in_bag"] == 4 and with_depth["frames"]["labelled"] == 4
    assert with_depth["groups"]["all"]["objects"] == 8
    assert with_depth["groups"]["all"]["matched"] == 8
    assert with_depth["false_positives"]["boxes"] <= 1
    assert with_depth["node"]["depth"]["frames_by_status"] == {"used": 4}
    for extra in (["--no-depth"], ["-p", "proposal_source:=colour"]):
        colour = _replay(bag, bundle, tmp_path / "c", *extra)
        assert colour["groups"]["all"]["matched"] == 0, extra
        assert colour["bag"]["image_topics"] == ["/camera/image_raw"]


def test_pipeline_falls_back_to_colour_on_bad_depth(bundle, monkeypatch):
    from vl_distill_ros.model.bundle import load_bundle
    from vl_distill_ros.perception.pipeline import PerceptionPipeline, PipelineSettings

    pipe = PerceptionPipeline(load_bundle(bundle, device="cpu"), inference_backend="torch")
    depth, truth = render_tabletop(OBJECTS)
    image = np.full((480, 640, 3), 150, np.uint8)
    x, y, w, h = truth[0]
    image[y:y + h, x:x + w] = (200, 40, 40)  # only the first object shows in colour
    colour_only, _ = pipe.process(image)
    assert pipe.last_depth_status == "" and len(colour_only) == 1
    objects, _ = pipe.process(image, depth, K)
    assert pipe.last_depth_status == "used"
    assert _matched(truth, [o.bbox for o in objects]) == 3
    for bad_depth, k, why in ((depth[:240], K, "depth is (640, 240)"),
                              (depth, None, "no camera intrinsics"),
                              (np.zeros_like(depth), K, "too little valid depth")):
        objects, _ = pipe.process(image, bad_depth, k)
        assert why in pipe.last_depth_status
        assert [o.bbox for o in objects] == [o.bbox for o in colour_only]
    pipe.configure(proposal_source="depth")
    objects, _ = pipe.process(image, depth, K)
    assert _matched(truth, [o.bbox for o in objects]) == 3
    pipe.configure(proposal_source="auto")

    def broken(*args, **kwargs):
        raise IndexError("a bug no test foresaw")

    # a failure inside the depth proposer costs the frame its depth, not its colour boxes
    monkeypatch.setattr("vl_distill_ros.perception.frame_boxes.propose_depth_boxes", broken)
    objects, _ = pipe.process(image, depth, K)
    assert pipe.last_depth_status.startswith("the depth proposer failed on this frame "
                                             "(IndexError: a bug no test foresaw)")
    assert [o.bbox for o in objects] == [o.bbox for o in colour_only]
    with pytest.raises(Exception, match="proposal_source must be one of"):
        PipelineSettings(proposal_source="lidar")


def test_pipeline_reports_each_cameras_depth_noise(bundle):
    from vl_distill_ros.model.bundle import load_bundle
    from vl_distill_ros.perception.support_plane import noise_curve
    from vl_distill_ros.perception.pipeline import PerceptionPipeline

    pipe = PerceptionPipeline(load_bundle(bundle, device="cpu"), inference_backend="torch")
    image = np.full((480, 640, 3), 150, np.uint8)
    clean = tabletop(OBJECTS, tilt_deg=0.0)            # the table 0.9 m away, seen from above
    noisy = apply_depth_noise(clean, np.random.default_rng(2), PLAIN_3MM)
    pipe.boxes(image, depth=noisy, intrinsics=K, camera="noisy")
    pipe.boxes(image, depth=clean, intrinsics=K, camera="exact")
    assert pipe.depth_noise("noisy") == pytest.approx(       # 3 mm at 0.9 m, scaled to 1 m
        0.003 * noise_curve(1.0) / noise_curve(0.9), rel=0.15)
    assert pipe.depth_noise("exact") < 0.0002 and pipe.depth_noise("unseen") == 0.0
    pipe.boxes(image, depth=np.zeros_like(clean), intrinsics=K, camera="noisy")  # kept
    assert pipe.depth_noise("noisy") > 0.002
    # sparse depth (every second column measured) is reported per camera as well
    assert not pipe.depth_sparse("exact") and not pipe.depth_sparse("unseen")
    columns = np.where(np.arange(640) % 2 == 0, clean, 0.0).astype(np.float32)
    pipe.boxes(image, depth=columns, intrinsics=K, camera="columns")
    assert pipe.depth_sparse("columns") and pipe.last_depth_status == "used"


def test_colour_proposals_in_a_second_thread_give_the_same_boxes(bundle, monkeypatch):
    """proposal_threads 2 (the default): the box network runs in another thread while the
    colour model (and, with depth and proposal_source auto, the depth proposer) runs; the
    boxes, labels and
    depth statuses are those of proposal_threads 1, including every fallback to colour.
    After close() frames still work (in the calling thread); 3 threads are refused."""
    import threading

    import vl_distill_ros.perception.frame_boxes as frame_boxes_module
    from vl_distill_ros.model.bundle import load_bundle
    from vl_distill_ros.perception.pipeline import PerceptionPipeline, PipelineError

    b = load_bundle(bundle, device="cpu")
    depth, truth = render_tabletop(OBJECTS)
    image = np.full((480, 640, 3), 150, np.uint8)
    x, y, w, h = truth[0]
    image[y:y + h, x:x + w] = (200, 40, 40)
    inputs = [(image, depth, K), (image, depth[:240], K), (image, depth, None),
              (image, np.zeros_like(depth), K), (image, None, None)]
    colour_threads, core_split = [], []

    def spy(real, name):
        def called(*args, **kwargs):
            colour_threads.append(threading.current_thread().name)
            if name != "network_detections":   # the colour model's calls
                core_split.append(kwargs.get("core_split", True))
            return real(*args, **kwargs)
        return called

    # colour only: propose_boxes; the fusion: network_detections (the network's boxes and
    # its weak ones), in the second thread with two, and with_colour_model here
    for name in ("propose_boxes", "network_detections", "with_colour_model"):
        monkeypatch.setattr(frame_boxes_module, name, spy(getattr(frame_boxes_module, name), name))

    def run(pipe):
        out = []
        for args in inputs:
            objects, _ = pipe.process(*args)
            out.append(([(o.bbox, o.label, round(o.score, 6)) for o in objects],
                        pipe.last_depth_status))
        return out

    serial = run(PerceptionPipeline(b, inference_backend="torch", proposal_threads=1))
    assert all(not name.startswith("colour_proposals") for name in colour_threads)
    assert _matched(truth, [box for box, _, _ in serial[0][0]]) == 3
    colour_threads.clear()
    pipe = PerceptionPipeline(b, inference_backend="torch")
    assert run(pipe) == serial
    # every frame ran the box network in the 2nd thread (with depth, or colour only)
    assert sum(name.startswith("colour_proposals") for name in colour_threads) == len(inputs)
    pipe.close()
    pipe.close()
    assert run(pipe) == serial
    with pytest.raises(PipelineError, match="proposal_threads"):
        PerceptionPipeline(b, inference_backend="torch", proposal_threads=3)
    # the fusion takes colour boxes without the core split; colour-only frames (no
    # usable depth) get the colour proposer with it
    single = PerceptionPipeline(b, inference_backend="torch", proposal_threads=1)
    core_split.clear()
    single.process(image, depth, K)
    assert core_split == [False]
    core_split.clear()
    single.process(image, np.zeros_like(depth), K)
    single.process(image, None, None)
    assert core_split == [True, True]


def test_the_pipeline_reports_the_refined_box_and_reads_the_network_box(bundle, monkeypatch):
    """With ``fuse_network_refine_iou`` on, :meth:`PerceptionPipeline.prepare` gives the
    network box moved towards its depth box (as :func:`fuse_proposals`) and keeps the
    network's own box as its view box, which the student's window is made from; off, the
    view boxes are the boxes."""
    import vl_distill_ros.perception.frame_boxes as frame_boxes_module
    from vl_distill_ros.model.bundle import load_bundle
    from vl_distill_ros.perception.pipeline import PerceptionPipeline
    from vl_distill_ros.perception.proposals import NetworkBoxes

    depth, truth = render_tabletop(OBJECTS)
    x, y, w, h = truth[0]
    loose = (int(x - 0.2 * w), int(y - 0.15 * h), int(1.4 * w), int(1.3 * h))
    monkeypatch.setattr(frame_boxes_module, "network_detections",
                        lambda image, cfg, weak_threshold=0.0: NetworkBoxes([loose], []))
    on = DepthProposalConfig(fuse_network_refine_iou=0.5)
    pipe = PerceptionPipeline(load_bundle(bundle, device="cpu"), inference_backend="torch",
                              proposal_threads=1, depth_cfg=on)
    image = np.full((480, 640, 3), 150, np.uint8)
    frame = pipe.prepare(image, depth, K)
    expected = fuse_proposals(propose_depth_boxes(depth, K, on, image), [], on, 10, [loose])
    assert frame.depth_status == "used" and frame.boxes[0] == expected[0] != loose
    assert box_iou(frame.boxes[0], truth[0]) > box_iou(loose, truth[0])
    assert frame.view_boxes[0] == loose and frame.view_boxes[1:] == frame.boxes[1:]
    (first, *_), _ = pipe.classify(frame)
    assert first.bbox == frame.boxes[0]
    pipe.configure(depth_cfg=dataclasses.replace(on, fuse_network_refine_iou=0.0))
    frame = pipe.prepare(image, depth, K)
    assert frame.boxes[0] == loose and frame.view_boxes == frame.boxes


@pytest.mark.parametrize("threads", [1, 2])
def test_the_pipeline_hands_the_weak_network_boxes_on(bundle, monkeypatch, threads):
    """The network's boxes under its threshold (``network_detections(..., weak)`` with
    ``fuse_network_weak_score``, in the second thread or not) reach the fusion: an object
    inside the network's loose box of its neighbour, as tall, is proposed when a weak box
    matches it, not without, nor with ``fuse_network_weak_score: 0``."""
    import vl_distill_ros.perception.frame_boxes as frame_boxes_module
    from vl_distill_ros.model.bundle import load_bundle
    from vl_distill_ros.perception.pipeline import PerceptionPipeline
    from vl_distill_ros.perception.proposals import NetworkBoxes

    depth, (big, small) = render_tabletop([(0.0, 0.10, 0.16, 0.08, 0.15),
                                           (0.0, -0.05, 0.05, 0.05, 0.14)])
    x0, y0 = min(big[0], small[0]), min(big[1], small[1])
    loose = (x0, y0, max(big[0] + big[2], small[0] + small[2]) - x0,
             max(big[1] + big[3], small[1] + small[3]) - y0)
    asked = []

    def detections(image, cfg, weak_threshold=0.0):
        asked.append(weak_threshold)
        return NetworkBoxes([loose], [small] if weak_threshold > 0 else [])
    monkeypatch.setattr(frame_boxes_module, "network_detections", detections)
    cfg = DepthProposalConfig(fuse_network_refine_iou=0.0)
    pipe = PerceptionPipeline(load_bundle(bundle, device="cpu"), inference_backend="torch",
                              proposal_threads=threads, depth_cfg=cfg)
    image = np.full((480, 640, 3), 150, np.uint8)
    frame = pipe.prepare(image, depth, K)
    assert asked == [cfg.fuse_network_weak_score] and frame.depth_status == "used"
    assert frame.boxes[0] == loose and _matched([small], frame.boxes) == 1
    pipe.configure(depth_cfg=dataclasses.replace(cfg, fuse_network_weak_score=0.0))
    frame = pipe.prepare(image, depth, K)
    assert asked[-1] == 0.0 and _matched([small], frame.boxes) == 0
    pipe.close()


def box_nets_loaded(monkeypatch) -> list[str]:
    """The file names of the box networks the proposer asks for from now on, in order."""
    import vl_distill_ros.perception.proposals as proposals_module

    loaded: list[str] = []
    real = proposals_module.load_box_net

    def spy(path, threads=1):
        loaded.append(Path(path).name)
        return real(path, threads)

    monkeypatch.setattr(proposals_module, "load_box_net", spy)
    return loaded


def test_frames_with_depth_take_the_box_network_of_box_net_depth(bundle, monkeypatch):
    """``box_net_depth`` (the node's ``proposal_box_net_depth``): ``same`` (the default) runs
    the float network on every frame; ``default_int8`` runs the INT8 copy on a frame that
    comes with depth (usable or not) and the float network on a frame without, in both
    thread modes."""
    from vl_distill_ros.model.bundle import load_bundle
    from vl_distill_ros.perception.box_net import DEFAULT_BOX_NET, DEFAULT_BOX_NET_INT8
    from vl_distill_ros.perception.pipeline import PerceptionPipeline
    from vl_distill_ros.perception.proposal_config import ProposalConfig

    loaded = box_nets_loaded(monkeypatch)
    b = load_bundle(bundle, device="cpu")
    depth, _ = render_tabletop(OBJECTS)
    image = np.full((480, 640, 3), 150, np.uint8)
    float_net, int8_net = DEFAULT_BOX_NET.name, DEFAULT_BOX_NET_INT8.name
    for threads in (1, 2):
        pipe = PerceptionPipeline(b, inference_backend="torch", proposal_threads=threads)
        loaded.clear()
        frame = pipe.prepare(image, depth, K)
        assert set(loaded) == {float_net} and frame.depth_status == "used"
        pipe.configure(proposal_cfg=ProposalConfig(box_net_depth="default_int8"))
        loaded.clear()
        pipe.prepare(image, depth, K)
        assert set(loaded) == {int8_net}
        loaded.clear()
        pipe.prepare(image)                                   # no depth: the float network
        assert set(loaded) == {float_net}
        loaded.clear()
        frame = pipe.prepare(image, np.zeros_like(depth), K)  # depth, unusable: still INT8
        assert set(loaded) == {int8_net} and frame.depth_status != "used"
        pipe.close()
    assert ProposalConfig(box_net="off").for_depth_frames().box_net == "off"
    other = ProposalConfig(box_net=str(DEFAULT_BOX_NET_INT8))
    assert other.depth_box_net() == str(DEFAULT_BOX_NET_INT8) and other.for_depth_frames() \
        is other
    assert ProposalConfig(box_net_depth="off").for_depth_frames().box_net == "off"
    with pytest.raises(ValueError, match="box_net_depth: no model file"):
        ProposalConfig(box_net_depth="/no/such/net.onnx")


def test_frames_prepared_behind_the_cameras_take_the_box_network_of_box_net_behind(
        bundle, monkeypatch):
    """``prepare(..., behind=True)`` (the node drops frames): the shipped network's INT8
    copy (``box_net_behind``'s default) on frames with and without depth; the float network
    when not behind, with ``box_net_behind: same``, and never in place of another network."""
    from vl_distill_ros.model.bundle import load_bundle
    from vl_distill_ros.perception.box_net import DEFAULT_BOX_NET, DEFAULT_BOX_NET_INT8
    from vl_distill_ros.perception.pipeline import PerceptionPipeline
    from vl_distill_ros.perception.proposal_config import ProposalConfig

    loaded = box_nets_loaded(monkeypatch)
    b = load_bundle(bundle, device="cpu")
    depth, _ = render_tabletop(OBJECTS)
    image = np.full((480, 640, 3), 150, np.uint8)
    float_net, int8_net = DEFAULT_BOX_NET.name, DEFAULT_BOX_NET_INT8.name

    def nets(pipe, *args, **kwargs):
        loaded.clear()
        pipe.prepare(image, *args, **kwargs)
        return set(loaded)

    for threads in (1, 2):
        pipe = PerceptionPipeline(b, inference_backend="torch", proposal_threads=threads)
        assert nets(pipe, depth, K) == {float_net}
        assert nets(pipe, depth, K, behind=True) == {int8_net}
        assert nets(pipe, behind=True) == {int8_net}             # colour only, behind
        assert nets(pipe) == {float_net}
        pipe.configure(proposal_cfg=ProposalConfig(box_net_behind="same"))
        assert nets(pipe, depth, K, behind=True) == {float_net}
        pipe.configure(proposal_cfg=ProposalConfig(box_net=str(DEFAULT_BOX_NET)))
        assert nets(pipe, depth, K, behind=True) == {float_net}  # a chosen file stays
        pipe.close()


def test_the_fusion_leaves_the_colour_model_out_unless_asked(bundle, monkeypatch):
    """With depth and the box network the fusion takes the network's boxes and depth's:
    the colour model does not run (``fuse_colour_model: false``, the default), in either
    thread mode; with ``fuse_colour_model: true`` it runs (without the core split) and its
    boxes join; a frame without usable depth, and a pipeline with the network off, run it
    as before."""
    import vl_distill_ros.perception.proposals as proposals_module
    from vl_distill_ros.model.bundle import load_bundle
    from vl_distill_ros.perception.depth_fusion import fusion_colour_config
    from vl_distill_ros.perception.pipeline import PerceptionPipeline
    from vl_distill_ros.perception.proposal_config import ProposalConfig

    calls = []
    real = proposals_module._colour_boxes

    def spy(image, cfg, core_split):
        calls.append(core_split)
        return real(image, cfg, core_split)

    monkeypatch.setattr(proposals_module, "_colour_boxes", spy)
    b = load_bundle(bundle, device="cpu")
    depth, truth = render_tabletop(OBJECTS)
    image = np.full((480, 640, 3), 150, np.uint8)
    x, y, w, h = truth[0]
    image[y:y + h, x:x + w] = (200, 40, 40)
    with_model = DepthProposalConfig(fuse_colour_model=True)
    for threads in (1, 2):
        pipe = PerceptionPipeline(b, inference_backend="torch", proposal_threads=threads)
        calls.clear()
        pipe.process(image, depth, K)
        assert calls == [] and pipe.last_depth_status == "used"
        pipe.process(image, np.zeros_like(depth), K)       # no usable depth: colour only
        assert calls == [True] and pipe.last_depth_status != "used"
        pipe.configure(depth_cfg=with_model)
        calls.clear()
        pipe.process(image, depth, K)
        assert calls == [False] and pipe.last_depth_status == "used"
        pipe.close()
    off = PerceptionPipeline(b, inference_backend="torch", proposal_threads=1,
                             proposal_cfg=ProposalConfig(box_net="off"))
    calls.clear()
    off.process(image, depth, K)
    assert calls == [False] and off.last_depth_status == "used"
    cfg = ProposalConfig()
    assert fusion_colour_config(cfg, DepthProposalConfig()).box_net_colour == "none"
    assert fusion_colour_config(cfg, with_model) is cfg
    with pytest.raises(DepthError, match="fuse_colour_model"):
        DepthProposalConfig(fuse_colour_model="yes")
    with pytest.raises(DepthError, match="fuse_close_pass"):
        DepthProposalConfig(fuse_close_pass=1)
    with pytest.raises(DepthError, match="close_view_m"):
        DepthProposalConfig(close_view_m=2.0)


def test_frames_with_depth_go_without_the_close_pass_unless_asked(bundle, monkeypatch):
    """The box network's close pass (``box_net_close_width``, 240 by default) runs on a
    frame without depth; a frame with depth goes without it unless its depth says the
    camera is close (``close_view_m``: a median nearer than 0.5 m, or nothing measured),
    ``fuse_close_pass`` or its camera is named in ``close_cameras``; in either thread
    mode."""
    from helpers import record_box_net_widths
    from vl_distill_ros.model.bundle import load_bundle
    from vl_distill_ros.perception.pipeline import PerceptionPipeline

    widths = record_box_net_widths(monkeypatch)
    b = load_bundle(bundle, device="cpu")
    depth, _ = render_tabletop(OBJECTS)                    # seen from 0.9 m
    near, _ = render_tabletop([(0.0, 0.0, 0.06, 0.06, 0.1)], distance=0.3)   # a close-up
    assert 0 < np.median(near[near > 0]) < 0.5 < np.median(depth[depth > 0])
    image = np.full((480, 640, 3), 150, np.uint8)    # no network box: the close pass would run
    for threads in (1, 2):
        pipe = PerceptionPipeline(b, inference_backend="torch", proposal_threads=threads)
        runs = {}
        for name, frame_depth in (("colour", None), ("depth", depth), ("near", near),
                                  ("none measured", np.zeros_like(depth))):
            widths.clear()
            pipe.process(image, frame_depth, None if frame_depth is None else K)
            runs[name] = sorted(set(widths))
        assert runs == {"colour": [240, 480], "depth": [480], "near": [240, 480],
                        "none measured": [240, 480]}, runs
        pipe.configure(depth_cfg=DepthProposalConfig(close_view_m=0.0))
        widths.clear()
        pipe.process(image, near, K)
        assert sorted(set(widths)) == [480]                  # the depth rule off
        pipe.configure(depth_cfg=DepthProposalConfig(fuse_close_pass=True))
        widths.clear()
        pipe.process(image, depth, K)
        assert sorted(set(widths)) == [240, 480] and pipe.last_depth_status == "used"
        # a camera named for the close pass (close_cameras) takes it with depth too
        pipe.configure(depth_cfg=DepthProposalConfig(), close_cameras=("/wrist",))
        for camera, expected in (("/wrist", [240, 480]), ("/head", [480])):
            widths.clear()
            pipe.process(image, depth, K, camera=camera)
            assert sorted(set(widths)) == expected and pipe.last_depth_status == "used"
        pipe.close()


def test_a_long_focus_camera_takes_the_close_pass_from_farther(bundle, monkeypatch):
    """A long-focus lens (YCB-Video's Xtion: fx 1067 px at 640 px wide) shows a table 0.7 m
    away as large as a 53-degree lens shows it from 0.42 m: its frames with depth take the
    close pass out to ``close_view_m`` times its fx / width (0.83 m); the default lens at
    0.7 m, and the long focus at 1.2 m, do not (``depth_fusion.close_view``)."""
    from helpers import record_box_net_widths
    from vl_distill_ros.model.bundle import load_bundle
    from vl_distill_ros.perception.depth_fusion import close_view
    from vl_distill_ros.perception.pipeline import PerceptionPipeline

    long_focus = CameraIntrinsics(fx=1067.0, fy=1067.0, cx=313.0, cy=241.0, width=640,
                                  height=480)
    assert K.fx / K.width <= 1.0
    table = np.full((480, 640), 0.7, np.float32)
    assert close_view(table, 0.5, long_focus) and not close_view(table, 0.5, K)
    assert not close_view(table, 0.5) and not close_view(table * 1.7, 0.5, long_focus)
    assert not close_view(table, 0.0, long_focus)           # the rule off
    widths = record_box_net_widths(monkeypatch)
    pipe = PerceptionPipeline(load_bundle(bundle, device="cpu"), inference_backend="torch")
    image = np.full((480, 640, 3), 150, np.uint8)
    runs = {}
    for name, depth, camera in (("default lens", table, K), ("long focus", table, long_focus),
                                ("long focus, far", table * 1.7, long_focus)):
        widths.clear()
        pipe.process(image, depth, camera)
        runs[name] = sorted(set(widths))
    pipe.close()
    assert runs == {"default lens": [480], "long focus": [240, 480],
                    "long focus, far": [480]}, runs


@pytest.mark.parametrize("image_format", ["raw", "jpeg"])
def test_live_replay_publishes_depth_to_the_node(bundle, tmp_path, image_format):
    """The live replay starts the node with depth_topics / camera_info_topics and replays
    depth and CameraInfo: every labelled frame was paired (its objects found). A bag of
    image_transport's topics (JPEG colour, compressedDepth) is replayed as recorded, and
    the node subscribes to them as CompressedImage."""
    small = CameraIntrinsics(270.0, 270.0, 159.5, 119.5, 320, 240)
    bag = _rgbd_bag(tmp_path / "live", n=4, camouflage=True, k=small, image_format=image_format)
    report = _replay_live(bag, bundle, tmp_path / "out")
    colour, depth = "/camera/image_raw", "/camera/depth/image_raw"
    if image_format != "raw":
        colour, depth = colour + "/compressed", depth + "/compressedDepth"
    assert report["bag"]["image_topics"] == [colour]
    cam = report["cameras"][colour]
    assert cam["transport"] == ("raw" if image_format == "raw" else "compressed")
    labelled = report["frames"]["labelled"]
    assert labelled >= 1 and int(cam["depth_used"]) == labelled
    assert int(cam["depth_errors"]) == 0 and cam["depth_topic"].endswith(depth)
    assert report["groups"]["all"]["matched"] == report["groups"]["all"]["objects"]


def test_live_replay_gives_depth_to_the_cameras_that_have_it(bundle, tmp_path):
    """A bag of an RGB-D camera (objects the colour of the table: only depth finds them)
    and a colour-only hand camera (red objects): the node took depth for every camera or
    none, so the live replay ran both colour only and found none of the RGB-D camera's
    objects, while --offline found them. Now the node gets ``""`` for the hand camera."""
    small = CameraIntrinsics(270.0, 270.0, 159.5, 119.5, 320, 240)
    frames = []
    for i in range(3):
        depth, boxes = render_tabletop([(-0.15 + 0.02 * i, 0.0, 0.08, 0.06, 0.08),
                                        (0.15, 0.05, 0.05, 0.07, 0.12)], k=small)
        hand = np.full((96, 128, 3), 150, np.uint8)    # small: the three images of a
        hand[24:72, 40:88] = (200, 40, 40)              # stamp fit DDS's shared memory
        frames.append(BagFrame(
            1_000_000_000 + i * 100_000_000, np.full((240, 320, 3), 150, np.uint8),
            [GroundTruthObject(b, "apple", "013_apple") for b in boxes], hand_image=hand,
            hand_objects=[GroundTruthObject((40, 24, 48, 48), "apple", "013_apple")],
            depth=depth, intrinsics=(small.fx, small.fy, small.cx, small.cy)))
    bag = write_camera_bag(tmp_path / "two", frames)
    report = _replay_live(bag, bundle, tmp_path / "out")
    main, hand = BagTopics().camera, BagTopics().hand_camera
    assert report["node"]["depth_input"] == "used for 1 of the 2 cameras (the others have none)"
    assert int(report["cameras"][main]["depth_used"]) >= 1
    assert int(report["cameras"][main]["depth_errors"]) == 0
    assert "depth_used" not in report["cameras"][hand]
    # the hand camera's red object is found in colour; the RGB-D camera's two objects in
    # every frame that had its depth (none in a frame whose depth was lost on the way)
    colour_only = int(report["cameras"][main]["colour_only"])
    assert report["groups"]["all"]["matched"] == \
        report["groups"]["all"]["objects"] - 2 * colour_only


def _replay_live(bag: Path, bundle: Path, out: Path) -> dict:
    import json

    from vl_distill_ros import cli

    code = cli.main(["replay-eval", str(bag), "--model", str(bundle), "--out", str(out),
                     "--text-cache-dir", "", "--split", "none", "--no-plots", "--no-progress",
                     "--rate", "0.5", "--node-timeout", "90", "-p", "torch_threads:=1",
                     "-p", "inference_backend:=torch"])
    assert code == 0
    return json.loads((out / "report.json").read_text())


def test_two_stages_in_two_threads_give_what_process_gives(bundle):
    """The node's pipelined mode: :meth:`prepare` of frame i+1 in one thread while
    :meth:`classify` of frame i runs in another gives, frame by frame, the objects and the
    depth status that :meth:`process` gives; ``prepare`` leaves ``last_depth_status`` alone
    (its status travels with the frame)."""
    import queue
    import threading

    from vl_distill_ros.model.bundle import load_bundle
    from vl_distill_ros.perception.pipeline import PerceptionPipeline

    pipe = PerceptionPipeline(load_bundle(bundle, device="cpu"), inference_backend="torch")
    depth, truth = render_tabletop(OBJECTS)
    image = np.full((480, 640, 3), 150, np.uint8)
    x, y, w, h = truth[0]
    image[y:y + h, x:x + w] = (200, 40, 40)
    inputs = [(image, depth, K), (image, None, None), (image, depth[:240], K)] * 3
    expected = []
    for args in inputs:
        objects, version = pipe.process(*args)
        expected.append(([(o.bbox, o.label, round(o.score, 6)) for o in objects], version,
                         pipe.last_depth_status))
    assert {e[2] for e in expected} == {"used", "", "depth is (640, 240) but the image is 640x480"}
    pipe.last_depth_status = "untouched"
    handoff: queue.Queue = queue.Queue(maxsize=1)
    got = []

    def stage_one():
        for args in inputs:
            handoff.put(pipe.prepare(*args))
        handoff.put(None)

    def stage_two():
        while (frame := handoff.get()) is not None:
            objects, version = pipe.classify(frame)
            got.append(([(o.bbox, o.label, round(o.score, 6)) for o in objects], version,
                        frame.depth_status))

    threads = [threading.Thread(target=stage_one), threading.Thread(target=stage_two)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert got == expected
    assert pipe.last_depth_status == "untouched"


def test_the_grid_step_grows_with_the_focal_length_and_the_frame_width():
    from vl_distill_ros.perception.depth_config import stride_for

    # by default the step follows the shorter side: a 640x480 camera of 58 degrees
    # (584 px) or of YCB-Video's 25 (1067 px) and an 848x480 one: step 2; 1280x720: 3;
    # 1280x960 and 1920x1080: 4 (rounded down); the width bounds the cost (480 samples)
    default = DepthProposalConfig()
    for width, focal in ((640, 584.0), (640, 1067.0), (848, 584.0)):
        assert stride_for(default, width, focal, 480) is default
    assert stride_for(default, 1280, 876.0, 720).stride == 3
    assert stride_for(default, 1280, 1167.0, 960).stride == 4
    assert stride_for(default, 960, 1167.0, 1280).stride == 4      # portrait
    assert stride_for(default, 1920, 1060.0, 1080).stride == 4
    assert stride_for(default, 960, 0.0, 719).stride == 2
    assert stride_for(default, 2880, 0.0, 960).stride == 6         # the width bound
    off = dataclasses.replace(default, stride_short_side_px=0)
    assert stride_for(off, 1280, 1167.0, 960).stride == 3
    # stride_focal_px 600: the step follows the focal length (1280x960 of the same view
    # as 640x480 at 584 px: step 4; the long-focus 640x480 camera too)
    cfg = dataclasses.replace(off, stride_focal_px=600.0)
    assert stride_for(cfg, 640, 584.0) is cfg and stride_for(cfg, 848, 584.0) is cfg
    assert stride_for(cfg, 1280, 876.0).stride == 3
    assert stride_for(cfg, 1280, 1167.0).stride == 4
    assert stride_for(cfg, 640, 1067.0).stride == 4
    # without a focal length the width alone
    assert stride_for(cfg, 1280).stride == 3 and stride_for(cfg, 1441).stride == 4
    assert stride_for(dataclasses.replace(cfg, max_grid_width=0), 1280).stride == 2
    assert stride_for(cfg, 100_000, 100_000.0).stride == 16
    # the step found is final: applying it again changes nothing
    final = stride_for(cfg, 1280, 1167.0)
    assert stride_for(final, 1280, 1167.0) is final and stride_for(final, 4000) is final
    final = stride_for(default, 1280, 1167.0, 960)
    assert stride_for(final, 1280, 1167.0, 960) is final
    big = CameraIntrinsics(fx=1080.0, fy=1080.0, cx=639.5, cy=479.5, width=1280, height=960)
    depth, truth = render_tabletop(OBJECTS, k=big)      # the same scene at twice the size
    found = propose_depth_boxes(depth, big)             # the defaults: step 4
    assert found.stride == 4 and _matched(truth, found.boxes, 0.8) == 3
    small = propose_depth_boxes(render_tabletop(OBJECTS)[0], K).boxes
    halved = np.array([[v / 2 for v in b] for b in found.boxes])
    np.testing.assert_allclose(halved, np.array(small, float), atol=2.0)
    with pytest.raises(DepthError, match="max_grid_width"):
        DepthProposalConfig(max_grid_width=-1)
    with pytest.raises(DepthError, match="stride_focal_px"):
        DepthProposalConfig(stride_focal_px=-1.0)
    with pytest.raises(DepthError, match="stride_short_side_px"):
        DepthProposalConfig(stride_short_side_px=-1)


def _windows_of(monkeypatch, depth: np.ndarray, cfg: DepthProposalConfig):
    """The proposals of ``depth`` and the object windows the proposer found on the way."""
    import vl_distill_ros.perception.depth_proposals as dp

    seen = []
    real = dp._object_windows

    def spy(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]
    monkeypatch.setattr(dp, "_object_windows", spy)
    found = propose_depth_boxes(depth, K, cfg)
    monkeypatch.setattr(dp, "_object_windows", real)
    return found, (seen[0] if seen else None)


def test_the_object_windows_are_found_again_on_a_finer_grid(monkeypatch):
    depth, truth = render_tabletop(OBJECTS)
    noisy = apply_depth_noise(depth, np.random.default_rng(4))
    coarse = dataclasses.replace(DepthProposalConfig(), refine_max_frac=0.0)
    plain, none = _windows_of(monkeypatch, noisy, coarse)
    assert none is None                              # 0: the grid over the frame, no windows
    everywhere = propose_depth_boxes(noisy, K, dataclasses.replace(coarse, stride=1,
                                                                   max_grid_width=0))
    refined, windows = _windows_of(monkeypatch, noisy, DepthProposalConfig(refine_max_frac=1.0))
    assert refined.stride == 2 and refined.height_grid.shape == (240, 320)  # fusion: coarse
    # one window per object standing apart, corners on the grid step, inside the frame
    assert len(windows) == 3 and all(v % 2 == 0 for w in windows for v in w)
    assert all(0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480 for x0, y0, x1, y1 in windows)
    # every window on the fine grid: what a fine grid over the whole frame finds
    assert sorted(refined.boxes) == sorted(everywhere.boxes)
    assert _matched(truth, refined.boxes) == 3 and sorted(refined.boxes) != sorted(plain.boxes)
    # no budget for any window: the grid's own samples in each, the boxes of the grid
    assert propose_depth_boxes(noisy, K, DepthProposalConfig(refine_max_frac=1e-4)).boxes \
        == plain.boxes
    # a budget for the smallest window only: its object from the fine grid, the others
    # from the grid
    areas = sorted((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in windows)
    budget = (areas[0] + 1) / (640 * 480)
    assert areas[0] + areas[1] > areas[0] + 1
    mixed = propose_depth_boxes(noisy, K, DepthProposalConfig(refine_max_frac=budget))
    smallest = min(windows, key=lambda w: (w[2] - w[0]) * (w[3] - w[1]))

    def inside(b, w):
        return w[0] <= b[0] and w[1] <= b[1] and b[0] + b[2] <= w[2] and b[1] + b[3] <= w[3]
    for box in mixed.boxes:
        assert box in (everywhere.boxes if inside(box, smallest) else plain.boxes)
    assert sum(inside(b, smallest) for b in mixed.boxes) == 1
    with pytest.raises(DepthError, match="refine_max_frac"):
        DepthProposalConfig(refine_max_frac=1.5)


def test_a_frame_of_many_raised_specks_is_proposed_on_the_grid_without_windows(monkeypatch):
    import vl_distill_ros.perception.depth_proposals as dp

    specks = [(a, b, 0.015, 0.015, 0.02) for a in np.linspace(-0.3, 0.3, 11)
              for b in np.linspace(-0.15, 0.2, 8)]
    depth, _ = render_tabletop(specks)
    frame = propose_depth_boxes(depth, K, DepthProposalConfig(refine_max_frac=0.0))
    found, windows = _windows_of(monkeypatch, depth, DepthProposalConfig())
    assert windows is None and found.boxes == frame.boxes   # more than MAX_OBJECT_WINDOWS
    monkeypatch.setattr(dp, "MAX_OBJECT_WINDOWS", 200)   # the same specks under a higher cap
    _, windows = _windows_of(monkeypatch, depth, DepthProposalConfig())
    assert windows   # joined into a few windows


def test_object_windows_join_while_any_two_overlap():
    from vl_distill_ros.perception.depth_proposals import _joined

    # a chain: the first overlaps the second, which overlaps the third; one apart
    rects = [(0, 0, 10, 10), (100, 100, 120, 120), (8, 8, 20, 20), (18, 0, 30, 9)]
    assert sorted(_joined(rects)) == [(0, 0, 30, 20), (100, 100, 120, 120)]
    assert _joined([(0, 0, 10, 10), (10, 0, 20, 10)]) == [(0, 0, 10, 10), (10, 0, 20, 10)]
    assert _joined([]) == []


def test_a_cloud_cropped_to_a_window_keeps_the_frames_samples():
    from vl_distill_ros.perception.depth_cloud import depth_cloud

    depth = apply_depth_noise(render_tabletop(OBJECTS)[0], np.random.default_rng(3))
    cloud = depth_cloud(depth, K, DepthProposalConfig())
    win, idx = cloud.crop(40, 100, 60, 200)
    assert win.z.shape == (60, 140) and win.stride == cloud.stride
    inside = (cloud.rows >= 40) & (cloud.rows < 100) & (cloud.cols >= 60) & (cloud.cols < 200)
    np.testing.assert_array_equal(idx, np.flatnonzero(inside))
    np.testing.assert_array_equal(win.points, cloud.points[inside])
    np.testing.assert_array_equal(win.z[win.rows, win.cols], win.points[:, 2])
    assert win.valid[win.rows, win.cols].all() and win.valid.sum() == len(idx)


def test_the_noise_bound_is_at_least_the_noise_at_any_nearer_depth():
    from vl_distill_ros.perception.support_plane import DepthNoiseEstimate, noise_curve

    noise = DepthNoiseEstimate(1.0, (math.nan, 0.8, 1.6, math.nan, 1.2))
    for z in np.linspace(0.2, 2.0, 37):
        bound = noise.sigma_bound(float(z))
        assert all(noise.sigma(float(v)) <= bound for v in np.linspace(0.15, z, 20))
    assert noise.sigma_bound(1.0) == pytest.approx(1.6 * noise_curve(1.0))   # the largest
    assert DepthNoiseEstimate().sigma_bound(1.0) == 0.0


# ---------------------------------------------------------------------------------------
# lens distortion in CameraInfo
# ---------------------------------------------------------------------------------------
def _pinhole_of_corner(k: CameraIntrinsics, k1: float, k2: float, u: float, v: float):
    """Where a pinhole camera sees the ray that a plumb_bob lens (k1, k2 only) bends onto
    pixel (u, v): the ray found by fixed-point iteration of x_d = x (1 + k1 r^2 + k2 r^4)."""
    xd, yd = (u - k.cx) / k.fx, (v - k.cy) / k.fy
    x, y = xd, yd
    for _ in range(200):
        r2 = x * x + y * y
        f = 1 + k1 * r2 + k2 * r2 * r2
        x, y = xd / f, yd / f
    return k.fx * x + k.cx, k.fy * y + k.cy


def test_distortion_corner_px_measures_how_far_the_lens_moves_the_corner():
    from vl_distill_ros.perception.camera_model import distortion_corner_px

    k = CameraIntrinsics(600.0, 600.0, 320.0, 240.0, 640, 480)
    assert distortion_corner_px(k, "plumb_bob", []) == 0.0
    assert distortion_corner_px(k, "plumb_bob", [0.0] * 5) == 0.0
    for k1, k2 in ((0.1, -0.05), (-0.3, 0.1)):
        want = max(math.dist(_pinhole_of_corner(k, k1, k2, u, v), (u, v))
                   for u in (0, 639) for v in (0, 479))
        got = distortion_corner_px(k, "plumb_bob", [k1, k2, 0.0, 0.0, 0.0])
        assert got == pytest.approx(want, rel=1e-3), (k1, k2)
        assert got > 5.0
    assert distortion_corner_px(k, "equidistant", [0.1, 0.0, 0.0, 0.0]) > 5.0
    assert distortion_corner_px(k, "rational_polynomial", [0.1] + [0.0] * 7) > 5.0
    assert distortion_corner_px(k, "weird_model", [0.1]) is None
    assert distortion_corner_px(k, "plumb_bob", [0.1, 0.2]) is None       # wrong count
    assert distortion_corner_px(k, "plumb_bob", [float("nan")] * 5) is None


def test_depth_input_follows_the_lens_model_and_notes_an_unknown_one_once():
    from types import SimpleNamespace

    from vl_distill_ros.ros.depth_input import DepthInput

    k = CameraIntrinsics(25.0, 25.0, 15.5, 11.5, 32, 24)
    _, _, _, step, data = encode_depth_mm(np.ones((24, 32), np.float32))
    depth = SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=1, nanosec=0)),
                            encoding="16UC1", height=24, width=32, step=step, data=data,
                            is_bigendian=0)

    def info(model, d):
        return SimpleNamespace(k=[k.fx, 0, k.cx, 0, k.fy, k.cy, 0, 0, 1], width=32, height=24,
                               distortion_model=model, d=d)
    for model, d, distorted, noted, shown in (
            ("plumb_bob", [], False, False, "0.0"),
            ("plumb_bob", [-0.4, 0.2, 0, 0, 0], True, False, "big"),
            ("weird_lens", [0.3, 0.1], False, True, ""),
            ("plumb_bob", [0.1] * 100_000, False, True, "")):     # a hostile d: not read
        inp = DepthInput("/d", "/i", 0.02)
        inp.add_info(info(model, d))
        inp.add_depth(depth, 0.0)
        z, kk, reason = inp.pair(1_000_000_000, (24, 32, 3))
        assert z is not None and reason == ""                    # depth is used
        assert kk.distorted is distorted and kk.distortion == (tuple(d) if distorted else ())
        note = inp.distortion_note()
        assert bool(note) is noted and inp.distortion_note() == ""   # once
        value = inp.take_period()["values"]["camera_info_distortion_px"]
        assert value == shown if shown != "big" else float(value) > 2.0
        if noted:
            assert f"'{model}' with {len(d)} coefficients" in note and "image_rect" in note


def _lens_rays(k: CameraIntrinsics, k1: float, k2: float) -> np.ndarray:
    """Per pixel, the ray (x, y, 1) a plumb_bob lens (k1, k2 only) bends onto it, by
    fixed-point iteration of x_d = x (1 + k1 r^2 + k2 r^4) (independent of OpenCV)."""
    u, v = np.meshgrid(np.arange(k.width), np.arange(k.height))
    xd, yd = (u - k.cx) / k.fx, (v - k.cy) / k.fy
    x, y = xd.copy(), yd.copy()
    for _ in range(300):
        r2 = x * x + y * y
        f = 1 + k1 * r2 + k2 * r2 * r2
        x, y = xd / f, yd / f
    return np.stack([x, y, np.ones_like(x)], -1)


def test_depth_proposals_follow_the_cameras_lens_model(monkeypatch):
    """A wide lens (77 degrees across, k1 = -0.15): read as a pinhole camera, the table
    bends near the edges and the proposer adds false boxes there; with the CameraInfo's
    lens model every object is found and nothing else."""
    from vl_distill_ros.evaluation.scoring import match_boxes

    k = CameraIntrinsics(200.0, 200.0, 159.5, 119.5, 320, 240)
    lens = [-0.15, 0.02, 0.0, 0.0, 0.0]
    objs = [(-0.25, -0.1, 0.08, 0.06, 0.1), (0.25, 0.15, 0.07, 0.07, 0.12),
            (0.0, 0.0, 0.1, 0.08, 0.08), (-0.2, 0.3, 0.06, 0.06, 0.09)]
    monkeypatch.setattr(sys.modules[__name__], "_rays", lambda kk: _lens_rays(kk, *lens[:2]))
    depth, truth = render_tabletop(objs, k=k, distance=0.8)
    assert len(truth) == 4
    pinhole = [tuple(b) for b in propose_depth_boxes(depth, k).boxes]
    assert len(pinhole) > len(truth)                          # the bent table's false boxes
    kd = CameraIntrinsics.from_k([k.fx, 0, k.cx, 0, k.fy, k.cy, 0, 0, 1], 320, 240,
                                 "plumb_bob", lens)
    boxes = [tuple(b) for b in propose_depth_boxes(depth, kd).boxes]
    assert len(boxes) == 4 and len(match_boxes(truth, boxes, 0.5)) == 4, (truth, boxes)


@pytest.mark.parametrize("model, d", [
    ("plumb_bob", [-0.2, 0.05, 0.001, -0.002, 0.0]),
    ("rational_polynomial", [0.5, -2.6, 0.0005, -0.0003, 1.5, 0.38, -2.4, 1.4]),
    ("equidistant", [0.1, -0.02, 0.003, 0.0])])
def test_lens_rays_and_projection_agree_in_frames_and_windows(model, d):
    k = CameraIntrinsics.from_k([300.0, 0, 159.5, 0, 310.0, 119.5, 0, 0, 1], 320, 240, model, d)
    assert k.distorted
    rx, ry = k.pixel_rays()
    vs, us = np.mgrid[0:240:7, 0:320:9]
    z = np.linspace(0.4, 2.0, us.size)
    pts = np.stack([rx[vs, us].ravel() * z, ry[vs, us].ravel() * z, z], 1)
    pu, pv = k.project(pts)                  # OpenCV's forward model against its inverse
    assert np.abs(pu - us.ravel()).max() < 1e-3 and np.abs(pv - vs.ravel()).max() < 1e-3
    win = k.window(40, 30, 200, 150)
    wx, wy = win.pixel_rays()
    np.testing.assert_array_equal(wx, rx[30:150, 40:200])
    np.testing.assert_array_equal(wy, ry[30:150, 40:200])
    wu, wv = win.project(pts)
    np.testing.assert_allclose(wu, pu - 40, atol=1e-9)
    np.testing.assert_allclose(wv, pv - 30, atol=1e-9)
    # unknown models and wrong counts leave a pinhole camera
    for m, c in (("weird", [0.1]), ("plumb_bob", [0.1, 0.2]), ("plumb_bob", [0.0] * 5)):
        assert not CameraIntrinsics.from_k([300.0, 0, 159.5, 0, 310.0, 119.5, 0, 0, 1], 320,
                                           240, m, c).distorted


def test_a_lens_model_no_lens_has_loses_only_the_rays_it_cannot_give():
    """Lens coefficients no real lens has (a corrupt CameraInfo; `tools/fuzz_inputs.py
    --seed 59` found them): OpenCV's inverse of the model diverges on part of the frame (rays
    of 1e100 and NaN, which broke the raised-plane search with an integer overflow). Those
    pixels' rays are NaN and their depth is not used; the proposer runs on the rest, and a
    real lens keeps every ray."""
    d = (-2.0444, -3.5667, 2.3256, -0.8238, 3.0104, 0.3649, -1.5395, 0.6021)
    kmat = [1066.8, 0, 313.0, 0, 1067.5, 241.3, 0, 0, 1]     # YCB-Video's Xtion
    k = CameraIntrinsics.from_k(kmat, 640, 480, "rational_polynomial", d)
    rx, ry = k.pixel_rays()
    unknown = np.isnan(rx)
    assert unknown.any() and not unknown.all() and (unknown == np.isnan(ry)).all()
    assert np.isfinite(rx[~unknown]).all() and np.isfinite(ry[~unknown]).all()
    vs, us = np.nonzero(~unknown)
    pick = slice(None, None, 101)                         # every kept ray goes back home
    pu, pv = k.project(np.stack([rx[vs, us], ry[vs, us], np.ones(vs.size)], 1)[pick])
    assert np.abs(pu - us[pick]).max() <= 0.5 and np.abs(pv - vs[pick]).max() <= 0.5
    objs = [(-0.05, -0.03, 0.06, 0.05, 0.1), (0.06, 0.04, 0.05, 0.05, 0.12)]
    depth, _ = render_tabletop(objs, k=CameraIntrinsics(1066.8, 1067.5, 313.0, 241.3, 640, 480),
                               distance=1.2)
    depth[:, :320] = np.nan                               # the fuzzer's half_nan depth
    found = propose_depth_boxes(depth, k)                 # raised nothing
    assert all(np.isfinite(b).all() for b in found.boxes)
    real = CameraIntrinsics.from_k(kmat, 640, 480, "rational_polynomial",
                                   [0.5, -2.6, 0.0005, -0.0003, 1.5, 0.38, -2.4, 1.4])
    assert np.isfinite(real.pixel_rays()[0]).all() and np.isfinite(real.pixel_rays()[1]).all()


def test_bags_carry_the_camera_info_lens_model_to_the_offline_replay(tmp_path):
    """rgbd_frames hands the CameraInfo's distortion_model and d on, and the offline
    replay's intrinsics follow them."""
    from vl_distill_ros.evaluation import replay

    def lens(info):
        info.distortion_model, info.d = "rational_polynomial", np.array([0.1] + [0.0] * 7)
    path = _write_rgbd_messages(tmp_path / "lens", [(3_000_000_000, 3_000_000_000, 8,
                                                     (20, 20, 3.5, 3.5), lens)])
    (frame,) = list(read_camera_bag(path).rgbd_frames())
    assert frame.distortion == ("rational_polynomial", (0.1,) + (0.0,) * 7)
    depth, k = replay._frame_depth(frame)
    assert depth is not None and k.distorted and k.distortion_model == "rational_polynomial"
    assert (k.fx, k.cx, k.width) == (20.0, 3.5, 8)
    # the same on an image_rect topic: rectified, so P and no lens

    def rect(info):
        lens(info)
        info.p = np.array([19.0, 0, 3.25, 0, 0, 19.5, 3.75, 0, 0, 0, 1, 0])
    path = _write_rgbd_messages(tmp_path / "rect", [(3_000_000_000, 3_000_000_000, 8,
                                                     (20, 20, 3.5, 3.5), rect)],
                                colour="/cam/image_rect_color")
    (frame,) = list(read_camera_bag(path).rgbd_frames())
    assert frame.distortion == ("", ()) and frame.camera_info == (19.0, 19.5, 3.25, 3.75, 8, 8)
    assert not frame.intrinsics().distorted

    # a binned camera's CameraInfo (full-resolution K and size, binning 2): the 8x8 frames'
    # camera, which the offline replay uses

    def binned(info):
        info.width, info.height, info.binning_x, info.binning_y = 16, 16, 2, 2
    path = _write_rgbd_messages(tmp_path / "binned", [(3_000_000_000, 3_000_000_000, 8,
                                                       (20, 20, 7.5, 7.5), binned)])
    (frame,) = list(read_camera_bag(path).rgbd_frames())
    assert frame.camera_info == (10.0, 10.0, 3.75, 3.75, 8, 8)
    depth, k = replay._frame_depth(frame)
    assert depth is not None and (k.fx, k.cx, k.width) == (10.0, 3.75, 8)
    # 16-bit depth in other units (depth_scale): the bag's 1000 mm read as 0.25 mm units
    bag = read_camera_bag(path)
    (frame,) = list(bag.rgbd_frames(depth_unit_m=0.00025))
    assert float(frame.depth.max()) == pytest.approx(0.25)
    values = replay.node_parameter_values({"depth_scale": 0.00025})
    (frame,) = list(replay._offline_frames(bag, replay.ReplaySettings(), values,
                                           replay.Recording(mode="offline")))
    assert float(frame.depth.max()) == pytest.approx(0.25)


def test_rectified_topics_take_p_and_no_lens():
    """image_pipeline's image_rect topics hold rectified images: their camera is the
    CameraInfo's P without the lens model (REP 104); other topics use K and the lens."""
    from types import SimpleNamespace

    from vl_distill_ros.perception.compressed_codec import is_rectified_topic

    assert is_rectified_topic("/camera/rgb/image_rect_color")
    assert is_rectified_topic("/camera/rgb/image_rect_color/compressed")
    assert is_rectified_topic("image_rect")
    assert not is_rectified_topic("/camera/color/image_raw")
    assert not is_rectified_topic("/camera/image_rect_color/raw_view")
    info = SimpleNamespace(k=[300.0, 0, 160.0, 0, 300.0, 120.0, 0, 0, 1],
                           p=[290.0, 0, 158.0, 0, 0, 291.0, 121.0, 0, 0, 0, 1, 0],
                           width=320, height=240, distortion_model="plumb_bob",
                           d=[-0.2, 0.05, 0, 0, 0])
    raw = CameraIntrinsics.from_camera_info(info)
    assert (raw.fx, raw.cx, raw.distorted) == (300.0, 160.0, True)
    rect = CameraIntrinsics.from_camera_info(info, rectified=True)
    assert (rect.fx, rect.fy, rect.cx, rect.cy, rect.distorted) == (290.0, 291.0, 158.0,
                                                                    121.0, False)
    info.p = [0.0] * 12                                       # no P: K, still no lens
    rect = CameraIntrinsics.from_camera_info(info, rectified=True)
    assert (rect.fx, rect.cx, rect.distorted) == (300.0, 160.0, False)


def test_a_subwindow_roi_with_do_rectify_is_read_as_image_geometry_does():
    """A raw camera capturing a subwindow of its sensor sets ``roi`` and, as
    sensor_msgs/RegionOfInterest says is typical then, ``do_rectify`` True. The ROI is still
    the raw sensor window ("always denotes the same window of pixels on the camera
    sensor"); ``do_rectify`` only asks for a rectified ROI to be computed from it.
    image_geometry moves K's and P's principal points by the offset either way; the depth of
    such a camera was refused ("roi is in rectified coordinates") and every frame went
    colour-only."""
    from sensor_msgs.msg import CameraInfo

    from vl_distill_ros.perception.camera_model import image_camera

    info = CameraInfo(width=800, height=600, distortion_model="plumb_bob",
                      d=[-0.2, 0.05, 0.001, -0.002, 0.0],
                      k=[400.0, 0.0, 399.5, 0.0, 410.0, 299.5, 0.0, 0.0, 1.0],
                      p=[390.0, 0, 395.0, 0, 0, 392.0, 301.0, 0, 0, 0, 1, 0])
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 80, 60, 640, 480
    for do_rectify in (False, True):
        info.roi.do_rectify = do_rectify
        assert image_camera(info) == (400.0, 410.0, 319.5, 239.5, 640, 480)
        assert image_camera(info, rectified=True) == (390.0, 392.0, 315.0, 241.0, 640, 480)
        cam = CameraIntrinsics.from_camera_info(info, image_size=(640, 480))
        assert (cam.cx, cam.cy, cam.width, cam.height, cam.distorted) == (
            319.5, 239.5, 640, 480, True)


def test_binning_and_roi_give_the_camera_of_the_smaller_frames():
    """REP 104 (image_geometry's reading): a CameraInfo's ROI (full-resolution pixels) and
    binning describe smaller images; their camera is fx / b, (cx - x_offset) / b, and each
    of their pixels looks along the ray of full-resolution pixel u * b + x_offset, through
    the same lens. Impossible values are refused with a clear error."""
    from types import SimpleNamespace

    from vl_distill_ros.perception.camera_model import image_camera

    d = [-0.2, 0.05, 0.001, -0.002, 0.0]
    roi = SimpleNamespace(x_offset=80, y_offset=60, width=640, height=480)
    info = SimpleNamespace(k=[400.0, 0, 399.5, 0, 410.0, 299.5, 0, 0, 1], width=800,
                           height=600, distortion_model="plumb_bob", d=d, binning_x=2,
                           binning_y=2, roi=roi, p=[0.0] * 12)
    assert image_camera(info) == (200.0, 205.0, 159.75, 119.75, 320, 240)
    small = CameraIntrinsics.from_camera_info(info)
    assert (small.width, small.height, small.distorted) == (320, 240, True)
    full = CameraIntrinsics.from_k(info.k, 800, 600, "plumb_bob", d)
    sx, sy = small.pixel_rays()
    fx, fy = full.pixel_rays()
    np.testing.assert_allclose(sx, fx[60:540:2, 80:720:2], atol=1e-9)
    np.testing.assert_allclose(sy, fy[60:540:2, 80:720:2], atol=1e-9)
    # binning alone, ROI alone, and none (0 and 1 both mean no binning)
    info.roi = SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0)
    assert image_camera(info) == (200.0, 205.0, 199.75, 149.75, 400, 300)
    info.binning_x = info.binning_y = 1
    info.roi = roi
    assert image_camera(info) == (400.0, 410.0, 319.5, 239.5, 640, 480)
    info.binning_x = info.binning_y = 0
    info.roi = SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0)
    assert image_camera(info) == (400.0, 410.0, 399.5, 299.5, 800, 600)
    # a rectified topic takes P, reduced the same way
    info.p = [390.0, 0, 395.0, 0, 0, 392.0, 301.0, 0, 0, 0, 1, 0]
    info.binning_x = info.binning_y = 2
    info.roi = SimpleNamespace(**vars(roi), do_rectify=True)     # a field of the roi
    assert image_camera(info, rectified=True) == (195.0, 196.0, 157.5, 120.5, 320, 240)
    assert image_camera(info) == (200.0, 205.0, 159.75, 119.75, 320, 240)   # raw: the same
    info.roi = SimpleNamespace(x_offset=0, y_offset=0, width=800, height=600, do_rectify=True)
    assert image_camera(info) == (200.0, 205.0, 199.75, 149.75, 400, 300)   # the whole frame
    info.roi = roi
    # images of the full frame: a binning and ROI filled in but not used are passed over
    assert image_camera(info, image_size=(800, 600)) == (400.0, 410.0, 399.5, 299.5, 800, 600)
    assert image_camera(info, image_size=(320, 240))[4:] == (320, 240)
    for change, message in ((dict(binning_x=65), "binning 65x2"),
                            (dict(binning_y=-1), "binning 2x-1"),
                            (dict(roi=SimpleNamespace(x_offset=200, y_offset=0, width=640,
                                                      height=480)), "outside its 800x600")):
        bad = SimpleNamespace(**{**vars(info), **change})
        with pytest.raises(DepthError, match=message):
            CameraIntrinsics.from_camera_info(bad)


def test_a_depth_config_or_box_network_that_is_no_regular_file_is_refused_at_once(tmp_path):
    """``depth_proposal_config`` naming a FIFO blocked the executor (its parameter call
    never answered) and ``/dev/zero`` grew the node by 300 MB a second: both are refused
    at once with the reason, as a box network file is."""
    from vl_distill_ros.perception.box_net import BoxNetError, _read_model
    from vl_distill_ros.perception.depth_config import load_depth_config

    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    start = time.monotonic()
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(DepthError, match="not a regular file"):
            load_depth_config(path)
        with pytest.raises(BoxNetError, match="not a regular file"):
            _read_model(path)
    assert time.monotonic() - start < 2.0
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * ((1 << 20) + 1))
    with pytest.raises(DepthError, match="limit"):
        load_depth_config(big)


def test_rgbd_frames_skip_an_undecodable_colour_image_when_asked(tmp_path):
    """A colour image that deserialises but cannot be decoded (its pixel data cut short)
    raises UndecodableImage, with its topic and stamp; with ``on_undecodable`` it is handed
    over and skipped, and the frames around it keep their depth (replay-eval goes on past
    it, as the node does)."""
    from helpers import rewrite_bag
    from vl_distill_ros.bags.bag_io import UndecodableImage

    seen: list[int] = []

    def cut_second_colour_image(raw, store):
        data = raw.data
        if raw.topic == BagTopics().camera:
            seen.append(1)
            if len(seen) == 2:
                msg = store.deserialize_cdr(data, raw.msgtype)
                msg.data = msg.data[:10]
                data = store.serialize_cdr(msg, raw.msgtype)
        return [(raw.topic, raw.msgtype, data)]

    bag = read_camera_bag(rewrite_bag(_rgbd_bag(tmp_path / "rgbd", n=4), tmp_path / "broken",
                                      cut_second_colour_image))
    with pytest.raises(UndecodableImage) as info:
        list(bag.rgbd_frames())
    assert info.value.topic == BagTopics().camera and info.value.stamp_ns == 1_100_000_000
    skipped: list[UndecodableImage] = []
    frames = list(bag.rgbd_frames(on_undecodable=skipped.append))
    assert [f.stamp_ns for f in frames] == [1_000_000_000, 1_200_000_000, 1_300_000_000]
    assert all(f.depth is not None for f in frames)
    assert [(e.topic, e.stamp_ns) for e in skipped] == [(BagTopics().camera, 1_100_000_000)]
    assert [m.stamp_ns for m in bag.images(on_undecodable=lambda e: None)] == \
        [1_000_000_000, 1_200_000_000, 1_300_000_000]


def test_lens_ray_tables_are_kept_within_their_byte_bound(monkeypatch):
    """The ray tables were an lru_cache of 8 of any size: a CameraInfo whose K moves every
    frame kept 1 GB at 4K. They are now kept within RAY_TABLE_BYTES (least recent out;
    the latest always kept), and a camera seen again is served from the cache."""
    from vl_distill_ros.perception import camera_model

    monkeypatch.setattr(camera_model, "_RAY_TABLES", camera_model.OrderedDict())
    one_table = 2 * 8 * 160 * 120
    monkeypatch.setattr(camera_model, "RAY_TABLE_BYTES", 3 * one_table)
    cams = [CameraIntrinsics.from_k([150.0 + i, 0, 79.5, 0, 150.0 + i, 59.5, 0, 0, 1], 160,
                                    120, "plumb_bob", [-0.1, 0.01, 0.0, 0.0, 0.0])
            for i in range(5)]
    first = cams[0].pixel_rays()[0]
    assert np.shares_memory(cams[0].pixel_rays()[0], first)     # kept: the same table
    for cam in cams[1:]:
        cam.pixel_rays()
    kept = camera_model._RAY_TABLES
    assert len(kept) == 3 and sum(a.nbytes + b.nbytes for a, b in kept.values()) == \
        3 * one_table
    assert not np.shares_memory(cams[0].pixel_rays()[0], first)  # let go, computed again
    np.testing.assert_array_equal(cams[0].pixel_rays()[0], first)
    monkeypatch.setattr(camera_model, "RAY_TABLE_BYTES", 1)      # smaller than any table
    cams[1].pixel_rays()
    assert len(kept) == 1                                        # the latest stays


def test_integer_intrinsics_propose_as_float_ones():
    """CameraIntrinsics does not make its numbers floats: integer ones (a hand-written
    camera) propose the same boxes as the float ones (the cloud's in-place float products
    refused an integer column offset)."""
    depth = np.full((480, 640), 1.0, np.float32)
    depth[200:260, 300:360] = 0.9
    ints = propose_depth_boxes(depth, CameraIntrinsics(500, 500, 320, 240, 640, 480))
    floats = propose_depth_boxes(depth, CameraIntrinsics(500.0, 500.0, 320.0, 240.0, 640, 480))
    assert ints.boxes == floats.boxes and len(ints.boxes) == 1
