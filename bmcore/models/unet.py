"""2D U-Net with attention gates on the skip connections.

Oktay O. et al., "Attention U-Net: Learning Where to Look for the Pancreas", MIDL 2018,
arXiv:1804.03999; the encoder-decoder follows Ronneberger O. et al., "U-Net: Convolutional
Networks for Biomedical Image Segmentation", MICCAI 2015.
"""

from __future__ import annotations

import torch
from torch import nn

# ConvBlock is imported here as well as used: pickled models name it as bmcore.models.unet.ConvBlock.
from bmcore.models.blocks import ConvBlock, check_input, checked_init_args


class AttentionGate(nn.Module):
    """Additive attention gate: ``skip * sigmoid(psi(relu(W_g g + W_x skip)))``.

    ``gate`` is the decoder feature at the skip's resolution (already up-sampled), as in MONAI's
    ``AttentionUnet``, so the gate needs no resampling of its own.
    """

    def __init__(self, gate_channels: int, skip_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.gate_proj = nn.Sequential(
            nn.Conv2d(gate_channels, inter_channels, 1, bias=False), nn.BatchNorm2d(inter_channels)
        )
        self.skip_proj = nn.Sequential(
            nn.Conv2d(skip_channels, inter_channels, 1, bias=False), nn.BatchNorm2d(inter_channels)
        )
        self.psi = nn.Sequential(nn.Conv2d(inter_channels, 1, 1, bias=False), nn.BatchNorm2d(1), nn.Sigmoid())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, gate: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        attention = self.psi(self.relu(self.gate_proj(gate) + self.skip_proj(skip)))
        return skip * attention


class UpBlock(nn.Module):
    """Up-sample (2x2 transposed convolution), gate the skip, concatenate, then a ``ConvBlock``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2, bias=False)
        self.gate = AttentionGate(out_channels, out_channels, max(out_channels // 2, 1))
        self.conv = ConvBlock(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        return self.conv(torch.cat([self.gate(x, skip), x], dim=1))


class AttentionUNet(nn.Module):
    """Attention U-Net for 2D slices: (N, in_channels, H, W) -> logits (N, num_classes, H, W).

    ``depth`` is the number of 2x poolings (and of attention gates); channels double at each level,
    from ``base_channels`` to ``base_channels * 2**depth`` at the bottleneck. H and W must be
    divisible by ``2**depth``. Dropout (``nn.Dropout2d``) is applied after the bottleneck. No softmax:
    the loss and the inference code apply it.
    """

    def __init__(
        self,
        in_channels: int = 4,
        num_classes: int = 4,
        base_channels: int = 32,
        depth: int = 4,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.init_args = checked_init_args(in_channels, num_classes, base_channels, dropout, depth)
        self.depth = depth
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.encoder = nn.ModuleList([ConvBlock(in_channels, widths[0])])
        self.encoder.extend(ConvBlock(widths[level - 1], widths[level]) for level in range(1, depth))
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = ConvBlock(widths[depth - 1], widths[depth])
        self.dropout = nn.Dropout2d(dropout)
        self.decoder = nn.ModuleList(
            UpBlock(widths[level + 1], widths[level]) for level in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.init_args["in_channels"], 2**self.depth)
        skips = []
        for index, block in enumerate(self.encoder):
            x = block(x if index == 0 else self.pool(x))
            skips.append(x)
        x = self.dropout(self.bottleneck(self.pool(x)))
        for block, skip in zip(self.decoder, reversed(skips), strict=True):
            x = block(x, skip)
        return self.head(x)
