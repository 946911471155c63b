"""A depth-sensor noise model for rendered depth (offline only, numpy and OpenCV).

Rendered depth is exact; structured-light and active-stereo cameras (Kinect, Xtion,
RealSense) are not. :func:`apply_depth_noise` turns exact metric depth into what such a
sensor delivers, with the effects that break naive geometry:

* **axial noise** growing with the square of the distance
  (``sigma = axial_sigma_m + axial_sigma_quadratic * (z - 0.4)^2``, the form Nguyen et al.,
  3DIMPVT 2012, fitted for the Kinect), drawn per pixel, or spatially correlated over
  ``correlation_px`` pixels (a Gaussian blur of the per-pixel draws, rescaled to the same
  standard deviation): stereo and structured-light cameras match windows of pixels, so
  their errors come in smooth bumps, not speckle;
* **disparity quantisation**: depth comes in steps of ``quant_per_m2 * z^2`` (a fixed
  disparity step), then to whole millimetres when written as 16UC1;
* **flying pixels**: pixels on a depth discontinuity take a value between the foreground
  and the background (mixed returns), with probability ``flying_prob``;
* **holes** (zeros): the projector's shadow, a band of ``shadow_px`` pixels on one side of
  each foreground edge; random dropout blobs covering about ``hole_frac`` of the image
  (dark, shiny or transparent surfaces); and everything outside
  ``[min_range_m, max_range_m]``.

Everything random comes from the generator passed in, so a seed gives the same noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["DepthNoise", "apply_depth_noise", "NOISE_MODELS"]


@dataclass(frozen=True)
class DepthNoise:
    """Settings of :func:`apply_depth_noise` (defaults: a RealSense D435-like camera)."""

    axial_sigma_m: float = 0.0012
    axial_sigma_quadratic: float = 0.0019
    quant_per_m2: float = 0.0015
    #: A neighbour this much nearer (m) marks a depth discontinuity ...
    edge_jump_m: float = 0.03
    #: ... whose pixels become mixed returns with this probability.
    flying_prob: float = 0.5
    #: Width (pixels) of the projector shadow to the left of foreground edges.
    shadow_px: int = 3
    #: Approximate fraction of the image lost to random dropout blobs.
    hole_frac: float = 0.03
    min_range_m: float = 0.2
    max_range_m: float = 4.0
    #: Standard deviation (pixels) of the Gaussian that correlates the axial noise; 0: per
    #: pixel.
    correlation_px: float = 0.0

    def __post_init__(self) -> None:
        for name in ("axial_sigma_m", "axial_sigma_quadratic", "quant_per_m2", "edge_jump_m"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.flying_prob <= 1.0 or not 0.0 <= self.hole_frac < 0.5:
            raise ValueError("flying_prob must be in [0, 1] and hole_frac in [0, 0.5)")
        if not 0 <= int(self.shadow_px) <= 64:
            raise ValueError(f"shadow_px must be in [0, 64], got {self.shadow_px}")
        if not 0.0 <= float(self.correlation_px) <= 32.0:
            raise ValueError(f"correlation_px must be in [0, 32], got {self.correlation_px}")
        if not 0.0 <= self.min_range_m < self.max_range_m:
            raise ValueError("need 0 <= min_range_m < max_range_m")


#: Named models for ``vl-distill make-bag --depth-noise``: ``none`` keeps the exact depth
#: (still quantised to millimetres when written); ``coarse`` is a noisier, older camera
#: (Kinect v1 / Xtion-like: twice the axial noise, correlated over 4 pixels, coarser
#: disparity steps, wider shadows, more holes).
NOISE_MODELS: dict[str, DepthNoise | None] = {
    "none": None, "sensor": DepthNoise(),
    "coarse": DepthNoise(axial_sigma_m=0.0024, axial_sigma_quadratic=0.0038,
                         quant_per_m2=0.0029, shadow_px=6, hole_frac=0.06, correlation_px=4.0)}


def apply_depth_noise(depth_m: np.ndarray, rng: np.random.Generator,
                      noise: DepthNoise | None = None) -> np.ndarray:
    """A noisy copy of the exact ``(H, W)`` depth ``depth_m`` (metres, 0 = no return).

    Returns float32 metres with 0 where the sensor gives no depth. See the module docstring
    for the effects; ``noise`` defaults to :class:`DepthNoise`.

    Raises:
        ValueError: ``depth_m`` is not a 2-D array.
    """
    noise = noise or DepthNoise()
    z = np.asarray(depth_m, np.float32)
    if z.ndim != 2:
        raise ValueError(f"depth must be a 2-D array, got shape {z.shape}")
    h, w = z.shape
    valid = z > 0
    # discontinuities: a pixel whose 3x3 neighbourhood holds a much nearer one
    near = cv2.erode(np.where(valid, z, np.float32(1e6)), np.ones((3, 3), np.uint8))
    edge = valid & (z - near > noise.edge_jump_m)
    out = z.copy()
    if noise.flying_prob > 0 and edge.any():
        ys, xs = np.nonzero(edge)
        pick = rng.random(ys.size) < noise.flying_prob
        ys, xs = ys[pick], xs[pick]
        mix = rng.random(ys.size).astype(np.float32)
        out[ys, xs] = near[ys, xs] + mix * (z[ys, xs] - near[ys, xs])
    sigma = noise.axial_sigma_m + noise.axial_sigma_quadratic * (out - 0.4) ** 2
    out = out + _axial_draws(rng, (h, w), float(noise.correlation_px)) * sigma.astype(np.float32)
    if noise.quant_per_m2 > 0:
        step = np.maximum(noise.quant_per_m2 * out * out, 1e-4)
        out = np.round(out / step) * step
    drop = ~valid | (out < noise.min_range_m) | (out > noise.max_range_m)
    if noise.shadow_px > 0:
        # foreground edges: background pixels just left of a nearer surface lose the pattern
        fg_edge = np.zeros_like(valid)
        fg_edge[:, :-1] = valid[:, :-1] & valid[:, 1:] & (z[:, :-1] - z[:, 1:] >
                                                          noise.edge_jump_m)
        kernel = np.ones((1, 2 * int(noise.shadow_px) + 1), np.uint8)
        kernel[:, :int(noise.shadow_px)] = 0  # out(x) = any edge in x .. x + shadow_px
        drop |= cv2.dilate(fg_edge.view(np.uint8), kernel,
                           anchor=(int(noise.shadow_px), 0)).view(bool)
    if noise.hole_frac > 0:
        coarse = rng.random((max(h // 16, 1), max(w // 16, 1))).astype(np.float32)
        field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        drop |= field < np.quantile(field, noise.hole_frac)
    out[drop] = 0.0
    return out.astype(np.float32)


def _axial_draws(rng: np.random.Generator, shape: tuple[int, int], correlation_px: float
                 ) -> np.ndarray:
    """Standard normal draws of ``shape`` (float32), correlated by a Gaussian blur of
    ``correlation_px`` pixels (rescaled to unit standard deviation) when it is > 0."""
    draws = rng.standard_normal(shape, dtype=np.float32)
    if correlation_px <= 0:
        return draws
    blurred = cv2.GaussianBlur(draws, (0, 0), correlation_px, borderType=cv2.BORDER_REFLECT)
    std = float(blurred.std())
    return blurred / np.float32(std) if std > 0 else draws
