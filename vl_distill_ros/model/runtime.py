"""Fast student inference: ONNX export, ONNX Runtime and PyTorch runners.

The node and ``replay-eval --offline`` embed one batch of crops per frame. Two runners do
the same thing, ``(N, 3, S, S)`` float32 normalised images -> ``(N, D)`` L2-normalised
float32 embeddings:

- :class:`OnnxRunner`: the student exported to ONNX (:func:`export_student_onnx`, the
  L2 normalisation is inside the graph) and run by ONNX Runtime's CPU execution provider,
  in float32 or, when asked, as the bundle's INT8 copy (``student_int8.onnx``, about half
  the CPU time; made at export, :mod:`vl_distill_ros.training.quantize`);
- :class:`TorchRunner`: PyTorch eager in ``inference_mode`` with channels-last tensors,
  the fallback when ONNX Runtime is missing or fails.

:func:`make_runner` picks one for a bundle: ``auto`` prefers ONNX Runtime in float32 (the
bundle's ``student.onnx`` member, else an in-memory export), checks that it agrees with
PyTorch on one probe batch, and falls back to PyTorch with a logged warning on any failure.
The INT8 model runs only when asked for (``onnxruntime_int8``): it costs about 2 points of
accuracy on unseen objects (README, "Performance").
Preprocessing (crop, resize, normalise) is
:func:`vl_distill_ros.perception.preprocess.preprocess_crops`.
"""
from __future__ import annotations

import copy
import io
import logging
import os
import warnings
from pathlib import Path
from typing import BinaryIO, NoReturn, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from ..thread_names import os_thread_named
from .student import InputSpec, Student


log = logging.getLogger(__name__)

#: Name of the ONNX graph input: (N, 3, S, S) float32, normalised as the student's InputSpec.
INPUT_NAME = "images"
#: Name of the ONNX graph output: (N, D) float32, L2-normalised.
OUTPUT_NAME = "embeddings"
#: Default ONNX opset.
DEFAULT_OPSET = 17
#: Backends accepted by :func:`make_runner`.
BACKENDS = ("auto", "onnxruntime", "onnxruntime_int8", "torch")
#: Values of ``inference_backend_behind`` (:func:`make_behind_runner`).
BEHIND_BACKENDS = ("same", "onnxruntime_int8")
#: Smallest per-row cosine between the ONNX and PyTorch outputs accepted by :func:`make_runner`.
PARITY_MIN_COSINE = 1.0 - 1e-4
#: The same for the INT8 model, on :func:`image_probe` pictures: a check that it is this
#: student's model at all (real crops agree at about 0.99, see the bundle's
#: ``student.onnx_int8`` record; these pictures 0.78 with the default bundle, another
#: student's model below 0), so the bound is loose.
INT8_PROBE_MIN_COSINE = 0.5


class RuntimeBackendError(RuntimeError):
    """A runner cannot be built or cannot run (ONNX export, ONNX Runtime session...)."""


@runtime_checkable
class StudentRunner(Protocol):
    """Embeds a preprocessed batch with a student; what the node and replay-eval call."""

    #: ``"onnxruntime"``, ``"onnxruntime_int8"`` or ``"torch"``.
    backend: str
    #: Square input size S the runner expects.
    image_size: int
    #: Embedding dimension D.
    embed_dim: int

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 normalised images -> (N, D) float32 unit vectors."""
        ...


def _check_batch(batch: np.ndarray, image_size: int) -> np.ndarray:
    """Validate a batch and return it as a C-contiguous float32 array."""
    batch = np.asarray(batch)
    if batch.ndim != 4 or batch.shape[1] != 3 or batch.shape[2:] != (image_size, image_size):
        raise ValueError(f"expected a batch of shape (N, 3, {image_size}, {image_size}), "
                         f"got {batch.shape}")
    return np.ascontiguousarray(batch, dtype=np.float32)


# -- export --------------------------------------------------------------------------------
def export_student_onnx(student: Student,
                        path_or_buffer: str | os.PathLike | BinaryIO | None = None,
                        opset: int = DEFAULT_OPSET) -> bytes:
    """Export ``student`` to ONNX and return the serialised model.

    The graph has one input ``images`` (N, 3, S, S) float32 with a dynamic batch axis and
    one output ``embeddings`` (N, D) float32, already L2-normalised. BatchNorm is folded
    into the convolutions (eval mode). The model is checked with ``onnx.checker`` and,
    when ``path_or_buffer`` is given, also written there (a path or a binary file object).
    The student is not modified (its train/eval mode is restored; a copy is exported when
    it lives on an accelerator).

    Raises:
        RuntimeBackendError: the exporter failed or produced an invalid model.
    """
    try:
        import onnx
    except ImportError as exc:
        raise RuntimeBackendError(f"ONNX export needs the 'onnx' package: {exc}") from None
    size = int(student.input_spec.image_size)
    model = student
    if any(p.device.type != "cpu" for p in student.parameters()):
        model = copy.deepcopy(student).cpu()
    was_training = model.training
    model.eval()
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # The TorchScript-based exporter (no onnxscript dependency) warns that it is
            # legacy, and constant folding warns about the padding slices of EfficientNet.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (torch.zeros(1, 3, size, size),), buf, dynamo=False,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=int(opset), do_constant_folding=True)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types
        raise RuntimeBackendError(f"ONNX export of the {student.cfg.backbone} student failed: "
                                  f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    finally:
        model.train(was_training)
    proto = onnx.load_from_string(buf.getvalue())
    # Name the output's embedding axis with its size (the exporter leaves it symbolic).
    out_dims = proto.graph.output[0].type.tensor_type.shape.dim
    if len(out_dims) == 2:
        out_dims[1].Clear()
        out_dims[1].dim_value = int(student.embed_dim)
    proto.doc_string = (f"vl_distill_ros student {student.cfg.backbone}@{size} -> "
                        f"{student.embed_dim}-d L2-normalised embeddings")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise RuntimeBackendError(f"exported ONNX model is invalid: {exc}") from None
    data = proto.SerializeToString()
    if path_or_buffer is not None:
        if isinstance(path_or_buffer, (str, os.PathLike)):
            Path(path_or_buffer).write_bytes(data)
        else:
            path_or_buffer.write(data)
    return data


# -- runners -------------------------------------------------------------------------------
class TorchRunner:
    """PyTorch eager inference (``inference_mode``, optionally channels-last).

    Args:
        student: the student; it is put in eval mode (the runner shares its weights).
        threads: ``torch.set_num_threads`` value applied once here (process-wide);
            0 leaves torch's setting alone.
        channels_last: run in ``torch.channels_last`` memory format (faster for the
            depthwise convolutions of EfficientNet-Lite/MobileNet on CPU).
    """

    backend = "torch"

    def __init__(self, student: Student, threads: int = 0, channels_last: bool = True) -> None:
        if threads < 0:
            raise ValueError(f"threads must be >= 0, got {threads}")
        if threads > 0:
            torch.set_num_threads(int(threads))
        self.student = student.eval()
        self.channels_last = bool(channels_last)
        self.device = next(student.parameters()).device
        if self.channels_last:
            self.student = self.student.to(memory_format=torch.channels_last)
        self.image_size = int(student.input_spec.image_size)
        self.embed_dim = int(student.embed_dim)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 normalised images -> (N, D) float32 unit vectors."""
        batch = _check_batch(batch, self.image_size)
        if len(batch) == 0:
            return np.zeros((0, self.embed_dim), np.float32)
        x = torch.from_numpy(batch).to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            out = self.student(x)
        return out.float().cpu().numpy()

    def __repr__(self) -> str:
        return (f"TorchRunner({self.student.cfg.backbone}@{self.image_size}, "
                f"channels_last={self.channels_last}, threads={torch.get_num_threads()})")


class OnnxRunner:
    """ONNX Runtime inference of an exported student.

    Args:
        model: serialised ONNX model (bytes) or a path to a ``.onnx`` file, as written by
            :func:`export_student_onnx`.
        threads: intra-op threads of the session (0 = ONNX Runtime's default, all cores).
        providers: execution providers, default ``["CPUExecutionProvider"]``.
        allow_spinning: let idle worker threads spin briefly (more throughput, but burns
            CPU between calls; turn off when sharing cores with other busy processes).
        int8: the model is the INT8 copy (sets :attr:`backend` to ``onnxruntime_int8``).

    Raises:
        RuntimeBackendError: onnxruntime is missing or the session cannot be created.
    """

    backend = "onnxruntime"

    def __init__(self, model: bytes | str | os.PathLike, threads: int = 2,
                 providers: Sequence[str] | None = None, allow_spinning: bool = False,
                 int8: bool = False) -> None:
        if threads < 0:
            raise ValueError(f"threads must be >= 0, got {threads}")
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RuntimeBackendError(f"onnxruntime is not installed: {exc}") from None
        if isinstance(model, (str, os.PathLike)):
            model = Path(model).read_bytes()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only
        if not allow_spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.providers = list(providers) if providers else ["CPUExecutionProvider"]
        try:
            with os_thread_named("vl_student"):    # its intra-op threads, in top -H
                self.session = ort.InferenceSession(bytes(model), sess_options=opts,
                                                    providers=self.providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise RuntimeBackendError(f"ONNX Runtime cannot load the student model: "
                                      f"{type(exc).__name__}: {str(exc)[:300]}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or outputs[0].name != OUTPUT_NAME:
            raise RuntimeBackendError(
                f"ONNX model has inputs {[i.name for i in inputs]} and outputs "
                f"{[o.name for o in outputs]}; expected [{INPUT_NAME!r}] -> {OUTPUT_NAME!r}")
        shape = inputs[0].shape
        out_shape = outputs[0].shape
        if (len(shape) != 4 or not isinstance(shape[2], int) or shape[2] != shape[3]
                or len(out_shape) != 2 or not isinstance(out_shape[1], int)):
            raise RuntimeBackendError(f"ONNX model has input shape {shape} and output shape "
                                      f"{out_shape}; expected (N, 3, S, S) -> (N, D)")
        self.image_size = int(shape[2])
        self.embed_dim = int(out_shape[1])
        self.threads = int(threads)
        if int8:
            self.backend = "onnxruntime_int8"

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 normalised images -> (N, D) float32 unit vectors."""
        batch = _check_batch(batch, self.image_size)
        if len(batch) == 0:
            return np.zeros((0, self.embed_dim), np.float32)
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]

    def __repr__(self) -> str:
        return (f"OnnxRunner(S={self.image_size}, D={self.embed_dim}, threads={self.threads}, "
                f"{self.backend}, providers={self.providers})")


def _min_row_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return float((a * b).sum(axis=1).min())


def check_parity(runner: StudentRunner, reference: StudentRunner, batch_size: int = 2,
                 seed: int = 0, probe: np.ndarray | None = None) -> float:
    """Smallest per-row cosine between two runners on a probe batch (random normal values
    unless ``probe`` is given)."""
    if probe is None:
        rng = np.random.default_rng(seed)
        probe = rng.standard_normal((batch_size, 3, runner.image_size, runner.image_size))
    x = np.asarray(probe, np.float32)
    return _min_row_cosine(runner.embed(x), reference.embed(x))


def image_probe(spec: InputSpec, batch_size: int = 4, seed: int = 0) -> np.ndarray:
    """A normalised ``(N, 3, S, S)`` batch of image-like pictures (colour gradients with a
    disc on them), within the value ranges a model calibrated on photos expects."""
    rng = np.random.default_rng(seed)
    size = int(spec.image_size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    images = []
    for _ in range(batch_size):
        a, b, c = rng.uniform(0.1, 0.9, (3, 3))
        img = a[:, None, None] + (b - a)[:, None, None] * xx + (c - a)[:, None, None] * yy / 2
        cy, cx, r = rng.uniform(0.3, 0.7, 3) * (1, 1, 0.5)
        img[:, (yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 1, (3, 1))
        images.append(np.clip(img, 0, 1))
    x = np.stack(images)
    if spec.channels.upper() == "BGR":
        x = x[:, ::-1]
    mean = np.asarray(spec.mean, np.float32)[None, :, None, None]
    std = np.asarray(spec.std, np.float32)[None, :, None, None]
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


class StudentSource(Protocol):
    """What :func:`make_runner` needs of a bundle (a loaded
    :class:`~vl_distill_ros.model.bundle.Bundle` is one): its student and, optionally, the
    student exported to ONNX and its INT8 copy. Keeps this module free of the bundle
    format."""

    student: Student
    onnx_bytes: bytes | None
    onnx_int8_bytes: bytes | None


def _onnx_runner(student: Student, model: bytes, threads: int, verify: bool,
                 int8: bool) -> OnnxRunner:
    """An ONNX Runtime runner for ``model``, checked to fit ``student`` and, with
    ``verify``, to agree with it on a probe batch (see :data:`PARITY_MIN_COSINE`,
    :data:`INT8_PROBE_MIN_COSINE`)."""
    runner = OnnxRunner(model, threads=threads, int8=int8)
    if (runner.image_size != student.input_spec.image_size
            or runner.embed_dim != student.embed_dim):
        raise RuntimeBackendError(
            f"ONNX model is {runner.image_size} px -> {runner.embed_dim}-d but the student "
            f"is {student.input_spec.image_size} px -> {student.embed_dim}-d")
    if verify:
        bound = INT8_PROBE_MIN_COSINE if int8 else PARITY_MIN_COSINE
        probe = image_probe(student.input_spec) if int8 else None
        cos = check_parity(runner, TorchRunner(student, threads=0, channels_last=False),
                           probe=probe)
        if not cos >= bound:
            raise RuntimeBackendError(f"ONNX Runtime{' INT8' if int8 else ''} and PyTorch "
                                      f"disagree (min cosine {cos:.6f} < {bound})")
    return runner


def _backend_error(exc: Exception, what: str) -> RuntimeBackendError:
    """``exc`` as a :class:`RuntimeBackendError` (itself when it is one)."""
    if isinstance(exc, RuntimeBackendError):
        return exc
    if isinstance(exc, ImportError):
        return RuntimeBackendError(f"onnxruntime is not installed: {exc}")
    return RuntimeBackendError(f"{what} failed: {type(exc).__name__}: {str(exc)[:300]}")


def _raise_backend_error(exc: Exception, what: str) -> NoReturn:
    """Raise ``exc`` as a :class:`RuntimeBackendError`, chained to it when converted."""
    err = _backend_error(exc, what)
    if err is exc:
        raise exc
    raise err from exc


def make_runner(bundle: StudentSource | Student, backend: str = "auto", threads: int = 2,
                verify: bool = True) -> StudentRunner:
    """The fastest working runner for a bundle's (or a bare) student.

    Args:
        bundle: a loaded :class:`~vl_distill_ros.model.bundle.Bundle` (its ``onnx_bytes``
            and ``onnx_int8_bytes`` members are used when present) or a :class:`Student`.
        backend: ``auto`` (ONNX Runtime in float32 if it imports and works, else PyTorch;
            PyTorch when the student was loaded onto a GPU), ``onnxruntime`` (ONNX Runtime
            in float32, or an error), ``onnxruntime_int8`` (the bundle's INT8 model: about
            half the CPU time, a little less accurate on unseen objects; or an error) or
            ``torch``.
        threads: CPU threads for the chosen backend (0 = the library default).
        verify: with ONNX Runtime, check once that it agrees with PyTorch on a probe
            batch (float: cosine >= 1 - 1e-4 per row; INT8: a loose sanity bound,
            :data:`INT8_PROBE_MIN_COSINE`); ``auto`` falls back to PyTorch if not.

    Without an ONNX member the student is exported in memory (about a second).

    Raises:
        ValueError: unknown ``backend``.
        RuntimeBackendError: ``backend='onnxruntime'`` or ``'onnxruntime_int8'`` and that
            model cannot be used.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown inference backend {backend!r}; choose one of {BACKENDS}")
    student: Student = bundle if isinstance(bundle, Student) else bundle.student
    onnx_bytes, int8_bytes = (None, None) if isinstance(bundle, Student) else (
        getattr(bundle, "onnx_bytes", None), getattr(bundle, "onnx_int8_bytes", None))
    on_accelerator = any(p.device.type != "cpu" for p in student.parameters())
    if backend == "torch" or (backend == "auto" and on_accelerator):
        return TorchRunner(student, threads=threads)
    if backend == "onnxruntime_int8":
        if int8_bytes is None:
            raise RuntimeBackendError("inference_backend onnxruntime_int8: the bundle has no "
                                      "INT8 model (student_int8.onnx; vl-distill export "
                                      "makes one)")
        try:
            return _onnx_runner(student, int8_bytes, threads, verify, int8=True)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            _raise_backend_error(exc, "ONNX Runtime INT8 backend")
    try:
        import onnxruntime  # noqa: F401 - fail fast, before spending a second on the export

        return _onnx_runner(student, onnx_bytes or export_student_onnx(student), threads,
                            verify, int8=False)
    except Exception as exc:  # noqa: BLE001 - any ORT/export failure means: use torch
        if backend == "onnxruntime":
            _raise_backend_error(exc, "ONNX Runtime backend")
        log.warning("ONNX Runtime unavailable for the student (%s); falling back to PyTorch",
                    str(_backend_error(exc, "ONNX Runtime backend"))[:300])
        return TorchRunner(student, threads=threads)


def make_behind_runner(bundle: StudentSource | Student, runner: StudentRunner, backend: str,
                       behind: str = "same", threads: int = 2) -> tuple[StudentRunner, str]:
    """The student runner of the frames processed while the node stays behind its cameras
    with its first cheaper step (``inference_backend_behind``; see
    :mod:`~vl_distill_ros.perception.keeping_up`), and what it is.

    ``behind='onnxruntime_int8'`` gives the bundle's INT8 model (checked as
    :func:`make_runner` checks it) in place of ``runner`` only where ``backend`` was ``auto``
    and chose ONNX Runtime in float32: never in place of a runtime the user chose, nor of
    PyTorch on a GPU. Where it cannot (no INT8 model, ONNX Runtime refuses it) the answer is
    ``runner`` itself, with the reason.

    Args:
        bundle: as :func:`make_runner`'s.
        runner: the runner :func:`make_runner` built for ``backend``.
        backend: the ``inference_backend`` it was built for.
        behind: ``same`` or ``onnxruntime_int8`` (:data:`BEHIND_BACKENDS`).
        threads: CPU threads of the INT8 runner.

    Returns:
        ``(runner, what)``: ``what`` is ``onnxruntime_int8`` or ``same`` with why in
        parentheses where ``behind`` asked for more.

    Raises:
        ValueError: ``behind`` is not one of :data:`BEHIND_BACKENDS`.
    """
    if behind not in BEHIND_BACKENDS:
        raise ValueError(f"unknown inference_backend_behind {behind!r}; choose one of "
                         f"{BEHIND_BACKENDS}")
    if behind == "same":
        return runner, "same"
    if backend != "auto" or getattr(runner, "backend", "") != "onnxruntime":
        return runner, (f"same (inference_backend {backend} runs "
                        f"{getattr(runner, 'backend', '?')}: kept)")
    student: Student = bundle if isinstance(bundle, Student) else bundle.student
    int8_bytes = None if isinstance(bundle, Student) else getattr(bundle, "onnx_int8_bytes", None)
    if int8_bytes is None:
        return runner, "same (the bundle has no INT8 student)"
    try:
        return _onnx_runner(student, int8_bytes, threads, True, int8=True), "onnxruntime_int8"
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        return runner, f"same ({str(_backend_error(exc, 'ONNX Runtime INT8 backend'))[:200]})"
