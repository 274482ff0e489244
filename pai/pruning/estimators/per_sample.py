"""First-order moments of per-sample (per-group) gradients: g = mean group gradient, F = mean squared one.

A group is `batch_size` consecutive scoring samples whose mean loss is differentiated (the reference's "mask
batch"; 1 = per-sample). Paths, all giving the same numbers up to rounding:

- loop: one backward per group, the reference semantics; the oracle of the tests.
- vmap: `torch.func.vmap(grad(...))` over `chunk_size` groups at once.
- hooks: one batched forward/backward per chunk that returns only the layers' output gradients δ; each group's
  weight gradient is then formed from the saved layer inputs a (Linear: Σ δᵀa; Conv: δ times the input
  patches, see hook_grads), as BackPACK does. On a CPU this is the fastest: 1.25-1.6 batched forward+backward
  passes on ResNet-20 and ResNet-18 (one thread), where vmap is slower than the loop
  (benchmarks/results/scoring_cpu.md). Its self-check (autograd's batched weight gradient against the hooks'
  sum) runs on the first group alone.
- batched (only when F is not needed): g is linear in the samples, so one weighted batched backward gives it.
- fast: batched without squares; else hooks, falling back to vmap when the model has a layer the hooks do not
  handle or their self-check (first chunk vs. autograd's batched gradient) fails.
Eval mode makes every sample independent (BN uses running statistics), which batched and hooks rely on; a BN
without running statistics couples a batch's samples, and fast then takes vmap (one group per call).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.func import grad, vmap

from pai.progress import over_chunks
from pai.pruning.estimators.hook_grads import (
    HookGrads,
    check_chunk_first,
    hooks_supported,
    samples_independent,
    with_vmap_fallback,
)
from pai.pruning.estimators.objective import Grads, Objective, grads_of, group_chunks, num_groups, scoring_mode
from pai.pruning.estimators.paths import MEAN_GRADIENT_PATHS


def gradient_moments(model: nn.Module, names: list[str], inputs: Tensor, targets: Tensor, *,
                     temperature: float = 1.0, batch_size: int = 1, path: str = "fast", chunk_size: int = 32,
                     squares: bool = True, mean: bool = True) -> tuple[Grads | None, Grads | None]:
    """(g, F): mean over groups of the group gradient (None unless `mean`) and, when `squares`, of its
    elementwise square (else None). Leaving out g saves the hooks path a pass over the per-sample gradients."""
    if path not in MEAN_GRADIENT_PATHS:
        raise ValueError(f"path={path!r} must be one of {MEAN_GRADIENT_PATHS}")
    if not (squares or mean):
        raise ValueError("gradient_moments needs squares or mean")
    requested = path
    with scoring_mode(model):
        obj = Objective(model, names, temperature)
        if path == "fast":
            path = fast_path(model, names, squares)
        if path == "batched" and squares:
            raise ValueError("path='batched' gives only the mean gradient; squared gradients need another path")
        sums = with_vmap_fallback(
            lambda p: _moments(obj, model, inputs, targets, batch_size, p, chunk_size, squares, mean), path,
            requested)
        groups = num_groups(inputs.shape[0], batch_size)
        g = {k: v / groups for k, v in sums[0].items()} if mean else None
        return g, ({k: v / groups for k, v in sums[1].items()} if squares else None)


def fast_path(model: nn.Module, names: list[str], squares: bool) -> str:
    """The path `fast` takes (before any fallback of the hooks to vmap)."""
    if not samples_independent(model):
        return "vmap"
    if not squares:
        return "batched"
    return "hooks" if hooks_supported(model, names) else "vmap"


def _moments(obj: Objective, model: nn.Module, x: Tensor, y: Tensor, b: int, path: str, chunk_size: int,
             squares: bool, mean: bool) -> tuple[Grads, Grads]:
    s, q = obj.zeros(), obj.zeros()
    n = x.shape[0]
    hooks = HookGrads(model, obj) if path == "hooks" else None
    chunks = group_chunks(n, b, 1 if path == "loop" else chunk_size)
    if hooks is not None:
        chunks = check_chunk_first(chunks)
    for i, (start, stop, bs) in enumerate(over_chunks(chunks)):
        xc, yc = x[start:stop], y[start:stop]
        if path == "batched":  # each sample weighs 1/(its group's size): the sum of the group-mean losses
            w = obj.leaves()
            for k, gk in grads_of(obj.loss(w, xc, yc, "sum") / bs, w).items():
                s[k] += gk
            continue
        if hooks is not None:
            cs, cq = hooks.moments(xc, yc, bs, sums=mean, squares=squares, check=i == 0)
        else:
            per_group = _loop_grads(obj, xc, yc) if path == "loop" else _vmap_grads(obj, xc, yc, bs)
            cs = {k: v.sum(0) for k, v in per_group.items()} if mean else None
            cq = {k: v.square_().sum(0) for k, v in per_group.items()} if squares else None  # temporaries
        for total, part in ((s, cs), (q, cq)):
            for k, v in (part or {}).items():
                total[k] += v
    return s, q


def _loop_grads(obj: Objective, x: Tensor, y: Tensor) -> Grads:
    """The gradient of one group's mean loss, as a batch of one: {name: (1, *shape)}."""
    w = obj.leaves()
    return {k: gk.unsqueeze(0) for k, gk in grads_of(obj.loss(w, x, y), w).items()}


def _vmap_grads(obj: Objective, x: Tensor, y: Tensor, b: int) -> Grads:
    """Every group's gradient at once: {name: (groups, *shape)}."""
    c = x.shape[0] // b
    return vmap(grad(obj.loss), in_dims=(None, 0, 0))(obj.weights, x.view(c, b, *x.shape[1:]), y.view(c, b))
