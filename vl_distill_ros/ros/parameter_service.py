"""The node's parameter services: rclpy's, with three fixes for what ``ros2 param`` sends.

:class:`GroupedParameterService` replaces the ``~/set_parameters`` and
``~/set_parameters_atomically`` handlers of :class:`rclpy.parameter_service.ParameterService`
(the other four services are rclpy's own):

* **Order-independent loads.** ``ros2 param load FILE`` sends ONE ``SetParameters`` request
  and rclpy applies its parameters one by one, in file order. ``ros2 param dump`` writes them
  alphabetically, so ``descriptions`` comes before ``labels`` (and ``crop_source`` before
  ``rois``, ``proposal_max_area_frac`` before ``proposal_min_area_frac``): checked one at a
  time against the old values, a consistent dump is rejected. Here the parameters of one
  request that are validated together (the node's *groups*: the vocabulary, the pipeline
  settings) are set together, in one atomic set at the place of the group's first member;
  every member gets that result. If that set is rejected, the members are set one by one in
  request order (rclpy's behaviour), so one bad value does not block the others and each gets
  its own reason.
* **Empty lists.** ros2param types an empty YAML list (``[]``, ``ros2 param set NAME "[]"``)
  as ``BOOL_ARRAY``, since it cannot know the element type. An empty array of any type for a
  parameter declared as another array type is given the declared type.
* **Bounded requests.** A request of more than :data:`MAX_REQUEST_PARAMETERS` parameters
  is refused whole (each parameter's result says why), before any is read or set: the
  handler runs in the executor thread, and tens of thousands of entries blocked it for
  seconds.
* **Undeclared names.** rclpy rejects an undeclared parameter with
  ``Invalid access to undeclared parameter(s): []`` (an exhausted generator); here the reason
  names them.

Everything else (read-only parameters, ranges, the node's set-parameters callbacks) is
rclpy's, reached through :meth:`rclpy.node.Node.set_parameters_atomically`.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import ParameterNotDeclaredException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.parameter_service import ParameterService

#: Most parameters one ``SetParameters`` or ``SetParametersAtomically`` request may carry
#: (the node has about a hundred; ``ros2 param load`` of a full dump sends each once). A
#: longer request is refused whole, before any of it is read or set: every parameter gets
#: ``successful: false`` with the reason.
MAX_REQUEST_PARAMETERS = 4096

#: Parameter types whose values are arrays.
ARRAY_TYPES = frozenset({Parameter.Type.BYTE_ARRAY, Parameter.Type.BOOL_ARRAY,
                         Parameter.Type.INTEGER_ARRAY, Parameter.Type.DOUBLE_ARRAY,
                         Parameter.Type.STRING_ARRAY})


def set_steps(names: Sequence[str], groups: Iterable[frozenset[str]]) -> list[list[int]]:
    """How one ``SetParameters`` request with parameters ``names`` is applied: a list of
    steps in order, each the request indexes set together. Two or more members of a group
    form one step at the first member's place; a group with a name given twice is
    not grouped (each parameter is a step of its own, as in rclpy).

    Linear in ``len(names)`` (times the number of groups): each name's group is looked up
    once and each group's members are collected in one pass over the request."""
    groups = list(groups)
    group_of: dict[str, int] = {}        # name -> index of the first group holding it
    for k, group in enumerate(groups):
        for name in group:
            group_of.setdefault(name, k)
    members: dict[int, list[int]] = {}   # group index -> its request indexes, in order
    for i, name in enumerate(names):
        k = group_of.get(name)
        if k is not None:
            members.setdefault(k, []).append(i)
    together = {k: idx for k, idx in members.items()
                if len(idx) >= 2 and len({names[j] for j in idx}) == len(idx)}
    steps: list[list[int]] = []
    for i, name in enumerate(names):
        idx = together.get(group_of.get(name, -1))
        if idx is None:
            steps.append([i])
        elif idx[0] == i:
            steps.append(idx)
    return steps


def coerce_empty_arrays(parameters: Sequence[Parameter],
                        declared: dict[str, Parameter.Type]) -> list[Parameter]:
    """``parameters`` with every empty array given its parameter's declared array type
    (``declared``: name -> type); everything else is returned as it is."""
    out = []
    for p in parameters:
        want = declared.get(p.name)
        if (p.type_ in ARRAY_TYPES and want in ARRAY_TYPES and want != p.type_
                and len(p.value) == 0):
            p = Parameter(p.name, want, [])
        out.append(p)
    return out


class GroupedParameterService(ParameterService):
    """rclpy's parameter services for ``node`` with grouped, type-coerced sets (see the
    module docstring). Create the node with ``start_parameter_services=False`` and this
    service after declaring the parameters and adding the set-parameters callbacks."""

    def __init__(self, node: Node, groups: Iterable[frozenset[str]]) -> None:
        self._groups = [frozenset(g) for g in groups]
        super().__init__(node)  # keeps a weak reference to the node (_get_node)

    def _declared_types(self, names: Iterable[str]) -> dict[str, Parameter.Type]:
        node = self._get_node()
        return {n: Parameter.Type(node.describe_parameter(n).type) for n in set(names)
                if node.has_parameter(n)}

    def _prepare(self, messages: Sequence) -> list[Parameter]:
        params = [Parameter.from_parameter_msg(m) for m in messages]
        return coerce_empty_arrays(params, self._declared_types(p.name for p in params))

    def _set(self, params: list[Parameter]) -> SetParametersResult:
        """One atomic set through rclpy (pre-, on- and post-set callbacks included)."""
        node = self._get_node()
        undeclared = sorted({p.name for p in params if not node.has_parameter(p.name)})
        if undeclared:
            names = ", ".join(f"'{n}'" for n in undeclared)
            return SetParametersResult(
                successful=False,
                reason=f"{node.get_fully_qualified_name()} has no parameter {names}; "
                       "`ros2 param list` shows its parameters")
        try:
            return node.set_parameters_atomically(params)
        except ParameterNotDeclaredException as exc:  # pragma: no cover - a callback added one
            return SetParametersResult(successful=False, reason=str(exc))

    def _too_long(self, count: int) -> SetParametersResult | None:
        """The failure of a request of ``count`` parameters, ``None`` when it is within
        :data:`MAX_REQUEST_PARAMETERS`."""
        if count <= MAX_REQUEST_PARAMETERS:
            return None
        return SetParametersResult(
            successful=False,
            reason=f"the request sets {count} parameters; the limit is "
                   f"{MAX_REQUEST_PARAMETERS} per request (nothing was set)")

    def _set_parameters_callback(self, request, response):
        """``SetParameters``: one result per parameter, in request order; groups together.
        A request of more than :data:`MAX_REQUEST_PARAMETERS` parameters sets none (each
        result says why)."""
        refused = self._too_long(len(request.parameters))
        if refused is not None:
            response.results = [refused] * len(request.parameters)
            return response
        params = self._prepare(request.parameters)
        results: list[SetParametersResult | None] = [None] * len(params)
        for step in set_steps([p.name for p in params], self._groups):
            if len(step) > 1:
                result = self._set([params[i] for i in step])
                if result.successful:
                    for i in step:
                        results[i] = result
                    continue
            for i in step:
                results[i] = self._set([params[i]])
        response.results = results
        return response

    def _set_parameters_atomically_callback(self, request, response):
        """``SetParametersAtomically``: rclpy's, with empty-array types and named
        undeclared parameters; at most :data:`MAX_REQUEST_PARAMETERS` parameters."""
        refused = self._too_long(len(request.parameters))
        response.result = refused if refused is not None else self._set(
            self._prepare(request.parameters))
        return response
