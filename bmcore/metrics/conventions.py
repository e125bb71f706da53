"""The two official BraTS lesion-wise conventions, exactly as their reference code scores them.

:func:`lesion_wise` scores one study and one region under either convention (docs/design.md §4,
"target conventions"). Labels are those of docs/design.md §2; arrays are indexed (x, y, z) and
``spacing`` is the voxel size along those axes in mm. Volumes are in mm³ (voxels × prod(spacing)).

**brats2023** — the BraTS-METS 2023 challenge code (``rachitsaluja/BraTS-2023-Metrics``, ``eval.py``,
``get_LesionWiseScores`` / ``get_LesionWiseResults`` with the ``BraTS-MET`` parameters):

1. Regions ET {3}, TC {1, 3}, WT {1, 2, 3}; components are 26-connected.
2. The ground-truth mask is dilated once with the 18-neighbour element
   (``generate_binary_structure(3, 2)``); ground-truth voxels that fall in one 26-connected
   component of the dilated mask form **one** lesion, so lesions that touch after dilation (a gap of up
   to two voxels along an axis) are merged.
3. Each lesion is dilated once more with the same element; every predicted 26-connected component
   meeting the dilated lesion is matched to it (a component may match several lesions). The lesion's
   Dice and HD95 are those of the lesion against the union of its matched components; a lesion with
   no match scores Dice 0 and HD95 374 mm.
4. Predicted components that meet no dilated lesion (of any size) are false positives.
5. Lesions of ≤ 2 mm³ are dropped from the scores and the counts (predictions meeting only them are
   still not false positives). ``lesion_dice = Σ Dice / (n_gt + n_fp)`` and ``lesion_hd95 =
   (Σ HD95 + 374 · n_fp) / (n_gt + n_fp)`` over the remaining lesions; with neither lesions nor false
   positives (both masks empty, for instance) they are 1 and 0, as in the reference.
6. HD95 is :func:`bmcore.metrics.hd95` (the larger directed 95th percentile of voxel-surface
   distances). The reference uses DeepMind's ``surface_distance`` (surfel-area weighted); the two
   agree on the rule (max of the directed percentiles) but may differ by a fraction of a voxel.

**brats2025** — the official ``brats-evaluation`` package (``config_mets.yaml`` evaluated by
``panoptica``, then ``metrics_parser.parse_mets_results`` with its defaults):

1. Groups ET {3}, TC {1, 3}, WT {1, 2, 3}, RC {4}; components are 26-connected; no dilation.
2. One-to-one maximum bipartite matching on Dice: ``scipy.optimize.linear_sum_assignment`` on the
   cost ``1 − Dice`` where Dice ≥ 1e-6 and ``1 + 1e-6`` elsewhere; an assigned pair is a match when
   its cost is below 1 (any overlap). Each match is scored on the lesion against its one component.
3. Lesions under 20 mm³ are *small* and judged on detection only; the others are *large*. A lesion
   is detected when it is matched with Dice ≥ 0.1 (small and large alike).
4. Unmatched predicted components are false positives (a component matched with Dice < 0.1 is not).
5. ``lesion_dice``, ``lesion_nsd`` and ``lesion_hd95`` are means over the large lesions and the false
   positives, each unmatched large lesion and each false positive scoring 0 / 0 / 373 mm. Without any
   large lesion (no lesion at all, both masks empty, or only small ones) they are NaN, which the
   reference's summary then leaves out of the mean over studies.
6. HD95 is the 95th percentile of both directions' surface distances pooled (panoptica's rule, not
   bmcore's max of the directed ones); NSD is ``(fraction of reference-surface voxels within τ +
   fraction of prediction-surface voxels within τ) / 2`` with τ = the smallest voxel spacing
   (panoptica's default). Surfaces are the masks minus their 6-connected erosion, as in bmcore.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from bmcore.metrics.distance import _directed_surface_distances, _union_bounding_box, hd95
from bmcore.metrics.labels import REGIONS, Spacing, check_same_shape, region_mask
from bmcore.metrics.lesions import _grow_box, _merge_boxes, equivalent_diameter_mm, label_components
from bmcore.metrics.overlap import overlap_scores

CONVENTIONS: tuple[str, ...] = ("brats2023", "brats2025")
GROUPS: dict[str, tuple[int, ...]] = {**REGIONS, "RC": (4,)}  # RC: resection cavity, brats2025 only

BRATS2023_MAX_DROPPED_MM3 = 2.0  # lesions of <= 2 mm^3 are dropped
BRATS2023_HD95_PENALTY = 374.0
BRATS2025_SMALL_BELOW_MM3 = 20.0  # lesions under 20 mm^3 count for detection only
BRATS2025_DETECTION_DICE = 0.1
BRATS2025_MATCH_DICE = 1e-6
BRATS2025_HD95_PENALTY = 373.0  # diagonal of the 240 x 240 x 155 SRI grid


def lesion_wise(
    prediction: np.ndarray, truth: np.ndarray, spacing: Spacing, convention: str, group: str
) -> dict:
    """Lesion-wise scores of one study for one group under ``convention`` (see the module docstring).

    Returns ``convention, group, lesion_dice, lesion_hd95`` (mm), ``lesion_nsd`` (None for brats2023),
    ``n_gt`` (lesions counted), ``n_detected``, ``n_missed``, ``n_fp`` and ``lesions``: one dict per
    ground-truth lesion with ``gt_id, volume_mm3, diameter_mm, detected, dice, hd95``. brats2023 adds
    ``components`` (26-connected pieces merged into the lesion), ``matched`` (predicted component ids)
    and ``scored`` per lesion; brats2025 adds ``n_gt_large``, ``n_detected_large`` and, per lesion,
    ``small``, ``matched`` (component id or None) and ``nsd``. Lesions are in ``gt_id`` order.
    """
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    check_same_shape(prediction, truth)
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    allowed = GROUPS if convention == "brats2025" else REGIONS
    if group not in allowed:
        raise ValueError(f"group must be one of {tuple(allowed)} for {convention}, got {group!r}")
    spacing = tuple(float(s) for s in spacing)
    pred_mask, truth_mask = region_mask(prediction, GROUPS[group]), region_mask(truth, GROUPS[group])
    score = _brats2023 if convention == "brats2023" else _brats2025
    return {"convention": convention, "group": group, **score(pred_mask, truth_mask, spacing)}


def _volumes_mm3(labels: np.ndarray, count: int, spacing: Spacing) -> np.ndarray:
    """Volume in mm³ of each label 1..count (index 0 is the background)."""
    return np.bincount(labels.ravel(), minlength=count + 1) * float(np.prod(spacing))


def _diameter(volume_mm3: float) -> float:
    return equivalent_diameter_mm(1, (volume_mm3,))  # the sphere of that volume


# --- brats2023 ---------------------------------------------------------------------------------


def _merged_lesions(truth_mask: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """Lesions merged through the 18-neighbour dilation: (labels, count, components per lesion)."""
    element = ndimage.generate_binary_structure(truth_mask.ndim, 2)
    dilated_labels, count = label_components(ndimage.binary_dilation(truth_mask, element))
    merged = np.where(truth_mask, dilated_labels, 0)
    pieces, n_pieces = label_components(truth_mask)
    components = np.zeros(count + 1, dtype=np.int64)
    if n_pieces:
        owners = ndimage.labeled_comprehension(merged, pieces, np.arange(1, n_pieces + 1), np.max, int, 0)
        np.add.at(components, owners, 1)  # pieces per merged lesion
    return merged, count, components


def _brats2023(pred_mask: np.ndarray, truth_mask: np.ndarray, spacing: Spacing) -> dict:
    gt_labels, n_gt, components = _merged_lesions(truth_mask)
    pred_labels, n_pred = label_components(pred_mask)
    element = ndimage.generate_binary_structure(truth_mask.ndim, 2)
    gt_boxes, pred_boxes = ndimage.find_objects(gt_labels), ndimage.find_objects(pred_labels)
    volumes = _volumes_mm3(gt_labels, n_gt, spacing)
    claimed: set[int] = set()
    lesions: list[dict] = []
    for gt_id in range(1, n_gt + 1):
        near = _grow_box(gt_boxes[gt_id - 1], gt_labels.shape)
        dilated = ndimage.binary_dilation(gt_labels[near] == gt_id, element)
        matched = sorted(int(i) for i in np.unique(pred_labels[near][dilated]) if i)
        claimed.update(matched)
        box = _merge_boxes([gt_boxes[gt_id - 1], *(pred_boxes[i - 1] for i in matched)])
        lesion, found = gt_labels[box] == gt_id, np.isin(pred_labels[box], matched)
        volume = float(volumes[gt_id])
        lesions.append(
            {
                "gt_id": gt_id,
                "volume_mm3": volume,
                "diameter_mm": _diameter(volume),
                "components": int(components[gt_id]),
                "matched": matched,
                "detected": bool(matched),
                "scored": volume > BRATS2023_MAX_DROPPED_MM3,
                "dice": overlap_scores(found, lesion)["dice"],
                "hd95": hd95(found, lesion, spacing) if matched else BRATS2023_HD95_PENALTY,
            }
        )
    n_fp = n_pred - len(claimed)
    scored = [lesion for lesion in lesions if lesion["scored"]]
    denominator = len(scored) + n_fp
    n_detected = sum(lesion["detected"] for lesion in scored)
    return {
        "lesion_dice": sum(s["dice"] for s in scored) / denominator if denominator else 1.0,
        "lesion_hd95": (sum(s["hd95"] for s in scored) + BRATS2023_HD95_PENALTY * n_fp) / denominator
        if denominator
        else 0.0,
        "lesion_nsd": None,
        "n_gt": len(scored),
        "n_detected": n_detected,
        "n_missed": len(scored) - n_detected,
        "n_fp": n_fp,
        "lesions": lesions,
    }


# --- brats2025 ---------------------------------------------------------------------------------


def _dice_matrix(gt_labels: np.ndarray, n_gt: int, pred_labels: np.ndarray, n_pred: int) -> np.ndarray:
    """Dice of every (ground-truth lesion, predicted component) pair, shape (n_gt, n_pred)."""
    both = (gt_labels > 0) & (pred_labels > 0)
    pairs = gt_labels[both].astype(np.int64) * (n_pred + 1) + pred_labels[both]
    overlap = np.bincount(pairs, minlength=(n_gt + 1) * (n_pred + 1)).reshape(n_gt + 1, n_pred + 1)
    gt_sizes = np.bincount(gt_labels.ravel(), minlength=n_gt + 1)
    pred_sizes = np.bincount(pred_labels.ravel(), minlength=n_pred + 1)
    sums = gt_sizes[1:, None] + pred_sizes[None, 1:]
    return 2.0 * overlap[1:, 1:] / np.maximum(sums, 1)


def _max_bipartite_matching(dice: np.ndarray) -> dict[int, int]:
    """panoptica's ``MaxBipartiteMatching`` on Dice: {ground-truth index: predicted index}, 0-based."""
    if dice.size == 0:
        return {}
    cost = np.where(dice >= BRATS2025_MATCH_DICE, 1.0 - dice, 1.0 + 1e-6)
    rows, cols = linear_sum_assignment(cost)
    return {int(r): int(c) for r, c in zip(rows, cols, strict=True) if cost[r, c] < 1.0}


def _pooled_hd95_and_nsd(pred: np.ndarray, truth: np.ndarray, spacing: Spacing) -> tuple[float, float]:
    """panoptica's HD95 and NSD of two non-empty masks.

    A second HD95 on purpose: panoptica takes the 95th percentile of both directions pooled, while
    :func:`bmcore.metrics.hd95` takes the larger directed one. The surfaces and distances are
    bmcore's (the same erosion and distance transform as panoptica's), only the reduction differs.
    """
    box = _union_bounding_box(pred, truth)
    from_truth = _directed_surface_distances(truth[box], pred[box], spacing)
    from_pred = _directed_surface_distances(pred[box], truth[box], spacing)
    tolerance = min(spacing)
    nsd = (np.mean(from_truth <= tolerance) + np.mean(from_pred <= tolerance)) / 2.0
    return float(np.percentile(np.hstack((from_truth, from_pred)), 95)), float(nsd)


def _brats2025(pred_mask: np.ndarray, truth_mask: np.ndarray, spacing: Spacing) -> dict:
    gt_labels, n_gt = label_components(truth_mask)
    pred_labels, n_pred = label_components(pred_mask)
    dice = _dice_matrix(gt_labels, n_gt, pred_labels, n_pred)
    matches = _max_bipartite_matching(dice)
    volumes = _volumes_mm3(gt_labels, n_gt, spacing)
    gt_boxes, pred_boxes = ndimage.find_objects(gt_labels), ndimage.find_objects(pred_labels)
    lesions: list[dict] = []
    for index in range(n_gt):
        volume = float(volumes[index + 1])
        lesion = {"gt_id": index + 1, "volume_mm3": volume, "diameter_mm": _diameter(volume)}
        lesion |= {"small": volume < BRATS2025_SMALL_BELOW_MM3, "matched": None, "detected": False}
        lesion |= {"dice": 0.0, "hd95": BRATS2025_HD95_PENALTY, "nsd": 0.0}
        if index in matches:
            pred_id = matches[index] + 1
            box = _merge_boxes([gt_boxes[index], pred_boxes[pred_id - 1]])
            pair_hd95, pair_nsd = _pooled_hd95_and_nsd(
                pred_labels[box] == pred_id, gt_labels[box] == index + 1, spacing
            )
            pair_dice = float(dice[index, pred_id - 1])
            lesion |= {"matched": pred_id, "detected": pair_dice >= BRATS2025_DETECTION_DICE}
            lesion |= {"dice": pair_dice, "hd95": pair_hd95, "nsd": pair_nsd}
        lesions.append(lesion)
    return _summarize_2025(lesions, n_pred - len(matches))


def _summarize_2025(lesions: list[dict], n_fp: int) -> dict:
    """The means of ``parse_mets_results``: large lesions plus false positives, NaN without large ones."""
    large = [lesion for lesion in lesions if not lesion["small"]]
    scores = {
        key: [lesion[key] for lesion in large] + [penalty] * n_fp
        for key, penalty in (("dice", 0.0), ("nsd", 0.0), ("hd95", BRATS2025_HD95_PENALTY))
    }
    means = {key: float(np.mean(values)) if large else math.nan for key, values in scores.items()}
    n_detected = sum(lesion["detected"] for lesion in lesions)
    return {
        "lesion_dice": means["dice"],
        "lesion_hd95": means["hd95"],
        "lesion_nsd": means["nsd"],
        "n_gt": len(lesions),
        "n_gt_large": len(large),
        "n_detected": n_detected,
        "n_detected_large": sum(lesion["detected"] for lesion in large),
        "n_missed": len(lesions) - n_detected,
        "n_fp": n_fp,
        "lesions": lesions,
    }
