"""``bench/depth_decode.py``: its RVL coder agrees with the test suite's independent one, and
the bench decodes the sample bag's depth in each transport to the same millimetres."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from test_compressed_images import _rvl

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import depth_decode  # noqa: E402


@pytest.mark.parametrize("seed", range(6))
def test_the_bench_rvl_coder_writes_what_the_independent_coder_writes(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 30, 2)
    img = rng.integers(0, 65536, (h, w)).astype(np.uint16)
    img[rng.random((h, w)) < [0.0, 0.1, 0.5, 0.9, 1.0, 0.3][seed]] = 0
    assert depth_decode.encode_rvl(img) == _rvl(img)


def test_the_bench_times_every_transport_on_the_sample_bag(repo_root, capsys, tmp_path):
    code = depth_decode.main(["--bag", str(repo_root / "demo" / "sample_tabletop"),
                              "--frames", "2", "--repeats", "1"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert out["frames"]["count"] == 2 and out["frames"]["size"] == [480, 360]
    assert set(out["results"]) == {"raw", "png", "rvl"}
    sizes = {k: v["payload_bytes_mean"] for k, v in out["results"].items()}
    assert sizes["rvl"] < sizes["raw"] and sizes["png"] < sizes["raw"]
    assert all(v["ms_median"] > 0 for v in out["results"].values())
    empty = tmp_path / "empty"
    code = depth_decode.main(["--bag", str(empty)])
    assert code != 0 and "error" in json.loads(capsys.readouterr().out)
