"""What a camera bag holds, as the writer and the reader of :mod:`.bag_io` pass it around
(ROS-free): the topic names (:class:`BagTopics`), a frame to write (:class:`BagFrame`),
the frames read back (:class:`ImageMessage`, :class:`RGBDFrame`), the ground truth
(:class:`GroundTruthObject`, :func:`ground_truth_document`), stamps in nanoseconds and the
storage, compression and image formats a bag may be written in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np

__all__ = ["BagTopics", "GroundTruthObject", "BagFrame", "ImageMessage", "RGBDFrame",
           "STORAGES", "COMPRESSIONS", "IMAGE_FORMATS", "stamp_to_ns", "ns_to_stamp",
           "ground_truth_document", "object_document", "camera_info_k"]

#: Storage plugins :func:`write_camera_bag` can write.
STORAGES: tuple[str, ...] = ("mcap", "sqlite3")
#: Compressions :func:`write_camera_bag` can apply: ``zstd`` is MCAP chunk compression for
#: ``mcap`` (standard MCAP, read by ``ros2 bag`` without any setting) and rosbag2 per-message
#: compression for ``sqlite3`` (recorded in ``metadata.yaml``; ``ros2 bag`` decompresses it
#: with its default zstd plugin).
COMPRESSIONS: tuple[str, ...] = ("none", "zstd")
#: How :func:`write_camera_bag` writes images: ``raw`` (``Image``: rgb8 colour, 16UC1 depth)
#: or as image_transport's transports, ``jpeg``/``png`` (colour as ``CompressedImage`` on
#: ``<camera>/compressed``, depth as 16UC1 ``compressedDepth`` PNG on
#: ``<depth>/compressedDepth``), as robots usually record.
IMAGE_FORMATS: tuple[str, ...] = ("raw", "jpeg", "png")


@dataclass(frozen=True)
class BagTopics:
    """Topic names and frame ids of a camera bag."""

    camera: str = "/camera/image_raw"
    hand_camera: str = "/hand_camera/image_raw"
    ground_truth: str = "/ground_truth"
    camera_frame_id: str = "camera_color_optical_frame"
    hand_frame_id: str = "hand_camera_color_optical_frame"
    #: Registered depth (16UC1, mm) and the colour camera's CameraInfo of each camera;
    #: written only for frames that carry depth. Depth shares the colour frame id.
    depth: str = "/camera/depth/image_raw"
    camera_info: str = "/camera/camera_info"
    #: Depth from a separate depth camera (:attr:`BagFrame.depth_camera`): its CameraInfo,
    #: its optical frame and the static transform placing it in the colour camera's.
    depth_camera_info: str = "/camera/depth/camera_info"
    depth_frame_id: str = "camera_depth_optical_frame"
    tf_static: str = "/tf_static"
    hand_depth: str = "/hand_camera/depth/image_raw"
    hand_camera_info: str = "/hand_camera/camera_info"


class GroundTruthObject(NamedTuple):
    """One labelled object of one image."""

    #: ``(x, y, w, h)`` in pixels.
    bbox: tuple[int, int, int, int]
    #: Natural vocabulary name (what the node publishes), e.g. ``banana``.
    label: str
    #: Stable key (model folder name), e.g. ``011_banana``; may be empty.
    key: str = ""
    #: Visible pixels / pixels of the whole object (occluders and the image border
    #: removed) in [0, 1], where the source knows it (a render, a BOP ``visib_fract``);
    #: ``None`` otherwise.
    visible_fraction: float | None = None
    #: The centre of the object's 3-D bounding box in the camera's optical frame (metres),
    #: where the source knows it (a render); ``None`` otherwise. Scored against the
    #: ``position`` the node publishes with depth.
    position: tuple[float, float, float] | None = None


@dataclass
class BagFrame:
    """One time step to write: the main image, its objects, optionally a hand image."""

    #: Stamp (ns since the epoch) of the images, their ground truth and the bag time.
    stamp_ns: int
    #: ``(H, W, 3)`` uint8 RGB.
    image: np.ndarray
    objects: Sequence[GroundTruthObject] = ()
    hand_image: np.ndarray | None = None
    hand_objects: Sequence[GroundTruthObject] = ()
    #: Optional registered depth of the main image: ``(H, W)`` float metres (0 = none) or
    #: uint16 millimetres; written as 16UC1 with a CameraInfo from ``intrinsics``.
    depth: np.ndarray | None = None
    #: ``(fx, fy, cx, cy)`` of the main camera (needed with ``depth``).
    intrinsics: tuple[float, float, float, float] | None = None
    hand_depth: np.ndarray | None = None
    hand_intrinsics: tuple[float, float, float, float] | None = None
    #: The main camera's lens model for its CameraInfo, ``(distortion_model, d)``
    #: (``None``: a distortion-free ``plumb_bob``).
    lens: tuple[str, Sequence[float]] | None = None
    #: ``depth`` comes from a separate depth camera, not registered to the colour image:
    #: ``(fx, fy, cx, cy, width, height)`` of that camera, and its optical frame in the
    #: colour camera's, ``(x, y, z, qx, qy, qz, qw)`` (written once on ``/tf_static``).
    depth_camera: tuple[float, ...] | None = None
    depth_pose: tuple[float, ...] | None = None


class ImageMessage(NamedTuple):
    """One decoded image read from a bag."""

    topic: str
    #: ``header.stamp`` in ns (what ground truth is keyed by).
    stamp_ns: int
    #: Bag (log) time in ns.
    log_time_ns: int
    frame_id: str
    #: Encoding as recorded, e.g. ``rgb8`` (a CompressedImage's ``format``).
    encoding: str
    #: ``(H, W, 3)`` uint8 RGB.
    image: np.ndarray


class RGBDFrame(NamedTuple):
    """One decoded colour image with its depth partner, read by :meth:`BagContents.rgbd_frames`."""

    topic: str
    stamp_ns: int
    log_time_ns: int
    frame_id: str
    encoding: str
    #: ``(H, W, 3)`` uint8 RGB.
    image: np.ndarray
    #: ``(H, W)`` float32 metres (0 = no measurement), or ``None`` (no partner, or bad);
    #: an ``UnalignedDepth`` with :meth:`BagContents.rgbd_frames`'s ``defer_alignment``.
    depth: Any = None
    #: ``(fx, fy, cx, cy, width, height)`` from the paired CameraInfo (its K, or its P for
    #: an ``image_rect`` topic, with its binning and ROI: see :func:`camera_info_k`), or None.
    camera_info: tuple[float, float, float, float, int, int] | None = None
    #: Why there is no depth ("" when paired, or when the camera has no depth topic).
    depth_note: str = ""
    #: The paired CameraInfo's lens model: ``(distortion_model, d)`` (``("", ())``: none,
    #: or the images are rectified).
    distortion: tuple[str, tuple[float, ...]] = ("", ())

    def intrinsics(self):
        """The paired camera as a
        :class:`~vl_distill_ros.perception.camera_model.CameraIntrinsics` (its K, size
        and lens model), or ``None`` without a CameraInfo.

        Raises:
            DepthError: the CameraInfo's values are unusable (e.g. a zero K).
        """
        from vl_distill_ros.perception.camera_model import CameraIntrinsics

        if self.camera_info is None:
            return None
        fx, fy, cx, cy, width, height = self.camera_info
        return CameraIntrinsics.from_k([fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0], width,
                                       height, *self.distortion)


def stamp_to_ns(sec: int, nanosec: int) -> int:
    """``sec`` + ``nanosec`` as integer nanoseconds."""
    return int(sec) * 1_000_000_000 + int(nanosec)


def ns_to_stamp(ns: int) -> tuple[int, int]:
    """Integer nanoseconds as ``(sec, nanosec)``."""
    return int(ns) // 1_000_000_000, int(ns) % 1_000_000_000


def ground_truth_document(stamp_ns: int, frame_id: str, camera: str,
                          objects: Sequence[GroundTruthObject]) -> dict[str, Any]:
    """The ``/ground_truth`` JSON document of one image (the node's ``~/labels`` schema with
    ``score`` 1, ``known`` true, an empty ``top_k``, each object's ``key`` and, where known,
    its ``visible_fraction`` and ``position``)."""
    sec, nanosec = ns_to_stamp(stamp_ns)
    return {
        "header": {"stamp": {"sec": sec, "nanosec": nanosec}, "frame_id": str(frame_id)},
        "camera": str(camera),
        "vocabulary_version": 0,
        "objects": [object_document(o) | {"score": 1.0, "known": True, "top_k": []}
                    for o in objects],
    }


def object_document(o: GroundTruthObject) -> dict[str, Any]:
    """One ground-truth object as JSON: ``bbox``, ``label``, ``key`` and, where known,
    ``visible_fraction`` (rounded to 4 places) and ``position`` (metres, to 0.1 mm)."""
    out: dict[str, Any] = {"bbox": [int(v) for v in o.bbox], "label": str(o.label),
                           "key": str(o.key)}
    if o.visible_fraction is not None:
        out["visible_fraction"] = round(float(o.visible_fraction), 4)
    if o.position is not None:
        out["position"] = [round(float(v), 4) for v in o.position]
    return out


def camera_info_k(msg: Any, rectified: bool = False,
                  image_size: tuple[int, int] | None = None
                  ) -> tuple[float, float, float, float, int, int]:
    """``(fx, fy, cx, cy, width, height)`` of the images a deserialised
    ``sensor_msgs/CameraInfo`` describes (its ``k`` matrix, row-major 3x3; for
    ``rectified`` images its projection matrix ``p`` when that is not all zeros; reduced by
    its binning and region of interest, REP 104, unless only its full frame fits
    ``image_size``: see :func:`~vl_distill_ros.perception.camera_model.image_camera`);
    otherwise unchecked.

    Raises:
        DepthError: K is not 3x3, or a binning or ROI that cannot be (see ``image_camera``).
    """
    from vl_distill_ros.perception.camera_model import image_camera

    return image_camera(msg, rectified, image_size)
