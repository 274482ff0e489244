from torch import Tensor, nn

from pai.pruning.criteria.base import Criterion, Scores


class Magnitude(Criterion):
    """|θ|: keep the largest weights."""

    name = "magnitude"
    data_free = True

    def score(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> Scores:
        return {n: w.detach().abs().clone() for n, w in self.weights(model).items()}
