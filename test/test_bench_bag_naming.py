"""``bench/bag_naming.py``: a bag's ground-truth objects named by the student and by its
teacher, proposals taken out, per group and per object."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import yaml

from vl_distill_ros.bags.bag_io import BagFrame, read_camera_bag, write_camera_bag

ROOT = Path(__file__).resolve().parents[1]
BAG = ROOT / "demo" / "sample_tabletop"
sys.path.insert(0, str(ROOT / "bench"))

import bag_naming  # noqa: E402


def _first_frames(n: int) -> list:
    """Ground-truth objects of the bag's first ``n`` images that have any, in bag order."""
    bag = read_camera_bag(BAG)
    out = []
    for msg in bag.images():
        objects = bag.objects_for(msg.topic, msg.stamp_ns)
        if objects:
            out.append(objects)
        if len(out) == n:
            break
    return out


def test_the_sample_bags_objects_are_named_by_student_and_teacher(tmp_path, capsys):
    plot = tmp_path / "naming.png"
    assert bag_naming.main([str(BAG), "--max-frames", "3", "--plot", str(plot)]) == 0
    out = json.loads(capsys.readouterr().out)
    truth = [o.key for objects in _first_frames(3) for o in objects]
    split = yaml.safe_load((ROOT / "config/splits/ycb_paper.yaml").read_text())
    groups = out["groups"]
    assert out["frames"] == 3 and out["not_in_vocabulary"] == {}
    assert groups["id"]["student"]["objects"] == sum(k in split["in_distribution"] for k in truth)
    assert groups["ood"]["student"]["objects"] == sum(
        k in split["out_of_distribution"] for k in truth)
    assert sorted(out["per_object"]) == sorted(set(truth))
    for g in ("id", "ood"):
        for who in ("student", "teacher"):
            cell = groups[g][who]
            assert cell["objects"] == sum(v[who]["objects"] for v in out["per_object"].values()
                                          if v["group"] == g)
            assert cell["right"] == sum(v[who]["right"] for v in out["per_object"].values()
                                        if v["group"] == g)
            assert 0 <= cell["right"] <= cell["objects"]
            assert 0 <= cell["right"] - cell["right_known"] <= cell["unknown"]
        assert groups[g]["teacher"]["unknown"] == 0      # the teacher has no open-set rule
        assert groups[g]["teacher"]["right_known"] == groups[g]["teacher"]["right"]
    # the shipped student names its trained objects in the sample bag's renders
    assert groups["id"]["student"]["accuracy"] >= 0.8
    assert plot.stat().st_size > 10_000 and out["plot"] == str(plot)


def test_names_outside_the_vocabulary_are_counted_apart(tmp_path, capsys):
    truth = [o for objects in _first_frames(2) for o in objects]
    keep = sorted({o.label for o in truth})[:2]
    vocab = tmp_path / "vocab.yaml"
    vocab.write_text(yaml.safe_dump({"labels": [{"name": n} for n in keep]}))
    assert bag_naming.main([str(BAG), "--max-frames", "2", "--no-teacher",
                            "--vocabulary", str(vocab)]) == 0
    out = json.loads(capsys.readouterr().out)
    named = sum(g["student"]["objects"] for g in out["groups"].values())
    assert named == sum(o.label in keep for o in truth)
    assert out["vocabulary_size"] == 2
    assert all("teacher" not in g for g in out["groups"].values())
    for objects in _first_frames(2):
        for o in objects:
            if o.label not in keep:
                assert out["not_in_vocabulary"][o.label] >= 1


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    frame = BagFrame(1_000_000_000, np.full((48, 64, 3), 120, np.uint8), [])
    empty = write_camera_bag(tmp_path / "empty", [frame])
    assert bag_naming.main([str(empty), "--no-teacher"]) == 2
    assert "no ground-truth object (" in json.loads(capsys.readouterr().out)["error"]
    assert bag_naming.main([str(tmp_path / "missing"), "--no-teacher"]) == 2
    assert "missing" in json.loads(capsys.readouterr().out)["error"]
    assert bag_naming.main([str(BAG), "--max-frames", "-1"]) == 2
    assert "--max-frames" in json.loads(capsys.readouterr().out)["error"]
