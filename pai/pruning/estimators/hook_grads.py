"""Per-group weight gradients from one batched pass, as BackPACK does: forward hooks keep every scored layer's
input a and output y; autograd returns only δ = ∂loss/∂y (no weight gradients); then for each group

    Linear: Σ_{samples, positions} δᵀ a          Conv: δ (C_out × L) times the input patches (L × C_in·k)

where the patches are an `as_strided` view of the padded input (cheaper than `F.unfold`). For a Linear layer
with per-sample groups, Σ_i (δ_iᵀ a_i)² = (δ²)ᵀ(a²), so its squares cost one matmul and no per-sample tensor.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from pai.pruning.estimators.objective import Grads, Objective

log = logging.getLogger(__name__)
T = TypeVar("T")

Records = dict[str, list[tuple[Tensor, Tensor]]]  # layer -> [(input, output)], one per call
SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class HookCheckError(RuntimeError):
    """The hook-based gradients disagree with autograd (e.g. a weight used outside its module's forward, or a
    layer output modified in place); the caller falls back to vmap."""


def with_vmap_fallback(compute: Callable[[str], T], path: str, requested: str) -> T:
    """`compute(path)`; when the path was chosen by `fast` and the hooks fail their check, `compute("vmap")`
    instead (an explicitly requested path raises)."""
    try:
        return compute(path)
    except HookCheckError as err:
        if requested != "fast":
            raise
        log.warning("per-sample gradients by hooks failed their check (%s); using vmap", err)
        return compute("vmap")


def _owners(model: nn.Module, names: list[str]) -> dict[str, nn.Module] | None:
    """The module of each scored weight `<module>.weight`, or None when a name is not of that form or a weight
    is shared by several modules (tied): the hooks of one module would miss the other uses."""
    modules = dict(model.named_modules())
    uses: dict[int, int] = {}
    for m in modules.values():
        for p in m.parameters(recurse=False):
            uses[id(p)] = uses.get(id(p), 0) + 1
    owners: dict[str, nn.Module] = {}
    for n in names:
        prefix, _, leaf = n.rpartition(".")
        if leaf != "weight" or prefix not in modules or uses.get(id(modules[prefix].weight), 0) > 1:
            return None
        owners[n] = modules[prefix]
    return owners


def samples_independent(model: nn.Module) -> bool:
    """False when a BN layer normalises over the batch even in eval mode (no running statistics): then the
    samples of a batch interact and only a per-group path (loop, vmap) keeps the reference semantics."""
    return all(m.track_running_stats for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


def hooks_supported(model: nn.Module, names: list[str]) -> bool:
    owners = _owners(model, names)
    return owners is not None and all(isinstance(m, SUPPORTED) for m in owners.values()) and \
        samples_independent(model)


class HookGrads:
    def __init__(self, model: nn.Module, obj: Objective):
        owners = _owners(model, list(obj.weights))
        if owners is None:
            raise ValueError("hook-based gradients need '<module>.weight' names, each weight in one module")
        self.obj, self.owners = obj, owners
        self.scratch = _Scratch()

    def moments(self, x: Tensor, y: Tensor, b: int, squares: bool, check: bool) -> tuple[Grads, Grads]:
        """Sums over this chunk's groups (of `b` samples each) of the group gradient and of its square.
        `check` also asks autograd for the batched weight gradients and compares (costs one weight backward)."""
        w = self.obj.leaves()  # leaves need grad so outputs join the graph; their grads are never computed
        loss, records = self.record(lambda: self.obj.loss(w, x, y, "sum") / b)  # the sum of the groups' means
        outs = outputs(records)
        got = torch.autograd.grad(loss, outs + (list(w.values()) if check else []), allow_unused=True)
        sums, sqs = self.from_deltas(records, got[: len(outs)], x.shape[0] // b, b, squares)
        if check:
            check_against(sums, dict(zip(w, got[len(outs):], strict=True)))
        return sums, sqs

    def record(self, forward: Callable[[], Tensor]) -> tuple[Tensor, Records]:
        """forward() run with every scored layer's (input, output) recorded; the graph is kept, so several
        backward passes (one per output gradient, see pai.pruning.estimators.gauss_newton) can share one forward."""
        records: Records = {n: [] for n in self.owners}
        handles = [m.register_forward_hook(_recorder(records[n])) for n, m in self.owners.items()]
        try:
            return forward(), records
        finally:
            for h in handles:
                h.remove()

    def from_deltas(self, records: Records, deltas: Sequence[Tensor | None], c: int, b: int,
                    squares: bool) -> tuple[Grads, Grads]:
        """Per-layer sums over c groups of b samples of the group weight gradient (and its square), from the
        output gradients `deltas` (ordered as `outputs(records)`); the squares are {} when not `squares`."""
        it = iter(deltas)
        sums: Grads = {}
        sqs: Grads = {}
        for n, recs in records.items():
            pairs = [(a, d) for (a, _), d in zip(recs, it, strict=False) if d is not None]
            owner = self.owners[n]
            assert isinstance(owner, nn.Linear | _ConvNd)  # SUPPORTED, checked before a HookGrads is built
            sums[n], square = _layer_moments(owner, pairs, c, b, squares, self.obj.weights[n], self.scratch)
            if square is not None:
                sqs[n] = square
        return sums, sqs


def outputs(records: Records) -> list[Tensor]:
    """The recorded layer outputs, in the order `from_deltas` expects their gradients."""
    return [o for recs in records.values() for _, o in recs]


def _recorder(store: list):
    def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
        store.append((args[0].detach(), output))

    return hook


def _layer_moments(m: nn.Linear | _ConvNd, pairs: list[tuple[Tensor, Tensor]], c: int, b: int, squares: bool,
                   weight: Tensor, scratch: _Scratch) -> tuple[Tensor, Tensor | None]:
    if not pairs:  # the layer does not reach the loss
        return torch.zeros_like(weight), (torch.zeros_like(weight) if squares else None)
    if isinstance(m, nn.Linear) and len(pairs) == 1 and b == 1 and pairs[0][0].dim() == 2:
        a, d = pairs[0]
        return d.T @ a, ((d * d).T @ (a * a) if squares else None)
    grads = _group_grads(m, *pairs[0], c, b, scratch)
    if len(pairs) > 1:  # a layer called twice: contributions add (the first leaves the shared buffer)
        grads = grads.clone()
        for a, d in pairs[1:]:
            grads += _group_grads(m, a, d, c, b, scratch)
    # In place: squaring a fresh copy of a large temporary costs more than the square (page faults).
    return grads.sum(0), (grads.square_().sum(0) if squares else None)


def _group_grads(m: nn.Linear | _ConvNd, a: Tensor, d: Tensor, c: int, b: int, scratch: _Scratch) -> Tensor:
    """(c, *weight.shape): the weight gradient of each of the c groups of b samples, written into `scratch`."""
    if isinstance(m, nn.Linear):
        a = a.reshape(c, -1, a.shape[-1])  # (c, b·positions, in)
        d = d.reshape(c, -1, d.shape[-1])
        return torch.bmm(d.transpose(1, 2), a, out=scratch.take((c, d.shape[-1], a.shape[-1]), a))
    g, co, length = m.groups, d.shape[1], d[0, 0].numel()
    # (c·groups, C_in/groups·k, b·L) patches and (c·groups, C_out/groups, b·L) output gradients
    patches = _patches(m, a).reshape(c, b, g, -1, length).permute(0, 2, 3, 1, 4).reshape(c * g, -1, b * length)
    d = d.reshape(c, b, g, co // g, length).permute(0, 2, 3, 1, 4).reshape(c * g, co // g, b * length)
    out = scratch.take((c * g, co // g, patches.shape[1]), a)
    return torch.bmm(d, patches.transpose(1, 2), out=out).view(c, *m.weight.shape)


class _Scratch:
    """One reusable buffer for the per-group gradients of the layer at hand: writing into fresh memory costs
    more than the product itself on a CPU (page faults), and only one layer's gradients are alive at a time."""

    def __init__(self) -> None:
        self.buf: Tensor | None = None

    def take(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        n = math.prod(shape)
        buf = self.buf
        if buf is None or buf.numel() < n or buf.dtype != like.dtype or buf.device != like.device:
            buf = self.buf = torch.empty(n, dtype=like.dtype, device=like.device)
        return buf[:n].view(shape)


def _patches(m: _ConvNd, a: Tensor) -> Tensor:
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


def check_against(sums: Grads, ref: dict[str, Tensor | None]) -> None:
    for n, r in ref.items():
        r = torch.zeros_like(sums[n]) if r is None else r
        err = (sums[n] - r).norm()
        if err > 1e-3 * max(r.norm(), sums[n].norm()):
            raise HookCheckError(f"{n}: the hook gradient differs from autograd's by {float(err):.3g} "
                                 f"(norm {float(r.norm()):.3g})")
