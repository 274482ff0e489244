"""VGG-11/13/16/19 with BatchNorm as in the paper's reference code (kuangliu style).

Conv 3x3 (bias=True) + BN + ReLU, 2x2 max-pools per the standard cfgs, ONE Linear 512 -> classes, no dropout.

Small inputs: the five max-pools take 32 px to 1 px. For smaller images (28 px Fashion-MNIST, 8 px digits)
a pool that would act on a map already at 1 px is skipped (decided at construction from ``image_size``),
so every conv layer is kept and the network stays the same depth; an adaptive average pool to 1x1 before
the Linear makes larger inputs (64 px) work too. Consequence: ``image_size`` must not exceed the true
input size, or a pool is kept that meets a map smaller than 2 px and the forward fails.
Initialisation is PyTorch's default, as in the reference.
"""

from __future__ import annotations

import torch
from torch import nn

from pai.models.init_from import initializable

CFGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [
        64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
        512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
    ],
}  # fmt: skip


class VGG(nn.Module):
    def __init__(self, cfg: list[int | str], num_classes: int, in_channels: int = 3, image_size: int = 32):
        super().__init__()
        self.features = _make_features(cfg, in_channels, image_size)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _make_features(cfg: list[int | str], in_channels: int, image_size: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    c, size = in_channels, int(image_size)
    for v in cfg:
        if v == "M":
            if size >= 2:  # a 2x2 pool on a 1 px map would give 0 px
                layers.append(nn.MaxPool2d(2, 2))
                size //= 2
            continue
        layers += [
            nn.Conv2d(c, int(v), 3, padding=1, bias=True),
            nn.BatchNorm2d(int(v)),
            nn.ReLU(inplace=True),
        ]
        c = int(v)
    return nn.Sequential(*layers)


@initializable
def vgg11(num_classes: int, in_channels: int = 3, image_size: int = 32) -> VGG:
    return VGG(CFGS["vgg11"], num_classes, in_channels, image_size)


@initializable
def vgg13(num_classes: int, in_channels: int = 3, image_size: int = 32) -> VGG:
    return VGG(CFGS["vgg13"], num_classes, in_channels, image_size)


@initializable
def vgg16(num_classes: int, in_channels: int = 3, image_size: int = 32) -> VGG:
    return VGG(CFGS["vgg16"], num_classes, in_channels, image_size)


@initializable
def vgg19(num_classes: int, in_channels: int = 3, image_size: int = 32) -> VGG:
    return VGG(CFGS["vgg19"], num_classes, in_channels, image_size)
