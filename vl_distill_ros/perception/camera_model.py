"""The colour camera's model, as the depth proposer and the bag reader use it (ROS-free).

:class:`CameraIntrinsics` holds a camera's pinhole parameters, size and lens distortion (a
``sensor_msgs/CameraInfo``'s ``k``, ``d`` and ``distortion_model``) and back-projects and
projects through the lens; :func:`image_camera` reads a CameraInfo as REP 104 and
image_geometry do (rectified images, binning, region of interest); :func:`distortion_corner_px`
says how far a lens bends the frame's corner. Unusable values raise :class:`DepthError`,
which the depth proposer (:mod:`.depth_proposals`) raises for unusable depth too.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

__all__ = ["DepthError", "CameraIntrinsics", "DISTORTION_MODELS", "MAX_DISTORTION_COEFFS",
           "MAX_BINNING", "distortion_corner_px", "lens_model_supported", "camera_matrix",
           "image_camera"]


class DepthError(ValueError):
    """Depth input or intrinsics that cannot be used; the message says why."""


#: CameraInfo distortion models the depth proposer back-projects through (REP 104 names):
#: OpenCV's radial-tangential model (4, 5, 8, 12 or 14 coefficients) and its fisheye model.
DISTORTION_MODELS: tuple[str, ...] = ("plumb_bob", "rational_polynomial", "equidistant")
#: The most lens coefficients any of them has.
MAX_DISTORTION_COEFFS = 14
#: A pixel's ray is known when the lens model takes it back onto the pixel within this many
#: pixels. Where no ray reaches a pixel (coefficients that bend the whole field of view into
#: part of the image: a CameraInfo of another camera, or a corrupt one), OpenCV's iterative
#: inverse of the model returns some other ray, 1e100 or NaN; a real calibration's rays come
#: back within 1e-3 px. The other pixels' rays are NaN, and their depth is not used.
RAY_REPROJECTION_PX = 0.5
#: Most bytes the lens ray tables of :meth:`CameraIntrinsics.pixel_rays` keep (the least
#: recently used go first; 16 bytes a pixel: 4K 133 MB, 1080p 33 MB, VGA 5 MB): three 4K
#: cameras taking turns keep theirs. It was 8 tables of any size: 1 GB at 4K, 6 GB at the
#: largest frame, for a CameraInfo whose K moves every frame.
RAY_TABLE_BYTES = 512 << 20


@dataclass(frozen=True)
class CameraIntrinsics:
    """Intrinsics of the colour camera (pixels, OpenCV convention), its size and its lens
    distortion (a CameraInfo's ``distortion_model`` and ``d``; none: a pinhole camera).

    A camera with distortion (:attr:`distorted`) back-projects a pixel along the ray its
    lens bends onto it (:meth:`pixel_rays`, a per-camera table) and projects points through
    the lens (:meth:`project`); a pinhole camera uses ``(u - cx) / fx`` as before. ``origin``
    and ``frame_size`` describe a window of a larger frame (:meth:`window`): its top-left
    corner in the frame and the frame's size, which the lens model refers to.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion_model: str = ""
    distortion: tuple[float, ...] = ()
    origin: tuple[int, int] = (0, 0)
    frame_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        vals = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(float(v)) for v in vals):
            raise DepthError(f"camera intrinsics must be finite, got {vals}")
        if self.distortion and not all(math.isfinite(float(v)) for v in self.distortion):
            raise DepthError(f"lens distortion coefficients must be finite, got "
                             f"{list(self.distortion)[:14]}")
        if float(self.fx) <= 0 or float(self.fy) <= 0:
            raise DepthError(f"camera intrinsics have fx={self.fx}, fy={self.fy}: the focal "
                             "lengths must be > 0 (a CameraInfo with a zero K matrix?)")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise DepthError(f"camera size {self.width}x{self.height} must be positive (a "
                             "CameraInfo with width/height 0?)")

    @property
    def focal(self) -> float:
        """The mean of the two focal lengths (pixels)."""
        return 0.5 * (float(self.fx) + float(self.fy))

    @classmethod
    def from_k(cls, k: Sequence[float], width: int, height: int, distortion_model: str = "",
               d: Sequence[float] = ()) -> "CameraIntrinsics":
        """From a CameraInfo's row-major 3x3 ``k``, its ``width``/``height`` and (optional)
        its ``distortion_model`` and ``d``. A model this module does not know, or
        coefficients of the wrong count for it, leave the camera a pinhole one (see
        :func:`lens_model_supported`).

        Raises:
            DepthError: ``k`` does not have 9 values, or the values are unusable.
        """
        vals = [float(v) for v in k]
        if len(vals) != 9:
            raise DepthError(f"CameraInfo k must hold 9 values, got {len(vals)}")
        # at most 14 coefficients exist: a longer d (from the wire) is not even read
        coeffs = tuple(float(v) for v in d) if len(d) <= MAX_DISTORTION_COEFFS else (0.0,)
        model = str(distortion_model)
        if not lens_model_supported(model, coeffs) or not any(coeffs):
            model, coeffs = "", ()
        return cls(vals[0], vals[4], vals[2], vals[5], int(width), int(height), model, coeffs)

    @classmethod
    def from_camera_info(cls, info: object, rectified: bool = False,
                         image_size: tuple[int, int] | None = None) -> "CameraIntrinsics":
        """From a ``sensor_msgs/CameraInfo`` (duck-typed: ``k``, ``p``, ``width``, ``height``,
        ``distortion_model``, ``d``, and ``binning_x``, ``binning_y``, ``roi`` when present).
        For a rectified image (``rectified``: an ``image_rect`` topic) the camera is P's
        intrinsics without distortion, as REP 104 and image_geometry have it (K when P is all
        zeros); otherwise K and the lens model. Binning and a region of interest give the
        camera of the smaller images they describe (:func:`image_camera`, which also reads
        ``image_size``, the size of the images at hand).

        Raises:
            DepthError: unusable values (see :meth:`from_k`).
        """
        fx, fy, cx, cy, width, height = image_camera(info, rectified, image_size)
        lens = () if rectified else (str(getattr(info, "distortion_model", "")),
                                     getattr(info, "d", ()))
        return cls.from_k([fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0], width, height, *lens)

    @property
    def distorted(self) -> bool:
        """Whether a lens model bends the rays (else a pinhole camera)."""
        return bool(self.distortion_model) and any(self.distortion)

    def window(self, x0: int, y0: int, x1: int, y1: int) -> "CameraIntrinsics":
        """The camera of the pixels ``[x0, x1) x [y0, y1)`` of this one's image."""
        frame = self.frame_size or (int(self.width), int(self.height))
        return CameraIntrinsics(self.fx, self.fy, self.cx - x0, self.cy - y0, x1 - x0,
                                y1 - y0, self.distortion_model, self.distortion,
                                (self.origin[0] + x0, self.origin[1] + y0), frame)

    def _frame_camera(self) -> tuple[tuple[float, ...], str, tuple[float, ...], tuple[int, int]]:
        frame = self.frame_size or (int(self.width), int(self.height))
        k = (float(self.fx), float(self.fy), float(self.cx) + self.origin[0],
             float(self.cy) + self.origin[1])
        return k, self.distortion_model, tuple(self.distortion), frame

    def pixel_rays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)``, each ``(height, width)`` float64: the ray ``(x, y, 1)`` the lens bends
        onto each pixel of this camera (a window's pixels are looked up in the frame's
        table, computed once per camera and kept)."""
        rx, ry = _ray_table(*self._frame_camera())
        ox, oy = self.origin
        return (rx[oy:oy + int(self.height), ox:ox + int(self.width)],
                ry[oy:oy + int(self.height), ox:ox + int(self.width)])

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates ``(u, v)`` of 3-D ``points`` (N, 3; z > 0) in this camera."""
        zs = np.maximum(points[:, 2], 1e-6)
        if not self.distorted:
            return self.fx * points[:, 0] / zs + self.cx, self.fy * points[:, 1] / zs + self.cy
        k, model, d, _ = self._frame_camera()
        # the forward model in numpy (_distort: OpenCV's, ~15x faster than cv2.projectPoints
        # on the 300k points of a depth image that align_depth projects)
        rays = np.stack([points[:, 0] / zs, points[:, 1] / zs], 1).astype(np.float64)
        px = _distort(rays, k, model, d)
        return px[:, 0] - self.origin[0], px[:, 1] - self.origin[1]


#: Largest binning factor a CameraInfo may state.
MAX_BINNING = 64


def image_camera(info: object, rectified: bool = False,
                 image_size: tuple[int, int] | None = None
                 ) -> tuple[float, float, float, float, int, int]:
    """``(fx, fy, cx, cy, width, height)`` of the images a ``sensor_msgs/CameraInfo``
    describes (REP 104, as image_geometry reads it): :func:`camera_matrix` and the
    calibrated size, reduced to its region of interest (``roi``, in full-resolution pixels;
    all zeros: the whole frame) and divided by its binning (``binning_x``, ``binning_y``;
    0 or 1: none): ``fx / bx``, ``(cx - x_offset) / bx``, and ``roi.width // bx`` wide. The
    lens model needs no change (it acts on ``(u - cx) / fx``). The ROI is always the raw
    sensor window (sensor_msgs/RegionOfInterest: "always denotes the same window of pixels
    on the camera sensor"); its ``do_rectify`` only asks a rectifier to compute a rectified
    ROI from it (and is "typically True if a subwindow is captured"), so it changes nothing
    here, as in image_geometry. With ``image_size`` ``(width, height)`` of the images at hand, a
    CameraInfo whose binning and ROI do not fit them but whose full frame does is read as the
    full frame (a driver that fills them in without using them).

    Raises:
        DepthError: K does not hold 9 values, a binning outside 0..``MAX_BINNING``, or an
            ROI outside the calibrated frame.
    """
    fx, fy, cx, cy = camera_matrix(info, rectified)
    width, height = int(getattr(info, "width")), int(getattr(info, "height"))
    if image_size is not None and tuple(image_size) == (width, height):
        return fx, fy, cx, cy, width, height
    bins = (int(getattr(info, "binning_x", 0) or 0), int(getattr(info, "binning_y", 0) or 0))
    if not all(0 <= b <= MAX_BINNING for b in bins):
        raise DepthError(f"CameraInfo binning {bins[0]}x{bins[1]} is outside 0..{MAX_BINNING}")
    bx, by = (max(1, b) for b in bins)
    roi = getattr(info, "roi", None)
    x0, y0, w, h = (int(getattr(roi, name, 0) or 0)
                    for name in ("x_offset", "y_offset", "width", "height"))
    if w == 0 or h == 0 or (x0, y0, w, h) == (0, 0, width, height):
        x0, y0, w, h = 0, 0, width, height                    # the whole frame
    elif x0 < 0 or y0 < 0 or x0 + w > width or y0 + h > height:
        raise DepthError(f"CameraInfo roi {w}x{h} at ({x0}, {y0}) lies outside its "
                         f"{width}x{height} frame")
    if (bx, by) == (1, 1) and (x0, y0) == (0, 0):
        return fx, fy, cx, cy, w, h
    return fx / bx, fy / by, (cx - x0) / bx, (cy - y0) / by, w // bx, h // by


def camera_matrix(info: object, rectified: bool = False) -> tuple[float, float, float, float]:
    """``(fx, fy, cx, cy)`` of a ``sensor_msgs/CameraInfo`` (duck-typed ``k``, ``p``),
    unchecked: from K, or for ``rectified`` images from P when P is not all zeros (REP 104).

    Raises:
        DepthError: K does not hold 9 values.
    """
    p = [float(v) for v in getattr(info, "p", ())]
    if rectified and len(p) == 12 and any(p):
        return p[0], p[5], p[2], p[6]
    k = [float(v) for v in getattr(info, "k")]
    if len(k) != 9:
        raise DepthError(f"CameraInfo k must hold 9 values, got {len(k)}")
    return k[0], k[4], k[2], k[5]


def _kmat(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """The 3x3 camera matrix."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _undistort(pix: np.ndarray, kmat: np.ndarray, model: str, d: Sequence[float],
               iterations: int, eps: float) -> np.ndarray:
    """(N, 2) undistorted normalised rays of pixels ``pix`` (N, 1, 2) through the lens
    ``model``/``d`` (the radial-tangential model by OpenCV's iterative solver, stopped after
    ``iterations`` or below ``eps``)."""
    if model == "equidistant":
        rays = cv2.fisheye.undistortPoints(pix, kmat, np.array(d))
    else:
        rays = cv2.undistortPoints(pix, kmat, np.array(d), None, None, None, (
            cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, iterations, eps))
    return rays.reshape(-1, 2)


def lens_model_supported(model: str, d: Sequence[float]) -> bool:
    """Whether ``model`` is one of :data:`DISTORTION_MODELS` with a coefficient count OpenCV
    takes for it (plumb_bob / rational_polynomial: 4, 5, 8, 12 or 14; equidistant: 4)."""
    if model in ("plumb_bob", "rational_polynomial"):
        return len(d) in (4, 5, 8, 12, 14)
    return model == "equidistant" and len(d) == 4


def _distort(rays: np.ndarray, k: tuple[float, ...], model: str, d: Sequence[float]
             ) -> np.ndarray:
    """(N, 2) pixels of the (N, 2) normalised rays through the lens ``model``/``d`` and the
    intrinsics ``k`` = ``(fx, fy, cx, cy)``: OpenCV's forward models, in numpy for the
    radial-tangential model with up to 8 coefficients and the fisheye model (10x faster than
    ``cv2.projectPoints`` on a frame's pixels), by OpenCV for the thin-prism and tilted ones."""
    fx, fy, cx, cy = k
    x, y = rays[:, 0], rays[:, 1]
    c = [float(v) for v in d]
    if model == "equidistant":
        r = np.hypot(x, y)
        theta = np.arctan(r)
        t2 = theta * theta
        theta_d = theta * (1 + t2 * (c[0] + t2 * (c[1] + t2 * (c[2] + t2 * c[3]))))
        scale = np.where(r > 1e-12, theta_d / np.maximum(r, 1e-12), 1.0)
        xd, yd = x * scale, y * scale
    elif len(c) <= 8:
        k1, k2, p1, p2, k3, k4, k5, k6 = c + [0.0] * (8 - len(c))
        r2 = x * x + y * y
        radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    else:
        obj = np.concatenate([np.nan_to_num(rays, posinf=0.0, neginf=0.0),
                              np.ones((len(rays), 1))], 1).reshape(-1, 1, 3)
        px = cv2.projectPoints(obj, np.zeros(3), np.zeros(3), _kmat(*k), np.array(c))[0]
        return np.where(np.isfinite(rays), px.reshape(-1, 2), np.nan)
    return np.stack([fx * xd + cx, fy * yd + cy], 1)


_RAY_TABLES: "OrderedDict[tuple, tuple[np.ndarray, np.ndarray]]" = OrderedDict()
_RAY_TABLES_LOCK = threading.Lock()


def _ray_table(k: tuple[float, ...], model: str, d: tuple[float, ...],
               frame: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel's undistorted ray ``(x, y)`` of a frame of size ``frame`` (read-only;
    NaN where the lens model cannot give it: :data:`RAY_REPROJECTION_PX`), kept while the
    tables fit in :data:`RAY_TABLE_BYTES` (the latest always is)."""
    key = (k, model, d, frame)
    with _RAY_TABLES_LOCK:
        table = _RAY_TABLES.get(key)
        if table is not None:
            _RAY_TABLES.move_to_end(key)
            return table
    table = _compute_ray_table(k, model, d, frame)
    with _RAY_TABLES_LOCK:
        _RAY_TABLES[key] = table
        _RAY_TABLES.move_to_end(key)
        while len(_RAY_TABLES) > 1 and sum(
                a.nbytes + b.nbytes for a, b in _RAY_TABLES.values()) > RAY_TABLE_BYTES:
            _RAY_TABLES.popitem(last=False)
    return table


def _compute_ray_table(k: tuple[float, ...], model: str, d: tuple[float, ...],
                       frame: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The table of :func:`_ray_table`, computed."""
    w, h = frame
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    pix = np.stack([u.ravel(), v.ravel()], 1).reshape(-1, 1, 2)
    rays = _undistort(pix, _kmat(*k), model, d, 20, 1e-9)
    with np.errstate(all="ignore"):             # diverged rays: inf and NaN misses
        miss = np.abs(_distort(rays, k, model, d) - pix.reshape(-1, 2)).max(axis=1)
    rays[~(miss <= RAY_REPROJECTION_PX)] = np.nan   # NaN misses compare False: not known
    rays = rays.reshape(h, w, 2)
    rx, ry = np.ascontiguousarray(rays[..., 0]), np.ascontiguousarray(rays[..., 1])
    rx.flags.writeable = ry.flags.writeable = False
    return rx, ry


def distortion_corner_px(k: CameraIntrinsics, model: str, d: Sequence[float]) -> float | None:
    """How far a CameraInfo's lens distortion moves the image's farthest corner, in pixels:
    the distance between the corner pixel and where a pinhole camera with the same K would
    see the ray that reaches it: the geometry error at the frame's edge if the lens were
    ignored (the depth proposer follows the lens model, see :class:`CameraIntrinsics`); 0
    for rectified images (``image_rect``) or an all-zero ``d``; ``None`` for an unknown
    model or coefficients of the wrong count (the proposer then takes a pinhole camera).
    """
    if len(d) > MAX_DISTORTION_COEFFS:
        return None
    coeffs = [float(v) for v in d]
    if not coeffs or not any(coeffs):
        return 0.0
    if not all(math.isfinite(v) for v in coeffs):
        return None
    if not lens_model_supported(model, coeffs):
        return None
    w, h = float(k.width - 1), float(k.height - 1)
    corners = np.array([[[0.0, 0.0]], [[w, 0.0]], [[0.0, h]], [[w, h]]])
    rays = _undistort(corners, _kmat(k.fx, k.fy, k.cx, k.cy), model, coeffs, 100, 1e-10)
    pinhole = rays * [k.fx, k.fy] + [k.cx, k.cy]
    return float(np.max(np.linalg.norm(pinhole - corners.reshape(-1, 2), axis=1)))
