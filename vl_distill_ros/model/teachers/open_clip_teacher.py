"""The production teacher: an open_clip CLIP model (image and text towers).

Weights come from an open_clip pretrained *tag* (``openai``, ``laion2b_s34b_b79k``...), which
open_clip fetches from the Hugging Face hub or a URL, or from a *local checkpoint file*. On a
machine without network access a tag only works if the file is already in the local cache;
otherwise :class:`~vl_distill_ros.model.teachers.base.TeacherWeightsMissing` is raised with the
exact file to fetch and where to put it. ``pretrained=None`` builds the architecture with
random (seeded, reproducible) weights, for tests and speed measurements.

Set ``HF_HUB_OFFLINE=1`` on offline machines: the hub client then fails at once instead of
retrying the connection for most of a minute.
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import logging
import os
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .base import ImageBatch, Teacher, TeacherWeightsMissing

log = logging.getLogger(__name__)

#: Seed used for ``pretrained=None`` so that the same id always means the same weights.
RANDOM_INIT_SEED = 0
#: Length of the SHA-256 prefix of a local checkpoint recorded in the teacher id.
FILE_HASH_CHARS = 12
#: Texts are tokenised and encoded in chunks of this many.
TEXT_BATCH = 256


def _open_clip():
    try:
        import open_clip  # imported lazily: it pulls in timm/transformers and takes a while
    except ImportError as exc:
        raise TeacherWeightsMissing(
            f"the open_clip teacher needs the open_clip_torch package ({exc}): "
            "pip install -r requirements.txt (it pins open_clip_torch)") from None
    return open_clip


def check_model_name(model: str) -> None:
    """Raise ``ValueError`` (with close matches) if ``model`` is not an open_clip architecture."""
    open_clip = _open_clip()
    if open_clip.get_model_config(model) is None:
        close = difflib.get_close_matches(model, open_clip.list_models(), n=5, cutoff=0.5)
        hint = f"; did you mean one of {close}?" if close else ""
        raise ValueError(f"unknown open_clip model {model!r}{hint} "
                         "(open_clip.list_models() lists them all)")


def pretrained_tag_cfg(model: str, pretrained: str | None) -> dict:
    """open_clip's download record for ``model`` + tag, or ``{}`` if ``pretrained`` is no tag."""
    if not pretrained:
        return {}
    return dict(_open_clip().get_pretrained_cfg(model, pretrained) or {})


@functools.lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file (memoised on path, size and mtime)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    return _sha256_cached(real, st.st_size, st.st_mtime_ns)


def _missing_file_error(model: str, path: str) -> TeacherWeightsMissing:
    tags = _open_clip().list_pretrained_tags_by_model(model)
    return TeacherWeightsMissing(
        f"open_clip checkpoint file not found: {path!r} (teacher.pretrained for model "
        f"{model!r}). Give the path of an existing open_clip checkpoint "
        "(e.g. open_clip_pytorch_model.bin or open_clip_model.safetensors), one of the "
        f"pretrained tags of {model!r}: {tags}, or 'none' for random weights.")


def open_clip_teacher_id(model: str, pretrained: str | None) -> str:
    """The :attr:`OpenClipTeacher.id` for these settings, computed without loading weights.

    * tag: ``open_clip:<model>:<tag>`` (tag lower-cased, ``-`` as ``_``, as open_clip reads it)
    * local file: ``open_clip:<model>:file:<basename>:<first 12 hex of its SHA-256>``
      (the file is hashed; the result is memoised)
    * ``None``: ``open_clip:<model>:random-init-seed0``
    """
    check_model_name(model)
    if not pretrained:
        return f"open_clip:{model}:random-init-seed{RANDOM_INIT_SEED}"
    if pretrained_tag_cfg(model, pretrained):
        # open_clip matches tags case-insensitively with '-' == '_'; name them one way.
        return f"open_clip:{model}:{pretrained.lower().replace('-', '_')}"
    path = os.path.expanduser(pretrained)
    if not os.path.isfile(path):
        raise _missing_file_error(model, pretrained)
    return f"open_clip:{model}:file:{os.path.basename(path)}:{file_sha256(path)[:FILE_HASH_CHARS]}"


def _hub_repo_and_files(tag_cfg: dict) -> tuple[str, list[str]]:
    """(repo id, candidate file names in the order open_clip tries them) for a tag."""
    from open_clip.pretrained import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    hub = tag_cfg.get("hf_hub", "")
    if not hub:
        return "", []
    repo, filename = os.path.split(hub)
    if not filename or filename == HF_WEIGHTS_NAME:
        return repo, [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
    alternatives = [filename[:-4] + ".safetensors"] if filename.endswith((".bin", ".pth")) else []
    return repo, alternatives + [filename]


def cached_tag_file(tag_cfg: dict, cache_dir: str | None = None) -> str | None:
    """The already-downloaded checkpoint for a tag, if it is in the local cache; else None."""
    repo, files = _hub_repo_and_files(tag_cfg)
    if repo:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - open_clip depends on huggingface_hub
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            for name in files:
                found = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
                if isinstance(found, str) and os.path.isfile(found):
                    return found
    url = tag_cfg.get("url", "")
    if url:
        target = os.path.join(cache_dir or os.path.expanduser("~/.cache/clip"),
                              os.path.basename(url))
        if os.path.isfile(target):
            return target
    return None


def weights_missing_message(model: str, tag: str, tag_cfg: dict, cache_dir: str | None = None,
                            cause: BaseException | None = None) -> str:
    """Say which file a tag needs, where to get it and where to put it."""
    try:
        from huggingface_hub.constants import HF_HUB_CACHE as hub_cache
    except ImportError:  # pragma: no cover
        hub_cache = "~/.cache/huggingface/hub"
    repo, files = _hub_repo_and_files(tag_cfg)
    lines = [f"open_clip weights for model {model!r}, pretrained tag {tag!r} are not on this "
             "machine and could not be downloaded."]
    if repo:
        main = files[-1]
        lines.append(f"Download: https://huggingface.co/{repo}/resolve/main/{main} "
                     f"(Hugging Face repo {repo!r}, file {main!r}"
                     + (f", or its safetensors twin {files[0]!r}" if len(files) > 1 else "")
                     + ").")
    if tag_cfg.get("url") and not repo:
        lines.append(f"Download: {tag_cfg['url']}")
    filename = files[-1] if repo else os.path.basename(tag_cfg.get("url", "")) or "checkpoint.bin"
    quick = f"{model}-quickgelu"
    needs_quick = (tag_cfg.get("quick_gelu") and not model.endswith("-quickgelu")
                   and _open_clip().get_model_config(quick) is not None)
    lines.append("Then either (a) copy it anywhere and set "
                 f"`teacher.pretrained: /path/to/{filename}` in the training config "
                 "(or override teacher.pretrained=/path/...)"
                 + (f" together with `teacher.model: {quick}` (this tag was trained with "
                    "QuickGELU)" if needs_quick else "") + ",")
    if repo:
        lines.append(f"or (b) on a connected machine run `huggingface-cli download {repo} "
                     f"{filename}` and copy the resulting cache folder models--"
                     f"{repo.replace('/', '--')} into {cache_dir or hub_cache} here "
                     "(HF_HOME / HF_HUB_CACHE relocate it); the tag then works offline.")
    else:
        lines.append(f"or (b) put it at {os.path.join(cache_dir or '~/.cache/clip', filename)}; "
                     "the tag then works offline.")
    if cause is not None:
        lines.append(f"Cause: {type(cause).__name__}: {str(cause)[:300]}")
    return "\n".join(lines)


def _as_rgb_uint8(image: np.ndarray, index: int) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"image {index}: expected an RGB array of shape (H, W, 3), got {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image {index}: expected dtype uint8, got {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image {index}: empty image of shape {image.shape}")
    return np.ascontiguousarray(image)


class OpenClipTeacher(Teacher):
    """An open_clip model as the teacher.

    Args:
        model: open_clip architecture (``open_clip.list_models()``), e.g. ``ViT-B-32``.
        pretrained: a pretrained tag of that architecture, a local checkpoint path, or
            ``None`` for random weights (seeded; for tests and benchmarks only).
        device: torch device for the networks; outputs are always on the CPU.
        batch_size: images per forward pass in :meth:`encode_images`.
        cache_dir: where open_clip looks for / downloads tag weights (default: the HF cache).

    Raises:
        ValueError: unknown architecture.
        TeacherWeightsMissing: tag weights neither cached nor downloadable, or ``pretrained``
            is neither a tag of ``model`` nor an existing file.
    """

    def __init__(self, model: str, pretrained: str | None, device: str | torch.device = "cpu",
                 batch_size: int = 32, cache_dir: str | None = None) -> None:
        open_clip = _open_clip()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(pretrained, str) and pretrained.strip().lower() in ("", "none", "null"):
            pretrained = None
        check_model_name(model)
        self.model_name = model
        self.pretrained = pretrained
        self.batch_size = int(batch_size)
        self.device = torch.device(device)

        tag_cfg = pretrained_tag_cfg(model, pretrained)
        kwargs: dict = {"cache_dir": cache_dir}
        if tag_cfg:
            # open_clip 3.x only warns when a tag was trained with QuickGELU but the
            # architecture's config uses GELU (e.g. ViT-B-32 + openai); force it to match.
            kwargs["force_quick_gelu"] = bool(tag_cfg.get("quick_gelu", False))
            local = cached_tag_file(tag_cfg, cache_dir)
            if local is not None:
                # Already downloaded: load the file directly (no network round trips), with
                # the tag's preprocessing.
                log.info("open_clip %s/%s: using cached weights %s", model, pretrained, local)
                source = local
                for key in ("mean", "std", "interpolation", "resize_mode"):
                    if tag_cfg.get(key) is not None:
                        kwargs[f"image_{key}"] = tag_cfg[key]
            else:
                source = pretrained
        elif pretrained is not None:
            if not os.path.isfile(os.path.expanduser(pretrained)):
                raise _missing_file_error(model, pretrained)
            source = os.path.expanduser(pretrained)
        else:
            source = None

        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_INIT_SEED)
                net, _, preprocess = open_clip.create_model_and_transforms(
                    model, pretrained=source, device="cpu", **kwargs)
        except RuntimeError as exc:
            if tag_cfg and "download" in str(exc).lower():
                raise TeacherWeightsMissing(
                    weights_missing_message(model, pretrained, tag_cfg, cache_dir, exc)) from exc
            raise
        self.id = open_clip_teacher_id(model, pretrained)
        self._model = net.eval().requires_grad_(False).to(self.device)
        size = getattr(getattr(net, "visual", None), "image_size", 224)
        self.input_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self._preprocess = preprocess
        self._tokenizer = open_clip.get_tokenizer(model)
        self.embed_dim = int(open_clip.get_model_config(model)["embed_dim"])

    def to(self, device: str | torch.device) -> "OpenClipTeacher":
        """Move both towers to ``device``."""
        self.device = torch.device(device)
        self._model.to(self.device)
        return self

    @torch.no_grad()
    def encode_images(self, images: ImageBatch) -> torch.Tensor:
        """Embed RGB uint8 (H, W, 3) images with the model's own preprocessing -> (N, D)."""
        from PIL import Image

        outputs = []
        images = list(images)
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            pixels = torch.stack([
                self._preprocess(Image.fromarray(_as_rgb_uint8(img, start + i)))
                for i, img in enumerate(chunk)])
            feats = self._model.encode_image(pixels.to(self.device))
            outputs.append(F.normalize(feats.float(), dim=-1).cpu())
        if not outputs:
            return torch.zeros(0, self.embed_dim)
        return torch.cat(outputs).contiguous()

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed strings with the model's tokenizer and text tower -> (M, D)."""
        if isinstance(texts, str):
            raise TypeError("encode_texts expects a list of strings, not a single string")
        texts = list(texts)
        outputs = []
        for start in range(0, len(texts), TEXT_BATCH):
            tokens = self._tokenizer(texts[start:start + TEXT_BATCH])
            feats = self._model.encode_text(tokens.to(self.device))
            outputs.append(F.normalize(feats.float(), dim=-1).cpu())
        if not outputs:
            return torch.zeros(0, self.embed_dim)
        return torch.cat(outputs).contiguous()

    def cut_texts(self, texts: Sequence[str]) -> list[int]:
        """Indices of ``texts`` whose tokens (with the start and end tokens) exceed the
        tokenizer's context (77 for CLIP): the text tower sees only their beginning."""
        tokenizer = self._tokenizer
        context = int(getattr(tokenizer, "context_length", 0) or 0)
        if context <= 0:
            return []
        if hasattr(tokenizer, "encode"):    # open_clip's SimpleTokenizer: BPE ids only
            return [i for i, t in enumerate(texts) if len(tokenizer.encode(t)) + 2 > context]
        inner = getattr(tokenizer, "tokenizer", None)   # open_clip's HFTokenizer
        if inner is None:
            return []
        return [i for i, t in enumerate(texts)
                if len(inner(t, truncation=False)["input_ids"]) > context]

    def __repr__(self) -> str:
        return f"OpenClipTeacher(id={self.id!r}, embed_dim={self.embed_dim}, device={self.device})"
