"""What the RTSTRUCT's ROIs and the DICOM-SEG's segments are: one per lesion of the lesion table, then the
whole regions ET, TC and WT (:data:`bmcore.metrics.REGIONS`).

A lesion is a 26-connected tumour-core component (labels 1 and 3) of the mask, as in the lesion table
(:func:`bmcore.metrics.lesion_rows`). The table numbers lesions in the mask's canonical (RAS-reoriented)
order, so each row is matched to its component of the mask as stored by its voxel count and its centroid
in scanner coordinates, which do not depend on the axis order. Numbers: lesion ``n`` is ROI / segment
``n``; ET, TC and WT follow as ``L + 1``, ``L + 2``, ``L + 3`` for ``L`` lesions. Lesions are disjoint;
the regions overlap by design (ET ⊂ TC ⊂ WT). A study without lesions has the three regions only, empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from bmcore import imaging, metrics
from bmcore.dicom.errors import DicomError
from bmcore.dicom.geometry import SeriesGeometry

CENTROID_TOLERANCE_MM = 0.05  # the table rounds centroids to 0.01 mm
REGION_COLORS = {"ET": (230, 25, 75), "TC": (255, 225, 25), "WT": (60, 180, 75)}
LESION_COLORS = (
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
)
REGION_NAMES = {"ET": "enhancing tumour", "TC": "tumour core", "WT": "whole tumour"}


Box = tuple[slice, slice, slice]


@dataclass(frozen=True)
class Structure:
    """One ROI / segment: its number, name, description and voxels, a boolean crop ``voxels`` of the NIfTI
    grid ``(i, j, k)`` at ``box`` (kept small: a study may have many lesions)."""

    number: int
    name: str
    description: str
    kind: str  # "lesion" or "region"
    voxels: np.ndarray
    box: Box
    color: tuple[int, int, int]


def read_mask(mask_path: Path, geometry: SeriesGeometry) -> np.ndarray:
    """The segment output (labels 0–3) on exactly the reference grid, else :class:`DicomError`."""
    mask_path = Path(mask_path)
    try:
        image = imaging.read_header(mask_path)
        data = imaging.read_data(image, mask_path.name, dtype=np.float64)
    except imaging.StudyError as exc:
        raise DicomError(str(exc)) from None
    if tuple(data.shape) != geometry.shape:
        raise DicomError(
            f"{mask_path.name}: shape {data.shape} is not the T1 post-contrast grid {geometry.shape}"
        )
    if float(np.abs(image.affine - geometry.affine).max()) > imaging.AFFINE_TOLERANCE:
        raise DicomError(f"{mask_path.name}: affine differs from the T1 post-contrast volume's")
    if not np.isin(data, tuple(metrics.LABELS)).all():
        raise DicomError(f"{mask_path.name}: values outside the labels {sorted(metrics.LABELS)}")
    return data.astype(np.uint8)


def crop(mask: np.ndarray) -> tuple[np.ndarray, Box]:
    """The bounding box of a boolean volume's voxels and the volume cropped to it (empty: a 0-voxel box)."""
    boxes = ndimage.find_objects(mask.astype(np.uint8))
    box = boxes[0] if boxes else (slice(0, 0),) * 3
    return mask[box], box


def _label_text(labels: str) -> str:
    values = [int(v) for v in str(labels).split(";") if v.strip()]
    return ", ".join(f"{v} {metrics.LABELS.get(v, '?')}" for v in values)


def _describe(row: dict) -> str:
    return (
        f"lesion {row['lesion_id']}: labels {_label_text(row.get('labels', ''))}; "
        f"{row['volume_ml']} ml; {row['diameter_mm']} mm equivalent diameter"
    )


def _match_lesions(
    mask: np.ndarray, geometry: SeriesGeometry, lesions: list[dict]
) -> list[tuple[np.ndarray, Box]]:
    """Each lesion row's component of ``mask`` (by voxel count and world centroid), in row order, cropped."""
    components, count = metrics.label_components(metrics.region_mask(mask, metrics.REGIONS["TC"]))
    if count != len(lesions):
        raise DicomError(f"the lesion table lists {len(lesions)} lesion(s), the mask has {count}")
    if not count:
        return []
    ids = np.arange(1, count + 1)
    sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
    boxes = ndimage.find_objects(components)
    centroids = np.asarray(ndimage.center_of_mass(components > 0, components, ids), dtype=np.float64)
    world = centroids @ geometry.affine[:3, :3].T + geometry.affine[:3, 3]
    free = set(range(count))
    matched = []
    for number, row in enumerate(lesions, start=1):
        if int(row.get("lesion_id", -1)) != number:
            raise DicomError(
                f"lesion ids must run 1..{count} in order; row {number} has {row.get('lesion_id')}"
            )
        try:
            centre = np.array([float(row[f"centroid_{axis}_mm"]) for axis in "xyz"])
        except (KeyError, TypeError, ValueError):
            raise DicomError(
                f"lesion {number}: the lesion table has no scanner-coordinate centroid"
            ) from None
        candidates = [c for c in free if sizes[c] == int(row["voxels"])]
        distances = {c: float(np.linalg.norm(world[c] - centre)) for c in candidates}
        best = min(distances, key=distances.get, default=None)
        if best is None or distances[best] > CENTROID_TOLERANCE_MM:
            raise DicomError(f"lesion {number}: no component of the mask has its voxel count and centroid")
        free.discard(best)
        box = boxes[best]
        matched.append((components[box] == best + 1, box))
    return matched


def structures(mask: np.ndarray, geometry: SeriesGeometry, lesions: list[dict]) -> list[Structure]:
    """The lesion structures (numbered as the table) and then ET, TC, WT (see the module docstring)."""
    items = [
        Structure(
            number=number,
            name=f"Lesion {number}",
            description=_describe(row),
            kind="lesion",
            voxels=voxels,
            box=box,
            color=LESION_COLORS[(number - 1) % len(LESION_COLORS)],
        )
        for number, (row, (voxels, box)) in enumerate(
            zip(lesions, _match_lesions(mask, geometry, lesions), strict=True), start=1
        )
    ]
    for offset, (region, labels) in enumerate(metrics.REGIONS.items(), start=1):
        names = ", ".join(f"{v} {metrics.LABELS[v]}" for v in labels)
        voxels, box = crop(metrics.region_mask(mask, labels))
        items.append(
            Structure(
                number=len(lesions) + offset,
                name=region,
                description=f"{region} ({REGION_NAMES[region]}): labels {names}",
                kind="region",
                voxels=voxels,
                box=box,
                color=REGION_COLORS[region],
            )
        )
    return items
