"""ROS 2 layer: the ``vl_distill_node`` node, a thin wrapper over :mod:`vl_distill_ros.perception`.

Import :mod:`vl_distill_ros.ros.node` explicitly; this package does not import rclpy itself.
"""
