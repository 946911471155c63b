"""``perception/keeping_up.py``: when the node counts as behind its cameras, for how long,
and when it tries its full settings again (a fake clock; no ROS)."""
from __future__ import annotations

import pytest

from vl_distill_ros.perception.keeping_up import (MAX_FRAMES_IN_WINDOW, KeepingUp,
                                                  KeepingUpConfig)


def feed(k: KeepingUp, start: float, seconds: float, fps: float, drop_every: int = 0,
         levels: bool = False) -> tuple[float, list]:
    """Frames at ``fps`` from ``start`` for ``seconds`` (every ``drop_every``-th dropped),
    asking :meth:`KeepingUp.behind` (``levels``: :meth:`KeepingUp.level`) after each as the
    node's worker would; returns the end time and the answers."""
    answers, n, t = [], 0, start
    while t < start + seconds - 1e-9:
        n += 1
        k.frame(bool(drop_every) and n % drop_every == 0, t)
        answers.append(k.level(t) if levels else k.behind(t))
        t = start + n / fps
    return t, answers


def test_a_node_that_drops_nothing_or_little_keeps_up():
    k = KeepingUp()
    _, answers = feed(k, 0.0, 30.0, 30.0)
    assert not any(answers) and k.times_behind == 0
    _, answers = feed(k, 30.0, 30.0, 30.0, drop_every=25)      # 4%: under 5%
    assert not any(answers) and k.status(60.0)["behind_cameras"] is False


def test_dropping_frames_makes_it_behind_for_the_hold_then_it_tries_again():
    k = KeepingUp(KeepingUpConfig(window_s=2.0, drop_frac=0.05, min_frames=20, hold_s=10.0))
    t, answers = feed(k, 0.0, 3.0, 30.0, drop_every=5)          # 20% dropped
    first = answers.index(True)
    assert 19 <= first <= 25                                    # once 20 frames are counted
    assert all(answers[first:]) and k.times_behind == 1
    assert k.status(t)["behind_cameras"] is True
    # while behind, its drops are not the full settings': the hold runs out all the same
    t, answers = feed(k, t, 7.0 + first / 30.0 - 0.05, 30.0, drop_every=2)
    assert all(answers)
    t, answers = feed(k, t + 0.1, 5.0, 30.0)                   # the full settings, no drops
    assert not any(answers) and k.times_behind == 1
    assert k.status(t)["behind_hold_s"] == 10.0


def test_falling_behind_again_at_once_doubles_the_hold_up_to_its_bound():
    cfg = KeepingUpConfig(window_s=2.0, min_frames=20, hold_s=10.0, max_hold_s=30.0)
    k = KeepingUp(cfg)
    t, holds = 0.0, []
    for _ in range(4):
        t, answers = feed(k, t, 3.0, 30.0, drop_every=4)        # behind within the window
        assert any(answers)
        holds.append(k.status(t)["behind_hold_s"])
        t = t + holds[-1]                                       # the hold runs out
        assert k.behind(t) is False
    assert holds == [10.0, 20.0, 30.0, 30.0] and k.times_behind == 4
    # a try that keeps up for two windows: the next hold is the first again
    t, answers = feed(k, t, 5.0, 30.0)
    assert not any(answers)
    t, answers = feed(k, t, 3.0, 30.0, drop_every=4)
    assert any(answers) and k.status(t)["behind_hold_s"] == 10.0


def test_few_frames_decide_nothing():
    """A slow camera (5 fps) that drops every other frame: under ``min_frames`` in a
    window, so never behind (its frames cost little; there is nothing to shed)."""
    k = KeepingUp(KeepingUpConfig(window_s=2.0, min_frames=20))
    _, answers = feed(k, 0.0, 20.0, 5.0, drop_every=2)
    assert not any(answers)


def test_frames_before_the_full_settings_resume_do_not_count():
    """The frames of the window before the hold ended (dropped under the cheaper settings'
    predecessor) are forgotten: the full settings are judged on their own frames."""
    k = KeepingUp(KeepingUpConfig(window_s=2.0, min_frames=20, hold_s=1.0))
    t, answers = feed(k, 0.0, 1.5, 30.0, drop_every=2)          # behind at 0.63 s
    assert answers[-1] is True
    t, answers = feed(k, t, 0.1, 30.0, drop_every=2)            # dropped while behind
    assert all(answers)
    t, answers = feed(k, t + 0.1, 0.5, 30.0)    # after the hold: 15 frames, none dropped
    assert not any(answers) and k.times_behind == 1
    t, answers = feed(k, t, 1.0, 30.0, drop_every=2)            # now the full settings drop
    assert answers[-1] is True and k.times_behind == 2


def test_a_flood_is_remembered_within_a_bound():
    """10 kHz of frames for 2 s: the window keeps at most MAX_FRAMES_IN_WINDOW of them, and
    the drops among those still decide."""
    k = KeepingUp(KeepingUpConfig(window_s=2.0, min_frames=20))
    for i in range(20000):
        k.frame(False, i / 10000.0)
    assert len(k._frames) == 20000 and not k.behind(2.0)
    for i in range(MAX_FRAMES_IN_WINDOW + 5000):
        k.frame(i % 10 == 0, 2.0 + i / 10000.0)
    assert len(k._frames) == MAX_FRAMES_IN_WINDOW and k.behind(4.5)


def test_a_level_that_still_drops_over_a_whole_window_steps_further_for_the_hold():
    k = KeepingUp(KeepingUpConfig(window_s=2.0, min_frames=20, hold_s=10.0), levels=2)
    t, answers = feed(k, 0.0, 6.0, 30.0, drop_every=5, levels=True)     # 20% dropped
    first = answers.index(1)
    assert 19 <= first <= 25 and 2 not in answers[:first]
    second = answers.index(2)
    # level 1 is judged over a whole window of its own frames (2 s at 30 fps) before it
    # steps further; then level 2 holds
    assert 59 <= second - first <= 62 and set(answers[first:second]) == {1}
    assert set(answers[second:]) == {2}
    assert k.times_behind == 1 and k.times_further == 1
    st = k.status(t)
    assert st["behind_level"] == 2 and st["times_behind_further"] == 1
    # the cheapest level does not count drops: the hold runs out all the same, and the full
    # settings are tried again (not level 1)
    t, answers = feed(k, t, 10.0 + first / 30.0 - t - 0.05, 30.0, drop_every=2, levels=True)
    assert set(answers) == {2}
    t, answers = feed(k, t + 0.1, 5.0, 30.0, levels=True)
    assert set(answers) == {0} and k.status(t)["behind_level"] == 0


def test_a_level_that_keeps_up_stays_until_the_hold_ends():
    k = KeepingUp(KeepingUpConfig(window_s=2.0, min_frames=20, hold_s=10.0), levels=2)
    t, answers = feed(k, 0.0, 0.8, 30.0, drop_every=4, levels=True)
    assert answers[-1] == 1
    t, answers = feed(k, t, 7.0, 30.0, drop_every=50, levels=True)      # 2%: keeps up
    assert set(answers) == {1} and k.times_further == 0
    t, answers = feed(k, t + 3.0, 5.0, 30.0, levels=True)           # the hold has ended
    assert set(answers) == {0}


def test_a_first_step_that_changes_nothing_is_passed_over():
    """``level(first_step=False)`` (no box network to replace): falling behind goes to level
    2 at once, and a hold at level 1 steps to 2 as soon as level 1 stops mattering; with one
    level there is nothing to pass over to."""
    cfg = KeepingUpConfig(window_s=2.0, min_frames=20, hold_s=10.0)
    k, answers, t = KeepingUp(cfg, levels=2), [], 0.0
    for n in range(40):                                         # every other frame dropped
        t = n / 30.0
        k.frame(n % 2 == 1, t)
        answers.append(k.level(t, first_step=False))
    first = answers.index(2)
    assert set(answers[:first]) == {0} and set(answers[first:]) == {2}
    assert k.times_behind == 1 and k.times_further == 1
    k2 = KeepingUp(cfg, levels=2)
    t, answers = feed(k2, 0.0, 1.0, 30.0, drop_every=2, levels=True)
    assert answers[-1] == 1
    assert k2.level(t, first_step=False) == 2 and k2.times_further == 1
    one = KeepingUp(cfg)
    for n in range(40):
        one.frame(n % 2 == 1, n / 30.0)
        assert one.level(n / 30.0, first_step=False) in (0, 1)
    assert one.times_behind == 1 and one.times_further == 0


def test_one_level_never_steps_further():
    k = KeepingUp(KeepingUpConfig(window_s=2.0, min_frames=20, hold_s=10.0))
    _, answers = feed(k, 0.0, 8.0, 30.0, drop_every=2, levels=True)
    assert max(answers) == 1 and k.times_further == 0
    with pytest.raises(ValueError, match="levels"):
        KeepingUp(levels=3)


@pytest.mark.parametrize("field, value", [("window_s", 0.0), ("drop_frac", 1.0),
                                          ("min_frames", 0), ("hold_s", 0.0),
                                          ("max_hold_s", 5.0), ("max_hold_s", 1e6)])
def test_bounds_are_checked(field, value):
    with pytest.raises(ValueError, match=field.split("_")[0]):
        KeepingUpConfig(**{field: value})
