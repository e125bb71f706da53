"""MLflow experiments and runs: one experiment per data set (``bmseg/<folder name>``), one run per job.

Every call names its run by ``run_id`` through an explicit client, so several runs (threads, jobs) can be
tracked from one process. mlflow is imported inside the functions (see :mod:`bmcore.tracking.client`).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bmcore.config import Settings, get_settings
from bmcore.tracking.client import configure, is_local_path, local_path, mlflow_client

RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")
_MAX_PARAM_LENGTH = 6000  # MLflow's limit on a parameter value
_REMOTE_TRACKING_SCHEMES = ("http", "https", "databricks", "databricks-uc")


# ------------------------------------------------------------------------------------ experiments


def experiment_name_for(data_dir: str | os.PathLike[str]) -> str:
    """The experiment of a data set: ``bmseg/<folder name>`` (one experiment per data set)."""
    return f"bmseg/{Path(data_dir).expanduser().absolute().name or 'data'}"


def get_or_create_experiment(name: str) -> str:
    """The id of experiment ``name``, created (or restored, when deleted) if needed; safe to race.

    With a local store (SQLite, PostgreSQL, files) the artifacts go to ``<mlflow_artifact_root>/<name>``;
    an MLflow server chooses its own artifact location.
    """
    settings = get_settings()
    client = mlflow_client(settings)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=_artifact_location(settings, name))
        except Exception as error:  # another process or thread created it first
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise RuntimeError(f"cannot create MLflow experiment {name!r}: {error}") from error
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def _artifact_location(settings: Settings, name: str) -> str | None:
    if urlparse(settings.mlflow_tracking_uri).scheme in _REMOTE_TRACKING_SCHEMES:
        return None
    folder = re.sub(r"[^A-Za-z0-9._/-]+", "_", name).strip("/")
    root = settings.mlflow_artifact_root
    if is_local_path(root):
        return str(local_path(root).absolute() / folder)
    return f"{root.rstrip('/')}/{folder}"


# ------------------------------------------------------------------------------------------- runs


def start_run(
    experiment: str,
    run_name: str,
    params: dict[str, Any],
    tags: dict[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> str:
    """Create a run in experiment id ``experiment`` with ``params`` and ``tags``; return its id.

    Nothing becomes "active": pass the id to the other functions. ``parent_run_id`` nests the run.
    """
    client = mlflow_client()
    all_tags = {key: str(value) for key, value in (tags or {}).items()}
    if parent_run_id is not None:
        all_tags["mlflow.parentRunId"] = parent_run_id
    all_tags.setdefault("mlflow.source.type", "LOCAL")
    all_tags.setdefault("mlflow.source.name", "bmseg")
    run = client.create_run(str(experiment), run_name=run_name, tags=all_tags)
    log_params(run.info.run_id, params)
    return run.info.run_id


def log_params(run_id: str, params: dict[str, Any]) -> None:
    """Log ``params``; values become strings (lists and dicts as JSON), cut at MLflow's 6,000 characters."""
    from mlflow.entities import Param  # lazy: keeps mlflow out of the web process

    entries = [Param(str(key), _param_value(value)) for key, value in params.items()]
    client = mlflow_client()
    for start in range(0, len(entries), 100):
        client.log_batch(run_id, params=entries[start : start + 100], synchronous=True)


def _param_value(value: Any) -> str:
    if isinstance(value, dict | list | tuple):
        text = json.dumps(value, sort_keys=True, default=str)
    else:
        text = str(value)
    return text if len(text) <= _MAX_PARAM_LENGTH else text[: _MAX_PARAM_LENGTH - 1] + "…"


def log_metrics(run_id: str, metrics: dict[str, float | None], step: int) -> None:
    """Log ``metrics`` at ``step``; None, NaN, infinite and non-numeric values are skipped."""
    from mlflow.entities import Metric  # lazy: keeps mlflow out of the web process

    timestamp = int(time.time() * 1000)
    entries = []
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            try:
                value = float(value)  # numpy and torch scalars
            except (TypeError, ValueError):
                continue
        if math.isfinite(value):
            entries.append(Metric(str(key), float(value), timestamp, int(step)))
    client = mlflow_client()
    for start in range(0, len(entries), 1000):
        client.log_batch(run_id, metrics=entries[start : start + 1000], synchronous=True)


def log_artifact(run_id: str, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
    """Copy the file or folder ``path`` into the run's artifacts (under ``artifact_path``)."""
    path = Path(path)
    client = mlflow_client()
    if path.is_dir():
        client.log_artifacts(run_id, str(path), artifact_path)
    else:
        client.log_artifact(run_id, str(path), artifact_path)


def log_dict(run_id: str, data: Any, artifact_file: str) -> None:
    """Store ``data`` as the JSON (or YAML, by extension) artifact ``artifact_file``."""
    mlflow_client().log_dict(run_id, data, artifact_file)


def end_unfinished_runs(data: str | Path, tags: dict[str, str], status: str = "FAILED") -> int:
    """End with ``status`` the still-running runs in ``data``'s experiment that carry all of ``tags``;
    returns how many (a distributed run whose rank 0 was stopped before it could end its own run)."""
    configure()
    client = mlflow_client()
    experiment = client.get_experiment_by_name(experiment_name_for(data))
    if experiment is None:
        return 0
    clauses = [f"tags.`{key}` = '{value}'" for key, value in tags.items()]
    query = " and ".join([*clauses, "attributes.status = 'RUNNING'"])
    runs = client.search_runs([experiment.experiment_id], filter_string=query)
    for run in runs:
        end_run(run.info.run_id, status)
    return len(runs)


def end_run(run_id: str, status: str = "FINISHED") -> None:
    """Mark the run ended with ``status`` (FINISHED, FAILED or KILLED)."""
    if status not in RUN_STATUSES:
        raise ValueError(f"unknown run status {status!r}; valid: {', '.join(RUN_STATUSES)}")
    mlflow_client().set_terminated(run_id, status)


def mlflow_ui_run_url(base_url: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of a run, e.g. ``http://127.0.0.1:5000/#/experiments/1/runs/<id>``."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
