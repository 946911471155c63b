"""Throw seeded hostile input at the robot-side code and report what fails unexpectedly.

Six targets, drawn from one seeded generator (``--seed``):

- ``codecs``: raw and compressed image and depth payloads with wrong encodings, sizes, steps
  and flipped, cut or random bytes (:mod:`vl_distill_ros.perception.image_codec`,
  :mod:`~vl_distill_ros.perception.compressed_codec`); ``ImageDecodeError`` and
  ``DepthError`` are the expected answers, anything else is a failure.
- ``camera_info``: CameraInfo messages with broken K, P, lens model, size, binning or
  region of interest, read as the node reads them
  (:meth:`~vl_distill_ros.perception.camera_model.CameraIntrinsics.from_camera_info`) and
  the camera used as the depth proposer uses it; ``DepthError`` is the expected answer.
- ``depth``: the RGB-D frames of a bag (default: the shipped sample bag) with their depth
  spoilt (inf, NaN, negative, random, wrong units, stripes, a single row, ...) and their
  CameraInfo spoilt (tiny or huge focal lengths, the centre off the image, strong lens
  models), through :func:`~vl_distill_ros.perception.depth_proposals.propose_depth_boxes`;
  it must return boxes or a note. What it found then places its boxes and some odd ones
  (:func:`~vl_distill_ros.perception.object_placement.place_objects`, whose errors the
  node swallows): one finite answer or None per box.
- ``pipeline``: frames of odd sizes (1x1 to 2000x2000, 1 px wide or high) and contents,
  with and without depth, through the whole pipeline (``prepare`` and ``classify``, the
  default bundle) as one camera's stream (stamps on in time, now and then a little or far
  back, or far on: the object tracks follow them): every frame must give its objects.
- ``vocabularies``: vocabulary documents of random structure (labels that are numbers,
  lists or mappings, names that are empty, huge, duplicated, reserved or hold control
  characters, descriptions of the wrong type), as a ``vocabulary_file`` and a bundle's
  manifest hold them, through
  :meth:`~vl_distill_ros.model.vocabulary.Vocabulary.from_dict`; ``VocabularyError`` is the
  expected answer.
- ``bundles``: the shipped bundle with one to three records of its manifest replaced by
  values of other kinds or removed (the members and their checksums kept), through
  :func:`~vl_distill_ros.model.bundle.load_bundle`; ``BundleError`` is the expected answer.

Session 37 found two crashes of the depth proposer this way (speckled depth broke the
support region; depth one pixel high reached OpenCV as an empty grid); session 59 one more
(a lens model with no ray for part of the image) and load_bundle's Python errors on a
manifest's records of the wrong kind. Prints one JSON
object (trials and failures per target, each failure with its traceback's last lines);
exit status 1 when anything failed.

Usage: ``.venv/bin/python tools/fuzz_inputs.py [--seed 0] [--codecs 3000]
[--camera-info 2000] [--depth 300] [--pipeline 100] [--vocabularies 2000] [--bundles 40]
[--bag demo/sample_tabletop]`` (about two minutes with these counts).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ENCODINGS = ["rgb8", "bgr8", "mono8", "mono16", "rgba8", "bgra8", "16UC1", "32FC1", "yuv422",
             "bayer_rggb8", "8UC3", "", "RGB8", "16SC1", "64FC1", "rgb16", "8UC1"]
COMPRESSED_FORMATS = ["jpeg", "png", "rgb8; jpeg compressed bgr8", "bgr8; png compressed bgr8",
                      "", "mono8; jpeg compressed mono8", "weird", "16UC1; png compressed"]
DEPTH_FORMATS = ["16UC1; compressedDepth png", "32FC1; compressedDepth png",
                 "16UC1; compressedDepth rvl", "32FC1; compressedDepth rvl", "", "png"]
SPOILT_DEPTH = ["zeros", "nan", "inf", "negative", "some_negative", "huge", "tiny", "x10",
                "x0.1", "constant", "noise", "few", "half_nan", "salt", "stripes", "ramp",
                "float64", "quantised", "upside_down", "one_column", "one_row", "subnormal",
                "float_max", "as_is"]
SPOILT_CAMERA = ["as_is", "focal_1", "focal_huge", "centre_off", "anisotropic", "plumb_bob",
                 "rational", "equidistant"]
FRAME_SIZES = [(1, 1), (1, 640), (640, 1), (2, 2), (5, 7), (8, 8), (16, 4000), (4000, 16),
               (31, 33), (64, 64), (100, 3), (480, 640), (720, 1280), (1, 3000)]


class Tally:
    """Trials and unexpected failures of one target."""

    def __init__(self) -> None:
        """An empty tally."""
        self.trials = 0
        self.failures: dict[str, dict[str, Any]] = {}

    def run(self, what: str, step: Callable[[], None],
            expected: tuple[type[BaseException], ...] = ()) -> None:
        """Run ``step``; an exception outside ``expected`` is a failure keyed by ``what``
        and its type and message (counted, its traceback's end kept once)."""
        self.trials += 1
        try:
            step()
        except expected:
            pass
        except Exception as exc:  # noqa: BLE001 - every other exception is the finding
            key = f"{what}: {type(exc).__name__}: {str(exc)[:120]}"
            entry = self.failures.setdefault(key, {"count": 0,
                                                   "traceback": traceback.format_exc()[-1500:]})
            entry["count"] += 1

    def summary(self) -> dict[str, Any]:
        """``{"trials", "failures": [{"what", "count", "traceback"}]}``."""
        return {"trials": self.trials,
                "failures": [{"what": k, **v} for k, v in sorted(self.failures.items())]}


def _mutated(payload: bytes, rng: np.random.Generator) -> bytes:
    """``payload`` cut short, with bytes changed or appended, or random bytes instead."""
    data = bytearray(payload)
    kind = int(rng.integers(5))
    if kind == 0 and data:
        data = data[:int(rng.integers(len(data)))]
    elif kind == 1:
        for _ in range(int(rng.integers(1, 20))):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
    elif kind == 2:
        data += bytes(rng.integers(0, 256, int(rng.integers(1, 100)), dtype=np.uint8))
    elif kind == 3:
        data = bytearray(rng.integers(0, 256, int(rng.integers(0, 3000)), dtype=np.uint8))
    return bytes(data)


def _raw_message(rng: np.random.Generator) -> tuple[str, int, int, int, bytes, int]:
    """A raw image message's fields, often inconsistent: encoding, height, width, step,
    data (at most 1 MB) and the big-endian flag."""
    encoding = ENCODINGS[int(rng.integers(len(ENCODINGS)))]
    height = int(rng.choice([0, 1, 2, 3, 48, -1, 2 ** 31, 100_000]))
    width = int(rng.choice([0, 1, 3, 64, -5, 2 ** 20]))
    step = int(rng.choice([0, width, 2 * width, 3 * width, 4 * width, 3 * width + 1, -1, 2 ** 40]))
    size = max(0, min(height * step, 1_000_000) + int(rng.integers(-3, 3)))
    return (encoding, height, width, step, bytes(rng.integers(0, 256, size, dtype=np.uint8)),
            int(rng.integers(3)))


def fuzz_codecs(count: int, rng: np.random.Generator) -> Tally:
    """``count`` raw and compressed image and depth payloads through the decoders."""
    import cv2

    from vl_distill_ros.perception import compressed_codec, image_codec
    from vl_distill_ros.perception.camera_model import DepthError

    expected = (image_codec.ImageDecodeError, DepthError)
    colour = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    depth_mm = rng.integers(0, 4000, (48, 64)).astype(np.uint16)
    seeds = [cv2.imencode(".jpg", colour)[1].tobytes(), cv2.imencode(".png", colour)[1].tobytes(),
             cv2.imencode(".png", depth_mm)[1].tobytes()]
    depth_format, depth_payload = compressed_codec.encode_compressed_depth(
        depth_mm.astype(np.float32) / 1000)
    tally = Tally()
    for _ in range(count):
        which = int(rng.integers(4))
        if which == 0:
            fields = _raw_message(rng)
            tally.run("decode_image", lambda: image_codec.decode_image(*fields), expected)
        elif which == 1:
            fields = _raw_message(rng)
            unit = float(rng.choice([0.001, 0.0001, 1.0]))
            tally.run("decode_depth", lambda: image_codec.decode_depth(*fields, unit_m=unit),
                      expected)
        elif which == 2:
            fmt = str(rng.choice(COMPRESSED_FORMATS))
            data = _mutated(seeds[int(rng.integers(3))], rng)
            tally.run("decode_compressed_image",
                      lambda: compressed_codec.decode_compressed_image(fmt, data), expected)
        else:
            fmt = str(rng.choice(DEPTH_FORMATS + [depth_format]))
            data = _mutated(depth_payload if rng.random() < 0.5 else seeds[2], rng)
            tally.run("decode_compressed_depth",
                      lambda: compressed_codec.decode_compressed_depth(fmt, data), expected)
    return tally


def _camera_info(rng: np.random.Generator) -> tuple[Any, tuple[int, int], bool]:
    """A CameraInfo (duck-typed) with some of K, P, the lens model, the size, the binning
    and the region of interest broken; the size of the images at hand; rectified or not."""
    from types import SimpleNamespace

    odd = [0.0, -1.0, np.nan, np.inf, 1e-30, 1e30, 525.0, 319.5, 1.0, 5000.0, -300.0]
    k = [525.0, 0.0, 319.5, 0.0, 525.0, 239.5, 0.0, 0.0, 1.0]
    p = [525.0, 0.0, 319.5, 0.0, 0.0, 525.0, 239.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    for values, n in ((k, 3), (p, 2)):
        for _ in range(int(rng.integers(0, n + 1))):
            values[int(rng.integers(len(values)))] = float(rng.choice(odd))
    k = k[:int(rng.integers(0, 9))] if rng.random() < 0.1 else k
    d = [float(v) for v in rng.normal(0, float(rng.choice([0.01, 0.3, 3.0, 100.0])),
                                      int(rng.choice([0, 1, 4, 5, 8, 12, 14, 15, 30])))]
    roi = SimpleNamespace(x_offset=int(rng.choice([0, 10, 700, -1])),
                          y_offset=int(rng.choice([0, 5, 500])),
                          width=int(rng.choice([0, 320, 640, 2000])),
                          height=int(rng.choice([0, 240, 480])), do_rectify=rng.random() < 0.3)
    info = SimpleNamespace(
        k=k, p=p, d=d, roi=roi, width=int(rng.choice([640, 0, 1, 1280, 100_000, -1])),
        height=int(rng.choice([480, 0, 1, 720, 100_000])),
        distortion_model=str(rng.choice(["", "plumb_bob", "rational_polynomial",
                                         "equidistant", "fisheye", "weird"])),
        binning_x=int(rng.choice([0, 1, 2, 3, 65, 1000])), binning_y=int(rng.choice([0, 1, 4])))
    size = (int(rng.choice([640, 320, 1, 1280])), int(rng.choice([480, 240, 1, 720])))
    return info, size, bool(rng.random() < 0.3)


def fuzz_camera_info(count: int, rng: np.random.Generator) -> Tally:
    """``count`` broken CameraInfo messages read as the node reads them, and the camera each
    gives used as the depth proposer uses it (its rays, a projection)."""
    from vl_distill_ros.perception.camera_model import (CameraIntrinsics, DepthError,
                                                        distortion_corner_px)

    def step(info: Any, size: tuple[int, int], rectified: bool) -> None:
        camera = CameraIntrinsics.from_camera_info(info, rectified, size)
        if camera.width * camera.height <= 4_000_000:
            camera.pixel_rays()
            camera.project(np.array([[0.1, 0.1, 1.0], [0.0, 0.0, 0.5]]))
            distortion_corner_px(camera, camera.distortion_model, camera.distortion)

    tally = Tally()
    for _ in range(count):
        info, size, rectified = _camera_info(rng)
        tally.run("camera info", lambda: step(info, size, rectified), (DepthError,))
    return tally


def spoil_depth(depth: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """``depth`` (metres) spoilt as broken drivers, sensors and settings spoil it."""
    d = depth.astype(np.float32)
    h, w = d.shape
    speck = rng.random(d.shape)
    cols, rows = np.arange(w)[None], np.arange(h)[:, None]
    make = {
        "zeros": lambda: np.zeros_like(d), "nan": lambda: np.full_like(d, np.nan),
        "inf": lambda: np.where(speck < 0.3, np.inf, d), "negative": lambda: -d,
        "some_negative": lambda: np.where(speck < 0.2, -1.0, d), "huge": lambda: d * 1000,
        "tiny": lambda: d / 1000, "x10": lambda: d * 10, "x0.1": lambda: d * 0.1,
        "constant": lambda: np.full_like(d, 0.8),
        "noise": lambda: rng.uniform(0.2, 3.0, d.shape),
        "few": lambda: np.where(speck < 0.002, d, 0.0),
        "half_nan": lambda: np.where(cols < w // 2, np.nan, d),
        "salt": lambda: np.where(speck < 0.1, rng.uniform(0, 10, d.shape), d),
        "stripes": lambda: np.where((rows // 3) % 2 == 0, 0.0, d),
        "ramp": lambda: np.linspace(0.3, 5.0, h)[:, None] * np.ones((1, w)),
        "float64": lambda: d.astype(np.float64), "quantised": lambda: np.round(d / 0.05) * 0.05,
        "upside_down": lambda: d[::-1], "one_column": lambda: np.where(cols == w // 2, d, 0.0),
        "one_row": lambda: np.where(rows == h // 2, d, 0.0),
        "subnormal": lambda: np.full_like(d, 1e-40),
        "float_max": lambda: np.full_like(d, np.finfo(np.float32).max), "as_is": lambda: d,
    }
    out = np.ascontiguousarray(make[kind]())
    return out if kind == "float64" else out.astype(np.float32)


def spoil_camera(camera: Any, kind: str, rng: np.random.Generator) -> Any:
    """The ``CameraIntrinsics`` ``camera`` spoilt (may raise ``DepthError``: refused)."""
    change = {
        "as_is": {}, "focal_1": {"fx": 1.0, "fy": 1.0}, "focal_huge": {"fx": 1e7, "fy": 1e7},
        "centre_off": {"cx": -5000.0, "cy": 9000.0}, "anisotropic": {"fy": camera.fx * 20},
        "plumb_bob": {"distortion_model": "plumb_bob", "distortion": (5.0, -20.0, 0.1, 0.1, 50.0)},
        "rational": {"distortion_model": "rational_polynomial",
                     "distortion": tuple(float(v) for v in rng.normal(0, 3, 8))},
        "equidistant": {"distortion_model": "equidistant", "distortion": (2.0, 2.0, 2.0, 2.0)},
    }[kind]
    return dataclasses.replace(camera, **change)


def rgbd_frames(bag: Path, count: int = 12) -> list[tuple[np.ndarray, np.ndarray, Any]]:
    """Up to ``count`` ``(image, depth m, CameraIntrinsics)`` frames of ``bag``."""
    from vl_distill_ros.bags.bag_io import read_camera_bag

    frames = []
    for msg in read_camera_bag(bag).rgbd_frames(tolerance_ns=20_000_000):
        if msg.depth is not None and msg.camera_info is not None:
            frames.append((msg.image, msg.depth, msg.intrinsics()))
        if len(frames) >= count:
            break
    if not frames:
        raise SystemExit(f"fuzz_inputs: {bag} has no colour frame with depth and CameraInfo")
    return frames


def fuzz_depth(count: int, frames: list, rng: np.random.Generator) -> Tally:
    """``count`` spoilt depth images and cameras through the depth proposer."""
    from vl_distill_ros.perception.camera_model import DepthError
    from vl_distill_ros.perception.depth_proposals import propose_depth_boxes

    def step(image: np.ndarray, depth: np.ndarray, camera: Any) -> None:
        found = propose_depth_boxes(depth, camera, image_rgb=image)
        if found.plane is None and not found.note:
            raise AssertionError("no plane and no note saying why")
        if any(w <= 0 or h <= 0 for _, _, w, h in found.boxes):
            raise AssertionError(f"an empty box among {found.boxes}")
        check_placements(found, list(found.boxes) + odd_boxes(depth.shape, rng))

    tally = Tally()
    for _ in range(count):
        image, depth, camera = frames[int(rng.integers(len(frames)))]
        kind = SPOILT_DEPTH[int(rng.integers(len(SPOILT_DEPTH)))]
        lens = SPOILT_CAMERA[int(rng.integers(len(SPOILT_CAMERA)))] if rng.random() < 0.4 \
            else "as_is"
        try:
            spoilt = spoil_camera(camera, lens, rng)
        except DepthError:
            continue   # refused when the CameraInfo is read: the node never gets that far
        tally.run(f"depth {kind}, camera {lens}",
                  lambda: step(image, spoil_depth(depth, kind, rng), spoilt))
    return tally


def odd_boxes(shape: tuple[int, ...], rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Boxes no proposer makes: empty, one pixel, outside or larger than the frame."""
    h, w = int(shape[0]), int(shape[1])
    return [(0, 0, 0, 0), (w - 1, h - 1, 1, 1), (-w, -h, w // 2 + 1, h // 2 + 1),
            (w + 5, 0, 10, 10), (-5, -5, 2 * w + 10, 2 * h + 10),
            (int(rng.integers(0, max(w, 1))), int(rng.integers(0, max(h, 1))),
             int(rng.integers(1, max(w, 2))), int(rng.integers(1, max(h, 2))))]


def check_placements(found: Any, boxes: list) -> None:
    """:func:`~vl_distill_ros.perception.object_placement.place_objects` on what the depth
    proposer found (the node swallows its errors, so they are raised here): one answer per
    box, each None or finite, with sizes >= 0 and a unit quaternion."""
    from vl_distill_ros.perception.object_placement import place_objects
    from vl_distill_ros.perception.depth_config import DepthProposalConfig

    placements = place_objects(found, boxes, DepthProposalConfig())
    if len(placements) != len(boxes):
        raise AssertionError(f"{len(placements)} placements for {len(boxes)} boxes")
    for box, placed in zip(boxes, placements):
        if placed is None:
            continue
        values = np.array([*placed.position, *placed.size, *placed.orientation], np.float64)
        if not np.isfinite(values).all() or min(placed.size) < 0 \
                or abs(float(np.linalg.norm(placed.orientation)) - 1.0) > 1e-3:
            raise AssertionError(f"box {box} placed at {placed}")


def odd_frame(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None, Any]:
    """An image of an odd size and content, with a tilted-table depth and its camera half of
    the time."""
    from vl_distill_ros.perception.camera_model import CameraIntrinsics

    h, w = FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
    kind = int(rng.integers(4))
    image = {0: lambda: np.zeros((h, w, 3), np.uint8),
             1: lambda: np.full((h, w, 3), 255, np.uint8),
             2: lambda: rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
             3: lambda: ((np.indices((h, w)).sum(0) // 4 % 2) * 255).astype(np.uint8)[
                 ..., None].repeat(3, 2)}[kind]()
    if rng.random() < 0.5:
        return image, None, None
    camera = CameraIntrinsics(max(w, 2) * 0.9, max(w, 2) * 0.9, w / 2, h / 2, w, h)
    depth = (0.6 + 0.8 * np.arange(h)[:, None] / h * np.ones((1, w))).astype(np.float32)
    depth[h // 3:h // 2, w // 3:w // 2] -= 0.08
    return image, depth, camera


def fuzz_pipeline(count: int, rng: np.random.Generator) -> Tally:
    """``count`` odd frames through the whole pipeline with the default bundle."""
    from vl_distill_ros.model.bundle import load_bundle
    from vl_distill_ros.perception.pipeline import PerceptionPipeline
    from vl_distill_ros.ros.params import default_model_path

    pipe = PerceptionPipeline(load_bundle(default_model_path(), device="cpu"))
    tally = Tally()
    stamp = 0.0
    try:
        for _ in range(count):
            image, depth, camera = odd_frame(rng)
            # one camera's stream (object tracks): on in time, now and then a little back
            # (out of order), far back (a bag played again) or far on
            stamp += float(rng.choice([0.033, 0.033, 0.0, -0.5, -30.0, 5.0]))
            tally.run(f"frame {image.shape[1]}x{image.shape[0]}, depth {depth is not None}",
                      lambda: pipe.classify(pipe.prepare(image, depth, camera, "fuzz",
                                                         stamp=stamp)))
    finally:
        pipe.close()
    return tally


#: Values a fuzzed record takes instead of its own: other kinds, empty, huge and odd ones.
ODD_VALUES: list[Any] = [None, True, False, 0, -1, 1.5, float("nan"), float("inf"), 10 ** 30,
                         "", " ", "x", "a" * 5000, "\x00", "unknown", "(missed)", "{name}",
                         "{0}", [], {}, [1, 2], {"a": 1}, ["apple"], {"name": "apple"}]
VOCABULARY_KEYS = ["labels", "name", "key", "description", "names", "templates", "enrich"]


def _odd_value(rng: np.random.Generator, depth: int = 0) -> Any:
    """A random value: mostly one of :data:`ODD_VALUES`, else a list or mapping of them."""
    pick = rng.random()
    if depth > 2 or pick < 0.6:
        return ODD_VALUES[int(rng.integers(len(ODD_VALUES)))]
    if pick < 0.8:
        return [_odd_value(rng, depth + 1) for _ in range(int(rng.integers(5)))]
    return {VOCABULARY_KEYS[int(rng.integers(len(VOCABULARY_KEYS)))]: _odd_value(rng, depth + 1)
            for _ in range(int(rng.integers(4)))}


def odd_vocabulary(rng: np.random.Generator) -> Any:
    """A vocabulary document, often broken: a ``labels`` list of entries whose fields take
    odd values, a bare list, or any odd value."""
    if rng.random() < 0.2:
        return _odd_value(rng)
    labels: list[Any] = []
    for _ in range(int(rng.integers(7))):
        if rng.random() < 0.25:
            labels.append(_odd_value(rng))
            continue
        name = "apple" if rng.random() < 0.3 else _odd_value(rng)
        entry: dict[str, Any] = {"name": name}
        for field in ("description", "key", "names"):
            if rng.random() < 0.3:
                entry[field] = _odd_value(rng)
        labels.append(entry)
    return {"labels": labels} if rng.random() < 0.8 else labels


def fuzz_vocabularies(count: int, rng: np.random.Generator) -> Tally:
    """``count`` odd vocabulary documents through ``Vocabulary.from_dict``."""
    from vl_distill_ros.model.vocabulary import Vocabulary, VocabularyError

    tally = Tally()
    for _ in range(count):
        doc = odd_vocabulary(rng)
        tally.run(f"vocabulary {type(doc).__name__}",
                  lambda: Vocabulary.from_dict(doc, "fuzz"), (VocabularyError,))
    return tally


def _record_paths(record: Any, prefix: tuple = ()) -> list[tuple]:
    """The paths (keys and indices) of every value nested in a manifest ``record``."""
    out = [prefix] if prefix else []
    items = record.items() if isinstance(record, dict) else \
        enumerate(record) if isinstance(record, list) else ()
    for key, value in items:
        out += _record_paths(value, prefix + (key,))
    return out


def fuzz_bundles(count: int, rng: np.random.Generator, bundle: Path) -> Tally:
    """``count`` copies of ``bundle`` whose manifest has records replaced or removed,
    through ``load_bundle``."""
    import copy
    import tempfile
    import zipfile

    from vl_distill_ros.model.bundle import BundleError, load_bundle

    with zipfile.ZipFile(bundle) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    manifest = json.loads(members["manifest.json"])
    paths = _record_paths(manifest)
    tally = Tally()
    with tempfile.TemporaryDirectory() as tmp:
        for trial in range(count):
            changed = copy.deepcopy(manifest)
            for _ in range(int(rng.integers(1, 4))):
                path = paths[int(rng.integers(len(paths)))]
                parent = changed
                try:
                    for key in path[:-1]:
                        parent = parent[key]
                    if isinstance(parent, dict) and rng.random() < 0.15:
                        del parent[path[-1]]
                    else:
                        parent[path[-1]] = _odd_value(rng)
                except (KeyError, IndexError, TypeError):
                    pass                          # an earlier change removed the way there
            out = Path(tmp) / f"fuzz{trial % 2}.vdb"
            with zipfile.ZipFile(out, "w") as zf:
                for name, data in members.items():
                    zf.writestr(name, json.dumps(changed).encode()
                                if name == "manifest.json" else data)
            tally.run(f"bundle manifest {'/'.join(map(str, path))}",
                      lambda: load_bundle(out, device="cpu"), (BundleError,))
    return tally


def main(argv: list[str] | None = None) -> int:
    """Run the targets; print one JSON object; 1 when anything failed."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument("--codecs", type=int, default=3000, help="codec trials (0: skip)")
    ap.add_argument("--camera-info", type=int, default=2000,
                    help="CameraInfo trials (0: skip)")
    ap.add_argument("--depth", type=int, default=300, help="depth proposer trials (0: skip)")
    ap.add_argument("--pipeline", type=int, default=100, help="pipeline trials (0: skip)")
    ap.add_argument("--vocabularies", type=int, default=2000,
                    help="vocabulary document trials (0: skip)")
    ap.add_argument("--bundles", type=int, default=40, help="bundle manifest trials (0: skip)")
    ap.add_argument("--bag", type=Path, default=ROOT / "demo" / "sample_tabletop",
                    help="RGB-D bag whose frames the depth target spoils")
    ap.add_argument("--bundle", type=Path,
                    default=ROOT / "vl_distill_ros" / "bundles" / "default_student.vdb",
                    help="bundle whose manifest the bundles target spoils")
    args = ap.parse_args(argv)
    counts = ("codecs", "camera_info", "depth", "pipeline", "vocabularies", "bundles")
    if args.seed < 0 or any(getattr(args, name) < 0 for name in counts):
        ap.error("--seed and the trial counts must be >= 0")
    for option, path, needed in (("--bag", args.bag, args.depth),
                                 ("--bundle", args.bundle, args.bundles)):
        if needed and not path.exists():
            ap.error(f"{option} {path} does not exist")
    rng = np.random.default_rng(args.seed)
    results: dict[str, Any] = {"seed": args.seed}
    if args.codecs:
        results["codecs"] = fuzz_codecs(args.codecs, rng).summary()
    if args.camera_info:
        results["camera_info"] = fuzz_camera_info(args.camera_info, rng).summary()
    if args.depth:
        results["depth"] = fuzz_depth(args.depth, rgbd_frames(args.bag), rng).summary()
    if args.pipeline:
        results["pipeline"] = fuzz_pipeline(args.pipeline, rng).summary()
    if args.vocabularies:
        results["vocabularies"] = fuzz_vocabularies(args.vocabularies, rng).summary()
    if args.bundles:
        results["bundles"] = fuzz_bundles(args.bundles, rng, args.bundle).summary()
    failed = sum(len(v["failures"]) for v in results.values() if isinstance(v, dict))
    results["failed"] = failed
    print(json.dumps(results, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
