"""Proposals on the real photos scikit-image and Debian's opencv-doc ship
(``bench/real_photos.py``): the shipped box network on real sensor noise, texture and light,
which no render has. opencv-doc's photos are fetched by ``make test``
(``tools/fetch_real_photos.sh``); without them their test skips."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import pytest  # noqa: E402
import real_photos  # noqa: E402
from _common import BenchError  # noqa: E402

from vl_distill_ros.perception.proposal_config import ProposalConfig  # noqa: E402
from vl_distill_ros.perception.proposals import propose_boxes  # noqa: E402


#: The desk, the blocks and the sweets: few objects, a plain surface.
DESK_PHOTOS = ("stuff.jpg", "blox.jpg", "smarties.png")
#: Piles close to the camera on busy backgrounds: packs in a plastic bag, toys on cloth.
CLUTTER_PHOTOS = ("box_in_scene.png", "rubberwhale1.png")
OPENCV_DOC_PHOTOS = DESK_PHOTOS + CLUTTER_PHOTOS


def _photos() -> dict:
    return {name: (image, truth)
            for name, image, truth, _ in real_photos.load_photos(skipped=[])}


def _score(photos: dict, names: tuple, cfg: ProposalConfig) -> dict:
    """``real_photos.score`` of the proposals on the photos ``names``, summed."""
    total = {"objects": 0, "found": 0, "boxes": 0, "false_boxes": 0}
    for name in names:
        image, truth = photos[name]
        one = real_photos.score(truth, propose_boxes(image, cfg))
        total = {k: total[k] + one[k] for k in total}
    return total


def _opencv_doc_here() -> bool:
    try:
        real_photos.photo_dir("opencv-doc")
    except BenchError:
        return False
    return True


def test_the_box_network_finds_the_coins_of_a_real_photo_and_the_cap_does_not_bind():
    """24 real coins on a grey cloth: the network finds (nearly) all of them with (nearly) no
    false box; the colour model alone finds far fewer; the old cap of 10 boxes a frame kept
    10 of them, the default cap does not bind."""
    image, truth = _photos()["coins.png"]
    cfg = ProposalConfig()
    assert cfg.max_count > len(truth)
    found = real_photos.score(truth, propose_boxes(image, cfg))
    assert found["found"] >= 22 and found["false_boxes"] <= 2, found
    capped = real_photos.score(truth, propose_boxes(image, dataclasses.replace(cfg,
                                                                               max_count=10)))
    assert capped["boxes"] == 10 and capped["found"] <= 10
    colour = real_photos.score(truth, propose_boxes(image, dataclasses.replace(
        cfg, box_net="off")))
    assert colour["found"] <= found["found"] - 8, (colour, found)


def test_a_real_close_up_takes_the_close_pass():
    """A cup on its saucer seen close: the close pass boxes the saucer whole and leaves fewer
    of its parts than one pass at the first width."""
    image, truth = _photos()["coffee.png"]
    cfg = ProposalConfig()
    on = propose_boxes(image, cfg)
    off = propose_boxes(image, dataclasses.replace(cfg, box_net_close_width=0))
    saucer = truth[0]
    assert real_photos.score([saucer], on)["found"] == 1
    assert real_photos.score(truth, on)["false_boxes"] < \
        real_photos.score(truth, off)["false_boxes"]


def test_the_box_network_finds_the_objects_of_opencv_docs_real_photos():
    """A webcam's desk, stacked wooden blocks (greyscale) and touching sweets cut by the
    frame's edge (28 objects): the defaults find most of them with few false boxes
    (measured: 24, 3 false boxes; 4 at the threshold of session 43); the colour model alone
    finds fewer (18)."""
    if not _opencv_doc_here():
        pytest.skip("opencv-doc's photos are not here (make real-photos-data fetches them)")
    photos = _photos()
    cfg = ProposalConfig()
    found = _score(photos, DESK_PHOTOS, cfg)
    colour = _score(photos, DESK_PHOTOS, dataclasses.replace(cfg, box_net="off"))["found"]
    assert found["found"] >= 21 and found["false_boxes"] <= 6, found
    assert colour <= found["found"] - 3, (colour, found)


def test_the_default_threshold_drops_real_false_boxes_and_keeps_the_objects():
    """The box network's threshold (0.5 with session 52's blended network) against the 0.4
    of sessions 44-51 on every real photo here: the blend scores boxes higher than the
    network before it, and its false boxes on real photos (pieces of the saucer, the cloth,
    pairs of packs) score 0.4-0.5 more often than its real objects. Measured on all seven:
    54 found, 7 false boxes against 54 and 14 (0.3: 56 and 23); on scikit-image's two alone
    25, 1 against 25, 1. (Session 44's network: 0.4 against 0.3, 54 and 9 against 53 and
    16.)"""
    photos = _photos()
    names = tuple(photos)
    now = _score(photos, names, ProposalConfig())
    before = _score(photos, names, ProposalConfig(box_net_threshold=0.4))
    assert ProposalConfig().box_net_threshold == 0.5
    assert now["found"] >= before["found"] - 1, (now, before)
    assert now["false_boxes"] <= before["false_boxes"] - 2, (now, before)
    if len(names) == 2 + len(OPENCV_DOC_PHOTOS):
        assert now["false_boxes"] <= 0.7 * before["false_boxes"], (now, before)


def test_long_thin_colour_boxes_beside_the_network_are_left_out_of_real_photos():
    """``apart_max_aspect`` (4, session 46): the colour model's long thin boxes beside the
    network's, away from the frame's border, were false on every real photo (a strip of
    the saucer's rim, of a block's shadow) and lose no object. Measured on all seven: 54
    found at 7 false boxes against 54 at 8 (with sessions 44-51's network 54 at 7 against
    54 at 9); on scikit-image's two 25 at 1 either way (before session 52: 25 at 1 against
    25 at 2)."""
    photos = _photos()
    names = tuple(photos)
    now = _score(photos, names, ProposalConfig())
    off = _score(photos, names, ProposalConfig(apart_max_aspect=0))
    assert now["found"] == off["found"], (now, off)
    assert now["false_boxes"] <= off["false_boxes"], (now, off)
    if len(names) == 2 + len(OPENCV_DOC_PHOTOS):
        assert now["false_boxes"] <= off["false_boxes"] - 1, (now, off)
        assert now["false_boxes"] <= len(names), now


def test_real_clutter_close_to_the_camera_stays_hard():
    """Packs piled in a bag and toys on striped and knitted cloth (12 objects, most touching
    or cut by the edge): the real photos furthest from the renders. A guard at the measured
    level (5 found, 4 false boxes with the defaults; the close pass off 7 and 5; at session
    43's threshold 0.3: 4 and 8, 7 and 11): a change that loses more of them, or boxes more
    of the cloth, fails here."""
    if not _opencv_doc_here():
        pytest.skip("opencv-doc's photos are not here (make real-photos-data fetches them)")
    photos = _photos()
    totals = {"default": _score(photos, CLUTTER_PHOTOS, ProposalConfig()),
              "close_pass_off": _score(photos, CLUTTER_PHOTOS,
                                       ProposalConfig(box_net_close_width=0))}
    assert totals["default"]["objects"] == 12
    assert totals["default"]["found"] >= 4 and totals["default"]["false_boxes"] <= 7, totals
    assert totals["close_pass_off"]["found"] >= 6, totals


def test_photos_of_a_package_not_here_are_left_out_and_named(tmp_path):
    labels = json.loads(real_photos.LABELS.read_text())
    labels["images"] = {"coins.png": labels["images"]["coins.png"],
                        "x.png": {"package": "no-such-package", "labels": ["x"],
                                  "boxes": [[0, 0, 4, 4]]}}
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(labels))
    skipped: list[str] = []
    assert [p[0] for p in real_photos.load_photos(path, skipped)] == ["coins.png"]
    assert len(skipped) == 1 and "no-such-package" in skipped[0]
    with pytest.raises(BenchError, match="no-such-package"):
        real_photos.load_photos(path)


def test_the_bench_prints_one_json_object_and_draws_the_boxes(tmp_path, capsys):
    assert real_photos.main(["--out", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["results"]) == {"default", "close_pass_off", "colour_model_alone"}
    here = _opencv_doc_here()
    assert out["results"]["default"]["all"]["objects"] == 27 + (40 if here else 0)
    assert bool(out["skipped"]) is not here
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["coffee.png", "coins.png"] + (list(OPENCV_DOC_PHOTOS) if here else []))
    assert real_photos.main(["-p", "no_such_field=1"]) == 2
    assert "bad --param" in json.loads(capsys.readouterr().out)["error"]
    assert real_photos.main(["--degrade", "blur:3"]) == 2
    assert "bad --degrade" in json.loads(capsys.readouterr().out)["error"]


def test_camera_effects_reach_the_photos(capsys):
    """``--degrade``: the photos go through the effects before the proposer (a strong blur
    changes what is found), seeded (the same run twice gives the same figures)."""
    runs = []
    for chain in ("", "defocus:6", "defocus:6"):
        assert real_photos.main(["--degrade", chain] if chain else []) == 0
        runs.append(json.loads(capsys.readouterr().out)["results"]["default"]["all"])
    assert runs[1] == runs[2] and runs[1] != runs[0]


def test_the_fetch_script_keeps_photos_it_has_and_says_when_it_cannot_fetch(tmp_path):
    """``tools/fetch_real_photos.sh``: photos already in DEST are kept (no download); without
    apt-get it fails with a message (``make real-photos-data`` then warns)."""
    import subprocess

    import re

    script = real_photos.REPO / "tools" / "fetch_real_photos.sh"
    listed = re.search(r"^FILES=\((.*)\)$", script.read_text(), re.M).group(1).split()
    labels = json.loads(real_photos.LABELS.read_text())["images"]
    fruit = json.loads((real_photos.REPO / "bench" / "real_photos_ycb_kinds.json").read_text())
    assert fruit["package"] == "opencv-doc" and "package" not in str(fruit["images"])
    assert listed == [n for n, e in labels.items() if e.get("package") == "opencv-doc"] \
        + list(fruit["images"]) == list(OPENCV_DOC_PHOTOS) + list(fruit["images"])
    have = tmp_path / "have"
    folder = have / real_photos.OPENCV_DOC_DATA
    folder.mkdir(parents=True)
    for name in listed:
        (folder / name).write_bytes(b"x")
    no_tools = tmp_path / "bin"
    no_tools.mkdir()
    env = {"PATH": str(no_tools)}
    done = subprocess.run(["/bin/bash", str(script), str(have)], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    if (Path("/") / real_photos.OPENCV_DOC_DATA).is_dir():
        pytest.skip("opencv-doc is installed here: the script never needs apt-get")
    (folder / OPENCV_DOC_PHOTOS[0]).unlink()
    failed = subprocess.run(["/bin/bash", str(script), str(have)], env=env, capture_output=True,
                            text=True, timeout=60)
    assert failed.returncode == 1 and "no apt-get" in failed.stderr
