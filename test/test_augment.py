"""Sensor and photometric augmentations of training crops (CropAugment with AugmentConfig):
off changes nothing, each effect does what it says, everything is seeded, bad settings are
configuration errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vl_distill_ros.config import AugmentConfig, ConfigError, load_train_config
from vl_distill_ros.model.student import InputSpec
from vl_distill_ros.training.augment import CropAugment, _motion_blur, mix_views, motion_kernel

SPEC = InputSpec(48, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # output = pixels in [0, 1]
TABLE = (170, 140, 110)


def _batch(n: int = 16, seed: int = 0) -> torch.Tensor:
    """Crops of a blue object (the middle half) on the table, with a little texture."""
    rng = np.random.default_rng(seed)
    img = np.empty((n, 64, 64, 3), np.float32)
    img[:] = TABLE
    img[:, 16:48, 16:48] = (30, 60, 200)
    img += rng.normal(0, 3, img.shape)
    return torch.from_numpy(img.clip(0, 255).astype(np.uint8))


def _run(aug: AugmentConfig | None, seed: int = 1, jitter: float = 0.0) -> torch.Tensor:
    return CropAugment(SPEC, jitter=jitter, aug=aug)(_batch(), torch.Generator().manual_seed(seed))


def _object_frac(out: torch.Tensor) -> float:
    """Mean fraction of crop pixels that are the blue object."""
    return float(((out[:, 2] - out[:, 0]) > 0.3).float().mean())


def test_all_off_is_exactly_the_old_augmentation():
    for jitter in (0.0, 0.3):
        plain = CropAugment(SPEC, jitter=jitter)(_batch(), torch.Generator().manual_seed(4))
        off = _run(AugmentConfig(), seed=4, jitter=jitter)
        assert torch.equal(plain, off)
    assert not AugmentConfig().active


@pytest.mark.parametrize("field, value", [
    ("white_balance", 0.3), ("exposure", 0.5), ("blur_prob", 1.0), ("motion_blur_prob", 1.0),
    ("noise_sigma", 0.1),    ("jpeg_prob", 1.0), ("loose_prob", 1.0), ("cut_prob", 1.0),
    ("dim_prob", 1.0)])
def test_each_effect_changes_the_crops_and_is_seeded(field, value):
    aug = AugmentConfig(**{field: value})
    assert aug.active
    a, b = _run(aug, seed=2), _run(aug, seed=2)
    assert torch.equal(a, b)                       # same generator state, same crops
    assert a.shape == (16, 3, 48, 48) and torch.isfinite(a).all()
    assert not torch.equal(a, _run(AugmentConfig(), seed=2))
    assert not torch.equal(a, _run(aug, seed=3))


def test_effects_do_what_they_say():
    base = _run(AugmentConfig())
    # blur: less high-frequency energy; noise: more; jpeg: blocks, not the same pixels

    def hf(x):
        return float((x[..., 1:] - x[..., :-1]).abs().mean())
    assert hf(_run(AugmentConfig(blur_prob=1.0, blur_sigma=[1.5, 2.0]))) < 0.8 * hf(base)
    assert hf(_run(AugmentConfig(motion_blur_prob=1.0, motion_blur_px=[7, 9]))) < 0.8 * hf(base)
    assert hf(_run(AugmentConfig(noise_sigma=0.1))) > 1.5 * hf(base)
    jpeg = _run(AugmentConfig(jpeg_prob=1.0, jpeg_quality=[5, 10]))
    assert 0.003 < float((jpeg - base).abs().mean()) < 0.1
    # white balance changes the channels' ratios; exposure the brightness, not the hue
    wb = _run(AugmentConfig(white_balance=0.4))
    ratio = (wb.mean(dim=(2, 3)) / base.mean(dim=(2, 3)).clamp_min(1e-6))
    assert float(ratio.std(dim=1).mean()) > 0.05
    # dim crops: every value times the gain (the hue kept); with dim_prob 0.5 about half
    dim = _run(AugmentConfig(dim_prob=1.0, dim_gain=[0.4, 0.4]))
    assert torch.allclose(dim, 0.4 * base, atol=1e-5)
    half = _run(AugmentConfig(dim_prob=0.5, dim_gain=[0.4, 0.4])).mean(dim=(1, 2, 3))
    dimmed = half < 0.7 * base.mean(dim=(1, 2, 3))
    assert 3 <= int(dimmed.sum()) <= 13
    with pytest.raises(ConfigError, match="dim_gain"):
        AugmentConfig(dim_prob=0.5, dim_gain=[0.8, 0.3])
    # loose crops show less object, cut crops more (zoomed into the middle)
    frac = _object_frac(base)
    assert _object_frac(_run(AugmentConfig(loose_prob=1.0, loose_pad=0.5))) < 0.85 * frac
    assert _object_frac(_run(AugmentConfig(cut_prob=1.0, cut_scale=[0.2, 0.3]))) > 1.1 * frac


def test_motion_blur_smears_along_its_line_only():
    """A horizontal motion blur averages along x and leaves rows that are constant along x
    as they are; the kernel sums to one at every angle, so flat images stay flat."""
    stripes = torch.zeros(3, 32, 32)
    stripes[:, :, ::2] = 1.0                      # varies along x only
    rows = stripes.transpose(1, 2).contiguous()   # varies along y only
    blurred = _motion_blur(stripes, 8, 0.0)
    assert float(blurred[:, :, 8:24].std()) < 0.15 * float(stripes.std())
    assert torch.allclose(_motion_blur(rows, 8, 0.0), rows, atol=1e-5)
    assert float((_motion_blur(rows, 8, 90.0)[:, 8:24] - 0.5).abs().max()) < 0.1
    flat = torch.full((3, 20, 24), 0.4)
    for angle in (0.0, 33.0, 90.0, 145.0):
        assert _motion_blur(flat, 9, angle).shape == flat.shape
        assert torch.allclose(_motion_blur(flat, 9, angle), flat, atol=1e-5)
        assert abs(float(motion_kernel(9, angle).sum()) - 1.0) < 1e-5
    assert torch.equal(_motion_blur(stripes, 1, 0.0), stripes)


def test_teacher_views_are_the_students_framing_without_sensor_effects():
    """``with_teacher_view``: the student's crops are those of ``__call__``; the teacher's
    views show the same crop, flip and loose framing at the teacher's size, with no colour
    jitter or sensor effects (the same as a student crop made without them)."""
    images = _batch()
    images[:, 20:30, 4:14] = torch.tensor((220, 30, 30), dtype=torch.uint8)  # left: not symmetric
    frame = {"loose_prob": 0.5, "loose_pad": 0.5}
    noisy = AugmentConfig(**frame, noise_sigma=0.2, blur_prob=1.0, white_balance=0.4)
    aug = CropAugment(SPEC, jitter=0.3, aug=noisy)
    student, views = aug.with_teacher_view(images, torch.Generator().manual_seed(5), 96)
    assert torch.equal(student, aug(images, torch.Generator().manual_seed(5)))
    assert views.dtype == np.uint8 and views.shape == (16, 96, 96, 3)
    clean = CropAugment(SPEC, jitter=0.0, aug=AugmentConfig(**frame))(
        images, torch.Generator().manual_seed(5))
    small = torch.nn.functional.interpolate(
        torch.from_numpy(views).permute(0, 3, 1, 2).float() / 255.0, size=(48, 48),
        mode="bilinear", align_corners=False, antialias=True)
    assert float((small - clean).abs().mean()) < 0.01
    assert float((student - clean).abs().mean()) > 0.05   # the student's crops are degraded
    assert aug.with_teacher_view(images, torch.Generator().manual_seed(5), 0)[1] is None


def test_bad_settings_are_configuration_errors(tmp_path):
    for kwargs in ({"blur_prob": 1.5}, {"motion_blur_prob": -0.1}, {"motion_blur_px": [0, 5]},
                   {"motion_blur_px": [9, 3]}, {"white_balance": -0.1}, {"jpeg_quality": [90, 30]},
                   {"cut_scale": [0.0, 2.0]}, {"noise_sigma": 3.0}):
        with pytest.raises(ConfigError, match="data.augment"):
            AugmentConfig(**kwargs)
    path = tmp_path / "train.yaml"
    path.write_text("data:\n  augment:\n    white_balance: 0.2\n    jpeg_prob: 0.3\n")
    cfg = load_train_config(path)
    assert cfg.data.augment.white_balance == 0.2 and cfg.data.augment.active
    path.write_text("data:\n  augment:\n    whitebalance: 0.2\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_train_config(path)


def test_mixup_blends_the_same_rows_for_student_and_teacher():
    """``mix_views``: about ``prob`` of the rows become ``lam * row + (1 - lam) * partner``
    with one ``lam`` and one partner (another row) for the student's tensor and the
    teacher's uint8 views; blended rows lose their label, the others stay as they were;
    the same generator seed gives the same blend, prob 0 changes nothing, and with
    ``labelled=False`` only unlabelled rows are blended."""
    n = 64
    rows = torch.arange(n, dtype=torch.float32)
    x = rows.view(n, 1, 1, 1).expand(n, 3, 2, 2).clone()          # row i is all i
    views = np.repeat(np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1) * 3, 4, axis=1)
    views = np.repeat(views, 4, axis=2).repeat(3, axis=3)        # row i is all 3 i
    labels = torch.arange(n)
    mx, mv, ml = mix_views(x, views, labels, 0.5, 1.0, torch.Generator().manual_seed(3))
    blended = ml == -1
    assert 16 <= int(blended.sum()) <= 48
    assert torch.equal(ml[~blended], labels[~blended]) and torch.equal(mx[~blended], x[~blended])
    assert np.array_equal(mv[~blended.numpy()], views[~blended.numpy()])
    assert torch.equal(x, rows.view(n, 1, 1, 1).expand(n, 3, 2, 2))  # inputs untouched
    for i in torch.nonzero(blended).flatten().tolist():
        value = float(mx[i, 0, 0, 0])
        assert torch.all(mx[i] == value) and value != i
        # the teacher's view is the same blend of the same rows (x 3, rounded to uint8)
        assert abs(int(mv[i, 0, 0, 0]) - 3 * value) <= 1.0
    again = mix_views(x, views, labels, 0.5, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(again[0], mx) and np.array_equal(again[1], mv)
    same = mix_views(x, views, labels, 0.0, 1.0, torch.Generator().manual_seed(3))
    assert same[0] is x and same[1] is views and same[2] is labels
    # labelled=False: only unlabelled rows are blended; every labelled row is kept as it was
    half = torch.where(labels % 2 == 0, labels, torch.full_like(labels, -1))
    kx, _, kl = mix_views(x, views, half, 1.0, 1.0, torch.Generator().manual_seed(3),
                          labelled=False)
    changed = (kx != x).flatten(1).any(1)
    assert torch.equal(changed, half < 0) and torch.equal(kl, half)
