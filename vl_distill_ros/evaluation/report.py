"""Replay-evaluation reports: ``report.json``, ``labels.jsonl``, ``report.md`` and PNG plots.

:func:`build_report` assembles the JSON-ready report from the bag, the
:class:`~vl_distill_ros.evaluation.replay.Recording` and the scores of
:func:`~vl_distill_ros.evaluation.scoring.score_frames`; :func:`write_report` writes every
file; :func:`summary_table` is the text printed at the end of a run.

``labels.jsonl`` holds every labels document received (live) or made (offline), one JSON
object per line in arrival order::

    {"frame": ["/camera/image_raw", 1700000000100000000], "received_s": 0.61,
     "published_s": 0.58, "latency_s": 0.03, "doc": {... the ~/labels document ...}}

so the report's numbers can be recomputed from what the node actually published
(:func:`load_labels_jsonl`).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..plots import drawn_or_warned, pyplot, save_figure

__all__ = ["build_report", "write_report", "summary_table", "markdown_report",
           "load_labels_jsonl", "plot_confusion", "plot_per_object", "plot_latency"]

_DPI = 110


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def depth_alignment_summary(contents: Any) -> dict[str, dict[str, Any]]:
    """Per colour topic whose depth comes from a separate depth camera, how it was aligned:
    the depth camera's CameraInfo topic, the pose (None: read as registered), the two frames
    and a note (see :mod:`~vl_distill_ros.bags.unregistered_depth`)."""
    plans = getattr(contents, "depth_alignment", None) or {}
    return {colour: {"depth_camera_info_topic": plan.depth_camera_info_topic,
                     "pose": None if plan.pose is None else list(plan.pose),
                     "depth_frame": plan.depth_frame, "colour_frame": plan.colour_frame,
                     "note": plan.note}
            for colour, plan in sorted(plans.items())}


def _side_topic_counts(frames: dict[str, Any], contents: Any, published: Mapping[str, int],
                       counters: Mapping[str, Any]) -> None:
    """Live: the depth and CameraInfo messages published to the node and those it received
    (``depth_lost_in_transport``, ``camera_info_lost_in_transport``): a frame whose depth
    was lost is labelled colour only, so its labels differ from ``--offline``'s."""
    for kind, pairing in (("depth", getattr(contents, "depth_topics", None) or {}),
                          ("camera_info", getattr(contents, "camera_info_topics", None) or {})):
        sent = sum(int(published.get(t, 0)) for t in set(pairing.values()))
        if not sent:
            continue
        received = counters.get(f"{kind}_received")
        frames[f"{kind}_published"] = sent
        frames[f"node_{kind}_received"] = received
        frames[f"{kind}_lost_in_transport"] = (sent - received if received is not None
                                               else None)


def _read_counts(frames: dict[str, Any], rec: Any) -> None:
    """``frames``' counts of what was read: offline, ``in_bag`` is what it read (every
    image), a ``metadata.yaml`` count that disagrees (stale, hand-edited) kept in
    ``in_bag_metadata``; ``undecodable``: images that cannot be decoded (offline skips
    them, live publishes them and the node drops them; their frames count as unlabelled)."""
    read = rec.published + (rec.undecodable.total() if rec.mode == "offline" else 0)
    if rec.mode == "offline" and read != frames["in_bag"]:
        frames["in_bag_metadata"], frames["in_bag"] = frames["in_bag"], read
    frames["undecodable"] = rec.undecodable.total()
    frames["undecodable_by_topic"] = {
        topic: {"images": n, "decoded": sum(1 for t, _ in rec.frames if t == topic) - n,
                "first_error": rec.undecodable.first_error.get(topic, "")}
        for topic, n in sorted(rec.undecodable.counts.items())}


def build_report(contents: Any, rec: Any, scores: Mapping[str, Any], *, rate: float | None,
                 split_name: str = "", split_path: str = "",
                 model: str = "") -> dict[str, Any]:
    """The ``report.json`` content (see the module docstring of
    :mod:`vl_distill_ros.evaluation.scoring` for the metric definitions)."""
    from .. import __version__

    image_messages = {t: int(contents.message_counts.get(t, 0)) for t in contents.image_topics}
    frames = dict(scores["frames"])
    frames["in_bag"] = sum(image_messages.values())
    _read_counts(frames, rec)
    frames["published"] = rec.published
    frames["duplicate_documents"] = rec.duplicates
    frames["unexpected_documents"] = rec.unexpected + frames.pop("unexpected", 0)
    counters = rec.node.get("counters") or {}
    if rec.mode == "live":
        received = counters.get("received")
        frames["node_received"] = received
        frames["node_dropped_latest_wins"] = counters.get("dropped")
        # frames prepared while the node was behind its cameras (proposal_box_net_behind)
        frames["node_processed_behind"] = counters.get("processed_behind")
        # of those, the frames a step further behind (inference_backend_behind)
        frames["node_processed_behind_student"] = counters.get("processed_behind_student")
        frames["node_bad_frames"] = counters.get("bad_frames")
        frames["node_errors"] = counters.get("errors")
        frames["lost_in_transport"] = (rec.published - received if received is not None
                                       else None)
        _side_topic_counts(frames, contents, rec.node.get("side_published") or {}, counters)
    groups = scores["groups"]
    return {
        "tool": "vl-distill replay-eval",
        "version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "mode": rec.mode,
        "rate": rate if rec.mode == "live" else None,
        "bag": {"path": str(contents.path), "storage": contents.storage,
                "image_topics": list(contents.image_topics), "image_messages": image_messages,
                "depth_topics": dict(getattr(contents, "depth_topics", {}) or {}),
                "camera_info_topics": dict(getattr(contents, "camera_info_topics", {}) or {}),
                "unpaired_depth_topics": list(getattr(contents, "unpaired_depth_topics", [])),
                "depth_encoded_image_topics": list(getattr(contents, "depth_encoded_topics",
                                                           [])),
                "depth_alignment": depth_alignment_summary(contents),
                "ground_truth_source": contents.ground_truth_source,
                "ground_truth_frames": len(contents.ground_truth),
                "duration_s": max(0, contents.end_ns - contents.start_ns) / 1e9},
        "model": model or rec.node.get("model_path", ""),
        "vocabulary": rec.vocabulary,
        "split": {"name": split_name, "path": split_path},
        "settings": rec.settings,
        "iou_threshold": scores["iou_threshold"],
        "frames": frames,
        "accuracy": {"id": groups["id"]["accuracy"], "ood": groups["ood"]["accuracy"],
                     "all": groups["all"]["accuracy"]},
        "unknown_rate": groups["all"]["unknown_rate"],
        "missed_objects": groups["all"]["missed"],
        "groups": groups,
        "per_object": scores["per_object"],
        "macro_f1": scores["macro_f1"],
        "false_positives": scores["false_positives"],
        "not_in_vocabulary": scores.get("not_in_vocabulary"),
        "gzsl": scores.get("gzsl"),
        "open_set": scores.get("open_set"),
        "placement": scores.get("placement"),
        "confusion": scores["confusion"],
        "latency_kind": "end_to_end" if rec.mode == "live" else "processing",
        "latency_ms": scores["latency_ms"],
        "duration_s": rec.duration_s,
        "node": {k: v for k, v in rec.node.items() if k != "cameras"},
        "cameras": rec.node.get("cameras", {}),
        "files": {},
    }


def summary_table(report: Mapping[str, Any]) -> str:
    """A short plain-text summary: frames, one row per object group, latency."""
    fr = report["frames"]
    head = f"replay-eval {report['bag']['path']} ({report['mode']}"
    head += f", rate {report['rate']:g})" if report.get("rate") else ")"
    lines = [head]
    frames = (f"frames: {fr['in_bag']} in bag, {fr['published']} "
              f"{'published' if report['mode'] == 'live' else 'processed'}, "
              f"{fr['labelled']} labelled, {fr['dropped']} dropped"
              + (f" ({fr['undecodable']} undecodable)" if fr.get("undecodable") else ""))
    if report["mode"] == "live":
        frames += (f" (node latest-wins {_fmt(fr.get('node_dropped_latest_wins'))}, lost in "
                   f"transport {_fmt(fr.get('lost_in_transport'))}, processed behind "
                   f"{_fmt(fr.get('node_processed_behind'))}, with the INT8 student "
                   f"{_fmt(fr.get('node_processed_behind_student'))})")
    frames += f"; {fr['evaluated']} with ground truth scored"
    lines.append(frames)
    cols = ["group", "objects", "matched", "missed", "correct", "unknown", "accuracy", "recall",
            "unknown_rate"]
    rows = []
    for g in ("id", "ood", "other", "all"):
        c = report["groups"][g]
        if g == "other" and not c["objects"]:
            continue
        rows.append([g.upper() if g != "all" else "all", str(c["objects"]), str(c["matched"]),
                     str(c["missed"]), str(c["correct"]), str(c["unknown"]),
                     _fmt(c["accuracy"]), _fmt(c["recall"]), _fmt(c["unknown_rate"])])
    widths = [max(len(cols[i]), *(len(r[i]) for r in rows)) for i in range(len(cols))]
    lines.append("  ".join(c.rjust(w) if i else c.ljust(w)
                           for i, (c, w) in enumerate(zip(cols, widths))))
    for r in rows:
        lines.append("  ".join(v.rjust(w) if i else v.ljust(w)
                               for i, (v, w) in enumerate(zip(r, widths))))
    lat = report["latency_ms"]
    kind = "end-to-end latency" if report["latency_kind"] == "end_to_end" else "processing time"
    lines.append(f"{kind}: p50 {_fmt(lat['p50'], 1)} ms, p95 {_fmt(lat['p95'], 1)} ms "
                 f"(n={lat['n']}); macro F1 {_fmt(report['macro_f1'])}; false-positive boxes "
                 f"{report['false_positives']['boxes']}")
    lines.append(_gzsl_line(report))
    if report.get("placement"):
        lines.append(_placement_line(report["placement"]))
    return "\n".join(lines)


def _placement_line(p: Mapping[str, Any]) -> str:
    """Published positions against the ground truth's (``placement``)."""
    err = p["error_m"]
    cm = (lambda v: "n/a" if v is None else f"{100.0 * v:.1f} cm")
    return (f"positions: {p['placed']} of {p['objects']} matched objects with a true position "
            f"were published with one; error p50 {cm(err['p50'])}, p95 {cm(err['p95'])}; "
            f"within 2 cm {_fmt(p['within_2cm'])}, within 5 cm {_fmt(p['within_5cm'])}")


def _gzsl_line(report: Mapping[str, Any]) -> str:
    """``seen / unseen / H`` (per-class mean over matched objects) and the open-set line."""
    g = report.get("gzsl") or {}
    line = (f"per-class accuracy over the whole vocabulary: seen {_fmt(g.get('seen'))}, "
            f"unseen {_fmt(g.get('unseen'))}, H {_fmt(g.get('h'))}")
    o = report.get("open_set")
    if o:
        line += (f"; open set: {o['in_vocabulary']} in-vocabulary vs {o['out_of_vocabulary']} "
                 f"out-of-vocabulary objects, AUROC {_fmt(o['auroc'])}, unknown rate "
                 f"{_fmt(o['unknown_rate_in_vocabulary'])} / "
                 f"{_fmt(o['unknown_rate_out_of_vocabulary'])}")
    return line


def markdown_report(report: Mapping[str, Any]) -> str:
    """``report.md``: the summary table and the per-object table."""
    fr = report["frames"]
    out = [f"# Replay evaluation: `{Path(report['bag']['path']).name}`", ""]
    out.append(f"- mode: **{report['mode']}**"
               + (f", rate {report['rate']:g}" if report.get("rate") else ""))
    out.append(f"- bag: `{report['bag']['path']}` ({report['bag']['storage']}; image topics "
               f"{', '.join(report['bag']['image_topics'])}; ground truth from "
               f"{report['bag']['ground_truth_source']})")
    out.append(f"- model: `{report['model']}`; vocabulary: {report['vocabulary'].get('source')}"
               f" ({len(report['vocabulary'].get('names') or [])} labels); split: "
               f"{report['split']['name'] or 'none'}; IoU threshold "
               f"{report['iou_threshold']:g}")
    frames = (f"- frames: {fr['in_bag']} in bag, {fr['published']} "
              f"{'published' if report['mode'] == 'live' else 'processed'}, "
              f"{fr['labelled']} labelled, {fr['dropped']} dropped"
              + (f" ({fr['undecodable']} undecodable)" if fr.get("undecodable") else ""))
    if report["mode"] == "live":
        frames += (f" (dropped by the node's latest-wins policy: "
                   f"{_fmt(fr.get('node_dropped_latest_wins'))}, lost in transport: "
                   f"{_fmt(fr.get('lost_in_transport'))}; processed while the node was behind "
                   f"its cameras: {_fmt(fr.get('node_processed_behind'))}, of them with the "
                   f"student of inference_backend_behind: "
                   f"{_fmt(fr.get('node_processed_behind_student'))})")
    out.append(frames + f"; {fr['evaluated']} frames with ground truth scored; "
               f"{fr['ground_truth_objects_in_dropped_frames']} objects in dropped frames not "
               "scored")
    lat = report["latency_ms"]
    kind = ("end-to-end latency (publication to labels)" if report["latency_kind"] ==
            "end_to_end" else "processing time per frame")
    out.append(f"- {kind}: p50 {_fmt(lat['p50'], 1)} ms, p95 {_fmt(lat['p95'], 1)} ms, "
               f"max {_fmt(lat['max'], 1)} ms")
    out.append(f"- {_gzsl_line(report)}")
    if report.get("placement"):
        out.append(f"- {_placement_line(report['placement'])}")
    out.append(f"- macro F1 {_fmt(report['macro_f1'])}; false-positive boxes "
               f"{report['false_positives']['boxes']} ({report['false_positives']['known']} "
               "named, " f"{report['false_positives']['unknown']} unknown)")
    out += ["", "## Summary", "",
            "| group | objects | matched | missed | correct | unknown | accuracy | recall | "
            "unknown rate |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for g in ("id", "ood", "other", "all"):
        c = report["groups"][g]
        if g == "other" and not c["objects"]:
            continue
        out.append(f"| {g.upper() if g != 'all' else 'all'} | {c['objects']} | {c['matched']} | "
                   f"{c['missed']} | {c['correct']} | {c['unknown']} | {_fmt(c['accuracy'])} | "
                   f"{_fmt(c['recall'])} | {_fmt(c['unknown_rate'])} |")
    out += ["", "Accuracy = correct / matched objects; recall = correct / all objects (missed "
            "ones count as wrong); `unknown` predictions count as wrong.", "",
            "## Per object", "",
            "| label | group | support | missed | unknown | TP | FP | FN | precision | recall "
            "| F1 |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, o in report["per_object"].items():
        out.append(f"| {name} | {o['group']} | {o['support']} | {o['missed']} | {o['unknown']} | "
                   f"{o['tp']} | {o['fp']} | {o['fn']} | {_fmt(o['precision'])} | "
                   f"{_fmt(o['recall'])} | {_fmt(o['f1'])} |")
    files = report.get("files") or {}
    if files:
        out += ["", "## Files", ""]
        out += [f"- {k}: `{Path(v).name}`" for k, v in files.items()]
    return "\n".join(out) + "\n"


def plot_confusion(confusion: Mapping[str, Any], path: str | Path) -> Path:
    """Rectangular confusion matrix (rows: true labels; columns: predicted, ``unknown``,
    ``(missed)``), coloured by the row-normalised fraction, annotated with counts."""
    import numpy as np

    plt = pyplot()
    rows, cols = list(confusion["rows"]), list(confusion["columns"])
    cm = np.asarray(confusion["matrix"], dtype=float).reshape(len(rows), len(cols))
    fig_w = max(5.0, 0.42 * len(cols) + 2.8)
    fig_h = max(3.0, 0.42 * len(rows) + 2.2)
    fig, ax = plt.subplots(figsize=(fig_w, fig_h))
    if not rows:
        ax.text(0.5, 0.5, "no ground-truth objects were scored", ha="center", va="center")
        ax.set_axis_off()
    else:
        support = cm.sum(axis=1, keepdims=True)
        frac = np.divide(cm, support, out=np.zeros_like(cm), where=support > 0)
        im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).set_label("fraction of true label")
        font = 9 if max(len(rows), len(cols)) <= 15 else 7
        ax.set_xticks(range(len(cols)))
        ax.set_yticks(range(len(rows)))
        ax.set_xticklabels(cols, rotation=60, ha="right", rotation_mode="anchor", fontsize=font)
        ax.set_yticklabels(rows, fontsize=font)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for i in range(len(rows)):
            for j in range(len(cols)):
                if cm[i, j]:
                    ax.text(j, i, str(int(cm[i, j])), ha="center", va="center",
                            fontsize=font - 1, color="white" if frac[i, j] > 0.5 else "black")
    ax.set_title("Confusion matrix (replay)")
    return save_figure(fig, path, dpi=_DPI)


def plot_per_object(per_object: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """Horizontal bars of precision, recall and F1 per label (ID / OOD marked)."""
    import numpy as np

    plt = pyplot()
    names = [n for n, o in per_object.items() if o["support"]]
    fig, ax = plt.subplots(figsize=(7.5, max(2.5, 0.45 * len(names) + 1.3)))
    if not names:
        ax.text(0.5, 0.5, "no ground-truth objects were scored", ha="center", va="center")
        ax.set_axis_off()
    else:
        ys = np.arange(len(names))
        h = 0.27
        for k, (metric, colour) in enumerate((("precision", "tab:gray"),
                                              ("recall", "tab:orange"), ("f1", "tab:blue"))):
            vals = [per_object[n][metric] for n in names]
            ax.barh(ys + (k - 1) * h, [0.0 if v is None else v for v in vals], h,
                    color=colour, label=metric)
        for y, n in zip(ys, names):
            f1 = per_object[n]["f1"]
            ax.text(min(1.0, f1 or 0.0) + 0.01, y + h, _fmt(f1, 2), va="center", fontsize=7)
        ax.set_yticks(ys)
        ax.set_yticklabels([f"{n} ({per_object[n]['group'].upper()})" for n in names],
                           fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0.0, 1.1)
        ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Per-object precision / recall / F1")
    return save_figure(fig, path, dpi=_DPI)


def plot_latency(latencies_ms: Sequence[float], path: str | Path, kind: str) -> Path:
    """Histogram of per-frame latency with the p50 and p95 marked."""
    from .scoring import percentiles

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    vals = [float(v) for v in latencies_ms if v is not None]
    if not vals:
        ax.text(0.5, 0.5, "no labelled frames", ha="center", va="center")
        ax.set_axis_off()
    else:
        ax.hist(vals, bins=min(40, max(5, len(vals) // 3)), color="tab:blue", alpha=0.8)
        p = percentiles(vals)
        for q, style in (("p50", "--"), ("p95", ":")):
            ax.axvline(p[q], color="tab:red", linestyle=style,
                       label=f"{q} {p[q]:.1f} ms")
        ax.legend(fontsize=8)
        ax.set_xlabel("ms")
        ax.set_ylabel("frames")
    ax.set_title("End-to-end latency (publication to labels)" if kind == "end_to_end"
                 else "Processing time per frame (offline)")
    return save_figure(fig, path, dpi=_DPI)


def write_report(out_dir: str | Path, report: dict[str, Any], rows: Sequence[Mapping[str, Any]],
                 latencies_ms: Sequence[float], plots: bool = True) -> dict[str, str]:
    """Write ``labels.jsonl``, the PNG plots, ``report.json`` and ``report.md`` into
    ``out_dir``; ``report["files"]`` is filled in. Returns that mapping."""
    from ..atomic_io import atomic_write_bytes

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    if plots:  # first: a plot that fails is left out (with a warning), never the scores
        for key, draw in (
                ("confusion_matrix", lambda: plot_confusion(report["confusion"],
                                                            out / "confusion_matrix.png")),
                ("per_object_f1", lambda: plot_per_object(report["per_object"],
                                                          out / "per_object_f1.png")),
                ("latency", lambda: plot_latency(latencies_ms, out / "latency_hist.png",
                                                 report["latency_kind"]))):
            drawn = drawn_or_warned(draw, key)
            if drawn is not None:
                files[key] = str(drawn)
    labels_path = out / "labels.jsonl"
    atomic_write_bytes(labels_path, "".join(json.dumps(row, separators=(",", ":")) + "\n"
                                            for row in rows).encode("utf-8"))
    files = {"labels": str(labels_path), **files}
    files["report_md"] = str(out / "report.md")
    files["report_json"] = str(out / "report.json")
    report["files"] = files
    atomic_write_bytes(out / "report.md", markdown_report(report).encode("utf-8"))
    atomic_write_bytes(out / "report.json", json.dumps(report, indent=2).encode("utf-8"))
    return files


def load_labels_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``labels.jsonl`` file (see the module docstring)."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows
