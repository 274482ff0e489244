"""Empirical-Fisher criteria: F = mean over groups of the squared group gradient (groups of
`score_batch_size` samples; 1 = per-sample, the paper), with T = 1 in the paper.

fast = per-sample gradients from saved layer inputs and output gradients (pai.pruning.estimators.hook_grads), falling
back to vmap; `loop` is the batch-1 reference the tests compare against.

No `hessian_params` knob: a weight's g_j and F_j are built from ∂loss/∂θ_j alone, and a partial derivative does
not depend on which other parameters are differentiated (only Hessian products, Σ_l H_jl v_l, mix other
parameters in). tests/test_parameter_sets.py checks that adding BN γ/β and biases leaves these scores unchanged.
"""

from __future__ import annotations

from torch import Tensor, nn

from pai.pruning.criteria.base import Scores, SecondOrderCriterion
from pai.pruning.estimators import gradient_moments
from pai.pruning.estimators.paths import SQUARED_GRADIENT_PATHS


class _Fisher(SecondOrderCriterion):
    paths = SQUARED_GRADIENT_PATHS

    def moments(self, model: nn.Module, inputs: Tensor, targets: Tensor,
                gradient: bool) -> tuple[Scores | None, Scores]:
        g, fisher = gradient_moments(model, list(self.weights(model)), inputs, targets,
                                     temperature=self.temperature, batch_size=self.score_batch_size,
                                     path=self.path, chunk_size=self.chunk_size, mean=gradient)
        assert fisher is not None
        return g, fisher


class FisherDiag(_Fisher):
    """FD: F, the empirical Fisher diagonal."""

    name = "fisher_diag"
    form = "diag"


class FisherPruner(_Fisher):
    """FP: ½ θ² ⊙ F, Optimal Brain Damage with the Fisher diagonal as the curvature."""

    name = "fisher_pruner"
    form = "obd"


class FTS(_Fisher):
    """FTS (Fisher-Taylor sensitivity): |θ ⊙ g + ½ θ² ⊙ F|, a second-order Taylor sensitivity with the Fisher
    diagonal as the curvature (the paper's sign of θ ⊙ g)."""

    name = "fts"
    form = "taylor"
