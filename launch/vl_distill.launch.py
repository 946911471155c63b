"""Launch vl_distill_node.

    ros2 launch vl_distill_ros vl_distill.launch.py
    ros2 launch vl_distill_ros vl_distill.launch.py image_topics:=/cam1/image_raw,/cam2/image_raw
    ros2 launch vl_distill_ros vl_distill.launch.py namespace:=robot1 \
        params_file:=/path/to/my_params.yaml model_path:=/path/to/student.vdb

Arguments:
    image_topics: comma-separated camera topics; empty keeps the params file's value
        (default ``image``, which can be remapped).
    namespace: namespace of the node (its outputs are ``<ns>/vl_distill_node/...``).
    params_file: parameter YAML (default: the package's ``config/vl_distill.yaml``).
    model_path: exported bundle (.vdb); empty keeps the params file's value (empty there means
        the bundle shipped with the package).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def _launch_node(context, *args, **kwargs):
    params_file = LaunchConfiguration("params_file").perform(context)
    overrides = {}
    topics = LaunchConfiguration("image_topics").perform(context)
    topics = [t.strip() for t in topics.split(",") if t.strip()]
    if topics:
        overrides["image_topics"] = topics
    model_path = LaunchConfiguration("model_path").perform(context)
    if model_path:
        overrides["model_path"] = model_path
    return [Node(
        package="vl_distill_ros",
        executable="vl_distill_node",
        name="vl_distill_node",
        namespace=LaunchConfiguration("namespace").perform(context),
        parameters=[params_file, overrides] if overrides else [params_file],
        output="screen",
        emulate_tty=True,
    )]


def generate_launch_description():
    """The launch description: four arguments and the node."""
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
        OpaqueFunction(function=_launch_node),
    ])
