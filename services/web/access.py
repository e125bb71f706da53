"""Who may see or change what: every permission and visibility rule of the web in one place
(docs/permissions.md describes them for users).

* **Roles.** ``ROLE_ACTIONS`` says what each role may do; ``can``/``require`` check it (a disabled user may
  do nothing). Which action each route needs is :data:`services.web.route_access.ROUTE_ACTIONS`, checked
  before every view; a job's type is checked with ``require(user, job_type)`` when it is submitted.
* **Groups share patients.** A non-admin sees the patients of the groups they belong to, the studies of
  those patients and the studies they own, and edits the patients of their groups. Jobs (with their
  results and artifacts) are private to their owner. Admins see and change everything.
* **No oracle.** What a user may not see answers 404 with the very message of an unknown id; the list
  queries filter in SQL, so nothing invisible is ever loaded for a list.
* **Uploads go into a group** (:func:`upload_group`): one the user belongs to (an admin: any), by default
  their only group, else their personal group when they have none.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import ColumnElement, Select, or_, select
from sqlalchemy.orm import Session

from bmcore.db import Group, Job, Patient, Study, User, group_members
from bmcore.db.groups import find_group, personal_group
from bmcore.jobs.search import list_jobs
from bmcore.reports.cohort import sort_visits
from services.web.common import WebError

# Ids are 64-bit integers in every database the project supports; larger ones are simply unknown.
MAX_ROW_ID = 2**63 - 1

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


# ------------------------------------------------------------------------------------------ groups


def group_ids_of(user: User) -> Select:
    """The ids of the groups ``user`` belongs to, as a subquery."""
    return select(group_members.c.group_id).where(group_members.c.user_id == user.id)


def member_of(user: User, group_id: int | None) -> bool:
    return group_id is not None and any(group.id == group_id for group in user.groups)


def upload_group(session: Session, user: User, name: str | None) -> Group:
    """The group an upload of ``user`` goes into (400 otherwise; not committed).

    ``name`` given: a group the user belongs to (an admin: any existing group); a group the user is not in
    and a group that does not exist are refused alike. Not given: the user's only group, their personal
    group when they have none (made on first use), else a 400 listing their groups.
    """
    name = (name or "").strip()
    if name:
        group = find_group(session, name) if len(name) <= 64 else None
        if user.is_admin and group is None:
            raise WebError(400, f"no group {name}")
        if not user.is_admin and (group is None or not member_of(user, group.id)):
            raise WebError(400, f"not a group of yours: {name}")
        return group
    groups = sorted(user.groups, key=lambda group: group.name)
    if not groups:
        return personal_group(session, user)
    if len(groups) > 1:
        names = ", ".join(group.name for group in groups)
        raise WebError(400, f"you belong to several groups; name one in the group field: {names}")
    return groups[0]


# ------------------------------------------------------------------------------------------ jobs


def can_see_job(user: User, job: Job) -> bool:
    """Jobs are private: their owner and admins see them (rows without an owner are admin-only)."""
    return bool(user.is_admin) or (job.owner_id is not None and job.owner_id == user.id)


def _known_id(value: int) -> bool:
    return 0 < value <= MAX_ROW_ID


def visible_job(session: Session, user: User, job_id: str) -> Job:
    """The job, or 404 ``unknown job id`` (also for another user's job)."""
    job = session.get(Job, job_id) if len(job_id) <= 64 else None
    if job is None or not can_see_job(user, job):
        raise WebError(404, f"unknown job id: {job_id}")
    return job


def visible_jobs(
    session: Session, user: User, status: str | None = None, job_type: str | None = None, limit: int = 100
) -> list[Job]:
    """The jobs ``user`` can see (an admin: all; others: their own), newest first, perhaps of one status
    and type."""
    owner_id = None if user.is_admin else user.id
    return list_jobs(session, status=status, type=job_type, owner_id=owner_id, limit=limit)


def jobs_of_studies(session: Session, user: User, study_ids: list[int], limit: int) -> list[Job]:
    """The newest jobs on any of ``study_ids`` that ``user`` can see."""
    if not study_ids:
        return []
    query = select(Job).where(Job.study_id.in_(study_ids)).order_by(Job.created_at.desc()).limit(limit)
    if not user.is_admin:
        query = query.where(Job.owner_id == user.id)
    return list(session.scalars(query))


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


# ------------------------------------------------------------------------------------------ studies


def _study_clause(user: User) -> ColumnElement[bool]:
    """SQL: the studies a non-admin sees (their own, and those of their groups' patients)."""
    group_patients = select(Patient.id).where(Patient.group_id.in_(group_ids_of(user)))
    return or_(Study.owner_id == user.id, Study.patient_id.in_(group_patients))


def can_see_study(user: User, study: Study) -> bool:
    return (
        bool(user.is_admin)
        or (study.owner_id is not None and study.owner_id == user.id)
        or (study.patient is not None and member_of(user, study.patient.group_id))
    )


def visible_study(session: Session, user: User, study_id: int) -> Study:
    """The study, or 404 ``unknown study id`` (also for a study ``user`` may not see)."""
    study = session.get(Study, study_id) if _known_id(study_id) else None
    if study is None or not can_see_study(user, study):
        raise WebError(404, f"unknown study id: {study_id}")
    return study


def visible_studies(session: Session, user: User, limit: int = 500) -> list[Study]:
    """The studies ``user`` can see, newest first."""
    query = select(Study).order_by(Study.created_at.desc(), Study.id.desc()).limit(limit)
    if not user.is_admin:
        query = query.where(_study_clause(user))
    return list(session.scalars(query))


# ------------------------------------------------------------------------------------------ patients


def can_see_patient(user: User, patient: Patient) -> bool:
    return bool(user.is_admin) or member_of(user, patient.group_id)


def visible_patient(session: Session, user: User, patient_id: int) -> Patient:
    """The patient, or 404 ``unknown patient id`` (also for a patient of another group)."""
    patient = session.get(Patient, patient_id) if _known_id(patient_id) else None
    if patient is None or not can_see_patient(user, patient):
        raise WebError(404, f"unknown patient id: {patient_id}")
    return patient


def visible_patients(session: Session, user: User, limit: int = 500) -> list[Patient]:
    """The patients ``user`` can see (those of their groups; an admin: all), by pseudonym."""
    query = select(Patient).order_by(Patient.pseudonym, Patient.id).limit(limit)
    if not user.is_admin:
        query = query.where(Patient.group_id.in_(group_ids_of(user)))
    return list(session.scalars(query))


def patient_studies(user: User, patient: Patient) -> list[Study]:
    """The patient's studies ``user`` can see, in visit order."""
    return sort_visits([s for s in patient.studies if can_see_study(user, s)])


def can_edit_patient(user: User, patient: Patient) -> bool:
    """Admins edit any patient; a user edits the patients of their groups."""
    return can_see_patient(user, patient)


def check_can_edit_patient(user: User, patient: Patient) -> None:
    """404 (as for an unknown id) unless ``user`` may edit ``patient``: seeing a patient is editing it."""
    if not can_edit_patient(user, patient):
        raise WebError(404, f"unknown patient id: {patient.id}")
