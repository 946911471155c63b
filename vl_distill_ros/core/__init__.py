"""ROS-free core shared by the node, the trainer and the evaluators. Never imports rclpy."""
