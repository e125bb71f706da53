"""``bmseg evaluate`` prints both BraTS conventions, the 95 % intervals and the patient and lesion counts."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
from typer.testing import CliRunner

import bmcore.evaluation.evaluate as evaluate_module
import bmcore.inference as inference
from bmcore import metrics
from bmcore.cli import app
from bmcore.cli import evaluate as evaluate_cli


def scored_cases() -> list[dict]:
    cases = []
    for index in range(4):
        truth = np.zeros((12, 12, 12), dtype=np.int64)
        truth[2:6, 2:6, 2:6] = 3
        pred = truth.copy()
        pred[2 : 2 + index, 2:6, 2:6] = 0
        case = metrics.evaluate_case(pred, truth, (1.0, 1.0, 1.0))
        cases.append(case | {"study_id": f"s{index}", "patient_id": f"p{index % 3}"})
    return cases


def test_evaluate_prints_conventions_intervals_and_counts(monkeypatch, tmp_path):
    cases = scored_cases()
    summary = metrics.summarize_cases(cases)
    monkeypatch.setattr(evaluate_cli, "find_studies", lambda data: [])
    monkeypatch.setattr(inference, "load_predictor", lambda model, device: SimpleNamespace(arch="unet"))
    monkeypatch.setattr(
        evaluate_module,
        "evaluate_studies",
        lambda *args, **kwargs: {"summary": summary, "cases": cases, "skipped": []},
    )
    out = tmp_path / "metrics.json"
    shown = CliRunner().invoke(
        app,
        ["evaluate", "--model", "m.pt", "--data", str(tmp_path), "-o", str(out)],
        env={"COLUMNS": "250", "NO_COLOR": "1"},
    )
    assert shown.exit_code == 0, shown.output
    text = shown.output
    for convention in ("brats2023", "brats2025"):
        low, high = summary[f"{convention}_lesion_dice_TC_ci95"]
        value = summary[f"{convention}_lesion_dice_TC"]
        assert f"lesion-wise Dice TC ({convention})" in text
        assert f"{value:.4f} [{low:.4f}, {high:.4f}]" in text
    low, high = summary["dice_WT_ci95"]
    assert f"{summary['dice_WT']:.4f} [{low:.4f}, {high:.4f}]" in text
    assert "4 studies, 3 patients, 4 TC lesions (brats2025)" in text
    assert "percentile bootstrap over patients" in text
    written = json.loads(out.read_text())["summary"]
    assert written["brats2025_lesion_dice_TC_ci95"] == summary["brats2025_lesion_dice_TC_ci95"]
    assert written["patients"] == 3 and written["lesions"] == 4
