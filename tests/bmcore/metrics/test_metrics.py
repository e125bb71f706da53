"""Tests of bmcore.metrics: tiny volumes whose values can be counted on paper.

Arrays are indexed (x, y, z); labels 0 background, 1 NETC, 2 SNFH, 3 ET.
"""

import json
import math

import numpy as np
import pytest
from scipy import ndimage

from bmcore import metrics
from bmcore.metrics import distance

# 4x4x1 study used by several tests (rows are x, columns y, one z slice):
#   target          pred
#   0 0 0 0         0 0 0 0
#   0 3 3 0         0 3 0 0
#   0 1 2 0         0 3 2 2
#   0 0 0 0         0 0 0 0
TARGET_4x4 = np.array([[0, 0, 0, 0], [0, 3, 3, 0], [0, 1, 2, 0], [0, 0, 0, 0]])[:, :, None]
PRED_4x4 = np.array([[0, 0, 0, 0], [0, 3, 0, 0], [0, 3, 2, 2], [0, 0, 0, 0]])[:, :, None]
CONFUSION_4x4 = [[11, 0, 1, 0], [0, 0, 0, 1], [0, 0, 1, 0], [1, 0, 0, 1]]


def volume(shape: tuple[int, ...], *boxes: tuple[slice, ...], label: int = 1) -> np.ndarray:
    """An int volume with ``label`` written into each box."""
    array = np.zeros(shape, dtype=np.int64)
    for box in boxes:
        array[box] = label
    return array


def random_blob_pair(seed: int, shape: tuple[int, ...] = (24, 24, 12)) -> tuple[np.ndarray, np.ndarray]:
    """A target of smooth random blobs (thresholded Gaussian-filtered noise) and a perturbed copy."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma=2.0)
    perturbed = field + 0.5 * ndimage.gaussian_filter(rng.normal(size=shape), sigma=2.0)
    target, pred = field > np.quantile(field, 0.85), perturbed > np.quantile(perturbed, 0.85)
    assert target.any() and pred.any() and (pred != target).any()
    return pred, target


# --- confusion matrix and the study's convention -----------------------------------------------


def test_confusion_matrix_counts_rows_target_columns_pred():
    confusion = metrics.confusion_matrix(PRED_4x4, TARGET_4x4)
    assert confusion.dtype == np.int64
    assert confusion.tolist() == CONFUSION_4x4


def test_confusion_matrix_accumulates_over_batches_of_any_shape():
    rng = np.random.default_rng(0)
    pred, target = rng.integers(0, 4, (2, 6, 5, 3)), rng.integers(0, 4, (2, 6, 5, 3))
    whole = metrics.confusion_matrix(pred, target)
    batches = metrics.confusion_matrix(pred[0], target[0]) + metrics.confusion_matrix(pred[1], target[1])
    assert np.array_equal(whole, batches)
    assert whole.sum() == pred.size
    assert metrics.confusion_matrix(pred[0, :, :, 0], target[0, :, :, 0]).shape == (4, 4)


def test_confusion_matrix_rejects_labels_out_of_range():
    with pytest.raises(ValueError, match="labels"):
        metrics.confusion_matrix(np.array([0, 4]), np.array([0, 1]))


def test_paper_metrics_hand_computed():
    paper = metrics.paper_metrics(np.array(CONFUSION_4x4))
    # per class (background, NETC, SNFH, ET): tp, fp, fn = (11,1,1), (0,0,1), (1,1,0), (1,1,1)
    assert paper["paper_accuracy"] == pytest.approx(13 / 16)
    assert paper["paper_mean_dice"] == pytest.approx((22 / 24 + 0 + 2 / 3 + 2 / 4) / 4)
    assert paper["paper_mean_iou"] == pytest.approx((11 / 13 + 0 + 1 / 2 + 1 / 3) / 4)
    assert paper["paper_precision"] == pytest.approx((11 / 12 + 0 + 1 / 2 + 1 / 2) / 4)
    assert paper["paper_sensitivity"] == pytest.approx((11 / 12 + 0 + 1 + 1 / 2) / 4)
    assert paper["paper_specificity"] == pytest.approx((3 / 4 + 15 / 15 + 14 / 15 + 13 / 14) / 4)
    assert all(key.startswith("paper_") for key in paper)


def test_paper_mean_iou_is_inflated_by_background():
    # 20x20 slice, 4 ET voxels in the target, the prediction shifted by one: 2 overlap.
    target = volume((20, 20, 1), np.s_[4:6, 4:6, :], label=3)
    pred = volume((20, 20, 1), np.s_[4:6, 5:7, :], label=3)
    paper = metrics.paper_metrics(metrics.confusion_matrix(pred, target))
    honest = metrics.per_class_metrics(pred, target, (1.0, 1.0, 1.0))
    assert honest["dice_ET"] == pytest.approx(0.5)
    assert honest["iou_ET"] == pytest.approx(honest["dice_ET"] / (2 - honest["dice_ET"]))  # 1/3
    # classes NETC and SNFH appear nowhere and are left out; background: tp 394, fp 2, fn 2
    assert paper["paper_mean_iou"] == pytest.approx((394 / 398 + 1 / 3) / 2)
    assert paper["paper_accuracy"] == pytest.approx(396 / 400)
    # the study's pattern: a "mean IoU" far above the foreground Dice of the same masks
    assert paper["paper_mean_iou"] > honest["dice_ET"] > honest["iou_ET"]


def test_paper_metrics_rejects_empty_matrix():
    with pytest.raises(ValueError):
        metrics.paper_metrics(np.zeros((4, 4), dtype=np.int64))


# --- overlap scores and HD95 -------------------------------------------------------------------


def test_overlap_scores_hand_computed():
    target = volume((4, 4, 1), np.s_[0:2, 0:2, :]).astype(bool)  # 4 voxels
    pred = volume((4, 4, 1), np.s_[0:1, 0:3, :]).astype(bool)  # 3 voxels, 2 in the target
    scores = metrics.overlap_scores(pred, target)
    assert scores == pytest.approx({"dice": 4 / 7, "iou": 2 / 5, "precision": 2 / 3, "sensitivity": 1 / 2})
    assert scores["iou"] == pytest.approx(scores["dice"] / (2 - scores["dice"]))


def test_overlap_scores_empty_masks():
    empty = np.zeros((3, 3, 1), dtype=bool)
    full = np.ones((3, 3, 1), dtype=bool)
    assert metrics.overlap_scores(empty, empty) == {
        "dice": 1.0,
        "iou": 1.0,
        "precision": 1.0,
        "sensitivity": 1.0,
    }
    zeros = {"dice": 0.0, "iou": 0.0, "precision": 0.0, "sensitivity": 0.0}
    assert metrics.overlap_scores(empty, full) == zeros
    assert metrics.overlap_scores(full, empty) == zeros


def test_hd95_single_voxels_with_anisotropic_spacing():
    a = volume((3, 3, 3), np.s_[1, 1, 0]).astype(bool)
    b = volume((3, 3, 3), np.s_[1, 1, 1]).astype(bool)
    assert metrics.hd95(a, b, (1.0, 1.0, 1.5)) == pytest.approx(1.5)
    c = volume((3, 3, 3), np.s_[2, 1, 2]).astype(bool)  # offset (1, 0, 2) from a
    assert metrics.hd95(a, c, (0.5, 2.0, 1.5)) == pytest.approx(math.hypot(0.5, 3.0))
    assert metrics.hd95(a, a, (1.0, 1.0, 1.5)) == 0.0


def test_hd95_empty_masks():
    empty = np.zeros((3, 3, 3), dtype=bool)
    one = volume((3, 3, 3), np.s_[1, 1, 1]).astype(bool)
    assert metrics.hd95(empty, empty, (1.0, 1.0, 1.0)) == 0.0
    assert metrics.hd95(one, empty, (1.0, 1.0, 1.0)) == metrics.HD95_MISSING == 374.0
    assert metrics.hd95(empty, one, (1.0, 1.0, 1.0)) == 374.0


def test_hd95_is_the_larger_directed_percentile():
    target = volume((12, 1, 1), np.s_[0, 0, 0]).astype(bool)
    pred = volume((12, 1, 1), np.s_[0, 0, 0], np.s_[10, 0, 0]).astype(bool)
    # pred -> target distances [0, 10]: 95th percentile 9.5; target -> pred [0]: 0.
    # (medpy pools both directions, [0, 0, 10], and reports 9.0.)
    assert metrics.hd95(pred, target, (1.0, 1.0, 1.0)) == pytest.approx(9.5)
    assert metrics.hd95(target, pred, (1.0, 1.0, 1.0)) == pytest.approx(9.5)


def test_hd95_ignores_interior_voxels():
    # surface = mask minus its erosion: the centre of a 3x3x3 cube is no surface voxel
    cube = volume((5, 5, 5), np.s_[1:4, 1:4, 1:4]).astype(bool)
    centre = volume((5, 5, 5), np.s_[2, 2, 2]).astype(bool)
    # centre -> cube surface: 1; cube surface -> centre: up to sqrt(3), 95th percentile of 26 values
    distances = np.sqrt(
        [dx * dx + dy * dy + dz * dz for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)]
    )
    expected = np.percentile(distances[distances > 0], 95)
    assert metrics.hd95(centre, cube, (1.0, 1.0, 1.0)) == pytest.approx(expected)


# --- independent implementation: medpy ---------------------------------------------------------


ANISOTROPIC = (0.86, 0.86, 1.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surface_distances_and_dice_agree_with_medpy(seed):
    binary = pytest.importorskip("medpy.metric.binary")
    pred, target = random_blob_pair(seed)
    assert metrics.overlap_scores(pred, target)["dice"] == pytest.approx(binary.dc(pred, target))
    # medpy's surfaces (mask XOR its 6-connected erosion) and distances (EDT with sampling) are
    # defined as ours, so both directed distance sets must match; only the aggregation differs:
    # medpy takes the 95th percentile of both directions pooled, bmcore the larger of the two
    # directed 95th percentiles (BraTS / DeepMind surface_distance / MONAI). The two can differ by
    # millimetres (see test_hd95_is_the_larger_directed_percentile), so hd95 itself is compared
    # only where they agree (test_hd95_equals_medpy_where_conventions_agree).
    forward = distance._directed_surface_distances(pred, target, ANISOTROPIC)
    backward = distance._directed_surface_distances(target, pred, ANISOTROPIC)
    pooled = np.percentile(np.concatenate([forward, backward]), 95)
    assert binary.hd95(pred, target, voxelspacing=ANISOTROPIC) == pytest.approx(pooled)
    expected = max(np.percentile(forward, 95), np.percentile(backward, 95))
    assert metrics.hd95(pred, target, ANISOTROPIC) == pytest.approx(expected)  # cropping changes nothing
    medpy_directed = getattr(binary, "__surface_distances", None)  # private helper, when present
    if medpy_directed is not None:
        assert np.sort(forward) == pytest.approx(np.sort(medpy_directed(pred, target, ANISOTROPIC)))
        assert np.sort(backward) == pytest.approx(np.sort(medpy_directed(target, pred, ANISOTROPIC)))


def test_hd95_equals_medpy_where_conventions_agree():
    # Two one-voxel-thick planes 2 slices apart: every surface distance is 2 x 1.5 mm both ways,
    # so pooled and per-direction percentiles coincide.
    binary = pytest.importorskip("medpy.metric.binary")
    target = volume((6, 5, 6), np.s_[:, :, 1]).astype(bool)
    pred = volume((6, 5, 6), np.s_[:, :, 3]).astype(bool)
    assert metrics.hd95(pred, target, ANISOTROPIC) == pytest.approx(3.0)
    assert binary.hd95(pred, target, voxelspacing=ANISOTROPIC) == pytest.approx(3.0)


# --- per-class metrics -------------------------------------------------------------------------


def test_per_class_metrics_hand_computed():
    result = metrics.per_class_metrics(PRED_4x4, TARGET_4x4, (1.0, 1.0, 1.0))
    expected = {
        # structure: dice, iou, precision, sensitivity, hd95 (a single slice: every voxel is surface)
        "NETC": (0.0, 0.0, 0.0, 0.0, 374.0),  # predicted nowhere
        "SNFH": (2 / 3, 1 / 2, 1 / 2, 1.0, 0.95),  # pred->target distances [0, 1]
        "ET": (1 / 2, 1 / 3, 1 / 2, 1 / 2, 0.95),
        "TC": (4 / 5, 2 / 3, 1.0, 2 / 3, 0.9),  # target->pred distances [0, 0, 1]
        "WT": (3 / 4, 3 / 5, 3 / 4, 3 / 4, 0.85),  # [0, 0, 0, 1] both ways
    }
    for structure, values in expected.items():
        got = [result[f"{name}_{structure}"] for name in metrics.PER_CLASS_METRICS]
        assert got == pytest.approx(values), structure
    assert len(result) == len(expected) * len(metrics.PER_CLASS_METRICS)


def test_per_class_metrics_absent_structure_counts_as_perfect():
    target = volume((4, 4, 1), np.s_[1:3, 1:3, :], label=2)  # edema only
    result = metrics.per_class_metrics(target, target, (1.0, 1.0, 1.0))
    assert result["dice_ET"] == result["dice_NETC"] == result["iou_TC"] == 1.0
    assert result["hd95_ET"] == 0.0
    assert result["dice_SNFH"] == result["dice_WT"] == 1.0


# --- lesions -----------------------------------------------------------------------------------


def test_find_lesions_uses_26_connectivity():
    mask = volume((3, 3, 3), np.s_[0, 0, 0], np.s_[1, 1, 1]).astype(bool)  # touching by a corner
    assert ndimage.label(mask)[1] == 2  # 6-connectivity would split them
    (lesion,) = metrics.find_lesions(mask, (1.0, 1.0, 1.5))
    assert lesion.label_id == 1
    assert lesion.voxels == 2
    assert lesion.volume_ml == pytest.approx(2 * 1.5 / 1000)
    assert lesion.diameter_mm == pytest.approx((6 * 3.0 / math.pi) ** (1 / 3))
    assert lesion.centroid_vox == pytest.approx((0.5, 0.5, 0.5))
    assert lesion.slices == (slice(0, 2), slice(0, 2), slice(0, 2))
    assert mask[lesion.slices].sum() == 2


def test_find_lesions_several_and_none():
    mask = volume((10, 10, 1), np.s_[0:2, 0:2, :], np.s_[5:8, 5:8, :]).astype(bool)
    lesions = metrics.find_lesions(mask, (1.0, 1.0, 1.0))
    assert [lesion.voxels for lesion in lesions] == [4, 9]
    assert lesions[1].centroid_vox == pytest.approx((6.0, 6.0, 0.0))
    assert metrics.find_lesions(np.zeros((4, 4, 4), dtype=bool), (1.0, 1.0, 1.0)) == []


def test_diameter_bins():
    assert metrics.DIAMETER_BIN_NAMES == ("lt3mm", "3to6mm", "6to10mm", "gt10mm")
    assert [metrics.diameter_bin(d) for d in (0.0, 2.99, 3.0, 5.9, 6.0, 9.99, 10.0, 50.0)] == [
        "lt3mm",
        "lt3mm",
        "3to6mm",
        "3to6mm",
        "6to10mm",
        "6to10mm",
        "gt10mm",
        "gt10mm",
    ]


SPACING = (1.0, 1.0, 1.0)
LESION_A = np.s_[2:5, 2:5, 0:1]  # 9 voxels
LESION_B = np.s_[12:15, 12:15, 0:1]  # 9 voxels, far from A


def lesion_wise(pred: np.ndarray, target: np.ndarray) -> dict:
    return metrics.lesion_wise_metrics(pred * 3, target * 3, SPACING, region="TC")


def test_lesion_wise_perfect_and_empty():
    target = volume((16, 16, 1), LESION_A, LESION_B)
    result = lesion_wise(target, target)
    assert result["lesion_dice"] == 1.0 and result["lesion_hd95"] == 0.0
    assert (result["n_gt"], result["n_tp"], result["n_fn"], result["n_fp"]) == (2, 2, 0, 0)
    empty = np.zeros_like(target)
    result = lesion_wise(empty, empty)
    assert result["lesion_dice"] == 1.0 and result["lesion_hd95"] == 0.0
    assert result["n_gt"] == 0 and result["detection_sensitivity"] is None


def test_lesion_wise_missed_lesion():
    target = volume((16, 16, 1), LESION_A, LESION_B)
    result = lesion_wise(volume((16, 16, 1), LESION_A), target)
    assert (result["n_gt"], result["n_tp"], result["n_fn"], result["n_fp"]) == (2, 1, 1, 0)
    assert result["lesion_dice"] == pytest.approx((1 + 0) / 2)
    assert result["lesion_hd95"] == pytest.approx((0 + 374) / 2)
    assert result["detection_sensitivity"] == pytest.approx(0.5)


def test_lesion_wise_false_positive():
    target = volume((16, 16, 1), LESION_A)
    result = lesion_wise(volume((16, 16, 1), LESION_A, np.s_[14, 14, 0]), target)
    assert (result["n_gt"], result["n_tp"], result["n_fn"], result["n_fp"]) == (1, 1, 0, 1)
    assert result["lesion_dice"] == pytest.approx(1 / 2)
    assert result["lesion_hd95"] == pytest.approx(374 / 2)
    # only false positives: no lesion to find, every component scores 0 / 374
    result = lesion_wise(volume((16, 16, 1), np.s_[14, 14, 0]), np.zeros((16, 16, 1), dtype=np.int64))
    assert result["lesion_dice"] == 0.0 and result["lesion_hd95"] == 374.0 and result["n_fp"] == 1


def test_lesion_wise_ignores_lesions_of_two_voxels_or_fewer():
    tiny = np.s_[12:14, 12, 0]  # 2 voxels
    target = volume((16, 16, 1), LESION_A, tiny)
    missed_tiny = lesion_wise(volume((16, 16, 1), LESION_A), target)
    assert (missed_tiny["n_gt"], missed_tiny["n_fn"], missed_tiny["lesion_dice"]) == (1, 0, 1.0)
    found_tiny = lesion_wise(volume((16, 16, 1), LESION_A, tiny), target)
    assert (found_tiny["n_gt"], found_tiny["n_fp"], found_tiny["lesion_dice"]) == (1, 0, 1.0)
    # a prediction touching only the ignored lesion is not a false positive either
    only_tiny = lesion_wise(volume((16, 16, 1), np.s_[13:15, 13, 0]), volume((16, 16, 1), tiny))
    assert (only_tiny["n_gt"], only_tiny["n_fp"], only_tiny["lesion_dice"]) == (0, 0, 1.0)


def test_lesion_wise_match_through_one_voxel_dilation():
    target = volume((16, 16, 1), LESION_A)  # x, y in 2..4
    touching = volume((16, 16, 1), np.s_[5, 5, 0])  # diagonal neighbour of (4, 4): inside the dilation
    result = lesion_wise(touching, target)
    assert (result["n_tp"], result["n_fp"]) == (1, 0)
    assert result["lesion_dice"] == 0.0  # matched, but no voxel in common
    assert result["lesion_hd95"] == pytest.approx(metrics.hd95(touching > 0, target > 0, SPACING))
    assert result["lesion_hd95"] < 5.0
    two_away = lesion_wise(volume((16, 16, 1), np.s_[6, 6, 0]), target)
    assert (two_away["n_tp"], two_away["n_fn"], two_away["n_fp"]) == (0, 1, 1)
    assert two_away["lesion_dice"] == 0.0 and two_away["lesion_hd95"] == 374.0


def test_lesion_wise_merges_predicted_components_on_one_lesion():
    target = volume((16, 16, 1), np.s_[2:7, 2:4, 0:1])  # 10 voxels
    pred = volume((16, 16, 1), np.s_[2:4, 2:4, 0:1], np.s_[5:7, 2:4, 0:1])  # 4 + 4, gap at x = 4
    assert metrics.label_components(pred > 0)[1] == 2
    result = lesion_wise(pred, target)
    assert (result["n_gt"], result["n_tp"], result["n_fp"]) == (1, 1, 0)
    assert result["lesion_dice"] == pytest.approx(2 * 8 / (8 + 10))


def test_lesion_wise_diagonal_voxels_form_one_lesion():
    target = volume((8, 8, 8), np.s_[1:3, 1:3, 1:3], np.s_[3:5, 3:5, 3:5])  # touching at one corner
    result = lesion_wise(target, target)
    assert result["n_gt"] == 1 and result["lesion_dice"] == 1.0


def test_lesion_wise_detection_by_diameter_bin():
    # equivalent diameters (6 N / pi)^(1/3) for N = 9, 27, 125, 1000 voxels of 1 mm^3:
    # 2.58, 3.72, 6.20, 12.41 mm -> one lesion per bin
    boxes = [np.s_[0:3, 0:3, 0:1], np.s_[6:9, 0:3, 0:3], np.s_[12:17, 0:5, 0:5], np.s_[0:10, 10:20, 10:20]]
    target = volume((24, 24, 24), *boxes)
    pred = volume((24, 24, 24), boxes[1], boxes[3])
    result = lesion_wise(pred, target)
    for name, detected in zip(metrics.DIAMETER_BIN_NAMES, (0, 1, 0, 1), strict=True):
        assert (result[f"detected_{name}"], result[f"total_{name}"]) == (detected, 1), name
    assert result["detection_sensitivity"] == pytest.approx(0.5)


def test_lesion_wise_regions_differ():
    target = volume((16, 16, 1), LESION_A, label=2)  # edema only: a WT lesion, no TC lesion
    target[LESION_B] = 3
    result_tc = metrics.lesion_wise_metrics(target, target, SPACING, region="TC")
    result_wt = metrics.lesion_wise_metrics(target, target, SPACING, region="WT")
    assert (result_tc["n_gt"], result_wt["n_gt"]) == (1, 2)


# --- one study, many studies -------------------------------------------------------------------


def two_cases() -> list[dict]:
    target = volume((16, 16, 1), LESION_A, LESION_B, label=3)
    first = metrics.evaluate_case(volume((16, 16, 1), LESION_A, label=3), target, SPACING)  # misses B
    second = metrics.evaluate_case(volume((16, 16, 1), LESION_A, np.s_[8, 8, 0], label=3), target, SPACING)
    return [first, second]


def test_evaluate_case_contents():
    first, second = two_cases()
    assert json.loads(json.dumps(first)) == first  # JSON-ready
    assert first["dice_ET"] == pytest.approx(2 * 9 / (9 + 18))
    assert first["lesion_dice_TC"] == pytest.approx(0.5)
    assert first["n_fn_ET"] == 1 and first["n_fp_WT"] == 0
    assert first["total_lt3mm_TC"] == 2 and first["detected_lt3mm_TC"] == 1
    assert np.array(first["confusion"]).sum() == 256
    assert second["n_fp_TC"] == 1 and second["n_fn_TC"] == 1
    for key in ("dice_NETC", "hd95_SNFH", "iou_WT", "lesion_hd95_ET", "detection_sensitivity_WT"):
        assert key in first


def test_summarize_cases_pools_and_averages():
    cases = two_cases()
    summary = metrics.summarize_cases(cases)
    assert summary["n_studies"] == 2
    pooled = np.array(cases[0]["confusion"]) + np.array(cases[1]["confusion"])
    assert summary["confusion"] == pooled.tolist()
    assert summary["paper_mean_dice"] == pytest.approx(metrics.paper_metrics(pooled)["paper_mean_dice"])
    dices = [case["dice_ET"] for case in cases]
    assert summary["dice_ET"] == pytest.approx(np.mean(dices))
    assert summary["dice_ET_std"] == pytest.approx(np.std(dices))
    assert summary["lesion_dice_TC"] == pytest.approx((0.5 + 1 / 3) / 2)
    assert (summary["n_gt_TC"], summary["n_tp_TC"], summary["n_fp_TC"]) == (4, 2, 1)
    assert summary["detection_sensitivity_TC"] == pytest.approx(0.5)
    assert summary["detection_sensitivity_lt3mm_TC"] == pytest.approx(2 / 4)
    assert summary["detection_sensitivity_gt10mm_TC"] is None
    assert summary["fp_per_study"] == summary["fp_per_study_TC"] == pytest.approx(1 / 2)
    assert json.loads(json.dumps(summary)) == summary


def test_summarize_cases_needs_a_study():
    with pytest.raises(ValueError):
        metrics.summarize_cases([])


# --- the official conventions in the per-study and summary results ---------------------------


def convention_cases() -> list[tuple[np.ndarray, np.ndarray, tuple[float, float, float]]]:
    """(pred, truth, spacing) of three studies whose lesions are large enough for brats2025 and one
    where they are not (brats2025 leaves its lesion-wise scores undefined)."""
    truth = volume((20, 20, 20), np.s_[2:7, 2:7, 2:7], np.s_[12:15, 12:15, 12:15], label=3)
    truth[10:13, 2:6, 2:6] = 1  # a necrotic TC lesion
    found = truth.copy()
    found[12:15, 12:15, 12:15] = 0  # misses the small ET lesion
    found[17:19, 0:2, 17:19] = 3  # and adds a false positive
    tiny = volume((8, 8, 1), np.s_[1:3, 1:3, 0], label=3)  # 4 mm^3: too small for brats2025
    return [(truth, truth, (1.0, 1.0, 1.0)), (found, truth, (1.0, 1.0, 1.2)), (tiny, tiny, SPACING)]


def test_evaluate_case_carries_both_conventions():
    for pred, truth, spacing in convention_cases():
        case = metrics.evaluate_case(pred, truth, spacing)
        assert json.loads(json.dumps(case)) == case  # JSON-ready: NaN becomes None
        for convention in metrics.CONVENTIONS:
            for region in metrics.REGIONS:
                direct = metrics.lesion_wise(pred, truth, spacing, convention, region)
                for key in ("lesion_dice", "lesion_hd95", "lesion_nsd"):
                    expected = direct[key]
                    got = case[f"{convention}_{key}_{region}"]
                    if expected is None or math.isnan(expected):
                        assert got is None
                    else:
                        assert got == pytest.approx(expected)
                for key in ("n_gt", "n_detected", "n_missed", "n_fp"):
                    assert case[f"{convention}_{key}_{region}"] == direct[key]
    tiny = metrics.evaluate_case(*convention_cases()[2])
    assert tiny["brats2025_lesion_dice_TC"] is None and tiny["brats2023_lesion_dice_TC"] == 1.0


def test_summarize_cases_carries_both_conventions():
    studies = convention_cases()
    cases = [metrics.evaluate_case(*study) for study in studies]
    summary = metrics.summarize_cases(cases)
    for convention in metrics.CONVENTIONS:
        for region in metrics.REGIONS:
            key = f"{convention}_lesion_dice_{region}"
            scores = [metrics.lesion_wise(*study, convention, region)["lesion_dice"] for study in studies]
            defined = [score for score in scores if not math.isnan(score)]  # brats2025 leaves NaN out
            assert summary[key] == pytest.approx(np.mean(defined))
            assert summary[f"{key}_std"] == pytest.approx(np.std(defined))
            assert summary[f"{key}_studies"] == len(defined)
            n_gt = sum(metrics.lesion_wise(*study, convention, region)["n_gt"] for study in studies)
            assert summary[f"{convention}_n_gt_{region}"] == n_gt
    assert summary["brats2025_lesion_dice_TC_studies"] == 2
    assert summary["brats2025_n_fp_TC"] == 1 and summary["brats2025_fp_per_study_TC"] == pytest.approx(1 / 3)
    assert summary["patients"] == 3 and summary["lesions"] == summary["brats2025_n_gt_TC"]
    assert summary["brats2025_lesion_dice_TC_ci95"] is not None
    assert json.loads(json.dumps(summary)) == summary


def test_convention_metrics_are_the_same_on_the_cropped_grid():
    # lesions far from the border of a large grid: scored in a box around the foreground, as on the whole
    truth = volume((48, 40, 36), np.s_[20:25, 18:23, 15:20], np.s_[27:29, 18:20, 15:17], label=3)
    pred = volume((48, 40, 36), np.s_[21:25, 18:23, 15:20], np.s_[30:32, 30:32, 20:22], label=3)
    case = metrics.evaluate_case(pred, truth, (0.8, 1.0, 1.5))
    for convention in metrics.CONVENTIONS:
        for region in metrics.REGIONS:
            direct = metrics.lesion_wise(pred, truth, (0.8, 1.0, 1.5), convention, region)
            assert case[f"{convention}_lesion_dice_{region}"] == pytest.approx(direct["lesion_dice"])
            assert case[f"{convention}_lesion_hd95_{region}"] == pytest.approx(direct["lesion_hd95"])
            assert case[f"{convention}_n_fp_{region}"] == direct["n_fp"] == 1
    empty = np.zeros((10, 10, 10), dtype=np.int64)
    blank = metrics.evaluate_case(empty, empty, SPACING)
    assert blank["brats2023_lesion_dice_TC"] == 1.0 and blank["brats2025_lesion_dice_TC"] is None
