"""The parameter rules every job shares, a train job's, the one table of training bounds, and the params
only the server sets; torch-free (the web validates with them).

The bottom of the validation layer: :mod:`bmcore.jobs.parent_params` checks each child of a sweep or
cross-validation with :func:`validate_train` (so a child obeys the same table as a train job), and
:func:`bmcore.jobs.params.validate_job` puts the rules of every job type together. The upper bounds are
settings (``BMSEG_MAX_EPOCHS``, …, :class:`bmcore.config.Settings`), read when a job is checked.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from bmcore.config import get_settings
from bmcore.jobs.errors import JobParamsError
from bmcore.training.config import ARCHS, MAX_CONTEXT_SLICES, TrainConfig

# Set by server code only, refused from clients: ``config_hash`` finds a sweep child's earlier result (reused
# within its owner only), ``mlflow_parent_run_id`` nests a child's run under its parent's,
# ``champion_eligible`` false keeps a cross-validation fold from taking ``champion``, ``dataset`` names the
# registered data set that ``data`` was resolved from; ``archive`` is the DICOM archive the web stored for
# an ingest job (``folder/file.zip`` relative to the uploads folder; the job removes it).
TRAIN_INTERNAL_PARAMS = ("config_hash", "mlflow_parent_run_id", "champion_eligible", "dataset")
INTERNAL_PARAMS = (*TRAIN_INTERNAL_PARAMS, "archive")
# What a train job reads besides TrainConfig's fields (bmcore.jobs.runner.run_train): the data, ``split_seed``
# or an explicit ``split`` (a dict like split.json, or its path), ``evaluate_test`` scores the best model on
# the split's test studies.
TRAIN_CLIENT_PARAMS = ("data", "split_seed", "split", "evaluate_test")
TRAIN_EXTRA_PARAMS = TRAIN_CLIENT_PARAMS + TRAIN_INTERNAL_PARAMS
# The internal params each job type may carry (other types: ``dataset`` only); a parent's pass on to its
# children (bmcore.jobs.parents.steps.fan_out).
INTERNAL_FOR = {
    "train": TRAIN_INTERNAL_PARAMS,
    "sweep": ("dataset", "champion_eligible"),
    "crossval": ("dataset", "champion_eligible"),
    "ingest": ("archive",),
}
PATH_PARAMS = ("data", "study_dir", "model", "split")
ARCHIVE_PARAM = re.compile(r"\.?[A-Za-z0-9_-]{1,64}/[A-Za-z0-9_-]{1,64}\.zip")  # folder/file.zip, no ..
SPLIT_SIDES = ("train", "val", "test")
MAX_PATH_CHARS = 4096
MAX_SEED = 2**32 - 1
MAX_CUDA_INDEX = 15
MAX_MIN_COMPONENT_VOXELS = 100_000  # a 5.8 cm sphere at 1 mm: beyond it would drop real lesions wholesale
MAX_VAL_SLICES = 100_000  # the validation slices of ~650 whole BraTS studies
DEVICES = ("auto", "cpu", "cuda")


class Rule(NamedTuple):
    """A field's type and inclusive bounds; ``high`` is a number or the name of the Settings limit."""

    kind: str  # int, float, bool, str, names (a list of distinct strings), device
    low: float | None = None
    high: float | str | None = None


# Every TrainConfig field (a test keeps the two in step). Lower bounds TrainConfig already checks keep its
# messages; choices (arch, loss, modalities) and ``size`` being a multiple of 32 are TrainConfig's too.
TRAIN_RULES: dict[str, Rule] = {
    "arch": Rule("str"),
    "recipe": Rule("str"),  # a name of RECIPES (TrainConfig)
    "epochs": Rule("int", 1, "max_epochs"),
    "batch_size": Rule("int", 1, "max_batch_size"),
    "lr": Rule("float"),  # positive and finite (TrainConfig)
    "loss": Rule("str"),
    "class_weights": Rule("str"),  # none, inverse_frequency or "w0,w1,w2,w3" (TrainConfig)
    "size": Rule("int", 32, "max_image_size"),
    "crop": Rule("int", 0, "max_image_size"),  # 0: whole slices; a multiple of 2**depth (TrainConfig)
    "context_slices": Rule("int", 0, MAX_CONTEXT_SLICES),
    "min_component_voxels": Rule("int", 0, MAX_MIN_COMPONENT_VOXELS),
    "tta": Rule("bool"),
    "base_channels": Rule("int", 1, "max_base_channels"),
    "depth": Rule("int", 1, "max_depth"),
    "dropout": Rule("float"),  # in [0, 1) (TrainConfig)
    "modalities": Rule("names"),
    "lesion_fraction": Rule("float", 0.0, 1.0),
    "lesion_balance": Rule("bool"),
    "val_slices": Rule("int", 0, MAX_VAL_SLICES),
    "samples_per_epoch": Rule("int", 0, "max_samples_per_epoch"),  # 0: one pass over the training slices
    "augment": Rule("bool"),
    "early_stopping_patience": Rule("int", 1, "max_epochs"),  # 0 would stop before the first epoch
    "plateau_patience": Rule("int", 0, "max_epochs"),
    "plateau_factor": Rule("float", 0.01, 0.99),
    "seed": Rule("int", 0, MAX_SEED),
    "num_workers": Rule("int", 0, "max_num_workers"),
    "device": Rule("device"),
    "mixed_precision": Rule("bool"),
    "channels_last": Rule("bool"),
    "compile": Rule("bool"),
}
EXTRA_RULES: dict[str, Rule] = {"split_seed": Rule("int", 0, MAX_SEED), "evaluate_test": Rule("bool")}


def _is_device(value: Any) -> bool:
    if value in DEVICES:
        return True
    index = re.fullmatch(r"cuda:(0|[1-9][0-9]?)", value) if isinstance(value, str) else None
    return index is not None and int(index.group(1)) <= MAX_CUDA_INDEX


def type_problem(name: str, rule: Rule, value: Any) -> str | None:
    """Why ``value`` is not of ``rule``'s type (no floats for integers, no booleans for numbers)."""
    integer = isinstance(value, int) and not isinstance(value, bool)
    if rule.kind == "int" and not integer:
        return f"{name} must be {'a positive integer' if rule.low == 1 else 'a whole number'}, got {value!r}"
    finite = isinstance(value, float) and math.isfinite(value)
    problems = {
        "float": (integer or finite, "a number"),
        "bool": (isinstance(value, bool), "true or false"),
        "str": (isinstance(value, str), "a string"),
        "names": (
            isinstance(value, list)
            and all(isinstance(v, str) for v in value)
            and len(set(value)) == len(value),
            "a list of distinct names",
        ),
        "device": (_is_device(value), f"auto, cpu, cuda or cuda:N with N from 0 to {MAX_CUDA_INDEX}"),
    }
    ok, expected = problems.get(rule.kind, (True, ""))
    return None if ok else f"{name} must be {expected}, got {value!r}"


def range_problem(name: str, rule: Rule, value: Any) -> str | None:
    """Why the number ``value`` lies outside ``rule``'s bounds (the setting that holds a limit named)."""
    if rule.kind not in ("int", "float"):
        return None
    high = getattr(get_settings(), rule.high) if isinstance(rule.high, str) else rule.high
    if (rule.low is None or value >= rule.low) and (high is None or value <= high):
        return None
    setting = f" (BMSEG_{rule.high.upper()})" if isinstance(rule.high, str) else ""
    if rule.low is not None and high is not None:
        bounds = f"from {rule.low} to {high}{setting}"
    else:
        bounds = f"at least {rule.low}" if high is None else f"at most {high}{setting}"
    return f"{name} must be {bounds}, got {value!r}"


def refuse_internal(params: Mapping[str, Any], where: str = "params") -> None:
    """Refuse the params only the server sets: ``params.config_hash is set by the server; …``."""
    sent = [f"{where}.{key}" for key in INTERNAL_PARAMS if key in params]
    if sent:
        verb, them = ("is", "it") if len(sent) == 1 else ("are", "them")
        raise JobParamsError(f"{', '.join(sent)} {verb} set by the server; do not send {them}")


def check_internal(job_type: str, internal: Mapping[str, Any]) -> dict[str, Any]:
    """The internal params server code gives a job (``submit_job(internal=…)``), checked for type."""
    allowed = INTERNAL_FOR.get(job_type, ("dataset",))
    unknown = sorted(set(internal) - set(allowed))
    if unknown:
        raise JobParamsError(
            f"internal parameter(s) {', '.join(unknown)} do not apply to a {job_type} job; "
            f"expected {', '.join(allowed)}"
        )
    for key, value in internal.items():
        if key == "champion_eligible":
            ok = isinstance(value, bool)
        elif key == "config_hash":
            ok = isinstance(value, str) and re.fullmatch(r"[0-9a-f]{1,64}", value) is not None
        elif key == "archive":
            ok = isinstance(value, str) and ARCHIVE_PARAM.fullmatch(value) is not None
        else:
            ok = isinstance(value, str) and bool(value.strip()) and len(value) <= 256
        if not ok:
            raise JobParamsError(f"internal parameter {key} must not be {value!r}")
    return dict(internal)


def split_internal(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Server-made params (a sweep's planned child, a stored row) as ``(client part, internal part)``."""
    client = {k: v for k, v in params.items() if k not in INTERNAL_PARAMS}
    return client, {k: v for k, v in params.items() if k in INTERNAL_PARAMS}


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
    """The rules of every job type: a mapping, no internal params, non-empty paths (an explicit ``split``
    of a train or evaluate job checked whole); returns a plain copy."""
    if not isinstance(params, Mapping):
        raise JobParamsError(f"job params must be a mapping, got {params.__class__.__name__}")
    params = dict(params)
    refuse_internal(params)
    for key in PATH_PARAMS:
        value = params.get(key)
        if key == "split" and job_type in ("train", "evaluate") and isinstance(value, Mapping):
            _check_split(value)
        elif key in params and (
            not isinstance(value, str) or not value.strip() or len(value) > MAX_PATH_CHARS
        ):
            raise JobParamsError(
                f"params.{key} must be a non-empty string of at most {MAX_PATH_CHARS} characters"
            )
    return params


def check_train(params: Mapping[str, Any]) -> None:
    """A train job's own rules: ``data``, then every field's type, TrainConfig's own checks, the bounds."""
    if "data" not in params:
        raise JobParamsError("a train job needs params.data (the data set folder or CSV manifest)")
    rules = TRAIN_RULES | EXTRA_RULES
    present = [(name, rules[name], value) for name, value in params.items() if name in rules]
    for name, rule, value in present:
        problem = type_problem(name, rule, value)
        if problem:
            raise JobParamsError(problem)
    if "arch" in params and params["arch"] not in ARCHS:
        raise JobParamsError(f"unknown arch {params['arch']!r}; expected one of {', '.join(ARCHS)}")
    for name, rule, value in present:  # depth first: TrainConfig's crop check reads 2**depth
        problem = range_problem(name, rule, value) if name == "depth" else None
        if problem:
            raise JobParamsError(problem)
    try:
        TrainConfig.from_dict({k: v for k, v in params.items() if k not in TRAIN_EXTRA_PARAMS})
    except (ValueError, TypeError) as exc:
        raise JobParamsError(f"invalid training parameters: {exc}") from None
    for name, rule, value in present:
        problem = range_problem(name, rule, value)
        if problem:
            raise JobParamsError(problem)


def check_json(params: Mapping[str, Any]) -> None:
    """Job params are stored as JSON: no objects, NaN or infinities."""
    try:
        json.dumps(params, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise JobParamsError(f"job params must be JSON-serialisable: {exc}") from exc


def validate_train(params: Mapping[str, Any]) -> dict[str, Any]:
    """Every rule a train job's client params must meet; a plain JSON-able copy (as ``validate_job``)."""
    params = check_shared("train", params)
    check_train(params)
    check_json(params)
    return params
