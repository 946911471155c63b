"""A user's typo in a YAML file or a parameter is refused with the key named, never ignored:
keys given twice, unknown keys (with the closest known one), ``1e-3`` floats, a list of the
wrong length, unknown keys of vocabulary, split and ablation files, a depth proposer seed
numpy refuses, and unknown or out-of-range node parameters at start-up."""
from pathlib import Path

import pytest

from vl_distill_ros.config import ConfigError, load_train_config
from vl_distill_ros.model.vocabulary import Split, Vocabulary, VocabularyError
from vl_distill_ros.perception.camera_model import DepthError
from vl_distill_ros.perception.depth_config import load_depth_config


def _write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_key_given_twice_is_refused(tmp_path):
    """PyYAML keeps the last of two equal keys: a second ``loss:`` section dropped the
    first one's settings without a word."""
    path = _write(tmp_path, "loss:\n  tau: 0.1\nloss:\n  cls_weight: 2.0\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'loss' \(first given on line 1"):
        load_train_config(path)
    with pytest.raises(DepthError, match="duplicate key 'stride'"):
        load_depth_config(_write(tmp_path, "stride: 3\nstride: 4\n"))
    with pytest.raises(VocabularyError, match="duplicate key 'name'"):
        Vocabulary.load(_write(tmp_path, "labels:\n  - {name: mug, name: cup}\n"))
    # anchors and aliases are still fine
    path = _write(tmp_path, "optim: &o {epochs: 2}\nloss: {tau: 0.1}\n")
    assert load_train_config(path).optim.epochs == 2


def test_an_unknown_key_names_the_closest_known_one(tmp_path):
    with pytest.raises(ConfigError, match=r"'epoch' \(did you mean 'epochs'\?\)"):
        load_train_config(None, ["optim.epoch=3"])


def test_floats_in_exponent_notation(tmp_path):
    """``1e-3`` is a string to YAML 1.1 (PyYAML): it was refused as "expected a number"."""
    cfg = load_train_config(None, ["optim.lr=1e-3", "loss.tau=7e-2"])
    assert (cfg.optim.lr, cfg.loss.tau) == (0.001, 0.07)
    assert load_depth_config(_write(tmp_path, "plane_threshold_m: 6e-3\n")) \
        .plane_threshold_m == 0.006
    with pytest.raises(ConfigError, match="expected an integer"):
        load_train_config(None, ["optim.epochs=1e3"])


def test_cutout_scale_is_two_numbers(tmp_path):
    from vl_distill_ros.sim.photo_cutouts import CutoutError, load_cutout_spec

    for text in ("scale: [0.5, 0.9, 7]", "scale: {lo: 0.5, hi: 0.9}", "scale: 0.5"):
        with pytest.raises(CutoutError, match=r"\.scale: expected a list of 2 values"):
            load_cutout_spec(_write(tmp_path, text + "\n"))
    assert load_cutout_spec(_write(tmp_path, "scale: [0.4, 0.9]\n")).scale == (0.4, 0.9)


def test_unknown_top_level_keys_of_vocabulary_and_split_files(tmp_path, caplog):
    """``descriptions: [...]`` beside ``labels`` dropped every description without a word:
    a vocabulary file warns of keys it does not read (a file another tool writes may carry
    more: the node's vocabulary_file is a public interface), a split file refuses them."""
    path = _write(tmp_path, "labels: [mug, bowl]\ndescriptions: [a red mug, a bowl]\n")
    with caplog.at_level("WARNING"):
        assert Vocabulary.load(path).names == ["mug", "bowl"]
    assert "unknown top-level keys ['descriptions']" in caplog.text
    assert "{name: ..., description: ...}" in caplog.text
    path = _write(tmp_path, "in_distribution: [a]\nout_of_distribution: [b]\nauxiliary: [c]\n")
    with pytest.raises(VocabularyError, match=r"unknown top-level keys \['auxiliary'\]"):
        Split.load(path)


def test_ablation_spec_refuses_unknown_keys(tmp_path):
    from vl_distill_ros.training.ablation import read_ablation_spec

    path = _write(tmp_path, "runs:\n  - {row: a, config: c.yaml, override: [optim.epochs=1]}\n")
    with pytest.raises(ConfigError, match=r"'override' \(did you mean 'overrides'\?\)"):
        read_ablation_spec(path)
    path = _write(tmp_path, "outdir: x\nruns: [{row: a, config: c.yaml}]\n")
    with pytest.raises(ConfigError, match=r"'outdir' \(did you mean 'out_dir'\?\)"):
        read_ablation_spec(path)


def test_depth_seed_is_one_numpy_takes(tmp_path):
    """``seed: -1`` loaded, then every frame's depth proposer failed (colour only)."""
    with pytest.raises(DepthError, match="seed must be in"):
        load_depth_config(_write(tmp_path, "seed: -1\n"))


def test_replay_parameters_check_the_runtimes():
    """Offline, a misspelt inference_backend was make_runner's traceback, and an unknown
    inference_backend_behind was taken; the node refuses both at start-up."""
    from vl_distill_ros.evaluation.replay_settings import InputError, parse_param

    with pytest.raises(InputError, match="inference_backend must be one of"):
        parse_param("inference_backend:=onnx")
    with pytest.raises(InputError, match="inference_backend_behind must be one of"):
        parse_param("inference_backend_behind:=int8")
    assert parse_param("inference_backend:=torch") == ("inference_backend", "torch")


def test_unknown_start_up_parameters_are_warned_of():
    """rclpy keeps a start-up value of an undeclared name and says nothing: a misspelt
    ``unknown_treshold`` in a parameter file left the default in force. It is warned of
    (with the closest name), not refused: a ``/**`` section may hold other nodes' keys."""
    from vl_distill_ros.ros.params import unknown_overrides_warning

    assert unknown_overrides_warning(
        {"top_k": 1, "use_sim_time": 1, "qos_overrides./x.depth": 1}) == ""
    text = unknown_overrides_warning({"unknown_treshold": 0.3, "top_k": 1})
    assert "'unknown_treshold' (did you mean 'unknown_threshold'?)" in text


def test_settings_keep_the_depth_config_already_read(tmp_path):
    """The node passes the depth settings in use when another parameter changes: an edit
    of the file (here a typo) neither takes effect nor refuses that change."""
    from vl_distill_ros.evaluation.replay_settings import node_parameter_values
    from vl_distill_ros.perception.pipeline_settings import PipelineError, PipelineSettings

    path = _write(tmp_path, "stride: 3\n")
    values = node_parameter_values({"depth_proposal_config": str(path)})
    first = PipelineSettings.from_params(values)
    path.write_text("strid: 4\n", encoding="utf-8")
    with pytest.raises(PipelineError, match=r"'strid' \(did you mean 'stride'\?\)"):
        PipelineSettings.from_params(values)
    again = PipelineSettings.from_params({**values, "top_k": 5}, first.depth_cfg)
    assert again.depth_cfg.stride == 3 and again.top_k == 5


def test_freeze_stages_is_checked_when_the_config_loads():
    """It was refused when the student was built: after the teacher's pass over the
    training set, and after a finished run in output_dir was moved to previous_run."""
    from vl_distill_ros.config import BACKBONE_STAGES, StudentConfig
    from vl_distill_ros.model.student import build_student

    for backbone, stages in BACKBONE_STAGES.items():
        pretrained = "imagenet" if backbone == "efficientnet_lite0" else "none"
        student = build_student(StudentConfig(backbone=backbone, pretrained=pretrained), 16,
                                load_weights=False)
        assert len(student._stages) == stages, backbone
    with pytest.raises(ConfigError, match=r"freeze_stages must be in 0\.\.9"):
        load_train_config(None, ["student.freeze_stages=99"])


def test_a_yaml_boolean_is_no_text():
    """``data.broad_vocabulary: no`` was the text "False" ("vocabulary file not found:
    False", after the teacher's pass over the training set)."""
    with pytest.raises(ConfigError, match=r"data\.broad_vocabulary: expected text, got the "
                                          r"boolean False"):
        load_train_config(None, ["data.broad_vocabulary=no"])
    assert load_train_config(None, ["data.broad_vocabulary='no'"]).data.broad_vocabulary == "no"


def test_calibration_folders_go_together():
    """One of them alone ended the run without a calibration and without a word."""
    with pytest.raises(ConfigError, match="calibration.seen is set but calibration.unseen"):
        load_train_config(None, ["calibration.seen=data/x/calib_id"])


def test_a_stored_run_config_with_one_calibration_folder_still_loads():
    """A run trained before the check (calibration.seen alone: its calibration skipped) is
    still evaluated, exported or resumed: its checkpoint's config is no user's typo."""
    from pathlib import Path

    from vl_distill_ros.config import TrainConfig, to_dict
    from vl_distill_ros.training.trainer import checkpoint_config

    cfg = to_dict(TrainConfig())
    cfg["calibration"]["seen"] = "data/x/calib_id"
    assert checkpoint_config({"config": cfg}, Path("old.pt")).calibration.seen == \
        "data/x/calib_id"
