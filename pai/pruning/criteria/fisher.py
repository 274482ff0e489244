"""Empirical-Fisher criteria: F = mean over groups of the squared group gradient (groups of
`score_batch_size` samples; 1 = per-sample, the paper), with T = 1 in the paper.

fast = per-sample gradients from saved layer inputs and output gradients (pai.pruning.hook_grads), falling
back to vmap; `loop` is the batch-1 reference the tests compare against.
"""

from __future__ import annotations

from torch import Tensor, nn

from pai.pruning.criteria.base import SampleCriterion, Scores
from pai.pruning.per_sample import gradient_moments


class _Fisher(SampleCriterion):
    paths = ("fast", "hooks", "vmap", "loop")

    def _moments(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> tuple[Scores, Scores, Scores]:
        """(θ, g, F)."""
        weights = self.weights(model)
        g, fisher = gradient_moments(model, list(weights), inputs, targets, temperature=self.temperature,
                                     batch_size=self.score_batch_size, path=self.path, chunk_size=self.chunk_size)
        assert fisher is not None
        return {n: w.detach() for n, w in weights.items()}, g, fisher


class FisherDiag(_Fisher):
    """FD: F, the empirical Fisher diagonal."""

    name = "fisher_diag"

    def score(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> Scores:
        return self._moments(model, inputs, targets)[2]


class FisherPruner(_Fisher):
    """FP: ½ θ² ⊙ F, Optimal Brain Damage with the Fisher diagonal as the curvature."""

    name = "fisher_pruner"

    def score(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> Scores:
        theta, _, fisher = self._moments(model, inputs, targets)
        return {n: 0.5 * theta[n].square() * fisher[n] for n in fisher}


class FTS(_Fisher):
    """FTS (Fisher-Taylor sensitivity): |θ ⊙ g + ½ θ² ⊙ F|, a second-order Taylor sensitivity with the Fisher
    diagonal as the curvature. The sign of θ ⊙ g is the paper's (removing the weight, Δθ = −θ, would give −θ ⊙ g)."""

    name = "fts"

    def score(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> Scores:
        theta, g, fisher = self._moments(model, inputs, targets)
        return {n: (theta[n] * g[n] + 0.5 * theta[n].square() * fisher[n]).abs() for n in fisher}
