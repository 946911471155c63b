#!/usr/bin/env python3
"""Decoding cost of one depth frame in each transport the node reads.

Takes the depth images of an RGB-D bag (``--bag``, default the shipped sample bag; the first
``--frames`` with depth, as millimetres) and times, per frame, what the node does with each
message of a 640x480 sensor stream:

* ``raw``: a ``sensor_msgs/Image`` ``16UC1`` payload
  (:func:`~vl_distill_ros.perception.image_codec.decode_depth`);
* ``png``: image_transport's ``compressedDepth`` PNG
  (:func:`~vl_distill_ros.perception.compressed_codec.decode_compressed_depth`);
* ``rvl``: ``compressedDepth`` RVL (Wilson 2017), coded here by :func:`encode_rvl` (the
  package only decodes it).

Every decoded frame is checked against the millimetres it was coded from. Prints ONE JSON
object: per transport the payload size and the median / p95 ms of ``--repeats`` rounds over
the frames (alternated, so all see the same machine load).

    .venv/bin/python bench/depth_decode.py [--bag RGBD_BAG] [--frames 8] [--repeats 15]
"""
from __future__ import annotations

import argparse
import struct
import sys
import time
from typing import Any, Sequence

import numpy as np
from _common import BenchError, bag_errors, bench_main, depth_frames_parser, log, machine_info

#: compressedDepth's 12-byte header: format (int32) and the two float quantisation values.
HEADER = struct.pack("<iff", 0, 0.0, 0.0)


def _vle(values: np.ndarray) -> np.ndarray:
    """RVL's nibbles of non-negative integers: three value bits each, least significant
    first, 0x8 on every nibble but a value's last."""
    values = values.astype(np.int64)
    lengths = np.ones(values.size, np.int64)
    rest = values >> 3
    while rest.any():
        lengths += rest > 0
        rest >>= 3
    idx = np.repeat(np.arange(values.size), lengths)
    pos = np.arange(idx.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    nib = (values[idx] >> (3 * pos)) & 7
    return (nib | np.where(pos < lengths[idx] - 1, 8, 0)).astype(np.uint8)


def encode_rvl(mm: np.ndarray) -> bytes:
    """RVL data of a uint16 ``(H, W)`` image (width and height as uint32, then per run the
    count of zeros, the count of non-zero values and their zigzag deltas, as nibbles packed
    eight to a little-endian 32-bit word, the first in the top bits)."""
    flat = np.asarray(mm, np.uint16).ravel().astype(np.int64)
    nonzero = flat != 0
    edges = np.flatnonzero(np.diff(np.concatenate([[0], nonzero.astype(np.int8), [0]])))
    starts, stops = edges[0::2], edges[1::2]                   # the runs of non-zero values
    zeros = starts - np.concatenate([[0], stops[:-1]])
    trailing = flat.size - (stops[-1] if stops.size else 0)
    kept = flat[nonzero]
    delta = np.diff(np.concatenate([[0], kept]))               # previous value, across holes
    zigzag = np.where(delta < 0, (-delta << 1) - 1, delta << 1)
    parts: list[np.ndarray] = []
    offset = 0                                                 # run k's values in zigzag
    for zero, count in zip(zeros, stops - starts):
        parts += [np.array([zero, count]), zigzag[offset:offset + count]]
        offset += count
    if trailing or not starts.size:
        parts.append(np.array([trailing, 0]))
    nib = _vle(np.concatenate(parts) if parts else np.zeros(0, np.int64))
    nib = np.concatenate([nib, np.zeros(-nib.size % 8, np.uint8)]).reshape(-1, 8)
    words = np.zeros(nib.shape[0], np.uint32)
    for j in range(8):
        words |= nib[:, j].astype(np.uint32) << np.uint32(28 - 4 * j)
    h, w = mm.shape
    return struct.pack("<II", w, h) + words.astype("<u4").tobytes()


def _frames(bag: str, count: int) -> list[np.ndarray]:
    from vl_distill_ros.bags.bag_io import read_camera_bag

    out = []
    with bag_errors(bag):
        for frame in read_camera_bag(bag).rgbd_frames(tolerance_ns=20_000_000):
            if frame.depth is not None:
                out.append(np.round(frame.depth * 1000.0).astype(np.uint16))
            if len(out) == count:
                break
    if not out:
        raise BenchError(f"{bag} has no frame with depth")
    return out


def _decoders(frames: Sequence[np.ndarray]) -> dict[str, tuple[list, Any]]:
    """Per transport: the frames' payloads and the function that decodes one to metres."""
    import cv2

    from vl_distill_ros.perception.compressed_codec import decode_compressed_depth
    from vl_distill_ros.perception.image_codec import decode_depth

    def raw(data: bytes, shape: tuple[int, int]) -> np.ndarray:
        return decode_depth("16UC1", shape[0], shape[1], 2 * shape[1], data)

    def png(data: bytes, shape: tuple[int, int]) -> np.ndarray:
        return decode_compressed_depth("16UC1; compressedDepth png", data)

    def rvl(data: bytes, shape: tuple[int, int]) -> np.ndarray:
        return decode_compressed_depth("16UC1; compressedDepth rvl", data)

    return {"raw": ([f.astype("<u2").tobytes() for f in frames], raw),
            "png": ([HEADER + cv2.imencode(".png", f)[1].tobytes() for f in frames], png),
            "rvl": ([HEADER + encode_rvl(f) for f in frames], rvl)}


def run(a: argparse.Namespace, out: dict[str, Any]) -> None:
    out["machine"] = machine_info(["numpy", "cv2"])
    frames = _frames(a.bag, a.frames)
    log(f"{len(frames)} depth frames of {frames[0].shape[1]}x{frames[0].shape[0]}")
    decoders = _decoders(frames)
    for name, (payloads, decode) in decoders.items():         # right before timed
        for mm, data in zip(frames, payloads):
            got = decode(data, mm.shape)
            if not np.array_equal(got, mm.astype(np.float32) * np.float32(0.001)):
                raise BenchError(f"{name}: a decoded frame differs from its millimetres", 1)
    times: dict[str, list[float]] = {name: [] for name in decoders}
    for _ in range(a.repeats):
        for name, (payloads, decode) in decoders.items():
            for mm, data in zip(frames, payloads):
                t0 = time.perf_counter()
                decode(data, mm.shape)
                times[name].append(1000.0 * (time.perf_counter() - t0))
    out["frames"] = {"count": len(frames), "size": [frames[0].shape[1], frames[0].shape[0]],
                     "holes_frac": round(float(np.mean([(f == 0).mean() for f in frames])), 4)}
    out["results"] = {name: {"payload_bytes_mean": int(np.mean([len(p) for p in payloads])),
                             "ms_median": round(float(np.median(times[name])), 3),
                             "ms_p95": round(float(np.percentile(times[name], 95)), 3)}
                      for name, (payloads, _) in decoders.items()}


def main(argv: Sequence[str] | None = None) -> int:
    p = depth_frames_parser(__doc__, repeats=15)
    return bench_main("depth_decode", "decoding cost per depth frame, raw / PNG / RVL", p,
                      run, argv)


if __name__ == "__main__":
    sys.exit(main())
