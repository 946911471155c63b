"""Batched training augmentation on uint8 image tensors (CPU or GPU)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..model.student import InputSpec


def normalize(batch_uint8_nhwc: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float normalised by ``spec``."""
    x = batch_uint8_nhwc.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(spec.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class CropAugment:
    """Random resized crop, horizontal flip and colour jitter, then resize to the input size.

    Mirrors what the node sees: loosely framed crops under varying light. Deterministic for
    a given ``generator``.
    """

    def __init__(self, spec: InputSpec, scale: tuple[float, float] = (0.55, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), jitter: float = 0.3) -> None:
        self.spec = spec
        self.scale = scale
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.jitter = jitter

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, 3, S, S) normalised float."""
        n, h, w, _ = images.shape
        size = self.spec.image_size
        x = images.permute(0, 3, 1, 2).float().div_(255.0)
        out = torch.empty(n, 3, size, size, device=x.device)
        r = torch.rand(n, 6, generator=generator)
        for i in range(n):
            area = h * w * (self.scale[0] + (self.scale[1] - self.scale[0]) * r[i, 0].item())
            lo, hi = self.log_ratio
            aspect = math.exp(lo + (hi - lo) * r[i, 1].item())
            cw = int(round(math.sqrt(area * aspect)))
            ch = int(round(math.sqrt(area / aspect)))
            cw, ch = max(8, min(w, cw)), max(8, min(h, ch))
            x0 = int(r[i, 2].item() * (w - cw + 1)) if w > cw else 0
            y0 = int(r[i, 3].item() * (h - ch + 1)) if h > ch else 0
            crop = x[i:i + 1, :, y0:y0 + ch, x0:x0 + cw]
            crop = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False,
                                 antialias=True)
            if r[i, 4].item() < 0.5:
                crop = crop.flip(-1)
            out[i] = crop[0]
        if self.jitter > 0:
            j = self.jitter
            u = torch.rand(n, 3, generator=generator).to(x.device) * 2 * j + (1 - j)
            out = out * u[:, 0].view(n, 1, 1, 1)  # brightness
            mean = out.mean(dim=(1, 2, 3), keepdim=True)
            out = (out - mean) * u[:, 1].view(n, 1, 1, 1) + mean  # contrast
            gray = out.mean(dim=1, keepdim=True)
            out = (out - gray) * u[:, 2].view(n, 1, 1, 1) + gray  # saturation
            out = out.clamp_(0.0, 1.0)
        mean = torch.tensor(self.spec.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.spec.std, device=x.device).view(1, 3, 1, 1)
        return (out - mean) / std
