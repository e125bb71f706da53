"""The model registry page: each registered model's versions, the champions, every alias move (who, when,
from which version, why) and links into MLflow."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, render_template

from services.web import reports
from services.web.serialize import mlflow_compare_link, mlflow_run_link

# Metrics shown first on the model comparison page, when a version has them.
KEY_METRICS = (
    "val_lesion_dice",
    "val_dice",
    "val_dice_ET",
    "val_dice_TC",
    "val_dice_WT",
    "val_loss",
    "val_paper_dice",
    "val_paper_iou",
    "epochs_run",
)
MAX_METRIC_COLUMNS = 8


def _metric_columns(versions: list[dict[str, Any]]) -> list[str]:
    present: list[str] = []
    for version in versions:
        for key in version.get("metrics", {}):
            if key not in present:
                present.append(key)
    ordered = [key for key in KEY_METRICS if key in present]
    ordered += sorted(key for key in present if key not in ordered and key.startswith("val_"))
    ordered += sorted(key for key in present if key not in ordered)
    return ordered[:MAX_METRIC_COLUMNS]


def _registry_or_error() -> tuple[list[dict[str, Any]], str | None]:
    try:
        return reports.registry_models(), None
    except Exception as exc:  # the registry is optional for the rest of the dashboard
        current_app.logger.warning("model registry unavailable: %s", exc)
        return [], f"Registry unavailable: {type(exc).__name__}: {exc}"


def models():
    base = current_app.config["MLFLOW_UI_URL"]
    overview, error = _registry_or_error()
    all_versions = [version for model in overview for version in model.get("versions", [])]
    run_ids = [version["run_id"] for version in all_versions if version.get("run_id")]
    experiments = sorted({str(v["experiment_id"]) for v in all_versions if v.get("experiment_id")})
    for version in all_versions:
        version["mlflow_url"] = mlflow_run_link(base, version.get("run_id"), version.get("experiment_id"))
    champions = [
        (model["name"], version)
        for model in overview
        for version in model.get("versions", [])
        if model.get("champion") is not None and version.get("version") == model["champion"]
    ]
    return render_template(
        "models.html",
        models=overview,
        champions=champions,
        error=error,
        columns=_metric_columns(all_versions),
        compare_url=mlflow_compare_link(base, run_ids, experiments),
        mlflow_ui_url=base,
    )


def register(bp: Blueprint) -> None:
    bp.get("/models")(models)
