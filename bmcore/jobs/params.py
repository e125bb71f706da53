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
from bmcore.imaging import MODALITIES
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
from bmcore.patients.studies import IDENTIFIER, PATIENT_ID_RULE, STUDY_UID_RULE

__all__ = [
    "INGEST_PARAMS",
    "INTERNAL_PARAMS",
    "JOB_PARAMS",
    "PARENT_TYPES",
    "TRAIN_EXTRA_PARAMS",
    "is_parent_spec",
    "validate_job",
]

# What a segment or evaluate job reads (bmcore.jobs.runner.run_segment, run_evaluate); nothing else is taken.
JOB_PARAMS = {
    "segment": ("study_dir", "model", "tta", "dicom"),  # dicom: also RTSTRUCT and DICOM-SEG (run_segment)
    "evaluate": ("data", "study_dir", "split", "model", "tta"),
}


# What an ingest job reads (bmcore.jobs.ingest, queued by the web's DICOM upload): the study's pseudonym and
# uid, its group's name and the series the user mapped to modalities ({"5": "t1ce"}); the archive itself is
# the server's (internal ``archive``).
INGEST_PARAMS = ("patient_id", "study_uid", "group", "map")
MAX_GROUP_CHARS = 64
MAX_SERIES_MAP = 32
MAX_SERIES_NUMBER = 2**31 - 1


def check_series_map(value: Any, where: str = "params.map") -> dict[str, str]:
    """A series map ``{series number: modality}`` (keys digits, at most :data:`MAX_SERIES_MAP` entries,
    each modality once) as a plain JSON-able dict with string keys."""
    if not isinstance(value, Mapping) or len(value) > MAX_SERIES_MAP:
        raise JobParamsError(f"{where} must map at most {MAX_SERIES_MAP} series numbers to modalities")
    mapped: dict[str, str] = {}
    for key, modality in value.items():
        number = str(key) if isinstance(key, int) and not isinstance(key, bool) else key
        if not isinstance(number, str) or not number.isdigit() or int(number) > MAX_SERIES_NUMBER:
            raise JobParamsError(f"{where}: series numbers are whole numbers, got {key!r}")
        if modality not in MODALITIES:
            raise JobParamsError(f"{where}: series {number} must map to one of {', '.join(MODALITIES)}")
        if modality in mapped.values():
            raise JobParamsError(f"{where}: {modality} is given to more than one series")
        mapped[str(int(number))] = modality
    return mapped


def _check_ingest(params: dict[str, Any], internal: Mapping[str, Any] | None) -> None:
    """An ingest job's params: a pseudonym, a study uid, a group name and perhaps a series map; the
    archive comes from the server."""
    unknown = sorted(str(key) for key in set(params) - set(INGEST_PARAMS))
    if unknown:
        raise JobParamsError(
            f"unknown ingest parameter(s): {', '.join(unknown)}; expected {', '.join(INGEST_PARAMS)}"
        )
    for name, rule in (("patient_id", PATIENT_ID_RULE), ("study_uid", STUDY_UID_RULE)):
        if not isinstance(params.get(name), str) or not IDENTIFIER.match(params[name]):
            raise JobParamsError(f"params.{rule}")
    group = params.get("group")
    if not isinstance(group, str) or not group.strip() or len(group) > MAX_GROUP_CHARS:
        raise JobParamsError(f"params.group must be a group name of at most {MAX_GROUP_CHARS} characters")
    if "map" in params:
        params["map"] = check_series_map(params["map"])
    if "archive" not in (internal or {}):
        raise JobParamsError("an ingest job needs the uploaded archive (internal parameter archive)")


def _check_known(job_type: str, params: Mapping[str, Any]) -> None:
    """A segment or evaluate job's params: only those its runner reads; flags (``tta``, ``dicom``) boolean."""
    allowed = JOB_PARAMS[job_type]
    unknown = sorted(str(key) for key in set(params) - set(allowed))
    if unknown:
        raise JobParamsError(
            f"unknown {job_type} parameter(s): {', '.join(unknown)}; expected {', '.join(allowed)}"
        )
    for flag in ("tta", "dicom"):
        if not isinstance(params.get(flag, False), bool):
            raise JobParamsError(f"params.{flag} must be true or false, got {params[flag]!r}")


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
    elif type == "ingest":
        _check_ingest(params, internal)
    else:
        _check_known(type, params)
        if type == "segment" and study_id is None and "study_dir" not in params:
            raise JobParamsError("a segment job needs a study_id or params.study_dir")
        if type == "evaluate" and study_id is None and "data" not in params and "study_dir" not in params:
            raise JobParamsError("an evaluate job needs a study_id, params.data or params.study_dir")
    params |= check_internal(type, internal or {})
    check_json(params)
    return params
