"""Tests of bmcore.metrics.conventions: the BraTS 2023 and 2025 lesion-wise conventions.

Hand-made volumes whose scores are counted on paper, then seeded random studies compared with the
references: for brats2025 the official pipeline (``panoptica`` with the settings of
``brats-evaluation``'s ``config_mets.yaml``, then the steps of its ``parse_mets_results``); for
brats2023 an oracle written here that follows ``rachitsaluja/BraTS-2023-Metrics`` ``eval.py`` step by
step on whole arrays. Arrays are indexed (x, y, z); labels 0 background, 1 NETC, 2 SNFH, 3 ET.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from bmcore.metrics import hd95, label_components
from bmcore.metrics.conventions import lesion_wise

ISO = (1.0, 1.0, 1.0)


def volume(shape: tuple[int, ...], *boxes: tuple[slice, ...], label: int = 3) -> np.ndarray:
    """An int volume with ``label`` written into each box."""
    array = np.zeros(shape, dtype=np.int64)
    for box in boxes:
        array[box] = label
    return array


def cube(x: int, y: int, z: int, size: int = 3) -> tuple[slice, ...]:
    return (slice(x, x + size), slice(y, y + size), slice(z, z + size))


def both(pred: np.ndarray, truth: np.ndarray, spacing=ISO, group: str = "ET") -> tuple[dict, dict]:
    return (
        lesion_wise(pred, truth, spacing, "brats2023", group),
        lesion_wise(pred, truth, spacing, "brats2025", group),
    )


# --- hand-made cases ---------------------------------------------------------------------------


def test_lesions_two_voxels_apart_are_merged_by_brats2023_only():
    # A = x 4..6, B = x 9..11: a gap of two voxels (x 7, 8) closes once both are dilated.
    shape = (16, 10, 10)
    truth = volume(shape, cube(4, 4, 4), cube(9, 4, 4))
    pred = volume(shape, cube(4, 4, 4))  # A exactly
    old, new = both(pred, truth)
    assert old["n_gt"] == 1 and old["lesions"][0]["components"] == 2
    assert old["n_detected"] == 1 and old["n_fp"] == 0
    assert old["lesion_dice"] == pytest.approx(2 * 27 / (27 + 54))  # A against A + B
    # brats2025: no dilation, two lesions of 27 mm^3, B missed (0 / 0 / 373).
    assert new["n_gt"] == 2 and new["n_gt_large"] == 2 and new["n_detected"] == 1
    assert new["lesion_dice"] == pytest.approx(0.5)
    assert new["lesion_nsd"] == pytest.approx(0.5)
    assert new["lesion_hd95"] == pytest.approx(373 / 2)
    # Three voxels apart, brats2023 keeps them apart: B scores 0 and 374.
    apart = volume((17, 10, 10), cube(4, 4, 4), cube(10, 4, 4))
    old = lesion_wise(volume(apart.shape, cube(4, 4, 4)), apart, ISO, "brats2023", "ET")
    assert old["n_gt"] == 2 and old["n_missed"] == 1
    assert old["lesion_dice"] == pytest.approx(0.5)
    assert old["lesion_hd95"] == pytest.approx(374 / 2)


def test_brats2023_dilates_with_the_18_neighbour_element():
    # Two 2x2x2 cubes whose corners (5,5,5) and (8,8,8) are three voxels apart on every axis: the
    # full 3x3x3 element would merge them, the 18-neighbour element does not.
    shape = (12, 12, 12)
    truth = volume(shape, cube(4, 4, 4, size=2), cube(8, 8, 8, size=2))
    full_cube = ndimage.binary_dilation(truth > 0, np.ones((3, 3, 3), dtype=bool))
    assert label_components(full_cube)[1] == 1
    # A predicted voxel diagonal to A's corner (offset 1,1,1) is outside its 18-neighbour dilation.
    pred = volume(shape, cube(6, 6, 6, size=1))
    old = lesion_wise(pred, truth, ISO, "brats2023", "ET")
    assert old["n_gt"] == 2 and old["n_detected"] == 0 and old["n_fp"] == 1
    assert old["lesion_dice"] == 0.0 and old["lesion_hd95"] == pytest.approx(374.0)
    # Offset (1,1,0) is inside it: A is "detected" although the two do not overlap (Dice 0).
    pred = volume(shape, cube(6, 6, 5, size=1))
    old = lesion_wise(pred, truth, ISO, "brats2023", "ET")
    assert old["n_detected"] == 1 and old["n_fp"] == 0
    assert old["lesions"][0]["detected"] and old["lesions"][0]["dice"] == 0.0
    assert old["lesions"][0]["hd95"] < 374.0


def test_two_cubic_mm_lesion_dropped_by_2023_and_detection_only_in_2025():
    shape = (20, 20, 20)
    large, tiny = cube(2, 2, 2), (slice(15, 17), slice(15, 16), slice(15, 16))  # 27 and 2 mm^3
    truth = volume(shape, large, tiny)
    old, new = both(truth, truth)
    assert old["n_gt"] == 1 and old["n_fp"] == 0  # the prediction of the tiny one is no FP
    assert [lesion["scored"] for lesion in old["lesions"]] == [True, False]
    assert old["lesions"][1]["volume_mm3"] == pytest.approx(2.0)
    assert (old["lesion_dice"], old["lesion_hd95"]) == (1.0, 0.0)
    assert new["n_gt"] == 2 and new["n_gt_large"] == 1 and new["n_detected"] == 2
    assert [lesion["small"] for lesion in new["lesions"]] == [False, True]
    assert (new["lesion_dice"], new["lesion_nsd"], new["lesion_hd95"]) == (1.0, 1.0, 0.0)
    # Missing the tiny lesion: a missed detection in 2025, the scores stay those of the large one.
    old, new = both(volume(shape, large), truth)
    assert old["n_gt"] == 1 and old["n_missed"] == 0
    assert new["n_detected"] == 1 and new["n_missed"] == 1 and new["lesion_dice"] == 1.0


def test_false_positive_and_miss():
    shape = (20, 20, 20)
    a, far = cube(2, 2, 2), cube(12, 12, 12)
    old, new = both(volume(shape, a, far), volume(shape, a))  # far: a false positive
    assert old["n_fp"] == new["n_fp"] == 1
    assert (old["lesion_dice"], old["lesion_hd95"]) == (0.5, 187.0)
    assert (new["lesion_dice"], new["lesion_nsd"], new["lesion_hd95"]) == (0.5, 0.5, 186.5)
    old, new = both(volume(shape, a), volume(shape, a, far))  # far: missed
    assert old["n_missed"] == new["n_missed"] == 1 and old["n_fp"] == new["n_fp"] == 0
    assert (old["lesion_dice"], old["lesion_hd95"]) == (0.5, 187.0)
    assert (new["lesion_dice"], new["lesion_nsd"], new["lesion_hd95"]) == (0.5, 0.5, 186.5)
    assert new["lesions"][1] | {"diameter_mm": 0} == {
        "gt_id": 2,
        "volume_mm3": 27.0,
        "diameter_mm": 0,
        "small": False,
        "matched": None,
        "detected": False,
        "dice": 0.0,
        "hd95": 373.0,
        "nsd": 0.0,
    }
    assert new["lesions"][1]["diameter_mm"] == pytest.approx((6 * 27 / math.pi) ** (1 / 3))


def test_anisotropic_spacing_moves_the_volume_thresholds():
    shape = (12, 12, 12)
    sixteen = (slice(1, 5), slice(1, 5), slice(1, 2))  # 16 voxels
    seventeen = (slice(6, 10), slice(6, 10), slice(6, 7))  # 16 voxels + 1 below
    truth = volume(shape, sixteen, seventeen)
    truth[6, 6, 7] = 3
    # 0.5 mm voxels (0.125 mm^3): 2.0 mm^3 is dropped, 2.125 mm^3 is kept, whatever the voxel count.
    old = lesion_wise(truth, truth, (0.5, 0.5, 0.5), "brats2023", "ET")
    assert old["n_gt"] == 1 and [lesion["scored"] for lesion in old["lesions"]] == [False, True]
    # brats2025: a 2x2x2 lesion is 8 mm^3 (small) at 1 mm but 20 mm^3 (large) at 1 x 1 x 2.5 mm.
    truth = volume(shape, cube(2, 2, 2, size=2))
    empty = np.zeros_like(truth)
    iso = lesion_wise(empty, truth, ISO, "brats2025", "ET")
    assert iso["n_gt_large"] == 0 and math.isnan(iso["lesion_dice"]) and math.isnan(iso["lesion_hd95"])
    coarse = lesion_wise(empty, truth, (1.0, 1.0, 2.5), "brats2025", "ET")
    assert coarse["lesions"][0]["volume_mm3"] == pytest.approx(20.0) and coarse["n_gt_large"] == 1
    assert (coarse["lesion_dice"], coarse["lesion_nsd"], coarse["lesion_hd95"]) == (0.0, 0.0, 373.0)


def test_brats2025_surface_scores_use_the_smallest_spacing_as_tolerance():
    # A 3x3x3 cube (x 2..4) against one at x 4..6, at 0.5 x 1.5 x 1.5 mm (30.4 mm^3, large). Surface
    # voxels: 26 each. From the truth: its x=4 slice (9) at 0, x=3 (8, centre excluded) at 0.5 mm,
    # x=2 (9) at 1 mm; the prediction mirrors it. NSD at tolerance 0.5 mm (the smallest spacing) =
    # (17/26 + 17/26) / 2; at 1.5 mm it would be 1. The pooled 95th percentile is 1 mm.
    truth = volume((9, 7, 7), cube(2, 2, 2))
    pred = volume((9, 7, 7), cube(4, 2, 2))
    new = lesion_wise(pred, truth, (0.5, 1.5, 1.5), "brats2025", "ET")
    assert new["n_gt_large"] == 1 and new["n_detected"] == 1
    assert new["lesion_dice"] == pytest.approx(1 / 3)
    assert new["lesion_nsd"] == pytest.approx(17 / 26)
    assert new["lesion_hd95"] == pytest.approx(1.0)


def test_brats2025_matching_is_one_to_one_and_maximal():
    # Along x, cross-section 3x3 (9 voxels): truth A = x 0..9, B = x 11..13; prediction P1 = x 3..13
    # overlaps both, P2 = x 0..1 overlaps A only. Dice(A, P1) = 14/21, Dice(B, P1) = 6/14,
    # Dice(A, P2) = 4/12. Greedy would pair A with P1 (2/3) and leave B unmatched; the maximum
    # matching pairs A with P2 and B with P1 (1/3 + 3/7 > 2/3).
    def rows(*spans: tuple[int, int]) -> np.ndarray:
        return volume((16, 5, 5), *((slice(lo, hi), slice(1, 4), slice(1, 4)) for lo, hi in spans))

    truth, pred = rows((0, 10), (11, 14)), rows((3, 14), (0, 2))
    new = lesion_wise(pred, truth, ISO, "brats2025", "ET")
    by_id = {lesion["gt_id"]: lesion for lesion in new["lesions"]}
    assert by_id[1]["dice"] == pytest.approx(1 / 3) and by_id[2]["dice"] == pytest.approx(3 / 7)
    assert by_id[1]["matched"] != by_id[2]["matched"]
    assert new["n_fp"] == 0 and new["n_detected"] == 2
    assert new["lesion_dice"] == pytest.approx((1 / 3 + 3 / 7) / 2)
    # One prediction over two lesions: matched to the one it overlaps best, the other is missed.
    truth, pred = rows((0, 4), (6, 9)), rows((0, 9))  # 36 and 27 voxels; P has 81
    new = lesion_wise(pred, truth, ISO, "brats2025", "ET")
    assert [lesion["matched"] for lesion in new["lesions"]] == [1, None]
    assert new["lesions"][0]["dice"] == pytest.approx(72 / 117)
    assert new["n_fp"] == 0 and new["lesion_dice"] == pytest.approx(72 / 117 / 2)
    # brats2023 merges the two (gap of two voxels) and scores the union: 2*63 / (63 + 81).
    old = lesion_wise(pred, truth, ISO, "brats2023", "ET")
    assert old["n_gt"] == 1 and old["lesion_dice"] == pytest.approx(126 / 144)


def test_empty_studies_follow_each_reference():
    empty = np.zeros((6, 6, 6), dtype=np.int64)
    old, new = both(empty, empty)
    assert (old["lesion_dice"], old["lesion_hd95"], old["n_gt"], old["n_fp"]) == (1.0, 0.0, 0, 0)
    assert math.isnan(new["lesion_dice"]) and math.isnan(new["lesion_nsd"]) and new["n_gt"] == 0
    fp_only = volume(empty.shape, cube(1, 1, 1))
    old, new = both(fp_only, empty)
    assert (old["lesion_dice"], old["lesion_hd95"], old["n_fp"]) == (0.0, 374.0, 1)
    assert math.isnan(new["lesion_hd95"]) and new["n_fp"] == 1  # no reference lesion: NaN


def test_groups_and_arguments():
    truth = np.zeros((12, 6, 6), dtype=np.int64)
    truth[1:4, 1:4, 1:4] = 1  # NETC: in TC and WT, not ET
    truth[6:9, 1:4, 1:4] = 2  # edema: WT only
    counts = {
        group: lesion_wise(truth, truth, ISO, "brats2025", group)["n_gt"] for group in ("ET", "TC", "WT")
    }
    assert counts == {"ET": 0, "TC": 1, "WT": 2}
    cavity = volume(truth.shape, cube(1, 1, 1), label=4)
    assert lesion_wise(cavity, cavity, ISO, "brats2025", "RC")["lesion_dice"] == 1.0
    with pytest.raises(ValueError, match="group"):
        lesion_wise(cavity, cavity, ISO, "brats2023", "RC")
    with pytest.raises(ValueError, match="convention"):
        lesion_wise(cavity, cavity, ISO, "brats2024", "ET")
    with pytest.raises(ValueError, match="shape"):
        lesion_wise(cavity, cavity[:-1], ISO, "brats2025", "ET")


# --- seeded random studies ---------------------------------------------------------------------

SPACINGS = [(1.0, 1.0, 1.0), (0.86, 0.86, 1.5), (1.0, 1.0, 2.5), (0.5, 0.7, 1.2)]


def random_study(rng: np.random.Generator, shape=(22, 22, 16)) -> tuple[np.ndarray, np.ndarray]:
    """A truth of a few blobs (labels 1-4, tiny ones included) and a perturbed prediction of it."""
    truth = np.zeros(shape, dtype=np.int64)
    for _ in range(rng.integers(0, 7)):
        centre = rng.integers(0, shape)
        radii = rng.uniform(0.4, 3.5, size=3)
        grid = np.ogrid[tuple(slice(0, n) for n in shape)]
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1
        truth[inside] = rng.choice([1, 2, 3, 3, 4])
    for _ in range(rng.integers(0, 4)):  # tiny lesions of 1-4 voxels, around the volume thresholds
        x, y, z = rng.integers(0, shape)
        truth[x : x + rng.integers(1, 3), y : y + rng.integers(1, 3), z] = rng.choice([1, 3])
    pred = truth.copy()
    for label in np.unique(truth)[1:]:
        if rng.random() < 0.3:
            pred[pred == label] = 0  # whole classes missed
    pred = np.roll(pred, tuple(rng.integers(-1, 2, size=3)), axis=(0, 1, 2))
    flips = rng.random(shape) < 0.0005
    pred[flips] = rng.choice([0, 1, 2, 3], size=int(flips.sum()))
    for _ in range(rng.integers(0, 3)):  # false-positive blobs
        x, y, z = rng.integers(0, shape)
        pred[x : x + rng.integers(1, 4), y : y + rng.integers(1, 4), z : z + 2] = rng.choice([1, 3])
    return pred, truth


def brats2023_oracle(pred: np.ndarray, truth: np.ndarray, spacing, labels: tuple[int, ...]) -> dict:
    """BraTS-METS 2023 ``get_LesionWiseScores`` + ``get_LesionWiseResults``, step by step, whole arrays.

    Differs from the reference only in the tools: scipy's 26-connected labelling for cc3d's, and
    bmcore's HD95 for DeepMind's surface_distance (the reference then replaces inf by 374).
    """
    cube26 = np.ones((3, 3, 3), dtype=bool)
    element = ndimage.generate_binary_structure(3, 2)
    pred_mat, gt_mat = np.isin(pred, labels).astype(int), np.isin(truth, labels).astype(int)
    gt_cc = ndimage.label(gt_mat, structure=cube26)[0]
    pred_cc = ndimage.label(pred_mat, structure=cube26)[0]
    dilated_cc = ndimage.label(ndimage.binary_dilation(gt_mat, structure=element), structure=cube26)[0]
    combined = np.zeros_like(dilated_cc)
    for comp in range(1, dilated_cc.max() + 1):
        tmp = (dilated_cc == comp).astype(int) * gt_cc
        combined += np.where(tmp > 0, comp, 0)
    tp_components: list[int] = []
    rows = []  # (matched components, volume, dice, hd95)
    for comp in range(1, combined.max() + 1):
        gt_tmp = (combined == comp).astype(int)
        gt_tmp_dilation = ndimage.binary_dilation(gt_tmp, structure=element)
        hits = np.unique(pred_cc * gt_tmp_dilation)
        hits = hits[hits != 0]
        tp_components.extend(int(h) for h in hits)
        pred_tmp = np.isin(pred_cc, hits).astype(int)
        dice = 2.0 * np.logical_and(pred_tmp, gt_tmp).sum() / (pred_tmp.sum() + gt_tmp.sum())
        distance = hd95(pred_tmp > 0, gt_tmp > 0, spacing) if pred_tmp.any() else math.inf
        rows.append((len(hits), gt_tmp.sum() * float(np.prod(spacing)), dice, distance))
    fp = np.unique(pred_cc[~np.isin(pred_cc, [*tp_components, 0])])
    kept = [(n, v, d, 374.0 if math.isinf(h) else h) for n, v, d, h in rows if v > 2]
    denominator = len(kept) + len(fp)
    return {
        "lesion_dice": sum(d for _, _, d, _ in kept) / denominator if denominator else 1.0,
        "lesion_hd95": (sum(h for *_, h in kept) + 374 * len(fp)) / denominator if denominator else 0.0,
        "n_detected": sum(1 for n, *_ in kept if n > 0),
        "n_missed": sum(1 for n, *_ in kept if n == 0),
        "n_fp": len(fp),
        "n_gt": len(kept),
    }


@pytest.mark.parametrize("seed", range(40))
def test_brats2023_matches_the_reference_steps(seed: int):
    rng = np.random.default_rng(seed)
    pred, truth = random_study(rng)
    spacing = SPACINGS[seed % len(SPACINGS)]
    for group, labels in {"ET": (3,), "TC": (1, 3), "WT": (1, 2, 3)}.items():
        expected = brats2023_oracle(pred, truth, spacing, labels)
        got = lesion_wise(pred, truth, spacing, "brats2023", group)
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=1e-9), (group, key)


def panoptica_mets_evaluator():
    """The evaluator of brats-evaluation's ``config_mets.yaml``, built with panoptica's API."""
    from panoptica import (
        ConnectedComponentsInstanceApproximator,
        InputType,
        MaxBipartiteMatching,
        Metric,
        Panoptica_Evaluator,
    )
    from panoptica.utils.edge_case_handling import (
        EdgeCaseHandler,
        EdgeCaseResult,
        MetricZeroTPEdgeCaseHandling,
    )
    from panoptica.utils.label_group import LabelGroup, LabelMergeGroup
    from panoptica.utils.segmentation_class import SegmentationClassGroups

    def zero_tp(result):
        return MetricZeroTPEdgeCaseHandling(
            empty_prediction_result=result,
            empty_reference_result=result,
            no_instances_result=EdgeCaseResult.NAN,
            normal=result,
        )

    zero, inf = EdgeCaseResult.ZERO, EdgeCaseResult.INF
    handling = {Metric.DSC: zero_tp(zero), Metric.NSD: zero_tp(zero), Metric.HD95: zero_tp(inf)}
    groups = {
        "ET": LabelGroup([3]),
        "RC": LabelGroup([4]),
        "TC": LabelMergeGroup([1, 3]),
        "WT": LabelMergeGroup([1, 2, 3]),
    }
    return Panoptica_Evaluator(
        expected_input=InputType.SEMANTIC,
        instance_approximator=ConnectedComponentsInstanceApproximator(),
        instance_matcher=MaxBipartiteMatching(matching_metric=Metric.DSC, matching_threshold=0.000001),
        edge_case_handler=EdgeCaseHandler(listmetric_zeroTP_handling=handling),
        segmentation_class_groups=SegmentationClassGroups(groups),
        instance_metrics=[Metric.DSC, Metric.NSD, Metric.HD95],
        global_metrics=[Metric.DSC],
    )


def parse_mets(region: dict, vol_threshold: float = 20.0, overlap_threshold: float = 0.1) -> dict:
    """The per-region steps of brats-evaluation's ``parse_mets_results`` on ``to_dict(True)``."""
    dsc, nsd, hd, detected, large_present = [], [], [], 0, False
    for lesion in region.get("reference_instances", []):
        large = lesion["volume"] >= vol_threshold
        large_present |= large
        if lesion["is_matched"] == 1:
            detected += lesion["sq_dsc"] >= overlap_threshold
            if large:
                dsc.append(lesion["sq_dsc"])
                nsd.append(lesion["sq_nsd"])
                hd.append(lesion["sq_hd95"])
        elif large:
            dsc.append(0)
            nsd.append(0)
            hd.append(373)
    n_fp = region.get("fp", 0)
    dsc, nsd, hd = dsc + [0] * n_fp, nsd + [0] * n_fp, hd + [373] * n_fp
    scored = region.get("n_ref_instances", 0) > 0 and large_present
    finite_hd = [v for v in hd if not np.isinf(v)]
    return {
        "lesion_dice": float(np.mean(dsc)) if scored else math.nan,
        "lesion_nsd": float(np.mean(nsd)) if scored else math.nan,
        "lesion_hd95": (float(np.mean(finite_hd)) if finite_hd else 373.0) if scored else math.nan,
        "n_detected": int(detected),
        "n_fp": int(n_fp),
        "n_gt": len(region.get("reference_instances", [])),
    }


def test_brats2025_matches_panoptica():
    """40 seeded studies scored by panoptica with brats-evaluation's METS settings, and by bmseg.

    panoptica 2.1.7 pins numpy < 2.3, pandas < 3 and rich < 14, below this project's lock, so it is not a
    dependency: run this with ``pip install --no-deps panoptica==2.1.7`` in a scratch environment.
    brats-evaluation itself pins pandas < 3 and needs SimpleITK; its parsing step is re-done here.
    """
    pytest.importorskip("panoptica", reason="panoptica not installed (its pins conflict with the lock)")
    from panoptica import disable_citation_reminder

    disable_citation_reminder()
    for seed in range(40):
        check_against_panoptica(seed)


def check_against_panoptica(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    pred, truth = random_study(rng)
    spacing = SPACINGS[seed % len(SPACINGS)]
    results = panoptica_mets_evaluator().evaluate(pred, truth, voxelspacing=spacing, verbose=False)
    for group, result in results.items():
        region = result.to_dict(True)
        expected = parse_mets(region)
        got = lesion_wise(pred, truth, spacing, "brats2025", group.upper())
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=1e-6, nan_ok=True), (seed, group, key)
        matched = sorted(
            (round(row["volume"], 6), row["sq_dsc"], row["sq_hd95"], row["sq_nsd"])
            for row in region.get("reference_instances", [])
            if row["is_matched"] == 1
        )
        ours = sorted(
            (round(row["volume_mm3"], 6), row["dice"], row["hd95"], row["nsd"])
            for row in got["lesions"]
            if row["matched"] is not None
        )
        assert np.allclose(np.array(ours, dtype=float), np.array(matched, dtype=float), atol=1e-6), (
            seed,
            group,
        )
