"""Fashion-MNIST from idx files: `<root>/FashionMNIST/raw/`, else a system copy (Debian's
`dataset-fashion-mnist` package installs the gzipped idx files in /usr/share/datasets/fashion-mnist), else a
download by torchvision."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import torch
from torchvision.datasets import FashionMNIST

from pai.data.base import missing, socket_timeout
from pai.data.tensor_data import TensorImageData, checked_tensor_data
from pai.files import atomic_open

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _raw_dir(root: Path) -> Path:
    return root / FashionMNIST.__name__ / "raw"  # where torchvision reads the (decompressed) idx files


def _fill_raw_from(source: Path, raw: Path) -> bool:
    """Decompress `source/<idx>.gz` (or copy `source/<idx>`) into `raw` for every file not yet there.

    torchvision reads only decompressed files, so gzipped ones (the Debian package, or .gz dropped into raw/)
    are expanded once; each file is written under a temporary name and renamed, so an interrupted copy never
    looks complete. Returns True when all four files are in `raw` afterwards.
    """
    todo = [f for f in IDX_FILES if not (raw / f).is_file()]
    for fname in todo:
        plain, gz = source / fname, source / f"{fname}.gz"
        if not (plain.is_file() or gz.is_file()):
            return False
    for fname in todo:
        plain, gz = source / fname, source / f"{fname}.gz"
        with (gzip.open(gz, "rb") if gz.is_file() else open(plain, "rb")) as src, \
                atomic_open(raw / fname, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
    return True


def _load(name: str, root: Path, download: bool, system_dir: str | None) -> tuple[FashionMNIST, FashionMNIST]:
    raw = _raw_dir(root)
    sources = [raw] + ([Path(system_dir)] if system_dir else [])
    searched = " and ".join(str(s) for s in sources)
    how = f"put {', '.join(f + '[.gz]' for f in IDX_FILES)} in {raw} (Debian/Ubuntu: apt install dataset-fashion-mnist)"
    for source in sources:
        try:
            if source.is_dir() and _fill_raw_from(source, raw):
                break
        except OSError as err:  # e.g. a read-only data root: say so in one line rather than a traceback
            reason = " ".join(str(err).split())
            raise missing(name, source, f"could not expand the idx files into {raw} ({reason}); make it writable "
                          "or point data_root elsewhere", downloadable=False) from err
    try:
        return FashionMNIST(str(root), train=True), FashionMNIST(str(root), train=False)
    except RuntimeError as err:  # torchvision: "Dataset not found"
        if not download:
            raise missing(name, searched, how) from err
    try:
        with socket_timeout():
            return FashionMNIST(str(root), train=True, download=True), FashionMNIST(str(root), train=False)
    except Exception as err:
        raise missing(name, searched, how, cause=err) from err


def build_fashion_mnist(
    name: str = "fashion_mnist",
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    root: str | Path = "data",
    download: bool = True,
    system_dir: str | None = DEBIAN_DIR,
    mean: float = 0.2860,
    std: float = 0.3530,
    crop_padding: int = 2,
    flip: bool = True,
) -> TensorImageData:
    """Fashion-MNIST (60000 train / 10000 test, 28x28 grey, 10 classes) as a device-resident tensor set."""
    train, test = _load(name, Path(root).expanduser(), download, system_dir)
    return checked_tensor_data(
        name,
        (train.data.unsqueeze(1).contiguous(), train.targets.to(torch.int64)),  # (N, 28, 28) -> (N, 1, 28, 28)
        (test.data.unsqueeze(1).contiguous(), test.targets.to(torch.int64)),
        train.classes, num_classes, in_channels, image_size, mean, std, crop_padding, flip,
    )
