"""The exact Hessian-gradient product H g of the mean loss over the scoring samples (GraSP)."""

from __future__ import annotations

from typing import cast

from torch import Tensor, nn

from pai.pruning.estimators.objective import Grads, Objective, grads_of, scoring_mode


def hessian_gradient_product(model: nn.Module, names: list[str], inputs: Tensor, targets: Tensor, *,
                             temperature: float, chunk_size: int = 64) -> tuple[Grads, Grads]:
    """(g, H g) of the mean loss over all samples, exactly (GraSP): chunks weighted by their share of samples."""
    with scoring_mode(model):
        obj = Objective(model, names, temperature)
        w = obj.leaves()
        n = inputs.shape[0]
        chunks = [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
        g, hg = obj.zeros(), obj.zeros()
        for s, e in chunks:
            for k, gk in grads_of(obj.loss(w, inputs[s:e], targets[s:e], "sum") / n, w).items():
                g[k] += gk
        for s, e in chunks:  # second pass: H g needs the full g
            gc = grads_of(obj.loss(w, inputs[s:e], targets[s:e], "sum") / n, w, create_graph=True)
            g_dot_gc = cast(Tensor, sum((gc[k] * g[k]).sum() for k in w))  # sum() of tensors is a tensor
            for k, hk in grads_of(g_dot_gc, w).items():
                hg[k] += hk
        return g, hg
