"""Pre-rendered camera frames for the node benches (not a bench: ``make bench`` skips it).

:func:`make_frames`: synthetic coloured shapes with soft shadows on a wood texture
(numpy/OpenCV) or rendered YCB scenes (``vl_distill_ros.sim.scene``), and
:func:`offline_proposals`, what the node's proposer finds on them.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import BenchError

#: Saturated object colours (RGB), none close to a wooden table.
PALETTE = [(200, 30, 35), (30, 80, 200), (40, 160, 60), (240, 210, 40), (130, 40, 160),
           (240, 120, 20), (20, 170, 190), (230, 230, 235), (25, 25, 30), (220, 60, 150),
           (120, 200, 40), (90, 90, 100), (0, 110, 110), (250, 170, 190), (60, 40, 120),
           (180, 180, 40)]


def yaml_value(text: str) -> Any:
    """A ``-p`` value text read as YAML (the text itself when it is not YAML)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


# ==========================================================================================
# frames
# ==========================================================================================
def _shape_mask(kind: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    import cv2

    m = np.zeros((h, w), np.uint8)
    if kind == "rect":
        cv2.rectangle(m, (0, 0), (w - 1, h - 1), 255, -1)
    elif kind == "rounded":  # a bottle/can seen from the side
        r = max(2, min(h, w) // 4)
        cv2.rectangle(m, (r, 0), (w - 1 - r, h - 1), 255, -1)
        cv2.rectangle(m, (0, r), (w - 1, h - 1 - r), 255, -1)
        for cx, cy in ((r, r), (w - 1 - r, r), (r, h - 1 - r), (w - 1 - r, h - 1 - r)):
            cv2.circle(m, (cx, cy), r, 255, -1)
    elif kind == "ellipse":
        cv2.ellipse(m, (w // 2, h // 2), (w // 2 - 1, h // 2 - 1), 0, 0, 360, 255, -1)
    elif kind == "rotated":
        angle = float(rng.uniform(15, 40))
        box = cv2.boxPoints(((w / 2, h / 2), (w * 0.62, h * 0.62), angle))
        cv2.fillPoly(m, [np.round(box).astype(np.int32)], 255)
    else:  # polygon
        n = int(rng.integers(3, 7))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n)) if n > 3 else np.array([0.3, 2.4, 4.3])
        pts = np.stack([w / 2 + (w / 2 - 2) * np.cos(ang), h / 2 + (h / 2 - 2) * np.sin(ang)], 1)
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 255)
    return m


def synthetic_tabletop_frames(n: int, k: int, width: int = 640, height: int = 480,
                              seed: int = 0, grain: float = 0.2
                              ) -> list[tuple[np.ndarray, list[tuple[int, ...]]]]:
    """``n`` frames of ``k`` distinct coloured shapes on a wood-textured table, with a soft
    shadow each; returns ``[(rgb uint8 image, [object boxes (x, y, w, h)]), ...]``."""
    import cv2

    from vl_distill_ros.sim.backgrounds import make_background

    rng = np.random.default_rng(seed)
    frames = []
    kinds = ("rect", "rounded", "ellipse", "rotated", "polygon")
    margin = max(24, min(width, height) // 14)
    for _ in range(n):
        side = max(width, height)
        tex = make_background("wood", side, rng, noise_sigma=0.0)
        table = cv2.resize(tex, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)
        mean = table.reshape(-1, 3).mean(0)
        table = mean + grain * (table - mean)  # a finished table top: subtle grain
        # a gentle lighting gradient across the table
        gy, gx = np.mgrid[0:height, 0:width].astype(np.float32)
        table *= (0.92 + 0.12 * gx / width - 0.04 * gy / height)[..., None]
        img = table.copy()
        cols = max(1, math.ceil(math.sqrt(k * width / height)))
        rows = max(1, math.ceil(k / cols))
        cw = (width - 2 * margin) / cols
        ch = (height - 2 * margin) / rows
        cells = rng.permutation(rows * cols)[:k]
        colours = rng.permutation(len(PALETTE))
        boxes = []
        for j, cell in enumerate(cells):
            r, c = divmod(int(cell), cols)
            ow = int(cw * rng.uniform(0.45, 0.75))
            oh = int(ch * rng.uniform(0.45, 0.75))
            x = int(margin + c * cw + rng.uniform(0.1, 0.9) * (cw - ow))
            y = int(margin + r * ch + rng.uniform(0.1, 0.9) * (ch - oh))
            mask = _shape_mask(kinds[j % len(kinds)] if k <= len(kinds)
                               else kinds[int(rng.integers(len(kinds)))], oh, ow, rng)
            mf = mask.astype(np.float32) / 255.0
            # shadow: the silhouette shifted down-right, blurred, darkening the table
            sh = np.zeros((height, width), np.float32)
            dx, dy = int(ow * 0.08) + 3, int(oh * 0.08) + 3
            y0, x0 = min(height, y + dy), min(width, x + dx)
            sh[y0:y0 + oh, x0:x0 + ow] = mf[:max(0, min(oh, height - y0)),
                                            :max(0, min(ow, width - x0))]
            sh = cv2.GaussianBlur(sh, (0, 0), 4.0)
            img *= (1.0 - 0.35 * sh)[..., None]
            colour = np.array(PALETTE[int(colours[j % len(PALETTE)])], np.float32)
            shade = np.linspace(1.08, 0.82, ow, dtype=np.float32)[None, :, None]
            obj = np.broadcast_to(colour, (oh, ow, 3)) * shade
            if rng.random() < 0.5:  # a printed label band
                b0 = int(oh * rng.uniform(0.3, 0.5))
                obj = obj.copy()
                obj[b0:b0 + max(2, oh // 6)] = obj[b0:b0 + max(2, oh // 6)] * 0.3 + 170
            region = img[y:y + oh, x:x + ow]
            region[:] = region * (1 - mf[..., None]) + obj * mf[..., None]
            ys, xs = np.nonzero(mask)
            boxes.append((x + int(xs.min()), y + int(ys.min()), int(xs.max() - xs.min() + 1),
                          int(ys.max() - ys.min() + 1)))
        img += rng.normal(0.0, 2.0, img.shape).astype(np.float32)
        frames.append((np.clip(img + 0.5, 0, 255).astype(np.uint8), boxes))
    return frames


def ycb_frames(n: int, k: int, models: Path, width: int = 640, height: int = 480,
               seed: int = 0) -> list[tuple[np.ndarray, list[tuple[int, ...]]]]:
    """``n`` rendered YCB tabletop scenes with ``k`` objects (needs pybullet + the models)."""
    from vl_distill_ros.sim.scene import SceneRenderer, SceneSpec, render_scene

    if not 1 <= k <= 10:
        raise BenchError(f"--scene ycb places 1..10 objects, got --objects {k}")
    rng = np.random.default_rng(seed)
    spec = SceneSpec(width=width, height=height, objects_per_scene=(k, k))
    out = []
    with SceneRenderer(models) as renderer:
        for _ in range(n):
            frame = render_scene(renderer, renderer.keys, rng, spec)
            out.append((frame.image, [tuple(int(v) for v in o.bbox) for o in frame.objects]))
    return out


def make_frames(scene: str, n: int, k: int, width: int, height: int, seed: int,
                ycb_models: Path) -> tuple[list, str]:
    if scene == "ycb":
        if not ycb_models.is_dir():
            raise BenchError(f"--scene ycb: no models folder {ycb_models} (--ycb-models)")
        try:
            return ycb_frames(n, k, ycb_models, width, height, seed), f"ycb ({ycb_models})"
        except BenchError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. pybullet missing
            raise BenchError(f"--scene ycb: rendering failed: {exc}") from None
    return synthetic_tabletop_frames(n, k, width, height, seed), "synthetic shapes on wood"


def rgbd_frames(scene: str, n: int, k: int, width: int, height: int, seed: int,
                ycb_models: Path, bag: Path | None = None) -> tuple[list, str]:
    """``n`` RGB-D frames ``(rgb, boxes, depth m, (fx, fy, cx, cy))`` and a description:
    rendered YCB scenes with the renderer's registered depth and its RealSense-like noise
    model (``scene`` ``ycb``, as ``vl-distill make-bag --depth``), or the first ``n``
    frames with depth of an RGB-D ``bag`` (``scene`` ``bag``; its own size). A bag recorded
    without alignment (``make-bag --depth --depth-camera``) keeps its depth camera's own
    images: the depth is then an ``UnalignedDepth`` (its image, camera and pose)."""
    if scene == "bag":
        from vl_distill_ros.bags.bag_io import BagError, read_camera_bag

        if bag is None:
            raise BenchError("--scene bag needs --bag BAG")
        out = []
        try:
            contents = read_camera_bag(bag)
            for msg in contents.rgbd_frames(tolerance_ns=20_000_000, defer_alignment=True):
                if msg.depth is None or msg.camera_info is None:
                    continue
                objs = contents.objects_for(msg.topic, msg.stamp_ns) or []
                out.append((msg.image, [tuple(int(v) for v in o.bbox) for o in objs],
                            msg.depth, tuple(msg.camera_info[:4])))
                if len(out) >= n:
                    break
        except (OSError, BagError) as exc:
            raise BenchError(f"--bag {bag}: {exc}") from None
        if not out:
            raise BenchError(f"--bag {bag}: no colour frame with depth and CameraInfo "
                             "(write one with `vl-distill make-bag --depth`)")
        return out, f"RGB-D bag {bag}"
    if scene != "ycb":
        raise BenchError("--depth needs RGB-D frames: --scene ycb (rendered) or --scene bag "
                         "--bag BAG")
    if not ycb_models.is_dir():
        raise BenchError(f"--scene ycb: no models folder {ycb_models} (--ycb-models)")
    from vl_distill_ros.sim.depth_noise import NOISE_MODELS, apply_depth_noise
    from vl_distill_ros.sim.scene import SceneRenderer, SceneSpec, render_scene

    if not 1 <= k <= 10:
        raise BenchError(f"--scene ycb places 1..10 objects, got --objects {k}")
    rng = np.random.default_rng(seed)
    spec = SceneSpec(width=width, height=height, objects_per_scene=(k, k), depth=True)
    frames = []
    with SceneRenderer(ycb_models) as renderer:
        for _ in range(n):
            f = render_scene(renderer, renderer.keys, rng, spec)
            frames.append((f.image, [tuple(int(v) for v in o.bbox) for o in f.objects],
                           apply_depth_noise(f.depth, rng, NOISE_MODELS["sensor"]),
                           tuple(f.intrinsics)))
    return frames, f"ycb with depth, sensor noise ({ycb_models})"


def offline_proposals(frames: list, params: dict[str, str]) -> tuple[list[int], list[float]]:
    """How many boxes the node's colour proposer gives for each frame (its settings from
    ``-p``), and how long each frame took (ms, in this process, the box network loaded
    before the first): a measure of the host's speed at the time, before the node starts."""
    from vl_distill_ros.perception.proposals import propose_boxes
    from vl_distill_ros.perception.proposal_config import ProposalConfig

    kw = {}
    for key, field in (("proposal_min_area_frac", "min_area_frac"),
                       ("proposal_max_area_frac", "max_area_frac"),
                       ("proposal_max_count", "max_count"), ("proposal_pad_frac", "pad_frac")):
        if key in params:
            kw[field] = yaml_value(params[key])
    cfg = ProposalConfig(**kw)
    if frames:
        propose_boxes(frames[0][0], cfg)      # loads the box network
    counts, times = [], []
    for fr in frames:
        t0 = time.perf_counter()
        counts.append(len(propose_boxes(fr[0], cfg)))
        times.append(1000.0 * (time.perf_counter() - t0))
    return counts, times
