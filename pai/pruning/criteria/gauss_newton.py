"""Noise-free curvature: the exact generalized Gauss–Newton (GGN) diagonal of the cross-entropy of logits / T
and the criteria built on it, plus its Monte-Carlo (true-Fisher) estimate (maths: pai.pruning.estimators.gauss_newton).

Where the GGN diagonal is the Hessian diagonal. H = Jᵀ A J + Σ_c (∂loss/∂z_c) ∂²z_c/∂θ². For a network that is
piecewise linear in each single weight — ReLU (or max-pool) nets whose BN runs in eval mode, i.e. an affine
map with fixed running statistics, as in the paper's ResNets and VGGs — the logits are linear in any one
weight between kinks, so ∂²z_c/∂θ_j² = 0 almost everywhere and the GGN diagonal *is* the exact Hessian
diagonal (the off-diagonal second term does not vanish, but no diagonal criterion sees it). It is not for
ViTs (GELU, the attention softmax and LayerNorm are curved in single weights; also two weights of one
attention product multiply each other, q·k), nor for BN normalising with batch statistics (train mode, or
no running statistics), nor for smooth activations (tanh, SiLU). There the GGN diagonal is still the
positive semi-definite part that OBD-style criteria are usually built on (Martens 2020), but not H_d.

The GGN diagonal is ≥ 0, so `ggn_diag` and `obd` never prune for negative curvature, unlike the signed
Hutchinson HD/HP. Default T = 200 makes these the exact counterparts of the paper's HD/HP/HTS (T = 200); note
that at T = 200 the softmax is nearly uniform at initialisation, so the GGN then barely depends on the data's
labels or the network's predictions.

No `hessian_params` knob: the GGN diagonal entry of θ_j is Σ_c p_c (∂u_c/∂θ_j)², built from derivatives with
respect to θ_j alone; the off-diagonal entries that couple θ_j to other parameters (BN γ/β, biases) never
enter it, unlike a Hutchinson estimate, whose noise Σ_{l≠j} H_jl z_j z_l runs over every differentiated
parameter. tests/test_parameter_sets.py checks that adding BN γ/β and biases leaves these scores unchanged.
"""

from __future__ import annotations

from torch import Tensor, nn

from pai.pruning.criteria.base import Scores, SecondOrderCriterion
from pai.pruning.estimators import ggn_diagonal, gradient_moments
from pai.pruning.estimators.paths import SQUARED_GRADIENT_PATHS
from pai.seeding import check_seed


class _GaussNewton(SecondOrderCriterion):
    """Knobs: `temperature`, `score_batch_size` (the GGN of a mask batch's mean loss is the mean of its samples'
    GGNs, so this only weighs a short last batch), `path` (fast | hooks | vmap | loop) and `chunk_size`
    (samples per vectorised call; vmap memory ~ chunk_size × classes × weights)."""

    paths = SQUARED_GRADIENT_PATHS
    num_samples: int | None = None  # labels drawn per sample (fisher_mc); None = the exact sum over classes
    seed: int = 0

    def __init__(self, temperature: float = 200.0, score_batch_size: int = 1, path: str = "fast",
                 chunk_size: int = 16):
        super().__init__(temperature, score_batch_size, path, chunk_size)

    def moments(self, model: nn.Module, inputs: Tensor, targets: Tensor, gradient: bool) -> tuple[Scores | None,
                                                                                                 Scores]:
        names = list(self.weights(model))
        d = ggn_diagonal(model, names, inputs, targets, temperature=self.temperature,
                         batch_size=self.score_batch_size, path=self.path, chunk_size=self.chunk_size,
                         num_samples=self.num_samples, seed=self.seed)
        if not gradient:
            return None, d
        # g at temperature T, as in HTS: one weighted batched backward (the batch-1 loop on the oracle path)
        g, _ = gradient_moments(model, names, inputs, targets, temperature=self.temperature,
                                batch_size=self.score_batch_size, path="loop" if self.path == "loop" else "fast",
                                chunk_size=self.chunk_size, squares=False)
        return g, d


class GGNDiag(_GaussNewton):
    """G: the exact GGN diagonal, mean over the scoring samples of Σ_c p_c (∂[(z_c − p·z)/T]/∂θ)², p fixed.
    N × classes backward passes (vectorised)."""

    name = "ggn_diag"
    form = "diag"


class OBD(_GaussNewton):
    """OBD: ½ θ² ⊙ G, Optimal Brain Damage with the Gauss–Newton diagonal, as LeCun et al. (1989) computed it."""

    name = "obd"
    form = "obd"


class GGNTaylor(_GaussNewton):
    """|θ ⊙ g_T + ½ θ² ⊙ G|: the exact counterpart of HTS (H_d → G) and FTS (F → G)."""

    name = "ggn_taylor"
    form = "taylor"


class FisherMC(_GaussNewton):
    """The true-Fisher diagonal: mean over samples and `num_samples` labels ŷ ~ softmax(z/T) per sample (their
    own stream, seeded by `seed`) of the squared gradient of CE(z/T, ŷ); an unbiased estimate of G, computed as
    one backward pass per distinct label drawn (the draws' frequencies weigh the GGN factors)."""

    name = "fisher_mc"
    form = "diag"

    def __init__(self, temperature: float = 200.0, score_batch_size: int = 1, path: str = "fast",
                 chunk_size: int = 16, num_samples: int = 1, seed: int = 0):
        super().__init__(temperature, score_batch_size, path, chunk_size)
        self._require_positive(num_samples=num_samples)
        self.num_samples = int(num_samples)
        self.seed = check_seed(seed, "pruner.seed")
