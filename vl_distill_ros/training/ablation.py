"""The results table: render once, train and evaluate each ablation config, tabulate."""
from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from ..config import ConfigError, load_train_config
from .evaluate import evaluate_run
from .trainer import FINAL, train

TABLE_COLUMNS = ("X_id", "Y_id on X_ood", "Y_ood on X_ood", "all labels")
#: Generalised zero-shot and open-set columns (rows evaluated with a calibration section).
GZSL_TABLE_COLUMNS = ("uncalibrated seen (all)", "uncalibrated unseen (all)",
                      "uncalibrated H (all)", "seen (all)", "unseen (all)", "H (all)",
                      "open-set AUROC", "unknown rate OOV", "known rate ID-correct")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _cell(values: list[float] | None, scale: float = 100.0, digits: int = 1) -> str:
    """``mean`` for one run, ``mean ± std`` (sample std) for several; ``-`` for none."""
    import math

    vals = [v for v in (values or []) if v is not None and not math.isnan(v)]
    if not vals:
        return "-"
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return f"{scale * mean:.{digits}f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def aggregate_seeds(summaries: list[dict]) -> dict[str, list[float]]:
    """Column -> the values of each seed's summary (in seed order)."""
    cols: dict[str, list[float]] = {}
    for summary in summaries:
        for k, v in summary.items():
            cols.setdefault(k, []).append(v)
    return cols


def gzsl_markdown(rows: list[dict]) -> str:
    """The generalised zero-shot table: all labels at once, raw and calibrated, open set,
    the teacher's zero-shot numbers on the same images; mean ± std over seeds."""
    head = ("| distillation | seeds | seen | unseen | H | seen (cal.) | unseen (cal.) | "
            "H (cal.) | Y_ood on X_ood | open-set AUROC | OOV unknown | ID-correct known | "
            "train time |")
    lines = [head, "|" + "---|" * 13]
    cols = ("uncalibrated seen (all)", "uncalibrated unseen (all)", "uncalibrated H (all)",
            "seen (all)", "unseen (all)", "H (all)", "Y_ood on X_ood", "open-set AUROC",
            "unknown rate OOV", "known rate ID-correct")
    for r in rows:
        per = r.get("per_seed") or {k: [v] for k, v in r["summary"].items()}
        cells = [_cell(per.get(c), 1.0 if c == "open-set AUROC" else 100.0,
                       2 if c == "open-set AUROC" else 1) for c in cols]
        lines.append(f"| {r['row']} | {len(r.get('seeds') or [0])} | " + " | ".join(cells)
                     + f" | {r['train_s'] / 60:.1f} min |")
    seen = set()
    for r in rows:
        if r["enrich"] in seen or "teacher H (all)" not in r["summary"]:
            continue
        seen.add(r["enrich"])
        t = r["summary"]
        name = "teacher zero-shot (" + ("enriched prompts" if r["enrich"] else "plain names") + ")"
        lines.append(f"| {name} | - | {_pct(t.get('teacher seen (all)'))} | "
                     f"{_pct(t.get('teacher unseen (all)'))} | {_pct(t.get('teacher H (all)'))} "
                     f"| - | - | - | {_pct(t.get('teacher Y_ood on X_ood'))} | "
                     f"{_cell([t.get('teacher open-set AUROC')], 1.0, 2)} | - | - | - |")
    return "\n".join(lines) + "\n"


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


def _cached_eval(run_dir: Path, force: bool) -> dict | None:
    """The run's ``eval/metrics.json`` when it is newer than its final student (and the
    run's calibration), so re-tabulating finished runs does not evaluate them again."""
    metrics = run_dir / "eval" / "metrics.json"
    final = run_dir / FINAL
    if force or not metrics.exists() or not final.exists():
        return None
    newest = max(p.stat().st_mtime for p in (final, run_dir / "calibration.json") if p.exists())
    if metrics.stat().st_mtime < newest:
        return None
    result = json.loads(metrics.read_text(encoding="utf-8"))
    return result if "summary" in result else None


def _with_seed(cfg, seed: int):
    """A copy of ``cfg`` trained with ``optim.seed = seed`` into ``<output_dir>/seed<seed>``."""
    import copy

    out = copy.deepcopy(cfg)
    out.optim.seed = int(seed)
    out.output_dir = str(Path(cfg.output_dir) / f"seed{seed}")
    return out


#: The keys of an ablation YAML, and of each of its ``runs``.
SPEC_KEYS = ("render", "render_aux", "out_dir", "runs")
RUN_KEYS = ("row", "config", "overrides", "seeds")


def _check_keys(data: dict, known: tuple[str, ...], where: str) -> None:
    """Raise :class:`ConfigError` for a key of ``data`` not in ``known`` (a typo such as
    ``override:`` or ``seed:`` was ignored: the row trained without them)."""
    from ..config import closest_names

    unknown = [k for k in data if k not in known]
    if unknown:
        raise ConfigError(f"{where}: unknown keys [{', '.join(closest_names(unknown, known))}]; "
                          f"known: {list(known)}")


def read_ablation_spec(config_path: str | Path) -> dict:
    """The ablation YAML ``config_path``, checked: a regular file of at most
    :data:`~vl_distill_ros.config.MAX_CONFIG_BYTES` holding ``runs``, a list of mappings with
    a ``row`` name and a ``config`` file, optional ``overrides`` (strings) and ``seeds``
    (whole numbers).

    Raises:
        ConfigError: why the file is unusable.
    """
    from ..atomic_io import read_regular_file
    from ..config import MAX_CONFIG_BYTES, load_yaml

    try:
        spec = load_yaml(read_regular_file(config_path, MAX_CONFIG_BYTES).decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"ablation config not found: {config_path}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"ablation config {config_path}: {' '.join(str(exc).split())}"
                          ) from None
    if not isinstance(spec, dict) or not isinstance(spec.get("runs"), list):
        raise ConfigError(f"{config_path}: expected 'runs' (a list of {{row, config}})")
    _check_keys(spec, SPEC_KEYS, str(config_path))
    if not isinstance(spec.get("out_dir", ""), str):
        raise ConfigError(f"{config_path}: out_dir must be a folder name")
    for i, r in enumerate(spec["runs"]):
        where = f"{config_path}: runs[{i}]"
        if not isinstance(r, dict) or not isinstance(r.get("row"), str) \
                or not isinstance(r.get("config"), str):
            raise ConfigError(f"{where} must be a mapping with a 'row' name and a 'config' file")
        _check_keys(r, RUN_KEYS, where)
        overrides = r.get("overrides") or []
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            raise ConfigError(f"{where}.overrides must be a list of key=value strings")
        seeds = r.get("seeds") or []
        if not isinstance(seeds, list) or not all(type(s) is int and 0 <= s < 2**32
                                                  for s in seeds):
            raise ConfigError(f"{where}.seeds must be a list of whole numbers in 0..2^32-1")
    return spec


def run_ablation(config_path: str | Path, skip_render: bool = False, force: bool = False,
                 progress: bool = True) -> dict:
    """Run every row of an ablation YAML; write results.{json,md,png} to its out_dir."""
    spec = read_ablation_spec(config_path)
    out = Path(spec.get("out_dir", "runs/ablation"))
    out.mkdir(parents=True, exist_ok=True)
    cfgs = [(r["row"], load_train_config(r["config"], r.get("overrides", [])))
            for r in spec["runs"]]
    roots = {c.data.root for _, c in cfgs}
    if not skip_render and spec.get("render"):
        from ..sim.crop_dataset import find_models, load_render_spec, render_dataset

        for root in roots:
            if not (Path(root) / "manifest.json").exists():
                rspec = load_render_spec(spec["render"], [f"out_dir={root}"])
                find_models(rspec.models_dir)  # no models: one error line, nothing printed
                print(f"[ablate] rendering {root}")
                render_dataset(rspec, progress=progress)
        extra = spec.get("render_aux") or []
        for aux_path in [extra] if isinstance(extra, str) else extra:  # one config or a list
            aux_spec = load_render_spec(aux_path)
            if not (Path(aux_spec.out_dir) / "manifest.json").exists():
                find_models(aux_spec.models_dir)
                print(f"[ablate] rendering {aux_spec.out_dir}")
                render_dataset(aux_spec, progress=progress)
    rows = []
    seeds_of = {r["row"]: list(r.get("seeds") or []) for r in spec["runs"]}
    for row_name, cfg in cfgs:
        seeds = seeds_of.get(row_name) or []
        runs = [(cfg, Path(cfg.output_dir))] if not seeds else [
            (_with_seed(cfg, seed), Path(cfg.output_dir) / f"seed{seed}") for seed in seeds]
        summaries, times, first = [], [], None
        for run_cfg, run_dir in runs:
            timing = run_dir / "train_time.json"
            if force or not (run_dir / FINAL).exists():
                t0 = time.time()
                train(run_cfg, resume=not force, progress=progress)
                timing.write_text(json.dumps({"train_s": time.time() - t0}), encoding="utf-8")
            times.append(json.loads(timing.read_text(encoding="utf-8"))["train_s"]
                         if timing.exists() else float("nan"))
            result = _cached_eval(run_dir, force) or evaluate_run(run_dir, progress=progress)
            summaries.append(result["summary"])
            first = first or result
            print(f"[ablate] {row_name} ({run_dir}): " + json.dumps(result["summary"]))
        per_seed = aggregate_seeds(summaries)
        mean = {k: sum(v) / len(v) for k, v in per_seed.items()}
        rows.append({"row": row_name, "name": cfg.name, "enrich": cfg.data.enrich,
                     "train_s": sum(times) / len(times), "summary": mean,
                     "seeds": seeds or [cfg.optim.seed], "per_seed": per_seed,
                     "vlalign": first["vlalign"], "embedding": first["embedding"]})
    md = results_markdown(rows)
    if any("H (all)" in r["summary"] for r in rows):
        md += "\n" + gzsl_markdown(rows)
    (out / "results.md").write_text(md, encoding="utf-8")
    (out / "results.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    from ..plots import drawn_or_warned, plot_results_bars

    drawn_or_warned(lambda: plot_results_bars(
        {r["row"]: {c: r["summary"].get(c, float("nan")) for c in TABLE_COLUMNS} for r in rows},
        out / "results.png", title="Student accuracy (YCB)"), "results")
    print(md)
    return {"rows": rows, "markdown": md, "out_dir": str(out)}
