"""Ending a parent: aggregate its ended children into its Result, artifacts and MLflow run, in one
conditional ``UPDATE`` (:func:`finish_parent`), or fail it after an error of its own (:func:`fail_parent`).
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bmcore.config import get_settings
from bmcore.db import FINISHED_STATUSES, Job, JobEvent, session_scope, utcnow
from bmcore.jobs.lifecycle import cancel_job, log_event, record_result
from bmcore.jobs.parents.aggregate import (
    RANK_BY,
    child_record,
    crossval_markdown,
    crossval_summary,
    rank_children,
    ranking_markdown,
)
from bmcore.jobs.parents.runs import close_parent_run, fail_parent_run, promote
from bmcore.jobs.search import get_job

log = logging.getLogger(__name__)


def list_children(session: Session, job_id: str) -> list[Job]:
    """A parent's children, oldest first, re-read from the database."""
    query = select(Job).where(Job.parent_id == job_id).order_by(Job.created_at, Job.id)
    children = list(session.scalars(query.execution_options(populate_existing=True)))
    session.commit()
    return children


def finish_parent(job_id: str) -> str | None:
    """Aggregate the ended children into the parent's Result, artifacts and MLflow run, and end it.

    Safe to run twice at once: the Result is an upsert, MLflow writes are idempotent, and the parent ends
    in one conditional UPDATE (None for the run that lost it).
    """
    with session_scope() as session:
        parent = get_job(session, job_id)
        if parent.status != "running":
            return None
        job_type, params, run_id, cancel = (
            parent.type,
            dict(parent.params),
            parent.mlflow_run_id,
            parent.cancel_requested,
        )
        children = list_children(session, job_id)
        labels = _labels(job_type, params, children)
        records = [child_record(child, labels.get(child.params.get("config_hash"), {})) for child in children]
    try:
        out = get_settings().results_dir / "jobs" / job_id
        out.mkdir(parents=True, exist_ok=True)
        if job_type == "sweep":
            metrics, artifacts, status, error = _sweep_outcome(records, out, cancel)
        else:
            metrics, artifacts, status, error = _crossval_outcome(records, out, cancel)
        if run_id:
            close_parent_run(run_id, status, metrics, [Path(p) for p in artifacts.values()])
        if job_type == "sweep" and status == "succeeded" and params.get("promote_best"):
            metrics["promoted"] = promote(metrics["ranking"], job_id)
        with session_scope() as session:
            record_result(session, job_id, metrics, artifacts)
    except Exception as exc:
        return fail_parent(job_id, exc, "could not aggregate its children")
    return status if _end(job_id, status, error, _summary_line(job_type, metrics)) else None


def _labels(job_type: str, params: Mapping[str, Any], children: list[Job]) -> dict[str, dict[str, Any]]:
    """config_hash → the searched values (sweep) or the fold (crossval), for the table."""
    if job_type == "sweep":
        names = list(params.get("grid") or params.get("random") or {})
        return {
            child.params.get("config_hash"): {k: child.params[k] for k in names if k in child.params}
            for child in children
        }
    return {
        child.params.get("config_hash"): {"fold": (child.params.get("split") or {}).get("fold")}
        for child in children
    }


def _sweep_outcome(records, out: Path, cancel: bool):
    rows = rank_children(records)
    counts = {status: sum(1 for r in rows if r["status"] == status) for status in FINISHED_STATUSES}
    best = rows[0] if rows and rows[0]["rank"] == 1 else None
    metrics = {
        "children": len(rows),
        "succeeded": counts["succeeded"],
        "failed": counts["failed"],
        "cancelled": counts["cancelled"],
        "reused": sum(1 for r in rows if r["reused"]),
        "rank_by": list(RANK_BY),
        "best_job_id": best["job_id"] if best else None,
        "best_val_lesion_dice": best["val_lesion_dice"] if best else None,
        "best_params": best["params"] if best else None,
        "ranking": rows,
    }
    (out / "ranking.json").write_text(json.dumps({"rank_by": list(RANK_BY), "rows": rows}, indent=1))
    (out / "ranking.md").write_text(ranking_markdown(rows))
    artifacts = {"ranking": str(out / "ranking.json"), "ranking_md": str(out / "ranking.md")}
    if cancel:
        return metrics, artifacts, "cancelled", None
    if best is None:
        errors = [r["error"] for r in rows if r["error"]]
        error = f"all {len(rows)} children failed" + (f"; first error: {errors[0]}" if errors else "")
        return metrics, artifacts, "failed", error
    return metrics, artifacts, "succeeded", None


def _crossval_outcome(records, out: Path, cancel: bool):
    summary = crossval_summary(records)
    metrics = dict(summary)
    for key in ("val_lesion_dice", "test_lesion_dice_TC"):
        if key in summary["mean"]:
            metrics[f"mean_{key}"], metrics[f"std_{key}"] = summary["mean"][key], summary["std"][key]
    if summary["oof"]:
        metrics["oof_lesion_dice_TC"] = summary["oof"].get("lesion_dice_TC")
    (out / "crossval.json").write_text(json.dumps(summary, indent=1))
    (out / "crossval.md").write_text(crossval_markdown(summary))
    artifacts = {"crossval": str(out / "crossval.json"), "crossval_md": str(out / "crossval.md")}
    if cancel:
        return metrics, artifacts, "cancelled", None
    failed = [f for f in summary["folds"] if f["status"] != "succeeded"]
    if failed:
        first = failed[0]
        error = f"{len(failed)} of {len(summary['folds'])} folds did not succeed; "
        error += f"fold {first['fold']} {first['status']}"
        error += f": {first['error']}" if first["error"] else ""
        return metrics, artifacts, "failed", error
    return metrics, artifacts, "succeeded", None


def _summary_line(job_type: str, metrics: Mapping[str, Any]) -> str:
    if job_type == "sweep":
        line = (
            f"{metrics['succeeded']} of {metrics['children']} children succeeded ({metrics['reused']} reused)"
        )
        if metrics.get("best_job_id"):
            line += f"; best {metrics['best_job_id'][:8]}"
            if metrics.get("best_val_lesion_dice") is not None:
                line += f", val_lesion_dice {metrics['best_val_lesion_dice']:.4f}"
        return line
    line = f"{metrics['folds_succeeded']} of {metrics['n_folds']} folds succeeded"
    if metrics.get("mean_val_lesion_dice") is not None:
        line += (
            f"; val_lesion_dice {metrics['mean_val_lesion_dice']:.4f} ± {metrics['std_val_lesion_dice']:.4f}"
        )
    return line


def _end(job_id: str, status: str, error: str | None, summary: str) -> bool:
    """End a running parent in one conditional UPDATE; False when it had already ended."""
    now = utcnow()
    first_line = error.strip().splitlines()[0] if error and error.strip() else ""
    message = f"{status}: {first_line or summary}"
    values: dict[str, Any] = {
        "status": status,
        "finished_at": now,
        "heartbeat_at": now,
        "error": error,
        "message": message,
    }
    if status == "succeeded":
        values["progress"] = 1.0
    with session_scope() as session:
        changed = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running")
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if changed.rowcount != 1:
            session.rollback()
            return False
        session.add(JobEvent(job_id=job_id, level="error" if status == "failed" else "info", message=message))
    return True


def fail_parent(job_id: str, exc: Exception, what: str) -> str | None:
    """End a parent as failed after an error of its own: children not yet ended are cancelled."""
    error = f"{what}: {type(exc).__name__}: {exc}".strip().splitlines()[0]
    log.warning("parent job %s %s", job_id, error)
    with session_scope() as session:
        log_event(session, job_id, traceback.format_exc()[-4000:], level="debug")
        for child in list_children(session, job_id):
            if child.status not in FINISHED_STATUSES:
                cancel_job(session, child.id)
        run_id = get_job(session, job_id).mlflow_run_id
    if run_id:
        fail_parent_run(run_id)
    return "failed" if _end(job_id, "failed", error, error) else None
