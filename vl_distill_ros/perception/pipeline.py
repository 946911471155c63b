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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..model.calibration import (DEFAULT_TEMPERATURE, DEFAULT_UNKNOWN_THRESHOLD, adjusted_scores,
                                 bias_vector, negative_mask)
from ..model.descriptions import DescriptionCatalogue
from ..model.text_service import ALIKE_COSINE
from ..model.vocabulary import UNKNOWN_NAME, Vocabulary
from .boxes import Box, classification_window, crop, full_frame_box
from .camera_model import CameraIntrinsics
from .depth_alignment import UnalignedDepth
from .depth_config import DepthProposalConfig
from .depth_units import UnitVerdict
from .frame_boxes import MAX_REGISTERED_CAMERAS, FrameBoxes
from .labels_output import ObjectResult, draw_annotations, labels_document
from .object_placement import ObjectPlacement
from .object_tracks import ObjectTracks, TrackSettings
from .pipeline_settings import (CROP_CONTEXT, CROP_SOURCES, FROM_BUNDLE, MAX_ROIS,
                                PROPOSAL_SOURCES, PipelineError, PipelineSettings,
                                rois_from_flat)
from .preprocess import pad_long_crop, preprocess_crops
from .proposal_config import ProposalConfig

if TYPE_CHECKING:  # pragma: no cover
    from ..model.bundle import Bundle

# the settings, the frame's boxes and the labels output live in their own modules; their
# names stay importable from here, where the node, the replay and the benches import them
__all__ = ["CROP_SOURCES", "PROPOSAL_SOURCES", "UNKNOWN_LABEL", "ObjectResult",
           "ActiveVocabulary", "PipelineSettings", "PerceptionPipeline", "PipelineError",
           "labels_document", "draw_annotations", "rois_from_flat", "CROP_CONTEXT",
           "FROM_BUNDLE", "MAX_ROIS", "MAX_REGISTERED_CAMERAS", "PreparedFrame",
           "MAX_CROPS_PER_BATCH"]

#: Label published for crops below the open-set threshold (reserved in every vocabulary).
UNKNOWN_LABEL = UNKNOWN_NAME
#: Crops go through the student in chunks of at most this many, so the memory one frame
#: needs stays bounded however many boxes it has.
MAX_CROPS_PER_BATCH = 64


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
    #: (L,) for each label the first label embedded alike (:func:`_first_alike`), whose
    #: cosine it takes; None when no two labels are alike.
    first_alike: torch.Tensor | None = None

    @property
    def names(self) -> list[str]:
        """The label names, in order."""
        return self.vocabulary.names


def _first_alike(emb: torch.Tensor) -> torch.Tensor | None:
    """(L,) for each row of ``emb`` the first row the teacher embeds alike (cosine at least
    :data:`~vl_distill_ros.model.text_service.ALIKE_COSINE`, as
    :meth:`TextEmbeddingService.prompted_alike` reports them); None when all differ.
    A matrix product gives two equal columns cosines that differ in their last bits (a
    vectorised kernel treats a vocabulary's last columns apart when its size is not a
    multiple of its width), so the later of two labels prompted alike won about half of the
    crops where they were on top; the later now takes the first's cosine. Rows equal only
    up to float noise (the same tokens embedded in another batch, or one read from the
    cache: ~1e-7 apart) are alike too."""
    if emb.shape[0] < 2:
        return None
    unit = F.normalize(emb.detach().to(torch.float64), dim=-1)
    close = (unit @ unit.T) >= ALIKE_COSINE
    close.fill_diagonal_(True)
    index = close.to(torch.uint8).argmax(dim=1)       # the first alike row (itself at most)
    if bool((index == torch.arange(len(index))).all()):
        return None
    return index.to(torch.long)


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
    #: Classify it with :attr:`PerceptionPipeline.runner_behind` (prepared two steps behind
    #: the cameras).
    student_behind: bool = False
    #: With depth used: where each box's object stands (one per box, None where it could
    #: not be measured; :mod:`~.object_placement`); None without.
    placements: list[ObjectPlacement | None] | None = None
    #: The camera it came from (``prepare``'s ``camera``) and its stamp (seconds; None: not
    #: followed by the object tracks).
    camera: str = ""
    stamp: float | None = None


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
        close_cameras: the cameras whose frames take the box network's close pass (empty:
            every camera; see :class:`PipelineSettings`).
        inference_backend_behind: the student runtime of frames prepared two steps behind
            the cameras (``prepare(..., behind=2)``): ``same`` or ``onnxruntime_int8`` (only
            in place of ONNX Runtime float32 that ``inference_backend: auto`` chose; see
            :func:`~vl_distill_ros.model.runtime.make_behind_runner`).
        tracks: following objects across a camera's frames (frames given a ``stamp``) and
            scoring their pooled views (default: on; :class:`~.object_tracks.TrackSettings`).
        catalogue: the description catalogue the vocabulary's labels were embedded with
            (:attr:`TextEmbeddingService.catalogue`): a label then counts as a trained name
            (the seen bias, the negatives) when the name it was prompted with is one, so
            ``004_sugar_box`` is *sugar box*; None: when its own name is one.

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
                 inference_backend_behind: str = "same",
                 seen_bias: float = FROM_BUNDLE, negative_names: bool = True,
                 proposal_source: str = "auto",
                 depth_cfg: DepthProposalConfig | None = None, crop_square: bool = True,
                 crop_context: float = CROP_CONTEXT, proposal_threads: int = 2,
                 close_cameras: Sequence[str] = (),
                 catalogue: DescriptionCatalogue | None = None,
                 tracks: TrackSettings | None = None) -> None:
        from ..model.runtime import make_behind_runner, make_runner

        #: The first stage: each frame's boxes, the box network's thread and each camera's
        #: depth registration check and depth noise.
        self.frame_boxes = FrameBoxes(proposal_threads)

        self.student = bundle.student.eval()
        self.input_spec = bundle.input_spec
        self.embed_dim = int(bundle.student.embed_dim)
        #: ONNX Runtime when available (checked against torch once), else torch eager.
        self.runner = make_runner(bundle, backend=inference_backend, threads=inference_threads)
        #: The runner of frames prepared two steps behind the cameras (``behind=2``), and
        #: what it is (``same`` and why, or ``onnxruntime_int8``; see make_behind_runner).
        self.runner_behind, self.runner_behind_what = make_behind_runner(
            bundle, self.runner, inference_backend, inference_backend_behind,
            inference_threads)
        #: The bundle's calibration record (None: no bias, the fixed default threshold).
        self.calibration = bundle.calibration
        self._catalogue = catalogue
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
            crop_context=float(crop_context), close_cameras=tuple(close_cameras),
            tracks=tracks or TrackSettings())
        #: Each camera's object tracks (``tracks``; see :mod:`~.object_tracks`).
        self.tracks = ObjectTracks()
        if vocabulary is None:
            if embeddings is not None:
                raise PipelineError("embeddings given without their vocabulary")
            vocabulary, embeddings = bundle.vocabulary, bundle.text_embeddings
        elif embeddings is None:
            raise PipelineError("a vocabulary needs its text embeddings")
        self._write_lock = threading.Lock()
        #: How the last frame's depth was used: "" (no depth given), "used", or why not.
        self.last_depth_status = ""
        checked = _check_embeddings(vocabulary, embeddings, self.embed_dim)
        self._active = ActiveVocabulary(vocabulary, checked, version=1,
                                        trained_mask=self._trained_mask(vocabulary),
                                        negatives=self._negatives(vocabulary, checked),
                                        first_alike=_first_alike(checked))

    def _prompted_names(self, vocab: Vocabulary) -> list[str]:
        """The names ``vocab``'s labels were prompted with (see ``catalogue``)."""
        if self._catalogue is None:
            return vocab.names
        return [self._catalogue.prompt_label(label).name for label in vocab]

    def _trained_mask(self, vocab: Vocabulary) -> torch.Tensor:
        names = self.calibration.trained_names if self.calibration else ()
        return torch.from_numpy(bias_vector(self._prompted_names(vocab), names, 1.0))

    def _negatives(self, vocab: Vocabulary, emb: torch.Tensor) -> torch.Tensor | None:
        if self._trained_emb is None or self.calibration is None:
            return None
        keep = negative_mask(self._prompted_names(vocab), emb.numpy(),
                             self.calibration.trained_names, self._trained_emb.numpy(),
                             self.calibration.negative_similarity)
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
                                   negatives=self._negatives(vocab, emb),
                                   first_alike=_first_alike(emb))
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
        boxes, _, self.last_depth_status, _ = self.frame_boxes.boxes(
            image_rgb, settings or self._settings, depth, intrinsics, camera)
        return boxes

    def depth_fattening(self, camera: str = "") -> int:
        """The width (pixels) of the fattened rim taken off ``camera``'s depth edges
        (``fattening_search_px``; 0 until its frames show one)."""
        return self.frame_boxes.depth_fattening(camera)

    def depth_shift(self, camera: str = "") -> tuple[int, int]:
        """The pixels ``(dx, dy)`` by which ``camera``'s depth is moved onto its colour
        image (``registration_search_px``; ``(0, 0)`` until its frames show better)."""
        return self.frame_boxes.depth_shift(camera)

    def depth_unit_verdict(self, camera: str = "", min_frames: int = 3
                           ) -> UnitVerdict | None:
        """Whether ``camera``'s recent frames' depth went unused for lying out of range as
        depth in another unit would (:mod:`~vl_distill_ros.perception.depth_units`)."""
        return self.frame_boxes.depth_unit_verdict(camera, min_frames)

    def depth_noise(self, camera: str = "") -> float:
        """The depth noise (standard deviation, m, at 1 m) that ``camera``'s last frame
        with a support plane showed below it (``noise_top_sigmas``); 0 before one."""
        return self.frame_boxes.depth_noise(camera)

    def depth_sparse(self, camera: str = "") -> bool:
        """Whether ``camera``'s last frame with a support plane had sparse depth, its
        samples filled from their cells (``sparse_fill_frac``); False before one."""
        return self.frame_boxes.depth_sparse(camera)

    def close(self) -> None:
        """Stop the colour proposer's thread (``proposal_threads: 2``); idempotent. A
        frame proposed afterwards runs both proposers in the calling thread."""
        self.frame_boxes.close()

    def prepare(self, image_rgb: np.ndarray, depth: "np.ndarray | UnalignedDepth | None" = None,
                intrinsics: CameraIntrinsics | None = None, camera: str = "",
                behind: int = 0, stamp: float | None = None) -> PreparedFrame:
        """Stage 1 of :meth:`process`: check the frame and find its boxes (see :meth:`boxes`)
        with the current settings (``behind``: how far the node is behind its cameras, see
        :mod:`~vl_distill_ros.perception.keeping_up`: from 1 the boxes are found with
        ``proposal_box_net_behind``'s network, from 2 the frame is classified with
        :attr:`runner_behind` too; True counts as 1; ``stamp``: the frame's time in seconds,
        which lets ``tracks`` follow its objects). Touches no pipeline state but
        ``camera``'s registration check, so it may run in one thread while :meth:`classify`
        runs in another.

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
        boxes, views, status, placements = self.frame_boxes.boxes(
            image, settings, depth, intrinsics, camera, behind >= 1)
        if stamp is not None and not math.isfinite(float(stamp)):
            stamp = None                      # no time: the frame is not followed
        return PreparedFrame(image, boxes, settings, status, views, behind >= 2, placements,
                             camera, None if stamp is None else float(stamp))

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
        runner = self.runner_behind if frame.student_behind else self.runner
        with torch.inference_mode():
            chunks = []
            for i in range(0, len(windows), MAX_CROPS_PER_BATCH):  # bounded memory per call
                part = windows[i:i + MAX_CROPS_PER_BATCH]
                crops = [crop(image, b) for b in part]
                if settings.crop_square:   # a window that could not be square: not stretched
                    crops = [pad_long_crop(c) for c in crops]
                batch = preprocess_crops(crops, self.input_spec)
                chunks.append(torch.from_numpy(runner.embed(batch)).float())
            emb = F.normalize(torch.cat(chunks), dim=-1)
            track_ids: list[int | None] = [None] * len(boxes)
            if settings.tracks.enabled and frame.stamp is not None \
                    and settings.crop_source == "proposals" \
                    and boxes != [full_frame_box(width, height)]:
                # a fixed region or the whole frame is no object to follow: frames of
                # different objects would be pooled
                pooled, track_ids = self.tracks.update(frame.camera, frame.stamp, image, boxes,
                                                       emb.numpy(), settings.tracks)
                emb = torch.from_numpy(pooled)
            if self._center is not None:   # as calibration.center_embeddings
                emb = F.normalize(emb - self._center, dim=-1, eps=1e-6)
            cos = emb @ active.embeddings.T                           # (N, L)
            if active.first_alike is not None:   # labels prompted alike: exactly one cosine
                cos = cos[:, active.first_alike]
            bias = self.effective_seen_bias(settings) * active.trained_mask \
                if active.trained_mask is not None else 0.0
            negatives = None
            if settings.negative_names and active.negatives is not None:
                negatives = (emb @ active.negatives.T).numpy()          # (N, K)
            # the same scoring function as the evaluator's (core.calibration)
            probs = torch.from_numpy(adjusted_scores(
                cos.numpy(), np.asarray(bias), self.effective_temperature(settings), negatives,
                self.calibration.softmax_size if self.calibration is not None else None))
            k = min(int(settings.top_k), probs.shape[1])
            # a stable sort: of labels with equal scores (names the teacher embeds alike)
            # the first in the vocabulary wins, whatever the vocabulary's size or top_k
            # (torch.topk's order among ties depends on both)
            top_p, top_i = probs.sort(dim=-1, descending=True, stable=True)
            top_p, top_i = top_p[:, :k], top_i[:, :k]
            # the crop's best raw cosine over every label (before the seen bias moves the
            # top label), as min_similarity is documented
            best_cos = cos.max(dim=1).values
        names = active.vocabulary.names
        top_p_l, top_i_l, best_cos_l = top_p.tolist(), top_i.tolist(), best_cos.tolist()
        objects = []
        threshold = self.effective_unknown_threshold(settings)
        placements = frame.placements if frame.placements is not None \
            and len(frame.placements) == len(boxes) else [None] * len(boxes)
        for box, ps, idx, bc, place, track in zip(boxes, top_p_l, top_i_l, best_cos_l,
                                                  placements, track_ids):
            known = ps[0] >= threshold and bc >= settings.min_similarity
            objects.append(ObjectResult(
                bbox=tuple(int(v) for v in box), label=names[idx[0]] if known else UNKNOWN_LABEL,
                score=float(ps[0]), known=bool(known),
                top_k=[(names[i], float(p)) for i, p in zip(idx, ps)],
                position=None if place is None else place.position,
                size=None if place is None else place.size,
                orientation=None if place is None else place.orientation, track_id=track))
        return objects, active.version

    def process(self, image_rgb: np.ndarray, depth: "np.ndarray | UnalignedDepth | None" = None,
                intrinsics: CameraIntrinsics | None = None, camera: str = "",
                stamp: float | None = None) -> tuple[list[ObjectResult], int]:
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
        frame = self.prepare(image_rgb, depth, intrinsics, camera, stamp=stamp)
        self.last_depth_status = frame.depth_status
        return self.classify(frame)
