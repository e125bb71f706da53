"""The parameters of a sweep or cross-validation parent, checked before its row is written; torch-free.

A sweep's search space (``grid`` or ``random`` with ``budget`` and ``seed``) is expanded here, every
child's training parameters are checked with the train rules, and each child gets its
:func:`config_hash`; the search-space syntax is described in :mod:`bmcore.jobs.parents`. A
cross-validation's folds are made on the worker (:mod:`bmcore.jobs.parents.folds`), which reads the
data set; here only its ``folds`` and ``base`` are checked.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from bmcore.jobs.errors import JobParamsError
from bmcore.jobs.train_params import MAX_SEED, TRAIN_EXTRA_PARAMS, refuse_internal, validate_train
from bmcore.training.config import TrainConfig

# The job types whose task fans out child train jobs (their task names: bmcore.jobs.queue.PARENT_TASK_NAMES).
PARENT_TYPES = ("sweep", "crossval")
SEARCHABLE = tuple(f.name for f in fields(TrainConfig))
FIELD_TYPES = {f.name: str(f.type) for f in fields(TrainConfig)}
FLOAT_FIELDS = frozenset(name for name, kind in FIELD_TYPES.items() if kind == "float")
LOG_UNIFORM = frozenset({"lr"})
RANGE_KINDS = ("uniform", "log_uniform")
MAX_CHILDREN = 100
MIN_FOLDS, MAX_FOLDS = 2, 10
SWEEP_KEYS = frozenset({"data", "grid", "random", "budget", "seed", "split_seed", "base", "promote_best"})
CROSSVAL_KEYS = frozenset({"data", "folds", "base", "seed"})


def is_parent_spec(job_type: str, params: Mapping[str, Any]) -> bool:
    """Whether ``params`` describe work for the parent's task (a search, or folds).

    Without it a sweep or crossval row is a bare parent that groups jobs queued by hand (``send=False``).
    """
    if job_type == "sweep":
        return "grid" in params or "random" in params
    if job_type == "crossval":
        return "folds" in params
    return False


def validate_parent(job_type: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Check a sweep or cross-validation request, every child's TrainConfig included; one-line errors."""
    params = dict(params)
    if job_type == "sweep":
        sweep_children(params)
    elif job_type == "crossval":
        check_crossval(params)
    else:
        raise JobParamsError(
            f"{job_type!r} is not a parent job type; expected one of {', '.join(PARENT_TYPES)}"
        )
    return params


def _check_integer(
    params: Mapping[str, Any], key: str, low: int | None = None, high: int | None = None
) -> None:
    value = params.get(key)
    if value is None:
        return
    bad = isinstance(value, bool) or not isinstance(value, int)
    bad = bad or (low is not None and value < low) or (high is not None and value > high)
    if bad:
        bounds = f" from {low} to {high}" if high is not None else " of at least 1" if low == 1 else ""
        raise JobParamsError(f"params.{key} must be an integer{bounds}, got {value!r}")


def _check_common(params: Mapping[str, Any], allowed: frozenset[str], kind: str) -> dict[str, Any]:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise JobParamsError(
            f"unknown {kind} parameter(s): {', '.join(unknown)}; expected {', '.join(sorted(allowed))}"
        )
    if "data" not in params:
        raise JobParamsError(f"a {kind} job needs params.data (the data set folder or CSV manifest)")
    for key in ("seed", "split_seed"):
        _check_integer(params, key, 0, MAX_SEED)
    base = params.get("base") or {}
    if not isinstance(base, Mapping):
        raise JobParamsError("params.base must be an object of training parameters")
    refuse_internal(base, "params.base")
    misplaced = sorted(set(base) & set(TRAIN_EXTRA_PARAMS))
    if misplaced:
        raise JobParamsError(f"params.base may hold training parameters only, not {', '.join(misplaced)}")
    return dict(base)


def check_child(child: dict[str, Any], label: str) -> None:
    """A child's client params: every rule and bound of a train job; the error names the child."""
    try:
        validate_train(child)
    except JobParamsError as exc:
        raise JobParamsError(f"{label}: {exc}") from None


def describe(values: Mapping[str, Any]) -> str:
    """``lr=0.001, arch=unet``: searched values as a label."""
    return ", ".join(f"{key}={value}" for key, value in values.items())


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# ------------------------------------------------------------------------------------------ search spaces


def _space(name: str, spec: Any) -> tuple[str, list[Any]]:
    """A random-search entry as ``(kind, values)``: choices, or a ``uniform``/``log_uniform`` range."""
    if isinstance(spec, Mapping):
        if len(spec) != 1 or next(iter(spec)) not in ("choice", *RANGE_KINDS):
            raise JobParamsError(
                f"random.{name} must be a list or one of {{choice|uniform|log_uniform: [...]}}"
            )
        kind, values = next(iter(spec.items()))
    elif isinstance(spec, list):
        is_range = name in FLOAT_FIELDS and len(spec) == 2 and all(_is_number(v) for v in spec)
        kind = ("log_uniform" if name in LOG_UNIFORM else "uniform") if is_range else "choice"
        values = spec
    else:
        raise JobParamsError(f"random.{name} must be a list of choices or a [low, high] range, got {spec!r}")
    if not isinstance(values, list) or not values:
        raise JobParamsError(f"random.{name} must list at least one value")
    if kind in RANGE_KINDS:
        if len(values) != 2 or not all(_is_number(v) for v in values) or values[0] > values[1]:
            raise JobParamsError(f"random.{name} must be a [low, high] range of numbers, got {values!r}")
        if kind == "log_uniform" and values[0] <= 0:
            raise JobParamsError(f"random.{name} is log-uniform: its range must be positive, got {values!r}")
    return kind, values


def _draw(rng: random.Random, kind: str, values: list[Any]) -> Any:
    if kind == "choice":
        return values[rng.randrange(len(values))]
    low, high = float(values[0]), float(values[1])
    value = (
        math.exp(rng.uniform(math.log(low), math.log(high)))
        if kind == "log_uniform"
        else rng.uniform(low, high)
    )
    return float(f"{value:.4g}")


def _grid_configs(grid: Mapping[str, Any], budget: int | None) -> list[dict[str, Any]]:
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise JobParamsError(f"grid.{name} must be a non-empty list of values")
        repeated = [v for i, v in enumerate(values) if any(v == w and type(v) is type(w) for w in values[:i])]
        if repeated:
            raise JobParamsError(f"grid.{name} lists {repeated[0]!r} twice")
    count = math.prod(len(values) for values in grid.values())
    if min(count, budget or count) > MAX_CHILDREN:
        raise JobParamsError(f"the grid has {count} configurations; at most {MAX_CHILDREN} (set a budget)")
    combos = itertools.islice(itertools.product(*grid.values()), budget or count)
    return [dict(zip(grid, combo, strict=True)) for combo in combos]


def _random_configs(space: Mapping[str, Any], budget: int | None, seed: int) -> list[dict[str, Any]]:
    if budget is None:
        raise JobParamsError("a random search needs params.budget (how many configurations to draw)")
    if budget > MAX_CHILDREN:
        raise JobParamsError(f"params.budget must be at most {MAX_CHILDREN}, got {budget}")
    spaces = {name: _space(name, spec) for name, spec in space.items()}
    rng = random.Random(seed)
    configs: list[dict[str, Any]] = []
    for _ in range(budget):
        values = {name: _draw(rng, kind, choices) for name, (kind, choices) in spaces.items()}
        if values not in configs:
            configs.append(values)
    return configs


def sweep_configs(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The searched values of every child, in order (deterministic: the same params, the same list)."""
    grid, space = params.get("grid"), params.get("random")
    if (grid is None) == (space is None):
        raise JobParamsError("a sweep needs exactly one of params.grid and params.random")
    _check_integer(params, "budget", low=1)
    names = grid if grid is not None else space
    kind = "grid" if grid is not None else "random"
    if not isinstance(names, Mapping) or not names:
        raise JobParamsError(f"params.{kind} must be a non-empty object of parameter names")
    unknown = sorted(set(names) - set(SEARCHABLE))
    if unknown:
        raise JobParamsError(
            f"cannot sweep unknown parameter(s): {', '.join(unknown)}; sweepable: {', '.join(SEARCHABLE)}"
        )
    if grid is not None:
        return _grid_configs(grid, params.get("budget"))
    return _random_configs(space, params.get("budget"), params.get("seed", 0))


# ------------------------------------------------------------------------------------------ children


def config_hash(child: Mapping[str, Any]) -> str:
    """A stable hash of what a train job computes: data, split (seed or explicit), test scoring and every
    TrainConfig field (defaults filled in, the worker's ``num_workers=0`` default, floats as floats)."""
    train = {k: v for k, v in child.items() if k not in TRAIN_EXTRA_PARAMS}
    train.setdefault("num_workers", 0)
    config = TrainConfig.from_dict(train).to_dict()
    config.update({name: float(config[name]) for name in FLOAT_FIELDS})
    key = {
        "data": str(child["data"]),
        "split_seed": int(child.get("split_seed", child.get("seed", 0))),
        "split": child.get("split"),
        "evaluate_test": bool(child.get("evaluate_test", False)),
        "train": config,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:24]


def sweep_children(params: Mapping[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``(searched values, child train params)`` per child, every child validated; one-line errors.

    A child's params are its client part plus its internal ``config_hash`` (server-made: the fan-out
    separates them again with :func:`bmcore.jobs.train_params.split_internal`)."""
    base = _check_common(params, SWEEP_KEYS, "sweep")
    if not isinstance(params.get("promote_best", False), bool):
        raise JobParamsError("params.promote_best must be true or false")
    children = []
    for index, values in enumerate(sweep_configs(params)):
        child = {"data": params["data"], "split_seed": params.get("split_seed", 0), **base, **values}
        check_child(child, f"sweep child {index + 1} ({describe(values)})")
        child["config_hash"] = config_hash(child)
        children.append((values, child))
    return children


def check_crossval(params: Mapping[str, Any]) -> dict[str, Any]:
    """A cross-validation request's ``folds`` and ``base``; returns the base training params."""
    base = _check_common(params, CROSSVAL_KEYS, "crossval")
    _check_integer(params, "folds", MIN_FOLDS, MAX_FOLDS)
    if params.get("folds") is None:
        raise JobParamsError(f"params.folds must be an integer from {MIN_FOLDS} to {MAX_FOLDS}")
    check_child({"data": params["data"], **base}, "crossval base")
    return base
