"""What a training run is handed, built from its configuration: model, optimizer, scheduler, loss, loaders.

:func:`build_training_parts` is the one place that builds them, so CLI, worker and ``compare`` build them
alike; :func:`bmcore.training.loop.fit` receives them and builds nothing. A variant is a config field.

Under ``torchrun`` each process wraps the model in ``DistributedDataParallel``, draws its own share of the
epoch's slices (``samples_per_epoch`` is the epoch's total over all processes; ``batch_size`` is per
process) with its own seed, and scores its own share of the validation slices.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from bmcore.data.dataset import CachedCase, SliceDataset, class_voxel_counts, lesion_sampler
from bmcore.models import build_model
from bmcore.training import distributed
from bmcore.training.config import TrainConfig, parse_class_weights
from bmcore.training.losses import build_loss, resolve_class_weights


@dataclass
class TrainingParts:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    loss_fn: Callable
    train_loader: DataLoader
    val_loader: DataLoader | None


def resolve_device(name: str) -> torch.device:
    """The device ``name`` means in a single process: ``auto`` is CUDA when available, else the CPU."""
    return distributed.rank_device(name, distributed.Rank())


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


def build_training_parts(
    config: TrainConfig, train_cases: Sequence[CachedCase], val_cases: Sequence[CachedCase]
) -> TrainingParts:
    """Model, optimizer (Adam), plateau scheduler, loss and loaders from the config and cached cases."""
    seed_everything(config.seed)
    rank = distributed.current()
    seed = rank_seed(config.seed, rank)  # this process's sampling, augmentation and dropout
    device = distributed.rank_device(config.device, rank)
    model, optimizer = build_model_and_optimizer(config, device, seed)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience
    )
    train_loader, val_loader = build_loaders(config, train_cases, val_cases, device, seed)
    loss = build_loss(config.loss, class_weights(config, train_cases))
    return TrainingParts(model, optimizer, scheduler, loss, train_loader, val_loader)


def class_weights(config: TrainConfig, train_cases: Sequence[CachedCase]) -> list[float] | None:
    """The cross-entropy's class weights ``config.class_weights`` asks for (None: unweighted);
    ``inverse_frequency`` counts the training slices' voxels of each class."""
    spec = parse_class_weights(config.class_weights)
    counts = class_voxel_counts(list(train_cases)) if spec == "inverse_frequency" else None
    return resolve_class_weights(spec, counts)


def build_model_and_optimizer(
    config: TrainConfig, device: torch.device, seed: int
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The model on ``device`` (wrapped for DDP and ``torch.compile`` as configured) and its Adam."""
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
    return model, optimizer


def build_loaders(
    config: TrainConfig,
    train_cases: Sequence[CachedCase],
    val_cases: Sequence[CachedCase],
    device: torch.device,
    seed: int,
) -> tuple[DataLoader, DataLoader | None]:
    """The training loader (lesion-weighted sampling, this process's share) and the validation loader."""
    rank = distributed.current()
    shape = {"context": config.context_slices, "multiple": config.input_multiple}
    train_set = SliceDataset(
        train_cases,
        augment=config.augment,
        seed=seed,
        crop=config.crop,
        lesion_balance=config.lesion_balance,
        **shape,
    )
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
        val_set = SliceDataset(val_cases, **shape)  # whole slices (native ones, padded, after crop training)
        if 0 < config.val_slices < len(val_set):  # evenly spaced, the same every epoch
            val_set = Subset(val_set, np.linspace(0, len(val_set) - 1, config.val_slices).round().astype(int))
        if rank.distributed:  # each process scores every world_size-th slice; the sums are added up
            val_set = Subset(val_set, range(rank.rank, len(val_set), rank.world_size))
        val_loader = DataLoader(val_set, shuffle=False, **loader_args)
    return train_loader, val_loader
