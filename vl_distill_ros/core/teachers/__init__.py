"""Vision-language teachers: open_clip (production) and an offline ConSE stand-in."""
from .base import ImageBatch, Teacher, TeacherWeightsMissing

__all__ = ["ImageBatch", "Teacher", "TeacherWeightsMissing"]
