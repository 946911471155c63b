"""``student.zero_shot_prior``: a trained linear-head student plus the zero-shot map of its
backbone's packaged ImageNet classifier, as one ``conse``-head student."""
import math

import pytest
import torch

from vl_distill_ros.config import StudentConfig, TrainConfig, validate_train_config
from vl_distill_ros.model.student import (CONSE_CLASSES, ConSEHead, StudentError, build_student,
                                          with_zero_shot_prior)

SMALL = StudentConfig(backbone="efficientnet_lite0", pretrained="imagenet", image_size=64,
                      freeze_stages=4)


def _class_embeddings(dim: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(CONSE_CLASSES, dim, generator=g), dim=1)


def _trained_linear(dim: int = 16) -> torch.nn.Module:
    """A linear-head student whose backbone and head moved away from their start (as after
    training): the backbone's last stage and the head get random offsets."""
    torch.manual_seed(0)
    s = build_student(SMALL, dim)
    with torch.no_grad():
        for p in list(s.backbone.parameters())[-6:]:
            p.add_(0.05 * torch.randn_like(p))
        s.head.weight.normal_(0, 0.2)
        s.head.bias.normal_(0, 0.1)
    return s.eval()


@pytest.mark.parametrize("weight", [0.5, 2.0])
def test_prior_adds_the_untrained_classifiers_map_to_the_trained_head(weight):
    trained = _trained_linear()
    emb = _class_embeddings(16)
    out = with_zero_shot_prior(trained, weight, emb).eval()
    assert out.cfg.head == "conse" and out.cfg.zero_shot_prior == 0.0
    assert isinstance(out.head, ConSEHead) and not out.head.classifier.weight.requires_grad
    # the trained backbone, unchanged; the packaged (untrained) ImageNet classifier
    for k, v in trained.backbone.state_dict().items():
        assert torch.equal(out.backbone.state_dict()[k], v), k
    packaged = build_student(StudentConfig(backbone="efficientnet_lite0", image_size=64,
                                           head="conse"), 16, class_embeddings=emb)
    assert torch.equal(out.head.classifier.weight, packaged.head.classifier.weight)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        f = trained.backbone(x)
        probs = torch.softmax(packaged.head.classifier(f), dim=-1)
        kth = probs.topk(10, dim=-1).values[:, -1:]
        zero_shot = (probs * (probs >= kth)) @ emb
        expected = torch.nn.functional.normalize(weight * zero_shot + trained.head(f), dim=-1)
        got = out(x)
        assert torch.allclose(got, expected, atol=1e-5)
        # and it is not the trained student alone: the prior moves every embedding
        assert (got - trained(x)).abs().amax(1).min() > 1e-3
    # a larger weight pulls the embedding toward the zero-shot map
    with torch.no_grad():
        near = with_zero_shot_prior(trained, 50.0, emb).eval()(x)
        zs = torch.nn.functional.normalize(zero_shot, dim=-1)
        assert ((near * zs).sum(1) > (got * zs).sum(1)).all()


def test_prior_refuses_what_it_cannot_apply_to():
    emb = _class_embeddings(16)
    conse = build_student(StudentConfig(backbone="efficientnet_lite0", image_size=64,
                                        head="conse"), 16, class_embeddings=emb)
    with pytest.raises(StudentError, match="linear head"):
        with_zero_shot_prior(conse, 2.0, emb)
    mlp = build_student(StudentConfig(image_size=64, head_hidden=32), 16)
    with pytest.raises(StudentError, match="linear head"):
        with_zero_shot_prior(mlp, 2.0, emb)
    scratch = build_student(StudentConfig(backbone="mobilenet_v3_small", pretrained="none",
                                          image_size=64), 16)
    with pytest.raises(StudentError, match="linear head"):
        with_zero_shot_prior(scratch, 2.0, emb)
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(StudentError, match="finite number > 0"):
            with_zero_shot_prior(_trained_linear(), bad, emb)
    with pytest.raises(StudentError, match="shape"):
        with_zero_shot_prior(_trained_linear(), 2.0, torch.zeros(10, 16))


def test_config_accepts_the_prior_on_a_linear_head():
    # (the settings it refuses are in test_student_conse_head.test_config_refuses_bad_heads)
    cfg = TrainConfig()
    cfg.student.zero_shot_prior = 2.0
    validate_train_config(cfg)
