"""``bench/depth_stages.py``: it times the depth proposer's stages on the sample bag, leaves
the proposer's functions as they were, and refuses a bag it cannot read."""
from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import depth_stages  # noqa: E402
from vl_distill_ros.perception import depth_clusters, depth_proposals  # noqa: E402


def test_the_bench_times_the_stages_on_the_sample_bag(repo_root, capsys, tmp_path):
    before = {name: getattr(depth_proposals if module == "depth_proposals" else depth_clusters,
                            name) for module, name in depth_stages.STAGES}
    code = depth_stages.main(["--bag", str(repo_root / "demo" / "sample_tabletop"),
                              "--frames", "2", "--repeats", "2"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert out["frames"]["count"] == 2 and out["frames"]["timed"] == 2
    stages = out["stages"]
    assert {"depth_cloud", "fit_plane_ransac", "_grid_clusters"} <= set(stages)
    # the whole frame holds each stage, and each frame's cloud and plane ran once
    assert all(0 < s["ms_per_frame"] <= out["ms_per_frame"]["mean"] * 1.01
               for s in stages.values())
    assert stages["fit_plane_ransac"]["calls_per_frame"] == 1.0
    assert stages["depth_cloud"]["calls_per_frame"] >= 1.0
    after = {name: getattr(depth_proposals if module == "depth_proposals" else depth_clusters,
                           name) for module, name in depth_stages.STAGES}
    assert after == before   # the wrappers are gone
    code = depth_stages.main(["--bag", str(tmp_path / "missing")])
    assert code != 0 and "error" in json.loads(capsys.readouterr().out)
