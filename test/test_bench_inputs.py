"""Bad input to the bench scripts gets a clear one-line error and exit status 2 (argparse's
error, or the JSON object's ``error``), never a traceback; every JSON object is strict (no
NaN or Infinity); files the benches write land exactly where their JSON object says."""
from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from vl_distill_ros.bags.bag_io import BagFrame, BagTopics, GroundTruthObject, \
    write_camera_bag

ROOT = Path(__file__).resolve().parents[1]
BAG = ROOT / "demo" / "sample_tabletop"
sys.path.insert(0, str(ROOT / "bench"))

import _common  # noqa: E402
import bag_naming  # noqa: E402
import crop_window  # noqa: E402
import degrade_bag  # noqa: E402
import depth_alignment  # noqa: E402
import depth_backends  # noqa: E402
import depth_decode  # noqa: E402
import lens_bag  # noqa: E402
import object_placement  # noqa: E402
import object_tracks  # noqa: E402
import proposals_recall  # noqa: E402
import real_photo_naming  # noqa: E402
import real_photos  # noqa: E402
import vocabulary_size  # noqa: E402


def _strict(text: str) -> Any:
    """``text`` parsed as strict JSON (NaN, Infinity and -Infinity refused)."""
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in the JSON object")
    return json.loads(text, parse_constant=refuse)


def _usage_error(capsys, main, argv: list[str], words: str) -> None:
    """``main(argv)`` ends in argparse's error (exit status 2) whose line holds ``words``."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and words in err.strip().splitlines()[-1], err


def _json_error(capsys, code: int, words: str) -> dict:
    """The JSON object printed for exit status ``code`` 2: a one-line error with ``words``."""
    out = _strict(capsys.readouterr().out)
    assert code == 2, out
    assert words in out["error"] and "\n" not in out["error"] and "traceback" not in out, out
    return out


# -- 1. strict JSON --------------------------------------------------------------------------
def test_a_result_holding_nan_is_refused_not_printed(capsys):
    with pytest.raises(_common.BenchError, match=r"a\.b\[1\] is not a finite number"):
        _common.emit({"a": {"b": [1.0, float("nan")]}})
    assert capsys.readouterr().out == ""
    code = _common.bench_main("t", None, argparse.ArgumentParser(),
                              lambda a, out: out.update(rate=float("inf")), [])
    _json_error(capsys, code, "rate is not a finite number")


@pytest.mark.parametrize("kind,text,words", [
    (_common.finite_float, "nan", "finite"), (_common.finite_float, "-inf", "finite"),
    (_common.finite_float, "x", "not a number"), (_common.positive_float, "0", "above 0"),
    (_common.non_negative_float, "-1", "0 or above"), (_common.positive_int, "0", "1 or"),
    (_common.non_negative_int, "-1", "0 or above"), (_common.non_negative_int, "1.5", "integer"),
])
def test_option_types_refuse_what_they_say(kind, text, words):
    with pytest.raises(argparse.ArgumentTypeError, match=words):
        kind(text)


def test_infinite_and_nan_float_options_are_refused(capsys):
    _usage_error(capsys, depth_alignment.main, ["--frames", "2", "--repeats", "1",
                                                "--baseline", "inf"], "finite")
    _usage_error(capsys, lens_bag.main, ["in", "out", "--k1", "nan"], "finite")
    _usage_error(capsys, depth_backends.main, ["--bags", str(BAG), "--eps-cells", "nan"],
                 "finite")


@pytest.fixture(scope="module")
def student_vs_teacher():
    """The bench imported with ``OMP_WAIT_POLICY`` (which it sets on import) restored."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_WAIT_POLICY", "PASSIVE")
        import student_vs_teacher as module
    return module


TINY = ["--no-teacher", "--backbones", "mobilenet_v3_small", "--sizes", "96", "--backends",
        "torch_eager", "--crops", "8", "--batch", "8", "--repeats", "1"]


@pytest.mark.parametrize("argv,words", [
    (["--max-run-s", "nan"], "finite"), (["--sizes", "abc"], "--sizes"),
    (["--sizes", "100"], "multiples of 32"), (["--crop-min", "300"], "--crop-min"),
    (["--seed", "-1"], "--seed"),
])
def test_student_vs_teacher_refuses_bad_options(student_vs_teacher, capsys, argv, words):
    _usage_error(capsys, student_vs_teacher.main, TINY + argv, words)


# -- 2. proposals_recall ---------------------------------------------------------------------
@pytest.mark.parametrize("argv,words", [
    (["--iou", "nan"], "finite"), (["--iou", "0"], "--iou must be in (0, 1]"),
    (["--iou", "-1"], "--iou must be in"), (["--iou", "5"], "--iou must be in"),
    (["--max-frames", "-1"], "0 or above"), (["--depth-shift=--1,0"], "--depth-shift"),
    (["--depth-shift", "1.5,0"], "--depth-shift"),
])
def test_proposals_recall_refuses_bad_options(capsys, argv, words):
    _usage_error(capsys, proposals_recall.main, ["--bags", str(BAG), "--max-frames", "1",
                                                 "--no-labels"] + argv, words)


def test_proposals_recall_bad_override_or_depth_config_is_a_json_error(tmp_path, capsys):
    base = ["--bags", str(BAG), "--max-frames", "1", "--no-labels"]
    _json_error(capsys, proposals_recall.main(base + ["-p", "pad_frac=nan"]), "finite")
    for config in (tmp_path / "missing.yaml", tmp_path):
        _json_error(capsys, proposals_recall.main(base + ["--depth", "--depth-config",
                                                          str(config)]), "--depth-config")
    from vl_distill_ros.perception.depth_config import DepthProposalConfig

    with pytest.raises(ValueError, match="finite"):
        proposals_recall.parse_fusion_sweep(["fuse_max_iou=0.5,nan"], DepthProposalConfig())


def test_a_negative_depth_shift_is_taken(capsys):
    assert proposals_recall.main(["--bags", str(BAG), "--max-frames", "1", "--no-labels",
                                  "--depth", "--depth-shift=-3,4"]) == 0
    assert _strict(capsys.readouterr().out)["depth"]["shift_px"] == [-3, 4]


# -- 3. depth_decode / depth_alignment -------------------------------------------------------
@pytest.mark.parametrize("bench", [depth_decode, depth_alignment])
@pytest.mark.parametrize("argv,words", [
    (["--repeats", "0"], "--repeats"), (["--frames", "0"], "--frames"),
    (["--frames", "-2"], "--frames"),
])
def test_depth_benches_refuse_empty_runs(capsys, bench, argv, words):
    _usage_error(capsys, bench.main, argv, words)


@pytest.mark.parametrize("bench", [depth_decode, depth_alignment])
def test_depth_benches_name_a_bag_they_cannot_read(tmp_path, capsys, bench):
    for bag, words in ((tmp_path / "missing", "not found"), (tmp_path, "not a rosbag2 bag")):
        _json_error(capsys, bench.main(["--bag", str(bag)]), words)
    empty = write_camera_bag(tmp_path / "empty", [])
    _json_error(capsys, bench.main(["--bag", str(empty)]), str(empty))


def test_depth_alignment_refuses_a_bad_focal_scale(capsys):
    for value in ("0", "-1"):
        _usage_error(capsys, depth_alignment.main, ["--focal-scale", value], "above 0")
    code = depth_alignment.main(["--frames", "1", "--repeats", "1", "--focal-scale", "1e308"])
    _json_error(capsys, code, "--focal-scale")


# -- 4. degrade_bag / lens_bag ---------------------------------------------------------------
def _frame(objects: bool = True) -> BagFrame:
    image = np.full((48, 64, 3), 120, np.uint8)
    return BagFrame(1_000_000_000, image, [GroundTruthObject((8, 8, 20, 20), "apple",
                                                             "013_apple")] if objects else [])


def test_degrade_bag_refuses_a_bag_without_ground_truth(tmp_path, capsys):
    bag = write_camera_bag(tmp_path / "in", [_frame()],
                           topics=BagTopics(ground_truth="/elsewhere"))
    assert degrade_bag.main([str(bag), str(tmp_path / "out"), "--degrade", "none"]) == 2
    assert "no frame of the main camera with ground truth" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_lens_bag_refuses_a_bag_without_depth(tmp_path, capsys):
    bag = write_camera_bag(tmp_path / "in", [_frame()])
    assert lens_bag.main([str(bag), str(tmp_path / "out")]) == 2
    assert "with ground truth and depth" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# -- 5. depth_backends -----------------------------------------------------------------------
@pytest.fixture()
def fake_open3d(monkeypatch):
    """An ``open3d`` module of version 9.9.9 whose backend finds nothing (not installed)."""
    module = types.ModuleType("open3d")
    module.__version__ = "9.9.9"
    monkeypatch.setitem(sys.modules, "open3d", module)
    monkeypatch.setattr(depth_backends, "_open3d_backend", lambda *args: [])
    return module


def test_depth_backends_keeps_open3ds_version_beside_its_results(fake_open3d, capsys):
    assert depth_backends.main(["--bags", str(BAG), "--max-frames", "1"]) == 0
    out = _strict(capsys.readouterr().out)
    assert out["open3d_version"] == "9.9.9"
    assert out["open3d"]["frames"] == out["numpy"]["frames"] == 1
    assert out["open3d"]["recall"] == 0.0


def test_depth_backends_names_a_missing_bag(fake_open3d, tmp_path, capsys):
    _json_error(capsys, depth_backends.main(["--bags", str(tmp_path / "missing")]), "missing")


# -- 6. real_photos --------------------------------------------------------------------------
def test_drawn_photos_are_written_under_safe_names(tmp_path, monkeypatch, capsys):
    """A photo in a subfolder, with a suffix OpenCV's names do not keep (``.webp``), and
    cut-out photos named ``... on grey N``: each drawn copy is written where the JSON says."""
    photos = tmp_path / "package"
    (photos / "tools").mkdir(parents=True)
    (photos / "food").mkdir()
    hammer = np.full((90, 120, 3), 200, np.uint8)
    hammer[30:60, 20:100] = (40, 60, 160)
    assert cv2.imwrite(str(photos / "tools" / "hammer1.webp"), hammer)
    apple = np.zeros((40, 40, 4), np.uint8)
    apple[5:35, 5:35] = (30, 30, 200, 255)
    assert cv2.imwrite(str(photos / "food" / "apple.png"), apple)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"package": "scikit-image", "images": {
        "tools/hammer1.webp": {"labels": ["hammer"], "whole_frame": True},
        "food/apple.png": {"labels": ["apple"], "cutout": {"backgrounds": [235, 128]}}}}))
    monkeypatch.setattr(real_photos, "photo_dir", lambda package: photos)
    out_dir = tmp_path / "out"
    assert real_photos.main(["--labels", str(labels), "--out", str(out_dir)]) == 0
    files = _strict(capsys.readouterr().out)["image_files"]
    assert sorted(files) == ["food/apple.png on grey 128", "food/apple.png on grey 235",
                             "tools/hammer1.webp"]
    assert files["tools/hammer1.webp"] == str(out_dir / "tools" / "hammer1_webp.png")
    assert files["food/apple.png on grey 235"] == str(out_dir / "food" /
                                                      "apple_png_on_grey_235.png")
    for path in files.values():
        assert cv2.imread(path) is not None
    assert sorted(str(p) for p in out_dir.rglob("*.png")) == sorted(files.values())
    (tmp_path / "a_file").write_text("")
    code = real_photos.main(["--labels", str(labels), "--out", str(tmp_path / "a_file")])
    _json_error(capsys, code, "--out")


def test_photo_file_names_stay_inside_the_folder():
    assert real_photos.image_file_name("coins.png") == Path("coins.png")
    assert real_photos.image_file_name("stuff.jpg") == Path("stuff.jpg")
    assert real_photos.image_file_name("../../etc/x") == Path("_/_/etc/x.png")
    assert real_photos.image_file_name("/abs/a b.png") == Path("abs/a_b.png")


@pytest.mark.parametrize("doc,words", [
    ({}, '"images"'), ({"images": []}, '"images"'),
    ({"package": "scikit-image", "images": {"coins.png": {"labels": ["coin"]}}}, '"boxes"'),
    ({"package": "scikit-image", "images": {"coins.png": {"boxes": [[0, 0, 4, 4]]}}},
     '"labels"'),
    ({"images": {"coins.png": {"labels": ["coin"], "boxes": [[0, 0, 4, 4]]}}}, '"package"'),
    ({"package": "scikit-image", "images": {"coins.png": ["coin"]}}, "not an object"),
    ({"package": "scikit-image", "images": {"coins.png": {"labels": ["coin"],
                                                          "cutout": {}}}}, "backgrounds"),
])
def test_a_malformed_labels_file_is_a_clear_error(tmp_path, capsys, doc, words):
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(doc))
    _json_error(capsys, real_photos.main(["--labels", str(labels)]), words)


# -- 7. --plot -------------------------------------------------------------------------------
def test_a_figure_is_written_to_exactly_the_path_given(tmp_path):
    from vl_distill_ros.plots import pyplot, save_figure

    fig = pyplot().figure()
    assert save_figure(fig, tmp_path / "figure") == tmp_path / "figure"
    assert (tmp_path / "figure").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "figure.png").exists()


def test_plot_paths_get_png_and_folders_are_refused(tmp_path):
    assert _common.png_path(str(tmp_path / "a")) == tmp_path / "a.png"
    assert _common.png_path(str(tmp_path / "b.PNG")) == tmp_path / "b.PNG"
    for bad in (str(tmp_path), str(tmp_path / "c.pdf"), ""):
        with pytest.raises(argparse.ArgumentTypeError):
            _common.png_path(bad)


def test_bag_naming_reports_the_plot_it_wrote(tmp_path, capsys):
    assert bag_naming.main([str(BAG), "--max-frames", "1", "--no-teacher", "--plot",
                            str(tmp_path / "naming")]) == 0
    out = _strict(capsys.readouterr().out)
    assert out["plot"] == str(tmp_path / "naming.png")
    assert (tmp_path / "naming.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["naming.png"]


def test_every_benchs_plot_goes_to_the_path_given(tmp_path):
    """The plot helpers of object_placement, object_tracks, crop_window and vocabulary_size
    write their PNG to the path given (folders made) and return it."""
    groups = {"id": {"correct": 3, "matched": 4}, "ood": {"correct": 1, "matched": 4}}
    rows = [{"name": "seed1", "off": groups, "on": groups}]
    results = [{"crop_square": s, "crop_context": c, "threshold": t,
                "id": {"accuracy": 0.9}, "pseudo_unseen": {"accuracy": 0.5}}
               for s, c in ((False, 0.0), (True, 0.1)) for t in ("calibrated", "none")]
    sizes = {"mean": {"0": {k: 0.5 for k in ("unseen_right", "seen_right",
                                             "teacher_unseen_right", "teacher_seen_right")}},
             "runs": [{"labels": 26}]}
    for name, draw in (("placement", lambda p: object_placement._plot({"none": [0.01]}, p)),
                       ("tracks", lambda p: object_tracks._plot(rows, p)),
                       ("window", lambda p: crop_window.plot(results, p)),
                       ("sizes", lambda p: vocabulary_size.plot(sizes, p))):
        path = tmp_path / "sub" / name
        assert draw(path) == path and path.read_bytes()[:4] == b"\x89PNG", name
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == [
        "placement", "sizes", "tracks", "window"]
    for parser in (object_placement.parser(), object_tracks.parser(), crop_window.parser(),
                   vocabulary_size.parser(), bag_naming.parser()):
        assert parser.parse_args(["--plot", str(tmp_path / "p")]).plot == tmp_path / "p.png"


# -- 8. object_tracks --keep -----------------------------------------------------------------
def test_a_kept_bag_is_rendered_again_when_the_frame_count_changes(tmp_path, monkeypatch,
                                                                   capsys):
    made: list[list[str]] = []

    def run(cmd: list[str], what: str) -> None:
        made.append(cmd)
        Path(cmd[cmd.index("--out") + 1]).mkdir()

    groups = {"matched": 2, "correct": 1, "unknown": 0}

    def replay(bag: Path, out: Path, params: list[str], links: bool = False) -> dict:
        row: dict[str, Any] = {"id": dict(groups), "ood": dict(groups),
                               "false_positive_boxes": 0}
        if links:
            row["links"] = {"same_object": 1, "other_object": 0}
        return row

    monkeypatch.setattr(object_tracks, "_run", run)
    monkeypatch.setattr(object_tracks, "_replay", replay)
    monkeypatch.setattr(object_tracks, "_update_cost_ms", lambda: 0.1)
    frames_asked = []
    for frames in ("4", "6", "6"):
        argv = ["--bags", "1", "--frames", frames, "--views", "2", "--check-bag", "",
                "--keep", str(tmp_path)]
        assert object_tracks.main(argv) == 0, capsys.readouterr().out
        capsys.readouterr()
        frames_asked.append([c[c.index("--frames") + 1] for c in made])
        made.clear()
    assert frames_asked == [["4"], ["6"], []]   # the third run takes the bag of the second


# -- 9. one-line errors ----------------------------------------------------------------------
@pytest.mark.parametrize("bench", [bag_naming, real_photo_naming])
def test_naming_benches_name_a_missing_bundle(tmp_path, capsys, bench):
    code = bench.main(["--model", str(tmp_path / "missing.vdb"), "--no-teacher"])
    _json_error(capsys, code, "--model: bundle not found")


def test_object_placement_refuses_a_negative_seed(capsys):
    _usage_error(capsys, object_placement.main, ["--frames", "1", "--seed", "-1"], "--seed")


@pytest.mark.parametrize("contexts", ["abc", "nan", "0.1,2", "0.1,,0.2"])
def test_crop_window_refuses_bad_contexts_before_any_work(tmp_path, capsys, contexts):
    out = tmp_path / "out"
    code = crop_window.main(["--out", str(out), "--frames", "1", "--contexts", contexts])
    _json_error(capsys, code, "--contexts")
    assert not out.exists()


def test_crop_window_refuses_a_negative_seed(capsys):
    _usage_error(capsys, crop_window.main, ["--seed", "-1"], "--seed")
