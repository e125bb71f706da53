"""Training: a flat, readable loop that is handed its parts.

:func:`fit` receives a :class:`TrainingParts` (model, optimizer, scheduler, loss, loaders) and a
:class:`TrainConfig`; it builds none of them. :func:`build_training_parts` is the one place that does,
from the config, so CLI, worker and ``compare`` build them alike. A variant is a config field.

Per epoch the loop logs, through ``on_epoch_end`` callbacks, the study's slice-level figures (loss and
paper-style pooled accuracy / mean Dice / mean IoU over all four classes, on training and validation
slices) plus the foreground Dice per class that experts trust. It checkpoints ``last.pt`` every epoch
(with optimizer, scheduler and history, for ``resume``) and ``best.pt`` at the lowest validation loss,
reduces the learning rate on plateau and stops early. ``should_stop`` is polled between batches so a
job can be cancelled within one step.

Under ``torchrun`` (``bmseg train --gpus N``) each process wraps the model in
``DistributedDataParallel``, draws its own share of the epoch's slices (``samples_per_epoch`` is the
epoch's total over all processes; ``batch_size`` is per process), scores its own share of the
validation slices, and the epoch's sums are added up over the processes, so every figure, the plateau
scheduler and early stopping see the whole epoch and decide alike. Only rank 0 writes checkpoints,
calls the callbacks and shows progress.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from bmcore import metrics
from bmcore.models import bare_model, build_model, load_checkpoint, save_checkpoint
from bmcore.training import distributed
from bmcore.training.config import TrainConfig
from bmcore.training.losses import build_loss

EpochCallback = Callable[[int, dict], None]


class TrainingCancelled(RuntimeError):
    """Raised when ``should_stop`` asks the loop to stop (a cancelled job)."""


@dataclass
class TrainingParts:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    loss_fn: Callable
    train_loader: DataLoader
    val_loader: DataLoader | None


@dataclass
class TrainResult:
    best_checkpoint: Path
    last_checkpoint: Path
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    history: list[dict] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: distributed.Rank) -> int:
    """The seed one process samples and augments with: ``seed`` itself alone, distinct per rank."""
    if not rank.distributed:
        return seed
    return int(np.random.SeedSequence([seed, rank.rank]).generate_state(1)[0])


def rank_samples(config: TrainConfig, train_slices: int, rank: distributed.Rank) -> int | None:
    """Slices one process draws per epoch (None: one pass, for a single process).

    Distributed, the epoch's total (``samples_per_epoch``, or one pass) is shared out in whole batches,
    rounded up: every process runs the same number of full batches and none is dropped.
    """
    if not rank.distributed:
        return config.samples_per_epoch or None
    total = config.samples_per_epoch or train_slices
    return math.ceil(total / (rank.world_size * config.batch_size)) * config.batch_size


def build_training_parts(config: TrainConfig, train_cases, val_cases) -> TrainingParts:
    """Model, optimizer (Adam), plateau scheduler, loss and loaders from the config and cached cases."""
    from bmcore.data.dataset import SliceDataset, lesion_sampler

    seed_everything(config.seed)
    rank = distributed.current()
    seed = rank_seed(config.seed, rank)  # this process's sampling, augmentation and dropout
    device = distributed.rank_device(config.device, rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed slice size: let cuDNN pick the fastest kernels
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = build_model(config.arch, **config.model_args()).to(device)
    if config.channels_last:  # also ~3x faster training convolutions on CPU (measured, torch 2.13)
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=device.type == "cuda")
    if distributed.is_active():  # gradients averaged over the processes at every backward
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None
        )
        torch.manual_seed(seed)  # same weights (broadcast from rank 0), own dropout masks
    if config.compile:  # shares the parameters; save_checkpoint unwraps it (``_orig_mod``)
        model = torch.compile(model)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience
    )
    train_set = SliceDataset(train_cases, augment=config.augment, seed=seed)
    if len(train_set) == 0:
        raise ValueError("no training slices: the training studies have no brain voxels")
    sampler = lesion_sampler(
        train_set, config.lesion_fraction, rank_samples(config, len(train_set), rank), seed
    )
    loader_args = {
        "batch_size": config.batch_size,
        "num_workers": config.num_workers,  # on a GPU, give it several (8 or more) to keep it fed
        "pin_memory": device.type == "cuda",
        "persistent_workers": config.num_workers > 0,
    }
    if device.type == "cuda" and config.num_workers > 0:
        loader_args["prefetch_factor"] = 4
    train_loader = DataLoader(
        train_set, sampler=sampler, drop_last=len(train_set) > config.batch_size, **loader_args
    )
    val_loader = None
    if val_cases:
        val_set = SliceDataset(val_cases)
        if rank.distributed:  # each process scores every world_size-th slice; the sums are added up
            val_set = Subset(val_set, range(rank.rank, len(val_set), rank.world_size))
        val_loader = DataLoader(val_set, shuffle=False, **loader_args)
    return TrainingParts(model, optimizer, scheduler, build_loss(config.loss), train_loader, val_loader)


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
):
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
    confusion = np.zeros((4, 4), dtype=np.int64)
    loss_sum, slices = 0.0, 0
    on_gpu = device.type == "cuda"  # on a GPU, loss and confusion add up on the device: no sync per batch
    gpu_loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    gpu_confusion = torch.zeros(16, dtype=torch.int64, device=device)
    autocast = device.type == "cuda" and config.mixed_precision
    context = torch.enable_grad() if train else torch.inference_mode()
    total = len(loader)
    with context:
        for index, (image, label, partial) in enumerate(loader):
            stop = should_stop is not None and should_stop()
            if distributed_ and should_stop is not None:
                stop = distributed.any_rank(stop)
            if stop:
                raise TrainingCancelled("training cancelled")
            image = image.to(device, non_blocking=True)
            if config.channels_last:
                image = image.contiguous(memory_format=torch.channels_last)
            label, partial = label.to(device, non_blocking=True), partial.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = model(image)
                loss = parts.loss_fn(logits.float(), label, partial)
            if train:
                parts.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                parts.optimizer.step()
            slices += image.shape[0]
            pred = _merge_partial_predictions(logits.detach().argmax(1), partial)
            if on_gpu:
                gpu_loss_sum += loss.detach() * image.shape[0]
                gpu_confusion += _confusion_counts(pred, label)
            else:
                loss_sum += float(loss.detach()) * image.shape[0]
                confusion += metrics.confusion_matrix(pred.cpu().numpy(), label.cpu().numpy())
            if on_batch is not None:
                on_batch(index + 1, total)
    if on_gpu:
        loss_sum += float(gpu_loss_sum)
        confusion += gpu_confusion.view(4, 4).cpu().numpy()
    if distributed_:
        if train:
            distributed.share_buffers(bare_model(parts.model))
        counts = torch.from_numpy(confusion).flatten().to(torch.float64)
        sums = torch.cat([torch.tensor([loss_sum, slices], dtype=torch.float64), counts])
        sums = distributed.sum_across_ranks(sums).numpy()
        loss_sum, slices = float(sums[0]), int(sums[1])
        confusion = np.rint(sums[2:]).astype(np.int64).reshape(4, 4)
    return loss_sum, slices, confusion


def _save(
    path: Path, parts: TrainingParts, config: TrainConfig, epoch: int, history: list, best: dict
) -> None:
    extra = {
        "train_config": config.to_dict(),
        "preprocess": {"size": config.size, "modalities": list(config.modalities)},
        "epoch": epoch,
        "history": history,
        "best": best,
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


def fit(
    parts: TrainingParts,
    config: TrainConfig,
    out_dir: str | Path,
    callbacks: list[EpochCallback] = (),
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
    device = next(parts.model.parameters()).device
    history: list[dict] = []
    best = {"epoch": 0, "val_loss": math.inf}
    start_epoch, bad_epochs = 1, 0
    if resume and last_path.exists():
        _, checkpoint = load_checkpoint(last_path, map_location=None)
        bare_model(parts.model).load_state_dict(checkpoint["state_dict"])
        extra = checkpoint["extra"]
        parts.optimizer.load_state_dict(extra["optimizer"])
        parts.scheduler.load_state_dict(extra["scheduler"])
        torch.set_rng_state(extra["torch_rng"])
        rank = distributed.current()
        if rank.distributed:  # rank 0's saved state on every rank would give them all one dropout stream
            torch.manual_seed(rank_seed(config.seed + int(extra["epoch"]), rank))
        history, best = list(extra["history"]), dict(extra["best"])
        start_epoch = int(extra["epoch"]) + 1
        bad_epochs = start_epoch - 1 - int(best["epoch"])
    stopped_early = False
    bar = None
    if progress and is_main:
        from tqdm import tqdm

        bar = tqdm(total=config.epochs, initial=start_epoch - 1, desc=f"train {config.arch}", unit="epoch")
    for epoch in range(start_epoch, config.epochs + 1):
        if bad_epochs >= config.early_stopping_patience:
            stopped_early = True
            break
        started = time.perf_counter()
        batch_cb = (lambda i, n, e=epoch: on_batch(e, i, n)) if on_batch else None
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
        history.append(_plain(figures))
        if monitor < best["val_loss"]:
            best = {"epoch": epoch, "val_loss": float(monitor)}
            bad_epochs = 0
            if is_main:
                _save(best_path, parts, config, epoch, history, best)
        else:
            bad_epochs += 1
        if is_main:
            _save(last_path, parts, config, epoch, history, best)
            for callback in callbacks:
                callback(epoch, figures)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{figures['train_loss']:.3f}", val=f"{monitor:.3f}")
    if bar is not None:
        bar.close()
    if is_main and not best_path.exists():  # resumed after the last epoch, or zero epochs left
        _save(best_path, parts, config, len(history), history, best)
    return TrainResult(best_path, last_path, int(best["epoch"]), len(history), stopped_early, history)
