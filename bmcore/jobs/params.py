"""Job parameter validation: one set of rules for the CLI and the web, run before a row is written.

Torch-free (the web validates submissions with it). The rules every job shares and a train job's own live
in :mod:`bmcore.jobs.train_params`, a sweep's and a cross-validation's in :mod:`bmcore.jobs.parent_params`;
:func:`validate_job` applies those of one job type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bmcore.db import JOB_TYPES
from bmcore.jobs.errors import JobParamsError
from bmcore.jobs.parent_params import PARENT_TYPES, is_parent_spec, validate_parent
from bmcore.jobs.train_params import TRAIN_EXTRA_PARAMS, check_json, check_shared, check_train

__all__ = ["PARENT_TYPES", "TRAIN_EXTRA_PARAMS", "is_parent_spec", "validate_job"]


def validate_job(type: str, params: Mapping[str, Any], study_id: int | None = None) -> dict[str, Any]:
    """Check a job type and its parameters (the worker would need them); return a plain JSON-able dict.

    One set of rules for CLI and web: a train job needs ``data`` and valid training parameters
    (:class:`bmcore.training.config.TrainConfig`, torch-free); a segment job a study (``study_id`` or
    ``study_dir``); an evaluate job a study or a data set; a sweep or cross-validation with its search
    or folds, every child's training parameters (:mod:`bmcore.jobs.parent_params`).
    """
    if type not in JOB_TYPES:
        raise JobParamsError(f"unknown job type {type!r}; expected one of {', '.join(JOB_TYPES)}")
    params = check_shared(type, params)
    if type in PARENT_TYPES:
        if is_parent_spec(type, params):
            params = validate_parent(type, params)
    elif type == "train":
        check_train(params)
    elif type == "segment" and study_id is None and "study_dir" not in params:
        raise JobParamsError("a segment job needs a study_id or params.study_dir")
    elif type == "evaluate" and study_id is None and "data" not in params and "study_dir" not in params:
        raise JobParamsError("an evaluate job needs a study_id, params.data or params.study_dir")
    check_json(params)
    return params
