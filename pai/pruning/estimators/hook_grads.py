"""Per-group weight gradients from one batched pass, as BackPACK does: forward hooks keep every scored layer's
input a and output y; autograd returns only δ = ∂loss/∂y (no weight gradients); then for each group

    Linear: Σ_{samples, positions} δᵀ a          Conv: δ (C_out × L) times the input patches (L × C_in·k)

For a Linear layer with per-sample groups, Σ_i (δ_iᵀ a_i)² = (δ²)ᵀ(a²), so its squares cost one matmul and no
per-sample tensor. A convolution's per-group gradients take one of three forms, chosen per layer by its shape
(never by timing; the times below are for 32 samples on one CPU thread, forms compared on the same layer):

- grouped (at most MAX_GROUPED_WEIGHTS weights): the weight gradient of one convolution whose groups are the
  sample groups (the batch folded into the channels), from the library's convolution backward. Best on wide
  maps with few channels: 3.4 ms against 7.1 (shifted) and 12.0 (patches) for 16→16 channels on 32×32, 34
  against 52 and 58 for 128→128 on 16×16; but 127 against 42 for 256→256 on 8×8;
- shifted (per-sample groups, groups=1, at most MAX_SHIFT_WASTE products per useful one): for a kernel offset
  the patches are the padded input shifted by that offset. With the input split into its stride phases and
  each phase flattened, and δ padded with zero columns to a phase's row length, the shift is a contiguous slice
  of the flattened phase, so each offset is one bmm of δ with a strided view of the input: no patch tensor is
  materialised. The zero columns waste products (10/8 for a 3×3 conv on 8×8, 6/4 on 4×4, where patches win:
  45 ms against 63 for 512→512);
- patches: an `as_strided` view of the padded input (cheaper than `F.unfold`), copied to (C_in·k × L) per group.

The per-sample gradients of the layer at hand live in reused buffers (writing fresh memory costs more than the
products on a CPU); only the sums a caller asks for are formed (the square and/or the plain sum). On ResNet-18
most of the hooks' own time goes to the 4×4 and 8×8 layers, whose per-sample gradients (N × 2.4 M floats for a
512→512 layer) are written, squared and summed: memory-bound work that a batched pass never does.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.grad import conv1d_weight, conv2d_weight, conv3d_weight
from torch.nn.modules.conv import _ConvNd

from pai.pruning.estimators.objective import Grads, Objective

log = logging.getLogger(__name__)
T = TypeVar("T")

Records = dict[str, list[tuple[Tensor, Tensor]]]  # layer -> [(input, output)], one per call
SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
MAX_GROUPED_WEIGHTS = 2**18  # convs with at most this many weights take a grouped convolution's weight gradient
MAX_SHIFT_WASTE = 1.3  # above this share of zero-column products a conv takes the patches instead


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


def check_chunk_first(chunks: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """The first chunk split into its first group and the rest: the hooks' self-check (one extra weight
    backward) then runs on one group, not on a whole chunk."""
    start, stop, b = chunks[0]
    if stop - start <= b:
        return chunks
    return [(start, start + b, b), (start + b, stop, b), *chunks[1:]]


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
        self.scratch = Scratch()

    def moments(self, x: Tensor, y: Tensor, b: int, *, sums: bool, squares: bool,
                check: bool) -> tuple[Grads | None, Grads | None]:
        """Sums over this chunk's groups (of `b` samples each) of the group gradient (when `sums`) and of its
        square (when `squares`). `check` also asks autograd for the batched weight gradients and compares them
        with the hooks' sums (costs one weight backward: run it on a small chunk)."""
        w = self.obj.leaves()  # leaves need grad so outputs join the graph; their grads are never computed
        loss, records = self.record(lambda: self.obj.loss(w, x, y, "sum") / b)  # the sum of the groups' means
        outs = outputs(records)
        got = torch.autograd.grad(loss, outs + (list(w.values()) if check else []), allow_unused=True)
        s, q = self.from_deltas(records, got[: len(outs)], x.shape[0] // b, b, sums=sums or check, squares=squares)
        if check:
            check_against(s, dict(zip(w, got[len(outs):], strict=True)))
        return (s if sums else None), (q if squares else None)

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

    def from_deltas(self, records: Records, deltas: Sequence[Tensor | None], c: int, b: int, *, sums: bool,
                    squares: bool) -> tuple[Grads, Grads]:
        """Per-layer sums over c groups of b samples of the group weight gradient (when `sums`) and of its
        square (when `squares`), from the output gradients `deltas` (ordered as `outputs(records)`); the dict
        not asked for is empty."""
        it = iter(deltas)
        out_sums: Grads = {}
        out_sqs: Grads = {}
        for n, recs in records.items():
            pairs = [(a, d) for (a, _), d in zip(recs, it, strict=False) if d is not None]
            owner = self.owners[n]
            assert isinstance(owner, nn.Linear | _ConvNd)  # SUPPORTED, checked before a HookGrads is built
            sm, sq = _layer_moments(owner, pairs, c, b, sums, squares, self.obj.weights[n], self.scratch)
            if sm is not None:
                out_sums[n] = sm
            if sq is not None:
                out_sqs[n] = sq
        return out_sums, out_sqs


def outputs(records: Records) -> list[Tensor]:
    """The recorded layer outputs, in the order `from_deltas` expects their gradients."""
    return [o for recs in records.values() for _, o in recs]


def _recorder(store: list):
    def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
        store.append((args[0].detach(), output))

    return hook


def _layer_moments(m: nn.Linear | _ConvNd, pairs: list[tuple[Tensor, Tensor]], c: int, b: int, sums: bool,
                   squares: bool, weight: Tensor, scratch: Scratch) -> tuple[Tensor | None, Tensor | None]:
    if not pairs:  # the layer does not reach the loss
        return (torch.zeros_like(weight) if sums else None), (torch.zeros_like(weight) if squares else None)
    if isinstance(m, nn.Linear) and len(pairs) == 1 and b == 1 and pairs[0][0].dim() == 2:
        a, d = pairs[0]
        return (d.T @ a if sums else None), ((d * d).T @ (a * a) if squares else None)
    if len(pairs) == 1:
        grads = _group_grads(m, *pairs[0], c, b, scratch)
    else:  # a layer called twice: contributions add (the first leaves the shared buffer); one layout for all
        grads = _group_grads(m, *pairs[0], c, b, scratch, shifted=False).clone()
        for a, d in pairs[1:]:
            grads += _group_grads(m, a, d, c, b, scratch, shifted=False)
    # The sum before the in-place square. In place: squaring a fresh copy of a large temporary costs more than
    # the square itself (page faults).
    total = grads.reduce(grads.values) if sums else None
    return total, (grads.reduce(grads.values.square_()) if squares else None)


class GroupGrads:
    """Every group's weight gradient of one layer, `values`, with the groups along `dim`; `reduce` sums over
    the groups (in the stored layout: a reduction over a permuted view is several times slower) and returns
    the weight's shape."""

    def __init__(self, values: Tensor, dim: int, weight_shape: torch.Size):
        self.values, self.dim, self.weight_shape = values, dim, weight_shape

    def reduce(self, values: Tensor) -> Tensor:
        total = values.sum(self.dim)
        if self.dim == 0:
            return total
        return total.movedim(0, -1).reshape(self.weight_shape)  # (k, C_out, C_in) → (C_out, C_in, *kernel)

    def clone(self) -> GroupGrads:
        return GroupGrads(self.values.clone(), self.dim, self.weight_shape)

    def __iadd__(self, other: GroupGrads) -> GroupGrads:
        self.values += other.values
        return self


def _group_grads(m: nn.Linear | _ConvNd, a: Tensor, d: Tensor, c: int, b: int, scratch: Scratch,
                 shifted: bool = True) -> GroupGrads:
    """The weight gradient of each of the c groups of b samples (see the module docstring for the choice)."""
    if isinstance(m, nn.Linear):
        a = a.reshape(c, -1, a.shape[-1])  # (c, b·positions, in)
        d = d.reshape(c, -1, d.shape[-1])
        out = scratch.take("grads", (c, d.shape[-1], a.shape[-1]), a)
        return GroupGrads(torch.bmm(d.transpose(1, 2), a, out=out), 0, m.weight.shape)
    if m.weight.numel() <= MAX_GROUPED_WEIGHTS:
        return grouped_grads(m, a, d, c, b)
    if shifted and b == 1 and m.groups == 1 and shift_waste(m, a.shape[2:], d.shape[2:]) <= MAX_SHIFT_WASTE:
        return shifted_grads(m, a, d, scratch)
    return patch_grads(m, a, d, c, b, scratch)


def grouped_grads(m: _ConvNd, a: Tensor, d: Tensor, c: int, b: int) -> GroupGrads:
    """A convolution's group gradients as the weight gradient of one convolution whose groups are the c groups
    of samples (channels folded: (b, c·C_in, ...) input, (c·C_out, C_in/groups, *k) weight)."""
    nd = a.dim() - 2
    pad = m._reversed_padding_repeated_twice  # (last dim left, last dim right, ...)
    padding = [pad[2 * (nd - 1 - i)] for i in range(nd)]
    if m.padding_mode != "zeros" or any(pad[2 * i] != pad[2 * i + 1] for i in range(nd)):
        # padded here: 'same' can be asymmetric, and the padding mode may not be zeros
        a = F.pad(a, pad, mode="constant" if m.padding_mode == "zeros" else m.padding_mode)
        padding = [0] * nd
    cin, cout = a.shape[1], d.shape[1]
    if b == 1:
        a, d = a.reshape(1, c * cin, *a.shape[2:]), d.reshape(1, c * cout, *d.shape[2:])
    else:  # the b samples of a group form the batch, which the weight gradient sums over
        a = a.reshape(c, b, cin, *a.shape[2:]).transpose(0, 1).reshape(b, c * cin, *a.shape[2:])
        d = d.reshape(c, b, cout, *d.shape[2:]).transpose(0, 1).reshape(b, c * cout, *d.shape[2:])
    size = (c * cout, *m.weight.shape[1:])
    conv_weight = (conv1d_weight, conv2d_weight, conv3d_weight)[nd - 1]
    out = conv_weight(a, size, d, stride=m.stride, padding=padding, dilation=m.dilation, groups=c * m.groups)
    return GroupGrads(out.view(c, *m.weight.shape), 0, m.weight.shape)


def patch_grads(m: _ConvNd, a: Tensor, d: Tensor, c: int, b: int, scratch: Scratch) -> GroupGrads:
    """A convolution's group gradients from its input patches, copied to (C_in/groups·k × b·L) per group."""
    g, co, length = m.groups, d.shape[1], d[0, 0].numel()
    # (c·groups, C_in/groups·k, b·L) patches and (c·groups, C_out/groups, b·L) output gradients
    patches = _patches(m, a).reshape(c, b, g, -1, length).permute(0, 2, 3, 1, 4).reshape(c * g, -1, b * length)
    d = d.reshape(c, b, g, co // g, length).permute(0, 2, 3, 1, 4).reshape(c * g, co // g, b * length)
    out = scratch.take("grads", (c * g, co // g, patches.shape[1]), a)
    return GroupGrads(torch.bmm(d, patches.transpose(1, 2), out=out).view(c, *m.weight.shape), 0, m.weight.shape)


def _phase_shape(m: _ConvNd, size: Sequence[int]) -> list[int]:
    """Each stride phase's size per spatial dim: ⌈padded input / stride⌉."""
    pad = m._reversed_padding_repeated_twice  # (last dim left, last dim right, ...)
    nd = len(size)
    padded = [size[i] + pad[2 * (nd - 1 - i)] + pad[2 * (nd - 1 - i) + 1] for i in range(nd)]
    return [-(-padded[i] // m.stride[i]) for i in range(nd)]


def shift_waste(m: _ConvNd, size: Sequence[int], out: Sequence[int]) -> float:
    """Products of the shifted form per useful one: δ's rows are padded to a phase's row length."""
    q = _phase_shape(m, size)
    return math.prod(q[1:]) / max(1, math.prod(out[1:]))


def shifted_grads(m: _ConvNd, a: Tensor, d: Tensor, scratch: Scratch) -> GroupGrads:
    """Per-sample weight gradients of a convolution with groups=1 (see the module docstring): one bmm per kernel
    offset of δ (C_out × L') with a strided slice (L' × C_in) of the input's flattened stride phases, written
    offset-major into the buffer, (k, N, C_out, C_in)."""
    nd = a.dim() - 2
    n, cin, cout = a.shape[0], a.shape[1], d.shape[1]
    k, s, dil = m.kernel_size, m.stride, m.dilation
    q = _phase_shape(m, a.shape[2:])
    row_strides = [math.prod(q[i + 1:]) for i in range(nd)]
    shifts = [[(j * dil[i]) // s[i] for j in range(k[i])] for i in range(nd)]
    tail = sum(max(shifts[i]) * row_strides[i] for i in range(1, nd))  # the last offsets read past a plane
    plane, phases = math.prod(q), math.prod(s)
    flat = scratch.take("inputs", (n, cin, phases, plane + tail), a)
    _write_phases(m, a, q, flat[..., :plane])
    flat[..., plane:].zero_()  # read only against δ's zero columns, but 0 · NaN would not vanish
    # δ with each row padded by zero columns to the phase's row length: (N, C_out, o_1 · q_2 ⋯ q_nd)
    out = list(d.shape[2:])
    if out[1:] != q[1:]:
        padded = scratch.take("deltas", (n, cout, out[0], *q[1:]), d)
        padded.zero_()
        _narrowed(padded, [0] * nd, out).copy_(d)
        d = padded
    d = d.reshape(n, cout, -1)
    length = d.shape[2]
    buf = scratch.take("grads", (math.prod(k), n, cout, cin), a)
    for j, offset in enumerate(itertools.product(*(range(ki) for ki in k))):
        taps = [offset[i] * dil[i] for i in range(nd)]
        phase = sum((taps[i] % s[i]) * math.prod(s[i + 1:]) for i in range(nd))
        start = sum((taps[i] // s[i]) * row_strides[i] for i in range(nd))
        torch.bmm(d, flat[:, :, phase, start:start + length].transpose(1, 2), out=buf[j])
    return GroupGrads(buf, 1, m.weight.shape)


def _write_phases(m: _ConvNd, a: Tensor, q: list[int], dest: Tensor) -> None:
    """dest (N, C_in, phases, plane) ← the padded input split into its stride phases:
    phase p at y = a_padded[y·stride + p], zero (or the padding mode's value) outside."""
    nd = a.dim() - 2
    n, cin = a.shape[:2]
    s, pad = m.stride, m._reversed_padding_repeated_twice
    if all(si == 1 for si in s) and m.padding_mode == "zeros":  # one phase: copy the interior, zero the rim
        dest = dest.view(n, cin, *q)
        dest.zero_()
        lo = [pad[2 * (nd - 1 - i)] for i in range(nd)]
        _narrowed(dest, lo, a.shape[2:]).copy_(a)
        return
    if any(pad):
        a = F.pad(a, pad, mode="constant" if m.padding_mode == "zeros" else m.padding_mode)
    a = F.pad(a, [v for i in reversed(range(nd)) for v in (0, q[i] * s[i] - a.shape[2 + i])])
    a = a.view(n, cin, *[v for i in range(nd) for v in (q[i], s[i])])
    dest.view(n, cin, *s, *q).copy_(a.permute(0, 1, *[3 + 2 * i for i in range(nd)], *[2 + 2 * i for i in range(nd)]))


def _narrowed(t: Tensor, starts: Sequence[int], sizes: Sequence[int]) -> Tensor:
    """The view of t's spatial dims (2, 3, ...) from `starts`, `sizes` long."""
    for i, (start, size) in enumerate(zip(starts, sizes, strict=True)):
        t = t.narrow(2 + i, start, size)
    return t


class Scratch:
    """Reusable buffers, by role, for the layer at hand (per-group gradients, phased inputs, padded output
    gradients): writing into fresh memory costs more than the products on a CPU (page faults), and only one
    layer's are alive at a time."""

    def __init__(self) -> None:
        self.bufs: dict[str, Tensor] = {}

    def take(self, role: str, shape: Sequence[int], like: Tensor) -> Tensor:
        n = math.prod(shape)
        buf = self.bufs.get(role)
        if buf is None or buf.numel() < n or buf.dtype != like.dtype or buf.device != like.device:
            buf = self.bufs[role] = torch.empty(n, dtype=like.dtype, device=like.device)
        return buf[:n].view(*shape)


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
