"""bench/real_photo_naming.py: real photos' objects named among names alone."""
import json
import sys
from pathlib import Path

import numpy as np
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
        # named right and kept by the open-set rule: at most the right ones, and the right
        # ones it drops are among those it calls unknown
        assert 0 <= student["right"] - student["right_known"] <= student["unknown"]
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


def _stamps_or_skip() -> Path:
    import real_photos
    from _common import BenchError

    try:
        return real_photos.photo_dir("tuxpaint-stamps-default")
    except BenchError as exc:
        pytest.skip(str(exc))


def test_cutout_kinds_are_never_training_crops():
    """Every stamp of ``bench/real_photos_cutout_kinds.json`` is one that
    ``config/render_cutouts.yaml`` leaves out (an unseen kind's word), so the student never
    saw a crop of it; and the stamps the config keeps are not in the file."""
    from vl_distill_ros.sim.photo_cutouts import find_cutouts, load_cutout_spec

    stamps = _stamps_or_skip()
    doc = json.loads((REPO / "bench" / "real_photos_cutout_kinds.json").read_text())
    spec = load_cutout_spec(REPO / "config" / "render_cutouts.yaml")
    spec.source_dir = str(stamps)
    kept = {p.relative_to(stamps).as_posix() for p in find_cutouts(spec)}
    listed = set(doc["images"])
    assert all((stamps / name).is_file() for name in listed)
    assert not listed & kept
    assert len(kept) > 300        # the config still keeps the other stamps


def test_cutout_kinds_are_named_on_two_backgrounds(capsys):
    """The cut-out photos load as one photo per background, each with the alpha's box, and
    the bench names all of them beside the 26 names."""
    import real_photos

    _stamps_or_skip()
    labels = REPO / "bench" / "real_photos_cutout_kinds.json"
    photos = real_photos.load_photos(labels)
    assert len(photos) == 18
    for name, image, boxes, names in photos:
        (x, y, w, h), = boxes
        assert image.shape[0] == image.shape[1] and image.shape[2] == 3
        assert 0 < x and 0 < y and x + w < image.shape[1] and y + h < image.shape[0]
        grey = int(name.rsplit(" ", 1)[1])
        assert (image[0, 0] == grey).all() and (image[-1, -1] == grey).all()
        assert not (image[y + h // 2, x:x + w] == grey).all()   # the object is drawn
    assert real_photo_naming.main(["--no-teacher", "--labels", str(labels)]) == 0
    out = json.loads(capsys.readouterr().out)
    both = out["results"]["photo_names_and_26"]
    assert both["names"] == 26 and both["student"]["objects"] == 18   # all five are YCB names
    assert sorted(both["student"]["per_name"]) == ["lemon", "mini soccer ball", "orange",
                                                   "pear", "strawberry"]


def test_cutout_that_is_not_rgba_is_a_clear_error(tmp_path):
    import cv2
    import real_photos
    from _common import BenchError

    cv2.imwrite(str(tmp_path / "flat.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(BenchError, match="RGBA"):
        real_photos._cutout_photos(tmp_path / "flat.png", "flat.png",
                                   {"labels": ["orange"], "cutout": {"backgrounds": [128]}})
    rgba = np.zeros((8, 8, 4), np.uint8)
    cv2.imwrite(str(tmp_path / "empty.png"), rgba)
    with pytest.raises(BenchError, match="alpha is empty"):
        real_photos._cutout_photos(tmp_path / "empty.png", "empty.png",
                                   {"labels": ["orange"], "cutout": {"backgrounds": [128]}})


def test_whole_frame_entries_box_the_whole_photo(tmp_path):
    """A ``whole_frame`` entry's box is its whole photo (what ``crop_source: full_frame``
    classifies); one with boxes of its own, or two labels, is a clear error."""
    import real_photos
    from _common import BenchError

    def labels(entry: dict) -> Path:
        path = tmp_path / "labels.json"
        path.write_text(json.dumps({"package": "scikit-image", "images": {"coins.png": entry}}))
        return path

    (name, image, boxes, names), = real_photos.load_photos(
        labels({"labels": ["coin"], "whole_frame": True}))
    assert boxes == [(0, 0, image.shape[1], image.shape[0])] and names == ["coin"]
    for bad in ({"labels": ["coin"], "whole_frame": True, "boxes": [[0, 0, 5, 5]]},
                {"labels": ["coin", "sweet"], "whole_frame": True}):
        with pytest.raises(BenchError, match="one label and no boxes"):
            real_photos.load_photos(labels(bad))


def test_gcompris_photos_are_named_whole_frame(capsys):
    """``bench/real_photos_gcompris.json``: GCompris's photos of tools and household things
    (``tools/fetch_gcompris_photos.sh``), each named as a whole frame beside the 26 names."""
    import real_photos
    from _common import BenchError

    try:
        real_photos.photo_dir("gcompris-qt-data")
    except BenchError as exc:
        pytest.skip(str(exc))
    labels = REPO / "bench" / "real_photos_gcompris.json"
    photos = real_photos.load_photos(labels)
    assert len(photos) == 54
    for _, image, boxes, _ in photos:
        assert boxes == [(0, 0, image.shape[1], image.shape[0])]
    assert real_photo_naming.main(["--no-teacher", "--labels", str(labels)]) == 0
    out = json.loads(capsys.readouterr().out)
    alone, both = out["results"]["photo_names"], out["results"]["photo_names_and_26"]
    assert alone["names"] == 26 and both["names"] == 26 + 23   # hammer, scissors, spoon shared
    assert both["student"]["objects"] == 54
    assert both["student"]["per_name"]["hammer"].endswith("/9")
