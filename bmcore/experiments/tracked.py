"""A tracked training run: :func:`bmcore.experiments.training.train_run` inside an MLflow run,
then registered.

One experiment per data set, one run per training (params, per-epoch metrics, split, curves, validation
report, model); the model becomes a new version of ``bmseg-<arch>``, and the ``champion`` alias moves to
it when its validation lesion-wise Dice beats the current champion's. Used by ``bmseg train`` and the
worker's train task alike.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

from bmcore import tracking
from bmcore.experiments.training import train_run, validation_key_metrics
from bmcore.reports.plots import plot_curves
from bmcore.training import distributed
from bmcore.training.loop import TrainConfig, TrainingCancelled


def _loggable(figures: dict) -> dict:
    return {
        k: float(v)
        for k, v in figures.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def tracked_train(
    data: str | Path,
    config: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    track: bool = True,
    split_seed: int = 0,
    run_id: str | None = None,
    run_name: str | None = None,
    tags: dict | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[float, str], None] | None = None,
    on_run: Callable[[str], None] | None = None,
    show_progress: bool = True,
    split: dict | None = None,
    parent_run_id: str | None = None,
    champion_eligible: bool = True,
) -> dict | None:
    """Train, track and register; returns a JSON-able summary (checkpoint, run id, version, metrics).

    ``split``: an explicit split (as split.json) instead of one drawn with ``split_seed``;
    ``parent_run_id``: nest the new MLflow run under this one (a sweep or cross-validation parent);
    ``champion_eligible`` false: the new version never takes ``champion`` (cross-validation folds).
    Under ``torchrun`` rank 0 alone tracks and registers; the other ranks train and return None.
    """
    out_dir = Path(out_dir)
    callbacks = []
    rank = distributed.current()
    track = track and rank.is_main
    if track:
        tracking.configure()
        if run_id is None:
            experiment = tracking.get_or_create_experiment(tracking.experiment_name_for(data))
            params = config.to_dict() | {
                "data": str(data),
                "split_seed": split_seed,
                "world_size": rank.world_size,
            }
            run_id = tracking.start_run(
                experiment,
                run_name or f"train-{config.arch}",
                params,
                tags or {},
                parent_run_id=parent_run_id,
            )
        if on_run is not None:
            on_run(run_id)
        callbacks.append(lambda epoch, figures: tracking.log_metrics(run_id, _loggable(figures), step=epoch))
    try:
        outcome = train_run(
            data,
            config,
            out_dir,
            resume=resume,
            callbacks=callbacks,
            should_stop=should_stop,
            progress=progress,
            split_seed=split_seed,
            show_progress=show_progress,
            split=split,
        )
    except TrainingCancelled:
        if track:
            tracking.end_run(run_id, "KILLED")
        raise
    except BaseException:
        if track:
            tracking.end_run(run_id, "FAILED")
        raise
    if not rank.is_main:
        return None
    key_metrics = validation_key_metrics(outcome)
    curves = plot_curves({config.arch: outcome.history}, out_dir / "curves.png", f"{config.arch} training")
    (out_dir / "history.json").write_text(json.dumps(outcome.history, indent=1))
    if outcome.validation:
        (out_dir / "validation.json").write_text(json.dumps(outcome.validation, indent=1))
    summary = {
        "arch": config.arch,
        "checkpoint": str(outcome.best_checkpoint),
        "out_dir": str(out_dir),
        "best_epoch": outcome.best_epoch,
        "epochs_run": len(outcome.history),
        "stopped_early": outcome.stopped_early,
        "metrics": key_metrics,
        "curves": str(curves),
        "run_id": run_id,
        "registered": None,
    }
    if track:
        for name in ("split.json", "history.json", "validation.json", "curves.png"):
            if (out_dir / name).exists():
                tracking.log_artifact(run_id, out_dir / name)
        tracking.log_metrics(run_id, _loggable(key_metrics), step=outcome.best_epoch)
        model_uri = tracking.log_model(run_id, outcome.best_checkpoint, config.arch)
        summary["registered"] = tracking.register_model(
            run_id, config.arch, model_uri, key_metrics, champion_eligible=champion_eligible
        )
        tracking.end_run(run_id, "FINISHED")
    return summary
