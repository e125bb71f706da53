"""Another series onto the T1 post-contrast grid: trilinear, in world coordinates, rigid geometry only.

Series of one session share a frame of reference, so a voxel of the target grid is looked up in the
source at the same RAS point: ``source voxel = inv(source affine) @ target affine @ target voxel``. No
registration is done (nothing deformable, nothing estimated). Target points outside the source volume
are 0; a source that covers none of the target is refused.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from bmcore.dicom.errors import DicomError

GRID_TOLERANCE = 1e-3  # affines that differ by less (mm) describe the same grid


def same_grid(
    affine: np.ndarray, shape: tuple[int, ...], target: np.ndarray, target_shape: tuple[int, ...]
) -> bool:
    return tuple(shape) == tuple(target_shape) and float(np.abs(affine - target).max()) < GRID_TOLERANCE


def resample_onto(
    data: np.ndarray,
    affine: np.ndarray,
    target_affine: np.ndarray,
    target_shape: tuple[int, int, int],
    name: str = "series",
) -> np.ndarray:
    """``data`` (on ``affine``) sampled at the voxel centres of the target grid, float32; the data
    itself when the grids are the same."""
    if same_grid(affine, data.shape, target_affine, target_shape):
        return data
    transform = np.linalg.inv(affine) @ target_affine
    matrix, offset = transform[:3, :3], transform[:3, 3]
    inside = ndimage.affine_transform(
        np.ones(data.shape, dtype=np.uint8), matrix, offset, output_shape=target_shape, order=0, cval=0
    )
    if not inside.any():
        raise DicomError(f"{name}: does not overlap the T1 post-contrast volume (no registration is done)")
    return ndimage.affine_transform(
        np.asarray(data, dtype=np.float32),
        matrix,
        offset,
        output_shape=target_shape,
        order=1,
        mode="constant",
        cval=0.0,
        prefilter=False,
    ).astype(np.float32)
