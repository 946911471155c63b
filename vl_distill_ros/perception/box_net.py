"""A learned class-agnostic object detector for colour frames, run with ONNX Runtime.

The colour proposer of :mod:`.proposals` models the background and takes what differs from
it; objects that touch each other become one blob, which it can only cut at notches and
creases. The box network finds each object by its own appearance instead: a small
CenterNet-style detector (Zhou et al., "Objects as Points", 2019) whose output, at every
cell of a grid ``stride`` input pixels apart, is

- ``heatmap``: the logit of "an object's centre lies in this cell" (one class: *object*);
- ``size``: the object's width and height, as ``log(pixels / stride)`` of the network input;
- ``offset``: the logit of the centre's position inside the cell (x, y in [0, 1]).

Boxes are the heatmap's local maxima (3x3) above a threshold, largest score first, with
overlapping boxes suppressed. The network is class-agnostic: it was trained on rendered
tabletop scenes of YCB objects (``vl-distill train-box-net``, :mod:`..training.box_net`)
without the objects of the split's out-of-distribution half, and finds those too.

The model is an ONNX file (never a pickle): input ``image`` ``(1, 3, H, W)`` float32, RGB
scaled to [-1, 1], ``H`` and ``W`` multiples of 16; outputs ``heatmap`` ``(1, 1, H/s, W/s)``,
``size`` and ``offset`` ``(1, 2, H/s, W/s)``. Its metadata names the stride
(``vl_distill.stride``). The package ships one (``bundles/box_net.onnx``, about 3 MB).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..atomic_io import FileRejected, read_regular_file
from ..thread_names import os_thread_named

__all__ = ["BoxNet", "BoxNetError", "DEFAULT_BOX_NET", "DEFAULT_BOX_NET_INT8", "decode_boxes",
           "suppress_overlaps", "load_box_net", "resolve_box_net"]

#: The box network shipped with the package, and its INT8 copy (``default_int8``: about half
#: the CPU time, a little less exact; ``vl-distill train-box-net --quantize``).
DEFAULT_BOX_NET = Path(__file__).resolve().parent.parent / "bundles" / "box_net.onnx"
DEFAULT_BOX_NET_INT8 = DEFAULT_BOX_NET.with_name("box_net_int8.onnx")
INPUT_NAME = "image"
OUTPUT_NAMES = ("heatmap", "size", "offset")
#: Metadata key of the output stride, and the format tag every box network carries.
STRIDE_KEY = "vl_distill.stride"
FORMAT_KEY = "vl_distill.format"
FORMAT = "box_net/1"
#: The network's input sides must be multiples of this (four stride-2 stages).
INPUT_MULTIPLE = 16
#: Bounds of the input width a configuration may ask for.
MIN_INPUT_WIDTH, MAX_INPUT_WIDTH = 64, 1280
#: A box lying inside a better one is kept when the network scores it at least this: an
#: object in front of or inside a larger one (a fork in a bowl), not a part of it. Chosen on
#: the tuning bags (0.45-0.65 within one object; docs/proposals.md, session 23).
KEEP_INSIDE_SCORE = 0.5
#: Largest model file read (the shipped one is about 3 MB).
MAX_MODEL_BYTES = 200 * 1024 * 1024
#: :meth:`BoxNet.detect`'s close pass runs when the first pass's largest box is at least this
#: fraction of ``close_min_px`` long (or it found nothing): a close object, which the first
#: pass sees larger than the network's training zooms and boxes in parts.
CLOSE_TRIGGER_FRAC = 2.0 / 3.0
#: ... and a first-pass box lying this fraction of its area inside a close box that scores
#: higher, and at least :data:`CLOSE_MIN_AREA_RATIO` of its area, is a part of that object
#: (dropped; a smaller one is more likely another object that the close box holds too).
CLOSE_CONTAINMENT = 0.7
CLOSE_MIN_AREA_RATIO = 0.1
#: ... or smaller, when no box of the close pass (of any size) overlaps it by this IoU: an
#: object the close pass does not see at its narrower width either is a part of the close
#: box's object (a printed picture, a piece of a plate's rim), seen as an object only at the
#: first pass's finer scale (session 40: on the bags it was chosen on no object lost,
#: false boxes on the hand cameras' close-ups 59 -> 45).
CLOSE_CONFIRM_IOU = 0.3
#: A first-pass box longer than ``close_min_px`` gives way only to a close box that overlaps
#: it by at least this IoU (the same object seen whole); one that no close box covers stays
#: (the close pass missed that object: a pitcher or drill at the far end of a table).
CLOSE_REPLACE_IOU = 0.3


class BoxNetError(ValueError):
    """A box network file is missing, unreadable or not a box network."""


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def box_overlap(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU and the fraction of the smaller box inside the other, of box ``a`` ``(4,)``
    against boxes ``b`` ``(N, 4)``, all ``(x, y, w, h)``."""
    x0 = np.maximum(a[0], b[:, 0])
    y0 = np.maximum(a[1], b[:, 1])
    x1 = np.minimum(a[0] + a[2], b[:, 0] + b[:, 2])
    y1 = np.minimum(a[1] + a[3], b[:, 1] + b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a, area_b = a[2] * a[3], b[:, 2] * b[:, 3]
    iou = inter / np.maximum(area_a + area_b - inter, 1e-9)
    inside = inter / np.maximum(np.minimum(area_a, area_b), 1e-9)
    return iou, inside


def suppress_overlaps(boxes: np.ndarray, scores: np.ndarray, iou: float,
                      containment: float = 1.0, keep_inside_score: float = 1.0) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first.

    A box is dropped when its IoU with a kept box exceeds ``iou``, or when it is the
    smaller of the two and more than ``containment`` of it lies inside a kept box (1:
    never), unless its score is at least ``keep_inside_score`` (1: the containment rule has
    no exception). A box is never dropped for *containing* a better one: a large object's
    box holds the boxes of the small objects in front of it or lying in it.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    areas = boxes[:, 2] * boxes[:, 3]
    keep: list[int] = []
    for i in order:
        if keep:
            ious, inside = box_overlap(boxes[i], boxes[keep])
            if (ious > iou).any():
                continue
            nested = (inside > containment) & (areas[i] <= areas[keep])
            if nested.any() and scores[i] < keep_inside_score:
                continue
        keep.append(int(i))
    return np.asarray(keep, dtype=np.int64)


def decode_boxes(heatmap: np.ndarray, size: np.ndarray, offset: np.ndarray, stride: float,
                 scale: float, threshold: float, max_peaks: int = 100
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Boxes from the network's outputs, before overlap suppression.

    Args:
        heatmap: ``(Hc, Wc)`` centre logits.
        size: ``(2, Hc, Wc)`` ``log(width / stride)``, ``log(height / stride)``.
        offset: ``(2, Hc, Wc)`` logits of the centre's x and y inside its cell.
        stride: input pixels per cell.
        scale: input pixels per frame pixel (boxes are returned in frame pixels).
        threshold: smallest centre probability kept, in (0, 1).
        max_peaks: at most this many peaks, the best ones.

    Returns:
        ``(N, 4)`` float ``(x, y, w, h)`` boxes and their ``(N,)`` scores, best first.
    """
    prob = _sigmoid(np.asarray(heatmap, dtype=np.float32))
    peaks = prob >= cv2.dilate(prob, np.ones((3, 3), np.uint8))
    ys, xs = np.nonzero(peaks & (prob > threshold))
    scores = prob[ys, xs]
    order = np.argsort(-scores, kind="stable")[:max_peaks]
    ys, xs, scores = ys[order], xs[order], scores[order]
    off = _sigmoid(np.asarray(offset, dtype=np.float32)[:, ys, xs])
    wh = np.exp(np.clip(np.asarray(size, dtype=np.float32)[:, ys, xs], -8.0, 8.0))
    cx, cy = (xs + off[0]) * stride / scale, (ys + off[1]) * stride / scale
    w, h = wh[0] * stride / scale, wh[1] * stride / scale
    boxes = np.stack([cx - w / 2, cy - h / 2, w, h], axis=1).astype(np.float64)
    return boxes.reshape(-1, 4), scores.astype(np.float64)


class BoxNet:
    """An ONNX Runtime session of a box network (thread-safe: ONNX Runtime's ``run`` is).

    Args:
        model: path to the ``.onnx`` file, or its bytes.
        threads: ONNX Runtime intra-op threads.

    Raises:
        BoxNetError: missing, too large or unreadable file; not a box network.
    """

    def __init__(self, model: str | Path | bytes, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise BoxNetError(f"onnxruntime is not installed ({exc}): the box network needs "
                              "it (pip install -r requirements.txt), or set "
                              "proposal_box_net: off (and proposal_box_net_depth: off) to "
                              "propose with the colour model alone") from None
        data = model if isinstance(model, bytes) else _read_model(Path(model))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            with os_thread_named("vl_box_net"):    # its intra-op threads, in top -H
                self.session = ort.InferenceSession(data, sess_options=opts,
                                                    providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise BoxNetError(f"ONNX Runtime cannot load the box network: "
                              f"{type(exc).__name__}: {str(exc)[:300]}") from None
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = tuple(o.name for o in self.session.get_outputs())
        meta = self.session.get_modelmeta().custom_metadata_map
        if inputs != [INPUT_NAME] or outputs != OUTPUT_NAMES or meta.get(FORMAT_KEY) != FORMAT:
            raise BoxNetError(f"not a box network: inputs {inputs}, outputs {list(outputs)}, "
                              f"format {meta.get(FORMAT_KEY)!r}; expected [{INPUT_NAME!r}] -> "
                              f"{list(OUTPUT_NAMES)} and {FORMAT!r}")
        try:
            self.stride = int(meta[STRIDE_KEY])
        except (KeyError, ValueError):
            raise BoxNetError(f"box network metadata lacks an integer {STRIDE_KEY!r}") from None
        if self.stride < 1 or INPUT_MULTIPLE % self.stride:
            raise BoxNetError(f"box network stride {self.stride} does not divide "
                              f"{INPUT_MULTIPLE}")

    def network_input(self, image: np.ndarray, width: int) -> tuple[np.ndarray, float]:
        """The frame resized to ``width`` pixels wide (a frame taller than
        ``MAX_INPUT_WIDTH`` at that width: to that height), as the network's padded input."""
        frame_h, frame_w = image.shape[:2]
        scale = min(width / frame_w, MAX_INPUT_WIDTH / frame_h)
        w = max(1, int(round(frame_w * scale)))
        h = max(1, int(round(frame_h * scale)))
        padded_w = -(-w // INPUT_MULTIPLE) * INPUT_MULTIPLE
        padded_h = -(-h // INPUT_MULTIPLE) * INPUT_MULTIPLE
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        small = cv2.resize(image, (w, h), interpolation=interp)
        x = np.zeros((1, 3, padded_h, padded_w), np.float32)
        x[0, :, :h, :w] = small.transpose(2, 0, 1)
        x[0, :, :h, :w] *= 1.0 / 127.5
        x[0, :, :h, :w] -= 1.0
        return x, scale

    def _pass(self, image_rgb: np.ndarray, input_width: int, threshold: float
              ) -> tuple[np.ndarray, np.ndarray, float]:
        """One run of the network at ``input_width``: boxes in frame pixels, their scores,
        and the input's scale."""
        width = -(-int(input_width) // INPUT_MULTIPLE) * INPUT_MULTIPLE
        if not MIN_INPUT_WIDTH <= width <= MAX_INPUT_WIDTH:
            raise BoxNetError(f"box network input width must be in [{MIN_INPUT_WIDTH}, "
                              f"{MAX_INPUT_WIDTH}], got {input_width}")
        x, scale = self.network_input(image_rgb, width)
        heatmap, size, offset = self.session.run(None, {INPUT_NAME: x})
        boxes, scores = decode_boxes(heatmap[0, 0], size[0], offset[0], self.stride, scale,
                                     threshold)
        return boxes, scores, scale

    def _close_pass(self, image_rgb: np.ndarray, threshold: float, boxes: np.ndarray,
                    scores: np.ndarray, scale: float, close_width: int, close_min_px: float
                    ) -> tuple[np.ndarray, np.ndarray]:
        """``boxes`` (the first pass's, at input ``scale``) with the objects close to the
        camera boxed whole: when a first-pass box is ``CLOSE_TRIGGER_FRAC`` of
        ``close_min_px`` long (input pixels of the first pass) or there is none, a pass at
        ``close_width`` runs; its boxes longer than ``close_min_px`` (same measure) replace
        the first pass's that long which they overlap by :data:`CLOSE_REPLACE_IOU`, and the
        first pass's boxes lying :data:`CLOSE_CONTAINMENT` inside one that scores higher, at
        least :data:`CLOSE_MIN_AREA_RATIO` of its area or not found by the close pass
        (:data:`CLOSE_CONFIRM_IOU`; its parts), are dropped."""
        sides = np.maximum(boxes[:, 2], boxes[:, 3]) * scale
        if len(boxes) and sides.max() < CLOSE_TRIGGER_FRAC * close_min_px:
            return boxes, scores
        near, near_scores, _ = self._pass(image_rgb, close_width, threshold)
        # IoU of every close box (rows) with every first-pass box (columns)
        iou = np.array([box_overlap(box, boxes)[0] for box in near])
        iou = iou.reshape(len(near), len(boxes))
        seen = (iou >= CLOSE_CONFIRM_IOU).any(axis=0)     # found by the close pass too
        big = np.maximum(near[:, 2], near[:, 3]) * scale > close_min_px
        near, near_scores = near[big], near_scores[big]
        covered = (iou[big] >= CLOSE_REPLACE_IOU).any(axis=0)
        keep = (sides <= close_min_px) | ~covered
        for box, score in zip(near, near_scores):
            ratio = boxes[:, 2] * boxes[:, 3] / max(box[2] * box[3], 1e-9)
            keep &= ~((_inside_fraction(boxes, box) >= CLOSE_CONTAINMENT) & (scores < score)
                      & ((ratio >= CLOSE_MIN_AREA_RATIO) | ~seen))
        return np.concatenate([boxes[keep], near]), np.concatenate([scores[keep], near_scores])

    def detect(self, image_rgb: np.ndarray, threshold: float,
               input_widths: Sequence[int] = (320,), nms_iou: float = 0.5,
               containment: float = 0.9, keep_inside_score: float = KEEP_INSIDE_SCORE,
               max_count: int = 10, close_width: int = 0, close_min_px: float = 150.0
               ) -> tuple[np.ndarray, np.ndarray]:
        """Object boxes in a uint8 RGB frame.

        Args:
            image_rgb: ``(H, W, 3)`` uint8 RGB.
            threshold: smallest centre probability kept, in (0, 1).
            input_widths: the frame is resized to each of these widths in turn (rounded
                up to a multiple of 16; the height keeps the aspect ratio and is padded to a
                multiple of 16) and the boxes of all passes are pooled: a wider pass finds
                small, far objects that the narrower one misses.
            nms_iou, containment, keep_inside_score: overlap suppression
                (:func:`suppress_overlaps`).
            max_count: at most this many boxes.
            close_width, close_min_px: with ``close_width`` > 0, objects close to the
                camera (longer than ``close_min_px`` pixels of the first pass's input) are
                taken from a narrower pass at that width (:meth:`_close_pass`).

        Returns:
            ``(N, 4)`` float ``(x, y, w, h)`` boxes in frame pixels, clipped to the frame,
            and their scores, best first.
        """
        passes = [self._pass(image_rgb, width, threshold) for width in input_widths]
        boxes = np.concatenate([np.zeros((0, 4))] + [p[0] for p in passes])
        scores = np.concatenate([np.zeros(0)] + [p[1] for p in passes])
        if close_width and passes:
            boxes, scores = self._close_pass(image_rgb, threshold, boxes, scores, passes[0][2],
                                             close_width, close_min_px)
        boxes = _clip(boxes, image_rgb.shape[1], image_rgb.shape[0])
        ok = (boxes[:, 2] >= 2) & (boxes[:, 3] >= 2)
        boxes, scores = boxes[ok], scores[ok]
        keep = suppress_overlaps(boxes, scores, nms_iou, containment,
                                 keep_inside_score)[:max(0, int(max_count))]
        return boxes[keep], scores[keep]


def _inside_fraction(boxes: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """Fraction of each of ``boxes`` (``(N, 4)`` x, y, w, h) lying inside box ``outer``."""
    iw = np.minimum(boxes[:, 0] + boxes[:, 2], outer[0] + outer[2]) - \
        np.maximum(boxes[:, 0], outer[0])
    ih = np.minimum(boxes[:, 1] + boxes[:, 3], outer[1] + outer[3]) - \
        np.maximum(boxes[:, 1], outer[1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    return inter / np.maximum(boxes[:, 2] * boxes[:, 3], 1e-9)


def _clip(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    x0 = np.clip(boxes[:, 0], 0, width)
    y0 = np.clip(boxes[:, 1], 0, height)
    x1 = np.clip(boxes[:, 0] + boxes[:, 2], 0, width)
    y1 = np.clip(boxes[:, 1] + boxes[:, 3], 0, height)
    return np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)


def _read_model(path: Path) -> bytes:
    """The model file's bytes: a regular file of at most ``MAX_MODEL_BYTES``, read without
    blocking (:func:`~vl_distill_ros.atomic_io.read_regular_file`)."""
    try:
        return read_regular_file(path, MAX_MODEL_BYTES)
    except FileRejected as exc:
        raise BoxNetError(f"box network {exc}") from None
    except OSError as exc:
        raise BoxNetError(f"cannot read box network {path}: {exc.strerror or exc}") from None


def resolve_box_net(name: str) -> Path | None:
    """The model file a ``box_net`` setting names: ``default`` the shipped one,
    ``default_int8`` its INT8 copy, ``""`` or ``off`` none (the colour proposer alone),
    anything else a path."""
    name = str(name).strip()
    if name in ("", "off"):
        return None
    shipped = {"default": DEFAULT_BOX_NET, "default_int8": DEFAULT_BOX_NET_INT8}
    return shipped.get(name) or Path(name).expanduser()


@functools.lru_cache(maxsize=4)
def _cached(path: str, mtime_ns: int, size: int, threads: int) -> BoxNet:
    return BoxNet(Path(path), threads)


def load_box_net(path: str | Path, threads: int = 1) -> BoxNet:
    """The box network at ``path`` with ``threads`` ONNX Runtime threads, loaded once per
    process and thread count (and again if the file changes): one ``stat`` per call."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise BoxNetError(f"cannot read box network {p}: {exc.strerror or exc}") from None
    return _cached(str(p), st.st_mtime_ns, st.st_size, max(1, int(threads)))
