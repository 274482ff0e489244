"""Seed every source of randomness a run touches, the table of named random streams, and capture/restore of
the global states for resuming."""

from __future__ import annotations

import random
from enum import IntEnum
from typing import cast

import numpy as np
import torch

from pai.errors import PaiConfigError, check_int


class Stream(IntEnum):
    """Every consumer of randomness draws from a CPU generator of its own, seeded by `make_generator(stream,
    seed, ...)`, so that one never shifts another (drawing scoring samples never changes the training order).
    Pass the stream first (random is the one historical exception). Values are part of every result: never
    renumber one."""

    TRAIN = 0  # training order and augmentation per epoch; epoch -1 is the BN-warmup pass
    SCORING_SAMPLES = 1  # which training samples score, and their augmentation
    HUTCHINSON_PROBES = 2  # Rademacher probes of the Hutchinson estimators
    FISHER_MC_LABELS = 3  # labels sampled from the model's predictive (fisher_mc)
    LAYER_SHUFFLE = 4  # prune.ablation=layer_shuffle: the kept positions redrawn in each layer
    REINIT = 5  # prune.ablation=reinit: the weights redrawn before training
    RANDOM_SCORES = 7  # the random criterion's scores (drawn as make_generator(seed, 7): see criteria/random.py)


def derive_seed(*parts: int) -> int:
    """Mix integers (seed, epoch, stream, ...) into one 63-bit seed for `torch.Generator.manual_seed`.

    numpy's SeedSequence hashes the parts, so nearby inputs (seed 0 epoch 1 vs seed 1 epoch 0) give unrelated
    streams, which `seed * K + epoch` would not guarantee. Negative parts (epoch -1) are mapped modulo 2**64.
    """
    entropy = [int(p) % 2**64 for p in parts]
    lo, hi = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return (int(hi) << 32 | int(lo)) & (2**63 - 1)


def make_generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded from `parts`. Random draws are made on the CPU so they do not depend on the
    device type (a CUDA and a CPU run of the same seed see the same order and crops)."""
    g = torch.Generator(device="cpu")
    g.manual_seed(derive_seed(*parts))
    return g


def check_seed(seed: object, key: str = "seed") -> int:
    """An integer seed (not a bool, not 1.5: numpy would refuse it deep in the run) that torch accepts."""
    value = check_int(key, seed)
    if not -(2**63) <= value < 2**63:
        raise PaiConfigError(f"{key}={value} must fit in a signed 64-bit integer")
    return value


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state() -> dict:
    """Every generator's state as tensors and plain values (NumPy's key array as a list of ints), so a checkpoint
    that holds it loads with `torch.load(weights_only=True)`."""
    legacy = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))
    name, keys, pos, has_gauss, cached_gaussian = legacy
    state = {"python": random.getstate(), "numpy": (name, keys.tolist(), pos, has_gauss, cached_gaussian),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
