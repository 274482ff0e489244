"""The dataset contract every builder returns, its errors, and small shared helpers.

`hydra.utils.instantiate(cfg.dataset)` returns an object that satisfies :class:`ImageData`. The rest of the
code (training, BN warmup, scoring) only uses this interface, so a new dataset only needs a builder.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from pai.errors import PaiConfigError

# A download that gets no answer within this many seconds fails (no network must not mean a hang).
DOWNLOAD_TIMEOUT_S = 30.0


class DataMissingError(PaiConfigError):
    """The dataset files are not on disk and could not be downloaded. The message is one line."""


@runtime_checkable
class ImageData(Protocol):
    """What a dataset builder returns (see DESIGN.md)."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    num_train: int
    num_test: int

    def train_batches(
        self, batch_size: int, epoch: int, seed: int, device: torch.device, augment: bool = True,
        rank: int = 0, world: int = 1,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of (float32 NCHW normalised images, int64 labels) on `device`.

        Every training sample appears exactly once; the last partial batch is kept. Order and augmentation are
        a pure function of (seed, epoch), so a resumed run sees the same batches as an uninterrupted one.
        `batch_size` is the global batch; with `world` > 1 this yields rank `rank`'s slice of every global
        batch (pai.data.batching.batch_slices).
        """
        ...

    def test_batches(
        self, batch_size: int, device: torch.device, rank: int = 0, world: int = 1
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """The test set in a fixed order, without augmentation (rank `rank`'s contiguous share of it)."""
        ...

    def scoring_samples(
        self, per_class: int, seed: int, device: torch.device, augment: bool = True
    ) -> tuple[Tensor, Tensor]:
        """Exactly `per_class` training samples of every class, drawn from a generator seeded by `seed`."""
        ...

    def bn_warmup_batches(
        self, batch_size: int, seed: int, device: torch.device, augment: bool = True
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One pass over the training set for refreshing BatchNorm statistics (its own random stream)."""
        ...


def balanced_indices(
    labels: Tensor, num_classes: int, per_class: int, generator: torch.Generator, *, dataset: str
) -> Tensor:
    """Indices of exactly `per_class` samples of every class, chosen without replacement.

    The result is shuffled (with the same generator) so that mini-batches of scoring samples mix classes;
    per-sample criteria do not depend on the order.
    """
    if per_class < 1:
        raise PaiConfigError(f"prune.samples_per_class={per_class} must be >= 1 (dataset={dataset})")
    labels = labels.cpu()
    chosen = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c, as_tuple=True)[0]
        if idx.numel() < per_class:
            raise PaiConfigError(
                f"prune.samples_per_class={per_class} but dataset={dataset} has only {idx.numel()} training "
                f"samples of class {c}; lower prune.samples_per_class"
            )
        chosen.append(idx[torch.randperm(idx.numel(), generator=generator)[:per_class]])
    out = torch.cat(chosen)
    return out[torch.randperm(out.numel(), generator=generator)]


def check_matches(dataset: str, **pairs: tuple[int, int]) -> None:
    """Raise PaiConfigError when a config value (`dataset.<key>`) disagrees with the loaded data.

    `pairs` maps key -> (value in the config, value found in the data).
    """
    for key, (configured, found) in pairs.items():
        if int(configured) != int(found):
            raise PaiConfigError(
                f"dataset.{key}={configured} but dataset={dataset} has {key}={found}; "
                f"set dataset.{key}={found}"
            )


def as_floats(values: Sequence[float] | float, channels: int, key: str, dataset: str) -> tuple[float, ...]:
    """Normalise a mean/std knob (a number or one value per channel) to a tuple of `channels` floats."""
    if isinstance(values, int | float):
        return (float(values),) * channels
    out = tuple(float(v) for v in values)
    if len(out) == 1:
        return out * channels
    if len(out) != channels:
        raise PaiConfigError(f"dataset.{key} has {len(out)} values but dataset={dataset} has {channels} channels")
    return out


def missing(
    dataset: str, searched: Path | str, how: str, cause: BaseException | None = None, downloadable: bool = True
) -> DataMissingError:
    """Build the one-line DataMissingError that names the config key, the directory and the remedy."""
    msg = f"dataset={dataset}: data not found in {searched}; {how}"
    if cause is not None:
        reason = " ".join(f"{type(cause).__name__}: {cause}".split())  # one line, whatever the cause says
        msg += f" (download failed: {reason[:300]})"
    elif downloadable:
        msg += ", or set dataset.download=true (needs network)"
    return DataMissingError(msg + "; the data root is data_root (env PAI_DATA)")


@contextlib.contextmanager
def socket_timeout(seconds: float | None = None) -> Iterator[None]:
    """Bound every socket operation made inside (torchvision's downloads use urllib without a timeout), so a
    server that accepts but never answers cannot hang a run. Default: DOWNLOAD_TIMEOUT_S, read at call time."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S if seconds is None else seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def channel_stats(x: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and (unbiased) std of uint8 (N, C, H, W) images scaled to [0, 1].

    Computed from a 256-bin histogram per channel: exact, and no float copy of a large set is ever made.
    """
    v = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        hist = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        n = float(hist.sum())
        mean = float((hist * v).sum()) / n
        var = float((hist * (v - mean).square()).sum()) / max(n - 1.0, 1.0)
        means.append(mean)
        stds.append(max(var, 1e-24) ** 0.5)
    return means, stds
