"""The perception pipeline: image -> boxes -> crops -> student -> open-vocabulary labels.

ROS-free, so the node (:mod:`vl_distill_ros.ros.node`) and an offline replay evaluator run
exactly the same code. One call of :meth:`PerceptionPipeline.process` handles one frame
(step 1 is :meth:`~PerceptionPipeline.prepare`, steps 2-4 :meth:`~PerceptionPipeline.classify`;
with ``pipelined: true`` the node runs them in two threads, overlapping one frame's boxes
with the previous frame's classification):

1. **Boxes** from the configured crop source: ``proposals`` (the class-agnostic proposer of
   :mod:`~vl_distill_ros.perception.proposals`), ``full_frame`` (one box, e.g. for a hand camera)
   or ``rois`` (fixed regions). Every box goes through
   :func:`~vl_distill_ros.perception.boxes.sanitize_boxes`: boxes are clipped to the image and
   degenerate, non-finite or out-of-image boxes are dropped, so the network never sees an
   empty crop.
2. **Crops** of one frame are preprocessed and run through the student in batches of at
   most ``MAX_CROPS_PER_BATCH`` (64; one batch for a usual frame) under
   :func:`torch.inference_mode`.
3. **Scores**: cosine similarity of each crop embedding to the active vocabulary's text
   embeddings, turned into a distribution over the vocabulary with a softmax at
   ``score_temperature``::

       score[i, l] = softmax_l( cos(student(crop_i), text_l) / score_temperature )

   The default temperature 0.01 equals CLIP's logit scale of 100. Scores are *relative* to
   the active vocabulary (they sum to 1 over it).
   With a calibrated bundle, ``seen_bias`` is first subtracted from the cosine of every
   active name the student was trained on (calibrated stacking, see
   :mod:`~vl_distill_ros.model.calibration`), so names it never saw are not crowded out.
4. **Open set**: a crop whose best score is below ``unknown_threshold`` (or whose best raw
   cosine is below ``min_similarity``, off by default) is labelled ``"unknown"`` with
   ``known=False``; its ``top_k`` list still names the closest labels.
   ``unknown_threshold`` and ``seen_bias`` of ``-1`` and ``score_temperature`` of ``0``
   (the defaults) mean "the bundle's calibrated value" (0.5, 0 and 0.01 for a bundle
   without a calibration record). With ``negative_names`` (and a bundle whose record has
   negatives), the trained names outside the active vocabulary join the softmax as
   negatives: a crop that looks like one of them scores low for every active name.

Vocabulary swaps are atomic: :meth:`PerceptionPipeline.set_vocabulary` replaces one
reference to a frozen :class:`ActiveVocabulary`; :meth:`~PerceptionPipeline.classify` reads
that reference once per frame, so a frame being classified finishes with the vocabulary it
started with and reports that vocabulary's version. Settings (:class:`PipelineSettings`) are swapped
the same way with :meth:`~PerceptionPipeline.configure`.
"""
from __future__ import annotations

import dataclasses
import math
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..model.calibration import (DEFAULT_TEMPERATURE, DEFAULT_UNKNOWN_THRESHOLD, adjusted_scores,
                                 bias_vector, negative_mask)
from ..model.vocabulary import UNKNOWN_NAME, Vocabulary
from .box_net import load_box_net, resolve_box_net
from .boxes import Box, classification_window, crop, full_frame_box, sanitize_boxes
from .camera_model import CameraIntrinsics, DepthError
from .depth_alignment import UnalignedDepth
from .depth_config import DepthProposalConfig, load_depth_config, stride_for
from .depth_fusion import fuse_proposals_with_views, fusion_colour_config
from .depth_proposals import propose_depth_boxes
from .depth_registration import DepthRegistration
from .preprocess import pad_long_crop, preprocess_crops
from .proposal_config import ProposalConfig
from .proposals import (NetworkBoxes, colour_model_boxes, network_detections, propose_boxes,
                        with_colour_model)

if TYPE_CHECKING:  # pragma: no cover
    from ..model.bundle import Bundle

__all__ = ["CROP_SOURCES", "PROPOSAL_SOURCES", "UNKNOWN_LABEL", "ObjectResult",
           "ActiveVocabulary", "PipelineSettings", "PerceptionPipeline", "PipelineError",
           "labels_document", "draw_annotations", "rois_from_flat"]

#: Valid values of ``crop_source``.
CROP_SOURCES: tuple[str, ...] = ("proposals", "full_frame", "rois")
#: Valid values of ``proposal_source``: ``auto`` fuses depth and colour proposals when the
#: frame has depth, ``depth`` uses depth boxes alone, ``colour`` ignores depth; frames
#: without usable depth always get colour proposals.
PROPOSAL_SOURCES: tuple[str, ...] = ("auto", "colour", "depth")
#: Label published for crops below the open-set threshold (reserved in every vocabulary).
UNKNOWN_LABEL = UNKNOWN_NAME
#: ``unknown_threshold`` / ``seen_bias`` value meaning "the bundle's calibrated value".
FROM_BUNDLE = -1.0
#: Most fixed regions (``rois``), like ``proposal_max_count``'s upper bound.
MAX_ROIS = 256
#: Default margin of the square window the student sees around a box (``crop_context``),
#: as a fraction of the box's longer side. Chosen on a tabletop bag of ID objects and the
#: calibration's pseudo-unseen objects (top-1 accuracy of both groups, 0 to 0.3 tried), never
#: on an OOD object; see the README's "Crop shape" notes.
CROP_CONTEXT = 0.15
#: Crops go through the student in chunks of at most this many, so the memory one frame
#: needs stays bounded however many boxes it has.
MAX_CROPS_PER_BATCH = 64
#: Cameras whose depth registration check (and last depth noise) a pipeline keeps (the
#: oldest goes first).
MAX_REGISTERED_CAMERAS = 64


def _remember(store: dict, key: str, value: object) -> None:
    """``store[key] = value``, first dropping the oldest entry when ``key`` is new and
    ``store`` already holds :data:`MAX_REGISTERED_CAMERAS`."""
    if key not in store and len(store) >= MAX_REGISTERED_CAMERAS:
        del store[next(iter(store))]
    store[key] = value


class PipelineError(ValueError):
    """Invalid pipeline settings, vocabulary embeddings or input image; says why."""


@dataclass
class ObjectResult:
    """One classified crop.

    Attributes:
        bbox: ``(x, y, w, h)`` integer pixel box in the input image.
        label: best label name, or ``"unknown"`` below the open-set threshold.
        score: softmax score of the best label (even when ``label`` is ``"unknown"``).
        known: False when the crop was labelled ``"unknown"``.
        top_k: the ``top_k`` best ``(label, score)`` pairs, best first.
    """

    bbox: tuple[int, int, int, int]
    label: str
    score: float
    known: bool
    top_k: list[tuple[str, float]] = field(default_factory=list)


@dataclass(frozen=True, eq=False)
class ActiveVocabulary:
    """The vocabulary in use: labels, their (L, D) unit text embeddings and a version number."""

    vocabulary: Vocabulary
    embeddings: torch.Tensor
    version: int
    #: (L,) 1.0 for names the student was trained on (they get the seen bias), else 0.
    trained_mask: torch.Tensor | None = None
    #: (K, D) unit text embeddings of the open-set negatives for this vocabulary (trained
    #: names outside it), or None.
    negatives: torch.Tensor | None = None

    @property
    def names(self) -> list[str]:
        """The label names, in order."""
        return self.vocabulary.names


@dataclass(frozen=True)
class PipelineSettings:
    """Per-frame settings of :class:`PerceptionPipeline` (validated, immutable).

    Attributes:
        crop_source: ``proposals``, ``full_frame`` or ``rois``.
        proposal_cfg: proposer settings (``proposals`` only).
        rois: fixed ``(x, y, w, h)`` regions (``rois`` only); clipped to each frame.
        unknown_threshold: best softmax score below this -> ``"unknown"`` (0 disables;
            -1: the bundle's calibrated threshold).
        seen_bias: cosine subtracted from trained names' similarities (0 disables; -1:
            the bundle's calibrated bias).
        negative_names: let the bundle's trained names outside the vocabulary act as
            open-set negatives (when its calibration record has them).
        min_similarity: best raw cosine below this -> ``"unknown"`` (-1 disables).
        top_k: number of ``(label, score)`` pairs reported per object.
        score_temperature: softmax temperature applied to the cosine similarities.
        min_box_size: boxes narrower or shorter than this (after clipping) are dropped.
        fallback_full_frame: with ``proposals``, classify the whole frame when no box is
            proposed (an object filling the view is larger than ``max_area_frac``; an empty
            table then yields one full-frame object too).
        proposal_source: ``auto``, ``colour`` or ``depth`` (:data:`PROPOSAL_SOURCES`).
        depth_cfg: depth proposer settings (used when a frame comes with depth).
        crop_square: the student sees a square window around each box (the crop shape
            it was distilled on) instead of the box stretched to a square; see
            :func:`~vl_distill_ros.perception.boxes.classification_window`. A window
            that cannot be square (the full frame, a region of interest, a window larger than
            the frame) and is longer than 4:3 is padded to a square with its edge pixels
            (:func:`~vl_distill_ros.perception.preprocess.pad_long_crop`).
        crop_context: the window's margin around the box, as a fraction of its longer side
            (square) or of its own size; in [0, 1].
    """

    crop_source: str = "proposals"
    proposal_cfg: ProposalConfig = field(default_factory=ProposalConfig)
    rois: tuple[tuple[int, int, int, int], ...] = ()
    unknown_threshold: float = FROM_BUNDLE
    min_similarity: float = -1.0
    top_k: int = 3
    score_temperature: float = 0.0
    min_box_size: int = 4
    fallback_full_frame: bool = False
    seen_bias: float = FROM_BUNDLE
    negative_names: bool = True
    proposal_source: str = "auto"
    depth_cfg: DepthProposalConfig = field(default_factory=DepthProposalConfig)
    crop_square: bool = True
    crop_context: float = CROP_CONTEXT

    def __post_init__(self) -> None:
        c = float(self.crop_context)
        if not (math.isfinite(c) and 0.0 <= c <= 1.0):
            raise PipelineError(f"crop_context must be in [0, 1], got {self.crop_context}")
        if self.proposal_source not in PROPOSAL_SOURCES:
            raise PipelineError(f"proposal_source must be one of {list(PROPOSAL_SOURCES)}, got "
                                f"{self.proposal_source!r}")
        if self.crop_source not in CROP_SOURCES:
            raise PipelineError(f"crop_source must be one of {list(CROP_SOURCES)}, got "
                                f"{self.crop_source!r}")
        if len(self.rois) > MAX_ROIS:
            raise PipelineError(f"rois holds {len(self.rois)} regions; the limit is {MAX_ROIS}")
        rois = []
        for i, roi in enumerate(self.rois):
            if len(roi) != 4:
                raise PipelineError(f"roi {i} must be (x, y, w, h), got {roi!r}")
            rois.append(tuple(int(v) for v in roi))
        object.__setattr__(self, "rois", tuple(rois))
        if self.crop_source == "rois" and not self.rois:
            raise PipelineError("crop_source 'rois' needs at least one roi (x, y, w, h)")
        for name in ("unknown_threshold", "seen_bias"):
            value = float(getattr(self, name))
            if not (value == FROM_BUNDLE or 0.0 <= value <= 1.0):
                raise PipelineError(f"{name} must be in [0, 1], or -1 for the bundle's "
                                    f"calibrated value; got {getattr(self, name)}")
        if not -1.0 <= float(self.min_similarity) <= 1.0:
            raise PipelineError(f"min_similarity must be in [-1, 1], got {self.min_similarity}")
        if int(self.top_k) < 1:
            raise PipelineError(f"top_k must be >= 1, got {self.top_k}")
        t = float(self.score_temperature)
        if not (math.isfinite(t) and t >= 0):
            raise PipelineError(f"score_temperature must be > 0, or 0 for the bundle's "
                                f"calibrated temperature; got {self.score_temperature}")
        if int(self.min_box_size) < 1:
            raise PipelineError(f"min_box_size must be >= 1, got {self.min_box_size}")

    @classmethod
    def from_params(cls, values: Mapping[str, Any]) -> "PipelineSettings":
        """Validated settings from the node's parameter values (``crop_source``, ``rois``,
        ``proposal_*``, ``unknown_threshold``, ... as named in :mod:`vl_distill_ros.ros.params`):
        the one rule of the node and of the offline replay.

        Raises:
            PipelineError: an invalid setting.
            ValueError: a value that does not convert to the setting's type.
        """
        try:
            proposal_cfg = ProposalConfig(
                min_area_frac=float(values["proposal_min_area_frac"]),
                max_area_frac=float(values["proposal_max_area_frac"]),
                max_count=int(values["proposal_max_count"]),
                pad_frac=float(values["proposal_pad_frac"]),
                box_net=str(values.get("proposal_box_net", ProposalConfig.box_net)),
                box_net_threshold=float(values.get("proposal_box_net_threshold",
                                                   ProposalConfig.box_net_threshold)),
                box_net_threads=int(values.get("proposal_box_net_threads",
                                               ProposalConfig.box_net_threads)))
            net = resolve_box_net(proposal_cfg.box_net)
            if net is not None:  # a bad file is refused here, not on the next frame
                load_box_net(net, proposal_cfg.box_net_threads)
        except ValueError as exc:
            raise PipelineError(f"proposal settings: {exc}") from None
        depth_path = str(values.get("depth_proposal_config", "") or "")
        try:
            depth_cfg = load_depth_config(depth_path) if depth_path else DepthProposalConfig()
        except DepthError as exc:
            raise PipelineError(f"depth_proposal_config: {exc}") from None
        return cls(
            crop_source=str(values["crop_source"]), proposal_cfg=proposal_cfg,
            rois=rois_from_flat(values["rois"]),
            unknown_threshold=float(values["unknown_threshold"]),
            min_similarity=float(values["min_similarity"]), top_k=int(values["top_k"]),
            score_temperature=float(values["score_temperature"]),
            min_box_size=int(values["min_box_size"]),
            fallback_full_frame=bool(values["proposal_fallback_full_frame"]),
            seen_bias=float(values.get("seen_bias", FROM_BUNDLE)),
            negative_names=bool(values.get("negative_names", True)),
            proposal_source=str(values.get("proposal_source", "auto")), depth_cfg=depth_cfg,
            crop_square=bool(values.get("crop_square", True)),
            crop_context=float(values.get("crop_context", CROP_CONTEXT)))

    def as_kwargs(self) -> dict[str, Any]:
        """The settings as keyword arguments of :class:`PerceptionPipeline` and
        :meth:`PerceptionPipeline.configure` (field values as they are, not copied)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def rois_from_flat(values: Sequence[int]) -> tuple[tuple[int, int, int, int], ...]:
    """``[x0, y0, w0, h0, x1, y1, ...]`` (a ROS integer-array parameter) -> tuple of boxes.

    Raises:
        PipelineError: the length is not a multiple of 4.
    """
    values = [int(v) for v in values]
    if len(values) % 4:
        raise PipelineError(f"rois must hold 4 integers (x, y, w, h) per region; got "
                            f"{len(values)} values")
    return tuple(tuple(values[i:i + 4]) for i in range(0, len(values), 4))  # type: ignore[misc]


def _check_embeddings(vocab: Vocabulary, embeddings: torch.Tensor | np.ndarray,
                      embed_dim: int) -> torch.Tensor:
    emb = torch.as_tensor(np.asarray(embeddings) if not isinstance(embeddings, torch.Tensor)
                          else embeddings).detach().float().cpu()
    if emb.ndim != 2 or emb.shape != (len(vocab), embed_dim):
        raise PipelineError(f"text embeddings have shape {tuple(emb.shape)}, expected "
                            f"({len(vocab)}, {embed_dim}) for {len(vocab)} labels")
    if not torch.isfinite(emb).all():
        raise PipelineError("text embeddings contain NaN or infinite values")
    if (emb.norm(dim=1) < 1e-8).any():
        raise PipelineError("a text embedding is the zero vector")
    return F.normalize(emb, dim=-1).contiguous()


@dataclass(frozen=True, eq=False)
class PreparedFrame:
    """A checked frame with its boxes (:meth:`PerceptionPipeline.prepare`), ready for
    :meth:`PerceptionPipeline.classify`."""

    #: ``(H, W, 3)`` uint8 RGB.
    image: np.ndarray
    #: Sanitized ``(x, y, w, h)`` boxes (may be empty).
    boxes: list[Box]
    #: The settings the frame was prepared with (it is classified with them too).
    settings: PipelineSettings
    #: How depth was used: ``""`` (no depth given), ``used``, or why not.
    depth_status: str = ""
    #: One box per box of :attr:`boxes`, the one the student's window is made from (a box
    #: that depth refined keeps the network's box for that, see
    #: :func:`~.depth_fusion.fuse_proposals_with_views`); None: the boxes themselves.
    view_boxes: list[Box] | None = None


class PerceptionPipeline:
    """Classify the objects of a frame against the active (runtime-changeable) vocabulary.

    Args:
        bundle: a loaded bundle (its student is used in eval mode; see
            :func:`~vl_distill_ros.model.bundle.load_bundle`).
        crop_source: ``proposals``, ``full_frame`` or ``rois``.
        proposal_cfg: proposer settings (default :class:`ProposalConfig`).
        rois: fixed ``(x, y, w, h)`` regions for ``crop_source='rois'``.
        unknown_threshold: best score below this -> ``"unknown"``.
        top_k: ``(label, score)`` pairs reported per object.
        score_temperature: softmax temperature over cosine similarities (0.01 = CLIP's 100).
        vocabulary: initial vocabulary (default: the bundle's).
        embeddings: its (L, D) text embeddings (required with ``vocabulary``).
        min_similarity: best raw cosine below this -> ``"unknown"`` (-1 = off).
        min_box_size: smallest box side kept after clipping.
        fallback_full_frame: with ``proposals``, use the full frame when nothing is proposed.
        proposal_source: ``auto``, ``colour`` or ``depth`` (:data:`PROPOSAL_SOURCES`).
        depth_cfg: depth proposer settings.
        crop_square, crop_context: the window the student sees around each box (see
            :class:`PipelineSettings`).
        proposal_threads: 2: the box network runs in a second thread while the colour
            model (on a frame with depth and ``proposal_source: auto``, the depth proposer,
            and the colour model only with ``fuse_colour_model``) runs (the same boxes,
            sooner on two cores); 1: one after the other.
            :meth:`close` stops the thread.

    Thread safety: :meth:`process` may run in one worker thread while other threads call
    :meth:`set_vocabulary` / :meth:`configure`; do not call :meth:`process` from two
    threads at once (the student is shared). Its two stages may overlap instead:
    :meth:`prepare` (boxes) of the next frame in one thread while :meth:`classify` (student
    and scores) of the current one runs in another, each stage in one thread at a time.
    """

    def __init__(self, bundle: "Bundle", crop_source: str = "proposals",
                 proposal_cfg: ProposalConfig | None = None,
                 rois: Sequence[Sequence[int]] = (), unknown_threshold: float = FROM_BUNDLE,
                 top_k: int = 3, score_temperature: float = 0.0,
                 vocabulary: Vocabulary | None = None,
                 embeddings: torch.Tensor | None = None, min_similarity: float = -1.0,
                 min_box_size: int = 4, fallback_full_frame: bool = False,
                 inference_backend: str = "auto", inference_threads: int = 2,
                 seen_bias: float = FROM_BUNDLE, negative_names: bool = True,
                 proposal_source: str = "auto",
                 depth_cfg: DepthProposalConfig | None = None, crop_square: bool = True,
                 crop_context: float = CROP_CONTEXT, proposal_threads: int = 2) -> None:
        from ..model.runtime import make_runner

        if int(proposal_threads) not in (1, 2):
            raise PipelineError(f"proposal_threads must be 1 or 2, got {proposal_threads}")
        #: With ``proposal_threads: 2`` the colour proposer's thread (frames with depth and
        #: ``proposal_source: auto``); None: both proposers run in the calling thread.
        self._colour_pool: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="colour_proposals") \
            if int(proposal_threads) == 2 else None

        self.student = bundle.student.eval()
        self.input_spec = bundle.input_spec
        self.embed_dim = int(bundle.student.embed_dim)
        #: ONNX Runtime when available (checked against torch once), else torch eager.
        self.runner = make_runner(bundle, backend=inference_backend, threads=inference_threads)
        #: The bundle's calibration record (None: no bias, the fixed default threshold).
        self.calibration = bundle.calibration
        #: The calibration's centre as a tensor, made once (None: embeddings not centred).
        self._center = (torch.tensor(bundle.calibration.embedding_center, dtype=torch.float32)
                        if bundle.calibration is not None
                        and bundle.calibration.embedding_center else None)
        self._trained_emb = None
        if bundle.calibration is not None and bundle.calibration.negatives and \
                bundle.trained_embeddings is not None:
            self._trained_emb = F.normalize(bundle.trained_embeddings.float(), dim=-1)
        self._settings = PipelineSettings(
            crop_source=crop_source, proposal_cfg=proposal_cfg or ProposalConfig(),
            rois=tuple(tuple(r) for r in rois), unknown_threshold=float(unknown_threshold),
            min_similarity=float(min_similarity), top_k=int(top_k),
            score_temperature=float(score_temperature), min_box_size=int(min_box_size),
            fallback_full_frame=bool(fallback_full_frame), seen_bias=float(seen_bias),
            negative_names=bool(negative_names), proposal_source=str(proposal_source),
            depth_cfg=depth_cfg or DepthProposalConfig(), crop_square=bool(crop_square),
            crop_context=float(crop_context))
        if vocabulary is None:
            if embeddings is not None:
                raise PipelineError("embeddings given without their vocabulary")
            vocabulary, embeddings = bundle.vocabulary, bundle.text_embeddings
        elif embeddings is None:
            raise PipelineError("a vocabulary needs its text embeddings")
        self._write_lock = threading.Lock()
        #: How the last frame's depth was used: "" (no depth given), "used", or why not.
        self.last_depth_status = ""
        #: Each camera's registration check (``registration_search_px``), by camera key.
        self._registrations: dict[str, DepthRegistration] = {}
        self._registration_lock = threading.Lock()
        #: Each camera's last measured depth noise at 1 m (m), by camera key.
        self._depth_noise: dict[str, float] = {}
        checked = _check_embeddings(vocabulary, embeddings, self.embed_dim)
        self._active = ActiveVocabulary(vocabulary, checked, version=1,
                                        trained_mask=self._trained_mask(vocabulary),
                                        negatives=self._negatives(vocabulary, checked))

    def _trained_mask(self, vocab: Vocabulary) -> torch.Tensor:
        names = self.calibration.trained_names if self.calibration else ()
        return torch.from_numpy(bias_vector(vocab.names, names, 1.0))

    def _negatives(self, vocab: Vocabulary, emb: torch.Tensor) -> torch.Tensor | None:
        if self._trained_emb is None or self.calibration is None:
            return None
        keep = negative_mask(vocab.names, emb.numpy(), self.calibration.trained_names,
                             self._trained_emb.numpy(), self.calibration.negative_similarity)
        return self._trained_emb[torch.from_numpy(keep)].contiguous()

    def effective_temperature(self, settings: PipelineSettings | None = None) -> float:
        """The softmax temperature in use: the setting, or the bundle's for 0."""
        s = settings or self._settings
        if s.score_temperature > 0:
            return float(s.score_temperature)
        return self.calibration.score_temperature if self.calibration else DEFAULT_TEMPERATURE

    def effective_seen_bias(self, settings: PipelineSettings | None = None) -> float:
        """The seen bias in use: the setting, or the bundle's calibrated one for -1."""
        s = settings or self._settings
        if s.seen_bias != FROM_BUNDLE:
            return float(s.seen_bias)
        return self.calibration.seen_bias if self.calibration else 0.0

    def effective_unknown_threshold(self, settings: PipelineSettings | None = None) -> float:
        """The open-set threshold in use: the setting, or the bundle's for -1."""
        s = settings or self._settings
        if s.unknown_threshold != FROM_BUNDLE:
            return float(s.unknown_threshold)
        return self.calibration.unknown_threshold if self.calibration \
            else DEFAULT_UNKNOWN_THRESHOLD

    # -- state ----------------------------------------------------------------------------
    @property
    def active(self) -> ActiveVocabulary:
        """The vocabulary the next frame will use."""
        return self._active

    @property
    def settings(self) -> PipelineSettings:
        """The settings the next frame will use."""
        return self._settings

    def set_vocabulary(self, vocab: Vocabulary, embeddings: torch.Tensor | np.ndarray) -> int:
        """Atomically make ``vocab`` (with its (L, D) text embeddings) the active vocabulary.

        Frames already being processed finish with the previous vocabulary. Returns the new
        version (previous + 1).

        Raises:
            PipelineError: embeddings of the wrong shape, non-finite or zero.
        """
        emb = _check_embeddings(vocab, embeddings, self.embed_dim)
        with self._write_lock:
            new = ActiveVocabulary(vocab, emb, self._active.version + 1,
                                   trained_mask=self._trained_mask(vocab),
                                   negatives=self._negatives(vocab, emb))
            self._active = new  # one reference assignment: atomic for readers
        return new.version

    def configure(self, **changes: Any) -> PipelineSettings:
        """Replace some settings (names of :class:`PipelineSettings`), validated, atomically.

        ``rois`` may be given as boxes or as a flat ``[x, y, w, h, ...]`` list;
        ``proposal_cfg`` may be a :class:`ProposalConfig` or a dict of its fields to change.

        Raises:
            PipelineError: an unknown name or an invalid value; nothing is changed then.
        """
        with self._write_lock:
            current = self._settings
            known = {f.name for f in dataclasses.fields(PipelineSettings)}
            unknown = set(changes) - known
            if unknown:
                raise PipelineError(f"unknown pipeline settings {sorted(unknown)}")
            if "rois" in changes:
                rois = list(changes["rois"])
                if rois and not isinstance(rois[0], (tuple, list)):
                    changes["rois"] = rois_from_flat(rois)
            if isinstance(changes.get("proposal_cfg"), dict):
                try:
                    changes["proposal_cfg"] = dataclasses.replace(current.proposal_cfg,
                                                                  **changes["proposal_cfg"])
                except (TypeError, ValueError) as exc:
                    raise PipelineError(f"invalid proposal settings: {exc}") from None
            try:
                new = dataclasses.replace(current, **changes)
            except (TypeError, ValueError) as exc:
                raise PipelineError(str(exc)) from None
            self._settings = new
        return new

    # -- per frame ------------------------------------------------------------------------
    def boxes(self, image_rgb: np.ndarray, settings: PipelineSettings | None = None,
              depth: np.ndarray | None = None,
              intrinsics: CameraIntrinsics | None = None, camera: str = "") -> list[Box]:
        """The sanitized boxes the crop source gives for this frame (may be empty).

        With ``crop_source`` ``proposals``, a registered ``depth`` (metres, same size as the
        image) and the colour camera's ``intrinsics``, ``proposal_source`` decides how depth
        is used (:data:`PROPOSAL_SOURCES`); :attr:`last_depth_status` then says whether it
        was (``used``) or why not. Depth problems never raise: the frame falls back to
        colour proposals. ``camera`` names the camera whose registration check
        (:meth:`depth_shift`) the frame updates; give each camera its own."""
        boxes, _, self.last_depth_status = self._boxes(image_rgb, settings or self._settings,
                                                       depth, intrinsics, camera)
        return boxes

    def depth_fattening(self, camera: str = "") -> int:
        """The width (pixels) of the fattened rim taken off ``camera``'s depth edges
        (``fattening_search_px``; 0 until its frames show one)."""
        with self._registration_lock:
            reg = self._registrations.get(camera)
        return reg.fattening if reg is not None else 0

    def depth_shift(self, camera: str = "") -> tuple[int, int]:
        """The pixels ``(dx, dy)`` by which ``camera``'s depth is moved onto its colour
        image (``registration_search_px``; ``(0, 0)`` until its frames show better)."""
        with self._registration_lock:
            reg = self._registrations.get(camera)
        return reg.shift if reg is not None else (0, 0)

    def depth_noise(self, camera: str = "") -> float:
        """The depth noise (standard deviation, m, at 1 m) that ``camera``'s last frame
        with a support plane showed below it (``noise_top_sigmas``); 0 before one."""
        with self._registration_lock:
            return self._depth_noise.get(camera, 0.0)

    def _registration(self, camera: str, cfg: DepthProposalConfig
                      ) -> DepthRegistration | None:
        """``camera``'s registration check for ``cfg`` (a new one when its settings
        changed); None when ``registration_search_px`` and ``fattening_search_px`` are 0.
        At most ``MAX_REGISTERED_CAMERAS`` are kept (the oldest goes)."""
        if cfg.registration_search_px <= 0 and cfg.fattening_search_px <= 0:
            return None
        key = (int(cfg.registration_search_px), int(cfg.stride), int(cfg.fattening_search_px))
        with self._registration_lock:
            reg = self._registrations.get(camera)
            if reg is None or (reg.search_px, reg.stride, reg.fattening_px) != key:
                reg = DepthRegistration(key[0], key[1], fattening_px=key[2])
                _remember(self._registrations, camera, reg)
            return reg

    def _boxes(self, image_rgb: np.ndarray, s: PipelineSettings,
               depth: np.ndarray | UnalignedDepth | None,
               intrinsics: CameraIntrinsics | None, camera: str = ""
               ) -> tuple[list[Box], list[Box], str]:
        """:meth:`boxes`, the boxes the student's windows are made from (one per box) and
        the depth status; the only state it touches is ``camera``'s registration check (one
        thread per camera at a time)."""
        height, width = image_rgb.shape[:2]
        status = "" if depth is None else "not used"
        views = None
        if s.crop_source == "full_frame":
            raw: list = [full_frame_box(width, height)]
        elif s.crop_source == "rois":
            raw = list(s.rois)
        else:
            raw, views, status = self._proposals(image_rgb, s, depth, intrinsics, camera)
        boxes, views = _sanitize_with_views(raw, views, width, height, s.min_box_size)
        if not boxes and s.crop_source == "proposals" and s.fallback_full_frame:
            boxes = sanitize_boxes([full_frame_box(width, height)], width, height,
                                   min_size=s.min_box_size)
            views = list(boxes)
        return boxes, views, status

    def _proposals(self, image: np.ndarray, s: PipelineSettings,
                   depth: np.ndarray | UnalignedDepth | None,
                   intrinsics: CameraIntrinsics | None, camera: str = ""
                   ) -> tuple[list[Box], list[Box] | None, str]:
        """Colour, depth or fused proposals, the boxes the student's windows are made from
        (None: the proposals themselves) and the depth status (see :meth:`boxes`)."""
        if depth is None or s.proposal_source == "colour":
            return self._colour_only(image, s), None, "" if depth is None else "not used"
        if intrinsics is None:
            return self._colour_only(image, s), None, "no camera intrinsics"
        unaligned = isinstance(depth, UnalignedDepth)
        size = (intrinsics.height, intrinsics.width) if unaligned else np.shape(depth)
        if size != image.shape[:2]:
            return self._colour_only(image, s), None, (
                f"depth is {size[::-1]} but the image is {image.shape[1]}x{image.shape[0]}")
        # auto needs the colour boxes whatever depth gives: the box network runs in the
        # second thread while the depth proposer (and then, with fuse_colour_model, the
        # colour model) runs here (all spend their time in ONNX Runtime, OpenCV and numpy,
        # which release the GIL)
        pending = self._colour_pool.submit(network_detections, image, s.proposal_cfg,
                                           s.depth_cfg.fuse_network_weak_score) \
            if self._colour_pool is not None and s.proposal_source == "auto" else None
        try:
            if unaligned:         # here, while the box network runs in the other thread
                depth = depth.aligned(intrinsics)
            depth_cfg = stride_for(s.depth_cfg, image.shape[1], intrinsics.focal,
                                   image.shape[0])  # this camera's step
            found = propose_depth_boxes(depth, intrinsics, depth_cfg, image,
                                        self._registration(camera, depth_cfg))
        except DepthError as exc:
            return self._colour_only(image, s, pending), None, str(exc)   # colour only
        except Exception as exc:  # noqa: BLE001 - a depth image no test foresaw
            # the frame keeps its colour boxes; the status names the failure per camera
            return self._colour_only(image, s, pending), None, (
                f"the depth proposer failed on this frame ({type(exc).__name__}: "
                f"{str(exc)[:200]}); colour only")
        if found.plane is None:
            return self._colour_only(image, s, pending), None, found.note
        with self._registration_lock:
            _remember(self._depth_noise, camera, found.noise_m)
        count = int(s.proposal_cfg.max_count)
        if s.proposal_source == "depth":
            return list(found.boxes)[:count], None, "used"
        colour, network, weak = self._colour_boxes(image, s, pending)
        boxes, views = fuse_proposals_with_views(found, colour, s.depth_cfg, count, network,
                                                 weak)
        return boxes, views, "used"

    def _colour_only(self, image: np.ndarray, s: PipelineSettings,
                     pending: "Future[NetworkBoxes | None] | None" = None) -> list[Box]:
        """The colour proposals of a frame without usable depth (:func:`propose_boxes`,
        core split on): with the second thread, the box network there (``pending``: already
        started) while the colour model runs here."""
        cfg = s.proposal_cfg
        if pending is None and self._colour_pool is not None:
            pending = self._colour_pool.submit(network_detections, image, cfg)
        if pending is None:
            return propose_boxes(image, cfg)
        colour = colour_model_boxes(image, cfg) if cfg.box_net_colour == "apart" else None
        found = pending.result()
        return with_colour_model(image, None if found is None else found.boxes, cfg,
                                 colour=colour)[0]

    @staticmethod
    def _colour_boxes(image: np.ndarray, s: PipelineSettings,
                      pending: "Future[NetworkBoxes | None] | None"
                      ) -> tuple[list[Box], list[Box], list[Box]]:
        """The colour proposals the fusion takes (no core split; the colour model's only with
        ``fuse_colour_model`` or without the network, :func:`fusion_colour_config`), the
        box network's among them and its weak boxes (``fuse_network_weak_score``); the
        network's from the second thread when they were started there (the colour model's,
        when used, are found here meanwhile)."""
        cfg = fusion_colour_config(s.proposal_cfg, s.depth_cfg)
        colour = None
        if pending is None:
            found = network_detections(image, cfg, s.depth_cfg.fuse_network_weak_score)
        else:
            colour = colour_model_boxes(image, cfg, core_split=False) \
                if cfg.box_net_colour == "apart" else None
            found = pending.result()
        boxes, network = with_colour_model(image, None if found is None else found.boxes, cfg,
                                           core_split=False, colour=colour)
        return boxes, network, [] if found is None else found.weak

    def close(self) -> None:
        """Stop the colour proposer's thread (``proposal_threads: 2``); idempotent. A
        frame proposed afterwards runs both proposers in the calling thread."""
        pool, self._colour_pool = self._colour_pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def prepare(self, image_rgb: np.ndarray, depth: "np.ndarray | UnalignedDepth | None" = None,
                intrinsics: CameraIntrinsics | None = None, camera: str = "") -> PreparedFrame:
        """Stage 1 of :meth:`process`: check the frame and find its boxes (see :meth:`boxes`)
        with the current settings. Touches no pipeline state but ``camera``'s registration
        check, so it may run in one thread while :meth:`classify` runs in another.

        Raises:
            PipelineError: the image is not a non-empty (H, W, 3) uint8 array.
        """
        settings = self._settings   # read once: the frame keeps these settings throughout
        image = np.asarray(image_rgb)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise PipelineError(f"expected an RGB uint8 image (H, W, 3), got shape "
                                f"{image.shape} dtype {image.dtype}")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise PipelineError(f"empty image of shape {image.shape}")
        boxes, views, status = self._boxes(image, settings, depth, intrinsics, camera)
        return PreparedFrame(image, boxes, settings, status, views)

    def classify(self, frame: PreparedFrame) -> tuple[list[ObjectResult], int]:
        """Stage 2 of :meth:`process`: run the student on a prepared frame's crops and score
        them against the active vocabulary (read once, when this call starts).

        Returns:
            ``(objects, vocabulary_version)`` as :meth:`process`.
        """
        active = self._active      # read once: a swap mid-frame does not affect this frame
        settings, image, boxes = frame.settings, frame.image, frame.boxes
        if not boxes:
            return [], active.version
        height, width = image.shape[:2]
        views = frame.view_boxes if frame.view_boxes is not None else boxes
        if len(views) != len(boxes):
            raise PipelineError(f"a prepared frame has {len(boxes)} boxes but "
                                f"{len(views)} view boxes")
        windows = [classification_window(b, width, height, settings.crop_square,
                                         settings.crop_context) for b in views]
        with torch.inference_mode():
            chunks = []
            for i in range(0, len(windows), MAX_CROPS_PER_BATCH):  # bounded memory per call
                part = windows[i:i + MAX_CROPS_PER_BATCH]
                crops = [crop(image, b) for b in part]
                if settings.crop_square:   # a window that could not be square: not stretched
                    crops = [pad_long_crop(c) for c in crops]
                batch = preprocess_crops(crops, self.input_spec)
                chunks.append(torch.from_numpy(self.runner.embed(batch)).float())
            emb = F.normalize(torch.cat(chunks), dim=-1)
            if self._center is not None:   # as calibration.center_embeddings
                emb = F.normalize(emb - self._center, dim=-1, eps=1e-6)
            cos = emb @ active.embeddings.T                           # (N, L)
            bias = self.effective_seen_bias(settings) * active.trained_mask \
                if active.trained_mask is not None else 0.0
            negatives = None
            if settings.negative_names and active.negatives is not None:
                negatives = (emb @ active.negatives.T).numpy()          # (N, K)
            # the same scoring function as the evaluator's (core.calibration)
            probs = torch.from_numpy(adjusted_scores(
                cos.numpy(), np.asarray(bias), self.effective_temperature(settings), negatives))
            k = min(int(settings.top_k), probs.shape[1])
            top_p, top_i = probs.topk(k, dim=-1)
            best_cos = cos.gather(1, top_i[:, :1]).squeeze(1)
        names = active.vocabulary.names
        top_p_l, top_i_l, best_cos_l = top_p.tolist(), top_i.tolist(), best_cos.tolist()
        objects = []
        threshold = self.effective_unknown_threshold(settings)
        for box, ps, idx, bc in zip(boxes, top_p_l, top_i_l, best_cos_l):
            known = ps[0] >= threshold and bc >= settings.min_similarity
            objects.append(ObjectResult(
                bbox=tuple(int(v) for v in box), label=names[idx[0]] if known else UNKNOWN_LABEL,
                score=float(ps[0]), known=bool(known),
                top_k=[(names[i], float(p)) for i, p in zip(idx, ps)]))
        return objects, active.version

    def process(self, image_rgb: np.ndarray, depth: "np.ndarray | UnalignedDepth | None" = None,
                intrinsics: CameraIntrinsics | None = None, camera: str = ""
                ) -> tuple[list[ObjectResult], int]:
        """Classify the objects in one RGB uint8 ``(H, W, 3)`` frame, optionally with its
        registered ``depth`` (float metres, 0 = none; or a depth camera's own image as
        :class:`~vl_distill_ros.perception.depth_alignment.UnalignedDepth`, aligned in the
        depth thread) and the colour camera's
        ``intrinsics`` (used by the proposals, see :meth:`boxes`): :meth:`prepare` then
        :meth:`classify`; :attr:`last_depth_status` says how depth was used.

        Returns:
            ``(objects, vocabulary_version)``: one :class:`ObjectResult` per kept box (in box
            order) and the version of the vocabulary the frame was scored against.

        Raises:
            PipelineError: the image is not a non-empty (H, W, 3) uint8 array.
        """
        frame = self.prepare(image_rgb, depth, intrinsics, camera)
        self.last_depth_status = frame.depth_status
        return self.classify(frame)


def _sanitize_with_views(boxes: Sequence[Sequence[float]], views: Sequence[Box] | None,
                         width: int, height: int, min_size: int
                         ) -> tuple[list[Box], list[Box]]:
    """:func:`sanitize_boxes` of ``boxes`` and, one for each kept box, its view box
    (``views``, one per box; None: the box itself), sanitized alike; a view box that
    does not survive is replaced by its box."""
    if views is None:
        kept = sanitize_boxes(boxes, width, height, min_size=min_size)
        return kept, list(kept)
    out: list[Box] = []
    out_views: list[Box] = []
    for box, view in zip(boxes, views):
        kept = sanitize_boxes([box], width, height, min_size=min_size)
        if kept:
            out.append(kept[0])
            out_views.append((sanitize_boxes([view], width, height, min_size=min_size)
                              or kept)[0])
    return out, out_views


def labels_document(stamp_sec: int, stamp_nanosec: int, frame_id: str, camera: str,
                    version: int, objects: Sequence[ObjectResult],
                    score_digits: int = 6) -> dict:
    """The JSON document published on ``~/labels`` for one frame.

    Schema::

        {"header": {"stamp": {"sec": int, "nanosec": int}, "frame_id": str},
         "camera": str,                      # the image topic
         "vocabulary_version": int,
         "objects": [{"bbox": [x, y, w, h], "label": str, "score": float, "known": bool,
                      "top_k": [[label, score], ...]}]}

    Scores are rounded to ``score_digits`` decimals.
    """
    return {
        "header": {"stamp": {"sec": int(stamp_sec), "nanosec": int(stamp_nanosec)},
                   "frame_id": str(frame_id)},
        "camera": str(camera),
        "vocabulary_version": int(version),
        "objects": [
            {"bbox": [int(v) for v in o.bbox], "label": o.label,
             "score": round(float(o.score), score_digits), "known": bool(o.known),
             "top_k": [[str(name), round(float(s), score_digits)] for name, s in o.top_k]}
            for o in objects],
    }


def draw_annotations(image: np.ndarray, objects: Sequence[ObjectResult]) -> np.ndarray:
    """A copy of the RGB ``image`` with each object's box and ``label score`` drawn.

    Known objects are drawn in green, unknown ones in red.
    """
    out = np.ascontiguousarray(np.array(image, dtype=np.uint8, copy=True))
    height, width = out.shape[:2]
    thickness = max(1, round(min(height, width) / 240))
    font_scale = max(0.35, min(height, width) / 960)
    for o in objects:
        x, y, w, h = (int(v) for v in o.bbox)
        colour = (40, 200, 40) if o.known else (220, 40, 40)
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), colour, thickness)
        text = f"{o.label} {o.score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        ty = y - 3 if y - th - base - 3 >= 0 else min(height - 1, y + th + 3)
        cv2.rectangle(out, (x, ty - th - 2), (min(width - 1, x + tw + 2), ty + base - 1),
                      colour, -1)
        cv2.putText(out, text, (x + 1, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return out
