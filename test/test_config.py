"""Typed config loading: defaults, base files, overrides, and errors that name the key."""
from pathlib import Path

import pytest

from vl_distill_ros.core.config import (ConfigError, TrainConfig, apply_overrides,
                                        load_train_config)


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
