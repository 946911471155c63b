"""The zero-shot classifier builder: label prompts -> one text embedding per label."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .vocabulary import DEFAULT_TEMPLATES, Vocabulary, build_prompts

EncodeTexts = Callable[[Sequence[str]], torch.Tensor]


def build_zero_shot_classifier(encode_texts: EncodeTexts, vocabulary: Vocabulary,
                               templates: Sequence[str] = DEFAULT_TEMPLATES,
                               enrich: bool = True) -> torch.Tensor:
    """Return (L, D) L2-normalised class embeddings, the mean over templates per label.

    With ``enrich`` each prompt is followed by the label's appearance description.
    """
    prompts = [p for label in vocabulary for p in build_prompts(label, templates, enrich)]
    emb = encode_texts(prompts).float()
    emb = F.normalize(emb, dim=-1).view(len(vocabulary), len(templates), -1).mean(dim=1)
    return F.normalize(emb, dim=-1)
