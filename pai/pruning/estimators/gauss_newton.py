"""The exact generalized Gauss–Newton (GGN) diagonal of the temperature-scaled cross-entropy, and its
Monte-Carlo (true-Fisher) estimate, at linear cost.

For one sample with logits z and p = softmax(z / T), the Hessian of CE(z / T, y) with respect to z is
A = (diag(p) − p pᵀ) / T² = Σ_c p_c (e_c − p)(e_c − p)ᵀ / T², so the GGN Jᵀ A J (J = ∂z/∂θ) has the diagonal

    diag GGN = Σ_c p_c (∂u_c/∂θ)²,   u_c = (z_c − p·z) / T  with p held fixed (detached):

C backward passes of the scalars u_c, no eigendecomposition. The label drops out, and the gradient of the loss
with label c is −∂u_c/∂θ, so the true Fisher with labels ŷ ~ p (`num_samples` draws per sample) is the same
sum with the weights p_c replaced by the draws' frequencies: an unbiased estimate of the same diagonal that
costs one backward pass per distinct label drawn.

The GGN is linear in the loss, so the GGN of a mask batch's mean loss is the mean of its samples' GGNs: groups
of `batch_size` samples change only the weight of the samples of a short last group (as for the mean
gradient). Each sample's GGN is taken with that sample alone in the forward pass (a batch of one); for
eval-mode BN with running statistics that is the same as the batched pass. The Fisher estimate squares
per-sample gradients with the same weights, so it estimates this very diagonal for every `batch_size`.

Paths, equal up to rounding (the tests check): `loop` = batch-1 autograd, one backward per (sample, class) or,
for the Monte-Carlo estimate, per (sample, draw) of the cross-entropy with the drawn label, the oracle;
`hooks` = one batched forward per chunk and one batched backward per round whose per-sample weight gradients
come from the layers' saved inputs and output gradients (estimators.hook_grads): a round takes one class of
positive weight per sample, so the exact GGN costs one backward per class and the Monte-Carlo estimate one per
distinct label drawn for a sample (the softmax comes from the chunk's own forward: no separate pass); `vmap` =
`vmap(jacrev)` over the samples of a chunk and all classes at once (memory ~ chunk_size × classes × weights);
`fast` = hooks where they apply, else vmap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import jacrev, vmap

from pai.progress import over_chunks, progress
from pai.pruning.estimators.hook_grads import (
    HookGrads,
    check_against,
    check_chunk_first,
    hooks_supported,
    outputs,
    samples_independent,
    with_vmap_fallback,
)
from pai.pruning.estimators.objective import Grads, Objective, grads_of, group_chunks, num_groups, scoring_mode
from pai.pruning.estimators.paths import SQUARED_GRADIENT_PATHS
from pai.seeding import Stream, make_generator


def ggn_diagonal(model: nn.Module, names: list[str], inputs: Tensor, targets: Tensor, *, temperature: float,
                 batch_size: int = 1, path: str = "fast", chunk_size: int = 32, num_samples: int | None = None,
                 seed: int = 0) -> Grads:
    """The GGN diagonal of the mean over groups of each group's mean loss of logits / T; with `num_samples`,
    its true-Fisher estimate from that many labels per sample drawn from softmax(logits / T) (seeded by
    `seed`). `targets` are not used: the GGN does not depend on the labels."""
    if path not in SQUARED_GRADIENT_PATHS:
        raise ValueError(f"path={path!r} must be one of {SQUARED_GRADIENT_PATHS}")
    del targets
    with scoring_mode(model):
        obj = Objective(model, names, temperature)
        n = inputs.shape[0]
        weights = sample_weights(n, batch_size, inputs)
        uniforms = mc_uniforms(n, num_samples, seed) if num_samples else None

        def compute(p: str) -> Grads:
            if p == "hooks":  # takes softmax(logits / T) from its own forward: no separate predictive pass
                return _hooks(obj, inputs, weights, uniforms, chunk_size)
            probs = predictive(obj, inputs, chunk_size)
            labels = labels_from(probs, uniforms) if uniforms is not None else None
            if p == "loop":
                return _loop(obj, inputs, weights, labels)
            return _vmap(obj, inputs, probs, _omega(weights, probs, labels), chunk_size)

        requested = path
        if path == "fast":
            path = "hooks" if hooks_supported(model, names) else "vmap"
        return with_vmap_fallback(compute, path, requested)


def sample_weights(n: int, batch_size: int, like: Tensor) -> Tensor:
    """(n,): 1 / (group size × number of groups), the weight of each sample in the mean of group means."""
    w = torch.empty(n, dtype=like.dtype if like.is_floating_point() else torch.float32, device=like.device)
    groups = num_groups(n, batch_size)
    for start, stop, b in group_chunks(n, batch_size, 1):
        w[start:stop] = 1.0 / (b * groups)
    return w


@torch.no_grad()
def predictive(obj: Objective, inputs: Tensor, chunk_size: int) -> Tensor:
    """softmax(logits / T) of every sample, each in its own batch when the samples interact (BN without
    running statistics), else in chunks."""
    step = chunk_size if samples_independent(obj.model) else 1
    z = torch.cat([obj.logits(obj.weights, inputs[s:s + step]) for s in range(0, inputs.shape[0], step)])
    return torch.softmax(z / obj.temperature, dim=1)


def mc_labels(probs: Tensor, num_samples: int, seed: int) -> Tensor:
    """(n, num_samples) labels drawn from each row of `probs` by inverse CDF of uniforms from a CPU generator
    seeded by `seed`: the draws are the same on every path and device (up to rounding of the CDF)."""
    return labels_from(probs, mc_uniforms(probs.shape[0], num_samples, seed))


def mc_uniforms(n: int, num_samples: int, seed: int) -> Tensor:
    """(n, num_samples) float64 uniforms on the CPU, row i for sample i, from their own seeded stream."""
    gen = make_generator(Stream.FISHER_MC_LABELS, seed)
    return torch.rand(n, num_samples, generator=gen, dtype=torch.float64)


def labels_from(probs: Tensor, uniforms: Tensor) -> Tensor:
    """The labels whose CDF interval (from each row of `probs`) holds each row's uniforms."""
    cdf = probs.detach().double().cpu().cumsum(1)
    labels = torch.searchsorted(cdf, uniforms, right=True).clamp_max_(probs.shape[1] - 1)
    return labels.to(probs.device)


def _omega(weights: Tensor, probs: Tensor, labels: Tensor | None) -> Tensor:
    """omega[i, c]: the weight of (∂u_ic/∂θ)², the sample's weight times p_c or the draws' frequency of c."""
    freq = probs if labels is None else F.one_hot(labels, probs.shape[1]).sum(1).to(probs) / labels.shape[1]
    return weights[:, None] * freq


def _vmap(obj: Objective, x: Tensor, probs: Tensor, omega: Tensor, chunk_size: int) -> Grads:
    out = obj.zeros()
    for s in progress(range(0, x.shape[0], chunk_size), "scoring", unit="chunk"):
        part = _vmap_chunk(obj, x[s:s + chunk_size], probs[s:s + chunk_size], omega[s:s + chunk_size])
        for k in out:
            out[k] += part[k]
    return out


def _hooks(obj: Objective, x: Tensor, weights: Tensor, uniforms: Tensor | None, chunk_size: int) -> Grads:
    hooks = HookGrads(obj.model, obj)
    n = x.shape[0]
    out = obj.zeros()
    chunks = check_chunk_first([(s, min(s + chunk_size, n), 1) for s in range(0, n, chunk_size)])
    for i, (s, e, _) in enumerate(over_chunks(chunks)):
        part = _hooks_chunk(obj, hooks, x[s:e], weights[s:e], None if uniforms is None else uniforms[s:e],
                            check=i == 0)
        for k in out:
            out[k] += part[k]
    return out


def _factors(obj: Objective, z: Tensor, p: Tensor) -> Tensor:
    """u = (z − p·z) / T per sample and class, p fixed: ∂u_c/∂θ is the c-th factor of the GGN."""
    return (z - (p * z).sum(-1, keepdim=True)) / obj.temperature


def _hooks_chunk(obj: Objective, hooks: HookGrads, x: Tensor, weights: Tensor, uniforms: Tensor | None,
                 check: bool) -> Grads:
    """One forward, then rounds of one batched backward each: round r backpropagates Σ_i √ω_ic u_ic with c the
    r-th class of positive weight ω of sample i (zero weight when a sample has fewer). Samples are independent,
    so the per-sample weight gradients the hooks form are √ω_ic ∂u_ic/∂θ and their squares sum to the chunk's
    share. The exact GGN takes one round per class; the Monte-Carlo estimate one per distinct label drawn for
    a sample (one round for one draw per sample)."""
    w = obj.leaves()
    z, records = hooks.record(lambda: obj.logits(w, x))
    p = torch.softmax(z.detach() / obj.temperature, dim=1)
    u = _factors(obj, z, p)
    omega = _omega(weights, p, None if uniforms is None else labels_from(p, uniforms))
    order = torch.argsort(omega, dim=1, descending=True, stable=True)
    rounds = int((omega > 0).sum(1).max())
    outs = outputs(records)
    out = obj.zeros()
    for r in range(rounds):
        c = order[:, r:r + 1]
        f = (omega.gather(1, c).sqrt() * u.gather(1, c)).sum()
        first = check and r == 0  # also autograd's batched weight gradient, to catch layers the hooks miss
        got = torch.autograd.grad(f, outs + (list(w.values()) if first else []), retain_graph=r < rounds - 1,
                                  allow_unused=True)
        sums, sqs = hooks.from_deltas(records, got[: len(outs)], x.shape[0], 1, sums=first, squares=True)
        if first:
            check_against(sums, dict(zip(w, got[len(outs):], strict=True)))
        for k in out:
            out[k] += sqs[k]
    return out


def _vmap_chunk(obj: Objective, x: Tensor, p: Tensor, omega: Tensor) -> Grads:
    def factors(weights: Grads, xi: Tensor, pi: Tensor) -> Tensor:
        return _factors(obj, obj.logits(weights, xi.unsqueeze(0))[0], pi)

    jac = vmap(jacrev(factors), in_dims=(None, 0, 0))(obj.weights, x, p)  # {name: (n, C, *shape)}
    return {k: torch.tensordot(omega, j.square_(), dims=([0, 1], [0, 1])) for k, j in jac.items()}


def _loop(obj: Objective, x: Tensor, weights: Tensor, labels: Tensor | None) -> Grads:
    """The oracle: batch-1 autograd; the exact sum over classes, or the squared gradients of the cross-entropy
    with each drawn label (the textbook true-Fisher estimator, not the frequency-weighted factors)."""
    out = obj.zeros()
    for i in range(x.shape[0]):
        w = obj.leaves()
        z = obj.logits(w, x[i:i + 1])
        if labels is None:
            p = torch.softmax(z.detach() / obj.temperature, dim=1)[0]
            u = _factors(obj, z[0], p)
            terms = [(u[c], float(weights[i] * p[c])) for c in range(u.shape[0])]
        else:
            s = labels.shape[1]
            terms = [(F.cross_entropy(z / obj.temperature, labels[i, k:k + 1]), float(weights[i]) / s)
                     for k in range(s)]
        for j, (scalar, weight) in enumerate(terms):
            for k, gk in grads_of(scalar, w, retain_graph=j < len(terms) - 1).items():
                out[k] += weight * gk.square()
    return out
