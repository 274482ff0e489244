"""Hutchinson diagonals against the exact Hessian, the GraSP Hessian-gradient product against an explicit one,
and the probes and sample groups they share."""

from __future__ import annotations

import random
import time

import pytest
import torch
import torch.nn.functional as F
from test_criteria_common import one_thread  # noqa: F401 (autouse fixture)
from torch import nn
from torch.func import functional_call

from pai.pruning.criteria.base import Criterion
from pai.pruning.criteria.grasp import GraSP
from pai.pruning.estimators import (
    Objective,
    RademacherProbes,
    group_chunks,
    hessian_gradient_product,
    hutchinson,
)
from pai.pruning.estimators.hutchinson import VMAP_MAX_CPU_PARAMETERS, fast_path
from pai.pruning.mask_calculator import kept_count, select_masks


def tiny_net() -> nn.Module:
    """135 weights: conv + eval-mode BN (non-trivial statistics) + tanh + Linear, float64."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3), nn.Tanh(), nn.Flatten(),
                        nn.Linear(27, 3)).double().eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.3, 0.3)
        net[1].running_var.uniform_(0.5, 2.0)
    return net


def tiny_data(n: int):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 2, 3, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def exact(net: nn.Module, x, y, temperature: float):
    """(flat weights, their names/shapes, per-sample Hessians (N, P, P), gradient and Hessian of the mean loss)."""
    weights = {n: w.detach() for n, w in Criterion.weights(net).items()}
    shapes = [w.shape for w in weights.values()]
    flat0 = torch.cat([w.flatten() for w in weights.values()])

    def loss(flat, xb, yb):
        parts = dict(zip(weights, (p.view(s) for p, s in zip(flat.split([s.numel() for s in shapes]), shapes,
                                                             strict=True)), strict=True))
        return F.cross_entropy(functional_call(net, parts, (xb,)) / temperature, yb)

    per_sample = torch.stack([torch.autograd.functional.hessian(lambda f, i=i: loss(f, x[i : i + 1], y[i : i + 1]),
                                                                flat0, vectorize=True) for i in range(x.shape[0])])
    flat = flat0.clone().requires_grad_()
    grad = torch.autograd.grad(loss(flat, x, y), flat)[0]
    return weights, flat0, per_sample, grad, per_sample.mean(0)  # the Hessian of the mean loss


def flat(d: dict) -> torch.Tensor:
    return torch.cat([t.flatten() for t in d.values()])


def test_hutchinson_converges_to_the_exact_diagonal_on_both_paths():
    """Both paths are unbiased with the variance of the reference estimator: every coordinate lies within 5σ of
    the exact diagonal, where σ_j² = Σ_i Σ_{l≠j} (H_i)_jl² / (N² K) (the batch-1 reference's variance) shrinks as
    1/K; so the error shrinks too."""
    net, temperature = tiny_net(), 3.0
    x, y = tiny_data(2)
    weights, _, per_sample, _, _ = exact(net, x, y, temperature)
    diag = torch.diagonal(per_sample, dim1=1, dim2=2).mean(0)
    off = per_sample.square().sum(2) - torch.diagonal(per_sample, dim1=1, dim2=2).square()
    errors = {}
    for k in (8, 200):
        sigma = (off.sum(0) / (x.shape[0] ** 2 * k)).sqrt()
        for path, seed in (("loop", 1), ("vmap", 2)):
            _, h = hutchinson(net, list(weights), x, y, temperature=temperature, batch_size=1, num_probes=k,
                              seed=seed, path=path, chunk_size=2)
            err = (flat(h) - diag).abs()
            assert (err <= 5 * sigma + 1e-12).all(), f"{path}, {k} probes: max z = {float((err / sigma).max()):.2f}"
            errors[path, k] = float(err.norm() / diag.norm())
    for path in ("loop", "vmap"):
        assert errors[path, 200] < errors[path, 8] / 2  # expected ratio sqrt(25) = 5


@pytest.mark.parametrize("batch_size", [1, 2])
def test_hutchinson_paths_draw_the_same_probes(batch_size):
    net = tiny_net()
    x, y = tiny_data(5)
    names = list(Criterion.weights(net))
    kw = dict(temperature=200.0, batch_size=batch_size, num_probes=4, seed=9)
    g0, h0 = hutchinson(net, names, x, y, path="loop", **kw)
    g1, h1 = hutchinson(net, names, x, y, path="vmap", chunk_size=3, **kw)
    torch.testing.assert_close(flat(h1), flat(h0), rtol=1e-9, atol=1e-9 * float(flat(h0).abs().max()))
    torch.testing.assert_close(flat(g1), flat(g0), rtol=1e-9, atol=0)
    _, h3 = hutchinson(net, names, x, y, path="fast", chunk_size=2, **kw)
    torch.testing.assert_close(flat(h3), flat(h0), rtol=1e-9, atol=1e-9 * float(flat(h0).abs().max()))
    _, h2 = hutchinson(net, names, x, y, path="vmap", **{**kw, "seed": 10})
    assert not torch.allclose(flat(h2), flat(h0))


CLOCKS = ("perf_counter", "perf_counter_ns", "monotonic", "monotonic_ns", "time", "time_ns", "process_time",
          "process_time_ns", "thread_time", "thread_time_ns")


def test_hutchinson_fast_does_not_depend_on_timing(monkeypatch):
    """fast gives bit-identical scores whatever the clocks say: each run sees clocks on which every interval
    looks either instant or endless, at random, so a path chosen by timing (vmap and the loop differ in the last
    bits in float32) would change the scores between runs."""
    net = tiny_net().float()
    x, y = tiny_data(8)
    x = x.float()
    names = list(Criterion.weights(net))
    kw = dict(temperature=200.0, batch_size=1, num_probes=3, seed=4, chunk_size=2)
    loop = hutchinson(net, names, x, y, path="loop", **kw)[1]
    vmapped = hutchinson(net, names, x, y, path="vmap", **kw)[1]
    assert not all(torch.equal(loop[n], vmapped[n]) for n in names)  # else this test could not see a switch
    runs = []
    for clock_seed in range(6):
        rng = random.Random(clock_seed)
        now = [1.0]

        def clock(rng=rng, now=now):
            now[0] += rng.choice([1e-9, 1e4])
            return now[0]

        with monkeypatch.context() as m:
            for name in CLOCKS:
                m.setattr(time, name, (lambda c=clock: int(c() * 1e9)) if name.endswith("_ns") else clock)
            runs.append((fast_path(dict(Objective(net, names).weights)), hutchinson(net, names, x, y, **kw)[1]))
    for path, h in runs:
        assert path == runs[0][0] == "vmap"  # a small net on the CPU
        assert all(torch.equal(h[n], vmapped[n]) for n in names)


def test_hutchinson_fast_path_rule():
    """vmap off the CPU and for small nets on it; the loop on a CPU above VMAP_MAX_CPU_PARAMETERS (where the
    vmapped HVPs are slower than the loop)."""
    def weights(numel: int, device: str = "cpu") -> dict[str, torch.Tensor]:
        return {"a.weight": torch.empty(1, device=device).expand(numel), "b.weight": torch.empty(3, device=device)}

    assert fast_path(weights(VMAP_MAX_CPU_PARAMETERS - 3)) == "vmap"
    assert fast_path(weights(VMAP_MAX_CPU_PARAMETERS - 2)) == "loop"
    assert fast_path(weights(VMAP_MAX_CPU_PARAMETERS, device="meta")) == "vmap"


def test_exact_hutchinson_mean_gradient():
    net = tiny_net()
    x, y = tiny_data(4)
    weights, _, _, grad, _ = exact(net, x, y, 200.0)
    g, _ = hutchinson(net, list(weights), x, y, temperature=200.0, batch_size=1, num_probes=1, seed=0)
    torch.testing.assert_close(flat(g), grad, rtol=1e-10, atol=0)


def test_probes_are_rademacher_and_reproducible():
    w = {"a": torch.zeros(3, 5), "b": torch.zeros(7, dtype=torch.float64)}
    p1, p2 = RademacherProbes(w, 4, seed=0), RademacherProbes(w, 4, seed=0)
    d1, d2 = p1.draw(), p2.draw()
    assert d1["a"].shape == (4, 3, 5) and d1["b"].shape == (4, 7) and d1["b"].dtype == torch.float64
    assert all(torch.equal(d1[n], d2[n]) for n in w)
    assert not torch.equal(p1.draw()["a"], d1["a"])  # the next group gets new probes
    big = RademacherProbes({"w": torch.zeros(100_000)}, 1, seed=3).draw()["w"]
    assert set(big.unique().tolist()) == {-1.0, 1.0} and abs(float(big.mean())) < 0.02


def test_group_chunks():
    assert group_chunks(13, 5, 32) == [(0, 10, 5), (10, 13, 3)]
    assert group_chunks(7, 1, 3) == [(0, 3, 1), (3, 6, 1), (6, 7, 1)]
    assert group_chunks(4, 2, 1) == [(0, 2, 2), (2, 4, 2)]


def test_grasp_hg_is_the_explicit_hessian_gradient_product():
    net = tiny_net()
    x, y = tiny_data(5)
    weights, theta, _, grad, hessian = exact(net, x, y, 200.0)
    for chunk in (2, 64):  # chunking does not change H g
        g, hg = hessian_gradient_product(net, list(weights), x, y, temperature=200.0, chunk_size=chunk)
        torch.testing.assert_close(flat(g), grad, rtol=1e-9, atol=0)
        torch.testing.assert_close(flat(hg), hessian @ grad, rtol=1e-8, atol=1e-12 * float(hessian.abs().max()))
    scores = GraSP(chunk_size=2, hessian_params="prunable_classifier").score(net, x, y)  # the set exact() uses
    torch.testing.assert_close(flat(scores), theta * (hessian @ grad), rtol=1e-8, atol=1e-20)


def test_grasp_keeps_what_the_grasp_paper_keeps():
    """The paper removes the largest S = −θ ⊙ Hg; `prune.invert` keeps them (the reference code's choice)."""
    net = tiny_net()
    x, y = tiny_data(5)
    weights, theta, _, grad, hessian = exact(net, x, y, 200.0)
    s = -theta * (hessian @ grad)
    names = list(weights)
    scores = GraSP(hessian_params="prunable_classifier").score(net, x, y)
    k = kept_count(s.numel(), 0.7)
    paper = flat(select_masks(scores, names, 0.7))
    assert torch.equal(paper.nonzero().flatten().sort().values, torch.argsort(s)[:k].sort().values)
    reference = flat(select_masks(scores, names, 0.7, invert=True))
    assert torch.equal(reference.nonzero().flatten().sort().values, torch.argsort(s, descending=True)[:k].sort().values)
