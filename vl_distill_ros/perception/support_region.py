"""The extent of the support surface (the table top) that objects stand on.

The tabletop recipe of robot grasping stacks keeps only what stands *on* the table: the
points above the plane whose feet fall inside the convex hull of the table's own points
(PCL's polygonal prism). Without it, anything in the room beyond the table that rises to
the table's height (a cabinet, a chair, a box on the floor) is a cluster above the plane.

:func:`support_region` takes the samples that lie on the fitted plane, keeps their large
connected pieces on the sample grid (every other row and column; an opening first removes
the thin lines where other surfaces, such as a wall or a cabinet's side, cross the plane's
height) and takes the convex hull of their outlines in the plane, together with the
camera's foot on the plane (the table between the camera and the bottom of the image is
out of view, not absent).
:meth:`SupportRegion.holds` then tests the feet of a cluster's samples. ROS-free; numpy and
OpenCV only.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["SupportRegion", "support_region"]

#: The 8-neighbourhood (3x3): the opening that removes lines up to two cells wide.
_K3 = np.ones((3, 3), np.uint8)
#: Up to this many pieces of the surface are each cut out of the whole grid (cheaper than
#: their bounding boxes' statistics); more (a small ``min_frac`` keeps up to ``1 / min_frac``
#: of them) are each cut out by its box, so that the cost stays linear in the grid's size.
WHOLE_GRID_PIECES = 4


@dataclass(frozen=True)
class SupportRegion:
    """Convex extent of the support surface in its plane (camera frame, metres)."""

    #: Unit normal of the plane (towards the camera).
    normal: np.ndarray
    #: Two orthonormal directions in the plane, rows of a ``(2, 3)`` array.
    axes: np.ndarray
    #: ``(N, 1, 2)`` float32 convex hull in plane coordinates (along ``axes``; the camera's
    #: foot on the plane is their origin).
    hull: np.ndarray
    #: A point counts as on the surface up to this far outside the hull (m).
    margin_m: float

    def plane_coords(self, points: np.ndarray) -> np.ndarray:
        """``(N, 2)`` coordinates in the plane of camera-frame ``points`` ``(N, 3)``
        (projected along the normal)."""
        return np.asarray(points, np.float64).reshape(-1, 3) @ self.axes.T

    def _inside(self, uv: np.ndarray) -> bool:
        return cv2.pointPolygonTest(self.hull, (float(uv[0]), float(uv[1])), True) \
            >= -self.margin_m

    def holds(self, feet: np.ndarray) -> bool:
        """Whether the centre of ``feet`` (camera-frame points ``(N, 3)`` on the plane: a
        cluster's samples moved down along the normal) lies on the surface (``margin_m``)."""
        feet = np.asarray(feet).reshape(-1, 3)
        if feet.shape[0] == 0:
            return False
        return self._inside(self.plane_coords(feet.mean(axis=0, dtype=np.float64))[0])


def _plane_axes(normal: np.ndarray) -> np.ndarray:
    """Two orthonormal directions perpendicular to the unit ``normal``."""
    n = np.asarray(normal, np.float64)
    a = _cross(n, np.eye(3)[int(np.argmin(np.abs(n)))])
    a /= np.sqrt(a.dot(a))   # np.linalg.norm's sum
    return np.stack([a, _cross(n, a)])


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.cross`` of two float64 3-vectors, its products and differences in its order
    (10x its speed)."""
    a0, a1, a2 = a.tolist()
    b0, b1, b2 = b.tolist()
    return np.array([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0])


def _points_of(flat: np.ndarray, points: np.ndarray, key: np.ndarray) -> np.ndarray:
    """The points (float64) of the grid cells ``key`` that ``flat`` (ascending row-major
    indices of ``points``) holds; the others are left out."""
    if flat.size == 0:
        return np.zeros((0, 3))
    index = np.minimum(np.searchsorted(flat, key), len(flat) - 1)
    return np.take(points, index[flat[index] == key], 0).astype(np.float64)


def support_region(on_plane: np.ndarray, flat: np.ndarray, points: np.ndarray,
                   normal: np.ndarray, min_frac: float, margin_m: float,
                   measured: np.ndarray | None = None,
                   extra: tuple[np.ndarray, np.ndarray] | None = None
                   ) -> SupportRegion | None:
    """The surface's extent from the grid of the samples on the plane.

    Args:
        on_plane: ``(rows, cols)`` uint8 grid, 1 where the cell's sample lies on the plane.
        flat: the row-major grid index of each sample of ``points`` (ascending).
        points: ``(N, 3)`` camera-frame samples.
        normal: the plane's unit normal (towards the camera).
        min_frac: a connected piece of the on-plane cells of every other row and column
            (after an opening that removes lines up to two of its cells wide) is surface
            when it holds at least this fraction of them all.
        margin_m: see :attr:`SupportRegion.margin_m`.
        measured: ``(rows, cols)`` bool grid, True where the cell holds a sample (None: all
            of them do, or the gaps are not filled). A cell without one next to a cell on
            the plane counts as plane: sparse or holey depth (pixels lost at random, a
            depth camera of lower resolution registered to a larger colour image) leaves
            the table's cells scattered, which the opening would otherwise remove.
        extra: more cells on the plane, ``(row-major grid indices ascending, (M, 3)
            points)``, not among ``flat`` (samples the cloud dropped as discontinuities).

    Returns:
        The region, or ``None`` when no piece is left, or none holds ``min_frac`` of them
        (nothing is then filtered).
    """
    grid = on_plane
    if measured is not None:
        grid = on_plane | (~measured & cv2.dilate(on_plane, _K3).view(bool)).view(np.uint8)
    mask = cv2.morphologyEx(np.ascontiguousarray(grid[::2, ::2]), cv2.MORPH_OPEN, _K3)
    count, labels = cv2.connectedComponents(mask, connectivity=8)
    if count <= 1:
        return None
    # (the areas only: connectedComponentsWithStats' other statistics cost 4x the labels)
    areas = np.bincount(labels.reshape(-1), minlength=count)[1:]
    keep = 1 + np.flatnonzero(areas >= min_frac * areas.sum())
    # a plane broken into many small pieces (speckled depth) may have none this large
    cells = []
    boxes = [(0, 0, mask.shape[1], mask.shape[0])] * count   # the whole grid per piece
    if keep.size > WHOLE_GRID_PIECES:   # (a small min_frac): each piece within its box
        _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        boxes = stats[:, :4].tolist()
    for label in keep.tolist():
        x, y, w, h = boxes[label]
        piece = (labels[y:y + h, x:x + w] == label).view(np.uint8)
        contours, _ = cv2.findContours(piece, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                       offset=(x, y))
        cells += [c.reshape(-1, 2) for c in contours]
    if not cells:
        return None
    cell = 2 * np.concatenate(cells)
    # the samples of those cells (samples are row-major; a filled gap holds none)
    key = cell[:, 1] * on_plane.shape[1] + cell[:, 0]
    found = [_points_of(flat, points, key)]
    if extra is not None:
        found.append(_points_of(extra[0], extra[1], key))
    cell_points = np.concatenate(found)
    if cell_points.shape[0] == 0:
        return None
    normal = np.asarray(normal, np.float64)
    axes = _plane_axes(normal)
    uv = cell_points @ axes.T
    # the camera's foot on the plane is the origin of the plane's coordinates
    hull = cv2.convexHull(np.vstack([uv, np.zeros((1, 2))]).astype(np.float32))
    return SupportRegion(normal=normal, axes=axes, hull=hull, margin_m=float(margin_m))
