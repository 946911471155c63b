"""bench/_live_node.py's camera publisher process: its stop flag survives the publisher
being killed, and its rate is bounded (the live benches node_throughput, vocabulary_update
and vocabulary_churn share it)."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from _common import BenchError  # noqa: E402
from _live_node import Publisher, StopFlag  # noqa: E402


def _spin_on(flag: StopFlag) -> None:
    while not flag.is_set():
        pass


def test_the_stop_flag_can_be_set_after_the_publisher_was_killed():
    """A SIGTERM to the bench's process group (``timeout``) killed the publisher inside
    ``multiprocessing.Event.is_set()``, holding its lock: the bench's ``stop_event.set()``
    then blocked for good, no JSON came and the node kept running. The flag takes no lock."""
    ctx = mp.get_context("spawn")
    flag = StopFlag(ctx)
    proc = ctx.Process(target=_spin_on, args=(flag,), daemon=True)
    proc.start()
    try:
        assert not flag.is_set()
        os.kill(proc.pid, signal.SIGKILL)          # killed mid-loop, as the group was
        proc.join(timeout=10.0)
        flag.set()                                  # returns at once
        assert flag.is_set()
        proc = ctx.Process(target=_spin_on, args=(flag,), daemon=True)
        proc.start()
        proc.join(timeout=20.0)                     # a set flag stops a running loop
        assert proc.exitcode == 0
    finally:
        if proc.is_alive():
            proc.kill()


@pytest.mark.parametrize("fps, duration", [(float("inf"), 2.0), (float("nan"), 2.0),
                                           (0.0, 2.0), (5000.0, 2.0), (30.0, float("nan")),
                                           (30.0, 0.0)])
def test_the_publisher_refuses_rates_and_durations_it_cannot_keep(fps, duration):
    """``--fps inf`` passed the checks and scheduled every frame at once: the publisher's
    offset never reached the duration and it never ended."""
    with pytest.raises(BenchError, match="--fps must be|duration must be"):
        Publisher(["/cam"], [], fps, duration)
