"""``tools/fuzz_inputs.py``: seeded hostile input through the decoders, the CameraInfo
reader, the depth proposer, the whole pipeline, the vocabulary reader and the bundle loader
finds no unexpected failure, and its tally does report one."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import fuzz_inputs  # noqa: E402


def test_the_tally_reports_what_it_did_not_expect():
    tally = fuzz_inputs.Tally()
    tally.run("fine", lambda: None)
    tally.run("refused", lambda: int("x"), expected=(ValueError,))
    for _ in range(2):
        tally.run("broken", lambda: [][1], expected=(ValueError,))
    summary = tally.summary()
    assert summary["trials"] == 4
    assert [(f["what"], f["count"]) for f in summary["failures"]] == [
        ("broken: IndexError: list index out of range", 2)]
    assert "IndexError" in summary["failures"][0]["traceback"]


@pytest.mark.parametrize("kind", fuzz_inputs.SPOILT_DEPTH)
def test_every_spoilt_depth_keeps_its_size(kind):
    depth = np.full((48, 64), 0.9, np.float32)
    spoilt = fuzz_inputs.spoil_depth(depth, kind, np.random.default_rng(0))
    assert spoilt.shape == depth.shape
    assert kind in ("as_is", "constant", "ramp", "upside_down", "quantised", "float64") or \
        not np.array_equal(spoilt, depth, equal_nan=True)


@pytest.mark.parametrize("seed", [1, 2])
def test_hostile_input_finds_no_unexpected_failure(seed):
    """The sample bag's RGB-D frames and odd frames: every answer a result or an expected
    error (this found the depth proposer's two crashes of session 37)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "tools/fuzz_inputs.py", "--seed", str(seed),
                           "--codecs", "1500", "--camera-info", "1000", "--depth", "150",
                           "--pipeline", "40", "--vocabularies", "1000", "--bundles", "80"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    report = json.loads(done.stdout)
    assert report["failed"] == 0 and done.returncode == 0, json.dumps(report, indent=1)[:4000]
    assert report["codecs"]["trials"] == 1500 and report["pipeline"]["trials"] == 40
    assert report["camera_info"]["trials"] == 1000
    assert report["depth"]["trials"] >= 100   # some spoilt cameras are refused earlier
    assert report["vocabularies"]["trials"] == 1000 and report["bundles"]["trials"] == 80


def test_odd_vocabularies_and_manifest_records_take_other_kinds():
    """The generators behind the vocabulary and bundle targets make what they promise: broken
    documents of several kinds, and paths to every record of a manifest."""
    rng = np.random.default_rng(0)
    kinds = {type(fuzz_inputs.odd_vocabulary(rng)).__name__ for _ in range(200)}
    assert {"dict", "list", "str"} <= kinds and len(kinds) >= 5
    paths = fuzz_inputs._record_paths({"a": {"b": [1, {"c": 2}]}, "d": 3})
    assert paths == [("a",), ("a", "b"), ("a", "b", 0), ("a", "b", 1), ("a", "b", 1, "c"),
                     ("d",)]


@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "must be >= 0"), (["--codecs", "-5"], "must be >= 0"),
    (["--bag", "/nonexistent"], "--bag /nonexistent does not exist"),
    (["--bundle", "/nonexistent.vdb"], "--bundle /nonexistent.vdb does not exist")])
def test_bad_options_are_one_line_errors(args, message, capsys):
    """A negative seed or a missing bag or bundle gave a traceback (after the earlier
    targets had run); a negative trial count silently ran none."""
    with pytest.raises(SystemExit) as exc:
        fuzz_inputs.main(args)
    assert exc.value.code == 2 and message in capsys.readouterr().err
