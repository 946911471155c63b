"""Procedural backgrounds for rendered object crops (pure NumPy/OpenCV, no ROS, no torch).

Two families, matching the two rendering domains of :mod:`vl_distill_ros.sim.render`:

* ``clean``: plain colours and smooth gradients with mild sensor-like noise.
* ``clutter``: textured, structured backgrounds (stripes, checkerboards, blobs, wood-like
  grain, multi-scale noise) that act as a distribution shift.

Two more kinds, :data:`BUSY_KINDS`, are in neither domain (drawing them changes no crop
rendering's random draws): ``plaid`` (a tartan: bands of several colours crossing) and
``print`` (a printed cloth: many small flowers, dots and leaves on a ground), the busy
table cloths of real kitchens that a proposer trained on plain tables boxes as objects.

Every function is deterministic given the :class:`numpy.random.Generator` it is handed.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

#: Background kinds of the ``clean`` domain.
CLEAN_KINDS: tuple[str, ...] = ("solid", "linear_gradient", "radial_gradient")
#: Background kinds of the ``clutter`` domain.
CLUTTER_KINDS: tuple[str, ...] = ("stripes", "checker", "blobs", "wood", "noise")
#: Busy cloth patterns, in no domain (``make-bag --table-kinds``).
BUSY_KINDS: tuple[str, ...] = ("plaid", "print")
#: Every kind :func:`make_background` accepts.
KINDS: tuple[str, ...] = CLEAN_KINDS + CLUTTER_KINDS + BUSY_KINDS


def _random_colour(rng: np.random.Generator, sat: tuple[float, float] = (0.0, 0.6),
                   val: tuple[float, float] = (0.25, 0.95)) -> np.ndarray:
    """A random RGB colour in [0, 1] drawn in HSV space."""
    h = rng.uniform(0.0, 1.0)
    s = rng.uniform(*sat)
    v = rng.uniform(*val)
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.asarray(rgb, dtype=np.float32)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1], as (x, y) float32 arrays of shape (size, size)."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    return np.meshgrid(c, c)


def _value_noise(size: int, cells: int, rng: np.random.Generator, channels: int = 1) -> np.ndarray:
    """Smooth noise in [0, 1]: a ``cells`` x ``cells`` random grid upsampled bicubically."""
    cells = max(2, int(cells))
    small = rng.random((cells, cells, channels), dtype=np.float32)
    big = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    if big.ndim == 2:
        big = big[..., None]
    return np.clip(big, 0.0, 1.0)


def _fractal_noise(size: int, rng: np.random.Generator, octaves: int = 4, base: int = 3,
                   channels: int = 1) -> np.ndarray:
    """Sum of value-noise octaves (each twice as fine, half as strong), normalised to [0, 1]."""
    total = np.zeros((size, size, channels), np.float32)
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        total += amp * _value_noise(size, base * 2 ** o, rng, channels)
        norm += amp
        amp *= 0.5
    total /= norm
    lo, hi = float(total.min()), float(total.max())
    return (total - lo) / max(hi - lo, 1e-6)


def _blend(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel mix of colours ``a`` and ``b`` with weight map ``t`` (H, W) in [0, 1]."""
    return a[None, None, :] * (1.0 - t[..., None]) + b[None, None, :] * t[..., None]


def _solid(size: int, rng: np.random.Generator) -> np.ndarray:
    img = np.empty((size, size, 3), np.float32)
    img[:] = _random_colour(rng)
    # a faint illumination fall-off so "solid" is not perfectly flat
    x, y = _grid(size)
    ang = rng.uniform(0, 2 * math.pi)
    shade = 1.0 + rng.uniform(0.0, 0.08) * (x * math.cos(ang) + y * math.sin(ang))
    return img * shade[..., None]


def _linear_gradient(size: int, rng: np.random.Generator) -> np.ndarray:
    x, y = _grid(size)
    ang = rng.uniform(0, 2 * math.pi)
    t = (x * math.cos(ang) + y * math.sin(ang)) * 0.5 + 0.5
    return _blend(_random_colour(rng), _random_colour(rng), np.clip(t, 0, 1))


def _radial_gradient(size: int, rng: np.random.Generator) -> np.ndarray:
    x, y = _grid(size)
    cx, cy = rng.uniform(-0.6, 0.6, size=2)
    r = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) / rng.uniform(1.0, 2.2)
    return _blend(_random_colour(rng), _random_colour(rng), np.clip(r, 0, 1))


def _stripes(size: int, rng: np.random.Generator) -> np.ndarray:
    x, y = _grid(size)
    ang = rng.uniform(0, math.pi)
    period = rng.uniform(0.06, 0.5)  # in units of the half-width
    u = (x * math.cos(ang) + y * math.sin(ang)) / period
    # a little waviness so stripes look like fabric or blinds rather than a test chart
    u = u + rng.uniform(0.0, 0.6) * np.sin((x * math.sin(ang) - y * math.cos(ang))
                                           * rng.uniform(1.0, 6.0))
    n_col = int(rng.integers(2, 4))
    colours = [_random_colour(rng, sat=(0.0, 0.9)) for _ in range(n_col)]
    idx = np.floor(u).astype(np.int64) % n_col
    img = np.stack(colours)[idx]
    if rng.random() < 0.5:  # soften the edges
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 2.0))
    return img


def _checker(size: int, rng: np.random.Generator) -> np.ndarray:
    x, y = _grid(size)
    ang = rng.uniform(0, math.pi / 2)
    cell = rng.uniform(0.08, 0.4)
    u = (x * math.cos(ang) + y * math.sin(ang)) / cell
    v = (-x * math.sin(ang) + y * math.cos(ang)) / cell
    t = ((np.floor(u) + np.floor(v)).astype(np.int64) % 2).astype(np.float32)
    img = _blend(_random_colour(rng, sat=(0.0, 0.8)), _random_colour(rng, sat=(0.0, 0.8)), t)
    # a perspective-ish shading gradient across the board
    shade = 1.0 + 0.25 * (y * rng.uniform(-1, 1) + x * rng.uniform(-1, 1))
    return img * shade[..., None]


def _blobs(size: int, rng: np.random.Generator) -> np.ndarray:
    img = np.empty((size, size, 3), np.float32)
    img[:] = _random_colour(rng)
    n = int(rng.integers(6, 18))
    for _ in range(n):
        layer = np.zeros((size, size), np.float32)
        centre = (int(rng.integers(-size // 8, size + size // 8)),
                  int(rng.integers(-size // 8, size + size // 8)))
        axes = (int(rng.integers(size // 16 + 1, size // 3 + 2)),
                int(rng.integers(size // 16 + 1, size // 3 + 2)))
        cv2.ellipse(layer, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1,
                    lineType=cv2.LINE_AA)
        if rng.random() < 0.5:
            layer = cv2.GaussianBlur(layer, (0, 0), rng.uniform(1.0, size / 20 + 1.0))
        colour = _random_colour(rng, sat=(0.0, 0.9), val=(0.1, 1.0))
        img = img * (1.0 - layer[..., None]) + colour[None, None, :] * layer[..., None]
    return img


def _wood(size: int, rng: np.random.Generator) -> np.ndarray:
    x, y = _grid(size)
    # rings around a centre far outside the image give long, slightly curved grain
    ang = rng.uniform(0, 2 * math.pi)
    dist = rng.uniform(1.5, 6.0)
    cx, cy = dist * math.cos(ang), dist * math.sin(ang)
    r = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    turb = _fractal_noise(size, rng, octaves=3, base=3)[..., 0]
    rings = r * rng.uniform(3.0, 10.0) + turb * rng.uniform(1.0, 3.0)
    grain = 0.5 + 0.5 * np.sin(rings * 2 * math.pi)
    grain = grain ** rng.uniform(1.0, 3.0)
    fine = _value_noise(size, size // 3, rng)[..., 0]
    t = np.clip(0.8 * grain + 0.2 * fine, 0, 1)
    if rng.random() < 0.75:  # brown woods
        base = np.asarray([rng.uniform(0.45, 0.8), rng.uniform(0.28, 0.5),
                           rng.uniform(0.12, 0.3)], np.float32)
    else:  # painted / stained wood
        base = _random_colour(rng, sat=(0.2, 0.7), val=(0.4, 0.9))
    dark = base * rng.uniform(0.45, 0.75)
    return _blend(base, dark, t)


def _noise(size: int, rng: np.random.Generator) -> np.ndarray:
    n = _fractal_noise(size, rng, octaves=int(rng.integers(3, 6)), base=int(rng.integers(2, 6)),
                       channels=3)
    # map each channel through a random colour ramp
    lo = _random_colour(rng, sat=(0.0, 0.8))
    hi = _random_colour(rng, sat=(0.0, 0.8))
    mix = n.mean(axis=2)
    colour = _blend(lo, hi, mix)
    return 0.7 * colour + 0.3 * n


def _plaid(size: int, rng: np.random.Generator) -> np.ndarray:
    """A tartan: along each of two perpendicular directions, bands of 2-4 colours of random
    widths repeat; where they cross the colours mix (a woven check), with a fine twill."""
    x, y = _grid(size)
    ang = rng.uniform(0, math.pi / 2) if rng.random() < 0.5 else 0.0
    u = x * math.cos(ang) + y * math.sin(ang)
    v = -x * math.sin(ang) + y * math.cos(ang)
    layers = []
    for coord in (u, v):
        n_col = int(rng.integers(2, 5))
        colours = np.stack([_random_colour(rng, sat=(0.1, 0.9), val=(0.15, 0.95))
                            for _ in range(n_col)])
        widths = rng.uniform(0.3, 1.0, size=n_col)
        edges = np.cumsum(widths) / widths.sum()
        period = rng.uniform(0.15, 0.6)   # in units of the half-width
        phase = np.mod(coord / period, 1.0)
        layers.append(colours[np.searchsorted(edges, phase, side="right").clip(0, n_col - 1)])
    img = 0.5 * (layers[0] + layers[1])
    twill = 0.5 + 0.5 * np.sin((u + v) * size * rng.uniform(0.3, 0.8))
    img = img * (0.9 + 0.1 * twill[..., None])
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.5))
    return img


def _print(size: int, rng: np.random.Generator) -> np.ndarray:
    """A printed cloth: a ground (plain or faintly mottled) strewn with many small motifs,
    dots, flowers of 4-6 petals and leaves, of 2-5 colours, on a loose grid or at random."""
    img = np.empty((size, size, 3), np.float32)
    img[:] = _random_colour(rng, sat=(0.0, 0.6), val=(0.3, 0.95))
    if rng.random() < 0.5:
        img *= (0.9 + 0.2 * _value_noise(size, 8, rng))
    palette = [_random_colour(rng, sat=(0.3, 1.0), val=(0.1, 1.0))
               for _ in range(int(rng.integers(2, 6)))]
    motif = rng.uniform(0.015, 0.06) * size    # motif radius, pixels of the texture
    count = int(min(rng.uniform(0.15, 0.5) * (size / motif) ** 2, 4000))
    if rng.random() < 0.5:   # a loose grid, as most prints repeat
        step = size / max(int(math.sqrt(count)), 1)
        centres = [(i * step + rng.normal(0, step * 0.15), j * step + rng.normal(0, step * 0.15))
                   for i in range(int(size / step) + 1) for j in range(int(size / step) + 1)]
    else:
        centres = [tuple(rng.uniform(0, size, size=2)) for _ in range(count)]
    for cx, cy in centres:
        colour = palette[int(rng.integers(len(palette)))].tolist()
        r = max(motif * rng.uniform(0.6, 1.2), 1.0)
        centre = (int(cx), int(cy))
        shape = rng.random()
        if shape < 0.35:      # a dot
            cv2.circle(img, centre, int(r * 0.6), colour, -1, lineType=cv2.LINE_AA)
        elif shape < 0.75:    # a flower: petals around a heart
            petals = int(rng.integers(4, 7))
            turn = rng.uniform(0, 360)
            for k in range(petals):
                a = math.radians(turn + k * 360 / petals)
                pc = (int(cx + 0.55 * r * math.cos(a)), int(cy + 0.55 * r * math.sin(a)))
                cv2.ellipse(img, pc, (max(int(r * 0.45), 1), max(int(r * 0.25), 1)),
                            math.degrees(a), 0, 360, colour, -1, lineType=cv2.LINE_AA)
            heart = palette[int(rng.integers(len(palette)))].tolist()
            cv2.circle(img, centre, max(int(r * 0.2), 1), heart, -1, lineType=cv2.LINE_AA)
        else:                 # a leaf
            cv2.ellipse(img, centre, (max(int(r), 1), max(int(r * 0.35), 1)),
                        rng.uniform(0, 180), 0, 360, colour, -1, lineType=cv2.LINE_AA)
    return img


_MAKERS = {
    "solid": _solid,
    "linear_gradient": _linear_gradient,
    "radial_gradient": _radial_gradient,
    "stripes": _stripes,
    "checker": _checker,
    "blobs": _blobs,
    "wood": _wood,
    "noise": _noise,
    "plaid": _plaid,
    "print": _print,
}


def make_background(kind: str, size: int, rng: np.random.Generator,
                    noise_sigma: float | None = None) -> np.ndarray:
    """Return a ``(size, size, 3)`` uint8 RGB background of the given ``kind``.

    ``kind`` is one of :data:`KINDS`. ``noise_sigma`` is the standard deviation (in 8-bit
    levels) of the additive Gaussian noise; ``None`` picks a mild random amount (0.5-3).
    """
    if kind not in _MAKERS:
        raise ValueError(f"unknown background kind {kind!r}; choose one of {list(KINDS)}")
    if size < 1:
        raise ValueError(f"background size must be positive, got {size}")
    img = _MAKERS[kind](int(size), rng) * 255.0
    sigma = rng.uniform(0.5, 3.0) if noise_sigma is None else float(noise_sigma)
    if sigma > 0:
        img = img + rng.normal(0.0, sigma, size=img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def sample_background(domain: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A random background for a rendering ``domain`` (``clean`` or ``clutter``).

    Returns the uint8 RGB image and the kind that was drawn.
    """
    if domain == "clean":
        kind = str(rng.choice(CLEAN_KINDS, p=[0.4, 0.35, 0.25]))
    elif domain == "clutter":
        kind = str(rng.choice(CLUTTER_KINDS))
    else:
        raise ValueError(f"unknown domain {domain!r}; choose 'clean' or 'clutter'")
    return make_background(kind, size, rng), kind
