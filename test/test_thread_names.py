"""OS names of the package's worker threads (``vl_distill_ros.thread_names``), the
throughput bench's CPU time per thread name and its measure of the host's speed
(``bench/node_throughput.py``)."""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import os_thread_names
from vl_distill_ros.perception.box_net import DEFAULT_BOX_NET, BoxNet
from vl_distill_ros.perception.frame_boxes import FrameBoxes
from vl_distill_ros.thread_names import (MAX_OS_NAME, current_os_thread_name, name_os_thread,
                                         os_named, os_thread_name, os_thread_named)

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from _frames import offline_proposals  # noqa: E402
from _live_node import SHM_PROFILE, ProcStats, use_dds_profile  # noqa: E402
from node_throughput import thread_cpu, thread_group  # noqa: E402

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="thread names are read from Linux's /proc")


def _os_name() -> str:
    """The calling thread's name as the kernel keeps it."""
    with open(f"/proc/self/task/{threading.get_native_id()}/comm", encoding="ascii") as fh:
        return fh.read().strip()


def _in_thread(fn):
    """``fn()``'s result, run in a new thread."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn()), name="a_python_name_that_is_long")
    t.start()
    t.join(10)
    return out[0]


def test_names_are_cut_to_what_the_kernel_keeps():
    assert os_thread_name("vl_prepare") == "vl_prepare"
    assert os_thread_name("vl_distill_classify") == "vl_distill_clas"
    assert len(os_thread_name("x" * 40)) == MAX_OS_NAME
    assert os_thread_name("a b\u00e9\n") == "a_b__"
    with pytest.raises(ValueError, match="empty"):
        os_thread_name("")


@linux_only
def test_a_thread_is_named_in_the_os():
    assert _in_thread(lambda: (name_os_thread("vl_test_one"), _os_name())) == (True,
                                                                               "vl_test_one")
    # default: the Python name, cut to 15 characters
    assert _in_thread(lambda: (name_os_thread(), _os_name())[1]) == "a_python_name_t"
    # os_named: the target runs with its thread named, and returns its result
    assert _in_thread(os_named(lambda: _os_name() + "!", "vl_wrapped")) == "vl_wrapped!"


@linux_only
def test_threads_started_in_a_named_block_keep_the_name():
    def run():
        before = _os_name()
        with os_thread_named("vl_block"):
            inside = current_os_thread_name()
            child = _in_thread(_os_name)         # a thread a library would start here
        return before, inside, child, _os_name()

    before, inside, child, after = _in_thread(run)
    assert inside == "vl_block" and child == "vl_block"
    assert after == before != "vl_block"


@linux_only
def test_onnx_runtime_pool_threads_carry_the_network_name():
    """The box network's session, made on two threads, starts its intra-op worker under
    ``vl_box_net``; the loading thread keeps its own name."""
    own = _os_name()
    before = os_thread_names().count("vl_box_net")
    net = BoxNet(DEFAULT_BOX_NET, 2)              # a session of its own, not the cached one
    assert os_thread_names().count("vl_box_net") == before + 1, os_thread_names()
    assert _os_name() == own
    del net


@linux_only
def test_the_box_network_thread_is_named():
    """The proposals' second thread (the box network beside the depth proposer) carries
    ``vl_proposals`` in ``top -H``."""
    boxes = FrameBoxes(proposal_threads=2)
    try:
        assert boxes._colour_pool.submit(_os_name).result(timeout=10) == "vl_proposals"
    finally:
        boxes.close()


@linux_only
def test_the_bench_reads_cpu_time_per_thread_name():
    """A busy thread named in the OS shows up in ``ProcStats.thread_cpu_s`` with the CPU it
    spent, and ``thread_cpu`` reports it as the busiest name over the window."""
    stop = threading.Event()

    def spin() -> None:
        name_os_thread("vl_busy_test")
        while not stop.is_set():
            sum(i * i for i in range(2000))

    stats = ProcStats(os.getpid())
    start = (time.time_ns(), None, None, stats.thread_cpu_s())
    worker = threading.Thread(target=spin, daemon=True)
    worker.start()
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 0.6:
            time.sleep(0.05)
        end = (time.time_ns(), None, None, stats.thread_cpu_s())
    finally:
        stop.set()
        worker.join(10)
    names = {name for name, _ in end[3].values()}
    assert "vl_busy_test" in names, names
    out = thread_cpu({"start": start, "end": end}, frames=10)
    busy = out["by_name"]["vl_busy_test"]
    assert busy["threads"] == 1 and busy["cores"] > 0.2, out
    assert busy["ms_per_frame"] == pytest.approx(busy["cores"] * _wall_s(start, end) * 100,
                                                 rel=0.05)
    assert next(iter(out["by_name"])) == "vl_busy_test", out   # busiest first


def _wall_s(start, end) -> float:
    """The window's wall time (s) of two marks."""
    return (end[0] - start[0]) / 1e9


def test_threads_are_grouped_and_a_window_is_differenced():
    start = (0, None, None, {1: ("vl_prepare", 1.0), 2: ("dds.shm.7001", 0.5)})
    end = (int(2e9), None, None, {1: ("vl_prepare", 2.0), 2: ("dds.shm.7001", 0.7),
                                  3: ("dds.ev.0", 0.1), 4: ("python", 0.4)})
    out = thread_cpu({"start": start, "end": end}, frames=50)["by_name"]
    assert list(out) == ["vl_prepare", "python", "dds"]
    assert out["vl_prepare"] == {"cores": 0.5, "ms_per_frame": 20.0, "threads": 1}
    assert out["dds"]["threads"] == 2 and out["dds"]["cores"] == pytest.approx(0.15)
    assert out["python"]["ms_per_frame"] == pytest.approx(8.0)   # started in the window
    assert thread_group("dds.udp.7001") == "dds" and thread_group("vl_dds") == "vl_dds"
    # no frames labelled: no per-frame figure, the cores still
    assert thread_cpu({"start": start, "end": end}, frames=0)["by_name"]["vl_prepare"][
        "ms_per_frame"] is None


def test_the_bench_times_the_colour_proposer_before_the_node_starts():
    """``offline_proposals``: a box count and a time (ms) per frame, with the frame's
    ``-p`` settings; the box network's load is not timed."""
    import numpy as np

    frame = np.full((120, 160, 3), 200, np.uint8)
    frame[40:80, 60:100] = (30, 60, 200)
    counts, times = offline_proposals([(frame, []), (frame, [])], {})
    assert counts[0] == counts[1] >= 1 and len(times) == 2
    assert all(0.0 < t < 10_000.0 for t in times)
    counts, _ = offline_proposals([(frame, [])], {"proposal_max_count": "0"})
    assert counts == [0]


def test_live_benches_default_to_the_shared_memory_profile():
    """The live benches give their processes the package's shared-memory Fast DDS profile
    when none is named (over loopback UDP the node waited for frames that never came), keep
    a named one, and take an empty value out of the environment (Fast DDS would print an
    XML error on stdout, into the bench's JSON)."""
    env: dict = {}
    assert use_dds_profile(env) == str(SHM_PROFILE) == env["FASTRTPS_DEFAULT_PROFILES_FILE"]
    assert SHM_PROFILE.is_file()
    env = {"FASTRTPS_DEFAULT_PROFILES_FILE": "/opt/my_profile.xml"}
    assert use_dds_profile(env) == "/opt/my_profile.xml" == env["FASTRTPS_DEFAULT_PROFILES_FILE"]
    env = {"FASTRTPS_DEFAULT_PROFILES_FILE": " "}
    assert use_dds_profile(env) == "" and "FASTRTPS_DEFAULT_PROFILES_FILE" not in env
