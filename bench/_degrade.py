"""Real-camera degradations of colour frames for the proposal benches (not a bench).

A degradation chain is text, ``KIND:VALUE`` steps joined by ``+``, applied in order, e.g.
``exposure:0.4+noise:8+jpeg:40`` (a dim room: the gain lifts the sensor noise, then the
driver compresses). The kinds, each with the range its value must lie in:

* ``motion:L`` (2-41): horizontal motion blur, a line kernel ``L`` pixels long (a camera on
  a moving arm or in a hand);
* ``defocus:S`` (0.3-10): Gaussian defocus blur of sigma ``S`` pixels;
* ``noise:S`` (0.5-40): sensor noise, Gaussian with sigma ``S * sqrt(0.25 + I / 255)``
  8-bit levels at intensity ``I`` (read noise plus shot noise that grows with the light),
  drawn per pixel and channel;
* ``exposure:G`` (0.1-4): every value times ``G`` and clipped (under- or over-exposure);
* ``wb:T`` (-0.5-0.5): a white-balance error, red times ``1 + T`` and blue times ``1 - T``
  (``T`` > 0: the warm cast of tungsten light, < 0: a cold one);
* ``jpeg:Q`` (5-100): JPEG compression at quality ``Q``;
* ``scale:F`` (0.2-1): the frame shrunk by ``F`` and enlarged back (a lower-resolution
  sensor, a digital zoom).

:func:`parse_degradation` reads the text, :func:`degrade` applies it; everything random
comes from the generator passed in, so a seed gives the same frames.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

#: Every kind with its value range (inclusive).
KINDS: dict[str, tuple[float, float]] = {
    "motion": (2, 41), "defocus": (0.3, 10), "noise": (0.5, 40), "exposure": (0.1, 4),
    "wb": (-0.5, 0.5), "jpeg": (5, 100), "scale": (0.2, 1),
}

Step = tuple[str, float]


def parse_degradation(text: str) -> list[Step]:
    """The steps of a ``KIND:VALUE+KIND:VALUE`` chain; ``""`` or ``none`` is no step.

    Raises ValueError naming the bad step: an unknown kind, a value that is not a number or
    lies outside its kind's range (:data:`KINDS`).
    """
    text = text.strip()
    if text in ("", "none"):
        return []
    steps: list[Step] = []
    for part in text.split("+"):
        kind, sep, value = part.strip().partition(":")
        if kind not in KINDS or not sep:
            raise ValueError(f"degradation step {part!r}: expected KIND:VALUE with KIND one "
                             f"of {sorted(KINDS)}")
        try:
            v = float(value)
        except ValueError:
            raise ValueError(f"degradation step {part!r}: {value!r} is not a number") from None
        lo, hi = KINDS[kind]
        if not lo <= v <= hi:
            raise ValueError(f"degradation step {part!r}: {kind} must be in [{lo}, {hi}]")
        steps.append((kind, v))
    return steps


def _step(img: np.ndarray, kind: str, v: float, rng: np.random.Generator) -> np.ndarray:
    import cv2

    x = img.astype(np.float32)
    if kind == "motion":
        from vl_distill_ros.training.augment import motion_kernel

        x = cv2.filter2D(x, -1, motion_kernel(int(round(v)), 0.0),
                         borderType=cv2.BORDER_REFLECT)
    elif kind == "defocus":
        x = cv2.GaussianBlur(x, (0, 0), v)
    elif kind == "noise":
        sigma = v * np.sqrt(0.25 + x / 255.0)
        x = x + rng.standard_normal(x.shape, dtype=np.float32) * sigma
    elif kind == "exposure":
        x = x * v
    elif kind == "wb":
        x = x * np.array([1.0 + v, 1.0, 1.0 - v], np.float32)
    elif kind == "jpeg":
        ok, enc = cv2.imencode(".jpg", np.ascontiguousarray(img[..., ::-1]),
                               [cv2.IMWRITE_JPEG_QUALITY, int(round(v))])
        return cv2.imdecode(enc, cv2.IMREAD_COLOR)[..., ::-1].copy() if ok else img
    elif kind == "scale":
        h, w = img.shape[:2]
        small = cv2.resize(x, (max(1, round(w * v)), max(1, round(h * v))),
                           interpolation=cv2.INTER_AREA)
        x = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def degrade(image: np.ndarray, steps: Sequence[Step], rng: np.random.Generator) -> np.ndarray:
    """``image`` (H x W x 3 uint8 RGB) after every step of ``steps`` in order (the image
    itself when there is none)."""
    for kind, v in steps:
        image = _step(image, kind, v, rng)
    return image
