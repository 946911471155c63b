"""Typed config loading: defaults, base files, overrides, and errors that name the key."""
import re
from pathlib import Path

import pytest

from vl_distill_ros.config import (ConfigError, TrainConfig, apply_overrides,
                                   load_train_config, to_dict)


def _assert_equal_apart_from(first: TrainConfig, second: TrainConfig, *keys: str) -> None:
    """Two configs are the same once their name, output folder and the dotted ``keys``
    (``loss.mixup_prob``) are left out (pytest shows the differing entries)."""
    a, b = to_dict(first), to_dict(second)
    for d in (a, b):
        for key in ("name", "output_dir", *keys):
            *path, leaf = key.split(".")
            node = d
            for part in path:
                node = node[part]
            del node[leaf]
    assert a == b


def test_shipped_train_config_loads(repo_root: Path, monkeypatch):
    monkeypatch.chdir(repo_root)
    cfg = load_train_config("config/train_ycb.yaml")
    assert isinstance(cfg, TrainConfig)
    assert cfg.teacher.backend == "offline"
    assert cfg.student.image_size == 128
    assert cfg.data.enrich is True


@pytest.mark.parametrize("name,loss", [
    ("cls_mse", (1.0, 1.0, 0.0, 0.0)),
    ("cls_imcst", (1.0, 0.0, 1.0, 0.0)),
    ("cls_imcst_vlprox", (1.0, 0.0, 1.0, 1.0)),
    ("cls_imcst_vlprox_enrich", (1.0, 0.0, 1.0, 1.0)),
])
def test_ablation_configs_inherit_base(repo_root, monkeypatch, name, loss):
    monkeypatch.chdir(repo_root)
    cfg = load_train_config(f"config/ablation/{name}.yaml")
    assert cfg.name == name
    got = (cfg.loss.cls_weight, cfg.loss.mse_weight, cfg.loss.imcst_weight, cfg.loss.vlprox_weight)
    assert got == loss
    assert cfg.data.enrich == name.endswith("enrich")
    # inherited from the base file, not the dataclass default
    assert cfg.teacher.backend == "offline"
    assert cfg.output_dir.endswith(name)


def test_overrides_parse_yaml_values():
    data = apply_overrides({}, ["optim.epochs=3", "loss.tau=0.1", "data.enrich=false",
                                "teacher.pretrained=none"])
    assert data == {"optim": {"epochs": 3}, "loss": {"tau": 0.1}, "data": {"enrich": False},
                    "teacher": {"pretrained": "none"}}
    cfg = load_train_config(None, ["optim.epochs=3", "teacher.pretrained=none"])
    assert cfg.optim.epochs == 3
    assert cfg.teacher.pretrained is None


def test_unknown_key_is_an_error_naming_it():
    with pytest.raises(ConfigError, match="optim.*unknown keys.*'epoch'"):
        load_train_config(None, ["optim.epoch=3"])


def test_wrong_type_is_an_error_naming_the_field():
    with pytest.raises(ConfigError, match="optim.epochs: expected an integer"):
        load_train_config(None, ["optim.epochs=three"])
    with pytest.raises(ConfigError, match="data.enrich: expected true/false"):
        load_train_config(None, ["data.enrich=3"])


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_train_config(None, ["optim.epochs"])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_train_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_train_config(bad)
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"base: {loop}\n")
    with pytest.raises(ConfigError, match="loops"):
        load_train_config(loop)


# -- out-of-range numbers and unreadable files (issue 11) -----------------------------------
@pytest.mark.parametrize("override, message", [
    ("optim.epochs=-3", "optim.epochs must be a finite number >= 1, got -3"),
    ("optim.epochs=0", "optim.epochs must be a finite number >= 1"),
    ("optim.batch_size=0", "optim.batch_size must be a finite number >= 1, got 0"),
    ("optim.lr=.nan", "optim.lr must be a finite number > 0, got nan"),
    ("optim.lr=.inf", "optim.lr must be a finite number > 0, got inf"),
    ("optim.lr=0", "optim.lr must be a finite number > 0"),
    ("optim.weight_decay=-1", "optim.weight_decay must be a finite number >= 0"),
    ("optim.warmup_epochs=.nan", "optim.warmup_epochs must be a finite number >= 0"),
    ("student.image_size=-5", "student.image_size must be a positive multiple of 32, got -5"),
    ("student.image_size=0", "student.image_size must be a positive multiple of 32"),
    ("student.image_size=100", "student.image_size must be a positive multiple of 32, got 100"),
    ("teacher.batch_size=0", "teacher.batch_size must be a finite number >= 1"),
    ("teacher.temperature=0", "teacher.temperature must be a finite number > 0"),
    ("loss.tau=0", "loss.tau must be a finite number > 0"),
    ("loss.mse_weight=-1", "loss.mse_weight must be a finite number >= 0"),
    ("loss.vlprox_topk=0", "loss.vlprox_topk must be a finite number >= 1"),
    ("data.templates=['a photo']", "every template needs '{name}'"),
    # session 76: values that passed and then failed deep inside training with a traceback,
    # or allocated without bound
    ("data.templates=[]", "data.templates is empty"),
    ("data.templates=['{name} {x}']", "not a format string whose only field is {name}"),
    ("data.augment.blur_sigma=[a, b]", "data.augment.blur_sigma[0]: expected a number"),
    ("data.train_splits=[{a: 1}]", "data.train_splits[0]: expected a string"),
    ("optim.seed=-1", "optim.seed must be a finite number >= 0, got -1"),
    ("optim.seed=99999999999", "optim.seed must be at most 4294967295"),
    ("optim.threads=100000000000", "optim.threads must be at most 1024"),
    ("student.image_size=16384", "student.image_size must be at most 1024"),
    ("student.head_hidden=1000000000", "student.head_hidden must be at most 16384"),
    ("teacher.device=bogus", "teacher.device must be auto, cpu, cuda or cuda:N"),
    ("output_dir=", "output_dir is empty"),
    ("optim.epochs=[", "the value is not valid YAML"),
    ("optim.epochs=!!python/object/apply:os.system [ls]", "the value is not valid YAML"),
])
def test_out_of_range_numbers_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_train_config(None, [override])


def test_in_range_values_still_load():
    cfg = load_train_config(None, ["optim.epochs=1", "optim.batch_size=1", "optim.lr=0.000001",
                                   "student.image_size=32", "student.image_size=96",
                                   "optim.weight_decay=0", "loss.mse_weight=0"])
    assert cfg.student.image_size == 96 and cfg.optim.epochs == 1


def test_settings_that_cannot_train_together_are_config_errors():
    zero = [f"loss.{k}_weight=0" for k in ("cls", "mse", "imcst", "vlprox", "vlkl")]
    with pytest.raises(ConfigError, match="every loss weight is 0"):
        load_train_config(None, zero)
    with pytest.raises(ConfigError, match="image_size 32 needs optim.batch_size >= 2"):
        load_train_config(None, ["student.image_size=32", "optim.batch_size=1"])
    assert load_train_config(None, ["teacher.device=cuda:1"]).teacher.device == "cuda:1"
    assert load_train_config(None, ["data.train_splits=[1]"]).data.train_splits == ["1"]


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "big"])
def test_config_that_is_a_fifo_or_endless_is_refused_without_blocking(tmp_path, kind):
    """A FIFO blocked `vl-distill train` (and `ablate`) for ever; /dev/zero filled the
    memory: configs are read as regular files of at most 1 MiB."""
    import os

    from vl_distill_ros.training.ablation import read_ablation_spec

    if kind == "fifo":
        path = tmp_path / "cfg.yaml"
        os.mkfifo(path)
        message = "FIFO"
    elif kind == "dev_zero":
        path, message = Path("/dev/zero"), "not a regular file"
    else:
        path, message = tmp_path / "big.yaml", "the limit is"
        path.write_text("# " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match=message):
        load_train_config(path)
    based = tmp_path / "based.yaml"
    based.write_text(f"base: {path}\n")
    with pytest.raises(ConfigError, match=message):
        load_train_config(based)
    with pytest.raises(ConfigError, match=message):
        read_ablation_spec(path)


def test_binary_or_directory_config_is_a_one_line_error_with_exit_2(tmp_path, capsys):
    from vl_distill_ros.cli import main

    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)) * 8)
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(b"optim:\x00\x01 {}\n")
    cases = [(binary, "not a YAML text file"), (tmp_path, "is a directory"),
             (nul, "not valid YAML")]
    for path, message in cases:
        with pytest.raises(ConfigError, match=message):
            load_train_config(path)
        assert main(["train", "--config", str(path), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.startswith("vl-distill train: error:"), err
        assert len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err


# -- loss parity options (issue 12) ---------------------------------------------------------
def test_loss_parity_options_default_and_validate():
    cfg = load_train_config(None)
    assert (cfg.loss.imcst_similarity, cfg.loss.imcst_direction,
            cfg.loss.vlprox_reduction) == ("l2", "both", "batch")
    cfg = load_train_config(None, ["loss.imcst_direction=single",
                                   "loss.vlprox_reduction=masked"])
    assert (cfg.loss.imcst_direction, cfg.loss.vlprox_reduction) == ("single", "masked")
    for override, message in [
            ("loss.imcst_direction=one", "loss.imcst_direction must be one of ['both', 'single']"),
            ("loss.vlprox_reduction=mean",
             "loss.vlprox_reduction must be one of ['batch', 'masked']"),
            ("loss.imcst_similarity=dot", "loss.imcst_similarity must be one of")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_train_config(None, [override])


# -- issue 13: string enums checked at load, base files next to the config, no dead keys ------
@pytest.mark.parametrize("override, key", [
    ("teacher.backend=clip", "teacher.backend"),
    ("student.backbone=resnet50", "student.backbone"),
    ("optim.device=cuda:1", "optim.device"),
    ("loss.cls_label_set=all", "loss.cls_label_set"),
])
def test_string_enums_are_checked_when_the_config_loads(tmp_path, override, key):
    with pytest.raises(ConfigError, match=re.escape(f"{key} must be one of")):
        load_train_config(None, [override])
    # the same value in a file is rejected while loading it
    section, name = key.split(".")
    value = override.split("=", 1)[1]
    path = tmp_path / "c.yaml"
    path.write_text(f"{section}:\n  {name}: '{value}'\n")
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_train_config(path)


def test_backbone_choices_match_the_student_module():
    from vl_distill_ros.config import CHOICES
    from vl_distill_ros.model.student import BACKBONES

    assert set(CHOICES["student.backbone"]) == set(BACKBONES)


def test_base_resolves_next_to_the_config_first(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "common.yaml").write_text("optim:\n  epochs: 3\n")
    (folder / "child.yaml").write_text("base: common.yaml\nloss:\n  tau: 0.05\n")
    # a file of the same name in the working directory is NOT the one meant
    work = tmp_path / "work"
    work.mkdir()
    (work / "common.yaml").write_text("optim:\n  epochs: 7\n")
    monkeypatch.chdir(work)
    cfg = load_train_config(folder / "child.yaml")
    assert (cfg.optim.epochs, cfg.loss.tau) == (3, 0.05)
    # a base only found relative to the working directory still works
    (folder / "other.yaml").write_text("base: common.yaml\n")
    (folder / "common.yaml").unlink()
    assert load_train_config(folder / "other.yaml").optim.epochs == 7
    (folder / "bad.yaml").write_text("base: [a, b]\n")
    with pytest.raises(ConfigError, match="'base' must be a file name"):
        load_train_config(folder / "bad.yaml")


def test_data_workers_is_gone():
    with pytest.raises(ConfigError, match=r"unknown keys \['workers'\]"):
        load_train_config(None, ["data.workers=2"])


def test_tried_recipes_change_one_lever_of_the_default(repo_root, monkeypatch):
    """The recipes tried against row 8 (motion blur) and not adopted (docs/results.md, "Unseen
    objects") differ from it only in what they try: the varied-appearance retry in its cluttered
    training renders (row 7's), the heavier L_vl-kl in that loss weight."""
    monkeypatch.chdir(repo_root)
    default = load_train_config("config/ablation/gzsl_blur.yaml")
    varied, row7 = (load_train_config(f"config/ablation/gzsl_{n}.yaml")
                    for n in ("blur_varied", "varied"))
    assert varied.data.train_splits == row7.data.train_splits != default.data.train_splits
    assert varied.data.aux_splits == row7.data.aux_splits != default.data.aux_splits
    heavier = load_train_config("config/ablation/gzsl_blur_vlkl3.yaml")
    assert heavier.loss.vlkl_weight == 3.0 != default.loss.vlkl_weight
    _assert_equal_apart_from(default, varied, "data.train_splits", "data.aux_splits")
    _assert_equal_apart_from(default, heavier, "loss.vlkl_weight")


def test_the_dim_crops_recipe_changes_only_the_dim_augmentation_of_row_9(repo_root,
                                                                         monkeypatch):
    """``gzsl_dim.yaml`` (tried in session 59, docs/results.md, "Unseen objects") is row 9 with dim
    crops added and nothing else; ``gzsl_dim_noise.yaml`` (row 10, the default since session
    60) that with stronger noise."""
    monkeypatch.chdir(repo_root)
    row9 = to_dict(load_train_config("config/ablation/gzsl_blur_vlkl03.yaml"))
    dim = to_dict(load_train_config("config/ablation/gzsl_dim.yaml"))
    assert dim["data"]["augment"]["dim_prob"] == 0.25 != row9["data"]["augment"]["dim_prob"]
    noisy = to_dict(load_train_config("config/ablation/gzsl_dim_noise.yaml"))
    assert noisy["data"]["augment"]["noise_sigma"] == 0.045 != dim["data"]["augment"][
        "noise_sigma"]
    del noisy["name"], noisy["output_dir"], noisy["data"]["augment"]["noise_sigma"]
    for d in (row9, dim):
        del d["name"], d["output_dir"], d["data"]["augment"]["dim_prob"]
    assert dim == row9
    del dim["data"]["augment"]["noise_sigma"], noisy["data"]["augment"]["dim_prob"]
    assert noisy == dim


def test_every_gzsl_row_loads_and_the_default_bundle_is_the_last_row(repo_root, monkeypatch):
    """Each row of the generalised zero-shot ablation loads (base chain and keys); the shipped
    default's recipe (the last row, row 15) is row 13 with the zero-shot map added after
    training, row 14 (not the default since) row 13 with the ``conse`` head, row 13 takes
    twelve crops of each cut-out photo where row 12 took six and row 11 three, row 11 added
    unlabelled cut-out photos to row 10, which added dim crops and stronger noise to row 9,
    which weighted L_vl-kl 0.3 on row 8, which added motion blur to row 6's augmentations;
    the last row is what `make default-bundle` trains."""
    import yaml

    monkeypatch.chdir(repo_root)
    spec = yaml.safe_load(open("config/ablation/ycb_gzsl.yaml"))
    cfgs = [load_train_config(r["config"]) for r in spec["runs"]]
    assert len({c.output_dir for c in cfgs}) == len(cfgs)     # no two rows share runs
    last, row6 = cfgs[-1], load_train_config("config/ablation/gzsl_augment.yaml")
    assert spec["runs"][-1]["config"] == "config/ablation/gzsl_zero_shot_prior.yaml"
    assert "(default)" in spec["runs"][-1]["row"]
    assert not any("(default)" in r["row"] for r in spec["runs"][:-1])
    row13 = load_train_config("config/ablation/gzsl_cutouts12.yaml")
    row14 = load_train_config("config/ablation/gzsl_conse_head.yaml")
    assert spec["runs"][-2]["config"] == "config/ablation/gzsl_conse_head.yaml"
    assert spec["runs"][-3]["config"] == "config/ablation/gzsl_cutouts12.yaml"
    # row 15 is row 13 with the zero-shot prior, nothing else (so it trains as row 13 does)
    assert last.student.zero_shot_prior == 2.0 and row13.student.zero_shot_prior == 0.0
    assert last.student.head == "linear"
    _assert_equal_apart_from(last, row13, "student.zero_shot_prior")
    # row 14 is row 13 with the conse head, nothing else
    assert row14.student.head == "conse" and row13.student.head == "linear"
    _assert_equal_apart_from(row14, row13, "student.head")
    # session 69's probe is row 15 with function matching (consistent targets, mixup)
    probe = load_train_config("config/ablation/gzsl_mixup.yaml")
    assert (probe.loss.teacher_targets, probe.loss.mixup_prob) == ("consistent", 0.5)
    assert (last.loss.teacher_targets, last.loss.mixup_prob) == ("cached", 0.0)
    _assert_equal_apart_from(probe, last, "loss.teacher_targets", "loss.mixup_prob")
    aux_only = load_train_config("config/ablation/gzsl_mixup_aux.yaml")
    assert probe.loss.mixup_labelled and not aux_only.loss.mixup_labelled
    _assert_equal_apart_from(aux_only, probe, "loss.mixup_labelled")
    last = row13
    # row 13 is row 12 with the twelve-crop folder, row 12 row 11 with the six-crop folder
    # (both made by `make cutouts`), nothing else
    row12 = load_train_config("config/ablation/gzsl_cutouts6.yaml")
    row11 = load_train_config("config/ablation/gzsl_cutouts.yaml")
    assert spec["runs"][-4]["config"] == "config/ablation/gzsl_cutouts6.yaml"
    assert spec["runs"][-5]["config"] == "config/ablation/gzsl_cutouts.yaml"
    assert last.data.unlabelled_splits == ["data/cutouts12"]
    assert row12.data.unlabelled_splits == ["data/cutouts6"]
    cutouts_recipe = open("Makefile").read().split("\ncutouts:")[1].split("\n\n")[0]
    assert "--views 6 --out data/cutouts6" in cutouts_recipe
    assert "--views 12 --out data/cutouts12" in cutouts_recipe
    for upper, lower in ((last, row12), (row12, row11)):
        _assert_equal_apart_from(upper, lower, "data.unlabelled_splits")
    # row 11 is row 10 with the cut-out photos as unlabelled images, nothing else
    row10 = load_train_config("config/ablation/gzsl_dim_noise.yaml")
    assert spec["runs"][-6]["config"] == "config/ablation/gzsl_dim_noise.yaml"
    assert row11.data.unlabelled_splits == ["data/cutouts"] and not row10.data.unlabelled_splits
    _assert_equal_apart_from(row11, row10, "data.unlabelled_splits")
    # row 10 is row 9 with dim crops and noise up to 0.045, nothing else
    row9 = load_train_config("config/ablation/gzsl_blur_vlkl03.yaml")
    assert spec["runs"][-7]["config"] == "config/ablation/gzsl_blur_vlkl03.yaml"
    assert row10.data.augment.dim_prob > 0 == row9.data.augment.dim_prob
    assert row10.data.augment.noise_sigma > row9.data.augment.noise_sigma
    _assert_equal_apart_from(row10, row9, "data.augment.dim_prob", "data.augment.dim_gain",
                             "data.augment.noise_sigma")
    # row 9 is row 8 (motion blur) with L_vl-kl weighted 0.3, nothing else
    row8 = load_train_config("config/ablation/gzsl_blur.yaml")
    assert spec["runs"][-8]["config"] == "config/ablation/gzsl_blur.yaml"
    assert row9.loss.vlkl_weight == 0.3 and row8.loss.vlkl_weight == 1.0
    _assert_equal_apart_from(row9, row8, "loss.vlkl_weight")
    # the centred calibration (tried, not the default) recalibrates row 8's students:
    # the same training settings
    centred = load_train_config("config/ablation/gzsl_center.yaml")
    assert centred.calibration.center and not row8.calibration.center
    _assert_equal_apart_from(row8, centred, "calibration.center")
    assert last.data.augment.motion_blur_prob > 0 and row6.data.augment.motion_blur_prob == 0
    for name in ("white_balance", "exposure", "jpeg_prob", "loose_prob", "cut_prob"):
        assert getattr(last.data.augment, name) == getattr(row6.data.augment, name)
    makefile = open("Makefile").read()
    recipe = makefile[makefile.index("\ndefault-bundle:"):]
    assert "--config config/ablation/gzsl_zero_shot_prior.yaml" in recipe.split("\n\n")[0]
    assert recipe.startswith("\ndefault-bundle: setup cutouts")
    assert f"output_dir={cfgs[-1].output_dir}/seed0" in recipe.split("\n\n")[0]
