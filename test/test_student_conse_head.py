"""The ``conse`` projection head: the untrained student is the offline teacher's zero-shot
map, it trains and exports like the linear head, and bad settings are refused."""
import math

import numpy as np
import pytest
import torch

from vl_distill_ros.config import ConfigError, StudentConfig, TrainConfig, validate_train_config
from vl_distill_ros.model.bundle import load_bundle, save_bundle
from vl_distill_ros.model.runtime import OnnxRunner, export_student_onnx
from vl_distill_ros.model.student import (CONSE_CLASSES, ConSEHead, StudentError, build_student,
                                          conse_class_prompts)
from vl_distill_ros.model.vocabulary import Vocabulary

SMALL_CONSE = StudentConfig(backbone="efficientnet_lite0", pretrained="imagenet", image_size=64,
                            head="conse")


def _class_embeddings(dim: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(CONSE_CLASSES, dim, generator=g), dim=1)


@pytest.fixture(scope="module")
def conse_teacher(offline_env):
    from vl_distill_ros.model.teachers.conse import ConSETeacher

    return ConSETeacher()


@pytest.fixture(scope="module")
def offline_env():
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    yield
    mp.undo()


def test_untrained_conse_student_is_the_offline_teacher(conse_teacher):
    # the teacher's own class prompts, embedded by its own text encoder
    emb = conse_teacher.encode_texts(conse_class_prompts())
    assert emb.shape == (CONSE_CLASSES, conse_teacher.embed_dim)
    student = build_student(StudentConfig(image_size=224, head="conse"), conse_teacher.embed_dim,
                            class_embeddings=emb).eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(3)]
    images.append(np.tile(np.linspace(0, 255, 224, dtype=np.uint8)[None, :, None], (224, 1, 3)))
    teacher_emb = conse_teacher.encode_images(images)
    x = torch.stack([torch.from_numpy(i).permute(2, 0, 1).float() / 255 for i in images])
    with torch.no_grad():
        student_emb = student((x - 0.5) / 0.5)
    cos = (teacher_emb * student_emb).sum(1)
    assert torch.all(cos > 0.9999), cos
    # a linear head of the same student is nowhere near the teacher
    linear = build_student(StudentConfig(image_size=224), conse_teacher.embed_dim).eval()
    with torch.no_grad():
        assert ((teacher_emb * linear((x - 0.5) / 0.5)).sum(1) < 0.9).all()


def test_conse_head_parameters_and_zero_residual():
    s = build_student(SMALL_CONSE, 16, class_embeddings=_class_embeddings(16))
    assert isinstance(s.head, ConSEHead)
    assert torch.count_nonzero(s.head.residual.weight) == 0
    backbone_ids = {id(p) for p in s.backbone_parameters()}
    head_ids = {id(p) for p in s.head_parameters()}
    # the pretrained classifier trains with the backbone, the residual is the new head
    assert id(s.head.classifier.weight) in backbone_ids
    assert head_ids == {id(s.head.residual.weight), id(s.head.residual.bias)}
    assert "head.class_embeddings" in s.state_dict()
    assert not s.head.class_embeddings.requires_grad
    # only the top-T classes weight the embedding: with top_t 1 the output is one class's
    one = build_student(StudentConfig(backbone="efficientnet_lite0", image_size=64, head="conse",
                                      head_top_t=1), 16, class_embeddings=_class_embeddings(16))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = one.eval()(x)
        top = one.head.classifier(one.backbone(x)).argmax(1)
    assert torch.allclose(out, one.head.class_embeddings[top], atol=1e-5)


def test_conse_head_classifier_can_stay_frozen():
    cfg = StudentConfig(backbone="efficientnet_lite0", image_size=64, head="conse",
                        head_freeze_classifier=True)
    s = build_student(cfg, 16, class_embeddings=_class_embeddings(16))
    assert not s.head.classifier.weight.requires_grad
    ids = {id(p) for p in s.backbone_parameters() + s.head_parameters()}
    assert id(s.head.classifier.weight) not in ids and id(s.head.classifier.bias) not in ids
    # the same classifier as the trainable default: the packaged ImageNet weights
    free = build_student(SMALL_CONSE, 16, class_embeddings=_class_embeddings(16))
    assert torch.equal(s.head.classifier.weight, free.head.classifier.weight)


def test_conse_head_learns():
    torch.manual_seed(0)
    s = build_student(SMALL_CONSE, 16, class_embeddings=_class_embeddings(16)).train()
    target = torch.nn.functional.normalize(torch.randn(4, 16), dim=1)
    x = torch.randn(4, 3, 64, 64)
    opt = torch.optim.AdamW([{"params": s.backbone_parameters()},
                             {"params": s.head_parameters()}], lr=1e-2)
    losses = []
    for _ in range(15):
        loss = (1 - (s(x) * target).sum(1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses
    assert torch.count_nonzero(s.head.residual.weight) > 0


def test_conse_head_bundle_and_onnx_round_trip(tmp_path):
    torch.manual_seed(0)
    s = build_student(SMALL_CONSE, 16, class_embeddings=_class_embeddings(16)).eval()
    with torch.no_grad():
        s.head.residual.weight.normal_(0, 0.01)   # as after training
    vocab = Vocabulary.from_names(["banana", "mug"])
    emb = torch.nn.functional.normalize(torch.randn(2, 16), dim=1)
    path = save_bundle(tmp_path / "c.vdb", s, emb, vocab, "test-teacher:1", {}, ["{name}"],
                       enrich=False, metrics={})
    b = load_bundle(path, expected_teacher_id="test-teacher:1")
    assert b.student.cfg.head == "conse" and b.student.cfg.head_top_t == 10
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected = s(x)
        assert torch.allclose(b.student(x), expected, atol=1e-6)
    out = OnnxRunner(export_student_onnx(s), threads=1).embed(x.numpy())
    assert np.allclose(out, expected.numpy(), atol=1e-4)


def test_conse_head_refuses_what_it_cannot_build():
    with pytest.raises(StudentError, match="text embeddings"):
        build_student(SMALL_CONSE, 16)
    with pytest.raises(StudentError, match="shape"):
        build_student(SMALL_CONSE, 16, class_embeddings=torch.zeros(10, 16))
    with pytest.raises(StudentError, match="pretrained: imagenet"):
        build_student(StudentConfig(pretrained="none", image_size=64, head="conse"), 16,
                      class_embeddings=_class_embeddings(16))
    with pytest.raises(StudentError, match="efficientnet_lite0"):
        build_student(StudentConfig(backbone="mobilenet_v3_small", pretrained="none",
                                    image_size=64, head="conse"), 16)
    with pytest.raises(StudentError, match="top_t"):
        build_student(StudentConfig(image_size=64, head="conse", head_top_t=1001), 16,
                      class_embeddings=_class_embeddings(16))
    with pytest.raises(StudentError, match="unknown student head"):
        build_student(StudentConfig(image_size=64, head="mlp"), 16)


@pytest.mark.parametrize("student,match", [
    ({"head": "mlp"}, "student.head must be one of"),
    ({"head": "conse", "backbone": "resnet18", "pretrained": "none"}, "efficientnet_lite0"),
    ({"head": "conse", "head_hidden": 64}, "head_hidden: 0"),
    ({"head": "conse", "head_top_t": 0}, "head_top_t"),
    ({"head": "conse", "head_top_t": 5000}, "head_top_t"),
    ({"head": "conse", "head_temperature": 0.0}, "head_temperature"),
    # student.zero_shot_prior (test_student_zero_shot_prior.py) turns a trained linear head
    # into a conse head: only on the packaged efficientnet_lite0 with a linear head
    ({"zero_shot_prior": 2.0, "head": "conse"}, "zero_shot_prior needs"),
    ({"zero_shot_prior": 2.0, "head_hidden": 64}, "zero_shot_prior needs"),
    ({"zero_shot_prior": 2.0, "backbone": "resnet18", "pretrained": "none"},
     "zero_shot_prior needs"),
    ({"zero_shot_prior": 2.0, "pretrained": "none"}, "zero_shot_prior needs"),
    ({"zero_shot_prior": -1.0}, "zero_shot_prior must be a finite number"),
    ({"zero_shot_prior": math.nan}, "zero_shot_prior must be a finite number"),
    ({"zero_shot_prior": 1000.0}, "at most 100"),
])
def test_config_refuses_bad_heads(student, match):
    cfg = TrainConfig()
    for key, value in student.items():
        setattr(cfg.student, key, value)
    with pytest.raises(ConfigError, match=match):
        validate_train_config(cfg)
