"""A named folder's name that the run's vocabulary file describes is distilled with the
prompt it is given after training (calibration negatives, the bundle's catalogue)."""
from __future__ import annotations

import json
from pathlib import Path

from test_train_e2e import _config, make_dataset

from vl_distill_ros.config import load_train_config
from vl_distill_ros.model.vocabulary import build_prompts
from vl_distill_ros.training.data import full_vocabulary, load_training_set, load_vocabularies


def test_a_described_name_of_a_named_folder_joins_l_cls_with_its_description(tmp_path: Path):
    root = make_dataset(tmp_path / "toy", per_label=1)
    named = tmp_path / "named"
    named.mkdir()
    png = sorted((root / "aux" / "aux" / "purple_ball").glob("*.png"))[0]
    (named / "a.png").write_bytes(png.read_bytes())
    (named / "manifest.json").write_text(json.dumps(
        {"images": [{"file": "a.png", "name": "Purple Ball"}]}))
    cfg = load_train_config(_config(root, "run", data={"named_splits": [str(named)]}))
    train_set = load_training_set(cfg.data, cfg.loss.cls_label_set, load_vocabularies(cfg.data))
    label = train_set.cls_vocab[train_set.cls_vocab.index("purple ball")]
    full = full_vocabulary(cfg.data)
    described = full[full.index("purple ball")]
    assert described.description
    assert build_prompts(label, cfg.data.templates, cfg.data.enrich) == \
        build_prompts(described, cfg.data.templates, cfg.data.enrich)
    assert int(train_set.data.labels[-1]) == train_set.cls_vocab.index("purple ball")
