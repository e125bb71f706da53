"""The new-job form's fields as the API's job request ``{"type", "params", "study_id"}``.

The form's data is a registered data set chosen from a list (:func:`form_choices`); only an admin also
has a free path field (a non-admin's path would be refused anyway: :mod:`services.web.job_inputs`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from bmcore.db import User
from bmcore.jobs.errors import JobParamsError
from bmcore.jobs.parents.parsing import parse_grid
from services.web.common import WebError
from services.web.job_inputs import datasets_for
from services.web.job_requests import DEFAULT_MODEL

FORM_FIELDS = (
    "type",
    "arch",
    "recipe",
    "epochs",
    "lr",
    "batch_size",
    "size",
    "dataset",
    "data",
    "model",
    "study_id",
    "tta",
    "dicom",
    "grid",
    "budget",
    "folds",
    "promote_best",
)
TRAINING_NUMBERS = (("epochs", int), ("lr", float), ("batch_size", int), ("size", int))
DEFAULT_FOLDS = 5


def _number(form: dict[str, str], name: str, kind: type) -> int | float | None:
    text = (form.get(name) or "").strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        raise WebError(
            400, f"{name.replace('_', ' ')} must be {'a whole number' if kind is int else 'a number'}"
        ) from None


def form_choices(session: Session, user: User) -> dict[str, Any]:
    """What the form offers ``user`` besides its fields: the data sets they may use (the template shows
    the path field, and the sweep's promote option, to admins only)."""
    return {"datasets": datasets_for(session, user)}


def job_request_from_form(form: dict[str, str]) -> dict[str, Any]:
    """The new-job form as the API's job request ``{"type", "params", "study_id"}``.

    The chosen data set wins over the path field (an admin's); a segment job reads a study, or a path.
    """
    job_type = form.get("type", "")
    study_text = (form.get("study_id") or "").strip()
    if study_text and not study_text.isdigit():
        raise WebError(400, "choose a study from the list")
    study_id = int(study_text) if study_text else None
    path = (form.get("data") or "").strip()
    data = (form.get("dataset") or "").strip() or path
    model = (form.get("model") or "").strip() or DEFAULT_MODEL
    params: dict[str, Any] = {}
    if job_type in ("train", "sweep", "crossval"):
        training = {"arch": form.get("arch", "unet"), "recipe": form.get("recipe") or "bmseg"}
        for name, kind in TRAINING_NUMBERS:
            value = _number(form, name, kind)
            if value is not None:
                training[name] = value
        if not data:
            raise WebError(400, "a training job needs a data set: choose one from the list")
        study_id = None
        params = {"data": data} | _parent_params(job_type, form, training)
    elif job_type == "evaluate":
        params["model"] = model
        if data and study_id is None:
            params["data"] = data
    elif job_type == "segment":
        params["model"] = model
        if path and study_id is None:
            params["study_dir"] = path
    if job_type in ("evaluate", "segment") and form.get("tta"):
        params["tta"] = True
    if job_type == "segment" and form.get("dicom"):
        params["dicom"] = True  # RTSTRUCT and DICOM-SEG next to the mask (bmcore.jobs.runner.run_segment)
    return {"type": job_type, "params": params, "study_id": study_id}


def _parent_params(job_type: str, form: dict[str, str], training: dict[str, Any]) -> dict[str, Any]:
    """Training fields as they are (train), or as every child's ``base`` of a sweep (the grid's names
    taken out) or cross-validation."""
    if job_type == "train":
        return training
    if job_type == "crossval":
        folds = _number(form, "folds", int)
        return {"folds": folds if folds is not None else DEFAULT_FOLDS, "base": training}
    try:
        grid = parse_grid(form.get("grid") or "")
    except JobParamsError as exc:
        raise WebError(400, f"grid: {exc}") from None
    params: dict[str, Any] = {"grid": grid, "base": {k: v for k, v in training.items() if k not in grid}}
    budget = _number(form, "budget", int)
    if budget is not None:
        params["budget"] = budget
    if form.get("promote_best"):
        params["promote_best"] = True
    return params
