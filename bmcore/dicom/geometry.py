"""Image geometry between a NIfTI grid and a DICOM series of single-frame slices.

The contract (docs/design.md, issue #17): slice ``k`` of the series is ``data[:, :, k]`` of the NIfTI
volume, its pixel at column ``i``, row ``j`` is ``data[i, j, k]``, and the NIfTI affine maps ``(i, j, k)``
to RAS millimetres. DICOM patient coordinates are LPS, so a point's DICOM position is the RAS one with
x and y negated. From that follow, for every slice ``k``:

- Image Orientation (Patient): the row direction (along which the column index ``i`` grows) is the
  affine's first column, the column direction (rows, ``j``) its second, both in LPS and unit length;
- Pixel Spacing: (distance between rows, distance between columns) = (|column 1|, |column 0|);
- Image Position (Patient): the LPS position of voxel ``(0, 0, k)``, the centre of the first pixel sent;
- Slice Thickness: |column 2|, the distance between slice centres (the grid has no gaps).

Only orthogonal grids are written: sheared affines (a tilted-gantry style grid) are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from pydicom.valuerep import format_number_as_ds

from bmcore.dicom.errors import DicomError

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
ORTHOGONAL_TOLERANCE = 1e-4  # |cos| between voxel axes; a float32 sform is good to about 1e-7


@dataclass(frozen=True)
class SeriesGeometry:
    """The DICOM plane geometry of every slice of a NIfTI grid (see the module's docstring)."""

    affine: np.ndarray  # NIfTI, voxel (i, j, k) -> RAS mm
    shape: tuple[int, int, int]  # (columns, rows, slices)
    orientation: tuple[float, ...]  # row direction then column direction, LPS
    pixel_spacing: tuple[float, float]  # between rows, between columns (mm)
    slice_thickness: float
    positions: tuple[tuple[float, float, float], ...]  # Image Position (Patient) of slice k

    @property
    def rows(self) -> int:
        return self.shape[1]

    @property
    def columns(self) -> int:
        return self.shape[0]

    @property
    def normal(self) -> np.ndarray:
        """The slice normal row direction × column direction (LPS)."""
        return np.cross(self.orientation[:3], self.orientation[3:])

    def to_patient(self, voxels: np.ndarray) -> np.ndarray:
        """Voxel coordinates ``(N, 3)`` (i, j, k; fractional allowed) to DICOM patient LPS mm ``(N, 3)``."""
        voxels = np.asarray(voxels, dtype=np.float64).reshape(-1, 3)
        ras = voxels @ self.affine[:3, :3].T + self.affine[:3, 3]
        return ras @ RAS_TO_LPS.T


def series_geometry(affine: np.ndarray, shape: tuple[int, ...], name: str = "volume") -> SeriesGeometry:
    """The DICOM geometry of a 3D NIfTI grid; :class:`DicomError` for a sheared or singular affine."""
    affine = np.asarray(affine, dtype=np.float64)
    axes = affine[:3, :3]
    sizes = np.linalg.norm(axes, axis=0)
    if len(shape) < 3 or not np.isfinite(affine).all() or sizes.min() <= 0:
        raise DicomError(f"{name}: not a 3D grid with a finite, non-singular affine")
    units = axes / sizes
    for a, b in ((0, 1), (0, 2), (1, 2)):
        if abs(float(units[:, a] @ units[:, b])) > ORTHOGONAL_TOLERANCE:
            raise DicomError(
                f"{name}: the voxel axes are not orthogonal (a sheared affine); cannot write DICOM"
            )
    row_dir, col_dir = RAS_TO_LPS @ units[:, 0], RAS_TO_LPS @ units[:, 1]
    geometry = SeriesGeometry(
        affine=affine,
        shape=(int(shape[0]), int(shape[1]), int(shape[2])),
        orientation=tuple(float(v) for v in (*row_dir, *col_dir)),
        pixel_spacing=(float(sizes[1]), float(sizes[0])),
        slice_thickness=float(sizes[2]),
        positions=(),
    )
    corners = np.column_stack([np.zeros(shape[2]), np.zeros(shape[2]), np.arange(shape[2])])
    positions = tuple(tuple(float(v) for v in p) for p in geometry.to_patient(corners))
    return replace(geometry, positions=positions)


def ds(values) -> list[str]:
    """Numbers as DICOM decimal strings (at most 16 characters, as precise as that allows)."""
    return [format_number_as_ds(0.0 if abs(v) < 1e-10 else float(v)) for v in np.ravel(values)]
