"""Hutchinson criteria: H_d = mean over groups and Rademacher probes z of z ⊙ (H z), an unbiased estimate of the
Hessian diagonal (E[z_i z_j] = δ_ij), `num_probes` probes per group (10 in the paper). The paper divides the
logits by T = 200 for all three (and for g_T in HTS).

vmap = vmapped per-group Hessian-vector products with the loop's very probes: the same estimator, not only the
same expectation, so its variance is the reference's, per coordinate Σ_i Σ_{l≠j} (H_i)_jl² / (N² · num_probes)
(tests/test_curvature.py checks both paths against it); `loop` is the batch-1 reference; fast times both on the
first groups and keeps the faster (pai.pruning.curvature.hutchinson). Probes come from their
own stream seeded by `seed`. That variance is large: on ResNet-20 with N = 100 and 10 probes, two probe seeds
give H_d estimates about as different as two unrelated vectors (benchmarks/results/scoring_cpu.md).
"""

from __future__ import annotations

from torch import Tensor, nn

from pai.errors import PaiConfigError
from pai.pruning.criteria.base import SampleCriterion, Scores
from pai.pruning.curvature import hutchinson


class _Hutchinson(SampleCriterion):
    paths = ("fast", "vmap", "loop")

    def __init__(self, temperature: float = 200.0, score_batch_size: int = 1, path: str = "fast",
                 chunk_size: int = 2, num_probes: int = 10, seed: int = 0):
        super().__init__(temperature, score_batch_size, path, chunk_size)
        if num_probes < 1:
            raise PaiConfigError(f"pruner.num_probes={num_probes} must be >= 1 (pruner={self.name})")
        self.num_probes = int(num_probes)
        self.seed = int(seed)

    def _moments(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> tuple[Scores, Scores, Scores]:
        """(θ, g_T, H_d)."""
        weights = self.weights(model)
        g, h = hutchinson(model, list(weights), inputs, targets, temperature=self.temperature,
                          batch_size=self.score_batch_size, num_probes=self.num_probes, seed=self.seed,
                          path=self.path, chunk_size=self.chunk_size)
        return {n: w.detach() for n, w in weights.items()}, g, h


class HutchDiag(_Hutchinson):
    """HD: H_d, signed (weights on negative curvature are pruned first)."""

    name = "hutch_diag"

    def score(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> Scores:
        return self._moments(model, inputs, targets)[2]


class HutchPruning(_Hutchinson):
    """HP: ½ θ² ⊙ H_d, signed: Optimal Brain Damage with the Hutchinson diagonal."""

    name = "hutch_pruning"

    def score(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> Scores:
        theta, _, h = self._moments(model, inputs, targets)
        return {n: 0.5 * theta[n].square() * h[n] for n in h}


class HTS(_Hutchinson):
    """HTS (Hutchinson-Taylor sensitivity): |θ ⊙ g_T + ½ θ² ⊙ H_d| (the paper's signs, as in FTS)."""

    name = "hts"

    def score(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> Scores:
        theta, g, h = self._moments(model, inputs, targets)
        return {n: (theta[n] * g[n] + 0.5 * theta[n].square() * h[n]).abs() for n in h}
