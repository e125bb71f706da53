"""MLflow runs and the model registry.

One experiment per data set (``bmseg/<folder name>``), one run per job, and three registered models,
``bmseg-unet``, ``bmseg-cnn`` and ``bmseg-fcn``; the alias ``champion`` points at the version with the
best validation lesion-wise Dice (``val_lesion_dice``).

* :mod:`~bmcore.tracking.client`: the explicit MLflow client every call goes through;
* :mod:`~bmcore.tracking.runs`: experiments, runs and what they log;
* :mod:`~bmcore.tracking.registry`: registered models, the champion, resolving a model;
* :mod:`~bmcore.tracking.overview`: the registry at a glance (CLI and web);
* :mod:`~bmcore.tracking.logged_model`: ``log_model``, a checkpoint logged as a run's model. It needs
  torch, so it is not re-exported here: import it from its module.

Callers use the names re-exported here (``tracking.resolve_model(...)``). Nothing in this package's
import graph reaches torch, and importing it loads no mlflow: the web imports it for
:func:`registry_overview` and must stay torch-free.
"""

from __future__ import annotations

from bmcore.tracking.client import configure, mlflow_client
from bmcore.tracking.overview import registry_overview
from bmcore.tracking.registry import (
    CHAMPION_ALIAS,
    CHAMPION_METRIC,
    CHECKPOINT_FILE,
    register_model,
    registered_model_name,
    resolve_model,
    set_champion,
)
from bmcore.tracking.runs import (
    RUN_STATUSES,
    end_run,
    end_unfinished_runs,
    experiment_name_for,
    get_or_create_experiment,
    log_artifact,
    log_dict,
    log_metrics,
    log_params,
    mlflow_ui_run_url,
    start_run,
)

__all__ = [
    "CHAMPION_ALIAS",
    "CHAMPION_METRIC",
    "CHECKPOINT_FILE",
    "RUN_STATUSES",
    "configure",
    "end_run",
    "end_unfinished_runs",
    "experiment_name_for",
    "get_or_create_experiment",
    "log_artifact",
    "log_dict",
    "log_metrics",
    "log_params",
    "mlflow_client",
    "mlflow_ui_run_url",
    "register_model",
    "registered_model_name",
    "registry_overview",
    "resolve_model",
    "set_champion",
    "start_run",
]
