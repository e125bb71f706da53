"""``bmseg compare --folds K``: the models as K-fold cross-validation by patient, with the queued
cross-validation job's folds and summary (every study tested once, mean ± std, out-of-fold metrics)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bmcore import imaging
from bmcore.cli import app
from bmcore.data.synth import synth_cohort
from bmcore.jobs.parents.folds import crossval_splits

TINY = ["--epochs", "1", "--samples-per-epoch", "16", "--batch-size", "8", "--base-channels", "4"]
TINY += ["--depth", "2", "--crop", "32", "--num-workers", "0", "--device", "cpu", "--no-tta"]


@pytest.fixture(scope="module")
def six_patients(tmp_path_factory):
    root = tmp_path_factory.mktemp("folds") / "cohort"
    synth_cohort(root, 7, 3, "brats", shape=(48, 48, 12), spacing=(4.0, 4.0, 8.0), workers=1)
    return root


@pytest.mark.slow
def test_compare_folds_tests_every_patient_once_with_the_crossval_jobs_folds(six_patients, tmp_path):
    out = tmp_path / "compare"
    args = ["compare", "--data", str(six_patients), "-o", str(out), "--folds", "2", "--archs", "unet,fcn"]
    result = CliRunner().invoke(app, [*args, *TINY], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    refs = [ref for ref in imaging.find_studies(six_patients) if ref.label is not None]
    expected = crossval_splits(refs, 2, 0)
    for arch in ("unet", "fcn"):
        summary = report["summaries"][arch]
        assert summary["n_folds"] == summary["folds_succeeded"] == 2
        assert [f["test_studies"] for f in summary["folds"]] == [s["studies"]["test"] for s in expected]
        assert summary["every_study_tested_once"] and summary["oof_studies"] == len(refs)
        assert set(summary["mean"]) == set(summary["std"]) and "test_dice_WT" in summary["mean"]
        assert summary["oof"]["n_studies"] == len(refs)
    for fold in (0, 1):  # each fold trained on its own split, as the job's child would
        split = json.loads((out / f"fold{fold}" / "unet" / "split.json").read_text())
        assert split["patients"] == expected[fold]["patients"]
    text = (out / "report.md").read_text()
    assert "2-fold cross-validation by patient" in text and "mean ± std" in text
    assert "lesion-wise Dice TC (brats2025)" in text and "recipe: `bmseg`" in text
    assert text in result.output


def test_compare_refuses_a_single_fold(six_patients, tmp_path):
    result = CliRunner().invoke(app, ["compare", "--data", str(six_patients), "--folds", "1", *TINY])
    assert result.exit_code == 2 and "at least 2 folds" in result.output
