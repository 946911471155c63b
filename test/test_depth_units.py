"""Depth in the wrong unit (``perception/depth_units.py``): frames whose depth went unused
because nearly all of it lay outside ``min_depth_m``..``max_depth_m``, as depth read in
another unit than it was written in does, are said to be so with the power of ten and the
``depth_scale`` that fits; depth in the right unit never is (a close wrist camera, far
tables, the sensor noise models)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from test_depth import render_tabletop
from vl_distill_ros.perception.depth_units import (DepthUnitCheck, float_encoding, frame_stats,
                                                   scale_factor, unit_warning)
from vl_distill_ros.sim.depth_noise import NOISE_MODELS, apply_depth_noise

OBJECTS = [(-0.1, 0.0, 0.08, 0.06, 0.1), (0.1, 0.05, 0.07, 0.07, 0.12)]


def _scene(distance: float, noise: str, seed: int = 0) -> np.ndarray:
    depth, _ = render_tabletop([(a * distance, b * distance, x * distance, y * distance,
                                 z * distance) for a, b, x, y, z in OBJECTS],
                               distance=distance)
    model = NOISE_MODELS[noise]
    if model is None:
        return depth
    return apply_depth_noise(depth, np.random.default_rng(seed), model)


@pytest.mark.parametrize("noise", ["none", "sensor", "coarse"])
@pytest.mark.parametrize("distance", [0.15, 0.2, 0.3, 0.5, 0.9, 1.5, 2.2])
def test_depth_in_the_right_unit_is_never_flagged(distance, noise):
    """A wrist camera 0.15-0.5 m from the table, tables out to 2.2 m, every noise model:
    no frame counts even as unused depth (the worst case), so no verdict."""
    depth = _scene(distance, noise)
    assert frame_stats(depth, 0.15, 2.5) is None
    check = DepthUnitCheck()
    for _ in range(10):
        check.update(depth, 0.15, 2.5, used=False)
    assert check.verdict() is None


@pytest.mark.parametrize("noise", ["sensor", "coarse"])
def test_far_scenes_within_a_raised_max_depth_are_not_flagged(noise):
    """A scene out to the sensor model's 4 m with max_depth_m raised to it."""
    for distance in (2.8, 3.5):
        assert frame_stats(_scene(distance, noise), 0.15, 4.0) is None


def test_a_blind_or_too_near_sensor_is_no_unit_problem():
    """All zeros (covered, too near to measure) and a close-range camera 8 cm from a
    surface (nearer than min_depth_m, but no unit's mistake)."""
    assert frame_stats(np.zeros((240, 320), np.float32), 0.15, 2.5) is None
    assert frame_stats(np.full((240, 320), 0.08, np.float32), 0.15, 2.5) is None


@pytest.mark.parametrize("factor, expected", [(10.0, 0.1), (4.0, 0.1), (1000.0, 0.001),
                                              (0.001, 1000.0)])
def test_depth_in_another_unit_is_flagged_with_the_power_of_ten(factor, expected):
    """0.1 mm read as millimetres (YCB-Video), an L515's 0.25 mm units, 32FC1 in
    millimetres, metres divided by 1000: after 3 frames the verdict names the factor that
    puts the median back near the table (0.9 m away)."""
    depth = _scene(0.9, "sensor") * np.float32(factor)
    check = DepthUnitCheck()
    for i in range(3):
        assert check.verdict() is None          # not before 3 frames
        check.update(depth, 0.15, 2.5, used=False)
    verdict = check.verdict()
    assert verdict is not None and verdict.factor == pytest.approx(expected)
    assert 0.15 <= verdict.median_m * verdict.factor <= 2.5
    assert verdict.side == ("far" if factor > 1 else "near")


def test_the_warning_names_the_fix_of_each_encoding():
    depth = _scene(0.9, "none") * np.float32(10.0)
    check = DepthUnitCheck()
    for _ in range(3):
        check.update(depth, 0.15, 2.5, used=False)
    verdict = check.verdict()
    sixteen = unit_warning(verdict, 0.001, float_encoding("16UC1"))
    m = verdict.median_m
    assert f"x0.1 would put its median {m:.3g} m at {m * 0.1:.2f} m" in sixteen
    assert "depth_scale 0.0001 (now 0.001)" in sixteen
    assert "0.1 mm units" in sixteen and "32FC1" not in sixteen
    assert "raise max_depth_m" in sixteen            # 9 m: a far scene is possible
    millimetres = unit_warning(replace(verdict, median_m=900.0, factor=0.001), 0.001,
                               float_encoding("32FC1"))
    assert "32FC1 depth is read as metres" in millimetres and "millimetres" in millimetres
    assert "raise max_depth_m" not in millimetres    # 900 m: no scene
    both = unit_warning(verdict, 0.001, None)
    assert "depth_scale 0.0001" in both and "32FC1" in both
    metres = unit_warning(type(verdict)(3, 3, 0.0009, "near", 0.05, 1000.0), 0.001, False)
    assert "beyond depth_scale's range" in metres    # 16-bit metres: depth_scale 1
    assert float_encoding("16UC1; compressedDepth png") is False
    assert float_encoding("32FC1; compressedDepth") is True and float_encoding("rgb8") is None


def test_used_depth_is_never_counted_and_good_frames_clear_the_verdict():
    far = _scene(0.9, "none") * np.float32(10.0)
    check = DepthUnitCheck()
    for _ in range(5):
        check.update(far, 0.15, 2.5, used=True)     # the proposer used it: not counted
    assert check.verdict() is None
    for _ in range(5):
        check.update(far, 0.15, 2.5, used=False)
    assert check.verdict() is None                  # 5 of 10: not most of them
    for _ in range(5):
        check.update(far, 0.15, 2.5, used=False)
    assert check.verdict() is not None
    for _ in range(3):
        check.update(_scene(0.9, "none"), 0.15, 2.5, used=True)
    assert check.verdict() is None                  # 7 of 10: cleared


def test_scale_factor_prefers_the_fit_nearest_a_metre():
    assert scale_factor(20.0, 0.15, 2.5) == pytest.approx(0.1)   # 2 m, not 0.2 m
    assert scale_factor(3.0, 0.15, 2.5) == pytest.approx(0.1)
    assert scale_factor(1e9, 0.15, 2.5) == 0.0
