"""vl_distill_node with registered depth, over real rclpy (DDS on loopback).

The scene: two box-shaped objects the colour of the table (invisible to the colour proposer)
on a tilted table, with exact ray-cast depth (``test_depth.render_tabletop``). A frame that
was paired with its depth is labelled with the two objects' boxes; a frame processed
colour-only has no objects. That makes pairing, missing, late and mismatched depth, wrong
encodings and sizes, and a CameraInfo of zeros observable in ``~/labels`` and
``/diagnostics``, while the colour path keeps publishing.
"""
from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from helpers import make_colour_bundle
from test_depth import cuboid_centre, render_tabletop
from test_node import Tester, publish_until_labelled, running_node, wait_for
from vl_distill_ros.perception.compressed_codec import (encode_compressed_depth,
                                                        encode_compressed_image)
from vl_distill_ros.perception.camera_model import CameraIntrinsics
from vl_distill_ros.perception.depth_proposals import propose_depth_boxes
from vl_distill_ros.perception.image_codec import encode_depth_mm
from vl_distill_ros.ros.node import StartupError, VlDistillNode

K = CameraIntrinsics(270.0, 270.0, 159.5, 119.5, 320, 240)
SCENE = [(-0.15, 0.0, 0.12, 0.06, 0.16), (0.1, 0.05, 0.07, 0.07, 0.1)]
GREY = 150


@pytest.fixture(scope="module")
def tester(ctx):
    t = Tester(ctx, name="vl_depth_tester")
    yield t
    t.close()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_colour_bundle(tmp_path_factory.mktemp("bundle") / "b.vdb",
                              ["banana", "apple"], ["banana", "apple"])


@pytest.fixture(scope="module")
def scene():
    return render_tabletop(SCENE, k=K)


def _header(msg, sec: int, nanosec: int, frame_id: str) -> None:
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec


def colour_msg(sec: int, nanosec: int, frame_id: str) -> Image:
    msg = Image()
    _header(msg, sec, nanosec, frame_id)
    msg.height, msg.width, msg.encoding, msg.step = 240, 320, "rgb8", 960
    msg.data = np.full((240, 320, 3), GREY, np.uint8).tobytes()
    return msg


def depth_msg(depth: np.ndarray, sec: int, nanosec: int, encoding: str = "16UC1") -> Image:
    msg = Image()
    _header(msg, sec, nanosec, "cam")
    if encoding == "32FC1":
        data = depth.astype("<f4").tobytes()
        msg.step = depth.shape[1] * 4
    elif encoding == "16UC1":
        _, _, _, msg.step, data = encode_depth_mm(depth)
    else:  # a wrong encoding: 3 bytes per pixel
        data = np.zeros((*depth.shape, 3), np.uint8).tobytes()
        msg.step = depth.shape[1] * 3
    msg.height, msg.width, msg.encoding = depth.shape[0], depth.shape[1], encoding
    msg.data = data
    return msg


def info_msg(k: CameraIntrinsics | None) -> CameraInfo:
    msg = CameraInfo()
    msg.header.frame_id = "cam"
    msg.width, msg.height = 320, 240
    if k is not None:
        msg.k = [k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0]
    return msg  # k all zeros otherwise (an uncalibrated driver)


class Rig:
    """Publishers of one RGB-D camera in ``ns`` and the node's labels."""

    def __init__(self, tester: Tester, ns: str) -> None:
        self.tester, self.ns = tester, ns
        self.info_pub = tester.node.create_publisher(CameraInfo, f"{ns}/cam/info", 10)
        self.labels = tester.watch_labels(f"{ns}/vl_distill_node/labels")
        self.fqn = f"{ns}/vl_distill_node"

    def send(self, frame_id: str, sec: int, depth: Image | None = None,
             info: CameraInfo | None = None, depth_after: float | None = None) -> dict:
        """Publish (info, depth,) colour until the frame is labelled; return its document."""
        def found():
            return next((d for _, d in self.labels if d["header"]["frame_id"] == frame_id), None)
        end = time.monotonic() + 20.0
        while time.monotonic() < end:
            if info is not None:
                self.info_pub.publish(info)
            if depth is not None and depth_after is None:
                self.tester.publish(f"{self.ns}/cam/depth", depth)
            self.tester.publish(f"{self.ns}/cam/image", colour_msg(sec, 0, frame_id))
            if depth is not None and depth_after is not None:
                time.sleep(depth_after)
                self.tester.publish(f"{self.ns}/cam/depth", depth)
            if wait_for(lambda: found() is not None, 0.5):
                return found()
        raise AssertionError(f"no labels for {frame_id} within 20 s")

    def status(self) -> dict:
        assert wait_for(lambda: self.tester.camera_status(self.fqn, f"{self.ns}/cam/image")
                        is not None, 10.0)
        return self.tester.camera_status(self.fqn, f"{self.ns}/cam/image")


def _boxes(doc: dict) -> list:
    return [tuple(o["bbox"]) for o in doc["objects"]]


def _node(ctx, ns: str, bundle: Path, tmp: Path):
    return running_node(ctx, ns, bundle, tmp, crop_source="proposals",
                        image_topics=["cam/image"], depth_topics=["cam/depth"],
                        camera_info_topics=["cam/info"], depth_sync_tolerance=0.05,
                        inference_backend="torch", warm_text_encoder=False)


def test_depth_pairs_by_stamp_and_missing_late_or_far_depth_goes_colour_only(
        ctx, tester, bundle, scene, tmp_path):
    from vl_distill_ros.evaluation.scoring import match_boxes

    depth, truth = scene
    rig = Rig(tester, "/rgbd")
    with _node(ctx, "/rgbd", bundle, tmp_path):
        assert wait_for(lambda: tester.node.count_subscribers("/rgbd/cam/depth") > 0, 10.0)
        info = info_msg(K)
        doc = rig.send("paired", 10, depth_msg(depth, 10, 0), info)
        assert len(match_boxes(truth, _boxes(doc), 0.5)) == 2, doc
        # each object placed in the camera's frame: its centre and height (mm depth steps)
        for i, j, _ in match_boxes(truth, _boxes(doc), 0.5):
            obj = doc["objects"][j]
            assert np.linalg.norm(np.array(obj["position"]) - cuboid_centre(SCENE[i])) \
                < 0.02, (SCENE[i], obj)
            assert abs(obj["size"][2] - SCENE[i][4]) < 0.01, (SCENE[i], obj)
        doc = rig.send("metres", 11, depth_msg(depth, 11, 0, "32FC1"), info)
        assert len(match_boxes(truth, _boxes(doc), 0.5)) == 2, doc
        # depth 20 ms late on the wire: the frame waits for it (tolerance 50 ms)
        doc = rig.send("late", 12, depth_msg(depth, 12, 0), info, depth_after=0.02)
        assert len(match_boxes(truth, _boxes(doc), 0.5)) == 2, doc
        # stamps 10 ms apart pair; 200 ms apart do not
        doc = rig.send("near", 13, depth_msg(depth, 13, 10_000_000), info)
        assert len(doc["objects"]) == 2
        doc = rig.send("far", 14, depth_msg(depth, 14, 200_000_000), info)
        assert doc["objects"] == []
        doc = rig.send("none", 15)                         # no depth at all
        assert doc["objects"] == []
        assert wait_for(lambda: int(rig.status().get("colour_only", 0)) >= 2, 5.0)
        st = rig.status()
        assert int(st["depth_used"]) >= 4 and int(st["depth_errors"]) == 0
        # every object of the frames with depth was placed (two per frame)
        assert int(st["objects_placed"]) >= 8 and st["objects_not_placed"] == "0", st
        assert "no depth image within 0.05 s" in st["last_colour_only_reason"]
        assert st["depth_topic"] == "/rgbd/cam/depth" and st["level"] == b"\x00"
        assert st["camera_info_distortion_px"] == "0.0"       # a CameraInfo without d
        # the registration check has seen this camera's registered depth: no shift
        assert st["depth_registration_shift_px"] == "0,0"
        assert 0.0 <= float(st["depth_noise_at_1m_mm"]) < 1.0   # exact depth, in mm steps
        assert st["depth_sparse"] == "false"                     # dense ray-cast depth
        assert st["depth_fattening_px"] == "0"                   # sharp ray-cast edges


def test_a_latched_camera_info_reaches_a_transient_local_subscription(ctx, tester, bundle,
                                                                      scene, tmp_path):
    """A CameraInfo published once, latched (reliable, transient local), before the node
    starts: with ``camera_info_durability: transient_local`` the node gets it and uses
    depth; with the default (volatile) it never does, and its reason says which setting
    to change (it said only "no CameraInfo received yet", forever)."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    depth, _ = scene
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    for ns, durability, used in (("/latched", "transient_local", True),
                                 ("/volatile", "volatile", False)):
        pub = tester.node.create_publisher(CameraInfo, f"{ns}/cam/info", latched)
        pub.publish(info_msg(K))                            # once, before the node
        rig = Rig(tester, ns)
        with running_node(ctx, ns, bundle, tmp_path, crop_source="proposals",
                          image_topics=["cam/image"], depth_topics=["cam/depth"],
                          camera_info_topics=["cam/info"], depth_sync_tolerance=0.05,
                          inference_backend="torch", warm_text_encoder=False,
                          camera_info_durability=durability):
            assert wait_for(lambda: tester.node.count_subscribers(f"{ns}/cam/depth") > 0, 10.0)
            # the stored CameraInfo comes once the subscription is matched: frames until it
            # has (a volatile subscription: 5 frames, none with depth)
            docs: list[dict] = []
            end = time.monotonic() + 20.0
            while time.monotonic() < end and len(docs) < (50 if used else 5):
                sec = 30 + len(docs)
                docs.append(rig.send(f"{durability}-{sec}", sec, depth_msg(depth, sec, 0)))
                if used and len(docs[-1]["objects"]) == 2:
                    break
            assert (len(docs[-1]["objects"]) == 2) is used, docs[-1]
            assert used or not any(d["objects"] for d in docs), docs
            # the status after that frame comes with the next diagnostics period
            assert not used or wait_for(lambda: int(rig.status()["depth_used"]) >= 1, 5.0)
            st = rig.status()
            assert (int(st["depth_used"]) >= 1) is used, st
            if not used:
                assert "camera_info_durability: transient_local" in \
                    st["last_colour_only_reason"], st
        tester.node.destroy_publisher(pub)


def test_placed_objects_are_published_as_3d_detections(ctx, tester, bundle, scene, tmp_path):
    """With the real vision_msgs: ``~/detections_3d`` holds one Detection3D per named,
    placed object (its 3-D box in the camera's frame, the same as ``~/labels``), one message
    per RGB-D frame; a node without depth topics does not advertise it."""
    vm = pytest.importorskip(
        "vision_msgs.msg", reason="vision_msgs is not on PyPI; build it with "
        "../shared/tools/vision_msgs_build.sh and source its env.sh to run this")
    from vl_distill_ros.evaluation.scoring import match_boxes

    depth, truth = scene
    rig = Rig(tester, "/rgbd3")
    got: list = []
    tester.node.create_subscription(vm.Detection3DArray, "/rgbd3/vl_distill_node/detections_3d",
                                    got.append, 10)
    with _node(ctx, "/rgbd3", bundle, tmp_path):
        doc = rig.send("placed", 20, depth_msg(depth, 20, 0), info_msg(K))
        assert wait_for(lambda: any(a.header.frame_id == "placed" for a in got), 5.0)
        arr = next(a for a in got if a.header.frame_id == "placed")
        known = [o for o in doc["objects"] if o["known"]]
        assert len(arr.detections) == len(known) and known, doc
        for det, obj in zip(arr.detections, known):
            c = det.bbox.center
            assert [c.position.x, c.position.y, c.position.z] == pytest.approx(obj["position"],
                                                                               abs=1e-3)
            assert [c.orientation.x, c.orientation.y, c.orientation.z, c.orientation.w] == \
                pytest.approx(obj["orientation"], abs=1e-3)
            assert [det.bbox.size.x, det.bbox.size.y, det.bbox.size.z] == pytest.approx(
                obj["size"], abs=1e-3)
            assert det.results[0].hypothesis.class_id == obj["label"]
            assert det.id == str(obj["track_id"])            # object tracking is on
            z = det.results[0].pose.pose.position.z
            assert z == pytest.approx(obj["position"][2], abs=1e-3)
        for i, j, _ in match_boxes(truth, _boxes(doc), 0.5):
            assert np.linalg.norm(np.array(doc["objects"][j]["position"])
                                  - cuboid_centre(SCENE[i])) < 0.02
        # depth that came but was refused (another size): an empty array for the frame,
        # as for depth paired but not used (it sent none, and a consumer lost step)
        rig.send("refused", 21, depth_msg(depth[:, :200], 21, 0), info_msg(K))
        assert wait_for(lambda: any(a.header.frame_id == "refused" for a in got), 5.0)
        assert next(a for a in got if a.header.frame_id == "refused").detections == []
        rig.send("no-depth", 22)                          # no depth at all: no array
        time.sleep(0.5)
        assert not any(a.header.frame_id == "no-depth" for a in got)
    with running_node(ctx, "/colour3", bundle, tmp_path, crop_source="proposals",
                      image_topics=["cam/image"], inference_backend="torch",
                      warm_text_encoder=False):
        time.sleep(0.5)
        assert tester.node.count_publishers("/colour3/vl_distill_node/detections_3d") == 0
        assert tester.node.count_publishers("/colour3/vl_distill_node/detections") == 1


@pytest.mark.parametrize("problem, expected", [
    ("encoding", "unsupported depth encoding 'rgb8'"),
    ("size", "depth must be registered (aligned) to the colour image"),
    ("zeros", "focal lengths must be > 0"),
])
def test_bad_depth_gives_a_camera_diagnostic_and_colour_keeps_working(
        ctx, tester, bundle, scene, tmp_path, problem, expected):
    depth, _ = scene
    ns = f"/bad_{problem}"
    rig = Rig(tester, ns)
    msg = {"encoding": depth_msg(depth, 20, 0, "rgb8"),
           "size": depth_msg(depth[::2, ::2].copy(), 20, 0)}.get(problem, depth_msg(depth, 20, 0))
    info = info_msg(None if problem == "zeros" else K)
    with _node(ctx, ns, bundle, tmp_path):
        assert wait_for(lambda: tester.node.count_subscribers(f"{ns}/cam/depth") > 0, 10.0)
        doc = rig.send(f"bad-{problem}", 20, msg, info)
        assert doc["objects"] == []                      # colour-only, still published

        def warned():
            st = rig.status()
            return st["level"] == b"\x01" and expected in st["message"]
        assert wait_for(warned, 10.0), rig.status()
        st = rig.status()
        assert int(st["depth_errors"]) >= 1 and expected in st["last_depth_error"]
        # a good frame after it is still paired (one bad message breaks nothing)
        if problem != "zeros":
            doc = rig.send("good", 21, depth_msg(depth, 21, 0), info_msg(K))
            assert len(doc["objects"]) == 2


def test_depth_parameters_are_checked_at_start_up(ctx, bundle, tmp_path):
    base = [Parameter("model_path", value=str(bundle)),
            Parameter("text_cache_dir", value=str(tmp_path)),
            Parameter("warm_text_encoder", value=False),
            Parameter("image_topics", Parameter.Type.STRING_ARRAY, ["a", "b"])]
    for extra, why in (
            ([Parameter("depth_topics", Parameter.Type.STRING_ARRAY, ["da"]),
              Parameter("camera_info_topics", Parameter.Type.STRING_ARRAY, ["ia", "ib"])],
             "depth_topics must be empty or list one entry per image_topics entry"),
            # a camera without depth has "" in both lists, not in one of them
            ([Parameter("depth_topics", Parameter.Type.STRING_ARRAY, ["da", ""]),
              Parameter("camera_info_topics", Parameter.Type.STRING_ARRAY, ["ia", "ib"])],
             r"camera 1 \(b\): depth_topics and camera_info_topics entries go together"),
            ([Parameter("depth_topics", Parameter.Type.STRING_ARRAY, ["", "db"]),
              Parameter("camera_info_topics", Parameter.Type.STRING_ARRAY, ["", "ib"]),
              Parameter("depth_camera_info_topics", Parameter.Type.STRING_ARRAY, ["x", ""]),
              Parameter("depth_to_colour_poses", Parameter.Type.STRING_ARRAY,
                        ["0 0 0 0 0 0 1", ""])],
             "camera 0: an unregistered depth camera needs a depth topic"),
            ([Parameter("depth_topics", Parameter.Type.STRING_ARRAY, ["da", "db"])],
             "depth_topics and camera_info_topics go together"),
            ([Parameter("image_topics", Parameter.Type.STRING_ARRAY,
                        ["a", "d/image_raw/compressedDepth"])],
             r"carry compressedDepth \(depth\) images: list them in depth_topics"),
            ([Parameter("depth_camera_info_topics", Parameter.Type.STRING_ARRAY, ["x"])],
             "must each list one entry per image_topics entry"),
            ([Parameter("depth_topics", Parameter.Type.STRING_ARRAY, ["da", "db"]),
              Parameter("camera_info_topics", Parameter.Type.STRING_ARRAY, ["ia", "ib"]),
              Parameter("depth_camera_info_topics", Parameter.Type.STRING_ARRAY, ["x", ""]),
              Parameter("depth_to_colour_poses", Parameter.Type.STRING_ARRAY,
                        ["0.05 0 0 0 0 1", ""])],
             r"entry 0 \('0.05 0 0 0 0 1'\): a depth-to-colour pose is 7 finite values"),
            ([Parameter("depth_camera_info_topics", Parameter.Type.STRING_ARRAY, ["x", ""]),
              Parameter("depth_to_colour_poses", Parameter.Type.STRING_ARRAY,
                        ["0 0 0 0 0 0 1", ""])],
             "camera 0: an unregistered depth camera needs a depth topic"),
            # one camera listed twice, as written or after name resolution: each of its
            # frames would be labelled twice
            ([Parameter("image_topics", Parameter.Type.STRING_ARRAY, ["a", " a"])],
             r"image_topics lists /startup/a twice \('a' and ' a'\)"),
            ([Parameter("image_topics", Parameter.Type.STRING_ARRAY, ["a", "/startup/a"])],
             r"image_topics lists /startup/a twice \('a' and '/startup/a'\)"),
            # one registered depth topic cannot belong to two colour cameras
            ([Parameter("depth_topics", Parameter.Type.STRING_ARRAY, ["d", "/startup/d"]),
              Parameter("camera_info_topics", Parameter.Type.STRING_ARRAY, ["ia", "ib"])],
             r"depth_topics lists /startup/d twice"),
            ([Parameter("image_topics", Parameter.Type.STRING_ARRAY,
                        [f"c{i}" for i in range(33)])],
             "image_topics lists 33 cameras; one node serves at most 32")):
        with pytest.raises(StartupError, match=why):
            VlDistillNode(namespace="/startup", context=ctx, parameter_overrides=base + extra)


def test_a_camera_without_depth_beside_an_rgbd_camera_runs_colour_only(
        ctx, tester, bundle, scene, tmp_path):
    """``""`` in ``depth_topics``/``camera_info_topics``: that camera has no depth (its
    frames are labelled colour only, not held back waiting for a partner, and its status
    has no depth counters) while the RGB-D camera beside it pairs its depth. The node took
    depth for every camera or none: such a rig ran colour only, and replay-eval replayed a
    bag where only some cameras have depth without any."""
    depth, _ = scene
    ns = "/some_depth"
    rig = Rig(tester, ns)
    with running_node(ctx, ns, bundle, tmp_path, crop_source="proposals",
                      image_topics=["cam/image", "web/image"],
                      depth_topics=["cam/depth", ""], camera_info_topics=["cam/info", ""],
                      depth_sync_tolerance=0.05, inference_backend="torch",
                      warm_text_encoder=False) as node:
        assert [cam.depth is None for cam in node._cameras] == [False, True]
        assert node._det3d_pub is not None or node._vision_msgs is None
        doc = rig.send("rgbd", 30, depth_msg(depth, 30, 0), info_msg(K))
        assert len(doc["objects"]) == 2                  # paired with its depth
        labels = tester.watch_labels(f"{ns}/vl_distill_node/labels")
        doc = publish_until_labelled(tester, f"{ns}/web/image", colour_msg(31, 0, "web"), labels)
        assert doc["camera"] == f"{ns}/web/image" and doc["objects"] == []
        assert wait_for(lambda: tester.camera_status(rig.fqn, f"{ns}/web/image"), 10.0)
        web = tester.camera_status(rig.fqn, f"{ns}/web/image")
        assert "depth_used" not in web and web["level"] == b"\x00", web
        assert wait_for(lambda: int(rig.status()["depth_used"]) >= 1, 10.0), rig.status()


def test_depth_topics_are_read_only(ctx, bundle, tmp_path):
    with running_node(ctx, "/ro", bundle, tmp_path, warm_text_encoder=False) as node:
        res = node.set_parameters([Parameter("depth_topics", Parameter.Type.STRING_ARRAY,
                                             ["x"])])
        assert not res[0].successful and "read-only" in res[0].reason
        assert list(node.get_parameter("depth_topics").value) == []
        assert node.get_parameter("depth_sync_tolerance").value == pytest.approx(0.02)


def _compressed(fmt: str, data: bytes, sec: int, frame_id: str) -> CompressedImage:
    msg = CompressedImage()
    _header(msg, sec, 0, frame_id)
    msg.format, msg.data = fmt, data
    return msg


def test_compressed_colour_and_compressed_depth_are_subscribed_and_paired(
        ctx, tester, bundle, scene, tmp_path):
    """image_transport's topics: JPEG colour on .../compressed and compressedDepth PNG on
    .../compressedDepth (16UC1 and 32FC1) are paired like raw images; a corrupt payload
    on either is a per-camera diagnostic and the next frame is processed."""
    import struct

    import cv2

    from vl_distill_ros.evaluation.scoring import match_boxes

    depth, truth = scene
    ns = "/compressed"
    colour_topic, depth_topic = f"{ns}/cam/image/compressed", f"{ns}/cam/depth/compressedDepth"
    info_pub = tester.node.create_publisher(CameraInfo, f"{ns}/cam/info", 10)
    labels = tester.watch_labels(f"{ns}/vl_distill_node/labels")
    grey = np.full((240, 320, 3), GREY, np.uint8)
    jpeg = encode_compressed_image(grey, "jpeg", 95)
    # 32FC1 as the transport quantises it (a = 100 * 101, b = 1 - a / 10)
    a, b = 100.0 * 101.0, 1.0 - 100.0 * 101.0 / 10.0
    q = np.where(depth > 0, a / np.where(depth > 0, depth, 1) + b, 0).astype(np.uint16)
    inverse = ("32FC1; compressedDepth png",
               struct.pack("<iff", 0, a, b) + cv2.imencode(".png", q)[1].tobytes())

    def send(frame_id: str, sec: int, colour: tuple, depth_payload: tuple | None) -> dict:
        def found():
            return next((d for _, d in labels if d["header"]["frame_id"] == frame_id), None)
        end = time.monotonic() + 20.0
        while time.monotonic() < end:
            info_pub.publish(info_msg(K))
            if depth_payload is not None:
                tester.publish(depth_topic, _compressed(*depth_payload, sec, "cam"))
            tester.publish(colour_topic, _compressed(*colour, sec, frame_id))
            if wait_for(lambda: found() is not None, 0.5):
                return found()
        raise AssertionError(f"no labels for {frame_id} within 20 s")

    def status() -> dict:
        assert wait_for(lambda: tester.camera_status(f"{ns}/vl_distill_node", colour_topic)
                        is not None, 10.0)
        return tester.camera_status(f"{ns}/vl_distill_node", colour_topic)

    with running_node(ctx, ns, bundle, tmp_path, crop_source="proposals",
                      image_topics=["cam/image/compressed"],
                      depth_topics=["cam/depth/compressedDepth"],
                      camera_info_topics=["cam/info"], depth_sync_tolerance=0.05,
                      inference_backend="torch", warm_text_encoder=False):
        assert wait_for(lambda: tester.node.count_subscribers(colour_topic) > 0, 10.0)
        doc = send("mm", 30, jpeg, encode_compressed_depth(depth))
        assert doc["camera"] == colour_topic
        assert len(match_boxes(truth, _boxes(doc), 0.5)) == 2, doc
        doc = send("inverse", 31, jpeg, inverse)
        assert len(match_boxes(truth, _boxes(doc), 0.5)) == 2, doc
        # a depth payload that is not a PNG: colour-only, a depth error with the reason
        doc = send("bad-depth", 32, jpeg, ("16UC1; compressedDepth png", b"\0" * 12 + b"xx"))
        assert doc["objects"] == []
        assert wait_for(lambda: "neither JPEG nor PNG" in status().get("last_depth_error", ""),
                        10.0), status()
        # a colour payload that is not a JPEG: skipped and reported; the next one is labelled
        tester.publish(colour_topic, _compressed("jpeg", b"\x00" * 64, 33, "bad-colour"))
        assert wait_for(lambda: int(status().get("bad_frames", 0)) >= 1, 10.0), status()
        st = status()
        assert "neither JPEG nor PNG" in st["message"] and st["transport"] == "compressed"
        doc = send("after", 34, jpeg, encode_compressed_depth(depth))
        assert len(match_boxes(truth, _boxes(doc), 0.5)) == 2, doc
        assert not any(d["header"]["frame_id"] == "bad-colour" for _, d in labels)
        assert wait_for(lambda: int(status()["depth_used"]) >= 3, 10.0), status()


def test_a_remapped_image_topic_gets_the_type_of_its_new_name(ctx, tester, bundle, tmp_path):
    """`-r image:=.../compressed` with the default image_topics ["image"]: the node
    subscribes to the remapped topic as CompressedImage and labels its frames."""
    import threading

    from rclpy.executors import SingleThreadedExecutor

    from test_node import STRING_ARRAY

    topic = "/remapped/cam/color/image_raw/compressed"
    node = VlDistillNode(namespace="/remapped", context=ctx, cli_args=[
        "--ros-args", "-r", f"image:={topic}"], parameter_overrides=[
        Parameter("model_path", value=str(bundle)),
        Parameter("text_cache_dir", value=str(tmp_path / "tc")),
        Parameter("vocabulary_store", value=str(tmp_path / "store.yaml")),
        Parameter("warm_text_encoder", value=False),
        Parameter("labels", STRING_ARRAY, ["banana", "apple"])])
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        assert node.get_parameter("image_topics").value == ["image"]
        labels = tester.watch_labels("/remapped/vl_distill_node/labels")
        grey = np.full((60, 80, 3), GREY, np.uint8)
        msg = _compressed(*encode_compressed_image(grey, "png"), 40, "remapped")

        def found():
            return any(d["header"]["frame_id"] == "remapped" for _, d in labels)
        end = time.monotonic() + 20.0
        while not found() and time.monotonic() < end:
            tester.publish(topic, msg)
            wait_for(found, 0.5)
        assert found()
        doc = next(d for _, d in labels if d["header"]["frame_id"] == "remapped")
        assert doc["camera"] == topic
    finally:
        executor.shutdown(timeout_sec=5.0)
        thread.join(timeout=5.0)
        node.destroy_node()


def test_the_node_back_projects_depth_through_the_camera_info_lens_model(
        ctx, tester, bundle, tmp_path, monkeypatch):
    """A wide, unrectified lens (plumb_bob k1 = -0.15): with the CameraInfo's d the node
    boxes the four objects and nothing else, and reports how far the lens moves the
    corner; the same frames with d left out give false boxes where the table bends."""
    import test_depth
    from vl_distill_ros.evaluation.scoring import match_boxes

    k = CameraIntrinsics(200.0, 200.0, 159.5, 119.5, 320, 240)
    lens = [-0.15, 0.02, 0.0, 0.0, 0.0]
    objs = [(-0.25, -0.1, 0.08, 0.06, 0.1), (0.25, 0.15, 0.07, 0.07, 0.12),
            (0.0, 0.0, 0.1, 0.08, 0.08), (-0.2, 0.3, 0.06, 0.06, 0.09)]
    monkeypatch.setattr(test_depth, "_rays", lambda kk: test_depth._lens_rays(kk, *lens[:2]))
    depth, truth = test_depth.render_tabletop(objs, k=k, distance=0.8)
    results = {}
    for name, d in (("lens", lens), ("pinhole", [])):
        ns = f"/lens_{name}"
        info = info_msg(CameraIntrinsics(k.fx, k.fy, k.cx, k.cy, 320, 240))
        info.distortion_model, info.d = "plumb_bob", d
        rig = Rig(tester, ns)
        with _node(ctx, ns, bundle, tmp_path / name):
            assert wait_for(lambda: tester.node.count_subscribers(f"{ns}/cam/depth") > 0, 10.0)
            results[name] = rig.send(f"{name}-frame", 50, depth_msg(depth, 50, 0), info)
            assert wait_for(lambda: rig.status().get("camera_info_distortion_px", "") != "",
                            10.0)
            results[name + "_px"] = float(rig.status()["camera_info_distortion_px"])
    lens_boxes, pinhole_boxes = _boxes(results["lens"]), _boxes(results["pinhole"])
    assert len(lens_boxes) == 4 and len(match_boxes(truth, lens_boxes, 0.5)) == 4, lens_boxes
    assert len(pinhole_boxes) > 4, pinhole_boxes
    assert results["lens_px"] > 10.0 and results["pinhole_px"] == 0.0


def test_an_image_rect_topic_is_taken_as_rectified(ctx, tester, bundle, tmp_path):
    """On ``.../image_rect`` the node uses the CameraInfo's P and not its lens: rectified
    (pinhole) frames of a wide view with the raw camera's CameraInfo (a lens in d) give the
    four objects and nothing else; on an ``image_raw`` topic the same CameraInfo would bend
    the frames a second time (a false box here, see the first assertion)."""
    import test_depth
    from vl_distill_ros.evaluation.scoring import match_boxes

    k = CameraIntrinsics(200.0, 200.0, 159.5, 119.5, 320, 240)
    objs = [(-0.25, -0.1, 0.08, 0.06, 0.1), (0.25, 0.15, 0.07, 0.07, 0.12),
            (0.0, 0.0, 0.1, 0.08, 0.08), (-0.2, 0.3, 0.06, 0.06, 0.09)]
    depth, truth = test_depth.render_tabletop(objs, k=k, distance=0.8)
    lens = [0.15, 0.0, 0.0, 0.0, 0.0]
    wrong = CameraIntrinsics.from_k([k.fx, 0, k.cx, 0, k.fy, k.cy, 0, 0, 1], 320, 240,
                                    "plumb_bob", lens)
    assert len(propose_depth_boxes(depth, wrong).boxes) > 4   # the lens applied twice
    info = info_msg(k)
    info.distortion_model, info.d = "plumb_bob", lens
    info.p = [k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    ns = "/rect"
    labels = tester.watch_labels(f"{ns}/vl_distill_node/labels")
    info_pub = tester.node.create_publisher(CameraInfo, f"{ns}/cam/info", 10)
    with running_node(ctx, ns, bundle, tmp_path, crop_source="proposals",
                      image_topics=["cam/image_rect"], depth_topics=["cam/depth"],
                      camera_info_topics=["cam/info"], depth_sync_tolerance=0.05,
                      inference_backend="torch", warm_text_encoder=False):
        assert wait_for(lambda: tester.node.count_subscribers(f"{ns}/cam/depth") > 0, 10.0)

        def found():
            return next((d for _, d in labels if d["header"]["frame_id"] == "rect"), None)
        end = time.monotonic() + 20.0
        while found() is None and time.monotonic() < end:
            info_pub.publish(info)
            tester.publish(f"{ns}/cam/depth", depth_msg(depth, 60, 0))
            tester.publish(f"{ns}/cam/image_rect", colour_msg(60, 0, "rect"))
            wait_for(lambda: found() is not None, 0.5)
        boxes = _boxes(found())
        assert len(boxes) == 4 and len(match_boxes(truth, boxes, 0.5)) == 4, boxes
        assert wait_for(lambda: (tester.camera_status(
            f"{ns}/vl_distill_node", f"{ns}/cam/image_rect") or {}).get(
            "camera_info_distortion_px") == "0.0", 10.0)


@pytest.mark.parametrize("do_rectify", [False, True])
def test_binning_and_roi_in_the_camera_info_describe_the_smaller_frames(ctx, tester, bundle,
                                                                        tmp_path, do_rectify):
    """A camera binned 2x2 over a 640x480 window of its 800x600 sensor (REP 104) sends
    320x240 frames with the full-resolution K, its binning and its ROI: the node takes the
    camera of those frames and boxes the four objects from depth; read as the
    full-resolution camera the CameraInfo would not fit the frames (depth refused). The
    ROI's ``do_rectify`` (typically True when a subwindow is captured, says
    sensor_msgs/RegionOfInterest) changes nothing: the ROI is the raw sensor window."""
    from vl_distill_ros.evaluation.scoring import match_boxes

    small = CameraIntrinsics(200.0, 200.0, 159.75, 119.75, 320, 240)
    objs = [(-0.25, -0.1, 0.08, 0.06, 0.1), (0.25, 0.15, 0.07, 0.07, 0.12),
            (0.0, 0.0, 0.1, 0.08, 0.08), (-0.2, 0.3, 0.06, 0.06, 0.09)]
    depth, truth = render_tabletop(objs, k=small, distance=0.8)
    info = CameraInfo()
    info.header.frame_id = "cam"
    info.width, info.height = 800, 600
    info.k = [400.0, 0.0, 399.5, 0.0, 400.0, 299.5, 0.0, 0.0, 1.0]
    info.binning_x = info.binning_y = 2
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 80, 60, 640, 480
    info.roi.do_rectify = do_rectify
    ns = f"/binned{int(do_rectify)}"
    rig = Rig(tester, ns)
    with _node(ctx, ns, bundle, tmp_path):
        assert wait_for(lambda: tester.node.count_subscribers(f"{ns}/cam/depth") > 0, 10.0)
        boxes = _boxes(rig.send("binned", 70, depth_msg(depth, 70, 0), info))
        assert len(boxes) == 4 and len(match_boxes(truth, boxes, 0.5)) == 4, boxes
        assert wait_for(lambda: int(rig.status()["depth_used"]) >= 1, 10.0), rig.status()
        assert int(rig.status()["depth_errors"]) == 0, rig.status()


def test_depth_scale_reads_16_bit_depth_in_other_units(ctx, tester, bundle, tmp_path):
    """A camera publishing 16UC1 in 0.25 mm units (an L515's raw depth): with
    ``depth_scale: 0.00025`` the node boxes the four objects from depth (read as
    millimetres, the table's centre would lie 3.2 m away). In 0.1 mm
    units read as millimetres it lies 8 m away: the frame goes colour-only and its reason
    in ``/diagnostics`` and in the log asks about the units (it was only in
    ``/diagnostics``)."""
    from vl_distill_ros.evaluation.scoring import match_boxes

    objs = [(-0.25, -0.1, 0.08, 0.06, 0.1), (0.25, 0.15, 0.07, 0.07, 0.12),
            (0.0, 0.0, 0.1, 0.08, 0.08), (-0.2, 0.3, 0.06, 0.06, 0.09)]
    depth, truth = render_tabletop(objs, k=K, distance=0.8)
    quarter = np.round(depth * 4000.0).astype(np.uint16)
    assert np.abs(quarter.astype(np.float32) * np.float32(0.00025) - depth).max() < 2e-4
    msg = Image()
    msg.header.stamp.sec, msg.header.frame_id = 80, "cam"
    msg.height, msg.width, msg.encoding, msg.step = 240, 320, "16UC1", 640
    msg.data = quarter.tobytes()
    rig = Rig(tester, "/quarter")
    with running_node(ctx, "/quarter", bundle, tmp_path, crop_source="proposals",
                      image_topics=["cam/image"], depth_topics=["cam/depth"],
                      camera_info_topics=["cam/info"], depth_sync_tolerance=0.05,
                      depth_scale=0.00025, inference_backend="torch",
                      warm_text_encoder=False):
        assert wait_for(lambda: tester.node.count_subscribers("/quarter/cam/depth") > 0, 10.0)
        boxes = _boxes(rig.send("quarter", 80, msg, info_msg(K)))
        assert len(boxes) == 4 and len(match_boxes(truth, boxes, 0.5)) == 4, boxes
        assert wait_for(lambda: int(rig.status()["depth_used"]) >= 1, 10.0), rig.status()
    # 0.1 mm units (YCB-Video's depth images) read as millimetres (the default depth_scale):
    # the table lies 8 m away, out of range; colour only, and the reason asks about units
    msg.data = np.round(depth * 10000.0).astype(np.uint16).tobytes()
    rig = Rig(tester, "/tenth")
    with running_node(ctx, "/tenth", bundle, tmp_path, crop_source="proposals",
                      image_topics=["cam/image"], depth_topics=["cam/depth"],
                      camera_info_topics=["cam/info"], depth_sync_tolerance=0.05,
                      inference_backend="torch", warm_text_encoder=False) as node:
        warnings = _captured_warnings(node)
        assert wait_for(lambda: tester.node.count_subscribers("/tenth/cam/depth") > 0, 10.0)
        rig.send("tenth", 80, msg, info_msg(K))
        assert wait_for(lambda: int(rig.status().get("colour_only", 0)) >= 1, 10.0), \
            str(rig.status())
        reason = rig.status()["last_colour_only_reason"]
        assert "lies beyond max_depth_m" in reason and "depth_scale" in reason, reason
        logged = [w for w in warnings if "depth paired but not used" in w]
        assert len(logged) == 1 and "depth_scale" in logged[0], warnings


def _captured_warnings(node) -> list[str]:
    """The texts of the node's logged warnings from now on (still logged as usual)."""
    warnings: list[str] = []
    logger = node.get_logger()
    node.get_logger = lambda: SimpleNamespace(
        warning=lambda text, **kw: (warnings.append(text), logger.warning(text)),
        info=logger.info, error=logger.error, debug=logger.debug)
    return warnings


def test_depth_in_the_wrong_unit_is_a_camera_warning_naming_the_depth_scale(
        ctx, tester, bundle, tmp_path):
    """Right depth first: OK, no ``depth_unit_warning``. Then 16UC1 in 0.1 mm units
    (YCB-Video's) read as millimetres: every frame goes colour-only (still labelled), the
    camera turns WARN in ``/diagnostics`` with ``depth_unit_warning`` naming the factor and
    ``depth_scale 0.0001``, and the log says so once (rate-limited), where before only
    ``last_colour_only_reason`` of an OK status asked about the units."""
    objs = [(-0.25, -0.1, 0.08, 0.06, 0.1), (0.25, 0.15, 0.07, 0.07, 0.12)]
    depth, _ = render_tabletop(objs, k=K, distance=0.8)
    rig = Rig(tester, "/units")
    with _node(ctx, "/units", bundle, tmp_path) as node:
        warnings = _captured_warnings(node)
        assert wait_for(lambda: tester.node.count_subscribers("/units/cam/depth") > 0, 10.0)
        rig.send("right", 90, depth_msg(depth, 90, 0), info_msg(K))
        assert wait_for(lambda: int(rig.status()["depth_used"]) >= 1, 10.0), rig.status()
        assert rig.status()["level"] == b"\x00" and rig.status()["depth_unit_warning"] == ""
        tenths = depth_msg(depth, 91, 0)
        tenths.data = np.round(depth * 10000.0).astype(np.uint16).tobytes()
        for sec in range(91, 95):
            tenths.header.stamp.sec = sec
            doc = rig.send(f"tenth-{sec}", sec, tenths, info_msg(K))
            assert doc["objects"] == [] or all("position" not in o or o["position"] is None
                                               for o in doc["objects"])

        def warned():
            st = rig.status()
            return st["level"] == b"\x01" and "wrong unit" in st["message"]
        assert wait_for(warned, 10.0), rig.status()
        text = rig.status()["depth_unit_warning"]
        assert "x0.1 would put its median" in text, text
        assert "depth_scale 0.0001 (now 0.001)" in text, text
        assert "32FC1" not in text                  # the camera's depth is 16-bit
        logged = [w for w in warnings if "wrong unit" in w]
        assert len(logged) == 1 and "depth_scale 0.0001" in logged[0], warnings


def test_unregistered_depth_is_aligned_to_the_colour_camera(ctx, tester, bundle, tmp_path):
    """A depth camera 5 cm beside the colour camera, with its own intrinsics, publishing its
    own depth image and CameraInfo: with depth_camera_info_topics and depth_to_colour_poses
    the node aligns it and boxes the four objects where the colour camera sees them."""
    import test_depth_alignment as tda
    from vl_distill_ros.evaluation.scoring import match_boxes

    _, truth = render_tabletop(tda.OBJECTS, k=K, distance=0.8)
    seen, _ = render_tabletop(tda.OBJECTS, k=tda.DEPTH, distance=0.8,
                              camera_offset=tda.OFFSET)
    as_registered = [tuple(b) for b in propose_depth_boxes(seen, K).boxes]
    assert len(match_boxes(truth, as_registered, 0.5)) < 4      # read as registered: misplaced
    depth_info = info_msg(tda.DEPTH)
    ns = "/unregistered"
    rig = Rig(tester, ns)
    depth_info_pub = tester.node.create_publisher(CameraInfo, f"{ns}/cam/depth_info", 10)
    pose = " ".join(str(v) for v in (*tda.OFFSET, 0, 0, 0, 1))
    with running_node(ctx, ns, bundle, tmp_path, crop_source="proposals",
                      image_topics=["cam/image"], depth_topics=["cam/depth"],
                      camera_info_topics=["cam/info"], depth_sync_tolerance=0.05,
                      depth_camera_info_topics=["cam/depth_info"],
                      depth_to_colour_poses=[pose], inference_backend="torch",
                      warm_text_encoder=False):
        assert wait_for(lambda: tester.node.count_subscribers(f"{ns}/cam/depth_info") > 0,
                        10.0)
        for _ in range(3):
            depth_info_pub.publish(depth_info)
            time.sleep(0.1)
        boxes = _boxes(rig.send("unregistered", 90, depth_msg(seen, 90, 0), info_msg(K)))
        assert len(boxes) == 4 and len(match_boxes(truth, boxes, 0.5)) == 4, (truth, boxes)
        assert wait_for(lambda: int(rig.status()["depth_used"]) >= 1, 10.0), rig.status()
        status = rig.status()
        assert int(status["depth_errors"]) == 0, status
        assert status["depth_camera_info_topic"] == f"{ns}/cam/depth_info"


TF2_MSGS_MISSING = ("tf2_msgs is not on PyPI: build it outside the repository (as "
                    "../shared/tools/vision_msgs_build.sh does vision_msgs, from ros2/geometry2) "
                    "and put it on PYTHONPATH")


def _tf2_msgs():
    try:
        from tf2_msgs.msg import TFMessage
    except ImportError:
        return None
    return TFMessage


@pytest.mark.skipif(_tf2_msgs() is None, reason=TF2_MSGS_MISSING)
def test_unregistered_depth_takes_its_pose_from_tf_static(ctx, tester, bundle, tmp_path):
    """An empty depth_to_colour_poses entry: the node chains /tf_static (latched, published
    before the node started, as a driver's) from the depth image's frame to the colour
    image's, and boxes the four objects where the colour camera sees them."""
    from geometry_msgs.msg import TransformStamped
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    import test_depth_alignment as tda
    from test_unregistered_depth_bags import realsense_tree
    from vl_distill_ros.evaluation.scoring import match_boxes

    TFMessage = _tf2_msgs()
    links = []
    for parent, child, t, q in realsense_tree():
        ts = TransformStamped()
        ts.header.frame_id, ts.child_frame_id = parent, child
        (ts.transform.translation.x, ts.transform.translation.y,
         ts.transform.translation.z) = (float(v) for v in t)
        (ts.transform.rotation.x, ts.transform.rotation.y, ts.transform.rotation.z,
         ts.transform.rotation.w) = (float(v) for v in q)
        links.append(ts)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    tf_pub = tester.node.create_publisher(TFMessage, "/tf_static", latched)
    tf_pub.publish(TFMessage(transforms=links))
    _, truth = render_tabletop(tda.OBJECTS, k=K, distance=0.8)
    seen, _ = render_tabletop(tda.OBJECTS, k=tda.DEPTH, distance=0.8,
                              camera_offset=tda.OFFSET)
    depth = depth_msg(seen, 95, 0)
    depth.header.frame_id = "camera_depth_optical_frame"
    ns = "/from_tf"
    rig = Rig(tester, ns)
    depth_info_pub = tester.node.create_publisher(CameraInfo, f"{ns}/cam/depth_info", 10)
    with running_node(ctx, ns, bundle, tmp_path, crop_source="proposals",
                      image_topics=["cam/image"], depth_topics=["cam/depth"],
                      camera_info_topics=["cam/info"], depth_sync_tolerance=0.05,
                      depth_camera_info_topics=["cam/depth_info"],
                      depth_to_colour_poses=[""], inference_backend="torch",
                      warm_text_encoder=False):
        assert wait_for(lambda: tester.node.count_subscribers(f"{ns}/cam/depth_info") > 0,
                        10.0)
        for _ in range(3):
            depth_info_pub.publish(info_msg(tda.DEPTH))
            time.sleep(0.1)
        boxes = _boxes(rig.send("camera_color_optical_frame", 95, depth, info_msg(K)))
        assert len(boxes) == 4 and len(match_boxes(truth, boxes, 0.5)) == 4, (truth, boxes)
        assert wait_for(lambda: int(rig.status()["depth_used"]) >= 1, 10.0), rig.status()
        status = rig.status()
        assert int(status["depth_errors"]) == 0, status
        assert status["depth_pose_source"] == "tf_static"
        pose = [float(v) for v in status["depth_pose"].split()]
        assert pose == pytest.approx([*tda.OFFSET, 0, 0, 0, 1], abs=1e-6)
    tester.node.destroy_publisher(tf_pub)


@pytest.mark.skipif(_tf2_msgs() is not None, reason="tf2_msgs is installed here")
def test_an_empty_pose_without_tf2_msgs_is_refused_at_start_up(ctx, bundle, tmp_path):
    base = [Parameter("model_path", value=str(bundle)),
            Parameter("text_cache_dir", value=str(tmp_path)),
            Parameter("warm_text_encoder", value=False),
            Parameter("image_topics", Parameter.Type.STRING_ARRAY, ["a"]),
            Parameter("depth_topics", Parameter.Type.STRING_ARRAY, ["da"]),
            Parameter("camera_info_topics", Parameter.Type.STRING_ARRAY, ["ia"]),
            Parameter("depth_camera_info_topics", Parameter.Type.STRING_ARRAY, ["x"]),
            Parameter("depth_to_colour_poses", Parameter.Type.STRING_ARRAY, [""])]
    with pytest.raises(StartupError, match="needs the tf2_msgs package"):
        VlDistillNode(namespace="/startup_tf", context=ctx, parameter_overrides=base)


def test_the_close_pass_runs_on_the_listed_cameras_only(ctx, tester, bundle, tmp_path,
                                                        monkeypatch):
    """``proposal_box_net_close_topics``: a head camera and a wrist camera on one node, the
    close pass (``proposal_box_net_close_width``) on the wrist camera's frames only, found by
    its name after remapping; a name that is not an image topic is refused at start-up."""
    import threading

    from rclpy.executors import SingleThreadedExecutor

    from helpers import record_box_net_widths
    from test_node import STRING_ARRAY, publish_until_labelled

    widths = record_box_net_widths(monkeypatch)
    base = [Parameter("model_path", value=str(bundle)),
            Parameter("text_cache_dir", value=str(tmp_path / "tc")),
            Parameter("vocabulary_store", value=str(tmp_path / "store.yaml")),
            Parameter("warm_text_encoder", value=False),
            Parameter("crop_source", value="proposals"),
            Parameter("proposal_box_net_close_width", value=240),
            Parameter("image_topics", STRING_ARRAY, ["head", "wrist"])]
    with pytest.raises(StartupError, match=r"proposal_box_net_close_topics must list entries "
                                           r"of image_topics \['head', 'wrist'\]; \['arm'\]"):
        VlDistillNode(namespace="/close", context=ctx, parameter_overrides=base + [
            Parameter("proposal_box_net_close_topics", STRING_ARRAY, ["arm"])])
    wrist = "/arm/wrist_camera/image_raw"
    node = VlDistillNode(namespace="/close", context=ctx, cli_args=[
        "--ros-args", "-r", f"wrist:={wrist}"], parameter_overrides=base + [
        Parameter("proposal_box_net_close_topics", STRING_ARRAY, ["wrist"])])
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        assert node.pipeline.settings.close_cameras == (wrist,)
        labels = tester.watch_labels("/close/vl_distill_node/labels")
        # a grey frame: the first pass finds no box, so the close pass runs where allowed
        doc = publish_until_labelled(tester, "/close/head", colour_msg(50, 0, "head"), labels)
        assert doc["camera"] == "/close/head"
        assert 480 in widths and 240 not in widths
        widths.clear()
        doc = publish_until_labelled(tester, wrist, colour_msg(51, 0, "wrist"), labels)
        assert doc["camera"] == wrist
        assert 480 in widths and 240 in widths
    finally:
        executor.shutdown(timeout_sec=5.0)
        thread.join(timeout=5.0)
        node.destroy_node()


def test_objects_keep_their_track_ids_from_frame_to_frame(ctx, tester, bundle, scene, tmp_path):
    """Over DDS: the objects of consecutive RGB-D frames keep their track ids in ~/labels;
    a frame more than ``track_max_gap_s`` after the last starts new tracks; with
    ``track_objects`` false no object carries one."""
    from rclpy.parameter import Parameter

    depth, _ = scene
    rig = Rig(tester, "/tracks")
    with _node(ctx, "/tracks", bundle, tmp_path) as node:
        docs = [rig.send(f"t{sec}", sec, depth_msg(depth, sec, 0), info_msg(K))
                for sec in (30, 31, 34)]
        ids = [{tuple(o["bbox"]): o["track_id"] for o in d["objects"]} for d in docs]
        assert len(ids[0]) == 2 and ids[1] == ids[0], docs        # the same two objects
        assert set(ids[2].keys()) == set(ids[0].keys())
        assert not set(ids[2].values()) & set(ids[0].values())  # 3 s later: new tracks
        assert wait_for(lambda: rig.status().get("tracks_started") == "4", 5.0)
        assert rig.status()["tracks_active"] == "2"
        assert node.set_parameters([Parameter("track_objects", value=False)])[0].successful
        doc = rig.send("t35", 35, depth_msg(depth, 35, 0), info_msg(K))
        assert len(doc["objects"]) == 2 and all("track_id" not in o for o in doc["objects"])
        assert not node.set_parameters([Parameter("track_memory", value=1.0)])[0].successful


def test_depth_and_tracks_carry_on_when_the_stamps_go_back(ctx, tester, bundle, scene,
                                                           tmp_path):
    """Over DDS: a camera whose time goes back (``ros2 bag play --loop`` starting over, a
    simulator restarted) after more depth images than the node buffers keeps pairing
    depth with its frames (the objects are grey on a grey table: found by depth only) and
    following its objects under new track ids, not colour-only and untracked until the
    stamps pass the old ones."""
    from vl_distill_ros.evaluation.scoring import match_boxes
    from vl_distill_ros.ros.depth_input import DEPTH_BUFFER

    depth, truth = scene
    rig = Rig(tester, "/again")
    with _node(ctx, "/again", bundle, tmp_path):
        first = [rig.send(f"a{sec}", sec, depth_msg(depth, sec, 0), info_msg(K))
                 for sec in (100, 101)]
        for sec in range(102, 104 + DEPTH_BUFFER):              # the rest of the first pass
            tester.publish("/again/cam/depth", depth_msg(depth, sec, 0))
            time.sleep(0.01)
        assert wait_for(lambda: int(rig.status().get("depth_received", 0))
                        >= 2 + DEPTH_BUFFER, 10.0), rig.status()
        again = [rig.send(f"b{sec}", sec, depth_msg(depth, sec, 0), info_msg(K))
                 for sec in (40, 41)]
        for doc in again:
            assert len(match_boxes(truth, _boxes(doc), 0.5)) == 2, doc
        ids = [{tuple(o["bbox"]): o.get("track_id") for o in d["objects"]}
               for d in first + again]
        assert ids[1] == ids[0] and ids[3] == ids[2], ids
        assert None not in ids[2].values()
        assert not set(ids[2].values()) & set(ids[0].values())     # new tracks
