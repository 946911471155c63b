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


__all__ = ["DepthCloud", "depth_cloud", "depth_samples", "depth_span", "back_project",
           "SQUARE_3X3"]

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
    #: The depth was sparse: samples were filled from their cells (``sparse_fill_frac``).
    sparse: bool = False
    #: :func:`depth_span` of ``z`` over its cells with depth (``z > 0``), when kept from the
    #: sampling (the clusters' steps use it again); ``None`` otherwise.
    span: np.ndarray | None = None

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
                          np.take(self.cols, idx) - c0, np.take(self.points, idx, 0),
                          sparse=self.sparse), idx

    def scatter(self, values: np.ndarray, fill: float, dtype: type) -> np.ndarray:
        """A grid of ``fill`` with each valid sample's cell set to its ``values`` entry."""
        grid = np.full(self.z.size, fill, dtype)
        grid[self.flat_index()] = values   # flat writes: ~2x those by row and column
        return grid.reshape(self.z.shape)


def depth_samples(depth: np.ndarray, cfg: DepthProposalConfig
                  ) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``(z, valid, stride, offset)``: ``depth`` sampled every ``cfg.stride`` pixels
    (float32 metres, 0 where invalid; sparse depth filled from each sample's cell, see
    ``sparse_fill_frac``) and the mask of samples in range and not on a depth discontinuity
    (3x3 span above ``edge_jump_frac`` of the depth)."""
    return _samples(depth, cfg)[:4]


def _samples(depth: np.ndarray, cfg: DepthProposalConfig
             ) -> tuple[np.ndarray, np.ndarray, int, int, bool, np.ndarray]:
    """:func:`depth_samples`, whether the depth was sparse (its samples filled) and the
    :func:`depth_span` of the samples (over those in range)."""
    s = int(cfg.stride)
    off = s // 2
    z = np.ascontiguousarray(depth[off::s, off::s], dtype=np.float32)
    valid = _in_range(z, cfg)
    z = np.where(valid, z, np.float32(0.0))
    sparse = s > 1 and float(cfg.sparse_fill_frac) < 1.0 and not valid.all() and \
        _is_sparse(depth, valid, s, cfg)
    if sparse:
        _fill_grid(depth, z, valid, s, cfg)
    span = depth_span(z, valid)
    valid &= span <= cfg.edge_jump_frac * z
    return z, valid, s, off, sparse, span


def _in_range(z: np.ndarray, cfg: DepthProposalConfig) -> np.ndarray:
    """Which depths ``z`` (m) lie in ``[min_depth_m, max_depth_m]``: NaN and infinite ones
    do not (the bounds are finite: NaN compares false, and an infinity lies outside), so
    no ``np.isfinite`` pass is needed."""
    return (z >= cfg.min_depth_m) & (z <= cfg.max_depth_m)


#: Sparse depth is told from dense on every this-many-th row of the grid (a quarter of the
#: cost of filling; dense depth, the usual case, is then left as it is).
SPARSE_PROBE_ROWS = 4


def _is_sparse(depth: np.ndarray, valid: np.ndarray, s: int, cfg: DepthProposalConfig
               ) -> bool:
    """Whether more than ``sparse_fill_frac`` of the samples (of every
    :data:`SPARSE_PROBE_ROWS`-th grid row) lack a measurement their cell holds."""
    probe = valid[::SPARSE_PROBE_ROWS]
    # the samples _fill_grid would fill: those without a measurement whose cell holds one
    # in range (counted only: no depth is written)
    measured = np.zeros(probe.shape, bool)
    for dy, dx in _cell_order(s):
        view = depth[dy::s * SPARSE_PROBE_ROWS, dx::s][:probe.shape[0], :probe.shape[1]]
        rows, cols = view.shape
        measured[:rows, :cols] |= _in_range(view.astype(np.float32, copy=False), cfg)
    filled = int(np.count_nonzero(measured & ~probe))
    return filled > float(cfg.sparse_fill_frac) * probe.size


def _cell_order(s: int) -> list[tuple[int, int]]:
    """The pixels ``(dy, dx)`` of an ``s`` x ``s`` cell but its sample, nearest it first."""
    off = s // 2
    cells = [(dy, dx) for dy in range(s) for dx in range(s) if (dy, dx) != (off, off)]
    return sorted(cells, key=lambda c: ((c[0] - off) ** 2 + (c[1] - off) ** 2, c))


def _fill_grid(depth: np.ndarray, z: np.ndarray, valid: np.ndarray, s: int,
               cfg: DepthProposalConfig, row_step: int = 1) -> int:
    """Give each sample without a measurement (not ``valid``) the depth of the nearest
    measured pixel in range of its ``s`` x ``s`` grid cell, in place (the sample keeps its
    position, at most ``s - 1`` pixels away); returns how many were filled. ``z`` and
    ``valid`` hold every ``row_step``-th grid row.

    Sparse depth (pixels lost at random, a registered depth of lower resolution than the
    colour image, so measured only every second or third pixel) would otherwise lose
    samples the cell still holds, or all of them when the pattern falls on the grid's own
    pixels.
    """
    before = int(np.count_nonzero(valid))
    for dy, dx in _cell_order(s):
        view = depth[dy::s * row_step, dx::s][:z.shape[0], :z.shape[1]]
        rows, cols = view.shape
        values = view.astype(np.float32, copy=False)
        ok = ~valid[:rows, :cols] & _in_range(values, cfg)
        z[:rows, :cols][ok] = values[ok]
        valid[:rows, :cols] |= ok
    return int(np.count_nonzero(valid)) - before


def back_project(camera: CameraIntrinsics, rows: np.ndarray, cols: np.ndarray, z: np.ndarray,
                 stride: int, offset: int) -> np.ndarray:
    """``(N, 3)`` camera-frame points of grid cells (``rows``, ``cols`` of a grid sampled
    every ``stride`` pixels from ``offset``) at depths ``z`` (m), along the ray the lens
    bends onto each cell's pixel (a pinhole's ``(u - cx) / fx`` without distortion)."""
    u, v = offset + cols * stride, offset + rows * stride
    if camera.distorted:
        rx, ry = camera.pixel_rays()
        return np.stack([rx[v, u] * z, ry[v, u] * z, z], 1)
    return np.stack([(u - camera.cx) * z / camera.fx, (v - camera.cy) * z / camera.fy, z], 1)


def depth_span(z: np.ndarray, has_depth: np.ndarray) -> np.ndarray:
    """Per cell of the sampled depth ``z``: the largest minus the smallest depth of its 3x3
    neighbourhood, over the cells of ``has_depth`` (a step between two surfaces is large)."""
    far = np.where(has_depth, z, np.float32(1e6))
    return cv2.dilate(z, SQUARE_3X3) - cv2.erode(far, SQUARE_3X3)


def depth_cloud(depth: np.ndarray, k: CameraIntrinsics, cfg: DepthProposalConfig) -> DepthCloud:
    """Sample ``depth`` every ``cfg.stride`` pixels, drop invalid and discontinuity samples
    (:func:`depth_samples`) and those whose ray the lens model cannot give (NaN in
    ``k.pixel_rays()``), and back-project the rest with ``k``."""
    z, valid, s, off, sparse, span = _samples(depth, cfg)
    if cfg.min_depth_m <= 0:   # the samples in range are then not those with z > 0
        span = None
    if k.distorted:
        rays_known = np.isfinite(k.pixel_rays()[0][off::s, off::s][:z.shape[0], :z.shape[1]])
        if rays_known.shape == valid.shape and not rays_known.all():
            valid &= rays_known
    flat = np.flatnonzero(valid)
    # the row of each sample from the counts per row, then its column: 4x np.divmod's speed
    per_row = np.count_nonzero(valid, axis=1)
    rows = np.repeat(np.arange(z.shape[0]), per_row)
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
    else:   # (zz in float64 once: each product would cast it)
        # float64 whatever the intrinsics' type (integer ones: the in-place products below)
        u = (off + np.arange(z.shape[1]) * s) - float(k.cx)
        v = (off + np.arange(z.shape[0]) * s) - float(k.cy)
        z64 = zz.astype(np.float64)
        # (a row's value repeated per sample of the row: np.take's values, 2x faster)
        for axis, value, f in ((0, np.take(u, cols), k.fx), (1, np.repeat(v, per_row), k.fy)):
            value *= z64
            value /= f
            pts[:, axis] = value
    pts[:, 2] = zz
    return DepthCloud(z, valid, s, off, rows, cols, pts, flat, sparse, span)
