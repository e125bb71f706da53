"""The parameter rules every job shares, and those of a train job; torch-free (the web validates with them).

The bottom of the validation layer: :mod:`bmcore.jobs.parent_params` checks each child of a sweep or
cross-validation with :func:`validate_train`, and :func:`bmcore.jobs.params.validate_job` puts the rules of
every job type together.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bmcore.jobs.errors import JobParamsError
from bmcore.training.config import ARCHS, TrainConfig

# Training parameters the worker takes out before building its TrainConfig (bmcore.jobs.runner.run_train):
# ``split`` an explicit split (a dict like split.json, or its path), ``evaluate_test`` scores the best
# model on the split's test studies, ``champion_eligible`` false keeps the registered version from taking
# the ``champion`` alias (cross-validation folds), and the bookkeeping of sweep and cross-validation children.
TRAIN_EXTRA_PARAMS = (
    "data",
    "split_seed",
    "split",
    "evaluate_test",
    "champion_eligible",
    "mlflow_parent_run_id",
    "config_hash",
)
PATH_PARAMS = ("data", "study_dir", "model", "split")
SPLIT_SIDES = ("train", "val", "test")


def _check_split(split: Mapping[str, Any]) -> None:
    """An explicit train split: ``{"studies": {"train": [...], "val": [...], "test": [...]}, ...}``."""
    studies = split.get("studies")
    if not isinstance(studies, Mapping) or set(studies) != set(SPLIT_SIDES):
        raise JobParamsError("params.split needs studies.train, studies.val and studies.test (lists of ids)")
    seen: set[str] = set()
    for side in SPLIT_SIDES:
        ids = studies[side]
        if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
            raise JobParamsError(f"params.split.studies.{side} must be a list of study ids")
        if side != "test" and not ids:
            raise JobParamsError(f"params.split.studies.{side} is empty")
        if seen & set(ids):
            raise JobParamsError(f"params.split puts study {sorted(seen & set(ids))[0]} on two sides")
        seen |= set(ids)


def check_shared(job_type: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The rules of every job type: a mapping, positive ``epochs``, a known ``arch``, non-empty paths
    (an explicit ``split`` of a train job checked whole); returns a plain copy."""
    if not isinstance(params, Mapping):
        raise JobParamsError(f"job params must be a mapping, got {params.__class__.__name__}")
    params = dict(params)
    if "epochs" in params:
        epochs = params["epochs"]
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
            raise JobParamsError(f"epochs must be a positive integer, got {epochs!r}")
    if "arch" in params and params["arch"] not in ARCHS:
        raise JobParamsError(f"unknown arch {params['arch']!r}; expected one of {', '.join(ARCHS)}")
    for key in PATH_PARAMS:
        if key == "split" and job_type == "train" and isinstance(params.get(key), Mapping):
            _check_split(params[key])
        elif key in params and (not isinstance(params[key], str) or not params[key].strip()):
            raise JobParamsError(f"params.{key} must be a non-empty string")
    return params


def check_train(params: Mapping[str, Any]) -> None:
    """A train job's own rules: ``data``, boolean flags, and valid :class:`TrainConfig` fields."""
    if "data" not in params:
        raise JobParamsError("a train job needs params.data (the data set folder or CSV manifest)")
    for flag in ("evaluate_test", "champion_eligible"):
        if not isinstance(params.get(flag, False), bool):
            raise JobParamsError(f"params.{flag} must be true or false")
    try:
        TrainConfig.from_dict({k: v for k, v in params.items() if k not in TRAIN_EXTRA_PARAMS})
    except (ValueError, TypeError) as exc:
        raise JobParamsError(f"invalid training parameters: {exc}") from None


def check_json(params: Mapping[str, Any]) -> None:
    """Job params are stored as JSON: no objects, NaN or infinities."""
    try:
        json.dumps(params, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise JobParamsError(f"job params must be JSON-serialisable: {exc}") from exc


def validate_train(params: Mapping[str, Any]) -> dict[str, Any]:
    """Every rule a train job's params must meet; a plain JSON-able copy (as ``validate_job("train", …)``)."""
    params = check_shared("train", params)
    check_train(params)
    check_json(params)
    return params
