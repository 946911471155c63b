"""The sampled depth cloud of one frame: step 1 of the depth proposer (ROS-free).

:func:`depth_cloud` samples a registered depth image every ``stride`` pixels, drops the
samples out of range or on a depth discontinuity (:func:`depth_samples`, :func:`depth_span`:
the flying pixels between an object and the table) and back-projects the rest with the
camera's intrinsics into a :class:`DepthCloud`, which keeps each sample's grid cell.
Its settings are fields of :class:`~.depth_config.DepthProposalConfig`.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .camera_model import CameraIntrinsics
from .depth_config import DepthProposalConfig


__all__ = ["DepthCloud", "depth_cloud", "depth_samples", "depth_span", "SQUARE_3X3"]

#: The 8-neighbourhood (3x3).
SQUARE_3X3 = np.ones((3, 3), np.uint8)


@dataclass
class DepthCloud:
    """The sampled, filtered cloud of one depth frame (step 1 of the module docstring)."""

    #: Grid of sampled depth (m, 0 where invalid) and its validity.
    z: np.ndarray
    valid: np.ndarray
    stride: int
    #: Pixel offset of the first grid sample.
    offset: int
    #: Grid row and column of each valid sample, and its ``(N, 3)`` float32 camera-frame
    #: point (x right, y down, z forward, metres).
    rows: np.ndarray
    cols: np.ndarray
    points: np.ndarray
    #: Row-major index of each valid sample in the grid (``rows * width + cols``; computed
    #: from them when not given).
    flat: np.ndarray | None = None

    def flat_index(self) -> np.ndarray:
        """Row-major grid index of each valid sample."""
        if self.flat is None:
            self.flat = self.rows * self.z.shape[1] + self.cols
        return self.flat

    def crop(self, r0: int, r1: int, c0: int, c1: int) -> tuple["DepthCloud", np.ndarray]:
        """The samples of grid rows ``r0:r1`` and columns ``c0:c1`` as the cloud of that
        window (the same points; rows and columns from the window's corner), and their
        indices in this cloud."""
        lo, hi = np.searchsorted(self.rows, [r0, r1])   # samples come in row-major order
        cols = self.cols[lo:hi]
        idx = lo + np.flatnonzero((cols >= c0) & (cols < c1))
        return DepthCloud(self.z[r0:r1, c0:c1], self.valid[r0:r1, c0:c1], self.stride,
                          self.offset, np.take(self.rows, idx) - r0,
                          np.take(self.cols, idx) - c0, np.take(self.points, idx, 0)), idx

    def scatter(self, values: np.ndarray, fill: float, dtype: type) -> np.ndarray:
        """A grid of ``fill`` with each valid sample's cell set to its ``values`` entry."""
        grid = np.full(self.z.size, fill, dtype)
        grid[self.flat_index()] = values   # flat writes: ~2x those by row and column
        return grid.reshape(self.z.shape)


def depth_samples(depth: np.ndarray, cfg: DepthProposalConfig
                  ) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``(z, valid, stride, offset)``: ``depth`` sampled every ``cfg.stride`` pixels
    (float32 metres, 0 where invalid) and the mask of samples in range and not on a depth
    discontinuity (3x3 span above ``edge_jump_frac`` of the depth)."""
    s = int(cfg.stride)
    off = s // 2
    z = np.ascontiguousarray(depth[off::s, off::s], dtype=np.float32)
    valid = np.isfinite(z) & (z >= cfg.min_depth_m) & (z <= cfg.max_depth_m)
    z = np.where(valid, z, np.float32(0.0))
    valid &= depth_span(z, valid) <= cfg.edge_jump_frac * z
    return z, valid, s, off


def depth_span(z: np.ndarray, has_depth: np.ndarray) -> np.ndarray:
    """Per cell of the sampled depth ``z``: the largest minus the smallest depth of its 3x3
    neighbourhood, over the cells of ``has_depth`` (a step between two surfaces is large)."""
    far = np.where(has_depth, z, np.float32(1e6))
    return cv2.dilate(z, SQUARE_3X3) - cv2.erode(far, SQUARE_3X3)


def depth_cloud(depth: np.ndarray, k: CameraIntrinsics, cfg: DepthProposalConfig) -> DepthCloud:
    """Sample ``depth`` every ``cfg.stride`` pixels, drop invalid and discontinuity samples
    (:func:`depth_samples`) and back-project the rest with ``k``."""
    z, valid, s, off = depth_samples(depth, cfg)
    flat = np.flatnonzero(valid)
    # the row of each sample from the counts per row, then its column: 4x np.divmod's speed
    rows = np.repeat(np.arange(z.shape[0]), np.count_nonzero(valid, axis=1))
    cols = flat - rows * z.shape[1]
    zz = np.take(z.reshape(-1), flat)
    # per grid column / row first (the same float64 values as per sample), then per sample;
    # written straight into the float32 cloud (the rounding of astype)
    pts = np.empty((flat.size, 3), np.float32)
    if k.distorted:  # along the ray the lens bends onto each sampled pixel
        rx, ry = k.pixel_rays()
        pix = (off + rows * s) * rx.shape[1] + (off + cols * s)
        pts[:, 0] = np.take(rx, pix) * zz
        pts[:, 1] = np.take(ry, pix) * zz
    else:
        u = (off + np.arange(z.shape[1]) * s) - k.cx
        v = (off + np.arange(z.shape[0]) * s) - k.cy
        pts[:, 0] = np.take(u, cols) * zz / k.fx
        pts[:, 1] = np.take(v, rows) * zz / k.fy
    pts[:, 2] = zz
    return DepthCloud(z, valid, s, off, rows, cols, pts, flat)
