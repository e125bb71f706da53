"""A "traditional" CNN segmentation baseline: a plain convolutional stack without skips.

The baseline named by the reference study (2D U-Net versus a traditional CNN versus an FCN): conv,
batch norm and ReLU blocks with max-pooling down to 1/2**depth resolution, a 1x1 classifier, and a
single bilinear up-sampling of the class scores back to the input size. It is the skip-free,
single-upsampling design that Long J. et al., "Fully Convolutional Networks for Semantic
Segmentation", CVPR 2015, call FCN-32s, on a small VGG-like stack (Simonyan K. and Zisserman A.,
"Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bmcore.models.blocks import ConvBlock, check_input, checked_init_args


class SegmentationCNN(nn.Module):
    """Plain CNN: (N, in_channels, H, W) -> logits (N, num_classes, H, W).

    ``depth`` blocks of two conv-BN-ReLU layers, each followed by 2x max-pooling, channels doubling
    from ``base_channels``; one more block at 1/2**depth resolution, dropout, a 1x1 classifier and
    one bilinear up-sampling to full resolution. No encoder-decoder skips. H and W must be divisible
    by ``2**depth``.
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
        layers: list[nn.Module] = []
        channels = in_channels
        for level in range(depth):
            layers += [ConvBlock(channels, base_channels * 2**level), nn.MaxPool2d(2)]
            channels = base_channels * 2**level
        layers += [ConvBlock(channels, base_channels * 2**depth), nn.Dropout2d(dropout)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(base_channels * 2**depth, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.init_args["in_channels"], 2**self.depth)
        scores = self.classifier(self.features(x))
        return F.interpolate(scores, size=x.shape[2:], mode="bilinear", align_corners=False)
