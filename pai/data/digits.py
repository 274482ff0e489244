"""scikit-learn's embedded 8x8 handwritten digits: the demo set (no download, builds in milliseconds)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from pai.data.base import channel_stats, check_matches
from pai.data.tensor_data import TensorImageData
from pai.errors import PaiConfigError


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) float 0..16, labels (1797,) int64) — the data of `sklearn.datasets.load_digits`.

    `import sklearn` costs about a second here (it pulls in scipy.stats), ~30x the build itself, so the CSV
    that load_digits parses is read directly from the installed package, located without importing it. If the
    file ever moves, fall back to the public API.
    """
    spec = importlib.util.find_spec("sklearn")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        csv = Path(loc) / "datasets" / "data" / "digits.csv.gz"
        if csv.is_file():
            data = np.loadtxt(csv, delimiter=",")
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target.astype(np.int64)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test indices. As in sklearn's train_test_split, the test set has
    ceil(test_fraction * N) samples; they are shared among classes in proportion to class size (largest
    remainders get the leftovers) and chosen within each class by a numpy generator seeded with `seed`."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = test_fraction * counts
    per_class = np.floor(exact).astype(int)
    leftover = int(np.ceil(test_fraction * labels.size)) - int(per_class.sum())
    per_class[np.argsort(-(exact - per_class), kind="stable")[:leftover]] += 1
    test = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, per_class, strict=True)]
    test_idx = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(labels.size), test_idx), test_idx


def build_digits(
    name: str = "digits",
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 8,
    root: str | Path | None = None,
    split_seed: int = 0,
    test_fraction: float = 0.2,
    crop_padding: int = 1,
    flip: bool = False,
) -> TensorImageData:
    """1797 digits, pixel values 0..16 rescaled to 0..255, split stratified by class with `split_seed`.

    `root` is accepted (every dataset node has it) but unused: the data ship inside scikit-learn.
    Mean and std are computed from the training split, since no published values exist for this set.
    """
    del root
    if not 0.0 < test_fraction < 1.0:
        raise PaiConfigError(f"dataset.test_fraction={test_fraction} must be in (0, 1)")
    raw, labels = load_digits_arrays()
    images = np.rint(raw * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    check_matches(
        name,
        num_classes=(num_classes, len(np.unique(labels))),
        in_channels=(in_channels, images.shape[1]),
        image_size=(image_size, images.shape[2]),
    )
    idx_train, idx_test = stratified_split(labels, test_fraction, split_seed)
    train_x = torch.from_numpy(images[idx_train])
    mean, std = channel_stats(train_x)
    return TensorImageData(
        name,
        train_x,
        torch.from_numpy(labels[idx_train]),
        torch.from_numpy(images[idx_test]),
        torch.from_numpy(labels[idx_test]),
        num_classes=num_classes,
        mean=mean,
        std=std,
        crop_padding=crop_padding,
        flip=flip,
    )
