"""``bench/depth_alignment.py``: it aligns the sample bag's depth and reports the cost and the
coverage of the aligned depth."""
from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import depth_alignment  # noqa: E402


def test_the_bench_aligns_the_sample_bag(repo_root, capsys, tmp_path):
    code = depth_alignment.main(["--bag", str(repo_root / "demo" / "sample_tabletop"),
                                 "--frames", "2", "--repeats", "1"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    res = out["results"]
    assert out["frames"]["count"] == 2 and res["ms_median"] > 0
    # a slightly longer colour focal length at the same size: the aligned depth covers about
    # what the depth image covers (a narrower view, filled cracks)
    assert 0.8 * res["depth_coverage"] <= res["aligned_coverage"] <= 1.0
    code = depth_alignment.main(["--bag", str(tmp_path / "none")])
    assert code != 0 and "error" in json.loads(capsys.readouterr().out)


def test_the_pipeline_timing_needs_and_takes_a_bag_recorded_without_alignment(
        repo_root, capsys, tmp_path):
    from test_unregistered_depth_bags import unregistered_bag

    bag = unregistered_bag(tmp_path / "rs", frames=2)
    code = depth_alignment.main(["--pipeline", "--bag", str(bag), "--frames", "2",
                                 "--repeats", "1"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    res = out["results"]
    assert out["frames"] == {"count": 2, "depth_size": [320, 240]}
    assert all(res[f"{way}_ms_median"] > 0
               for way in ("registered", "align_then_prepare", "deferred"))
    code = depth_alignment.main(["--pipeline", "--bag",
                                 str(repo_root / "demo" / "sample_tabletop")])
    out = json.loads(capsys.readouterr().out)
    assert code != 0 and "no depth to align" in out["error"]
