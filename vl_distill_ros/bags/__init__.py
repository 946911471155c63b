"""rosbag2 camera bags: reading and writing with rosbags, without a ROS install."""
