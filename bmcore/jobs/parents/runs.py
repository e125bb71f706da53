"""A parent's MLflow run, and moving ``champion`` to a sweep's best child (``promote_best``).

Each child's own run nests under the parent's (``mlflow_parent_run_id`` in its params).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bmcore import tracking
from bmcore.db import session_scope
from bmcore.jobs.parents.aggregate import numeric_figures
from bmcore.jobs.search import get_job

log = logging.getLogger(__name__)

RUN_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}


def promote(rows: Sequence[Mapping[str, Any]], parent_id: str) -> dict[str, Any] | None:
    """Move ``champion`` to the best child's registered version (recorded as a move by the parent job);
    None when it has none."""
    best = rows[0]
    registered = best.get("registered") or {}
    if not registered.get("name") or registered.get("version") is None:
        return None
    tracking.configure()
    tracking.set_champion(
        registered["name"],
        registered["version"],
        moved_by=f"job {parent_id}",
        reason=f"sweep {parent_id} best child (job {best['job_id']})",
        job_id=parent_id,
    )
    return {"name": registered["name"], "version": registered["version"], "job_id": best["job_id"]}


def start_parent_run(job_id: str, job_type: str, params: Mapping[str, Any], children: int) -> str:
    """Open the parent's MLflow run (its children's runs nest under it) and keep its id on the row."""
    tracking.configure()
    experiment = tracking.get_or_create_experiment(tracking.experiment_name_for(params["data"]))
    logged = dict(params) | {"children": children}
    tags = {"bmseg.job_id": job_id, "bmseg.job_type": job_type}
    run_id = tracking.start_run(experiment, f"{job_type}-{job_id[:8]}", logged, tags)
    with session_scope() as session:
        get_job(session, job_id).mlflow_run_id = run_id
        session.commit()
    return run_id


def close_parent_run(run_id: str, status: str, metrics: Mapping[str, Any], files: list[Path]) -> None:
    """Log the parent's figures (cross-validation ones as ``cv_mean_*``, …) and files; end the run."""
    tracking.configure()
    figures = numeric_figures(metrics)
    for prefix in ("mean", "std", "oof"):
        figures |= {f"cv_{prefix}_{k}": v for k, v in numeric_figures(metrics.get(prefix) or {}).items()}
    tracking.log_metrics(run_id, figures, step=0)
    for path in files:
        if path.is_file():
            tracking.log_artifact(run_id, path)
    tracking.end_run(run_id, RUN_STATUS[status])


def fail_parent_run(run_id: str) -> None:
    """End the parent's run as failed; an MLflow error is logged, not raised (the parent has its own)."""
    try:
        tracking.configure()
        tracking.end_run(run_id, "FAILED")
    except Exception as run_error:  # the parent fails with its own error, not MLflow's
        log.warning("could not end MLflow run %s: %s", run_id, run_error)
