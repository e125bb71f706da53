"""Checking a job request ``{"type", "params", "study_id"}`` from the API or the dashboard's form before
anything is written: the type is one a user may submit and their role allows, the study is one they see,
what the job reads is a registered data set, a registry model or their own checkpoint (never a non-admin's
raw path: :mod:`services.web.job_inputs`), and the parameters are valid
(:func:`bmcore.jobs.params.validate_job`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from bmcore.db import Job, User
from bmcore.jobs.errors import JobParamsError
from bmcore.jobs.lifecycle import submit_job
from bmcore.jobs.params import PARENT_TYPES, is_parent_spec, validate_job
from services.web.access import require, visible_study
from services.web.common import WebError
from services.web.job_inputs import DEFAULT_MODEL, resolve_inputs

# Job types a user may submit from the web; sweeps and cross-validations with their search or folds
# (a bare parent row, grouping jobs queued by hand, is CLI-only).
SUBMITTABLE_TYPES = ("train", "evaluate", "segment", "sweep", "crossval")
TYPES_HELP = (
    "train, evaluate, segment, sweep (with params.grid or params.random), crossval (with params.folds)"
)
REQUEST_FIELDS = ("type", "params", "study_id")
__all__ = ["DEFAULT_MODEL", "SUBMITTABLE_TYPES", "PreparedJob", "prepare_job", "submit_prepared"]


class PreparedJob(NamedTuple):
    """A checked job request: what ``submit_job(session, type, params, owner_id=…, study_id=…,
    internal=…)`` takes; ``internal`` holds the server-owned params (``dataset``, ``champion_eligible``)."""

    type: str
    params: dict[str, Any]
    study_id: int | None
    internal: dict[str, Any]


def submit_prepared(session: Session, user: User, prepared: PreparedJob) -> Job:
    """Write and queue a checked request as ``user``'s job (``submit_job``'s errors propagate: bad params,
    the per-user limit, an unavailable queue)."""
    return submit_job(
        session,
        prepared.type,
        prepared.params,
        owner_id=user.id,
        study_id=prepared.study_id,
        internal=prepared.internal,
    )


def prepare_job(session: Session, user: User, body: Any) -> PreparedJob:
    """Validate a job request ``{"type", "params", "study_id"}`` of ``user``.

    Raises ``WebError`` before anything is written: 400 bad input, 403 for a job type the user's role may
    not submit (and for a sweep's ``promote_best`` unless admin), 404 for a study the user cannot see.
    """
    if not isinstance(body, Mapping):
        raise WebError(400, "the request body must be a JSON object")
    unknown = sorted(set(body) - set(REQUEST_FIELDS))
    if unknown:
        raise WebError(400, f"unknown field(s): {', '.join(unknown)}; expected type, params, study_id")
    job_type = body.get("type")
    if job_type not in SUBMITTABLE_TYPES:
        raise WebError(400, f"type must be one of {TYPES_HELP}, got {job_type!r}")
    require(user, job_type)
    params = body.get("params") if body.get("params") is not None else {}
    if not isinstance(params, Mapping):
        raise WebError(400, "params must be a JSON object")
    params = dict(params)
    if job_type in PARENT_TYPES and not is_parent_spec(job_type, params):
        raise WebError(400, f"type must be one of {TYPES_HELP}, got {job_type!r} without them")
    if job_type == "sweep" and params.get("promote_best", False) is not False:
        require(user, "promote")  # moving champion is an admin's decision
    study_id = body.get("study_id")
    if study_id is not None:
        if isinstance(study_id, bool) or not isinstance(study_id, int):
            raise WebError(400, f"study_id must be an integer, got {study_id!r}")
        visible_study(session, user, study_id)
    params, internal = resolve_inputs(session, user, job_type, params)
    try:
        params = validate_job(job_type, params, study_id)
    except JobParamsError as exc:
        raise WebError(400, str(exc)) from None
    return PreparedJob(job_type, params, study_id, internal)
