"""Experiments at scale: hyperparameter sweeps and k-fold cross-validation as parent jobs.

A parent job (``type="sweep"`` or ``"crossval"``) fans out into child ``train`` jobs (rows with
``parent_id``) queued on the ``gpu`` queue, so N GPU workers train N children at once; the parent then
ranks (sweep) or pools (cross-validation) what its children produced.

How a parent waits without holding a worker
-------------------------------------------
The parent's task (``bmseg.sweep`` / ``bmseg.crossval``, on the ``cpu`` queue) never waits in a loop. One
worker process may consume both queues (``bmseg worker --queues gpu,cpu``, solo pool): a parent polling
its children there would wait forever for children only that same worker could run. Instead the task
runs in *steps*, each short and safe to repeat; the rows hold the state (:func:`advance`):

``start``    (sent by ``submit_job``) claims the parent, opens its MLflow parent run, writes every child
             row — reusing finished ones, see below — and only then queues the children's tasks, so no
             child can end before all its siblings exist. Then it returns.
``check``    (sent by :func:`bmcore.jobs.runner.run_job` when the last child ends, see
             :func:`notify_parent`, and by ``cancel_job``) counts the children — progress is finished /
             total — and once all have ended aggregates (the ranked table, or the cross-validation
             summary) and ends the parent: its Result, artifacts, MLflow run, and ``champion`` on request.
``recheck``  the same as ``check``, then sent again with a countdown (:data:`RECHECK_SECONDS`): a
             backstop for children that ended outside ``run_job`` (the reaper failing a lost child, the
             broker down when the last child reported). One chain per parent, started by ``start``.

So a solo worker on both queues runs start → child → … → child → check in turn, and a pool of workers
trains the children in parallel while any of them takes the parent's short steps. Two children ending at
once may both send ``check``: aggregating twice is harmless (its MLflow writes are idempotent) and the
parent ends in one conditional ``UPDATE``. A parent is never heartbeaten, and the reaper leaves it alone
(its type is not in ``TASK_NAMES``); its children are ordinary train jobs, which the reaper watches.

Cancelling a parent (:func:`bmcore.jobs.lifecycle.cancel_job`) cancels its queued children at once and asks
running ones to stop; the parent ends ``cancelled``, with the table of what did finish,
at the check that follows.

Reuse
-----
Each child configuration has a stable hash (:func:`config_hash`: data path, split seed or explicit split,
test scoring, and every TrainConfig field with defaults filled in), kept in the child's params as
``config_hash``. Before writing a child the parent looks for a succeeded train job with that hash (of any
parent, or none) whose checkpoint still exists. If there is one, the child row is written already
``succeeded`` with a copy of that job's Result (metrics plus ``reused_from``: the job that trained it),
its MLflow run and registered version, and nothing is trained; the table marks the row ``reused: true``.
A reused child's MLflow run stays nested under the parent run of the sweep that trained it.

Search spaces (sweep params)
----------------------------
``grid``: ``{"lr": [1e-3, 3e-4], "arch": ["unet", "cnn"]}`` — every combination, in order (the last name
varies fastest), the first ``budget`` of them when a budget is given. ``random``: ``{"lr": [1e-4, 1e-2],
"dropout": [0.0, 0.5], "arch": ["unet", "cnn"]}`` with ``budget`` draws seeded by ``seed``: a two-number
list for a float parameter is a range (log-uniform for ``lr``, uniform otherwise, 4 significant
digits), any other list a set of choices; ``{"choice": [...]}``, ``{"uniform": [lo, hi]}`` and
``{"log_uniform": [lo, hi]}`` say it explicitly; a configuration drawn twice runs once. Any TrainConfig
field may be searched. ``base`` holds training parameters every child gets (searched values override
it); ``split_seed`` (default 0) gives every child the same patient split, so all are ranked on the same
validation patients; ``promote_best`` moves the ``champion`` alias to the best child's registered version.
Ranking: validation lesion-wise Dice (``val_lesion_dice``, higher first), then ``val_loss`` (lower
first); children that failed or were cancelled are listed after the ranked ones. A failed child does not
fail the sweep; a sweep whose children all failed fails.

Cross-validation (crossval params)
----------------------------------
``folds`` k (2..10) patient groups (:func:`bmcore.data.split.kfold_patients`, seeded by ``seed``): child i
tests on group i, validates on group i+1 (k = 2: on a fifth of the other patients) and trains on the
rest; the explicit split travels in its params (``split``). Each child scores its best model on its own
test fold (whole volumes, ``evaluate_test``), so the parent only pools: per-fold figures, mean ± std
(population, over the folds) of every numeric figure, and the out-of-fold lesion-wise metrics —
:func:`bmcore.metrics.summarize_cases` over every fold's test cases together, each study scored once.
A cross-validation succeeds only when every fold did: a partial one would not test every patient.

Torch-free at import: the web validates submissions with it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import random
import socket
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update

from bmcore.config import get_settings
from bmcore.db import FINISHED_STATUSES, Job, JobEvent, Result, session_scope, utcnow
from bmcore.jobs import lifecycle
from bmcore.jobs.lifecycle import TRAIN_EXTRA_PARAMS, JobParamsError, QueueUnavailable
from bmcore.jobs.queue import PARENT_TASK_NAMES, QUEUE_FOR_TASK, celery_client
from bmcore.training.config import TrainConfig

log = logging.getLogger(__name__)

PARENT_TYPES = tuple(PARENT_TASK_NAMES)
STEPS = ("start", "check", "recheck")
SEARCHABLE = tuple(f.name for f in fields(TrainConfig))
FIELD_TYPES = {f.name: str(f.type) for f in fields(TrainConfig)}
FLOAT_FIELDS = frozenset(name for name, kind in FIELD_TYPES.items() if kind == "float")
LOG_UNIFORM = frozenset({"lr"})
RANGE_KINDS = ("uniform", "log_uniform")
MAX_CHILDREN = 100
MIN_FOLDS, MAX_FOLDS = 2, 10
K2_VAL_FRACTION = 0.2
RECHECK_SECONDS = 60
RANK_BY = ("val_lesion_dice", "val_loss")
TABLE_FIGURES = ("val_lesion_dice", "val_loss", "val_dice_ET", "val_dice_TC", "val_dice_WT", "best_epoch")
SWEEP_KEYS = frozenset({"data", "grid", "random", "budget", "seed", "split_seed", "base", "promote_best"})
CROSSVAL_KEYS = frozenset({"data", "folds", "base", "seed"})
# A child written but not yet sent; the start step sends these once every sibling exists.
PENDING_MESSAGE = "written; queued once all its siblings exist"
RUN_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}


# ------------------------------------------------------------------------------------------ validation


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
        _check_crossval(params)
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
        _check_integer(params, key)
    base = params.get("base") or {}
    if not isinstance(base, Mapping):
        raise JobParamsError("params.base must be an object of training parameters")
    misplaced = sorted(set(base) & set(TRAIN_EXTRA_PARAMS))
    if misplaced:
        raise JobParamsError(f"params.base may hold training parameters only, not {', '.join(misplaced)}")
    return dict(base)


def _type_error(name: str, value: Any) -> str | None:
    """Why ``value`` cannot be TrainConfig field ``name`` (TrainConfig itself does not check types)."""
    kind = FIELD_TYPES.get(name)
    number = isinstance(value, int | float) and not isinstance(value, bool)
    checks = {
        "int": (isinstance(value, int) and not isinstance(value, bool), "a whole number"),
        "float": (number, "a number"),
        "bool": (isinstance(value, bool), "true or false"),
        "str": (isinstance(value, str), "a string"),
    }
    if kind in checks and not checks[kind][0]:
        return f"{name} must be {checks[kind][1]}, got {value!r}"
    if name == "modalities" and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return f"modalities must be a list of names, got {value!r}"
    return None


def _check_child(child: dict[str, Any], label: str) -> None:
    for name, value in child.items():
        problem = _type_error(name, value)
        if problem:
            raise JobParamsError(f"{label}: {problem}")
    try:
        lifecycle.validate_job("train", child)
    except JobParamsError as exc:
        raise JobParamsError(f"{label}: {exc}") from None


def _describe(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in values.items())


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


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


def sweep_configs(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The searched values of every child, in order (deterministic: the same params, the same list)."""
    grid, space = params.get("grid"), params.get("random")
    if (grid is None) == (space is None):
        raise JobParamsError("a sweep needs exactly one of params.grid and params.random")
    _check_integer(params, "budget", low=1)
    budget = params.get("budget")
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
        for name, values in grid.items():
            if not isinstance(values, list) or not values:
                raise JobParamsError(f"grid.{name} must be a non-empty list of values")
            repeated = [
                v for i, v in enumerate(values) if any(v == w and type(v) is type(w) for w in values[:i])
            ]
            if repeated:
                raise JobParamsError(f"grid.{name} lists {repeated[0]!r} twice")
        count = math.prod(len(values) for values in grid.values())
        if min(count, budget or count) > MAX_CHILDREN:
            raise JobParamsError(
                f"the grid has {count} configurations; at most {MAX_CHILDREN} (set a budget)"
            )
        combos = itertools.islice(itertools.product(*grid.values()), budget or count)
        return [dict(zip(grid, combo, strict=True)) for combo in combos]
    if budget is None:
        raise JobParamsError("a random search needs params.budget (how many configurations to draw)")
    if budget > MAX_CHILDREN:
        raise JobParamsError(f"params.budget must be at most {MAX_CHILDREN}, got {budget}")
    spaces = {name: _space(name, spec) for name, spec in space.items()}
    rng = random.Random(params.get("seed", 0))
    configs: list[dict[str, Any]] = []
    for _ in range(budget):
        values = {name: _draw(rng, kind, choices) for name, (kind, choices) in spaces.items()}
        if values not in configs:
            configs.append(values)
    return configs


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
    """``(searched values, child train params)`` per child, every child validated; one-line errors."""
    base = _check_common(params, SWEEP_KEYS, "sweep")
    if not isinstance(params.get("promote_best", False), bool):
        raise JobParamsError("params.promote_best must be true or false")
    children = []
    for index, values in enumerate(sweep_configs(params)):
        child = {"data": params["data"], "split_seed": params.get("split_seed", 0), **base, **values}
        _check_child(child, f"sweep child {index + 1} ({_describe(values)})")
        child["config_hash"] = config_hash(child)
        children.append((values, child))
    return children


def _check_crossval(params: Mapping[str, Any]) -> dict[str, Any]:
    base = _check_common(params, CROSSVAL_KEYS, "crossval")
    _check_integer(params, "folds", MIN_FOLDS, MAX_FOLDS)
    if params.get("folds") is None:
        raise JobParamsError(f"params.folds must be an integer from {MIN_FOLDS} to {MAX_FOLDS}")
    _check_child({"data": params["data"], **base}, "crossval base")
    return base


def crossval_splits(studies: Sequence[Any], folds: int, seed: int = 0) -> list[dict[str, Any]]:
    """One explicit split per fold from studies with ``study_id`` and ``patient_id``: fold i tests on
    patient group i, validates on group i+1 (k = 2: on a fifth of the other patients), trains on the rest."""
    from bmcore.data.split import kfold_patients

    patients = sorted({s.patient_id for s in studies})
    groups = kfold_patients(patients, folds, seed)
    splits = []
    for index, test in enumerate(groups):
        rest = [p for p in patients if p not in set(test)]
        if folds >= 3:
            val = groups[(index + 1) % folds]
        else:
            shuffled = sorted(rest)
            random.Random(seed * 1000 + index).shuffle(shuffled)
            val = sorted(shuffled[: max(1, round(K2_VAL_FRACTION * len(rest)))])
        train = [p for p in rest if p not in set(val)]
        if not train:
            raise ValueError(
                f"{folds}-fold cross-validation of {len(patients)} patients leaves fold {index} "
                "no training patient"
            )
        sides = {"train": train, "val": sorted(val), "test": sorted(test)}
        side_of = {p: side for side, members in sides.items() for p in members}
        study_ids: dict[str, list[str]] = {side: [] for side in sides}
        for study in studies:
            study_ids[side_of[study.patient_id]].append(study.study_id)
        splits.append({"seed": seed, "fold": index, "folds": folds, "patients": sides, "studies": study_ids})
    return splits


def crossval_children(params: Mapping[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``({"fold": i}, child train params)`` per fold; reads the data set (the worker's side)."""
    from bmcore import imaging

    base = _check_crossval(params)
    labelled = [ref for ref in imaging.find_studies(params["data"]) if ref.label is not None]
    children = []
    for split in crossval_splits(labelled, params["folds"], params.get("seed", 0)):
        # a fold model learns from (k-1)/k of the patients and is scored on its own fold: it estimates
        # performance; it is not a candidate to segment with, so it never takes ``champion``
        child = {
            "data": params["data"],
            **base,
            "split": split,
            "evaluate_test": True,
            "champion_eligible": False,
        }
        _check_child(child, f"crossval fold {split['fold']}")
        child["config_hash"] = config_hash(child)
        children.append(({"fold": split["fold"]}, child))
    return children


# ------------------------------------------------------------------------------------------ parsing


def parse_value(text: str) -> Any:
    """``true``/``false``, an integer, a finite number, else the text itself."""
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        if kind is int or math.isfinite(value):
            return value
    return text


def _entries(text: str, separators: str) -> list[tuple[str, str]]:
    entries = []
    for item in (part.strip() for part in _split(text, separators)):
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise JobParamsError(f"{item!r}: expected NAME=VALUE")
        entries.append((name.strip(), value.strip()))
    return entries


def _split(text: str, separators: str) -> list[str]:
    for separator in separators[1:]:
        text = text.replace(separator, separators[0])
    return text.split(separators[0])


def parse_assignments(text: str) -> dict[str, Any]:
    """``'epochs=2,size=64'`` (commas, semicolons or new lines between) → ``{"epochs": 2, "size": 64}``."""
    return {name: parse_value(value) for name, value in _entries(text or "", ",;\n")}


def parse_grid(text: str) -> dict[str, list[Any]]:
    """``'lr=1e-3,3e-4;arch=unet,cnn'`` (semicolons or new lines between names) → a sweep grid."""
    grid = {
        name: [parse_value(v) for v in values.split(",") if v.strip()]
        for name, values in _entries(text, ";\n")
    }
    if not grid:
        raise JobParamsError("the grid is empty; expected e.g. 'lr=1e-3,3e-4;arch=unet,cnn'")
    return grid


def parse_random(text: str) -> dict[str, Any]:
    """``'lr=1e-4:1e-2;arch=unet,cnn'`` → ranges (``low:high``; log-uniform for lr) and choices."""
    space: dict[str, Any] = {}
    for name, values in _entries(text, ";\n"):
        low, colon, high = values.partition(":")
        if colon:
            bounds = [parse_value(low), parse_value(high)]
            space[name] = {"log_uniform" if name in LOG_UNIFORM else "uniform": bounds}
        else:
            space[name] = {"choice": [parse_value(v) for v in values.split(",") if v.strip()]}
    if not space:
        raise JobParamsError("the random search space is empty; expected e.g. 'lr=1e-4:1e-2;arch=unet,cnn'")
    return space


# ------------------------------------------------------------------------------------------ messages


def send_parent_step(job_id: str, job_type: str, step: str, countdown: float | None = None) -> bool:
    """Queue one step of a parent's task (``start``, ``check``, ``recheck``); False when the broker refused
    (logged: the recheck chain, or the next child to end, sends it again)."""
    if step not in STEPS:
        raise ValueError(f"unknown parent step {step!r}; expected one of {', '.join(STEPS)}")
    task_name = PARENT_TASK_NAMES[job_type]
    try:
        celery_client().send_task(
            task_name,
            args=[job_id],
            kwargs={"step": step},
            queue=QUEUE_FOR_TASK[task_name],
            countdown=countdown,
            ignore_result=True,
        )
    except Exception as exc:
        log.warning("could not queue the %s step of job %s: %s: %s", step, job_id, type(exc).__name__, exc)
        return False
    return True


def notify_parent(job_id: str) -> None:
    """After job ``job_id`` ended: record its parent's progress and, once every sibling has ended too,
    send the parent's ``check`` step. Nothing for a job without a running parent."""
    with session_scope() as session:
        child = session.get(Job, job_id)
        if child is None or child.parent_id is None or child.status not in FINISHED_STATUSES:
            return
        parent = session.get(Job, child.parent_id)
        if parent is None or parent.status != "running" or not is_parent_spec(parent.type, parent.params):
            return
        parent_id, parent_type = parent.id, parent.type
        counts = dict(
            session.execute(
                select(Job.status, func.count()).where(Job.parent_id == parent_id).group_by(Job.status)
            ).all()
        )
        total = sum(counts.values())
        done = sum(n for status, n in counts.items() if status in FINISHED_STATUSES)
        lifecycle.update_progress(session, parent_id, done / total, f"{done}/{total} children finished")
    if done == total:
        send_parent_step(parent_id, parent_type, "check")


# ------------------------------------------------------------------------------------------ steps


def advance(job_id: str, step: str = "start", worker_host: str | None = None) -> str | None:
    """Run one step of a parent job (see the module docstring); returns its status, None if nothing to do."""
    if step not in STEPS:
        raise ValueError(f"unknown parent step {step!r}; expected one of {', '.join(STEPS)}")
    with session_scope() as session:
        job = lifecycle.get_job(session, job_id)
        status, job_type, params = job.status, job.type, dict(job.params)
    if status in FINISHED_STATUSES or job_type not in PARENT_TYPES or not is_parent_spec(job_type, params):
        return None
    if step == "start":
        if status == "queued":
            with session_scope() as session:
                if lifecycle.claim_job(session, job_id, worker_host or socket.gethostname()) is None:
                    return None
        try:
            fan_out(job_id)
        except Exception as exc:
            return _fail(job_id, exc, "could not start")
        send_parent_step(job_id, job_type, "recheck", countdown=RECHECK_SECONDS)
    elif status == "queued":
        return None
    elif step == "recheck":
        send_parent_step(job_id, job_type, "recheck", countdown=RECHECK_SECONDS)
    return check(job_id)


def fan_out(job_id: str) -> None:
    """Write every child row (reusing finished configurations), then queue the ones to train.

    Safe to repeat (a redelivered start step): children already written are found by ``config_hash``
    and only children still waiting to be sent (:data:`PENDING_MESSAGE`) are sent.
    """
    with session_scope() as session:
        parent = lifecycle.get_job(session, job_id)
        job_type, params, owner_id, run_id = (
            parent.type,
            dict(parent.params),
            parent.owner_id,
            parent.mlflow_run_id,
        )
    planned = sweep_children(params) if job_type == "sweep" else crossval_children(params)
    if run_id is None:
        run_id = _start_parent_run(job_id, job_type, params, len(planned))
    reused = 0
    with session_scope() as session:
        existing = session.scalars(select(Job.params).where(Job.parent_id == job_id)).all()
        existing_hashes = {(p or {}).get("config_hash") for p in existing}
        for _values, child in planned:
            if child["config_hash"] in existing_hashes or lifecycle.is_cancel_requested(session, job_id):
                continue
            child = child | {"mlflow_parent_run_id": run_id}
            source = _reusable(session, child["config_hash"])
            if source is not None:
                _write_reused(session, job_id, owner_id, child, source)
                reused += 1
            else:  # submit_job(send=False), with the pending mark in the same commit
                session.add(
                    Job(
                        type="train",
                        params=lifecycle.validate_job("train", child),
                        status="queued",
                        owner_id=owner_id,
                        parent_id=job_id,
                        message=PENDING_MESSAGE,
                    )
                )
                session.commit()
        pending = session.scalars(
            select(Job)
            .where(Job.parent_id == job_id, Job.status == "queued", Job.message == PENDING_MESSAGE)
            .order_by(Job.created_at, Job.id)
        ).all()
        sent = 0
        for row in pending:
            if lifecycle.is_cancel_requested(session, job_id):
                break
            try:
                lifecycle.send_job(session, row)
            except QueueUnavailable:
                continue  # the child is marked failed ("could not queue"); the table reports it
            row.message = "queued"
            session.commit()
            sent += 1
        statuses = session.scalars(select(Job.status).where(Job.parent_id == job_id)).all()
        done = sum(1 for status in statuses if status in FINISHED_STATUSES)
        message = f"fanned out {len(statuses)} children: {sent} queued, {reused} reused"
        lifecycle.update_progress(session, job_id, done / len(statuses) if statuses else 0.0, message)


def _reusable(session, digest: str) -> Job | None:
    """The newest succeeded train job with this ``config_hash`` whose checkpoint still exists."""
    query = (
        select(Job)
        .where(
            Job.type == "train", Job.status == "succeeded", Job.params["config_hash"].as_string() == digest
        )
        .order_by(Job.finished_at.desc())
    )
    for job in session.scalars(query):
        if job.result is not None and Path(str(job.result.artifacts.get("checkpoint", ""))).is_file():
            return job
    return None


def _write_reused(session, parent_id: str, owner_id: int | None, child: dict[str, Any], source: Job) -> Job:
    lifecycle.validate_job("train", child)
    origin = source.result.metrics.get("reused_from") or source.id
    now = utcnow()
    row = Job(
        type="train",
        params=child,
        status="succeeded",
        progress=1.0,
        owner_id=owner_id,
        parent_id=parent_id,
        started_at=now,
        finished_at=now,
        heartbeat_at=now,
        mlflow_run_id=source.mlflow_run_id,
        message=f"reused the result of job {origin} (same config_hash); nothing trained",
    )
    session.add(row)
    session.flush()
    metrics = dict(source.result.metrics) | {"reused_from": origin}
    session.add(Result(job_id=row.id, metrics=metrics, artifacts=dict(source.result.artifacts)))
    session.add(JobEvent(job_id=row.id, level="info", message=row.message))
    session.commit()
    return row


def check(job_id: str) -> str | None:
    """Count the children, pass on a cancel, record progress; aggregate and end the parent once all ended."""
    with session_scope() as session:
        parent = lifecycle.get_job(session, job_id)
        if parent.status != "running":
            return None
        cancel = parent.cancel_requested
        children = _children(session, job_id)
        if cancel:
            for child in children:
                if child.status not in FINISHED_STATUSES and not child.cancel_requested:
                    lifecycle.cancel_job(session, child.id)
            children = _children(session, job_id)
        done = sum(1 for child in children if child.status in FINISHED_STATUSES)
        running = sum(1 for child in children if child.status == "running")
        total, progress = len(children), parent.progress
        if total and done < total and abs(done / total - progress) > 1e-9:
            lifecycle.update_progress(
                session, job_id, done / total, f"{done}/{total} children finished, {running} running"
            )
    if done == total and (total or cancel):
        return finish_parent(job_id)
    return "running"


def _children(session, job_id: str) -> list[Job]:
    query = select(Job).where(Job.parent_id == job_id).order_by(Job.created_at, Job.id)
    children = list(session.scalars(query.execution_options(populate_existing=True)))
    session.commit()
    return children


# ------------------------------------------------------------------------------------------ aggregation


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return value


def _child_record(child: Job, label: dict[str, Any]) -> dict[str, Any]:
    metrics = dict(child.result.metrics) if child.result is not None else {}
    return {
        "job_id": child.id,
        "status": child.status,
        "params": label,
        "metrics": metrics,
        "reused_from": metrics.get("reused_from"),
        "artifacts": dict(child.result.artifacts) if child.result is not None else {},
        "error": child.error,
        "split": child.params.get("split"),
    }


def rank_children(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The ranked table: succeeded children by ``val_lesion_dice`` (higher first; missing last), then
    ``val_loss`` (lower first); then the others in their order, unranked. Pure: takes plain records
    ``{"job_id", "status", "params", "metrics", "reused_from", "error"}``."""
    rows = []
    for record in records:
        metrics = record.get("metrics") or {}
        row = {
            "rank": None,
            "job_id": record["job_id"],
            "status": record["status"],
            "reused": bool(record.get("reused_from")),
            "reused_from": record.get("reused_from"),
            "params": dict(record.get("params") or {}),
        }
        row |= {key: _number(metrics.get(key)) for key in TABLE_FIGURES}
        row |= {
            "epochs_run": _number(metrics.get("epochs_run")),
            "run_id": metrics.get("run_id"),
            "registered": metrics.get("registered"),
            "error": record.get("error"),
        }
        rows.append(row)

    def key(row: dict[str, Any]) -> tuple:
        dice, loss = row["val_lesion_dice"], row["val_loss"]
        return (dice is None, -(dice or 0.0), loss is None, loss or 0.0)

    ranked = sorted((r for r in rows if r["status"] == "succeeded"), key=key)
    for rank, row in enumerate(ranked, 1):
        row["rank"] = rank
    return ranked + [r for r in rows if r["status"] != "succeeded"]


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/").replace("\n", " ")


def _markdown(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows])


def ranking_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    header = [
        "rank",
        "job",
        "status",
        "reused",
        "params",
        "val lesion Dice",
        "val loss",
        "val Dice TC",
        "epochs",
        "error",
    ]
    body = [
        [
            r["rank"],
            str(r["job_id"])[:8],
            r["status"],
            "yes" if r["reused"] else "no",
            _describe(r["params"]),
            r["val_lesion_dice"],
            r["val_loss"],
            r["val_dice_TC"],
            r["epochs_run"],
            (r["error"] or "")[:80] or None,
        ]
        for r in rows
    ]
    note = (
        "Ranked by validation lesion-wise Dice, then validation loss; "
        "reused = the result of an identical earlier run."
    )
    return f"{_markdown(header, body)}\n\n{note}\n"


def _finite_or_none(value: Any) -> Any:
    """NaN and infinities as None (PostgreSQL's JSON, and browsers, refuse them)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _numeric_figures(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in metrics.items() if _number(value) is not None}


def crossval_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-fold rows, mean ± std (population) over the succeeded folds of every numeric figure, and the
    out-of-fold metrics over every succeeded fold's test cases pooled (``test_cases`` artifacts)."""
    from bmcore import metrics as metric_functions

    folds, cases, skipped, figures = [], [], [], {}
    for record in records:
        split = record.get("split") or {}
        row = {
            "fold": record["params"].get("fold"),
            "job_id": record["job_id"],
            "status": record["status"],
            "reused": bool(record.get("reused_from")),
            "test_patients": (split.get("patients") or {}).get("test", []),
            "test_studies": (split.get("studies") or {}).get("test", []),
            "figures": _numeric_figures(record.get("metrics") or {}),
            "error": record.get("error"),
        }
        folds.append(row)
        if record["status"] != "succeeded":
            continue
        for key, value in row["figures"].items():
            figures.setdefault(key, []).append(value)
        path = (record.get("artifacts") or {}).get("test_cases")
        if path and Path(path).is_file():
            scored = json.loads(Path(path).read_text())
            cases.extend(scored.get("cases", []))
            skipped.extend(scored.get("skipped", []))
    mean = {key: sum(values) / len(values) for key, values in figures.items()}
    std = {
        key: math.sqrt(sum((v - mean[key]) ** 2 for v in values) / len(values))
        for key, values in figures.items()
    }
    oof = metric_functions.summarize_cases(cases) if cases else None
    tested = [study for row in folds for study in row["test_studies"]]
    return {
        "folds": folds,
        "mean": mean,
        "std": std,
        "n_folds": len(folds),
        "folds_succeeded": sum(1 for row in folds if row["status"] == "succeeded"),
        "oof": {key: _finite_or_none(value) for key, value in oof.items() if key != "confusion"}
        if oof
        else None,
        "oof_confusion": oof["confusion"] if oof else None,
        "oof_studies": len(cases),
        "oof_skipped": skipped,
        "every_study_tested_once": len(tested) == len(set(tested))
        and len(cases) + len(skipped) == len(tested),
    }


def crossval_markdown(summary: Mapping[str, Any]) -> str:
    keys = [
        k
        for k in ("val_lesion_dice", "val_loss", "test_lesion_dice_TC", "test_dice_TC", "test_dice_WT")
        if k in summary["mean"]
    ]
    header = ["fold", "job", "status", "test patients", *keys]
    rows = [
        [
            f["fold"],
            f["job_id"][:8],
            f["status"],
            len(f["test_patients"]),
            *[f["figures"].get(k) for k in keys],
        ]
        for f in summary["folds"]
    ]
    rows.append(
        ["mean ± std", "", "", "", *[f"{summary['mean'][k]:.4f} ± {summary['std'][k]:.4f}" for k in keys]]
    )
    text = _markdown(header, rows)
    if summary["oof"]:
        from bmcore.evaluation import headline_rows

        text += "\n\nOut-of-fold, every test fold pooled "
        text += f"({summary['oof_studies']} studies):\n\n"
        text += _markdown(["figure", "value", "convention"], [list(r) for r in headline_rows(summary["oof"])])
    return text + "\n"


def finish_parent(job_id: str) -> str | None:
    """Aggregate the ended children into the parent's Result, artifacts and MLflow run, and end it.

    Safe to run twice at once: the Result is an upsert, MLflow writes are idempotent, and the parent ends
    in one conditional UPDATE (None for the run that lost it).
    """
    with session_scope() as session:
        parent = lifecycle.get_job(session, job_id)
        if parent.status != "running":
            return None
        job_type, params, run_id, cancel = (
            parent.type,
            dict(parent.params),
            parent.mlflow_run_id,
            parent.cancel_requested,
        )
        children = _children(session, job_id)
        labels = _labels(job_type, params, children)
        records = [
            _child_record(child, labels.get(child.params.get("config_hash"), {})) for child in children
        ]
    try:
        out = get_settings().results_dir / "jobs" / job_id
        out.mkdir(parents=True, exist_ok=True)
        if job_type == "sweep":
            metrics, artifacts, status, error = _sweep_outcome(records, out, cancel)
        else:
            metrics, artifacts, status, error = _crossval_outcome(records, out, cancel)
        if run_id:
            _close_parent_run(run_id, status, metrics, [Path(p) for p in artifacts.values()])
        if job_type == "sweep" and status == "succeeded" and params.get("promote_best"):
            metrics["promoted"] = _promote(metrics["ranking"])
        with session_scope() as session:
            lifecycle.record_result(session, job_id, metrics, artifacts)
    except Exception as exc:
        return _fail(job_id, exc, "could not aggregate its children")
    return status if _end(job_id, status, error, _summary_line(job_type, metrics)) else None


def _labels(job_type: str, params: Mapping[str, Any], children: list[Job]) -> dict[str, dict[str, Any]]:
    """config_hash → the searched values (sweep) or the fold (crossval), for the table."""
    if job_type == "sweep":
        names = list(params.get("grid") or params.get("random") or {})
        return {
            child.params.get("config_hash"): {k: child.params[k] for k in names if k in child.params}
            for child in children
        }
    return {
        child.params.get("config_hash"): {"fold": (child.params.get("split") or {}).get("fold")}
        for child in children
    }


def _sweep_outcome(records, out: Path, cancel: bool):
    rows = rank_children(records)
    counts = {status: sum(1 for r in rows if r["status"] == status) for status in FINISHED_STATUSES}
    best = rows[0] if rows and rows[0]["rank"] == 1 else None
    metrics = {
        "children": len(rows),
        "succeeded": counts["succeeded"],
        "failed": counts["failed"],
        "cancelled": counts["cancelled"],
        "reused": sum(1 for r in rows if r["reused"]),
        "rank_by": list(RANK_BY),
        "best_job_id": best["job_id"] if best else None,
        "best_val_lesion_dice": best["val_lesion_dice"] if best else None,
        "best_params": best["params"] if best else None,
        "ranking": rows,
    }
    (out / "ranking.json").write_text(json.dumps({"rank_by": list(RANK_BY), "rows": rows}, indent=1))
    (out / "ranking.md").write_text(ranking_markdown(rows))
    artifacts = {"ranking": str(out / "ranking.json"), "ranking_md": str(out / "ranking.md")}
    if cancel:
        return metrics, artifacts, "cancelled", None
    if best is None:
        errors = [r["error"] for r in rows if r["error"]]
        error = f"all {len(rows)} children failed" + (f"; first error: {errors[0]}" if errors else "")
        return metrics, artifacts, "failed", error
    return metrics, artifacts, "succeeded", None


def _crossval_outcome(records, out: Path, cancel: bool):
    summary = crossval_summary(records)
    metrics = dict(summary)
    for key in ("val_lesion_dice", "test_lesion_dice_TC"):
        if key in summary["mean"]:
            metrics[f"mean_{key}"], metrics[f"std_{key}"] = summary["mean"][key], summary["std"][key]
    if summary["oof"]:
        metrics["oof_lesion_dice_TC"] = summary["oof"].get("lesion_dice_TC")
    (out / "crossval.json").write_text(json.dumps(summary, indent=1))
    (out / "crossval.md").write_text(crossval_markdown(summary))
    artifacts = {"crossval": str(out / "crossval.json"), "crossval_md": str(out / "crossval.md")}
    if cancel:
        return metrics, artifacts, "cancelled", None
    failed = [f for f in summary["folds"] if f["status"] != "succeeded"]
    if failed:
        first = failed[0]
        error = f"{len(failed)} of {len(summary['folds'])} folds did not succeed; "
        error += f"fold {first['fold']} {first['status']}"
        error += f": {first['error']}" if first["error"] else ""
        return metrics, artifacts, "failed", error
    return metrics, artifacts, "succeeded", None


def _summary_line(job_type: str, metrics: Mapping[str, Any]) -> str:
    if job_type == "sweep":
        line = (
            f"{metrics['succeeded']} of {metrics['children']} children succeeded ({metrics['reused']} reused)"
        )
        if metrics.get("best_job_id"):
            line += f"; best {metrics['best_job_id'][:8]}"
            if metrics.get("best_val_lesion_dice") is not None:
                line += f", val_lesion_dice {metrics['best_val_lesion_dice']:.4f}"
        return line
    line = f"{metrics['folds_succeeded']} of {metrics['n_folds']} folds succeeded"
    if metrics.get("mean_val_lesion_dice") is not None:
        line += (
            f"; val_lesion_dice {metrics['mean_val_lesion_dice']:.4f} ± {metrics['std_val_lesion_dice']:.4f}"
        )
    return line


def _promote(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Move ``champion`` to the best child's registered version; None when it has none."""
    from bmcore import tracking

    best = rows[0]
    registered = best.get("registered") or {}
    if not registered.get("name") or registered.get("version") is None:
        return None
    tracking.configure()
    tracking.set_champion(registered["name"], registered["version"])
    return {"name": registered["name"], "version": registered["version"], "job_id": best["job_id"]}


def _start_parent_run(job_id: str, job_type: str, params: Mapping[str, Any], children: int) -> str:
    from bmcore import tracking

    tracking.configure()
    experiment = tracking.get_or_create_experiment(tracking.experiment_name_for(params["data"]))
    logged = dict(params) | {"children": children}
    tags = {"bmseg.job_id": job_id, "bmseg.job_type": job_type}
    run_id = tracking.start_run(experiment, f"{job_type}-{job_id[:8]}", logged, tags)
    with session_scope() as session:
        lifecycle.get_job(session, job_id).mlflow_run_id = run_id
        session.commit()
    return run_id


def _close_parent_run(run_id: str, status: str, metrics: Mapping[str, Any], files: list[Path]) -> None:
    from bmcore import tracking

    tracking.configure()
    figures = _numeric_figures(metrics)
    for prefix in ("mean", "std", "oof"):
        figures |= {f"cv_{prefix}_{k}": v for k, v in _numeric_figures(metrics.get(prefix) or {}).items()}
    tracking.log_metrics(run_id, figures, step=0)
    for path in files:
        if path.is_file():
            tracking.log_artifact(run_id, path)
    tracking.end_run(run_id, RUN_STATUS[status])


def _end(job_id: str, status: str, error: str | None, summary: str) -> bool:
    """End a running parent in one conditional UPDATE; False when it had already ended."""
    now = utcnow()
    first_line = error.strip().splitlines()[0] if error and error.strip() else ""
    message = f"{status}: {first_line or summary}"
    values: dict[str, Any] = {
        "status": status,
        "finished_at": now,
        "heartbeat_at": now,
        "error": error,
        "message": message,
    }
    if status == "succeeded":
        values["progress"] = 1.0
    with session_scope() as session:
        changed = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running")
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if changed.rowcount != 1:
            session.rollback()
            return False
        session.add(JobEvent(job_id=job_id, level="error" if status == "failed" else "info", message=message))
    return True


def _fail(job_id: str, exc: Exception, what: str) -> str | None:
    """End a parent as failed after an error of its own: children not yet ended are cancelled."""
    error = f"{what}: {type(exc).__name__}: {exc}".strip().splitlines()[0]
    log.warning("parent job %s %s", job_id, error)
    with session_scope() as session:
        lifecycle.log_event(session, job_id, traceback.format_exc()[-4000:], level="debug")
        for child in _children(session, job_id):
            if child.status not in FINISHED_STATUSES:
                lifecycle.cancel_job(session, child.id)
        run_id = lifecycle.get_job(session, job_id).mlflow_run_id
    if run_id:
        try:
            from bmcore import tracking

            tracking.configure()
            tracking.end_run(run_id, "FAILED")
        except Exception as run_error:  # the parent fails with its own error, not MLflow's
            log.warning("could not end MLflow run %s: %s", run_id, run_error)
    return "failed" if _end(job_id, "failed", error, error) else None
