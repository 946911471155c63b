"""``bench/crop_window.py --bag``: the full-frame crops of an existing bag's ground-truth
boxes classified as a caller with ``crop_source: full_frame`` hands them to the node."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import yaml

from vl_distill_ros.bags.bag_io import BagFrame, read_camera_bag, write_camera_bag

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import crop_window  # noqa: E402


def test_the_sample_bags_crops_are_scored_per_group(tmp_path, capsys):
    bag = ROOT / "demo" / "sample_tabletop"
    assert crop_window.main(["--out", str(tmp_path), "--bag", str(bag)]) == 0
    out = json.loads(capsys.readouterr().out)
    split = yaml.safe_load((ROOT / "config/splits/ycb_paper.yaml").read_text())
    truth = [o.key for objs in read_camera_bag(bag).ground_truth.values() for o in objs]
    n_id = sum(k in split["in_distribution"] for k in truth)
    n_ood = sum(k in split["out_of_distribution"] for k in truth)
    assert n_id and n_ood and n_id + n_ood == len(truth)
    for mode in ("crop_square_false", "crop_square_true"):
        row = out["full_frame_crops"][mode]
        for margin in ("0.0", "0.15"):
            cells = row[f"margin_{margin}_id"], row[f"margin_{margin}_ood"]
            assert (cells[0]["objects"], cells[1]["objects"]) == (n_id, n_ood)
            for cell in cells:
                assert cell["accuracy"] == round(cell["correct"] / cell["objects"], 4)
    # the shipped student names the clean crops of its trained objects (the sample bag's
    # renders: 90% or more either way) far better than chance among 26 names
    assert row["margin_0.15_id"]["accuracy"] >= 0.8
    assert row["margin_0.15_ood"]["accuracy"] > 1 / 26


def test_a_bag_without_ground_truth_or_no_bag_is_a_clear_error(tmp_path, capsys):
    frame = BagFrame(1_000_000_000, np.full((48, 64, 3), 120, np.uint8), [])
    empty = write_camera_bag(tmp_path / "empty", [frame])
    assert crop_window.main(["--out", str(tmp_path / "o"), "--bag", str(empty)]) == 2
    assert "no ground-truth box" in json.loads(capsys.readouterr().out)["error"]
    assert crop_window.main(["--out", str(tmp_path / "o"), "--bag",
                             str(tmp_path / "missing")]) == 2
    assert "missing" in json.loads(capsys.readouterr().out)["error"]
