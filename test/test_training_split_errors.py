"""A user's own training data that does not fit its vocabulary file is a clear error: a
split with no held-out object or a misspelt name (one line naming the split file), a label
folder named after no label (naming the folder); a trained object without images is
warned of."""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from vl_distill_ros.cli import main
from vl_distill_ros.config import DataConfig
from vl_distill_ros.model.vocabulary import VocabularyError
from vl_distill_ros.training.data import load_training_set, load_vocabularies
from vl_distill_ros.training.image_folder import DatasetError

VOCABULARY = """labels:
  - name: pliers
    description: A metal gripping tool with two long red plastic handles.
  - name: tape measure
  - name: multimeter
"""


def _files(tmp_path: Path, in_distribution: str, out_of_distribution: str) -> DataConfig:
    (tmp_path / "vocabulary.yaml").write_text(VOCABULARY)
    (tmp_path / "split.yaml").write_text(f"name: mine\nin_distribution: {in_distribution}\n"
                                         f"out_of_distribution: {out_of_distribution}\n")
    return DataConfig(root=str(tmp_path / "images"), vocabulary=str(tmp_path / "vocabulary.yaml"),
                      split=str(tmp_path / "split.yaml"), enrich=True)


@pytest.mark.parametrize("ids, oods, words", [
    ("[pliers, tape measure]", "[]", ["'out_of_distribution' is empty", "held out"]),
    ("[]", "[multimeter]", ["'in_distribution' is empty", "to train on"]),
    ("[pliers, tape_measures]", "[multimeter]", ["'in_distribution' names 'tape_measures'",
                                                 "vocabulary.yaml does not hold"]),
    ("[pliers]", "[multimeter, voltmeter]", ["'out_of_distribution' names 'voltmeter'"]),
])
def test_a_split_that_does_not_fit_its_vocabulary_names_the_split_file(tmp_path, ids, oods,
                                                                       words):
    cfg = _files(tmp_path, ids, oods)
    with pytest.raises(VocabularyError) as info:
        load_vocabularies(cfg)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "split.yaml"))
    for word in words:
        assert word in message


def test_train_exits_2_with_one_line_on_a_misspelt_split_name(tmp_path, capsys):
    cfg = _files(tmp_path, "[pliers, tweezers]", "[multimeter]")
    config = tmp_path / "train.yaml"
    config.write_text(f"output_dir: {tmp_path / 'run'}\ndata:\n  root: {cfg.root}\n"
                      f"  vocabulary: {cfg.vocabulary}\n  split: {cfg.split}\n")
    assert main(["train", "--config", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vl-distill train: error: ")
    assert "'in_distribution' names 'tweezers'" in err[0]


def test_a_split_without_images_of_its_held_out_object_still_loads(tmp_path):
    vocabs = load_vocabularies(_files(tmp_path, "[pliers, tape measure]", "[multimeter]"))
    assert vocabs.id.names == ["pliers", "tape measure"]
    assert vocabs.ood.names == ["multimeter"]
    assert vocabs.id[0].description.startswith("A metal gripping tool")


def _photos(root: Path, folders: dict[str, int]) -> None:
    for i, (folder, n) in enumerate(folders.items()):
        (root / "train" / folder).mkdir(parents=True)
        for j in range(n):
            cv2.imwrite(str(root / "train" / folder / f"{j}.png"),
                        np.full((40, 60, 3), 40 * i + j, np.uint8))


def test_a_training_folder_named_after_no_label_is_refused(tmp_path):
    cfg = _files(tmp_path, "[pliers, tape measure]", "[multimeter]")
    _photos(tmp_path / "images", {"pliers": 2, "tape_measures": 3})   # misspelt
    (tmp_path / "images" / "train" / ".ipynb_checkpoints").mkdir()   # hidden: not refused
    with pytest.raises(DatasetError) as info:
        load_training_set(cfg, "id", load_vocabularies(cfg))
    assert "folders ['tape_measures'] match no label" in str(info.value)
    assert str(tmp_path / "images" / "train") in str(info.value)


def test_a_trained_object_without_images_is_warned_of(tmp_path, caplog):
    cfg = _files(tmp_path, "[pliers, tape measure]", "[multimeter]")
    _photos(tmp_path / "images", {"pliers": 2, "Tape_Measure": 3})   # key or name, any case
    with caplog.at_level(logging.WARNING):
        train_set = load_training_set(cfg, "id", load_vocabularies(cfg))
    assert len(train_set.data) == 5 and not caplog.records
    (tmp_path / "images" / "train" / "Tape_Measure" / "0.png").rename(tmp_path / "0.png")
    for f in (tmp_path / "images" / "train" / "Tape_Measure").iterdir():
        f.unlink()
    with caplog.at_level(logging.WARNING):
        train_set = load_training_set(cfg, "id", load_vocabularies(cfg))
    assert len(train_set.data) == 2
    assert any("no training images of tape measure" in r.getMessage() for r in caplog.records)


def test_a_data_error_leaves_an_earlier_run_in_place(tmp_path, capsys):
    """A typo run moved the good run in output_dir aside (previous_run/) before its data
    checks stopped it: the data are now checked first, and the earlier run stays."""
    cfg = _files(tmp_path, "[pliers, tape measure]", "[multimeter]")
    _photos(tmp_path / "images", {"pliers": 2, "tape_measures": 3})   # misspelt
    run = tmp_path / "run"
    run.mkdir()
    (run / "student_final.pt").write_bytes(b"an earlier run's weights")
    config = tmp_path / "train.yaml"
    config.write_text(f"output_dir: {run}\ndata:\n  root: {cfg.root}\n"
                      f"  vocabulary: {cfg.vocabulary}\n  split: {cfg.split}\n")
    assert main(["train", "--config", str(config), "--no-progress"]) == 2
    assert "match no label" in capsys.readouterr().err
    assert (run / "student_final.pt").read_bytes() == b"an earlier run's weights"
    assert not (run / "previous_run").exists()
