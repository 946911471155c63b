"""Build a teacher from a :class:`~vl_distill_ros.config.TeacherConfig`, name it, record it.

* :func:`build_teacher` loads the networks.
* :func:`teacher_id_for` gives the id the built teacher would have, without loading weights
  (a local open_clip checkpoint is hashed, memoised), so caches can be found cheaply.
* :func:`teacher_spec` / :func:`teacher_config_from_spec` write and read the small record an
  exported bundle keeps so that a deployment can rebuild the teacher's text encoder;
  :func:`build_teacher_from_spec` rebuilds it and checks that the id still matches.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch

from vl_distill_ros.config import TeacherConfig
from .base import Teacher

#: Backends :func:`build_teacher` knows.
BACKENDS: tuple[str, ...] = ("open_clip", "offline")
#: Version of the dict written by :func:`teacher_spec`.
SPEC_VERSION = 1


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown teacher backend {backend!r}; choose one of {list(BACKENDS)}")
    return backend


def resolve_device(device: str | torch.device) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; anything else is returned as is."""
    device = str(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _pretrained(cfg: TeacherConfig) -> str | None:
    value = cfg.pretrained
    if value is None or str(value).strip().lower() in ("", "none", "null"):
        return None
    return str(value)


def build_teacher(cfg: TeacherConfig) -> Teacher:
    """Instantiate the teacher ``cfg`` describes (loads weights; see module doc).

    Raises:
        ValueError: unknown backend (the message lists the choices) or model.
        TeacherWeightsMissing: open_clip weights are not available offline.
    """
    backend = _check_backend(cfg.backend)
    device = resolve_device(cfg.device)
    if backend == "open_clip":
        from .open_clip_teacher import OpenClipTeacher

        return OpenClipTeacher(cfg.model, _pretrained(cfg), device=device,
                               batch_size=cfg.batch_size)
    from .conse import ConSETeacher

    return ConSETeacher(top_t=cfg.top_t, temperature=cfg.temperature, device=device,
                        batch_size=cfg.batch_size, classifier_name=cfg.offline_classifier)


def teacher_id_for(cfg: TeacherConfig) -> str:
    """The ``id`` :func:`build_teacher` ``(cfg)`` would produce, without loading any network.

    For open_clip with a local checkpoint the file is hashed (SHA-256, memoised per
    path/size/mtime); a missing file raises ``TeacherWeightsMissing``.
    """
    backend = _check_backend(cfg.backend)
    if backend == "open_clip":
        from .open_clip_teacher import open_clip_teacher_id

        return open_clip_teacher_id(cfg.model, _pretrained(cfg))
    from .conse import conse_teacher_id

    return conse_teacher_id(cfg.top_t, cfg.temperature, cfg.offline_classifier)


def teacher_spec(cfg: TeacherConfig, teacher_id: str | None = None) -> dict[str, Any]:
    """A JSON/YAML-ready record of how to rebuild this teacher (for exported bundles).

    Holds only settings that change the embeddings (device and batch size are left out)
    plus the ``id``; pass ``teacher_id`` when it is known to skip recomputing it.
    """
    backend = _check_backend(cfg.backend)
    spec: dict[str, Any] = {"spec_version": SPEC_VERSION, "backend": backend,
                            "id": teacher_id if teacher_id is not None else teacher_id_for(cfg)}
    if backend == "open_clip":
        spec.update(model=cfg.model, pretrained=_pretrained(cfg))
    else:
        spec.update(top_t=int(cfg.top_t), temperature=float(cfg.temperature))
        if cfg.offline_classifier != TeacherConfig.offline_classifier:
            spec["offline_classifier"] = cfg.offline_classifier
    return spec


def teacher_config_from_spec(spec: Mapping[str, Any], device: str = "auto",
                             batch_size: int | None = None,
                             pretrained_path: str | None = None) -> TeacherConfig:
    """Turn a :func:`teacher_spec` record back into a :class:`TeacherConfig`.

    ``pretrained_path`` replaces a recorded open_clip checkpoint path (the file moved on the
    deployment machine; the id check of :func:`build_teacher_from_spec` still guards it).
    Raises ``ValueError`` for a missing/unknown backend, a newer spec version or unknown keys.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"teacher spec must be a mapping, got {type(spec).__name__}")
    version = spec.get("spec_version", SPEC_VERSION)
    if not isinstance(version, int) or version > SPEC_VERSION:
        raise ValueError(f"teacher spec version {version!r} is newer than this code "
                         f"understands ({SPEC_VERSION})")
    backend = _check_backend(str(spec.get("backend", "")))
    fields = {f.name for f in dataclasses.fields(TeacherConfig)}
    known = fields | {"spec_version", "id"}
    unknown = set(spec) - known
    if unknown:
        raise ValueError(f"teacher spec has unknown keys {sorted(unknown)}")
    values = {k: v for k, v in spec.items() if k in fields}
    values["backend"] = backend
    values["device"] = device
    if batch_size is not None:
        values["batch_size"] = int(batch_size)
    if pretrained_path is not None:
        if backend != "open_clip":
            raise ValueError("pretrained_path only applies to the open_clip backend")
        values["pretrained"] = pretrained_path
    return TeacherConfig(**values)


def build_teacher_from_spec(spec: Mapping[str, Any], device: str = "auto",
                            check_id: bool = True,
                            pretrained_path: str | None = None) -> Teacher:
    """Rebuild a recorded teacher; with ``check_id`` its id must equal the recorded one.

    A mismatch (e.g. a different checkpoint file under the same path) raises ``ValueError``:
    text embeddings from other weights would not match the student.
    """
    teacher = build_teacher(teacher_config_from_spec(spec, device=device,
                                                     pretrained_path=pretrained_path))
    recorded = spec.get("id")
    if check_id and recorded is not None and teacher.id != recorded:
        raise ValueError(f"rebuilt teacher is {teacher.id!r} but the bundle was made with "
                         f"{recorded!r}")
    return teacher
