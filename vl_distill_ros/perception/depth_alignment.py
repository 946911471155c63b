"""Depth from a separate depth camera, registered to the colour camera (numpy and OpenCV, no
ROS).

A driver that does not align its depth to colour (a RealSense without
``align_depth.enable``, a stereo head beside an RGB camera) publishes depth in the depth
camera's own image, with its own CameraInfo, a few centimetres from the colour camera.
:func:`align_depth` does what the drivers' alignment does: every measured depth pixel is
back-projected along its ray (the depth camera's lens model followed), moved into the colour
camera's optical frame by the depth-to-colour transform, and projected into the colour image
(its lens followed), nearest surface first; one-pixel cracks that resampling leaves are
filled from their nearest neighbour. :func:`transform_from_pose` reads the transform as ROS
tools print it (translation, then a unit quaternion ``x y z w``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from .camera_model import CameraIntrinsics, DepthError
from .static_transforms import Transform, TransformError

__all__ = ["align_depth", "transform_from_pose", "POSE_VALUES", "UnalignedDepth"]

#: Values of one pose: translation x, y, z (m), rotation as a quaternion x, y, z, w.
POSE_VALUES = 7
#: A point projected through the colour camera's lens lands on a pixel whose ray (the lens
#: model's inverse) is its own within this many pixels (at the focal length), or it is a
#: point the lens model folds back onto the image from outside its field of view.
RAY_MATCH_PX = 8.0


def transform_from_pose(pose: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``(R, t)`` of a pose ``[x, y, z, qx, qy, qz, qw]`` (the depth camera's optical frame
    in the colour camera's: a point ``p`` of the depth camera is ``R p + t`` in the colour
    camera's frame). The quaternion is normalised.

    Raises:
        DepthError: not 7 finite values, a zero quaternion or a translation over 10 m.
    """
    try:
        pose_tf = Transform.from_pose(pose, what="a depth-to-colour pose")
    except TransformError as exc:
        raise DepthError(str(exc)) from None
    r, t = pose_tf.rotation, pose_tf.translation
    if float(np.linalg.norm(t)) > 10.0:
        raise DepthError(f"the depth camera lies {np.linalg.norm(t):.1f} m from the colour "
                         "camera: more than 10 m (metres expected)")
    return r, t


def _points(depth: np.ndarray, camera: CameraIntrinsics
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x, y, z`` (float32) of the measured pixels of ``depth`` (m, 0 = none)."""
    z = np.asarray(depth, np.float32)
    measured = np.flatnonzero(z > 0)                   # flat indices: one pass, no 2-D pairs
    if camera.distorted:
        rx, ry = camera.pixel_rays()
        measured = measured[np.isfinite(rx.ravel()[measured])]   # rays the lens model gives
        zf = z.ravel()[measured]
        return (rx.ravel()[measured].astype(np.float32) * zf,
                ry.ravel()[measured].astype(np.float32) * zf, zf)
    zf = z.ravel()[measured]
    u = (measured % z.shape[1]).astype(np.float32)
    v = (measured // z.shape[1]).astype(np.float32)
    return ((u - np.float32(camera.cx)) * (zf / np.float32(camera.fx)),
            (v - np.float32(camera.cy)) * (zf / np.float32(camera.fy)), zf)


def align_depth(depth: np.ndarray, depth_camera: CameraIntrinsics,
                colour_camera: CameraIntrinsics, rotation: np.ndarray,
                translation: np.ndarray) -> np.ndarray:
    """``depth`` (float metres, 0 = none) of the depth camera, as the colour camera sees it:
    float32 ``(colour height, colour width)``, 0 where no measured point lands.

    Raises:
        DepthError: ``depth`` is not the depth camera's size.
    """
    depth = np.asarray(depth)
    if depth.shape != (depth_camera.height, depth_camera.width):
        raise DepthError(f"the depth image is {depth.shape[1]}x{depth.shape[0]} but its "
                         f"CameraInfo is for {depth_camera.width}x{depth_camera.height}")
    w, h = int(colour_camera.width), int(colour_camera.height)
    out = np.zeros(h * w, np.float32)
    x, y, z = _points(depth, depth_camera)
    r = np.asarray(rotation, np.float32)
    t = np.asarray(translation, np.float32)
    xc, yc, zc = (r[i, 0] * x + r[i, 1] * y + r[i, 2] * z + t[i] for i in range(3))
    front = zc > 1e-3
    xc, yc, zc = xc[front], yc[front], zc[front]
    if not zc.size:
        return out.reshape(h, w)
    if colour_camera.distorted:
        u, v = colour_camera.project(np.stack([xc, yc, zc], 1).astype(np.float64))
    else:
        u = np.float32(colour_camera.fx) * xc / zc + np.float32(colour_camera.cx)
        v = np.float32(colour_camera.fy) * yc / zc + np.float32(colour_camera.cy)
    ui, vi = np.rint(u).astype(np.int64), np.rint(v).astype(np.int64)
    inside = (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h)
    idx, z = vi[inside] * w + ui[inside], zc[inside]
    if colour_camera.distorted:
        # a lens model bends the rays only so far: beyond that (a barrel lens, k1 < 0, far
        # outside the colour camera's field of view, which a wider depth camera sees) its
        # polynomial turns back and folds such points onto the image. Keep the points whose
        # ray is the one the lens bends onto their pixel (the colour camera's ray table, NaN
        # where the lens gives none), as back-projection does.
        rx, ry = colour_camera.pixel_rays()
        tol = RAY_MATCH_PX / colour_camera.focal
        same = (np.abs(np.take(rx, idx) - xc[inside] / z) <= tol) & \
            (np.abs(np.take(ry, idx) - yc[inside] / z) <= tol)
        idx, z = idx[same], z[same]
    shared = np.bincount(idx, minlength=h * w)[idx] > 1   # pixels that several points reach
    out[idx[~shared]] = z[~shared]
    if shared.any():                                       # the nearest surface wins
        near = np.full(h * w, np.inf, np.float32)
        np.minimum.at(near, idx[shared], z[shared])
        out[idx[shared]] = near[idx[shared]]
    out = out.reshape(h, w)
    # one-pixel cracks (a finer colour grid than the depth's leaves empty rows and columns;
    # where they cross, four of the eight neighbours are measured; along a true hole's
    # straight edge three): the nearest of the 3x3 neighbours, as a driver's alignment fills
    filled = cv2.erode(np.where(out > 0, out, np.float32(np.inf)), np.ones((3, 3), np.uint8))
    measured = cv2.boxFilter((out > 0).astype(np.float32), -1, (3, 3), normalize=False,
                             borderType=cv2.BORDER_CONSTANT)
    crack = (out == 0) & np.isfinite(filled) & (measured >= 3.5)
    out[crack] = filled[crack]
    return out


@dataclass(frozen=True)
class UnalignedDepth:
    """A depth camera's own image and how to align it to the colour camera: what the node
    hands the pipeline, which aligns it (:meth:`aligned`) in its depth thread while the
    colour proposer runs in the other."""

    #: ``(depth camera height, width)`` float metres, 0 = none.
    depth: np.ndarray
    #: The depth camera (its CameraInfo, at the size of ``depth``).
    camera: CameraIntrinsics
    #: The depth camera's optical frame in the colour camera's (``R p + t``).
    rotation: np.ndarray
    translation: np.ndarray

    def aligned(self, colour_camera: CameraIntrinsics) -> np.ndarray:
        """:func:`align_depth` to ``colour_camera``.

        Raises:
            DepthError: ``depth`` is not the depth camera's size.
        """
        return align_depth(self.depth, self.camera, colour_camera, self.rotation,
                           self.translation)
