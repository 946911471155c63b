"""Model and vocabulary, used on the robot and in training: teachers, the student, bundles,
vocabularies and their text embeddings, zero-shot heads, calibration and the ONNX runtime.
Never imports rclpy, the training or the sim package."""
