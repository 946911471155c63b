"""Checks the launch files run before they start anything (standard library only, so a
launch file can import this module wherever ``ros2 launch`` runs).

``launch/replay_eval.launch.py`` plays a bag with ``ros2 bag play``, which exists only where
rosbag2 is installed (not in the pip-only ``.venv``). Without this check the launch would die
with ``ros2: error: invalid choice: 'bag'`` or a ``FileNotFoundError`` traceback and leave the
node running; with it, the launch stops at once with one message that says what is missing and
what to use instead.
"""
from __future__ import annotations

import shutil
from importlib.metadata import entry_points
from pathlib import Path

#: ``ros2cli`` finds the verbs of ``ros2 bag`` through this entry-point group (package ros2bag).
ROS2BAG_VERB_GROUP = "ros2bag.verb"


def missing_bag_verbs(verbs: tuple[str, ...]) -> str | None:
    """Why ``ros2 bag <verb>`` cannot run here for one of ``verbs``, or None when it can: the
    ``ros2`` command must be on ``PATH`` and ros2bag must provide each verb (in this Python
    environment, which is the one ``ros2`` and ``ros2 launch`` run in)."""
    if shutil.which("ros2") is None:
        return "the `ros2` command is not on PATH"
    available = {ep.name for ep in entry_points(group=ROS2BAG_VERB_GROUP)}
    missing = [verb for verb in verbs if verb not in available]
    if not missing:
        return None
    listed = ", ".join(f"`ros2 bag {verb}`" for verb in missing)
    return f"{listed} is not available (rosbag2's ros2bag is not installed)"


def replay_launch_problem(bag: str, record: bool, topics: list[str] | None = None
                          ) -> str | None:
    """What stops ``replay_eval.launch.py`` from playing ``bag`` (and recording the labels
    when ``record``) into a node subscribed to ``topics``, as one message for the user, or
    None when nothing does."""
    if not bag:
        return "replay_eval.launch.py: no bag given; use bag:=/path/to/bag"
    if not Path(bag).expanduser().exists():
        return f"replay_eval.launch.py: bag {bag} does not exist"
    if topics is not None and not topics:
        return ("replay_eval.launch.py: image_topics is empty; name the bag's image topics, "
                "e.g. image_topics:=/camera/image_raw")
    problem = missing_bag_verbs(("play", "record") if record else ("play",))
    if problem is None:
        return None
    return (f"replay_eval.launch.py needs rosbag2 to play the bag: {problem}. Install rosbag2 "
            "(e.g. apt install ros-jazzy-rosbag2 ros-jazzy-rosbag2-storage-mcap) or score the "
            "bag without ROS tools: vl-distill replay-eval BAG (it publishes the bag itself)")
