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
