"""Image files read and written through OpenCV's in-memory codecs, never through a path.

``cv2.imread``/``cv2.imwrite`` given a file name that is not UTF-8 (a surrogate-escaped
``str``, as Python decodes such names) crash the process with OpenCV 5 (SIGSEGV), and
``cv2.imread`` of a FIFO blocks for ever. Here the bytes are read by Python (a regular file
of bounded size, :func:`~vl_distill_ros.atomic_io.read_regular_file`) and decoded with
``cv2.imdecode``; written images are encoded with ``cv2.imencode`` and written by Python.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..atomic_io import read_regular_file
from .compressed_codec import payload_size
from .image_codec import ImageDecodeError

#: Largest image file read (a 4096 x 4096 RGBA PNG stored raw is 64 MiB).
MAX_IMAGE_FILE_BYTES = 256 * 1024 * 1024


def read_file_bytes(path: str | Path, max_bytes: int = MAX_IMAGE_FILE_BYTES
                    ) -> np.ndarray | None:
    """``path``'s bytes as a uint8 array (what ``cv2.imdecode`` takes), or None when it is
    missing, not a regular file or larger than ``max_bytes``."""
    try:
        return np.frombuffer(read_regular_file(path, max_bytes), np.uint8)
    except OSError:
        return None


def read_image_file(path: str | Path, flags: int = cv2.IMREAD_COLOR,
                    max_pixels: int | None = None,
                    max_bytes: int = MAX_IMAGE_FILE_BYTES) -> np.ndarray | None:
    """The image in ``path`` decoded by ``cv2.imdecode`` with ``flags`` (BGR order, as
    ``cv2.imread``), or None when it is missing, not a regular file, larger than
    ``max_bytes``, not decodable, or (``max_pixels``) a PNG or JPEG whose header declares
    more pixels than that (checked before anything is decoded: a small file can declare a
    huge image)."""
    buf = read_file_bytes(path, max_bytes)
    if buf is None:
        return None
    if max_pixels is not None:
        try:
            _, width, height = payload_size(buf)
        except ImageDecodeError:
            width = height = 0  # another format: OpenCV's own limits apply
        if width * height > max_pixels:
            return None
    try:
        return cv2.imdecode(buf, flags)
    except cv2.error:
        return None


def write_image_file(path: str | Path, image_bgr: np.ndarray) -> bool:
    """Encode ``image_bgr`` in the format ``path``'s suffix names (``.png``, ``.jpg``) and
    write it; False when it cannot be encoded or written."""
    path = Path(path)
    try:
        ok, buf = cv2.imencode(path.suffix or ".png", image_bgr)
    except cv2.error:
        return False
    if not ok:
        return False
    try:
        path.write_bytes(buf.tobytes())
    except OSError:
        return False
    return True
