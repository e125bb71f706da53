"""Synthetic studies with known lesions on many grids, and the test side of reading DICOM outputs back.

Nothing here uses bmseg's DICOM code: lesions are drawn in scanner millimetres (spheres with a known
centre, so every grid shows the same anatomy), contours are rasterised with matplotlib's point-in-polygon
test on voxel centres, and the planes of the referenced images come from the written files (or from the
NIfTI affine by the contract, for a study whose source series is only recorded).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from matplotlib.path import Path as PolygonPath
from scipy import ndimage

from bmcore import metrics

SHAPE = (64, 60, 24)
SPACING = (0.9, 1.1, 2.5)  # anisotropic, thick slices
LPS = np.diag([-1.0, -1.0, 1.0])
NAME = "DOE^JOHN"  # planted where a careless writer could copy it; never in an output


def rotation(x_deg: float, y_deg: float, z_deg: float) -> np.ndarray:
    x, y, z = np.radians([x_deg, y_deg, z_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


# Voxel axis directions (RAS columns of the affine, before spacing) of each test grid.
DIRECTIONS = {
    "axial": np.eye(3),
    "axial_lps": np.diag([-1.0, -1.0, 1.0]),  # BraTS-style LPS file
    "sagittal": np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], dtype=float),  # i→A, j→I, k→L
    "coronal": np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=float),  # i→R, j→I, k→A
    "flipped_slices": np.diag([1.0, 1.0, -1.0]),  # left-handed: slices run against the normal
    "oblique": rotation(17.0, -11.0, 28.0),
}


def grid_affine(case: str, shape=SHAPE, spacing=SPACING) -> np.ndarray:
    """The case's affine: its directions, the spacing, and the grid centred near (3, -4, 6) mm."""
    affine = np.eye(4)
    affine[:3, :3] = DIRECTIONS[case] * np.asarray(spacing)
    affine[:3, 3] = np.array([3.0, -4.0, 6.0]) - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return affine


@dataclass(frozen=True)
class Ball:
    centre_mm: tuple[float, float, float]  # offset from the grid centre, RAS
    radius_mm: float
    core_mm: float = 0.0  # necrotic core (label 1) inside the enhancing rim (label 3)
    edema_mm: float = 0.0  # oedema shell (label 2) around it


BALLS = (
    Ball((-10.0, 8.0, 4.0), 8.0, core_mm=4.0, edema_mm=11.0),  # an ET ring: holes in the ET contours
    Ball((14.0, -12.0, -6.0), 4.5),
    Ball((4.0, 18.0, 12.0), 3.0),  # 6 mm
    Ball((-14.0, -16.0, -14.0), 2.9),  # about 5.5 mm
    Ball((16.0, 10.0, -12.0), 1.8),  # a few voxels: an ROI, but under the 5 mm the Dice bound is for
)


def draw(affine: np.ndarray, shape=SHAPE, balls=BALLS) -> np.ndarray:
    """Label volume (0–3) of the balls on the grid: labels by distance of each voxel centre in mm."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    world = grid @ affine[:3, :3].T + affine[:3, 3]
    centre = affine[:3, :3] @ ((np.asarray(shape) - 1) / 2) + affine[:3, 3]
    labels = np.zeros(len(world), np.uint8)
    for ball in balls:
        distance = np.linalg.norm(world - (centre + np.asarray(ball.centre_mm)), axis=1)
        labels[(distance <= ball.edema_mm) & (labels == 0)] = 2
        labels[distance <= ball.radius_mm] = 3
        labels[distance <= ball.core_mm] = 1
    return labels.reshape(shape)


def lesion_table(mask: np.ndarray, affine: np.ndarray) -> list[dict]:
    """The lesion table as ``bmseg segment`` makes it: on the canonical (RAS) reorientation of the mask."""
    image = nib.as_closest_canonical(nib.Nifti1Image(mask, affine))
    canonical = np.asarray(image.dataobj)
    spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
    return metrics.lesion_rows(canonical, spacing, lambda c: image.affine @ np.append(c, 1.0))


def write_study(root: Path, affine: np.ndarray, mask: np.ndarray, study="123456") -> tuple[Path, Path]:
    """A UCSF-layout study (the four images) and its mask; the NIfTI description holds a planted name."""
    folder = root / "DOE_JOHN_19600101" / study
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    image = (400 + 300 * (mask > 0) + 40 * rng.standard_normal(mask.shape)).astype(np.int16)
    for suffix in ("T1pre", "T1post", "T2Synth", "FLAIR"):
        nifti = nib.Nifti1Image(image, affine)
        nifti.header["descrip"] = NAME.encode()
        nib.save(nifti, folder / f"{study}_{suffix}.nii.gz")
    mask_path = root / "out" / f"{study}_seg.nii.gz"
    mask_path.parent.mkdir()
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), mask_path)
    return folder, mask_path


# ---------------------------------------------------------------------------------------- reading back


@dataclass(frozen=True)
class Plane:
    """One referenced image: its slice index and its DICOM plane (LPS)."""

    k: int
    position: np.ndarray
    row_dir: np.ndarray
    col_dir: np.ndarray
    spacing: tuple[float, float]  # between rows, between columns


def planes_from_files(files: list[Path], affine: np.ndarray) -> dict[str, Plane]:
    """The planes of a written series by SOP instance UID, each placed on the NIfTI grid: its first pixel
    must sit on voxel ``(0, 0, k)`` and its rows and columns run along the grid's ``i`` and ``j`` axes."""
    inverse = np.linalg.inv(affine)
    sizes = np.linalg.norm(affine[:3, :3], axis=0)
    planes = {}
    for path in files:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        position = np.array(header.ImagePositionPatient, dtype=float)
        iop = np.array(header.ImageOrientationPatient, dtype=float)
        voxel = inverse[:3, :3] @ (LPS @ position) + inverse[:3, 3]
        k = int(round(voxel[2]))
        assert np.allclose(voxel, [0, 0, k], atol=1e-3), (path.name, voxel)
        assert np.allclose(LPS @ iop[:3], affine[:3, 0] / sizes[0], atol=1e-6)
        assert np.allclose(LPS @ iop[3:], affine[:3, 1] / sizes[1], atol=1e-6)
        spacing = tuple(float(v) for v in header.PixelSpacing)
        assert np.allclose(spacing, (sizes[1], sizes[0]), atol=1e-6)
        planes[str(header.SOPInstanceUID)] = Plane(k, position, iop[:3], iop[3:], spacing)
    assert sorted(p.k for p in planes.values()) == list(range(len(files)))
    return planes


def planes_from_affine(affine: np.ndarray, sop_uids: list[str]) -> dict[str, Plane]:
    """The planes the contract gives slice ``k`` of a NIfTI grid (for a recorded source series)."""
    sizes = np.linalg.norm(affine[:3, :3], axis=0)
    row_dir, col_dir = LPS @ affine[:3, 0] / sizes[0], LPS @ affine[:3, 1] / sizes[1]
    return {
        uid: Plane(
            k, LPS @ (affine[:3, :3] @ [0, 0, k] + affine[:3, 3]), row_dir, col_dir, (sizes[1], sizes[0])
        )
        for k, uid in enumerate(sop_uids)
    }


def rasterise_rtstruct(path: Path, planes: dict[str, Plane], shape=SHAPE) -> dict[str, np.ndarray]:
    """Each ROI's contours filled back onto the image grid: voxel centres inside the polygons (even-odd
    over a slice's contours), by ROI name. Checks each contour lies in its referenced image's plane."""
    rtstruct = pydicom.dcmread(path)
    names = {int(r.ROINumber): str(r.ROIName) for r in rtstruct.StructureSetROISequence}
    cols, rows = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    centres = np.column_stack([cols.ravel(), rows.ravel()])
    filled = {}
    for roi in rtstruct.ROIContourSequence:
        volume = np.zeros(shape, dtype=bool)
        for contour in getattr(roi, "ContourSequence", []):
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            plane = planes[str(contour.ContourImageSequence[0].ReferencedSOPInstanceUID)]
            points = np.array(contour.ContourData, dtype=float).reshape(-1, 3)
            assert len(points) == int(contour.NumberOfContourPoints)
            offset = points - plane.position
            normal = np.cross(plane.row_dir, plane.col_dir)
            assert np.abs(offset @ normal).max() < 1e-3, "contour off its image's plane"
            column = offset @ plane.row_dir / plane.spacing[1]
            row = offset @ plane.col_dir / plane.spacing[0]
            inside = PolygonPath(np.column_stack([column, row])).contains_points(centres)
            volume[:, :, plane.k] ^= inside.reshape(shape[:2])
        filled[names[int(roi.ReferencedROINumber)]] = volume
    return filled


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


def components(mask: np.ndarray) -> list[np.ndarray]:
    """The tumour-core lesions (26-connected components of labels 1 and 3), test-side."""
    labelled, count = ndimage.label(np.isin(mask, (1, 3)), structure=np.ones((3, 3, 3)))
    return [labelled == n for n in range(1, count + 1)]


def world_centroid(voxels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return affine[:3, :3] @ np.argwhere(voxels).mean(axis=0) + affine[:3, 3]


REGIONS = {"ET": (3,), "TC": (1, 3), "WT": (1, 2, 3)}


def expected_structures(
    mask: np.ndarray, affine: np.ndarray, rows: list[dict]
) -> dict[int, tuple[str, np.ndarray]]:
    """ROI / segment number → (name, voxels): the lesions, matched to table rows by world centroid, then
    ET, TC and WT."""
    lesions = components(mask)
    truth = {}
    for row in rows:
        centre = np.array([row[f"centroid_{a}_mm"] for a in "xyz"])
        voxels = min(lesions, key=lambda c: np.linalg.norm(world_centroid(c, affine) - centre))
        assert np.linalg.norm(world_centroid(voxels, affine) - centre) < 0.05
        truth[row["lesion_id"]] = (f"Lesion {row['lesion_id']}", voxels)
    for offset, (region, labels) in enumerate(REGIONS.items(), start=1):
        truth[len(rows) + offset] = (region, np.isin(mask, labels))
    return truth


def dciodvfy(path: Path) -> list[str]:
    """dciodvfy's warnings for one file; fails on any error line."""
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error")]
    assert not errors, f"{path.name}: {errors}"
    return [line for line in lines if line.startswith("Warning")]
