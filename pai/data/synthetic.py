"""Random images of any shape, for tests and benchmarks (no files, no download)."""

from __future__ import annotations

from pathlib import Path

import torch

from pai.data.base import channel_stats
from pai.data.tensor_data import TensorImageData
from pai.errors import PaiConfigError
from pai.seeding import make_generator


def _make_split(
    n: int, num_classes: int, channels: int, size: int, class_means: torch.Tensor, noise: float, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    # Balanced labels (counts differ by at most one), in random order.
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    x = torch.empty(n, channels, size, size, dtype=torch.uint8)
    chunk = 4096  # in-place float work on bounded chunks: a 50k-image set needs no 600 MB float copy
    for start in range(0, n, chunk):
        part = torch.randn(min(chunk, n - start), channels, size, size, generator=g)
        part.mul_(noise).add_(class_means[labels[start : start + chunk]][:, :, None, None])
        x[start : start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return x, labels


def build_synthetic(
    name: str = "synthetic",
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    root: str | Path | None = None,
    num_train: int = 1000,
    num_test: int = 200,
    generator_seed: int = 0,
    noise: float = 48.0,
    crop_padding: int = 4,
    flip: bool = True,
) -> TensorImageData:
    """Images whose per-channel mean brightness depends on the class, plus Gaussian pixel noise.

    The class signal (a per-class colour, uniform in [32, 224] per channel) survives crops and flips, so a
    network can learn it and tests can watch the loss go down. `root` is accepted but unused.
    """
    del root
    for key, value, low in (
        ("num_classes", num_classes, 1),
        ("in_channels", in_channels, 1),
        ("image_size", image_size, 1),
        ("num_train", num_train, num_classes),
        ("num_test", num_test, 1),
    ):
        if int(value) < low:
            raise PaiConfigError(f"dataset.{key}={value} must be >= {low} (dataset={name})")
    g = make_generator(generator_seed)
    class_means = 32.0 + 192.0 * torch.rand(num_classes, in_channels, generator=g)
    train_x, train_y = _make_split(num_train, num_classes, in_channels, image_size, class_means, noise, g)
    test_x, test_y = _make_split(num_test, num_classes, in_channels, image_size, class_means, noise, g)
    mean, std = channel_stats(train_x)
    std = [max(s, 1e-3) for s in std]  # a constant image (noise 0, one class) must not divide by zero
    return TensorImageData(
        name,
        train_x,
        train_y,
        test_x,
        test_y,
        num_classes=num_classes,
        mean=mean,
        std=std,
        crop_padding=crop_padding,
        flip=flip,
    )
