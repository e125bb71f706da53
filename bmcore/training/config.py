"""Run configuration as data: a frozen dataclass per training run (torch-free).

Stored in every checkpoint, logged as MLflow params, and used by the job service to validate a job's
parameters at submission time (the web process never imports torch). ``LOSSES`` is the one list of loss
names (:mod:`bmcore.training.losses` builds its registry from it); architecture names come from
:mod:`bmcore.architectures`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from bmcore.architectures import ARCHS
from bmcore.imaging import MODALITIES

__all__ = ["ARCHS", "LOSSES", "MODALITIES", "TrainConfig"]
LOSSES: tuple[str, ...] = ("ce", "dice_ce")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs, as data; stored in every checkpoint and logged as MLflow params."""

    arch: str = "unet"
    epochs: int = 50
    batch_size: int = 16
    lr: float = 1e-3
    loss: str = "ce"
    size: int = 256
    base_channels: int = 32
    depth: int = 4
    dropout: float = 0.2
    modalities: tuple[str, ...] = MODALITIES
    lesion_fraction: float = 0.5
    samples_per_epoch: int = 0  # 0: one pass over all training slices
    augment: bool = True
    early_stopping_patience: int = 10
    plateau_patience: int = 3
    plateau_factor: float = 0.5
    seed: int = 0
    num_workers: int = 2
    device: str = "auto"
    mixed_precision: bool = True  # bf16 autocast, CUDA only
    channels_last: bool = True
    compile: bool = False

    def __post_init__(self):
        checks = [
            (self.epochs >= 1, f"epochs must be a positive integer, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be positive, got {self.batch_size}"),
            (self.lr > 0 and math.isfinite(self.lr), f"learning rate must be positive, got {self.lr}"),
            (
                self.size >= 16 and self.size % 32 == 0,
                f"input size must be a multiple of 32, got {self.size}",
            ),
            (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"),
            (0.0 <= self.lesion_fraction <= 1.0, "lesion fraction must be in [0, 1]"),
            (self.arch in ARCHS, f"unknown arch {self.arch!r}; choose from {', '.join(ARCHS)}"),
            (self.loss in LOSSES, f"unknown loss {self.loss!r}; choose from {', '.join(LOSSES)}"),
            (self.depth >= 1 and self.base_channels >= 1, "depth and base channels must be positive"),
            (
                set(self.modalities) <= set(MODALITIES) and len(self.modalities) > 0,
                f"modalities must be a non-empty subset of {', '.join(MODALITIES)}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training parameter(s): {', '.join(unknown)}")
        values = dict(values)
        if "modalities" in values:
            values["modalities"] = tuple(values["modalities"])
        return cls(**values)

    def to_dict(self) -> dict:
        values = asdict(self)
        values["modalities"] = list(self.modalities)
        return values

    def model_args(self) -> dict:
        args = {
            "in_channels": len(self.modalities),
            "num_classes": 4,
            "base_channels": self.base_channels,
            "dropout": self.dropout,
        }
        if self.arch != "fcn":
            args["depth"] = self.depth
        return args
