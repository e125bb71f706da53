"""Tests of bmcore.metrics.uncertainty: the 95 % bootstrap interval over patients, and the summary's
counts and intervals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bmcore import metrics
from bmcore.evaluation.headline import headline_caption, headline_rows
from bmcore.metrics.uncertainty import bootstrap_interval, summary_uncertainty


def one_study_each(values) -> list[str]:
    return [f"p{i}" for i in range(len(values))]


def test_interval_contains_the_mean():
    values = np.random.default_rng(1).uniform(0.4, 0.9, size=20)
    low, high = bootstrap_interval(values, one_study_each(values))
    assert low < values.mean() < high


def test_interval_shrinks_with_more_patients():
    rng = np.random.default_rng(2)
    few, many = rng.uniform(0, 1, size=10), rng.uniform(0, 1, size=200)
    few_low, few_high = bootstrap_interval(few, one_study_each(few))
    many_low, many_high = bootstrap_interval(many, one_study_each(many))
    assert many_high - many_low < (few_high - few_low) / 2


def test_interval_is_fixed_by_the_seed():
    values = np.random.default_rng(3).uniform(0, 1, size=12)
    patients = one_study_each(values)
    assert bootstrap_interval(values, patients) == bootstrap_interval(values, patients)
    assert bootstrap_interval(values, patients, seed=1) == bootstrap_interval(values, patients, seed=1)
    assert bootstrap_interval(values, patients, seed=1) != bootstrap_interval(values, patients, seed=2)


def test_interval_resamples_patients_not_studies():
    # patient a has five studies scoring 1, patients b..e one study each scoring 0
    values = [1.0] * 5 + [0.0] * 4
    patients = ["a"] * 5 + ["b", "c", "d", "e"]
    by_patient = bootstrap_interval(values, patients)
    by_study = bootstrap_interval(values, one_study_each(values))
    assert by_patient != by_study
    # drawn by patient, a sample without patient a scores 0: (4/5)^5 = 33 % of samples, so the
    # lower 2.5 % bound is 0; drawn by study, a sample of 9 studies without any of the five is rare
    assert by_patient[0] == 0.0 and by_study[0] > 0.0
    # the mean over studies is inside both
    assert by_patient[0] <= 5 / 9 <= by_patient[1]


def test_interval_skips_undefined_studies_and_needs_two_patients():
    assert bootstrap_interval([0.5, None, float("nan")], ["a", "b", "c"]) is None  # one patient left
    assert bootstrap_interval([0.5, 0.7], ["a", "a"]) is None
    assert bootstrap_interval([], []) is None
    low, high = bootstrap_interval([0.2, None, 0.8, 0.5], ["a", "b", "c", "d"])
    assert 0.2 - 1e-12 <= low <= 0.5 <= high <= 0.8 + 1e-12
    with pytest.raises(ValueError):
        bootstrap_interval([0.5], ["a", "b"])


def test_summary_uncertainty_counts_patients_and_lesions():
    cases = [
        {"patient_id": "a", "study_id": "a-1", "dice_TC": 0.9, "n": 2},
        {"patient_id": "a", "study_id": "a-2", "dice_TC": 0.8, "n": 1},
        {"patient_id": "b", "study_id": "b-1", "dice_TC": 0.1, "n": 3},
        {"study_id": "c-1", "dice_TC": 0.5, "n": 0},  # no patient id: its own patient
    ]
    result = summary_uncertainty(cases, ["dice_TC", "absent"], "n")
    assert (result["patients"], result["lesions"]) == (3, 6)
    assert result["dice_TC_ci95"] == bootstrap_interval([0.9, 0.8, 0.1, 0.5], ["a", "a", "b", "c-1"])
    assert "absent_ci95" not in result
    assert summary_uncertainty(cases[:1], ["dice_TC"], "missing")["lesions"] is None


def test_summary_and_table_carry_intervals_and_counts():
    rng = np.random.default_rng(4)
    cases = []
    for index in range(6):
        truth = np.zeros((12, 12, 12), dtype=np.int64)
        truth[2:6, 2:6, 2:6] = 3
        truth[7:10, 7:10, 7:10] = 1
        pred = truth.copy()
        pred[2 : 2 + int(rng.integers(1, 4)), 2:6, 2:6] = 0  # an uneven under-segmentation
        case = metrics.evaluate_case(pred, truth, (1.0, 1.0, 1.0))
        case |= {"patient_id": f"p{index // 2}", "study_id": f"s{index}"}  # 3 patients, 2 studies each
        cases.append(case)
    summary = metrics.summarize_cases(cases)
    assert (summary["patients"], summary["n_studies"]) == (3, 6)
    assert summary["lesions"] == sum(case["brats2025_n_gt_TC"] for case in cases) == 12
    patients = [case["patient_id"] for case in cases]
    for key in ("brats2025_lesion_dice_TC", "brats2023_lesion_dice_TC", "dice_ET", "dice_TC", "dice_WT"):
        low, high = summary[f"{key}_ci95"]
        assert low <= summary[key] <= high, key
        assert [low, high] == bootstrap_interval([case[key] for case in cases], patients)
    assert json.loads(json.dumps(summary)) == summary
    rows = {label: value for label, value, _ in headline_rows(summary)}
    low, high = summary["brats2025_lesion_dice_TC_ci95"]
    assert rows["lesion-wise Dice TC (brats2025)"] == (
        f"{summary['brats2025_lesion_dice_TC']:.4f} [{low:.4f}, {high:.4f}]"
    )
    assert rows["false-positive lesions / study"] == f"{summary['fp_per_study_TC']:.4f}"  # no interval
    caption = headline_caption(summary)
    assert "6 studies, 3 patients, 12 TC lesions" in caption
    assert "percentile bootstrap over patients" in caption
