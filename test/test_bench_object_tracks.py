"""bench/object_tracks.py end to end on two tiny view bags (the YCB models, the shipped
bundle): one JSON object with each bag's scores with tracking off and on, their sums and
the tracker's cost; bad options exit 2 with the reason."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    return load_script(ROOT / "bench" / "object_tracks.py", "bench_object_tracks")


@pytest.mark.parametrize("argv,message", [
    (["--bags", "0"], "--bags must be in"),
    (["--views", "1"], "--views must be in"),
    (["--memories", "half"], "--memories must be numbers"),
])
def test_bad_options_exit_2_with_the_reason(bench, capsys, argv, message):
    assert bench.main(argv) == 2
    out = json.loads(capsys.readouterr().out)
    assert message in out["error"], out


def test_two_small_view_bags_are_scored_with_tracking_off_and_on(bench, ycb_models, tmp_path,
                                                                 capsys, monkeypatch):
    monkeypatch.setenv("VL_DISTILL_YCB_MODELS", str(ycb_models))
    assert bench.main(["--bags", "2", "--frames", "6", "--views", "3", "--check-bag", "",
                       "--keep", str(tmp_path), "--plot", str(tmp_path / "p.png")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [b["depth"] for b in out["bags"]] == [False, True]
    assert [b["views"] for b in out["bags"]] == [3, 3]
    for b in out["bags"]:
        for setting in ("off", "on"):
            for group in ("id", "ood"):
                g = b[setting][group]
                assert 0 <= g["correct"] <= g["matched"]
        # the same bag, the same boxes: tracking changes names, never what was matched
        assert b["on"]["id"]["matched"] == b["off"]["id"]["matched"]
        assert b["on"]["false_positive_boxes"] == b["off"]["false_positive_boxes"]
    assert out["totals"]["on"]["id"]["matched"] == sum(b["on"]["id"]["matched"]
                                                       for b in out["bags"])
    # the links checked against the ground truth: views 3 of a table in a row, so objects
    # were followed (each bag's 6 frames: two tables), and every link counted once
    links = out["totals"]["on"]["links"]
    assert links["same_object"] > 0 and links["other_object"] >= 0
    assert links == {k: sum(b["on"]["links"][k] for b in out["bags"]) for k in links}
    assert "links" not in out["bags"][0]["off"]
    assert 0 < out["update_ms_p50"] < 50
    assert (tmp_path / "p.png").stat().st_size > 0
    # a wrong link is counted: the labels of two frames of one table whose track ids swap
    from vl_distill_ros.bags.bag_io import read_camera_bag

    bag = tmp_path / out["bags"][0]["name"]
    frames = [(m, read_camera_bag(bag).objects_for(m.topic, m.stamp_ns))
              for m in read_camera_bag(bag).images()][:2]
    assert all(len(objs) >= 2 for _, objs in frames)
    lines = []
    for f, (msg, objs) in enumerate(frames):
        ids = [1, 2] if f == 0 else [2, 1]
        lines.append(json.dumps({"doc": {
            "header": {"stamp": {"sec": msg.stamp_ns // 10**9, "nanosec": msg.stamp_ns % 10**9}},
            "camera": msg.topic,
            "objects": [{"bbox": list(o.bbox), "track_id": i} for o, i in zip(objs, ids)]}}))
    (tmp_path / "swapped.jsonl").write_text("\n".join(lines) + "\n")
    links = bench._links(bag, tmp_path / "swapped.jsonl")
    assert links == {"same_object": 0, "other_object": 2}
