"""sensor_msgs/Image decoding and rgb8 encoding (ROS-free)."""
from __future__ import annotations

import array

import numpy as np
import pytest

from vl_distill_ros.perception.image_codec import (BYTES_PER_PIXEL, SUPPORTED_ENCODINGS,
                                                   ImageDecodeError, decode_image, encode_rgb8)

H, W = 5, 7


@pytest.fixture()
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _pad_rows(pixels: np.ndarray, step: int) -> bytes:
    """Raw rows of ``pixels`` (H, row_bytes) uint8 padded with 0xAB up to ``step`` bytes."""
    rows = pixels.reshape(pixels.shape[0], -1)
    out = np.full((rows.shape[0], step), 0xAB, np.uint8)
    out[:, :rows.shape[1]] = rows
    return out.tobytes()


def _check_output(out: np.ndarray, height: int = H, width: int = W) -> None:
    assert out.shape == (height, width, 3)
    assert out.dtype == np.uint8
    assert out.flags.c_contiguous and out.flags.writeable


def test_supported_encodings_have_sizes() -> None:
    assert set(SUPPORTED_ENCODINGS) == set(BYTES_PER_PIXEL)


@pytest.mark.parametrize("container", [bytes, bytearray, memoryview,
                                       lambda b: array.array("B", b), list,
                                       lambda b: np.frombuffer(b, np.uint8)])
def test_rgb8_round_trip_all_containers(rgb: np.ndarray, container) -> None:
    data = container(rgb.tobytes())
    out = decode_image("rgb8", H, W, W * 3, data)
    _check_output(out)
    np.testing.assert_array_equal(out, rgb)


def test_rgb8_output_does_not_alias_input(rgb: np.ndarray) -> None:
    buf = bytearray(rgb.tobytes())
    out = decode_image("rgb8", H, W, W * 3, buf)
    out[:] = 0
    assert bytes(buf) == rgb.tobytes()


@pytest.mark.parametrize("encoding", ["bgr8", "8UC3"])
def test_bgr8_channel_swap(rgb: np.ndarray, encoding: str) -> None:
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    out = decode_image(encoding, H, W, W * 3, bgr.tobytes())
    _check_output(out)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("encoding,order", [("rgba8", [0, 1, 2]), ("bgra8", [2, 1, 0])])
def test_alpha_is_dropped(rgb: np.ndarray, encoding: str, order: list[int]) -> None:
    alpha = np.random.default_rng(1).integers(0, 256, (H, W, 1), dtype=np.uint8)
    four = np.concatenate([rgb[..., order], alpha], axis=2)
    out = decode_image(encoding, H, W, W * 4, four.tobytes())
    _check_output(out)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_mono8_replicated(encoding: str) -> None:
    gray = np.random.default_rng(2).integers(0, 256, (H, W), dtype=np.uint8)
    out = decode_image(encoding, H, W, W, gray.tobytes())
    _check_output(out)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def _scaled(values: np.ndarray) -> np.ndarray:
    return np.round(values.astype(np.float64) * 255.0 / values.max()).astype(np.uint8)


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
@pytest.mark.parametrize("bigendian", [0, 1])
def test_mono16_scaled_by_frame_max(encoding: str, bigendian: int) -> None:
    depth = np.random.default_rng(3).integers(0, 4096, (H, W)).astype(np.uint16)  # 12-bit
    depth[0, 0] = 4000
    raw = depth.astype(">u2" if bigendian else "<u2").tobytes()
    out = decode_image(encoding, H, W, W * 2, raw, is_bigendian=bigendian)
    _check_output(out)
    expected = _scaled(depth)
    assert np.abs(out[..., 0].astype(int) - expected).max() <= 1
    assert out[..., 0].max() == 255
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_mono16_endianness_matters() -> None:
    depth = np.arange(1, H * W + 1, dtype=np.uint16).reshape(H, W) * 50
    little = decode_image("mono16", H, W, W * 2, depth.astype("<u2").tobytes(), is_bigendian=0)
    wrong = decode_image("mono16", H, W, W * 2, depth.astype("<u2").tobytes(), is_bigendian=1)
    assert not np.array_equal(little, wrong)


def test_mono16_all_zero_stays_black() -> None:
    out = decode_image("16UC1", H, W, W * 2, bytes(H * W * 2))
    _check_output(out)
    assert not out.any()


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16"])
@pytest.mark.parametrize("extra", [1, 3, 8])
def test_padded_rows(encoding: str, extra: int) -> None:
    """step > width * bpp: the row padding (filled with 0xAB) is ignored; odd steps too."""
    bpp = BYTES_PER_PIXEL[encoding]
    rng = np.random.default_rng(4)
    if bpp == 2:
        pixels = rng.integers(1, 1000, (H, W)).astype("<u2")
        expected = np.repeat(_scaled(pixels)[..., None], 3, axis=2)
        raw_rows = pixels.view(np.uint8).reshape(H, W * 2)
    else:
        pixels = rng.integers(0, 256, (H, W, bpp), dtype=np.uint8)
        raw_rows = pixels.reshape(H, W * bpp)
        expected = decode_image(encoding, H, W, W * bpp, pixels.tobytes())
    step = W * bpp + extra
    out = decode_image(encoding, H, W, step, _pad_rows(raw_rows, step))
    _check_output(out)
    assert np.abs(out.astype(int) - expected).max() <= (1 if bpp == 2 else 0)


@pytest.mark.parametrize("bigendian", [0, 1])
@pytest.mark.parametrize("encoding, order", [("rgb16", (0, 1, 2)), ("bgr16", (2, 1, 0)),
                                             ("rgba16", (0, 1, 2, 3)),
                                             ("bgra16", (2, 1, 0, 3))])
def test_16_bit_colour_keeps_its_high_byte(rgb: np.ndarray, encoding: str, order: tuple,
                                           bigendian: int) -> None:
    """16-bit colour (machine-vision cameras) was refused as an unsupported encoding; it
    comes back as its high byte (as a 16-bit colour PNG does), rows padded, either byte
    order."""
    rgba = np.dstack([rgb, np.full((H, W), 255, np.uint8)])
    words = (rgba[..., list(order)].astype(np.uint16) << 8) | 0x5A        # noise in the low byte
    raw = np.ascontiguousarray(words.astype(">u2" if bigendian else "<u2")).view(np.uint8)
    raw = raw.reshape(H, -1)
    step = raw.shape[1] + 3
    out = decode_image(encoding, H, W, step, _pad_rows(raw, step), is_bigendian=bigendian)
    _check_output(out)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_16_bit_bayer_is_demosaiced_and_scaled_as_mono16(pattern: str) -> None:
    """A 16-bit mosaic (FLIR Spinnaker's BayerRG16, 12-bit data in the low bits) was refused;
    it is demosaiced as the 8-bit one and scaled by the frame's maximum as mono16 is."""
    mosaic = np.random.default_rng(7).integers(1, 256, (6, 8)).astype(np.uint8)
    eight = decode_image(f"bayer_{pattern}8", 6, 8, 8, mosaic.tobytes())
    words = (mosaic.astype(np.uint16) * 16).astype(">u2")                  # 12-bit data
    out = decode_image(f"bayer_{pattern}16", 6, 8, 16, words.tobytes(), is_bigendian=1)
    _check_output(out, 6, 8)
    scaled = np.round(eight.astype(float) * 255 / eight.max())
    assert np.abs(out - scaled).max() <= 1
    assert not decode_image(f"bayer_{pattern}16", 2, 2, 4, bytes(8)).any()  # black stays black


def test_array_array_from_rclpy_and_other_itemsizes(rgb: np.ndarray) -> None:
    """rclpy gives uint8[] as array.array('B'); any buffer is read as raw bytes."""
    data = array.array("B")
    data.frombytes(rgb.tobytes())
    np.testing.assert_array_equal(decode_image("rgb8", H, W, W * 3, data), rgb)
    depth = np.full((2, 2), 1000, np.uint16)
    words = array.array("H", depth.tolist()[0] + depth.tolist()[1])
    out = decode_image("mono16", 2, 2, 4, words, is_bigendian=int(np.little_endian is False))
    assert (out == 255).all()


def test_numpy_array_input_viewed_as_bytes(rgb: np.ndarray) -> None:
    np.testing.assert_array_equal(decode_image("rgb8", H, W, W * 3, rgb), rgb)


def test_non_contiguous_memoryview() -> None:
    gray = np.arange(H * W * 2, dtype=np.uint8)
    view = memoryview(gray.tobytes())[::2]
    out = decode_image("mono8", H, W, W, view)
    np.testing.assert_array_equal(out[..., 0], gray[::2].reshape(H, W))


# ---------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------
def test_unsupported_encoding_lists_supported() -> None:
    with pytest.raises(ImageDecodeError, match="unsupported image encoding 'nv21'") as err:
        decode_image("nv21", H, W, W, bytes(H * W * 3 // 2))
    for enc in SUPPORTED_ENCODINGS:
        assert enc in str(err.value)


@pytest.mark.parametrize("height,width", [(0, W), (H, 0), (0, 0)])
def test_empty_frame(height: int, width: int) -> None:
    with pytest.raises(ImageDecodeError, match="empty frame"):
        decode_image("rgb8", height, width, width * 3, b"")


def test_frame_too_large() -> None:
    with pytest.raises(ImageDecodeError, match=r"frame too large: 100x100 = 10000 pixels"):
        decode_image("mono8", 100, 100, 100, bytes(10000), max_pixels=9999)


def test_step_too_small() -> None:
    with pytest.raises(ImageDecodeError, match=r"step 20 is smaller than width \* "
                                               r"bytes_per_pixel = 7 \* 3 = 21"):
        decode_image("rgb8", H, W, 20, bytes(20 * H))


def test_truncated_data() -> None:
    with pytest.raises(ImageDecodeError,
                       match=r"truncated.*data has 104 bytes, expected step\*height = "
                             r"21\*5 = 105"):
        decode_image("rgb8", H, W, 21, bytes(104))


def test_data_too_long() -> None:
    with pytest.raises(ImageDecodeError,
                       match=r"data has 106 bytes, expected step\*height = 21\*5 = 105"):
        decode_image("rgb8", H, W, 21, bytes(106))


@pytest.mark.parametrize("field", ["height", "width", "step"])
def test_negative_or_non_integer_fields(field: str) -> None:
    args = {"height": H, "width": W, "step": W}
    args[field] = -1
    with pytest.raises(ImageDecodeError, match=field):
        decode_image(encoding="mono8", data=bytes(H * W), **args)
    args[field] = 2.5
    with pytest.raises(ImageDecodeError, match=field):
        decode_image(encoding="mono8", data=bytes(H * W), **args)


def test_bad_list_data() -> None:
    with pytest.raises(ImageDecodeError, match="0..255"):
        decode_image("mono8", 1, 2, 2, [1, 256])
    with pytest.raises(ImageDecodeError, match="unsupported image data type"):
        decode_image("mono8", 1, 2, 2, "ab")  # type: ignore[arg-type]


def test_error_is_a_value_error() -> None:
    assert issubclass(ImageDecodeError, ValueError)


# ---------------------------------------------------------------------------------------
# encode
# ---------------------------------------------------------------------------------------
def test_encode_rgb8_round_trip(rgb: np.ndarray) -> None:
    encoding, height, width, step, data = encode_rgb8(rgb)
    assert (encoding, height, width, step) == ("rgb8", H, W, W * 3)
    assert isinstance(data, bytes) and len(data) == step * height
    np.testing.assert_array_equal(decode_image(encoding, height, width, step, data), rgb)


def test_encode_rgb8_non_contiguous_view(rgb: np.ndarray) -> None:
    view = rgb[:, ::2]
    _, height, width, step, data = encode_rgb8(view)
    np.testing.assert_array_equal(decode_image("rgb8", height, width, step, data), view)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8),
                                 np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8)])
def test_encode_rgb8_rejects(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        encode_rgb8(bad)


def _pairs_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Random colours, each shared by a pixel pair (YUV 4:2:2 keeps one U, V per pair)."""
    rng = np.random.default_rng(seed)
    return np.repeat(rng.integers(0, 256, (height, width // 2, 3)), 2, axis=1).astype(float)


def _bt601_video(rgb: np.ndarray) -> list[np.ndarray]:
    """Y, U, V (uint8) of RGB by ITU-R BT.601 in video range (Y 16-235), as cameras send."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return [np.clip(np.round(c), 0, 255).astype(np.uint8) for c in (y, u, v)]


@pytest.mark.parametrize("encoding, order", [("yuv422", "UYVY"), ("uyvy", "UYVY"),
                                             ("yuv422_yuy2", "YUYV"), ("yuyv", "YUYV")])
def test_yuv422_packed_pairs(encoding: str, order: str) -> None:
    """Packed 4:2:2 in either byte order decodes to the colours it was made from (BT.601
    video range, rounding aside); the other byte order does not, nor does an odd width."""
    h, w = 6, 8
    rgb = _pairs_rgb(h, w)
    y, u, v = _bt601_video(rgb)
    planes = {"Y0": y[:, 0::2], "Y1": y[:, 1::2], "U": u[:, 0::2], "V": v[:, 0::2]}
    names = ["U", "Y0", "V", "Y1"] if order == "UYVY" else ["Y0", "U", "Y1", "V"]
    packed = np.stack([planes[n] for n in names], -1).reshape(h, w * 2)
    out = decode_image(encoding, h, w, w * 2 + 3, _pad_rows(packed, w * 2 + 3))
    _check_output(out, h, w)
    assert np.abs(out - rgb).max() <= 2
    other = "yuv422_yuy2" if order == "UYVY" else "yuv422"
    assert np.abs(decode_image(other, h, w, w * 2, packed.tobytes()) - rgb).max() > 40
    with pytest.raises(ImageDecodeError, match="width must be even"):
        decode_image(encoding, h, w - 1, (w - 1) * 2, packed[:, :-2].tobytes())


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_mosaic_demosaiced(pattern: str) -> None:
    """A mosaic of a smooth image in each 2x2 layout demosaics back to it (inside a 2-pixel
    border); read as another layout it does not; a frame under 2x2 is refused."""
    h, w = 32, 40
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([40 + 4 * xx, 200 - 3 * yy, 100 + 2 * xx + yy], -1).clip(0, 255)
    channel = {"r": 0, "g": 1, "b": 2}
    mosaic = np.zeros((h, w), np.uint8)
    for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, channel[pattern[k]]]
    out = decode_image(f"bayer_{pattern}8", h, w, w + 2, _pad_rows(mosaic, w + 2))
    _check_output(out, h, w)
    assert np.abs(out[2:-2, 2:-2].astype(int) - rgb[2:-2, 2:-2]).max() <= 2
    wrong = "bayer_bggr8" if pattern == "rggb" else "bayer_rggb8"
    assert np.abs(decode_image(wrong, h, w, w, mosaic.tobytes())[2:-2, 2:-2].astype(int)
                  - rgb[2:-2, 2:-2]).max() > 40
    with pytest.raises(ImageDecodeError, match="at least 2x2"):
        decode_image(f"bayer_{pattern}8", 1, 4, 4, bytes(4))
