"""GraSP (Wang, Zhang & Grosse, ICLR 2020): preserve the gradient flow gᵀg after pruning.

Removing weight q (δ = −θ_q) changes gᵀg by about 2 S_q with S(−θ) = −θ ⊙ H g; the paper removes the
weights with the largest S (their removal reduces the gradient flow least); g and H are those of the loss of
logits / T with T = 200. As a keep score (higher
= keep) that is θ ⊙ H g. The reference code of the PaI paper keeps the largest −θ ⊙ H g instead (and T = 1):
`prune.invert=true` (with `pruner.temperature=1`) reproduces it.
"""

from __future__ import annotations

from torch import Tensor, nn

from pai.errors import PaiConfigError
from pai.pruning.criteria.base import Criterion, Scores
from pai.pruning.estimators import hessian_gradient_product


class GraSP(Criterion):
    """Keep score θ ⊙ (H g) for the mean loss over all scoring samples (H g is exact, not estimated).

    `chunk_size` samples per double backward bounds memory; H g is linear in the samples, so chunking (and the
    mask batch) does not change it.
    """

    name = "grasp"

    def __init__(self, temperature: float = 200.0, chunk_size: int = 64):
        if not temperature > 0 or not chunk_size > 0:
            raise PaiConfigError(f"pruner.temperature={temperature} and pruner.chunk_size={chunk_size} must be > 0")
        self.temperature = float(temperature)
        self.chunk_size = int(chunk_size)

    def score(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> Scores:
        weights = self.weights(model)
        _, hg = hessian_gradient_product(model, list(weights), inputs, targets, temperature=self.temperature,
                                         chunk_size=self.chunk_size)
        return {n: w.detach() * hg[n] for n, w in weights.items()}
