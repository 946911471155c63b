"""Proposals on the real photos scikit-image ships (``bench/real_photos.py``): the shipped box
network on real sensor noise, texture and light, which no render has."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import real_photos  # noqa: E402

from vl_distill_ros.perception.proposal_config import ProposalConfig  # noqa: E402
from vl_distill_ros.perception.proposals import propose_boxes  # noqa: E402


def _photos() -> dict:
    return {name: (image, truth) for name, image, truth, _ in real_photos.load_photos()}


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


def test_the_bench_prints_one_json_object_and_draws_the_boxes(tmp_path, capsys):
    assert real_photos.main(["--out", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["results"]) == {"default", "close_pass_off", "colour_model_alone"}
    assert out["results"]["default"]["all"]["objects"] == 27
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coffee.png", "coins.png"]
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
