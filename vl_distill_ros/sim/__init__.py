"""Synthetic data: renders of textured meshes (training crops) and tabletop scenes (bags).
Training and evaluation tooling only; the robot-side code never imports it."""
