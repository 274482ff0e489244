"""The Gauss–Newton criteria: ggn_diag is the brute-force Hessian diagonal of a ReLU net with eval-mode BN (and
only the GGN, not H_d, of a GELU/LayerNorm net), fisher_mc converges to it, every path equals the batch-1 loop,
and obd/ggn_taylor follow their formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_criteria_common import (  # noqa: F401
    GAUSS_NEWTON,
    TiedNet,
    batch,
    make_criterion,
    one_thread,
    rel_close,
    small_net,
)
from torch import nn
from torch.func import functional_call

from pai.pruning.criteria.base import Criterion
from pai.pruning.estimators.gauss_newton import ggn_diagonal, mc_labels, sample_weights


def relu_bn_net() -> nn.Module:
    """Conv + eval-mode BN (non-trivial running statistics and affine) + ReLU + max-pool + Linear: piecewise
    linear in every single weight. 3·2·9 + 3·4·4 = 102 weights, float64."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(12, 4)).double().eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.3, 0.3)
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.2, 0.2)
    return net


def gelu_ln_net() -> nn.Module:
    """Linear + LayerNorm + GELU + Linear: curved in single weights (as a ViT block is)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 6), nn.LayerNorm(6), nn.GELU(), nn.Linear(6, 3)).double()


def data(n: int, classes: int = 4, shape: tuple[int, ...] = (2, 4, 4)):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, *shape, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g)


def flat(d: dict) -> torch.Tensor:
    return torch.cat([t.flatten() for t in d.values()])


def brute_force(net: nn.Module, x, y, temperature: float, batch_size: int = 1):
    """(Hessian diagonal, GGN diagonal) of the mean over groups of the group-mean loss, from the full per-sample
    Hessians (torch.autograd.functional.hessian) and explicit Jacobians Jᵀ A J, A = (diag p − p pᵀ) / T²."""
    weights = {n: w.detach() for n, w in Criterion.weights(net).items()}
    sizes, shapes = [w.numel() for w in weights.values()], [w.shape for w in weights.values()]
    flat0 = flat(weights)

    def logits(f, xb):
        parts = {n: p.view(s) for n, p, s in zip(weights, f.split(sizes), shapes, strict=True)}
        return functional_call(net, parts, (xb,))

    w = sample_weights(x.shape[0], batch_size, x)
    h = torch.zeros_like(flat0)
    ggn = torch.zeros_like(flat0)
    for i in range(x.shape[0]):
        xi, yi = x[i:i + 1], y[i:i + 1]
        hess = torch.autograd.functional.hessian(
            lambda f, xi=xi, yi=yi: F.cross_entropy(logits(f, xi) / temperature, yi), flat0)
        jac = torch.autograd.functional.jacobian(lambda f, xi=xi: logits(f, xi)[0], flat0)  # (C, P)
        p = torch.softmax(logits(flat0, xi)[0] / temperature, 0)
        a = (torch.diag(p) - torch.outer(p, p)) / temperature**2
        h += w[i] * torch.diagonal(hess)
        ggn += w[i] * torch.einsum("cp,cd,dp->p", jac, a, jac)
    return h, ggn


@pytest.mark.parametrize("temperature,batch_size", [(1.0, 1), (200.0, 1), (3.0, 2)])
def test_ggn_diag_is_the_exact_hessian_diagonal_of_a_relu_bn_net(temperature, batch_size):
    net = relu_bn_net()
    x, y = data(5)  # with batch_size 2 the last mask batch is short
    hess, ggn = brute_force(net, x, y, temperature, batch_size)
    torch.testing.assert_close(ggn, hess, rtol=1e-5, atol=1e-5 * float(hess.abs().max()))
    for path in ("fast", "vmap", "loop"):
        got = make_criterion("ggn_diag", temperature=temperature, score_batch_size=batch_size, path=path,
                             chunk_size=2).score(net, x, y)
        torch.testing.assert_close(flat(got), hess, rtol=1e-5, atol=1e-5 * float(hess.abs().max()))


def test_on_a_gelu_layernorm_net_ggn_diag_is_the_gauss_newton_diagonal_not_the_hessian_one():
    """The documented limitation: curvature of the network itself (GELU, LayerNorm) is in H_d, not in the GGN."""
    net = gelu_ln_net()
    x, y = data(4, classes=3, shape=(2, 2, 2))
    hess, ggn = brute_force(net, x, y, 1.0)
    for path in ("fast", "vmap", "loop"):
        got = flat(make_criterion("ggn_diag", temperature=1.0, path=path).score(net, x, y))
        torch.testing.assert_close(got, ggn, rtol=1e-8, atol=1e-12)
    assert (ggn - hess).norm() > 0.05 * hess.norm()
    assert (ggn >= 0).all() and (hess < 0).any()  # the GGN is PSD; the Hessian diagonal here is not


def test_fisher_mc_converges_to_ggn_diag():
    net = small_net()
    x, y = batch(4)
    exact = flat(make_criterion("ggn_diag", temperature=1.0).score(net, x, y))
    err = {}
    for s in (16, 4096):
        est = flat(make_criterion("fisher_mc", temperature=1.0, num_samples=s, seed=5).score(net, x, y))
        err[s] = float((est - exact).norm() / exact.norm())
    assert err[4096] < err[16] / 4 and err[4096] < 0.05, err  # expected ratio √256 = 16


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("code", GAUSS_NEWTON)
def test_fast_paths_equal_the_loop(code, batch_size):
    """The loop is batch-1 autograd (for fisher_mc: the cross-entropy with each drawn label); the fast paths use
    one forward per chunk and the GGN factors (for fisher_mc weighted by the draws' frequencies)."""
    net = small_net()
    x, y = batch(7)
    kw = {"num_samples": 3, "seed": 1} if code == "fisher_mc" else {}
    loop = make_criterion(code, path="loop", score_batch_size=batch_size, **kw).score(net, x, y)
    for path in ("fast", "hooks", "vmap"):
        fast = make_criterion(code, path=path, chunk_size=3, score_batch_size=batch_size, **kw).score(net, x, y)
        rel_close(fast, loop, 1e-8)


def test_fisher_mc_with_one_draw_takes_one_backward_per_chunk(monkeypatch):
    """One label per sample: the hooks take one batched backward per chunk (each sample's own label), not one
    per class; and still equal the loop."""
    import pai.pruning.estimators.gauss_newton as gauss_newton

    calls = []
    original = gauss_newton.HookGrads.from_deltas

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(gauss_newton.HookGrads, "from_deltas", counted)
    net = small_net()
    x, y = batch(7)
    fast = make_criterion("fisher_mc", path="hooks", chunk_size=3, seed=2).score(net, x, y)
    assert len(calls) == 4  # chunks: the self-check's first sample, then 2, 3 and 1 samples
    rel_close(fast, make_criterion("fisher_mc", path="loop", seed=2).score(net, x, y), 1e-8)


def test_fast_equals_loop_in_float32():
    net = small_net(dtype=torch.float32)
    x, y = batch(6, dtype=torch.float32)
    rel_close(make_criterion("ggn_diag").score(net, x, y), make_criterion("ggn_diag", path="loop").score(net, x, y),
              1e-4)


def test_obd_and_ggn_taylor_formulas():
    net = small_net()
    x, y = batch(6)
    t = 7.0
    theta = {n: w.detach() for n, w in Criterion.weights(net).items()}
    ggn = make_criterion("ggn_diag", temperature=t).score(net, x, y)
    w = {n: w.detach().requires_grad_() for n, w in theta.items()}
    loss = F.cross_entropy(functional_call(net.eval(), w, (x,)) / t, y)
    g = dict(zip(w, torch.autograd.grad(loss, list(w.values())), strict=True))
    rel_close(make_criterion("obd", temperature=t).score(net, x, y),
              {n: 0.5 * theta[n] ** 2 * ggn[n] for n in theta}, 1e-10)
    rel_close(make_criterion("ggn_taylor", temperature=t).score(net, x, y),
              {n: (theta[n] * g[n] + 0.5 * theta[n] ** 2 * ggn[n]).abs() for n in theta}, 1e-10)


def test_fisher_mc_draws_are_seeded_and_follow_the_probabilities():
    p = torch.tensor([[0.7, 0.2, 0.1, 0.0], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    a, b, c = mc_labels(p, 20000, 0), mc_labels(p, 20000, 0), mc_labels(p, 20000, 1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    freq = F.one_hot(a, 4).double().mean(1)
    torch.testing.assert_close(freq, p, atol=0.015, rtol=0)
    net = small_net()
    x, y = batch(5)
    s0 = make_criterion("fisher_mc", seed=0).score(net, x, y)
    assert not torch.allclose(flat(s0), flat(make_criterion("fisher_mc", seed=1).score(net, x, y)))
    knobs = make_criterion("fisher_mc", seed=3, num_samples=8).knobs()  # the score-cache key
    assert knobs["seed"] == 3 and knobs["num_samples"] == 8 and knobs["temperature"] == 200
    assert "num_samples" not in make_criterion("ggn_diag").knobs()


def test_hooks_fall_back_when_a_weight_is_used_outside_its_module():
    torch.manual_seed(0)
    net = TiedNet().double()
    x, y = batch(5)
    names = list(Criterion.weights(net))
    ref = ggn_diagonal(net, names, x, y, temperature=1.0, path="loop")
    with pytest.raises(RuntimeError, match="fc.weight"):
        ggn_diagonal(net, names, x, y, temperature=1.0, path="hooks")
    rel_close(ggn_diagonal(net, names, x, y, temperature=1.0), ref, 1e-10)


def test_batch_statistics_bn_takes_each_sample_alone():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU(), nn.Flatten(),
                        nn.LazyLinear(3)).double()
    x, y = batch(5, classes=3)
    net(x)
    names = list(Criterion.weights(net))
    ref = ggn_diagonal(net, names, x, y, temperature=1.0, path="loop")
    rel_close(ggn_diagonal(net, names, x, y, temperature=1.0, chunk_size=2), ref, 1e-8)
