"""Which samples make up each batch, shared by every dataset class (tensor-resident and DataLoader-streamed).

One epoch is a seeded permutation cut into global batches of `batch_size`. In a distributed run of `world`
ranks every global batch is split into `world` consecutive slices and rank r takes slice r: together the ranks
see exactly the batches of a single process, in the same order, whatever the world size.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from pai.errors import PaiConfigError
from pai.seeding import make_generator


def check_batch_size(batch_size: int, world: int = 1, key: str = "train.batch_size") -> int:
    """The per-rank batch size: `batch_size` must split evenly over the ranks (equal per-rank batches keep
    DDP's gradient average equal to the single-process mean)."""
    if batch_size < 1:
        raise PaiConfigError(f"{key}={batch_size} must be >= 1")
    if world < 1:
        raise ValueError(f"world={world} must be >= 1")
    if batch_size % world:
        raise PaiConfigError(f"{key}={batch_size} is the global batch and must be divisible by the number of "
                             f"ranks ({world}); choose a multiple of {world}")
    return batch_size // world


def epoch_order(num: int, stream: int, seed: int, epoch: int) -> tuple[Tensor, torch.Generator]:
    """The permutation of one epoch, a function of (stream, seed, epoch) only, and the CPU generator that drew
    it (a dataset goes on drawing that epoch's augmentation from it)."""
    g = make_generator(stream, seed, epoch)
    return torch.randperm(num, generator=g), g


def batch_slices(num: int, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[slice]:
    """For every global batch of an epoch of `num` positions, the positions this rank takes.

    Full batches give every rank `batch_size // world` positions. A last, partial batch is split as evenly as
    possible (sizes differ by one); with fewer samples than ranks it is dropped in a distributed run, because
    a rank with an empty batch cannot take part in the gradient all-reduce (one process keeps it).
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank={rank} outside a world of {world}")
    for i in range(num_batches(num, batch_size, world)):
        start = i * batch_size
        n = min(batch_size, num - start)
        lo, hi = start + rank * n // world, start + (rank + 1) * n // world
        yield slice(lo, hi)


def num_batches(num: int, batch_size: int, world: int = 1) -> int:
    """Global batches in an epoch of `num` samples: a last partial batch counts unless a distributed run drops
    it (fewer samples than ranks, see batch_slices)."""
    check_batch_size(batch_size, world)
    full, rest = divmod(num, batch_size)
    return full + (1 if rest and (world == 1 or rest >= world) else 0)


def shard_slices(num: int, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[slice]:
    """Consecutive batches of at most `batch_size` over this rank's contiguous, near-equal share of `num` items
    (evaluation: each rank tests its share; with one rank, all of them)."""
    lo, hi = rank * num // world, (rank + 1) * num // world
    return (slice(start, min(start + batch_size, hi)) for start in range(lo, hi, batch_size))
