"""`TensorImageData`: a whole dataset held as uint8 tensors on the training device.

Small sets (digits, Fashion-MNIST, CIFAR, TinyImageNet, synthetic) fit in device memory as uint8 (CIFAR-10 is
150 MB, TinyImageNet 1.3 GB), so there is no DataLoader, no worker processes and no host-to-device copy per
step: a batch is an index gather plus the batched augmentation of `pai.data.augment`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from pai.data.augment import crop_flip, draw_crop_flip, normalize
from pai.data.base import as_floats, balanced_indices, check_matches
from pai.data.batching import batch_slices, check_batch_size, epoch_order, shard_slices
from pai.errors import PaiConfigError
from pai.seeding import Stream, make_generator


def take_rows(x: Tensor, idx: Tensor) -> Tensor:
    """`x[idx]` for a contiguous (N, ...) tensor and int64 indices on its device. An `index_select` of whole
    flattened samples: one block copy per sample, where advanced indexing of a uint8 (N, C, H, W) tensor walks
    every element (~30x slower on the CPU for a 512 x 3 x 32 x 32 batch)."""
    return x.view(x.shape[0], -1).index_select(0, idx).view(idx.numel(), *x.shape[1:])


class TensorImageData:
    """A dataset of uint8 (N, C, H, W) images with int64 labels, augmented on the device.

    Randomness: at the start of an epoch one CPU generator seeded from (seed, epoch) draws the permutation and
    every sample's crop offsets and flip flag, so the batches depend only on (seed, epoch) — not on the device,
    on earlier epochs, or on anything else that used the global RNG.
    """

    def __init__(
        self,
        name: str,
        train_x: Tensor,
        train_y: Tensor,
        test_x: Tensor,
        test_y: Tensor,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        crop_padding: int = 0,
        flip: bool = False,
        classes: Sequence[str] | None = None,
    ) -> None:
        for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise ValueError(f"{name} {split} images must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
            if y.dim() != 1 or y.numel() != x.shape[0]:
                raise ValueError(f"{name} {split}: {x.shape[0]} images but labels of shape {tuple(y.shape)}")
        if train_x.shape[1:] != test_x.shape[1:]:
            raise ValueError(f"{name}: train images {tuple(train_x.shape[1:])} vs test {tuple(test_x.shape[1:])}")
        if train_x.shape[2] != train_x.shape[3]:
            raise ValueError(f"{name}: images must be square, got {tuple(train_x.shape[2:])}")
        if len(mean) != train_x.shape[1] or len(std) != train_x.shape[1]:
            raise ValueError(f"{name}: mean/std need one value per channel ({train_x.shape[1]})")
        if crop_padding < 0:
            raise PaiConfigError(f"dataset.crop_padding={crop_padding} must be >= 0")
        self.name = name
        self.num_classes = int(num_classes)
        self.in_channels = int(train_x.shape[1])
        self.image_size = int(train_x.shape[2])
        self.num_train = int(train_x.shape[0])
        self.num_test = int(test_x.shape[0])
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.crop_padding = int(crop_padding)
        self.flip = bool(flip)
        self.classes = list(classes) if classes is not None else [str(c) for c in range(self.num_classes)]
        self._cpu = {
            "train_x": train_x.contiguous(),
            "train_y": train_y.to(torch.int64).contiguous(),
            "test_x": test_x.contiguous(),
            "test_y": test_y.to(torch.int64).contiguous(),
        }
        self._on_device: dict[str, dict[str, Tensor]] = {}

    def __repr__(self) -> str:
        return (
            f"TensorImageData({self.name}: {self.num_train} train / {self.num_test} test, "
            f"{self.in_channels}x{self.image_size}x{self.image_size}, {self.num_classes} classes)"
        )

    # ---- device residency -------------------------------------------------------------------------------
    @staticmethod
    def _resolve(device: torch.device | str) -> torch.device:
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:  # "cuda" and "cuda:0" must share one copy
            device = torch.device("cuda", torch.cuda.current_device())
        return device

    def _tensors(self, device: torch.device | str) -> dict[str, Tensor]:
        """The set (plus mean/std) on `device`, copied there once and cached."""
        device = self._resolve(device)
        key = str(device)
        if key not in self._on_device:
            # On the CPU the tensors are shared, not copied.
            t = {k: v.to(device, non_blocking=True) for k, v in self._cpu.items()}
            shape = (1, self.in_channels, 1, 1)
            t["mean"] = torch.tensor(self.mean, dtype=torch.float32, device=device).view(shape)
            t["std"] = torch.tensor(self.std, dtype=torch.float32, device=device).view(shape)
            self._on_device[key] = t
        return self._on_device[key]

    def preload(self, device: torch.device | str) -> None:
        """Copy the set to `device` now, once (batches then use that copy): keeps the one-off upload out of a
        timing."""
        self._tensors(device)

    def split(self, name: str = "train") -> tuple[Tensor, Tensor]:
        """The `train` or `test` images (uint8 (N, C, H, W)) and labels (int64), on the CPU, not copied."""
        if name not in ("train", "test"):
            raise ValueError(f"split={name!r} must be train or test")
        return self._cpu[f"{name}_x"], self._cpu[f"{name}_y"]

    def release(self, device: torch.device | str | None = None) -> None:
        """Drop cached device copies (all of them when `device` is None)."""
        if device is None:
            self._on_device.clear()
        else:
            self._on_device.pop(str(self._resolve(device)), None)

    # ---- the ImageData interface --------------------------------------------------------------------------
    def epoch_plan(
        self, epoch: int, seed: int, augment: bool = True, stream: int = Stream.TRAIN
    ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
        """(order, row offsets, column offsets, flip flags) of one epoch, all on the CPU; exposed for tests."""
        order, g = epoch_order(self.num_train, stream, seed, epoch)
        if not augment:
            return order, None, None, None
        oy, ox, fl = draw_crop_flip(self.num_train, self.crop_padding, self.flip, g)
        return order, oy, ox, fl

    def _transform(
        self, x: Tensor, t: dict[str, Tensor], oy: Tensor | None, ox: Tensor | None, fl: Tensor | None
    ) -> Tensor:
        if oy is not None and ox is not None and (self.crop_padding > 0 or fl is not None):
            x = crop_flip(x, self.crop_padding, oy, ox, fl)
        return normalize(x, t["mean"], t["std"])

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
        check_batch_size(batch_size, world)
        t = self._tensors(device)
        dev = t["train_x"].device
        order, oy, ox, fl = self.epoch_plan(epoch, seed, augment, stream)
        order_d = order.to(dev)
        if oy is not None and ox is not None:
            # Parameters are indexed by position in the epoch, so batch size (and world size) does not change them.
            oy, ox = oy.to(dev), ox.to(dev)
            fl = fl.to(dev) if fl is not None else None
        for sl in batch_slices(self.num_train, batch_size, rank, world):
            idx = order_d[sl]
            x = self._transform(
                take_rows(t["train_x"], idx),
                t,
                None if oy is None else oy[sl],
                None if ox is None else ox[sl],
                None if fl is None else fl[sl],
            )
            yield x, t["train_y"][idx]

    def bn_warmup_batches(
        self, batch_size: int, seed: int, device: torch.device | str, augment: bool = True
    ) -> Iterator[tuple[Tensor, Tensor]]:
        # epoch -1: a stream of its own that no training epoch (0, 1, ...) uses.
        return self.train_batches(batch_size, -1, seed, device, augment)

    def test_batches(
        self, batch_size: int, device: torch.device | str, rank: int = 0, world: int = 1
    ) -> Iterator[tuple[Tensor, Tensor]]:
        check_batch_size(batch_size, key="train.eval_batch_size")
        t = self._tensors(device)
        for sl in shard_slices(self.num_test, batch_size, rank, world):
            yield normalize(t["test_x"][sl], t["mean"], t["std"]), t["test_y"][sl]

    def scoring_samples(
        self, per_class: int, seed: int, device: torch.device | str, augment: bool = True
    ) -> tuple[Tensor, Tensor]:
        g = make_generator(Stream.SCORING_SAMPLES, seed)
        idx = balanced_indices(self._cpu["train_y"], self.num_classes, per_class, g, dataset=self.name)
        t = self._tensors(device)
        idx_d = idx.to(t["train_x"].device)
        x = take_rows(t["train_x"], idx_d)
        if augment:
            oy, ox, fl = draw_crop_flip(idx.numel(), self.crop_padding, self.flip, g)
            return self._transform(x, t, oy, ox, fl), t["train_y"][idx_d]
        return self._transform(x, t, None, None, None), t["train_y"][idx_d]


def checked_tensor_data(
    name: str,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    classes: Sequence[str],
    num_classes: int,
    in_channels: int,
    image_size: int,
    mean: Sequence[float] | float,
    std: Sequence[float] | float,
    crop_padding: int,
    flip: bool,
) -> TensorImageData:
    """A file-backed data set from its loaded (images, labels) splits, after checking the config's
    `num_classes`, `in_channels` and `image_size` against the files (one message naming the key)."""
    check_matches(
        name,
        num_classes=(num_classes, len(classes)),
        in_channels=(in_channels, train[0].shape[1]),
        image_size=(image_size, train[0].shape[2]),
    )
    return TensorImageData(
        name, *train, *test, num_classes=num_classes, mean=as_floats(mean, in_channels, "mean", name),
        std=as_floats(std, in_channels, "std", name), crop_padding=crop_padding, flip=flip, classes=list(classes),
    )
