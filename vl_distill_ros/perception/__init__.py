"""Robot-side perception: the frame-to-labels pipeline, object proposals, image decoding and
crop preprocessing. Never imports rclpy, the training or the sim package."""
