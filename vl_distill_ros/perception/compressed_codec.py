"""Decode ``sensor_msgs/CompressedImage`` payloads (image_transport's ``compressed`` and
``compressedDepth`` transports) and encode them for bags and tests.

ROS-free: functions take the message fields (``format``, ``data``), or a duck-typed message.
Robot bags usually hold colour as ``.../image_raw/compressed`` and depth as
``.../image_raw/compressedDepth``, because raw frames are ~25x larger.

* **Colour** (``compressed`` transport): ``format`` is ``"jpeg"`` or ``"png"`` (ROS 1 and
  older drivers), or ``"<encoding>; <jpeg|png> compressed <encoding>"`` (ROS 2's
  compressed_image_transport, e.g. ``"rgb8; jpeg compressed bgr8"``). The payload is a
  standard JPEG or PNG file; which of the two is read from its signature, and only those two
  are decoded (OpenCV can read many more formats; an unexpected one is refused rather than
  handed to a rarely used decoder). 8-bit colour, grey and BGRA payloads come back as RGB;
  16-bit grey is scaled by the frame's own maximum as raw ``mono16`` is
  (:func:`~vl_distill_ros.perception.image_codec.decode_image`). A Bayer camera's PNG
  (``"bayer_rggb8; png compressed "``: the transport compresses the mosaic as it is) is
  demosaiced by the format's pattern, as the raw topic is.
* **Depth** (``compressedDepth`` transport): ``format`` is
  ``"<encoding>; compressedDepth png"`` (or ``"...; compressedDepth"``). The payload is a
  12-byte header (little-endian int32 format tag and two float32 quantisation parameters
  ``a``, ``b``) then a 16-bit PNG: ``16UC1`` holds millimetres; ``32FC1`` holds quantised
  inverse depth ``q``, with depth ``a / (q - b)`` metres and ``q = 0`` for no measurement.
  The ``rvl`` variant (``"...; compressedDepth rvl"``: the header, then the frame's width
  and height as uint32 and the 16-bit values coded by RVL, Wilson 2017: runs of zeros and
  of non-zero values, the latter as zigzag deltas, all as 3-bit variable-length nibbles
  packed eight to a little-endian 32-bit word) is decoded by :func:`decode_rvl`. A depth
  topic holding a plain 16-bit PNG (``"16UC1; png compressed mono16"``) is read as
  millimetres too.

* **zstd** transport (zstd_image_transport, Jazzy's image_transport_plugins; colour or
  depth): ``format`` is ``"zstd"``; the payload is the raw image's height, width (uint32),
  ``is_bigendian`` (uint8), step (uint32) and encoding length (uint32), little-endian, the
  encoding, then the raw ``data`` deflated with a gzip wrapper (the plugin writes zlib's
  gzip despite its name; a real zstd frame is read too where a zstd module is
  importable). It is inflated, at most ``step * height`` bytes, and read as the raw
  ``sensor_msgs/Image`` it was (:func:`decode_zstd_image`).

Every size is checked from the file header **before** anything is decoded: a frame above
``max_pixels`` (or with a zero side) is refused, so a small hostile payload cannot make the
decoder allocate gigabytes; a JPEG of more than :data:`MAX_JPEG_SCANS` scans is refused
too, so a small one cannot keep it busy for seconds. All problems raise
:class:`~vl_distill_ros.perception.image_codec.ImageDecodeError`.
"""
from __future__ import annotations

import struct
import zlib
from typing import Any

import cv2
import numpy as np

from .image_codec import (BAYER_PATTERNS, BYTES_PER_PIXEL, DEPTH_ENCODINGS, MILLIMETRE,
                          ImageData, ImageDecodeError, as_byte_view, decode_depth, decode_image,
                          demosaic, encode_depth_mm, scale_mono16)

__all__ = ["COMPRESSED_KINDS", "MAX_JPEG_SCANS", "payload_kind", "payload_size",
           "decode_compressed_image",
           "encode_compressed_image", "decode_compressed_depth", "encode_compressed_depth",
           "decode_image_message", "decode_depth_message", "is_compressed_message",
           "TRANSPORTS", "topic_transport", "base_topic", "decode_rvl",
           "is_rectified_topic", "decode_zstd_image", "ZSTD_FORMAT"]

#: Payload formats decoded (their file signatures are checked).
COMPRESSED_KINDS: tuple[str, ...] = ("jpeg", "png")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8\xff"
#: compressedDepth's header: int32 format tag (0 = inverse depth), float32 a, float32 b.
_DEPTH_HEADER = struct.Struct("<iff")
#: JPEG start-of-frame markers (SOF0..SOF15 without DHT, JPG and DAC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: Most scans a JPEG may have. A progressive JPEG has about 10. Each scan makes libjpeg pass
#: over the whole frame, however few bytes it holds: on a 12 MP frame 1,000 extra 15-byte
#: scans cost 0.16 s here, so a crafted payload of ~150 kB keeps a decoder busy for seconds
#: (libjpeg-turbo's djpeg has ``-maxscans`` against it; OpenCV has none, so scans are
#: counted here).
MAX_JPEG_SCANS = 100


def payload_kind(buf: np.ndarray) -> str:
    """``jpeg`` or ``png`` from the payload's signature (``buf``: flat uint8).

    Raises:
        ImageDecodeError: an empty payload or any other signature.
    """
    if buf.size == 0:
        raise ImageDecodeError("empty compressed image data")
    head = buf[:8].tobytes()
    if head.startswith(_JPEG_SOI):
        return "jpeg"
    if head == _PNG_SIGNATURE:
        return "png"
    raise ImageDecodeError(f"compressed image data is neither JPEG nor PNG (it starts with "
                           f"{head.hex(' ')}); only jpeg and png are decoded")


def _png_size(b: bytes) -> tuple[int, int]:
    if len(b) < 24 or b[12:16] != b"IHDR":
        raise ImageDecodeError("truncated or corrupt PNG data: no IHDR header")
    width, height = struct.unpack(">II", b[16:24])
    return int(width), int(height)


def _jpeg_size(b: bytes | memoryview) -> tuple[int, int]:
    """Width and height from the first start-of-frame segment, walking the segments."""
    i, n = 2, len(b)
    while i + 4 <= n:
        if b[i] != 0xFF:
            raise ImageDecodeError(f"corrupt JPEG data: no segment marker at byte {i}")
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # standalone markers
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before
            break
        (length,) = struct.unpack(">H", b[i + 2:i + 4])
        if marker in _JPEG_SOF:
            if i + 9 > n or length < 7:
                break
            height, width = struct.unpack(">HH", b[i + 5:i + 9])
            return int(width), int(height)
        if length < 2:
            raise ImageDecodeError(f"corrupt JPEG data: segment of length {length} at byte {i}")
        i += 2 + length
    raise ImageDecodeError("truncated or corrupt JPEG data: no frame header (SOF) found")


def _count_jpeg_scans(buf: np.ndarray) -> int:
    """Start-of-scan markers (``FF DA``) in a JPEG: entropy-coded data escapes every ``FF``
    byte (as ``FF 00``), so each ``FF DA`` in the stream is a marker."""
    ff = np.flatnonzero(buf[:-1] == 0xFF)
    return int(np.count_nonzero(buf[ff + 1] == 0xDA))


def payload_size(buf: np.ndarray) -> tuple[str, int, int]:
    """``(kind, width, height)`` of a JPEG or PNG payload, read from its header only.

    Raises:
        ImageDecodeError: not JPEG or PNG, no size in the header, or a JPEG of more than
            :data:`MAX_JPEG_SCANS` scans.
    """
    kind = payload_kind(buf)
    if kind == "jpeg" and (scans := _count_jpeg_scans(buf)) > MAX_JPEG_SCANS:
        raise ImageDecodeError(f"JPEG with {scans} scans refused (at most {MAX_JPEG_SCANS}; "
                               "a progressive JPEG has about 10)")
    if kind == "png":
        width, height = _png_size(buf[:1 << 20].tobytes())
    else:   # the frame header sits after the metadata segments, however many (ICC, EXIF:
        # up to 64 kB each; 1 MiB of them was refused as corrupt): walked, not copied
        width, height = _jpeg_size(memoryview(np.ascontiguousarray(buf, np.uint8)).cast("B"))
    return kind, width, height


def _checked_size(buf: np.ndarray, max_pixels: int, what: str) -> tuple[str, int, int]:
    kind, width, height = payload_size(buf)
    if width == 0 or height == 0:
        raise ImageDecodeError(f"empty {what}: width={width}, height={height}")
    if width * height > max_pixels:
        raise ImageDecodeError(f"{what} too large: {width}x{height} = {width * height} pixels "
                               f"> max_pixels={max_pixels}")
    return kind, width, height


def _imdecode(buf: np.ndarray, kind: str, width: int, height: int) -> np.ndarray:
    out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if out is None:
        raise ImageDecodeError(f"corrupt {kind.upper()} data ({buf.size} bytes) could not be "
                               "decoded")
    if out.shape[:2] != (height, width):  # pragma: no cover - a decoder disagreeing with itself
        raise ImageDecodeError(f"{kind} data decoded to {out.shape[1]}x{out.shape[0]}, its "
                               f"header says {width}x{height}")
    return out


#: The ``format`` of zstd_image_transport's messages.
ZSTD_FORMAT = "zstd"
#: zstd_image_transport's header: height, width, is_bigendian, step, encoding length.
_ZSTD_HEADER = struct.Struct("<IIBII")
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: The rows' bytes a zstd frame may hold whatever its size (page-aligned rows of a small
#: frame); a larger frame's rows are at most twice its pixels' bytes.
_ZSTD_PADDED_BYTES = 1 << 24


def decode_zstd_image(data: ImageData, max_pixels: int = 50_000_000
                      ) -> tuple[str, int, int, int, bytes, int]:
    """``(encoding, height, width, step, data, is_bigendian)`` of the raw image a zstd
    transport message holds (see the module docstring); the sizes are checked before
    anything is inflated, and no more than ``step * height`` bytes are.

    Raises:
        ImageDecodeError: a short or corrupt header, a frame above ``max_pixels``, data
            that does not inflate to exactly ``step * height`` bytes.
    """
    buf = as_byte_view(data)
    head = _ZSTD_HEADER.size
    if buf.size < head:
        raise ImageDecodeError(f"zstd image data has {buf.size} bytes: no room for its "
                               f"{head}-byte header")
    height, width, bigendian, step, n = _ZSTD_HEADER.unpack(buf[:head].tobytes())
    if n > 64 or head + n > buf.size:
        raise ImageDecodeError(f"corrupt zstd image header: an encoding of {n} bytes")
    encoding = buf[head:head + n].tobytes().decode("ascii", "replace")
    if width * height > max_pixels:
        raise ImageDecodeError(f"zstd frame too large: {width}x{height} = {width * height} "
                               f"pixels > max_pixels={max_pixels}")
    bpp = {**BYTES_PER_PIXEL, **DEPTH_ENCODINGS}.get(encoding, 8)
    if step > width * bpp + 4096:       # rows padded by up to a page: the frame's bytes
        raise ImageDecodeError(f"zstd frame of {encoding[:20]!r} with a step of {step} bytes "
                               f"for {width} pixels a row")
    expected = step * height
    if expected > max(2 * width * bpp * height, _ZSTD_PADDED_BYTES):
        # the +4096 a row times a tall, narrow frame: a small frame to inflate gigabytes
        raise ImageDecodeError(f"zstd frame of {width}x{height} pixels with a step of {step} "
                               f"bytes: {expected} bytes of rows, more than twice the frame's")
    raw = _inflate(buf[head + n:].tobytes(), expected)
    if len(raw) != expected:
        raise ImageDecodeError(f"zstd image data inflates to {len(raw)} bytes, expected "
                               f"step*height = {step}*{height} = {expected}")
    return encoding, height, width, step, raw, bigendian


def _inflate(body: bytes, expected: int) -> bytes:
    """At most ``expected + 1`` bytes of a gzip/zlib (or, where a zstd module is
    importable, zstd) stream: a small payload cannot make it allocate more."""
    if body.startswith(_ZSTD_MAGIC):
        try:
            from compression import zstd        # type: ignore[import-not-found]  # 3.14
        except ImportError:
            try:
                from backports import zstd      # type: ignore[import-not-found,no-redef]
            except ImportError:
                raise ImageDecodeError("zstd image data is a zstd frame and no zstd module "
                                       "is installed (backports.zstd)") from None
        try:
            return zstd.ZstdDecompressor().decompress(body, max_length=expected + 1)
        except zstd.ZstdError as exc:
            raise ImageDecodeError(f"corrupt zstd image data: {exc}") from None
    try:
        inflater = zlib.decompressobj(wbits=47)  # zlib or gzip, by its header
        return inflater.decompress(body, expected + 1)
    except zlib.error as exc:
        raise ImageDecodeError(f"corrupt zstd image data: {exc}") from None


def _check_format(fmt: Any) -> str:
    if not isinstance(fmt, str):
        raise ImageDecodeError(f"CompressedImage format must be a string, got "
                               f"{type(fmt).__name__}")
    return fmt.strip()


def decode_compressed_image(fmt: str, data: ImageData,
                            max_pixels: int = 50_000_000) -> np.ndarray:
    """Decode a colour ``sensor_msgs/CompressedImage`` to RGB uint8 ``(H, W, 3)``.

    Args:
        fmt: the message's ``format`` (see the module docstring); a ``compressedDepth``
            format is refused (it is depth, not colour).
        data: the JPEG or PNG file bytes.
        max_pixels: frames with ``width * height`` above this are refused before decoding.

    Raises:
        ImageDecodeError: a depth format, an empty, unknown, corrupt or too large payload.
    """
    fmt = _check_format(fmt)
    if "compresseddepth" in fmt.lower():
        raise ImageDecodeError(f"format {fmt[:80]!r} is a compressedDepth (depth) image, not "
                               "colour: list its topic in depth_topics")
    if fmt == ZSTD_FORMAT:
        encoding, height, width, step, raw, bigendian = decode_zstd_image(data, max_pixels)
        return decode_image(encoding, height, width, step, raw, bigendian, max_pixels)
    buf = as_byte_view(data)
    kind, width, height = _checked_size(buf, max_pixels, "compressed frame")
    img = _imdecode(buf, kind, width, height)
    mosaic = _bayer_mosaic(fmt)
    if img.ndim == 2 and mosaic is not None:
        return demosaic(img, mosaic)
    if img.ndim == 2:
        if img.dtype == np.uint16:  # 16-bit grey PNG, scaled as raw mono16 is
            img = scale_mono16(img)
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.ndim != 3 or img.shape[2] not in (3, 4):  # pragma: no cover - OpenCV expands
        raise ImageDecodeError(f"{kind} data decoded to an unexpected shape {img.shape}")
    if img.dtype != np.uint8:  # 16-bit colour PNG: keep the high byte
        img = (img >> 8).astype(np.uint8)
    code = cv2.COLOR_BGRA2RGB if img.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(img, code)


def _bayer_mosaic(fmt: str) -> str | None:
    """The 8-bit Bayer encoding of the pattern when ``fmt`` says the payload holds a Bayer
    mosaic: a ``bayer_*8``/``bayer_*16`` image compressed as itself (compressed_image_transport's
    PNG of a Bayer image: ``"bayer_rggb8; png compressed "``, no target format, since a mosaic
    is not a colour encoding to it; its JPEG is converted to ``mono8`` first), else None."""
    encoding, _, rest = fmt.partition(";")
    encoding = encoding.strip()
    pattern = encoding[:-2] + "8" if encoding.endswith("16") else encoding
    target = rest.partition("compressed")[2].strip()
    return pattern if pattern in BAYER_PATTERNS and target in ("", encoding) else None


def encode_compressed_image(image: np.ndarray, kind: str = "jpeg",
                            quality: int = 90) -> tuple[str, bytes]:
    """Encode an RGB uint8 ``(H, W, 3)`` image as compressed_image_transport does:
    ``(format, data)``, format ``"rgb8; jpeg compressed bgr8"`` or
    ``"rgb8; png compressed bgr8"``.

    Raises:
        ValueError: not a non-empty RGB uint8 image, an unknown ``kind`` or ``quality``
            outside 1..100.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.size == 0:
        raise ValueError(f"expected a non-empty (H, W, 3) uint8 RGB image, got {image.dtype} "
                         f"of shape {image.shape}")
    if kind not in COMPRESSED_KINDS:
        raise ValueError(f"unknown compression {kind!r}; choose one of {list(COMPRESSED_KINDS)}")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if kind == "jpeg" else []
    ok, out = cv2.imencode("." + ("jpg" if kind == "jpeg" else "png"),
                           cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:  # pragma: no cover - OpenCV refusing a valid uint8 image
        raise ValueError(f"OpenCV could not encode the image as {kind}")
    return f"rgb8; {kind} compressed bgr8", out.tobytes()


def _depth_encoding(fmt: str) -> str:
    encoding = fmt.split(";", 1)[0].strip()
    if encoding not in ("16UC1", "mono16", "32FC1"):
        raise ImageDecodeError(f"unsupported compressed depth format {fmt[:80]!r}; expected "
                               "'16UC1; compressedDepth png' (millimetres) or "
                               "'32FC1; compressedDepth png' (metres)")
    return encoding


def decode_compressed_depth(fmt: str, data: ImageData, max_pixels: int = 50_000_000,
                            unit_m: float = MILLIMETRE) -> np.ndarray:
    """Decode a depth ``sensor_msgs/CompressedImage`` to float32 metres ``(H, W)`` (0 = no
    measurement), as the raw :func:`~vl_distill_ros.perception.image_codec.decode_depth`
    (16UC1 in units of ``unit_m`` metres).

    Raises:
        ImageDecodeError: not a 16UC1/32FC1 depth format, a missing header, bad
            quantisation parameters, a corrupt, non-16-bit or too large PNG, or bad RVL data
            (:func:`decode_rvl`).
    """
    fmt = _check_format(fmt)
    if fmt == ZSTD_FORMAT:
        encoding, height, width, step, raw, bigendian = decode_zstd_image(data, max_pixels)
        return decode_depth(encoding, height, width, step, raw, bigendian, max_pixels, unit_m)
    encoding = _depth_encoding(fmt)
    lower = fmt.lower()
    buf = as_byte_view(data)
    a = b = 0.0
    rvl = False
    if "compresseddepth" in lower:
        rvl = "rvl" in lower.split("compresseddepth", 1)[1]
        if buf.size <= _DEPTH_HEADER.size:
            raise ImageDecodeError(f"compressedDepth data has {buf.size} bytes: no room for "
                                   f"its {_DEPTH_HEADER.size}-byte header and the image")
        _, a, b = _DEPTH_HEADER.unpack(buf[:_DEPTH_HEADER.size].tobytes())
        buf = buf[_DEPTH_HEADER.size:]
    if rvl:
        q = decode_rvl(buf, max_pixels)
    else:
        kind, width, height = _checked_size(buf, max_pixels, "compressed depth frame")
        if kind != "png":
            raise ImageDecodeError(f"compressed depth must be a 16-bit PNG, got {kind} data")
        q = _imdecode(buf, kind, width, height)
        if q.ndim != 2 or q.dtype != np.uint16:
            raise ImageDecodeError(f"compressed depth must be a one-channel 16-bit PNG, got "
                                   f"{q.dtype} with shape {q.shape}")
    if encoding != "32FC1":
        return q.astype(np.float32) * np.float32(unit_m)
    if not (np.isfinite(a) and np.isfinite(b) and a > 0):
        raise ImageDecodeError(f"compressedDepth 32FC1 needs finite quantisation parameters "
                               f"with a > 0, got a={a}, b={b}")
    denom = q.astype(np.float32) - np.float32(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.float32(a) / denom
    z[(q == 0) | ~np.isfinite(z) | (z <= 0)] = 0.0
    return z.astype(np.float32)


def _vle_values(body: bytes) -> np.ndarray:
    """The variable-length integers of RVL's nibble stream (``body``: little-endian 32-bit
    words, each holding eight 4-bit nibbles, the first in the top bits; a nibble is three
    value bits, least significant group first, and a continuation bit 0x8). Nibbles after
    the last complete value (the last word's padding) are left out."""
    octets = np.frombuffer(body, np.uint8).reshape(-1, 4)[:, ::-1].ravel()  # top byte first
    nib = np.empty(2 * octets.size, np.uint8)
    nib[0::2] = octets >> 4
    nib[1::2] = octets & 15
    ends = np.flatnonzero(nib < 8)                    # the last nibble of each value
    if ends.size == 0:
        return np.zeros(0, np.int64)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    group_len = ends - starts + 1
    longest = int(group_len.max())
    if longest > 11:                                   # 33 bits: no pixel count is that big
        raise ImageDecodeError("corrupt RVL data: a value longer than 32 bits")
    low = nib & np.uint8(7)
    values = low[starts].astype(np.int64)
    for j in range(1, longest):                        # most values are one or two nibbles
        more = np.flatnonzero(group_len > j)
        values[more] |= low[starts[more] + j].astype(np.int64) << (3 * j)
    return values


def decode_rvl(buf: np.ndarray, max_pixels: int = 50_000_000) -> np.ndarray:
    """A uint16 ``(H, W)`` image from RVL data (``buf``: flat uint8; the frame's width and
    height as little-endian uint32, then the coded words; see the module docstring).

    Raises:
        ImageDecodeError: a size of 0 or above ``max_pixels`` (checked before decoding),
            data that ends early, an empty run (0 zeros, 0 values: a hostile payload of
            them was walked to its end, 2.8 GB for 32 MB), or runs that do not add up to
            the frame.
    """
    if buf.size < 8:
        raise ImageDecodeError(f"RVL data has {buf.size} bytes: no room for its size")
    width, height = (int(v) for v in np.frombuffer(buf[:8].tobytes(), "<u4"))
    if width == 0 or height == 0:
        raise ImageDecodeError(f"empty RVL depth frame: width={width}, height={height}")
    n = width * height
    if n > max_pixels:
        raise ImageDecodeError(f"RVL depth frame too large: {width}x{height} = {n} pixels > "
                               f"max_pixels={max_pixels}")
    # n pixels need at most 3n values (each run's two counts and its pixels, every run
    # covering a pixel) of at most 11 nibbles: data past that is never read, and a payload
    # of any length no longer costs memory and time in proportion to its length
    body = min(buf.size - 8, (33 * n + 1) // 2 + 8)
    values = _vle_values(buf[8:8 + body // 4 * 4].tobytes())
    pixel = i = 0
    heads: list[int] = []                              # where each run's two counts are,
    zeros: list[int] = []                              # its zeros and its values
    counts: list[int] = []
    seq, size = values.tolist(), int(values.size)      # Python ints: a fast pointer chase
    while pixel < n:                                   # one step per run, not per pixel
        if i + 2 > size:
            raise ImageDecodeError(f"corrupt RVL data: it ends after {pixel} of {n} pixels")
        count = seq[i + 1]
        if seq[i] + count == 0:                        # no encoder writes an empty run
            raise ImageDecodeError(f"corrupt RVL data: an empty run after {pixel} of {n} "
                                   "pixels")
        if pixel + seq[i] + count > n or i + 2 + count > size:
            raise ImageDecodeError(f"corrupt RVL data: a run passes the end of the frame or "
                                   f"of the data ({n} pixels)")
        heads.append(i)
        zeros.append(seq[i])
        counts.append(count)
        pixel, i = pixel + seq[i] + count, i + 2 + count
    out = np.zeros(n, np.uint16)
    coded = np.ones(i, bool)                           # values[:i]: counts and pixel values
    at = np.array(heads, np.int64)
    coded[at] = coded[at + 1] = False
    zigzag = values[:i][coded]
    if zigzag.size:
        lengths = np.empty(2 * len(heads), np.int64)   # zeros, values, zeros, values, ...
        lengths[0::2], lengths[1::2] = zeros, counts
        valued = np.repeat(np.tile(np.array([False, True]), len(heads)), lengths)
        out[valued] = np.cumsum((zigzag >> 1) ^ -(zigzag & 1)) & 0xFFFF
    return out.reshape(height, width)


def encode_compressed_depth(depth: np.ndarray) -> tuple[str, bytes]:
    """Encode depth as compressedDepth's 16UC1 PNG: ``(format, data)`` with format
    ``"16UC1; compressedDepth png"``; a uint16 array is millimetres, a float array metres
    (rounded to mm, as :func:`~vl_distill_ros.perception.image_codec.encode_depth_mm`).

    Raises:
        ValueError: not a non-empty 2-D array.
    """
    _, height, width, _, raw = encode_depth_mm(depth)
    mm = np.frombuffer(raw, dtype="<u2").reshape(height, width)
    ok, png = cv2.imencode(".png", mm.astype(np.uint16))
    if not ok:  # pragma: no cover
        raise ValueError("OpenCV could not encode the depth image as PNG")
    return "16UC1; compressedDepth png", _DEPTH_HEADER.pack(0, 0.0, 0.0) + png.tobytes()


#: image_transport's transports whose topics this package reads: ``raw`` (``sensor_msgs/Image``
#: on the base topic), ``compressed``, ``compressedDepth`` and ``zstd``
#: (``sensor_msgs/CompressedImage`` on ``<base>/compressed``, ``<base>/compressedDepth`` and
#: ``<base>/zstd``).
TRANSPORTS: tuple[str, ...] = ("raw", "compressed", "compressedDepth", "zstd")


def topic_transport(topic: str) -> str:
    """The transport of a topic by image_transport's naming: ``compressed``,
    ``compressedDepth`` or ``zstd`` when that is its last name segment, else ``raw``."""
    last = topic.rstrip("/").rsplit("/", 1)[-1]
    return last if last in TRANSPORTS[1:] else "raw"


def base_topic(topic: str) -> str:
    """``topic`` without an image_transport suffix (``/compressed``, ``/compressedDepth``,
    ``/zstd``)."""
    if topic_transport(topic) == "raw":
        return topic
    return topic.rstrip("/").rsplit("/", 1)[0]


def is_rectified_topic(topic: str) -> bool:
    """Whether an image topic carries rectified images by image_pipeline's naming: its last
    name segment (image_transport's suffix aside) starts with ``image_rect``
    (``image_rect``, ``image_rect_color``). A rectified image's camera is CameraInfo's
    projection matrix P, without the lens distortion (REP 104)."""
    return base_topic(topic).rstrip("/").rsplit("/", 1)[-1].startswith("image_rect")


def is_compressed_message(msg: Any) -> bool:
    """Whether ``msg`` is a ``CompressedImage`` (it has ``format``, not ``encoding``)."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def decode_image_message(msg: Any, max_pixels: int = 50_000_000) -> np.ndarray:
    """RGB uint8 of a ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` (duck-typed)."""
    if is_compressed_message(msg):
        return decode_compressed_image(msg.format, msg.data, max_pixels)
    return decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                        msg.is_bigendian, max_pixels)


def decode_depth_message(msg: Any, max_pixels: int = 50_000_000,
                         unit_m: float = MILLIMETRE) -> np.ndarray:
    """Float32 metres of a depth ``Image`` or ``CompressedImage`` (duck-typed; 16-bit depth
    in units of ``unit_m`` metres)."""
    if is_compressed_message(msg):
        return decode_compressed_depth(msg.format, msg.data, max_pixels, unit_m)
    return decode_depth(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                        msg.is_bigendian, max_pixels, unit_m)
