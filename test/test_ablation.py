"""The ablation runner's tables and its reuse of finished evaluations."""
from __future__ import annotations

import json
import os
import time

from vl_distill_ros.training.ablation import _cached_eval, _cell, gzsl_markdown
from vl_distill_ros.training.trainer import FINAL


def test_finished_evaluation_is_reused_only_when_newer_than_the_run(tmp_path):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / FINAL).write_bytes(b"weights")
    metrics = run / "eval" / "metrics.json"
    metrics.write_text(json.dumps({"summary": {"X_id": 0.5}}))
    old = time.time() - 100
    os.utime(run / FINAL, (old, old))
    assert _cached_eval(run, force=False)["summary"] == {"X_id": 0.5}
    assert _cached_eval(run, force=True) is None
    (run / "calibration.json").write_text("{}")      # re-calibrated after the evaluation
    os.utime(metrics, (old - 10, old - 10))
    assert _cached_eval(run, force=False) is None


def test_cells_show_mean_and_sample_std_over_seeds():
    assert _cell([0.5]) == "50.0"
    assert _cell([0.4, 0.6]) == "50.0 ± 14.1"
    assert _cell([]) == "-" and _cell([float("nan")]) == "-"


def test_gzsl_table_lists_rows_and_the_teacher():
    summary = {"uncalibrated seen (all)": 0.9, "uncalibrated unseen (all)": 0.1,
               "uncalibrated H (all)": 0.18, "seen (all)": 0.85, "unseen (all)": 0.3,
               "H (all)": 0.44, "Y_ood on X_ood": 0.4, "open-set AUROC": 0.8,
               "unknown rate OOV": 0.5, "known rate ID-correct": 0.9,
               "teacher seen (all)": 0.26, "teacher unseen (all)": 0.16, "teacher H (all)": 0.2,
               "teacher Y_ood on X_ood": 0.3, "teacher open-set AUROC": 0.59}
    rows = [{"row": "A", "enrich": True, "train_s": 60.0, "summary": summary,
             "seeds": [0, 1], "per_seed": {k: [v, v] for k, v in summary.items()}}]
    md = gzsl_markdown(rows)
    assert "| A | 2 | 90.0 ± 0.0 | 10.0 ± 0.0 | 18.0 ± 0.0 | 85.0 ± 0.0 |" in md
    assert "| teacher zero-shot (enriched prompts) | - | 26.0 | 16.0 | 20.0 |" in md


def test_ablate_without_the_ycb_models_is_one_error_line_exit_2(tmp_path, monkeypatch, capsys):
    """`vl-distill ablate` (and so `make results`) on a machine without the YCB models: exit
    2, one line naming VL_DISTILL_YCB_MODELS, no traceback and no rendering started."""
    import shutil
    from pathlib import Path

    from vl_distill_ros.cli import main

    shutil.copytree(Path(__file__).resolve().parents[1] / "config", tmp_path / "config")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VL_DISTILL_YCB_MODELS", str(tmp_path / "no_models_here"))
    assert main(["ablate", "--config", "config/ablation/ycb_paper.yaml", "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("vl-distill ablate: error: models folder not "
                                                   f"found: {tmp_path / 'no_models_here'}")
    assert "VL_DISTILL_YCB_MODELS" in err and "Traceback" not in err
    assert not (tmp_path / "data").exists()


def test_ablate_renders_every_missing_auxiliary_render_config(tmp_path, monkeypatch):
    """`render_aux` may name one render config or a list (the "+ varied appearance" row needs
    config/render_ycb_varied.yaml besides the auxiliary renders): each one whose out_dir has
    no manifest.json is rendered, the others are left alone."""
    import shutil
    from pathlib import Path

    import yaml

    import vl_distill_ros.sim.crop_dataset as render_module
    from vl_distill_ros.training.ablation import run_ablation

    shutil.copytree(Path(__file__).resolve().parents[1] / "config", tmp_path / "config")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/ycb_aux").mkdir(parents=True)
    (tmp_path / "data/ycb_aux/manifest.json").write_text("{}")   # already rendered
    rendered = []
    monkeypatch.setattr(render_module, "find_models", lambda models_dir: models_dir)
    monkeypatch.setattr(render_module, "render_dataset",
                        lambda spec, progress=True: rendered.append(str(spec.out_dir)))
    spec = {"render": "config/render_ycb.yaml", "out_dir": str(tmp_path / "out"), "runs": [],
            "render_aux": ["config/render_ycb_aux.yaml", "config/render_ycb_varied.yaml"]}
    (tmp_path / "ablate.yaml").write_text(yaml.safe_dump(spec))
    run_ablation(tmp_path / "ablate.yaml", progress=False)
    assert [Path(p).name for p in rendered] == ["ycb_varied"]
    spec["render_aux"] = "config/render_ycb_varied.yaml"            # a single config
    (tmp_path / "ablate.yaml").write_text(yaml.safe_dump(spec))
    rendered.clear()
    run_ablation(tmp_path / "ablate.yaml", progress=False)
    assert [Path(p).name for p in rendered] == ["ycb_varied"]


def test_ablation_entries_of_the_wrong_shape_are_config_errors(tmp_path):
    """An entry without 'row', seeds that are not numbers, a missing file or a directory
    gave Python's own errors (KeyError, ValueError, IsADirectoryError)."""
    import pytest

    from vl_distill_ros.config import ConfigError
    from vl_distill_ros.training.ablation import read_ablation_spec

    spec = tmp_path / "ablation.yaml"
    cases = [("runs: [{config: a.yaml}]", "'row' name and a 'config' file"),
             ("runs: [{row: a, config: a.yaml, seeds: [x]}]", "seeds must be a list of whole"),
             ("runs: [{row: a, config: a.yaml, overrides: [1]}]", "overrides must be a list"),
             ("runs: [1, 2", "ablation config"), ("out_dir: x", "expected 'runs'")]
    for text, message in cases:
        spec.write_text(text)
        with pytest.raises(ConfigError, match=message):
            read_ablation_spec(spec)
    for path, message in ((tmp_path / "none.yaml", "not found"), (tmp_path, "directory")):
        with pytest.raises(ConfigError, match=message):
            read_ablation_spec(path)
    spec.write_text("runs: [{row: a, config: a.yaml, seeds: [0, 1]}]")
    assert read_ablation_spec(spec)["runs"][0]["seeds"] == [0, 1]
