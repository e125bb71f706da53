"""Training: a flat, readable loop that is handed its parts.

:func:`fit` receives a :class:`~bmcore.training.parts.TrainingParts` (model, optimizer, scheduler, loss,
loaders) and a :class:`TrainConfig`; it builds none of them (:mod:`bmcore.training.parts` does).

Per epoch the loop logs, through ``on_epoch_end`` callbacks, the study's slice-level figures (loss and
paper-style pooled accuracy / mean Dice / mean IoU over all four classes, on training and validation
slices) plus the foreground Dice per class that experts trust. It checkpoints ``last.pt`` every epoch
(with optimizer, scheduler and history, for ``resume``) and ``best.pt`` at the lowest validation loss,
reduces the learning rate on plateau and stops early. ``should_stop`` is polled between batches so a
job can be cancelled within one step.

Under ``torchrun`` (``bmseg train --gpus N``) each process trains on its own share of the slices, scores
its own share of the validation slices, and the epoch's sums are added up over the processes, so every
figure, the plateau scheduler and early stopping see the whole epoch and decide alike. Only rank 0 writes
checkpoints, calls the callbacks and shows progress.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from bmcore import metrics
from bmcore.models import bare_model, load_checkpoint, save_checkpoint
from bmcore.training import distributed
from bmcore.training.config import TrainConfig
from bmcore.training.parts import TrainingParts, rank_seed
from bmcore.training.progress import EpochBar

EpochCallback = Callable[[int, dict], None]


class TrainingCancelled(RuntimeError):
    """Raised when ``should_stop`` asks the loop to stop (a cancelled job)."""


@dataclass
class TrainResult:
    best_checkpoint: Path
    last_checkpoint: Path
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    history: list[dict] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ one pass


def _merge_partial_predictions(pred: torch.Tensor, partial: torch.Tensor) -> torch.Tensor:
    """For enhancing-only samples, predictions other than enhancing count as 'not enhancing' (0)."""
    if pred.device.type == "cuda" or partial.any():  # no `if` on a CUDA value: it would wait for the GPU
        merged = torch.where(pred == 3, pred, torch.zeros_like(pred))
        pred = torch.where(partial[:, None, None], merged, pred)
    return pred


def _confusion_counts(pred: torch.Tensor, label: torch.Tensor, num_classes: int = 4) -> torch.Tensor:
    """:func:`bmcore.metrics.confusion_matrix` (rows target, columns prediction), flattened, computed
    where the tensors are, so that a GPU loop adds it up without copying every batch to the host."""
    return torch.bincount((label.long() * num_classes + pred).flatten(), minlength=num_classes**2)


class _PassTally:
    """One pass's loss sum, slice count and pooled confusion; on a GPU they add up on the device (no
    sync per batch)."""

    def __init__(self, device: torch.device) -> None:
        self.on_gpu = device.type == "cuda"
        self.loss_sum, self.slices = 0.0, 0
        self.confusion = np.zeros((4, 4), dtype=np.int64)
        self.gpu_loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.gpu_confusion = torch.zeros(16, dtype=torch.int64, device=device)

    def add(self, loss: torch.Tensor, pred: torch.Tensor, label: torch.Tensor) -> None:
        count = label.shape[0]
        self.slices += count
        if self.on_gpu:
            self.gpu_loss_sum += loss * count
            self.gpu_confusion += _confusion_counts(pred, label)
        else:
            self.loss_sum += float(loss) * count
            self.confusion += metrics.confusion_matrix(pred.cpu().numpy(), label.cpu().numpy())

    def totals(self, across_ranks: bool) -> tuple[float, int, np.ndarray]:
        """(loss sum, slices, confusion matrix), summed over all processes when ``across_ranks``."""
        loss_sum, slices, confusion = self.loss_sum, self.slices, self.confusion.copy()
        if self.on_gpu:
            loss_sum += float(self.gpu_loss_sum)
            confusion += self.gpu_confusion.view(4, 4).cpu().numpy()
        if across_ranks:
            counts = torch.from_numpy(confusion).flatten().to(torch.float64)
            sums = torch.cat([torch.tensor([loss_sum, slices], dtype=torch.float64), counts])
            sums = distributed.sum_across_ranks(sums).numpy()
            loss_sum, slices = float(sums[0]), int(sums[1])
            confusion = np.rint(sums[2:]).astype(np.int64).reshape(4, 4)
        return loss_sum, slices, confusion


def epoch_figures(prefix: str, loss_sum: float, slices: int, confusion: np.ndarray) -> dict:
    """Slice-level figures of one pass, each named by convention (paper-style pooled, or per class);
    the loss is the mean over slices (a short last batch weighs by its size)."""
    figures = {f"{prefix}_loss": loss_sum / max(slices, 1)}
    if confusion.sum() > 0:
        paper = metrics.paper_metrics(confusion)
        figures.update({f"{prefix}_{key}": value for key, value in paper.items()})
        for label, name in list(metrics.LABELS.items())[1:]:
            tp = confusion[label, label]
            denominator = confusion[label, :].sum() + confusion[:, label].sum()
            figures[f"{prefix}_pooled_dice_{name}"] = float(2 * tp / denominator) if denominator else 1.0
    return figures


def run_epoch(
    parts: TrainingParts,
    loader: DataLoader,
    train: bool,
    device: torch.device,
    config: TrainConfig,
    should_stop: Callable[[], bool] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> tuple[float, int, np.ndarray]:
    """One pass over ``loader``; returns (sum of per-slice losses, slice count, pooled confusion matrix),
    summed over all processes when training is distributed.

    ``should_stop`` is polled before every batch; distributed, only in training passes (every process
    runs as many training batches, so they poll together and stop together).
    """
    model = parts.model
    distributed_ = distributed.is_active()
    if not train and distributed_:  # uneven validation shards: no collectives in forward
        model = bare_model(model)
        should_stop = None
    model.train(train)
    tally = _PassTally(device)
    total = len(loader)
    with torch.enable_grad() if train else torch.inference_mode():
        for index, batch in enumerate(loader):
            stop = should_stop is not None and should_stop()
            if distributed_ and should_stop is not None:
                stop = distributed.any_rank(stop)
            if stop:
                raise TrainingCancelled("training cancelled")
            _step(parts, model, batch, train, device, config, tally)
            if on_batch is not None:
                on_batch(index + 1, total)
    if distributed_ and train:
        distributed.share_buffers(bare_model(parts.model))
    return tally.totals(across_ranks=distributed_)


def _step(
    parts: TrainingParts,
    model: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    train: bool,
    device: torch.device,
    config: TrainConfig,
    tally: _PassTally,
) -> None:
    """Forward one batch (and, training, backward and an optimizer step); add it to ``tally``."""
    image, label, partial = batch
    image = image.to(device, non_blocking=True)
    if config.channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    label, partial = label.to(device, non_blocking=True), partial.to(device, non_blocking=True)
    autocast = device.type == "cuda" and config.mixed_precision
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        logits = model(image)
        loss = parts.loss_fn(logits.float(), label, partial)
    if train:
        parts.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        parts.optimizer.step()
    tally.add(loss.detach(), _merge_partial_predictions(logits.detach().argmax(1), partial), label)


# ----------------------------------------------------------------------------------------- checkpoints


@dataclass
class _RunState:
    """Where a run stands between epochs: its history, its best epoch, what comes next."""

    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"epoch": 0, "val_loss": math.inf})
    start_epoch: int = 1
    bad_epochs: int = 0


def _save(path: Path, parts: TrainingParts, config: TrainConfig, epoch: int, state: _RunState) -> None:
    extra = {
        "train_config": config.to_dict(),
        "preprocess": config.preprocess_settings(),
        "postprocess": config.postprocess_settings(),
        "epoch": epoch,
        "history": state.history,
        "best": state.best,
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": {k: v for k, v in parts.scheduler.state_dict().items() if k != "_last_lr"}
        | {"_last_lr": [float(v) for v in parts.scheduler.get_last_lr()]},
        "torch_rng": torch.get_rng_state(),
        "world_size": distributed.current().world_size,
    }
    save_checkpoint(path, parts.model, config.arch, _plain(extra))


def _plain(value):
    """Numpy scalars and tuples → plain Python, so checkpoints load with weights_only=True."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _resume(parts: TrainingParts, config: TrainConfig, last_path: Path) -> _RunState:
    """Load ``last.pt`` into ``parts`` (weights, optimizer, scheduler, random state); return the state."""
    _, checkpoint = load_checkpoint(last_path, map_location=None)
    stored = checkpoint["extra"].get("train_config")
    if isinstance(stored, dict) and TrainConfig.from_dict(stored).model_args() != config.model_args():
        raise ValueError(
            f"{last_path} holds a model of other settings ({TrainConfig.from_dict(stored).model_args()}, "
            f"not {config.model_args()}): resume with the settings it was trained with, or start anew"
        )
    bare_model(parts.model).load_state_dict(checkpoint["state_dict"])
    extra = checkpoint["extra"]
    parts.optimizer.load_state_dict(extra["optimizer"])
    parts.scheduler.load_state_dict(extra["scheduler"])
    torch.set_rng_state(extra["torch_rng"])
    rank = distributed.current()
    if rank.distributed:  # rank 0's saved state on every rank would give them all one dropout stream
        torch.manual_seed(rank_seed(config.seed + int(extra["epoch"]), rank))
    best, start_epoch = dict(extra["best"]), int(extra["epoch"]) + 1
    return _RunState(list(extra["history"]), best, start_epoch, start_epoch - 1 - int(best["epoch"]))


# ------------------------------------------------------------------------------------------------ fit


def _train_epoch(
    parts: TrainingParts,
    config: TrainConfig,
    epoch: int,
    should_stop: Callable[[], bool] | None,
    on_batch: Callable[[int, int, int], None] | None,
) -> tuple[dict, float]:
    """A training pass, a validation pass and a scheduler step; returns the figures and the monitored loss."""
    device = next(parts.model.parameters()).device
    started = time.perf_counter()
    batch_cb = (lambda i, n: on_batch(epoch, i, n)) if on_batch else None
    figures = epoch_figures(
        "train", *run_epoch(parts, parts.train_loader, True, device, config, should_stop, batch_cb)
    )
    figures["train_seconds"] = time.perf_counter() - started  # the training pass alone
    monitor = figures["train_loss"]
    if parts.val_loader is not None:
        figures.update(
            epoch_figures("val", *run_epoch(parts, parts.val_loader, False, device, config, should_stop))
        )
        monitor = figures["val_loss"]
    parts.scheduler.step(monitor)
    figures.update(
        epoch=epoch, lr=parts.optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - started
    )
    return figures, monitor


def fit(
    parts: TrainingParts,
    config: TrainConfig,
    out_dir: str | Path,
    callbacks: Sequence[EpochCallback] = (),
    resume: bool = False,
    should_stop: Callable[[], bool] | None = None,
    progress: bool = True,
    on_batch: Callable[[int, int, int], None] | None = None,
) -> TrainResult:
    """Train ``parts.model``; checkpoints go to ``out_dir/last.pt`` and ``out_dir/best.pt``.

    In a distributed run every process calls this; rank 0 alone writes, calls back and shows progress.
    """
    is_main = distributed.current().is_main
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    state = _resume(parts, config, last_path) if resume and last_path.exists() else _RunState()
    stopped_early = False
    done = state.start_epoch - 1
    with EpochBar(f"train {config.arch}", config.epochs, done, enabled=progress and is_main) as bar:
        for epoch in range(state.start_epoch, config.epochs + 1):
            if state.bad_epochs >= config.early_stopping_patience:
                stopped_early = True
                break
            figures, monitor = _train_epoch(parts, config, epoch, should_stop, on_batch)
            state.history.append(_plain(figures))
            improved = monitor < state.best["val_loss"]
            state.bad_epochs = 0 if improved else state.bad_epochs + 1
            if improved:
                state.best = {"epoch": epoch, "val_loss": float(monitor)}
            if is_main:
                if improved:
                    _save(best_path, parts, config, epoch, state)
                _save(last_path, parts, config, epoch, state)
                for callback in callbacks:
                    callback(epoch, figures)
            bar.advance(loss=figures["train_loss"], val=monitor)
    if is_main and not best_path.exists():  # resumed after the last epoch, or zero epochs left
        _save(best_path, parts, config, len(state.history), state)
    return TrainResult(
        best_path, last_path, int(state.best["epoch"]), len(state.history), stopped_early, state.history
    )
