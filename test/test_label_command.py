"""``vl-distill label``: the node's ``~/labels`` documents for image files, without ROS."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from vl_distill_ros import cli
from vl_distill_ros.bags.bag_io import BagFrame, read_camera_bag, write_camera_bag

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "demo" / "sample_tabletop"


@pytest.fixture(scope="module")
def frames():
    """The sample bag's first two colour frames and the first one's ground truth."""
    bag = read_camera_bag(SAMPLE)
    out = []
    for msg in bag.images():
        out.append((msg.image, bag.objects_for(msg.topic, msg.stamp_ns) or []))
        if len(out) == 2:
            return out
    raise AssertionError("the sample bag has fewer than two frames")


def _png(path: Path, image: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


def _docs(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _untracked(objects: list[dict]) -> list[dict]:
    """A replayed frame's objects without their ``track_id``: the replay follows objects
    across a bag's stamped frames (a one-frame bag: each object its own new track, scored on
    its own view), ``label`` classifies each photo alone and gives none."""
    assert [o["track_id"] for o in objects] == list(range(1, len(objects) + 1))
    return [{k: v for k, v in o.items() if k != "track_id"} for o in objects]


def test_an_image_is_labelled_as_the_offline_replay_labels_its_frame(tmp_path, frames, capsys):
    """The same pixels through ``label`` and through ``replay-eval --offline`` (a one-frame
    colour bag): the same objects, boxes, labels and scores."""
    image, truth = frames[0]
    bag = write_camera_bag(tmp_path / "one", [BagFrame(1_000_000_000, image, truth)])
    assert cli.main(["replay-eval", str(bag), "--offline", "--out", str(tmp_path / "r"),
                     "--no-plots", "--no-progress"]) == 0
    replayed = _docs((tmp_path / "r" / "labels.jsonl").read_text())[0]
    capsys.readouterr()
    png = _png(tmp_path / "frame.png", image)
    assert cli.main(["label", str(png), "--out", str(tmp_path / "out")]) == 0
    (doc,) = _docs(capsys.readouterr().out)
    assert doc["camera"] == str(png) and doc["header"]["frame_id"] == "frame.png"
    assert doc["objects"] and doc["objects"] == _untracked(replayed["doc"]["objects"])
    # --out: the same documents as JSON Lines, and the image with its boxes drawn
    assert _docs((tmp_path / "out" / "labels.jsonl").read_text()) == [doc]
    drawn = cv2.imread(str(tmp_path / "out" / "00000_frame.png"))
    assert drawn is not None and drawn.shape == image.shape
    assert not np.array_equal(cv2.cvtColor(drawn, cv2.COLOR_BGR2RGB), image)


def test_a_photo_stored_sideways_is_labelled_as_it_is_shown(tmp_path, frames, capsys):
    """Phones store a portrait photo sideways with an EXIF orientation (6: turn 90 degrees
    clockwise): its boxes lay on the stored pixels, outside the picture people see. The
    image is turned as viewers turn it; each orientation as PIL's exif_transpose does."""
    import io

    from PIL import Image, ImageOps

    from vl_distill_ros.commands.label import upright

    image, _ = frames[0]
    stored = np.ascontiguousarray(np.rot90(image, 1))          # upright = rot90(stored, -1)
    photo = Image.fromarray(stored)
    exif = photo.getexif()
    exif[0x0112] = 6
    photo.save(tmp_path / "sideways.jpg", quality=95, exif=exif.tobytes())
    photo.save(tmp_path / "plain.jpg", quality=95)
    assert cli.main(["label", str(tmp_path / "sideways.jpg"), "--out", str(tmp_path / "o")]) == 0
    capsys.readouterr()
    drawn = cv2.imread(str(tmp_path / "o" / "00000_sideways.png"))
    assert drawn.shape == image.shape                     # upright: as wide as the frame
    assert cli.main(["label", str(tmp_path / "plain.jpg"), "--out", str(tmp_path / "p")]) == 0
    assert cv2.imread(str(tmp_path / "p" / "00000_plain.png")).shape == stored.shape
    capsys.readouterr()
    a = np.random.default_rng(0).integers(0, 255, (5, 7, 3), np.uint8)
    for orientation in range(1, 9):
        im = Image.fromarray(a)
        ex = im.getexif()
        ex[0x0112] = orientation
        buf = io.BytesIO()
        im.save(buf, format="PNG", exif=ex.tobytes())
        want = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue()))))
        assert np.array_equal(upright(a, orientation), want), orientation


def test_parameters_and_vocabulary_apply(tmp_path, frames, capsys):
    image = frames[0][0]
    png = _png(tmp_path / "a.png", image)
    assert cli.main(["label", str(png), "--crop-source", "full_frame", "-p", "top_k:=5"]) == 0
    (doc,) = _docs(capsys.readouterr().out)
    (obj,) = doc["objects"]
    height, width = image.shape[:2]
    assert obj["bbox"] == [0, 0, width, height] and len(obj["top_k"]) == 5
    names = {label["name"] for label in
             yaml.safe_load((ROOT / "config" / "ycb_vocabulary.yaml").read_text())["labels"]}
    assert obj["label"] in names | {"unknown"} and {n for n, _ in obj["top_k"]} <= names
    # every crop below the open-set threshold
    assert cli.main(["label", str(png), "-p", "unknown_threshold:=1.0"]) == 0
    (doc,) = _docs(capsys.readouterr().out)
    assert doc["objects"] and all(o["label"] == "unknown" and not o["known"]
                                  for o in doc["objects"])
    # an operator's vocabulary: only its names are given
    vocab = tmp_path / "vocab.yaml"
    vocab.write_text(yaml.safe_dump({"labels": [{"name": "banana"}, {"name": "coffee mug"}]}))
    assert cli.main(["label", str(png), "--vocabulary", str(vocab), "--text-cache-dir", "",
                     "--crop-source", "full_frame"]) == 0
    (doc,) = _docs(capsys.readouterr().out)
    assert {n for o in doc["objects"] for n, _ in o["top_k"]} <= {"banana", "coffee mug"}


def test_bad_files_are_reported_and_the_others_still_labelled(tmp_path, frames, capsys):
    good = [_png(tmp_path / "good0.png", frames[0][0]), tmp_path / "good1.jpg"]
    assert cv2.imwrite(str(good[1]), cv2.cvtColor(frames[1][0], cv2.COLOR_RGB2BGR))
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    cut = tmp_path / "cut.png"
    cut.write_bytes(good[0].read_bytes()[:200])
    huge = tmp_path / "huge.png"           # a PNG header that declares 100000 x 100000 pixels
    head = bytearray(good[0].read_bytes()[:33])
    head[16:24] = (100_000).to_bytes(4, "big") * 2
    huge.write_bytes(bytes(head))
    args = [str(good[0]), str(tmp_path / "missing.png"), str(text), str(cut), str(huge),
            str(tmp_path), str(good[1])]
    assert cli.main(["label", *args]) == 2
    captured = capsys.readouterr()
    assert [d["camera"] for d in _docs(captured.out)] == [str(good[0]), str(good[1])]
    err = captured.err
    assert "missing.png: no such file" in err
    assert "notes.png" in err and "neither JPEG nor PNG" in err
    assert "cut.png" in err and "huge.png" in err and "too large" in err
    assert f"{tmp_path}: cannot read it" in err
    assert "5 of 7 images could not be labelled" in err


@pytest.fixture(scope="module")
def rgbd_frame():
    """The sample bag's first RGB-D frame: colour, depth (metres) and (fx, fy, cx, cy)."""
    for frame in read_camera_bag(SAMPLE).rgbd_frames():
        info = frame.camera_info
        assert frame.depth is not None and info is not None
        return frame.image, frame.depth, tuple(info[:4])
    raise AssertionError("the sample bag has no frame")


def _depth_png(path: Path, depth_m: np.ndarray, unit_m: float = 0.001) -> Path:
    units = np.round(depth_m / unit_m).astype(np.uint16)
    assert cv2.imwrite(str(path), units)
    return path


def test_depth_files_run_the_depth_proposer_as_the_offline_replay(tmp_path, rgbd_frame, capsys):
    """``--depth`` and ``--intrinsics``: the same RGB-D frame through ``label`` and through
    ``replay-eval --offline`` (a one-frame RGB-D bag) gives the same objects, and other ones
    than the colour image alone; a depth PNG in other units is read with ``--depth-scale``."""
    image, depth, camera = rgbd_frame
    bag = write_camera_bag(tmp_path / "rgbd", [BagFrame(1_000_000_000, image, [], depth=depth,
                                                        intrinsics=camera)])
    assert cli.main(["replay-eval", str(bag), "--offline", "--out", str(tmp_path / "r"),
                     "--no-plots", "--no-progress"]) == 0
    replayed = _untracked(_docs((tmp_path / "r" / "labels.jsonl").read_text())[0]["doc"][
        "objects"])
    capsys.readouterr()
    png = _png(tmp_path / "frame.png", image)
    intrinsics = ",".join(f"{v:.17g}" for v in camera)
    mm = _depth_png(tmp_path / "depth.png", depth)
    assert cli.main(["label", str(png), "--depth", str(mm), "--intrinsics", intrinsics]) == 0
    captured = capsys.readouterr()
    (doc,) = _docs(captured.out)
    assert doc["objects"] and doc["objects"] == replayed and "depth not used" not in captured.err
    assert all(o["position"][2] > 0 and len(o["size"]) == 3 for o in doc["objects"]), doc
    assert cli.main(["label", str(png)]) == 0
    (colour,) = _docs(capsys.readouterr().out)
    assert colour["objects"] != doc["objects"]
    assert not any("position" in o for o in colour["objects"])   # colour only: not placed
    tenth = _depth_png(tmp_path / "depth_tenth_mm.png", depth, 0.0001)
    assert cli.main(["label", str(png), "--depth", str(tenth), "--intrinsics", intrinsics,
                     "--depth-scale", "0.0001"]) == 0
    (scaled,) = _docs(capsys.readouterr().out)
    assert [o["bbox"] for o in scaled["objects"]] == [o["bbox"] for o in doc["objects"]]


def test_depth_files_in_another_unit_are_warned_of_with_the_depth_scale(tmp_path, rgbd_frame,
                                                                        capsys):
    """A depth PNG in 0.1 mm units read as millimetres (the default ``--depth-scale``): the
    image is labelled colour only, and one warning (not one per image) names the factor
    and ``--depth-scale 0.0001``; it said only where the depth lay."""
    image, depth, camera = rgbd_frame
    png = _png(tmp_path / "frame.png", image)
    intrinsics = ",".join(f"{v:.17g}" for v in camera)
    tenth = _depth_png(tmp_path / "depth_tenth_mm.png", depth, 0.0001)
    assert cli.main(["label", str(png), str(png), "--depth", str(tenth), "--depth",
                     str(tenth), "--intrinsics", intrinsics]) == 0
    err = capsys.readouterr().err
    assert err.count("depth in the wrong unit?") == 1, err
    assert "x0.1 would put its median" in err and "--depth-scale 0.0001 (now 0.001)" in err
    mm = _depth_png(tmp_path / "depth.png", depth)
    assert cli.main(["label", str(png), "--depth", str(mm), "--intrinsics", intrinsics]) == 0
    assert "wrong unit" not in capsys.readouterr().err


def test_depth_scale_range_is_the_nodes():
    from vl_distill_ros.commands.label import DEPTH_SCALE_RANGE
    from vl_distill_ros.ros import params

    assert params.BY_NAME["depth_scale"].range == DEPTH_SCALE_RANGE


def test_bad_depth_files_are_reported_and_their_images_labelled_colour_only(
        tmp_path, rgbd_frame, capsys):
    image, depth, camera = rgbd_frame
    png = _png(tmp_path / "frame.png", image)
    intrinsics = ",".join(str(v) for v in camera)
    eight_bit = tmp_path / "eight_bit.png"
    assert cv2.imwrite(str(eight_bit), (depth * 50).astype(np.uint8))
    small = _depth_png(tmp_path / "small.png", depth[:100, :100])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    flat = _depth_png(tmp_path / "flat.png", np.zeros_like(depth))   # no depth anywhere
    cases = [eight_bit, small, text, tmp_path / "missing.png", flat]
    args = ["label"] + [str(png)] * len(cases)
    for depth_file in cases:
        args += ["--depth", str(depth_file)]
    assert cli.main(args + ["--intrinsics", intrinsics]) == 2
    captured = capsys.readouterr()
    assert cli.main(["label", str(png)]) == 0
    (colour,) = _docs(capsys.readouterr().out)
    docs = _docs(captured.out)
    assert len(docs) == len(cases) and all(d["objects"] == colour["objects"] for d in docs)
    err = captured.err
    lines = {name: next((line for line in err.splitlines() if f"{name}:" in line), "")
             for name in ("eight_bit.png", "notes.png")}
    assert "uint8" in lines["eight_bit.png"] and "neither JPEG nor PNG" in lines["notes.png"]
    assert all("(depth must be a single-channel 16-bit PNG)" in line for line in lines.values())
    assert "small.png: depth is 100x100 but the image is" in err
    assert "missing.png: no such depth file" in err
    assert "labelled colour only" in err and "flat.png" not in err
    assert f"{png}: depth not used (" in err
    assert "4 of 5 images labelled colour only (bad depth files)" in err
    assert "could not be labelled" not in err


def _bad_vocabulary(folder: Path) -> list[str]:
    (folder / "vocab.yaml").write_text("labels:\n  - name: ''\n")
    return ["--vocabulary", str(folder / "vocab.yaml")]


def _out_is_a_file(folder: Path) -> list[str]:
    (folder / "taken").write_text("a file, not a folder")
    return ["--out", str(folder / "taken")]


@pytest.mark.parametrize("make_args, message", [
    (lambda folder: ["-p", "no_such_param:=1"], "not a tunable node parameter"),
    # the list of tunable names it gives leaves out the two label refuses
    (lambda folder: ["-p", "no_such_param:=1"], "'depth_proposal_config', 'description_catalogue'"),
    (lambda folder: ["-p", "top_k:=0"], "top_k"),
    (lambda folder: ["--model", "/no/such/bundle.vdb"], "model bundle not found"),
    (_bad_vocabulary, "vocab.yaml"),
    (_out_is_a_file, "cannot write into --out"),
    (lambda folder: ["--depth", "a.png", "--depth", "b.png", "--intrinsics", "1,1,0,0"],
     "2 --depth files for 1 images"),
    (lambda folder: ["--depth", "a.png"], "--depth needs --intrinsics"),
    (lambda folder: ["--depth", "a.png", "--intrinsics", "500,0,320,240"], "--intrinsics must"),
    (lambda folder: ["--intrinsics", "500,500,nan,240"], "--intrinsics must"),
    (lambda folder: ["--depth-scale", "0"], "--depth-scale must"),
    (lambda folder: ["--depth-scale", "1"], "--depth-scale must"),
    # accepted and silently ignored until session 76 (the depth files' units are an option)
    (lambda folder: ["-p", "depth_scale:=0.0001"], "given with --depth-scale METRES"),
    (lambda folder: ["-p", "depth_sync_tolerance:=0.1"], "its own --depth file"),
    # accepted and silently ignored until session 80 (no ROS transport here)
    (lambda folder: ["-p", "qos_depth:=5"], "not subscribed to"),
    (lambda folder: ["-p", "publish_annotated:=true"], "--out DIR draws"),
    # 3.0 is a double: the node refuses it for an integer (it was read as 3)
    (lambda folder: ["-p", "top_k:=3.0"], "top_k must be of type integer"),
])
def test_bad_settings_are_a_clear_error_before_any_image(tmp_path, frames, capsys, make_args,
                                                         message):
    png = _png(tmp_path / "a.png", frames[0][0])
    assert cli.main(["label", str(png), *make_args(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err and "vl-distill label: error" in \
        captured.err


def test_a_run_that_labels_nothing_keeps_the_earlier_labels_and_odd_names_work(
        tmp_path, frames, capsys):
    """--out's labels.jsonl was opened for writing first: a run with a mistyped image name
    emptied an earlier run's results. A name that is not UTF-8 crashed the process in
    OpenCV's writer (SIGSEGV) with labels.jsonl still empty."""
    import os

    png = _png(tmp_path / "a.png", frames[0][0])
    out = tmp_path / "out"
    assert cli.main(["label", str(png), "--out", str(out)]) == 0
    earlier = (out / "labels.jsonl").read_bytes()
    assert len(earlier.splitlines()) == 1
    assert cli.main(["label", str(tmp_path / "typo.png"), "--out", str(out)]) == 2
    assert (out / "labels.jsonl").read_bytes() == earlier
    odd = tmp_path / os.fsdecode(b"caf\xe9.png")
    png.rename(odd)
    capsys.readouterr()
    assert cli.main(["label", str(odd), "--out", str(out)]) == 0
    assert len((out / "labels.jsonl").read_bytes().splitlines()) == 1
    assert (out / os.fsdecode(b"00000_caf\xe9.png")).stat().st_size > 0


def test_stdout_closed_early_is_not_a_traceback(tmp_path, frames):
    """`label a b c | head -n 1` ended in a BrokenPipeError traceback (exit 1); a full disk
    (/dev/full) in an OSError traceback."""
    import os
    import subprocess
    import sys

    pngs = [str(_png(tmp_path / f"{i}.png", frames[i % 2][0])) for i in range(3)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "vl_distill_ros.cli", "label", *pngs]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert json.loads(proc.stdout.readline())["camera"] == pngs[0]
    proc.stdout.close()  # what `| head -n 1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and "Traceback" not in err, err
    with open("/dev/full", "w") as full:
        done = subprocess.run(command[:-2], stdout=full, stderr=subprocess.PIPE, env=env,
                              timeout=120)
    err = done.stderr.decode()
    assert done.returncode == 2 and "cannot write to stdout" in err, err
    assert "Traceback" not in err, err


def test_without_pillow_exif_orientation_is_skipped_with_one_warning(monkeypatch, capsys):
    """Without Pillow, `label` on any JPEG crashed with a traceback (the import sat outside
    the guard); now the orientation is taken as upright and that is said once."""
    import builtins

    from vl_distill_ros.commands import label

    ok, buf = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    assert ok
    real_import = builtins.__import__

    def no_pil(name, *a, **kw):
        if name == "PIL" or name.startswith("PIL."):
            raise ModuleNotFoundError("No module named 'PIL'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(label, "_WARNED_NO_PIL", [])
    monkeypatch.setattr(builtins, "__import__", no_pil)
    assert label.exif_orientation(buf) == 1 and label.exif_orientation(buf) == 1
    err = capsys.readouterr().err
    assert err.count("Pillow is not installed") == 1, err


def test_an_earlier_runs_drawn_images_do_not_pass_for_this_runs(tmp_path, frames, capsys):
    """Drawn images are named by their place among the IMAGEs: a second run of fewer images
    into the same --out left the first run's other drawings beside its labels.jsonl, as if
    labelled now. They are removed once this run has labelled something; other files stay."""
    a, b = _png(tmp_path / "a.png", frames[0][0]), _png(tmp_path / "b.png", frames[1][0])
    out = tmp_path / "out"
    assert cli.main(["label", str(a), str(b), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["00000_a.png", "00001_b.png",
                                                     "labels.jsonl"]
    (out / "notes.png").write_bytes(b"mine")
    assert cli.main(["label", str(tmp_path / "typo.png"), "--out", str(out)]) == 2
    assert (out / "00001_b.png").exists()       # nothing labelled: the earlier run kept whole
    assert cli.main(["label", str(b), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["00000_b.png", "labels.jsonl",
                                                     "notes.png"]
    assert len(_docs((out / "labels.jsonl").read_text())) == 1
    capsys.readouterr()


def test_out_keeps_the_users_own_numbered_images(tmp_path, frames, capsys):
    """--out may be the images' own folder: files named like drawings (00000_color.png) that
    no earlier run's labels.jsonl drew, and this run's inputs, stay."""
    a = _png(tmp_path / "00000_color.png", frames[0][0])
    other = _png(tmp_path / "00001_color.png", frames[1][0])
    assert cli.main(["label", str(a), "--out", str(tmp_path)]) == 0
    assert a.exists() and other.exists()
    assert cli.main(["label", str(other), "--out", str(tmp_path)]) == 0
    assert a.exists() and other.exists()
    assert not (tmp_path / "00000_00000_color.png").exists()    # the earlier run's drawing
    assert (tmp_path / "00000_00001_color.png").exists()
    capsys.readouterr()
