"""ResNet-20 of He et al. 2016 (Sec. 4.2, CIFAR): 3x3 stem conv, 3 stages x 3 BasicBlocks, widths 16/32/64.

Shortcut: option B — a 1x1 conv + BN projection where the shape changes (the first block of stages 2 and 3),
identity elsewhere. Option A (zero-padded identity) would be 269,722 parameters at 10 classes; the two
projections add 2,752, giving 272,474. Option B keeps every weight in a conv, which the pruning code handles
uniformly, and avoids the strided-slice shortcut whose behaviour differs between implementations.

``width`` scales every stage (16/32/64 x width, at least 1 channel): width 0.5 gives a ~70k-parameter net
for fast CPU recipes. Global adaptive average pool, so 8 px and 28 px inputs work.
Initialisation is PyTorch's default (kaiming-uniform).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from pai.errors import PaiConfigError
from pai.models.cifar_resnet import BasicBlock
from pai.models.init_from import initializable


class ResNet20(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0, blocks_per_stage: int = 3):
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, int | float) or not width > 0:
            raise PaiConfigError(f"model.width={width!r} must be a number > 0")
        w1, w2, w3 = (max(1, round(c * width)) for c in (16, 32, 64))
        self.conv1 = nn.Conv2d(in_channels, w1, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w1)
        self.in_planes = w1
        self.layer1 = self._make_layer(w1, blocks_per_stage, stride=1)
        self.layer2 = self._make_layer(w2, blocks_per_stage, stride=2)
        self.layer3 = self._make_layer(w3, blocks_per_stage, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(w3, num_classes)

    def _make_layer(self, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            # BasicBlock's shortcut is the option-B projection when shape changes, identity otherwise.
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(torch.flatten(self.pool(out), 1))


@initializable
def resnet20(num_classes: int, in_channels: int = 3, width: float = 1.0) -> ResNet20:
    """ResNet-20 (option-B shortcuts). 272,474 parameters with 10 classes at width 1."""
    return ResNet20(num_classes, in_channels, width)
