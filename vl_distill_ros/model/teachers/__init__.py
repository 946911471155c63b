"""Vision-language teachers: open_clip (production) and an offline ConSE stand-in."""
from .base import ImageBatch, Teacher, TeacherWeightsMissing
from .conse import ConSETeacher, MiniLMTextEncoder, conse_teacher_id
from .factory import (
    BACKENDS,
    build_teacher,
    build_teacher_from_spec,
    resolve_device,
    teacher_config_from_spec,
    teacher_id_for,
    teacher_spec,
)
from .open_clip_teacher import OpenClipTeacher, open_clip_teacher_id

__all__ = [
    "BACKENDS",
    "ConSETeacher",
    "ImageBatch",
    "MiniLMTextEncoder",
    "OpenClipTeacher",
    "Teacher",
    "TeacherWeightsMissing",
    "build_teacher",
    "build_teacher_from_spec",
    "conse_teacher_id",
    "open_clip_teacher_id",
    "resolve_device",
    "teacher_config_from_spec",
    "teacher_id_for",
    "teacher_spec",
]
