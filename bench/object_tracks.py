#!/usr/bin/env python3
"""What following objects across a camera's frames gains: rendered bags of consecutive views
(``vl-distill make-bag --views-per-scene``: a camera turning along an arc over each table,
as a robot's camera streams it), replayed offline (``vl-distill replay-eval --offline``, the
shipped bundle, all 26 names of the split) with ``track_objects`` false and true, and with
each ``--memories`` value of ``track_memory``.

Each bag ``i`` of ``--bags`` is seed ``--seed + i``, every second one with depth (the
sensor noise model), views of ``--views`` frames over ``--sweep`` degrees (``--wide``: the
last bag's views of ``2 * views`` frames over 90 degrees, a slower-moving robot seen for
longer). Per bag and setting: seen (ID) and unseen (OOD) objects named right of those
matched at IoU 0.5, unknown rates and false-positive boxes; the sums over the bags; and the
cost of :meth:`~vl_distill_ros.perception.object_tracks.ObjectTracks.update` (p50 ms per
frame of 4 boxes, 640x480). Bags of unrelated frames (``make-bag`` without
``--views-per-scene``, the shipped sample bag) are scored as before, which ``--check-bag``
confirms on the sample bag (its report's groups with tracking on and off, equal). ``--plot
PNG`` draws the objects named right per bag, off against on.

    .venv/bin/python bench/object_tracks.py --plot docs/results/object_tracks.png
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import _common
from _common import REPO, BenchError, log, r

VL = [sys.executable, "-m", "vl_distill_ros.cli"]
#: Bounds on what the options control.
MAX_BAGS, MAX_FRAMES = 20, 2000


def parser() -> argparse.ArgumentParser:
    """The bench's options."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bags", type=int, default=6, help="bags to render (default 6)")
    ap.add_argument("--frames", type=int, default=240, help="frames per bag (default 240)")
    ap.add_argument("--views", type=int, default=8, help="views per scene (default 8)")
    ap.add_argument("--sweep", type=_common.finite_float, default=30.0,
                    help="degrees the camera turns over a scene's views (default 30)")
    ap.add_argument("--wide", action="store_true",
                    help="the last bag: twice the views over 90 degrees")
    ap.add_argument("--seed", type=_common.non_negative_int, default=1,
                    help="seed of the first bag (default 1)")
    ap.add_argument("--memories", default="",
                    help="comma-separated track_memory values to score besides the default")
    ap.add_argument("--check-bag", default=str(REPO / "demo" / "sample_tabletop"),
                    help="a bag of unrelated frames that tracking must leave as it is "
                         "(default: the shipped sample bag; '' skips)")
    ap.add_argument("--keep", type=Path, default=None,
                    help="keep the bags and reports in this folder (default: a temporary one)")
    ap.add_argument("--plot", type=_common.png_path, default=None,
                    help="write the per-bag plot here (PNG; .png is added to a name without one)")
    return ap


def bag_name(seed: int, depth: bool, views: int, sweep: float, frames: int) -> str:
    """The name of a rendered bag, from everything that shapes it: a bag ``--keep`` holds
    from an earlier run is used again only when it was rendered alike."""
    return f"seed{seed}{'_depth' if depth else ''}_{views}x{float(sweep)!r}deg_{frames}f"


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"{what} failed: {done.stderr[-2000:]}", exit_code=3)


def _replay(bag: Path, out: Path, params: list[str], links: bool = False) -> dict[str, Any]:
    """Replay ``bag`` offline with ``params``; its groups' counts, false-positive boxes and,
    with ``links``, :func:`_links`."""
    cmd = VL + ["replay-eval", str(bag), "--offline", "--out", str(out), "--no-progress",
                "--no-plots"]
    for p in params:
        cmd += ["-p", p]
    _run(cmd, f"replay-eval of {bag.name}")
    report = json.loads((out / "report.json").read_text())
    groups = report["groups"]
    row = {"id": {k: groups["id"][k] for k in ("matched", "correct", "unknown")},
           "ood": {k: groups["ood"][k] for k in ("matched", "correct", "unknown")},
           "false_positive_boxes": report["false_positives"]["boxes"]}
    if links:
        row["links"] = _links(bag, out / "labels.jsonl")
    return row


def _links(bag: Path, labels: Path) -> dict[str, int]:
    """The replay's track links checked against the bag's ground truth: each time a track id
    comes again, whether its box (matched at IoU 0.5) is the same true object as the last
    time (``same_object``) or another one (``other_object``: a wrong link)."""
    from vl_distill_ros.bags.bag_io import read_camera_bag
    from vl_distill_ros.evaluation.scoring import match_boxes

    contents = read_camera_bag(bag)
    last: dict[tuple[str, int], str] = {}
    counts = {"same_object": 0, "other_object": 0}
    for line in labels.read_text().splitlines():
        doc = json.loads(line)["doc"]
        stamp = doc["header"]["stamp"]
        truth = contents.objects_for(doc["camera"],
                                     int(stamp["sec"]) * 10**9 + int(stamp["nanosec"])) or []
        matched = match_boxes([tuple(o.bbox) for o in truth],
                              [tuple(o["bbox"]) for o in doc["objects"]], 0.5)
        key_of = {j: truth[i].key or truth[i].label for i, j, _ in matched}
        for j, obj in enumerate(doc["objects"]):
            if obj.get("track_id") is None or j not in key_of:
                continue
            track = (doc["camera"], int(obj["track_id"]))
            if track in last:
                counts["same_object" if last[track] == key_of[j] else "other_object"] += 1
            last[track] = key_of[j]
    return counts


def _update_cost_ms(repeats: int = 200) -> float:
    """p50 ms of one ObjectTracks.update: 4 boxes, 640x480, 512-d embeddings."""
    from vl_distill_ros.perception.object_tracks import ObjectTracks, TrackSettings

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (480, 640, 3), np.uint8)
    boxes = [(100, 100, 80, 60), (300, 200, 60, 90), (420, 80, 50, 50), (200, 320, 90, 70)]
    emb = rng.normal(size=(4, 512)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    tracks, settings, times = ObjectTracks(), TrackSettings(), []
    for i in range(repeats):
        t0 = time.perf_counter()
        tracks.update("cam", 0.033 * i, image, boxes, emb, settings)
        times.append(1e3 * (time.perf_counter() - t0))
    return float(np.median(times))


def _plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Objects named right per bag, tracking off against on, written to exactly ``path``."""
    from vl_distill_ros.plots import pyplot, save_figure

    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    x = np.arange(len(rows))
    for ax, group, title in ((axes[0], "id", "seen objects named right"),
                             (axes[1], "ood", "unseen objects named right")):
        off = [100 * b["off"][group]["correct"] / max(b["off"][group]["matched"], 1)
               for b in rows]
        on = [100 * b["on"][group]["correct"] / max(b["on"][group]["matched"], 1)
              for b in rows]
        ax.bar(x - 0.2, off, 0.4, label="track_objects: false")
        ax.bar(x + 0.2, on, 0.4, label="track_objects: true")
        ax.set_xticks(x, [b["name"] for b in rows], rotation=30, fontsize=7)
        ax.set_ylim(min(off + on) - 10, max(off + on) + 5)
        ax.set_ylabel("% of matched objects")
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Object tracks: rendered views of each table, offline replay, 26 names",
                 fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def run(a: argparse.Namespace, out: dict[str, Any]) -> None:
    """Render, replay and compare (fills ``out``)."""
    from tqdm import tqdm

    if not 1 <= a.bags <= MAX_BAGS or not 1 <= a.frames <= MAX_FRAMES:
        raise BenchError(f"--bags must be in [1, {MAX_BAGS}] and --frames in "
                         f"[1, {MAX_FRAMES}]")
    if not 2 <= a.views <= 1000 or not 0 <= a.sweep <= 360:
        raise BenchError("--views must be in [2, 1000] and --sweep in [0, 360]")
    try:
        memories = [float(v) for v in a.memories.split(",") if v.strip()]
    except ValueError:
        raise BenchError(f"--memories must be numbers, got {a.memories!r}") from None
    if not all(0.0 <= m <= 0.95 for m in memories):      # NaN fails too
        raise BenchError(f"--memories must be in [0, 0.95] (track_memory), got {a.memories!r}")
    if a.keep is not None:
        work = a.keep
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="object_tracks_"))
        out["_tmp"] = work
    rows = []
    for i in tqdm(range(a.bags), desc="object_tracks", unit="bag"):
        seed = a.seed + i
        depth = i % 2 == 1
        wide = a.wide and i == a.bags - 1
        views, sweep = (2 * a.views, 90.0) if wide else (a.views, a.sweep)
        name = bag_name(seed, depth, views, sweep, a.frames)
        bag = work / name
        if not bag.exists():
            _run(VL + ["make-bag", "--out", str(bag), "--frames", str(a.frames),
                       "--views-per-scene", str(views), "--sweep", str(sweep), "--seed",
                       str(seed), "--no-progress"] + (["--depth"] if depth else []),
                 f"make-bag {name}")
        row: dict[str, Any] = {"name": name, "seed": seed, "depth": depth, "views": views,
                               "sweep_deg": sweep,
                               "off": _replay(bag, work / f"{name}_off",
                                              ["track_objects:=false"]),
                               "on": _replay(bag, work / f"{name}_on", [], links=True)}
        for m in memories:
            row[f"memory_{m}"] = _replay(bag, work / f"{name}_m{m}", [f"track_memory:={m}"],
                                         links=True)
        rows.append(row)
        log(f"{name}: seen {row['off']['id']['correct']} -> {row['on']['id']['correct']}, "
            f"unseen {row['off']['ood']['correct']} -> {row['on']['ood']['correct']}")
    out["bags"] = rows
    settings = ["off", "on"] + [f"memory_{m}" for m in memories]
    out["totals"] = {s: {g: {k: int(sum(b[s][g][k] for b in rows))
                             for k in ("matched", "correct", "unknown")}
                         for g in ("id", "ood")} for s in settings}
    for s in settings[1:]:
        out["totals"][s]["links"] = {k: int(sum(b[s]["links"][k] for b in rows))
                                     for k in ("same_object", "other_object")}
    if a.check_bag:
        off = _replay(Path(a.check_bag), work / "check_off", ["track_objects:=false"])
        on = _replay(Path(a.check_bag), work / "check_on", [], links=True)
        out["unrelated_frames_links"] = on.pop("links")
        out["unrelated_frames"] = {"bag": str(a.check_bag), "off": off, "on": on,
                                   "equal": off == on}
    out["update_ms_p50"] = r(_update_cost_ms(), 3)
    out["machine"] = _common.machine_info()
    if a.plot is not None:
        out["plot"] = str(_plot(rows, a.plot))


def main(argv: list[str] | None = None) -> int:
    """Run the bench; print one JSON object."""
    return _common.bench_main(
        "object_tracks", "objects followed across frames: more of them named right, and "
        "bags of unrelated frames scored as before", parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
