import torch
from torch import Tensor, nn

from pai.pruning.criteria.base import Criterion, Scores


class Random(Criterion):
    """Uniform random scores from a generator seeded by the run's seed (the same seed gives the same mask)."""

    name = "random"
    data_free = True

    def __init__(self, seed: int = 0):
        self.seed = seed

    def score(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> Scores:
        gen = torch.Generator().manual_seed(self.seed)
        return {n: torch.rand(w.shape, generator=gen).to(w.device) for n, w in self.weights(model).items()}
