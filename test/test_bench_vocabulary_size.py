"""bench/vocabulary_size.py refuses bad options with one JSON object and exit status 2
(the measurement itself needs a trained student and its renders: see bench/README.md)."""
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
    return load_script(ROOT / "bench" / "vocabulary_size.py", "bench_vocabulary_size")


@pytest.mark.parametrize("argv,message", [
    (["--sizes", "0,41"], "must be in 0..40"),
    (["--sizes", "five"], "whole numbers"),
    (["--draws", "0"], "--draws must be in 1..50"),
    (["--run", "/nonexistent/run"], "not a training run"),
])
def test_bad_options_exit_2_with_the_reason(bench, capsys, argv, message):
    assert bench.main(argv) == 2
    out = json.loads(capsys.readouterr().out)
    assert message in out["error"], out


def test_a_names_file_is_read_and_checked(bench, tmp_path, capsys):
    names = tmp_path / "names.txt"
    names.write_text("ladder\n\nkettle\n")
    assert bench._names(names) == ["ladder", "kettle"]
    names.write_text("ladder\nladder\n")
    assert bench.main(["--names", str(names)]) == 2
    assert "distinct names" in json.loads(capsys.readouterr().out)["error"]
    assert bench.main(["--names", str(names), "--sizes", "0,3"]) == 2  # never reaches sizes
    assert bench._sizes("0, 2,1", 2) == [0, 1, 2]


def test_a_bundle_of_another_teacher_is_refused(bench, tmp_path, capsys):
    """The default is the packaged bundle with its training YAML; a config naming another
    teacher cannot describe that bundle's embeddings."""
    cfg = tmp_path / "other.yaml"
    cfg.write_text("base: " + str(ROOT / "config" / "ablation" / "gzsl_zero_shot_prior.yaml")
                   + "\nteacher:\n  backend: open_clip\n")
    code = bench.main(["--config", str(cfg), "--sizes", "0"])
    out = json.loads(capsys.readouterr().out)
    assert code == 2, out
    assert "gives another teacher" in out["error"], out


def test_extra_names_that_are_labels_are_refused(bench, tmp_path, capsys):
    """An extra name that is one of the split's labels would be counted twice."""
    names = tmp_path / "names.txt"
    names.write_text("ladder\nBanana\n")
    assert bench.main(["--names", str(names), "--sizes", "0,2"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert "labels of the split itself: ['banana']" in out["error"], out
