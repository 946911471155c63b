"""The real-camera degradations of the proposal bench (``bench/_degrade.py``) and its
``--degrade`` option on the shipped sample bag."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from _degrade import degrade, parse_degradation  # noqa: E402


def _scene() -> np.ndarray:
    """A grey frame with a bright square: edges to blur, levels to shift."""
    img = np.full((60, 80, 3), 100, np.uint8)
    img[20:40, 30:50] = (220, 180, 60)
    return img


def test_chains_parse_in_order_and_bad_steps_are_named():
    assert parse_degradation("") == [] and parse_degradation(" none ") == []
    assert parse_degradation("exposure:0.4+noise:8+jpeg:50") == [
        ("exposure", 0.4), ("noise", 8.0), ("jpeg", 50.0)]
    for bad, words in [("blur:3", "KIND:VALUE"), ("motion", "KIND:VALUE"),
                       ("noise:x", "not a number"), ("jpeg:2", "[5, 100]"),
                       ("exposure:0.4+wb:0.9", "wb must be in")]:
        with pytest.raises(ValueError, match="degradation step") as err:
            parse_degradation(bad)
        assert words in str(err.value)


def test_each_effect_does_what_it_says():
    img = _scene()
    rng = np.random.default_rng(0)
    run = {text: degrade(img, parse_degradation(text), rng).astype(float)
           for text in ("motion:9", "defocus:3", "noise:10", "exposure:0.5", "exposure:3",
                        "wb:0.3", "jpeg:10", "scale:0.25")}
    base = img.astype(float)
    assert np.array_equal(degrade(img, [], rng), img)
    # motion blur smears the square's left and right edges, not its top and bottom ones
    assert abs(run["motion:9"][30, 29, 0] - base[30, 29, 0]) > 20
    assert np.array_equal(run["motion:9"][:, 40], base[:, 40])
    assert abs(run["defocus:3"][19, 40, 0] - base[19, 40, 0]) > 20
    noise = run["noise:10"] - base
    assert 6 < noise[:10].std() < 12 and abs(noise.mean()) < 1.5
    assert run["noise:10"][25:35, 35:45].std() > run["noise:10"][:10].std()  # shot noise
    assert run["exposure:0.5"].mean() == pytest.approx(base.mean() / 2, abs=1)
    assert run["exposure:3"].max() == 255 and run["exposure:3"][30, 40, 0] == 255
    assert run["wb:0.3"][0, 0, 0] == 130 and run["wb:0.3"][0, 0, 2] == 70
    assert run["wb:0.3"][0, 0, 1] == 100
    assert 0 < np.abs(run["jpeg:10"] - base).mean() < 20
    assert np.abs(run["scale:0.25"] - base).max() > 30  # the square's edges go soft


def test_the_same_seed_gives_the_same_frame():
    steps = parse_degradation("noise:8+jpeg:40")
    a = degrade(_scene(), steps, np.random.default_rng([1, 2]))
    b = degrade(_scene(), steps, np.random.default_rng([1, 2]))
    c = degrade(_scene(), steps, np.random.default_rng([1, 3]))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_the_bench_degrades_the_frames_it_scores(capsys):
    """``--degrade`` reaches the proposer: heavy blur and noise find fewer objects on the
    sample bag than the clean frames, and the run records the chain; a bad chain is refused
    before any bag is read."""
    import proposals_recall

    bag = BENCH.parent / "demo" / "sample_tabletop"
    results = {}
    for chain in ("none", "motion:41+defocus:10+noise:40"):
        assert proposals_recall.main(["--bags", str(bag), "--max-frames", "6", "--no-labels",
                                      "--degrade", chain]) == 0
        results[chain] = json.loads(capsys.readouterr().out)
    assert results["none"]["degradation"] == "none"
    heavy = results["motion:41+defocus:10+noise:40"]
    assert heavy["degradation"] == "motion:41+defocus:10+noise:40"
    assert heavy["all"]["objects"] == results["none"]["all"]["objects"] > 0
    assert heavy["all"]["matched"] < results["none"]["all"]["matched"]
    with pytest.raises(SystemExit) as exc:
        proposals_recall.main(["--bags", "/no/such/bag", "--degrade", "fog:1"])
    assert exc.value.code == 2 and "--degrade: degradation step 'fog:1'" in \
        capsys.readouterr().err


def test_a_degraded_copy_of_a_bag_keeps_truth_and_depth(tmp_path, capsys):
    """``bench/degrade_bag.py``: the copy holds every frame with ground truth, the same
    objects, stamps and depth, and colour degraded as asked ("none": the same pixels); a
    bad chain is refused before anything is written."""
    import degrade_bag

    from vl_distill_ros.bags.bag_io import read_camera_bag

    bag = BENCH.parent / "demo" / "sample_tabletop"
    src = read_camera_bag(bag)
    source = [(m, src.objects_for(m.topic, m.stamp_ns)) for m in src.rgbd_frames(
        tolerance_ns=20_000_000) if src.objects_for(m.topic, m.stamp_ns) is not None]
    assert source
    for chain in ("none", "exposure:0.5"):
        out = tmp_path / chain.replace(":", "_")
        assert degrade_bag.main([str(bag), str(out), "--degrade", chain]) == 0
        copy = read_camera_bag(out)
        frames = list(copy.rgbd_frames(tolerance_ns=20_000_000))
        assert len(frames) == len(source)
        for (m, objects), c in zip(source, frames):
            assert c.stamp_ns == m.stamp_ns
            assert copy.objects_for(c.topic, c.stamp_ns) == objects
            assert (c.depth is None) == (m.depth is None)
            if m.depth is not None:
                assert np.abs(c.depth - m.depth).max() <= 0.0005  # written in mm
            if chain == "none":
                assert np.array_equal(c.image, m.image)
            else:
                assert c.image.mean() == pytest.approx(m.image.mean() / 2, abs=1.0)
    with pytest.raises(SystemExit):
        degrade_bag.main([str(bag), str(tmp_path / "bad"), "--degrade", "fog:1"])
    assert "degradation step 'fog:1'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_sparse_depth_kinds_parse_and_keep_what_they_say():
    from proposals_recall import parse_sparse_depth, sparse_depth

    assert parse_sparse_depth("") is None
    assert parse_sparse_depth("grid:3") == ("grid", 3.0)
    assert parse_sparse_depth("dropout:0.5") == ("dropout", 0.5)
    assert parse_sparse_depth("band:0.25") == ("band", 0.25)
    for bad in ("lines:2", "grid:1", "grid:2.5", "columns:x", "dropout:1", "band:0",
                "band:0.6"):
        with pytest.raises(ValueError):
            parse_sparse_depth(bad)
    depth = np.ones((48, 64), np.float32)
    rng = np.random.default_rng(0)
    assert np.count_nonzero(sparse_depth(depth, ("columns", 2.0), rng)) == 48 * 32
    assert np.count_nonzero(sparse_depth(depth, ("grid", 3.0), rng)) == 16 * 22
    kept = np.count_nonzero(sparse_depth(depth, ("dropout", 0.5), rng)) / depth.size
    assert 0.4 < kept < 0.6
    band = sparse_depth(depth, ("band", 0.25), rng)
    assert not band[:, :16].any() and (band[:, 16:] == 1).all()


def test_smooth_depth_averages_measured_pixels_and_keeps_holes():
    """A step in depth becomes a ramp; a hole stays 0 and does not pull its neighbours
    towards the camera (a blur that counted its zeros would)."""
    from proposals_recall import smooth_depth

    depth = np.full((40, 40), 1.0, np.float32)
    depth[:, 20:] = 0.8                     # an object's face in front of the table
    depth[5:10, 5:10] = 0.0                 # a hole in the table
    out = smooth_depth(depth, 2.0)
    assert out.dtype == np.float32 and out.shape == depth.shape
    assert np.all(out[5:10, 5:10] == 0.0)
    assert np.allclose(out[4, 2:12], 1.0, atol=1e-5) and np.allclose(out[10, 2:12], 1.0)
    assert 0.8 < out[20, 19] < 1.0 and 0.8 < out[20, 20] < 1.0 and out[20, 19] > out[20, 20]
    assert np.allclose(out[:, :14][depth[:, :14] > 0], 1.0, atol=1e-4)
    assert np.allclose(out[:, 27:], 0.8, atol=1e-4)


def test_the_bench_thins_the_depth_it_scores(capsys):
    """``--sparse-depth``: on the sample bag, depth on every second column and row gives
    depth boxes (filled from each sample's cell, ``sparse_fill_frac``), and the run records
    the pattern; a bad pattern is refused."""
    import proposals_recall

    bag = BENCH.parent / "demo" / "sample_tabletop"
    assert proposals_recall.main(["--bags", str(bag), "--max-frames", "6", "--no-labels",
                                  "--depth", "--sparse-depth", "grid:2"]) == 0
    out = json.loads(capsys.readouterr().out)["depth"]
    assert out["sparse_depth"] == "grid:2"
    assert out["all"]["depth"]["matched"] >= 0.8 * out["all"]["depth"]["objects"]
    with pytest.raises(SystemExit) as exc:
        proposals_recall.main(["--bags", str(bag), "--depth", "--sparse-depth", "grid:1"])
    assert exc.value.code == 2 and "--sparse-depth" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        proposals_recall.main(["--bags", str(bag), "--depth", "--smooth-depth", "11"])
    assert exc.value.code == 2 and "--smooth-depth" in capsys.readouterr().err


def test_recall_by_border_counts_the_objects_cut_by_the_frame():
    """``recall_by_border``: a box reaching an image edge is ``at_border``; a proposal
    matching only the inner object leaves the border one missed. Without the frame's size
    every object counts as ``inside``."""
    from proposals_recall import Tally, at_border

    assert at_border((0, 10, 20, 20), (100, 80)) and at_border((90, 10, 10, 20), (100, 80))
    assert at_border((10, 60, 20, 20), (100, 80)) and not at_border((10, 10, 20, 20), (100, 80))
    assert not at_border((0, 10, 20, 20), None)
    truth = [(0, 10, 20, 20, "cut"), (40, 30, 20, 20, "whole")]
    tally = Tally()
    tally.add(truth, [(41, 30, 20, 20)], 0.5, 1.0, (100, 80))
    tally.add(truth, [(0, 10, 20, 21), (40, 30, 20, 20)], 0.5, 1.0, (100, 80))
    border = tally.summary(False)["recall_by_border"]
    assert border == {"at_border": {"objects": 2, "recall": 0.5},
                      "inside": {"objects": 2, "recall": 1.0}}
    plain = Tally()
    plain.add(truth, [], 0.5, 1.0)
    assert plain.summary(False)["recall_by_border"]["inside"] == {"objects": 2, "recall": 0.0}


def test_missed_by_kind_tells_merged_split_loose_and_empty_misses_apart():
    """``missed_by_kind``: one box over two objects misses both as ``merged``; two pieces
    inside an object are ``split``; a box of the wrong extent over it is ``loose``; nothing
    near it is ``none``. Matched objects are not counted, and two tallies add up."""
    from proposals_recall import Tally, miss_kind

    truth = [(0, 0, 20, 20, "a"), (21, 0, 20, 20, "b"),       # side by side
             (100, 0, 40, 40, "c"),                             # cut in two
             (200, 0, 40, 40, "d"),                             # boxed too large
             (300, 0, 20, 20, "e"),                             # nothing near
             (400, 0, 30, 30, "f")]                             # found
    boxes = [(0, 0, 41, 20), (100, 0, 19, 40), (121, 0, 19, 40), (190, -10, 70, 70),
             (401, 0, 30, 30)]
    tally = Tally()
    tally.add(truth, boxes, 0.5, 1.0)
    out = tally.summary(False)
    assert out["matched"] == 1
    assert out["missed_by_kind"] == {"merged": 2, "split": 1, "loose": 1, "none": 1}
    assert sum(out["missed_by_kind"].values()) == out["missed"]
    other = Tally()
    other.add(truth, [], 0.5, 1.0)
    tally.merge(other)
    assert tally.summary(False)["missed_by_kind"] == {"merged": 2, "split": 1, "loose": 1,
                                                      "none": 7}
    # a box over one object and only a sliver of its neighbour is not a merge
    gt = [t[:4] for t in truth[:2]]
    assert miss_kind(0, gt, [(0, 0, 24, 20)], 0.45) == "loose"


def test_min_visible_ignores_mostly_hidden_objects_and_the_boxes_on_them():
    """``--min-visible``: an object whose recorded visible fraction is under the limit is
    neither found nor missed, and a box matching it is not a false one; a box that a counted
    object takes stays counted, objects without a fraction always count, and
    ``recall_by_visibility`` buckets the counted objects (``unknown`` without a fraction)."""
    from proposals_recall import Tally, drop_ignored, visibility_bucket

    truth = [(0, 0, 20, 20, "a", 0.9), (100, 0, 20, 20, "b", 0.05),   # b mostly hidden
             (200, 0, 20, 20, "c", 0.05), (300, 0, 20, 20, "d", None),
             (400, 0, 20, 20, "e", 0.3)]
    boxes = [(0, 0, 20, 20), (100, 0, 20, 20), (300, 0, 20, 20), (500, 0, 20, 20)]
    every = Tally()
    every.add(truth, boxes, 0.5, 1.0)
    out = every.summary(False)
    assert (out["objects"], out["matched"], out["false_positives"]) == (5, 3, 1)
    assert out["ignored"] == {"min_visible": 0.0, "objects": 0, "proposals": 0}
    assert out["recall_by_visibility"] == {
        "under_10pct": {"objects": 2, "recall": 0.5},
        "25_to_50pct": {"objects": 1, "recall": 0.0},
        "over_50pct": {"objects": 1, "recall": 1.0},
        "unknown": {"objects": 1, "recall": 1.0}}
    bop = Tally(0.1)
    bop.add(truth, boxes, 0.5, 1.0)
    out = bop.summary(False)
    # b (found) and c (missed) are ignored, and so is the box on b; the stray box stays false
    assert (out["objects"], out["matched"], out["false_positives"]) == (3, 2, 1)
    assert out["ignored"] == {"min_visible": 0.1, "objects": 2, "proposals": 1}
    assert "under_10pct" not in out["recall_by_visibility"]
    assert visibility_bucket((0, 0, 1, 1, "x")) == "unknown"
    assert visibility_bucket((0, 0, 1, 1, "x", 0.1)) == "10_to_25pct"
    # a box on both a counted and an ignored object goes to the counted one
    kept, kept_boxes = drop_ignored([(0, 0, 20, 20, "a", 1.0), (1, 0, 20, 20, "b", 0.0)],
                                    [(0, 0, 20, 20)], 0.1, 0.5)
    assert [t[4] for t in kept] == ["a"] and kept_boxes == [(0, 0, 20, 20)]


def test_the_bench_ignores_a_bags_hidden_objects(tmp_path, capsys):
    """End to end on a bag: the sample bag's first frames written again with a visible
    fraction on every object, half of them under 0.5; ``--min-visible 0.5`` leaves exactly
    those out of the objects, records the limit, and a limit outside [0, 1] is refused."""
    import proposals_recall

    from vl_distill_ros.bags.bag_io import BagFrame, read_camera_bag, write_camera_bag

    src = read_camera_bag(BENCH.parent / "demo" / "sample_tabletop")
    frames, hidden = [], 0
    for n, m in enumerate(src.images()):
        objects = src.objects_for(m.topic, m.stamp_ns)
        if objects is None:
            continue
        marked = [o._replace(visible_fraction=0.3 if (n + k) % 2 else 0.9)
                  for k, o in enumerate(objects)]
        hidden += sum(o.visible_fraction < 0.5 for o in marked)
        frames.append(BagFrame(m.stamp_ns, m.image, marked))
        if len(frames) == 4:
            break
    assert hidden > 0
    bag = write_camera_bag(tmp_path / "marked", frames)
    runs = {}
    for limit in ("0", "0.5"):
        assert proposals_recall.main(["--bags", str(bag), "--no-labels",
                                      "--min-visible", limit]) == 0
        runs[limit] = json.loads(capsys.readouterr().out)
    every, kept = runs["0"], runs["0.5"]
    assert kept["min_visible"] == 0.5 and every["min_visible"] == 0.0
    assert kept["all"]["ignored"]["objects"] == hidden
    assert kept["all"]["objects"] == every["all"]["objects"] - hidden
    assert set(every["all"]["recall_by_visibility"]) == {"25_to_50pct", "over_50pct"}
    assert set(kept["all"]["recall_by_visibility"]) == {"over_50pct"}
    with pytest.raises(SystemExit) as exc:
        proposals_recall.main(["--bags", str(bag), "--min-visible", "1.5"])
    assert exc.value.code == 2 and "--min-visible" in capsys.readouterr().err


def test_the_fusion_sweep_gives_what_separate_runs_give(tmp_path, capsys):
    """``--fusion-sweep``: on the sample bag's first frames, the fusion rerun with the
    default value gives the run's own ``auto`` figures, and with another value those of a
    whole run with that value (``--depth-config``); fields that change more than the fusion,
    values out of range and a sweep without ``--depth`` are refused."""
    import proposals_recall

    bag = str(BENCH.parent / "demo" / "sample_tabletop")
    common = ["--bags", bag, "--max-frames", "12", "--no-labels", "--depth"]
    assert proposals_recall.main([*common, "--fusion-sweep", "fuse_network_whole_cover=0,0.5",
                                  "--fusion-sweep", "fuse_network_iou=0.4"]) == 0
    swept = json.loads(capsys.readouterr().out)["depth"]
    assert set(swept["fusion_sweep"]) == {"fuse_network_whole_cover=0", "fuse_network_iou=0.4",
                                          "fuse_network_whole_cover=0.5"}
    keys = ("objects", "matched", "proposals", "frames")
    auto = swept["all"]["auto"]
    assert {k: swept["fusion_sweep"]["fuse_network_whole_cover=0.5"][k] for k in keys} == \
        {k: auto[k] for k in keys}
    for name, value in (("fuse_network_whole_cover", "0"), ("fuse_network_iou", "0.4")):
        (tmp_path / "d.yaml").write_text(f"{name}: {value}\n")
        assert proposals_recall.main([*common, "--depth-config", str(tmp_path / "d.yaml")]) == 0
        alone = json.loads(capsys.readouterr().out)["depth"]["all"]["auto"]
        assert {k: swept["fusion_sweep"][f"{name}={value}"][k] for k in keys} == \
            {k: alone[k] for k in keys}
    assert swept["fusion_sweep"]["fuse_network_iou=0.4"]["proposals"] != auto["proposals"]
    for bad in (["--depth", "--fusion-sweep", "fuse_network_weak_score=0.2"],
                ["--depth", "--fusion-sweep", "min_height_m=0.01"],
                ["--depth", "--fusion-sweep", "fuse_network_iou=1.5"],
                ["--depth", "--fusion-sweep", "fuse_network_support_min_boxes=1.5"],
                ["--fusion-sweep", "fuse_network_iou=0.2"]):
        with pytest.raises(SystemExit) as exc:
            proposals_recall.main(["--bags", bag, *bad])
        assert exc.value.code == 2 and "--fusion-sweep" in capsys.readouterr().err
