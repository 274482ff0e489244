"""Hutchinson criteria: H_d = mean over groups and Rademacher probes z of z ⊙ (H z), an unbiased estimate of the
Hessian diagonal (E[z_i z_j] = δ_ij), `num_probes` probes per group (10 in the paper). The paper divides the
logits by T = 200 for all three (and for g_T in HTS).

vmap = vmapped per-group Hessian-vector products with the loop's very probes: the same estimator, not only the
same expectation, so its variance is the reference's, per coordinate Σ_i Σ_{l≠j} (H_i)_jl² / (N² · num_probes)
(tests/test_curvature.py checks both paths against it); `loop` is the batch-1 reference; fast times both on the
first groups and keeps the faster (pai.pruning.estimators.hutchinson). Probes come from their
own stream seeded by `seed`. That variance is large: on ResNet-20 with N = 100 and 10 probes, two probe seeds
give H_d estimates about as different as two unrelated vectors (benchmarks/results/scoring_cpu.md), and
against the exact diagonal (pai.pruning.criteria.gauss_newton) H_d at T = 200 is mostly probe noise
(docs/curvature-noise.md).
"""

from __future__ import annotations

from torch import Tensor, nn

from pai.pruning.criteria.base import Scores, SecondOrderCriterion
from pai.pruning.estimators import hutchinson


class _Hutchinson(SecondOrderCriterion):
    paths = ("fast", "vmap", "loop")

    def __init__(self, temperature: float = 200.0, score_batch_size: int = 1, path: str = "fast",
                 chunk_size: int = 2, num_probes: int = 10, seed: int = 0):
        super().__init__(temperature, score_batch_size, path, chunk_size)
        self._require_positive(num_probes=num_probes)
        self.num_probes = int(num_probes)
        self.seed = int(seed)

    def moments(self, model: nn.Module, inputs: Tensor, targets: Tensor, gradient: bool) -> tuple[Scores, Scores]:
        """(g_T, H_d): the Hutchinson pass gives the mean gradient at temperature T for free."""
        return hutchinson(model, list(self.weights(model)), inputs, targets, temperature=self.temperature,
                          batch_size=self.score_batch_size, num_probes=self.num_probes, seed=self.seed,
                          path=self.path, chunk_size=self.chunk_size)


class HutchDiag(_Hutchinson):
    """HD: H_d, signed (weights on negative curvature are pruned first)."""

    name = "hutch_diag"
    form = "diag"


class HutchPruning(_Hutchinson):
    """HP: ½ θ² ⊙ H_d, signed: Optimal Brain Damage with the Hutchinson diagonal."""

    name = "hutch_pruning"
    form = "obd"


class HTS(_Hutchinson):
    """HTS (Hutchinson-Taylor sensitivity): |θ ⊙ g_T + ½ θ² ⊙ H_d| (the paper's signs, as in FTS)."""

    name = "hts"
    form = "taylor"
