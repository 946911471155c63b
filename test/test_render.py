"""CPU rendering of labelled YCB crops (vl_distill_ros.sim.render) and `render` command."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from vl_distill_ros.sim.backgrounds import CLUTTER_KINDS, KINDS, make_background
from vl_distill_ros.sim.render import (
    MANIFEST_NAME,
    ObjectRenderer,
    RenderError,
    RenderSpec,
    SplitSpec,
    find_models,
    load_mesh_vertices,
    load_render_spec,
    render_dataset,
    view_rng,
)

FORK = "030_fork"
BANANA = "011_banana"


@pytest.fixture(scope="module")
def renderer(ycb_models: Path):
    with ObjectRenderer(ycb_models, exclude=[FORK, BANANA]) as r:
        yield r


def _high_freq(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean |Laplacian| of the background (pixels well away from the object mask)."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    near = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    return float(np.abs(cv2.Laplacian(grey, cv2.CV_32F))[~near].mean())


# -- pure helpers (no models needed) -----------------------------------------------------
def test_backgrounds_all_kinds_deterministic():
    for kind in KINDS:
        a = make_background(kind, 32, np.random.default_rng(3))
        b = make_background(kind, 32, np.random.default_rng(3))
        assert a.shape == (32, 32, 3) and a.dtype == np.uint8
        assert np.array_equal(a, b), kind
    with pytest.raises(ValueError):
        make_background("marble", 32, np.random.default_rng(0))


def test_missing_models_dir_is_a_helpful_error(tmp_path: Path):
    with pytest.raises(RenderError) as err:
        find_models(tmp_path / "no_such_folder")
    msg = str(err.value)
    assert "no_such_folder" in msg and "ycbbenchmarks.com" in msg and "textured.obj" in msg
    with pytest.raises(RenderError, match="google_16k"):
        ObjectRenderer(tmp_path)  # exists, but holds no <key>/textured.obj


def test_models_folder_comes_from_option_config_environment_or_default(
        repo_root: Path, tmp_path: Path, monkeypatch):
    """--models-dir > a config's models_dir > $VL_DISTILL_YCB_MODELS > ../shared/ycb_models."""
    from vl_distill_ros.sim.render import DEFAULT_MODELS_DIR, MODELS_ENV, default_models_dir

    cfg = repo_root / "config" / "render_ycb.yaml"
    monkeypatch.delenv(MODELS_ENV, raising=False)
    assert default_models_dir() == DEFAULT_MODELS_DIR == "../shared/ycb_models"
    assert load_render_spec(cfg).models_dir == str(Path(DEFAULT_MODELS_DIR))
    monkeypatch.setenv(MODELS_ENV, str(tmp_path / "ycb"))
    assert load_render_spec(cfg).models_dir == str(tmp_path / "ycb")
    assert load_render_spec(cfg, [f"models_dir={tmp_path / 'cfg'}"]).models_dir == str(
        tmp_path / "cfg")
    with pytest.raises(RenderError, match=f"not found: {tmp_path / 'ycb'}.*{MODELS_ENV}"):
        render_dataset(RenderSpec(out_dir=str(tmp_path / "out"), splits={
            "train": SplitSpec(objects=[FORK], views=1)}), progress=False)


def test_make_bag_uses_the_environment_variable(tmp_path: Path, monkeypatch, capsys):
    from vl_distill_ros.cli import main

    monkeypatch.setenv("VL_DISTILL_YCB_MODELS", str(tmp_path / "ycb_from_env"))
    assert main(["make-bag", "--out", str(tmp_path / "bag"), "--frames", "1",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"not found: {tmp_path / 'ycb_from_env'}" in err


def test_load_render_spec_resolves_split(repo_root: Path):
    spec = load_render_spec(repo_root / "config" / "render_ycb.yaml",
                            ["image_size=96", "splits.train.views=10"], views_scale=0.5)
    assert spec.image_size == 96
    assert len(spec.splits["train"].objects) == 14 and spec.splits["train"].views == 5
    assert len(spec.splits["test_ood"].objects) == 12
    assert spec.splits["test_ood"].domain == "clutter"
    assert {FORK, "031_spoon"} <= set(spec.distractor_exclude)
    with pytest.raises(RenderError, match="domain"):
        load_render_spec(repo_root / "config" / "render_ycb.yaml", ["splits.train.domain=dark"])
    with pytest.raises(RenderError, match="not found"):
        load_render_spec(repo_root / "config" / "no_such_render.yaml")


def test_command_returns_2_on_bad_models_dir(repo_root: Path, tmp_path: Path, capsys):
    from vl_distill_ros.commands import render as render_cmd

    parser = argparse.ArgumentParser()
    render_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["render", "--config", str(repo_root / "config" / "render_ycb.yaml"),
                              "--models-dir", str(tmp_path / "missing"),
                              "--out", str(tmp_path / "out"), "--no-progress"])
    assert args.func is render_cmd.run
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "models folder not found" in err and "ycbbenchmarks.com" in err
    assert not (tmp_path / "out").exists()


# -- rendering (needs the shared YCB models) ---------------------------------------------
def test_load_mesh_vertices(ycb_models: Path):
    verts = load_mesh_vertices(ycb_models / FORK / "textured.obj")
    assert verts.ndim == 2 and verts.shape[1] == 3 and len(verts) > 1000
    extent = verts.max(axis=0) - verts.min(axis=0)
    assert 0.15 < extent.max() < 0.25  # a ~20 cm fork, in metres
    assert load_mesh_vertices(ycb_models / FORK / "textured.obj") is verts  # cached


def test_thin_fork_fills_the_crop(renderer: ObjectRenderer):
    size = 96
    fractions = []
    for i in range(4):
        view = renderer.render_view(FORK, view_rng(0, "test", FORK, i), "clean", size)
        assert view.image.shape == (size, size, 3) and view.image.dtype == np.uint8
        assert view.mask.shape == (size, size) and view.mask.dtype == bool
        ys, xs = np.nonzero(view.mask)
        # framed from the mesh's vertices: the longer side spans the crop minus the margin
        extent = max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) / size
        assert extent > 0.75, (i, extent)
        centre = np.array([xs.min() + xs.max(), ys.min() + ys.max()]) / 2.0
        assert np.abs(centre - size / 2).max() < 0.15 * size, (i, centre)
        fractions.append(view.mask.mean())
        # texture applied: the fork's red handle and silver head are not one flat colour
        assert view.image[view.mask].std(axis=0).mean() > 10
    # unframed (a fixed camera) a fork covers < 2 % of the crop; a thin object seen along
    # the crop diagonal cannot exceed ~2 * width / length
    assert min(fractions) > 0.04 and np.mean(fractions) > 0.06, fractions


def test_same_seed_same_view_other_seed_differs(renderer: ObjectRenderer, ycb_models: Path):
    a = renderer.render_view(BANANA, view_rng(7, "train", BANANA, 0), "clean", 64)
    b = renderer.render_view(BANANA, view_rng(7, "train", BANANA, 0), "clean", 64)
    c = renderer.render_view(BANANA, view_rng(8, "train", BANANA, 0), "clean", 64)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert a.meta == b.meta
    assert not np.array_equal(a.image, c.image)
    with ObjectRenderer(ycb_models) as fresh:  # a fresh client (other body ids) agrees
        d = fresh.render_view(BANANA, view_rng(7, "train", BANANA, 0), "clean", 64)
    assert np.array_equal(a.image, d.image)


def test_clutter_domain_differs_from_clean(renderer: ObjectRenderer):
    for i in range(2):
        clean = renderer.render_view(BANANA, view_rng(i, "t", BANANA, 0), "clean", 64)
        clutter = renderer.render_view(BANANA, view_rng(i, "t", BANANA, 0), "clutter", 64)
        assert clutter.meta["background"] in CLUTTER_KINDS
        assert 1 <= len(clutter.meta["distractors"]) <= 3
        assert not {d["key"] for d in clutter.meta["distractors"]} & {FORK, BANANA}
        assert clean.meta["distractors"] == []
        assert _high_freq(clutter.image, clutter.mask) > _high_freq(clean.image, clean.mask) + 3


def test_render_dataset_tree_manifest_and_determinism(ycb_models: Path, tmp_path: Path):
    def spec(out: Path) -> RenderSpec:
        return RenderSpec(models_dir=str(ycb_models), out_dir=str(out), image_size=48, seed=3,
                          splits={"train": SplitSpec([FORK, BANANA], 2, "clean"),
                                  "test_ood": SplitSpec([FORK, BANANA], 2, "clutter")},
                          distractor_exclude=["037_scissors"])

    out = render_dataset(spec(tmp_path / "ds"), progress=False)
    assert out == tmp_path / "ds"
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == sorted(f"{split}/{key}/{key}_{i:05d}.png" for split in ("train", "test_ood")
                           for key in (FORK, BANANA) for i in range(2))
    img = cv2.imread(str(out / files[0]))
    assert img.shape == (48, 48, 3)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["counts"] == {"train": 4, "test_ood": 4}
    assert len(manifest["images"]) == 8
    assert {r["file"] for r in manifest["images"]} == set(files)
    assert manifest["spec"]["seed"] == 3 and "CC BY 4.0" in manifest["attribution"]
    for rec in manifest["images"]:
        assert {"azimuth", "elevation", "distance", "light"} <= set(rec["view"])
        for d in rec["view"]["distractors"]:
            assert d["key"] not in (FORK, BANANA, "037_scissors")
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no partial folders left behind

    again = render_dataset(spec(tmp_path / "ds2"), progress=False)
    for rel in files:
        assert (out / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_render_dataset_rejects_unknown_key_and_foreign_out_dir(ycb_models: Path,
                                                                tmp_path: Path):
    bad = RenderSpec(models_dir=str(ycb_models), out_dir=str(tmp_path / "ds"),
                     splits={"train": SplitSpec(["030_frok"], 1, "clean")})
    with pytest.raises(RenderError, match="030_fork"):  # suggests the close match
        render_dataset(bad, progress=False)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    spec = RenderSpec(models_dir=str(ycb_models), out_dir=str(foreign),
                      splits={"train": SplitSpec([FORK], 1, "clean")})
    with pytest.raises(RenderError, match="refusing"):
        render_dataset(spec, progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me"
