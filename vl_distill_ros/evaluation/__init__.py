"""Evaluation of a deployed student on recorded camera data.

* :mod:`.scoring` (ROS-free): match ``~/labels`` documents to ground truth by IoU and compute
  accuracy on ID / OOD objects, per-object precision / recall / F1, unknown rate, confusion
  matrix, missed objects, false positives and latency percentiles.
* :mod:`.replay`: replay a rosbag2 bag into a live ``vl_distill_node`` (what ``ros2 bag
  play`` does) and record its labels, or run the same pipeline offline on the bag.
* :mod:`.report`: ``report.json``, ``report.md``, ``labels.jsonl`` and PNG plots.

Used by ``vl-distill replay-eval`` (:mod:`vl_distill_ros.commands.replay_eval`). Importing
this package imports nothing heavy; rclpy is only imported by a live replay.
"""
