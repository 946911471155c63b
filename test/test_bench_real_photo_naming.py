"""bench/real_photo_naming.py: real photos' objects named among names alone."""
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import real_photo_naming  # noqa: E402


def test_names_every_box_of_the_photos_that_are_here(capsys):
    assert real_photo_naming.main(["--no-teacher"]) == 0
    out = json.loads(capsys.readouterr().out)
    boxes = sum(out["photos"].values())
    assert out["photos"]["coins.png"] == 24            # scikit-image's photos are always here
    small, large = (out["results"][k] for k in ("photo_names", "photo_names_and_26"))
    assert small["names"] < large["names"] <= small["names"] + 26   # the 26 join, once each
    for result in (small, large):
        student = result["student"]
        assert student["objects"] == boxes and 0 <= student["unknown"] <= boxes
        assert result["chance"] == pytest.approx(1 / result["names"], abs=1e-4)
        counts = [tuple(map(int, v.split("/"))) for v in student["per_name"].values()]
        assert sum(n for _, n in counts) == boxes
        assert sum(r for r, _ in counts) == student["right"]
        assert sum(student["most_given"].values()) <= boxes
        assert "teacher" not in result
    if "smarties.png" in out["photos"]:   # opencv-doc's photos (make real-photos-data)
        # among the photos' own names the student does well above chance (the sweets)
        assert small["student"]["right"] >= 3 * small["chance"] * boxes


def test_missing_labels_file_is_a_clear_error(tmp_path, capsys):
    assert real_photo_naming.main(["--no-teacher", "--labels", str(tmp_path / "none.json")]) \
        == 2
    assert "none.json" in capsys.readouterr().out


def test_real_photos_of_ycb_kinds_are_named_beside_the_26(capsys):
    """``bench/real_photos_ycb_kinds.json``: opencv-doc's close-ups of fruit (an apple, an
    orange, cut fruit); every box lies inside its photo and is named, and among the photos'
    names with the 26 the vocabulary is the 26 plus the two that are no YCB object."""
    import cv2

    labels = REPO / "bench" / "real_photos_ycb_kinds.json"
    doc = json.loads(labels.read_text())
    folder = REPO / "data" / "opencv-doc" / "usr/share/doc/opencv-doc/examples/data"
    if not (folder / "fruits.jpg").is_file():
        pytest.skip("opencv-doc's photos are not here (make real-photos-data fetches them)")
    for name, entry in doc["images"].items():
        h, w = cv2.imread(str(folder / name)).shape[:2]
        assert len(entry["boxes"]) == len(entry["labels"])
        for x, y, bw, bh in entry["boxes"]:
            assert 0 <= x < x + bw <= w and 0 <= y < y + bh <= h
    assert real_photo_naming.main(["--no-teacher", "--labels", str(labels)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["photos"] == {"apple.jpg": 1, "orange.jpg": 1, "fruits.jpg": 4}
    both = out["results"]["photo_names_and_26"]
    assert both["names"] == 28 and both["student"]["objects"] == 6   # + lime and kiwi
    assert sorted(both["student"]["per_name"]) == ["apple", "kiwi", "lemon", "lime", "orange"]
