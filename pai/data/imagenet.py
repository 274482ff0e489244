"""ImageNet (ILSVRC-2012) from a local ImageFolder tree; it cannot be downloaded automatically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torchvision import datasets

from pai.data.base import check_matches, missing
from pai.data.folder_data import FolderImageData
from pai.errors import PaiConfigError


def build_imagenet(
    name: str = "imagenet",
    num_classes: int = 1000,
    in_channels: int = 3,
    image_size: int = 224,
    root: str | Path = "data",
    subdir: str = "imagenet",
    resize_size: int = 256,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
    num_workers: int = 8,
    pin_memory: bool = True,
) -> FolderImageData:
    """`<root>/<subdir>/train/<wnid>/*.JPEG` and `<root>/<subdir>/val/<wnid>/*.JPEG` (val sorted into class
    folders, e.g. with the usual valprep.sh); the val split is the test set."""
    base = Path(root).expanduser() / subdir
    how = (
        "download ILSVRC2012 from image-net.org (registration required) and lay it out as train/<wnid>/*.JPEG "
        "and val/<wnid>/*.JPEG there"
    )
    if not ((base / "train").is_dir() and (base / "val").is_dir()):
        raise missing(name, base, how, downloadable=False)
    try:
        train = datasets.ImageFolder(str(base / "train"))
        test = datasets.ImageFolder(str(base / "val"))
    except FileNotFoundError as err:  # a class folder without images
        raise missing(name, base, f"{how} ({' '.join(str(err).split())})", downloadable=False) from err
    if train.classes != test.classes:
        raise PaiConfigError(
            f"dataset={name}: {base}/train has {len(train.classes)} class folders and {base}/val "
            f"{len(test.classes)}, or they differ; both need the same class folders"
        )
    check_matches(name, num_classes=(num_classes, len(train.classes)), in_channels=(in_channels, 3))
    return FolderImageData(
        name,
        train,
        test,
        image_size=image_size,
        resize_size=resize_size,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        num_workers=num_workers,
        pin_memory=pin_memory,
    )
