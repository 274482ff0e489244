"""`FolderImageData`: an ImageFolder train/val pair streamed through DataLoader workers (ImageNet-sized sets
that do not fit on the device).

Reproducibility: every sample's augmentation is drawn from a generator seeded by (seed, epoch, sample index)
inside `__getitem__`, and the order from a generator seeded by (seed, epoch). So the batches are a pure
function of (seed, epoch) — independent of the number of workers, of which worker loads what, and of any
global RNG state — and a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets, transforms

from pai.data.base import balanced_indices
from pai.data.batching import batch_slices, check_batch_size, epoch_order, shard_slices
from pai.seeding import Stream, derive_seed, make_generator


class SeededTransform(Dataset):
    """Wraps a dataset of PIL images; sample i gets `transform` run under torch's RNG seeded from
    (base_seed, i). The global RNG is saved and restored around it, so callers' random state is untouched
    (this matters with num_workers=0, where __getitem__ runs in the main process)."""

    def __init__(self, base: datasets.ImageFolder, transform: Callable[[Any], Tensor], base_seed: int | None):
        self.base = base
        self.transform = transform
        self.base_seed = base_seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        path, target = self.base.samples[i]
        img = self.base.loader(path)
        if self.base_seed is None:  # deterministic transform (test), nothing to seed
            return self.transform(img), target
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.base_seed, i))
            return self.transform(img), target


class FolderImageData:
    """Train/test ImageFolder directories with the standard ImageNet pipeline."""

    def __init__(
        self,
        name: str,
        train: datasets.ImageFolder,
        test: datasets.ImageFolder,
        image_size: int = 224,
        resize_size: int = 256,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        num_workers: int = 8,
        pin_memory: bool = True,
    ) -> None:
        self.name = name
        self.train_set = train
        self.test_set = test
        self.classes = list(train.classes)
        self.num_classes = len(train.classes)
        self.in_channels = 3
        self.image_size = int(image_size)
        self.num_train = len(train)
        self.num_test = len(test)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.targets = torch.as_tensor(train.targets, dtype=torch.int64)
        norm = transforms.Normalize(mean, std)
        self.train_transform = transforms.Compose(
            [
                transforms.RandomResizedCrop(image_size),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                norm,
            ]
        )
        self.test_transform = transforms.Compose(
            [transforms.Resize(resize_size), transforms.CenterCrop(image_size), transforms.ToTensor(), norm]
        )

    def __repr__(self) -> str:
        n = f"{self.num_train} train / {self.num_test} test"
        return f"FolderImageData({self.name}: {n}, {self.num_classes} classes)"

    def _loader(self, ds: Dataset, device: torch.device, batches: Iterable[Sequence[int]]) -> DataLoader:
        return DataLoader(
            ds,
            batch_sampler=[list(b) for b in batches],  # the batches are fixed in advance (pai.data.batching)
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and device.type == "cuda",
            persistent_workers=False,
            # The loader draws its workers' base seed from this generator instead of the global RNG, so
            # iterating never shifts the caller's random state (augmentation itself is seeded per sample).
            generator=make_generator(0),
        )

    def _iterate(self, loader: DataLoader, device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def train_batches(
        self,
        batch_size: int,
        epoch: int,
        seed: int,
        device: torch.device | str,
        augment: bool = True,
        stream: int = Stream.TRAIN,
        rank: int = 0,
        world: int = 1,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        slices = list(batch_slices(self.num_train, batch_size, rank, world))  # checks batch_size first
        device = torch.device(device)
        order = epoch_order(self.num_train, stream, seed, epoch)[0].tolist()
        if augment:
            ds = SeededTransform(self.train_set, self.train_transform, derive_seed(stream, seed, epoch, 1))
        else:
            ds = SeededTransform(self.train_set, self.test_transform, None)
        return self._iterate(self._loader(ds, device, (order[sl] for sl in slices)), device)

    def bn_warmup_batches(
        self, batch_size: int, seed: int, device: torch.device | str, augment: bool = True
    ) -> Iterator[tuple[Tensor, Tensor]]:
        return self.train_batches(batch_size, -1, seed, device, augment)

    def test_batches(
        self, batch_size: int, device: torch.device | str, rank: int = 0, world: int = 1
    ) -> Iterator[tuple[Tensor, Tensor]]:
        check_batch_size(batch_size, key="train.eval_batch_size")
        device = torch.device(device)
        ds = SeededTransform(self.test_set, self.test_transform, None)
        batches = (range(sl.start, sl.stop) for sl in shard_slices(self.num_test, batch_size, rank, world))
        return self._iterate(self._loader(ds, device, batches), device)

    def scoring_samples(
        self, per_class: int, seed: int, device: torch.device | str, augment: bool = True
    ) -> tuple[Tensor, Tensor]:
        g = make_generator(Stream.SCORING_SAMPLES, seed)
        idx = balanced_indices(self.targets, self.num_classes, per_class, g, dataset=self.name).tolist()
        if augment:
            ds = SeededTransform(self.train_set, self.train_transform, derive_seed(Stream.SCORING_SAMPLES, seed, 1))
        else:
            ds = SeededTransform(self.train_set, self.test_transform, None)
        device = torch.device(device)
        batches = (range(sl.start, sl.stop) for sl in shard_slices(len(idx), 256))
        xs, ys = zip(*self._iterate(self._loader(Subset(ds, idx), device, batches), device), strict=True)
        return torch.cat(xs), torch.cat(ys)
