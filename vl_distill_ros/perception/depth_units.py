"""Depth in the wrong unit: each camera's recent frames whose depth went unused because
nearly all of it lay outside ``min_depth_m``..``max_depth_m``, and the power of ten that
would bring its median into that range.

Depth read in another unit than it was written in (YCB-Video's 0.1 mm PNGs read as
millimetres, 32FC1 published in millimetres, metres written to 16-bit depth as tenths of a
millimetre) is no error of any single image: every pixel is a valid number, the frame goes
colour-only and its depth status says so. :class:`DepthUnitCheck` follows a camera's frames
and, when most of its recent ones were so, says what factor would make the depth plausible
(:func:`unit_warning`), so the node's ``/diagnostics`` and log and ``replay-eval``'s warnings
can name the unit and the ``depth_scale`` that fits. A frame whose depth was used is never
counted: depth the proposer could use is never flagged. Nothing is rescaled here.
"""
from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

#: ``depth_scale``'s range (metres per unit of 16-bit depth), as the node's parameter.
DEPTH_SCALE_RANGE = (1e-6, 0.1)
#: Depth no RGB-D camera measures (m): a median beyond it is no far scene.
SENSOR_RANGE_M = 20.0
#: Frames a camera's verdict looks back on.
WINDOW = 10
#: Share of those frames that must be out of range for a warning.
OUT_SHARE = 0.8
#: Share of a frame's measured depth that must lie on one side of the range.
BULK = 0.8
#: A frame counts only when at least this share of its samples measured anything (a sensor
#: too close to see reports zeros, not a unit problem).
MEASURED_MIN = 0.2
#: Medians below this are "too near" for a unit problem (a close-range wrist camera reaches
#: 7 cm; nearer than ``min_depth_m`` but above this is a scene, not a unit).
NEAR_LIMIT_M = 0.05


@dataclass(frozen=True)
class UnitVerdict:
    """A camera's depth looks like the wrong unit."""

    frames: int          #: frames of the window out of range
    window: int          #: frames in the window
    median_m: float      #: median of those frames' median depth (m)
    side: str            #: ``far`` (beyond ``max_depth_m``) or ``near``
    limit_m: float       #: the bound it lies beyond
    factor: float        #: the power of ten that brings the median into range (0: none)


def frame_stats(depth_m: np.ndarray, min_m: float, max_m: float) -> tuple[str, float] | None:
    """``(side, median)`` of a frame nearly all of whose measured depth (every 8th pixel)
    lies beyond ``max_m`` (``far``) or nearer than ``min(min_m, NEAR_LIMIT_M)``
    (``near``); None otherwise or with too few measurements."""
    d = np.asarray(depth_m)[::8, ::8].astype(np.float64)   # no overflow of huge values
    total = d.size
    d = d[np.isfinite(d) & (d > 0)]
    if total == 0 or d.size < MEASURED_MIN * total:
        return None
    median = float(np.median(d))
    if median > max_m and float(np.mean(d > max_m)) >= BULK:
        return "far", median
    near = min(min_m, NEAR_LIMIT_M)
    if median < near and float(np.mean(d < near)) >= BULK:
        return "near", median
    return None


def scale_factor(median_m: float, min_m: float, max_m: float) -> float:
    """The power of ten (1e-4..1e4, not 1) that puts ``median_m`` in ``[min_m, max_m]``,
    nearest to 1 m in ratio when two do; 0 when none does."""
    fits = [10.0 ** k for k in range(-4, 5) if k and min_m <= median_m * 10.0 ** k <= max_m]
    return min(fits, key=lambda f: abs(math.log10(median_m * f))) if fits else 0.0


class DepthUnitCheck:
    """One camera's recent frames (:meth:`update`) and their verdict (:meth:`verdict`).
    Thread safe."""

    def __init__(self, window: int = WINDOW) -> None:
        """See the class."""
        self._frames: deque[tuple[str, float] | None] = deque(maxlen=int(window))
        self._lock = threading.Lock()
        self._range = (0.0, 0.0)

    def update(self, depth_m: np.ndarray, min_m: float, max_m: float, used: bool) -> None:
        """Count a frame with depth (``used``: the depth proposer used it, never out)."""
        stats = None if used else frame_stats(depth_m, min_m, max_m)
        with self._lock:
            self._frames.append(stats)
            self._range = (float(min_m), float(max_m))

    def verdict(self, min_frames: int = 3) -> UnitVerdict | None:
        """A :class:`UnitVerdict` when at least ``min_frames`` frames were seen and
        :data:`OUT_SHARE` of the window was out of range on one side; else None."""
        with self._lock:
            frames, (lo, hi) = list(self._frames), self._range
        if len(frames) < max(1, int(min_frames)):
            return None
        for side in ("far", "near"):
            medians = [m for s, m in (f for f in frames if f is not None) if s == side]
            if len(medians) >= OUT_SHARE * len(frames):
                median = float(np.median(medians))
                return UnitVerdict(len(medians), len(frames), median, side,
                                   hi if side == "far" else min(lo, NEAR_LIMIT_M),
                                   scale_factor(median, lo, hi))
        return None


def _unit_name(unit_m: float) -> str:
    """``0.1 mm`` for 1e-4 and so on (metres per unit)."""
    for value, name in ((1.0, "metres"), (1e-3, "millimetres"), (1e-4, "0.1 mm units"),
                        (1e-5, "10 um units"), (1e-2, "centimetres"), (1e3, "kilometres"),
                        (1e-6, "micrometres")):
        if math.isclose(unit_m, value, rel_tol=1e-6):
            return name
    return f"units of {unit_m:g} m"


def float_encoding(encoding: str) -> bool | None:
    """Whether depth of ``encoding`` (an ``Image``'s encoding or a ``CompressedImage``'s
    format) is 32FC1 (True), 16-bit (False) or unknown (None)."""
    text = str(encoding).upper()
    return True if "32FC1" in text else False if ("16UC1" in text or "MONO16" in text) \
        else None


def _fix(v: UnitVerdict, unit_m: float, float_depth: bool | None) -> str:
    """What would make depth ``v.factor`` times what it reads now, by encoding."""
    scale = unit_m * v.factor
    low, high = DEPTH_SCALE_RANGE
    sixteen = (f"16-bit depth in {_unit_name(scale)} needs depth_scale {scale:g} (now "
               f"{unit_m:g})" if low <= scale <= high else
               f"16-bit depth in {_unit_name(scale)} is beyond depth_scale's range "
               f"({low:g}..{high:g}): publish it in millimetres")
    floating = (f"32FC1 depth is read as metres whatever depth_scale is: this looks like "
                f"{_unit_name(v.factor)}; publish metres (or 16UC1 with depth_scale)")
    return sixteen if float_depth is False else floating if float_depth else \
        f"{sixteen}; {floating}"


def unit_warning(v: UnitVerdict, unit_m: float, float_depth: bool | None = None) -> str:
    """The warning of a verdict for a camera whose 16-bit depth is read at ``unit_m``
    metres a unit (``depth_scale``): where the depth lies, the factor that makes it
    plausible and what applies it (:func:`float_encoding` of the depth: True, 32FC1, which
    is metres whatever ``depth_scale`` is; False, 16-bit; None, both are said)."""
    where = "beyond max_depth_m" if v.side == "far" else "nearer than"
    seen = (f"{v.frames} of the last {v.window} frames with depth went colour-only, nearly "
            f"all of it {where} {v.limit_m:g} m")
    if not v.factor:
        return (f"depth in the wrong unit? median {v.median_m:.3g} m: check the depth's unit "
                f"(depth_scale for 16-bit depth); {seen}")
    text = (f"depth in the wrong unit? x{v.factor:g} would put its median {v.median_m:.3g} m "
            f"at {v.median_m * v.factor:.2f} m: {_fix(v, unit_m, float_depth)}; {seen}")
    if v.side == "far" and v.median_m <= SENSOR_RANGE_M:
        text += "; if the scene really is that far, raise max_depth_m instead"
    return text
