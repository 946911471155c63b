"""The phases of the live replay (``evaluation/replay.py``) one by one, without a node.

``plan_live`` (names, command, log folder), ``publish_paced`` (timing of the replay, driven
by real CDR-serialised images), ``drain`` (when to stop waiting for labels),
``collect_documents`` and ``node_counters`` (what the recording holds) and
``DiagnosticsLog`` (reading the node's /diagnostics messages). The whole live replay through
the real node is tested in test_replay_eval.py.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image

from vl_distill_ros.bags.bag_io import RawMessage
from vl_distill_ros.evaluation import replay
from vl_distill_ros.evaluation.replay import (DiagnosticsLog, PacedRun, Recording,
                                              ReplaySettings, collect_documents, drain,
                                              node_counters, plan_live, publish_paced)

T0 = 1_700_000_000 * 10**9


def raw_image(topic: str, stamp_ns: int, bag_ns: int) -> RawMessage:
    msg = Image(height=1, width=1, encoding="rgb8", step=3, data=bytes(3))
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    return RawMessage(topic, "sensor_msgs/msg/Image", bag_ns, serialize_message(msg))


def doc(camera: str, stamp_ns: int) -> str:
    sec, nanosec = divmod(stamp_ns, 10**9)
    return json.dumps({"header": {"stamp": {"sec": sec, "nanosec": nanosec}, "frame_id": "f"},
                       "camera": camera, "vocabulary_version": 1, "objects": []})


def test_plan_gives_compressed_topics_image_transports_names(tmp_path):
    """The node picks CompressedImage by a topic's last segment: a compressed topic the bag
    names otherwise is replayed under ``.../compressed`` (``.../compressedDepth`` for depth),
    so the node subscribes with the bag's type; raw and conventionally named topics keep
    their names."""
    comp, img = "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/Image"
    contents = SimpleNamespace(
        image_topics=["/cam/jpeg", "/wrist/image_raw/compressed", "/raw"],
        topics={"/cam/jpeg": comp, "/wrist/image_raw/compressed": comp, "/raw": img,
                "/cam/depth/png": comp, "/wrist/depth/compressedDepth": comp,
                "/raw/depth": img, "/cam/info": "sensor_msgs/msg/CameraInfo",
                "/wrist/info": "sensor_msgs/msg/CameraInfo",
                "/raw/info": "sensor_msgs/msg/CameraInfo"},
        depth_topics={"/cam/jpeg": "/cam/depth/png",
                      "/wrist/image_raw/compressed": "/wrist/depth/compressedDepth",
                      "/raw": "/raw/depth"},
        camera_info_topics={"/cam/jpeg": "/cam/info", "/wrist/image_raw/compressed":
                            "/wrist/info", "/raw": "/raw/info"})
    settings = ReplaySettings(namespace="n", log_dir=tmp_path, node_command=["x"])
    plan = plan_live(contents, settings, tmp_path / "m.vdb", None, replay.node_parameter_values())
    assert plan.replay_topic == {
        "/cam/jpeg": "/n/cam/jpeg/compressed",
        "/wrist/image_raw/compressed": "/n/wrist/image_raw/compressed", "/raw": "/n/raw",
        "/cam/depth/png": "/n/cam/depth/png/compressedDepth",
        "/wrist/depth/compressedDepth": "/n/wrist/depth/compressedDepth",
        "/raw/depth": "/n/raw/depth", "/cam/info": "/n/cam/info",
        "/wrist/info": "/n/wrist/info", "/raw/info": "/n/raw/info"}
    assert plan.image_types == {"/cam/jpeg": comp, "/wrist/image_raw/compressed": comp,
                                "/raw": img}
    assert plan.camera_map["/n/cam/jpeg/compressed"] == "/cam/jpeg"
    cmd = " ".join(plan.cmd)
    assert ('depth_topics:=["/n/cam/depth/png/compressedDepth", '
            '"/n/wrist/depth/compressedDepth", "/n/raw/depth"]') in cmd


def test_plan_namespaces_the_topics_and_names_the_node(tmp_path):
    contents = SimpleNamespace(image_topics=["/camera/image_raw", "wrist"])
    settings = ReplaySettings(namespace="ns/", log_dir=tmp_path, device="cpu",
                              params={"top_k": 2}, node_command=["my-node"])
    values = replay.node_parameter_values({"top_k": 2})
    plan = plan_live(contents, settings, tmp_path / "m.vdb", None, values)
    assert plan.namespace == "/ns" and plan.fqn == "/ns/vl_distill_node"
    assert plan.labels_topic == "/ns/vl_distill_node/labels"
    assert plan.replay_topic == {"/camera/image_raw": "/ns/camera/image_raw",
                                 "wrist": "/ns/wrist"}
    assert plan.camera_map["/ns/wrist"] == "wrist"
    assert plan.cmd[0] == "my-node" and plan.base_cmd == ["my-node"]
    cmd = " ".join(plan.cmd)
    assert "__ns:=/ns" in cmd and "top_k:=2" in cmd and "device:=\"cpu\"" in cmd
    assert 'image_topics:=["/ns/camera/image_raw", "/ns/wrist"]' in cmd
    assert "vocabulary_file" not in cmd
    assert plan.log_path == tmp_path / "node.log" and plan.tmp_log is None
    assert plan.env["ROS_LOG_DIR"]
    # the close pass's cameras as the node will see them: the replayed topics
    close = replay.node_parameter_values({"proposal_box_net_close_width": 240,
                                          "proposal_box_net_close_topics": ["/wrist"]})
    plan = plan_live(contents, settings, tmp_path / "m.vdb", None, close)
    assert 'proposal_box_net_close_topics:=["/ns/wrist"]' in " ".join(plan.cmd)
    with pytest.raises(replay.InputError, match="are not image topics of the bag"):
        plan_live(contents, settings, tmp_path / "m.vdb", None, replay.node_parameter_values(
            {"proposal_box_net_close_topics": ["/arm"]}))
    # without a log folder: a temporary one, removed after a completed replay
    plan = plan_live(contents, ReplaySettings(), tmp_path / "m.vdb", None, values)
    assert plan.tmp_log and Path(plan.tmp_log).is_dir() and plan.namespace.startswith(
        "/vl_replay_")
    Path(plan.tmp_log).rmdir()


def test_publish_paced_follows_bag_time_divided_by_rate():
    msgs = [raw_image("/cam", T0 + i * 10**8, 5 * 10**9 + i * 2 * 10**8) for i in range(5)]
    sent: list[tuple[float, str]] = []
    checks: list[int] = []
    progress: list[int] = []
    run = publish_paced(msgs, 2.0, lambda topic, data: sent.append((time.monotonic(), topic)),
                        checks.append, progress.append)
    # bag spacing 0.2 s at rate 2 -> frame i at t0 + 0.1 i: never earlier (later only on a
    # starved CPU)
    due = [run.t_start + 0.1 * i for i in range(5)]
    assert all(t >= d - 1e-3 for (t, _), d in zip(sent, due)), (sent, due)
    assert all(t - d < 1.0 for (t, _), d in zip(sent, due)), (sent, due)
    assert run.frames == [("/cam", T0 + i * 10**8) for i in range(5)]
    assert set(run.pub_time) == set(run.frames) and run.t_last >= run.t_start
    assert progress == [1, 2, 3, 4, 5] and checks and max(checks) <= 4
    # a check that raises aborts the replay
    with pytest.raises(RuntimeError, match="node gone"):
        publish_paced(msgs, 1.0, lambda *a: None,
                      lambda n: (_ for _ in ()).throw(RuntimeError("node gone")))
    # a message that is not an Image: bad input
    bad = RawMessage("/cam", "sensor_msgs/msg/Image", 0, b"\x07\x00")
    with pytest.raises(replay.InputError, match="corrupt bag"):
        publish_paced([bad], 1.0, lambda *a: None, lambda n: None)


def test_partners_recorded_just_after_their_frame_are_sent_before_it():
    """Depth (or a CameraInfo) recorded up to the tolerance after its colour frame reaches the
    node before the frame, at the frame's bag time (at --rate 0.2 a partner 10 ms late in
    bag time was 50 ms late and the frame went colour only, where --offline paired it)."""
    from vl_distill_ros.evaluation.live_replay import partners_first

    ms = 10**6

    def raw(topic: str, bag_ms: int) -> RawMessage:
        return RawMessage(topic, "sensor_msgs/msg/Image", bag_ms * ms, b"")

    msgs = [raw("/cam", 0), raw("/depth", 10), raw("/info", 15), raw("/depth", 30),
            raw("/cam", 100), raw("/depth", 100), raw("/cam", 200), raw("/info", 250)]
    out = list(partners_first(iter(msgs), {"/cam"}, 20 * ms))
    assert [(m.topic, m.timestamp_ns // ms) for m in out] == [
        ("/depth", 0), ("/info", 0), ("/cam", 0), ("/depth", 30), ("/depth", 100),
        ("/cam", 100), ("/cam", 200), ("/info", 250)]
    assert list(partners_first(iter(msgs), {"/cam"}, 0)) == msgs
    # a tolerance of a frame period or more: only the frame's own partners go in front, not
    # the next frames' too (a burst the node's qos_depth 1 queue overwrote)
    msgs = [raw("/depth", 0), raw("/cam", 0), raw("/depth", 100), raw("/cam", 100),
            raw("/depth", 200), raw("/cam2", 200), raw("/cam", 200), raw("/depth2", 205)]
    out = list(partners_first(iter(msgs), {"/cam", "/cam2"}, 150 * ms,
                              {"/depth": "/cam", "/depth2": "/cam2"}))
    assert [(m.topic, m.timestamp_ns // ms) for m in out] == [
        ("/depth", 0), ("/cam", 0), ("/depth", 100), ("/cam", 100), ("/depth", 200),
        ("/depth2", 200), ("/cam2", 200), ("/cam", 200)]


def test_drain_stops_when_everything_is_labelled_or_at_the_timeout():
    run = PacedRun(frames=[("/cam", T0), ("/cam", T0 + 1)], t_start=time.monotonic(),
                   t_last=time.monotonic())
    run.pub_time = {k: run.t_start for k in run.frames}
    camera_map = {"/ns/cam": "/cam"}
    arrivals = [(time.monotonic(), doc("/ns/cam", T0)), (time.monotonic(), "not json"),
                (time.monotonic(), doc("/ns/cam", T0 + 1))]
    start = time.monotonic()
    drain(arrivals, run, camera_map, 30.0, lambda: None)
    assert time.monotonic() - start < 1.5  # not the 2 s quiet period: everything arrived
    # one frame never labelled: waits for the timeout (shorter than the quiet period)
    calls: list[int] = []
    start = time.monotonic()
    drain(arrivals[:1], run, camera_map, run.t_last - start + 0.3,
          lambda: calls.append(1))
    assert 0.2 <= time.monotonic() - start < 1.5 and calls
    # a frame whose image cannot be decoded is never labelled (the node drops it): not
    # waited for (one such frame cost the whole quiet period, >= 2 s)
    run.undecodable.add(("/cam", T0 + 1), "unsupported image encoding '32FC1'")
    start = time.monotonic()
    drain(arrivals[:1], run, camera_map, 30.0, lambda: None)
    assert time.monotonic() - start < 1.0


def test_collect_keeps_the_first_document_per_frame():
    frames = [("/cam", T0), ("/cam", T0 + 1)]
    run = PacedRun(frames=frames, pub_time={frames[0]: 10.0, frames[1]: 10.1}, t_start=10.0,
                   t_last=10.1)
    arrivals = [(10.05, doc("/ns/cam", T0)), (10.06, doc("/ns/cam", T0)),
                (10.2, doc("/ns/cam", T0 + 99)), (10.3, "{broken")]
    rec = Recording(mode="live")
    collect_documents(rec, arrivals, run, {"/ns/cam": "/cam"})
    assert list(rec.labels) == [frames[0]] and rec.duplicates == 1 and rec.unexpected == 2
    assert rec.latencies_s[frames[0]] == pytest.approx(0.05)
    assert len(rec.rows) == 3 and rec.rows[2]["latency_s"] is None
    assert rec.rows[0]["published_s"] == 0.0 and rec.duration_s == pytest.approx(0.3)
    assert node_counters({"a": {"received": "3", "dropped": "1", "processed_behind": "2"},
                          "b": {"received": "2"}}) == {
        "received": 5, "processed": 0, "dropped": 1, "bad_frames": 0, "errors": 0,
        "processed_behind": 2, "processed_behind_student": 0, "depth_received": 0,
        "camera_info_received": 0}
    assert node_counters({"a": {"received": "x"}})["received"] is None


def test_a_frame_key_published_twice_gets_its_own_latency_and_is_waited_for_twice():
    """A bag whose stamps start over (a looped recording, recordings put together) publishes
    one (camera, stamp) key twice: the first pass's labels were timed from the second
    pass's publication (latency p50 of minus the loop's length in report.json), and the
    drain ended as soon as the second pass was published, its labels not waited for."""
    msgs = [raw_image("/cam", T0 + i * 10**8, 5 * 10**9 + i * 10**8) for i in range(2)]
    msgs += [raw_image("/cam", T0 + i * 10**8, 5 * 10**9 + (3 + i) * 10**8) for i in range(2)]
    run = publish_paced(msgs, 1.0, lambda *a: None, lambda n: None)
    assert len(run.frames) == 4 and len(set(run.frames)) == 2
    k0, k1 = ("/cam", T0), ("/cam", T0 + 10**8)
    first, second = run.pub_times[k0]
    arrivals = [(first + 0.05, doc("/ns/cam", T0)),
                (run.pub_times[k1][0] + 0.05, doc("/ns/cam", T0 + 10**8)),
                (second + 0.05, doc("/ns/cam", T0))]
    rec = Recording(mode="live")
    collect_documents(rec, arrivals, run, {"/ns/cam": "/cam"})
    assert rec.latencies_s[k0] == pytest.approx(0.05, abs=1e-6)
    assert [r["latency_s"] for r in rec.rows] == pytest.approx([0.05, 0.05, 0.05], abs=1e-6)
    # the second pass of the second key is not labelled yet: the drain waits (for the
    # quiet period here), not returning at once
    start = time.monotonic()
    drain(arrivals, run, {"/ns/cam": "/cam"}, run.t_last - start + 0.5, lambda: None)
    assert time.monotonic() - start >= 0.4


def test_diagnostics_log_reads_only_its_node():
    log = DiagnosticsLog("/ns/vl_distill_node")

    def status(hw: str, name: str, **values) -> DiagnosticStatus:
        return DiagnosticStatus(level=DiagnosticStatus.WARN, name=name, hardware_id=hw,
                                message="m", values=[KeyValue(key=k, value=str(v))
                                                     for k, v in values.items()])

    other = DiagnosticArray(status=[status("/other", "/other: model and vocabulary")])
    log.on_message(other)
    assert not log.seen() and log.received() == 0
    mine = DiagnosticArray(status=[
        status("/ns/vl_distill_node", "/ns/vl_distill_node: model and vocabulary",
               vocabulary_size=6),
        status("/ns/vl_distill_node", "/ns/vl_distill_node: camera /ns/cam", topic="/ns/cam",
               received=4)])
    log.on_message(mine)
    assert log.seen() and log.received() == 1
    assert log.node["level"] == 1 and log.node["vocabulary_size"] == "6"
    assert log.cameras == {"/ns/cam": {"topic": "/ns/cam", "received": "4"}}


def test_drain_waits_the_whole_timeout_for_a_node_that_has_not_answered_yet():
    """Before any label, the 2 s quiet rule ended the drain regardless of --drain-timeout: a
    node slow on its first frame (a warming device) was 'the node never answered' (exit 3)."""
    run = PacedRun(frames=[("/cam", T0)], t_start=time.monotonic(), t_last=time.monotonic())
    run.pub_time = {run.frames[0]: run.t_start}
    start = time.monotonic()
    drain([], run, {"/ns/cam": "/cam"}, 3.0, lambda: None)
    assert time.monotonic() - start >= 2.9


def test_depth_and_camera_info_lost_on_the_way_are_counted():
    """Live, depth or CameraInfo that never reached the node left its frames colour only
    (labels unlike --offline's) while the report said nothing was lost."""
    from vl_distill_ros.evaluation.report import _side_topic_counts

    info = "sensor_msgs/msg/CameraInfo"
    msgs = [raw_image("/cam", T0, 0), RawMessage("/depth", "sensor_msgs/msg/Image", 1, b""),
            RawMessage("/info", info, 2, b""), RawMessage("/depth", "sensor_msgs/msg/Image",
                                                          3, b"")]
    run = publish_paced(msgs, 1000.0, lambda *a: None, lambda n: None, frame_topics={"/cam"})
    assert run.side_published == {"/depth": 2, "/info": 1} and len(run.frames) == 1
    contents = SimpleNamespace(depth_topics={"/cam": "/depth"},
                               camera_info_topics={"/cam": "/info"})
    frames: dict = {}
    _side_topic_counts(frames, contents, run.side_published,
                       {"depth_received": 1, "camera_info_received": 1})
    assert frames == {"depth_published": 2, "node_depth_received": 1,
                      "depth_lost_in_transport": 1, "camera_info_published": 1,
                      "node_camera_info_received": 1, "camera_info_lost_in_transport": 0}


def test_the_live_depth_note_says_which_cameras_get_the_bags_depth():
    """The report's node.depth_input: depth for every camera, for some of them (the node
    gets "" for the others; it took depth for every camera or none, so such a bag ran colour
    only live), or why none (no CameraInfo beside the depth, --no-depth)."""
    from vl_distill_ros.evaluation.live_replay import _depth_plan, _live_depth_note

    contents = SimpleNamespace(image_topics=["/a", "/b"], depth_topics={"/a": "/a/depth"},
                               camera_info_topics={"/a": "/a/info"})
    assert _depth_plan(contents, ReplaySettings(), ["/a", "/b"]) == {
        "depth_topics": ["/a/depth", ""], "camera_info_topics": ["/a/info", ""]}
    assert _depth_plan(contents, ReplaySettings(depth=False), ["/a", "/b"]) == {
        "depth_topics": [], "camera_info_topics": []}
    plan = SimpleNamespace(side_topics={})
    assert _live_depth_note(contents, ReplaySettings(), plan).startswith(
        "not used: no camera has both a depth topic and a CameraInfo topic")
    assert _live_depth_note(contents, ReplaySettings(depth=False), plan) == "--no-depth"
    plan.side_topics = {"/a/depth": "sensor_msgs/msg/Image"}
    assert _live_depth_note(contents, ReplaySettings(), plan) == \
        "used for 1 of the 2 cameras (the others have none)"
    contents.image_topics = ["/a"]
    assert _live_depth_note(contents, ReplaySettings(), plan) == "used"
