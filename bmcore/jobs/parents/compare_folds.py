"""``bmseg compare --folds K``: U-Net, CNN and FCN as K-fold cross-validation by patient, run here.

The folds are the queued cross-validation job's (:func:`bmcore.jobs.parents.folds.crossval_splits`: fold
i tests on patient group i, validates on group i + 1, trains on the rest), each fold is one
:func:`bmcore.experiments.compare.run_comparison` on that explicit split (every model the same patients),
and each model's summary is the job's (:func:`bmcore.jobs.parents.aggregate.crossval_summary`: the
per-fold figures, mean ± std over the folds, and the out-of-fold metrics over every test fold pooled,
with their 95 % bootstrap intervals over patients).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bmcore import imaging
from bmcore.evaluation.headline import format_with_interval, headline_caption
from bmcore.experiments.compare import recipe_line, run_comparison
from bmcore.jobs.parents.aggregate import crossval_markdown, crossval_summary, numeric_figures
from bmcore.jobs.parents.folds import crossval_splits
from bmcore.reports.tables import markdown_table
from bmcore.training.config import TrainConfig

OOF_FIGURES = (  # the comparison table: out-of-fold figures, each with its interval
    ("brats2025_lesion_dice_TC", "lesion-wise Dice TC (brats2025)"),
    ("brats2023_lesion_dice_TC", "lesion-wise Dice TC (brats2023)"),
    ("dice_TC", "Dice TC"),
    ("dice_WT", "Dice WT"),
    ("brats2025_detection_sensitivity_TC", "lesions detected (brats2025)"),
    ("fp_per_study_TC", "false-positive lesions / study"),
)


def fold_record(split: Mapping[str, Any], model: Mapping[str, Any]) -> dict[str, Any]:
    """One fold of one model as a cross-validation child's record (what ``crossval_summary`` reads)."""
    figures = {f"test_{k}": v for k, v in numeric_figures(model["test"] or {}).items()}
    validation = numeric_figures(model.get("validation") or {})
    if "lesion_dice" in validation:
        figures["val_lesion_dice"] = validation["lesion_dice"]
    return {
        "params": {"fold": split["fold"]},
        "job_id": f"fold-{split['fold']}",
        "status": "succeeded",
        "split": split,
        "metrics": figures,
        "artifacts": {"test_cases": model["test_cases"]},
    }


def run_fold_comparison(
    data_dir: str | Path,
    out_dir: str | Path,
    config: TrainConfig,
    archs: Sequence[str],
    folds: int,
    seed: int = 0,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Every fold's comparison under ``out_dir/fold<i>/``, then ``report.md`` and ``report.json``."""
    out_dir = Path(out_dir)
    labelled = [ref for ref in imaging.find_studies(data_dir) if ref.label is not None]
    splits = crossval_splits(labelled, folds, seed)
    records: dict[str, list[dict[str, Any]]] = {arch: [] for arch in archs}
    for split in splits:
        sides = ", ".join(f"{side} {len(p)}" for side, p in split["patients"].items())
        echo(f"fold {split['fold'] + 1}/{folds}: {sides} patients")
        report = run_comparison(data_dir, out_dir / f"fold{split['fold']}", config, archs, split=split)
        for arch in archs:
            records[arch].append(fold_record(split, report["models"][arch]))
    summaries = {arch: crossval_summary(rows) for arch, rows in records.items()}
    result = {"data": str(data_dir), "folds": folds, "seed": seed, "config": config.to_dict()}
    result["summaries"] = summaries
    (out_dir / "report.json").write_text(json.dumps(result, indent=1, default=str))
    (out_dir / "report.md").write_text(folds_markdown(result))
    return result


def folds_markdown(result: Mapping[str, Any]) -> str:
    """The out-of-fold table (one column per model), then each model's per-fold table."""
    summaries = result["summaries"]
    archs = list(summaries)
    rows = [
        [label, *[format_with_interval(summaries[a]["oof"] or {}, key) for a in archs]]
        for key, label in OOF_FIGURES
    ]
    first = summaries[archs[0]]["oof"] or {}
    lines = [
        f"# U-Net vs CNN vs FCN: {result['folds']}-fold cross-validation by patient",
        "",
        f"Data: `{result['data']}`; recipe: {recipe_line(result['config'])}.",
        "",
        "## Out of fold: every test fold pooled",
        "",
        markdown_table(["figure", *archs], rows),
        "",
        f"Scored: {headline_caption(first)}.",
        "",
    ]
    for arch in archs:
        lines += [f"## {arch}: per fold", "", crossval_markdown(summaries[arch])]
    return "\n".join(lines)
