"""Segmentation metrics: the one place every convention lives (DESIGN.md section 4).

Pure numpy / scipy.ndimage functions, used alike by training (per-batch confusion matrices),
evaluation and the inference worker.

Conventions shared by every function here:

- **Labels** (DESIGN.md section 2): 0 background, 1 NETC (necrotic / non-enhancing core),
  2 SNFH (edema), 3 ET (enhancing tumour). See :data:`LABELS`.
- **Regions**: ET = {3}, TC = {1, 3}, WT = {1, 2, 3}. See :data:`REGIONS`. The label "ET" and the
  region "ET" are the same mask, so per-structure keys name ET once.
- **Arrays** are indexed (x, y, z); ``spacing`` is the voxel size along those axes in mm.
- **Empty masks**: an empty-vs-empty pair scores Dice = IoU = precision = sensitivity = 1 and
  HD95 = 0 mm; one empty mask against a non-empty one scores 0 and HD95 = :data:`HD95_MISSING`.
- **Lesions** are 26-connected components (full 3x3x3 neighbourhood); lesion-wise scores follow
  the BraTS-METS 2023 rules (see :func:`lesion_wise_metrics`).
- **paper_*** keys are the reference study's convention: pooled over all voxels, all four
  classes *including background*, macro-averaged. Background dominates them, so they read far
  higher than the per-class foreground scores; they are kept only to reproduce the study's table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

LABELS: dict[int, str] = {0: "background", 1: "NETC", 2: "SNFH", 3: "ET"}
REGIONS: dict[str, tuple[int, ...]] = {"ET": (3,), "TC": (1, 3), "WT": (1, 2, 3)}
# Every structure scored per study: the foreground labels by name, then the regions (ET shared).
STRUCTURES: dict[str, tuple[int, ...]] = {"NETC": (1,), "SNFH": (2,), **REGIONS}
OVERLAP_METRICS: tuple[str, ...] = ("dice", "iou", "precision", "sensitivity")
PER_CLASS_METRICS: tuple[str, ...] = (*OVERLAP_METRICS, "hd95")

DIAMETER_BINS_MM: tuple[tuple[float, float], ...] = ((0, 3), (3, 6), (6, 10), (10, math.inf))
DIAMETER_BIN_NAMES: tuple[str, ...] = ("lt3mm", "3to6mm", "6to10mm", "gt10mm")

HD95_MISSING = 374.0  # mm; BraTS penalty for a missed lesion or a false positive
MIN_LESION_VOXELS = 3  # BraTS-METS 2023: ground-truth lesions of <= 2 voxels are ignored
LESION_COUNT_KEYS: tuple[str, ...] = (
    "n_gt",
    "n_tp",
    "n_fn",
    "n_fp",
    *(f"{kind}_{name}" for name in DIAMETER_BIN_NAMES for kind in ("detected", "total")),
)

Spacing = Sequence[float]


def _full_connectivity(ndim: int) -> np.ndarray:
    """Structuring element of the full neighbourhood (26-connectivity in 3D)."""
    return np.ones((3,) * ndim, dtype=bool)


def _check_same_shape(pred: np.ndarray, target: np.ndarray) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from target shape {target.shape}")


# --- voxel-wise counts -------------------------------------------------------------------------


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int = 4) -> np.ndarray:
    """Confusion matrix of integer label arrays of any (equal) shape.

    Returns an int64 array of shape ``(num_classes, num_classes)``: rows are the target label,
    columns the predicted label (labels as in :data:`LABELS`). Matrices of several batches or
    studies add up, so training can accumulate it from ``argmax`` outputs.
    """
    pred = np.asarray(pred)
    target = np.asarray(target)
    _check_same_shape(pred, target)
    for name, array in (("prediction", pred), ("target", target)):
        if array.size and (array.min() < 0 or array.max() >= num_classes):
            raise ValueError(
                f"{name} labels must lie in [0, {num_classes}), got {array.min()}..{array.max()}"
            )
    codes = target.astype(np.int64).ravel() * num_classes + pred.astype(np.int64).ravel()
    counts = np.bincount(codes, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def _ratio(numerator: float, denominator: float, if_undefined: float) -> float:
    return float(numerator) / float(denominator) if denominator else float(if_undefined)


def _scores_from_counts(tp: float, fp: float, fn: float) -> dict[str, float]:
    """Dice, IoU, precision, sensitivity from voxel counts, with the empty-mask conventions.

    Dice and IoU are 1 when both masks are empty. Precision (prediction empty) and sensitivity
    (target empty) are 1 when the other mask is empty too, else 0.
    """
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, 1.0),
        "iou": _ratio(tp, tp + fp + fn, 1.0),
        "precision": _ratio(tp, tp + fp, 1.0 if fn == 0 else 0.0),
        "sensitivity": _ratio(tp, tp + fn, 1.0 if fp == 0 else 0.0),
    }


def paper_metrics(confusion: np.ndarray) -> dict[str, float]:
    """The reference study's figures from a pooled confusion matrix (rows target, cols pred).

    Convention: all voxels pooled, **all classes including background**, each score computed per
    class (one-vs-rest) and macro-averaged over the classes present in the target or the
    prediction (an absent class is left out, as ``tf.keras.metrics.MeanIoU`` does);
    ``accuracy`` is the voxel accuracy. Background makes these numbers optimistic (mean IoU far
    above the foreground Dice); every key is prefixed ``paper_`` so they are never mistaken for
    the per-class metrics.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    total = confusion.sum()
    if total == 0:
        raise ValueError("paper_metrics needs a confusion matrix with at least one voxel")
    tp = np.diag(confusion)
    fp = confusion.sum(axis=0) - tp
    fn = confusion.sum(axis=1) - tp
    tn = total - tp - fp - fn
    present = np.flatnonzero(tp + fp + fn)
    per_class = [_scores_from_counts(tp[c], fp[c], fn[c]) for c in present]
    result = {"paper_accuracy": float(tp.sum() / total)}
    for name in OVERLAP_METRICS:
        key = f"paper_mean_{name}" if name in ("dice", "iou") else f"paper_{name}"
        result[key] = float(np.mean([scores[name] for scores in per_class]))
    result["paper_specificity"] = float(np.mean([_ratio(tn[c], tn[c] + fp[c], 1.0) for c in present]))
    return result


# --- binary mask scores ------------------------------------------------------------------------


def overlap_scores(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Dice, IoU, precision and sensitivity of two boolean masks.

    Empty vs empty scores 1.0 for all four; one empty mask against a non-empty one scores 0.0.
    """
    pred = np.asarray(pred, dtype=bool)
    target = np.asarray(target, dtype=bool)
    _check_same_shape(pred, target)
    tp = np.count_nonzero(pred & target)
    return _scores_from_counts(tp, np.count_nonzero(pred) - tp, np.count_nonzero(target) - tp)


def _union_bounding_box(first: np.ndarray, second: np.ndarray) -> tuple[slice, ...]:
    """Smallest box holding every True voxel of two masks (not both empty)."""
    coords = np.argwhere(first | second)
    return tuple(slice(lo, hi + 1) for lo, hi in zip(coords.min(0), coords.max(0), strict=True))


def _surface(mask: np.ndarray) -> np.ndarray:
    """Mask minus its erosion (6-connected cross); voxels on the array edge count as surface."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _directed_surface_distances(source: np.ndarray, reference: np.ndarray, spacing: Spacing) -> np.ndarray:
    """Distance in mm from every surface voxel of ``source`` to the nearest one of ``reference``."""
    distance_to_reference = ndimage.distance_transform_edt(~_surface(reference), sampling=spacing)
    return distance_to_reference[_surface(source)]


def hd95(pred: np.ndarray, target: np.ndarray, spacing: Spacing) -> float:
    """Symmetric 95th-percentile Hausdorff distance of two boolean masks, in mm.

    Surfaces are the masks minus their erosion; distances between surface voxels use the voxel
    ``spacing`` (Euclidean distance transform). Symmetric = the larger of the two directed 95th
    percentiles (the BraTS / DeepMind ``surface_distance`` / MONAI convention; medpy instead takes
    the 95th percentile of both directions pooled). Returns 0.0 when both masks are empty and
    :data:`HD95_MISSING` (374 mm) when exactly one is.
    """
    pred = np.asarray(pred, dtype=bool)
    target = np.asarray(target, dtype=bool)
    _check_same_shape(pred, target)
    pred_empty, target_empty = not pred.any(), not target.any()
    if pred_empty and target_empty:
        return 0.0
    if pred_empty or target_empty:
        return HD95_MISSING
    box = _union_bounding_box(pred, target)  # distances only need the region holding both masks
    pred, target = pred[box], target[box]
    forward = _directed_surface_distances(pred, target, spacing)
    backward = _directed_surface_distances(target, pred, spacing)
    return float(max(np.percentile(forward, 95), np.percentile(backward, 95)))


def region_mask(labels: np.ndarray, values: Iterable[int]) -> np.ndarray:
    """Boolean mask of the voxels whose label is one of ``values`` (e.g. ``REGIONS["TC"]``)."""
    return np.isin(labels, tuple(values))


def per_class_metrics(pred: np.ndarray, target: np.ndarray, spacing: Spacing) -> dict[str, float]:
    """Dice, IoU, precision, sensitivity and HD95 (mm) per label and per region for one study.

    Structures are NETC (label 1), SNFH (label 2), ET (label 3 = region ET), TC and WT; keys are
    ``<metric>_<structure>``, e.g. ``dice_ET``, ``dice_NETC``, ``hd95_WT``.
    """
    _check_same_shape(pred, target)
    result: dict[str, float] = {}
    for structure, values in STRUCTURES.items():
        pred_mask, target_mask = region_mask(pred, values), region_mask(target, values)
        scores = overlap_scores(pred_mask, target_mask)
        scores["hd95"] = hd95(pred_mask, target_mask, spacing)
        result.update({f"{name}_{structure}": scores[name] for name in PER_CLASS_METRICS})
    return result


# --- lesions -----------------------------------------------------------------------------------


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
    labels, count = ndimage.label(mask, structure=_full_connectivity(mask.ndim))
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
    dilated = ndimage.binary_dilation(gt_labels[box] == lesion.label_id, _full_connectivity(gt_labels.ndim))
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
    diameter_mm: float
    detected: bool
    dice: float
    hd95: float


def _lesion_summary(scores: list[_LesionScore], n_fp: int) -> dict[str, float | int | None]:
    """Aggregate the scored ground-truth lesions and false positives of one study and region."""
    n_gt = len(scores)
    n_tp = sum(score.detected for score in scores)
    denominator = n_gt + n_fp  # each false positive adds Dice 0 and HD95 374 mm
    result: dict[str, float | int | None] = {
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
    return result


def lesion_wise_metrics(
    pred: np.ndarray, target: np.ndarray, spacing: Spacing, region: str = "TC"
) -> dict[str, float | int | None]:
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
    ``total_<bin>``.
    """
    _check_same_shape(pred, target)
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
            scores.append(_LesionScore(lesion.diameter_mm, bool(matched), dice, distance))
    return _lesion_summary(scores, n_pred - len(claimed))


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


# --- one study, many studies -------------------------------------------------------------------


def evaluate_case(pred: np.ndarray, target: np.ndarray, spacing: Spacing) -> dict:
    """Every metric of DESIGN.md section 4 for one study (label volumes indexed x, y, z).

    Per-class keys as in :func:`per_class_metrics`; lesion-wise keys of :func:`lesion_wise_metrics`
    for ET, TC and WT with a region suffix (``lesion_dice_TC``, ``n_fp_ET``, ``total_lt3mm_WT``);
    ``confusion``: the 4x4 confusion matrix (rows target, cols pred) as nested lists. JSON-ready.
    """
    pred, target = np.asarray(pred), np.asarray(target)
    result: dict = per_class_metrics(pred, target, spacing)
    for region in REGIONS:
        lesion_scores = lesion_wise_metrics(pred, target, spacing, region)
        result.update({f"{key}_{region}": value for key, value in lesion_scores.items()})
    result["confusion"] = confusion_matrix(pred, target, num_classes=len(LABELS)).tolist()
    return result


def _mean_and_std(case_results: list[dict], key: str) -> dict[str, float]:
    """Mean and population standard deviation (ddof=0) of one per-study score."""
    values = np.array([case[key] for case in case_results], dtype=np.float64)
    return {key: float(values.mean()), f"{key}_std": float(values.std())}


def _pooled_lesion_counts(case_results: list[dict], region: str) -> dict[str, float | int | None]:
    """Lesion counts of one region summed over studies, and the sensitivities they give."""
    total = {key: int(sum(case[f"{key}_{region}"] for case in case_results)) for key in LESION_COUNT_KEYS}
    result: dict[str, float | int | None] = {f"{key}_{region}": value for key, value in total.items()}
    result[f"detection_sensitivity_{region}"] = total["n_tp"] / total["n_gt"] if total["n_gt"] else None
    for name in DIAMETER_BIN_NAMES:
        detected, count = total[f"detected_{name}"], total[f"total_{name}"]
        result[f"detection_sensitivity_{name}_{region}"] = detected / count if count else None
    result[f"fp_per_study_{region}"] = total["n_fp"] / len(case_results)
    return result


def summarize_cases(case_results: list[dict]) -> dict:
    """Aggregate :func:`evaluate_case` results over a set of studies.

    - ``paper_*``: :func:`paper_metrics` of the summed confusion matrix (also under ``confusion``).
    - per-class metrics and lesion-wise Dice / HD95 per region: mean over studies, and ``<key>_std``.
    - lesion counts pooled over studies per region (``n_gt_TC``, ...), detection sensitivity
      overall and per diameter bin = detected / total (None when total is 0),
      ``fp_per_study_<region>``; ``fp_per_study`` is the TC one (a lesion is a TC component).
    """
    if not case_results:
        raise ValueError("summarize_cases needs at least one study")
    confusion = np.sum([np.asarray(case["confusion"], dtype=np.int64) for case in case_results], axis=0)
    result: dict = {
        "n_studies": len(case_results),
        **paper_metrics(confusion),
        "confusion": confusion.tolist(),
    }
    per_study_keys = [f"{metric}_{structure}" for structure in STRUCTURES for metric in PER_CLASS_METRICS]
    per_study_keys += [f"lesion_{score}_{region}" for region in REGIONS for score in ("dice", "hd95")]
    for key in per_study_keys:
        result.update(_mean_and_std(case_results, key))
    for region in REGIONS:
        result.update(_pooled_lesion_counts(case_results, region))
    result["fp_per_study"] = result["fp_per_study_TC"]
    return result
