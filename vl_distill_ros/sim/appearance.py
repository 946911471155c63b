"""The ``varied`` appearance of rendered crops (:data:`APPEARANCES`): per-view material and
lighting randomisation of the target object (:class:`Look`: colour temperature, light
intensity, specularity, texture jitter, a shading gradient).

ROS-free and torch-free.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["APPEARANCES", "Look", "kelvin_rgb"]

#: Appearance randomisations: ``standard`` (the domain's own light and materials, what every
#: shipped data set used) or ``varied`` (adds :class:`Look`: colour temperature, light
#: intensity, specularity, object texture jitter and a shading gradient).
APPEARANCES: tuple[str, ...] = ("standard", "varied")

#: (kelvin, RGB) anchors of a light's colour by colour temperature, relative to daylight
#: (6500 K = white); linear interpolation between them (approximate black-body colours).
_KELVIN_ANCHORS = np.array([
    [2500.0, 1.00, 0.62, 0.32],
    [3500.0, 1.00, 0.77, 0.55],
    [4500.0, 1.00, 0.87, 0.74],
    [5500.0, 1.00, 0.94, 0.89],
    [6500.0, 1.00, 1.00, 1.00],
    [8000.0, 0.88, 0.93, 1.00],
    [10000.0, 0.78, 0.87, 1.00],
])


def kelvin_rgb(kelvin: float) -> np.ndarray:
    """Approximate RGB gains (max 1) of light at colour temperature ``kelvin`` (2500-10000 K,
    clamped), white at 6500 K: warm light is reddish, cool light bluish."""
    k = float(np.clip(kelvin, _KELVIN_ANCHORS[0, 0], _KELVIN_ANCHORS[-1, 0]))
    return np.array([np.interp(k, _KELVIN_ANCHORS[:, 0], _KELVIN_ANCHORS[:, c])
                     for c in (1, 2, 3)], dtype=np.float32)


@dataclass(frozen=True)
class Look:
    """The extra material and lighting randomisation of one ``varied`` view.

    Applied to the rendered target object only (premultiplied layer), never to the
    background or the distractors: the light's colour temperature (white balance of the
    object's light), an intensity factor on the ambient and diffuse terms, the specular
    coefficient (matte to glossy), a jitter of the object's texture colours (hue shift in
    degrees, saturation, brightness and contrast factors) and a linear shading gradient
    (``shade``: darkening on the far side, 0 = none, along ``shade_angle`` radians), like a
    second, weaker light on one side.
    """

    kelvin: float
    intensity: float
    specular: float
    hue: float
    saturation: float
    brightness: float
    contrast: float
    shade: float
    shade_angle: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Look":
        """Draw a look; every field's range is fixed here (see the README's Data section)."""
        return cls(kelvin=float(rng.uniform(2500.0, 10000.0)),
                   intensity=float(rng.uniform(0.6, 1.4)),
                   specular=float(rng.uniform(0.0, 0.9)),
                   hue=float(rng.uniform(-12.0, 12.0)),
                   saturation=float(rng.uniform(0.6, 1.4)),
                   brightness=float(rng.uniform(0.75, 1.25)),
                   contrast=float(rng.uniform(0.7, 1.3)),
                   shade=float(rng.uniform(0.0, 0.6) if rng.random() < 0.6 else 0.0),
                   shade_angle=float(rng.uniform(0.0, 2.0 * math.pi)))

    def light(self, ambient: float, diffuse: float) -> tuple[float, float, float]:
        """(ambient, diffuse, specular) coefficients for pybullet after this look."""
        return ambient * self.intensity, diffuse * self.intensity, self.specular

    def apply(self, rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """The premultiplied object ``rgb`` (float32, [0, 1]) with this look's colour
        temperature, texture jitter and shading applied; ``alpha`` is unchanged."""
        a = alpha[..., None]
        inside = alpha > 1e-3
        if not inside.any():
            return rgb
        colour = np.where(a > 1e-3, rgb / np.maximum(a, 1e-3), 0.0).astype(np.float32)
        colour = np.clip(colour, 0.0, 1.0)
        hsv = cv2.cvtColor(colour, cv2.COLOR_RGB2HSV)  # float: H in [0, 360), S, V in [0, 1]
        hsv[..., 0] = np.mod(hsv[..., 0] + self.hue, 360.0)
        hsv[..., 1] = np.clip(hsv[..., 1] * self.saturation, 0.0, 1.0)
        colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        colour = colour * kelvin_rgb(self.kelvin) * self.brightness
        mean = float(colour[inside].mean())
        colour = (colour - mean) * self.contrast + mean
        if self.shade > 0:
            h, w = alpha.shape
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            t = ((xx / max(w - 1, 1) - 0.5) * math.cos(self.shade_angle)
                 + (yy / max(h - 1, 1) - 0.5) * math.sin(self.shade_angle)) / math.sqrt(0.5)
            colour = colour * (1.0 - self.shade * 0.5 * (t + 1.0))[..., None]
        return (np.clip(colour, 0.0, 1.0) * a).astype(np.float32)

    def to_meta(self) -> dict[str, float]:
        """JSON-serialisable fields (the view's ``appearance`` metadata)."""
        return dataclasses.asdict(self)
