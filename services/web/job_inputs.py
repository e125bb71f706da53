"""What a web job may read: registered data sets, registry models and the user's own checkpoints, never
a raw path from a non-admin.

A non-admin's ``data`` names a data set they may use (:func:`bmcore.datasets.usable_datasets`), replaced
here by its path; ``study_dir`` is refused (a study is named by ``study_id``); ``model`` is a registry URI
(a clinician's only ``models:/<name>@<alias>`` with an approval alias) or ``job:<id>`` of their own
succeeded train job, replaced by its checkpoint; ``split`` is an object, never a path. Every refusal's text
is fixed, so an answer never depends on what exists on the workers' disks. Admins may give paths, and use
data set names and ``job:<id>`` too.

``champion_eligible`` (server-owned) is true only for training on a data set registered as promotable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from bmcore.config import get_settings
from bmcore.datasets import dataset_to_dict, find_dataset, usable_dataset, usable_datasets
from bmcore.db import Dataset, Job, User
from services.web.access import can, can_see_job
from services.web.common import WebError

# The job types that carry ``champion_eligible`` (a sweep's or cross-validation's children inherit their
# parent's in its fan-out, bmcore.jobs.parents.steps; a fold is never eligible).
ELIGIBLE_TYPES = ("train", "sweep", "crossval")
JOB_MODEL = re.compile(r"^job:(?P<id>[0-9A-Za-z-]{1,64})$")
REGISTRY_MODEL = re.compile(
    r"^models:/(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,127})"
    r"(?:@(?P<alias>[A-Za-z0-9_-]{1,64})|/(?P<version>[0-9]{1,9}|latest))$"
)
DEFAULT_MODEL = "models:/bmseg-unet@champion"  # what a segment or evaluate job uses without params.model
DATA_REFUSED = "params.data must name a data set you may use (GET /api/v1/datasets lists them)"
STUDY_DIR_REFUSED = "params.study_dir is not accepted: name one of your studies with study_id"
SPLIT_REFUSED = 'params.split must be an object like split.json ({"studies": {"train", "val", "test"}})'
MODEL_REFUSED = (
    "params.model must be a registry URI (models:/bmseg-unet@champion, models:/bmseg-unet/3) "
    "or job:<id> of a train job of yours that succeeded"
)


def datasets_for(session: Session, user: User) -> list[dict[str, Any]]:
    """The data sets ``user`` may name as a job's data (none for a role that runs no job on data), as
    ``{"name", "group", "promotable"}``; an admin also sees each one's ``path``."""
    if not (can(user, "train") or can(user, "evaluate")):
        return []
    return [
        dataset_to_dict(session, d, with_path=bool(user.is_admin)) for d in usable_datasets(session, user)
    ]


def approved_models_help() -> str:
    aliases = ", ".join(get_settings().approval_aliases) or "(none configured)"
    return f"params.model must be an approved model: models:/<name>@<alias> with alias one of {aliases}"


def resolve_inputs(
    session: Session, user: User, job_type: str, params: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``params`` with data set names and ``job:<id>`` models replaced by paths (400 for anything a user
    may not name), and the internal params that go with them (``dataset``, ``champion_eligible``)."""
    params = dict(params)
    internal: dict[str, Any] = {}
    dataset = _resolve_data(session, user, params)
    if dataset is not None:
        params["data"] = dataset.path
        internal["dataset"] = dataset.name
    if "study_dir" in params and not user.is_admin:
        raise WebError(400, STUDY_DIR_REFUSED)
    if "split" in params and not user.is_admin and not isinstance(params["split"], Mapping):
        raise WebError(400, SPLIT_REFUSED)
    if _is_clinician(user) and job_type in ("segment", "evaluate"):
        params.setdefault("model", DEFAULT_MODEL)  # checked like a given one: approved aliases only
    if "model" in params:
        params["model"] = resolve_model(session, user, params["model"])
    if job_type in ELIGIBLE_TYPES:
        internal["champion_eligible"] = bool(dataset is not None and dataset.promotable)
    return params, internal


def _resolve_data(session: Session, user: User, params: Mapping[str, Any]) -> Dataset | None:
    """The data set ``params.data`` names (None: no ``data``, or an admin's path); 400 for a non-admin's
    anything else, whatever it is (unknown name, another group's data set, a path that exists or not)."""
    if "data" not in params:
        return None
    value = params["data"]
    if not isinstance(value, str):
        raise WebError(400, DATA_REFUSED)
    if user.is_admin:
        return find_dataset(session, value) if "/" not in value else None
    dataset = usable_dataset(session, user, value)
    if dataset is None:
        raise WebError(400, DATA_REFUSED)
    return dataset


def resolve_model(session: Session, user: User, value: Any) -> str:
    """The model reference a job of ``user`` may use, ``job:<id>`` as that job's checkpoint path."""
    clinician = _is_clinician(user)
    refused = approved_models_help() if clinician else MODEL_REFUSED
    if not isinstance(value, str):
        raise WebError(400, refused)
    registry = REGISTRY_MODEL.match(value)
    if clinician:
        if registry is None or registry["alias"] not in get_settings().approval_aliases:
            raise WebError(400, refused)
        return value
    if registry is not None:
        return value
    job_ref = JOB_MODEL.match(value)
    if job_ref is not None:
        return _own_checkpoint(session, user, job_ref["id"])
    if user.is_admin:
        return value
    raise WebError(400, refused)


def _is_clinician(user: User) -> bool:
    return not user.is_admin and user.role == "clinician"


def _own_checkpoint(session: Session, user: User, job_id: str) -> str:
    """The checkpoint of train job ``job_id`` if ``user`` may see it and it succeeded; 400 otherwise,
    with the same text for a job that does not exist, another user's, a failed one and a segment job."""
    job = session.get(Job, job_id)
    usable = job is not None and can_see_job(user, job) and job.type == "train" and job.status == "succeeded"
    artifacts = job.result.artifacts if usable and job.result is not None else {}
    checkpoint = artifacts.get("checkpoint")
    if not isinstance(checkpoint, str) or not checkpoint:
        raise WebError(400, MODEL_REFUSED)
    return checkpoint
