import torch
from torch import Tensor, nn

from pai.pruning.criteria.base import Criterion, Scores
from pai.seeding import Stream, check_seed, make_generator

# The scores get their own random stream: drawn from `torch.Generator().manual_seed(seed)` they would repeat
# the very uniforms that initialized the weights under `torch.manual_seed(seed)`, so "random" would keep the
# largest signed weights of the first layers (and then fail to train).


class Random(Criterion):
    """Uniform random scores from a stream seeded by the run's seed (the same seed gives the same mask)."""

    name = "random"
    data_free = True

    def __init__(self, seed: int = 0):
        self.seed = check_seed(seed, "pruner.seed")

    def score(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> Scores:
        # The one call with the seed before the stream: random's masks have always been drawn so, and the run
        # hash does not see code, so swapping would change finished runs' masks under their old directories.
        gen = make_generator(self.seed, Stream.RANDOM_SCORES)
        return {n: torch.rand(w.shape, generator=gen).to(w.device) for n, w in self.weights(model).items()}
