"""A tracked training run: :func:`bmcore.experiments.training.train_run` inside an MLflow run,
then registered.

One experiment per data set, one run per training (params, per-epoch metrics, split, curves, validation
report, model); the model becomes a new version of ``bmseg-<arch>``, and the ``champion`` alias moves to
it when its validation lesion-wise Dice beats the current champion's. Used by ``bmseg train`` and the
worker's train task alike, each with one :class:`~bmcore.experiments.request.TrainRequest`.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

from bmcore import tracking
from bmcore.db import init_db
from bmcore.experiments.request import Tracking, TrainRequest
from bmcore.experiments.training import RunOutcome, train_run, validation_key_metrics
from bmcore.reports.plots import plot_curves
from bmcore.tracking.logged_model import log_model
from bmcore.tracking.registry import too_small_to_promote, training_provenance, version_warnings
from bmcore.training import distributed
from bmcore.training.loop import EpochCallback, TrainingCancelled

ARTIFACTS = ("split.json", "history.json", "validation.json", "curves.png")
JOB_TAG = "bmseg.job_id"  # the worker tags a job's run with its id (bmcore.jobs.runner.run_train)
DATASET_TAG = "bmseg.dataset"  # a registered data set's name, when the run's tags carry it
# The validation summary's brats2025 figures (bmcore.metrics.summarize_cases), when it carries them.
BRATS2025_TC, BRATS2025_LESIONS = "brats2025_lesion_dice_TC", "brats2025_n_gt_TC"


def _loggable(figures: dict) -> dict:
    return {
        k: float(v)
        for k, v in figures.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def tracked_train(request: TrainRequest) -> dict | None:
    """Train, track and register; returns a JSON-able summary (checkpoint, run id, version, metrics).

    ``request.tracking`` says whether and how MLflow tracks the run. Under ``torchrun`` rank 0 alone
    tracks and registers; the other ranks train and return None.
    """
    rank = distributed.current()
    track = request.tracking.enabled and rank.is_main
    run_id = request.tracking.run_id
    if track:
        run_id = _open_run(request, rank.world_size)
        request = replace(request, callbacks=(*request.callbacks, _metrics_logger(run_id)))
    try:
        outcome = train_run(request)
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
    summary = _write_results(outcome, run_id)
    if track:
        provenance = training_provenance(request.data, request.tracking.tags.get(DATASET_TAG))
        summary["registered"] = _log_and_register(
            run_id, outcome, summary["metrics"], request.tracking, provenance
        )
    return summary


def _open_run(request: TrainRequest, world_size: int) -> str:
    """The run to track into: the request's own, or a new one in the data set's experiment."""
    options, config = request.tracking, request.config
    tracking.configure()
    init_db()  # a move of ``champion`` is recorded there: fail now, not after the training
    run_id = options.run_id
    if run_id is None:
        experiment = tracking.get_or_create_experiment(tracking.experiment_name_for(request.data))
        params = config.to_dict() | {
            "data": str(request.data),
            "split_seed": request.split_seed,
            "world_size": world_size,
        }
        run_id = tracking.start_run(
            experiment,
            options.run_name or f"train-{config.arch}",
            params,
            dict(options.tags),
            parent_run_id=options.parent_run_id,
        )
    if options.on_run is not None:
        options.on_run(run_id)
    return run_id


def _metrics_logger(run_id: str) -> EpochCallback:
    """An epoch callback logging the epoch's numeric figures to the run."""

    def log(epoch: int, figures: dict) -> None:
        tracking.log_metrics(run_id, _loggable(figures), step=epoch)

    return log


def _write_results(outcome: RunOutcome, run_id: str | None) -> dict:
    """``history.json``, ``validation.json`` and ``curves.png`` beside the checkpoints; the summary."""
    out_dir, arch = Path(outcome.out_dir), outcome.config.arch
    key_metrics = validation_key_metrics(outcome) | validation_counts(outcome.validation)
    curves = plot_curves({arch: outcome.history}, out_dir / "curves.png", f"{arch} training")
    (out_dir / "history.json").write_text(json.dumps(outcome.history, indent=1))
    if outcome.validation:
        (out_dir / "validation.json").write_text(json.dumps(outcome.validation, indent=1))
    return {
        "arch": arch,
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


def validation_counts(validation: dict | None) -> dict:
    """``val_lesions`` (ground-truth TC lesions: brats2025's count when the summary has it, else bmseg's
    2023 one) and ``val_patients`` of the validation studies (0 and 0 without any), and
    ``val_lesion_dice_tc_brats2025`` when the validation summary carries it."""
    if not validation:
        return {"val_lesions": 0, "val_patients": 0}
    summary, cases = validation["summary"], validation.get("cases", [])
    figures = {
        "val_lesions": int(summary.get(BRATS2025_LESIONS, summary.get("n_gt_TC")) or 0),
        "val_patients": len({case.get("patient_id", case.get("study_id")) for case in cases}),
    }
    if summary.get(BRATS2025_TC) is not None:
        figures["val_lesion_dice_tc_brats2025"] = summary[BRATS2025_TC]
    return figures


def _log_and_register(
    run_id: str, outcome: RunOutcome, key_metrics: dict, options: Tracking, provenance: dict
) -> dict:
    """Log the run's files, key metrics and model, register the model and end the run.

    A move of ``champion`` is recorded as made by the run's job (its ``bmseg.job_id`` tag), else by the
    operating-system user of the command."""
    out_dir, arch = Path(outcome.out_dir), outcome.config.arch
    for name in ARTIFACTS:
        if (out_dir / name).exists():
            tracking.log_artifact(run_id, out_dir / name)
    tracking.log_metrics(run_id, _loggable(key_metrics), step=outcome.best_epoch)
    model_uri = log_model(run_id, outcome.best_checkpoint, arch)
    job_id = options.tags.get(JOB_TAG)
    registered = tracking.register_model(
        run_id,
        arch,
        model_uri,
        key_metrics,
        champion_eligible=options.champion_eligible,
        job_id=job_id,
        provenance=provenance,
    )
    tracking.end_run(run_id, "FINISHED")
    tags = {"training_data_synthetic": str(provenance["synthetic"]).lower()}
    if too_small_to_promote(key_metrics.get("val_lesions")):
        tags |= {"too_small_to_promote": "true", "val_lesions": key_metrics.get("val_lesions")}
    return registered | {"warnings": version_warnings(tags)}
