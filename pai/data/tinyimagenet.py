"""Tiny-ImageNet-200 (64x64, 200 classes) with the official val split as the test set.

The JPEG tree is decoded once (about 110k small files) and cached as one uint8 tensor file beside it,
`<root>/tiny-imagenet-200.pai-uint8.pt`, so later runs load in a second or two instead of re-decoding.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pai.data.base import as_floats, check_matches, missing, socket_timeout
from pai.data.tensor_data import TensorImageData
from pai.errors import PaiConfigError
from pai.files import atomic_open

FOLDER = "tiny-imagenet-200"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
CACHE_VERSION = 1


def cache_path(root: Path) -> Path:
    return root / f"{FOLDER}.pai-uint8.pt"


def _decode(path: Path) -> np.ndarray:
    # PIL, like torchvision's ImageFolder default loader; a few Tiny-ImageNet images are greyscale.
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _decode_all(paths: list[Path]) -> torch.Tensor:
    """Decode into one preallocated (N, 3, H, W) uint8 array (peak memory = the set itself, ~1.3 GB)."""
    if not paths:
        return torch.zeros(0, 3, 64, 64, dtype=torch.uint8)
    h, w, _ = _decode(paths[0]).shape
    out = np.empty((len(paths), 3, h, w), dtype=np.uint8)

    def fill(i: int) -> None:
        img = _decode(paths[i])
        if img.shape != (h, w, 3):
            raise PaiConfigError(f"dataset=tinyimagenet: {paths[i]} is {img.shape[:2]}, expected {(h, w)}")
        out[i] = img.transpose(2, 0, 1)

    # PIL releases the GIL while decoding, so threads give a real speed-up without copying arrays around.
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        list(pool.map(fill, range(len(paths))))
    return torch.from_numpy(out)


def read_tree(folder: Path) -> dict[str, object]:
    """Decode the standard layout: wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG with
    val/val_annotations.txt (file<TAB>wnid<TAB>bbox...). Classes are the sorted wnids, as ImageFolder orders
    them."""
    wnids = sorted(w.strip() for w in (folder / "wnids.txt").read_text().split() if w.strip())
    index = {w: i for i, w in enumerate(wnids)}
    train_paths: list[Path] = []
    train_labels: list[int] = []
    for w in wnids:
        files = sorted((folder / "train" / w / "images").glob("*.JPEG"))
        train_paths += files
        train_labels += [index[w]] * len(files)
    val_paths: list[Path] = []
    val_labels: list[int] = []
    for line in (folder / "val" / "val_annotations.txt").read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 2:
            continue
        val_paths.append(folder / "val" / "images" / parts[0])
        val_labels.append(index[parts[1]])
    return {
        "version": CACHE_VERSION,
        "classes": wnids,
        "train_x": _decode_all(train_paths),
        "train_y": torch.tensor(train_labels, dtype=torch.int64),
        "test_x": _decode_all(val_paths),
        "test_y": torch.tensor(val_labels, dtype=torch.int64),
    }


def _tree_complete(folder: Path) -> bool:
    return (folder / "wnids.txt").is_file() and (folder / "val" / "val_annotations.txt").is_file() and (
        folder / "train"
    ).is_dir()


def load_arrays(
    name: str, root: Path, download: bool, url: str, md5: str | None
) -> dict[str, object]:
    """The decoded set: from the cache file, else decoded from the tree (downloaded and unzipped first when
    missing and allowed), then cached atomically."""
    cache = cache_path(root)
    if cache.is_file():
        data = torch.load(cache, weights_only=True, mmap=True)
        if data.get("version") == CACHE_VERSION:
            return data
    folder = root / FOLDER
    if not _tree_complete(folder):
        how = f"unzip {URL} into {root} (giving {folder}/train, val, wnids.txt)"
        if not download:
            raise missing(name, folder, how)
        try:
            from torchvision.datasets.utils import download_and_extract_archive

            root.mkdir(parents=True, exist_ok=True)
            with socket_timeout():
                download_and_extract_archive(url, download_root=str(root), md5=md5)
        except Exception as err:
            raise missing(name, folder, how, cause=err) from err
        if not _tree_complete(folder):
            raise missing(name, folder, f"the archive from {url} did not contain {FOLDER}/; {how}", downloadable=False)
    data = read_tree(folder)
    try:  # atomic: a concurrent or interrupted run never sees half a cache file
        with atomic_open(cache, "wb") as f:
            torch.save(data, f)
    except OSError:
        pass  # a read-only data root only costs the re-decode next time
    return data


def build_tinyimagenet(
    name: str = "tinyimagenet",
    num_classes: int = 200,
    in_channels: int = 3,
    image_size: int = 64,
    root: str | Path = "data",
    download: bool = True,
    url: str = URL,
    md5: str | None = MD5,
    mean: Sequence[float] = (0.480, 0.448, 0.397),
    std: Sequence[float] = (0.276, 0.269, 0.282),
    crop_padding: int = 4,
    flip: bool = True,
) -> TensorImageData:
    """Tiny-ImageNet-200 from `<root>/tiny-imagenet-200` (or its cache file)."""
    data = load_arrays(name, Path(root).expanduser(), download, url, md5)
    train_x, test_x = data["train_x"], data["test_x"]
    assert isinstance(train_x, torch.Tensor) and isinstance(test_x, torch.Tensor)
    classes = list(data["classes"])  # type: ignore[call-overload]
    check_matches(
        name,
        num_classes=(num_classes, len(classes)),
        in_channels=(in_channels, train_x.shape[1]),
        image_size=(image_size, train_x.shape[2]),
    )
    return TensorImageData(
        name,
        train_x,
        data["train_y"],  # type: ignore[arg-type]
        test_x,
        data["test_y"],  # type: ignore[arg-type]
        num_classes=num_classes,
        mean=as_floats(mean, in_channels, "mean", name),
        std=as_floats(std, in_channels, "std", name),
        crop_padding=crop_padding,
        flip=flip,
        classes=classes,
    )
