"""What a job's result page shows before its full list of figures; torch-free.

- **Headline** of every scored set (an evaluate job's studies, a train job's validation and test studies,
  a cross-validation's pooled out-of-fold studies): lesion-wise Dice TC under its named convention
  (:data:`bmcore.evaluation.headline.HEADLINE`, the table ``bmseg evaluate`` prints), detection by lesion
  size, false-positive lesions per study, Dice ET / TC / WT, with the counts of studies and lesions.
- **Per study**: one row per scored study, from the job's per-case artifact (an evaluate job's
  ``metrics.json``, a train job's ``test_cases.json`` or ``validation.json``: the ``cases`` of
  :func:`bmcore.evaluation.evaluate.evaluate_studies`).
- **Per lesion** (size, detected or not, Dice), where the cases hold lesion rows (``lesions_TC``).
- A segment job: its lesion table per study (the rows of ``<study>_lesions.csv``, kept in its result).

Figures are formatted as the CLI's table formats them (:func:`bmcore.evaluation.headline.format_value`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bmcore.db import Job
from bmcore.evaluation.headline import HEADLINE, format_value
from bmcore.metrics import DIAMETER_BIN_NAMES, LABELS, diameter_bin
from services.web.access import artifact_file
from services.web.common import WebError

REGION = "TC"  # the headline region: a lesion is a tumour-core component
DICE_REGIONS = ("ET", "TC", "WT")
CONVENTIONS = {key: (label, convention) for key, label, convention in HEADLINE}
LESION_RULES = (
    "lesions are 26-connected tumour-core components; ground-truth lesions of 2 voxels or fewer are "
    "ignored; a lesion is detected when a predicted component touches it dilated by one voxel; each "
    "false-positive component counts as a lesion with Dice 0 (docs/design.md §4)"
)
SIZE_LABELS = {"lt3mm": "< 3 mm", "3to6mm": "3–6 mm", "6to10mm": "6–10 mm", "gt10mm": "> 10 mm"}
MAX_CASES_BYTES = 32 * 1024 * 1024  # a per-case artifact larger than this is left to its download
STUDY_ROWS_SHOWN = 500
LESION_ROWS_SHOWN = 1000
VALIDATION_KEYS = {"val_lesion_dice": "lesion_dice_TC"} | {f"val_dice_{r}": f"dice_{r}" for r in DICE_REGIONS}

Cases = Callable[[str], dict | None]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _fixed(value: float | None, decimals: int) -> str:
    return "n/a" if value is None else f"{value:.{decimals}f}"


def _count(summary: Mapping[str, Any], key: str) -> int | None:
    value = _number(summary.get(key))
    return None if value is None else int(value)


def _detection(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Detection rows, all sizes then each diameter bin: detected, total, sensitivity (pooled counts)."""
    if f"n_gt_{REGION}" not in summary:
        return []
    rows = [("all sizes", "n_tp", "n_gt", f"detection_sensitivity_{REGION}")]
    rows += [
        (SIZE_LABELS[name], f"detected_{name}", f"total_{name}", f"detection_sensitivity_{name}_{REGION}")
        for name in DIAMETER_BIN_NAMES
    ]
    return [
        {
            "size": size,
            "detected": _count(summary, f"{detected}_{REGION}"),
            "total": _count(summary, f"{total}_{REGION}"),
            "sensitivity": format_value(_number(summary.get(sensitivity))),
        }
        for size, detected, total, sensitivity in rows
    ]


def headline(summary: Mapping[str, Any], title: str) -> dict[str, Any] | None:
    """The headline block of one scored set (a :func:`bmcore.metrics.summarize_cases` summary, or the
    part of it a result keeps), or None without lesion-wise Dice TC."""
    key = f"lesion_dice_{REGION}"
    if key not in summary:
        return None
    std = _number(summary.get(f"{key}_std"))
    return {
        "title": title,
        "figure": CONVENTIONS[key][0],
        "convention": CONVENTIONS[key][1],
        "rules": LESION_RULES,
        "lesion_dice": format_value(_number(summary.get(key))),
        "lesion_dice_std": format_value(std) if std is not None else None,
        "studies": _count(summary, "n_studies"),
        "lesions": _count(summary, f"n_gt_{REGION}"),
        "detection": _detection(summary),
        "detection_convention": CONVENTIONS[f"detection_sensitivity_{REGION}"][1],
        "fp_per_study": format_value(_number(summary.get(f"fp_per_study_{REGION}")))
        if f"fp_per_study_{REGION}" in summary
        else None,
        "false_positives": _count(summary, f"n_fp_{REGION}"),
        "dice": [
            {
                "region": region,
                "mean": format_value(_number(summary.get(f"dice_{region}"))),
                "std": format_value(_number(summary[f"dice_{region}_std"]))
                if f"dice_{region}_std" in summary
                else None,
            }
            for region in DICE_REGIONS
            if f"dice_{region}" in summary
        ],
        "dice_convention": CONVENTIONS["dice_ET"][1],
    }


def study_rows(cases: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per scored study: Dice ET / TC / WT, lesion-wise Dice TC, lesions, detected, FP, HD95 TC."""
    rows = []
    for case in cases:
        row: dict[str, Any] = {"study_id": case.get("study_id"), "patient_id": case.get("patient_id")}
        for region in DICE_REGIONS:
            row[f"dice_{region}"] = format_value(_number(case.get(f"dice_{region}")))
        row["lesion_dice"] = format_value(_number(case.get(f"lesion_dice_{REGION}")))
        for key in ("n_gt", "n_tp", "n_fn", "n_fp"):
            row[key] = _count(case, f"{key}_{REGION}")
        row["hd95"] = format_value(_number(case.get(f"hd95_{REGION}")))
        rows.append(row)
    return rows


def lesion_rows(cases: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per ground-truth lesion of every study (where the cases hold ``lesions_TC``): its size,
    size bin, whether it was detected and its Dice (and HD95)."""
    rows = []
    for case in cases:
        for lesion in case.get(f"lesions_{REGION}") or []:
            diameter = _number(lesion.get("diameter_mm"))
            rows.append(
                {
                    "study_id": case.get("study_id"),
                    "lesion_id": lesion.get("lesion_id"),
                    "voxels": lesion.get("voxels"),
                    "volume_ml": _fixed(_number(lesion.get("volume_ml")), 3),
                    "diameter_mm": _fixed(diameter, 1),
                    "size": _size(diameter),
                    "detected": bool(lesion.get("detected")),
                    "dice": format_value(_number(lesion.get("dice"))),
                    "hd95": format_value(_number(lesion.get("hd95"))),
                }
            )
    return rows


def scored_set(title: str, summary: Mapping[str, Any], cases: dict | None, source: str | None) -> dict:
    """A headline with its per-study and per-lesion tables (``cases``: an evaluate_studies output)."""
    listed = list((cases or {}).get("cases") or [])
    studies, lesions = study_rows(listed), lesion_rows(listed)
    return {
        "headline": headline(summary, title),
        "source": source if cases else None,
        "note": (cases or {}).get("error"),
        "studies": studies[:STUDY_ROWS_SHOWN],
        "studies_total": len(studies),
        "lesions": lesions[:LESION_ROWS_SHOWN],
        "lesions_total": len(lesions),
        "has_lesion_rows": any(f"lesions_{REGION}" in case for case in listed),
        "skipped": list((cases or {}).get("skipped") or []),
    }


def _size(diameter: float | None) -> str:
    return SIZE_LABELS[diameter_bin(diameter)] if diameter is not None and diameter >= 0 else "n/a"


def segmented_lesion(lesion: Mapping[str, Any]) -> dict[str, Any]:
    """A row of a segment job's lesion table, formatted as the study page formats it."""
    diameter = _number(lesion.get("diameter_mm"))
    centre = [_number(lesion.get(f"centroid_{axis}_mm")) for axis in "xyz"]
    return {
        "lesion_id": lesion.get("lesion_id"),
        "volume_ml": _fixed(_number(lesion.get("volume_ml")), 3),
        "diameter_mm": _fixed(diameter, 1),
        "size": _size(diameter),
        "voxels": lesion.get("voxels", "n/a"),
        "label_names": [
            LABELS.get(int(v), v) for v in str(lesion.get("labels") or "").split(";") if v.isdigit()
        ],
        "centre": ", ".join(str(c) for c in centre) if None not in centre else "–",
    }


def segmented_studies(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A segment job's lesion table per study, from its result (the rows of ``<study>_lesions.csv``)."""
    studies = []
    for study_id, study in (metrics.get("studies") or {}).items():
        study = study if isinstance(study, Mapping) else {}
        lesions = [segmented_lesion(row) for row in study.get("lesions") or [] if isinstance(row, Mapping)]
        studies.append(
            {"study_id": study_id, "lesions": lesions, "label_voxels": study.get("label_voxels") or {}}
        )
    return studies


def _reader(job: Job, results_dir: Path) -> Cases:
    """``read(name)``: the JSON of the job's artifact ``name``, None when it has none; a note (``error``)
    when it cannot be read or is too large to show."""

    def read(name: str) -> dict | None:
        try:
            path = artifact_file(job, name, results_dir)
        except WebError:
            return None
        if path.stat().st_size > MAX_CASES_BYTES:
            return {"error": f"{path.name} is too large to show here; download it below"}
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            return {"error": f"{path.name} could not be read"}
        return data if isinstance(data, dict) else {"error": f"{path.name} holds no per-study results"}

    return read


def _sets(job_type: str, metrics: Mapping[str, Any], read: Cases) -> list[dict]:
    if job_type == "evaluate":
        return [scored_set("Evaluation", metrics, read("metrics"), "metrics")]
    if job_type == "train":
        validation = read("validation")
        summary = (validation or {}).get("summary") or {
            VALIDATION_KEYS[key]: value for key, value in metrics.items() if key in VALIDATION_KEYS
        }
        sets = [scored_set("Validation studies", summary, validation, "validation" if validation else None)]
        tested = {key[5:]: value for key, value in metrics.items() if key.startswith("test_")}
        if tested:
            sets.append(scored_set("Test studies", tested, read("test_cases"), "test_cases"))
        return sets
    if job_type == "crossval" and isinstance(metrics.get("oof"), Mapping):
        title = f"Out-of-fold: every fold's test studies pooled ({metrics.get('oof_studies', 0)} studies)"
        return [scored_set(title, metrics["oof"], None, None)]
    return []


def job_result_view(job: Job, results_dir: Path) -> dict[str, Any] | None:
    """The readable part of a finished job's result page, or None before the job has a result."""
    if job.result is None:
        return None
    metrics = job.result.metrics or {}
    return {
        "sets": [s for s in _sets(job.type, metrics, _reader(job, results_dir)) if s["headline"] is not None],
        "segmented": segmented_studies(metrics) if job.type == "segment" else [],
        "warnings": [f"Registered version: {w}" for w in registered_warnings(metrics)]
        + [f"Model: {w}" for w in model_warnings_of(metrics)],
    }


def registered_warnings(metrics: Mapping[str, Any]) -> list[str]:
    """The warnings of the version a train job registered (trained on synthetic data, a validation set too
    small to promote on), as :func:`bmcore.experiments.tracked.tracked_train` listed them."""
    registered = metrics.get("registered")
    if not isinstance(registered, Mapping):
        return []
    return [str(warning) for warning in registered.get("warnings") or []]


def model_warnings_of(metrics: Mapping[str, Any]) -> list[str]:
    """The warnings of the model a segment job used (trained on synthetic data, …), as the job recorded
    them (:func:`bmcore.tracking.registry.model_warnings`)."""
    warnings = metrics.get("model_warnings")
    return [str(warning) for warning in warnings] if isinstance(warnings, list) else []
