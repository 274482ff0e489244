from torch import Tensor, nn

from pai.pruning.criteria.base import Criterion, Scores


class NoPruning(Criterion):
    """The dense baseline: nothing is scored or pruned; the run's sparsity is ignored."""

    name = "none"
    prunes = False

    def score(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> Scores:
        raise RuntimeError("the dense baseline has no scores")
