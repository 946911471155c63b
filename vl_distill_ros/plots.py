"""PNG figures for evaluation reports: confusion matrices, per-class accuracy, training
curves and grouped result bars.

matplotlib is imported inside each function with the non-interactive ``Agg`` backend, so
importing this module is cheap and never needs a display. Every function creates the
output's parent directories, writes one PNG and returns its path.
"""
from __future__ import annotations

import functools
import math
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

__all__ = [
    "plot_confusion_matrix",
    "plot_per_class_accuracy",
    "plot_training_curves",
    "plot_results_bars",
    "drawn_or_warned",
]

_DPI = 120

#: Font families that matplotlib falls back to, in this order, for characters its default
#: font (DejaVu Sans: Latin, Greek, Cyrillic) lacks, where installed: label names are the
#: users' and may be Chinese, Japanese or Korean (Debian/Ubuntu ``fonts-noto-cjk``,
#: ``fonts-wqy-zenhei``, ``fonts-ipafont-gothic``, ``fonts-droid-fallback``).
FALLBACK_FAMILIES = (
    "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK KR",
    "Source Han Sans", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "IPAGothic",
    "IPAexGothic", "TakaoGothic", "Droid Sans Fallback", "Unifont",
)
_MISSING_GLYPH = re.compile(r"Glyph (\d+)\b.*missing from")


def fallback_families(installed: Sequence[str]) -> list[str]:
    """The :data:`FALLBACK_FAMILIES` among ``installed`` font family names, in order."""
    have = set(installed)
    return [f for f in FALLBACK_FAMILIES if f in have]


@functools.lru_cache(maxsize=1)
def _installed_fallbacks() -> tuple[str, ...]:
    """:func:`fallback_families` of the fonts matplotlib found (looked up once)."""
    from matplotlib import font_manager

    return tuple(fallback_families([f.name for f in font_manager.fontManager.ttflist]))


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive ``Agg`` backend (imported on first use)."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError(f"matplotlib is not installed ({exc}): pip install -r "
                          "requirements.txt") from None

    matplotlib.use("Agg", force=True)
    # every text is drawn as given: label names are the users' ('cup $_$ holder' failed to
    # parse as math and crashed a finished replay's report; '$5 and $10' was set as math)
    matplotlib.rcParams["text.parse_math"] = False
    matplotlib.rcParams["font.family"] = ["sans-serif", *_installed_fallbacks()]
    import matplotlib.pyplot as plt

    return plt


def drawn_or_warned(draw: Callable[[], Path], what: str) -> Path | None:
    """``draw()``'s path, or ``None`` with a warning on stderr when the plot cannot be
    drawn (matplotlib not installed, a label it cannot set): a plot never costs the
    results it shows."""
    try:
        return draw()
    except Exception as exc:  # noqa: BLE001 - matplotlib raises many kinds
        print(f"warning: the {what} plot was not drawn: {' '.join(str(exc).split())[:200]}",
              file=sys.stderr)
        return None


def save_figure(fig: Any, path: str | Path, dpi: int = _DPI) -> Path:
    """Write ``fig`` as a PNG to exactly ``path`` (parent folders created), close it; return
    the path.

    The format is named, so matplotlib neither appends ``.png`` to a name without a suffix
    (a caller would report a file that was never written) nor picks another format from
    the suffix.

    Characters that no installed font has (see :data:`FALLBACK_FAMILIES`) are drawn as
    boxes and said once on stderr, not in one matplotlib warning per glyph and text.
    """
    plt = pyplot()
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fig.savefig(out, dpi=dpi, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)
    missing: dict[int, None] = {}
    for w in caught:
        glyph = _MISSING_GLYPH.search(str(w.message))
        if glyph:
            missing[int(glyph.group(1))] = None
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if missing:
        chars = "".join(chr(c) for c in list(missing)[:12])
        print(f"warning: {out}: {len(missing)} characters of its labels ({chars}"
              f"{'...' if len(missing) > 12 else ''}) are in no installed font and are drawn "
              "as boxes; install one that has them (fonts-noto-cjk for Chinese, Japanese and "
              "Korean)", file=sys.stderr)
    return out


def plot_confusion_matrix(
    cm: Any, labels: Sequence[str], path: str | Path, title: str = "Confusion matrix"
) -> Path:
    """Draw a (C, C) confusion matrix (rows = true, columns = predicted) as a heat map.

    Colours show the row-normalised fraction (per-true-class recall) so rare classes stay
    visible; non-zero cells are annotated with their raw counts. The figure grows with the
    number of labels so that 20-30 label names stay readable.
    """
    plt = pyplot()
    cm = np.asarray(cm)
    n = cm.shape[0]
    if cm.shape != (n, n) or len(labels) != n:
        raise ValueError(f"cm must be (C, C) with C = len(labels); got {cm.shape}, {len(labels)}")
    support = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, support, out=np.zeros(cm.shape, dtype=float), where=support > 0)
    side = max(5.0, 0.42 * n + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("fraction of true class")
    font = 9 if n <= 15 else 7
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(labels, rotation=60, ha="right", rotation_mode="anchor", fontsize=font)
    ax.set_yticklabels(labels, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 40:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    colour = "white" if frac[i, j] > 0.5 else "black"
                    ax.text(j, i, str(int(cm[i, j])), ha="center", va="center",
                            fontsize=font - 1, color=colour)
    return save_figure(fig, path)


def plot_per_class_accuracy(
    acc_by_label: Mapping[str, float], path: str | Path, title: str = "Per-class accuracy"
) -> Path:
    """Horizontal bar chart of accuracy per label (NaN = no test samples, drawn as 'n/a')."""
    plt = pyplot()
    names = list(acc_by_label)
    values = [float(acc_by_label[k]) for k in names]
    n = len(names)
    fig, ax = plt.subplots(figsize=(7.0, max(2.5, 0.3 * n + 1.2)))
    ys = np.arange(n)
    shown = [0.0 if math.isnan(v) else v for v in values]
    ax.barh(ys, shown, color="tab:blue")
    for y, v in zip(ys, values):
        text = "n/a" if math.isnan(v) else f"{v:.2f}"
        ax.text(min(v, 1.0) + 0.01 if not math.isnan(v) else 0.01, y, text,
                va="center", fontsize=8)
    ax.set_yticks(ys)
    ax.set_yticklabels(names, fontsize=8 if n > 15 else 9)
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.12)
    ax.set_xlabel("accuracy")
    finite = [v for v in values if not math.isnan(v)]
    if finite:
        mean = float(np.mean(finite))
        ax.axvline(mean, color="tab:red", linestyle="--", linewidth=1,
                   label=f"mean {mean:.2f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title)
    return save_figure(fig, path)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def plot_training_curves(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """One subplot per numeric column of ``rows`` (e.g. a training log), against ``epoch``.

    ``rows`` are dicts such as ``{"epoch": 1, "loss": 0.9, "cls": 0.5, "val_acc": 0.7}``.
    The x axis is the ``epoch`` column when present, else the row number (starting at 1).
    Columns may be missing from some rows; those points are skipped. Non-numeric columns
    are ignored.
    """
    plt = pyplot()
    columns: list[str] = []
    for row in rows:
        for key, value in row.items():
            if key != "epoch" and key not in columns and _is_number(value):
                columns.append(key)
    xs_all = [row.get("epoch", i + 1) for i, row in enumerate(rows)]
    ncols = min(3, max(1, len(columns)))
    nrows = max(1, math.ceil(len(columns) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows), squeeze=False)
    for ax in axes.flat[len(columns):]:
        ax.set_visible(False)
    if not columns:
        axes[0, 0].set_visible(True)
        axes[0, 0].text(0.5, 0.5, "no numeric columns", ha="center", va="center")
    for ax, col in zip(axes.flat, columns):
        pts = [(x, float(r[col])) for x, r in zip(xs_all, rows)
               if _is_number(r.get(col)) and _is_number(x)]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", markersize=3)
        ax.set_title(col)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_results_bars(
    table: Mapping[str, Mapping[str, float]], path: str | Path, title: str = "Results"
) -> Path:
    """Grouped bar chart of ``table[run][metric]``: one group per metric, one bar per run.

    Metrics missing for a run are left empty. Bars are annotated with their values.
    """
    plt = pyplot()
    runs = list(table)
    metrics: list[str] = []
    for run in runs:
        for m in table[run]:
            if m not in metrics:
                metrics.append(m)
    n_runs, n_metrics = max(1, len(runs)), max(1, len(metrics))
    width = 0.8 / n_runs
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 + n_metrics * (0.35 * n_runs + 0.6)), 4.5))
    xs = np.arange(len(metrics))
    for i, run in enumerate(runs):
        vals = [table[run].get(m, math.nan) for m in metrics]
        heights = [0.0 if v is None or math.isnan(v) else float(v) for v in vals]
        bars = ax.bar(xs + (i - (n_runs - 1) / 2) * width, heights, width, label=run)
        for bar, v in zip(bars, vals):
            if v is not None and not math.isnan(v):
                ax.annotate(f"{v:.3g}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=7, rotation=90 if n_runs > 3
                            else 0, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(xs)
    ax.set_xticklabels(metrics, rotation=20 if n_metrics > 4 else 0, ha="right"
                       if n_metrics > 4 else "center")
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.margins(y=0.15)
    if runs:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save_figure(fig, path)


def plot_bias_curve(curve: Sequence[Mapping[str, float]], path: str | Path,
                    chosen: float | None = None,
                    teacher: Mapping[str, float] | None = None,
                    title: str = "Calibrated stacking: seen vs unseen accuracy") -> Path:
    """Seen and unseen accuracy and H against the seen bias (left), and unseen against
    seen accuracy (right), with the chosen bias and the teacher's point marked."""
    plt = pyplot()
    bias = [r["bias"] for r in curve]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("seen", "seen"), ("unseen", "unseen"), ("h", "H")):
        ax.plot(bias, [100 * r[key] for r in curve], label=label)
    if chosen is not None:
        ax.axvline(chosen, color="k", ls="--", lw=1, label=f"chosen bias {chosen:.3f}")
    ax.set_xlabel("seen bias (cosine)")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax2.plot([100 * r["seen"] for r in curve], [100 * r["unseen"] for r in curve],
             label="student")
    if chosen is not None:
        row = min(curve, key=lambda r: abs(r["bias"] - chosen))
        ax2.plot([100 * row["seen"]], [100 * row["unseen"]], "ko", label="student, chosen")
    if teacher is not None:
        ax2.plot([100 * teacher["seen"]], [100 * teacher["unseen"]], "r*", ms=12,
                 label="teacher zero-shot")
    ax2.set_xlabel("seen accuracy (%)")
    ax2.set_ylabel("unseen accuracy (%)")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.suptitle(title)
    return save_figure(fig, path)
