"""Per-group weight gradients from one batched pass, as BackPACK does: forward hooks keep every scored layer's
input a and output y; autograd returns only δ = ∂loss/∂y (no weight gradients); then for each group

    Linear: Σ_{samples, positions} δᵀ a          Conv: δ (C_out × L) times the input patches (L × C_in·k)

where the patches are an `as_strided` view of the padded input (cheaper than `F.unfold`). For a Linear layer
with per-sample groups, Σ_i (δ_iᵀ a_i)² = (δ²)ᵀ(a²), so its squares cost one matmul and no per-sample tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pai.pruning.curvature import Grads, Objective

SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class HookCheckError(RuntimeError):
    """The hook-based gradients disagree with autograd (e.g. a weight used outside its module's forward, or a
    layer output modified in place); the caller falls back to vmap."""


def _owners(model: nn.Module, names: list[str]) -> dict[str, nn.Module] | None:
    modules = dict(model.named_modules())
    owners = {}
    for n in names:
        prefix, _, leaf = n.rpartition(".")
        if leaf != "weight" or prefix not in modules:
            return None
        owners[n] = modules[prefix]
    return owners


def hooks_supported(model: nn.Module, names: list[str]) -> bool:
    owners = _owners(model, names)
    if owners is None or not all(isinstance(m, SUPPORTED) for m in owners.values()):
        return False
    # BN without running statistics normalises over the batch even in eval mode: samples would interact.
    return all(m.track_running_stats for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


class HookGrads:
    def __init__(self, model: nn.Module, obj: Objective):
        owners = _owners(model, list(obj.weights))
        if owners is None:
            raise ValueError("hook-based gradients need '<module>.weight' names")
        self.obj, self.owners = obj, owners

    def moments(self, x: Tensor, y: Tensor, b: int, squares: bool, check: bool) -> tuple[Grads, Grads]:
        """Sums over this chunk's groups (of `b` samples each) of the group gradient and of its square.
        `check` also asks autograd for the batched weight gradients and compares (costs one weight backward)."""
        records: dict[str, list[tuple[Tensor, Tensor]]] = {n: [] for n in self.owners}
        handles = [m.register_forward_hook(_recorder(records[n])) for n, m in self.owners.items()]
        w = self.obj.leaves()  # leaves need grad so outputs join the graph; their grads are never computed
        try:
            loss = self.obj.loss(w, x, y, "sum") / b  # the sum of the groups' mean losses
        finally:
            for h in handles:
                h.remove()
        outs = [o for recs in records.values() for _, o in recs]
        got = torch.autograd.grad(loss, outs + (list(w.values()) if check else []), allow_unused=True)
        deltas = iter(got[: len(outs)])
        c = x.shape[0] // b
        sums, sqs = {}, {}
        for n, recs in records.items():
            pairs = [(a, d) for (a, _), d in zip(recs, deltas, strict=False) if d is not None]
            sums[n], sqs[n] = _layer_moments(self.owners[n], pairs, c, b, squares, self.obj.weights[n])
        if check:
            _check(sums, dict(zip(w, got[len(outs):], strict=True)))
        return sums, sqs


def _recorder(store: list):
    def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
        store.append((args[0].detach(), output))

    return hook


def _layer_moments(m: nn.Module, pairs: list[tuple[Tensor, Tensor]], c: int, b: int, squares: bool,
                   weight: Tensor) -> tuple[Tensor, Tensor | None]:
    if not pairs:  # the layer does not reach the loss
        return torch.zeros_like(weight), (torch.zeros_like(weight) if squares else None)
    if isinstance(m, nn.Linear) and len(pairs) == 1 and b == 1 and pairs[0][0].dim() == 2:
        a, d = pairs[0]
        return d.T @ a, ((d * d).T @ (a * a) if squares else None)
    grads = sum(_group_grads(m, a, d, c, b) for a, d in pairs)  # a layer called twice: contributions add
    return grads.sum(0), (grads.square().sum(0) if squares else None)


def _group_grads(m: nn.Module, a: Tensor, d: Tensor, c: int, b: int) -> Tensor:
    """{(c, *weight.shape)}: the weight gradient of each of the c groups of b samples."""
    if isinstance(m, nn.Linear):
        a = a.reshape(c, b, -1, a.shape[-1])
        d = d.reshape(c, b, -1, d.shape[-1])
        return torch.einsum("cbto,cbti->coi", d, a)
    g = m.groups
    patches = _patches(m, a).reshape(c, b, g, -1, d[0, 0].numel())  # (c, b, groups, C_in/groups·k, L)
    d = d.reshape(c, b, g, d.shape[1] // g, -1)
    return torch.einsum("cbgol,cbgkl->cgok", d, patches).reshape(c, *m.weight.shape)


def _patches(m: nn.Module, a: Tensor) -> Tensor:
    """(N, C_in, *kernel, *out) view of the padded input: patches[..., k, o] = a_padded[o·stride + k·dilation]."""
    pad = m._reversed_padding_repeated_twice  # what nn.Conv pads with: ints, 'same' or 'valid' resolved
    if any(pad):
        a = F.pad(a, pad, mode="constant" if m.padding_mode == "zeros" else m.padding_mode)
    a = a.contiguous()
    nd = a.dim() - 2
    k, s, dil = m.kernel_size, m.stride, m.dilation
    out = [(a.shape[2 + i] - dil[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(nd)]
    st = a.stride()
    strides = (st[0], st[1], *(st[2 + i] * dil[i] for i in range(nd)), *(st[2 + i] * s[i] for i in range(nd)))
    return a.as_strided((*a.shape[:2], *k, *out), strides, a.storage_offset())


def _check(sums: Grads, ref: dict[str, Tensor | None]) -> None:
    for n, r in ref.items():
        r = torch.zeros_like(sums[n]) if r is None else r
        err = (sums[n] - r).norm()
        if err > 1e-3 * max(r.norm(), sums[n].norm()):
            raise HookCheckError(f"{n}: the hook gradient differs from autograd's by {float(err):.3g} "
                                 f"(norm {float(r.norm()):.3g})")
