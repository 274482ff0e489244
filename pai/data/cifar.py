"""CIFAR-10 / CIFAR-100 through torchvision's readers, held on the device as uint8 tensors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torchvision.datasets import CIFAR10, CIFAR100

from pai.data.base import missing, socket_timeout
from pai.data.tensor_data import TensorImageData, checked_tensor_data


def _load(cls: type[CIFAR10], name: str, root: Path, download: bool) -> tuple[CIFAR10, CIFAR10]:
    """Both splits, downloading (with a socket timeout) only when allowed and needed."""
    where = root / cls.base_folder
    how = f"extract {cls.url} (the python version) into {root}"
    try:
        return cls(str(root), train=True, download=False), cls(str(root), train=False, download=False)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        if not download:
            raise missing(name, where, how) from err
    try:
        root.mkdir(parents=True, exist_ok=True)
        with socket_timeout():
            return cls(str(root), train=True, download=True), cls(str(root), train=False, download=True)
    except Exception as err:  # network errors, bad checksums, unwritable root ...
        raise missing(name, where, how, cause=err) from err


def _to_tensor(ds: CIFAR10) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 32, 32, 3) HWC -> NCHW
    return x, torch.as_tensor(ds.targets, dtype=torch.int64)


def _build(
    cls: type[CIFAR10],
    name: str,
    num_classes: int,
    in_channels: int,
    image_size: int,
    root: str | Path,
    download: bool,
    mean: Sequence[float],
    std: Sequence[float],
    crop_padding: int,
    flip: bool,
) -> TensorImageData:
    train, test = _load(cls, name, Path(root).expanduser(), download)
    return checked_tensor_data(name, _to_tensor(train), _to_tensor(test), train.classes, num_classes, in_channels,
                               image_size, mean, std, crop_padding, flip)


def build_cifar10(
    name: str = "cifar10",
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    root: str | Path = "data",
    download: bool = True,
    mean: Sequence[float] = (0.4914, 0.4822, 0.4465),
    std: Sequence[float] = (0.2023, 0.1994, 0.2010),
    crop_padding: int = 4,
    flip: bool = True,
) -> TensorImageData:
    """CIFAR-10 from `<root>/cifar-10-batches-py` (downloaded there when missing and `download`)."""
    return _build(CIFAR10, name, num_classes, in_channels, image_size, root, download, mean, std, crop_padding, flip)


def build_cifar100(
    name: str = "cifar100",
    num_classes: int = 100,
    in_channels: int = 3,
    image_size: int = 32,
    root: str | Path = "data",
    download: bool = True,
    mean: Sequence[float] = (0.5071, 0.4867, 0.4408),
    std: Sequence[float] = (0.2675, 0.2565, 0.2761),
    crop_padding: int = 4,
    flip: bool = True,
) -> TensorImageData:
    """CIFAR-100 (fine labels) from `<root>/cifar-100-python`."""
    return _build(CIFAR100, name, num_classes, in_channels, image_size, root, download, mean, std, crop_padding, flip)
