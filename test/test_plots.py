"""Plots write valid, non-trivial PNG files into directories they create."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib  # noqa: F401 - pinned in requirements.txt: a broken install must fail
import numpy as np
import pytest

from vl_distill_ros.plots import (
    plot_confusion_matrix,
    plot_per_class_accuracy,
    plot_results_bars,
    plot_training_curves,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LABELS = [f"{chr(ord('a') + i)}_object_{i:02d}" for i in range(26)]


def assert_png(path: Path, min_kb: float = 5.0) -> None:
    assert path.is_file()
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_kb * 1024, f"{path} is only {len(data)} bytes"


def test_confusion_matrix_26_labels(tmp_path):
    rng = np.random.default_rng(0)
    target = rng.integers(0, 26, size=400)
    pred = np.where(rng.random(400) < 0.7, target, rng.integers(0, 26, size=400))
    cm = np.zeros((26, 26), dtype=np.int64)
    np.add.at(cm, (target, pred), 1)
    out = plot_confusion_matrix(cm, LABELS, tmp_path / "a" / "b" / "cm.png", "26 labels")
    assert out == tmp_path / "a" / "b" / "cm.png"
    assert_png(out, min_kb=20)


def test_confusion_matrix_shape_mismatch(tmp_path):
    with pytest.raises(ValueError):
        plot_confusion_matrix(np.zeros((3, 3)), ["a", "b"], tmp_path / "x.png", "t")


def test_per_class_accuracy(tmp_path):
    acc = {name: (i % 7) / 6 for i, name in enumerate(LABELS)}
    acc[LABELS[3]] = math.nan
    out = plot_per_class_accuracy(acc, tmp_path / "sub" / "acc.png", "per class")
    assert_png(out)


def test_training_curves(tmp_path):
    rows = [
        {"epoch": e, "loss": 2.0 / e, "cls": 1.0 / e, "imcst": 1.0 / e, "val_acc": 0.1 * e,
         "note": "text is ignored"}
        for e in range(1, 6)
    ]
    rows[2].pop("val_acc")
    out = plot_training_curves(rows, tmp_path / "curves" / "train.png")
    assert_png(out)


def test_training_curves_without_epoch_column(tmp_path):
    out = plot_training_curves([{"loss": 1.0}, {"loss": 0.5}], tmp_path / "c.png")
    assert_png(out, min_kb=3)


def test_results_bars(tmp_path):
    table = {
        "teacher": {"acc": 0.91, "macro_f1": 0.9},
        "student_cls": {"acc": 0.72, "macro_f1": 0.70, "vlalign@3": 1.2},
        "student_cls_imcst": {"acc": 0.80, "macro_f1": 0.78, "vlalign@3": 0.8},
    }
    out = plot_results_bars(table, tmp_path / "bars" / "results.png")
    assert_png(out)


def test_label_names_with_dollar_signs_are_drawn_as_text(tmp_path):
    """A ground-truth label 'cup $_$ holder' failed to parse as matplotlib math text and
    crashed a finished replay's report (labels.jsonl already replaced, report.json not);
    '$5 and $10 bills' was drawn as math. Labels are users' text: drawn as given."""
    from vl_distill_ros.evaluation.report import plot_confusion, plot_per_object
    from vl_distill_ros.evaluation.scoring import score_frames

    cam = "/cam"
    gt = {(cam, 1): [((0, 0, 10, 10), "cup $_$ holder", ""),
                     ((20, 0, 10, 10), "$5 and $10 bills", "")]}
    doc = {"header": {"stamp": {"sec": 0, "nanosec": 1}}, "camera": cam, "objects": [
        {"bbox": [0, 0, 10, 10], "label": "cup $_$ holder", "known": True, "score": 0.9,
         "top_k": []}]}
    scores = score_frames([(cam, 1)], gt, {(cam, 1): doc})
    assert plot_confusion(scores["confusion"], tmp_path / "c.png").stat().st_size > 0
    assert plot_per_object(scores["per_object"], tmp_path / "p.png").stat().st_size > 0


def test_a_label_named_unknown_is_the_unknown_column_not_a_second_one():
    """Ground truth labelled 'Unknown' gave the confusion matrix two unknown columns: each
    row's unknown count twice (row sum 2, support 1)."""
    from vl_distill_ros.evaluation.scoring import score_frames

    cam = "/cam"
    gt = {(cam, 1): [((0, 0, 10, 10), "Unknown", ""), ((20, 0, 10, 10), "apple", "")]}
    doc = {"header": {"stamp": {"sec": 0, "nanosec": 1}}, "camera": cam, "objects": [
        {"bbox": b, "label": "unknown", "known": False, "score": 0.5, "top_k": []}
        for b in ([0, 0, 10, 10], [20, 0, 10, 10])]}
    confusion = score_frames([(cam, 1)], gt, {(cam, 1): doc})["confusion"]
    assert confusion["columns"].count("unknown") == 1
    assert [sum(row) for row in confusion["matrix"]] == [1, 1]


def test_fallback_families_keep_their_order_and_only_installed_ones():
    from vl_distill_ros.plots import FALLBACK_FAMILIES, fallback_families

    installed = ["DejaVu Sans", FALLBACK_FAMILIES[3], "Some Font", FALLBACK_FAMILIES[0]]
    assert fallback_families(installed) == [FALLBACK_FAMILIES[0], FALLBACK_FAMILIES[3]]
    assert fallback_families(["DejaVu Sans"]) == []


def test_labels_in_a_script_the_font_lacks_fall_back_or_are_said_once(
        tmp_path, monkeypatch, capsys):
    """A vocabulary in another script: the characters the first font lacks are drawn from an
    installed fallback family (:data:`~vl_distill_ros.plots.FALLBACK_FAMILIES`); with none
    that has them, one line on stderr names them instead of a matplotlib warning per glyph
    and text, and the plot is still written."""
    import warnings

    from vl_distill_ros import plots

    labels = ["коробка", "чашка"]     # Cyrillic: in DejaVu Sans, not in Computer Modern
    cm = np.array([[3, 1], [0, 2]])
    monkeypatch.setattr(plots, "FALLBACK_FAMILIES", ("DejaVu Sans",))
    plots._installed_fallbacks.cache_clear()
    monkeypatch.setattr(matplotlib, "rcParams", matplotlib.rcParams.copy())
    plots.pyplot()
    matplotlib.rcParams["font.sans-serif"] = ["cmss10"]
    assert matplotlib.rcParams["font.family"] == ["sans-serif", "DejaVu Sans"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert_png(plot_confusion_matrix(cm, labels, tmp_path / "fallback.png"), min_kb=2)
    assert not [w for w in caught if "missing from font" in str(w.message)]
    assert "no installed font" not in capsys.readouterr().err

    monkeypatch.setattr(plots, "FALLBACK_FAMILIES", ())
    plots._installed_fallbacks.cache_clear()
    plots.pyplot()
    matplotlib.rcParams["font.sans-serif"] = ["cmss10"]
    assert matplotlib.rcParams["font.family"] == ["sans-serif"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert_png(plot_confusion_matrix(cm, labels, tmp_path / "boxes.png"), min_kb=2)
    assert not [w for w in caught if "missing from font" in str(w.message)]
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "no installed font" in line]
    assert len(lines) == 1 and "boxes.png" in lines[0]
    assert set("коробкачашка") <= set(lines[0]) and "7 characters" in lines[0]
    plots._installed_fallbacks.cache_clear()
