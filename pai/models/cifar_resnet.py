"""CIFAR / TinyImageNet ResNets in the "kuangliu" (pytorch-cifar) style used by the paper's reference code.

3x3 stride-1 stem conv (64 channels) + BN + ReLU, no max-pool, four stages (strides 1, 2, 2, 2),
BasicBlock or Bottleneck with a 1x1 conv + BN shortcut when the shape changes, global average pool, Linear.

The pool is adaptive: on 32 px inputs the last feature map is 4x4, so it equals kuangliu's ``avg_pool2d(4)``;
on 64 px (TinyImageNet, as in the reference) or 8/28 px inputs it still yields one vector per image.
Module names (conv1, bn1, layer1..4, shortcut, linear) follow kuangliu so state dicts are interchangeable.
Initialisation is PyTorch's default (kaiming-uniform), as in the reference.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from pai.models.init_from import initializable


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        # kuangliu puts the stride on the 3x3 conv (ResNet v1.5), not on the first 1x1.
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    """Identity (empty Sequential, as in kuangliu) or a 1x1 conv + BN projection when the shape changes."""
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class ResNet(nn.Module):
    """kuangliu ResNet; ``block`` and ``num_blocks`` choose the depth."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        num_blocks: list[int],
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, n: int,
                    stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(torch.flatten(self.pool(out), 1))


@initializable
def resnet18(num_classes: int, in_channels: int = 3) -> ResNet:
    """ResNet-18 (CIFAR). 11,173,962 parameters with 10 classes."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels)


@initializable
def resnet34(num_classes: int, in_channels: int = 3) -> ResNet:
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels)


@initializable
def resnet50(num_classes: int, in_channels: int = 3) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels)


@initializable
def resnet101(num_classes: int, in_channels: int = 3) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes, in_channels)


@initializable
def resnet152(num_classes: int, in_channels: int = 3) -> ResNet:
    return ResNet(Bottleneck, [3, 8, 36, 3], num_classes, in_channels)


# TinyImageNet variants: the reference uses the same small stem and an adaptive pool, which our ResNet
# always has, so they are the same networks. They stay separate builders so configs and result
# directories name what was run (resnet18_tiny vs resnet18).
@initializable
def resnet18_tiny(num_classes: int, in_channels: int = 3) -> ResNet:
    """ResNet-18 for 64 px TinyImageNet (same network as ``resnet18``)."""
    return resnet18(num_classes, in_channels)


@initializable
def resnet34_tiny(num_classes: int, in_channels: int = 3) -> ResNet:
    """ResNet-34 for 64 px TinyImageNet (same network as ``resnet34``)."""
    return resnet34(num_classes, in_channels)


@initializable
def resnet50_tiny(num_classes: int, in_channels: int = 3) -> ResNet:
    """ResNet-50 for 64 px TinyImageNet (same network as ``resnet50``)."""
    return resnet50(num_classes, in_channels)
