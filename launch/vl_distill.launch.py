"""Launch vl_distill_node.

    ros2 launch vl_distill_ros vl_distill.launch.py
    ros2 launch vl_distill_ros vl_distill.launch.py image_topics:=/cam1/image_raw,/cam2/image_raw
    ros2 launch vl_distill_ros vl_distill.launch.py namespace:=robot1 \
        params_file:=/path/to/my_params.yaml model_path:=/path/to/student.vdb
    ros2 launch vl_distill_ros vl_distill.launch.py lifecycle:=true   # a managed node

Arguments:
    image_topics: comma-separated camera topics; empty keeps the params file's value
        (default ``image``, which can be remapped).
    namespace: namespace of the node (its outputs are ``<ns>/vl_distill_node/...``).
    params_file: parameter YAML (default: the package's ``config/vl_distill.yaml``).
    model_path: exported bundle (.vdb); empty keeps the params file's value (empty there means
        the bundle shipped with the package).
    lifecycle: ``true`` runs ``vl_distill_lifecycle_node``, the managed node, which starts
        unconfigured (a lifecycle manager or ``ros2 lifecycle set`` configures and activates
        it); default ``false``: ``vl_distill_node``, working at once.
    autostart: with ``lifecycle:=true``, ``true`` has the launch configure the node and then
        activate it once it is inactive, once (a later cleanup + configure leaves it
        inactive; default ``false``).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def _launch_node(context, *args, **kwargs):
    params_file = os.path.expanduser(LaunchConfiguration("params_file").perform(context))
    if not os.path.isfile(params_file):  # launch_ros only warns, and the node ran on defaults
        raise RuntimeError(f"vl_distill.launch.py: params_file {params_file} is not a file")
    overrides = {}
    topics = LaunchConfiguration("image_topics").perform(context)
    topics = [t.strip() for t in topics.split(",") if t.strip()]
    if topics:
        overrides["image_topics"] = topics
    model_path = LaunchConfiguration("model_path").perform(context)
    if model_path:
        overrides["model_path"] = model_path
    common = dict(package="vl_distill_ros", name="vl_distill_node",
                  namespace=LaunchConfiguration("namespace").perform(context),
                  parameters=[params_file, overrides] if overrides else [params_file],
                  output="screen", emulate_tty=True)
    if not _true(LaunchConfiguration("lifecycle").perform(context), "lifecycle"):
        return [Node(executable="vl_distill_node", **common)]
    return _lifecycle_node(common, _true(LaunchConfiguration("autostart").perform(context),
                                         "autostart"))


def _true(value: str, name: str) -> bool:
    """A launch argument's boolean value (true/false, any case)."""
    if value.strip().lower() not in ("true", "false"):
        raise ValueError(f"launch argument {name} must be true or false, got {value!r}")
    return value.strip().lower() == "true"


def _lifecycle_node(common: dict, autostart: bool) -> list:
    """The managed node; with ``autostart`` also the events that configure it and, once it
    is inactive, activate it."""
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.events import matches_action
    from launch_ros.actions import LifecycleNode
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition

    node = LifecycleNode(executable="vl_distill_lifecycle_node", **common)
    if not autostart:
        return [node]

    def change(transition: int) -> EmitEvent:
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                           transition_id=transition))
    return [node,
            # after the launch's own configure only: not after a deactivate, and not after a
            # later cleanup + configure (a manager reloading the model expects inactive)
            RegisterEventHandler(OnStateTransition(
                target_lifecycle_node=node, start_state="configuring", goal_state="inactive",
                entities=[change(Transition.TRANSITION_ACTIVATE)], handle_once=True)),
            change(Transition.TRANSITION_CONFIGURE)]


def generate_launch_description():
    """The launch description: six arguments and the node."""
    default_params = os.path.join(get_package_share_directory("vl_distill_ros"), "config",
                                  "vl_distill.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("image_topics", default_value="",
                              description="Comma-separated camera topics (empty: the params "
                                          "file's image_topics, default 'image')"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="Namespace of the node"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="Parameter YAML file for vl_distill_node"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="Exported student bundle (.vdb); empty: the params "
                                          "file's model_path (empty there: the packaged one)"),
        DeclareLaunchArgument("lifecycle", default_value="false",
                              description="true: the managed node vl_distill_lifecycle_node, "
                                          "started unconfigured"),
        DeclareLaunchArgument("autostart", default_value="false",
                              description="With lifecycle:=true, configure and activate the "
                                          "node at launch"),
        OpaqueFunction(function=_launch_node),
    ])
