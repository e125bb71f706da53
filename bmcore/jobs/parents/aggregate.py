"""What a parent makes of its ended children: the ranked sweep table and the cross-validation summary.

Pure functions of plain records (:func:`child_record`), so they are tested without a worker; the markdown
tables are drawn by :func:`bmcore.reports.tables.markdown_table`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bmcore.db import Job
from bmcore.evaluation.headline import headline_rows
from bmcore.jobs.parent_params import describe
from bmcore.metrics import summarize_cases
from bmcore.reports.tables import markdown_table

RANK_BY = ("val_lesion_dice", "val_loss")
TABLE_FIGURES = ("val_lesion_dice", "val_loss", "val_dice_ET", "val_dice_TC", "val_dice_WT", "best_epoch")


def _number(value: Any) -> float | int | None:
    """A finite number as it is; booleans, text, NaN and infinities as None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return value


def child_record(child: Job, label: dict[str, Any]) -> dict[str, Any]:
    """A child row as the plain record the tables take; ``label`` its searched values or its fold."""
    metrics = dict(child.result.metrics) if child.result is not None else {}
    return {
        "job_id": child.id,
        "status": child.status,
        "params": label,
        "metrics": metrics,
        "reused_from": metrics.get("reused_from"),
        "artifacts": dict(child.result.artifacts) if child.result is not None else {},
        "error": child.error,
        "split": child.params.get("split"),
    }


def rank_children(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The ranked table: succeeded children by ``val_lesion_dice`` (higher first; missing last), then
    ``val_loss`` (lower first); then the others in their order, unranked. Pure: takes plain records
    ``{"job_id", "status", "params", "metrics", "reused_from", "error"}``."""
    rows = []
    for record in records:
        metrics = record.get("metrics") or {}
        row = {
            "rank": None,
            "job_id": record["job_id"],
            "status": record["status"],
            "reused": bool(record.get("reused_from")),
            "reused_from": record.get("reused_from"),
            "params": dict(record.get("params") or {}),
        }
        row |= {key: _number(metrics.get(key)) for key in TABLE_FIGURES}
        row |= {
            "epochs_run": _number(metrics.get("epochs_run")),
            "run_id": metrics.get("run_id"),
            "registered": metrics.get("registered"),
            "error": record.get("error"),
        }
        rows.append(row)

    def key(row: dict[str, Any]) -> tuple:
        dice, loss = row["val_lesion_dice"], row["val_loss"]
        return (dice is None, -(dice or 0.0), loss is None, loss or 0.0)

    ranked = sorted((r for r in rows if r["status"] == "succeeded"), key=key)
    for rank, row in enumerate(ranked, 1):
        row["rank"] = rank
    return ranked + [r for r in rows if r["status"] != "succeeded"]


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/").replace("\n", " ")


def _markdown(header: list[str], rows: list[list[Any]]) -> str:
    return markdown_table(header, [[_cell(c) for c in row] for row in rows])


def ranking_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    header = [
        "rank",
        "job",
        "status",
        "reused",
        "params",
        "val lesion Dice",
        "val loss",
        "val Dice TC",
        "epochs",
        "error",
    ]
    body = [
        [
            r["rank"],
            str(r["job_id"])[:8],
            r["status"],
            "yes" if r["reused"] else "no",
            describe(r["params"]),
            r["val_lesion_dice"],
            r["val_loss"],
            r["val_dice_TC"],
            r["epochs_run"],
            (r["error"] or "")[:80] or None,
        ]
        for r in rows
    ]
    note = (
        "Ranked by validation lesion-wise Dice, then validation loss; "
        "reused = the result of an identical earlier run."
    )
    return f"{_markdown(header, body)}\n\n{note}\n"


def _finite_or_none(value: Any) -> Any:
    """NaN and infinities as None (PostgreSQL's JSON, and browsers, refuse them)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def numeric_figures(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numeric entries of ``metrics``, as floats."""
    return {key: float(value) for key, value in metrics.items() if _number(value) is not None}


def crossval_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-fold rows, mean ± std (population) over the succeeded folds of every numeric figure, and the
    out-of-fold metrics over every succeeded fold's test cases pooled (``test_cases`` artifacts)."""
    folds, cases, skipped, figures = [], [], [], {}
    for record in records:
        split = record.get("split") or {}
        row = {
            "fold": record["params"].get("fold"),
            "job_id": record["job_id"],
            "status": record["status"],
            "reused": bool(record.get("reused_from")),
            "test_patients": (split.get("patients") or {}).get("test", []),
            "test_studies": (split.get("studies") or {}).get("test", []),
            "figures": numeric_figures(record.get("metrics") or {}),
            "error": record.get("error"),
        }
        folds.append(row)
        if record["status"] != "succeeded":
            continue
        for key, value in row["figures"].items():
            figures.setdefault(key, []).append(value)
        path = (record.get("artifacts") or {}).get("test_cases")
        if path and Path(path).is_file():
            scored = json.loads(Path(path).read_text())
            cases.extend(scored.get("cases", []))
            skipped.extend(scored.get("skipped", []))
    mean = {key: sum(values) / len(values) for key, values in figures.items()}
    std = {
        key: math.sqrt(sum((v - mean[key]) ** 2 for v in values) / len(values))
        for key, values in figures.items()
    }
    oof = summarize_cases(cases) if cases else None
    tested = [study for row in folds for study in row["test_studies"]]
    return {
        "folds": folds,
        "mean": mean,
        "std": std,
        "n_folds": len(folds),
        "folds_succeeded": sum(1 for row in folds if row["status"] == "succeeded"),
        "oof": {key: _finite_or_none(value) for key, value in oof.items() if key != "confusion"}
        if oof
        else None,
        "oof_confusion": oof["confusion"] if oof else None,
        "oof_studies": len(cases),
        "oof_skipped": skipped,
        "every_study_tested_once": len(tested) == len(set(tested))
        and len(cases) + len(skipped) == len(tested),
    }


def crossval_markdown(summary: Mapping[str, Any]) -> str:
    keys = [
        k
        for k in ("val_lesion_dice", "val_loss", "test_lesion_dice_TC", "test_dice_TC", "test_dice_WT")
        if k in summary["mean"]
    ]
    header = ["fold", "job", "status", "test patients", *keys]
    rows = [
        [
            f["fold"],
            f["job_id"][:8],
            f["status"],
            len(f["test_patients"]),
            *[f["figures"].get(k) for k in keys],
        ]
        for f in summary["folds"]
    ]
    rows.append(
        ["mean ± std", "", "", "", *[f"{summary['mean'][k]:.4f} ± {summary['std'][k]:.4f}" for k in keys]]
    )
    text = _markdown(header, rows)
    if summary["oof"]:
        text += "\n\nOut-of-fold, every test fold pooled "
        text += f"({summary['oof_studies']} studies):\n\n"
        text += _markdown(["figure", "value", "convention"], [list(r) for r in headline_rows(summary["oof"])])
    return text + "\n"
