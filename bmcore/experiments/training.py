"""One training run end to end: find studies, split by patient, cache, build parts, fit, validate.

Used alike by ``bmseg train``, ``bmseg compare`` and the worker's train task, so all three split,
preprocess and score the same way. The validation studies are also scored on whole volumes in native
geometry after training (lesion-wise Dice decides the registry's ``champion``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bmcore import imaging
from bmcore.config import get_settings
from bmcore.data.dataset import CachedCase, prepare_case
from bmcore.data.split import lesion_free_patients, save_split, split_studies
from bmcore.evaluation.evaluate import evaluate_studies
from bmcore.experiments.request import PreparedData, Progress, TrainRequest
from bmcore.inference import load_predictor
from bmcore.tracking.registry import training_provenance, write_provenance
from bmcore.training import distributed
from bmcore.training.config import TrainConfig
from bmcore.training.loop import TrainResult, fit
from bmcore.training.parts import TrainingParts, build_training_parts


def prepare_data(
    data_dir: str | Path,
    config: TrainConfig,
    split_seed: int = 0,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    split: dict | None = None,
    shard: tuple[int, int] = (0, 1),
) -> PreparedData | None:
    """Patient-level split and cached training/validation studies (test studies stay untouched).

    ``shard=(i, n)``: preprocess only every n-th study from the i-th, and return nothing (one
    process's share when n processes fill the cache together before training).
    """
    refs = imaging.find_studies(data_dir)
    labelled = [r for r in refs if r.label is not None]
    if len(labelled) < 2:
        raise ValueError(f"{data_dir}: training needs at least 2 labelled studies, found {len(labelled)}")
    split = split or split_studies(labelled, seed=split_seed, lesion_free=lesion_free_patients(labelled))
    by_id = {r.study_id: r for r in labelled}
    cache_dir = cache_dir or get_settings().cache_dir
    sides = {side: [by_id[s] for s in split["studies"][side]] for side in ("train", "val", "test")}
    to_cache = sides["train"] + sides["val"]
    if shard != (0, 1):
        for ref in to_cache[shard[0] :: shard[1]]:
            prepare_case(ref, cache_dir, config.modalities, config.cache_size)
        return None
    cases: dict[str, CachedCase] = {}
    for index, ref in enumerate(to_cache):
        cases[ref.study_id] = prepare_case(ref, cache_dir, config.modalities, config.cache_size)
        if progress:
            progress((index + 1) / len(to_cache), f"preprocessed {ref.study_id}")
    return PreparedData(
        refs,
        split,
        [cases[r.study_id] for r in sides["train"]],
        [cases[r.study_id] for r in sides["val"]],
        sides["test"],
        sides["val"],
    )


@dataclass
class RunOutcome:
    config: TrainConfig
    out_dir: Path
    best_checkpoint: Path
    history: list[dict]
    split: dict
    best_epoch: int
    stopped_early: bool
    validation: dict | None


def train_run(request: TrainRequest) -> RunOutcome:
    """Train ``request.config.arch`` on ``request.data``; saves the split and checkpoints in its ``out_dir``.

    Under ``torchrun`` every process trains its share (see :mod:`bmcore.training.distributed`); rank 0 alone
    writes the split and scores the validation studies, and the others return without ``validation``.
    ``request.tracking`` is not looked at here (see :func:`bmcore.experiments.tracked.tracked_train`).
    """
    config = request.config
    out_dir = Path(request.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with distributed.process_group(config.device) as (rank, _):
        prepared = _prepared_data(request, rank)
        if rank.is_main:
            save_split(prepared.split, out_dir / "split.json")
            write_provenance(out_dir, training_provenance(request.data))  # read by model_warnings
        parts = build_training_parts(config, prepared.train_cases, prepared.val_cases)
        result = _fit(parts, request, out_dir)
    validation = None
    if prepared.val_refs and rank.is_main:
        if request.progress:
            request.progress(0.9, "scoring validation studies")
        predictor = load_predictor(result.best_checkpoint, device=config.device)
        validation = evaluate_studies(predictor, prepared.val_refs, should_stop=request.should_stop)
    return RunOutcome(
        config,
        out_dir,
        result.best_checkpoint,
        result.history,
        prepared.split,
        result.best_epoch,
        result.stopped_early,
        validation,
    )


def _prepared_data(request: TrainRequest, rank: distributed.Rank) -> PreparedData:
    """The request's prepared studies, else split and cached now (0 % .. 10 % of the job)."""
    if request.prepared is not None:
        return request.prepared
    data, config, split_seed, split = request.data, request.config, request.split_seed, request.split
    if rank.distributed:  # the processes fill the cache together, then read it
        error = None
        try:
            prepare_data(data, config, split_seed, split=split, shard=(rank.rank, rank.world_size))
        except Exception as exc:  # every rank stops with the message, none waits for a failed one
            error = exc
        distributed.raise_if_any_failed(error)
    progress = request.progress
    scaled = (lambda share, message: progress(0.1 * share, message)) if progress else None
    return prepare_data(data, config, split_seed, progress=scaled, split=split)


def _fit(parts: TrainingParts, request: TrainRequest, out_dir: Path) -> TrainResult:
    """:func:`fit` with the job's progress reported per batch (10 % .. 90 % of the job)."""
    config, progress = request.config, request.progress

    def on_batch(epoch: int, index: int, total: int) -> None:
        if progress and (index == total or index % 10 == 0):
            done = (epoch - 1 + index / total) / config.epochs
            progress(0.1 + 0.8 * done, f"epoch {epoch}/{config.epochs}, batch {index}/{total}")

    return fit(
        parts,
        config,
        out_dir,
        callbacks=list(request.callbacks),
        resume=request.resume,
        should_stop=request.should_stop,
        progress=request.show_progress,
        on_batch=on_batch,
    )


def validation_key_metrics(outcome: RunOutcome) -> dict:
    """The figures the registry compares versions on (``val_lesion_dice`` picks the champion)."""
    figures = {"best_epoch": outcome.best_epoch}
    best = next((h for h in outcome.history if h["epoch"] == outcome.best_epoch), outcome.history[-1])
    for key in ("val_loss", "val_paper_accuracy", "val_paper_mean_dice", "val_paper_mean_iou"):
        if key in best:
            figures[key] = best[key]
    if outcome.validation:
        summary = outcome.validation["summary"]
        figures["val_lesion_dice"] = summary.get("lesion_dice_TC")
        figures["val_dice_ET"] = summary.get("dice_ET")
        figures["val_dice_TC"] = summary.get("dice_TC")
        figures["val_dice_WT"] = summary.get("dice_WT")
    return figures
