"""Replay a camera bag into vl_distill_node on a ROS 2 install (what ``vl-distill replay-eval``
does without one).

    ros2 launch vl_distill_ros replay_eval.launch.py bag:=/path/to/bag
    ros2 launch vl_distill_ros replay_eval.launch.py bag:=/path/to/bag rate:=0.5 \
        model_path:=/path/to/student.vdb vocabulary_file:=/path/to/vocabulary.yaml \
        record_labels:=/tmp/labels_bag

Starts the node (namespace ``replay``, so its labels are ``/replay/vl_distill_node/labels``)
subscribed to ``image_topics``, then ``ros2 bag play BAG --rate RATE`` after ``delay``
seconds (time for the node to load its model); with ``record_labels`` it also records the
node's labels with ``ros2 bag record``. The launch shuts down when the player exits (end of
the bag, or a playback error). Without rosbag2 (``ros2 bag play``), or with a bag that does
not exist, it stops at once with one message naming what is missing. Scoring the labels
against the bag's ground truth is what ``vl-distill replay-eval BAG`` adds (it publishes the
bag itself, records ``~/labels`` and writes report.json / report.md / plots).

Arguments:
    bag: the rosbag2 bag to play (required).
    rate: playback rate (default 1.0).
    image_topics: comma-separated image topics of the bag (default /camera/image_raw).
    model_path: exported bundle (.vdb); empty: the packaged default bundle.
    vocabulary_file: vocabulary YAML; empty: the bundle's vocabulary.
    crop_source: proposals, full_frame or rois (default proposals).
    delay: seconds between starting the node and starting playback (default 10).
    record_labels: output folder for a bag of the node's labels; empty: do not record.
"""
import os

from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, ExecuteProcess, OpaqueFunction,
                            RegisterEventHandler, Shutdown, TimerAction)
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from vl_distill_ros.ros.launch_support import replay_launch_problem

NAMESPACE = "replay"


def _actions(context, *args, **kwargs):
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    # ~ expanded here: ros2 bag gets the path as is (no shell), and checks it unexpanded
    bag, record = os.path.expanduser(arg("bag")), os.path.expanduser(arg("record_labels"))
    topics = [t.strip() for t in arg("image_topics").split(",") if t.strip()]
    problem = replay_launch_problem(bag, record=bool(record), topics=topics)
    if problem:  # launch prints "Caught exception in launch ...: <problem>" and exits 1
        raise RuntimeError(problem)
    params = {"image_topics": topics, "crop_source": arg("crop_source"),
              "persist_vocabulary": False}
    if arg("model_path"):
        params["model_path"] = arg("model_path")
    if arg("vocabulary_file"):
        params["vocabulary_file"] = arg("vocabulary_file")
    player = ExecuteProcess(cmd=["ros2", "bag", "play", bag, "--rate", arg("rate"),
                                 "--topics", *topics], output="screen")
    actions = [
        # a node that cannot start (a bad model, vocabulary or setting) ends the launch: the
        # bag would play to nobody
        Node(package="vl_distill_ros", executable="vl_distill_node", name="vl_distill_node",
             namespace=NAMESPACE, parameters=[params], output="screen", emulate_tty=True,
             on_exit=[Shutdown(reason="vl_distill_node exited")]),
        TimerAction(period=float(arg("delay")), actions=[player]),
        RegisterEventHandler(OnProcessExit(target_action=player, on_exit=[
            Shutdown(reason="bag playback finished")])),
    ]
    if record:
        actions.append(ExecuteProcess(
            cmd=["ros2", "bag", "record", "-o", record,
                 f"/{NAMESPACE}/vl_distill_node/labels"], output="screen"))
    return actions


def generate_launch_description():
    """The launch description: the arguments, the node, ``ros2 bag play`` (and record), and
    a shutdown when the player exits."""
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 bag to play"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
        DeclareLaunchArgument("image_topics", default_value="/camera/image_raw",
                              description="Comma-separated image topics of the bag"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="Student bundle (.vdb); empty: the packaged one"),
        DeclareLaunchArgument("vocabulary_file", default_value="",
                              description="Vocabulary YAML; empty: the bundle's vocabulary"),
        DeclareLaunchArgument("crop_source", default_value="proposals",
                              description="proposals, full_frame or rois"),
        DeclareLaunchArgument("delay", default_value="10.0",
                              description="Seconds between node start and playback"),
        DeclareLaunchArgument("record_labels", default_value="",
                              description="Record the labels to this bag folder (empty: no)"),
        OpaqueFunction(function=_actions),
    ])
