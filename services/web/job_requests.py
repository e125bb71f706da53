"""Checking a job request ``{"type", "params", "study_id"}`` from the API or the dashboard's form before
anything is written: the type is one a user may submit, the study is theirs, the parameters are valid
(:func:`bmcore.jobs.params.validate_job`) and point at no other user's study."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from bmcore.db import User
from bmcore.jobs.errors import JobParamsError
from bmcore.jobs.params import PARENT_TYPES, is_parent_spec, validate_job
from services.web.access import check_paths_are_own, visible_study
from services.web.common import WebError

# Job types a user may submit from the web; sweeps and cross-validations with their search or folds
# (a bare parent row, grouping jobs queued by hand, is CLI-only).
SUBMITTABLE_TYPES = ("train", "evaluate", "segment", "sweep", "crossval")
TYPES_HELP = (
    "train, evaluate, segment, sweep (with params.grid or params.random), crossval (with params.folds)"
)
DEFAULT_MODEL = "models:/bmseg-unet@champion"
REQUEST_FIELDS = ("type", "params", "study_id")


def prepare_job(session: Session, user: User, body: Any) -> tuple[str, dict[str, Any], int | None]:
    """Validate a job request ``{"type", "params", "study_id"}``; returns (type, params, study_id).

    Raises ``WebError`` (400 bad input, 403/404 for the study) before anything is written.
    """
    if not isinstance(body, Mapping):
        raise WebError(400, "the request body must be a JSON object")
    unknown = sorted(set(body) - set(REQUEST_FIELDS))
    if unknown:
        raise WebError(400, f"unknown field(s): {', '.join(unknown)}; expected type, params, study_id")
    job_type = body.get("type")
    if job_type not in SUBMITTABLE_TYPES:
        raise WebError(400, f"type must be one of {TYPES_HELP}, got {job_type!r}")
    params = body.get("params") if body.get("params") is not None else {}
    if not isinstance(params, Mapping):
        raise WebError(400, "params must be a JSON object")
    params = dict(params)
    if job_type in PARENT_TYPES and not is_parent_spec(job_type, params):
        raise WebError(400, f"type must be one of {TYPES_HELP}, got {job_type!r} without them")
    study_id = body.get("study_id")
    if study_id is not None:
        if isinstance(study_id, bool) or not isinstance(study_id, int):
            raise WebError(400, f"study_id must be an integer, got {study_id!r}")
        visible_study(session, user, study_id)
    try:
        params = validate_job(job_type, params, study_id)
    except JobParamsError as exc:
        raise WebError(400, str(exc)) from None
    check_paths_are_own(session, user, params)
    return job_type, params, study_id
