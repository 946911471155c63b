"""Crops of cut-out photos (``vl-distill render-cutouts``, sim/photo_cutouts.py), the names
their manifest gives them, and the training set's unlabelled and named folders
(``data.unlabelled_splits``, ``data.named_splits``)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from vl_distill_ros.cli import main as cli_main
from vl_distill_ros.model.vocabulary import Vocabulary
from vl_distill_ros.sim.photo_cutouts import (CutoutError, CutoutSpec, find_cutouts,
                                              load_cutout_spec, name_of, read_cutout,
                                              render_cutouts)
from vl_distill_ros.training.image_folder import (DatasetError, load_named_folder,
                                                  load_unlabelled_folder)


def _stamp(path: Path, colour: tuple[int, int, int], text: str | None = None,
           alpha: bool = True, radius: int = 30) -> None:
    """A disc of ``colour`` (RGB) on a transparent 100x80 canvas, with its description."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.zeros((80, 100, 4), np.uint8)
    cv2.circle(img, (50, 40), radius, (*colour[::-1], 255), -1)
    cv2.imwrite(str(path), img if alpha else img[..., :3])
    if text is not None:
        path.with_suffix(".txt").write_text(f"{text}\nfr.utf8=autre chose\n")


@pytest.fixture()
def stamps(tmp_path: Path) -> Path:
    root = tmp_path / "stamps"
    _stamp(root / "food" / "apple.png", (220, 20, 20), "A red apple.")
    _stamp(root / "animals" / "frog.png", (20, 200, 30), "A green frog.")
    _stamp(root / "food" / "cartoon" / "pie.png", (200, 200, 0), "A pie.")
    _stamp(root / "food" / "fruit_lemon.png", (250, 240, 20), "Some fruit.")
    _stamp(root / "food" / "yellow.png", (250, 240, 20), "A lemon, cut in half.")
    _stamp(root / "food" / "lemonade.png", (250, 240, 20), "A glass of lemonade.")
    _stamp(root / "food" / "flat.png", (0, 0, 255), "A blue photo without alpha.", alpha=False)
    _stamp(root / "food" / "dot.png", (0, 0, 255), "A tiny dot.", radius=4)
    return root


def _spec(stamps: Path, out: Path, **kw) -> CutoutSpec:
    return CutoutSpec(source_dir=str(stamps), out_dir=str(out), image_size=64,
                      exclude_dirs=["cartoon"], exclude_words=["lemon"], **kw)


def test_exclusions_by_folder_and_whole_word_in_path_or_description(stamps, tmp_path):
    names = [p.relative_to(stamps).as_posix() for p in find_cutouts(_spec(stamps, tmp_path))]
    # cartoon/ is out; "lemon" as a word in the path or the description is out, but not
    # inside another word ("lemonade")
    assert names == ["animals/frog.png", "food/apple.png", "food/dot.png", "food/flat.png",
                     "food/lemonade.png"]


def test_cutouts_without_alpha_or_too_small_are_not_used(stamps):
    assert read_cutout(stamps / "food" / "flat.png") is None
    assert read_cutout(stamps / "food" / "dot.png") is None
    cut = read_cutout(stamps / "food" / "apple.png")
    # trimmed to the opaque disc: 61 px across, red
    assert cut is not None and cut.alpha.shape == (61, 61)
    assert cut.rgb[30, 30].tolist() == pytest.approx([220 / 255, 20 / 255, 20 / 255], abs=1e-3)


def test_broken_and_odd_files_are_skipped_not_fatal(stamps, tmp_path):
    """A corrupt PNG, a 16-bit one and a greyscale one among the cut-outs: the corrupt and
    the alpha-less are skipped, the 16-bit one is read as 8-bit; rendering goes on."""
    (stamps / "food" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    deep = np.zeros((80, 100, 4), np.uint16)
    cv2.circle(deep, (50, 40), 30, (0, 0, 65535, 65535), -1)
    cv2.imwrite(str(stamps / "food" / "deep.png"), deep)
    cv2.imwrite(str(stamps / "food" / "grey.png"), np.full((80, 100), 128, np.uint8))
    assert read_cutout(stamps / "food" / "broken.png") is None
    assert read_cutout(stamps / "food" / "grey.png") is None
    cut = read_cutout(stamps / "food" / "deep.png")
    assert cut is not None and cut.rgb[30, 30].tolist() == pytest.approx([1.0, 0.0, 0.0])
    manifest = render_cutouts(_spec(stamps, tmp_path / "out", views=1), progress=False)
    assert manifest["cutouts"] == 4   # apple, frog, lemonade and the 16-bit one


def test_render_writes_every_view_with_the_thing_in_the_middle(stamps, tmp_path):
    out = tmp_path / "crops"
    manifest = render_cutouts(_spec(stamps, out, views=4, clutter_prob=0.0), progress=False)
    assert manifest["cutouts"] == 3 and manifest["crops"] == 12
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == sorted(f"{d}_{v}.png" for d in ("animals/frog", "food/apple",
                                                    "food/lemonade") for v in range(4))
    for v in range(4):
        crop = cv2.imread(str(out / "food" / f"apple_{v}.png"))[..., ::-1]
        assert crop.shape == (64, 64, 3)
        # the disc covers the crop's centre (offset at most 12% of the side)
        assert crop[28:36, 28:36].reshape(-1, 3).mean(0) == pytest.approx([220, 20, 20], abs=3)
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["crops"] == 12 and on_disk["spec"]["exclude_words"] == ["lemon"]


def test_render_is_deterministic_and_clutter_puts_another_thing_behind(stamps, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    ma = render_cutouts(_spec(stamps, a, views=3, clutter_prob=1.0), progress=False)
    render_cutouts(_spec(stamps, b, views=3, clutter_prob=1.0), progress=False)
    for p in a.rglob("*.png"):
        assert p.read_bytes() == (b / p.relative_to(a)).read_bytes()
    assert all(m["domain"] == "clutter" and m["behind"] != Path(m["file"]).name.rsplit("_", 1)[0]
               for m in ma["images"])
    # a second render replaces the crops of the first (no stale crop survives) ...
    render_cutouts(_spec(stamps, a, views=1, clutter_prob=1.0), progress=False)
    assert len(list(a.rglob("*.png"))) == 3 and not (a / "food" / "apple_2.png").exists()
    # ... but a folder holding other files and no manifest of ours is not emptied
    other = tmp_path / "photos"
    (other / "holiday").mkdir(parents=True)
    (other / "holiday" / "beach.png").write_bytes(b"mine")
    with pytest.raises(CutoutError, match="refusing"):
        render_cutouts(_spec(stamps, other, views=1), progress=False)
    assert (other / "holiday" / "beach.png").read_bytes() == b"mine"


def test_spec_bounds_and_unknown_keys_are_errors(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("views: 3\nimage_sise: 64\n")
    with pytest.raises(CutoutError, match="unknown keys.*image_sise"):
        load_cutout_spec(cfg)
    for bad, match in (("views: 0", "views"), ("image_size: 100000", "image_size"),
                       ("scale: [0.9, 0.5]", "scale"), ("seed: -1", "seed"),
                       ("views: three", "views: expected an integer"),
                       ("exclude_words: lemon", "exclude_words: expected a list")):
        cfg.write_text(bad + "\n")
        with pytest.raises(CutoutError, match=match):
            load_cutout_spec(cfg)
    assert load_cutout_spec("config/render_cutouts.yaml").exclude_dirs == ["cartoon", "symbols"]


def test_command_renders_and_reports_a_missing_source(stamps, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["render-cutouts", "--source", str(stamps), "--out", str(out),
                     "--views", "2", "--no-progress"]) == 0
    assert "wrote 6 crops of 3 cut-outs" in capsys.readouterr().out
    assert cli_main(["render-cutouts", "--source", str(tmp_path / "nowhere"), "--out",
                     str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cut-out source folder not found" in err and "fetch_cutouts.sh" in err


def test_unlabelled_folder_reads_every_image_below_it_with_label_minus_one(stamps, tmp_path):
    out = tmp_path / "crops"
    render_cutouts(_spec(stamps, out, views=2), progress=False)
    vocab = Vocabulary.from_names(["red ball"])
    data = load_unlabelled_folder(out, vocab, size=32)
    assert data.images.shape == (6, 32, 32, 3) and data.labels.tolist() == [-1] * 6
    with pytest.raises(DatasetError, match="not found"):
        load_unlabelled_folder(tmp_path / "nowhere", vocab)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        load_unlabelled_folder(tmp_path / "empty", vocab)


@pytest.mark.parametrize("stem, text, name", [
    ("apple_fuji", "A \u201cFuji\u201d apple.", "fuji apple"),
    ("plyers", "A pair of pliers.", "pliers"),
    ("tomato", "A ripe, red tomato!", "ripe red tomato"),
    ("adeenia", "Adenium (Desert Rose)", "adenium"),
    ("0_sun", "The Sun.", "sun"),
    ("voyager2", "The Voyager-2 deep-space probe.", "voyager"),   # not plain words
    ("fireman200b", "A fireman of the city of Springfield fire brigade.", "fireman"),
    ("7_uranus", "", "uranus"),                                          # no description
    ("bradley_mirror", None, "apc"),   # a mirrored stamp reads the one it mirrors
    ("mystery_box", "Unknown.", "mystery box"),   # never the reserved name
    ("unknown", "Unknown!", "thing"),
    ("caf\u00e9_t\u00e4ble\u0007", "", "caf t ble"),   # only plain characters
    ("x" * 80, "", "x" * 64),
])
def test_a_stamp_is_named_by_its_description_or_else_its_file_name(tmp_path, stem, text, name):
    _stamp(tmp_path / "bradley.png", (1, 2, 3), "An APC.")
    _stamp(tmp_path / f"{stem}.png", (1, 2, 3), text)
    assert name_of(tmp_path / f"{stem}.png") == name


def test_the_manifest_names_each_crop_and_a_named_folder_reads_them(stamps, tmp_path):
    out = tmp_path / "crops"
    render_cutouts(_spec(stamps, out, views=2), progress=False)
    vocab = Vocabulary.from_names(["red ball"])
    data, names = load_named_folder(out, vocab, size=32)
    assert data.images.shape == (6, 32, 32, 3) and data.labels.tolist() == [-1] * 6
    assert names == ["green frog"] * 2 + ["red apple"] * 2 + ["glass of lemonade"] * 2
    assert [p.name for p in data.paths[:2]] == ["frog_0.png", "frog_1.png"]


@pytest.mark.parametrize("manifest, error", [
    (None, "manifest.json not found"),
    ("{not json", "not a manifest"),
    ({"images": []}, "not a manifest"),
    ({"images": [{"file": "a/x.png"}]}, "not a manifest"),
    ({"images": [{"file": "a/x.png", "name": " "}]}, "no usable name"),
    ({"images": [{"file": "a/x.png", "name": "x" * 65}]}, "no usable name"),
    ({"images": [{"file": "a/x.png", "name": "unknown"}]}, "reserved"),
    ({"images": [{"file": "a/x.png", "name": "bell\u0007"}]}, "control characters"),
    ({"images": [{"file": "../outside.png", "name": "cup"}]}, "not an image file inside"),
    ({"images": [{"file": "a/x.txt", "name": "cup"}]}, "not an image file inside"),
    ({"images": [{"file": "a/gone.png", "name": "cup"}]}, "cannot read image"),
])
def test_a_bad_named_folder_is_a_clear_error(tmp_path, manifest, error):
    root = tmp_path / "named"
    _stamp(root / "a" / "x.png", (9, 9, 9))
    (root / "a" / "x.txt").write_text("x")
    _stamp(tmp_path / "outside.png", (9, 9, 9))
    if manifest is not None:
        (root / "manifest.json").write_text(manifest if isinstance(manifest, str)
                                            else json.dumps(manifest))
    with pytest.raises(DatasetError, match=error):
        load_named_folder(root, Vocabulary.from_names(["cup"]))


def test_a_named_folder_s_spellings_of_one_name_are_one_name(tmp_path):
    """A manifest naming one thing in two spellings the vocabulary reads as one (a
    typographic apostrophe; NFC and NFD, as macOS writes file names) stopped training with
    'duplicate label' once names were compared Unicode-normalised: they are one name."""
    import unicodedata

    names = ["Rubik's cube", "Rubik\u2019s cube", "caf\u00e9 mug",
             unicodedata.normalize("NFD", "caf\u00e9 mug")]
    entries = []
    for i, name in enumerate(names):
        _stamp(tmp_path / f"{i}.png", (40 * i, 40, 40))
        entries.append({"file": f"{i}.png", "name": name})
    (tmp_path / "manifest.json").write_text(json.dumps({"images": entries}))
    data, got = load_named_folder(tmp_path, Vocabulary.from_names(["banana"]), size=32)
    assert len(data.paths) == 4 and got == names
    # a name counts its characters composed, as the vocabulary does (22 letters, 66 code
    # points in NFD, were refused as over 64)
    long_nfd = unicodedata.normalize("NFD", "\u1ec7" * 22)
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"images": [{"file": "0.png", "name": long_nfd}]}))
    assert load_named_folder(tmp_path, Vocabulary.from_names(["banana"]), size=32)[1] == [
        long_nfd]


def test_the_fetch_script_takes_only_the_stamps_images_and_texts(tmp_path):
    """``tools/fetch_cutouts.sh`` against a stand-in ``apt-get download`` that hands out a
    small package of the real one's layout: the stamps' PNG and TXT files (and the copyright)
    come out, the sounds do not; a second run keeps them without downloading; without
    apt-get it fails with a message."""
    import shutil
    import subprocess

    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed here (not a Debian system)")
    script = Path(__file__).resolve().parent.parent / "tools" / "fetch_cutouts.sh"
    pkg = tmp_path / "pkg"
    stamps = pkg / "usr/share/tuxpaint/stamps"
    for rel in ("food/fruit/apple.png", "animals/frog.png"):
        _stamp(stamps / rel, (200, 30, 30), "A thing.")
        (stamps / rel).with_name(Path(rel).stem + "_desc_fr.ogg").write_bytes(b"OggS")
    doc = pkg / "usr/share/doc/tuxpaint-stamps-default"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("GPL-2\n")
    (pkg / "DEBIAN").mkdir()
    (pkg / "DEBIAN/control").write_text(
        "Package: tuxpaint-stamps-default\nVersion: 1\nArchitecture: all\n"
        "Maintainer: test <t@example.org>\nDescription: stand-in\n")
    deb = tmp_path / "tuxpaint-stamps-default_1_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(pkg), str(deb)],
                   check=True, capture_output=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apt-get"
    fake.write_text(f"#!/bin/sh\n[ \"$1\" = download ] && cp {deb} . && echo 1 >> {tmp_path}/n\n")
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    dest = tmp_path / "dest"
    done = subprocess.run(["/bin/bash", str(script), str(dest)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "2 stamps" in done.stdout
    got = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert got == ["usr/share/doc/tuxpaint-stamps-default/copyright",
                   "usr/share/tuxpaint/stamps/animals/frog.png",
                   "usr/share/tuxpaint/stamps/animals/frog.txt",
                   "usr/share/tuxpaint/stamps/food/fruit/apple.png",
                   "usr/share/tuxpaint/stamps/food/fruit/apple.txt"]
    again = subprocess.run(["/bin/bash", str(script), str(dest)], env=env, capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 0 and (tmp_path / "n").read_text() == "1\n"
    no_tools = subprocess.run(["/bin/bash", str(script), str(tmp_path / "other")],
                              env={"PATH": str(tmp_path / "empty")}, capture_output=True,
                              text=True, timeout=60)
    assert no_tools.returncode == 1 and "no apt-get" in no_tools.stderr


def test_names_the_teacher_cannot_tell_apart_are_folded_into_one_label(tmp_path):
    """``merge_similar_names``: a named folder's name whose text embedding is at least
    ``max_similarity`` from an earlier label's is folded into the most similar one, an ID
    label included; the labels and the text rows are compacted; 1.0 changes nothing."""
    import torch

    from vl_distill_ros.training.data import TrainingSet, merge_similar_names
    from vl_distill_ros.training.image_folder import LabeledImages

    names = ["apple", "bowl", "red apple", "candle", "lit candle", "frog"]
    vocab = Vocabulary.from_names(names)
    e = {"apple": [1, 0, 0, 0], "bowl": [0, 1, 0, 0], "red apple": [0.95, 0.1, 0, 0.05],
         "candle": [0, 0, 1, 0], "lit candle": [0, 0.05, 0.97, 0.1], "frog": [0, 0, 0, 1]}
    text = torch.tensor([e[n] for n in names], dtype=torch.float32)
    labels = np.array([0, 1, -1, 2, 3, 4, 5, 2], np.int64)
    data = LabeledImages(images=np.zeros((8, 4, 4, 3), np.uint8), labels=labels,
                         paths=[tmp_path / f"{i}.png" for i in range(8)], vocabulary=vocab)
    ts = TrainingSet(data=data, cls_vocab=vocab, n_labelled_id=2, n_aux=6, first_named_label=2)
    same, same_text = merge_similar_names(ts, text, 1.0)
    assert same is ts and same_text is text
    merged, merged_text = merge_similar_names(ts, text, 0.9)
    # red apple -> apple (an ID label), lit candle -> candle (an earlier named one)
    assert merged.cls_vocab.names == ["apple", "bowl", "candle", "frog"]
    assert merged.data.labels.tolist() == [0, 1, -1, 0, 2, 2, 3, 0]
    assert torch.equal(merged_text, text[[0, 1, 3, 5]])
    assert merged.first_named_label == 2 and merged.data.paths == data.paths
    # the ID labels are never folded into anything, however close
    ts_id = TrainingSet(data=data, cls_vocab=vocab, n_labelled_id=2, n_aux=6,
                        first_named_label=3)
    assert merge_similar_names(ts_id, text, 0.5)[0].cls_vocab.names[:3] == names[:3]


@pytest.mark.parametrize("value, ok", [(0.8, True), (1.0, True), (0.0, False), (1.5, False),
                                       (-0.2, False)])
def test_the_merge_similarity_is_bounded(tmp_path, value, ok):
    from vl_distill_ros.config import ConfigError, load_train_config

    path = tmp_path / "train.yaml"
    path.write_text(f"data:\n  named_splits: [data/cutouts]\n  named_merge_similarity: {value}\n")
    if ok:
        assert load_train_config(path).data.named_merge_similarity == value
    else:
        with pytest.raises(ConfigError, match="named_merge_similarity"):
            load_train_config(path)


def test_an_interrupted_run_leaves_the_earlier_crops_as_they_were(stamps, tmp_path,
                                                                  monkeypatch):
    """render-cutouts deleted the earlier crops first and wrote in place: an interrupted
    run left the old manifest naming missing crops, and ~900 stray crops that training
    (which reads every image below the folder) took. It now writes a sibling folder that
    replaces the output only when complete."""
    from vl_distill_ros.sim import photo_cutouts

    out = tmp_path / "crops"
    render_cutouts(_spec(stamps, out, views=2), progress=False)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    written = []

    def failing(path, image):
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(path)
        return cv2.imwrite(str(path), image)
    monkeypatch.setattr(photo_cutouts, "write_image_file", failing)
    with pytest.raises(KeyboardInterrupt):
        render_cutouts(_spec(stamps, out, views=3, seed=9), progress=False)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert not list(tmp_path.glob(".crops.partial-*"))


def test_render_and_render_cutouts_do_not_replace_each_others_folders(stamps, tmp_path):
    """Each took any manifest.json with an image list for its own and replaced the folder:
    render-cutouts deleted a rendered data set's crops, render deleted a folder holding a
    web project's manifest.json."""
    from vl_distill_ros.sim.crop_dataset import _check_out_dir
    from vl_distill_ros.sim.meshes import RenderError

    crops = tmp_path / "crops"
    render_cutouts(_spec(stamps, crops), progress=False)
    with pytest.raises(RenderError, match="not a dataset `vl-distill render` wrote"):
        _check_out_dir(crops)
    web = tmp_path / "web"
    web.mkdir()
    (web / "manifest.json").write_text('{"name": "app", "images": [{"file": "a.png"}]}')
    (web / "index.html").write_text("<html/>")
    for folder in (web,):
        with pytest.raises(RenderError, match="refusing to replace it"):
            _check_out_dir(folder)
        with pytest.raises(CutoutError, match="not an earlier output of render-cutouts"):
            render_cutouts(_spec(stamps, folder), progress=False)
    assert (web / "index.html").read_text() == "<html/>"


def test_source_files_that_block_crash_or_declare_huge_images_are_skipped(stamps, tmp_path,
                                                                          monkeypatch):
    """A FIFO named *.png blocked render-cutouts for ever (cv2.imread); a 389 kB PNG whose
    header declared 10000 x 10000 was decoded whole (830 MB); a cut-out whose file name is
    not UTF-8 crashed OpenCV (SIGSEGV). Files are read as bounded regular files, their
    declared size checked before decoding, and decoded from memory."""
    import os

    from vl_distill_ros.sim import photo_cutouts

    os.mkfifo(stamps / "food" / "pipe.png")
    assert read_cutout(stamps / "food" / "pipe.png") is None
    odd = stamps / "food" / os.fsdecode(b"caf\xe9.png")
    (stamps / "food" / "apple.png").rename(odd)
    assert read_cutout(odd) is not None
    manifest = render_cutouts(_spec(stamps, tmp_path / "out"), progress=False)
    assert any(e["file"].startswith("food/caf") for e in manifest["images"])
    monkeypatch.setattr(photo_cutouts, "MAX_SOURCE_PIXELS", 100 * 80 - 1)
    assert read_cutout(odd) is None  # 100 x 80 declared: over the (lowered) limit
