"""Scores of one study (every metric, per structure and lesion-wise) and their summary over many studies."""

from __future__ import annotations

import numpy as np

from bmcore.metrics.distance import hd95
from bmcore.metrics.labels import LABELS, REGIONS, STRUCTURES, Spacing, check_same_shape, region_mask
from bmcore.metrics.lesions import DIAMETER_BIN_NAMES, LESION_COUNT_KEYS, lesion_wise_metrics
from bmcore.metrics.overlap import OVERLAP_METRICS, confusion_matrix, overlap_scores, paper_metrics

PER_CLASS_METRICS: tuple[str, ...] = (*OVERLAP_METRICS, "hd95")


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


def evaluate_case(pred: np.ndarray, target: np.ndarray, spacing: Spacing) -> dict:
    """Every metric of docs/design.md §4 for one study (label volumes indexed x, y, z).

    Per-class keys as in :func:`per_class_metrics`; lesion-wise keys of :func:`lesion_wise_metrics`
    for ET, TC and WT with a region suffix (``lesion_dice_TC``, ``n_fp_ET``, ``total_lt3mm_WT``, and
    ``lesions_TC``: one row per scored ground-truth lesion); ``confusion``: the 4x4 confusion matrix
    (rows target, cols pred) as nested lists. JSON-ready.
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
