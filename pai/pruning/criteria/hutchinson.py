"""Hutchinson criteria: H_d = mean over groups and Rademacher probes z of z ⊙ (H z), an unbiased estimate of the
Hessian diagonal (E[z_i z_j] = δ_ij), `num_probes` probes per group (10 in the paper). The paper divides the
logits by T = 200 for all three (and for g_T in HTS).

vmap = vmapped per-group Hessian-vector products with the loop's very probes: the same estimator, not only the
same expectation, so its variance is the reference's, per coordinate Σ_i Σ_{l≠j} (H_i)_jl² / (N² · num_probes)
(tests/test_curvature.py checks both paths against it); `loop` is the batch-1 reference; fast takes one of the
two by a fixed rule, never by timing (vmap, or on a CPU the loop above 2 M differentiated parameters:
pai.pruning.estimators.hutchinson.fast_path), so a config gives the same scores under any load. Probes come from
their own stream seeded by `seed`. That variance is large: on ResNet-20 with N = 100 and 10 probes, two probe seeds
give H_d estimates about as different as two unrelated vectors (benchmarks/results/scoring_cpu.md), and
against the exact diagonal (pai.pruning.criteria.gauss_newton) H_d at T = 200 is mostly probe noise
(docs/curvature-noise.md).

The probes run over the `hessian_params` set: z ⊙ (H z) of weight j is Σ_l H_jl z_j z_l over the differentiated
parameters, so the set leaves the expectation H_jj alone but adds the off-diagonal entries of every parameter
in it to the noise. `all` (the default: every trainable parameter, BN γ/β and biases included) is the reference
code's set; `prunable_classifier` (Conv/Linear weights) was pai's before the knob existed.
"""

from __future__ import annotations

from torch import Tensor, nn

from pai.pruning.criteria.base import Scores, SecondOrderCriterion, check_hessian_params, hessian_parameters
from pai.pruning.estimators import hutchinson
from pai.pruning.estimators.paths import HUTCHINSON_PATHS
from pai.seeding import check_seed


class _Hutchinson(SecondOrderCriterion):
    paths = HUTCHINSON_PATHS

    def __init__(self, temperature: float = 200.0, score_batch_size: int = 1, path: str = "fast",
                 chunk_size: int = 2, num_probes: int = 10, seed: int = 0, hessian_params: str = "all"):
        super().__init__(temperature, score_batch_size, path, chunk_size)
        self._require_positive(num_probes=num_probes)
        self.num_probes = int(num_probes)
        self.seed = check_seed(seed, "pruner.seed")
        self.hessian_params = check_hessian_params(hessian_params, self.name)

    def moments(self, model: nn.Module, inputs: Tensor, targets: Tensor, gradient: bool) -> tuple[Scores, Scores]:
        """(g_T, H_d) of the Conv/Linear weights in the `hessian_params` set: the Hutchinson pass over that set
        gives the mean gradient at temperature T for free."""
        g, h = hutchinson(model, hessian_parameters(model, self.hessian_params), inputs, targets,
                          temperature=self.temperature, batch_size=self.score_batch_size,
                          num_probes=self.num_probes, seed=self.seed, path=self.path, chunk_size=self.chunk_size)
        scored = [n for n in self.weights(model) if n in h]
        return {n: g[n] for n in scored}, {n: h[n] for n in scored}


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
