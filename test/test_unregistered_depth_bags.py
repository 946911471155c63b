"""Bags recorded without depth alignment (a RealSense's default): static transforms chained
without ROS (:mod:`vl_distill_ros.perception.static_transforms`), the bag's ``/tf_static``
and the depth camera's CameraInfo found and used to align each depth image
(:mod:`vl_distill_ros.bags.unregistered_depth`), and ``replay-eval`` scoring such a bag.
Scenes are the analytic tabletop of ``test_depth``; bags are written with rosbags."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import test_depth
from test_depth import _replay, render_tabletop
from test_depth_alignment import COLOUR, DEPTH, OBJECTS, OFFSET
from vl_distill_ros.bags import bag_io, bag_writer
from vl_distill_ros.bags.bag_io import BagError, GroundTruthObject, read_camera_bag
from vl_distill_ros.perception.static_transforms import (MAX_FRAMES, StaticTransforms,
                                                         Transform, TransformError,
                                                         rotation_from_quaternion)

#: The colour-coded bundle of test_depth (a module-scoped fixture).
bundle = test_depth.bundle

#: A ROS optical frame in its body frame (z forward, x right, y down in x forward, y left,
#: z up), as camera drivers publish it.
OPTICAL = (-0.5, 0.5, -0.5, 0.5)
#: The depth camera's body frame in ``camera_link``: OFFSET (optical x right, y down) is
#: 5 cm to the right (-y) and 1.2 cm down (-z).
DEPTH_IN_LINK = (0.0, -OFFSET[0], -OFFSET[1])


def realsense_tree() -> list[tuple[str, str, tuple, tuple]]:
    """``(parent, child, translation, quaternion)`` of a RealSense-like ``/tf_static``."""
    return [("camera_link", "camera_color_frame", (0.0, 0.0, 0.0), (0, 0, 0, 1)),
            ("camera_color_frame", "camera_color_optical_frame", (0.0, 0.0, 0.0), OPTICAL),
            ("camera_link", "camera_depth_frame", DEPTH_IN_LINK, (0, 0, 0, 1)),
            ("camera_depth_frame", "camera_depth_optical_frame", (0.0, 0.0, 0.0), OPTICAL)]


def test_a_drivers_chain_of_static_transforms_gives_the_depth_cameras_pose():
    tree = StaticTransforms()
    for parent, child, t, q in realsense_tree():
        tree.add("/" + parent if parent == "camera_link" else parent, child, t, q)
    assert rotation_from_quaternion(OPTICAL) @ [0, 0, 1] == pytest.approx([1, 0, 0])
    pose = tree.lookup("camera_color_optical_frame", "camera_depth_optical_frame").as_pose()
    assert pose == pytest.approx([*OFFSET, 0, 0, 0, 1], abs=1e-12)
    back = tree.lookup("camera_depth_optical_frame", "/camera_color_optical_frame")
    assert back.as_pose() == pytest.approx([-OFFSET[0], -OFFSET[1], 0, 0, 0, 0, 1], abs=1e-12)
    # a point of the depth camera lands where the colour camera sees it
    link = tree.lookup("camera_link", "camera_depth_optical_frame")
    p = link.rotation @ np.array([0.0, 0.0, 1.0]) + link.translation
    assert p == pytest.approx([1.0, -OFFSET[0], -OFFSET[1]])
    assert tree.lookup("camera_link", "camera_link").as_pose() == [0, 0, 0, 0, 0, 0, 1]
    tree.add("odom", "base_link", (1, 2, 3), (0, 0, 0, 1))
    with pytest.raises(TransformError, match="do not connect"):
        tree.lookup("odom", "camera_link")
    with pytest.raises(TransformError, match="no static transform names frame 'map'"):
        tree.lookup("map", "camera_link")


@pytest.mark.parametrize("q", [(0, 0, 0, 1), (0.3, -0.2, 0.5, 0.78), (1, 0, 0, 0),
                               (0, 0.9999, 0, 0.01), (-0.7, 0.1, 0.1, -0.7)])
def test_poses_survive_a_round_trip_through_quaternions(q):
    t = Transform.from_pose([0.1, -0.2, 0.3, *q])
    again = Transform.from_pose(t.as_pose())
    np.testing.assert_allclose(again.rotation, t.rotation, atol=1e-12)
    np.testing.assert_allclose(t.then(t.inverse()).rotation, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(t.then(t.inverse()).translation, 0, atol=1e-12)


def test_unusable_transforms_are_refused_or_skipped():
    tree = StaticTransforms()
    for args, message in ((("a", "a", (0, 0, 0), (0, 0, 0, 1)), "two named frames"),
                          (("a", "", (0, 0, 0), (0, 0, 0, 1)), "two named frames"),
                          (("a", "b", (0, 0, 0), (0, 0, 0, 0)), "zero quaternion"),
                          (("a", "b", (math.nan, 0, 0), (0, 0, 0, 1)), "finite")):
        with pytest.raises(TransformError, match=message):
            tree.add(*args)
    for i in range(MAX_FRAMES - 1):
        tree.add("root", f"f{i}", (0, 0, 0), (0, 0, 0, 1))
    with pytest.raises(TransformError, match=f"more than {MAX_FRAMES} frames"):
        tree.add("root", "one_too_many", (0, 0, 0), (0, 0, 0, 1))
    store = bag_io.typestore()
    msg = _tf_message(store, [("a", "b", (0, 0, 1), (0, 0, 0, 1)),
                              ("a", "c", (0, 0, 1), (0, 0, 0, 0))], 0)
    small = StaticTransforms()
    assert small.add_message(msg) == 1 and small.frames == ["a", "b"]


# ---------------------------------------------------------------------------------------
# bags
# ---------------------------------------------------------------------------------------
def _tf_message(store, links, stamp_ns: int):
    types = store.types
    vector, quaternion = types["geometry_msgs/msg/Vector3"], types["geometry_msgs/msg/Quaternion"]
    transforms = []
    for parent, child, t, q in links:
        transforms.append(types["geometry_msgs/msg/TransformStamped"](
            header=bag_writer._header(store, stamp_ns, parent), child_frame_id=child,
            transform=types["geometry_msgs/msg/Transform"](
                translation=vector(x=t[0], y=t[1], z=t[2]),
                rotation=quaternion(x=q[0], y=q[1], z=q[2], w=q[3]))))
    return types["tf2_msgs/msg/TFMessage"](transforms=transforms)


def unregistered_bag(path: Path, frames: int = 3, tf: bool = True,
                     depth_topic: str = "/camera/camera/depth/image_rect_raw") -> Path:
    """A RealSense-like bag recorded without alignment: grey objects on a grey table (only
    depth can find them) on ``/camera/camera/color/image_raw``, the depth camera's own image
    and CameraInfo, the colour CameraInfo, ground truth and (``tf``) ``/tf_static``."""
    from rosbags.rosbag2 import Writer

    store = bag_io.typestore()
    depth, _ = render_tabletop(OBJECTS, k=DEPTH, distance=0.8, camera_offset=OFFSET)
    _, truth = render_tabletop(OBJECTS, k=COLOUR, distance=0.8)
    colour_topic = "/camera/camera/color/image_raw"
    info_of = {colour_topic: ("/camera/camera/color/camera_info", COLOUR,
                              "camera_color_optical_frame"),
               depth_topic: (depth_topic.rpartition("/")[0] + "/camera_info", DEPTH,
                             "camera_depth_optical_frame")}
    with Writer(path, version=Writer.VERSION_LATEST) as writer:
        conn = {t: writer.add_connection(t, ty, typestore=store) for t, ty in (
            (colour_topic, bag_io.IMAGE_TYPE), (depth_topic, bag_io.IMAGE_TYPE),
            (info_of[colour_topic][0], bag_io.CAMERA_INFO_TYPE),
            (info_of[depth_topic][0], bag_io.CAMERA_INFO_TYPE),
            ("/ground_truth", bag_io.STRING_TYPE),
            *((("/tf_static", "tf2_msgs/msg/TFMessage"),) if tf else ()))}
        if tf:
            writer.write(conn["/tf_static"], 999_000_000, store.serialize_cdr(
                _tf_message(store, realsense_tree(), 999_000_000), "tf2_msgs/msg/TFMessage"))
        for i in range(frames):
            stamp = 1_000_000_000 + i * 100_000_000
            for topic, (info_topic, k, frame) in info_of.items():
                info = bag_writer._camera_info_msg(store, (k.fx, k.fy, k.cx, k.cy), k.width,
                                                   k.height, stamp, frame)
                writer.write(conn[info_topic], stamp,
                             store.serialize_cdr(info, bag_io.CAMERA_INFO_TYPE))
            _, dmsg = bag_writer._depth_msg(store, depth, stamp, info_of[depth_topic][2])
            writer.write(conn[depth_topic], stamp, store.serialize_cdr(dmsg, bag_io.IMAGE_TYPE))
            image = np.full((COLOUR.height, COLOUR.width, 3), 150, np.uint8)
            _, img = bag_writer._image_msg(store, image, stamp, info_of[colour_topic][2])
            writer.write(conn[colour_topic], stamp, store.serialize_cdr(img, bag_io.IMAGE_TYPE))
            doc = bag_io.ground_truth_document(
                stamp, "camera_color_optical_frame", colour_topic,
                [GroundTruthObject(b, "apple", "013_apple") for b in truth])
            writer.write(conn["/ground_truth"], stamp, store.serialize_cdr(
                store.types[bag_io.STRING_TYPE](data=json.dumps(doc)), bag_io.STRING_TYPE))
    return path


def test_a_bags_unregistered_depth_is_aligned_with_its_tf_static(tmp_path):
    bag = read_camera_bag(unregistered_bag(tmp_path / "rs"))
    colour = "/camera/camera/color/image_raw"
    assert bag.image_topics == [colour]
    assert bag.depth_topics == {colour: "/camera/camera/depth/image_rect_raw"}
    assert bag.camera_info_topics == {colour: "/camera/camera/color/camera_info"}
    plan = bag.depth_alignment[colour]
    assert plan.depth_camera_info_topic == "/camera/camera/depth/camera_info"
    assert plan.pose == pytest.approx((*OFFSET, 0, 0, 0, 1), abs=1e-9)
    assert (plan.depth_frame, plan.colour_frame) == ("camera_depth_optical_frame",
                                                     "camera_color_optical_frame")
    truth_depth, _ = render_tabletop(OBJECTS, k=COLOUR, distance=0.8)
    frames = list(bag.rgbd_frames())
    assert len(frames) == 3 and all(f.depth is not None for f in frames), \
        [f.depth_note for f in frames]
    aligned = frames[0].depth
    assert aligned.shape == (COLOUR.height, COLOUR.width)
    both = (aligned > 0) & (truth_depth > 0)
    assert both.sum() >= 0.9 * (truth_depth > 0).sum()
    rel = np.abs(aligned[both] - truth_depth[both]) / truth_depth[both]
    assert np.quantile(rel, 0.5) < 0.003          # millimetre depth, a pixel's slope


def test_without_tf_static_the_depth_is_read_as_registered_and_the_plan_says_why(tmp_path):
    bag = read_camera_bag(unregistered_bag(tmp_path / "no_tf", tf=False))
    plan = bag.depth_alignment["/camera/camera/color/image_raw"]
    assert plan.pose is None and "depth read as registered" in plan.note
    frames = list(bag.rgbd_frames())
    seen, _ = render_tabletop(OBJECTS, k=DEPTH, distance=0.8, camera_offset=OFFSET)
    np.testing.assert_allclose(frames[0].depth, seen, atol=5.1e-4)   # as recorded


def test_registered_names_and_overrides(tmp_path):
    """A depth topic named as registered is not aligned by convention, but an explicit
    depth CameraInfo overrides that; overrides naming no depth or no CameraInfo fail."""
    path = unregistered_bag(tmp_path / "named", frames=1,
                            depth_topic="/camera/camera/aligned_depth_to_color/image_raw")
    colour = "/camera/camera/color/image_raw"
    assert read_camera_bag(path).depth_alignment == {}
    info = "/camera/camera/aligned_depth_to_color/camera_info"
    forced = read_camera_bag(path, depth_camera_info_topics={colour: info})
    assert forced.depth_alignment[colour].pose == pytest.approx((*OFFSET, 0, 0, 0, 1))
    with pytest.raises(BagError, match="not a sensor_msgs/msg/CameraInfo topic"):
        read_camera_bag(path, depth_camera_info_topics={colour: "/ground_truth"})
    with pytest.raises(BagError, match="has no depth topic"):
        read_camera_bag(path, depth_camera_info_topics={"/other": info})


def test_offline_replay_scores_a_bag_recorded_without_alignment(bundle, tmp_path):
    """Grey objects on a grey table: depth alone finds them, all 12 when the depth is aligned
    with the bag's /tf_static, fewer when the same depth is read as registered."""
    depth_only = ("-p", "proposal_source:=depth")
    report = _replay(unregistered_bag(tmp_path / "rs"), bundle, tmp_path / "out", *depth_only)
    assert report["groups"]["all"]["objects"] == 12
    assert report["groups"]["all"]["matched"] == 12
    depth = report["node"]["depth"]
    assert depth["frames_by_status"] == {"used": 3}
    colour = "/camera/camera/color/image_raw"
    alignment = report["bag"]["depth_alignment"][colour]
    assert alignment["depth_camera_info_topic"] == "/camera/camera/depth/camera_info"
    assert alignment["pose"] == pytest.approx([*OFFSET, 0, 0, 0, 1])
    unaligned = _replay(unregistered_bag(tmp_path / "no_tf", tf=False), bundle,
                        tmp_path / "out2", *depth_only)
    assert unaligned["groups"]["all"]["matched"] < 12
    assert unaligned["bag"]["depth_alignment"][colour]["pose"] is None
    assert "read as registered" in unaligned["bag"]["depth_alignment"][colour]["note"]


def test_live_replay_gives_the_node_the_depth_cameras_info_and_pose(bundle, tmp_path):
    """Played through the node, the same bag's depth is aligned by the node itself: the
    replay passes depth_camera_info_topics and the pose read from /tf_static."""
    from vl_distill_ros import cli

    out = tmp_path / "live"
    code = cli.main(["replay-eval", str(unregistered_bag(tmp_path / "rs")), "--model",
                     str(bundle), "--out", str(out), "--text-cache-dir", "", "--split",
                     "none", "--no-plots", "--no-progress", "--rate", "0.5", "--node-timeout",
                     "90", "-p", "torch_threads:=1", "-p", "inference_backend:=torch",
                     "-p", "proposal_source:=depth"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["bag"]["depth_alignment"]["/camera/camera/color/image_raw"]["pose"] == \
        pytest.approx([*OFFSET, 0, 0, 0, 1])
    cam = report["cameras"]["/camera/camera/color/image_raw"]
    assert cam["depth_camera_info_topic"].endswith("/camera/camera/depth/camera_info")
    labelled = report["frames"]["labelled"]
    assert labelled >= 1 and int(cam["depth_used"]) == labelled
    assert int(cam["depth_errors"]) == 0, cam
    assert report["groups"]["all"]["matched"] == report["groups"]["all"]["objects"]
