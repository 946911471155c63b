"""CPU rendering of labelled YCB crops (vl_distill_ros.sim.render) and `render` command."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from vl_distill_ros.sim.backgrounds import (BUSY_KINDS, CLEAN_KINDS, CLUTTER_KINDS, KINDS,
                                            make_background)
from vl_distill_ros.sim.appearance import APPEARANCES, Look, kelvin_rgb
from vl_distill_ros.sim.crop_dataset import (
    MANIFEST_NAME,
    RenderSpec,
    SplitSpec,
    load_render_spec,
    render_dataset,
    view_rng,
)
from vl_distill_ros.sim.meshes import RenderError, find_models, load_mesh_vertices
from vl_distill_ros.sim.render import ObjectRenderer

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


def test_busy_cloths_are_busy_and_in_no_crop_domain():
    """``plaid`` and ``print`` (``BUSY_KINDS``): a printed cloth is strewn with many small
    motifs and a tartan changes colour along both of its axes; neither is a kind of the
    crop renderer's domains, whose random draws they must not change."""
    assert set(BUSY_KINDS) <= set(KINDS) and not set(BUSY_KINDS) & set(CLEAN_KINDS + CLUTTER_KINDS)
    import cv2

    motifs = []
    for seed in range(4):
        img = make_background("print", 256, np.random.default_rng(seed), noise_sigma=0.0)
        ground = np.median(img.reshape(-1, 3), axis=0)
        off = (np.abs(img.astype(np.int32) - ground).sum(axis=2) > 40).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(off)
        sizes = stats[1:, cv2.CC_STAT_AREA]
        motifs.append(int(np.count_nonzero(sizes < 0.02 * 256 * 256)))
    assert min(motifs) >= 15, motifs
    for seed in range(4):
        img = make_background("plaid", 128, np.random.default_rng(seed), noise_sigma=0.0)
        rgb = img.astype(np.float32)
        # many colour changes along the rows and along the columns of the texture
        rows = np.count_nonzero(np.abs(np.diff(rgb[64], axis=0)).sum(axis=1) > 12)
        cols = np.count_nonzero(np.abs(np.diff(rgb[:, 64], axis=0)).sum(axis=1) > 12)
        assert rows >= 3 and cols >= 3, (seed, rows, cols)


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
    from vl_distill_ros.sim.meshes import DEFAULT_MODELS_DIR, MODELS_ENV, default_models_dir

    cfg = repo_root / "config" / "render_ycb.yaml"
    monkeypatch.delenv(MODELS_ENV, raising=False)
    assert default_models_dir() == DEFAULT_MODELS_DIR == "../shared/ycb_models"
    assert default_models_dir(relative_to=repo_root) == str(repo_root / DEFAULT_MODELS_DIR)
    assert load_render_spec(cfg).models_dir == str(Path(DEFAULT_MODELS_DIR))
    monkeypatch.setenv(MODELS_ENV, str(tmp_path / "ycb"))
    assert default_models_dir(relative_to=repo_root) == str(tmp_path / "ycb")
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


def _look(**changes) -> Look:
    neutral = dict(kelvin=6500.0, intensity=1.0, specular=0.0, hue=0.0, saturation=1.0,
                   brightness=1.0, contrast=1.0, shade=0.0, shade_angle=0.0)
    return Look(**{**neutral, **changes})


def test_look_changes_only_the_object_layer():
    """Colour temperature, texture jitter and shading act on the premultiplied object layer;
    transparent pixels stay empty and a neutral look changes nothing."""
    alpha = np.zeros((16, 16), np.float32)
    alpha[2:14, 2:14] = 1.0
    alpha[1, 2:14] = 0.5  # soft edge
    colour = np.array([0.6, 0.5, 0.4], np.float32)
    rgb = colour * alpha[..., None]
    inside = alpha == 1.0
    np.testing.assert_allclose(_look().apply(rgb, alpha), rgb, atol=1e-5)
    np.testing.assert_allclose(kelvin_rgb(6500), [1, 1, 1])
    warm = _look(kelvin=2800).apply(rgb, alpha)
    cool = _look(kelvin=9500).apply(rgb, alpha)
    assert warm[inside][:, 0].mean() / warm[inside][:, 2].mean() > 1.5 * 0.6 / 0.4
    assert cool[inside][:, 2].mean() / cool[inside][:, 0].mean() > 1.1 * 0.4 / 0.6
    for out in (warm, cool, _look(hue=10, saturation=1.3, brightness=0.8).apply(rgb, alpha)):
        assert np.all(out[alpha == 0] == 0)  # background stays transparent
        assert np.all(out <= alpha[..., None] + 1e-6)  # still premultiplied
    grey = _look(saturation=0.0).apply(rgb, alpha)[inside]
    assert np.ptp(grey, axis=1).max() < 1e-4  # no saturation: grey
    shaded = _look(shade=0.6, shade_angle=0.0).apply(rgb, alpha)  # darker to the right
    assert shaded[8, 13].sum() < 0.7 * shaded[8, 2].sum() < 0.7 * rgb[8, 2].sum()
    lit = _look(intensity=1.3, specular=0.7).light(0.5, 0.4)
    assert lit == pytest.approx((0.65, 0.52, 0.7))
    a, b = Look.sample(np.random.default_rng(4)), Look.sample(np.random.default_rng(4))
    assert a == b and a != Look.sample(np.random.default_rng(5))


def test_appearance_is_checked_when_the_spec_is_loaded(repo_root: Path):
    cfg = repo_root / "config" / "render_ycb.yaml"
    spec = load_render_spec(cfg)
    assert {s.appearance for s in spec.splits.values()} == {"standard"}  # the default
    spec = load_render_spec(cfg, ["splits.test_ood.appearance=varied"])
    assert spec.splits["test_ood"].appearance == "varied"
    with pytest.raises(RenderError, match=r"splits.test_ood.appearance 'shiny' is not one of "
                                          r"\['standard', 'varied'\]"):
        load_render_spec(cfg, ["splits.test_ood.appearance=shiny"])
    shift = load_render_spec(repo_root / "config" / "render_ycb_shift.yaml")
    assert {s.appearance for s in shift.splits.values()} == {"varied"}
    assert {s.domain for s in shift.splits.values()} == {"clutter"}
    assert shift.seed != spec.seed and shift.out_dir == "data/ycb_renders_shift"
    assert len(shift.splits["test_shift_id"].objects) == 14
    assert len(shift.splits["test_ood"].objects) == 12
    assert APPEARANCES == ("standard", "varied")


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


def test_standard_appearance_renders_as_before(renderer: ObjectRenderer):
    """``appearance`` absent and ``"standard"`` give the same pixels, mask and metadata
    (the shipped data sets were rendered without the option)."""
    for domain in ("clean", "clutter"):
        for key in (BANANA, FORK):
            a = renderer.render_view(key, view_rng(5, "s", key, 1), domain, 48)
            b = renderer.render_view(key, view_rng(5, "s", key, 1), domain, 48,
                                     appearance="standard")
            assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
            assert a.meta == b.meta and "appearance" not in a.meta
    with pytest.raises(RenderError, match="unknown appearance 'shiny'"):
        renderer.render_view(BANANA, view_rng(5, "s", BANANA, 1), "clean", 48, "shiny")


def test_varied_appearance_changes_the_object_only_and_is_deterministic(
        renderer: ObjectRenderer):
    """A varied view keeps the standard view's pose, mask and background (its look comes from
    a child generator) but recolours the object; the same generator gives the same view."""
    changes = []
    for i in range(3):
        std = renderer.render_view(BANANA, view_rng(2, "v", BANANA, i), "clean", 64)
        var = renderer.render_view(BANANA, view_rng(2, "v", BANANA, i), "clean", 64,
                                   appearance="varied")
        again = renderer.render_view(BANANA, view_rng(2, "v", BANANA, i), "clean", 64,
                                     appearance="varied")
        assert np.array_equal(var.image, again.image) and var.meta == again.meta
        assert np.array_equal(std.mask, var.mask)
        same = {k: v for k, v in std.meta.items() if k != "light"}
        assert {k: v for k, v in var.meta.items() if k in same} == same
        assert var.meta["light"]["direction"] == std.meta["light"]["direction"]
        assert set(var.meta["appearance"]) == {
            "kelvin", "intensity", "specular", "hue", "saturation", "brightness", "contrast",
            "shade", "shade_angle"}
        near = cv2.dilate(std.mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        assert np.array_equal(std.image[~near], var.image[~near])  # background untouched
        diff = np.abs(std.image.astype(int) - var.image.astype(int))[std.mask]
        changes.append(diff.mean())
    assert min(changes) > 4, changes
    looks = [renderer.render_view(BANANA, view_rng(2, "v", BANANA, i), "clean", 32,
                                  appearance="varied").meta["appearance"] for i in range(3)]
    assert looks[0] != looks[1] != looks[2]


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

    # a varied split: recorded in the manifest, deterministic, other pixels than standard
    def varied(out: Path) -> RenderSpec:
        s = spec(out)
        s.splits["test_ood"].appearance = "varied"
        return s

    v1, v2 = (render_dataset(varied(tmp_path / n), progress=False) for n in ("v1", "v2"))
    recs = json.loads((v1 / MANIFEST_NAME).read_text())["images"]
    assert {(r["split"], r["appearance"]) for r in recs} == {
        ("train", "standard"), ("test_ood", "varied")}
    assert all(("appearance" in r["view"]) == (r["split"] == "test_ood") for r in recs)
    for rel in files:
        assert (v1 / rel).read_bytes() == (v2 / rel).read_bytes(), rel
        same = (v1 / rel).read_bytes() == (out / rel).read_bytes()
        assert same == rel.startswith("train/"), rel


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


def test_render_configs_that_block_or_never_end_are_refused(tmp_path: Path):
    """A render config that is a FIFO hung `render`, /dev/zero filled the memory, a folder
    gave a traceback; --views-scale inf an OverflowError, 1e12 a render that never ends; a
    split named manifest.json or holding a NUL failed after rendering."""
    import os

    fifo = tmp_path / "render.yaml"
    os.mkfifo(fifo)
    for path, message in ((fifo, "FIFO"), (Path("/dev/zero"), "not a regular file"),
                          (tmp_path, "directory")):
        with pytest.raises(RenderError, match=message):
            load_render_spec(path)
    good = tmp_path / "good.yaml"
    good.write_text("splits: {s1: {objects: [a], views: 2}}\n")
    for scale in (float("inf"), float("nan"), 1e12, 0):
        with pytest.raises(RenderError, match="views scale must be a number in"):
            load_render_spec(good, views_scale=scale)
    for name in ("manifest.json", "a\x00b", "a\tb"):
        spec = RenderSpec(out_dir=str(tmp_path / "o"), splits={name: SplitSpec(["a"], 1)})
        with pytest.raises(RenderError, match="not a valid folder name"):
            render_dataset(spec, progress=False)
    spec = RenderSpec(out_dir=str(tmp_path / "o"), splits={"s": SplitSpec(["a"], 10**6)})
    with pytest.raises(RenderError, match="views must be an integer in 1..100000"):
        render_dataset(spec, progress=False)


@pytest.mark.parametrize("text, message", [
    ("v a b c\nf 1 1 1\n", "not three numbers"),
    ("v 0 0\nv 1 0\nv 0 1\nf 1 2 3\n", "fewer than three coordinates"),
    ("v 0 0 0\nv nan 0 0\nv 0 1 0\nf 1 2 3\n", "not finite"),
    ("v 0 0 0\nv inf 0 0\nv 0 1 0\nf 1 2 3\n", "not finite"),
    ("v 0 0 0\nf 1 1 1\n", "span no surface"),
    ("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n", "span no surface"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\n", "no faces"),
])
def test_meshes_that_cannot_be_drawn_are_render_errors(tmp_path: Path, text, message):
    """They gave tracebacks (ValueError, IndexError, OverflowError) or, for NaN vertices or
    no faces, crops labelled with an object that is not in them (mask_fraction 0)."""
    obj = tmp_path / "textured.obj"
    obj.write_text(text)
    with pytest.raises(RenderError, match=message):
        load_mesh_vertices(obj)


def test_a_model_folder_whose_name_is_not_utf8_is_skipped(tmp_path: Path, caplog):
    """Drawn as a clutter distractor it crashed the render (OpenCV given its name:
    SIGSEGV); its name could not be a key in labels or ROS messages anyway."""
    import os

    for name in ("good", os.fsdecode(b"caf\xe9_mug"), "tab\tname"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "textured.obj").write_text("v 0 0 0\n")
    assert list(find_models(tmp_path)) == ["good"]
    assert "not UTF-8" in caplog.text and "control characters" in caplog.text
