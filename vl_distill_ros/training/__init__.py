"""Training only (never imported by the robot-side packages): losses, metrics, the teacher
embedding cache, augmentation, data sets, distillation, calibration fitting, evaluation,
export and the ablation runner."""
