"""vl_distill_node against what the ``ros2`` CLI sends, over DDS (issue 10).

``ros2cli`` is not installable here, so the requests are made with the rclpy calls it makes:
``ros2 param dump`` lists the parameters, sorts the names and gets their values;
``ros2 param load`` is :meth:`AsyncParameterClient.load_parameter_file` (ONE
``SetParameters`` request, parameters in file order, an empty YAML list typed
``BOOL_ARRAY``); ``ros2 param set NAME "[]"`` sends an empty ``BOOL_ARRAY``.

``~/detections`` and ``~/label_info`` are checked against the real vision_msgs message types
when they can be imported (not on PyPI: build them with ``../shared/tools/vision_msgs_build.sh``
and source its ``env.sh``); those tests skip otherwise.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from test_node import (DESCRIPTIONS, NAMES, RED, YELLOW, Tester, colour_image, make_msg,
                       module_bundle, module_tester, publish_until_labelled, running_node, wait_for)

REPO = Path(__file__).resolve().parents[1]
STRING_ARRAY = Parameter.Type.STRING_ARRAY


#: The other node (test_node.Tester): publishes, subscribes, calls services.
tester = module_tester("vl_distill_cli_tester")
bundle_path = module_bundle()  # test_node.py's colour bundle


def _done(future, timeout: float = 15.0):
    assert wait_for(future.done, timeout), "no answer"
    return future.result()


def _client(tester: Tester, fqn: str) -> AsyncParameterClient:
    client = AsyncParameterClient(tester.node, fqn)
    assert client.wait_for_services(timeout_sec=10.0)
    return client


def _value(v: ParameterValue):
    """A ParameterValue as ``ros2 param dump`` writes it (ros2param's get_value)."""
    return Parameter.from_parameter_msg(ParameterMsg(name="x", value=v)).value


def _dump(tester: Tester, fqn: str, path: Path) -> dict:
    """``ros2 param dump``: every parameter, names sorted, into a YAML file."""
    client = _client(tester, fqn)
    names = sorted(_done(client.list_parameters()).result.names)
    values = _done(client.get_parameters(names)).values
    params = {n: (list(_value(v)) if isinstance(_value(v), (list, tuple)) or
                  hasattr(_value(v), "tolist") else _value(v)) for n, v in zip(names, values)}
    path.write_text(yaml.safe_dump({fqn: {"ros__parameters": params}}))
    return params


def _load(tester: Tester, fqn: str, path: Path) -> dict[str, object]:
    """``ros2 param load``: name -> SetParametersResult, in the file's order."""
    from rclpy.parameter import parameter_dict_from_yaml_file

    names = list(parameter_dict_from_yaml_file(str(path), True))
    results = _done(_client(tester, fqn).load_parameter_file(str(path), True)).results
    assert len(results) == len(names)
    return dict(zip(names, results))


def _active_names(node) -> list[str]:
    return node.pipeline.active.vocabulary.names


def test_dump_then_load_restores_labels_and_descriptions_exactly(ctx, tester, bundle_path,
                                                                 tmp_path):
    with running_node(ctx, "/dump", bundle_path, tmp_path) as node:
        fqn = node.get_fully_qualified_name()
        vocab = (["mug", "banana", "power drill"],
                 ["A ceramic cup with a handle.", "A curved yellow fruit.", ""])
        res = tester.set_params(fqn, [Parameter("labels", STRING_ARRAY, vocab[0]),
                                      Parameter("descriptions", STRING_ARRAY, vocab[1]),
                                      Parameter("top_k", value=2),
                                      Parameter("crop_source", value="rois"),
                                      Parameter("rois", Parameter.Type.INTEGER_ARRAY,
                                                [0, 0, 8, 8])], atomic=True)
        assert res.successful, res.reason
        assert wait_for(lambda: _active_names(node) == vocab[0], 30.0)
        dumped = _dump(tester, fqn, tmp_path / "dump.yaml")
        order = list(dumped)
        assert order.index("descriptions") < order.index("labels")  # what broke the load
        assert order.index("crop_source") < order.index("rois")
        # the node moves on: another vocabulary (4 labels), other settings
        res = tester.set_params(fqn, [Parameter("labels", STRING_ARRAY,
                                                ["apple", "mug", "zebra", "lemon"]),
                                      Parameter("crop_source", value="full_frame"),
                                      Parameter("rois", Parameter.Type.INTEGER_ARRAY, []),
                                      Parameter("top_k", value=3)], atomic=True)
        assert res.successful, res.reason
        assert wait_for(lambda: len(_active_names(node)) == 4, 30.0)

        results = _load(tester, fqn, tmp_path / "dump.yaml")
        for name, result in results.items():
            if node.describe_parameter(name).read_only:
                assert not result.successful and "read-only" in result.reason, name
            else:
                assert result.successful, (name, result.reason)
        got = tester.get_params(fqn, ["labels", "descriptions", "vocabulary_file", "top_k",
                                      "crop_source", "rois"])
        assert got["labels"] == vocab[0] and got["descriptions"] == vocab[1]
        assert got["vocabulary_file"] == "" and got["top_k"] == 2
        assert got["crop_source"] == "rois" and list(got["rois"]) == [0, 0, 8, 8]
        assert wait_for(lambda: _active_names(node) == vocab[0], 30.0)
        assert [lb.description for lb in node.pipeline.active.vocabulary] == vocab[1]


def test_shipped_config_loads_at_runtime_without_type_errors(ctx, tester, bundle_path,
                                                             tmp_path):
    """``ros2 param load NODE config/vl_distill.yaml``: empty lists are accepted, the runtime
    parameters take its defaults (labels: [] = the bundle's vocabulary with descriptions),
    only the read-only ones fail, as read-only."""
    with running_node(ctx, "/cfgload", bundle_path, tmp_path, top_k=5,
                      labels=["zebra", "mug"]) as node:
        fqn = node.get_fully_qualified_name()
        assert wait_for(lambda: _active_names(node) == ["zebra", "mug"], 30.0)
        results = _load(tester, fqn, REPO / "config" / "vl_distill.yaml")
        assert "labels" in results and "rois" in results
        for name, result in results.items():
            assert "type" not in result.reason.lower(), (name, result.reason)
            if node.describe_parameter(name).read_only:
                assert not result.successful and "read-only" in result.reason, name
            else:
                assert result.successful, (name, result.reason)
        got = tester.get_params(fqn, ["labels", "descriptions", "top_k", "rois"])
        assert got["labels"] == NAMES and got["descriptions"] == DESCRIPTIONS
        assert got["top_k"] == 3 and list(got["rois"]) == []
        assert wait_for(lambda: _active_names(node) == NAMES, 30.0)


def _empty_list(name: str) -> ParameterMsg:
    """``ros2 param set NAME "[]"``: an empty list, typed BOOL_ARRAY by ros2param."""
    return ParameterMsg(name=name, value=ParameterValue(type=ParameterType.PARAMETER_BOOL_ARRAY,
                                                        bool_array_value=[]))


def test_empty_lists_undeclared_and_reserved_names(ctx, tester, bundle_path, tmp_path):
    with running_node(ctx, "/empty", bundle_path, tmp_path) as node:
        fqn = node.get_fully_qualified_name()
        client = _client(tester, fqn)
        (res,) = _done(client.set_parameters([_empty_list("descriptions")])).results
        assert res.successful, res.reason
        assert tester.get_params(fqn, ["descriptions"])["descriptions"] == []
        (res,) = _done(client.set_parameters([_empty_list("rois")])).results
        assert res.successful, res.reason
        res = _done(client.set_parameters_atomically([_empty_list("descriptions")])).result
        assert res.successful, res.reason
        # labels "[]": the bundle's vocabulary, with its descriptions
        res = tester.set_params(fqn, [Parameter("labels", STRING_ARRAY, ["mug", "zebra"])])[0]
        assert res.successful and wait_for(lambda: _active_names(node) == ["mug", "zebra"], 30)
        (res,) = _done(client.set_parameters([_empty_list("labels")])).results
        assert res.successful, res.reason
        got = tester.get_params(fqn, ["labels", "descriptions"])
        assert got == {"labels": NAMES, "descriptions": DESCRIPTIONS}
        assert wait_for(lambda: _active_names(node) == NAMES, 30.0)
        # an undeclared parameter: the reason names it (rclpy says "[]")
        bogus = ParameterMsg(name="lables", value=ParameterValue(
            type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=["mug"]))
        (res,) = _done(client.set_parameters([bogus])).results
        assert not res.successful
        assert res.reason == f"{fqn} has no parameter 'lables'; `ros2 param list` shows its " \
                             "parameters"
        # the open-set label is reserved
        res = tester.set_params(fqn, [Parameter("labels", STRING_ARRAY, ["mug", "Unknown"])])[0]
        assert not res.successful and "'Unknown' is reserved" in res.reason
        assert tester.get_params(fqn, ["labels"])["labels"] == NAMES


def test_image_annotated_is_advertised_only_while_enabled(ctx, tester, bundle_path, tmp_path):
    with running_node(ctx, "/ann", bundle_path, tmp_path) as node:
        fqn = node.get_fully_qualified_name()
        topic = f"{fqn}/image_annotated"
        labels = tester.watch_labels(f"{fqn}/labels")
        publish_until_labelled(tester, "/ann/image",
                               make_msg("rgb8", colour_image(30, 40, YELLOW), "a0", 1), labels)
        assert tester.node.count_publishers(topic) == 0
        assert tester.set_params(fqn, [Parameter("publish_annotated", value=True)])[0].successful
        assert wait_for(lambda: tester.node.count_publishers(topic) == 1, 10.0)
        images = tester.watch_images(topic)
        end = time.monotonic() + 20.0
        while not images and time.monotonic() < end:
            tester.publish("/ann/image", make_msg("rgb8", colour_image(30, 40, YELLOW), "a1", 2))
            wait_for(lambda: bool(images), 0.25)
        assert images and images[-1].encoding == "rgb8"
        assert tester.set_params(fqn, [Parameter("publish_annotated", value=False)])[0].successful
        assert wait_for(lambda: tester.node.count_publishers(topic) == 0, 10.0)
        publish_until_labelled(tester, "/ann/image",
                               make_msg("rgb8", colour_image(30, 40, YELLOW), "a2", 3), labels)


# ----------------------------------------------------------------------------------------
# ~/detections and ~/label_info with the real vision_msgs
# ----------------------------------------------------------------------------------------
@pytest.fixture()
def vision_msgs():
    return pytest.importorskip(
        "vision_msgs.msg", reason="vision_msgs is not on PyPI; build it with "
        "../shared/tools/vision_msgs_build.sh and source its env.sh to run this")


def test_detections_and_label_info_with_real_vision_msgs(vision_msgs, ctx, tester, bundle_path,
                                                         tmp_path):
    with running_node(ctx, "/det2", bundle_path, tmp_path, unknown_threshold=0.0,
                      top_k=3) as node:
        fqn = node.get_fully_qualified_name()
        got: list = []
        tester.node.create_subscription(vision_msgs.Detection2DArray, f"{fqn}/detections",
                                        got.append, 10)
        labels = tester.watch_labels(f"{fqn}/labels")
        msg = make_msg("rgb8", colour_image(24, 32, YELLOW), "d1", 1)
        doc = publish_until_labelled(tester, "/det2/image", msg, labels)
        assert wait_for(lambda: any(a.header.frame_id == "d1" for a in got), 5.0)
        arr = next(a for a in got if a.header.frame_id == "d1")
        (det,) = arr.detections
        (obj,) = doc["objects"]
        assert obj["known"] and det.id == ""  # no tracking: no id
        assert (det.bbox.center.position.x, det.bbox.center.position.y) == (16.0, 12.0)
        assert (det.bbox.size_x, det.bbox.size_y) == (32.0, 24.0)
        hyps = [(h.hypothesis.class_id, h.hypothesis.score) for h in det.results]
        assert [c for c, _ in hyps] == [name for name, _ in obj["top_k"]] and len(hyps) == 3
        assert hyps[0][0] == obj["label"] == "banana"
        assert [s for _, s in hyps] == pytest.approx([s for _, s in obj["top_k"]], abs=1e-6)
        assert hyps == sorted(hyps, key=lambda h: -h[1])

        # an unknown object is not a detection (but ~/labels still lists it)
        assert tester.set_params(fqn, [Parameter("unknown_threshold", value=1.0)])[0].successful
        msg = make_msg("rgb8", colour_image(24, 32, RED), "d2", 2)
        doc = publish_until_labelled(tester, "/det2/image", msg, labels)
        assert doc["objects"][0]["known"] is False
        assert wait_for(lambda: any(a.header.frame_id == "d2" for a in got), 5.0)
        assert next(a for a in got if a.header.frame_id == "d2").detections == []

        # ~/label_info: transient local, so a late subscriber gets the current vocabulary;
        # republished when the vocabulary (or the threshold) changes
        infos: list = []
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        tester.node.create_subscription(vision_msgs.LabelInfo, f"{fqn}/label_info",
                                        infos.append, latched)

        def class_map():
            return [(c.class_id, c.class_name) for c in infos[-1].class_map] if infos else None

        assert wait_for(lambda: class_map() == list(enumerate(NAMES)), 10.0)
        assert infos[-1].threshold == pytest.approx(1.0)
        res = tester.set_params(fqn, [Parameter("labels", STRING_ARRAY, ["zebra", "banana"])])
        assert res[0].successful
        assert wait_for(lambda: class_map() == [(0, "zebra"), (1, "banana")], 30.0)
