"""Lesions: 26-connected components, their sizes and diameter bins, the lesion table, and the
BraTS-METS 2023 lesion-wise scores."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bmcore.metrics.distance import HD95_MISSING, hd95
from bmcore.metrics.labels import REGIONS, Spacing, check_same_shape, region_mask
from bmcore.metrics.overlap import overlap_scores

DIAMETER_BINS_MM: tuple[tuple[float, float], ...] = ((0, 3), (3, 6), (6, 10), (10, math.inf))
DIAMETER_BIN_NAMES: tuple[str, ...] = ("lt3mm", "3to6mm", "6to10mm", "gt10mm")

MIN_LESION_VOXELS = 3  # BraTS-METS 2023: ground-truth lesions of <= 2 voxels are ignored
LESION_COUNT_KEYS: tuple[str, ...] = (
    "n_gt",
    "n_tp",
    "n_fn",
    "n_fp",
    *(f"{kind}_{name}" for name in DIAMETER_BIN_NAMES for kind in ("detected", "total")),
)


def full_connectivity(ndim: int) -> np.ndarray:
    """Structuring element of the full neighbourhood (26-connectivity in 3D)."""
    return np.ones((3,) * ndim, dtype=bool)


@dataclass(frozen=True)
class Lesion:
    """One lesion: a 26-connected component of a boolean mask.

    ``diameter_mm`` is the diameter of the sphere of equal volume, (6 V / pi)^(1/3) with V in mm^3:
    robust for irregular shapes and cheap, unlike a maximal (Feret) diameter, and it is what the
    diameter bins of :data:`DIAMETER_BINS_MM` use. ``centroid_vox`` is in voxel coordinates (x, y, z);
    ``slices`` is the bounding box, usable as ``mask[lesion.slices]``.
    """

    label_id: int
    voxels: int
    volume_ml: float
    diameter_mm: float
    centroid_vox: tuple[float, float, float]
    slices: tuple[slice, ...]


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the 26-connected components (full neighbourhood) of a boolean mask: (labels, count)."""
    mask = np.asarray(mask, dtype=bool)
    labels, count = ndimage.label(mask, structure=full_connectivity(mask.ndim))
    return labels, int(count)


def equivalent_diameter_mm(voxels: int, spacing: Spacing) -> float:
    """Diameter (mm) of the sphere whose volume equals ``voxels`` voxels of size ``spacing``."""
    volume_mm3 = voxels * float(np.prod(spacing))
    return float((6.0 * volume_mm3 / math.pi) ** (1.0 / 3.0))


def _lesions_from_labels(labels: np.ndarray, count: int, spacing: Spacing) -> list[Lesion]:
    if count == 0:
        return []
    ids = np.arange(1, count + 1)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    centroids = ndimage.center_of_mass(labels > 0, labels, ids)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return [
        Lesion(
            label_id=int(i),
            voxels=int(sizes[i]),
            volume_ml=float(sizes[i]) * voxel_ml,
            diameter_mm=equivalent_diameter_mm(int(sizes[i]), spacing),
            centroid_vox=tuple(float(c) for c in centroid),
            slices=box,
        )
        for i, centroid, box in zip(ids, centroids, ndimage.find_objects(labels), strict=True)
    ]


def find_lesions(mask: np.ndarray, spacing: Spacing) -> list[Lesion]:
    """The 26-connected components of a boolean mask as :class:`Lesion` records, by label id."""
    return _lesions_from_labels(*label_components(mask), spacing)


def diameter_bin(diameter_mm: float) -> str:
    """Name of the :data:`DIAMETER_BINS_MM` bin holding ``diameter_mm`` (low <= d < high)."""
    for (low, high), name in zip(DIAMETER_BINS_MM, DIAMETER_BIN_NAMES, strict=True):
        if low <= diameter_mm < high:
            return name
    raise ValueError(f"diameter must be >= 0 mm, got {diameter_mm}")


def _grow_box(box: tuple[slice, ...], shape: tuple[int, ...], margin: int = 1) -> tuple[slice, ...]:
    return tuple(
        slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, shape, strict=True)
    )


def _merge_boxes(boxes: Iterable[tuple[slice, ...]]) -> tuple[slice, ...]:
    boxes = list(boxes)
    return tuple(
        slice(min(b[d].start for b in boxes), max(b[d].stop for b in boxes)) for d in range(len(boxes[0]))
    )


def _matched_components(gt_labels: np.ndarray, pred_labels: np.ndarray, lesion: Lesion) -> set[int]:
    """Predicted component ids touching the lesion dilated by one voxel (26-connectivity)."""
    box = _grow_box(lesion.slices, gt_labels.shape)
    dilated = ndimage.binary_dilation(gt_labels[box] == lesion.label_id, full_connectivity(gt_labels.ndim))
    touched = np.unique(pred_labels[box][dilated])
    return {int(i) for i in touched if i}


def _score_lesion(
    gt_labels: np.ndarray,
    pred_labels: np.ndarray,
    lesion: Lesion,
    matched: set[int],
    pred_boxes: list[tuple[slice, ...]],
    spacing: Spacing,
) -> tuple[float, float]:
    """Dice and HD95 between a ground-truth lesion and the union of its matched components."""
    box = _merge_boxes([lesion.slices, *(pred_boxes[i - 1] for i in matched)])
    gt_mask = gt_labels[box] == lesion.label_id
    pred_mask = np.isin(pred_labels[box], list(matched))
    return overlap_scores(pred_mask, gt_mask)["dice"], hd95(pred_mask, gt_mask, spacing)


@dataclass(frozen=True)
class _LesionScore:
    lesion: Lesion
    detected: bool
    dice: float
    hd95: float

    @property
    def diameter_mm(self) -> float:
        return self.lesion.diameter_mm

    def row(self) -> dict:
        """The lesion's row in a study's ``lesions_<region>`` list (JSON-ready)."""
        return {
            "lesion_id": self.lesion.label_id,
            "voxels": self.lesion.voxels,
            "volume_ml": round(self.lesion.volume_ml, 4),
            "diameter_mm": round(self.lesion.diameter_mm, 2),
            "detected": self.detected,
            "dice": float(self.dice),
            "hd95": float(self.hd95),
        }


def _lesion_summary(scores: list[_LesionScore], n_fp: int) -> dict:
    """Aggregate the scored ground-truth lesions and false positives of one study and region."""
    n_gt = len(scores)
    n_tp = sum(score.detected for score in scores)
    denominator = n_gt + n_fp  # each false positive adds Dice 0 and HD95 374 mm
    result: dict = {
        "lesion_dice": sum(s.dice for s in scores) / denominator if denominator else 1.0,
        "lesion_hd95": (sum(s.hd95 for s in scores) + HD95_MISSING * n_fp) / denominator
        if denominator
        else 0.0,
        "n_gt": n_gt,
        "n_tp": n_tp,
        "n_fn": n_gt - n_tp,
        "n_fp": n_fp,
        "detection_sensitivity": n_tp / n_gt if n_gt else None,
    }
    for name in DIAMETER_BIN_NAMES:
        in_bin = [score for score in scores if diameter_bin(score.diameter_mm) == name]
        result[f"detected_{name}"] = sum(score.detected for score in in_bin)
        result[f"total_{name}"] = len(in_bin)
    result["lesions"] = [score.row() for score in scores]
    return result


def lesion_wise_metrics(pred: np.ndarray, target: np.ndarray, spacing: Spacing, region: str = "TC") -> dict:
    """Lesion-wise scores of one study for one region, following the BraTS-METS 2023 rules.

    - Ground-truth lesions are the 26-connected components of the region in ``target``; those of
      <= 2 voxels are ignored: left out of every count, and predicted components touching only
      them are not false positives.
    - Each ground-truth lesion is dilated by one voxel (3x3x3 element); every predicted component
      intersecting the dilated lesion is matched to it, and the lesion's Dice and HD95 are computed
      between the lesion and the union of its matched components (all of each component counts).
      A missed lesion scores Dice 0 and HD95 374 mm.
    - Predicted components matched to no ground-truth lesion are false positives (Dice 0, HD95 374).
    - ``lesion_dice = sum(Dice) / (n_gt + n_fp)``, likewise ``lesion_hd95``; with no lesion and no
      false positive they are 1.0 and 0.0.

    Unlike the reference code, ground-truth lesions closer than the dilation are not merged: a
    lesion is exactly a 26-connected component, as everywhere in bmseg.
    Also returns ``n_gt, n_tp, n_fn, n_fp``, ``detection_sensitivity`` (None without lesions) and,
    per diameter bin of the ground-truth lesion's equivalent diameter, ``detected_<bin>`` and
    ``total_<bin>``, and ``lesions``: one row per scored ground-truth lesion (``lesion_id``: its
    component's label, ``voxels``, ``volume_ml``, ``diameter_mm``, ``detected``, ``dice``, ``hd95``).
    """
    check_same_shape(pred, target)
    gt_labels, n_gt = label_components(region_mask(target, REGIONS[region]))
    pred_labels, n_pred = label_components(region_mask(pred, REGIONS[region]))
    pred_boxes = ndimage.find_objects(pred_labels)
    claimed: set[int] = set()
    scores: list[_LesionScore] = []
    for lesion in _lesions_from_labels(gt_labels, n_gt, spacing):
        matched = _matched_components(gt_labels, pred_labels, lesion)
        claimed |= matched
        if lesion.voxels >= MIN_LESION_VOXELS:
            dice, distance = _score_lesion(gt_labels, pred_labels, lesion, matched, pred_boxes, spacing)
            scores.append(_LesionScore(lesion, bool(matched), dice, distance))
    return _lesion_summary(scores, n_pred - len(claimed))


# The lesion table's columns (``<study>_lesions.csv``), in order: a contract (docs/design.md §5).
LESION_COLUMNS = (
    "lesion_id",
    "voxels",
    "volume_ml",
    "diameter_mm",
    "centroid_x_mm",
    "centroid_y_mm",
    "centroid_z_mm",
    "labels",
)


def lesion_rows(
    labels: np.ndarray, spacing: Spacing, to_world: Callable[[np.ndarray], np.ndarray] | None = None
) -> list[dict]:
    """One row per lesion (26-connected tumour-core component) of a label volume: the lesion table.

    ``to_world`` maps a voxel centroid of ``labels`` to scanner coordinates (mm); without it the
    ``centroid_*_mm`` columns are left out.
    """
    core = region_mask(labels, REGIONS["TC"])
    rows = []
    for lesion in find_lesions(core, tuple(spacing)):
        values = sorted(int(v) for v in np.unique(labels[lesion.slices][core[lesion.slices]]))
        row: dict = {
            "lesion_id": lesion.label_id,
            "voxels": lesion.voxels,
            "volume_ml": round(lesion.volume_ml, 4),
            "diameter_mm": round(lesion.diameter_mm, 2),
        }
        if to_world is not None:
            world = to_world(np.asarray(lesion.centroid_vox))
            row |= {f"centroid_{axis}_mm": round(float(world[i]), 2) for i, axis in enumerate("xyz")}
        row["labels"] = ";".join(str(v) for v in values)
        rows.append(row)
    return rows
