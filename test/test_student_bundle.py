"""Student networks, preprocessing, augmentation and the deployable bundle format."""
import json
import re
import zipfile

import numpy as np
import pytest
import torch

from helpers import flip_byte, rewrite_zip
from vl_distill_ros.model.bundle import BundleError, load_bundle, read_manifest, save_bundle
from vl_distill_ros.config import StudentConfig
from vl_distill_ros.training.augment import CropAugment
from vl_distill_ros.perception.preprocess import ImageInputError, preprocess_crops
from vl_distill_ros.model.student import StudentError, build_student
from vl_distill_ros.model.vocabulary import Vocabulary

SMALL = StudentConfig(backbone="mobilenet_v3_small", pretrained="none", image_size=64)


def test_student_outputs_unit_vectors_of_teacher_dim():
    s = build_student(SMALL, embed_dim=24).eval()
    out = s(torch.randn(3, 3, 64, 64))
    assert out.shape == (3, 24)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)


def test_efficientnet_student_loads_packaged_imagenet_weights():
    cfg = StudentConfig(backbone="efficientnet_lite0", pretrained="imagenet", image_size=64)
    a = build_student(cfg, 8)
    b = build_student(cfg, 8)
    c = build_student(StudentConfig(backbone="efficientnet_lite0", pretrained="none",
                                    image_size=64), 8)
    wa = a.backbone.inner._conv_stem.weight
    assert torch.equal(wa, b.backbone.inner._conv_stem.weight)  # same packaged weights
    assert not torch.equal(wa, c.backbone.inner._conv_stem.weight)
    assert a.input_spec.mean == (0.5, 0.5, 0.5)


def test_freeze_stages_freezes_and_keeps_bn_in_eval():
    cfg = StudentConfig(backbone="efficientnet_lite0", pretrained="none", image_size=64,
                        freeze_stages=2)
    s = build_student(cfg, 8).train()
    inner = s.backbone.inner
    assert not inner._conv_stem.weight.requires_grad
    assert not inner._bn0.training
    assert inner._blocks[-1]._project_conv.weight.requires_grad
    assert inner._blocks[-1]._bn2.training


@pytest.mark.parametrize("cfg,msg", [
    (StudentConfig(backbone="vgg"), "unknown student backbone"),
    (StudentConfig(backbone="resnet18", pretrained="imagenet"), "no packaged ImageNet"),
    (StudentConfig(image_size=100, pretrained="none"), "multiple of 32"),
    (StudentConfig(backbone="resnet18", pretrained="/nonexistent.pt"), "not found"),
])
def test_bad_student_configs(cfg, msg):
    with pytest.raises(StudentError, match=msg):
        build_student(cfg, 8)


def test_preprocess_matches_spec_and_rejects_bad_crops():
    s = build_student(SMALL, 8)
    crop = np.full((40, 50, 3), 255, np.uint8)
    x = preprocess_crops([crop, crop[:10]], s.input_spec)
    assert x.shape == (2, 3, 64, 64) and x.dtype == np.float32
    expected = (1.0 - np.array(s.input_spec.mean)) / np.array(s.input_spec.std)
    assert np.allclose(x[0, :, 5, 5], expected, atol=1e-5)
    with pytest.raises(ImageInputError, match="empty"):
        preprocess_crops([np.zeros((0, 5, 3), np.uint8)], s.input_spec)
    with pytest.raises(ImageInputError, match="RGB"):
        preprocess_crops([np.zeros((5, 5), np.uint8)], s.input_spec)


def test_augment_is_deterministic_and_changes_images():
    spec = build_student(SMALL, 8).input_spec
    imgs = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (4, 80, 80, 3), np.uint8))
    aug = CropAugment(spec)
    a = aug(imgs, torch.Generator().manual_seed(1))
    b = aug(imgs, torch.Generator().manual_seed(1))
    c = aug(imgs, torch.Generator().manual_seed(2))
    assert a.shape == (4, 3, 64, 64)
    assert torch.equal(a, b) and not torch.equal(a, c)


# -- bundle ------------------------------------------------------------------------------
VOCAB = Vocabulary.from_names(["banana", "power drill", "mug"], ["A yellow fruit.", "", ""])


def _bundle(tmp_path, name="b.vdb"):
    torch.manual_seed(0)
    s = build_student(SMALL, 16)
    emb = torch.nn.functional.normalize(torch.randn(3, 16), dim=1)
    path = save_bundle(tmp_path / name, s, emb, VOCAB, "test-teacher:1", {"backend": "x"},
                       ["a photo of a {name}."], enrich=True, metrics={"acc": 0.5})
    return path, s, emb


def test_bundle_round_trip(tmp_path):
    path, s, emb = _bundle(tmp_path)
    b = load_bundle(path, expected_teacher_id="test-teacher:1")
    assert b.vocabulary.names == VOCAB.names
    assert b.vocabulary[0].description == "A yellow fruit."
    assert torch.allclose(b.text_embeddings, emb)
    assert b.teacher_id == "test-teacher:1" and b.enrich and b.embed_dim == 16
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(b.student(x), s.eval()(x), atol=1e-6)
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left no temp file


def test_bundle_rejects_wrong_teacher(tmp_path):
    path, _, _ = _bundle(tmp_path)
    with pytest.raises(BundleError, match="distilled from teacher 'test-teacher:1'"):
        load_bundle(path, expected_teacher_id="open_clip:ViT-B-32:openai")


def test_bundle_rejects_missing_truncated_and_foreign_files(tmp_path):
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "none.vdb")
    path, _, _ = _bundle(tmp_path)
    data = path.read_bytes()
    trunc = tmp_path / "trunc.vdb"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="not a zip|truncated|corrupt"):
        load_bundle(trunc)
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("hello.txt", "hi")
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(foreign)


def test_bundle_detects_tampered_weights_and_bad_manifest(tmp_path):
    path, _, _ = _bundle(tmp_path)
    with pytest.raises(BundleError, match="student.pt is corrupt"):
        load_bundle(rewrite_zip(path, tmp_path / "t1.vdb", flip_byte("student.pt")))

    def version(m):
        man = json.loads(m["manifest.json"])
        man["format_version"] = 99
        m["manifest.json"] = json.dumps(man).encode()
    with pytest.raises(BundleError, match="version 99"):
        read_manifest(rewrite_zip(path, tmp_path / "t2.vdb", version))


def test_bundle_rejects_mismatched_student(tmp_path):
    path, _, _ = _bundle(tmp_path)

    def other_backbone(m):
        man = json.loads(m["manifest.json"])
        man["student"]["config"]["backbone"] = "resnet18"
        m["manifest.json"] = json.dumps(man).encode()
    with pytest.raises(BundleError, match="do not fit the declared resnet18"):
        load_bundle(rewrite_zip(path, tmp_path / "t3.vdb", other_backbone))

    def fewer_labels(m):
        man = json.loads(m["manifest.json"])
        man["vocabulary"]["labels"] = man["vocabulary"]["labels"][:2]
        m["manifest.json"] = json.dumps(man).encode()
    with pytest.raises(BundleError, match="shape"):
        load_bundle(rewrite_zip(path, tmp_path / "t4.vdb", fewer_labels))


def test_a_backbone_package_missing_is_not_called_a_corrupt_bundle(monkeypatch):
    """Without efficientnet_lite_pytorch the shipped bundle was reported as weights that "do
    not fit the declared student" (every exception was); the package is named instead."""
    import builtins

    from vl_distill_ros.ros.params import default_model_path

    real_import = builtins.__import__

    def no_package(name, *a, **kw):
        if name.startswith("efficientnet_lite_pytorch"):
            raise ModuleNotFoundError("No module named 'efficientnet_lite_pytorch'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_package)
    with pytest.raises(BundleError, match="student needs a package this machine lacks "
                                          r"\(No module named 'efficientnet_lite_pytorch'\)"):
        load_bundle(default_model_path())


def test_save_bundle_checks_embedding_shape(tmp_path):
    s = build_student(SMALL, 16)
    with pytest.raises(BundleError, match="do not match"):
        save_bundle(tmp_path / "x.vdb", s, torch.zeros(2, 16), VOCAB, "t", {}, ["{name}"], False)


def test_bundle_is_readable_by_others(tmp_path):
    """Shipped bundles must not inherit mkstemp's owner-only 0600 mode."""
    import os
    import stat

    path, _, _ = _bundle(tmp_path)
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


@pytest.mark.parametrize("change, reason", [
    (lambda man: man["vocabulary"].update(templates=["a photo of a thing."]), "has no '{name}'"),
    (lambda man: man["vocabulary"].update(templates=["a {name} {0}."]), "not a valid format"),
    (lambda man: man["vocabulary"].update(templates=["a {name} {colour}."]), "not a valid format"),
    (lambda man: man["vocabulary"].update(templates=[7]), "has no '{name}'"),
    (lambda man: man["teacher"].update(id=""), "teacher id is missing or empty"),
    (lambda man: man["teacher"].update(id=None), "teacher id is missing or empty"),
    (lambda man: man["teacher"].pop("spec"), "teacher spec is missing"),
    (lambda man: man["teacher"].update(spec="offline"), "teacher spec is missing"),
])
def test_bundle_with_bad_template_or_teacher_record_is_refused_at_load(tmp_path, change, reason):
    """Such bundles used to load, and the node then crashed on them (issue 11); now
    load_bundle refuses them with the reason."""
    path, _, _ = _bundle(tmp_path)

    def edit(m):
        man = json.loads(m["manifest.json"])
        change(man)
        m["manifest.json"] = json.dumps(man).encode()
    with pytest.raises(BundleError, match=f"invalid manifest: .*{re.escape(reason)}"):
        load_bundle(rewrite_zip(path, tmp_path / "bad.vdb", edit))


@pytest.mark.parametrize("change, reason", [
    (lambda man: man.update(teacher="test-teacher:1"), "manifest 'teacher' is not a mapping"),
    (lambda man: man.update(files=["student.pt"]), "manifest 'files' is not a mapping"),
    (lambda man: man["files"].update({"student.pt": 7}), "must map member names to SHA-256"),
    (lambda man: man.update(student=[1]), "manifest 'student' is not a mapping"),
    (lambda man: man["student"].pop("input_spec"), "invalid manifest: student input_spec"),
    (lambda man: man["student"].update(input_spec=[160]), "invalid manifest: student input_spec"),
    (lambda man: man["student"]["input_spec"].update(mean=0.5),
     "invalid manifest: student input_spec"),
    (lambda man: man["student"]["input_spec"].update(image_size="big"),
     "invalid manifest: student input_spec"),
])
def test_bundle_whose_manifest_has_values_of_the_wrong_kind_is_refused(tmp_path, change, reason):
    """A manifest's records of the wrong type (a fuzz of the shipped bundle's manifest,
    session 59) raised AttributeError, TypeError or KeyError out of load_bundle; they are
    BundleErrors with the reason, as the node's start-up and replay-eval expect."""
    path, _, _ = _bundle(tmp_path)

    def edit(m):
        man = json.loads(m["manifest.json"])
        change(man)
        m["manifest.json"] = json.dumps(man).encode()
    with pytest.raises(BundleError, match=re.escape(reason)):
        load_bundle(rewrite_zip(path, tmp_path / "bad.vdb", edit))


def test_bundle_members_that_unpack_beyond_their_limit_are_refused(tmp_path, monkeypatch):
    """A 0.8 MB bundle whose manifest.json unpacked to 800 MB of spaces (valid JSON) took
    the loader to 2.2 GB before anything was checked: members are read with a limit (the
    manifest 16 MiB, all members together 1 GiB), however small the file is."""
    from vl_distill_ros.model import bundle as bundle_module

    path, _, _ = _bundle(tmp_path)

    def padded(m):
        m["manifest.json"] = b" " * (17 * 1024 * 1024) + m["manifest.json"]
    big = tmp_path / "padded.vdb"
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    padded(members)
    with zipfile.ZipFile(big, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for n, d in members.items():
            zf.writestr(n, d)
    assert big.stat().st_size < path.stat().st_size + 100_000  # 17 MiB of spaces deflate
    with pytest.raises(BundleError, match="manifest.json unpacks to more than 16777216"):
        load_bundle(big)
    monkeypatch.setattr(bundle_module, "MAX_UNPACKED_BYTES", 100_000)
    with pytest.raises(BundleError, match="student.pt unpacks to more than"):
        load_bundle(path)


def test_bundle_with_non_finite_weights_or_embeddings_is_refused(tmp_path):
    """A bundle exported from a diverged run (NaN weights) loaded, and the node published
    NaN scores (not JSON)."""
    import hashlib
    import io

    path, s, _ = _bundle(tmp_path)
    state = s.state_dict()
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = torch.full_like(state[name], float("nan"))
    buf = io.BytesIO()
    torch.save(state, buf)

    def nan_weights(m):
        m["student.pt"] = buf.getvalue()
        man = json.loads(m["manifest.json"])
        man["files"]["student.pt"] = hashlib.sha256(buf.getvalue()).hexdigest()
        m["manifest.json"] = json.dumps(man).encode()
    with pytest.raises(BundleError, match=f"student weight {re.escape(name)} holds non-finite"):
        load_bundle(rewrite_zip(path, tmp_path / "nan.vdb", nan_weights))
    emb = io.BytesIO()
    np.save(emb, np.full((3, 16), np.nan, np.float32))

    def nan_text(m):
        m["text_embeddings.npy"] = emb.getvalue()
        man = json.loads(m["manifest.json"])
        man["files"]["text_embeddings.npy"] = hashlib.sha256(emb.getvalue()).hexdigest()
        m["manifest.json"] = json.dumps(man).encode()
    with pytest.raises(BundleError, match="text_embeddings.npy holds non-finite"):
        load_bundle(rewrite_zip(path, tmp_path / "nan_text.vdb", nan_text))
