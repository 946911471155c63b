"""Tabletop scene rendering (sim.scene), camera bags (bags.bag_io), `make-bag`."""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from vl_distill_ros.bags.bag_io import (
    BagError,
    BagFrame,
    GroundTruthObject,
    iter_raw_messages,
    read_camera_bag,
    read_ground_truth_sidecar,
    write_camera_bag,
    write_ground_truth_sidecar,
)

POOL = ["006_mustard_bottle", "011_banana", "013_apple", "024_bowl", "003_cracker_box"]
BAG_KEYS = "011_banana,013_apple,024_bowl"
CAMERA, HAND, GT = "/camera/image_raw", "/hand_camera/image_raw", "/ground_truth"


# -- bag-corruption helpers ---------------------------------------------------------------
def storage_file(bag: Path) -> Path:
    """The single storage file (.mcap or .db3) of a bag folder."""
    (found,) = [p for p in bag.iterdir() if p.suffix in (".mcap", ".db3")]
    return found


def truncate_storage(bag: Path, keep: float = 0.5) -> Path:
    """Cut the bag's storage file to ``keep`` of its size (a crashed recorder)."""
    path = storage_file(bag)
    with path.open("r+b") as fh:
        fh.truncate(int(path.stat().st_size * keep))
    return path


def garble_metadata(bag: Path) -> Path:
    """Overwrite the bag's metadata.yaml with text that is not YAML."""
    path = bag / "metadata.yaml"
    path.write_text("rosbag2_bagfile_information: {version: [unclosed\n", encoding="utf-8")
    return path


def copy_bag(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# -- scenes -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scene_renderer(ycb_models: Path):
    from vl_distill_ros.sim.scene import SceneRenderer

    with SceneRenderer(ycb_models) as r:
        yield r


def _ring_median(image: np.ndarray, box: tuple[int, int, int, int], pad: int = 6) -> np.ndarray:
    """Median colour of a ring of pixels just outside ``box`` (the table around it)."""
    x, y, w, h = box
    H, W = image.shape[:2]
    x0, y0, x1, y1 = max(x - pad, 0), max(y - pad, 0), min(x + w + pad, W), min(y + h + pad, H)
    ring = np.ones((y1 - y0, x1 - x0), bool)
    ring[y - y0:y - y0 + h, x - x0:x - x0 + w] = False
    return np.median(image[y0:y1, x0:x1][ring], axis=0)


def test_scene_has_requested_objects_with_boxes_on_the_table(scene_renderer):
    from vl_distill_ros.sim.scene import SceneSpec, render_scene

    spec = SceneSpec(objects_per_scene=(3, 3))
    for seed in (1, 2):
        frame = render_scene(scene_renderer, POOL, np.random.default_rng(seed), spec)
        assert frame.image.shape == (480, 640, 3) and frame.image.dtype == np.uint8
        assert frame.hand_image is None and frame.hand_objects == []
        assert len(frame.objects) == 3, frame.meta["placed"]
        keys = [o.key for o in frame.objects]
        assert len(set(keys)) == 3 and set(keys) <= set(POOL)
        for key, (x, y, w, h), frac in frame.objects:
            assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= 640 and y + h <= 480
            assert w * h >= spec.min_visible_pixels
            assert 0.25 <= frac <= 1.0
            # the object's pixels differ from the table around its box
            crop = frame.image[y:y + h, x:x + w].astype(np.int16)
            table = _ring_median(frame.image, (x, y, w, h)).astype(np.int16)
            differs = np.abs(crop - table).max(axis=2) > 30
            assert differs.mean() > 0.2, (key, differs.mean())
        # boxes of different objects do not coincide
        boxes = {o.bbox for o in frame.objects}
        assert len(boxes) == 3
    json.dumps(frame.meta)  # metadata is JSON-serialisable


def test_scene_is_deterministic_and_hand_camera(scene_renderer):
    from vl_distill_ros.sim.scene import SceneSpec, render_scene

    spec = SceneSpec(width=320, height=240, objects_per_scene=(2, 3), hand_camera=True,
                     hand_width=160, hand_height=120)
    a = render_scene(scene_renderer, POOL, np.random.default_rng(7), spec)
    b = render_scene(scene_renderer, POOL, np.random.default_rng(7), spec)
    c = render_scene(scene_renderer, POOL, np.random.default_rng(8), spec)
    assert np.array_equal(a.image, b.image) and a.objects == b.objects
    assert np.array_equal(a.hand_image, b.hand_image) and a.hand_objects == b.hand_objects
    assert not np.array_equal(a.image, c.image)
    assert a.image.shape == (240, 320, 3) and a.hand_image.shape == (120, 160, 3)
    assert a.hand_target in [o.key for o in a.objects]
    target = [o for o in a.hand_objects if o.key == a.hand_target]
    assert target, "the hand camera's target is visible in the hand image"
    x, y, w, h = target[0].bbox
    assert x + w <= 160 and y + h <= 120 and w * h > 0.1 * 160 * 120  # a close-up


def test_a_shifted_camera_sees_a_window_of_a_larger_frame(scene_renderer):
    """``SceneCamera.shift`` moves the principal point: the 160x120 image of a camera shifted
    by (30, -20) pixels is the window at (50, 80) of the 320x240 image of the same camera
    unshifted (same focal length), objects, depth and all; its intrinsics say so."""
    import math

    from vl_distill_ros.sim.scene import SceneSpec, _scene_layers, sample_layout
    from vl_distill_ros.sim.scene_camera import SceneCamera, sample_main_camera

    spec = SceneSpec(width=320, height=240, objects_per_scene=(3, 3))
    rng = np.random.default_rng(4)
    layout = sample_layout(scene_renderer.geometry, POOL, rng, spec)
    ids = scene_renderer._show({o.key: (o.base, o.yaw) for o in layout.placed})
    big = sample_main_camera(layout, rng, spec)
    fov = 2 * math.degrees(math.atan(60 / big.focal))
    small = SceneCamera(eye=big.eye, target=big.target, roll=big.roll, fov_y=fov, width=160,
                        height=120, shift=(30.0, -20.0))
    assert small.focal == pytest.approx(big.focal)
    assert small.intrinsics()[2:] == pytest.approx((109.5, 39.5))
    _, seg_big, depth_big, _ = _scene_layers(scene_renderer, layout, big, True)
    _, seg, depth, _ = _scene_layers(scene_renderer, layout, small, True)
    window = (slice(80, 200), slice(50, 210))
    assert len(set(np.unique(seg)) & set(ids.values())) >= 2, "objects in the window"
    assert np.mean(seg == seg_big[window]) > 0.995
    assert np.median(np.abs(depth - depth_big[window])) < 1e-4
    assert np.mean(np.abs(depth - depth_big[window]) < 0.01) > 0.99


def test_scene_border_cut_cuts_one_object_and_boxes_what_is_in_view(scene_renderer):
    """``border_cut_prob``: a frame's edge cuts an object; its box is that of the pixels in
    view and its visible fraction counts the part outside. Off (the default), the frames
    are those of a spec without the setting (nothing more is drawn)."""
    from vl_distill_ros.sim.meshes import RenderError
    from vl_distill_ros.sim.scene import SceneSpec, render_scene

    spec = SceneSpec(width=320, height=240, objects_per_scene=(3, 3), border_cut_prob=1.0)
    cut_fracs = []
    for seed in (1, 2, 3):
        frame = render_scene(scene_renderer, POOL, np.random.default_rng(seed), spec)
        assert "shift" in frame.meta["camera"]
        at_edge = [o for o in frame.objects if o.bbox[0] == 0 or o.bbox[1] == 0
                   or o.bbox[0] + o.bbox[2] == 320 or o.bbox[1] + o.bbox[3] == 240]
        assert at_edge, frame.meta
        cut_fracs += [o.visible_frac for o in at_edge]
    assert min(cut_fracs) < 0.85
    plain = render_scene(scene_renderer, POOL, np.random.default_rng(1),
                         SceneSpec(width=320, height=240, objects_per_scene=(3, 3)))
    off = render_scene(scene_renderer, POOL, np.random.default_rng(1),
                       SceneSpec(width=320, height=240, objects_per_scene=(3, 3),
                                 border_cut_prob=0.0))
    assert np.array_equal(plain.image, off.image) and plain.objects == off.objects
    for bad in ({"border_cut_prob": 1.5}, {"border_cut_keep": (0.7, 0.4)},
                {"border_cut_keep": (0.0, 0.5)}):
        with pytest.raises(RenderError, match="border_cut"):
            SceneSpec(**bad).validate()


def test_scene_spec_and_keys_are_checked(scene_renderer):
    from vl_distill_ros.sim.meshes import RenderError
    from vl_distill_ros.sim.scene import SceneSpec, render_scene

    rng = np.random.default_rng(0)
    with pytest.raises(RenderError, match="objects_per_scene"):
        render_scene(scene_renderer, POOL, rng, SceneSpec(objects_per_scene=(4, 2)))
    with pytest.raises(RenderError, match="011_banan.*did you mean"):
        render_scene(scene_renderer, ["011_banan"], rng, SceneSpec())
    with pytest.raises(RenderError, match="no objects"):
        render_scene(scene_renderer, [], rng, SceneSpec())


# -- make-bag ------------------------------------------------------------------------------
def _make_bag(argv: list[str]) -> int:
    from vl_distill_ros.cli import build_parser

    args = build_parser().parse_args(["make-bag", *argv])
    return args.func(args)


def _vocab_names(repo_root: Path) -> set[str]:
    from vl_distill_ros.model.vocabulary import Vocabulary

    return set(Vocabulary.load(repo_root / "config" / "ycb_vocabulary.yaml").names)


@pytest.fixture(scope="module")
def made_bags(ycb_models: Path, tmp_path_factory, repo_root: Path):
    """Two small bags written by `make-bag`: MCAP with the hand camera and a sidecar, and
    sqlite3 without."""
    root = tmp_path_factory.mktemp("bags")
    common = ["--frames", "3", "--fps", "5", "--width", "160", "--height", "120",
              "--hand-width", "96", "--hand-height", "72", "--objects", BAG_KEYS,
              "--objects-per-scene", "2", "--models-dir", str(ycb_models),
              "--vocabulary", str(repo_root / "config" / "ycb_vocabulary.yaml"),
              "--split", str(repo_root / "config" / "splits" / "ycb_paper.yaml"),
              "--no-progress", "--seed", "3"]
    mcap, sqlite = root / "scenes_mcap", root / "scenes_sqlite"
    sidecar = root / "gt.jsonl"
    assert _make_bag(["--out", str(mcap), "--storage", "mcap", "--hand-camera",
                      "--sidecar", str(sidecar), *common]) == 0
    assert _make_bag(["--out", str(sqlite), "--storage", "sqlite3", "--compression", "none",
                      *common]) == 0
    return {"mcap": mcap, "sqlite3": sqlite, "sidecar": sidecar, "root": root}


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_make_bag_reads_back_with_rosbags(made_bags, storage, repo_root: Path):
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    bag = made_bags[storage]
    hand = storage == "mcap"
    assert sorted(p.name for p in bag.iterdir()) == sorted(
        ["metadata.yaml", f"{bag.name}.{'mcap' if storage == 'mcap' else 'db3'}"])
    assert not list(bag.parent.glob(".*partial*")), "no temporary folders left behind"
    names = _vocab_names(repo_root)

    images: dict[str, list] = {CAMERA: [], HAND: []}
    truth: dict[tuple[str, int], dict] = {}
    with Reader(bag) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        expected = {CAMERA: "sensor_msgs/msg/Image", GT: "std_msgs/msg/String"}
        if hand:
            expected[HAND] = "sensor_msgs/msg/Image"
        assert topics == expected
        for conn, t, raw in reader.messages():
            msg = store.deserialize_cdr(raw, conn.msgtype)
            if conn.msgtype == "sensor_msgs/msg/Image":
                stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
                assert stamp == t and msg.encoding == "rgb8"
                assert msg.step == msg.width * 3 and len(msg.data) == msg.step * msg.height
                images[conn.topic].append((stamp, msg.height, msg.width, msg.header.frame_id))
            else:
                doc = json.loads(msg.data)
                stamp = doc["header"]["stamp"]["sec"] * 10**9 + doc["header"]["stamp"]["nanosec"]
                assert stamp == t
                truth[(doc["camera"], stamp)] = doc
    assert len(images[CAMERA]) == 3 and len(images[HAND]) == (3 if hand else 0)
    assert {(h, w) for _, h, w, _ in images[CAMERA]} == {(120, 160)}
    assert {f for *_, f in images[CAMERA]} == {"camera_color_optical_frame"}
    stamps = [s for s, *_ in images[CAMERA]]
    assert stamps == [1_700_000_000 * 10**9 + i * 200_000_000 for i in range(3)]  # 5 fps
    if hand:
        assert {(h, w) for _, h, w, _ in images[HAND]} == {(72, 96)}
        assert [s for s, *_ in images[HAND]] == stamps
    # one ground-truth document per image, same stamp, the ~/labels schema, vocabulary names
    assert set(truth) == {(topic, s) for topic in images for s, *_ in images[topic]}
    for (topic, _), doc in truth.items():
        assert set(doc) == {"header", "camera", "vocabulary_version", "objects"}
        for obj in doc["objects"]:
            assert set(obj) == {"bbox", "label", "key", "score", "known", "top_k",
                                "visible_fraction"}
            assert 0.0 < obj["visible_fraction"] <= 1.0
            assert obj["label"] in names and obj["key"] in BAG_KEYS.split(",")
            assert obj["score"] == 1.0 and obj["known"] is True and obj["top_k"] == []
            assert len(obj["bbox"]) == 4 and all(isinstance(v, int) for v in obj["bbox"])
    assert sum(len(d["objects"]) for (t, _), d in truth.items() if t == CAMERA) >= 4


def test_read_camera_bag_and_sidecar(made_bags):
    contents = read_camera_bag(made_bags["mcap"])
    assert contents.storage == "mcap" and contents.ground_truth_source == "topic"
    assert contents.image_topics == [CAMERA, HAND]
    assert contents.message_counts == {CAMERA: 3, HAND: 3, GT: 6}
    frames = list(contents.images())
    assert [f.topic for f in frames] == [CAMERA, HAND] * 3  # bag-time order
    for f in frames:
        assert f.image.shape == ((120, 160, 3) if f.topic == CAMERA else (72, 96, 3))
        assert f.stamp_ns == f.log_time_ns
        objects = contents.objects_for(f.topic, f.stamp_ns)
        assert objects is not None
        for o in objects:
            x, y, w, h = o.bbox
            assert 0 <= x and 0 <= y and x + w <= f.image.shape[1] and y + h <= f.image.shape[0]
            # the render's visible fraction travels with each object
            assert o.visible_fraction is not None and 0.0 < o.visible_fraction <= 1.0
    # the sidecar written by make-bag holds the same ground truth
    from_sidecar = read_camera_bag(made_bags["mcap"], ground_truth=made_bags["sidecar"])
    assert from_sidecar.ground_truth_source == "sidecar"
    assert from_sidecar.ground_truth == contents.ground_truth
    assert only_topic(list(contents.images([HAND]))) == HAND


def only_topic(frames) -> str:
    (topic,) = {f.topic for f in frames}
    return topic


def test_cdr_payload_deserialises_with_rclpy(made_bags):
    import rclpy.serialization as serialization
    import sensor_msgs.msg as sensor_msgs
    raw = next(m for m in iter_raw_messages(made_bags["sqlite3"]) if m.topic == CAMERA)
    assert raw.msgtype == "sensor_msgs/msg/Image"
    msg = serialization.deserialize_message(raw.data, sensor_msgs.Image)
    decoded = next(read_camera_bag(made_bags["sqlite3"]).images())
    assert (msg.height, msg.width, msg.encoding) == (120, 160, "rgb8")
    assert msg.header.frame_id == "camera_color_optical_frame"
    assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == decoded.stamp_ns
    pixels = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)
    assert np.array_equal(pixels, decoded.image)


def test_corrupt_missing_and_imageless_bags(made_bags, tmp_path: Path):
    with pytest.raises(BagError, match="bag not found"):
        read_camera_bag(tmp_path / "no_such_bag")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="no metadata.yaml"):
        read_camera_bag(tmp_path / "empty")

    cut = copy_bag(made_bags["mcap"], tmp_path / "truncated")
    truncate_storage(cut)
    with pytest.raises(BagError, match="truncated.*corrupt or not a rosbag2 bag"):
        read_camera_bag(cut)

    cut_db = copy_bag(made_bags["sqlite3"], tmp_path / "truncated_db")
    truncate_storage(cut_db)
    with pytest.raises(BagError, match="corrupt"):
        read_camera_bag(cut_db)

    garbled = copy_bag(made_bags["sqlite3"], tmp_path / "garbled")
    garble_metadata(garbled)
    with pytest.raises(BagError, match="metadata.yaml"):
        read_camera_bag(garbled)

    # a valid bag with only a String topic
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    strings = tmp_path / "strings_only"
    with Writer(strings, version=9) as writer:
        conn = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
        writer.write(conn, 5, store.serialize_cdr(store.types["std_msgs/msg/String"](data="hi"),
                                                  "std_msgs/msg/String"))
    with pytest.raises(BagError, match=r"no image topics.*/chatter \(std_msgs/msg/String\)"):
        read_camera_bag(strings)


# -- bag_io without models ---------------------------------------------------------------
def _write_raw_image_bag(path: Path, images: list[tuple[str, int, int, int, bytes]]) -> None:
    """A bag of Image messages with arbitrary (encoding, height, width, step, data)."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    t = store.types
    with Writer(path, version=9) as writer:
        conn = writer.add_connection("/cam", "sensor_msgs/msg/Image", typestore=store)
        for i, (enc, h, w, step, data) in enumerate(images):
            header = t["std_msgs/msg/Header"](
                stamp=t["builtin_interfaces/msg/Time"](sec=10 + i, nanosec=0), frame_id="f")
            msg = t["sensor_msgs/msg/Image"](header=header, height=h, width=w, encoding=enc,
                                             is_bigendian=0, step=step,
                                             data=np.frombuffer(data, np.uint8))
            writer.write(conn, (10 + i) * 10**9, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))


def test_images_respect_encoding_and_step(tmp_path: Path):
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    padded = np.zeros((2, 12), np.uint8)  # step 12 > width * 3 = 9
    padded[:, :9] = rgb[:, :, ::-1].reshape(2, 9)  # bgr8 rows plus padding
    mono = np.array([[0, 128, 255]], np.uint8)
    bag = tmp_path / "encodings"
    _write_raw_image_bag(bag, [("bgr8", 2, 3, 12, padded.tobytes()),
                               ("mono8", 1, 3, 3, mono.tobytes()),
                               ("rgb8", 2, 3, 9, rgb.tobytes()[:-1])])  # truncated
    contents = read_camera_bag(bag)
    assert contents.ground_truth_source == "none" and contents.image_topics == ["/cam"]
    frames = contents.images()
    first = next(frames)
    assert first.encoding == "bgr8" and np.array_equal(first.image, rgb)
    assert first.stamp_ns == 10 * 10**9
    assert np.array_equal(next(frames).image[0, :, 0], mono[0])
    with pytest.raises(BagError, match="/cam at 12000000000 ns.*truncated"):
        next(frames)


def test_write_camera_bag_refuses_and_replaces(tmp_path: Path):
    image = np.zeros((8, 10, 3), np.uint8)
    frames = [BagFrame(i * 10**8, image, [GroundTruthObject((1, 2, 3, 4), "banana",
                                                            "011_banana")]) for i in range(2)]
    other = tmp_path / "not_a_bag"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(BagError, match="exists"):
        write_camera_bag(other, frames)
    with pytest.raises(BagError, match="not a rosbag2 bag"):
        write_camera_bag(other, frames, overwrite=True)
    bag = write_camera_bag(tmp_path / "bag", frames)
    with pytest.raises(BagError, match="exists"):
        write_camera_bag(bag, frames)
    write_camera_bag(bag, frames[:1], storage="sqlite3", overwrite=True)
    assert read_camera_bag(bag).message_counts == {CAMERA: 1, GT: 1}
    with pytest.raises(BagError, match="RGB"):
        write_camera_bag(tmp_path / "bad", [BagFrame(0, np.zeros((8, 10), np.uint8))])
    with pytest.raises(BagError, match="earlier"):
        write_camera_bag(tmp_path / "bad", [BagFrame(5, image), BagFrame(4, image)])
    with pytest.raises(BagError, match="storage"):
        write_camera_bag(tmp_path / "bad", frames, storage="rosbag1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag", "not_a_bag"]


def test_sidecar_round_trip_and_errors(tmp_path: Path):
    objs = [GroundTruthObject((1, 2, 3, 4), "banana", "011_banana", 0.25),
            GroundTruthObject((5, 6, 7, 8), "apple")]
    path = write_ground_truth_sidecar(tmp_path / "gt.jsonl",
                                      [(CAMERA, 12_500_000_000, objs), (HAND, 13 * 10**9, [])])
    assert read_ground_truth_sidecar(path) == {(CAMERA, 12_500_000_000): objs,
                                               (HAND, 13 * 10**9): []}
    first = path.read_text().splitlines()[0]
    assert json.loads(first) == {"stamp": {"sec": 12, "nanosec": 500000000}, "camera": CAMERA,
                                 "objects": [{"bbox": [1, 2, 3, 4], "label": "banana",
                                              "key": "011_banana", "visible_fraction": 0.25},
                                             {"bbox": [5, 6, 7, 8], "label": "apple"}]}
    good = first + "\n\n"  # blank lines are fine
    bad_lines = {
        "{not json": "not valid JSON",
        "[1, 2]": "expected a JSON object",
        json.dumps({"stamp": {"sec": 1}, "camera": CAMERA}): "missing 'objects'",
        json.dumps({"stamp": {"sec": -1}, "camera": CAMERA, "objects": []}): "stamp.sec",
        json.dumps({"stamp": {"sec": 1, "nanosec": 10**9}, "camera": CAMERA,
                    "objects": []}): "nanosec",
        json.dumps({"stamp": {"sec": 1}, "camera": "cam", "objects": []}): "'camera'",
        json.dumps({"stamp": {"sec": 1}, "camera": CAMERA,
                    "objects": [{"bbox": [1, 2, 3], "label": "x"}]}): r"objects\[0\]: 'bbox'",
        json.dumps({"stamp": {"sec": 1}, "camera": CAMERA,
                    "objects": [{"bbox": [1, 2, 3, 4], "label": ""}]}): "'label'",
        json.dumps({"stamp": {"sec": 1}, "camera": CAMERA,
                    "objects": [{"bbox": [1, 2, 3, 4], "label": "x",
                                 "visible_fraction": 1.5}]}): "'visible_fraction'",
        json.dumps({"stamp": {"sec": 1}, "camera": CAMERA,
                    "objects": [{"bbox": [1, 2, 3, 4], "label": "x",
                                 "visible_fraction": True}]}): "'visible_fraction'",
        json.dumps({"stamp": {"sec": 1}, "camera": CAMERA,
                    "objects": [{"bbox": [1, 2, 3, 4], "label": "x",
                                 "visible_fraction": float("nan")}]}): "'visible_fraction'",
    }
    for line, reason in bad_lines.items():
        bad = tmp_path / "bad.jsonl"
        bad.write_text(good + line + "\n")
        with pytest.raises(BagError, match=rf"bad.jsonl:3: .*{reason}"):
            read_ground_truth_sidecar(bad)
    with pytest.raises(BagError, match="not found"):
        read_ground_truth_sidecar(tmp_path / "missing.jsonl")


def test_make_bag_missing_models_is_exit_2(tmp_path: Path, capsys):
    from vl_distill_ros.commands import make_bag

    parser = argparse.ArgumentParser()
    make_bag.register(parser.add_subparsers())
    args = parser.parse_args(["make-bag", "--out", str(tmp_path / "bag"), "--models-dir",
                              str(tmp_path / "no_models"), "--no-progress"])
    assert make_bag.run(args) == 2
    err = capsys.readouterr().err
    assert "no_models" in err and "ycbbenchmarks.com" in err and "--models-dir" in err
    assert not (tmp_path / "bag").exists()
    args = parser.parse_args(["make-bag", "--out", str(tmp_path / "bag"),
                              "--objects-per-scene", "4-2"])
    assert make_bag.run(args) == 2
    assert "--objects-per-scene" in capsys.readouterr().err
    for option, value, message in (("--table-size", "0.8,0.4", "--table-size"),
                                   ("--table-size", "0.1,0.5", "table_length_m"),
                                   ("--fov-y", "30,20", "--fov-y"),
                                   ("--fov-y", "5,8", "fov_y_deg"),
                                   ("--elevation", "30,20", "--elevation"),
                                   ("--elevation", "2,25", "elevation_deg"),
                                   ("--roll", "30,-30", "--roll"),
                                   ("--roll", "-200,0", "roll_deg"),
                                   ("--table-kinds", "wood,marble", "--table-kinds"),
                                   ("--table-kinds", ",", "--table-kinds")):
        args = parser.parse_args(["make-bag", "--out", str(tmp_path / "bag"),
                                  f"{option}={value}"])
        assert make_bag.run(args) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bag").exists()


def test_make_bag_table_kinds_and_size_both_reach_the_scene(ycb_models: Path, tmp_path: Path):
    """``--table-kinds`` and ``--table-size`` together: the scene spec has both (a busy
    cloth on a small table), and without ``--table-kinds`` the plain kinds of earlier bags."""
    from vl_distill_ros.commands import make_bag
    from vl_distill_ros.sim.scene_spec import TABLE_KINDS

    parser = argparse.ArgumentParser()
    make_bag.register(parser.add_subparsers())
    for extra, kinds in ((["--table-kinds", "print,plaid,print"], ("print", "plaid")),
                         ([], TABLE_KINDS)):
        args = parser.parse_args(["make-bag", "--out", str(tmp_path / "bag"), "--models-dir",
                                  str(ycb_models), "--objects", BAG_KEYS,
                                  "--table-size", "0.4,0.7", *extra])
        spec, _, _, renderer = make_bag._setup(args)
        renderer.close()
        assert spec.table_kinds == kinds
        assert spec.table_length_m == spec.table_width_m == (0.4, 0.7)


def test_make_bag_fov_sets_the_cameras_focal_length(ycb_models: Path, tmp_path: Path,
                                                    repo_root: Path):
    """``--fov-y``: the camera_info of a narrow camera (YCB-Video's Xtion sees about 25
    degrees) has the focal length of that view, and the frames pair with their depth."""
    bag = tmp_path / "narrow"
    assert _make_bag(["--out", str(bag), "--frames", "1", "--width", "160", "--height", "120",
                      "--objects", BAG_KEYS, "--objects-per-scene", "2", "--depth",
                      "--fov-y", "25,25", "--camera-distance", "1.2,1.2",
                      "--models-dir", str(ycb_models), "--no-progress",
                      "--vocabulary", str(repo_root / "config" / "ycb_vocabulary.yaml"),
                      "--split", str(repo_root / "config" / "splits" / "ycb_paper.yaml")]) == 0
    (frame,) = list(read_camera_bag(bag).rgbd_frames(tolerance_ns=0))
    fx, fy = frame.camera_info[:2]
    assert fx == pytest.approx(60 / np.tan(np.radians(12.5)), rel=1e-3) and fy == fx
    assert frame.depth is not None and frame.depth.shape == (120, 160)


def test_make_bag_cut_border_moves_the_principal_point_in_camera_info(
        ycb_models: Path, tmp_path: Path, repo_root: Path):
    """``--cut-border 1``: every frame has an object box at the image's edge and its
    CameraInfo carries the moved principal point, so depth back-projects as rendered."""
    bag = tmp_path / "cut"
    assert _make_bag(["--out", str(bag), "--frames", "2", "--width", "160", "--height", "120",
                      "--objects", BAG_KEYS, "--objects-per-scene", "2", "--depth",
                      "--cut-border", "1", "--models-dir", str(ycb_models), "--no-progress",
                      "--vocabulary", str(repo_root / "config" / "ycb_vocabulary.yaml"),
                      "--split", str(repo_root / "config" / "splits" / "ycb_paper.yaml")]) == 0
    data = read_camera_bag(bag)
    frames = list(data.rgbd_frames(tolerance_ns=0))
    assert len(frames) == 2
    for frame in frames:
        cx, cy = frame.camera_info[2:4]
        assert (cx, cy) != pytest.approx((79.5, 59.5))
        boxes = [o.bbox for o in data.objects_for(frame.topic, frame.stamp_ns)]
        assert any(x <= 0 or y <= 0 or x + w >= 160 or y + h >= 120 for x, y, w, h in boxes)
    assert _make_bag(["--out", str(tmp_path / "bad"), "--cut-border", "2",
                      "--models-dir", str(ycb_models), "--no-progress"]) == 2
    assert not (tmp_path / "bad").exists()


def test_make_bag_roll_turns_the_camera_about_its_optical_axis(
        ycb_models: Path, tmp_path: Path, repo_root: Path):
    """``--roll``: the same scene seen with the camera turned upside down (a wrist camera)
    is the upright frame rotated by 180 degrees (up to the shading gradient drawn over
    the image, which does not turn with it), and so are its ground-truth boxes."""
    common = ["--frames", "1", "--width", "160", "--height", "120", "--objects", BAG_KEYS,
              "--objects-per-scene", "2", "--noise-sigma", "0,0", "--seed", "3",
              "--models-dir", str(ycb_models), "--no-progress",
              "--vocabulary", str(repo_root / "config" / "ycb_vocabulary.yaml"),
              "--split", str(repo_root / "config" / "splits" / "ycb_paper.yaml")]
    assert _make_bag(["--out", str(tmp_path / "up"), "--roll=0,0", *common]) == 0
    assert _make_bag(["--out", str(tmp_path / "down"), "--roll=180,180", *common]) == 0
    (up,), (down,) = (list(read_camera_bag(tmp_path / n).images()) for n in ("up", "down"))
    turned = np.asarray(down.image)[::-1, ::-1].astype(int)
    assert np.mean(np.abs(turned - up.image)) * 1.8 < \
        np.mean(np.abs(np.asarray(down.image).astype(int) - up.image))
    gt = {n: [o for _, objs in read_camera_bag(tmp_path / n).ground_truth.items()
              for o in objs] for n in ("up", "down")}
    assert len(gt["up"]) == len(gt["down"]) == 2
    for a, b in zip(sorted(gt["up"], key=lambda o: o.label),
                    sorted(gt["down"], key=lambda o: o.label), strict=True):
        x, y, w, h = a.bbox
        assert np.allclose(b.bbox, (160 - x - w, 120 - y - h, w, h), atol=2)


def test_make_bag_image_format_jpeg_writes_image_transports_topics(
        ycb_models: Path, tmp_path: Path, repo_root: Path):
    """`--image-format jpeg`: colour as JPEG CompressedImage on .../compressed, depth as
    compressedDepth PNG; the same scenes as the raw bag (lossless depth, near colour), and
    the ground truth and sidecar name the compressed topic."""
    common = ["--frames", "2", "--width", "160", "--height", "120", "--objects", BAG_KEYS,
              "--objects-per-scene", "2", "--models-dir", str(ycb_models), "--depth",
              "--vocabulary", str(repo_root / "config" / "ycb_vocabulary.yaml"),
              "--split", str(repo_root / "config" / "splits" / "ycb_paper.yaml"),
              "--no-progress", "--seed", "5"]
    assert _make_bag(["--out", str(tmp_path / "raw"), *common]) == 0
    assert _make_bag(["--out", str(tmp_path / "jpg"), "--image-format", "jpeg",
                      "--sidecar", str(tmp_path / "gt.jsonl"), *common]) == 0
    raw, jpg = read_camera_bag(tmp_path / "raw"), read_camera_bag(tmp_path / "jpg")
    colour = CAMERA + "/compressed"
    assert jpg.topics[colour] == "sensor_msgs/msg/CompressedImage"
    assert jpg.topics["/camera/depth/image_raw/compressedDepth"] == \
        "sensor_msgs/msg/CompressedImage"
    assert jpg.image_topics == [colour]
    sidecar = read_ground_truth_sidecar(tmp_path / "gt.jsonl")
    assert {cam for cam, _ in sidecar} == {cam for cam, _ in jpg.ground_truth} == {colour}
    assert [o for _, o in sorted(jpg.ground_truth.items())] == \
        [o for _, o in sorted(raw.ground_truth.items())]
    for a, b in zip(raw.rgbd_frames(), jpg.rgbd_frames(), strict=True):
        assert np.abs(a.image.astype(int) - b.image).mean() < 4.0
        np.testing.assert_array_equal(a.depth, b.depth)
    size = {n: sum(f.stat().st_size for f in (tmp_path / n).rglob("*")) for n in ("raw", "jpg")}
    assert size["jpg"] < size["raw"]


def test_make_bag_depth_camera_writes_a_realsense_bag_recorded_without_alignment(
        ycb_models: Path, tmp_path: Path, repo_root: Path):
    """`--depth-camera`: the same colour frames and ground truth as `--depth`, but depth
    rendered by a separate, wider depth camera 15 mm to the left (848x480, its own CameraInfo
    and frame, its pose on /tf_static). Read back, the reader
    aligns it with that pose, and it agrees with the registered depth of the same scene."""
    common = ["--frames", "2", "--width", "320", "--height", "240", "--objects", BAG_KEYS,
              "--objects-per-scene", "2", "--depth", "--depth-noise", "none",
              "--models-dir", str(ycb_models), "--no-progress",
              "--vocabulary", str(repo_root / "config" / "ycb_vocabulary.yaml"),
              "--split", str(repo_root / "config" / "splits" / "ycb_paper.yaml")]
    registered, separate = tmp_path / "registered", tmp_path / "separate"
    assert _make_bag(["--out", str(registered), *common]) == 0
    assert _make_bag(["--out", str(separate), "--depth-camera", *common]) == 0
    bag = read_camera_bag(separate)
    assert bag.topics["/tf_static"] == "tf2_msgs/msg/TFMessage"
    assert bag.topics["/camera/depth/camera_info"] == "sensor_msgs/msg/CameraInfo"
    assert bag.image_topics == [CAMERA]
    plan = bag.depth_alignment[CAMERA]
    assert plan.pose == pytest.approx((-0.015, 0, 0, 0, 0, 0, 1))
    assert (plan.depth_frame, plan.colour_frame) == ("camera_depth_optical_frame",
                                                     "camera_color_optical_frame")
    raw = next(iter_raw_messages(separate, ["/camera/depth/image_raw"]))
    from vl_distill_ros.bags.bag_io import typestore

    msg = typestore().deserialize_cdr(raw.data, raw.msgtype)
    assert (msg.width, msg.height, msg.header.frame_id) == (848, 480,
                                                            "camera_depth_optical_frame")
    reference = read_camera_bag(registered)
    assert reference.depth_alignment == {} and reference.ground_truth == bag.ground_truth
    for a, b in zip(bag.rgbd_frames(), reference.rgbd_frames(), strict=True):
        assert np.array_equal(a.image, b.image) and a.camera_info == b.camera_info
        assert a.depth.shape == b.depth.shape == (240, 320)
        both = (a.depth > 0) & (b.depth > 0)
        assert both.sum() > 0.9 * (b.depth > 0).sum()
        rel = np.abs(a.depth[both] - b.depth[both]) / b.depth[both]
        assert np.quantile(rel, 0.5) < 0.003          # millimetres and a pixel's slope
    assert _make_bag(["--out", str(tmp_path / "bad"), "--depth-camera",
                      *[a for a in common if a != "--depth"]]) == 2
    from vl_distill_ros.sim.meshes import RenderError
    from vl_distill_ros.sim.scene import SceneSpec

    for bad, message in (({"depth_camera_size": (8, 480)}, "depth_camera_size"),
                         ({"depth_camera_fov_y_deg": 170.0}, "depth_camera_fov_y_deg"),
                         ({"depth_camera_baseline_m": 2.0}, "depth_camera_baseline_m")):
        with pytest.raises(RenderError, match=message):
            SceneSpec(depth=True, depth_camera=True, **bad).validate()


def test_render_views_turns_the_camera_about_one_scene(scene_renderer):
    """``render_views``: one layout seen along an arc: the same objects in every view, the
    camera at the same height and distance from its aim point, turned by equal steps that
    add up to the sweep; one look for all views (the same colours: the object tracks' scene
    cut does not fire); the same seed, the same views."""
    from vl_distill_ros.perception.object_tracks import (SCENE_CUT, colour_histogram,
                                                         histogram_distance)
    from vl_distill_ros.sim.meshes import RenderError
    from vl_distill_ros.sim.scene import SceneSpec, render_views

    spec = SceneSpec(width=160, height=120, objects_per_scene=(3, 3))
    views = render_views(scene_renderer, POOL, np.random.default_rng(3), spec, views=4,
                         sweep_deg=30.0)
    again = render_views(scene_renderer, POOL, np.random.default_rng(3), spec, views=4,
                         sweep_deg=30.0)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(views, again))
    hists = [colour_histogram(v.image) for v in views]
    assert max(histogram_distance(a, b) for a, b in zip(hists, hists[1:])) < SCENE_CUT / 2
    placed = [[(p["key"], p["xy"]) for p in v.meta["placed"]] for v in views]
    assert all(p == placed[0] for p in placed)
    cams = [v.meta["camera"] for v in views]
    eyes = np.array([c["eye"] for c in cams])
    target = np.array(cams[0]["target"])
    assert all(np.allclose(c["target"], target) for c in cams)
    rel = eyes - target
    assert np.allclose(rel[:, 2], rel[0, 2], atol=1e-3)                 # same height
    assert np.allclose(np.linalg.norm(rel, axis=1), np.linalg.norm(rel[0]), atol=1e-3)
    turns = np.degrees(np.diff(np.unwrap(np.arctan2(rel[:, 1], rel[:, 0]))))
    assert np.allclose(np.abs(turns), 10.0, atol=0.01) and abs(turns.sum()) == \
        pytest.approx(30.0, abs=0.05)
    assert not np.array_equal(views[1].image, views[0].image)
    for bad in ({"views": 0}, {"views": 1001}, {"sweep_deg": -1.0}, {"sweep_deg": 361.0}):
        with pytest.raises(RenderError):
            render_views(scene_renderer, POOL, np.random.default_rng(3), spec, **bad)


def test_make_bag_views_per_scene_writes_consecutive_views_of_each_scene(
        ycb_models: Path, tmp_path: Path, repo_root: Path, capsys):
    """``--views-per-scene 3``: frames come in runs of three views of one scene (the same
    objects), the next run another scene; 7 frames end with a run of one. Bad values are
    usage errors."""
    bag = tmp_path / "views"
    common = ["--width", "160", "--height", "120", "--objects", ",".join(POOL),
              "--objects-per-scene", "2", "--models-dir", str(ycb_models), "--no-progress",
              "--vocabulary", str(repo_root / "config" / "ycb_vocabulary.yaml"),
              "--split", str(repo_root / "config" / "splits" / "ycb_paper.yaml")]
    assert _make_bag(["--out", str(bag), "--frames", "7", "--views-per-scene", "3",
                      "--sweep", "20", *common]) == 0
    contents = read_camera_bag(bag)
    keys = [sorted(o.key for o in contents.objects_for(m.topic, m.stamp_ns))
            for m in contents.images([CAMERA])]
    assert len(keys) == 7
    runs = [keys[0:3], keys[3:6], keys[6:]]
    for run in runs:
        assert all(k == run[0] for k in run), keys
    assert keys[0] != keys[3] or keys[3] != keys[6]
    for bad in (["--views-per-scene", "0"], ["--sweep", "400"]):
        assert _make_bag(["--out", str(tmp_path / "bad"), "--frames", "2", *bad, *common]) == 2
        assert "must be in" in capsys.readouterr().err


def test_make_bag_stamps_and_sidecar_are_checked_before_anything_is_written(tmp_path, capsys):
    """--fps inf gave every frame one stamp (left out of every score), --fps 1e-12 or
    --start-time 5e9 a struct.error (ROS Time holds seconds below 2^31), --start-time nan a
    traceback; a --sidecar that is a folder failed after the bag had replaced the earlier
    one (its ground truth then belonged to another bag)."""
    out = tmp_path / "bag"
    for option, value, message in (("--fps", "inf", "--fps must be a number in (0, 1e9]"),
                                   ("--fps", "1e10", "--fps must be a number in (0, 1e9]"),
                                   ("--fps", "1e-12", "seconds below 2^31"),
                                   ("--start-time", "5e9", "seconds below 2^31"),
                                   ("--start-time", "nan", "--start-time must be a finite"),
                                   ("--start-time", "inf", "--start-time must be a finite")):
        assert _make_bag(["--out", str(out), f"{option}={value}", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (option, value, err)
    folder = tmp_path / "sidecar_dir"
    folder.mkdir()
    earlier = tmp_path / "gt.jsonl"
    earlier.write_text("{}\n")
    for sidecar, overwrite, message in ((folder, True, "is a folder"),
                                        (earlier, False, "exists already"),
                                        (earlier / "x.jsonl", True, "is not a folder")):
        argv = ["--out", str(out), "--sidecar", str(sidecar), "--no-progress"]
        assert _make_bag(argv + (["--overwrite"] if overwrite else [])) == 2
        assert message in capsys.readouterr().err
    assert not out.exists() and earlier.read_text() == "{}\n"


def test_keep_distance_keeps_a_long_lens_close(scene_renderer):
    """A long lens (YCB-Video's Xtion, fov-y about 25 degrees) asked to stand 0.6-0.7 m from
    a crowded table was moved back until every object fit (the project's YCB-Video-like
    bags stood 0.9-2 m away). ``fit_view=False`` (``make-bag --keep-distance``) keeps the
    drawn distance; the ground truth is what is in view."""
    from vl_distill_ros.sim.scene import SceneSpec, sample_layout
    from vl_distill_ros.sim.scene_camera import sample_main_camera

    spec = SceneSpec(width=320, height=240, objects_per_scene=(6, 6), fov_y_deg=(25.0, 25.0),
                     distance_m=(0.6, 0.7), elevation_deg=(40.0, 40.0), contact_prob=0.8)
    rng = np.random.default_rng(5)
    layout = sample_layout(scene_renderer.geometry, POOL, rng, spec)

    def distances(fit: bool) -> list[float]:
        r = np.random.default_rng(9)
        cams = [sample_main_camera(layout, r, dataclasses.replace(spec, fit_view=fit))
                for _ in range(4)]
        return [float(np.linalg.norm(np.asarray(c.eye) - np.asarray(c.target))) for c in cams]

    kept, fitted = distances(False), distances(True)
    assert all(0.6 <= d <= 0.7 for d in kept), kept
    assert max(fitted) > 0.7, fitted        # moved back for the crowded table
