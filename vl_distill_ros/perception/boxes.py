"""Boxes in image pixels, ROS-free: the ``(x, y, w, h)`` :data:`Box` every proposer, the
pipeline and the evaluation pass around, and what they do with one: clip a list to a frame
(:func:`sanitize_boxes`), crop it (:func:`crop`), compare two (:func:`box_iou`), and the
window the classifier sees around it (:func:`classification_window`).
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

__all__ = ["Box", "full_frame_box", "crop", "classification_window", "box_iou", "box_iou_matrix",
           "box_containment", "sanitize_boxes"]

#: ``(x, y, w, h)`` in pixels: top-left corner, width and height.
Box = tuple[int, int, int, int]


def full_frame_box(width: int, height: int) -> Box:
    """The box covering the whole ``width`` x ``height`` frame."""
    return (0, 0, int(width), int(height))


def crop(image: np.ndarray, box: Sequence[int]) -> np.ndarray:
    """The region ``box`` = ``(x, y, w, h)`` of ``image`` as a view (no copy).

    The box is clipped to the image (numpy slicing semantics); run boxes through
    :func:`sanitize_boxes` first to be sure the crop is not empty.
    """
    x, y, w, h = (int(v) for v in box)
    x0, y0 = max(x, 0), max(y, 0)
    return image[y0:max(y + h, y0), x0:max(x + w, x0)]


def classification_window(box: Sequence[float], width: int, height: int, square: bool = True,
                          context: float = 0.0) -> Box:
    """The region of a ``width`` x ``height`` frame that the classifier sees for ``box``.

    The student was distilled on square crops framed around the object with a margin
    (:mod:`vl_distill_ros.sim.render`), and every crop is resized to a square input. A
    long box (a banana, a knife) cropped as it is would reach the student stretched, an
    aspect it never saw. With ``square`` the window is a square of side ``max(w, h) * (1 +
    context)`` centred on the box; without it the box grows by ``context`` of its own size.
    The window is moved into the frame where it sticks out, and clipped to the frame where
    it is larger (``crop_source: full_frame`` therefore stays the whole frame). The box
    itself, not the window, is what the node publishes.
    """
    x, y, w, h = (float(v) for v in box)
    if square:
        ww = wh = max(w, h) * (1.0 + context)
    else:
        ww, wh = w * (1.0 + context), h * (1.0 + context)
    ww = max(min(int(round(ww)), int(width)), 1)
    wh = max(min(int(round(wh)), int(height)), 1)
    x0 = min(max(int(round(x + 0.5 * (w - ww))), 0), int(width) - ww)
    y0 = min(max(int(round(y + 0.5 * (h - wh))), 0), int(height) - wh)
    return x0, y0, ww, wh


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes (0 when either is empty)."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return float(inter / union) if union > 0 else 0.0


def box_iou_matrix(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> np.ndarray:
    """``(len(a), len(b))`` intersection over union of ``(x, y, w, h)`` boxes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    p, q = np.asarray(a, np.float64)[:, None, :], np.asarray(b, np.float64)[None, :, :]
    w = np.clip(np.minimum(p[..., 0] + p[..., 2], q[..., 0] + q[..., 2])
                - np.maximum(p[..., 0], q[..., 0]), 0, None)
    h = np.clip(np.minimum(p[..., 1] + p[..., 3], q[..., 1] + q[..., 3])
                - np.maximum(p[..., 1], q[..., 1]), 0, None)
    inter = w * h
    union = p[..., 2] * p[..., 3] + q[..., 2] * q[..., 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def box_containment(inner: Sequence[float], outer: Sequence[float]) -> float:
    """Fraction of box ``inner``'s area (``(x, y, w, h)``) inside box ``outer``."""
    iw = min(inner[0] + inner[2], outer[0] + outer[2]) - max(inner[0], outer[0])
    ih = min(inner[1] + inner[3], outer[1] + outer[3]) - max(inner[1], outer[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    return float(iw * ih) / max(float(inner[2] * inner[3]), 1.0)


def sanitize_boxes(boxes: Iterable[Sequence[float]], width: int, height: int,
                   min_size: int = 4) -> list[Box]:
    """Clip ``(x, y, w, h)`` boxes to a ``width`` x ``height`` image and make them integers.

    Corners are rounded to the nearest pixel and clipped to the image. Boxes are dropped when
    they have fewer than four values, a NaN or infinite value, a negative width or height,
    lie fully outside the image, or are narrower or shorter than ``min_size`` (at least 1)
    after clipping. Every returned box gives a non-empty :func:`crop` of the image. The order
    of the kept boxes is preserved.
    """
    width, height = int(width), int(height)
    min_size = max(1, int(min_size))
    out: list[Box] = []
    if width <= 0 or height <= 0:
        return out
    for box in boxes:
        try:
            vals = [float(v) for v in box]
        except (TypeError, ValueError):
            continue
        if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
            continue
        x, y, w, h = vals
        if w < 0 or h < 0:
            continue
        x0 = min(max(int(round(x)), 0), width)
        y0 = min(max(int(round(y)), 0), height)
        x1 = min(max(int(round(x + w)), 0), width)
        y1 = min(max(int(round(y + h)), 0), height)
        if x1 - x0 < min_size or y1 - y0 < min_size:
            continue
        out.append((x0, y0, x1 - x0, y1 - y0))
    return out
