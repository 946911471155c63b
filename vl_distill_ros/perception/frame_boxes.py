"""The first stage of the pipeline: the boxes of one frame from its crop source.

:class:`FrameBoxes` holds what that stage keeps between frames: the second thread in which
the box network runs beside the depth proposer or the colour model (``proposal_threads``),
and per camera the depth registration check, the last measured depth noise and whether
the last depth was sparse. With
``crop_source: proposals`` a frame's boxes come from colour alone, from depth alone or from
both fused (``proposal_source``, :data:`~.pipeline_settings.PROPOSAL_SOURCES`); depth that
cannot be used never raises: the frame falls back to colour, and the status says why.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Sequence

import numpy as np

from ..thread_names import name_os_thread
from .boxes import Box, full_frame_box, sanitize_boxes
from .camera_model import CameraIntrinsics, DepthError
from .depth_alignment import UnalignedDepth
from .depth_config import DepthProposalConfig, stride_for
from .depth_fusion import fuse_proposals_with_views, fusion_colour_config, takes_close_pass
from .depth_proposals import DepthProposals, propose_depth_boxes
from .depth_units import DepthUnitCheck, UnitVerdict
from .depth_registration import DepthRegistration
from .object_placement import ObjectPlacement, place_objects
from .pipeline_settings import PipelineError, PipelineSettings
from .proposals import (NetworkBoxes, colour_model_boxes, network_detections, propose_boxes,
                        with_colour_model)

__all__ = ["FrameBoxes", "MAX_REGISTERED_CAMERAS"]

#: Cameras whose depth registration check (and last depth noise) a pipeline keeps (the
#: oldest goes first).
MAX_REGISTERED_CAMERAS = 64


def _remember(store: dict, key: str, value: object) -> None:
    """``store[key] = value``, first dropping the oldest entry when ``key`` is new and
    ``store`` already holds :data:`MAX_REGISTERED_CAMERAS`."""
    if key not in store and len(store) >= MAX_REGISTERED_CAMERAS:
        del store[next(iter(store))]
    store[key] = value


class FrameBoxes:
    """The boxes of each frame (:meth:`boxes`) and the state that stage keeps.

    Args:
        proposal_threads: 2: the box network runs in a second thread while the colour
            model (on a frame with depth and ``proposal_source: auto``, the depth proposer,
            and the colour model only with ``fuse_colour_model``) runs (the same boxes,
            sooner on two cores); 1: one after the other. :meth:`close` stops the thread.

    Thread safety: :meth:`boxes` may run in one thread at a time per camera; the depth
    accessors may be called from any thread.
    """

    def __init__(self, proposal_threads: int = 2) -> None:
        """See the class."""
        if int(proposal_threads) not in (1, 2):
            raise PipelineError(f"proposal_threads must be 1 or 2, got {proposal_threads}")
        #: With ``proposal_threads: 2`` the colour proposer's thread (frames with depth and
        #: ``proposal_source: auto``); None: both proposers run in the calling thread.
        self._colour_pool: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="colour_proposals",
            initializer=name_os_thread, initargs=("vl_proposals",)) \
            if int(proposal_threads) == 2 else None
        #: Each camera's registration check (``registration_search_px``), by camera key.
        self._registrations: dict[str, DepthRegistration] = {}
        self._registration_lock = threading.Lock()
        #: Each camera's last measured depth noise at 1 m (m), by camera key.
        self._depth_noise: dict[str, float] = {}
        #: Whether each camera's last frame with a support plane had sparse depth.
        self._depth_sparse: dict[str, bool] = {}
        #: Each camera's depth unit check (:mod:`~.depth_units`), by camera key.
        self._units: dict[str, DepthUnitCheck] = {}

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

    def depth_sparse(self, camera: str = "") -> bool:
        """Whether ``camera``'s last frame with a support plane had sparse depth, its
        samples filled from their cells (``sparse_fill_frac``); False before one."""
        with self._registration_lock:
            return self._depth_sparse.get(camera, False)

    def _unit_check(self, camera: str) -> DepthUnitCheck:
        """``camera``'s depth unit check (a new one for a new camera)."""
        with self._registration_lock:
            check = self._units.get(camera)
            if check is None:
                check = DepthUnitCheck()
                _remember(self._units, camera, check)
            return check

    def depth_unit_verdict(self, camera: str = "", min_frames: int = 3
                           ) -> UnitVerdict | None:
        """Whether ``camera``'s recent depth looks like the wrong unit
        (:meth:`~.depth_units.DepthUnitCheck.verdict`); None before any frame with depth."""
        with self._registration_lock:
            check = self._units.get(camera)
        return None if check is None else check.verdict(min_frames)

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

    def boxes(self, image_rgb: np.ndarray, s: PipelineSettings,
              depth: np.ndarray | UnalignedDepth | None,
              intrinsics: CameraIntrinsics | None, camera: str = "", behind: bool = False
              ) -> tuple[list[Box], list[Box], str, list[ObjectPlacement | None] | None]:
        """The sanitized boxes ``s``'s crop source gives for this frame (may be empty), the
        boxes the student's windows are made from (one per box), the depth status
        (``""``: no depth given, ``used``, or why not) and, when depth was used, where each
        box's object stands (:func:`~.object_placement.place_objects`; None otherwise).

        With ``crop_source`` ``proposals``, a registered ``depth`` (metres, same size as the
        image; or a depth camera's own image, aligned here) and the colour camera's
        ``intrinsics``, ``proposal_source`` decides how depth is used. Depth problems never
        raise: the frame falls back to colour proposals. ``behind``: the node is behind its
        cameras, and the frame takes the box network of ``proposal_box_net_behind``
        (:meth:`PipelineSettings.for_frames_behind`). The only state it touches is
        ``camera``'s registration check (one thread per camera at a time)."""
        s = s.for_camera(camera)
        height, width = image_rgb.shape[:2]
        status = "" if depth is None else "not used"
        views, found = None, None
        if s.crop_source == "full_frame":
            raw: list = [full_frame_box(width, height)]
        elif s.crop_source == "rois":
            raw = list(s.rois)
        else:
            raw, views, status, found = self._proposals(image_rgb, s, depth, intrinsics,
                                                        camera, behind)
        boxes, views = _sanitize_with_views(raw, views, width, height, s.min_box_size)
        if not boxes and s.crop_source == "proposals" and s.fallback_full_frame:
            boxes = sanitize_boxes([full_frame_box(width, height)], width, height,
                                   min_size=s.min_box_size)
            views = list(boxes)
            found = None          # the whole frame is no object to place
        placements = None
        if found is not None:
            try:
                placements = place_objects(found, boxes, s.depth_cfg)
            except Exception:  # noqa: BLE001 - a depth image no test foresaw: boxes kept
                placements = None
        return boxes, views, status, placements

    def _proposals(self, image: np.ndarray, s: PipelineSettings,
                   depth: np.ndarray | UnalignedDepth | None,
                   intrinsics: CameraIntrinsics | None, camera: str = "",
                   behind: bool = False
                   ) -> tuple[list[Box], list[Box] | None, str, DepthProposals | None]:
        """Colour, depth or fused proposals, the boxes the student's windows are made from
        (None: the proposals themselves), the depth status (see :meth:`boxes`) and what the
        depth proposer found when depth was used (None otherwise)."""
        if depth is None or s.proposal_source == "colour":
            s = s.for_frames_behind() if behind else s
            return self._colour_only(image, s), None, "" if depth is None else "not used", \
                None
        s = s.for_depth_frames()   # the box network of frames with depth (box_net_depth)
        s = s.for_frames_behind() if behind else s
        if s.proposal_cfg.box_net_close_width and not takes_close_pass(
                depth.depth if isinstance(depth, UnalignedDepth) else depth, s.depth_cfg,
                camera in s.close_cameras, intrinsics):
            s = s.without_close_pass()   # a frame with depth: only a close camera takes it
        if intrinsics is None:
            return self._colour_only(image, s), None, "no camera intrinsics", None
        unaligned = isinstance(depth, UnalignedDepth)
        size = (intrinsics.height, intrinsics.width) if unaligned else np.shape(depth)
        if size != image.shape[:2]:
            return self._colour_only(image, s), None, (
                f"depth is {size[::-1]} but the image is {image.shape[1]}x{image.shape[0]}"), \
                None
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
            self._unit_check(camera).update(depth, depth_cfg.min_depth_m,
                                            depth_cfg.max_depth_m, found.plane is not None)
        except DepthError as exc:
            return self._colour_only(image, s, pending), None, str(exc), None  # colour only
        except Exception as exc:  # noqa: BLE001 - a depth image no test foresaw
            # the frame keeps its colour boxes; the status names the failure per camera
            return self._colour_only(image, s, pending), None, (
                f"the depth proposer failed on this frame ({type(exc).__name__}: "
                f"{str(exc)[:200]}); colour only"), None
        if found.plane is None:
            return self._colour_only(image, s, pending), None, found.note, None
        with self._registration_lock:
            _remember(self._depth_noise, camera, found.noise_m)
            _remember(self._depth_sparse, camera, found.sparse)
        count = int(s.proposal_cfg.max_count)
        if s.proposal_source == "depth":
            return list(found.boxes)[:count], None, "used", found
        colour, network, weak = self._colour_boxes(image, s, pending)
        boxes, views = fuse_proposals_with_views(found, colour, s.depth_cfg, count, network,
                                                 weak)
        return boxes, views, "used", found

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
