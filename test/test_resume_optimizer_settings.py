"""--resume takes the optimizer's moments from the checkpoint, its settings from the config."""
from __future__ import annotations

import torch

from vl_distill_ros.config import OptimConfig, StudentConfig, TrainConfig
from vl_distill_ros.training import trainer


def _cfg(**optim) -> TrainConfig:
    student = StudentConfig(backbone="mobilenet_v3_small", pretrained="none", image_size=32)
    return TrainConfig(student=student, optim=OptimConfig(device="cpu", **optim))


def test_resume_uses_the_configs_weight_decay_and_backbone_lr_scale():
    env = trainer.DistEnv()
    student, _, optimizer = trainer._build_model(
        _cfg(weight_decay=1e-4, backbone_lr_scale=0.1), env, 8, None, None)
    student(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    ckpt = {"student": student.state_dict(), "optimizer": optimizer.state_dict()}
    _, _, resumed = trainer._build_model(
        _cfg(weight_decay=0.05, backbone_lr_scale=1.0), env, 8, ckpt, "checkpoint.pt")
    assert [g["weight_decay"] for g in resumed.param_groups] == [0.05, 0.05]
    assert [g["lr_scale"] for g in resumed.param_groups] == [1.0, 1.0]
    # the moments are the checkpoint's
    saved = optimizer.state_dict()["state"]
    for pid, state in resumed.state_dict()["state"].items():
        torch.testing.assert_close(state["exp_avg"], saved[pid]["exp_avg"])
