"""sensor_msgs/CompressedImage: image_transport's compressed (JPEG/PNG colour) and
compressedDepth (PNG depth) payloads, decoded ROS-free, and bags that hold them (written,
read, paired and replayed offline). The node's subscriptions are tested over rclpy in
``test_node_depth.py``.

Reference payloads are made with OpenCV's encoder directly (BGR order, as
compressed_image_transport does) and the compressedDepth header with ``struct``, following
the transport's documented layout, so the decoder is checked against independently built
messages, not against its own encoder only.
"""
from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from helpers import OBJECTS, make_colour_bundle, synthetic_frames
from vl_distill_ros import cli
from vl_distill_ros.bags.bag_io import (COMPRESSED_IMAGE_TYPE, IMAGE_TYPE, BagError, BagFrame,
                                        BagTopics, pair_camera_topics, read_camera_bag,
                                        write_camera_bag)
from vl_distill_ros.perception import compressed_codec as cc
from vl_distill_ros.perception.image_codec import ImageDecodeError, decode_image

#: Four seen labels, two unseen (a lemon is confused with a banana), as the replay tests.
NAMES = list(OBJECTS)


def _scene(h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth RGB test image (JPEG keeps it within a few levels)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([x * 255 / w, y * 255 / h, np.full((h, w), 90.0)], -1).astype(np.uint8)


def _jpeg(bgr: np.ndarray, **flags: int) -> bytes:
    params = [v for kv in flags.items() for v in (getattr(cv2, kv[0]), kv[1])]
    ok, out = cv2.imencode(".jpg", bgr, params)
    assert ok
    return out.tobytes()


def _png(pixels: np.ndarray) -> bytes:
    ok, out = cv2.imencode(".png", pixels)
    assert ok
    return out.tobytes()


# ---------------------------------------------------------------------------------------
# colour
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["jpeg", "rgb8; jpeg compressed bgr8",
                                 "bgr8; jpeg compressed bgr8"])
def test_jpeg_from_an_independent_encoder_decodes_to_rgb(fmt):
    rgb = _scene()
    data = _jpeg(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), IMWRITE_JPEG_QUALITY=95)
    out = cc.decode_compressed_image(fmt, data)
    assert out.shape == rgb.shape and out.dtype == np.uint8 and out.flags.writeable
    assert np.abs(out.astype(int) - rgb).mean() < 2.0
    # channel order: the red ramp runs along x, so a swap would show
    assert out[:, -1, 0].mean() > 200 and out[:, -1, 2].mean() < 120


def test_png_colour_grey_bgra_and_16_bit_grey():
    rgb = _scene()
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    np.testing.assert_array_equal(cc.decode_compressed_image("png", _png(bgr)), rgb)
    bgra = np.dstack([bgr, np.full(rgb.shape[:2], 128, np.uint8)])
    np.testing.assert_array_equal(cc.decode_compressed_image("bgra8; png compressed bgra8",
                                                             _png(bgra)), rgb)
    grey = rgb[..., 1].copy()
    out = cc.decode_compressed_image("mono8; png compressed mono8", _png(grey))
    assert (out == grey[..., None]).all()
    # a 16-bit grey PNG is scaled by the frame's maximum, as raw mono16 is
    g16 = (grey.astype(np.uint16) * 40)
    want = decode_image("mono16", *g16.shape, g16.shape[1] * 2, g16.astype("<u2").tobytes())
    np.testing.assert_array_equal(cc.decode_compressed_image("mono16; png", _png(g16)), want)


@pytest.mark.parametrize("mode, fmt", [("LA", "PNG"), ("P", "PNG"), ("1", "PNG"),
                                       ("I;16", "PNG"), ("RGBA", "PNG"), ("L", "JPEG"),
                                       ("CMYK", "JPEG")])
def test_other_encoders_pixel_formats_decode_to_rgb(mode, fmt):
    """Files written by another encoder (Pillow) in its other pixel formats: grey with
    alpha, palette, 1-bit, 16-bit grey, RGBA, grey and CMYK JPEG all come back as RGB."""
    import io

    from PIL import Image as PILImage

    rgb = _scene(24, 32)
    im = PILImage.fromarray(rgb).convert(mode if mode != "I;16" else "I")
    if mode == "I;16":
        im = PILImage.fromarray(rgb[..., 1].astype(np.uint16) * 250)
    buf = io.BytesIO()
    im.save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    out = cc.decode_compressed_image(fmt.lower(), buf.getvalue())
    assert out.shape == (24, 32, 3) and out.dtype == np.uint8
    if mode in ("P", "RGBA", "CMYK"):   # colour kept (Pillow's own conversion back to RGB)
        want = np.asarray(im.convert("RGB"), dtype=int)
        assert np.abs(out.astype(int) - want).mean() < 3.0, mode
    else:                               # grey: three equal channels
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_a_png_of_a_bayer_mosaic_is_demosaiced_as_the_raw_topic_is(pattern):
    """compressed_image_transport PNG-compresses a Bayer image as it is (a mosaic is no
    colour encoding to it, so no target: format ``"bayer_rggb8; png compressed "``, one
    8- or 16-bit channel). It was read as grey: an orange scene came back as a grey
    checkerboard. Now it is demosaiced by the format's pattern, as the raw topic is; the
    JPEG of a Bayer image (converted to ``mono8`` by the publisher) stays grey."""
    h, w = 24, 32
    rgb = np.empty((h, w, 3), np.uint8)
    rgb[...] = (200, 60, 20)
    mosaic = np.empty((h, w), np.uint8)
    channel = {"r": 0, "g": 1, "b": 2}
    for i, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, channel[pattern[i]]]
    encoding = f"bayer_{pattern}8"
    raw = decode_image(encoding, h, w, w, mosaic.tobytes())
    assert np.abs(raw[4:-4, 4:-4].astype(int) - (200, 60, 20)).max() <= 1
    png = cv2.imencode(".png", mosaic)[1].tobytes()
    out = cc.decode_compressed_image(f"{encoding}; png compressed ", png)
    assert np.array_equal(out, raw)
    png16 = cv2.imencode(".png", mosaic.astype(np.uint16) * 16)[1].tobytes()   # 12-bit data
    out16 = cc.decode_compressed_image(f"bayer_{pattern}16; png compressed ", png16)
    assert np.abs(out16[4:-4, 4:-4].astype(int) - (255, 77, 26)).max() <= 1   # scaled by max
    grey = cv2.imencode(".jpg", np.full((h, w), 90, np.uint8))[1].tobytes()
    assert (cc.decode_compressed_image(f"{encoding}; jpeg compressed mono8", grey) == 90).all()


def test_jpeg_size_is_read_past_metadata_and_from_progressive_frames():
    rgb = _scene(30, 50)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    plain = _jpeg(bgr)
    # an APP1 (EXIF-like) segment of 5 kB between SOI and the rest
    app1 = b"\xff\xe1" + struct.pack(">H", 5002) + bytes(5000)
    with_meta = plain[:2] + app1 + plain[2:]
    # 17 ICC profile chunks of 64 kB (over 1 MiB before the frame header: refused as
    # corrupt, though every decoder reads it)
    icc = b"\xff\xe2" + struct.pack(">H", 65535) + b"ICC_PROFILE\0" + bytes(65535 - 2 - 12)
    with_icc = plain[:2] + icc * 17 + plain[2:]
    for data in (plain, with_meta, _jpeg(bgr, IMWRITE_JPEG_PROGRESSIVE=1), with_icc):
        buf = np.frombuffer(data, np.uint8)
        assert cc.payload_size(buf) == ("jpeg", 50, 30)
        assert cc.decode_compressed_image("jpeg", data).shape == (30, 50, 3)


def _claiming(data: bytes, kind: str, width: int, height: int) -> bytes:
    """``data`` (a valid JPEG or PNG) with its header claiming ``width`` x ``height``."""
    b = bytearray(data)
    if kind == "png":
        b[16:24] = struct.pack(">II", width, height)
        return bytes(b)
    i = 2
    while b[i + 1] not in cc._JPEG_SOF:
        i += 2 + struct.unpack(">H", bytes(b[i + 2:i + 4]))[0]
    b[i + 5:i + 9] = struct.pack(">HH", height, width)
    return bytes(b)


@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_a_small_payload_claiming_a_huge_frame_is_refused_before_decoding(kind, monkeypatch):
    bgr = cv2.cvtColor(_scene(), cv2.COLOR_RGB2BGR)
    bomb = _claiming(_jpeg(bgr) if kind == "jpeg" else _png(bgr), kind, 60000, 60000)
    assert len(bomb) < 20_000

    def never(*a, **k):
        raise AssertionError("the decoder must not run on an oversized frame")
    monkeypatch.setattr(cc.cv2, "imdecode", never)
    with pytest.raises(ImageDecodeError, match="too large: 60000x60000"):
        cc.decode_compressed_image(kind, bomb)
    with pytest.raises(ImageDecodeError, match="max_pixels=1000"):
        cc.decode_compressed_image(kind, _jpeg(bgr) if kind == "jpeg" else _png(bgr),
                                   max_pixels=1000)
    with pytest.raises(ImageDecodeError, match="empty compressed frame"):
        cc.decode_compressed_image(kind, _claiming(bomb, kind, 0, 10))


def _with_extra_scans(data: bytes, n: int) -> bytes:
    """A progressive JPEG with its shortest later scan repeated ``n`` times before EOI."""
    i, scans = 2, []
    while data[i + 1] != 0xD9:
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if data[i + 1] != 0xDA:
            i += 2 + length
            continue
        j = i + 2 + length  # the scan's entropy-coded data runs to the next real marker
        while not (data[j] == 0xFF and data[j + 1] != 0 and not 0xD0 <= data[j + 1] <= 0xD7):
            j += 1
        scans.append((i, j))
        i = j
    start, end = min(scans[1:], key=lambda se: se[1] - se[0])
    return data[:scans[-1][1]] + data[start:end] * n + data[scans[-1][1]:]


def test_a_jpeg_of_too_many_scans_is_refused_before_decoding(monkeypatch):
    bgr = cv2.cvtColor(_scene(), cv2.COLOR_RGB2BGR)
    progressive = _jpeg(bgr, IMWRITE_JPEG_PROGRESSIVE=1)
    buf = np.frombuffer(progressive, np.uint8)
    assert 2 < cc._count_jpeg_scans(buf) < 20                 # an ordinary progressive JPEG
    ok = _with_extra_scans(progressive, cc.MAX_JPEG_SCANS - cc._count_jpeg_scans(buf))
    assert cc.decode_compressed_image("jpeg", ok).shape == (48, 64, 3)
    crafted = _with_extra_scans(progressive, 500)
    assert len(crafted) < 20 * len(progressive)

    def never(*a, **k):
        raise AssertionError("the decoder must not run on a JPEG of too many scans")
    monkeypatch.setattr(cc.cv2, "imdecode", never)
    with pytest.raises(ImageDecodeError, match=r"JPEG with \d+ scans refused"):
        cc.decode_compressed_image("jpeg", crafted)


@pytest.mark.parametrize("data, fmt, message", [
    (b"", "jpeg", "empty compressed image data"),
    (b"BM\x00\x00\x00\x00\x00\x00\x00\x00", "jpeg", "neither JPEG nor PNG"),
    (b"GIF89a\x01\x00\x01\x00", "gif", "neither JPEG nor PNG"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg", "no frame header"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "png", "no IHDR header"),
    (b"\x89PNG", "16UC1; compressedDepth png", r"is a compressedDepth \(depth\) image"),
])
def test_bad_compressed_colour_is_a_clear_error(data, fmt, message):
    with pytest.raises(ImageDecodeError, match=message):
        cc.decode_compressed_image(fmt, data)


def test_truncated_payloads_are_a_clear_error():
    data = _jpeg(cv2.cvtColor(_scene(), cv2.COLOR_RGB2BGR))
    with pytest.raises(ImageDecodeError, match="corrupt PNG data"):
        cc.decode_compressed_image("png", _png(_scene())[:60])
    with pytest.raises(ImageDecodeError, match="corrupt JPEG data"):
        cc.decode_compressed_image("jpeg", data[:len(data) // 2])


def test_encode_compressed_image_round_trip_and_checks():
    rgb = _scene()
    fmt, data = cc.encode_compressed_image(rgb, "png")
    assert fmt == "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(cc.decode_compressed_image(fmt, data), rgb)
    # OpenCV reads what the encoder wrote in BGR order as the original colours
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), 1)[..., ::-1],
                                  rgb)
    fmt, data = cc.encode_compressed_image(rgb, "jpeg", 80)
    assert fmt == "rgb8; jpeg compressed bgr8"
    with pytest.raises(ValueError, match="quality"):
        cc.encode_compressed_image(rgb, "jpeg", 0)
    with pytest.raises(ValueError, match="unknown compression"):
        cc.encode_compressed_image(rgb, "webp")
    with pytest.raises(ValueError, match="uint8 RGB"):
        cc.encode_compressed_image(rgb[..., 0])


def test_topic_transport_follows_image_transports_naming():
    assert cc.topic_transport("/camera/color/image_raw/compressed") == "compressed"
    assert cc.topic_transport("/cam/depth/image_raw/compressedDepth") == "compressedDepth"
    assert cc.topic_transport("/camera/color/image_raw") == "raw"
    assert cc.topic_transport("compressed_images/image") == "raw"
    assert cc.topic_transport("/cam/theora") == "raw"


# ---------------------------------------------------------------------------------------
# depth
# ---------------------------------------------------------------------------------------
def _depth_m(h: int = 24, w: int = 32) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    z = (0.4 + 0.02 * x + 0.01 * y).astype(np.float32)
    z[:3, :5] = 0.0  # holes
    return z


def test_compressed_depth_16uc1_is_millimetres():
    mm = np.round(_depth_m() * 1000).astype(np.uint16)
    data = struct.pack("<iff", 0, 0.0, 0.0) + _png(mm)
    out = cc.decode_compressed_depth("16UC1; compressedDepth png", data)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, mm * np.float32(0.001))
    # the older format string without the codec, and a plain 16-bit PNG of millimetres
    np.testing.assert_allclose(cc.decode_compressed_depth("16UC1; compressedDepth", data), out)
    np.testing.assert_allclose(cc.decode_compressed_depth("16UC1; png compressed mono16",
                                                          _png(mm)), out)
    fmt, enc = cc.encode_compressed_depth(_depth_m())
    assert fmt == "16UC1; compressedDepth png" and enc[:12] == struct.pack("<iff", 0, 0, 0)
    np.testing.assert_allclose(cc.decode_compressed_depth(fmt, enc), out)


def test_compressed_depth_32fc1_is_quantised_inverse_depth():
    """The transport's defaults: depth_max 10 m, depth_quantization 100, so
    a = 100 * 101, b = 1 - a / 10, q = a / z + b (0 = no depth), z = a / (q - b)."""
    z = _depth_m()
    a = np.float32(100.0 * 101.0)
    b = np.float32(1.0 - a / 10.0)
    q = np.where(z > 0, a / np.where(z > 0, z, 1) + b, 0).astype(np.uint16)
    data = struct.pack("<iff", 0, a, b) + _png(q)
    out = cc.decode_compressed_depth("32FC1; compressedDepth png", data)
    valid = z > 0
    assert (out[~valid] == 0).all()
    # quantisation error grows as z^2 / a: under 0.2 mm at 1.2 m
    assert np.abs(out[valid] - z[valid]).max() < 2e-4


def _rvl(values: np.ndarray) -> bytes:
    """RVL-code a uint16 image as the compressedDepth transport does (Wilson 2017): width
    and height (uint32 LE), then per run the count of zeros, the count of non-zero values
    and their zigzag deltas (uint16 arithmetic), each value as 3-bit groups, least
    significant first, in nibbles with 0x8 for "more follows", eight nibbles to a 32-bit
    word, first nibble in the top bits, the last word padded with zero nibbles."""
    flat = [int(v) for v in values.ravel()]
    nibbles: list[int] = []

    def vle(value: int) -> None:
        while True:
            nibble, value = value & 7, value >> 3
            nibbles.append(nibble | (8 if value else 0))
            if not value:
                return
    i, previous = 0, 0
    while i < len(flat):
        zeros = 0
        while i < len(flat) and flat[i] == 0:
            zeros, i = zeros + 1, i + 1
        vle(zeros)
        run = []
        while i < len(flat) and flat[i] != 0:
            run.append(flat[i])
            i += 1
        vle(len(run))
        for current in run:
            delta = current - previous
            vle((delta << 1) ^ (-1 if delta < 0 else 0) if delta < 0 else delta << 1)
            previous = current
    nibbles += [0] * (-len(nibbles) % 8)
    words = [sum(n << (28 - 4 * j) for j, n in enumerate(nibbles[k:k + 8]))
             for k in range(0, len(nibbles), 8)]
    h, w = values.shape
    return struct.pack("<II", w, h) + struct.pack(f"<{len(words)}I", *words)


def test_compressed_depth_rvl_decodes_an_independently_coded_frame():
    rng = np.random.default_rng(3)
    mm = np.round(_depth_m(48, 64) * 1000).astype(np.uint16)
    mm[rng.random(mm.shape) < 0.1] = 0                  # scattered holes, as a sensor leaves
    mm[10:20, 30:60] = 0                                # and a shadow
    mm[5, 5], mm[5, 6], mm[40, 2] = 65535, 1, 40000     # big jumps: wrapping uint16 deltas
    header = struct.pack("<iff", 0, 0.0, 0.0)
    out = cc.decode_compressed_depth("16UC1; compressedDepth rvl", header + _rvl(mm))
    np.testing.assert_array_equal(out, mm.astype(np.float32) * np.float32(0.001))
    np.testing.assert_array_equal(cc.decode_rvl(np.frombuffer(_rvl(mm), np.uint8)), mm)
    # 32FC1: quantised inverse depth, as with png
    z = _depth_m(48, 64)
    a, b = np.float32(100.0 * 101.0), np.float32(1.0 - 100.0 * 101.0 / 10.0)
    q = np.where(z > 0, a / np.where(z > 0, z, 1) + b, 0).astype(np.uint16)
    out = cc.decode_compressed_depth("32FC1; compressedDepth rvl",
                                     struct.pack("<iff", 0, a, b) + _rvl(q))
    step = float(z.max()) ** 2 / float(a)               # one quantisation step at the far end
    assert np.abs(out[z > 0] - z[z > 0]).max() <= step and (out[z == 0] == 0).all()
    # an all-zero frame and a frame without zeros
    for img in (np.zeros((3, 5), np.uint16), np.arange(1, 16, dtype=np.uint16).reshape(3, 5)):
        np.testing.assert_array_equal(cc.decode_rvl(np.frombuffer(_rvl(img), np.uint8)), img)


def test_bad_rvl_data_is_a_clear_error_and_sizes_are_checked_first(monkeypatch):
    mm = np.round(_depth_m() * 1000).astype(np.uint16)
    good = _rvl(mm)
    for data, message in (
            (good[:6], "no room for its size"),
            (struct.pack("<II", 0, 24) + good[8:], "empty RVL depth frame"),
            (struct.pack("<II", 60000, 60000) + good[8:], "too large: 60000x60000"),
            (good[:len(good) // 2], "passes the end of the frame or of the data"),
            # the last word's padding nibbles read as one empty run
            (struct.pack("<II", 32, 48) + good[8:], "an empty run after 768 of 1536 pixels"),
            (struct.pack("<II", 16, 24) + good[8:], "passes the end of the frame"),
            (good[:8] + struct.pack("<II", 0xFFFFFFFF, 0xFFFF0000), "longer than 32 bits"),
            (good[:8] + b"\xff" * 64, "it ends after 0 of 768")):
        with pytest.raises(ImageDecodeError, match=message):
            cc.decode_rvl(np.frombuffer(data, np.uint8))
    header = struct.pack("<iff", 0, 0.0, 0.0)
    with pytest.raises(ImageDecodeError, match="max_pixels=100"):
        cc.decode_compressed_depth("16UC1; compressedDepth rvl", header + good, max_pixels=100)


def test_hostile_rvl_payloads_cost_what_the_frame_size_allows(monkeypatch):
    """A compressedDepth RVL payload of empty runs (0 zeros, 0 values: no encoder writes
    one) was walked to its end, one Python step and three list entries per run: 32 MB for
    a 640x480 frame took 15 s and 2.8 GB; and the whole payload was unpacked into values
    however little of it the frame could need."""
    mm = np.round(_depth_m() * 1000).astype(np.uint16)
    n = mm.size
    zeros = struct.pack("<II", mm.shape[1], mm.shape[0]) + bytes(4_000_000)
    with pytest.raises(ImageDecodeError, match=f"an empty run after 0 of {n} pixels"):
        cc.decode_rvl(np.frombuffer(zeros, np.uint8))
    seen: list[int] = []
    real = cc._vle_values
    monkeypatch.setattr(cc, "_vle_values", lambda body: seen.append(len(body)) or real(body))
    padded = _rvl(mm) + b"\xff" * 4_000_000              # a good frame, then junk
    np.testing.assert_array_equal(cc.decode_rvl(np.frombuffer(padded, np.uint8)), mm)
    assert seen and seen[-1] <= 17 * n + 16


@pytest.mark.parametrize("fmt, data, message", [
    ("16UC1; compressedDepth rvl", b"\x00" * 12 + b"\x00" * 4, "no room for its size"),
    ("16UC1; compressedDepth png", b"\x00" * 12, "no room for its 12-byte header"),
    ("rgb8; jpeg compressed bgr8", b"\xff\xd8\xff", "unsupported compressed depth format"),
    ("32FC1; compressedDepth png", struct.pack("<iff", 0, float("nan"), 0.0)
     + _png(np.ones((4, 4), np.uint16)), "quantisation parameters"),
    ("16UC1; compressedDepth png", struct.pack("<iff", 0, 0, 0)
     + _png(np.ones((4, 4), np.uint8)), "one-channel 16-bit PNG"),
    ("16UC1; compressedDepth png", struct.pack("<iff", 0, 0, 0)
     + _jpeg(np.ones((4, 4, 3), np.uint8)), "must be a 16-bit PNG, got jpeg"),
])
def test_bad_compressed_depth_is_a_clear_error(fmt, data, message):
    with pytest.raises(ImageDecodeError, match=message):
        cc.decode_compressed_depth(fmt, data)


def test_message_dispatch_by_type():
    class Compressed:
        format = "png"
        data = _png(cv2.cvtColor(_scene(), cv2.COLOR_RGB2BGR))

    class Raw:
        encoding, height, width, step, is_bigendian = "rgb8", 48, 64, 192, 0
        data = _scene().tobytes()

    np.testing.assert_array_equal(cc.decode_image_message(Compressed()),
                                  cc.decode_image_message(Raw()))


# ---------------------------------------------------------------------------------------
# bags
# ---------------------------------------------------------------------------------------
def _frames_with_depth(n: int = 3) -> list[BagFrame]:
    frames = synthetic_frames(n, NAMES[:4], seed=5)
    for f in frames:
        f.depth = _depth_m(*f.image.shape[:2]) + np.float32(0.0004)
        f.intrinsics = (100.0, 100.0, f.image.shape[1] / 2, f.image.shape[0] / 2)
    return frames


def test_jpeg_bag_holds_compressed_topics_and_reads_like_the_raw_bag(tmp_path):
    raw = read_camera_bag(write_camera_bag(tmp_path / "raw", _frames_with_depth()))
    jpg = read_camera_bag(write_camera_bag(tmp_path / "jpg", _frames_with_depth(),
                                           image_format="jpeg"))
    t = BagTopics()
    colour, depth = t.camera + "/compressed", t.depth + "/compressedDepth"
    assert jpg.topics[colour] == jpg.topics[depth] == COMPRESSED_IMAGE_TYPE
    assert jpg.image_topics == [colour] and jpg.depth_topics == {colour: depth}
    assert jpg.camera_info_topics == {colour: t.camera_info}
    # ground truth names the topic the images are on
    assert {cam for cam, _ in jpg.ground_truth} == {colour}
    assert sorted(s for _, s in jpg.ground_truth) == sorted(s for _, s in raw.ground_truth)
    a, b = list(raw.rgbd_frames()), list(jpg.rgbd_frames())
    assert len(a) == len(b) == 3
    for fa, fb in zip(a, b):
        assert fb.stamp_ns == fa.stamp_ns and fb.encoding == "rgb8; jpeg compressed bgr8"
        assert np.abs(fa.image.astype(int) - fb.image).mean() < 3.0
        np.testing.assert_array_equal(fa.depth, fb.depth)        # PNG depth is lossless
        assert fb.camera_info == fa.camera_info
    png = read_camera_bag(write_camera_bag(tmp_path / "png", _frames_with_depth(),
                                           image_format="png"))
    for fa, fp in zip(a, png.rgbd_frames()):
        np.testing.assert_array_equal(fa.image, fp.image)


def _zstd_transport(msg) -> bytes:
    """zstd_image_transport's payload of a raw Image (its publisher: a little-endian header
    of height, width, is_bigendian, step and the encoding's length, the encoding, then the
    data deflated with zlib's gzip wrapper, whatever the plugin's name says)."""
    import zlib

    deflate = zlib.compressobj(6, zlib.DEFLATED, 31)
    body = deflate.compress(bytes(msg.data)) + deflate.flush()
    return struct.pack("<IIBII", msg.height, msg.width, msg.is_bigendian, msg.step,
                       len(msg.encoding)) + msg.encoding.encode() + body


def test_zstd_transport_topics_are_read_as_the_raw_images_they_carry(tmp_path):
    """A bag (or camera) of zstd_image_transport topics only (Jazzy's image_transport_plugins:
    lossless, `.../image_raw/zstd`): its colour frames were refused (neither JPEG nor PNG)
    and its depth too (format 'zstd'). Now both read as the raw topics they carry, depth
    paired by the usual naming; a corrupt or oversized payload is a clear error."""
    from helpers import rewrite_bag

    t = BagTopics()
    raw_path = write_camera_bag(tmp_path / "raw", _frames_with_depth())

    def to_zstd(raw, store):
        if raw.topic not in (t.camera, t.depth):
            return [(raw.topic, raw.msgtype, raw.data)]
        msg = store.deserialize_cdr(raw.data, raw.msgtype)
        comp = store.types[COMPRESSED_IMAGE_TYPE](
            header=msg.header, format="zstd",
            data=np.frombuffer(_zstd_transport(msg), np.uint8))
        return [(raw.topic + "/zstd", COMPRESSED_IMAGE_TYPE,
                 bytes(store.serialize_cdr(comp, COMPRESSED_IMAGE_TYPE)))]

    bag = read_camera_bag(rewrite_bag(raw_path, tmp_path / "zstd", to_zstd))
    colour = t.camera + "/zstd"
    assert cc.topic_transport(colour) == "zstd" and cc.base_topic(colour) == t.camera
    assert bag.image_topics == [colour] and bag.depth_topics == {colour: t.depth + "/zstd"}
    a, b = list(read_camera_bag(raw_path).rgbd_frames()), list(bag.rgbd_frames())
    assert len(a) == len(b) == 3
    for fa, fb in zip(a, b):
        np.testing.assert_array_equal(fa.image, fb.image)
        np.testing.assert_array_equal(fa.depth, fb.depth)
    rgb = _scene(6, 8)
    padded = np.zeros((6, 28), np.uint8)            # rows padded past 8 * 3 bytes
    padded[:, :24] = rgb.reshape(6, 24)
    msg = SimpleNamespace(height=6, width=8, is_bigendian=0, step=28, encoding="rgb8",
                          data=padded.tobytes())
    payload = _zstd_transport(msg)
    assert np.array_equal(cc.decode_compressed_image("zstd", payload), rgb)
    huge = struct.pack("<IIBII", 10**5, 10**5, 0, 3 * 10**5, 4) + b"rgb8"
    for data, message in ((payload[:10], "no room for its 17-byte header"),
                          (payload[:-20], "inflates to"),
                          (payload[:21] + b"junk", "corrupt zstd image data"),
                          (huge, "too large")):
        with pytest.raises(ImageDecodeError, match=message):
            cc.decode_compressed_image("zstd", data)
    # a small payload declaring a small frame inflates no more than the frame's bytes
    msg.height, msg.width, msg.step, msg.data = 100, 100, 300, bytes(10**7)
    with pytest.raises(ImageDecodeError, match="inflates to 30001 bytes"):
        cc.decode_compressed_image("zstd", _zstd_transport(msg))
    # nor may a tall, narrow frame's padded rows declare gigabytes (1x200000 mono8, step
    # 4097: 820 MB inflated from a few MB of payload)
    msg.height, msg.width, msg.step, msg.encoding = 200_000, 1, 4097, "mono8"
    msg.data = bytes(64)
    with pytest.raises(ImageDecodeError, match="more than twice the frame's"):
        cc.decode_compressed_image("zstd", _zstd_transport(msg))


def test_compressed_copies_and_the_colour_compressed_depth_topic_are_left_out():
    img, comp, info = IMAGE_TYPE, COMPRESSED_IMAGE_TYPE, "sensor_msgs/msg/CameraInfo"
    # a robot that recorded everything image_transport advertises
    recorded = {"/camera/color/image_raw": img, "/camera/color/image_raw/compressed": comp,
                "/camera/color/image_raw/compressedDepth": comp,
                "/camera/aligned_depth_to_color/image_raw": img,
                "/camera/aligned_depth_to_color/image_raw/compressedDepth": comp,
                "/camera/color/camera_info": info}
    colour, depth, _ = pair_camera_topics(recorded)
    assert colour == ["/camera/color/image_raw"]   # raw is preferred to its copies
    assert depth == {"/camera/color/image_raw": "/camera/aligned_depth_to_color/image_raw"}
    # only the compressed transports recorded (the usual robot bag)
    compressed = {k: v for k, v in recorded.items() if v != img}
    colour, depth, cinfo = pair_camera_topics(compressed)
    assert colour == ["/camera/color/image_raw/compressed"]
    assert depth == {colour[0]: "/camera/aligned_depth_to_color/image_raw/compressedDepth"}
    assert cinfo == {colour[0]: "/camera/color/camera_info"}
    # an explicit pairing may name any image topic
    colour, depth, _ = pair_camera_topics(recorded, {"/camera/color/image_raw":
                                                     "/camera/color/image_raw/compressedDepth"})
    assert depth == {"/camera/color/image_raw": "/camera/color/image_raw/compressedDepth"}


def test_empty_raw_topics_and_other_transports_leave_the_frames_to_the_topic_that_has_them():
    """A raw topic recorded without messages (advertised, only the compressed stream
    published) hid its /compressed and /compressedDepth topics: no image messages (exit 2),
    or depth never used (exit 0). The /zstd copy `ros2 bag record -a` writes beside the raw
    or compressed topic was read as a camera and stopped the replay (neither JPEG nor PNG)."""
    img, comp, info = IMAGE_TYPE, COMPRESSED_IMAGE_TYPE, "sensor_msgs/msg/CameraInfo"
    topics = {"/camera/image_raw": img, "/camera/image_raw/compressed": comp,
              "/camera/depth/image_raw": img, "/camera/depth/image_raw/compressedDepth": comp,
              "/camera/camera_info": info}
    counts = {"/camera/image_raw": 0, "/camera/image_raw/compressed": 6,
              "/camera/depth/image_raw": 0, "/camera/depth/image_raw/compressedDepth": 6,
              "/camera/camera_info": 6}
    colour, depth, cinfo = pair_camera_topics(topics, counts=counts)
    assert colour == ["/camera/image_raw/compressed"]
    assert depth == {colour[0]: "/camera/depth/image_raw/compressedDepth"}
    assert cinfo == {colour[0]: "/camera/camera_info"}
    full = {t: 6 for t in topics}       # raw topics with messages are still preferred
    assert pair_camera_topics(topics, counts=full)[:2] == (
        ["/camera/image_raw"], {"/camera/image_raw": "/camera/depth/image_raw"})
    for present in ("/camera/image_raw", "/camera/image_raw/compressed"):
        zstd = {present: topics[present], "/camera/image_raw/zstd": comp}
        assert pair_camera_topics(zstd)[0] == [present]
    # --image-topic names the cameras; a depth pairing of a topic it leaves out is refused,
    # not dropped without a word
    rig = {"/a/color/image_raw": img, "/a/infra/image_raw": img, "/a/depth/image_raw": img}
    assert pair_camera_topics(rig, cameras=["/a/color/image_raw"])[:2] == (
        ["/a/color/image_raw"], {"/a/color/image_raw": "/a/depth/image_raw"})
    with pytest.raises(BagError, match="which --image-topic does not name"):
        pair_camera_topics(rig, {"/a/infra/image_raw": "/a/depth/image_raw"},
                           cameras=["/a/color/image_raw"])
    # a stale metadata.yaml counting 0 for both: one camera, the raw topic, as before
    stale = {t: 0 for t in topics}
    assert pair_camera_topics(topics, counts=stale)[0] == ["/camera/image_raw"]


def test_a_topic_recorded_with_two_message_types_is_refused(tmp_path):
    """The reader kept the last connection's type: half a depth topic recorded as Image and
    CompressedImage was decoded as the wrong type and silently dropped (exit 0)."""
    from rosbags.rosbag2 import Writer

    from vl_distill_ros.bags.bag_io import typestore

    store = typestore()
    with Writer(tmp_path / "two", version=Writer.VERSION_LATEST) as writer:
        writer.add_connection("/camera/image_raw", IMAGE_TYPE, typestore=store)
        writer.add_connection("/camera/image_raw", "sensor_msgs/msg/CameraInfo",
                              typestore=store)
    with pytest.raises(BagError, match="topic /camera/image_raw was recorded with two message "
                                       "types"):
        read_camera_bag(tmp_path / "two")
    # a topic of two types this reader never reads does not stop it
    with Writer(tmp_path / "other", version=Writer.VERSION_LATEST) as writer:
        writer.add_connection("/camera/image_raw", IMAGE_TYPE, typestore=store)
        writer.add_connection("/robot/status", "std_msgs/msg/Int32", typestore=store)
        writer.add_connection("/robot/status", "std_msgs/msg/Float64", typestore=store)
    assert read_camera_bag(tmp_path / "other").image_topics == ["/camera/image_raw"]


def test_bad_image_format_arguments_are_refused(tmp_path):
    with pytest.raises(BagError, match="unknown image format"):
        write_camera_bag(tmp_path / "a", synthetic_frames(1, NAMES[:2]), image_format="bmp")
    with pytest.raises(BagError, match="jpeg_quality"):
        write_camera_bag(tmp_path / "b", synthetic_frames(1, NAMES[:2]), image_format="jpeg",
                         jpeg_quality=101)


def _corrupt_first_jpeg(src: Path, dst: Path) -> Path:
    """A copy of a compressed-colour bag whose first image payload is not a JPEG."""
    from rosbags.rosbag2 import Writer

    from vl_distill_ros.bags import bag_io

    store = bag_io.typestore()
    with Writer(dst, version=Writer.VERSION_LATEST) as writer:
        conns: dict = {}
        first = True
        for raw in bag_io.iter_raw_messages(src):
            if raw.topic not in conns:
                conns[raw.topic] = writer.add_connection(raw.topic, raw.msgtype,
                                                         typestore=store)
            data = raw.data
            if raw.msgtype == COMPRESSED_IMAGE_TYPE and first:
                msg = store.deserialize_cdr(data, raw.msgtype)
                msg.data = np.frombuffer(b"not a jpeg" * 10, np.uint8)
                data = store.serialize_cdr(msg, raw.msgtype)
                first = False
            writer.write(conns[raw.topic], raw.timestamp_ns, data)
    return dst


def test_offline_replay_of_a_jpeg_bag_scores_like_the_raw_bag(tmp_path, capsys):
    bundle = make_colour_bundle(tmp_path / "b.vdb", NAMES, NAMES[:4])
    frames = synthetic_frames(6, NAMES, seed=2)
    write_camera_bag(tmp_path / "raw", frames)
    write_camera_bag(tmp_path / "jpg", frames, image_format="jpeg", jpeg_quality=92)
    reports = {}
    for name in ("raw", "jpg"):
        t0 = time.perf_counter()
        code = cli.main(["replay-eval", str(tmp_path / name), "--offline", "--model",
                         str(bundle), "--out", str(tmp_path / f"out_{name}"),
                         "--text-cache-dir", "", "--no-progress",
                         "-p", "crop_source:=proposals"])
        assert code == 0, capsys.readouterr().err
        reports[name] = json.loads((tmp_path / f"out_{name}" / "report.json").read_text())
        print(f"{name}: {time.perf_counter() - t0:.1f} s")
    raw, jpg = reports["raw"], reports["jpg"]
    assert jpg["frames"]["labelled"] == raw["frames"]["labelled"] == 6
    g_raw, g_jpg = raw["groups"]["all"], jpg["groups"]["all"]
    assert g_jpg["objects"] == g_raw["objects"] > 0
    # JPEG at quality 92 moves few boxes or labels on these frames
    assert abs(g_jpg["correct"] - g_raw["correct"]) <= 2, (g_raw, g_jpg)
    assert g_jpg["correct"] > 0
    # a corrupt JPEG in the bag is skipped (as the node drops it), counted and named with
    # its topic; the other frames are scored as before
    bad = _corrupt_first_jpeg(tmp_path / "jpg", tmp_path / "bad")
    capsys.readouterr()
    code = cli.main(["replay-eval", str(bad), "--offline", "--model", str(bundle), "--out",
                     str(tmp_path / "out_bad"), "--text-cache-dir", "", "--no-progress"])
    assert code == 0
    err = capsys.readouterr().err
    assert "/camera/image_raw/compressed" in err and "neither JPEG nor PNG" in err
    bad_report = json.loads((tmp_path / "out_bad" / "report.json").read_text())
    assert bad_report["frames"]["undecodable"] == 1
    assert bad_report["frames"]["labelled"] == 5 and bad_report["frames"]["dropped"] == 1


def test_16_bit_depth_in_other_units_than_millimetres():
    """``depth_scale`` (``unit_m``): 16-bit depth in an L515's raw 0.25 mm units reads as the
    same metres as millimetres do, raw and compressed (PNG and RVL); 32FC1 stays metres."""
    from vl_distill_ros.perception.image_codec import decode_depth

    z = _depth_m()
    quarter = np.round(z * 4000).astype(np.uint16)               # 0.25 mm units
    h, w = quarter.shape
    raw = decode_depth("16UC1", h, w, 2 * w, quarter.tobytes(), unit_m=0.00025)
    np.testing.assert_allclose(raw, quarter * np.float32(0.00025))
    assert np.abs(raw - z).max() < 2e-4
    assert np.abs(decode_depth("16UC1", h, w, 2 * w, quarter.tobytes()) - 4 * z).max() < 1e-3
    ok, png = cv2.imencode(".png", quarter)
    header = struct.pack("<iff", 0, 0.0, 0.0)
    fmt = "16UC1; compressedDepth png"
    np.testing.assert_array_equal(
        cc.decode_compressed_depth(fmt, header + png.tobytes(), unit_m=0.00025), raw)
    np.testing.assert_array_equal(
        cc.decode_compressed_depth("16UC1; compressedDepth rvl", header + _rvl(quarter),
                                   unit_m=0.00025), raw)
    metres = z.astype(np.float32)
    np.testing.assert_array_equal(
        decode_depth("32FC1", h, w, 4 * w, metres.tobytes(), unit_m=0.00025), metres)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rvl_decodes_random_frames_of_runs_and_jumps(seed):
    """Random 16-bit frames (holes alone and in runs, zero-length runs between values,
    wrapping jumps) decode to what the independent coder coded."""
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 40, 2)
    img = rng.integers(0, 65536, (h, w)).astype(np.uint16)
    img[rng.random((h, w)) < 0.2] = 0
    if h > 4:
        img[rng.integers(0, h - 4):, : rng.integers(1, w + 1)] = 0      # a long run of holes
    np.testing.assert_array_equal(cc.decode_rvl(np.frombuffer(_rvl(img), np.uint8)), img)
