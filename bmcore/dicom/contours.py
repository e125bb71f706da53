"""Planar contours of a mask slice: contourpy at level 0.5 on the voxel grid, holes joined by keyholes.

Each slice ``mask[:, :, k]`` is padded with one empty voxel on every side and contoured with contourpy's
filled contours between 0.5 and 1.5, with ``x = i`` and ``y = j`` the voxel indices (so a point ``(i, j)``
sits on slice ``k`` at voxel coordinates ``(i, j, k)``). On a binary grid the 0.5 level crosses every
grid line halfway between a voxel inside and one outside, so each voxel centre lies strictly inside or
strictly outside the polygons, exactly as the mask says; a contour never runs through a voxel centre.

Holes (an enhancing rim around necrosis, say) follow the RTSTRUCT "keyhole" convention (DICOM PS3.3
C.8.8.6.3), which every planning system reads: each hole is joined to the polygon around it by a channel
of zero width, so an outer boundary and its holes are one CLOSED_PLANAR contour. The channel runs from
the hole's right-most vertex along its row (+i) to the first boundary it meets, inside the ROI; holes are
joined right-most first, so that boundary is always the outer polygon or a hole already joined to it.
(The XOR alternative, CLOSEDPLANAR_XOR, is newer and not yet read everywhere.) Islands inside holes are
contours of their own.
"""

from __future__ import annotations

import contourpy
import numpy as np

LEVEL = 0.5


def _ring(points: np.ndarray) -> np.ndarray:
    """A closed ring without its repeated last point and without consecutive duplicates."""
    keep = np.ones(len(points), dtype=bool)
    keep[1:] = np.any(points[1:] != points[:-1], axis=1)
    ring = points[keep]
    if len(ring) > 1 and np.array_equal(ring[0], ring[-1]):
        ring = ring[:-1]
    return ring


def _join_hole(polygon: np.ndarray, hole: np.ndarray) -> np.ndarray | None:
    """``polygon`` with ``hole`` joined through a zero-width channel from the hole's right-most vertex,
    or None when the ray along its row meets no edge (never for a hole inside ``polygon``)."""
    m = int(np.argmax(hole[:, 0]))
    mx, my = hole[m]
    start, end = polygon, np.roll(polygon, -1, axis=0)
    y1, y2 = start[:, 1], end[:, 1]
    sloped = y1 != y2
    crosses = sloped & (np.minimum(y1, y2) <= my) & (np.maximum(y1, y2) >= my)
    t = (my - y1) / np.where(sloped, y2 - y1, 1.0)
    x = start[:, 0] + t * (end[:, 0] - start[:, 0])
    hits = np.flatnonzero(crosses & (x > mx + 1e-9))
    if not len(hits):
        return None
    edge = int(hits[np.argmin(x[hits])])
    bridge = np.array([[x[edge], my]])
    ring = np.roll(hole, -m, axis=0)  # starts and (closed below) ends at the hole's right-most vertex
    return np.concatenate([polygon[: edge + 1], bridge, ring, ring[:1], bridge, polygon[edge + 1 :]])


def slice_polygons(plane: np.ndarray) -> list[np.ndarray]:
    """The closed contours ``(N, 2)`` (``i, j`` voxel coordinates) of a boolean slice ``plane[i, j]``."""
    plane = np.asarray(plane, dtype=bool)
    if not plane.any():
        return []
    padded = np.pad(plane, 1).astype(np.float64)
    x = np.arange(-1, plane.shape[0] + 1, dtype=np.float64)
    y = np.arange(-1, plane.shape[1] + 1, dtype=np.float64)
    generator = contourpy.contour_generator(x, y, padded.T, fill_type=contourpy.FillType.OuterOffset)
    points_list, offsets_list = generator.filled(LEVEL, 1.0 + LEVEL)
    polygons = []
    for points, offsets in zip(points_list, offsets_list, strict=True):
        rings = [_ring(points[a:b]) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
        polygon, holes = rings[0], rings[1:]
        for hole in sorted(holes, key=lambda h: -float(h[:, 0].max())):
            joined = _join_hole(polygon, hole)
            if joined is None:  # not expected; fall back to a contour of its own (even-odd readers)
                polygons.append(hole)
            else:
                polygon = _ring(np.vstack([joined, joined[:1]]))
        polygons.append(polygon)
    return polygons


def mask_contours(mask: np.ndarray, origin=(0, 0, 0)) -> list[tuple[int, np.ndarray]]:
    """Every slice's contours of a boolean volume ``mask[i, j, k]`` (a crop whose first voxel is ``origin``
    of the grid): ``(k, points (N, 3) as grid i, j, k)``."""
    contours = []
    if not mask.size:
        return contours
    shift = np.asarray(origin[:2], dtype=np.float64)
    for k in np.flatnonzero(mask.reshape(-1, mask.shape[2]).any(axis=0)):
        k_grid = int(k) + int(origin[2])
        for polygon in slice_polygons(mask[:, :, k]):
            points = np.column_stack([polygon + shift, np.full(len(polygon), float(k_grid))])
            contours.append((k_grid, points))
    return contours
