#!/usr/bin/env python3
"""How well and how fast objects are placed with depth: rendered tabletop scenes, each
visible object's ground-truth box placed (``perception/object_placement.py``) and compared
with the centre of its true 3-D bounding box.

The scene renderer (``sim/scene.py``, the YCB meshes of ``--ycb-models``) draws ``--frames``
scenes with registered depth; for each depth noise model of ``--noise`` (``make-bag
--depth-noise``'s: none, sensor, coarse) the depth proposer runs on the frame and every
visible object's ground-truth box is placed. Per noise model: objects placed, the distance
between the published centre and the true one (p50 / p90 / p95 / max, metres; shares within
2 and 5 cm), the error of the height and the mean signed error in the camera's frame (the
centre is found from the visible samples: the hidden back of an object pulls it towards the
camera), and the placement's cost per frame beside the depth proposer's. The node's own
boxes are scored the same way by ``vl-distill replay-eval`` on bags made with
``make-bag --depth`` (``report.json``: ``placement``). ``--plot PNG`` draws the error's
cumulative distribution per noise model.

    .venv/bin/python bench/object_placement.py --frames 40 --plot docs/results/object_placement.png
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

import _common
from _common import BenchError, log, r

#: Bounds on what the options control.
MAX_FRAMES = 2000


def parser() -> argparse.ArgumentParser:
    """The bench's options."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=40, help="scenes to render (default 40)")
    ap.add_argument("--objects", default="2,6",
                    help="objects per scene, LO,HI (default 2,6)")
    ap.add_argument("--noise", nargs="+", default=["none", "sensor", "coarse"],
                    choices=("none", "sensor", "coarse"), help="depth noise models")
    ap.add_argument("--seed", type=_common.non_negative_int, default=0,
                    help="seed of the scenes and the noise (0 or above)")
    ap.add_argument("--ycb-models", type=Path, default=_common.REPO.parent / "shared" /
                    "ycb_models", help="YCB models folder (default ../shared/ycb_models)")
    ap.add_argument("--plot", type=_common.png_path, default=None,
                    help="write the error CDF here (PNG; .png is added to a name without one)")
    return ap


def _summary(errors: list[float], heights: list[float], signed: list[np.ndarray],
             placed: int, objects: int, cost_ms: list[float]) -> dict[str, Any]:
    e = np.sort(np.asarray(errors, float))
    pct = (lambda q: r(float(np.percentile(e, q)), 4) if e.size else None)
    return {"objects": objects, "placed": placed,
            "error_m": {"p50": pct(50), "p90": pct(90), "p95": pct(95),
                        "max": r(float(e.max()), 4) if e.size else None},
            "within_2cm": r(float(np.mean(e <= 0.02)), 3) if e.size else None,
            "within_5cm": r(float(np.mean(e <= 0.05)), 3) if e.size else None,
            "height_error_m_p50": r(float(np.median(np.abs(heights))), 4) if heights else None,
            "mean_signed_error_xyz_m": [r(float(v), 4) for v in np.mean(signed, 0)]
            if signed else None,
            "placement_ms_per_frame_p50": r(float(np.median(cost_ms)), 2) if cost_ms else None}


def _plot(curves: dict[str, list[float]], path: Path) -> Path:
    """The error's cumulative distribution per noise model, written to exactly ``path``."""
    from vl_distill_ros.plots import pyplot, save_figure

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, errors in curves.items():
        e = np.sort(np.asarray(errors, float)) * 100.0
        ax.plot(e, np.arange(1, e.size + 1) / max(e.size, 1), label=f"depth noise: {name}")
    ax.set_xlabel("distance from the true centre of the object's 3-D box (cm)")
    ax.set_ylabel("share of objects")
    ax.set_xlim(0, 8)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("Objects placed with depth: rendered scenes, ground-truth boxes")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def run(a: argparse.Namespace, out: dict[str, Any]) -> None:
    """Render, place and score (fills ``out``)."""
    from tqdm import tqdm

    from vl_distill_ros.perception.camera_model import CameraIntrinsics
    from vl_distill_ros.perception.depth_config import DepthProposalConfig
    from vl_distill_ros.perception.depth_proposals import propose_depth_boxes
    from vl_distill_ros.perception.object_placement import place_objects
    from vl_distill_ros.sim.depth_noise import NOISE_MODELS, apply_depth_noise
    from vl_distill_ros.sim.scene import SceneRenderer, SceneSpec, render_scene

    if not 1 <= a.frames <= MAX_FRAMES:
        raise BenchError(f"--frames must be in [1, {MAX_FRAMES}], got {a.frames}")
    try:
        lo, hi = (int(v) for v in str(a.objects).split(","))
    except ValueError:
        raise BenchError(f"--objects must be LO,HI, got {a.objects!r}") from None
    if not 1 <= lo <= hi <= 10:
        raise BenchError(f"--objects must satisfy 1 <= LO <= HI <= 10, got {a.objects!r}")
    if not a.ycb_models.is_dir():
        raise BenchError(f"no YCB models folder {a.ycb_models} (--ycb-models)")
    keys = sorted(p.name for p in a.ycb_models.iterdir() if (p / "textured.obj").is_file())
    if not keys:
        raise BenchError(f"no <key>/textured.obj in {a.ycb_models}")
    cfg = DepthProposalConfig()
    spec = SceneSpec(depth=True, objects_per_scene=(lo, hi))
    per: dict[str, dict[str, Any]] = {m: {"errors": [], "heights": [], "signed": [],
                                          "placed": 0, "objects": 0, "cost": [],
                                          "proposer": []} for m in a.noise}
    log(f"{a.frames} scenes of {lo}-{hi} of {len(keys)} objects; noise {', '.join(a.noise)}")
    with SceneRenderer(a.ycb_models) as renderer:
        for i in tqdm(range(a.frames), desc="object_placement", unit="scene"):
            frame = render_scene(renderer, keys, np.random.default_rng([a.seed, i]), spec)
            fx, fy, cx, cy = frame.intrinsics
            k = CameraIntrinsics(fx, fy, cx, cy, frame.depth.shape[1], frame.depth.shape[0])
            truth = {p["key"]: p for p in frame.meta["placed"]}
            boxes = [o.bbox for o in frame.objects]
            for m in a.noise:
                depth = frame.depth if NOISE_MODELS[m] is None else apply_depth_noise(
                    frame.depth, np.random.default_rng([a.seed, i, 1]), NOISE_MODELS[m])
                t0 = time.perf_counter()
                found = propose_depth_boxes(depth, k, cfg, frame.image)
                t1 = time.perf_counter()
                placed = place_objects(found, boxes, cfg)
                t2 = time.perf_counter()
                s = per[m]
                s["proposer"].append(1e3 * (t1 - t0))
                s["cost"].append(1e3 * (t2 - t1))
                for obj, p in zip(frame.objects, placed):
                    s["objects"] += 1
                    if p is None:
                        continue
                    s["placed"] += 1
                    d = np.asarray(p.position) - np.asarray(truth[obj.key]["centre_camera"])
                    s["errors"].append(float(np.linalg.norm(d)))
                    s["signed"].append(d)
                    s["heights"].append(p.size[2] - float(truth[obj.key]["size"][2]))
    out["machine"] = _common.machine_info()
    out["results"] = {}
    for m, s in per.items():
        out["results"][m] = _summary(s["errors"], s["heights"], s["signed"], s["placed"],
                                     s["objects"], s["cost"])
        out["results"][m]["depth_proposer_ms_per_frame_p50"] = r(
            float(np.median(s["proposer"])), 2)
    if a.plot is not None:
        out["plot"] = str(_plot({m: s["errors"] for m, s in per.items()}, a.plot))


def main(argv: list[str] | None = None) -> int:
    """Run the bench; print one JSON object."""
    return _common.bench_main(
        "object_placement", "objects placed with depth: centre within a few centimetres",
        parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
