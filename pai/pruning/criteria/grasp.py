"""GraSP (Wang, Zhang & Grosse, ICLR 2020): preserve the gradient flow gᵀg after pruning.

Removing weight q (δ = −θ_q) changes gᵀg by about 2 S_q with S(−θ) = −θ ⊙ H g; the paper removes the
weights with the largest S (their removal reduces the gradient flow least); g and H are those of the loss of
logits / T with T = 200. As a keep score (higher = keep) that is θ ⊙ H g: `pruner=grasp`.

The reference code of the PaI paper, from which its tables come, keeps the largest −θ ⊙ H g instead, at T = 1,
with g and H g over every trainable parameter: `pruner=grasp_reference` (GraSPReference).

H g of a weight is Σ_l H_jl g_l over the differentiated parameters, so the set (`hessian_params`) changes the
scores exactly, not only their noise: `all` (the default, every trainable parameter: convolutions, Linear
layers, BN γ/β, biases) is the reference code's set; `prunable_classifier` (Conv/Linear weights) was pai's
before the knob existed.
"""

from __future__ import annotations

from torch import Tensor, nn

from pai.errors import PaiConfigError
from pai.pruning.criteria.base import Criterion, Scores, check_hessian_params, hessian_parameters
from pai.pruning.estimators import hessian_gradient_product


class GraSP(Criterion):
    """Keep score θ ⊙ (H g) for the mean loss over all scoring samples (H g is exact, not estimated), H and g
    over the `hessian_params` set; scores only for the Conv/Linear weights in that set.

    `chunk_size` samples per double backward bounds memory; H g is linear in the samples, so chunking (and the
    mask batch) does not change it.
    """

    name = "grasp"
    sign = 1.0  # keep score = sign · θ ⊙ (H g)

    def __init__(self, temperature: float = 200.0, chunk_size: int = 64, hessian_params: str = "all"):
        if not temperature > 0 or not chunk_size > 0:
            raise PaiConfigError(f"pruner.temperature={temperature} and pruner.chunk_size={chunk_size} must be > 0")
        self.temperature = float(temperature)
        self.chunk_size = int(chunk_size)
        self.hessian_params = check_hessian_params(hessian_params, self.name)

    def score(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> Scores:
        weights = self.weights(model)
        _, hg = hessian_gradient_product(model, hessian_parameters(model, self.hessian_params), inputs, targets,
                                         temperature=self.temperature, chunk_size=self.chunk_size)
        return {n: self.sign * w.detach() * hg[n] for n, w in weights.items() if n in hg}


class GraSPReference(GraSP):
    """The PaI reference code's GraSP: keep the largest −θ ⊙ (H g), at T = 1, H g over every trainable
    parameter (the same masks as `pruner=grasp prune.invert=true pruner.temperature=1`, up to ties)."""

    name = "grasp_reference"
    sign = -1.0

    def __init__(self, temperature: float = 1.0, chunk_size: int = 64, hessian_params: str = "all"):
        super().__init__(temperature, chunk_size, hessian_params)
