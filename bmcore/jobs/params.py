"""Job parameter validation: one set of rules for the CLI and the web, run before a row is written.

Torch-free (the web validates submissions with it). The rules every job shares, a train job's own and the
table of training bounds live in :mod:`bmcore.jobs.train_params`, a sweep's and a cross-validation's in
:mod:`bmcore.jobs.parent_params`; :func:`validate_job` applies those of one job type. Client params never
carry the internal ones (:data:`INTERNAL_PARAMS`): server code passes those separately (``internal``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bmcore.db import JOB_TYPES
from bmcore.jobs.errors import JobParamsError
from bmcore.jobs.parent_params import PARENT_TYPES, is_parent_spec, validate_parent
from bmcore.jobs.train_params import (
    INTERNAL_PARAMS,
    TRAIN_EXTRA_PARAMS,
    check_internal,
    check_json,
    check_shared,
    check_train,
)

__all__ = [
    "INTERNAL_PARAMS",
    "JOB_PARAMS",
    "PARENT_TYPES",
    "TRAIN_EXTRA_PARAMS",
    "is_parent_spec",
    "validate_job",
]

# What a segment or evaluate job reads (bmcore.jobs.runner.run_segment, run_evaluate); nothing else is taken.
JOB_PARAMS = {
    "segment": ("study_dir", "model", "tta"),
    "evaluate": ("data", "study_dir", "split", "model", "tta"),
}


def _check_known(job_type: str, params: Mapping[str, Any]) -> None:
    """A segment or evaluate job's params: only those its runner reads; ``tta`` true or false."""
    allowed = JOB_PARAMS[job_type]
    unknown = sorted(str(key) for key in set(params) - set(allowed))
    if unknown:
        raise JobParamsError(
            f"unknown {job_type} parameter(s): {', '.join(unknown)}; expected {', '.join(allowed)}"
        )
    if not isinstance(params.get("tta", False), bool):
        raise JobParamsError(f"params.tta must be true or false, got {params['tta']!r}")


def validate_job(
    type: str,
    params: Mapping[str, Any],
    study_id: int | None = None,
    internal: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Check a job type and its client parameters (the worker would need them), then merge the internal
    ones server code gives (checked for type); return a plain JSON-able dict, as the row stores it.

    One set of rules for CLI and web: a train job needs ``data`` and valid, bounded training parameters
    (:data:`bmcore.jobs.train_params.TRAIN_RULES`, torch-free); a segment job a study (``study_id`` or
    ``study_dir``); an evaluate job a study or a data set; a sweep or cross-validation with its search
    or folds, every child's training parameters (:mod:`bmcore.jobs.parent_params`). Unknown params and
    internal params sent by a client are refused with the names.
    """
    if type not in JOB_TYPES:
        raise JobParamsError(f"unknown job type {type!r}; expected one of {', '.join(JOB_TYPES)}")
    params = check_shared(type, params)
    if type in PARENT_TYPES:
        if is_parent_spec(type, params):
            params = validate_parent(type, params)
    elif type == "train":
        check_train(params)
    else:
        _check_known(type, params)
        if type == "segment" and study_id is None and "study_dir" not in params:
            raise JobParamsError("a segment job needs a study_id or params.study_dir")
        if type == "evaluate" and study_id is None and "data" not in params and "study_dir" not in params:
            raise JobParamsError("an evaluate job needs a study_id, params.data or params.study_dir")
    params |= check_internal(type, internal or {})
    check_json(params)
    return params
