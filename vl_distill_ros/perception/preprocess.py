"""Crop preprocessing shared by training evaluation, the node and replay evaluation."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ..model.student import InputSpec


#: The longest aspect (long side over short side) the student saw stretched to its square
#: input: training's random resized crops draw aspects from 3/4 to 4/3
#: (``training.augment.CropAugment``'s ``ratio``).
MAX_STRETCH_ASPECT = 4.0 / 3.0
#: Longest side (pixels) of the square :func:`pad_long_crop` makes: a longer crop is shrunk
#: to it first, so that a thin frame (4 x 12000 pixels) is not padded to a 12000-pixel
#: square (430 MB) on its way to the student's 160-pixel input.
MAX_PADDED_SIDE = 1024


class ImageInputError(ValueError):
    """An image or crop cannot be given to the network; the message says why."""


def pad_long_crop(image: np.ndarray, max_aspect: float = MAX_STRETCH_ASPECT,
                  max_side: int = MAX_PADDED_SIDE) -> np.ndarray:
    """A crop longer than ``max_aspect`` padded to a square with its edge pixels (as
    training pads its loose crops), so that resizing it to the square input does not
    stretch it beyond what the student saw; other crops unchanged. A crop longer than
    ``max_side`` is first shrunk (area filter, aspect kept) to that length, which bounds the
    square's memory whatever the frame's shape."""
    h, w = image.shape[:2]
    if min(h, w) == 0 or max(h, w) <= max_aspect * min(h, w):
        return image
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        image = cv2.resize(image, (max(1, min(max_side, round(w * scale))),
                                   max(1, min(max_side, round(h * scale)))),
                           interpolation=cv2.INTER_AREA)
        h, w = image.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    return cv2.copyMakeBorder(image, top, side - h - top, left, side - w - left,
                              cv2.BORDER_REPLICATE)


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB uint8 crop to ``size`` x ``size`` (area filter when shrinking)."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageInputError(f"expected an RGB image of shape (H, W, 3), got {image.shape}")
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise ImageInputError(f"empty crop of shape {image.shape}")
    if (h, w) == (size, size):
        return image
    interp = cv2.INTER_AREA if (h > size or w > size) else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def preprocess_crops(crops: Sequence[np.ndarray], spec: InputSpec) -> np.ndarray:
    """RGB uint8 crops -> one float32 batch (N, 3, S, S) normalised by ``spec``."""
    size = spec.image_size
    # Each crop is resized, then written straight into its NCHW slot of the output: no
    # stacked HWC copy and no final transpose copy (~3x faster than stack + normalise +
    # transpose, bit-identical: the same float32 subtract and divide per element).
    out = np.empty((len(crops), 3, size, size), np.float32)
    mean = (np.asarray(spec.mean, np.float32) * 255.0)[:, None, None]
    std = (np.asarray(spec.std, np.float32) * 255.0)[:, None, None]
    for i, crop in enumerate(crops):
        img = resize_square(np.ascontiguousarray(crop), size)
        if spec.channels == "BGR":
            img = img[..., ::-1]
        np.subtract(img.transpose(2, 0, 1), mean, out=out[i], dtype=np.float32)
        np.divide(out[i], std, out=out[i])
    return out
