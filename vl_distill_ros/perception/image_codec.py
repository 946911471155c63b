"""Decode ``sensor_msgs/Image`` payloads to RGB numpy arrays, and encode RGB for publishing.

ROS-free: the node passes the message fields in (``encoding``, ``height``, ``width``,
``step``, ``data``, ``is_bigendian``); no ``cv_bridge`` is needed.

Semantics follow ``sensor_msgs/Image``:

* ``step`` is the length of one row in bytes. It must be at least ``width * bpp`` (bytes per
  pixel of the encoding); rows may be padded, the padding is ignored.
* ``data`` must hold exactly ``step * height`` bytes. Shorter data is a truncated frame, longer
  data is a malformed message; both are rejected with the two numbers in the message.
* ``is_bigendian`` only matters for the 16-bit encodings.

Decoding is zero-copy up to the final conversion: the payload is viewed through the buffer
protocol (``rclpy`` hands ``msg.data`` over as ``array.array('B')``, which works without a
copy, as do ``bytes``, ``bytearray``, ``memoryview`` and numpy arrays), rows are sliced as a
strided view, and a single OpenCV/numpy conversion writes the output. Only a Python ``list``
payload needs an extra conversion.

16-bit mono (``mono16``/``16UC1``) is scaled to 8 bits by the frame's own maximum:
``round(x * 255 / max(frame))`` when the maximum is > 0 (an all-zero frame stays black). This
makes depth-like or 12-bit data visible, at the price of the brightness not being comparable
between frames.
"""
from __future__ import annotations

import array
from typing import Union

import cv2
import numpy as np

__all__ = ["ImageDecodeError", "SUPPORTED_ENCODINGS", "BYTES_PER_PIXEL", "decode_image",
           "encode_rgb8", "DEPTH_ENCODINGS", "decode_depth", "encode_depth_mm", "as_byte_view",
           "ImageData", "scale_mono16", "MILLIMETRE", "demosaic", "BAYER_PATTERNS"]


class ImageDecodeError(ValueError):
    """An image message cannot be decoded; the message names the problem and the values."""


#: Encodings :func:`decode_image` accepts (``8UC3`` is read as ``bgr8``, ``8UC1`` as ``mono8``
#: and ``16UC1`` as ``mono16``, as ``cv_bridge`` does).
SUPPORTED_ENCODINGS: tuple[str, ...] = (
    "rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "16UC1", "8UC1", "8UC3",
    "yuv422", "uyvy", "yuv422_yuy2", "yuyv",
    "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8",
    "rgb16", "bgr16", "rgba16", "bgra16",
    "bayer_rggb16", "bayer_bggr16", "bayer_gbrg16", "bayer_grbg16")

#: Bytes per pixel of every supported encoding.
BYTES_PER_PIXEL: dict[str, int] = {
    "rgb8": 3, "bgr8": 3, "8UC3": 3, "rgba8": 4, "bgra8": 4,
    "mono8": 1, "8UC1": 1, "mono16": 2, "16UC1": 2,
    "yuv422": 2, "uyvy": 2, "yuv422_yuy2": 2, "yuyv": 2,
    "bayer_rggb8": 1, "bayer_bggr8": 1, "bayer_gbrg8": 1, "bayer_grbg8": 1,
    "rgb16": 6, "bgr16": 6, "rgba16": 8, "bgra16": 8,
    "bayer_rggb16": 2, "bayer_bggr16": 2, "bayer_gbrg16": 2, "bayer_grbg16": 2,
}

#: Packed YUV 4:2:2 (two pixels share U and V; ITU-R BT.601) as USB and RealSense colour
#: cameras send it, -> OpenCV conversion to RGB: ``yuv422`` / ``uyvy`` are U Y0 V Y1,
#: ``yuv422_yuy2`` / ``yuyv`` are Y0 U Y1 V (ROS's sensor_msgs names and their newer aliases).
_YUV422_TO_RGB: dict[str, int] = {
    "yuv422": cv2.COLOR_YUV2RGB_UYVY, "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2, "yuyv": cv2.COLOR_YUV2RGB_YUY2,
}

#: Raw 8-bit Bayer mosaics (industrial cameras), named by their top-left 2x2 cell, ->
#: OpenCV's demosaicing to RGB.
_BAYER_TO_RGB: dict[str, int] = {
    "bayer_rggb8": cv2.COLOR_BayerRGGB2RGB, "bayer_bggr8": cv2.COLOR_BayerBGGR2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGBRG2RGB, "bayer_grbg8": cv2.COLOR_BayerGRBG2RGB,
}

#: 16-bit colour (machine-vision cameras: FLIR Spinnaker's ``BayerRG16``, Basler's ``RGB16``)
#: -> its 8-bit encoding: colour keeps the high byte (as a 16-bit colour PNG does); a 16-bit
#: mosaic is demosaiced and scaled by the frame's maximum, as ``mono16`` is (12-bit sensors
#: fill the low bits).
_EIGHT_BIT_OF: dict[str, str] = {
    "rgb16": "rgb8", "bgr16": "bgr8", "rgba16": "rgba8", "bgra16": "bgra8",
    **{f"bayer_{p}16": f"bayer_{p}8" for p in ("rggb", "bggr", "gbrg", "grbg")},
}

#: The 8-bit Bayer encodings (a 16-bit one is ``bayer_*16``).
BAYER_PATTERNS: tuple[str, ...] = tuple(_BAYER_TO_RGB)

# encoding -> OpenCV conversion to RGB (None: already RGB)
_TO_RGB: dict[str, int | None] = {
    "rgb8": None,
    "bgr8": cv2.COLOR_BGR2RGB, "8UC3": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB, "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB, "8UC1": cv2.COLOR_GRAY2RGB,
    "mono16": cv2.COLOR_GRAY2RGB, "16UC1": cv2.COLOR_GRAY2RGB,
}

ImageData = Union[bytes, bytearray, memoryview, np.ndarray, array.array, list]


def as_byte_view(data: ImageData) -> np.ndarray:
    """A flat uint8 view of ``data`` (no copy for buffer-protocol objects).

    Raises:
        ImageDecodeError: an unsupported type, or a list that is not flat bytes 0..255.
    """
    if isinstance(data, np.ndarray):
        flat = np.ascontiguousarray(data).reshape(-1)  # copies only if non-contiguous
        return flat.view(np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        try:
            return np.frombuffer(data, dtype=np.uint8)
        except (ValueError, TypeError, BufferError):  # e.g. a non-contiguous memoryview
            return np.frombuffer(bytes(memoryview(data)), dtype=np.uint8)
    if isinstance(data, (list, tuple)):
        try:
            arr = np.asarray(data)
        except (ValueError, TypeError) as exc:
            raise ImageDecodeError(f"image data list is not a flat list of bytes: {exc}") from exc
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iub"):
            raise ImageDecodeError(
                f"image data list must be a flat list of integers 0..255, got dtype "
                f"{arr.dtype} and shape {arr.shape}")
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
            raise ImageDecodeError(
                f"image data list values must be bytes 0..255, got values in "
                f"[{int(arr.min())}, {int(arr.max())}]")
        return arr.astype(np.uint8)
    raise ImageDecodeError(
        f"unsupported image data type {type(data).__name__}; expected bytes, bytearray, "
        f"memoryview, array.array, numpy array or list of ints")


def _check_int(name: str, value: int) -> int:
    try:
        ivalue = int(value)
    except (TypeError, ValueError) as exc:
        raise ImageDecodeError(f"{name} must be an integer, got {value!r}") from exc
    if ivalue != value or ivalue < 0:
        raise ImageDecodeError(f"{name} must be a non-negative integer, got {value!r}")
    return ivalue


def decode_image(encoding: str, height: int, width: int, step: int, data: ImageData,
                 is_bigendian: int = 0, max_pixels: int = 50_000_000) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` payload to an RGB uint8 ``(height, width, 3)`` array.

    Args:
        encoding: one of :data:`SUPPORTED_ENCODINGS`.
        height: rows.
        width: columns.
        step: bytes per row, ``>= width * bytes_per_pixel`` (padding at row ends is ignored).
        data: exactly ``step * height`` bytes (``bytes``, ``bytearray``, ``memoryview``,
            ``array.array``, numpy array of any dtype, viewed as raw bytes, or a list of ints).
        is_bigendian: byte order of 16-bit encodings (non-zero: big-endian).
        max_pixels: frames with ``width * height`` above this are rejected.

    Returns:
        A new, writable, C-contiguous ``(height, width, 3)`` uint8 RGB array that does not share
        memory with ``data``. 16-bit mono is scaled as ``round(x * 255 / max(frame))`` (a frame
        whose maximum is 0 stays black) and replicated to three channels, as is 8-bit mono.
        Packed YUV 4:2:2 (BT.601) is converted, a Bayer mosaic demosaiced (OpenCV's
        bilinear demosaicing); 16-bit colour keeps its high byte, a 16-bit mosaic is scaled
        by the frame's maximum as 16-bit mono is.

    Raises:
        ImageDecodeError: unsupported encoding, empty frame, frame too large, ``step`` too
            small, ``data`` not ``step * height`` bytes long, an odd width in YUV 4:2:2 or a
            Bayer frame under 2x2 pixels; the message gives the values.
    """
    if encoding not in BYTES_PER_PIXEL:
        raise ImageDecodeError(
            f"unsupported image encoding {encoding!r}; supported encodings: "
            f"{', '.join(SUPPORTED_ENCODINGS)}")
    height = _check_int("height", height)
    width = _check_int("width", width)
    step = _check_int("step", step)
    if height == 0 or width == 0:
        raise ImageDecodeError(f"empty frame: width={width}, height={height}")
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"frame too large: {width}x{height} = {width * height} pixels > max_pixels="
            f"{max_pixels}")
    bpp = BYTES_PER_PIXEL[encoding]
    row_bytes = width * bpp
    if step < row_bytes:
        raise ImageDecodeError(
            f"step {step} is smaller than width * bytes_per_pixel = {width} * {bpp} = "
            f"{row_bytes} for encoding {encoding!r}")

    buf = as_byte_view(data)
    expected = step * height
    if buf.size != expected:
        problem = "truncated image data" if buf.size < expected else "image data too long"
        raise ImageDecodeError(
            f"{problem}: data has {buf.size} bytes, expected step*height = {step}*{height} = "
            f"{expected}")

    rows = buf.reshape(height, step)[:, :row_bytes]  # strided view, no copy
    if encoding in _EIGHT_BIT_OF:
        return _decode_16bit_colour(encoding, rows, height, width, is_bigendian)
    if encoding in _YUV422_TO_RGB or encoding in _BAYER_TO_RGB:
        return _decode_packed(encoding, rows, height, width)
    if bpp == 2:
        dtype = np.dtype(">u2" if is_bigendian else "<u2")
        mono16 = rows.view(dtype)  # (H, W), last axis contiguous
        if not dtype.isnative:
            mono16 = mono16.astype(np.uint16)  # byte swap (one copy)
        elif not mono16.flags.aligned or mono16.strides[0] % 2:
            # OpenCV needs 2-byte aligned rows; an odd step (legal, if unusual) needs a copy
            mono16 = np.ascontiguousarray(mono16)
        return cv2.cvtColor(scale_mono16(mono16), cv2.COLOR_GRAY2RGB)

    channels = bpp
    pixels = rows.reshape(height, width, channels) if channels > 1 else rows
    code = _TO_RGB[encoding]
    if code is None:
        return np.array(pixels, dtype=np.uint8, order="C", copy=True)
    return cv2.cvtColor(pixels, code)


def scale_mono16(mono16: np.ndarray) -> np.ndarray:
    """(H, W) 16-bit grey -> uint8 scaled by the frame's own maximum,
    ``round(x * 255 / max(frame))`` (a frame whose maximum is 0 stays black)."""
    peak = int(mono16.max())
    if peak == 0:
        return np.zeros(mono16.shape, np.uint8)
    # saturating, rounding scale, done in one pass by OpenCV
    return cv2.convertScaleAbs(mono16, alpha=255.0 / peak)


def demosaic(mosaic: np.ndarray, pattern: str) -> np.ndarray:
    """RGB uint8 of a ``(H, W)`` Bayer mosaic, ``pattern`` its 8-bit encoding
    (``bayer_rggb8``...): 8-bit as it is, 16-bit scaled by the frame's maximum as ``mono16``
    is (a frame whose maximum is 0 stays black).

    Raises:
        ImageDecodeError: a frame under 2x2 pixels.
    """
    height, width = mosaic.shape[:2]
    if height < 2 or width < 2:
        raise ImageDecodeError(f"a Bayer mosaic ({pattern}) must be at least 2x2 pixels, got "
                               f"{width}x{height}")
    rgb = cv2.cvtColor(np.ascontiguousarray(mosaic), _BAYER_TO_RGB[pattern])
    if rgb.dtype == np.uint8:
        return rgb
    peak = int(rgb.max())
    return np.zeros(rgb.shape, np.uint8) if peak == 0 else cv2.convertScaleAbs(
        rgb, alpha=255.0 / peak)


def _decode_16bit_colour(encoding: str, rows: np.ndarray, height: int, width: int,
                         is_bigendian: int) -> np.ndarray:
    """16-bit colour or Bayer ``rows`` ((H, row_bytes) uint8) -> RGB (H, W, 3) uint8 (see
    :data:`_EIGHT_BIT_OF`)."""
    words = np.ascontiguousarray(rows).view(">u2" if is_bigendian else "<u2").astype(np.uint16)
    eight = _EIGHT_BIT_OF[encoding]
    if eight in _BAYER_TO_RGB:
        return demosaic(words, eight)
    pixels = (words >> 8).astype(np.uint8).reshape(height, width, -1)
    code = _TO_RGB[eight]
    return np.array(pixels, order="C") if code is None else cv2.cvtColor(pixels, code)


def _decode_packed(encoding: str, rows: np.ndarray, height: int, width: int) -> np.ndarray:
    """YUV 4:2:2 or Bayer ``rows`` ((H, row_bytes) uint8) -> RGB (H, W, 3)."""
    if encoding in _YUV422_TO_RGB:
        if width % 2:
            raise ImageDecodeError(f"encoding {encoding!r} packs two pixels in four bytes: the "
                                   f"width must be even, got {width}")
        pairs = np.ascontiguousarray(rows).reshape(height, width, 2)
        return cv2.cvtColor(pairs, _YUV422_TO_RGB[encoding])
    if height < 2 or width < 2:
        raise ImageDecodeError(f"encoding {encoding!r} is a 2x2 colour mosaic: the frame must "
                               f"be at least 2x2 pixels, got {width}x{height}")
    return cv2.cvtColor(np.ascontiguousarray(rows), _BAYER_TO_RGB[encoding])


def encode_rgb8(image: np.ndarray) -> tuple[str, int, int, int, bytes]:
    """Encode an RGB uint8 ``(H, W, 3)`` image for a ``sensor_msgs/Image`` message.

    Returns:
        ``(encoding, height, width, step, data)`` = ``("rgb8", H, W, W * 3, bytes)``, ready to
        assign to the message fields (``is_bigendian`` is 0).

    Raises:
        ValueError: the array is not a non-empty ``(H, W, 3)`` uint8 image.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    height, width = int(image.shape[0]), int(image.shape[1])
    if height == 0 or width == 0:
        raise ValueError(f"empty image of shape {image.shape}")
    data = np.ascontiguousarray(image).tobytes()
    return "rgb8", height, width, width * 3, data


#: Depth encodings :func:`decode_depth` accepts: ``16UC1`` (and ``mono16``) in millimetres,
#: ``32FC1`` in metres (REP 118).
DEPTH_ENCODINGS: dict[str, int] = {"16UC1": 2, "mono16": 2, "32FC1": 4}


#: Metres per unit of a 16-bit depth image: millimetres (REP 118).
MILLIMETRE = 0.001


def decode_depth(encoding: str, height: int, width: int, step: int, data: ImageData,
                 is_bigendian: int = 0, max_pixels: int = 50_000_000,
                 unit_m: float = MILLIMETRE) -> np.ndarray:
    """Decode a depth ``sensor_msgs/Image`` payload to float32 metres ``(height, width)``.

    ``16UC1``/``mono16`` hold units of ``unit_m`` metres (millimetres, REP 118, unless a
    camera says otherwise: an L515's raw 0.25 mm, a dataset's 1/5000 m), ``32FC1`` metres.
    Pixels without a measurement (0, NaN, +-inf or negative) come back as 0.
    ``step``/``data`` rules as :func:`decode_image`.

    Raises:
        ImageDecodeError: not a depth encoding (the message names the accepted ones), empty
            or too large frame, ``step`` too small or ``data`` of the wrong length.
    """
    if encoding not in DEPTH_ENCODINGS:
        raise ImageDecodeError(
            f"unsupported depth encoding {encoding!r}; expected 16UC1 (millimetres) or 32FC1 "
            "(metres)")
    height = _check_int("height", height)
    width = _check_int("width", width)
    step = _check_int("step", step)
    if height == 0 or width == 0:
        raise ImageDecodeError(f"empty depth frame: width={width}, height={height}")
    if width * height > max_pixels:
        raise ImageDecodeError(f"depth frame too large: {width}x{height} pixels")
    bpp = DEPTH_ENCODINGS[encoding]
    if step < width * bpp:
        raise ImageDecodeError(f"step {step} is smaller than width * bytes_per_pixel = "
                               f"{width} * {bpp} for encoding {encoding!r}")
    buf = as_byte_view(data)
    if buf.size != step * height:
        raise ImageDecodeError(f"depth data has {buf.size} bytes, expected step*height = "
                               f"{step}*{height} = {step * height}")
    rows = np.ascontiguousarray(buf.reshape(height, step)[:, :width * bpp])
    order = ">" if is_bigendian else "<"
    if bpp == 2:
        return rows.view(order + "u2").astype(np.float32) * np.float32(unit_m)
    out = rows.view(order + "f4").astype(np.float32)
    out[~(np.isfinite(out) & (out > 0))] = 0.0
    return out


def encode_depth_mm(depth: np.ndarray) -> tuple[str, int, int, int, bytes]:
    """Encode depth for a ``16UC1`` ``sensor_msgs/Image``: a uint16 array is taken as
    millimetres, a float array as metres (rounded to mm; 0, non-finite or beyond 65.535 m
    become 0). Returns ``(encoding, height, width, step, data)`` (little-endian).

    Raises:
        ValueError: not a non-empty 2-D array.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2 or depth.size == 0:
        raise ValueError(f"expected a non-empty (H, W) depth array, got shape {depth.shape}")
    if depth.dtype == np.uint16:
        mm = depth
    else:
        z = depth.astype(np.float64)
        mm = np.where(np.isfinite(z) & (z > 0) & (z < 65.5355), np.round(z * 1000.0), 0.0)
        mm = mm.astype(np.uint16)
    height, width = depth.shape
    return "16UC1", int(height), int(width), int(width) * 2, mm.astype("<u2").tobytes()
