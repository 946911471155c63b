"""The teacher interface: a vision-language model with aligned image and text encoders."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np
import torch

#: Images handed to a teacher: RGB uint8 arrays of shape (H, W, 3), any size.
ImageBatch = Sequence[np.ndarray]


class TeacherWeightsMissing(RuntimeError):
    """A teacher's weights are neither cached locally nor downloadable; says what to fetch."""


class Teacher(ABC):
    """A vision-language teacher.

    Both encoders return L2-normalised float32 tensors in the same ``embed_dim`` space.
    ``id`` names the model and its weights exactly; caches and bundles are keyed by it.
    """

    #: Exact identity of model + weights + any setting that changes the embeddings.
    id: str
    #: Embedding dimension D.
    embed_dim: int
    #: Side (pixels) of the square image the image encoder works at; training crops shown
    #: to the teacher (``loss.teacher_targets: consistent``) are made at this size.
    input_size: int = 224

    @abstractmethod
    def encode_images(self, images: ImageBatch) -> torch.Tensor:
        """Embed RGB uint8 (H, W, 3) images -> (N, D), L2-normalised, on the CPU."""

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed strings -> (M, D), L2-normalised, on the CPU."""

    def to(self, device: str | torch.device) -> "Teacher":
        """Move the teacher's networks to ``device`` (default: no-op)."""
        return self

    def cut_texts(self, texts: Sequence[str]) -> list[int]:
        """Indices of ``texts`` longer than the text encoder's context, of which it embeds
        only the beginning (default: none known)."""
        return []
