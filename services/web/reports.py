"""Read-side helpers the API and the dashboard both use: a study's newest segmentation and its lesion
table, the cohort report of the studies a user can see, and the model registry overview."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from flask import current_app, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from bmcore import tracking
from bmcore.config import get_settings
from bmcore.db import Job, Study, User
from bmcore.reports import cohort as cohort_report
from bmcore.tracking.alias_moves import alias_history
from bmcore.tracking.registry import version_warnings
from services.web.access import artifact_file, visible_studies
from services.web.common import WebError, db

MAX_LESION_ROWS = 500
MAX_COHORT_STUDIES = 500
MAX_SEED = 2**31


def registry_models() -> list[dict[str, Any]]:
    """The registry overview, each model with the history of its alias moves, newest first (who moved
    it, when, from which version, why); the caller answers for MLflow being down."""
    overview = tracking.registry_overview()
    session = db()
    for model in overview:
        model["history"] = alias_history(session, model["name"])
        for version in model.get("versions", []):
            version["warnings"] = version_warnings(version.get("tags") or {})
    return overview


# ------------------------------------------------------------------------------------------ segmentations


def newest_segmentation(session: Session, study: Study, user: User) -> Job | None:
    """The newest succeeded segment job of ``study`` that ``user`` can see (jobs are private: their own;
    an admin's, any) whose result lists its mask."""
    query = (
        select(Job)
        .where(Job.study_id == study.id, Job.type == "segment", Job.status == "succeeded")
        .order_by(Job.finished_at.desc(), Job.created_at.desc())
    )
    if not user.is_admin:
        query = query.where(Job.owner_id == user.id)
    for job in session.scalars(query):
        if job.result is not None and f"{study.study_uid}_seg" in job.result.artifacts:
            return job
    return None


def read_lesion_table(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        rows = []
        for row in csv.DictReader(handle):
            rows.append(row)
            if len(rows) >= MAX_LESION_ROWS:
                break
        return rows


def has_lesion_table(segmentation: Job | None, study: Study) -> bool:
    """Whether ``segmentation``'s result lists a lesion table for ``study``."""
    return segmentation is not None and f"{study.study_uid}_lesions" in (segmentation.result.artifacts or {})


def segmentation_lesions(segmentation: Job, study: Study) -> list[dict[str, str]]:
    """The lesion table ``segmentation`` wrote for ``study`` (check :func:`has_lesion_table` first)."""
    path = artifact_file(segmentation, f"{study.study_uid}_lesions", current_app.config["RESULTS_DIR"])
    return read_lesion_table(path)


# ------------------------------------------------------------------------------------------ cohort


def cohort_cache_dir() -> Path:
    """Where cohort reports, lesion tables and patient plots are cached (``data_dir/cache/cohort``)."""
    configured = current_app.config.get("COHORT_CACHE_DIR")
    return Path(configured) if configured else get_settings().cache_dir / "cohort"


def seed_argument() -> int:
    """The request's ``seed`` query argument (the cohort split's seed), 0 by default."""
    text = request.args.get("seed", "0")
    if not text.isdigit() or int(text) >= MAX_SEED:
        raise WebError(400, "seed must be a whole number from 0 to 2147483647")
    return int(text)


def cohort_summary(user: User, seed: int = 0) -> tuple[dict[str, Any], Path]:
    """The cohort report of the studies ``user`` can see (cached; drawn on first request): summary, folder.

    Predictions: the mask of each study's newest succeeded segment job that ``user`` can see. The cache key
    is the fingerprint of exactly these studies and predictions (:func:`bmcore.reports.cohort.
    database_report`), so users who see different studies never share a report, and users who see the
    same ones share it safely.
    """
    session = db()
    studies = visible_studies(session, user, limit=MAX_COHORT_STUDIES)
    predictions = {}
    for study_row in studies:
        segmentation = newest_segmentation(session, study_row, user)
        if segmentation is not None:
            try:
                predictions[study_row.study_uid] = artifact_file(
                    segmentation, f"{study_row.study_uid}_seg", current_app.config["RESULTS_DIR"]
                )
            except WebError:
                continue
    return cohort_report.database_report(
        studies, cohort_cache_dir(), predictions, seed, current_app.config["MAX_VOXELS"]
    )
