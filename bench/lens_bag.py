#!/usr/bin/env python3
"""Write a copy of an RGB-D camera bag as a wide lens with radial distortion would see it.

Each main-camera frame of ``BAG`` with ground truth and depth is resampled into a camera
with the same focal lengths and a ``plumb_bob`` lens (``--k1``, ``--k2``): the output is the
largest centred frame the source covers (a barrel lens, k1 < 0, sees further out at the
corners than a pinhole camera of the same focal length), colour bilinear, depth nearest (no
depth mixed across an object's edge; depth along the optical axis is the same for the same
ray), and each ground-truth box moved through the lens (the bounds of its four edges,
sampled every pixel; objects left with a side under ``MIN_SIDE`` pixels are dropped). The
CameraInfo carries the lens, or with ``--hide-lens`` no distortion: a driver or user that
publishes unrectified images with a pinhole CameraInfo. Score both copies with
``vl-distill replay-eval OUT --offline`` to see what following the lens model is worth:

    .venv/bin/python bench/lens_bag.py BAG OUT --k1 -0.15 --k2 0.02 [--hide-lens]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
from _common import finite_float, write_first_or_refuse

#: Ground-truth boxes narrower or shorter than this (pixels) after the lens are dropped.
MIN_SIDE = 8

Camera = tuple[float, float, float, float, int, int]   # fx, fy, cx, cy, width, height


def _kmat(cam: Camera) -> np.ndarray:
    fx, fy, cx, cy = cam[:4]
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def source_pixels(src: Camera, out: Camera, d: Sequence[float], u: np.ndarray,
                  v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the source (pinhole) camera sees the rays the lens bends onto output pixels
    ``(u, v)``."""
    pix = np.stack([u.ravel(), v.ravel()], 1).astype(np.float64).reshape(-1, 1, 2)
    rays = cv2.undistortPoints(pix, _kmat(out), np.asarray(d, np.float64), None, None, None, (
        cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 1e-9)).reshape(-1, 2)
    return (src[0] * rays[:, 0] + src[2]).reshape(u.shape), \
        (src[1] * rays[:, 1] + src[3]).reshape(v.shape)


def lens_camera(src: Camera, d: Sequence[float]) -> Camera:
    """The output camera: the source's focal lengths, centred, the largest even size (in
    1% steps) whose every pixel the source frame covers."""
    fx, fy, _, _, width, height = src
    for scale in np.arange(1.0, 0.3, -0.01):
        w, h = int(round(width * scale / 2)) * 2, int(round(height * scale / 2)) * 2
        out = (fx, fy, (w - 1) / 2.0, (h - 1) / 2.0, w, h)
        u = np.array([0.0, w - 1, 0.0, w - 1, (w - 1) / 2, (w - 1) / 2, 0.0, w - 1])
        v = np.array([0.0, 0.0, h - 1, h - 1, 0.0, h - 1, (h - 1) / 2, (h - 1) / 2])
        su, sv = source_pixels(src, out, d, u, v)
        if su.min() >= 0 and sv.min() >= 0 and su.max() <= width - 1 and sv.max() <= height - 1:
            return out
    raise ValueError(f"the lens {list(d)} bends the rays too far for a {width}x{height} frame")


def warp_maps(src: Camera, out: Camera, d: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` maps from the source frame to the output (lens) frame."""
    v, u = np.mgrid[0:out[5], 0:out[4]].astype(np.float64)
    su, sv = source_pixels(src, out, d, u, v)
    return su.astype(np.float32), sv.astype(np.float32)


def warp_box(box: Sequence[int], src: Camera, out: Camera,
             d: Sequence[float]) -> tuple[int, int, int, int] | None:
    """A source box ``(x, y, w, h)`` moved through the lens, clipped to the output frame;
    ``None`` when a side is left under :data:`MIN_SIDE`."""
    x, y, w, h = (float(v) for v in box)
    xs, ys = np.arange(x, x + w), np.arange(y, y + h)
    u = np.concatenate([xs, xs, np.full(ys.size, x), np.full(ys.size, x + w - 1)])
    v = np.concatenate([np.full(xs.size, y), np.full(xs.size, y + h - 1), ys, ys])
    rays = np.stack([(u - src[2]) / src[0], (v - src[3]) / src[1], np.ones_like(u)], 1)
    pix = cv2.projectPoints(rays.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), _kmat(out),
                            np.asarray(d, np.float64))[0].reshape(-1, 2)
    x0, y0 = max(0, int(np.floor(pix[:, 0].min() + 0.5))), max(0, int(np.floor(
        pix[:, 1].min() + 0.5)))
    x1 = min(out[4] - 1, int(np.floor(pix[:, 0].max() + 0.5)))
    y1 = min(out[5] - 1, int(np.floor(pix[:, 1].max() + 0.5)))
    if x1 - x0 + 1 < MIN_SIDE or y1 - y0 + 1 < MIN_SIDE:
        return None
    return x0, y0, x1 - x0 + 1, y1 - y0 + 1


def lens_frames(bag: str | Path, k1: float, k2: float, hide_lens: bool = False) -> Iterator:
    """The ``BagFrame`` of every frame of ``bag`` with ground truth and depth, seen through
    the lens ``(k1, k2)`` (see the module docstring)."""
    from vl_distill_ros.bags.bag_io import BagFrame, BagTopics, GroundTruthObject, \
        read_camera_bag

    d = [float(k1), float(k2), 0.0, 0.0, 0.0]
    contents = read_camera_bag(bag)
    cache: dict[Camera, tuple[Camera, np.ndarray, np.ndarray]] = {}
    for msg in contents.rgbd_frames([BagTopics().camera], tolerance_ns=20_000_000):
        objects = contents.objects_for(msg.topic, msg.stamp_ns)
        if objects is None or msg.depth is None or msg.camera_info is None:
            continue
        src = tuple(float(v) for v in msg.camera_info[:4]) + tuple(msg.camera_info[4:])
        if src not in cache:
            out = lens_camera(src, d)
            cache[src] = (out, *warp_maps(src, out, d))
        out, mx, my = cache[src]
        image = cv2.remap(msg.image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        depth = cv2.remap(msg.depth.astype(np.float32), mx, my, cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        truth = []
        for o in objects:
            box = warp_box(o.bbox, src, out, d)
            if box is not None:
                truth.append(GroundTruthObject(box, o.label, o.key))
        yield BagFrame(msg.stamp_ns, image, truth, depth=depth, intrinsics=out[:4],
                       lens=None if hide_lens else ("plumb_bob", d))


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and write the copy."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bag", help="RGB-D camera bag with ground truth (make-bag --depth output)")
    ap.add_argument("out", help="folder of the copy (must not exist)")
    ap.add_argument("--k1", type=finite_float, default=-0.15, help="radial coefficient k1")
    ap.add_argument("--k2", type=finite_float, default=0.02, help="radial coefficient k2")
    ap.add_argument("--hide-lens", action="store_true",
                    help="write a distortion-free CameraInfo (the pinhole assumption)")
    args = ap.parse_args(argv)
    from vl_distill_ros.bags.bag_io import BagError

    try:
        status = write_first_or_refuse(
            args.out, lens_frames(args.bag, args.k1, args.k2, args.hide_lens), "lens_bag",
            f"{args.bag} has no frame of the main camera with ground truth and depth")
        if status:
            return status
    except (BagError, OSError, ValueError) as exc:
        print(f"lens_bag: {exc}", file=sys.stderr)
        return 2
    print(f"lens_bag: wrote {args.out} (k1 {args.k1:g}, k2 {args.k2:g}"
          f"{', lens hidden' if args.hide_lens else ''})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
