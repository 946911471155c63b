"""INT8 copies for ONNX Runtime (the student's and the box network's): static quantisation
calibrated on training images.

ONNX Runtime runs an INT8 EfficientNet-Lite (QDQ format, weights per channel, activations
per tensor, ranges from a calibration pass) in about half the CPU time of the float one
(VNNI/AMX kernels on current x86). Quantisation moves the embeddings a little, so the ranges
are calibrated on the run's own training images and the copy is measured before it is
stored: :func:`quantize_student` returns its agreement with the float student on other
training images (cosine, and top-1 over the bundle's vocabulary), which the bundle's
manifest keeps (``student.onnx_int8``) and the README quotes.

The weights are quantised to 7 bits (ONNX Runtime's ``reduce_range``). On x86 CPUs without
VNNI (AVX2 or AVX-512 only: many AMD EPYC and older Xeon machines) ONNX Runtime multiplies
uint8 activations by int8 weights with 16-bit intermediate sums that saturate on 8-bit
weights: the copy measured 0.994 mean cosine with the float student where it was made (a
Xeon with VNNI) and 0.89 on an AVX2-only EPYC. The model is made once and run on robots'
CPUs, so it is made for both: with 7-bit weights the sums fit (0.97-0.98 on that EPYC).

The student's first convolutions (its stem, its first block and most of its second,
:data:`STUDENT_FLOAT_CONVS`) stay in float32: their 8-bit activations lost most of what the
copy lost (sessions 58 and 59).

The box network (:mod:`..perception.box_net`) gets the same treatment
(:func:`quantize_box_net`): calibrated on frames of its training bags at the width the node
feeds it, checked by the boxes the two copies find on other frames.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..model.runtime import INPUT_NAME, OnnxRunner, RuntimeBackendError, export_student_onnx
from ..model.student import Student
from ..perception.preprocess import preprocess_crops

log = logging.getLogger(__name__)

#: Images the activation ranges are calibrated on, and images the result is checked on.
CALIBRATION_IMAGES = 256
PARITY_IMAGES = 256
#: Images per calibration batch.
CALIBRATION_BATCH = 16
#: Options of ``quantize_static`` besides the formats: 7-bit weights (see the module
#: docstring; ``reduce_range=False`` loses about a tenth of the cosine on CPUs without VNNI).
QUANTIZE_OPTIONS: dict[str, bool] = {"per_channel": True, "reduce_range": True}
#: The student's first convolutions (graph order) that stay in float32 (EfficientNet-Lite0:
#: the stem, block 0's depthwise and projection convolutions, block 1's expansion and
#: depthwise convolutions). They run at the highest resolutions on few channels, and their
#: INT8 error is carried through every later layer. Session 58 kept the first 3 in float: the
#: shipped student's copy agreed with it at mean cosine 0.991 (min 0.960, top-1 95.7%) instead
#: of 0.982 (0.884, 91.4%) on held-back training images, at the same speed. Session 59 took 5:
#: on dark, noisy frames (6 degraded RGB-D bags) it named 420 / 95 seen / unseen objects right
#: against 412 / 88 with 3 (float 433 / 104), about as many on clean bags (1076 / 319, float
#: 1073 / 312), for about 1.2 ms more per 4 crops (8.3 against 7.1 ms, float 11.8;
#: docs/performance.md).
STUDENT_FLOAT_CONVS = 5


@dataclass(frozen=True)
class Int8Parity:
    """How the INT8 copy agrees with the float student on held-back training images."""

    images: int
    mean_cosine: float
    min_cosine: float
    #: Fraction of images whose top-1 label over the vocabulary is the same.
    top1_agreement: float
    calibration_images: int
    #: The convolutions left in float32 (:data:`STUDENT_FLOAT_CONVS`).
    float_nodes: tuple[str, ...] = ()


def split_calibration(images: np.ndarray, calibration: int = CALIBRATION_IMAGES,
                      parity: int = PARITY_IMAGES) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint, evenly spread samples of ``(N, S, S, 3)`` uint8 images: one to calibrate
    on, one to check with (deterministic: every other image of an even stride)."""
    n = len(images)
    if n < 2:
        raise ValueError(f"need at least 2 images to calibrate and check, got {n}")
    take = min(n, calibration + parity)
    picks = np.linspace(0, n - 1, take).round().astype(int)
    return images[picks[0::2][:calibration]], images[picks[1::2][:parity]]


def _batches(batch: np.ndarray, input_name: str = INPUT_NAME, size: int = CALIBRATION_BATCH
             ) -> Iterator[dict[str, np.ndarray]]:
    for i in range(0, len(batch), size):
        yield {input_name: batch[i:i + size]}


def quantize_onnx(fp32_model: bytes, calibration: np.ndarray, input_name: str = INPUT_NAME,
                  batch_size: int = CALIBRATION_BATCH,
                  exclude: Sequence[str] = ()) -> bytes:
    """Static INT8 quantisation (QDQ, per-channel 7-bit weights, uint8 activations with
    min-max ranges) of a float ONNX model with one input, ``input_name``, calibrated on the
    preprocessed ``(N, ...)`` inputs ``calibration`` fed ``batch_size`` at a time (the
    student's ``(N, 3, S, S)`` crops; the box network's frames, one at a time).
    ``exclude``: names of nodes left in float32.

    Raises:
        RuntimeBackendError: ONNX Runtime's quantisation tools are missing or fail.
    """
    try:
        from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                              quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise RuntimeBackendError(f"INT8 quantisation needs onnxruntime: {exc}") from None

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = _batches(calibration, input_name, batch_size)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    with tempfile.TemporaryDirectory(prefix="vl_int8_") as tmp:
        src, pre, out = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(fp32_model)
        try:
            quant_pre_process(str(src), str(pre))
            quantize_static(str(pre), str(out), _Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=list(exclude) or None,
                            **QUANTIZE_OPTIONS)
        except Exception as exc:  # noqa: BLE001 - the quantiser raises many types
            raise RuntimeBackendError(f"INT8 quantisation failed: {type(exc).__name__}: "
                                      f"{str(exc)[:300]}") from exc
        return out.read_bytes()


def first_convolutions(model: bytes, count: int) -> list[str]:
    """The names of the first ``count`` Conv nodes of an ONNX model, in graph order (an
    exported network's order: from its input on)."""
    import onnx

    graph = onnx.load_from_string(model).graph
    return [n.name for n in graph.node if n.op_type == "Conv"][:max(0, count)]


def measure_parity(int8: OnnxRunner, fp32: OnnxRunner, batch: np.ndarray,
                   text_embeddings: np.ndarray, calibration_images: int,
                   float_nodes: Sequence[str] = ()) -> Int8Parity:
    """Cosine between the two runners' embeddings of ``batch`` and their top-1 agreement
    over ``text_embeddings`` (L, D)."""
    a = np.concatenate([fp32.embed(x[INPUT_NAME]) for x in _batches(batch)])
    b = np.concatenate([int8.embed(x[INPUT_NAME]) for x in _batches(batch)])
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1),
                                      1e-12)
    text = np.asarray(text_embeddings, np.float32)
    same = (a @ text.T).argmax(1) == (b @ text.T).argmax(1)
    return Int8Parity(images=len(batch), mean_cosine=round(float(cos.mean()), 5),
                      min_cosine=round(float(cos.min()), 5),
                      top1_agreement=round(float(same.mean()), 4),
                      calibration_images=int(calibration_images),
                      float_nodes=tuple(float_nodes))


def quantize_student(student: Student, images: np.ndarray, text_embeddings: np.ndarray,
                     fp32_model: bytes | None = None) -> tuple[bytes, Int8Parity]:
    """The student's INT8 ONNX model and its parity with the float one.

    Args:
        student: the trained student (exported to ONNX unless ``fp32_model`` is given).
        images: ``(N, S, S, 3)`` uint8 RGB training images, split by
            :func:`split_calibration` into calibration and check images.
        text_embeddings: ``(L, D)`` the bundle's label embeddings (for the top-1 agreement).
        fp32_model: the student's float ONNX export, when already made.

    Raises:
        RuntimeBackendError: export, quantisation or the INT8 session fails.
        ValueError: fewer than 2 images.
    """
    spec = student.input_spec
    calib, check = split_calibration(np.asarray(images))
    fp32_model = fp32_model or export_student_onnx(student)
    calib_batch = preprocess_crops(list(calib), spec)
    keep = first_convolutions(fp32_model, STUDENT_FLOAT_CONVS)
    int8_model = quantize_onnx(fp32_model, calib_batch, exclude=keep)
    parity = measure_parity(OnnxRunner(int8_model, threads=0), OnnxRunner(fp32_model, threads=0),
                            preprocess_crops(list(check), spec), text_embeddings, len(calib),
                            keep)
    log.info("INT8 student: %s", asdict(parity))
    return int8_model, parity


@dataclass(frozen=True)
class BoxNetInt8Parity:
    """How the box network's INT8 copy agrees with the float one on held-back frames."""

    frames: int
    input_width: int
    #: Boxes the float network finds (``threshold``), and those the INT8 copy finds too
    #: (a box at IoU 0.5 or more).
    float_boxes: int
    matched_boxes: int
    int8_boxes: int
    #: Mean absolute difference of the centre probabilities where either copy gives 0.1 or
    #: more.
    mean_score_difference: float
    calibration_frames: int
    #: The convolutions left in float32 (``float_convs``).
    float_nodes: tuple[str, ...] = ()


def quantize_box_net(fp32_model: bytes, frames: Sequence[np.ndarray], input_width: int = 480,
                     threshold: float = 0.3, float_convs: int = 0
                     ) -> tuple[bytes, BoxNetInt8Parity]:
    """The box network's INT8 ONNX model and its parity with the float one.

    Args:
        fp32_model: the float box network's ONNX file (bytes).
        frames: ``(H, W, 3)`` uint8 RGB frames of one size; every other one calibrates the
            activation ranges (fed as the node feeds them: resized to ``input_width``), the
            others check the copy.
        input_width: the width the frames are fed at (the node's ``box_net_input_width``).
        threshold: the boxes' smallest score for the check.
        float_convs: the first convolutions left in float32 (see
            :data:`STUDENT_FLOAT_CONVS`).

    Raises:
        RuntimeBackendError: quantisation or the INT8 session fails.
        ValueError: fewer than 2 frames, or frames of different sizes.
    """
    from ..perception.box_net import INPUT_NAME as BOX_INPUT, BoxNet, BoxNetError, box_overlap

    if len(frames) < 2:
        raise ValueError(f"need at least 2 frames to calibrate and check, got {len(frames)}")
    if len({f.shape for f in frames}) != 1:
        raise ValueError("the calibration frames differ in size")
    fp32 = BoxNet(fp32_model)
    calib, check = list(frames[0::2]), list(frames[1::2])
    inputs = np.concatenate([fp32.network_input(f, input_width)[0] for f in calib])
    keep = first_convolutions(fp32_model, float_convs)
    int8_model = quantize_onnx(fp32_model, inputs, BOX_INPUT, batch_size=1, exclude=keep)
    try:
        int8 = BoxNet(int8_model)
    except BoxNetError as exc:
        raise RuntimeBackendError(f"the INT8 box network does not load: {exc}") from None
    float_found = int8_found = matched = 0
    diffs = []
    for frame in check:
        x = fp32.network_input(frame, input_width)[0]
        a, b = (1.0 / (1.0 + np.exp(-net.session.run(None, {BOX_INPUT: x})[0]))
                for net in (fp32, int8))
        near = (a >= 0.1) | (b >= 0.1)
        diffs.append(float(np.abs(a - b)[near].mean()) if near.any() else 0.0)
        boxes_f = fp32.detect(frame, threshold, (input_width,))[0]
        boxes_i = int8.detect(frame, threshold, (input_width,))[0]
        float_found, int8_found = float_found + len(boxes_f), int8_found + len(boxes_i)
        if len(boxes_i):
            matched += sum(bool((box_overlap(box, boxes_i)[0] >= 0.5).any()) for box in boxes_f)
    parity = BoxNetInt8Parity(
        frames=len(check), input_width=int(input_width), float_boxes=float_found,
        matched_boxes=int(matched), int8_boxes=int8_found,
        mean_score_difference=round(float(np.mean(diffs)), 5), calibration_frames=len(calib),
        float_nodes=tuple(keep))
    log.info("INT8 box network: %s", asdict(parity))
    return int8_model, parity
