"""Batched training augmentation on uint8 image tensors (CPU or GPU).

:class:`CropAugment` does the geometric part (random resized crop, flip) and colour jitter;
with an :class:`~vl_distill_ros.config.AugmentConfig` it adds the photometric and sensor
effects of real cameras (white balance, exposure, defocus and motion blur, noise, JPEG) and
loose or cut crops.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ..model.student import InputSpec

if TYPE_CHECKING:  # pragma: no cover
    from ..config import AugmentConfig


def normalize(batch_uint8_nhwc: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float normalised by ``spec``."""
    x = batch_uint8_nhwc.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(spec.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class CropAugment:
    """Random resized crop, horizontal flip and colour jitter, then resize to the input size.

    Mirrors what the node sees: loosely framed crops under varying light. Deterministic for
    a given ``generator``. ``aug`` (:class:`~vl_distill_ros.config.AugmentConfig`) adds
    sensor effects and loose/cut crops; with none of them on, the output (and the draws from
    ``generator``) are exactly those without it.
    """

    def __init__(self, spec: InputSpec, scale: tuple[float, float] = (0.55, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), jitter: float = 0.3,
                 aug: "AugmentConfig | None" = None) -> None:
        self.spec = spec
        self.scale = scale
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.jitter = jitter
        self.aug = aug if aug is not None and aug.active else None

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, 3, S, S) normalised float."""
        return self.with_teacher_view(images, generator, 0)[0]

    def with_teacher_view(self, images: torch.Tensor, generator: torch.Generator,
                          teacher_size: int) -> tuple[torch.Tensor, np.ndarray | None]:
        """As :meth:`__call__`, and (``teacher_size`` > 0) the same views for the teacher:
        (N, T, T, 3) uint8, the same crop, flip and loose or cut framing resized to
        ``teacher_size``, without colour jitter or sensor effects (None when 0). The
        student's crops and the generator's draws are the same either way."""
        n, h, w, _ = images.shape
        size = self.spec.image_size
        x = images.permute(0, 3, 1, 2).float().div_(255.0)
        out = torch.empty(n, 3, size, size, device=x.device)
        views = (np.empty((n, teacher_size, teacher_size, 3), np.uint8) if teacher_size > 0
                 else None)
        r = torch.rand(n, 6, generator=generator)
        extra = None
        if self.aug is not None:  # its own stream: the draws above stay as without it
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
            extra = np.random.default_rng(seed)
        for i in range(n):
            img = x[i:i + 1]
            scale = self.scale
            if extra is not None:
                img, scale = self._loose_or_cut(img, extra)
            h, w = img.shape[-2:]
            area = h * w * (scale[0] + (scale[1] - scale[0]) * r[i, 0].item())
            lo, hi = self.log_ratio
            aspect = math.exp(lo + (hi - lo) * r[i, 1].item())
            cw = int(round(math.sqrt(area * aspect)))
            ch = int(round(math.sqrt(area / aspect)))
            cw, ch = max(8, min(w, cw)), max(8, min(h, ch))
            x0 = int(r[i, 2].item() * (w - cw + 1)) if w > cw else 0
            y0 = int(r[i, 3].item() * (h - ch + 1)) if h > ch else 0
            region = img[:, :, y0:y0 + ch, x0:x0 + cw]
            crop = F.interpolate(region, size=(size, size), mode="bilinear",
                                 align_corners=False, antialias=True)
            flip = r[i, 4].item() < 0.5
            if flip:
                crop = crop.flip(-1)
            out[i] = crop[0]
            if views is not None:
                view = F.interpolate(region, size=(teacher_size, teacher_size), mode="bilinear",
                                     align_corners=False, antialias=True)[0]
                view = view.flip(-1) if flip else view
                views[i] = (view.clamp(0, 1) * 255.0 + 0.5).byte().permute(1, 2, 0).cpu().numpy()
        if self.jitter > 0:
            j = self.jitter
            u = torch.rand(n, 3, generator=generator).to(x.device) * 2 * j + (1 - j)
            out = out * u[:, 0].view(n, 1, 1, 1)  # brightness
            mean = out.mean(dim=(1, 2, 3), keepdim=True)
            out = (out - mean) * u[:, 1].view(n, 1, 1, 1) + mean  # contrast
            gray = out.mean(dim=1, keepdim=True)
            out = (out - gray) * u[:, 2].view(n, 1, 1, 1) + gray  # saturation
            out = out.clamp_(0.0, 1.0)
        if extra is not None:
            out = self._sensor(out, extra)
        mean = torch.tensor(self.spec.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.spec.std, device=x.device).view(1, 3, 1, 1)
        return (out - mean) / std, views

    def _loose_or_cut(self, img: torch.Tensor, rng: np.random.Generator
                      ) -> tuple[torch.Tensor, tuple[float, float]]:
        """A loose crop (the image padded with its edge pixels first) or a cut crop (a small
        area scale), or neither; returns the image to crop from and the area scale range."""
        aug = self.aug
        assert aug is not None
        if aug.loose_prob > 0 and rng.random() < aug.loose_prob:
            h, w = img.shape[-2:]
            px = int(round(rng.uniform(0.0, aug.loose_pad) * w))
            py = int(round(rng.uniform(0.0, aug.loose_pad) * h))
            if px or py:
                img = F.pad(img, (px, px, py, py), mode="replicate")
            return img, (0.8, 1.0)
        if aug.cut_prob > 0 and rng.random() < aug.cut_prob:
            return img, (float(aug.cut_scale[0]), float(aug.cut_scale[1]))
        return img, self.scale

    def _sensor(self, out: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """White balance, exposure, dimming, blur, noise and JPEG on (N, 3, S, S) floats in
        [0, 1]."""
        aug = self.aug
        assert aug is not None
        n = out.shape[0]
        if aug.white_balance > 0:
            gains = rng.uniform(1 - aug.white_balance, 1 + aug.white_balance, (n, 3, 1, 1))
            out = out * torch.as_tensor(gains, dtype=out.dtype, device=out.device)
        if aug.exposure > 0:
            gamma = np.exp(rng.uniform(-1.0, 1.0, (n, 1, 1, 1)) * math.log1p(aug.exposure))
            out = out.clamp(1e-6, 1.0) ** torch.as_tensor(gamma, dtype=out.dtype,
                                                          device=out.device)
        out = out.clamp(0.0, 1.0)
        if aug.dim_prob > 0:   # drawn for every crop, so the streams stay aligned
            dim = rng.random(n) < aug.dim_prob
            gain = np.where(dim, rng.uniform(aug.dim_gain[0], aug.dim_gain[1], n), 1.0)
            out = out * torch.as_tensor(gain.reshape(n, 1, 1, 1), dtype=out.dtype,
                                        device=out.device)
        for i in range(n):
            if aug.blur_prob > 0 and rng.random() < aug.blur_prob:
                out[i] = _gaussian_blur(out[i], float(rng.uniform(*aug.blur_sigma)))
        for i in range(n):
            if aug.motion_blur_prob > 0 and rng.random() < aug.motion_blur_prob:
                length = int(rng.integers(aug.motion_blur_px[0], aug.motion_blur_px[1] + 1))
                out[i] = _motion_blur(out[i], length, float(rng.uniform(0.0, 180.0)))
        if aug.noise_sigma > 0:
            sigma = rng.uniform(0.0, aug.noise_sigma, (n, 1, 1, 1))
            noise = rng.standard_normal(out.shape).astype(np.float32) * sigma
            out = (out + torch.as_tensor(noise, dtype=out.dtype, device=out.device)).clamp(0, 1)
        for i in range(n):
            if aug.jpeg_prob > 0 and rng.random() < aug.jpeg_prob:
                out[i] = _jpeg(out[i], int(rng.integers(aug.jpeg_quality[0],
                                                        aug.jpeg_quality[1] + 1)))
        return out


def _gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """(3, H, W) blurred with a separable Gaussian of ``sigma`` pixels (reflect borders)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=img.dtype, device=img.device)
    k = torch.exp(-0.5 * (t / max(sigma, 1e-3)) ** 2)
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    x = F.pad(img[None], (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, k, groups=3)
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(x, k.transpose(2, 3), groups=3)[0]


def motion_kernel(length: int, angle_deg: float) -> np.ndarray:
    """A normalised line kernel ``length`` pixels long at ``angle_deg`` (a linear motion
    blur)."""
    import cv2

    k = np.zeros((length, length), np.float32)
    k[length // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), angle_deg, 1.0)
    k = cv2.warpAffine(k, rot, (length, length), flags=cv2.INTER_LINEAR)
    return k / max(float(k.sum()), 1e-6)


def _motion_blur(img: torch.Tensor, length: int, angle_deg: float) -> torch.Tensor:
    """(3, H, W) blurred along a line ``length`` pixels long at ``angle_deg`` (replicated
    borders), centred: an even length is rounded up to the next odd one; below 2 the image
    is left as it is."""
    if length < 2:
        return img
    length += 1 - length % 2
    k = torch.as_tensor(motion_kernel(length, angle_deg), dtype=img.dtype, device=img.device)
    r = length // 2
    x = F.pad(img[None], (r, r, r, r), mode="replicate")
    return F.conv2d(x, k.view(1, 1, length, length).repeat(3, 1, 1, 1), groups=3)[0]


def _jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    """(3, H, W) in [0, 1] through a JPEG encode/decode at ``quality`` (OpenCV)."""
    import cv2

    arr = (img.permute(1, 2, 0).cpu().numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(arr[..., ::-1]),
                           [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        return img
    back = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(back)).permute(2, 0, 1).to(img.device, img.dtype)


def mix_views(x: torch.Tensor, views: np.ndarray, labels: torch.Tensor, prob: float,
              alpha: float, generator: torch.Generator, labelled: bool = True
              ) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """Mixup of a batch's views, the student's and the teacher's alike.

    Each row is, with probability ``prob``, blended with another row of the batch (a
    random partner, never itself): ``lam * row + (1 - lam) * partner`` with ``lam`` drawn
    from Beta(``alpha``, ``alpha``), the same ``lam`` and partner for the student's
    normalised ``x`` (N, 3, S, S) and the teacher's uint8 ``views`` (N, T, T, 3), so the
    teacher embeds exactly the blend the student is shown. Blended rows get the label
    ``-1`` (no single name fits them). With ``labelled`` False only unlabelled rows
    (label ``-1``) are blended, so every labelled view keeps its label. Returns new
    tensors; the inputs are left as they are. Deterministic for a given ``generator``.
    """
    n = x.shape[0]
    if prob <= 0 or n < 2:
        return x, views, labels
    pick = torch.rand(n, generator=generator) < prob
    if not labelled:
        pick &= labels.cpu() < 0
    partner = (torch.arange(n) + torch.randint(1, n, (n,), generator=generator)) % n
    beta = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha)))
    # torch's Beta sampler takes no generator: draw from a forked global RNG seeded by ours
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        lam = beta.sample((n,))
    lam = torch.where(pick, lam, torch.ones(n))
    lx = lam.to(x.device, x.dtype).view(n, 1, 1, 1)
    mixed_x = lx * x + (1 - lx) * x[partner.to(x.device)]
    lv = lam.numpy().astype(np.float32).reshape(n, 1, 1, 1)
    v = views.astype(np.float32)
    mixed_views = np.clip(lv * v + (1 - lv) * v[partner.numpy()] + 0.5, 0, 255).astype(np.uint8)
    new_labels = torch.where(pick.to(labels.device), torch.full_like(labels, -1), labels)
    return mixed_x, mixed_views, new_labels
