"""FCN-8s: fully convolutional network with stride-8 skip fusion.

Long J., Shelhamer E., Darrell T., "Fully Convolutional Networks for Semantic Segmentation",
CVPR 2015 (arXiv:1411.4038). The encoder is VGG-16-like (Simonyan and Zisserman, ICLR 2015) with
batch norm added and widths scaled by ``base_channels``; class scores from pool3, pool4 and the final
layer are fused after 2x learned up-samplings (initialised bilinear), then up-sampled 8x to the input.
Padding replaces the paper's 100-pixel pad and crops, so inputs must be divisible by 32.
"""

from __future__ import annotations

import torch
from torch import nn

from bmcore.models.blocks import check_input, checked_init_args

# (width multiplier of base_channels, number of 3x3 convolutions) for each of VGG-16's five stages.
_VGG_STAGES = ((1, 2), (2, 2), (4, 3), (8, 3), (8, 3))


def _vgg_stage(in_channels: int, out_channels: int, convolutions: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index in range(convolutions):
        layers += [
            nn.Conv2d(in_channels if index == 0 else out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
    layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def _bilinear_upsampling(channels: int, factor: int) -> nn.ConvTranspose2d:
    """A per-channel transposed convolution that up-samples exactly ``factor``x, initialised bilinear."""
    kernel = 2 * factor
    layer = nn.ConvTranspose2d(channels, channels, kernel, stride=factor, padding=factor // 2, bias=False)
    center = (kernel - 1) / 2
    steps = torch.arange(kernel, dtype=torch.float32)
    profile = 1 - (steps - center).abs() / factor
    weight = torch.zeros(channels, channels, kernel, kernel)
    weight[range(channels), range(channels)] = profile[:, None] * profile[None, :]
    with torch.no_grad():
        layer.weight.copy_(weight)
    return layer


class FCN8s(nn.Module):
    """FCN-8s: (N, in_channels, H, W) -> logits (N, num_classes, H, W); H and W divisible by 32.

    Stages of ``base_channels * (1, 2, 4, 8, 8)`` channels, each ending in 2x max-pooling; "fc6"
    (3x3, ``16 * base_channels``) and "fc7" (1x1) with dropout; 1x1 score layers on pool3, pool4 and
    fc7; score_fc7 up 2x + score_pool4, up 2x + score_pool3, up 8x.
    """

    def __init__(
        self,
        in_channels: int = 4,
        num_classes: int = 4,
        base_channels: int = 32,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.init_args = checked_init_args(in_channels, num_classes, base_channels, dropout)
        widths = [base_channels * multiplier for multiplier, _ in _VGG_STAGES]
        inputs = [in_channels, *widths[:-1]]
        stages = [_vgg_stage(i, o, n) for i, o, (_, n) in zip(inputs, widths, _VGG_STAGES, strict=True)]
        self.to_pool3 = nn.Sequential(*stages[:3])
        self.to_pool4 = stages[3]
        self.to_pool5 = stages[4]
        fc_channels = 16 * base_channels
        self.fully_convolutional = nn.Sequential(
            nn.Conv2d(widths[4], fc_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(fc_channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(fc_channels, fc_channels, 1, bias=False),
            nn.BatchNorm2d(fc_channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
        )
        self.score_final = nn.Conv2d(fc_channels, num_classes, 1)
        self.score_pool4 = nn.Conv2d(widths[3], num_classes, 1)
        self.score_pool3 = nn.Conv2d(widths[2], num_classes, 1)
        self.up_final = _bilinear_upsampling(num_classes, 2)
        self.up_pool4 = _bilinear_upsampling(num_classes, 2)
        self.up_output = _bilinear_upsampling(num_classes, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.init_args["in_channels"], 32)
        pool3 = self.to_pool3(x)
        pool4 = self.to_pool4(pool3)
        final = self.fully_convolutional(self.to_pool5(pool4))
        fused = self.up_final(self.score_final(final)) + self.score_pool4(pool4)
        fused = self.up_pool4(fused) + self.score_pool3(pool3)
        return self.up_output(fused)
