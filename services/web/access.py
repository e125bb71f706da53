"""Who may see or change what: every visibility and permission rule of the web in one place.

Admins see and change everything. Other users see the studies and jobs they own (rows without an owner
are admin-only), the patients of their own studies, and may edit a patient whose studies are all theirs.
The ``visible_*`` lookups raise ``WebError`` 404 (unknown id) or 403 (another user's); the list queries
filter by owner in SQL. A job serves only the artifact files its result lists, only from inside the
results folder; a job's parameters may not name another user's uploaded study.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bmcore.config import get_settings
from bmcore.db import Job, Patient, Study, User
from bmcore.jobs.search import list_jobs
from bmcore.reports.cohort import sort_visits
from services.web.common import WebError

# Job parameters that may name an uploaded study's folder.
PATH_PARAMS = ("data", "study_dir", "split", "model")

# What each role may do (docs/permissions.md); every check of a role goes through ``can``/``require``.
ACTIONS = ("view", "upload", "segment", "train", "evaluate", "sweep", "crossval", "promote", "manage")
ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "clinician": frozenset({"view", "upload", "segment"}),
    "researcher": frozenset({"view", "upload", "segment", "train", "evaluate", "sweep", "crossval"}),
    "admin": frozenset(ACTIONS),
}


def can(user: User, action: str) -> bool:
    """Whether ``user``'s role allows ``action`` (one of ``ACTIONS``); a disabled user may do nothing."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    return not user.disabled and action in ROLE_ACTIONS.get(user.role, frozenset())


def require(user: User, action: str) -> None:
    """403 unless ``user`` may ``action``; the message names the role that may."""
    if not can(user, action):
        allowed = [role for role, actions in ROLE_ACTIONS.items() if action in actions]
        raise WebError(403, f"your role ({user.role}) may not {action}; that needs: {', '.join(allowed)}")


def can_see(user: User, owner_id: int | None) -> bool:
    """Admins see everything; others see what they own (rows without an owner are admin-only)."""
    return bool(user.is_admin) or (owner_id is not None and owner_id == user.id)


def owner_filter(user: User) -> int | None:
    """The owner id a list query filters by: None (everything) for an admin, else the user's id."""
    return None if user.is_admin else user.id


# ------------------------------------------------------------------------------------------ jobs and studies


def visible_job(session: Session, user: User, job_id: str) -> Job:
    job = session.get(Job, job_id) if len(job_id) <= 64 else None
    if job is None:
        raise WebError(404, f"unknown job id: {job_id}")
    if not can_see(user, job.owner_id):
        raise WebError(403, f"job {job_id} belongs to another user")
    return job


def visible_jobs(
    session: Session, user: User, status: str | None = None, job_type: str | None = None, limit: int = 100
) -> list[Job]:
    """The jobs ``user`` can see, newest first, optionally of one status and type."""
    return list_jobs(session, status=status, type=job_type, owner_id=owner_filter(user), limit=limit)


def visible_study(session: Session, user: User, study_id: int) -> Study:
    study = session.get(Study, study_id)
    if study is None:
        raise WebError(404, f"unknown study id: {study_id}")
    if not can_see(user, study.owner_id):
        raise WebError(403, f"study {study_id} belongs to another user")
    return study


def visible_studies(session: Session, user: User, limit: int = 500) -> list[Study]:
    query = select(Study).order_by(Study.created_at.desc(), Study.id.desc()).limit(limit)
    if not user.is_admin:
        query = query.where(Study.owner_id == user.id)
    return list(session.scalars(query))


def jobs_of_studies(session: Session, user: User, study_ids: list[int], limit: int) -> list[Job]:
    """The newest jobs on any of ``study_ids`` that ``user`` can see."""
    if not study_ids:
        return []
    query = select(Job).where(Job.study_id.in_(study_ids)).order_by(Job.created_at.desc()).limit(limit)
    return [job for job in session.scalars(query) if can_see(user, job.owner_id)]


def artifact_file(job: Job, name: str, results_dir: Path) -> Path:
    """The file behind a job's artifact ``name``: only names the job's result lists, only inside
    ``results_dir``; anything else is a 404 (the path always comes from the database, never the user)."""
    artifacts = job.result.artifacts if job.result is not None else {}
    if name not in artifacts:
        raise WebError(404, f"job {job.id} has no artifact {name!r}")
    root = results_dir.resolve()
    path = Path(str(artifacts[name])).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise WebError(404, f"artifact {name!r} of job {job.id} is not available")
    return path


def check_paths_are_own(session: Session, user: User, params: Mapping[str, Any]) -> None:
    """A non-admin may not point a job at another user's uploaded study by its path (403).

    Paths inside the uploads folder must lie inside one of the user's own studies; ``..`` and links are
    resolved first, so a path cannot climb out of a study the user owns.
    """
    if user.is_admin:
        return
    uploads = get_settings().uploads_dir.resolve()
    own = [
        Path(d).resolve() for d in session.scalars(select(Study.directory).where(Study.owner_id == user.id))
    ]
    for key in PATH_PARAMS:
        value = params.get(key)
        if not isinstance(value, str) or value.startswith("models:/"):
            continue
        path = Path(value).resolve()
        if path.is_relative_to(uploads) and not any(path.is_relative_to(d) for d in own):
            raise WebError(403, f"params.{key} points at a study that belongs to another user")


# ------------------------------------------------------------------------------------------ patients


def visible_patient(session: Session, user: User, patient_id: int) -> Patient:
    """A patient ``user`` may see: admins see all; others the patients of their own studies."""
    patient = session.get(Patient, patient_id)
    if patient is None:
        raise WebError(404, f"unknown patient id: {patient_id}")
    if not user.is_admin and not any(s.owner_id == user.id for s in patient.studies):
        raise WebError(403, f"patient {patient_id} has no studies of yours")
    return patient


def visible_patients(session: Session, user: User, limit: int = 500) -> list[Patient]:
    query = select(Patient).order_by(Patient.pseudonym).limit(limit)
    if not user.is_admin:
        query = query.where(Patient.studies.any(Study.owner_id == user.id))
    return list(session.scalars(query))


def patient_studies(user: User, patient: Patient) -> list[Study]:
    """The patient's studies ``user`` can see, in visit order."""
    return sort_visits([s for s in patient.studies if can_see(user, s.owner_id)])


def can_edit_patient(user: User, patient: Patient) -> bool:
    """Admins edit any patient; a user edits a patient whose studies are all theirs."""
    return bool(user.is_admin) or (
        bool(patient.studies) and all(s.owner_id == user.id for s in patient.studies)
    )


def check_can_edit_patient(user: User, patient: Patient, ask: str) -> None:
    """403 unless ``user`` may edit ``patient``; ``ask`` ends the message (API and dashboard word it
    differently)."""
    if not can_edit_patient(user, patient):
        raise WebError(403, f"patient {patient.pseudonym} has studies of other users; {ask}")
