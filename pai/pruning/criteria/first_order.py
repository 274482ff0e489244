"""Criteria built from the mean gradient g of the loss over the scoring samples (T = 1 in the paper).

g is linear in the samples, so the fast path is one batched backward per chunk, each sample weighted by
1 / (its group's size); `loop` keeps the batch-1 reference.

No `hessian_params` knob: g_j = ∂loss/∂θ_j does not depend on which other parameters are differentiated
(tests/test_parameter_sets.py checks it).
"""

from __future__ import annotations

from torch import Tensor, nn

from pai.pruning.criteria.base import SampleCriterion, Scores
from pai.pruning.estimators import gradient_moments
from pai.pruning.estimators.paths import MEAN_GRADIENT_PATHS


class _MeanGradient(SampleCriterion):
    paths = MEAN_GRADIENT_PATHS

    def _mean_gradient(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> tuple[Scores, Scores]:
        weights = self.weights(model)
        g, _ = gradient_moments(model, list(weights), inputs, targets, temperature=self.temperature,
                                batch_size=self.score_batch_size, path=self.path, chunk_size=self.chunk_size,
                                squares=False)
        assert g is not None  # mean=True
        return {n: w.detach() for n, w in weights.items()}, g


class GradNorm(_MeanGradient):
    """GN: |g|."""

    name = "grad_norm"

    def score(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> Scores:
        _, g = self._mean_gradient(model, inputs, targets)
        return {n: gn.abs() for n, gn in g.items()}


class SNIP(_MeanGradient):
    """SNIP (Lee et al. 2019): |θ ⊙ g|, the first-order change of the loss when a weight is removed."""

    name = "snip"

    def score(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> Scores:
        theta, g = self._mean_gradient(model, inputs, targets)
        return {n: (theta[n] * g[n]).abs() for n in g}
