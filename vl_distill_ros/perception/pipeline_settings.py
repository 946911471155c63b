"""The pipeline's per-frame settings (:class:`PipelineSettings`, validated and immutable),
the values they take and :class:`PipelineError`, which every invalid setting, vocabulary
embedding or input image raises."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .box_net import load_box_net, resolve_box_net
from .camera_model import DepthError
from .depth_config import DepthProposalConfig, load_depth_config
from .object_tracks import TrackSettings
from .proposal_config import ProposalConfig

__all__ = ["CROP_SOURCES", "PROPOSAL_SOURCES", "FROM_BUNDLE", "MAX_ROIS", "MAX_CLOSE_CAMERAS",
           "CROP_CONTEXT", "PipelineError", "PipelineSettings", "rois_from_flat"]

#: Valid values of ``crop_source``.
CROP_SOURCES: tuple[str, ...] = ("proposals", "full_frame", "rois")
#: Valid values of ``proposal_source``: ``auto`` fuses depth and colour proposals when the
#: frame has depth, ``depth`` uses depth boxes alone, ``colour`` ignores depth; frames
#: without usable depth always get colour proposals.
PROPOSAL_SOURCES: tuple[str, ...] = ("auto", "colour", "depth")
#: ``unknown_threshold`` / ``seen_bias`` value meaning "the bundle's calibrated value".
FROM_BUNDLE = -1.0
#: Most fixed regions (``rois``), like ``proposal_max_count``'s upper bound.
MAX_ROIS = 256
#: Smallest score_temperature other than 0 (a subnormal one, 1e-310, overflowed the
#: cosines to inf and published NaN scores, which are not JSON).
MIN_SCORE_TEMPERATURE = 1e-4
#: Most cameras ``close_cameras`` may name.
MAX_CLOSE_CAMERAS = 64
#: Default margin of the square window the student sees around a box (``crop_context``),
#: as a fraction of the box's longer side. Chosen on a tabletop bag of ID objects and the
#: calibration's pseudo-unseen objects (top-1 accuracy of both groups, 0 to 0.3 tried), never
#: on an OOD object; see the README's "Crop shape" notes.
CROP_CONTEXT = 0.15


class PipelineError(ValueError):
    """Invalid pipeline settings, vocabulary embeddings or input image; says why."""


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
        close_cameras: the cameras (the ``camera`` keys of the pipeline's calls) whose
            frames take the box network's close pass (``proposal_cfg.box_net_close_width``),
            with depth too; empty: every camera's frames without depth (and with depth when
            it says the camera is close, ``depth_cfg.close_view_m``, or
            ``depth_cfg.fuse_close_pass``). See :meth:`for_camera`.
        tracks: following objects across a camera's frames and pooling their views
            (:mod:`~vl_distill_ros.perception.object_tracks`; frames with a stamp only).
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
    close_cameras: tuple[str, ...] = ()
    tracks: TrackSettings = field(default_factory=TrackSettings)

    def __post_init__(self) -> None:
        cameras = tuple(str(c) for c in self.close_cameras)
        if len(cameras) > MAX_CLOSE_CAMERAS or any(not c for c in cameras):
            raise PipelineError(f"close_cameras must name at most {MAX_CLOSE_CAMERAS} cameras, "
                                f"none empty; got {list(self.close_cameras)[:8]}")
        object.__setattr__(self, "close_cameras", cameras)
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
        if not (math.isfinite(t) and (t == 0 or t >= MIN_SCORE_TEMPERATURE)):
            raise PipelineError(f"score_temperature must be >= {MIN_SCORE_TEMPERATURE:g}, or "
                                f"0 for the bundle's calibrated temperature; got "
                                f"{self.score_temperature}")
        if int(self.min_box_size) < 1:
            raise PipelineError(f"min_box_size must be >= 1, got {self.min_box_size}")

    @classmethod
    def from_params(cls, values: Mapping[str, Any],
                    depth_cfg: DepthProposalConfig | None = None) -> "PipelineSettings":
        """Validated settings from the node's parameter values (``crop_source``, ``rois``,
        ``proposal_*``, ``unknown_threshold``, ... as named in :mod:`vl_distill_ros.ros.params`):
        the one rule of the node and of the offline replay. ``depth_cfg``: the depth
        proposer settings already read from ``depth_proposal_config`` (a change of another
        parameter does not read that file again); None: read it.

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
                                               ProposalConfig.box_net_threads)),
                box_net_close_width=int(values.get("proposal_box_net_close_width",
                                                   ProposalConfig.box_net_close_width)),
                box_net_depth=str(values.get("proposal_box_net_depth",
                                             ProposalConfig.box_net_depth)),
                box_net_behind=str(values.get("proposal_box_net_behind",
                                              ProposalConfig.box_net_behind)))
            depth_cfg_net = proposal_cfg.for_depth_frames()
            for name in {proposal_cfg.box_net, depth_cfg_net.box_net,
                         proposal_cfg.behind_box_net(), depth_cfg_net.behind_box_net()}:
                net = resolve_box_net(name)
                if net is not None:  # a bad file is refused here, not on the next frame
                    load_box_net(net, proposal_cfg.box_net_threads)
        except ValueError as exc:
            raise PipelineError(f"proposal settings: {exc}") from None
        try:
            tracks = TrackSettings(
                enabled=bool(values.get("track_objects", TrackSettings.enabled)),
                memory=float(values.get("track_memory", TrackSettings.memory)),
                min_iou=float(values.get("track_min_iou", TrackSettings.min_iou)),
                max_gap_s=float(values.get("track_max_gap_s", TrackSettings.max_gap_s)))
        except ValueError as exc:
            raise PipelineError(str(exc)) from None
        depth_path = str(values.get("depth_proposal_config", "") or "")
        try:
            if depth_cfg is None:
                depth_cfg = load_depth_config(depth_path) if depth_path else \
                    DepthProposalConfig()
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
            crop_context=float(values.get("crop_context", CROP_CONTEXT)),
            close_cameras=tuple(str(t).strip() for t in
                                values.get("proposal_box_net_close_topics", ()) or ()),
            tracks=tracks)

    def for_camera(self, camera: str) -> "PipelineSettings":
        """The settings for a frame of ``camera``: these, without the box network's close
        pass when ``close_cameras`` lists other cameras only."""
        if not self.close_cameras or camera in self.close_cameras:
            return self
        return self.without_close_pass()

    def without_close_pass(self) -> "PipelineSettings":
        """These settings with the box network's close pass off (``box_net_close_width``
        0); made once, then reused; these themselves when it is off already."""
        if not self.proposal_cfg.box_net_close_width:
            return self
        far = self.__dict__.get("_far")
        if far is None:
            far = dataclasses.replace(
                self, close_cameras=(),
                proposal_cfg=dataclasses.replace(self.proposal_cfg, box_net_close_width=0))
            object.__setattr__(self, "_far", far)
        return far

    def for_depth_frames(self) -> "PipelineSettings":
        """These settings for a frame that comes with depth: the box network of
        ``proposal_cfg.box_net_depth`` (:meth:`ProposalConfig.for_depth_frames`); made once,
        then reused; these themselves when it is the same network."""
        return self._with_proposals("_with_depth", self.proposal_cfg.for_depth_frames())

    def for_frames_behind(self) -> "PipelineSettings":
        """These settings for a frame processed while the node is behind its cameras: the
        box network of ``proposal_cfg.box_net_behind`` (:meth:`ProposalConfig.for_frames_behind`);
        made once, then reused; these themselves when it is the same network."""
        return self._with_proposals("_behind", self.proposal_cfg.for_frames_behind())

    def behind_changes_boxes(self) -> bool:
        """Whether a frame processed behind the cameras gets another box network
        (:meth:`for_frames_behind`, with or without depth): False with ``crop_source``
        ``full_frame`` or ``rois``, or where ``proposal_box_net_behind`` keeps the network."""
        if self.crop_source != "proposals":
            return False
        with_depth = self.for_depth_frames()
        return self.for_frames_behind() is not self or \
            with_depth.for_frames_behind() is not with_depth

    def _with_proposals(self, key: str, cfg: ProposalConfig) -> "PipelineSettings":
        """These settings with ``cfg`` for ``proposal_cfg``, kept under ``key`` the first time
        (``cfg`` is the same each time for one key); these themselves when ``cfg`` is theirs."""
        if cfg is self.proposal_cfg:
            return self
        derived = self.__dict__.get(key)
        if derived is None:
            derived = dataclasses.replace(self, proposal_cfg=cfg)
            object.__setattr__(self, key, derived)
        return derived

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
