"""A tiny end-to-end run: train -> resume -> eval -> export -> load, plus DDP with two
gloo processes. Uses the real offline teacher on a small synthetic image folder."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from vl_distill_ros.cli import main as cli_main
from vl_distill_ros.model.bundle import load_bundle
from vl_distill_ros.config import load_train_config
from vl_distill_ros.training.quantize import STUDENT_FLOAT_CONVS, first_convolutions
from helpers import load_script

KEYS = {"id": ["red_ball", "green_box"], "ood": ["blue_ball", "yellow_box"]}
COLORS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220),
          "yellow": (230, 210, 30), "purple": (140, 40, 170), "orange": (240, 140, 20),
          "cyan": (30, 200, 210), "black": (20, 20, 20)}
#: Objects outside the toy split: auxiliary (trained on, unlabelled or labelled),
#: pseudo-unseen (calibration only) and open-set (scored as out-of-vocabulary only).
AUX = {"aux": ["purple_ball", "orange_box"], "calib_unseen": ["cyan_ball"],
       "openset": ["black_box"]}


def _draw(key: str, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    color, shape = key.split("_")
    img = np.full((size, size, 3), rng.integers(170, 240), np.uint8)
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    c = tuple(int(v) for v in np.clip(np.array(COLORS[color]) + rng.integers(-20, 20, 3), 0, 255))
    cx, cy, r = (int(v) for v in rng.integers(24, 40, 3) * (1, 1, 0.6))
    if shape == "ball":
        cv2.circle(img, (cx, cy), r, c, -1)
    else:
        cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), c, -1)
    return img


def make_dataset(root: Path, per_label: int = 6) -> Path:
    """An image folder per split and label, plus vocabulary and split files."""
    rng = np.random.default_rng(0)
    splits = {"train": KEYS["id"], "test_id": KEYS["id"], "test_shift_id": KEYS["id"],
              "test_ood": KEYS["ood"]}
    extra = {"aux": AUX["aux"], "calib_id": KEYS["id"], "calib_unseen": AUX["calib_unseen"],
             "openset": AUX["openset"]}
    folders = [("data", splits), ("aux", extra)]
    for top, groups in folders:
        for split, keys in groups.items():
            for key in keys:
                d = root / top / split / key
                d.mkdir(parents=True)
                for i in range(per_label * (2 if split == "train" else 1)):
                    cv2.imwrite(str(d / f"{key}_{i:03d}.png"), _draw(key, rng)[..., ::-1])
    every = KEYS["id"] + KEYS["ood"] + AUX["aux"] + AUX["calib_unseen"] + AUX["openset"]
    vocab = {"labels": [{"key": k, "name": k.replace("_", " "),
                         "description": f"A {k.split('_')[0]} coloured {k.split('_')[1]}."}
                        for k in every]}
    (root / "vocab.yaml").write_text(yaml.safe_dump(vocab))
    (root / "split.yaml").write_text(yaml.safe_dump(
        {"name": "toy", "in_distribution": KEYS["id"], "out_of_distribution": KEYS["ood"]}))
    return root


def _config(root: Path, out: str, **extra) -> Path:
    cfg = {
        "name": "tiny", "output_dir": str(root / out),
        "teacher": {"backend": "offline", "top_t": 5, "batch_size": 16},
        "student": {"backbone": "efficientnet_lite0", "pretrained": "imagenet",
                    "image_size": 64, "freeze_stages": 4},
        "loss": {"cls_weight": 1.0, "imcst_weight": 1.0, "vlprox_weight": 1.0, "vlprox_topk": 2},
        "data": {"root": str(root / "data"), "vocabulary": str(root / "vocab.yaml"),
                 "split": str(root / "split.yaml"), "enrich": True,
                 "cache_dir": str(root / "cache")},
        "optim": {"epochs": 2, "batch_size": 8, "lr": 0.003, "threads": 1},
    }
    for k, v in extra.items():
        cfg.setdefault(k, {}).update(v)
    path = root / f"{out}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("toy"))


def test_train_resume_eval_export(toy: Path, capsys):
    cfg_path = _config(toy, "run")
    assert cli_main(["train", "--config", str(cfg_path), "--no-progress"]) == 0
    run = toy / "run"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"loss", "cls", "imcst", "vlprox", "val_id_acc"} <= set(rows[0])
    assert (run / "metrics.csv").exists() and (run / "training_curves.png").stat().st_size > 5000
    # teacher cache holds the training images' embeddings
    assert any((toy / "cache").rglob("*"))

    # resume: one more epoch continues from the checkpoint instead of restarting
    assert cli_main(["train", "--config", str(cfg_path), "--resume", "--no-progress",
                     "optim.epochs=3"]) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert "starting from scratch" not in capsys.readouterr().out

    assert cli_main(["eval", "--run", str(run), "--no-progress"]) == 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert set(metrics["splits"]) == {"test_id", "test_shift_id", "test_ood"}
    assert metrics["splits"]["test_ood"]["labels"] == "ood"
    assert metrics["all_labels"]["n"] == 3 * 2 * 6
    for key in ("vlalign@2", "vlalign@3"):
        assert 0.0 <= metrics["vlalign"][key] <= 3.0
    assert "vlalign@5" not in metrics["vlalign"]  # only 4 labels
    assert 0.0 <= metrics["embedding"]["mean_angle_deg"] <= 180.0
    for png in ("confusion_matrix.png", "per_class_accuracy.png"):
        assert (run / "eval" / png).stat().st_size > 5000
    _check_eval_without_matplotlib(run, capsys)

    bundle_path = toy / "student.vdb"
    assert cli_main(["export", "--run", str(run), "--out", str(bundle_path)]) == 0
    bundle = load_bundle(bundle_path)
    assert bundle.vocabulary.names == ["red ball", "green box", "blue ball", "yellow box"]
    assert bundle.enrich and bundle.vocabulary[0].description == "A red coloured ball."
    assert bundle.text_embeddings.shape == (4, 384)
    assert bundle.teacher_id.startswith("offline-conse")
    # the description catalogue: every described label of the vocabulary file, split first
    every = KEYS["id"] + KEYS["ood"] + AUX["aux"] + AUX["calib_unseen"] + AUX["openset"]
    assert bundle.descriptions.names[:4] == bundle.vocabulary.names
    assert sorted(bundle.descriptions.keys) == sorted(every)
    assert bundle.description_catalogue().lookup(AUX["aux"][0]).description == \
        f"A {AUX['aux'][0].split('_')[0]} coloured {AUX['aux'][0].split('_')[1]}."
    _check_int8_export(toy, run, bundle, capsys, cfg_path)
    _check_bundle_eval(toy, run, bundle_path, cfg_path, capsys)


def _check_eval_without_matplotlib(run: Path, capsys) -> None:
    """Without matplotlib, `eval` crashed in its first plot with a traceback and wrote no
    metrics.json: now each plot is left out with a warning and the metrics are written."""
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *a, **kw):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ModuleNotFoundError("No module named 'matplotlib'")
        return real_import(name, *a, **kw)

    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(builtins, "__import__", no_matplotlib)
        assert cli_main(["eval", "--run", str(run), "--no-progress", "--out",
                         str(run / "eval_no_plots")]) == 0
    err = capsys.readouterr().err
    assert "the confusion matrix plot was not drawn: matplotlib is not installed" in err, err
    assert (run / "eval_no_plots" / "metrics.json").read_text() == \
        (run / "eval" / "metrics.json").read_text()
    assert not list((run / "eval_no_plots").glob("*.png"))


def _check_int8_export(toy: Path, run: Path, bundle, capsys, cfg_path: Path) -> None:
    """``export`` adds the INT8 model, calibrated on the run's training images, with its
    agreement record (the first convolutions left in float32); ``--no-int8`` leaves it out;
    ``--int8`` without the images fails. ``tools/requantize_student.py`` makes the same
    member again for a bundle without one and keeps every other member byte for byte."""
    record = bundle.manifest["student"]["onnx_int8"]
    assert bundle.onnx_int8_bytes is not None and record["file"] == "student_int8.onnx"
    assert record["calibrated_on"] == "training images"
    assert record["images"] >= 1 and record["calibration_images"] >= 1
    assert 0.0 <= record["top1_agreement"] <= 1.0 and record["min_cosine"] <= 1.0
    assert record["float_nodes"] == first_convolutions(bundle.onnx_bytes, STUDENT_FLOAT_CONVS)
    assert "INT8 model: top-1 agreement" in capsys.readouterr().out
    plain = toy / "plain.vdb"
    assert cli_main(["export", "--run", str(run), "--out", str(plain), "--no-int8"]) == 0
    assert load_bundle(plain).onnx_int8_bytes is None
    tool = load_script(Path(__file__).resolve().parents[1] / "tools" / "requantize_student.py")
    again = toy / "again.vdb"
    assert tool.main([str(plain), "--config", str(cfg_path), "--out", str(again)]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index('{\n  "bundle"'):])["old"] is None
    redone = load_bundle(again)
    assert redone.onnx_int8_bytes == bundle.onnx_int8_bytes          # what export writes
    assert redone.manifest["student"]["onnx_int8"] == record
    with zipfile.ZipFile(plain) as a, zipfile.ZipFile(again) as b:
        assert {n: a.read(n) for n in a.namelist() if n != "manifest.json"} == \
            {n: b.read(n) for n in b.namelist()
             if n not in ("manifest.json", "student_int8.onnx")}
    (toy / "data").rename(toy / "data_away")
    try:
        assert cli_main(["export", "--run", str(run), "--out", str(plain), "--int8"]) == 2
        assert "not on this machine" in capsys.readouterr().err
        assert tool.main([str(plain), "--config", str(cfg_path)]) == 2
        assert "not on this machine" in capsys.readouterr().err
        assert load_bundle(plain).onnx_int8_bytes is None               # left as it was
    finally:
        (toy / "data_away").rename(toy / "data")


def _check_bundle_eval(toy: Path, run: Path, bundle_path: Path, cfg_path: Path,
                       capsys) -> None:
    """``vl-distill eval --bundle``: the exported student scores exactly as its run, also on
    another render folder (``--data-root``); a config that does not fit is refused."""
    run_metrics = json.loads((run / "eval" / "metrics.json").read_text())
    out = toy / "bundle_eval"
    assert cli_main(["eval", "--bundle", str(bundle_path), "--config", str(cfg_path),
                     "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["bundle"] == str(bundle_path) and metrics["run"] is None
    for split, row in run_metrics["splits"].items():
        for key in ("n", "student_acc", "teacher_acc"):
            assert metrics["splits"][split][key] == pytest.approx(row[key]), (split, key)
    assert metrics["gzsl"]["student"]["h"] == pytest.approx(run_metrics["gzsl"]["student"]["h"])

    # another render folder holding only the two clutter splits, 3 views per label
    other = toy / "other_renders"
    for split in ("test_shift_id", "test_ood"):
        for folder in sorted((toy / "data" / split).iterdir()):
            (other / split / folder.name).mkdir(parents=True)
            for img in sorted(folder.iterdir())[:3]:
                (other / split / folder.name / img.name).write_bytes(img.read_bytes())
    assert cli_main(["eval", "--bundle", str(bundle_path), "--config", str(cfg_path),
                     "--data-root", str(other), "--out", str(toy / "other_eval"),
                     "--no-progress"]) == 0
    metrics = json.loads((toy / "other_eval" / "metrics.json").read_text())
    assert metrics["data_root"] == str(other)
    assert set(metrics["splits"]) == {"test_shift_id", "test_ood"}
    assert metrics["all_labels"]["n"] == 2 * 2 * 3 and "gzsl" in metrics

    capsys.readouterr()
    assert cli_main(["eval", "--bundle", str(bundle_path), "--out", str(out)]) == 2
    assert "--bundle needs --config" in capsys.readouterr().err
    assert cli_main(["eval", "--run", str(run), "--config", str(cfg_path)]) == 2
    assert "go with --bundle" in capsys.readouterr().err
    # the bundle's labels are the split's 4; a split with other OOD objects differs
    split = toy / "split_other.yaml"
    split.write_text(yaml.safe_dump({"name": "other", "in_distribution": KEYS["id"],
                                     "out_of_distribution": ["blue_ball", "cyan_ball"]}))
    assert cli_main(["eval", "--bundle", str(bundle_path), "--config", str(cfg_path),
                     "--out", str(out), f"data.split={split}"]) == 2
    assert "differ from the bundle's 4 labels" in capsys.readouterr().err
    assert cli_main(["eval", "--bundle", str(bundle_path), "--config", str(cfg_path),
                     "--out", str(out), "data.enrich=false"]) == 2
    assert "other text embeddings" in capsys.readouterr().err
    assert cli_main(["eval", "--bundle", str(toy / "missing.vdb"), "--config", str(cfg_path),
                     "--out", str(out)]) == 2
    assert "missing.vdb" in capsys.readouterr().err


class _Interrupted(Exception):
    """Raised by the test right after a checkpoint was written: the run 'crashes' there."""


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_training_learns(toy: Path):
    """The loss falls and the validation accuracy beats chance (2 labels: 0.5) by a clear
    margin. The backbone is frozen here (head only): with a handful of steps the running
    BatchNorm statistics of a partly trained backbone (momentum 0.01) are not settled yet,
    so eval-mode accuracy would measure them rather than learning. Measured (seed 0):
    loss 3.84 -> 2.68, cls 0.29 -> 0.002, val_id_acc 1.0; with every optimizer step made a
    no-op: loss 3.57 -> 3.39, cls 0.81 -> 0.72, val_id_acc 0.42."""
    cfg = _config(toy, "learns", optim={"epochs": 3}, student={"freeze_stages": 9})
    assert cli_main(["train", "--config", str(cfg), "--no-progress"]) == 0
    rows = _rows(toy / "learns")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["loss"] < 0.8 * rows[0]["loss"], [r["loss"] for r in rows]
    assert rows[-1]["cls"] < 0.5 * rows[0]["cls"], [r["cls"] for r in rows]
    assert rows[-1]["val_id_acc"] >= 0.9, [r["val_id_acc"] for r in rows]
    assert all(r["images_per_s"] > 0 for r in rows)


def test_resume_equals_an_uninterrupted_run(toy: Path, monkeypatch):
    """3 epochs straight vs. 2 epochs, a crash, then ``--resume``: the same weights and the
    same optimizer state (the shuffles, the augmentation and the backbone's drop-connect are
    seeded per epoch)."""
    import torch

    from vl_distill_ros.training import trainer

    straight = _config(toy, "straight", optim={"epochs": 3})
    assert cli_main(["train", "--config", str(straight), "--no-progress"]) == 0
    rows = _rows(toy / "straight")

    # the same run, killed right after the epoch-2 checkpoint, then resumed
    interrupted = _config(toy, "interrupted", optim={"epochs": 3})
    real_save = trainer._atomic_torch_save

    def save_then_crash(obj, path):
        real_save(obj, path)
        if obj.get("epoch") == 2:
            raise _Interrupted

    monkeypatch.setattr(trainer, "_atomic_torch_save", save_then_crash)
    with pytest.raises(_Interrupted):
        cli_main(["train", "--config", str(interrupted), "--no-progress"])
    monkeypatch.undo()
    assert [r["epoch"] for r in _rows(toy / "interrupted")] == [1, 2]
    assert cli_main(["train", "--config", str(interrupted), "--resume", "--no-progress"]) == 0
    resumed_rows = _rows(toy / "interrupted")
    assert [r["epoch"] for r in resumed_rows] == [1, 2, 3]

    a = torch.load(toy / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(toy / "interrupted" / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    assert a["student"].keys() == b["student"].keys()
    for k, v in a["student"].items():
        torch.testing.assert_close(b["student"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    oa, ob = a["optimizer"], b["optimizer"]
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys() and oa["state"]
    for pid, state in oa["state"].items():
        assert state.keys() == ob["state"][pid].keys()
        for k, v in state.items():
            torch.testing.assert_close(ob["state"][pid][k], v, rtol=1e-5, atol=1e-7,
                                       msg=f"{pid}.{k}")
    assert resumed_rows[-1]["loss"] == pytest.approx(rows[-1]["loss"], rel=1e-5)
    assert resumed_rows[-1]["val_id_acc"] == rows[-1]["val_id_acc"]


def test_channels_last_is_the_same_training_in_another_layout(toy: Path):
    """``optim.channels_last`` (the default) changes the memory layout, not the maths: one
    epoch in each layout moves the backbone the same way. Adam turns rounding-level gradient
    differences into step-sized ones on a few weights, so the check is over the whole
    backbone: the two runs differ by under 1% of what training changed (seen: 0.04%). The
    student really ran channels-last, and its saved weights load into a fresh student."""
    import torch

    from vl_distill_ros.config import StudentConfig
    from vl_distill_ros.model.student import build_student
    from vl_distill_ros.training import trainer

    seen_formats = []
    real_epoch = trainer._train_epoch

    def spy(run, epoch, progress):
        conv = next(m for m in run.student.modules() if isinstance(m, torch.nn.Conv2d))
        seen_formats.append(conv.weight.is_contiguous(memory_format=torch.channels_last)
                            and not conv.weight.is_contiguous())
        return real_epoch(run, epoch, progress)

    runs = {}
    for flag in (True, False):
        cfg = _config(toy, f"layout_{flag}", optim={"epochs": 1, "channels_last": flag})
        trainer._train_epoch = spy
        try:
            assert cli_main(["train", "--config", str(cfg), "--no-progress"]) == 0
        finally:
            trainer._train_epoch = real_epoch
        runs[flag] = torch.load(toy / f"layout_{flag}" / "checkpoint.pt", weights_only=True)
    assert seen_formats == [True, False]
    start = build_student(StudentConfig(backbone="efficientnet_lite0", pretrained="imagenet",
                                        image_size=64, freeze_stages=4), 8).state_dict()
    a, b = runs[True]["student"], runs[False]["student"]
    keys = [k for k, v in b.items() if k.startswith("backbone") and v.is_floating_point()]
    between = sum(float((a[k] - b[k]).pow(2).sum()) for k in keys) ** 0.5
    trained = sum(float((b[k] - start[k]).pow(2).sum()) for k in keys) ** 0.5
    assert trained > 0 and between < 0.01 * trained, (between, trained)
    fresh = build_student(StudentConfig(backbone="efficientnet_lite0", image_size=64), 384,
                          load_weights=False)
    fresh.load_state_dict(a)
    assert torch.equal(fresh.state_dict()[keys[0]], a[keys[0]])
    assert _rows(toy / "layout_True")[0]["loss"] == pytest.approx(
        _rows(toy / "layout_False")[0]["loss"], rel=1e-3)


def test_lr_at_warmup_then_cosine():
    import math

    from vl_distill_ros.training.trainer import lr_at

    # linear warm-up over 10 steps: (step + 1) / 10 of the base rate
    assert [lr_at(s, 110, 10, 2.0) for s in (0, 4, 9)] == pytest.approx([0.2, 1.0, 2.0])
    # then a half cosine from the base rate to zero over the remaining 100 steps
    for s in (10, 35, 60, 85, 109):
        expected = 2.0 * 0.5 * (1 + math.cos(math.pi * (s - 10) / 100))
        assert lr_at(s, 110, 10, 2.0) == pytest.approx(expected)
    assert lr_at(10, 110, 10, 2.0) == pytest.approx(2.0)
    assert lr_at(60, 110, 10, 2.0) == pytest.approx(1.0)
    assert lr_at(110, 110, 10, 2.0) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(500, 110, 10, 2.0) == pytest.approx(0.0, abs=1e-12)  # clipped past the end
    # no warm-up: the first step uses the base rate; strictly decreasing afterwards
    assert lr_at(0, 50, 0, 1.0) == pytest.approx(1.0)
    lrs = [lr_at(s, 50, 0, 1.0) for s in range(51)]
    assert all(x > y for x, y in zip(lrs, lrs[1:]))


@pytest.mark.parametrize("n, batch_size, world", [
    (24, 8, 2), (24, 8, 1), (100, 16, 4), (37, 8, 2), (5, 8, 2), (7, 64, 3), (3, 8, 3)])
def test_ranks_shards_are_disjoint_equal_and_cover_the_epoch(n, batch_size, world):
    import torch

    from vl_distill_ros.training.trainer import epoch_plan, shard_indices

    local, steps = epoch_plan(n, batch_size, world)
    assert 1 <= local <= max(1, batch_size // world) and steps >= 1
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    seen: list[int] = []
    for step in range(steps):
        shards = [shard_indices(perm, step, local, r, world).tolist() for r in range(world)]
        assert all(len(sh) == local for sh in shards)   # equal shards at every step
        seen += [i for sh in shards for i in sh]
    assert len(seen) == len(set(seen))                   # disjoint across ranks and steps
    covered = local * world * steps
    assert sorted(seen) == sorted(perm[:covered].tolist())
    assert n - covered < local * world                   # only a partial batch is left out
    if n % (local * world) == 0:
        assert sorted(seen) == list(range(n))            # the whole epoch


def test_fewer_images_than_processes_is_an_error():
    from vl_distill_ros.training.trainer import TrainingError, epoch_plan

    with pytest.raises(TrainingError, match="cannot be split"):
        epoch_plan(1, 8, 2)


def test_corrupt_checkpoint_is_reported(toy: Path, capsys):
    cfg_path = _config(toy, "corrupt")
    (toy / "corrupt").mkdir()
    (toy / "corrupt" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert cli_main(["train", "--config", str(cfg_path), "--resume", "--no-progress"]) == 2
    assert "corrupt or unreadable" in capsys.readouterr().err


def test_missing_data_is_reported(toy: Path, capsys):
    cfg_path = _config(toy, "nodata", data={"root": str(toy / "nowhere")})
    assert cli_main(["train", "--config", str(cfg_path), "--no-progress"]) == 2
    assert "no training images" in capsys.readouterr().err


def test_teacher_weights_not_on_this_machine_is_one_error_line(toy: Path, capsys,
                                                               monkeypatch):
    """The open_clip teacher without its weights (no hub here): its message, what to fetch
    and where to put it, came buried in 92 lines of four chained tracebacks (exit 1); and
    without open_clip installed a bare ModuleNotFoundError. Now one error line, exit 2."""
    import builtins

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg_path = _config(toy, "clip_missing")
    args = ["train", "--config", str(cfg_path), "--no-progress", "teacher.backend=open_clip",
            "teacher.model=ViT-B-32", "teacher.pretrained=openai"]
    assert cli_main(args) == 2
    full = capsys.readouterr().err
    assert "Traceback" not in full, full
    err = [line for line in full.splitlines() if line.startswith("vl-distill")]
    assert len(err) == 1 and "not on this machine" in err[0] and "Download:" in err[0], err
    real_import = builtins.__import__

    def no_open_clip(name, *a, **kw):
        if name == "open_clip" or name.startswith("open_clip."):
            raise ModuleNotFoundError("No module named 'open_clip'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_open_clip)
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "needs the open_clip_torch package" in err and "Traceback" not in err, err


def test_ddp_two_gloo_processes(toy: Path):
    """torchrun with two CPU processes trains the same model and rank 0 writes the run."""
    cfg_path = _config(toy, "ddp", optim={"epochs": 1, "batch_size": 8, "threads": 1})
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "vl_distill_ros.cli", "train", "--config", str(cfg_path), "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "world 2" in proc.stdout
    cfg = load_train_config(cfg_path)
    assert (Path(cfg.output_dir) / "student_final.pt").exists()
    rows = (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1  # only rank 0 logs
    # each rank prints the digest of its own parameters after training: identical
    digests = dict(re.findall(r"\[train\] rank (\d)/2 parameters sha256 ([0-9a-f]{64})",
                              proc.stdout))
    assert set(digests) == {"0", "1"}, proc.stdout[-3000:]
    assert digests["0"] == digests["1"]
    # ... and it is the digest of the weights rank 0 saved
    from vl_distill_ros.training.trainer import load_trained_student, parameters_digest

    student, _, _ = load_trained_student(cfg.output_dir)
    assert parameters_digest(student.named_parameters()) == digests["0"]


def test_auxiliary_distillation_calibration_and_open_set(toy: Path, capsys):
    """Auxiliary objects (labelled into L_cls, plus L_vl-kl over ImageNet names), then the
    calibration record (seen bias, threshold) in the run, the metrics and the bundle."""
    aux = toy / "aux"
    cfg = _config(toy, "run_aux",
                  data={"aux_splits": [str(aux / "aux")], "broad_vocabulary": "imagenet"},
                  loss={"cls_label_set": "id+aux", "vlkl_weight": 1.0},
                  calibration={"seen": str(aux / "calib_id"), "unseen": str(aux / "calib_unseen"),
                               "openset_test": str(aux / "openset")})
    assert cli_main(["train", "--config", str(cfg), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "(24 labelled ID, 12 auxiliary), L_cls over 4 labels" in out
    run = toy / "run_aux"
    cal = json.loads((run / "calibration.json").read_text())
    rec = cal["calibration"]
    assert 0.0 <= rec["seen_bias"] <= 0.3 and 0.0 <= rec["unknown_threshold"] <= 1.0
    assert rec["trained_names"] == ["red ball", "green box", "purple ball", "orange box"]
    assert rec["chosen_on"]["unseen_objects"] == ["cyan_ball"]
    # the threshold's softmax: 3 names (2 ID, 1 pseudo-unseen) and at most the 2 trained
    # names outside them as negatives, which the node caps its softmax at
    from vl_distill_ros.model.calibration import Calibration

    assert rec["chosen_on"]["vocabulary_size"] == 3
    assert 3 <= rec["chosen_on"]["softmax_size"] <= 5
    assert Calibration.from_dict(rec).softmax_size == rec["chosen_on"]["softmax_size"]
    # the best H among the biases that keep calibration.keep_seen (default 0.97) of the
    # unbiased seen accuracy (the rule of calibration.choose_seen_bias)
    from vl_distill_ros.config import CalibrationConfig

    floor = CalibrationConfig().keep_seen * min(cal["curve"], key=lambda r: r["bias"])["seen"]
    best = max((r for r in cal["curve"] if r["seen"] >= floor), key=lambda r: r["h"])
    assert rec["chosen_on"]["h"] == pytest.approx(best["h"])
    assert rec["seen_bias"] == pytest.approx(min(r["bias"] for r in cal["curve"]
                                                 if r["seen"] >= floor and
                                                 r["h"] == pytest.approx(best["h"])))
    assert cli_main(["eval", "--run", str(run), "--no-progress"]) == 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    g = metrics["gzsl"]
    assert g["student_calibrated"]["bias"] == rec["seen_bias"]
    assert g["student_calibrated"]["h"] >= 0 and len(g["bias_curve"]) > 10
    assert (run / "eval" / "gzsl_bias_curve.png").stat().st_size > 0
    o = metrics["open_set"]
    assert o["n_out_of_vocabulary"] == 6 and o["oov_objects"] == ["black_box"]
    assert 0.0 <= o["auroc"] <= 1.0 and o["unknown_threshold"] == rec["unknown_threshold"]
    assert "H (all)" in metrics["summary"] and "open-set AUROC" in metrics["summary"]
    bundle_path = toy / "aux.vdb"
    assert cli_main(["export", "--run", str(run), "--out", str(bundle_path), "--no-onnx"]) == 0
    b = load_bundle(bundle_path)
    assert b.calibration is not None and b.calibration.seen_bias == rec["seen_bias"]
    assert list(b.calibration.trained_names) == rec["trained_names"]


def test_unlabelled_folders_feed_the_teacher_only_losses(toy: Path, capsys):
    """``data.unlabelled_splits``: every image below the folder (any folder names) joins
    training with label -1; L_cls keeps the ID labels alone, L_im-cst and L_vl-kl use them."""
    cfg = _config(toy, "run_unlabelled",
                  data={"unlabelled_splits": [str(toy / "aux" / "openset"),
                                              str(toy / "aux" / "aux")],
                        "broad_vocabulary": "imagenet"},
                  loss={"vlkl_weight": 1.0}, optim={"epochs": 1})
    assert cli_main(["train", "--config", str(cfg), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "(24 labelled ID, 18 auxiliary), L_cls over 2 labels" in out
    rows = [json.loads(x) for x in (toy / "run_unlabelled" / "metrics.jsonl").read_text()
            .splitlines()]
    assert rows[-1]["imcst"] > 0 and rows[-1]["vlkl"] > 0
    missing = _config(toy, "run_missing", data={"unlabelled_splits": [str(toy / "nowhere")]})
    assert cli_main(["train", "--config", str(missing), "--no-progress"]) == 2
    assert "nowhere" in capsys.readouterr().err


def _named_folder(toy: Path, folder: str, names: dict[str, str]) -> Path:
    """A folder of the toy's auxiliary images with a render-cutouts style manifest naming
    each image by its object's entry in ``names`` (object key -> name)."""
    out = toy / folder
    entries = []
    for key, name in names.items():
        for png in sorted((toy / "aux" / "aux" / key).glob("*.png")):
            (out / "things").mkdir(parents=True, exist_ok=True)
            (out / "things" / png.name).write_bytes(png.read_bytes())
            entries.append({"file": f"things/{png.name}", "name": name})
    (out / "manifest.json").write_text(json.dumps({"images": entries}))
    return out


def test_named_folders_join_l_cls_with_their_names(toy: Path, capsys):
    """``data.named_splits``: each image's manifest name becomes a label of L_cls (a name
    already among the ID labels labels that class), the names are exported as trained
    names; a folder that names an OOD object is refused."""
    named = _named_folder(toy, "named", {"purple_ball": "plum-coloured sphere",
                                         "orange_box": "Red  Ball"})
    cfg = _config(toy, "run_named", data={"named_splits": [str(named)]}, optim={"epochs": 1})
    assert cli_main(["train", "--config", str(cfg), "--no-progress"]) == 0
    # 2 ID labels + 1 new name; "Red  Ball" is the ID object's name, folded
    assert "(24 labelled ID, 12 auxiliary), L_cls over 3 labels" in capsys.readouterr().out
    meta = yaml.safe_load((toy / "run_named" / "student_final.yaml").read_text())
    assert meta["trained_names"] == ["red ball", "green box", "plum-coloured sphere"]
    rows = [json.loads(x) for x in (toy / "run_named" / "metrics.jsonl").read_text()
            .splitlines()]
    assert rows[-1]["cls"] > 0
    leak = _named_folder(toy, "named_leak", {"purple_ball": "purple thing",
                                             "orange_box": "BLUE_BALL"})
    cfg = _config(toy, "run_named_leak", data={"named_splits": [str(leak)]})
    assert cli_main(["train", "--config", str(cfg), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "unseen" in err and "blue ball" in err


def test_auxiliary_folder_with_a_split_object_is_refused(toy: Path, capsys):
    """Images of the split's OOD objects can never be auxiliary training data."""
    cfg = _config(toy, "run_leak", data={"aux_splits": [str(toy / "data" / "test_ood")]})
    assert cli_main(["train", "--config", str(cfg), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "outside" in err and "blue_ball" in err


# ----------------------------------------------------------------------------------------
# checkpoints never run code; malformed ones are one-line errors with exit code 2 (issue 11)
# ----------------------------------------------------------------------------------------
class _MakesADirectory:
    """Unpickling this (weights_only=False) would call os.mkdir(target)."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"vl-distill {command}: error:"), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_checkpoint_that_needs_pickled_code_is_refused(toy: Path, tmp_path: Path, capsys):
    import torch

    marker = tmp_path / "created_by_the_checkpoint"
    cfg_path = _config(toy, "evil")
    run = toy / "evil"
    run.mkdir()
    torch.save({"epoch": 1, "student": {"w": torch.zeros(2)}, "optimizer": {},
                "config": _MakesADirectory(marker), "teacher_id": "t", "embed_dim": 3},
               run / "checkpoint.pt")
    calls = [("export", ["export", "--run", str(run), "--out", str(tmp_path / "x.vdb")]),
             ("eval", ["eval", "--run", str(run), "--no-progress"]),
             ("train", ["train", "--config", str(cfg_path), "--resume", "--no-progress"])]
    for command, argv in calls:
        assert cli_main(argv) == 2, command
        err = _one_line_error(capsys, command)
        assert "refused" in err and "posix.mkdir" in err and "weights_only=True" in err, err
        assert not marker.exists(), f"{command} ran code from the checkpoint"
    assert not (tmp_path / "x.vdb").exists()


def test_malformed_checkpoints_are_one_line_errors(toy: Path, tmp_path: Path, capsys):
    import torch

    from vl_distill_ros.config import to_dict

    cfg_path = _config(toy, "malformed")
    good_cfg = to_dict(load_train_config(cfg_path))
    bad_cfg = json.loads(json.dumps(good_cfg))
    bad_cfg["optim"]["epochs"] = -3
    weights = {"head.weight": torch.zeros(3, 4)}
    base = {"epoch": 1, "student": weights, "optimizer": {}, "config": good_cfg,
            "teacher_id": "t", "embed_dim": 384}
    cases = [
        ({"config": "not a mapping"}, "'config' must be a mapping"),
        ({"config": bad_cfg}, "optim.epochs must be a finite number >= 1"),
        ({"config": {**good_cfg, "surprise": 1}}, "unknown keys"),
        ({"embed_dim": "384"}, "'embed_dim' must be a positive integer"),
        ({"embed_dim": 2.5}, "'embed_dim' must be a positive integer"),
        ({"embed_dim": 0}, "'embed_dim' must be a positive integer"),
        ({"student": {}}, "'student' must be a non-empty mapping"),
        ({"student": [1, 2]}, "'student' must be a non-empty mapping"),
        ({}, "student weights do not fit"),  # head.weight of the wrong shape, keys missing
    ]
    run = toy / "malformed"
    run.mkdir()
    for change, message in cases:
        torch.save({**base, **change}, run / "checkpoint.pt")
        for command, argv in (("export", ["export", "--run", str(run), "--out",
                                          str(tmp_path / "m.vdb")]),
                              ("eval", ["eval", "--run", str(run), "--no-progress"])):
            assert cli_main(argv) == 2, (command, change)
            err = _one_line_error(capsys, command)
            assert message in err, (change, err)
    # train --resume: the same checks before any training starts
    torch.save({**base, "student": {}}, run / "checkpoint.pt")
    assert cli_main(["train", "--config", str(cfg_path), "--resume", "--no-progress"]) == 2
    assert "'student' must be a non-empty mapping" in _one_line_error(capsys, "train")


def test_checkpoint_config_is_yaml_beside_the_weights(toy: Path, tmp_path: Path, capsys):
    """Issue 11: the weights file holds tensors and plain data only; the config, teacher id,
    embedding size and trained names are in a YAML file beside it, read back from there.
    A malformed YAML file is a one-line error with exit code 2 (eval, export)."""
    import torch

    from vl_distill_ros.config import to_dict
    from vl_distill_ros.model.student import build_student
    from vl_distill_ros.training.trainer import (FINAL, load_trained_student, meta_path,
                                                 save_checkpoint)

    cfg = load_train_config(_config(toy, "sidecar"))
    run = toy / "sidecar"
    run.mkdir()
    student = build_student(cfg.student, 384, load_weights=False)
    save_checkpoint({"student": student.state_dict(), "config": to_dict(cfg),
                     "teacher_id": "offline-conse:test", "embed_dim": 384,
                     "trained_names": ["red ball"]}, run / FINAL)
    meta_file = meta_path(run / FINAL)
    assert meta_file.name == "student_final.yaml"
    meta = yaml.safe_load(meta_file.read_text())
    assert meta["config"] == to_dict(cfg) and meta["embed_dim"] == 384
    assert meta["weights"] == FINAL and meta["trained_names"] == ["red ball"]
    weights = torch.load(run / FINAL, weights_only=True)
    assert set(weights) == {"student"}  # no config inside the weights file
    loaded, loaded_cfg, teacher_id = load_trained_student(run)
    assert to_dict(loaded_cfg) == to_dict(cfg) and teacher_id == "offline-conse:test"
    # the config is read from the YAML file: a change there is what loads
    meta["config"]["optim"]["epochs"] = 7
    meta_file.write_text(yaml.safe_dump(meta))
    assert load_trained_student(run)[1].optim.epochs == 7

    good = dict(meta)
    bad_cfg = json.loads(json.dumps(meta["config"]))
    bad_cfg["optim"]["epochs"] = -3
    cases = [
        (b"\x00\xff\xfe binary", "is not valid YAML"),
        (b"config: [unclosed", "is not valid YAML"),
        (b"- 1\n- 2\n", "expected a mapping with format: vl_distill_checkpoint"),
        (yaml.safe_dump({**good, "format_version": 99}).encode(), "format_version 99"),
        (yaml.safe_dump({**good, "config": bad_cfg}).encode(),
         "optim.epochs must be a finite number >= 1"),
        (yaml.safe_dump({**good, "config": "text"}).encode(), "'config' must be a mapping"),
        (yaml.safe_dump({**good, "embed_dim": "384"}).encode(),
         "'embed_dim' must be a positive integer"),
        (None, "config file student_final.yaml is missing"),
        ("dir", "cannot be read"),
    ]
    for content, message in cases:
        if meta_file.is_dir():
            meta_file.rmdir()
        if content is None:
            meta_file.unlink(missing_ok=True)
        elif content == "dir":
            meta_file.unlink(missing_ok=True)
            meta_file.mkdir()
        else:
            meta_file.write_bytes(content)
        for command, argv in (("export", ["export", "--run", str(run), "--out",
                                          str(tmp_path / "m.vdb")]),
                              ("eval", ["eval", "--run", str(run), "--no-progress"])):
            assert cli_main(argv) == 2, (command, message)
            err = _one_line_error(capsys, command)
            assert message in err, (message, err)
    assert not (tmp_path / "m.vdb").exists()


def test_checkpoint_with_a_retired_config_key_still_loads(toy: Path):
    """Runs saved before ``data.workers`` was removed hold it in their stored config; they
    still load (the key is dropped), while an unknown key that was never part of the
    schema is still refused."""
    from vl_distill_ros.config import to_dict
    from vl_distill_ros.model.student import build_student
    from vl_distill_ros.training.trainer import (FINAL, TrainingError, load_trained_student,
                                                 save_checkpoint)

    cfg = load_train_config(_config(toy, "retired"))
    run = toy / "retired"
    run.mkdir()
    student = build_student(cfg.student, 384, load_weights=False)
    stored = to_dict(cfg)
    stored["data"]["workers"] = 4
    save_checkpoint({"student": student.state_dict(), "config": stored,
                     "teacher_id": "offline-conse:test", "embed_dim": 384,
                     "trained_names": ["red ball"]}, run / FINAL)
    _, loaded_cfg, _ = load_trained_student(run)
    assert to_dict(loaded_cfg) == to_dict(cfg)
    stored["data"]["threads"] = 4
    save_checkpoint({"student": student.state_dict(), "config": stored,
                     "teacher_id": "offline-conse:test", "embed_dim": 384,
                     "trained_names": ["red ball"]}, run / FINAL)
    with pytest.raises(TrainingError, match=r"unknown keys \['threads'\]"):
        load_trained_student(run)


def test_consistent_teacher_targets_embed_each_batchs_views(toy: Path, monkeypatch, capsys):
    """``loss.teacher_targets: consistent``: every training step the teacher embeds the
    batch's views (at its own input size, uint8), and those embeddings are what the losses
    match: the same seed with cached targets gives other losses."""
    from vl_distill_ros.model.teachers.conse import ConSETeacher

    calls: list[list[tuple]] = []
    real = ConSETeacher.encode_images

    def spy(self, images):
        images = list(images)
        calls.append([im.shape for im in images])
        assert all(im.dtype == np.uint8 for im in images)
        return real(self, images)

    monkeypatch.setattr(ConSETeacher, "encode_images", spy)
    cfg = _config(toy, "consistent", optim={"epochs": 1},
                  loss={"teacher_targets": "consistent"})
    assert cli_main(["train", "--config", str(cfg), "--no-progress"]) == 0
    steps = int(re.search(r"(\d+) steps/epoch", capsys.readouterr().out).group(1))
    views = [c for c in calls if c and all(s == (224, 224, 3) for s in c)]
    assert len(views) == steps and sum(map(len, views)) == steps * 8
    cached = _config(toy, "cached_one_epoch", optim={"epochs": 1})
    assert cli_main(["train", "--config", str(cached), "--no-progress"]) == 0
    a, b = _rows(toy / "consistent")[0], _rows(toy / "cached_one_epoch")[0]
    assert a["imcst"] != pytest.approx(b["imcst"], rel=1e-3), (a, b)
    with pytest.raises(Exception, match="teacher_targets"):
        load_train_config(_config(toy, "bad_targets", loss={"teacher_targets": "online"}))


def test_mixup_shows_the_teacher_the_blends_and_drops_their_labels(toy: Path, monkeypatch):
    """``loss.mixup_prob``: with every view blended, the teacher is shown blends (the first
    step's views all differ from those of the same seed without mixup, whose crops are drawn
    alike), L_cls and L_vlprox see no labelled row (0) while the teacher-only L_im-cst still
    trains; mixup without consistent targets, or out of [0, 1], is a configuration error."""
    from vl_distill_ros.model.teachers.conse import ConSETeacher

    seen: list[np.ndarray] = []
    real = ConSETeacher.encode_images

    def spy(self, images):
        images = list(images)
        if images and images[0].shape == (224, 224, 3):
            seen.append(np.stack(images))
        return real(self, images)

    monkeypatch.setattr(ConSETeacher, "encode_images", spy)
    cfg = _config(toy, "mixup", optim={"epochs": 1},
                  loss={"teacher_targets": "consistent", "mixup_prob": 1.0})
    assert cli_main(["train", "--config", str(cfg), "--no-progress"]) == 0
    row = _rows(toy / "mixup")[0]
    assert row["cls"] == 0.0 and row["vlprox"] == 0.0 and row["imcst"] > 0.0, row
    blended = seen[0]
    seen.clear()
    plain = _config(toy, "no_mixup", optim={"epochs": 1}, loss={"teacher_targets": "consistent"})
    assert cli_main(["train", "--config", str(plain), "--no-progress"]) == 0
    assert _rows(toy / "no_mixup")[0]["cls"] > 0.0
    assert blended.shape == seen[0].shape == (8, 224, 224, 3)
    assert all(not np.array_equal(a, b) for a, b in zip(blended, seen[0]))
    with pytest.raises(Exception, match="mixup_prob > 0 needs loss.teacher_targets"):
        load_train_config(_config(toy, "bad_mixup", loss={"mixup_prob": 0.5}))
    with pytest.raises(Exception, match="mixup_prob must be in"):
        load_train_config(_config(toy, "bad_mixup2", loss={"teacher_targets": "consistent",
                                                           "mixup_prob": 1.5}))


def test_centred_calibration_is_the_mean_calibration_embedding(toy: Path):
    """``calibration.center``: the record's centre is the mean student embedding of the
    calibration crops (ID and pseudo-unseen), the bias curve is computed on the centred
    embeddings, evaluation scores centred embeddings, and the bundle carries the centre."""
    import torch

    from vl_distill_ros.training.data import (full_vocabulary, load_vocabularies,
                                              outside_split_keys)
    from vl_distill_ros.training.image_folder import load_image_folder
    from vl_distill_ros.training.trainer import embed_images, load_trained_student

    aux = toy / "aux"
    cfg = _config(toy, "run_centre", optim={"epochs": 1},
                  data={"aux_splits": [str(aux / "aux")]}, loss={"cls_label_set": "id+aux"},
                  calibration={"seen": str(aux / "calib_id"), "unseen": str(aux / "calib_unseen"),
                               "center": True})
    assert cli_main(["train", "--config", str(cfg), "--no-progress"]) == 0
    run = toy / "run_centre"
    rec = json.loads((run / "calibration.json").read_text())["calibration"]
    student, tcfg, _ = load_trained_student(run)
    vocabs, full = load_vocabularies(tcfg.data), full_vocabulary(tcfg.data)
    keys = outside_split_keys(tcfg.calibration.unseen, full, vocabs, "calibration.unseen")
    images = [load_image_folder(aux / "calib_id", vocabs.id, keys=vocabs.id.keys).images,
              load_image_folder(aux / "calib_unseen", full, keys=keys).images]
    emb = embed_images(student, np.concatenate(images), torch.device("cpu")).numpy()
    assert np.allclose(rec["embedding_center"], emb.mean(axis=0), atol=1e-5)
    assert 0.0 < np.linalg.norm(rec["embedding_center"]) < 1.0
    assert cli_main(["eval", "--run", str(run), "--no-progress"]) == 0
    bundle_path = toy / "centre.vdb"
    assert cli_main(["export", "--run", str(run), "--out", str(bundle_path), "--no-onnx"]) == 0
    b = load_bundle(bundle_path)
    assert np.allclose(b.calibration.embedding_center, rec["embedding_center"])


def test_vlkl_vocabulary_can_hold_the_trained_names(toy: Path):
    """``loss.vlkl_trained_names``: L_vl-kl's vocabulary is the broad one followed by the
    L_cls label names' embeddings; without it the broad one alone; without L_vl-kl none."""
    import torch

    from vl_distill_ros.config import load_train_config
    from vl_distill_ros.training.data import (LazyTeacher, broad_text_embeddings,
                                              load_vocabularies, text_classifier)
    from vl_distill_ros.training.trainer import vlkl_vocabulary

    path = _config(toy, "run_vlkl_names", data={"broad_vocabulary": "imagenet"},
                   loss={"vlkl_weight": 1.0, "vlkl_trained_names": True})
    cfg = load_train_config(path)
    teacher = LazyTeacher(cfg.teacher)
    labels = text_classifier(teacher, load_vocabularies(cfg.data).id, cfg.data)
    broad = broad_text_embeddings(teacher, cfg.data)
    cpu = torch.device("cpu")
    both = vlkl_vocabulary(cfg, teacher, labels, cpu)
    assert both.shape == (len(broad) + len(labels), broad.shape[1])
    assert torch.equal(both[:len(broad)], broad) and torch.equal(both[len(broad):], labels)
    cfg.loss.vlkl_trained_names = False
    assert torch.equal(vlkl_vocabulary(cfg, teacher, labels, cpu), broad)
    cfg.loss.vlkl_weight = 0.0
    assert vlkl_vocabulary(cfg, teacher, labels, cpu) is None


def test_conse_head_trains_resumes_and_exports(toy: Path):
    """``student.head: conse`` through the trainer: the head starts from the teacher's text
    embeddings of the ImageNet class prompts (a fixed buffer that training, resuming and
    export keep), its classifier and residual learn, and the bundle runs it."""
    import torch

    from vl_distill_ros.model.student import conse_class_prompts
    from vl_distill_ros.model.teachers.conse import ConSETeacher

    cfg_path = _config(toy, "conse", student={"head": "conse"})
    assert cli_main(["train", "--config", str(cfg_path), "--no-progress"]) == 0
    run = toy / "conse"
    first = torch.load(run / "checkpoint.pt", weights_only=True)["student"]
    expected = ConSETeacher(top_t=5).encode_texts(conse_class_prompts())
    torch.testing.assert_close(first["head.class_embeddings"], expected, rtol=0, atol=1e-5)
    assert torch.count_nonzero(first["head.residual.weight"]) > 0          # it learnt
    assert cli_main(["train", "--config", str(cfg_path), "--resume", "--no-progress",
                     "optim.epochs=3"]) == 0
    assert [r["epoch"] for r in _rows(run)] == [1, 2, 3]
    resumed = torch.load(run / "checkpoint.pt", weights_only=True)["student"]
    torch.testing.assert_close(resumed["head.class_embeddings"], expected, rtol=0, atol=1e-5)
    assert not torch.equal(resumed["head.classifier.weight"], first["head.classifier.weight"])
    bundle_path = toy / "conse.vdb"
    assert cli_main(["export", "--run", str(run), "--out", str(bundle_path), "--no-int8"]) == 0
    bundle = load_bundle(bundle_path)
    assert bundle.student.cfg.head == "conse"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = bundle.student(x)
    assert out.shape == (2, 384) and torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


def test_zero_shot_prior_is_added_after_training_and_by_resuming(toy: Path, capsys):
    """``student.zero_shot_prior``: training is the linear head's (the per-epoch checkpoint
    keeps the linear student), the final student has a ``conse`` head whose residual is the
    trained head divided by the weight and whose classifier is the packaged ImageNet one; a
    finished run without the prior gains it by ``--resume`` with the setting (no epoch is
    trained again), and the result exports and runs."""
    import torch

    from vl_distill_ros.config import StudentConfig
    from vl_distill_ros.model.student import build_student, conse_class_prompts
    from vl_distill_ros.model.teachers.conse import ConSETeacher

    plain = _config(toy, "prior_plain")
    assert cli_main(["train", "--config", str(plain), "--no-progress"]) == 0
    run = toy / "prior_plain"
    linear = torch.load(run / "checkpoint.pt", weights_only=True)["student"]
    final_plain = torch.load(run / "student_final.pt", weights_only=True)["student"]
    assert "head.weight" in linear and final_plain.keys() == linear.keys()
    capsys.readouterr()
    prior = _config(toy, "prior_plain", student={"zero_shot_prior": 4.0})
    assert cli_main(["train", "--config", str(prior), "--resume", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "zero-shot prior added (weight 4)" in out and "loss=" not in out   # no epoch again
    assert [r["epoch"] for r in _rows(run)] == [1, 2]
    final = torch.load(run / "student_final.pt", weights_only=True)["student"]
    torch.testing.assert_close(final["head.residual.weight"], linear["head.weight"] / 4.0)
    torch.testing.assert_close(final["head.residual.bias"], linear["head.bias"] / 4.0)
    for k, v in linear.items():
        if not k.startswith("head."):
            assert torch.equal(final[k], v), k
    packaged = build_student(StudentConfig(backbone="efficientnet_lite0", image_size=64,
                                           head="conse"), 384,
                             class_embeddings=torch.zeros(1000, 384))
    assert torch.equal(final["head.classifier.weight"], packaged.head.classifier.weight)
    expected = ConSETeacher(top_t=5).encode_texts(conse_class_prompts())
    torch.testing.assert_close(final["head.class_embeddings"], expected, rtol=0, atol=1e-5)
    # the checkpoint stays the linear student, so the run can still be resumed or re-priored
    assert torch.equal(torch.load(run / "checkpoint.pt", weights_only=True)["student"]
                       ["head.weight"], linear["head.weight"])
    bundle_path = toy / "prior.vdb"
    assert cli_main(["export", "--run", str(run), "--out", str(bundle_path), "--no-int8"]) == 0
    bundle = load_bundle(bundle_path)
    assert bundle.student.cfg.head == "conse" and bundle.student.cfg.zero_shot_prior == 0.0
    assert cli_main(["eval", "--run", str(run), "--no-progress"]) == 0
    # a prior on a head it cannot apply to is refused before anything runs
    bad = _config(toy, "prior_bad", student={"zero_shot_prior": 2.0, "head": "conse"})
    assert cli_main(["train", "--config", str(bad), "--no-progress"]) == 2
    assert not (toy / "prior_bad" / "checkpoint.pt").exists()


# -- session 76: runs that diverge, reused run folders, malformed run files ------------------
def test_a_diverged_run_stops_and_saves_nothing_of_it(toy: Path, tmp_path: Path, capsys):
    """loss.tau 1e-300 (in range) turns the loss NaN in the first epoch: train exited 0 with
    NaN weights in student_final.pt, eval scored them, export bundled them and the node
    published NaN scores. Training now stops at the diverged epoch; a student with NaN
    weights is refused by eval, export and the bundle loader."""
    import torch

    from vl_distill_ros.model.bundle import BundleError, save_bundle
    from vl_distill_ros.model.vocabulary import Vocabulary
    from vl_distill_ros.training.trainer import load_trained_student

    cfg = _config(toy, "diverged", loss={"tau": 1e-300})
    assert cli_main(["train", "--config", str(cfg), "--no-progress"]) == 2
    err = _one_line_error(capsys, "train")
    assert "training diverged in epoch 1" in err and "nothing was saved" in err, err
    run = toy / "diverged"
    assert not (run / "checkpoint.pt").exists() and not (run / "student_final.pt").exists()
    # a run folder written before this check: NaN weights in student_final.pt
    good = toy / "nan_final"
    assert cli_main(["train", "--config", str(_config(toy, "nan_final", optim={"epochs": 1})),
                     "--no-progress"]) == 0
    student, _, _ = load_trained_student(good)
    ckpt = torch.load(good / "student_final.pt", weights_only=True)
    name = next(k for k, v in ckpt["student"].items() if v.is_floating_point())
    ckpt["student"][name] = torch.full_like(ckpt["student"][name], float("nan"))
    torch.save(ckpt, good / "student_final.pt")
    for command, argv in (("eval", ["eval", "--run", str(good), "--no-progress"]),
                          ("export", ["export", "--run", str(good), "--out",
                                      str(tmp_path / "nan.vdb"), "--no-int8"])):
        assert cli_main(argv) == 2, command
        assert f"student weight {name} holds non-finite values" in \
            _one_line_error(capsys, command)
    assert not (tmp_path / "nan.vdb").exists()
    with torch.no_grad():
        next(p for p in student.parameters()).fill_(float("inf"))
    emb = torch.nn.functional.normalize(torch.randn(1, student.embed_dim), dim=1)
    with pytest.raises(BundleError, match="non-finite"):
        save_bundle(tmp_path / "inf.vdb", student, emb, Vocabulary.from_names(["x"]), "t",
                    {}, ["{name}"], False, onnx=False)


def test_a_fresh_run_sets_an_earlier_runs_files_aside(toy: Path, capsys):
    """A new run (no --resume) into a folder holding a run kept the old metrics rows
    (epochs [2, 3, 1], plotted together) and calibration.json, which export then bundled
    with the new, different student. The earlier files now move to previous_run/."""
    aux = toy / "aux"
    cal = {"seen": str(aux / "calib_id"), "unseen": str(aux / "calib_unseen")}
    first = _config(toy, "reused", optim={"epochs": 2}, calibration=cal)
    assert cli_main(["train", "--config", str(first), "--no-progress"]) == 0
    run = toy / "reused"
    assert (run / "calibration.json").is_file()
    second = _config(toy, "reused", optim={"epochs": 1, "seed": 5})
    assert cli_main(["train", "--config", str(second), "--no-progress"]) == 0
    assert "held an earlier run" in capsys.readouterr().out
    assert [r["epoch"] for r in _rows(run)] == [1]
    assert not (run / "calibration.json").exists()
    previous = run / "previous_run"
    assert (previous / "calibration.json").is_file() and (previous / "student_final.pt").is_file()
    assert [json.loads(x)["epoch"] for x in
            (previous / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    # calibration folders are checked before training, not after the last epoch
    missing = _config(toy, "reused", calibration={"seen": cal["seen"],
                                                  "unseen": str(aux / "nowhere")})
    before = (run / "student_final.pt").read_bytes()
    assert cli_main(["train", "--config", str(missing), "--no-progress"]) == 2
    assert "calibration.unseen folder" in _one_line_error(capsys, "train")
    assert (run / "student_final.pt").read_bytes() == before


def test_resume_checks_the_epoch_and_reads_a_cut_metrics_file(toy: Path, capsys):
    """A checkpoint without a whole-number epoch gave tracebacks (KeyError, ValueError) or
    trained epochs -4..1; a metrics.jsonl cut short by a kill stopped every later run in the
    folder (JSONDecodeError); a changed teacher batch size or device refused --resume."""
    import torch

    cfg = _config(toy, "resumed", optim={"epochs": 1})
    assert cli_main(["train", "--config", str(cfg), "--no-progress"]) == 0
    run = toy / "resumed"
    good = torch.load(run / "checkpoint.pt", weights_only=True)
    for epoch in (-5, "abc", True, None):
        bad = dict(good)
        if epoch is None:
            bad.pop("epoch")
        else:
            bad["epoch"] = epoch
        torch.save(bad, run / "checkpoint.pt")
        assert cli_main(["train", "--config", str(cfg), "--resume", "--no-progress"]) == 2
        assert "its 'epoch' must be a whole number >= 0" in _one_line_error(capsys, "train")
    torch.save(good, run / "checkpoint.pt")
    with (run / "metrics.jsonl").open("a") as fh:
        fh.write('{"epoch": 2, "lo')
    more = _config(toy, "resumed", optim={"epochs": 2}, teacher={"batch_size": 8})
    assert cli_main(["train", "--config", str(more), "--resume", "--no-progress"]) == 0
    assert "1 line(s) that are no row of epochs 1-1 left out" in capsys.readouterr().out
    assert [r["epoch"] for r in _rows(run)] == [1, 2]


def test_output_paths_that_cannot_be_written_are_one_line_errors(toy: Path, tmp_path: Path,
                                                                 capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cfg = _config(toy, "unwritable")
    text = yaml.safe_load(cfg.read_text())
    text["output_dir"] = str(a_file)
    cfg.write_text(yaml.safe_dump(text))
    assert cli_main(["train", "--config", str(cfg), "--no-progress"]) == 2
    assert "a_file" in _one_line_error(capsys, "train")
    assert cli_main(["export", "--run", str(toy / "resumed"), "--out", str(tmp_path)]) == 2
    assert "is a directory" in _one_line_error(capsys, "export")
