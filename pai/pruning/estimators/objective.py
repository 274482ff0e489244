"""The loss as a function of the scored weights, shared by every gradient-based estimator.

Everything is functional (`torch.func.functional_call` on detached aliases of the parameters): the model's own
parameters never get a `.grad` and keep their `requires_grad`; BN reads its running statistics in eval mode.
Groups of scoring samples (the reference's "mask batch") are cut here too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

Grads = dict[str, Tensor]


@contextlib.contextmanager
def scoring_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (BN uses running statistics, so samples do not interact) with grad enabled; every module's
    train/eval flag is restored afterwards, even when scoring fails."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.enable_grad():
            yield model
    finally:
        for m, mode in modes:
            m.training = mode


class Objective:
    """Cross-entropy of logits / T as a function of the scored weights; all other tensors held fixed."""

    def __init__(self, model: nn.Module, names: list[str], temperature: float = 1.0):
        self.model = model
        self.temperature = float(temperature)
        self.fixed: dict[str, Tensor] = {n: p.detach() for n, p in model.named_parameters()}
        self.fixed.update(model.named_buffers())
        self.weights = {n: self.fixed[n] for n in names}

    def logits(self, weights: Grads, x: Tensor) -> Tensor:
        return functional_call(self.model, {**self.fixed, **weights}, (x,))

    def loss(self, weights: Grads, x: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
        return F.cross_entropy(self.logits(weights, x) / self.temperature, y, reduction=reduction)

    def leaves(self) -> Grads:
        """New leaf tensors sharing the weights' storage, differentiable without touching the model's flags."""
        return {n: w.detach().requires_grad_() for n, w in self.weights.items()}

    def zeros(self) -> Grads:
        return {n: torch.zeros_like(w) for n, w in self.weights.items()}


def grads_of(out: Tensor, w: Grads, **kwargs) -> Grads:
    """torch.autograd.grad as a dict keyed like `w`."""
    return dict(zip(w, torch.autograd.grad(out, list(w.values()), **kwargs), strict=True))


def group_chunks(n: int, batch_size: int, chunk_size: int) -> list[tuple[int, int, int]]:
    """(start, stop, group size) over n samples: groups are `batch_size` consecutive samples (the last may be
    smaller, as in a DataLoader); each chunk holds at most `chunk_size` whole groups, all of one size."""
    full = n - n % batch_size
    step = max(1, chunk_size) * batch_size
    out = [(s, min(s + step, full), batch_size) for s in range(0, full, step)]
    if full < n:
        out.append((full, n, n - full))
    return out


def num_groups(n: int, batch_size: int) -> int:
    return -(-n // batch_size)
