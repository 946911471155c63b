"""GroupedParameterService on a small real node over DDS, against rclpy's own service.

The requests are built by rclpy's ``AsyncParameterClient.load_parameter_file``, the call
``ros2 param load`` makes (one ``SetParameters`` request, parameters in file order, an empty
YAML list typed ``BOOL_ARRAY``). The node's rule is the kind vl_distill_node has: two
parameters valid only together (``descriptions`` is empty or one per label; ``crop`` ``rois``
needs ``rois``).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import rclpy
import yaml
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterDescriptor, ParameterType, ParameterValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient

from vl_distill_ros.ros.parameter_service import (GroupedParameterService, coerce_empty_arrays,
                                                  set_steps)

GROUPS = (frozenset({"labels", "descriptions"}), frozenset({"crop", "rois"}))
S_ARR, I_ARR = Parameter.Type.STRING_ARRAY, Parameter.Type.INTEGER_ARRAY


def test_set_steps_group_members_at_the_first_place():
    names = ["descriptions", "device", "labels", "rois", "crop", "top_k"]
    assert set_steps(names, GROUPS) == [[0, 2], [1], [3, 4], [5]]
    assert set_steps(["labels"], GROUPS) == [[0]]
    # a name given twice is never grouped: rclpy's one-by-one order
    assert set_steps(["labels", "descriptions", "labels"], GROUPS) == [[0], [1], [2]]
    assert set_steps([], GROUPS) == []


def test_coerce_empty_arrays_only_touches_empty_arrays_of_array_parameters():
    declared = {"labels": S_ARR, "rois": I_ARR, "name": Parameter.Type.STRING}
    params = [Parameter("labels", Parameter.Type.BOOL_ARRAY, []),
              Parameter("rois", Parameter.Type.BOOL_ARRAY, []),
              Parameter("name", Parameter.Type.BOOL_ARRAY, []),       # not an array: left
              Parameter("labels", Parameter.Type.BOOL_ARRAY, [True]),  # not empty: left
              Parameter("other", Parameter.Type.BOOL_ARRAY, [])]       # undeclared: left
    out = coerce_empty_arrays(params, declared)
    assert [(p.name, p.type_) for p in out] == [
        ("labels", S_ARR), ("rois", I_ARR), ("name", Parameter.Type.BOOL_ARRAY),
        ("labels", Parameter.Type.BOOL_ARRAY), ("other", Parameter.Type.BOOL_ARRAY)]
    assert out[0].value == [] and out[1].value == []


class _RuleNode(Node):
    """Parameters that are only valid together, checked in an on-set callback."""

    def __init__(self, name: str, context, grouped: bool) -> None:
        super().__init__(name, context=context, start_parameter_services=not grouped)
        self.declare_parameter("labels", ["a", "b", "c", "d"], ParameterDescriptor(type=9))
        self.declare_parameter("descriptions", Parameter.Type.STRING_ARRAY,
                               ParameterDescriptor(type=9))
        self.declare_parameter("crop", "full")
        self.declare_parameter("rois", Parameter.Type.INTEGER_ARRAY,
                               ParameterDescriptor(type=7))
        self.declare_parameter("ro", 1, ParameterDescriptor(read_only=True))
        self.set_parameters([Parameter("descriptions", S_ARR, []),
                             Parameter("rois", I_ARR, [])])
        self.add_on_set_parameters_callback(self._check)
        if grouped:
            self.service = GroupedParameterService(self, GROUPS)

    def _value(self, by: dict, name: str):
        return by[name].value if name in by else self.get_parameter(name).value

    def _check(self, params: list[Parameter]) -> SetParametersResult:
        by = {p.name: p for p in params}
        labels, descs = self._value(by, "labels"), self._value(by, "descriptions")
        if len(descs) not in (0, len(labels)):
            return SetParametersResult(successful=False,
                                       reason=f"{len(labels)} labels but {len(descs)} descriptions")
        if self._value(by, "crop") == "rois" and len(self._value(by, "rois")) == 0:
            return SetParametersResult(successful=False, reason="crop 'rois' needs rois")
        return SetParametersResult(successful=True)


@pytest.fixture(scope="module")
def graph():
    """A context, an executor thread, two rule nodes (grouped and rclpy's) and a client."""
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    nodes = {"grouped": _RuleNode("grouped_rules", ctx, True),
             "rclpy": _RuleNode("rclpy_rules", ctx, False),
             "client": Node("param_client", context=ctx)}
    for n in nodes.values():
        executor.add_node(n)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield nodes
    executor.shutdown(timeout_sec=5.0)
    thread.join(timeout=5.0)
    for n in nodes.values():
        n.destroy_node()
    ctx.try_shutdown()


def _wait(future, timeout: float = 15.0):
    end = time.monotonic() + timeout
    while not future.done() and time.monotonic() < end:
        time.sleep(0.01)
    assert future.done(), "no answer"
    return future.result()


def _load(graph, which: str, tmp_path: Path, values: dict) -> list[SetParametersResult]:
    """What ``ros2 param load`` does with a YAML file holding ``values`` in that order."""
    node = graph[which]
    path = tmp_path / f"{which}.yaml"
    path.write_text(yaml.safe_dump({node.get_fully_qualified_name(): {
        "ros__parameters": values}}, sort_keys=False))
    client = AsyncParameterClient(graph["client"], node.get_fully_qualified_name())
    assert client.wait_for_services(timeout_sec=10.0)
    return list(_wait(client.load_parameter_file(str(path))).results)


def _reset(node: _RuleNode) -> None:
    node.set_parameters_atomically([Parameter("labels", S_ARR, ["a", "b", "c", "d"]),
                                    Parameter("descriptions", S_ARR, []),
                                    Parameter("crop", value="full"),
                                    Parameter("rois", I_ARR, [])])


def test_a_dump_in_alphabetical_order_loads(graph, tmp_path):
    """descriptions (3) before labels (3) while 4 labels are active; crop 'rois' before rois:
    rclpy's service rejects both, the grouped one sets each pair together."""
    dump = {"crop": "rois", "descriptions": ["x.", "y.", "z."], "labels": ["x", "y", "z"],
            "ro": 1, "rois": [0, 0, 10, 10]}
    for which in ("grouped", "rclpy"):
        _reset(graph[which])
    rclpy_results = _load(graph, "rclpy", tmp_path, dump)
    assert [r.successful for r in rclpy_results] == [False, False, True, False, True]
    assert "4 labels but 3 descriptions" in rclpy_results[1].reason

    results = _load(graph, "grouped", tmp_path, dump)
    assert [r.successful for r in results] == [True, True, True, False, True]
    assert "read-only" in results[3].reason  # rclpy's own rule still applies
    node = graph["grouped"]
    assert node.get_parameter("labels").value == ["x", "y", "z"]
    assert node.get_parameter("descriptions").value == ["x.", "y.", "z."]
    assert list(node.get_parameter("rois").value) == [0, 0, 10, 10]
    assert node.get_parameter("crop").value == "rois"


def test_a_rejected_group_falls_back_to_one_by_one(graph, tmp_path):
    """A bad member does not block the valid ones: each is then set alone, with its reason."""
    node = graph["grouped"]
    _reset(node)
    results = _load(graph, "grouped", tmp_path, {"descriptions": ["only one."],
                                                 "labels": ["p", "q", "r"]})
    assert [r.successful for r in results] == [False, True]
    assert results[0].reason == "4 labels but 1 descriptions"
    assert node.get_parameter("labels").value == ["p", "q", "r"]


def test_empty_yaml_lists_arrive_as_bool_arrays_and_are_accepted(graph, tmp_path):
    node = graph["grouped"]
    node.set_parameters_atomically([Parameter("descriptions", S_ARR, ["1", "2", "3", "4"]),
                                    Parameter("rois", I_ARR, [1, 2, 3, 4])])
    results = _load(graph, "grouped", tmp_path, {"descriptions": [], "rois": []})
    assert all(r.successful for r in results), [r.reason for r in results]
    assert node.get_parameter("descriptions").value == []
    assert node.get_parameter("descriptions").type_ == S_ARR
    assert list(node.get_parameter("rois").value) == []
    # rclpy's service: the type error the issue reports
    rclpy_results = _load(graph, "rclpy", tmp_path, {"descriptions": []})
    assert not rclpy_results[0].successful and "BOOL_ARRAY" in rclpy_results[0].reason


def test_undeclared_parameters_are_named(graph):
    node = graph["grouped"]
    client = AsyncParameterClient(graph["client"], node.get_fully_qualified_name())
    assert client.wait_for_services(timeout_sec=10.0)
    bogus = ParameterMsg(name="no_such_param",
                         value=ParameterValue(type=ParameterType.PARAMETER_INTEGER,
                                              integer_value=1))
    result = _wait(client.set_parameters([bogus])).results[0]
    assert not result.successful
    assert result.reason == ("/grouped_rules has no parameter 'no_such_param'; "
                             "`ros2 param list` shows its parameters")
    atomic = _wait(client.set_parameters_atomically([bogus])).result
    assert not atomic.successful and "'no_such_param'" in atomic.reason
