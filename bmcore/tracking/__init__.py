"""MLflow runs and the model registry, in one module.

One experiment per data set (``bmseg/<folder name>``), one run per job, and three registered models,
``bmseg-unet``, ``bmseg-cnn`` and ``bmseg-fcn``; the alias ``champion`` points at the version with the
best validation lesion-wise Dice (``val_lesion_dice``). Stages are deprecated in MLflow 3 and unused.

Every call goes through an explicit :class:`mlflow.MlflowClient` and a ``run_id``, never the fluent
"active run", so several runs (threads, jobs) can be tracked from one process.

A logged model holds two things (see :func:`log_model`): an MLflow PyTorch model (pickle format,
loads with ``mlflow.pytorch.load_model`` and runs at any batch size) and the bmseg checkpoint itself
(``extra_files/bmseg-checkpoint.pt``), which :func:`resolve_model` hands to ``load_checkpoint``.

mlflow and torch are imported inside the functions: the web imports this module for
:func:`registry_overview` and must stay torch-free.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from bmcore.config import Settings, get_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

ARCHS = ("unet", "cnn", "fcn")
CHAMPION_ALIAS = "champion"
CHAMPION_METRIC = "val_lesion_dice"
CHECKPOINT_FILE = "bmseg-checkpoint.pt"
MODEL_NAME = "model"
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")
# Checkpoint entries inference never needs; left out of the registered copy (a third of the size).
_TRAINING_ONLY_KEYS = ("optimizer", "scheduler", "torch_rng")
_MAX_PARAM_LENGTH = 6000  # MLflow's limit on a parameter value
_REMOTE_TRACKING_SCHEMES = ("http", "https", "databricks", "databricks-uc")
_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")

__all__ = [
    "configure",
    "end_run",
    "experiment_name_for",
    "get_or_create_experiment",
    "log_artifact",
    "log_dict",
    "log_metrics",
    "log_model",
    "log_params",
    "mlflow_ui_run_url",
    "register_model",
    "registered_model_name",
    "registry_overview",
    "resolve_model",
    "set_champion",
    "start_run",
]


# ----------------------------------------------------------------------------------------- setup


def _import_mlflow():
    # Defaults only: the environment wins. No usage telemetry (medical data, often closed networks;
    # effective only before mlflow's first import) and no progress bars in worker logs.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    pytorch_logger = logging.getLogger("mlflow.pytorch")
    if _PickleNoticeFilter not in {type(existing) for existing in pytorch_logger.filters}:
        pytorch_logger.addFilter(_PickleNoticeFilter())
    return mlflow


class _PickleNoticeFilter(logging.Filter):
    """Drops MLflow's advice to use ``pt2`` at every log_model: pickle is our deliberate choice."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Saving pytorch model by Pickle")


def configure(settings: Settings | None = None) -> str:
    """Point MLflow tracking and registry at the settings' store; create the artifact root; return the URI."""
    settings = settings or get_settings()
    mlflow = _import_mlflow()
    uri = settings.mlflow_tracking_uri
    if _is_local_path(settings.mlflow_artifact_root):
        _local_path(settings.mlflow_artifact_root).mkdir(parents=True, exist_ok=True)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def _client(settings: Settings | None = None) -> MlflowClient:
    settings = settings or get_settings()
    _import_mlflow()
    from mlflow import MlflowClient

    uri = settings.mlflow_tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _is_local_path(location: str) -> bool:
    scheme = urlparse(location).scheme
    return scheme in ("", "file") or len(scheme) == 1  # a one-letter scheme is a Windows drive


def _local_path(location: str) -> Path:
    return Path(urlparse(location).path) if location.startswith("file:") else Path(location).expanduser()


def _error_code(error: Exception) -> str:
    return str(getattr(error, "error_code", ""))


def _is_missing(error: Exception) -> bool:
    return _error_code(error) in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


def _already_exists(error: Exception) -> bool:
    return _error_code(error) in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS")


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
    client = _client(settings)
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
    if _is_local_path(root):
        return str(_local_path(root).absolute() / folder)
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
    client = _client()
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
    from mlflow.entities import Param

    entries = [Param(str(key), _param_value(value)) for key, value in params.items()]
    client = _client()
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
    from mlflow.entities import Metric

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
    client = _client()
    for start in range(0, len(entries), 1000):
        client.log_batch(run_id, metrics=entries[start : start + 1000], synchronous=True)


def log_artifact(run_id: str, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
    """Copy the file or folder ``path`` into the run's artifacts (under ``artifact_path``)."""
    path = Path(path)
    client = _client()
    if path.is_dir():
        client.log_artifacts(run_id, str(path), artifact_path)
    else:
        client.log_artifact(run_id, str(path), artifact_path)


def log_dict(run_id: str, data: Any, artifact_file: str) -> None:
    """Store ``data`` as the JSON (or YAML, by extension) artifact ``artifact_file``."""
    _client().log_dict(run_id, data, artifact_file)


def end_unfinished_runs(data: str | Path, tags: dict[str, str], status: str = "FAILED") -> int:
    """End with ``status`` the still-running runs in ``data``'s experiment that carry all of ``tags``;
    returns how many (a distributed run whose rank 0 was stopped before it could end its own run)."""
    configure()
    client = _client()
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
    _client().set_terminated(run_id, status)


def mlflow_ui_run_url(base_url: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of a run, e.g. ``http://127.0.0.1:5000/#/experiments/1/runs/<id>``."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


# ----------------------------------------------------------------------------------------- models


def log_model(run_id: str, checkpoint_path: str | os.PathLike[str], arch: str) -> str:
    """Log the bmseg checkpoint as the run's model ``model``; return its URI (``models:/<model id>``).

    The model is an MLflow PyTorch model in *pickle* format: MLflow 3.14+ defaults to ``pt2``
    (``torch.export``), which needs an input example and fixes every dimension the example does not
    prove dynamic (a batch of 1 → batch size 1 forever). The pickled module loads with
    ``mlflow.pytorch.load_model`` and runs at any batch and slice size; its classes come from the
    ``bmseg`` package. The requirements are given, so MLflow does not spend seconds inferring them.

    The checkpoint itself (training-only state — optimizer, scheduler, RNG — left out) travels as
    ``extra_files/bmseg-checkpoint.pt``, so :func:`resolve_model` returns a plain checkpoint path.
    Works without an active run: the model is attached to ``run_id`` and its experiment.
    """
    import numpy as np
    import torch

    _import_mlflow()
    import mlflow.pytorch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from bmcore.models import load_checkpoint, save_checkpoint

    checkpoint_path = Path(checkpoint_path)
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint_path}: no such file")
    model, checkpoint = load_checkpoint(checkpoint_path)
    if checkpoint["arch"] != arch:
        raise ValueError(f"{checkpoint_path} holds a {checkpoint['arch']!r} model, not {arch!r}")
    init_args = checkpoint["init_args"]
    in_channels, num_classes = int(init_args.get("in_channels", 4)), int(init_args.get("num_classes", 4))
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, in_channels, -1, -1), "slices")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes, -1, -1), "logits")]),
    )
    client = _client()
    run = client.get_run(run_id)
    # Created here, not by log_model: without an active run MLflow would file the model under the
    # "Default" experiment instead of the run's.
    logged = client.create_logged_model(
        experiment_id=run.info.experiment_id,
        name=MODEL_NAME,
        source_run_id=run_id,
        params={"arch": arch} | {key: str(value) for key, value in init_args.items()},
        tags={"bmseg.arch": arch},
    )
    extra = checkpoint.get("extra", {})
    inference_extra = {key: value for key, value in extra.items() if key not in _TRAINING_ONLY_KEYS}
    with tempfile.TemporaryDirectory(prefix="bmseg-model-") as folder:
        inference_checkpoint = Path(folder) / CHECKPOINT_FILE
        save_checkpoint(inference_checkpoint, model, arch, inference_extra)
        info = mlflow.pytorch.log_model(
            model,
            name=MODEL_NAME,
            serialization_format="pickle",
            signature=signature,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "bmseg"],
            extra_files=[str(inference_checkpoint)],
            metadata={"bmseg_arch": arch, "bmseg_checkpoint": f"extra_files/{CHECKPOINT_FILE}"},
            model_id=logged.model_id,
            run_id=run_id,
            step=int(extra.get("epoch", 0) or 0),
        )
    return info.model_uri


def registered_model_name(arch: str) -> str:
    """``bmseg-unet``, ``bmseg-cnn`` or ``bmseg-fcn``."""
    if arch not in ARCHS:
        raise ValueError(f"unknown model {arch!r}; valid names: {', '.join(ARCHS)}")
    return f"bmseg-{arch}"


def register_model(
    run_id: str, arch: str, model_uri: str, metrics: dict[str, Any], champion_eligible: bool = True
) -> dict[str, Any]:
    """Register ``model_uri`` as a new version of ``bmseg-<arch>``, its metrics as version tags.

    The alias ``champion`` moves to the new version when there is no champion yet or when its
    ``val_lesion_dice`` beats the champion's (a version without that figure never dethrones one
    that has it). A version registered with ``champion_eligible`` false (a cross-validation fold,
    tagged ``champion_eligible=false``) never takes it on its own; ``set_champion`` still can.
    Returns ``{"name", "version", "champion"}``.
    """
    name = registered_model_name(arch)
    client = _client()
    try:
        description = f"bmseg {arch} segmentation models; alias {CHAMPION_ALIAS!r} = best {CHAMPION_METRIC}"
        client.create_registered_model(name, description=description)
    except Exception as error:
        if not _already_exists(error):
            raise
    tags = {key: text for key, value in metrics.items() if (text := _tag_number(value)) is not None}
    tags["arch"] = arch
    if not champion_eligible:
        tags["champion_eligible"] = "false"
    model_id = model_uri.removeprefix("models:/") if re.fullmatch(r"models:/m-[0-9a-f]+", model_uri) else None
    version = client.create_model_version(name, source=model_uri, run_id=run_id, tags=tags, model_id=model_id)

    score = _finite(metrics.get(CHAMPION_METRIC))
    current = (client.get_registered_model(name).aliases or {}).get(CHAMPION_ALIAS)
    if current is not None:
        current_score = _finite(client.get_model_version(name, str(current)).tags.get(CHAMPION_METRIC))
    champion = champion_eligible and (
        current is None or (score is not None and (current_score is None or score > current_score))
    )
    if champion:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, str(version.version))
    return {"name": name, "version": int(version.version), "champion": champion}


def set_champion(name: str, version: int | str) -> None:
    """Point ``name``'s ``champion`` alias at ``version`` (e.g. a sweep's best child, on request)."""
    _client().set_registered_model_alias(name, CHAMPION_ALIAS, str(version))


def _tag_number(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    number = _finite(value)
    return None if number is None else repr(number)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def resolve_model(ref: str | os.PathLike[str]) -> Path:
    """The local checkpoint file behind ``ref``: a checkpoint path, or ``models:/<name>@<alias>`` /
    ``models:/<name>/<version>`` (``latest`` is allowed as a version).

    Registry checkpoints are cached in ``<data_dir>/models/<name>/<version>/``. Raises
    ``FileNotFoundError`` for a missing path and ``LookupError`` for an unknown model, alias or version.
    """
    text = os.fspath(ref)
    if not text.startswith("models:/"):
        path = Path(text).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"model {text}: no such checkpoint file")
        return path
    match = _REGISTRY_URI.match(text)
    if match is None:
        raise LookupError(f"{text} is not a registry URI (models:/bmseg-unet@champion, models:/bmseg-unet/3)")
    settings = get_settings()
    client = _client(settings)
    name = match["name"]
    try:
        if match["alias"]:
            version = client.get_model_version_by_alias(name, match["alias"])
        elif match["version"] == "latest":
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise LookupError(f"no model version for {text}")
            version = max(versions, key=lambda candidate: int(candidate.version))
        elif match["version"].isdigit():
            version = client.get_model_version(name, match["version"])
        else:
            raise LookupError(f"no model version for {text} (a version is a number, or use @alias)")
    except LookupError:
        raise
    except Exception as error:
        if _is_missing(error) or _error_code(error) == "INVALID_PARAMETER_VALUE":
            raise LookupError(f"no model version for {text}") from None
        raise

    folder = settings.data_dir / "models" / name / str(version.version)
    checkpoint = folder / CHECKPOINT_FILE
    origin = {"run_id": version.run_id, "source": version.source}
    marker = folder / "origin.json"
    if checkpoint.is_file() and marker.is_file() and json.loads(marker.read_text()) == origin:
        return checkpoint
    _download_checkpoint(settings, name, str(version.version), folder)
    marker.write_text(json.dumps(origin))
    return checkpoint


def _download_checkpoint(settings: Settings, name: str, version: str, folder: Path) -> None:
    """Fetch the version's checkpoint into ``folder`` atomically (safe when several workers race)."""
    _import_mlflow()
    import mlflow.artifacts

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as scratch:
        uri = settings.mlflow_tracking_uri
        try:
            downloaded = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}/extra_files/{CHECKPOINT_FILE}",
                dst_path=scratch,
                tracking_uri=uri,
                registry_uri=uri,
            )
        except Exception as error:
            raise LookupError(
                f"models:/{name}/{version} holds no bmseg checkpoint (extra_files/{CHECKPOINT_FILE}): {error}"
            ) from None
        os.replace(downloaded, folder / CHECKPOINT_FILE)


# ------------------------------------------------------------------------------------ overview


def registry_overview() -> list[dict[str, Any]]:
    """The three registered models, each with its champion and its versions (newest first), as plain dicts.

    ``[{"name", "champion": version | None, "versions": [{"version", "run_id", "created", "status",
    "aliases", "tags", "metrics"}]}]``; ``metrics`` are the numeric tags. Read-only: a SQLite store
    that does not exist yet is left uncreated.
    """
    settings = get_settings()
    uri = settings.mlflow_tracking_uri
    store_missing = uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file()
    client = None if store_missing else _client(settings)
    overview = []
    for arch in ARCHS:
        name = registered_model_name(arch)
        entry: dict[str, Any] = {"name": name, "champion": None, "versions": []}
        overview.append(entry)
        if client is None:
            continue
        try:
            aliases = client.get_registered_model(name).aliases or {}
        except Exception as error:
            if not _is_missing(error):
                raise
            continue
        if CHAMPION_ALIAS in aliases:
            entry["champion"] = int(aliases[CHAMPION_ALIAS])
        versions = client.search_model_versions(f"name='{name}'")
        entry["versions"] = sorted(
            (_version_entry(version, aliases) for version in versions),
            key=lambda item: item["version"],
            reverse=True,
        )
    return overview


def _version_entry(version: Any, aliases: dict[str, Any]) -> dict[str, Any]:
    created = datetime.fromtimestamp(version.creation_timestamp / 1000, UTC)
    tags = dict(version.tags)
    return {
        "version": int(version.version),
        "run_id": version.run_id,
        "created": created.isoformat(timespec="seconds"),
        "status": version.status,
        "aliases": sorted(alias for alias, number in aliases.items() if str(number) == str(version.version)),
        "tags": tags,
        "metrics": {key: number for key, value in tags.items() if (number := _finite(value)) is not None},
    }
