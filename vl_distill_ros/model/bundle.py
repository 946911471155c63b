"""Deployable bundles: what the node loads.

A bundle is one zip file holding

- ``manifest.json``: format version, teacher id and spec (to rebuild its text encoder for
  new names), student config and input spec, the vocabulary with its prompt settings, and
  the SHA-256 of every other member;
- ``student.pt``: the student's state_dict (loaded with ``weights_only=True``);
- ``text_embeddings.npy``: (L, D) float32 teacher text embeddings of the vocabulary;
- ``student.onnx`` (optional, written by default): the same student exported to ONNX for
  ONNX Runtime (see :mod:`vl_distill_ros.model.runtime`). Bundles without it still load;
  the runtime then exports the student in memory or runs it with PyTorch;
- ``student_int8.onnx`` (optional): an INT8 copy of that ONNX model, calibrated on the
  run's training images (:mod:`vl_distill_ros.training.quantize`); the manifest's
  ``student.onnx_int8`` record keeps how it agrees with the float student. The node runs
  it with ``inference_backend: onnxruntime_int8``.

The manifest's optional ``descriptions`` record (a vocabulary: key, name, description) holds
the descriptions of every label of the vocabulary file the bundle was exported from, its
description catalogue (:mod:`vl_distill_ros.model.descriptions`): a name given without a
description at run time is prompted with the catalogue's.

Loading checks all of it and raises :class:`BundleError` with a clear message on a corrupt,
truncated, tampered or mismatched bundle.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic_io import atomic_write_bytes
from .calibration import Calibration, CalibrationError
from .descriptions import DescriptionCatalogue
from ..config import ConfigError, StudentConfig, from_dict, to_dict
from .student import InputSpec, Student, StudentError, build_student
from .vocabulary import Vocabulary, VocabularyError

BUNDLE_FORMAT = "vl_distill_ros.bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "student.pt"
TEXT_EMB = "text_embeddings.npy"
ONNX_MODEL = "student.onnx"
ONNX_INT8_MODEL = "student_int8.onnx"
TRAINED_EMB = "trained_text_embeddings.npy"
# What a bundle's members may unpack to: the manifest (vocabulary, descriptions, calibration:
# ~30 kB for the 26 YCB names) and every member together. A zip holds members compressed, so
# without them a small file (1 MB of zeros or spaces deflates ~1000x) could make the robot
# allocate gigabytes before a checksum or a shape is looked at.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_UNPACKED_BYTES = 1024 * 1024 * 1024

log = logging.getLogger(__name__)


class BundleError(ValueError):
    """A bundle is missing, corrupt or does not match what the caller expects."""


@dataclass
class Bundle:
    """A loaded bundle: a student in eval mode plus its vocabulary embeddings."""

    path: Path
    manifest: dict
    student: Student
    text_embeddings: torch.Tensor  # (L, D)
    vocabulary: Vocabulary
    templates: list[str]
    enrich: bool
    extra: dict = field(default_factory=dict)
    #: The serialised ONNX export of ``student`` (checksummed), or None in older bundles.
    onnx_bytes: bytes | None = None
    #: The INT8 copy of the ONNX export (checksummed), or None when the bundle has none.
    onnx_int8_bytes: bytes | None = None
    #: Seen bias and open-set threshold chosen after training, or None (older bundles:
    #: no bias, the fixed default threshold).
    calibration: Calibration | None = None
    #: (T, D) teacher text embeddings of ``calibration.trained_names`` (open-set
    #: negatives), or None.
    trained_embeddings: torch.Tensor | None = None
    #: The descriptions of every label of the vocabulary file the bundle was exported from
    #: (the manifest's ``descriptions``), or None in older bundles.
    descriptions: Vocabulary | None = None

    def description_catalogue(self) -> DescriptionCatalogue:
        """The descriptions a name given without one is prompted with: the bundle's
        vocabulary's, then those of its ``descriptions`` record."""
        return DescriptionCatalogue.from_vocabularies(self.vocabulary, self.descriptions)

    @property
    def teacher_id(self) -> str:
        """The teacher id the text embeddings belong to."""
        return self.manifest["teacher"]["id"]

    @property
    def teacher_spec(self) -> dict:
        """The teacher's spec (how to rebuild its text encoder)."""
        return self.manifest["teacher"]["spec"]

    @property
    def input_spec(self) -> InputSpec:
        """The student's input (size, normalisation, channel order)."""
        return self.student.input_spec

    @property
    def embed_dim(self) -> int:
        """The embedding dimension (the teacher's)."""
        return int(self.manifest["teacher"]["embed_dim"])


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _calibration_members(calibration: Calibration | None, trained_embeddings: Any,
                         embed_dim: int) -> dict[str, bytes]:
    """The bundle members a calibration record needs (the trained names' text embeddings
    for its negatives), after checking it fits a student of ``embed_dim``."""
    if calibration is None:
        return {}
    try:
        calibration.check_embed_dim(embed_dim)
    except CalibrationError as exc:
        raise BundleError(str(exc)) from None
    if not calibration.negatives:
        return {}
    if trained_embeddings is None:
        raise BundleError("a calibration record with negatives needs the trained names' "
                          "text embeddings")
    tr = np.asarray(torch.as_tensor(trained_embeddings).detach().float().cpu())
    if tr.shape != (len(calibration.trained_names), embed_dim):
        raise BundleError(f"trained embeddings {tr.shape} do not match "
                          f"{len(calibration.trained_names)} trained names x {embed_dim} dims")
    tr_bytes = io.BytesIO()
    np.save(tr_bytes, tr.astype(np.float32))
    return {TRAINED_EMB: tr_bytes.getvalue()}


def nonfinite_weight(student: torch.nn.Module) -> str | None:
    """Why ``student`` cannot be used (a floating-point weight or buffer holding NaN or
    infinity, what a diverged training run leaves: every score would be NaN), or None."""
    for name, value in student.state_dict().items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            return (f"student weight {name} holds non-finite values (NaN or infinity; the "
                    "training that wrote it diverged)")
    return None


def save_bundle(path: str | Path, student: Student, text_embeddings: torch.Tensor,
                vocabulary: Vocabulary, teacher_id: str, teacher_spec: dict[str, Any],
                templates: list[str], enrich: bool, metrics: dict | None = None,
                name: str = "", onnx: bool = True,
                calibration: Calibration | None = None,
                trained_embeddings: torch.Tensor | np.ndarray | None = None,
                int8: tuple[bytes, dict[str, Any]] | None = None,
                descriptions: Vocabulary | None = None) -> Path:
    """Write a bundle atomically (temp file in the same folder, fsync, rename).

    ``calibration`` (optional) is stored as the manifest's ``calibration`` record: the
    seen bias, open-set threshold and trained names the node applies by default; a record
    with ``negatives`` needs ``trained_embeddings`` (one row per trained name), stored as
    ``trained_text_embeddings.npy``.

    With ``onnx=True`` the student is also exported to ONNX (member ``student.onnx``,
    checksummed like the others). If the export fails the bundle is written without it
    and a warning is logged: the runtime can still run the student with PyTorch.
    ``int8`` (optional) is the student's INT8 ONNX model and the record of how it agrees
    with the float one (see :func:`vl_distill_ros.training.quantize.quantize_student`),
    stored as ``student_int8.onnx`` and the manifest's ``student.onnx_int8``.
    ``descriptions`` (optional): the description catalogue, the manifest's
    ``descriptions`` (its labels without a description are left out).
    """
    path = Path(path)
    emb = text_embeddings.detach().float().cpu().numpy()
    if emb.shape != (len(vocabulary), student.embed_dim):
        raise BundleError(f"text embeddings {emb.shape} do not match {len(vocabulary)} labels "
                          f"x {student.embed_dim} dims")
    if not np.isfinite(emb).all():
        raise BundleError("text embeddings hold non-finite values")
    bad = nonfinite_weight(student)
    if bad is not None:
        raise BundleError(bad)
    weights = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in student.state_dict().items()}, weights)
    emb_bytes = io.BytesIO()
    np.save(emb_bytes, emb.astype(np.float32))
    members = {WEIGHTS: weights.getvalue(), TEXT_EMB: emb_bytes.getvalue(),
               **_calibration_members(calibration, trained_embeddings, student.embed_dim)}
    onnx_info: dict | None = None
    if onnx:
        from .runtime import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, RuntimeBackendError, \
            export_student_onnx

        try:
            members[ONNX_MODEL] = export_student_onnx(student, opset=DEFAULT_OPSET)
            onnx_info = {"file": ONNX_MODEL, "opset": DEFAULT_OPSET, "input": INPUT_NAME,
                         "output": OUTPUT_NAME}
        except RuntimeBackendError as exc:
            log.warning("bundle %s written without %s: %s", path, ONNX_MODEL, exc)
    int8_info: dict | None = None
    if int8 is not None:
        members[ONNX_INT8_MODEL] = bytes(int8[0])
        int8_info = {"file": ONNX_INT8_MODEL, **dict(int8[1])}
    manifest = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "name": name,
        "created_unix": int(time.time()),
        "teacher": {"id": teacher_id, "spec": teacher_spec, "embed_dim": student.embed_dim},
        "student": {"config": to_dict(student.cfg), "input_spec": student.input_spec.to_dict(),
                    **({"onnx": onnx_info} if onnx_info else {}),
                    **({"onnx_int8": int8_info} if int8_info else {})},
        "vocabulary": {**vocabulary.to_dict(), "templates": list(templates), "enrich": enrich},
        "metrics": metrics or {},
        **({"calibration": calibration.to_dict()} if calibration is not None else {}),
        **_descriptions_record(descriptions),
    }
    return _write_bundle(path, manifest, members)


def _descriptions_record(descriptions: Vocabulary | None) -> dict[str, Any]:
    """The manifest's ``descriptions`` record of ``descriptions`` (its described labels);
    empty when there are none."""
    described = [label for label in descriptions or () if label.description]
    if not described:
        return {}
    return {"descriptions": Vocabulary(tuple(described)).to_dict()}


def replace_descriptions(path: str | Path, out: str | Path, descriptions: Vocabulary) -> Path:
    """Write ``path``'s bundle to ``out`` with ``descriptions`` as its description catalogue
    (the manifest's ``descriptions``); every member is copied byte for byte. ``out`` may be
    ``path``; it is written atomically.

    Raises:
        BundleError: ``path`` is not a readable bundle, or ``descriptions`` has none.
    """
    path = Path(path)
    record = _descriptions_record(descriptions)
    if not record:
        raise BundleError("the description catalogue has no label with a description")
    manifest = read_manifest(path)
    members = _read_members(path, manifest["files"])
    manifest.update(record)
    return _write_bundle(Path(out), manifest, members)


def _write_bundle(out: Path, manifest: dict, members: dict[str, bytes]) -> Path:
    """Zip ``manifest`` (its ``files`` digests made from ``members``) and ``members`` into
    ``out``, atomically."""
    manifest["files"] = {k: _sha256(v) for k, v in members.items()}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MANIFEST, json.dumps(manifest, indent=2))
        for k, v in members.items():
            zf.writestr(k, v)
    atomic_write_bytes(out, buf.getvalue())
    return out


def replace_int8_model(path: str | Path, out: str | Path, model: bytes,
                       record: dict[str, Any]) -> Path:
    """Write ``path``'s bundle to ``out`` with ``model`` as its INT8 student
    (``student_int8.onnx``) and ``record`` as the manifest's ``student.onnx_int8``; every
    other member is copied byte for byte (the float student, its embeddings and calibration
    stay exactly as they were). ``out`` may be ``path``; it is written atomically.

    Raises:
        BundleError: ``path`` is not a readable bundle.
    """
    path = Path(path)
    manifest = read_manifest(path)
    members = _read_members(path, manifest["files"])
    members[ONNX_INT8_MODEL] = bytes(model)
    manifest["student"]["onnx_int8"] = {"file": ONNX_INT8_MODEL, **dict(record)}
    return _write_bundle(Path(out), manifest, members)


def read_manifest(path: str | Path) -> dict:
    """Read and check a bundle's manifest without loading the weights."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"bundle not found: {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            raw = _read_member(zf, MANIFEST, MAX_MANIFEST_BYTES)
    except (zipfile.BadZipFile, zlib_error()):
        raise BundleError(f"{path} is not a bundle (not a zip file, or truncated)") from None
    except KeyError:
        raise BundleError(f"{path} has no {MANIFEST}; not a vl_distill_ros bundle") from None
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: manifest is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: not a vl_distill_ros bundle (format field missing)")
    if manifest.get("format_version") != BUNDLE_VERSION:
        raise BundleError(f"{path}: bundle format version {manifest.get('format_version')} is not "
                          f"supported (this build reads version {BUNDLE_VERSION})")
    for key in ("teacher", "student", "vocabulary", "files"):
        if key not in manifest:
            raise BundleError(f"{path}: manifest lacks '{key}'")
        if not isinstance(manifest[key], dict):
            raise BundleError(f"{path}: manifest '{key}' is not a mapping")
    if not all(isinstance(name, str) and isinstance(digest, str)
               for name, digest in manifest["files"].items()):
        raise BundleError(f"{path}: manifest 'files' must map member names to SHA-256 digests")
    return manifest


def _check_teacher_and_templates(manifest: dict) -> None:
    """Raise ValueError unless the manifest names its teacher (a non-empty id and a spec
    mapping, what new label names are embedded with) and has usable prompt templates (format
    strings with ``{name}``)."""
    teacher = manifest["teacher"]
    if not isinstance(teacher, dict):
        raise ValueError("'teacher' must be a mapping")
    if not isinstance(teacher.get("id"), str) or not teacher["id"].strip():
        raise ValueError("teacher id is missing or empty")
    if not isinstance(teacher.get("spec"), dict):
        raise ValueError("teacher spec is missing (a mapping is needed to embed new names)")
    templates = manifest["vocabulary"].get("templates") or ["a photo of a {name}."]
    if not isinstance(templates, list) or not templates:
        raise ValueError("vocabulary templates must be a non-empty list")
    for template in templates:
        if not isinstance(template, str) or "{name}" not in template:
            raise ValueError(f"prompt template {template!r:.80} has no '{{name}}'")
        try:
            template.format(name="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"prompt template {template!r:.80} is not a valid format "
                             f"string ({exc!r})") from None
    if not isinstance(manifest["vocabulary"].get("enrich", True), bool):
        raise ValueError("vocabulary 'enrich' must be true or false")


def _read_member(zf: zipfile.ZipFile, name: str, max_bytes: int) -> bytes:
    """Member ``name`` of ``zf``, refused (:class:`BundleError`) when it unpacks to more than
    ``max_bytes``: its declared size is checked first and at most ``max_bytes + 1`` bytes are
    inflated, so a member whose header understates its size cannot fill the memory either.

    Raises:
        KeyError: no such member.
        BundleError: the member is larger than ``max_bytes``.
    """
    info = zf.getinfo(name)
    too_big = BundleError(f"{zf.filename}: member {name} unpacks to more than {max_bytes} "
                          "bytes; not a bundle this package wrote")
    if info.file_size > max_bytes:
        raise too_big
    with zf.open(info) as member:
        data = member.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise too_big
    return data


def _read_members(path: Path, files: dict[str, str]) -> dict[str, bytes]:
    """Every member the manifest lists, each checked against its SHA-256; together they may
    unpack to at most :data:`MAX_UNPACKED_BYTES`.

    Raises:
        BundleError: a member is missing or corrupt, the members are too large, or the zip
            itself is corrupt.
    """
    members: dict[str, bytes] = {}
    left = MAX_UNPACKED_BYTES
    try:
        with zipfile.ZipFile(path) as zf:
            for name, digest in files.items():
                try:
                    data = _read_member(zf, name, left)
                except KeyError:
                    raise BundleError(f"{path}: member {name} is missing") from None
                left -= len(data)
                if _sha256(data) != digest:
                    raise BundleError(f"{path}: member {name} is corrupt (checksum mismatch)")
                members[name] = data
    except (zipfile.BadZipFile, zlib_error()) as exc:
        raise BundleError(f"{path}: corrupt bundle ({exc})") from None
    return members


def _load_student(path: Path, members: dict[str, bytes], student_cfg: StudentConfig,
                  embed_dim: int) -> Student:
    """The bundle's student with its weights (finite ones: a diverged training run would
    make every score NaN).

    Raises:
        BundleError: the weights do not fit the declared student, or are not finite.
    """
    try:
        student = build_student(student_cfg, embed_dim, load_weights=False)
        state = torch.load(io.BytesIO(members[WEIGHTS]), map_location="cpu", weights_only=True)
        student.load_state_dict(state, strict=True)
    except ImportError as exc:   # the backbone's package, not the bundle, is missing
        raise BundleError(f"{path}: its {student_cfg.backbone} student needs a package this "
                          f"machine lacks ({exc}): pip install -r requirements.txt") from None
    except (StudentError, RuntimeError, KeyError, Exception) as exc:  # noqa: BLE001
        raise BundleError(f"{path}: student weights do not fit the declared "
                          f"{student_cfg.backbone} student: {str(exc)[:300]}") from None
    bad = nonfinite_weight(student)
    if bad is not None:
        raise BundleError(f"{path}: {bad}")
    return student


def load_bundle(path: str | Path, expected_teacher_id: str | None = None,
                device: str | torch.device = "cpu") -> Bundle:
    """Load and validate a bundle.

    Raises :class:`BundleError` when the file is missing, not a zip, truncated, has a member
    whose checksum differs from the manifest, has weights that do not fit the declared
    student, embeddings that do not fit the vocabulary, or (with ``expected_teacher_id``)
    was distilled from another teacher.
    """
    path = Path(path)
    manifest = read_manifest(path)
    teacher_id = manifest["teacher"].get("id")
    if expected_teacher_id is not None and teacher_id != expected_teacher_id:
        raise BundleError(f"{path}: distilled from teacher {teacher_id!r}, but "
                          f"{expected_teacher_id!r} was expected; its embeddings are not "
                          "comparable")
    members = _read_members(path, manifest["files"])
    try:
        vocabulary = Vocabulary.from_dict(manifest["vocabulary"], source=f"{path}:vocabulary")
        descriptions = (_catalogue_from_manifest(manifest["descriptions"], path)
                        if "descriptions" in manifest else None)
        student_cfg = from_dict(StudentConfig, manifest["student"]["config"], "student")
        embed_dim = int(manifest["teacher"]["embed_dim"])
        _check_teacher_and_templates(manifest)
    except (VocabularyError, ConfigError, KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{path}: invalid manifest: {exc}") from None
    calibration = None
    if "calibration" in manifest:
        try:
            calibration = Calibration.from_dict(manifest["calibration"])
            calibration.check_embed_dim(embed_dim)
        except CalibrationError as exc:
            raise BundleError(f"{path}: invalid calibration record: {exc}") from None
    trained_emb = None
    if calibration is not None and calibration.negatives:
        if TRAINED_EMB not in members:
            raise BundleError(f"{path}: calibration record uses negatives but {TRAINED_EMB} "
                              "is missing")
        try:
            tr = np.load(io.BytesIO(members[TRAINED_EMB]), allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise BundleError(f"{path}: cannot read {TRAINED_EMB}: {exc}") from None
        if tr.shape != (len(calibration.trained_names), embed_dim) or \
                not np.isfinite(tr).all():
            raise BundleError(f"{path}: {TRAINED_EMB} has shape {tr.shape} (or non-finite "
                              f"values), expected ({len(calibration.trained_names)}, {embed_dim})")
        trained_emb = torch.from_numpy(tr).float()
    try:
        emb = np.load(io.BytesIO(members[TEXT_EMB]), allow_pickle=False)
    except (KeyError, ValueError, OSError) as exc:
        raise BundleError(f"{path}: cannot read {TEXT_EMB}: {exc}") from None
    if emb.shape != (len(vocabulary), embed_dim):
        raise BundleError(f"{path}: text embeddings have shape {emb.shape}, expected "
                          f"({len(vocabulary)}, {embed_dim})")
    if not np.isfinite(emb).all():
        raise BundleError(f"{path}: {TEXT_EMB} holds non-finite values")
    student = _load_student(path, members, student_cfg, embed_dim)
    try:
        declared = InputSpec.from_dict(manifest["student"]["input_spec"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{path}: invalid manifest: student input_spec: {exc!r:.200}") \
            from None
    if declared != student.input_spec:
        raise BundleError(f"{path}: input spec {declared} differs from the student's "
                          f"{student.input_spec}")
    student.eval().to(device)
    voc = manifest["vocabulary"]
    return Bundle(path=path, manifest=manifest, student=student,
                  text_embeddings=torch.from_numpy(emb).float(), vocabulary=vocabulary,
                  templates=list(voc.get("templates") or ["a photo of a {name}."]),
                  enrich=bool(voc.get("enrich", True)), onnx_bytes=members.get(ONNX_MODEL),
                  onnx_int8_bytes=members.get(ONNX_INT8_MODEL),
                  calibration=calibration, trained_embeddings=trained_emb,
                  descriptions=descriptions)


def _catalogue_from_manifest(record: object, path: Path) -> Vocabulary:
    """A bundle's description catalogue, read as a store saved under older name rules is
    (:meth:`Vocabulary.from_dict_migrating`): a bundle exported before names were compared
    Unicode-normalised may hold two spellings now read as one (``Rubik's`` / ``Rubik’s``);
    the later is left out, with a warning, rather than the bundle refused."""
    catalogue, changed = Vocabulary.from_dict_migrating(record, source=f"{path}:descriptions")
    if changed:
        log.warning("%s: description catalogue read under today's name rules (a later "
                    "spelling of an earlier name left out, a key made again): %s", path,
                    "; ".join(changed))
    return catalogue


def zlib_error() -> type[Exception]:
    """zlib's error type (a truncated deflate stream raises it)."""
    import zlib

    return zlib.error
