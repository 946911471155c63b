#!/usr/bin/env python3
"""Choose the window the student sees around each box (``crop_square``, ``crop_context``)
without the OOD objects.

Renders a tabletop RGB-D bag (``vl-distill make-bag``, the sample bag's camera settings)
of the split's ID objects and the calibration's pseudo-unseen objects (the auxiliary
``calib_unseen`` objects of ``--render-config``: never trained on, never among the
split's OOD objects), then replays it offline (``vl-distill replay-eval --offline``) with
a vocabulary of exactly those objects, once per setting: the box stretched to a square
(``crop_square: false``, the old behaviour) and square windows with each ``--contexts``
margin, each at the bundle's calibrated threshold and without a threshold. The pseudo-unseen
objects are the bag's OOD group.

Prints ONE JSON object on stdout: per setting, accuracy (``unknown`` counts as wrong) and
unknown rate of the ID and pseudo-unseen groups, and ``best_context``, the margin with the
highest sum of the two groups' top-1 accuracies (no threshold). With ``--plot`` also writes
a PNG of accuracy against the margin. Needs the YCB meshes (``--models-dir``).

``full_frame_crops`` (``--crops-only`` runs just this part) scores images that are one
object's box and nothing more, as a caller with ``crop_source: full_frame`` hands them over
(crops of another renderer, a detector's boxes): every ground-truth box of the bag cut out
tight and with a 15% margin, classified as a full frame with the box stretched to the square
input (``crop_square: false``) and as the node does (``crop_square: true``: a frame longer
than 4:3 padded to a square with its edge pixels). Top-1 without a threshold, per group and
for the boxes longer than 4:3 alone. ``--bag BAG`` (repeatable) scores the full-frame crops of
bags that exist already instead, e.g. the second renderer's (``tools/other_renderer_scenes.py``),
among the split's 26 names (groups ``id`` and ``ood``); nothing is rendered or replayed.

    .venv/bin/python bench/crop_window.py --out runs/crop_window --plot runs/crop_window.png
    .venv/bin/python bench/crop_window.py --out runs/crop_window_other --bag /tmp/other/b1
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import yaml

import _common
from _common import REPO, BenchError, log

VL = [sys.executable, "-m", "vl_distill_ros.cli"]


def _keys(path: Path, section: str) -> list[str]:
    return list(yaml.safe_load(path.read_text())[section])


def calibration_objects(render_config: Path) -> list[str]:
    """The pseudo-unseen object keys: the ``calib_unseen`` split of the auxiliary render
    config (the objects the calibration's ``calibration.unseen`` folder is rendered from)."""
    spec = yaml.safe_load(render_config.read_text())
    try:
        return list(spec["splits"]["calib_unseen"]["objects"])
    except (KeyError, TypeError):
        raise BenchError(f"{render_config} has no splits.calib_unseen.objects") from None


def write_vocabulary(out: Path, id_keys: list[str], unseen: list[str]) -> tuple[Path, Path]:
    """The bag's vocabulary (those objects' labels from config/ycb_vocabulary.yaml) and its
    split (ID = the split's ID objects, OOD = the pseudo-unseen ones)."""
    labels = yaml.safe_load((REPO / "config/ycb_vocabulary.yaml").read_text())["labels"]
    keep = set(id_keys) | set(unseen)
    vocab, split = out / "vocabulary.yaml", out / "split.yaml"
    vocab.write_text(yaml.safe_dump({"labels": [lab for lab in labels if lab["key"] in keep]},
                                    sort_keys=False))
    split.write_text(yaml.safe_dump({"name": "pseudo_unseen", "in_distribution": id_keys,
                                     "out_of_distribution": unseen}, sort_keys=False))
    return vocab, split


def replay(bag: Path, vocab: Path, split: Path, out: Path, params: list[str],
           model: str = "") -> dict:
    """Offline replay of ``bag`` with node parameters ``params`` (and bundle ``model``, or
    the packaged one); the two groups' scores."""
    cmd = VL + ["replay-eval", str(bag), "--offline", "--vocabulary", str(vocab), "--split",
                str(split), "--out", str(out), "--no-progress", "--no-plots"]
    cmd += ["--model", model] if model else []
    for p in params:
        cmd += ["-p", p]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"replay-eval failed: {done.stderr[-2000:]}", exit_code=3)
    groups = json.loads((out / "report.json").read_text())["groups"]
    return {g: {"matched": groups[k]["matched"], "correct": groups[k]["correct"],
                "accuracy": groups[k]["accuracy"], "unknown_rate": groups[k]["unknown_rate"]}
            for g, k in (("id", "id"), ("pseudo_unseen", "ood"))}


def plot(results: list[dict], path: Path) -> Path:
    """Accuracy of both groups against the margin (square windows), with and without the
    threshold; the stretched box as dashed lines; written to exactly ``path``."""
    from vl_distill_ros.plots import pyplot, save_figure

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    square = [r for r in results if r["crop_square"]]
    stretched = [r for r in results if not r["crop_square"]]
    for group, colour in (("id", "tab:blue"), ("pseudo_unseen", "tab:orange")):
        for thr, style in (("calibrated", "-o"), ("none", ":s")):
            rows = [r for r in square if r["threshold"] == thr]
            ax.plot([r["crop_context"] for r in rows],
                    [100 * r[group]["accuracy"] for r in rows], style, color=colour,
                    label=f"{group}, threshold {thr}")
            for r in stretched:
                if r["threshold"] == thr:
                    ax.axhline(100 * r[group]["accuracy"], color=colour, ls="--", lw=0.8)
    ax.set_xlabel("crop_context (square window)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Dashed: box stretched to a square (crop_square: false)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def parser() -> argparse.ArgumentParser:
    """The bench's options."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "runs/crop_window")
    ap.add_argument("--model", default="", help="bundle (default: the packaged one)")
    ap.add_argument("--render-config", type=Path, default=REPO / "config/render_ycb_aux.yaml",
                    help="auxiliary render config whose calib_unseen objects are used")
    ap.add_argument("--split", type=Path, default=REPO / "config/splits/ycb_paper.yaml")
    ap.add_argument("--contexts", default="0,0.05,0.1,0.15,0.2,0.3",
                    help="comma-separated crop_context margins to replay, each in [0, 1]")
    ap.add_argument("--frames", type=_common.positive_int, default=80)
    ap.add_argument("--seed", type=_common.non_negative_int, default=7)
    ap.add_argument("--models-dir", default="")
    ap.add_argument("--plot", type=_common.png_path, default=None,
                    help="PNG of accuracy against the margin (.png is added to a name "
                         "without one)")
    ap.add_argument("--crops-only", action="store_true",
                    help="only the full-frame crops of the ground-truth boxes (no replays)")
    ap.add_argument("--bag", type=Path, action="append", default=[],
                    help="score the full-frame crops of this existing bag instead (ground "
                         "truth as in docs/bags.md, e.g. another renderer's), among the "
                         "split's ID and OOD names; repeatable; nothing is rendered or "
                         "replayed")
    return ap


def parse_contexts(text: str) -> list[float]:
    """The ``--contexts`` margins: comma-separated finite numbers in [0, 1] (the node's
    ``crop_context`` range), at least one.

    Raises:
        BenchError: an empty list, a word, NaN, an infinity or a margin out of range.
    """
    out = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            raise BenchError(f"--contexts must be numbers in [0, 1], got {item.strip()!r} in "
                             f"{text!r}") from None
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise BenchError(f"--contexts must be numbers in [0, 1], got {item.strip()!r}")
        out.append(value)
    return out


def render_bag(a: argparse.Namespace, keys: list[str]) -> Path:
    """Render the tabletop bag of ``keys`` (the sample bag's camera settings)."""
    bag = a.out / "bag"
    cmd = VL + ["make-bag", "--out", str(bag), "--frames", str(a.frames), "--objects",
                ",".join(keys), "--width", "480", "--height", "360", "--noise-sigma", "0,0",
                "--camera-distance", "0.45,0.75", "--depth", "--depth-noise", "none",
                "--seed", str(a.seed), "--overwrite", "--no-progress"]
    cmd += ["--models-dir", a.models_dir] if a.models_dir else []
    log("rendering the bag")
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"make-bag failed: {done.stderr[-2000:]}")
    return bag


def _cut_out(image, box, margin: float):
    """The pixels of ``box`` grown by ``margin`` of its size, clipped to the image."""
    height, width = image.shape[:2]
    x, y, w, h = box
    x0, y0 = max(int(round(x - margin / 2 * w)), 0), max(int(round(y - margin / 2 * h)), 0)
    x1 = min(int(round(x + (1 + margin / 2) * w)), width)
    y1 = min(int(round(y + (1 + margin / 2) * h)), height)
    return image[y0:y1, x0:x1]


def full_frame_crops(bags: Path | list[Path], vocab: Path, id_keys: list[str], model: str = "",
                     other_group: str = "pseudo_unseen") -> dict:
    """Each ground-truth box of ``bags`` cut out (tight, and with a 15% margin) and
    classified as a full frame, stretched (``crop_square: false``) and as the node does
    (``crop_square: true``); top-1 accuracy without a threshold per group (``id`` for
    ``id_keys``, ``other_group`` for the rest). Raises BenchError when the bags hold no
    ground-truth box."""
    import numpy as np

    from vl_distill_ros.bags.bag_io import read_camera_bag
    from vl_distill_ros.bags.raw_io import BagError
    from vl_distill_ros.evaluation.replay import node_parameter_values, pipeline_settings
    from vl_distill_ros.model.bundle import load_bundle
    from vl_distill_ros.model.text_service import TextEmbeddingService
    from vl_distill_ros.model.vocabulary import Vocabulary
    from vl_distill_ros.perception.pipeline import PerceptionPipeline
    from vl_distill_ros.ros.params import default_model_path

    crops = []
    for bag in [bags] if isinstance(bags, Path) else bags:
        try:
            contents = read_camera_bag(bag)
        except BagError as exc:
            raise BenchError(f"{bag}: {exc}") from None
        crops += [(margin, o.key, np.ascontiguousarray(_cut_out(msg.image, o.bbox, margin)))
                  for msg in contents.images()
                  for o in contents.objects_for(msg.topic, msg.stamp_ns) or []
                  for margin in (0.0, 0.15)]
    if not crops:
        raise BenchError("no ground-truth box in the bag(s): full-frame crops need the "
                         "/ground_truth documents of docs/bags.md")
    bundle = load_bundle(Path(model) if model else default_model_path(), device="cpu")
    vocabulary = Vocabulary.load(vocab)
    service = TextEmbeddingService.from_bundle(bundle, cache_dir=None)
    embeddings = service.embed_vocabulary(vocabulary)
    key_of = {lab.name: lab.key for lab in vocabulary.labels}
    results: dict = {}
    for square in (False, True):
        values = node_parameter_values({"crop_source": "full_frame", "crop_square": square})
        pipe = PerceptionPipeline(bundle, vocabulary=vocabulary, embeddings=embeddings,
                                  catalogue=service.catalogue,
                                  **pipeline_settings(values).as_kwargs())
        row = results.setdefault(f"crop_square_{str(square).lower()}", {})
        try:
            for margin, key, image in crops:
                if min(image.shape[:2]) < 8:
                    continue
                objects, _ = pipe.process(image)
                right = bool(objects) and key_of.get(objects[0].top_k[0][0]) == key
                group = f"margin_{margin}_" + ("id" if key in id_keys else other_group)
                long = max(image.shape[:2]) > 4 / 3 * min(image.shape[:2])
                for name in (group, f"{group}_longer_than_4_3") if long else (group,):
                    cell = row.setdefault(name, {"objects": 0, "correct": 0})
                    cell["objects"] += 1
                    cell["correct"] += int(right)
        finally:
            pipe.close()
    for row in results.values():
        for cell in row.values():
            cell["accuracy"] = round(cell["correct"] / max(cell["objects"], 1), 4)
    return results


def run(a: argparse.Namespace, out: dict) -> None:
    """Render the bag, replay it once per setting, fill ``out``."""
    contexts = parse_contexts(a.contexts)       # before any work
    out["machine"] = _common.machine_info()
    a.out.mkdir(parents=True, exist_ok=True)
    id_keys = _keys(a.split, "in_distribution")
    if a.bag:
        ood_keys = _keys(a.split, "out_of_distribution")
        vocab, _ = write_vocabulary(a.out, id_keys, ood_keys)
        out["objects"] = {"id": id_keys, "ood": ood_keys}
        out["bags"] = [str(b) for b in a.bag]
        log(f"full-frame crops of the ground-truth boxes of {len(a.bag)} bag(s)")
        out["full_frame_crops"] = full_frame_crops(a.bag, vocab, id_keys, a.model, "ood")
        return
    unseen = calibration_objects(a.render_config)
    if set(unseen) & set(_keys(a.split, "out_of_distribution")):
        raise BenchError("calibration objects overlap the split's OOD objects")
    vocab, split = write_vocabulary(a.out, id_keys, unseen)
    bag = render_bag(a, id_keys + unseen)
    out["objects"] = {"id": id_keys, "pseudo_unseen": unseen}
    log("full-frame crops of the ground-truth boxes")
    out["full_frame_crops"] = full_frame_crops(bag, vocab, id_keys, a.model)
    if a.crops_only:
        return
    settings = [(False, 0.0)] + [(True, c) for c in contexts]
    results = []
    for square, context in settings:
        for thr, extra in (("calibrated", []), ("none", ["unknown_threshold:=0.0"])):
            log(f"crop_square {square}, crop_context {context}, threshold {thr}")
            params = [f"crop_square:={str(square).lower()}", f"crop_context:={context}"]
            scores = replay(bag, vocab, split, a.out / f"{square}_{context}_{thr}",
                            params + extra, a.model)
            results.append({"crop_square": square, "crop_context": context,
                            "threshold": thr, **scores})
    out["results"] = results
    top1 = [r for r in results if r["crop_square"] and r["threshold"] == "none"]
    out["best_context"] = max(top1, key=lambda r: r["id"]["accuracy"] +
                              r["pseudo_unseen"]["accuracy"])["crop_context"]
    if a.plot:
        out["plot"] = str(plot(results, a.plot))


def main(argv: list[str] | None = None) -> int:
    """Run the bench; prints one JSON object, returns the exit status."""
    return _common.bench_main(
        "crop_window", "issue 8: the classifier's crop window chosen without OOD objects "
        "(demo OOD row >= 40%, ID >= 85%)", parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
