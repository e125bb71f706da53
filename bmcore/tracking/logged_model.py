"""Logging a bmseg checkpoint as an MLflow model of a run (the one part of tracking that needs torch).

A logged model holds two things: an MLflow PyTorch model (pickle format, loads with
``mlflow.pytorch.load_model`` and runs at any batch size) and the bmseg checkpoint itself
(``extra_files/bmseg-checkpoint.pt``), which :func:`bmcore.tracking.registry.resolve_model` hands to
``load_checkpoint``. Kept apart from :mod:`bmcore.tracking` so the web, which imports that package, never
reaches torch, not even through a function-level import. mlflow is imported inside the functions, after
:func:`~bmcore.tracking.client.import_mlflow` has set its environment defaults.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bmcore.models import load_checkpoint, save_checkpoint
from bmcore.tracking.client import import_mlflow, mlflow_client
from bmcore.tracking.registry import CHECKPOINT_FILE

if TYPE_CHECKING:
    from mlflow.models import ModelSignature

MODEL_NAME = "model"
# Checkpoint entries inference never needs; left out of the registered copy (a third of the size).
_TRAINING_ONLY_KEYS = ("optimizer", "scheduler", "torch_rng")


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
    import_mlflow()
    import mlflow.pytorch  # lazy: after import_mlflow() has set mlflow's environment defaults

    checkpoint_path = Path(checkpoint_path)
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint_path}: no such file")
    model, checkpoint = load_checkpoint(checkpoint_path)
    if checkpoint["arch"] != arch:
        raise ValueError(f"{checkpoint_path} holds a {checkpoint['arch']!r} model, not {arch!r}")
    init_args = checkpoint["init_args"]
    logged_id = _create_logged_model(run_id, arch, init_args)
    extra = checkpoint.get("extra", {})
    inference_extra = {key: value for key, value in extra.items() if key not in _TRAINING_ONLY_KEYS}
    with tempfile.TemporaryDirectory(prefix="bmseg-model-") as folder:
        inference_checkpoint = Path(folder) / CHECKPOINT_FILE
        save_checkpoint(inference_checkpoint, model, arch, inference_extra)
        info = mlflow.pytorch.log_model(
            model,
            name=MODEL_NAME,
            serialization_format="pickle",
            signature=_model_signature(init_args),
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "bmseg"],
            extra_files=[str(inference_checkpoint)],
            metadata={"bmseg_arch": arch, "bmseg_checkpoint": f"extra_files/{CHECKPOINT_FILE}"},
            model_id=logged_id,
            run_id=run_id,
            step=int(extra.get("epoch", 0) or 0),
        )
    return info.model_uri


def _model_signature(init_args: dict[str, Any]) -> ModelSignature:
    """Slices in (any batch, height and width), logits out, with the checkpoint's channel counts."""
    from mlflow.models import ModelSignature  # lazy: after import_mlflow() has set mlflow's defaults
    from mlflow.types import Schema, TensorSpec  # lazy: as above

    in_channels, num_classes = int(init_args.get("in_channels", 4)), int(init_args.get("num_classes", 4))
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, in_channels, -1, -1), "slices")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes, -1, -1), "logits")]),
    )


def _create_logged_model(run_id: str, arch: str, init_args: dict[str, Any]) -> str:
    """The id of a new logged model of ``run_id``, filed under the run's experiment."""
    client = mlflow_client()
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
    return logged.model_id
