"""Scores of one study (every metric, per structure and lesion-wise) and their summary over many studies."""

from __future__ import annotations

import numpy as np

from bmcore.metrics.conventions import CONVENTIONS, lesion_wise
from bmcore.metrics.distance import hd95
from bmcore.metrics.labels import LABELS, REGIONS, STRUCTURES, Spacing, check_same_shape, region_mask
from bmcore.metrics.lesions import DIAMETER_BIN_NAMES, LESION_COUNT_KEYS, lesion_wise_metrics
from bmcore.metrics.overlap import OVERLAP_METRICS, confusion_matrix, overlap_scores, paper_metrics
from bmcore.metrics.uncertainty import summary_uncertainty

PER_CLASS_METRICS: tuple[str, ...] = (*OVERLAP_METRICS, "hd95")
# per-study scores of each official convention, keys <convention>_<score>_<region>
CONVENTION_SCORES: tuple[str, ...] = ("lesion_dice", "lesion_hd95", "lesion_nsd")
CONVENTION_COUNTS: tuple[str, ...] = ("n_gt", "n_detected", "n_missed", "n_fp")
# the summary's headline figures, each with a 95 % bootstrap interval over patients (<key>_ci95)
HEADLINE_CI_KEYS: tuple[str, ...] = (
    "brats2025_lesion_dice_TC",
    "brats2023_lesion_dice_TC",
    "lesion_dice_TC",
    "dice_ET",
    "dice_TC",
    "dice_WT",
)
LESION_COUNT_KEY = "brats2025_n_gt_TC"  # the summary's ``lesions``: TC components, none dropped


def per_class_metrics(pred: np.ndarray, target: np.ndarray, spacing: Spacing) -> dict[str, float]:
    """Dice, IoU, precision, sensitivity and HD95 (mm) per label and per region for one study.

    Structures are NETC (label 1), SNFH (label 2), ET (label 3 = region ET), TC and WT; keys are
    ``<metric>_<structure>``, e.g. ``dice_ET``, ``dice_NETC``, ``hd95_WT``.
    """
    check_same_shape(pred, target)
    result: dict[str, float] = {}
    for structure, values in STRUCTURES.items():
        pred_mask, target_mask = region_mask(pred, values), region_mask(target, values)
        scores = overlap_scores(pred_mask, target_mask)
        scores["hd95"] = hd95(pred_mask, target_mask, spacing)
        result.update({f"{name}_{structure}": scores[name] for name in PER_CLASS_METRICS})
    return result


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _foreground_box(pred: np.ndarray, target: np.ndarray, margin: int = 3) -> tuple[slice, ...]:
    """The box around every labelled voxel of both volumes, grown by ``margin`` voxels (clipped).

    Scores do not change when computed in it: components, dilations (two steps at most) and surfaces
    (foreground never touches the box's border) are the same, and the penalties are constants.
    """
    where = np.nonzero((pred > 0) | (target > 0))
    if not where[0].size:
        return tuple(slice(0, 1) for _ in pred.shape)
    return tuple(
        slice(max(int(axis.min()) - margin, 0), min(int(axis.max()) + margin + 1, size))
        for axis, size in zip(where, pred.shape, strict=True)
    )


def convention_metrics(pred: np.ndarray, target: np.ndarray, spacing: Spacing) -> dict:
    """:func:`bmcore.metrics.conventions.lesion_wise` under both conventions for ET, TC and WT.

    Keys ``<convention>_<score>_<region>``, e.g. ``brats2025_lesion_dice_TC``, ``brats2023_n_fp_ET``
    (scores :data:`CONVENTION_SCORES`, counts :data:`CONVENTION_COUNTS`; brats2025 adds ``n_gt_large``).
    A score the convention leaves undefined (brats2023 NSD; brats2025 without a lesion of 20 mm³ or
    more: NaN in the reference) is None.
    """
    check_same_shape(pred, target)
    box = _foreground_box(pred, target)  # a whole-head grid is mostly background: about 3x faster
    pred, target = pred[box], target[box]
    result: dict = {}
    for convention in CONVENTIONS:
        for region in REGIONS:
            scores = lesion_wise(pred, target, spacing, convention, region)
            for score in CONVENTION_SCORES:
                result[f"{convention}_{score}_{region}"] = _finite_or_none(scores[score])
            counts = (*CONVENTION_COUNTS, "n_gt_large") if convention == "brats2025" else CONVENTION_COUNTS
            result.update({f"{convention}_{count}_{region}": int(scores[count]) for count in counts})
    return result


def evaluate_case(pred: np.ndarray, target: np.ndarray, spacing: Spacing) -> dict:
    """Every metric of docs/design.md §4 for one study (label volumes indexed x, y, z).

    Per-class keys as in :func:`per_class_metrics`; lesion-wise keys of :func:`lesion_wise_metrics`
    for ET, TC and WT with a region suffix (``lesion_dice_TC``, ``n_fp_ET``, ``total_lt3mm_WT``, and
    ``lesions_TC``: one row per scored ground-truth lesion); the two official conventions of
    :func:`convention_metrics` (``brats2023_lesion_dice_TC``, ``brats2025_lesion_dice_TC``, ...);
    ``confusion``: the 4x4 confusion matrix (rows target, cols pred) as nested lists. JSON-ready.
    """
    pred, target = np.asarray(pred), np.asarray(target)
    result: dict = per_class_metrics(pred, target, spacing)
    for region in REGIONS:
        lesion_scores = lesion_wise_metrics(pred, target, spacing, region)
        result.update({f"{key}_{region}": value for key, value in lesion_scores.items()})
    result.update(convention_metrics(pred, target, spacing))
    result["confusion"] = confusion_matrix(pred, target, num_classes=len(LABELS)).tolist()
    return result


def _mean_and_std(case_results: list[dict], key: str) -> dict[str, float]:
    """Mean and population standard deviation (ddof=0) of one per-study score."""
    values = np.array([case[key] for case in case_results], dtype=np.float64)
    return {key: float(values.mean()), f"{key}_std": float(values.std())}


def _mean_of_defined(case_results: list[dict], key: str) -> dict[str, float | int | None]:
    """Mean and std (ddof=0) over the studies where ``key`` is defined (not None), and their number.

    As the brats2025 reference's summary does, a study without a score is left out, not scored 0.
    """
    values = np.array([case[key] for case in case_results if case.get(key) is not None], dtype=np.float64)
    if not values.size:
        return {key: None, f"{key}_std": None, f"{key}_studies": 0}
    return {key: float(values.mean()), f"{key}_std": float(values.std()), f"{key}_studies": int(values.size)}


def _pooled_convention_counts(case_results: list[dict]) -> dict[str, float | int | None]:
    """Each convention's lesion counts summed over studies, its detection sensitivity and FP / study."""
    result: dict[str, float | int | None] = {}
    for convention in CONVENTIONS:
        for region in REGIONS:
            prefix = f"{convention}_"
            total = {
                count: int(sum(case[f"{prefix}{count}_{region}"] for case in case_results))
                for count in CONVENTION_COUNTS
            }
            result.update({f"{prefix}{c}_{region}": value for c, value in total.items()})
            found, count = total["n_detected"], total["n_gt"]
            result[f"{prefix}detection_sensitivity_{region}"] = found / count if count else None
            result[f"{prefix}fp_per_study_{region}"] = total["n_fp"] / len(case_results)
    return result


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
    - each convention's scores (``brats2025_lesion_dice_TC``, ...): mean and ``_std`` over the studies
      that define them, ``<key>_studies`` their number; its counts pooled as above
      (``brats2023_n_gt_TC``, ``brats2025_detection_sensitivity_TC``, ``brats2025_fp_per_study_TC``).
    - uncertainty (:func:`bmcore.metrics.uncertainty.summary_uncertainty`): ``patients`` (distinct
      ``patient_id``; a case without one is its own patient), ``lesions`` (TC lesions under brats2025,
      summed), and ``<key>_ci95`` = [low, high] for each of :data:`HEADLINE_CI_KEYS`.
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
    if all(LESION_COUNT_KEY in case for case in case_results):  # results saved before the conventions lack it
        for key in (f"{c}_{s}_{r}" for c in CONVENTIONS for s in CONVENTION_SCORES for r in REGIONS):
            result.update(_mean_of_defined(case_results, key))
        result.update(_pooled_convention_counts(case_results))
    result.update(summary_uncertainty(case_results, HEADLINE_CI_KEYS, LESION_COUNT_KEY))
    return result
