"""Pieces the architectures share: the conv-BN-ReLU block and the checks every constructor and forward make.

:func:`checked_init_args` is the constructors' common preamble: it refuses arguments that make no sense
and returns the ``init_args`` dict a model keeps, from which a checkpoint rebuilds it.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvBlock(nn.Sequential):
    """Two (3x3 convolution, batch norm, ReLU) layers; the convolutions carry no bias (BN follows)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def checked_init_args(
    in_channels: int, num_classes: int, base_channels: int, dropout: float, depth: int | None = None
) -> dict[str, int | float]:
    """Check the constructor arguments the architectures share; return them as the model's ``init_args``.

    ``depth`` (the number of 2x poolings) is given by the architectures that have one.
    """
    check_constructor_args(in_channels, num_classes, base_channels, dropout)
    args: dict[str, int | float] = {
        "in_channels": in_channels,
        "num_classes": num_classes,
        "base_channels": base_channels,
    }
    if depth is not None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        args["depth"] = depth
    args["dropout"] = float(dropout)
    return args


def check_constructor_args(in_channels: int, num_classes: int, base_channels: int, dropout: float) -> None:
    """Raise ``ValueError`` for constructor arguments shared by all architectures that make no sense."""
    for name, value in (
        ("in_channels", in_channels),
        ("num_classes", num_classes),
        ("base_channels", base_channels),
    ):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def check_input(x: torch.Tensor, in_channels: int, multiple: int) -> None:
    """Raise ``ValueError`` unless ``x`` is (N, in_channels, H, W) with H and W divisible by ``multiple``."""
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f"expected input of shape (N, {in_channels}, H, W), got {tuple(x.shape)}")
    if x.shape[2] % multiple or x.shape[3] % multiple:
        raise ValueError(f"H and W must be divisible by {multiple}, got {tuple(x.shape[2:])}")
