"""vl_distill_lifecycle_node: the managed node's transitions, driven over DDS as
``ros2 lifecycle set`` and nav2's lifecycle manager drive them (lifecycle_msgs'
``~/change_state`` and ``~/get_state`` services), with test_node.py's colour bundle."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.parameter import Parameter

from test_node import (NAMES, NEW_LABEL, RED, YELLOW, Tester, colour_image, make_msg,
                       module_bundle, module_tester, publish_until_labelled, running_node, wait_for)
from helpers import os_thread_names
from vl_distill_ros.ros.lifecycle_node import VlDistillLifecycleNode

STRING_ARRAY = Parameter.Type.STRING_ARRAY

tester = module_tester("vl_distill_lifecycle_tester")
bundle_path = module_bundle()  # test_node.py's colour bundle


def managed_node(ctx, namespace: str, bundle: Path, tmp: Path, **overrides):
    """test_node.running_node with a VlDistillLifecycleNode."""
    return running_node(ctx, namespace, bundle, tmp, node_class=VlDistillLifecycleNode,
                        **overrides)


def change(tester: Tester, fqn: str, transition: int) -> bool:
    """``ros2 lifecycle set FQN TRANSITION``: whether the node took it."""
    return tester.call(ChangeState, f"{fqn}/change_state", ChangeState.Request(
        transition=Transition(id=transition)), timeout=60.0).success


def state(tester: Tester, fqn: str) -> str:
    """``ros2 lifecycle get FQN``: the current state's label."""
    return tester.call(GetState, f"{fqn}/get_state", GetState.Request()).current_state.label


def _workers() -> int:
    return sum(name in ("vl_prepare", "vl_classify") for name in os_thread_names())


def test_managed_node_takes_frames_only_while_active(ctx, tester, bundle_path, tmp_path):
    ns, fqn = "/lc", "/lc/vl_distill_node"
    labels = tester.watch_labels(f"{fqn}/labels")
    yellow = make_msg("rgb8", colour_image(24, 32, YELLOW), "lc-yellow", 1)
    workers_before = _workers()
    with managed_node(ctx, ns, bundle_path, tmp_path):
        assert state(tester, fqn) == "unconfigured"
        # unconfigured: parameters are served, nothing else exists
        assert tester.get_params(fqn, ["crop_source"]) == {"crop_source": "full_frame"}
        assert tester.node.count_publishers(f"{fqn}/labels") == 0
        assert tester.node.count_subscribers(f"{ns}/image") == 0

        assert change(tester, fqn, Transition.TRANSITION_CONFIGURE)
        assert state(tester, fqn) == "inactive"
        assert wait_for(lambda: tester.node.count_publishers(f"{fqn}/labels") == 1, 5.0)
        assert tester.node.count_subscribers(f"{ns}/image") == 0
        assert _workers() == workers_before

        assert change(tester, fqn, Transition.TRANSITION_ACTIVATE)
        assert state(tester, fqn) == "active"
        assert _workers() == workers_before + 2
        doc = publish_until_labelled(tester, f"{ns}/image", yellow, labels)
        assert doc["objects"][0]["label"] == "banana"

        # inactive: the cameras are let go, the model stays; a vocabulary change is applied
        assert change(tester, fqn, Transition.TRANSITION_DEACTIVATE)
        assert state(tester, fqn) == "inactive"
        assert wait_for(lambda: tester.node.count_subscribers(f"{ns}/image") == 0, 5.0)
        assert _workers() == workers_before
        assert all(r.successful for r in tester.set_params(
            fqn, [Parameter("labels", STRING_ARRAY, NAMES + [NEW_LABEL])]))
        red = make_msg("rgb8", colour_image(24, 32, RED), "lc-red", 2)
        seen = len(labels)
        for _ in range(8):
            tester.publish(f"{ns}/image", red)
        assert not wait_for(lambda: len(labels) > seen, 1.0), "labelled while inactive"

        assert change(tester, fqn, Transition.TRANSITION_ACTIVATE)
        assert wait_for(lambda: tester.get_params(fqn, ["labels"])["labels"]
                        == NAMES + [NEW_LABEL], 10.0)
        doc = publish_until_labelled(tester, f"{ns}/image", red, labels, timeout=30.0)
        assert doc["objects"][0]["label"] == NEW_LABEL

        # cleanup frees the model and the outputs; configuring again starts afresh
        assert change(tester, fqn, Transition.TRANSITION_DEACTIVATE)
        assert change(tester, fqn, Transition.TRANSITION_CLEANUP)
        assert state(tester, fqn) == "unconfigured"
        assert wait_for(lambda: tester.node.count_publishers(f"{fqn}/labels") == 0, 5.0)
        assert change(tester, fqn, Transition.TRANSITION_CONFIGURE)
        assert change(tester, fqn, Transition.TRANSITION_ACTIVATE)
        again = make_msg("rgb8", colour_image(24, 32, YELLOW), "lc-again", 3)
        doc = publish_until_labelled(tester, f"{ns}/image", again, labels)
        assert doc["objects"][0]["label"] == "banana"
        assert _workers() == workers_before + 2

        assert change(tester, fqn, Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert state(tester, fqn) == "finalized"
        assert _workers() == workers_before
        assert wait_for(lambda: tester.node.count_subscribers(f"{ns}/image") == 0, 5.0)


def test_a_failed_configure_leaves_the_node_unconfigured_and_fixable(
        ctx, tester, bundle_path, tmp_path):
    ns, fqn = "/lcbad", "/lcbad/vl_distill_node"
    labels = tester.watch_labels(f"{fqn}/labels")
    with managed_node(ctx, ns, bundle_path, tmp_path,
                      vocabulary_file=str(tmp_path / "missing.yaml")):
        assert not change(tester, fqn, Transition.TRANSITION_CONFIGURE)
        assert state(tester, fqn) == "unconfigured"
        assert tester.node.count_publishers(f"{fqn}/labels") == 0
        # the plain node would have exited; here the parameter is fixed and configured again
        assert all(r.successful for r in tester.set_params(
            fqn, [Parameter("vocabulary_file", value="")]))
        assert change(tester, fqn, Transition.TRANSITION_CONFIGURE)
        assert change(tester, fqn, Transition.TRANSITION_ACTIVATE)
        doc = publish_until_labelled(tester, f"{ns}/image", make_msg(
            "rgb8", colour_image(24, 32, YELLOW), "lcbad", 4), labels)
        assert doc["objects"][0]["label"] == "banana"
        assert doc["objects"][0]["top_k"], doc


def test_lifecycle_console_script_help_names_the_transitions():
    exe = Path(sys.executable).with_name("vl_distill_lifecycle_node")
    if not exe.exists():
        pytest.skip("console script not installed (pip install -e .)")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: vl_distill_lifecycle_node")
    assert "configure" in out.stdout and "model_path" in out.stdout


def test_configure_cleanup_cycles_leave_no_threads_behind(ctx, bundle_path, tmp_path):
    """Each cleanup stops every thread its configure and activate started (the text
    encoder's too): a robot that cycles the node does not pile threads and models up."""
    import threading

    node = VlDistillLifecycleNode(namespace="/lccycle", context=ctx, parameter_overrides=[
        Parameter("model_path", value=str(bundle_path)),
        Parameter("text_cache_dir", value=str(tmp_path / "cache")),
        Parameter("vocabulary_store", value=str(tmp_path / "store.yaml"))])
    try:
        before = sorted(t.name for t in threading.enumerate())
        for _ in range(3):
            for trigger in (node.trigger_configure, node.trigger_activate,
                            node.trigger_deactivate, node.trigger_cleanup):
                assert trigger().name == "SUCCESS", trigger
            assert wait_for(lambda: sorted(t.name for t in threading.enumerate()) == before,
                            5.0), sorted(t.name for t in threading.enumerate())
        assert node.pipeline is None and node.bundle is None and node.text_service is None
    finally:
        node.destroy_node()


def test_cleanup_removes_the_parameter_callbacks(ctx, bundle_path, tmp_path):
    """rclpy's add_*_set_parameters_callback return None, and cleanup removed what they
    returned: after cleanup a parameter set hit the old callbacks (assert vocabulary is not
    None) and killed the process; each configure piled another set of callbacks up, and the
    start-up vocabulary was embedded again (vocabulary_version 2 with no change)."""
    node = VlDistillLifecycleNode(namespace="/lccb", context=ctx, parameter_overrides=[
        Parameter("model_path", value=str(bundle_path)),
        Parameter("text_cache_dir", value=str(tmp_path / "cache")),
        Parameter("vocabulary_store", value=str(tmp_path / "store.yaml"))])

    def callbacks() -> tuple[int, int, int]:
        return (len(node._pre_set_parameters_callbacks), len(node._on_set_parameters_callbacks),
                len(node._post_set_parameters_callbacks))

    try:
        unconfigured = callbacks()
        for _ in range(3):
            assert node.trigger_configure().name == "SUCCESS"
            assert callbacks() == tuple(n + 1 for n in unconfigured)
            assert node.pipeline.active.version == 1
            assert node.trigger_cleanup().name == "SUCCESS"
            assert callbacks() == unconfigured
            (result,) = node.set_parameters([Parameter("top_k", value=5)])
            assert result.successful
    finally:
        node.destroy_node()


def test_an_unconfigured_node_checks_runtime_parameters(ctx, bundle_path, tmp_path):
    """Before configure the node's checks were not registered: crop_source 'bogus', three
    integers as rois or duplicate labels were accepted, and the next configure failed.
    They are rejected with the reason; good values are taken and configure uses them."""
    node = VlDistillLifecycleNode(namespace="/lcun", context=ctx, parameter_overrides=[
        Parameter("model_path", value=str(bundle_path)),
        Parameter("text_cache_dir", value=str(tmp_path / "cache")),
        Parameter("vocabulary_store", value=str(tmp_path / "store.yaml"))])
    try:
        before = node.get_parameter("crop_source").value
        for bad, reason in (([Parameter("crop_source", value="bogus")], "crop_source"),
                            ([Parameter("rois", Parameter.Type.INTEGER_ARRAY, [1, 2, 3])],
                             "4 integers"),
                            ([Parameter("labels", STRING_ARRAY, ["mug", "Mug"])], "duplicate"),
                            ([Parameter("vocabulary_file", value=str(tmp_path / "none.yaml"))],
                             "not found"),
                            ([Parameter("score_temperature", value=1e-310)], "0.0001")):
            (result,) = node.set_parameters(bad)
            assert not result.successful and reason in result.reason, (bad, result.reason)
        assert node.get_parameter("crop_source").value == before
        assert node.set_parameters_atomically([
            Parameter("crop_source", value="rois"),
            Parameter("rois", Parameter.Type.INTEGER_ARRAY, [0, 0, 8, 8])]).successful
        (result,) = node.set_parameters([Parameter("labels", STRING_ARRAY, ["mug", "zebra"])])
        assert result.successful
        assert node.trigger_configure().name == "SUCCESS"
        assert node.pipeline.settings.crop_source == "rois"
        assert node.vocabulary.requested.names == ["mug", "zebra"]
    finally:
        node.destroy_node()


def test_label_info_waits_for_activation_with_real_vision_msgs(
        ctx, tester, bundle_path, tmp_path):
    """An inactive node publishes nothing: the vocabulary's ``~/label_info`` (vision_msgs,
    latched) is sent on activation, and a vocabulary changed while inactive on the next."""
    vision_msgs = pytest.importorskip(
        "vision_msgs.msg", reason="vision_msgs is not on PyPI; build it with "
        "../shared/tools/vision_msgs_build.sh and source its env.sh to run this")
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    ns, fqn = "/lcinfo", "/lcinfo/vl_distill_node"
    infos: list = []
    tester.node.create_subscription(
        vision_msgs.LabelInfo, f"{fqn}/label_info", infos.append,
        QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                   durability=DurabilityPolicy.TRANSIENT_LOCAL))

    def names():
        return [c.class_name for c in infos[-1].class_map] if infos else None

    with managed_node(ctx, ns, bundle_path, tmp_path):
        assert change(tester, fqn, Transition.TRANSITION_CONFIGURE)
        assert wait_for(lambda: tester.node.count_publishers(f"{fqn}/label_info") == 1, 5.0)
        assert not wait_for(lambda: infos, 1.5), "label_info published while inactive"
        assert change(tester, fqn, Transition.TRANSITION_ACTIVATE)
        assert wait_for(lambda: names() == NAMES, 10.0), names()
        assert change(tester, fqn, Transition.TRANSITION_DEACTIVATE)
        seen = len(infos)
        assert all(r.successful for r in tester.set_params(
            fqn, [Parameter("labels", STRING_ARRAY, ["zebra", "banana"])]))
        assert not wait_for(lambda: len(infos) > seen, 1.5), "label_info while inactive"
        assert change(tester, fqn, Transition.TRANSITION_ACTIVATE)
        assert wait_for(lambda: names() == ["zebra", "banana"], 30.0), names()
