"""SynFlow (Tanaka et al., NeurIPS 2020): data-free, iterative.

R = sum of the outputs of the network with every parameter replaced by |θ|, for an all-ones input of the
scoring samples' shape (batch 1); score |θ ⊙ ∂R/∂θ|. Computed in float64: R is a product over layers and
overflows float32 on deep nets (ResNet-50/152), which would give inf scores. BN runs in eval mode with its
running statistics (buffers are not made positive; at initialization mean 0, variance 1).

100 rounds by default (`default_rounds`), with the pipeline's exponential schedule (density d^(r/R),
`default_schedule`); each round scores the
masked working copy that `prune_masks` keeps, so pruned weights contribute 0 to R. On ResNet-50 at sparsity 0.9
this keeps every layer except the 1x1 projection shortcuts, whose flow is negligible beside their bottleneck
branch (tests/test_criteria_synflow.py); the SynFlow authors' code leaves residual connections unpruned.

`SeedSynFlow` (`pruner=synflow_seed`) is not SynFlow: it reproduces a defect of the paper's reference code,
whose schedule feeds the sparsity where the formula wants the density (`seed_inverted`, see
pai.pruning.sparsity_schedules and docs/departures.md).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from pai.pruning.criteria.base import Criterion, Scores
from pai.pruning.estimators import grads_of, scoring_mode


class SynFlow(Criterion):
    name = "synflow"
    data_free = True
    default_rounds = 100

    def score(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> Scores:
        names = list(self.weights(model))
        with scoring_mode(model):
            # Functional float64 copies: the model keeps its dtype, weights and flags.
            params = {n: p.detach().to(torch.float64).abs().requires_grad_() for n, p in model.named_parameters()}
            buffers = {n: b.to(torch.float64) if b.is_floating_point() else b for n, b in model.named_buffers()}
            ones = torch.ones((1, *inputs.shape[1:]), dtype=torch.float64, device=inputs.device)
            r = functional_call(model, {**params, **buffers}, (ones,)).sum()
            grads = grads_of(r, {n: params[n] for n in names})
        return {n: (params[n].detach() * g).abs() for n, g in grads.items()}


class SeedSynFlow(SynFlow):
    """REPRODUCTION OF A DEFECT, not SynFlow: the reference code's schedule, sparsity s^(r/R) after round r.

    The scores are SynFlow's; only the default schedule differs (`seed_inverted`). Round 1 keeps about
    (1 − s^(1/R))·n weights (71 of 67,528 at s = 0.9 on ResNet-20 ×0.5), which disconnects the network, so every
    later score is 0 and the final mask is filled from ties among zeros: layers collapse. Kept only so that
    numbers from the reference code can be told apart from SynFlow's (report row `synflow_seed`).
    """

    name = "synflow_seed"
    default_schedule = "seed_inverted"
