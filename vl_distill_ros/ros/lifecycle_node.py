"""``vl_distill_lifecycle_node``: the perception node as a managed (lifecycle) node.

The same node as :class:`~vl_distill_ros.ros.node.VlDistillNode` (parameters, topics,
services, diagnostics), run through the ROS 2 node life cycle so that a lifecycle manager
(nav2's ``lifecycle_manager``, launch_ros' ``LifecycleNode`` with its events, or
``ros2 lifecycle set``) decides when it loads its model and when it works:

* **unconfigured** (at start): the parameters are declared and can be set, checked as the
  configured node checks them (the pipeline settings, and names, descriptions and
  vocabulary files without embedding them); nothing else.
* ``configure``: the model bundle, the text encoder, the start-up vocabulary, the pipeline,
  the outputs (``~/labels``, ``~/detections``, ``~/label_info``, ``/diagnostics``) and
  ``~/save_vocabulary``. A bad model path or vocabulary fails the transition with the
  plain node's start-up message in the log, and the node stays unconfigured (fix the
  parameter, configure again) instead of exiting.
* ``activate``: the camera subscriptions, the worker threads and the diagnostics timer.
  Frames are taken and labels published only while active.
* ``deactivate``: the subscriptions, workers and timer go; the model and the vocabulary
  stay, so activating again is immediate; vocabulary changes made while inactive are
  applied (and ``~/label_info`` sent on activation).
* ``cleanup``: everything ``configure`` made goes (the model's memory too); read-only
  parameters are still those given at start (launch file or ``--ros-args``).
* ``shutdown`` (from any state) and errors clean up the same way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter

from ..model.vocabulary import Vocabulary, VocabularyError
from ..perception.pipeline_settings import PipelineError, PipelineSettings
from . import params as P
from .node import NODE_NAME, StartupError, VlDistillNode, _plain, run_node, usage_text
from .vocabulary_controller import build_vocabulary
from .parameter_service import GroupedParameterService

__all__ = ["VlDistillLifecycleNode", "main"]


class VlDistillLifecycleNode(VlDistillNode, LifecycleNode):
    """The perception node as a managed node (see the module docstring).

    Args:
        node_name: ROS node name.
        **kwargs: passed to :class:`rclpy.lifecycle.LifecycleNode`.
    """

    def _start(self) -> None:
        """Declare the parameters and serve them; the rest waits for ``configure``."""
        P.declare_parameters(self)
        self._stop.set()  # no frame is taken and nothing is published until activated
        self._active = False
        self._parameter_service = GroupedParameterService(
            self, (P.VOCABULARY_PARAMS, P.SETTINGS_PARAMS))
        self.add_on_set_parameters_callback(self._check_unconfigured)

    def _check_unconfigured(self, parameters: list[Parameter]) -> SetParametersResult:
        """While no ``configure`` made the node's own checks (they come with the pipeline
        and the vocabulary), reject the runtime values they would reject: the pipeline
        settings, names, descriptions and a vocabulary file (read, not embedded). An
        unconfigured node accepted ``crop_source: bogus`` and made the next configure fail."""
        if self.vocabulary is not None:
            return SetParametersResult(successful=True)    # configured: its own checks
        by = {p.name: _plain(p.value) for p in parameters}
        current = {name: _plain(self.get_parameter(name).value)
                   for name in P.SETTINGS_PARAMS | P.VOCABULARY_PARAMS}
        values = {**current, **by}
        try:
            if P.SETTINGS_PARAMS & by.keys():
                PipelineSettings.from_params(values)
            if (vf := str(by.get("vocabulary_file") or "").strip()):
                Vocabulary.load(Path(vf).expanduser())
            elif {"labels", "descriptions"} & by.keys() and values["labels"]:
                descs = by.get("descriptions", [] if "labels" in by else values["descriptions"])
                build_vocabulary(list(values["labels"]), list(descs or []))
        except (PipelineError, VocabularyError, ValueError, TypeError) as exc:
            reason = f"rejected: {exc}"
            self.get_logger().warning(reason)
            return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _parameter_values(self) -> dict[str, Any]:
        """Every parameter's current value (arrays as lists), as ``declare_parameters``
        returned them at start-up."""
        return {spec.name: _plain(self.get_parameter(spec.name).value) for spec in P.PARAMETERS}

    def _failed(self, transition: str, exc: BaseException) -> TransitionCallbackReturn:
        self.get_logger().error(f"{transition} failed: {exc}")
        self._teardown()
        return TransitionCallbackReturn.FAILURE if isinstance(exc, StartupError) \
            else TransitionCallbackReturn.ERROR

    def _teardown(self) -> None:
        """Back to unconfigured from any state."""
        if self._active:
            self._deactivate()
            self._active = False
        self._cleanup()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model, the vocabulary and the pipeline; create the outputs."""
        try:
            self._configure(self._parameter_values())
        except Exception as exc:  # noqa: BLE001 - the transition fails, the node lives
            return self._failed("configure", exc)
        self.get_logger().info(f"configured: {self._ready_text}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to the cameras and start working."""
        try:
            self._activate()
        except Exception as exc:  # noqa: BLE001
            return self._failed("activate", exc)
        self._active = True
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop taking frames; keep the model and the vocabulary."""
        self._deactivate()
        self._active = False
        self.get_logger().info("deactivated: cameras unsubscribed, model kept")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free what ``configure`` made."""
        self._teardown()
        self.get_logger().info("cleaned up: model unloaded")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free everything, from whichever state."""
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free everything; the node goes back to unconfigured."""
        self._teardown()
        return TransitionCallbackReturn.SUCCESS


def main(args: Sequence[str] | None = None) -> int:
    """Console script ``vl_distill_lifecycle_node``: run the managed node until Ctrl-C."""
    first, rest = usage_text().split("\n", 1)
    usage = (first.replace(NODE_NAME, "vl_distill_lifecycle_node", 1)
             + "\n\nA managed node: it starts unconfigured; then `ros2 lifecycle set "
               "/vl_distill_node configure`\nand `... activate` (see the README's \"Managed "
               "node (lifecycle)\").\n" + rest)
    return run_node(VlDistillLifecycleNode, args, usage=usage, exiting=True)


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main())
