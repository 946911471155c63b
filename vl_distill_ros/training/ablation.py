"""The results table: render once, train and evaluate each ablation config, tabulate."""
from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from ..core.config import ConfigError, load_train_config
from .evaluate import evaluate_run
from .trainer import FINAL, train

TABLE_COLUMNS = ("X_id", "Y_id on X_ood", "Y_ood on X_ood", "all labels")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def results_markdown(rows: list[dict]) -> str:
    """A Markdown table: student accuracy per column, then the teacher's on the same images."""
    head = "| distillation | " + " | ".join(TABLE_COLUMNS) + " | train time |"
    lines = [head, "|" + "---|" * (len(TABLE_COLUMNS) + 2)]
    for r in rows:
        cells = [_pct(r["summary"].get(c)) for c in TABLE_COLUMNS]
        lines.append(f"| {r['row']} | " + " | ".join(cells) + f" | {r['train_s'] / 60:.1f} min |")
    seen = set()
    for r in rows:
        key = r["enrich"]
        if key in seen:
            continue
        seen.add(key)
        cells = [_pct(r["summary"].get(f"teacher {c}")) for c in TABLE_COLUMNS]
        name = "teacher zero-shot (" + ("enriched prompts" if key else "plain names") + ")"
        lines.append(f"| {name} | " + " | ".join(cells) + " | - |")
    return "\n".join(lines) + "\n"


def run_ablation(config_path: str | Path, skip_render: bool = False, force: bool = False,
                 progress: bool = True) -> dict:
    """Run every row of an ablation YAML; write results.{json,md,png} to its out_dir."""
    spec = yaml.safe_load(Path(config_path).read_text())
    if not isinstance(spec, dict) or not isinstance(spec.get("runs"), list):
        raise ConfigError(f"{config_path}: expected 'runs' (a list of {{row, config}})")
    out = Path(spec.get("out_dir", "runs/ablation"))
    out.mkdir(parents=True, exist_ok=True)
    cfgs = [(r["row"], load_train_config(r["config"], r.get("overrides", []))) for r in spec["runs"]]
    roots = {c.data.root for _, c in cfgs}
    if not skip_render and spec.get("render"):
        from ..core.data.render import load_render_spec, render_dataset

        for root in roots:
            if not (Path(root) / "manifest.json").exists():
                rspec = load_render_spec(spec["render"], [f"out_dir={root}"])
                print(f"[ablate] rendering {root}")
                render_dataset(rspec, progress=progress)
    rows = []
    for row_name, cfg in cfgs:
        run_dir = Path(cfg.output_dir)
        timing = run_dir / "train_time.json"
        if force or not (run_dir / FINAL).exists():
            t0 = time.time()
            train(cfg, resume=not force, progress=progress)
            timing.write_text(json.dumps({"train_s": time.time() - t0}))
        train_s = json.loads(timing.read_text())["train_s"] if timing.exists() else float("nan")
        result = evaluate_run(run_dir, progress=progress)
        rows.append({"row": row_name, "name": cfg.name, "enrich": cfg.data.enrich,
                     "train_s": train_s, "summary": result["summary"],
                     "vlalign": result["vlalign"], "embedding": result["embedding"]})
        print(f"[ablate] {row_name}: " + json.dumps(result["summary"]))
    md = results_markdown(rows)
    (out / "results.md").write_text(md)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    from ..core.plots import plot_results_bars

    plot_results_bars({r["row"]: {c: r["summary"].get(c, float("nan")) for c in TABLE_COLUMNS}
                       for r in rows}, out / "results.png", title="Student accuracy (YCB)")
    print(md)
    return {"rows": rows, "markdown": md, "out_dir": str(out)}
