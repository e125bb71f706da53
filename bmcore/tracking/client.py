"""The MLflow client every tracking call goes through, and MLflow's error codes.

mlflow is imported inside the functions: the web imports :mod:`bmcore.tracking` (for the registry
overview) and must stay free of mlflow and torch until it really talks to the store.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from bmcore.config import Settings, get_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient


def import_mlflow():
    """mlflow, imported with bmseg's defaults (no telemetry, no progress bars, no pickle notice)."""
    # Defaults only: the environment wins. No usage telemetry (medical data, often closed networks;
    # effective only before mlflow's first import) and no progress bars in worker logs.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow  # lazy: keeps mlflow out of the web process, which imports this package

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
    mlflow = import_mlflow()
    uri = settings.mlflow_tracking_uri
    if is_local_path(settings.mlflow_artifact_root):
        local_path(settings.mlflow_artifact_root).mkdir(parents=True, exist_ok=True)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def mlflow_client(settings: Settings | None = None) -> MlflowClient:
    """An explicit client on the settings' tracking and registry store (never the fluent "active run")."""
    settings = settings or get_settings()
    import_mlflow()
    from mlflow import MlflowClient  # lazy: keeps mlflow out of the web process

    uri = settings.mlflow_tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def is_local_path(location: str) -> bool:
    """Whether ``location`` is a folder on this machine (a path or a ``file:`` URI)."""
    scheme = urlparse(location).scheme
    return scheme in ("", "file") or len(scheme) == 1  # a one-letter scheme is a Windows drive


def local_path(location: str) -> Path:
    """The folder a local ``location`` names."""
    return Path(urlparse(location).path) if location.startswith("file:") else Path(location).expanduser()


def error_code(error: Exception) -> str:
    """MLflow's error code of ``error`` (empty for other errors)."""
    return str(getattr(error, "error_code", ""))


def is_missing(error: Exception) -> bool:
    """Whether ``error`` says the experiment, model or version does not exist."""
    return error_code(error) in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


def already_exists(error: Exception) -> bool:
    """Whether ``error`` says the thing to create exists already."""
    return error_code(error) in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS")
