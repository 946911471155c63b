"""``vl-distill import-bop`` (bags.bop_scenes): BOP-format scenes (YCB-V: YCB-Video's real
frames) into camera bags that ``replay-eval`` scores like ``make-bag``'s.

The scenes here are written by the tests in BOP's layout from the shipped sample bag (a real
YCB-V scene is not available on this machine): the round trip must give back the bag's
images, depth, intrinsics and ground truth, and ``replay-eval --offline`` the same report.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from vl_distill_ros import cli
from vl_distill_ros.bags.bag_io import BagError, read_camera_bag
from vl_distill_ros.bags.bop_scenes import (YCBV_OBJECT_KEYS, load_object_names, read_bop_scene,
                                            scene_frames, ycbv_object_names)
from vl_distill_ros.model.vocabulary import Vocabulary

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "demo" / "sample_tabletop"
VOCABULARY = REPO / "config" / "ycb_vocabulary.yaml"
N_FRAMES = 12


def write_bop_scene(folder: Path, frames: list[tuple], depth_scale: float = 0.1,
                    visib: float = 0.9, suffix: str = ".png") -> dict[str, int]:
    """Write ``frames`` (``(rgb, depth m, CameraIntrinsics, objects)``) as a BOP scene with
    image ids 1.. and return the object ids given to the objects' keys (also written as
    ``objects.yaml``, id: key)."""
    (folder / "rgb").mkdir(parents=True)
    (folder / "depth").mkdir()
    cams, gts, infos, ids = {}, {}, {}, {}
    for i, (rgb, depth, k, objs) in enumerate(frames, start=1):
        cv2.imwrite(str(folder / "rgb" / f"{i:06d}{suffix}"), rgb[..., ::-1])
        cv2.imwrite(str(folder / "depth" / f"{i:06d}.png"),
                    np.round(depth * 1000.0 / depth_scale).astype(np.uint16))
        cams[str(i)] = {"cam_K": [k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0],
                        "depth_scale": depth_scale}
        gts[str(i)] = [{"obj_id": ids.setdefault(o.key, len(ids) + 1),
                        "cam_R_m2c": [1, 0, 0, 0, 1, 0, 0, 0, 1], "cam_t_m2c": [0, 0, 800]}
                       for o in objs]
        infos[str(i)] = [{"bbox_obj": list(o.bbox), "bbox_visib": list(o.bbox),
                          "visib_fract": visib} for o in objs]
    for name, doc in (("scene_camera", cams), ("scene_gt", gts), ("scene_gt_info", infos)):
        (folder / f"{name}.json").write_text(json.dumps(doc))
    (folder / "objects.yaml").write_text("".join(f"{v}: {k}\n" for k, v in ids.items()))
    return ids


@pytest.fixture(scope="module")
def sample_frames() -> list[tuple]:
    contents = read_camera_bag(SAMPLE)
    out = []
    for f in contents.rgbd_frames(tolerance_ns=20_000_000):
        out.append((f.image, f.depth, f.intrinsics(), contents.objects_for(f.topic, f.stamp_ns)))
        if len(out) == N_FRAMES:
            break
    return out


@pytest.fixture(scope="module")
def scene(sample_frames, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bop") / "000048"
    write_bop_scene(folder, sample_frames)
    return folder


def import_bop(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(["import-bop", *args, "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def test_round_trip_gives_back_images_depth_intrinsics_and_ground_truth(sample_frames, scene,
                                                                        tmp_path, capsys):
    out = tmp_path / "bag"
    code, stdout, err = import_bop([str(scene), "--out", str(out), "--objects",
                                    str(scene / "objects.yaml")], capsys)
    assert code == 0, err
    assert f"{N_FRAMES} frames of 1 scene(s), with depth and CameraInfo" in stdout
    contents = read_camera_bag(out)
    back = list(contents.rgbd_frames(tolerance_ns=0))
    assert len(back) == N_FRAMES
    stamps = [f.stamp_ns for f in back]
    assert stamps == sorted(stamps) and np.allclose(np.diff(stamps), 1e8)  # 10 fps
    for (rgb, depth, k, objs), f in zip(sample_frames, back):
        assert np.array_equal(f.image, rgb)
        assert np.allclose(f.depth, depth, atol=0.0006)  # 0.1 mm in the PNG, mm in the bag
        got = f.intrinsics()
        assert (got.fx, got.fy, got.cx, got.cy) == pytest.approx((k.fx, k.fy, k.cx, k.cy))
        truth = contents.objects_for(f.topic, f.stamp_ns)
        assert [(o.bbox, o.label, o.key) for o in truth] == \
            [(tuple(o.bbox), o.label, o.key) for o in objs]


def test_replay_eval_scores_the_imported_bag_as_the_original(scene, tmp_path, capsys):
    """The same frames through ``replay-eval --offline``: the same report, from the bag
    written by make-bag and from its BOP copy."""
    from vl_distill_ros.bags.bag_io import BagFrame, GroundTruthObject, write_camera_bag

    contents = read_camera_bag(SAMPLE)
    first = []
    for f in contents.rgbd_frames(tolerance_ns=20_000_000):
        objs = [GroundTruthObject(tuple(o.bbox), o.label, o.key)
                for o in contents.objects_for(f.topic, f.stamp_ns)]
        k = f.intrinsics()
        first.append(BagFrame(f.stamp_ns, f.image, objs, depth=f.depth,
                              intrinsics=(k.fx, k.fy, k.cx, k.cy)))
        if len(first) == N_FRAMES:
            break
    original = write_camera_bag(tmp_path / "original", first)
    imported = tmp_path / "imported"
    assert import_bop([str(scene), "--out", str(imported), "--objects",
                       str(scene / "objects.yaml")], capsys)[0] == 0
    reports = []
    for bag in (original, imported):
        code = cli.main(["replay-eval", str(bag), "--offline", "--no-plots", "--no-progress",
                         "--text-cache-dir", "", "--out", str(tmp_path / f"re_{bag.name}")])
        capsys.readouterr()
        assert code == 0
        reports.append(json.loads((tmp_path / f"re_{bag.name}" / "report.json").read_text()))
    a, b = reports
    assert a["groups"]["all"]["objects"] > 2 * N_FRAMES
    assert a["groups"] == b["groups"]
    assert a["false_positives"] == b["false_positives"]
    assert a["frames"]["evaluated"] == b["frames"]["evaluated"] == N_FRAMES


def test_zero_padded_image_ids_are_read_alike_in_the_three_files(sample_frames, tmp_path):
    """Keys "000001" in all three files: scene_camera.json's were read as numbers and the
    annotations looked up as "1", so every frame was written with no objects."""
    folder = tmp_path / "scene"
    write_bop_scene(folder, sample_frames[:2])
    for name in ("scene_camera", "scene_gt", "scene_gt_info"):
        _edit(folder, name, lambda d: [d.update({f"{int(k):06d}": d.pop(k)}) for k in list(d)])
    scene = read_bop_scene(folder)
    assert scene.image_ids == [1, 2] and all(scene.objects[i] for i in scene.image_ids)


def test_ycbv_ids_are_named_through_the_vocabulary():
    names = ycbv_object_names(Vocabulary.load(VOCABULARY))
    assert len(names.names) == 21 == len(YCBV_OBJECT_KEYS)
    assert names.lookup(2, "x") == ("cracker box", "003_cracker_box")
    assert names.lookup(11, "x") == ("pitcher", "019_pitcher_base")
    assert names.lookup(21, "x") == ("foam brick", "061_foam_brick")
    with pytest.raises(BagError, match="object id 22 is not in YCB-V's ids"):
        names.lookup(22, "scene 48, image 1")


def test_a_vocabulary_without_the_ycb_keys_is_refused(tmp_path):
    vocab = tmp_path / "v.yaml"
    vocab.write_text("labels:\n  - {key: mug, name: mug, description: A mug.}\n")
    with pytest.raises(BagError, match="no label for the YCB-V objects"):
        ycbv_object_names(Vocabulary.load(vocab))


def test_object_names_file_takes_keys_or_plain_names(tmp_path):
    path = tmp_path / "objects.yaml"
    path.write_text("1: 025_mug\n2: a red toy car\n")
    names = load_object_names(path, Vocabulary.load(VOCABULARY))
    assert names.lookup(1, "x") == ("mug", "025_mug")
    assert names.lookup(2, "x") == ("a red toy car", "")
    for text, match in (("- 1\n- 2\n", "mapping of object ids"), ("x: mug\n", "not an integer"),
                        ("1: ''\n", "non-empty string"), ("1: [a, b]\n", "non-empty string"),
                        ("-3: mug\n", r"integer in \[0"), ("1: [unclosed\n", "not valid YAML")):
        path.write_text(text)
        with pytest.raises(BagError, match=match):
            load_object_names(path)


def test_hardly_visible_and_out_of_view_objects_are_left_out(sample_frames, tmp_path):
    rgb, depth, k, objs = next(f for f in sample_frames if len(f[3]) >= 3)
    folder = tmp_path / "scene"
    write_bop_scene(folder, [(rgb, depth, k, objs)])
    info = json.loads((folder / "scene_gt_info.json").read_text())
    h, w = rgb.shape[:2]
    info["1"][0]["visib_fract"] = 0.05                       # hardly visible
    info["1"][1]["bbox_visib"] = [-1, -1, -1, -1]            # BOP: not in view
    info["1"][2]["bbox_visib"] = [w - 20, h - 10, 50, 40]    # reaches past the corner
    (folder / "scene_gt_info.json").write_text(json.dumps(info))
    names = load_object_names(folder / "objects.yaml", Vocabulary.load(VOCABULARY))
    (frame,) = scene_frames(read_bop_scene(folder), names, 0, 1e8, min_visible=0.1)
    assert [o.key for o in frame.objects] == [objs[2].key] + [o.key for o in objs[3:]]
    assert frame.objects[0].bbox == (w - 20, h - 10, 20, 10)
    assert [o.visible_fraction for o in frame.objects] == [0.9] * len(frame.objects)
    (frame,) = scene_frames(read_bop_scene(folder), names, 0, 1e8, min_visible=0.0)
    assert len(frame.objects) == len(objs) - 1               # the out-of-view one never
    assert frame.objects[0].visible_fraction == 0.05         # BOP's visib_fract kept


def test_grey_jpeg_scenes_every_and_several_scenes(sample_frames, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    write_bop_scene(a, sample_frames[:6], suffix=".jpg")
    write_bop_scene(b, sample_frames[6:], depth_scale=1.0)
    (b / "rgb").rename(b / "gray")
    for p in sorted((b / "gray").iterdir()):                  # one-channel images
        cv2.imwrite(str(p), cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2GRAY))
    (b / "objects.yaml").write_text((a / "objects.yaml").read_text())
    keys = {o.key for f in sample_frames for o in f[3]}
    (tmp_path / "objects.yaml").write_text("".join(f"{i}: {k}\n" for i, k in enumerate(
        sorted(keys), start=1)))
    for folder in (a, b):  # renumber both scenes' objects by the shared table
        table = {int(i): k for i, k in (line.split(": ") for line in
                                        (folder / "objects.yaml").read_text().splitlines())}
        shared = {k: i for i, k in enumerate(sorted(keys), start=1)}
        gt = json.loads((folder / "scene_gt.json").read_text())
        for objs in gt.values():
            for o in objs:
                o["obj_id"] = shared[table[o["obj_id"]]]
        (folder / "scene_gt.json").write_text(json.dumps(gt))
    out = tmp_path / "bag"
    code, stdout, err = import_bop([str(a), str(b), "--out", str(out), "--objects",
                                    str(tmp_path / "objects.yaml"), "--every", "2", "--no-depth",
                                    "--fps", "5"], capsys)
    assert code == 0, err
    assert "6 frames of 2 scene(s), colour only" in stdout
    contents = read_camera_bag(out)
    frames = list(contents.images())
    assert len(frames) == 6 and all(f.image.ndim == 3 for f in frames)
    assert np.allclose(np.diff([f.stamp_ns for f in frames]), 2e8)  # one stream at 5 fps
    grey = frames[3].image
    assert np.array_equal(grey[..., 0], grey[..., 1])
    assert contents.depth_topics == {} and contents.camera_info_topics == {}
    assert sorted(contents.topics) == ["/camera/image_raw", "/ground_truth"]


@pytest.mark.parametrize("spoil, match", [
    (lambda f: (f / "scene_camera.json").unlink(), "not a BOP scene folder"),
    (lambda f: (f / "scene_gt.json").write_text("{not json"), "not valid JSON"),
    (lambda f: (f / "scene_gt_info.json").write_text("[]"), "mapping of image ids"),
    (lambda f: _edit(f, "scene_camera", lambda d: d["2"].update(cam_K=[0] * 9)), "cam_K"),
    (lambda f: _edit(f, "scene_camera", lambda d: d["1"].update(depth_scale=-1)),
     "depth_scale"),
    (lambda f: _edit(f, "scene_camera", lambda d: d.update(first=d["1"])),
     "image id 'first' is not an integer"),
    (lambda f: _edit(f, "scene_gt_info", lambda d: d["1"].pop()), "lists of the same length"),
    # an image without a camera was dropped, one without annotations written as empty of
    # objects (its every box a false positive), both without a word
    (lambda f: _edit(f, "scene_camera", lambda d: d.pop("2")),
     r"images \[2\] have no entry in scene_camera.json"),
    (lambda f: (_edit(f, "scene_gt", lambda d: d.pop("2")),
                _edit(f, "scene_gt_info", lambda d: d.pop("2"))),
     r"scene_gt.json: no entry for images \[2\]"),
    (lambda f: _edit(f, "scene_gt", lambda d: d.update({"0002": d["2"]})),
     "image id 2 is given twice"),
    # JSON reads 1e999 as infinity: a traceback (exit 1) before
    (lambda f: (f / "scene_gt.json").write_text(
        (f / "scene_gt.json").read_text().replace('"obj_id": ', '"obj_id": 1e999, "x": ', 1)),
     "object id inf is not an integer"),
    (lambda f: _edit(f, "scene_gt", lambda d: d["3"][0].update(obj_id=999)),
     "object id 999 is not in"),
    (lambda f: (f / "rgb" / "000002.png").unlink(), "no rgb/000002.png"),
    (lambda f: (f / "rgb" / "000002.png").write_text("not an image"), "neither JPEG nor PNG"),
    (lambda f: ((f / "rgb" / "000002.png").unlink(), os.mkfifo(f / "rgb" / "000002.png")),
     "a FIFO"),                                          # never blocks waiting for a writer
    (lambda f: ((f / "scene_gt.json").unlink(), (f / "scene_gt.json").mkdir()),
     "not a regular file"),
    (lambda f: (f / "depth" / "000003.png").unlink(), "no depth/000003.png"),
    (lambda f: cv2.imwrite(str(f / "depth" / "000001.png"), np.ones((10, 10), np.uint16)),
     "does not match its colour image"),
    (lambda f: cv2.imwrite(str(f / "depth" / "000001.png"), np.ones((10, 10), np.uint8)),
     "16-bit"),
])
def test_bad_scenes_exit_2_with_a_message_and_leave_no_bag(sample_frames, tmp_path, capsys,
                                                           spoil, match):
    folder = tmp_path / "scene"
    write_bop_scene(folder, sample_frames[:3])
    spoil(folder)
    out = tmp_path / "bag"
    code, stdout, err = import_bop([str(folder), "--out", str(out), "--objects",
                                    str(folder / "objects.yaml")], capsys)
    assert code == 2 and "import-bop: error:" in err and stdout == ""
    assert len(__import__("re").findall(match, err)) >= 1, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "partial" in p.name]


def _edit(folder: Path, name: str, change) -> None:
    path = folder / f"{name}.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("args, match", [
    (["--min-visible", "1.5"], "--min-visible"), (["--every", "0"], "--every"),
    (["--fps", "0"], "--fps"), (["--objects", "missing.yaml"], "no such object names file"),
    (["--vocabulary", "missing.yaml"], "missing.yaml")])
def test_bad_options_exit_2(scene, tmp_path, capsys, args, match):
    code, _, err = import_bop([str(scene), "--out", str(tmp_path / "bag"), *args], capsys)
    assert code == 2 and match in err
    assert not (tmp_path / "bag").exists()


def test_poses_and_models_info_give_each_object_its_true_position(sample_frames, tmp_path,
                                                                  capsys):
    """With ``--models-info`` each object's ``cam_R_m2c`` / ``cam_t_m2c`` place the centre
    of its model's bounding box in the camera (ground truth ``position``, metres); without
    it, or for an id the file does not hold, there is none."""
    folder = tmp_path / "scene"
    ids = write_bop_scene(folder, sample_frames[:2])
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 deg about z
    _edit(folder, "scene_gt", lambda doc: [o.update(cam_R_m2c=rot.ravel().tolist(),
                                                    cam_t_m2c=[10.0, -20.0, 700.0])
                                           for v in doc.values() for o in v])
    first_id = min(ids.values())
    info = {str(first_id): {"min_x": -30.0, "min_y": -10.0, "min_z": 0.0, "size_x": 80.0,
                            "size_y": 20.0, "size_z": 100.0, "diameter": 130.0}}
    (folder / "models_info.json").write_text(json.dumps(info))
    out = tmp_path / "bag"
    code, _, err = import_bop([str(folder), "--out", str(out), "--objects",
                               str(folder / "objects.yaml"), "--models-info",
                               str(folder / "models_info.json")], capsys)
    assert code == 0, err
    contents = read_camera_bag(out)
    first_key = next(k for k, v in ids.items() if v == first_id)
    seen = 0
    for frame in contents.rgbd_frames(tolerance_ns=0):
        for o in contents.objects_for(frame.topic, frame.stamp_ns):
            if o.key == first_key:   # centre (10, 0, 50) mm turned 90 deg, then moved
                assert o.position == pytest.approx((0.01, -0.01, 0.75), abs=1e-6)
                seen += 1
            else:
                assert o.position is None
    assert seen >= 1
    plain = tmp_path / "plain"
    assert import_bop([str(folder), "--out", str(plain), "--objects",
                       str(folder / "objects.yaml")], capsys)[0] == 0
    back = read_camera_bag(plain)
    assert all(o.position is None for objs in back.ground_truth.values() for o in objs)


@pytest.mark.parametrize("spoil, match", [
    (lambda d: d.update({"1": {"min_x": 0}}), "needs min_x"),
    (lambda d: d.update({"1": {**{f"min_{a}": 0 for a in "xyz"},
                               **{f"size_{a}": -1 for a in "xyz"}}}), "out of range"),
    (lambda d: d.clear(), "expected a mapping"),
])
def test_a_bad_models_info_exits_2(sample_frames, tmp_path, capsys, spoil, match):
    folder = tmp_path / "scene"
    write_bop_scene(folder, sample_frames[:1])
    doc = {"1": {**{f"min_{a}": 0 for a in "xyz"}, **{f"size_{a}": 10 for a in "xyz"}}}
    spoil(doc)
    (folder / "models_info.json").write_text(json.dumps(doc))
    code, _, err = import_bop([str(folder), "--out", str(tmp_path / "bag"), "--objects",
                               str(folder / "objects.yaml"), "--models-info",
                               str(folder / "models_info.json")], capsys)
    assert code == 2 and match in err, err
    assert not (tmp_path / "bag").exists()


def test_a_bad_pose_is_refused(sample_frames, tmp_path):
    folder = tmp_path / "scene"
    write_bop_scene(folder, sample_frames[:1])
    _edit(folder, "scene_gt", lambda doc: doc["1"][0].update(cam_R_m2c=[2, 0, 0, 0, 1, 0,
                                                                        0, 0, 1]))
    with pytest.raises(BagError, match="cam_R_m2c must be a rotation"):
        read_bop_scene(folder)
