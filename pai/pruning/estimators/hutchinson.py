"""Hutchinson's estimate of the Hessian diagonal: the mean over groups of scoring samples and Rademacher probes
z of z ⊙ (H z), where H is the Hessian of a group's mean loss (E[z_i z_j] = δ_ij makes it unbiased).

Paths, equal up to rounding: `loop` (batch-1 reference: one graph per group, one HVP per probe) and `vmap`
(vmapped over groups and their probes, reverse-over-reverse). Both draw the same probes for the same group.

`fast` picks one of them by a fixed rule (`fast_path`), never by timing, so a config gives the same estimate
under any load: vmap on an accelerator (the batch-1 loop is launch-bound there), and on a CPU vmap up to
VMAP_MAX_CPU_PARAMETERS differentiated parameters, the loop above. On a CPU the vmapped HVPs of wide
convolutions are slower than the loop; measured per group (one thread, 10 probes; benchmarks/scoring.py gives the
whole-criterion ratios): loop/vmap time 1.58 on ResNet-20 (0.27 M parameters), 1.12 at width ×2 (1.1 M), 0.78
at width ×4 (4.3 M), 0.67 on ResNet-18 (11.2 M).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import grad, vjp, vmap

from pai.progress import over_chunks
from pai.pruning.estimators.objective import Grads, Objective, grads_of, group_chunks, num_groups, scoring_mode
from pai.pruning.estimators.paths import HUTCHINSON_PATHS
from pai.seeding import Stream, make_generator

# On a CPU fast takes vmap up to this many differentiated parameters, the loop above (between ResNet-20 at
# width ×2, where vmap is 1.12× faster, and ×4, where it is 0.78× as fast).
VMAP_MAX_CPU_PARAMETERS = 2_000_000


class RademacherProbes:
    """±1 probes, `num_probes` per group, from a CPU generator seeded by `seed`: every path draws the same
    probes for the same group, so the loop and the vectorised Hutchinson estimates agree to rounding.

    Random bytes are drawn on the CPU (device-independent) and unpacked to bits on the weights' device, which
    moves 1/32 of the probe volume and makes one random draw per 8 signs.
    """

    def __init__(self, weights: Grads, num_probes: int, seed: int):
        self.shapes = {n: w.shape for n, w in weights.items()}
        self.dtypes = {n: w.dtype for n, w in weights.items()}
        self.numels = [w.numel() for w in weights.values()]
        self.total = sum(self.numels)
        self.device = next(iter(weights.values())).device
        self.num_probes = num_probes
        self.gen = make_generator(Stream.HUTCHINSON_PROBES, seed)
        self.shifts = torch.arange(8, dtype=torch.uint8, device=self.device)

    def draw(self) -> Grads:
        """The probes of the next group: {name: (num_probes, *shape)}."""
        k = self.num_probes
        raw = torch.randint(0, 256, (k, -(-self.total // 8)), dtype=torch.uint8, generator=self.gen)
        bits = (raw.to(self.device).unsqueeze(-1) >> self.shifts) & 1
        parts = bits.view(k, -1)[:, : self.total].split(self.numels, dim=1)
        return {n: part.reshape(k, *self.shapes[n]).to(self.dtypes[n]).mul_(2).sub_(1)
                for n, part in zip(self.shapes, parts, strict=True)}


def hutchinson(model: nn.Module, names: list[str], inputs: Tensor, targets: Tensor, *, temperature: float,
               batch_size: int, num_probes: int, seed: int, path: str = "fast",
               chunk_size: int = 2) -> tuple[Grads, Grads]:
    """(g, H_d): the mean group gradient and the Hutchinson Hessian diagonal, the mean over groups and probes of
    z ⊙ (H z), where H is the Hessian of a group's mean loss and every group has its own probes.

    loop: batch-1 reference (one graph per group, one HVP per probe). vmap: vmapped over `chunk_size` groups
    and their probes (reverse-over-reverse: one gradient graph per group, the probes batched through it).
    Both draw the same probes for the same group, so they give the same estimate up to rounding; fast is
    `fast_path`'s choice of the two.
    """
    if path not in HUTCHINSON_PATHS:
        raise ValueError(f"path={path!r} must be one of {HUTCHINSON_PATHS}")
    with scoring_mode(model):
        obj = Objective(model, names, temperature)
        if path == "fast":
            path = fast_path(obj.weights)
        probes = RademacherProbes(obj.weights, num_probes, seed)
        g_sum, h_sum = obj.zeros(), obj.zeros()
        for start, stop, b in over_chunks(group_chunks(inputs.shape[0], batch_size, chunk_size)):
            c = (stop - start) // b
            zs = [probes.draw() for _ in range(c)]
            if path == "loop":
                parts = [_loop_group(obj, inputs[start + j * b:start + (j + 1) * b],
                                     targets[start + j * b:start + (j + 1) * b], zs[j]) for j in range(c)]
            else:
                parts = [_vmap_groups(obj, inputs[start:stop], targets[start:stop], b, zs)]
            for g, h in parts:
                for k in g_sum:
                    g_sum[k] += g[k]
                    h_sum[k] += h[k]
        groups = num_groups(inputs.shape[0], batch_size)
        return {k: v / groups for k, v in g_sum.items()}, {k: v / (groups * num_probes) for k, v in h_sum.items()}


def fast_path(weights: Grads) -> str:
    """The path `fast` takes for these differentiated parameters: `vmap` off the CPU; on a CPU `vmap` up to
    VMAP_MAX_CPU_PARAMETERS parameters in all, else `loop` (see the module docstring for the measurements)."""
    first = next(iter(weights.values()))
    if first.device.type != "cpu":
        return "vmap"
    return "vmap" if sum(w.numel() for w in weights.values()) <= VMAP_MAX_CPU_PARAMETERS else "loop"


def _loop_group(obj: Objective, x: Tensor, y: Tensor, z: Grads) -> tuple[Grads, Grads]:
    w = obj.leaves()
    g = grads_of(obj.loss(w, x, y), w, create_graph=True)
    h = obj.zeros()
    k_probes = next(iter(z.values())).shape[0]
    for k in range(k_probes):
        hz = torch.autograd.grad(list(g.values()), list(w.values()), [z[n][k] for n in w],
                                 retain_graph=k < k_probes - 1)
        for n, hzn in zip(w, hz, strict=True):
            h[n] += z[n][k] * hzn
    return {n: gn.detach() for n, gn in g.items()}, h


def _vmap_groups(obj: Objective, x: Tensor, y: Tensor, b: int, zs: list[Grads]) -> tuple[Grads, Grads]:
    def one_group(xb: Tensor, yb: Tensor, z: Grads) -> tuple[Grads, Grads]:
        g, hvp = vjp(lambda w: grad(obj.loss)(w, xb, yb), obj.weights)  # type: ignore[misc]  # 2 without has_aux
        hz = vmap(hvp)(z)[0]  # vjp of the gradient = H z (H is symmetric)
        return g, {n: (z[n] * hz[n]).sum(0) for n in z}

    c = len(zs)
    z = {n: torch.stack([zi[n] for zi in zs]) for n in obj.weights}
    g, h = vmap(one_group)(x.view(c, b, *x.shape[1:]), y.view(c, b), z)
    return {n: t.sum(0) for n, t in g.items()}, {n: t.sum(0) for n, t in h.items()}
