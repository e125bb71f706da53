"""The job result page shows the headline first: real evaluate, train-test and segment results (run by
bmcore's own job runner on a synthetic cohort with a tiny model), read back from the page and compared with
what the job's artifacts say; the full list of figures stays, collapsed, and the JSON is unchanged."""

from __future__ import annotations

import csv
import json
import re
from html import unescape
from pathlib import Path
from types import SimpleNamespace

import pytest

from bmcore.db import Job
from bmcore.jobs.lifecycle import finish_job, record_result, submit_job

HEADLINE_CONVENTION = "BraTS-METS 2023 lesion-wise, mean over studies"  # the headline table's name for it
BINS = {"lt3mm": "&lt; 3 mm", "3to6mm": "3–6 mm", "6to10mm": "6–10 mm", "gt10mm": "&gt; 10 mm"}


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> SimpleNamespace:
    """A three-study synthetic cohort (3-class labels) and a tiny U-Net whose head says 'enhancing tumour'
    everywhere: inside the brain every voxel is ET, so every figure has something to count."""
    torch = pytest.importorskip("torch")
    from bmcore.data.synth import synth_cohort
    from bmcore.models import build_model, save_checkpoint

    root = tmp_path_factory.mktemp("scored")
    synth_cohort(root / "cohort", 3, 5, "brats", shape=(64, 64, 24), spacing=(3.5, 3.5, 6.0), workers=1)
    torch.manual_seed(0)
    model = build_model("unet", base_channels=4, depth=2)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 6.0]))
    checkpoint = root / "tiny-unet.pt"
    save_checkpoint(checkpoint, model, "unet", extra={"preprocess": {"size": 64}})
    return SimpleNamespace(cohort=root / "cohort", checkpoint=checkpoint)


def figure(value) -> str:
    """A figure as the CLI's headline table prints it."""
    if value is None:
        return "n/a"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"


def cells(row_html: str) -> list[str]:
    return [
        unescape(re.sub(r"<[^>]+>", "", cell)).strip()
        for cell in re.findall(r"<td[^>]*>(.*?)</td>", row_html)
    ]


def section(text: str, start: str, end: str) -> str:
    begin = text.index(start)
    return text[begin : text.index(end, begin)]


def rows_of(text: str, table_class: str) -> dict[str, list[str]]:
    """The rows of the first table with ``table_class``, by their data-study (and data-lesion) key."""
    table = section(text, f'<table class="{table_class}', "</table>")
    found = re.findall(r'<tr data-study="([^"]+)"(?: data-lesion="([^"]+)")?>(.*?)</tr>', table, re.S)
    return {f"{study}/{lesion}" if lesion else study: cells(body) for study, lesion, body in found}


def run_evaluate(db_session, owner_id: int, scored) -> Job:
    from bmcore.jobs.runner import run_job

    params = {"model": str(scored.checkpoint), "data": str(scored.cohort)}
    job = submit_job(db_session, "evaluate", params, owner_id=owner_id, send=False)
    assert run_job(job.id) == "succeeded"
    db_session.expire_all()
    return db_session.get(Job, job.id)


def assert_headline(block: str, summary: dict) -> None:
    """The headline block carries the named convention and the summary's figures."""
    assert HEADLINE_CONVENTION in block
    assert f'data-figure="lesion_dice_TC">{figure(summary["lesion_dice_TC"])}' in block
    assert f'data-figure="fp_per_study_TC">{figure(summary["fp_per_study_TC"])}' in block
    for region in ("ET", "TC", "WT"):
        row = re.search(rf'<tr data-figure="dice_{region}">(.*?)</tr>', block, re.S).group(1)
        mean, std = figure(summary[f"dice_{region}"]), figure(summary[f"dice_{region}_std"])
        assert cells(row) == [f"Dice {region}", f"{mean} ± {std}"]
    detection = section(block, '<table class="detection-table', "</table>")
    expected = [["all sizes", str(summary["n_tp_TC"]), str(summary["n_gt_TC"])]]
    expected += [
        [unescape(label), str(summary[f"detected_{name}_TC"]), str(summary[f"total_{name}_TC"])]
        for name, label in BINS.items()
    ]
    got = [cells(row)[:3] for row in re.findall(r"<tr><td>.*?</tr>", detection, re.S)]
    assert got == expected
    sensitivities = [cells(row)[3] for row in re.findall(r"<tr><td>.*?</tr>", detection, re.S)]
    assert sensitivities[0] == figure(summary["detection_sensitivity_TC"])
    assert sensitivities[1:] == [figure(summary[f"detection_sensitivity_{name}_TC"]) for name in BINS]


def assert_study_rows(text: str, cases: list[dict]) -> None:
    expected = {
        case["study_id"]: [
            case["study_id"],
            case["patient_id"],
            *(figure(case[f"dice_{region}"]) for region in ("ET", "TC", "WT")),
            figure(case["lesion_dice_TC"]),
            *(str(case[f"{key}_TC"]) for key in ("n_gt", "n_tp", "n_fn", "n_fp")),
            figure(case["hd95_TC"]),
        ]
        for case in cases
    }
    assert rows_of(text, "study-table") == expected


def assert_lesion_rows(text: str, cases: list[dict]) -> None:
    """Per-lesion rows match the cases' lesion rows, where the artifact keeps them."""
    lesions = [(case["study_id"], lesion) for case in cases for lesion in case.get("lesions_TC", [])]
    if not any("lesions_TC" in case for case in cases):
        assert "list no lesions one by one" in text and "lesion-result-table" not in text
        return
    from bmcore.metrics import diameter_bin

    expected = {
        f"{study}/{lesion['lesion_id']}": [
            study,
            str(lesion["lesion_id"]),
            f"{lesion['volume_ml']:.3f}",
            f"{lesion['diameter_mm']:.1f}",
            unescape(BINS[diameter_bin(lesion["diameter_mm"])]),
            "detected" if lesion["detected"] else "missed",
            figure(lesion["dice"]),
            figure(lesion["hd95"]),
        ]
        for study, lesion in lesions
    }
    assert rows_of(text, "lesion-result-table") == expected


def test_evaluate_result_shows_the_headline_then_studies_then_every_figure(
    signed_in, users, db_session, scored
):
    job = run_evaluate(db_session, users.alice.id, scored)
    artifact = json.loads(Path(job.result.artifacts["metrics"]).read_text())
    summary, cases = artifact["summary"], artifact["cases"]
    assert len(cases) == 3

    text = signed_in.get(f"/jobs/{job.id}").text

    headline = section(text, '<div class="result-set" id="result-set-1">', "</div>\n\n")
    assert (
        "Evaluation" in headline
        and f"{summary['n_studies']} studies, {summary['n_gt_TC']} lesions" in headline
    )
    assert_headline(text[text.index('id="result-set-1"') :], summary)
    assert_study_rows(text, cases)
    assert_lesion_rows(text, cases)
    # Headline, then the per-study table, then every figure, collapsed, then the files.
    order = [
        text.index(s)
        for s in ('data-figure="lesion_dice_TC"', 'class="study-table', "<details", 'id="artifacts"')
    ]
    assert order == sorted(order)
    details = section(text, '<details id="all-metrics">', "</details>")
    assert 'id="metrics-table"' in details and "open" not in details.split(">", 1)[0]
    listed = re.findall(r'<tr><td class="mono">([^<]+)</td>', details)
    assert "lesion_dice_TC" in listed and "detection_sensitivity_6to10mm_ET" in listed and len(listed) > 100
    assert f"{len(listed)} keys" in details
    assert f'href="/jobs/{job.id}/artifacts/metrics?download=1"' in text

    # The JSON is what it was: the result's metrics and the flat table, nothing of the page's view.
    body = signed_in.get(f"/jobs/{job.id}.json").json
    assert set(body["result"]) == {"metrics", "metrics_table", "artifacts"}
    assert body["result"]["metrics"]["lesion_dice_TC"] == pytest.approx(summary["lesion_dice_TC"])
    assert len(body["result"]["metrics_table"]) == len(listed)


@pytest.mark.parametrize("validation_file", [False, True], ids=["figures-only", "validation-json"])
def test_train_result_shows_validation_and_test_headlines(
    signed_in, users, db_session, scored, validation_file
):
    """A train job's result as ``run_train`` records it: the validation figures it keeps and the test
    studies scored by the runner's own ``_score_test_studies`` (``test_*`` figures and test_cases.json).
    With a ``validation`` artifact (the training's ``validation.json``) the validation studies get their
    detection table and per-study rows too."""
    from bmcore import imaging
    from bmcore.evaluation.evaluate import evaluate_studies
    from bmcore.inference import load_predictor
    from bmcore.jobs.runner import _score_test_studies, job_dir

    job = submit_job(db_session, "train", {"data": str(scored.cohort)}, owner_id=users.alice.id, send=False)
    refs = imaging.find_studies(scored.cohort)
    out = job_dir(job.id)
    out.mkdir(parents=True)
    (out / "split.json").write_text(json.dumps({"studies": {"test": [r.study_id for r in refs[1:]]}}))
    validation = evaluate_studies(load_predictor(str(scored.checkpoint), device="cpu"), refs[:1])
    val = validation["summary"]
    metrics = {"best_epoch": 1, "val_lesion_dice": val["lesion_dice_TC"]}
    metrics |= {f"val_dice_{r}": val[f"dice_{r}"] for r in ("ET", "TC", "WT")}
    summary = {"out_dir": str(out), "checkpoint": str(scored.checkpoint)}
    tested, cases_path = _score_test_studies(
        job.id, scored.cohort, summary, "cpu", lambda *a: None, lambda: False
    )
    artifacts = {"test_cases": cases_path}
    if validation_file:
        (out / "validation.json").write_text(json.dumps(validation, indent=1))
        artifacts["validation"] = str(out / "validation.json")
    record_result(db_session, job.id, metrics | tested, artifacts)
    finish_job(db_session, job.id, "succeeded")
    test_cases = json.loads(Path(cases_path).read_text())

    text = signed_in.get(f"/jobs/{job.id}").text

    val_block = section(text, 'id="result-set-1"', 'id="result-set-2"')
    assert "Validation studies" in val_block and HEADLINE_CONVENTION in val_block
    assert f'data-figure="lesion_dice_TC">{figure(val["lesion_dice_TC"])}' in val_block
    for region in ("ET", "TC", "WT"):
        assert f'Dice {region}</td><td class="num mono">{figure(val[f"dice_{region}"])}' in val_block
    if validation_file:
        assert_headline(val_block, val)
        assert_study_rows(val_block, validation["cases"])
    else:
        assert "detection-table" not in val_block and "study-table" not in val_block
    test_block = text[text.index('id="result-set-2"') :]
    assert "Test studies" in test_block and "2 studies" in test_block
    assert_headline(test_block, test_cases["summary"])
    assert_study_rows(test_block, test_cases["cases"])
    assert_lesion_rows(test_block, test_cases["cases"])
    assert text.index('id="result-set-2"') < text.index("<details")


def test_segment_result_lists_the_lesions_of_each_study(signed_in, users, db_session, stored_study, scored):
    from bmcore.jobs.runner import run_job
    from bmcore.metrics import diameter_bin

    params = {"model": str(scored.checkpoint)}
    job = submit_job(
        db_session, "segment", params, owner_id=users.alice.id, study_id=stored_study["id"], send=False
    )
    assert run_job(job.id) == "succeeded"
    db_session.expire_all()
    result = db_session.get(Job, job.id).result
    with Path(result.artifacts["S001_lesions"]).open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert table, "the tiny model finds at least one lesion"

    text = signed_in.get(f"/jobs/{job.id}").text

    block = section(text, '<div class="result-set" id="segmented-1">', "</table>")
    assert 'Lesions of <span class="mono">S001</span>' in block
    got = {row[0]: row for row in (cells(r) for r in re.findall(r"<tr data-lesion=.*?</tr>", block, re.S))}
    expected = {
        row["lesion_id"]: [
            row["lesion_id"],
            f"{float(row['volume_ml']):.3f}",
            f"{float(row['diameter_mm']):.1f}",
            unescape(BINS[diameter_bin(float(row["diameter_mm"]))]),
            row["voxels"],
            " ".join({"1": "NETC", "2": "SNFH", "3": "ET"}[v] for v in row["labels"].split(";")),
            ", ".join(row[f"centroid_{axis}_mm"] for axis in "xyz"),
        ]
        for row in table
    }
    assert {key: [cell.replace("  ", " ") for cell in value] for key, value in got.items()} == expected
    assert text.index('id="segmented-1"') < text.index("<details")
