"""Which parameters the Hessian products run over (`pruner.hessian_params`), the reference code's GraSP, and
every criterion with a temperature knob at T = 3, all against brute force: exact per-sample Hessians
(torch.func.hessian over the flattened parameter set), explicit Jacobians, and plain `.backward()` gradients of
a small BN CNN in eval mode with non-trivial running statistics, in float64."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from test_criteria_common import make_criterion, one_thread, pruner_cfg  # noqa: F401 (autouse fixture)
from torch import Tensor, nn
from torch.func import functional_call, hessian, jacrev

from pai.errors import PaiConfigError
from pai.pruning.criteria.base import HESSIAN_PARAMS, Criterion, hessian_parameters
from pai.pruning.estimators import RademacherProbes, ggn_diagonal, gradient_moments, mc_labels
from pai.pruning.mask_calculator import kept_count, select_masks
from pai.run import run

N, CLASSES = 4, 3
HESSIAN_CRITERIA = ["grasp", "grasp_reference", "hutch_diag", "hutch_pruning", "hts"]


class BNNet(nn.Module):
    """Conv (no bias) + BN + tanh, strided conv (bias) + BN + ReLU, mean pool, hidden Linear + tanh, classifier:
    223 parameters, 197 of them Conv/Linear weights; BN γ/β and biases are what `all` adds."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(4)
        self.fc1 = nn.Linear(4, 5)
        self.fc = nn.Linear(5, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.tanh(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out))).mean((2, 3))
        return self.fc(torch.tanh(self.fc1(out)))


@functools.cache
def _net() -> BNNet:
    torch.manual_seed(0)
    net = BNNet().double().eval()
    with torch.no_grad():
        for bn in (net.bn1, net.bn2):  # eval-mode BN that is not the identity
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.3, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
    return net


def net() -> BNNet:
    return _net()


@functools.cache
def data() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(N, 2, 4, 4, generator=g, dtype=torch.float64), torch.randint(0, CLASSES, (N,), generator=g)


def scored() -> list[str]:
    return list(Criterion.weights(net()))


def flat(d: dict[str, Tensor], names: list[str]) -> Tensor:
    return torch.cat([d[n].flatten() for n in names])


def unflat(v: Tensor, names: list[str]) -> dict[str, Tensor]:
    params = dict(net().named_parameters())
    out, start = {}, 0
    for n in names:
        out[n] = v[start:start + params[n].numel()].view_as(params[n])
        start += params[n].numel()
    return out


def logits_of(names: list[str]):
    """logits(flat parameters of `names`, x): the net with those parameters replaced, all else as it is."""
    def logits(v: Tensor, x: Tensor) -> Tensor:
        return functional_call(net(), unflat(v, names), (x,))
    return logits


def theta(names: list[str]) -> Tensor:
    params = dict(net().named_parameters())
    return torch.cat([params[n].detach().flatten() for n in names])


@functools.cache
def exact(which: str, temperature: float) -> tuple[list[str], Tensor, Tensor]:
    """(names, mean-loss gradient (P,), per-sample Hessians (N, P, P)) over the `which` parameter set."""
    names = hessian_parameters(net(), which)
    logits, v0 = logits_of(names), theta(names)
    x, y = data()

    def loss(v, xb, yb):
        return F.cross_entropy(logits(v, xb) / temperature, yb)

    per_sample = torch.stack([hessian(loss)(v0, x[i:i + 1], y[i:i + 1]) for i in range(N)])
    grad = torch.func.grad(loss)(v0, x, y)
    return names, grad.detach(), per_sample.detach()  # the module's own parameters are leaves of the graph


def restrict(v: Tensor, names: list[str], keep: list[str]) -> dict[str, Tensor]:
    d = unflat(v, names)
    return {n: d[n] for n in keep if n in d}


def close(got: dict[str, Tensor], want: dict[str, Tensor], rtol: float = 1e-9) -> None:
    assert got.keys() == want.keys()
    g, w = flat(got, list(want)), flat(want, list(want))
    torch.testing.assert_close(g, w, rtol=rtol, atol=rtol * float(w.abs().max()))


def differ(a: dict[str, Tensor], b: dict[str, Tensor], by: float = 1e-3) -> bool:
    keys = [n for n in a if n in b]
    fa, fb = flat(a, keys), flat(b, keys)
    return float((fa - fb).abs().max()) > by * float(fb.abs().max())


# ---- the parameter sets ----------------------------------------------------------------------------------------

def test_the_sets_and_their_default():
    params = [n for n, _ in net().named_parameters()]
    assert hessian_parameters(net(), "all") == params  # every trainable parameter, in the model's order
    assert hessian_parameters(net(), "prunable_classifier") == ["conv1.weight", "conv2.weight", "fc1.weight",
                                                               "fc.weight"]
    assert hessian_parameters(net(), "prunable") == ["conv1.weight", "conv2.weight", "fc1.weight"]
    frozen = BNNet()
    frozen.bn1.weight.requires_grad_(False)
    frozen.conv2.weight.requires_grad_(False)  # a scored weight stays in the set: it needs its derivative
    got = hessian_parameters(frozen, "all")
    assert "bn1.weight" not in got and "conv2.weight" in got and "bn1.bias" in got
    for code in HESSIAN_CRITERIA:
        crit = make_criterion(code)
        assert crit.hessian_params == "all" and crit.knobs()["hessian_params"] == "all"  # the score-cache key
        with pytest.raises(PaiConfigError, match="pruner.hessian_params"):
            type(crit)(hessian_params="bn")
    assert set(HESSIAN_PARAMS) == {"all", "prunable", "prunable_classifier"}


def test_prunable_set_with_a_pruned_classifier_fails_before_any_work(tmp_path):
    from hydra import compose, initialize_config_dir

    root = Path(__file__).resolve().parents[1]
    with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["dataset=synthetic", "logger=none", f"out_root={tmp_path}", "pruner=hts",
                                           "pruner.hessian_params=prunable", "prune.prune_classifier=true"])
    with pytest.raises(PaiConfigError, match="pruner.hessian_params=prunable"):
        run(cfg)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("which", HESSIAN_PARAMS)
def test_grasp_is_the_exact_hessian_gradient_product_over_each_set(which):
    x, y = data()
    names, grad, per_sample = exact(which, 200.0)
    want = restrict(theta(names) * (per_sample.mean(0) @ grad), names, scored())
    close(make_criterion("grasp", hessian_params=which, chunk_size=3).score(net(), x, y), want)
    if which != "all":  # the set is arithmetic, not noise: GraSP over conv/Linear weights is another score
        all_names, all_grad, all_h = exact("all", 200.0)
        assert differ(want, restrict(theta(all_names) * (all_h.mean(0) @ all_grad), all_names, scored()), 1e-2)


def test_default_grasp_equals_the_all_parameter_product_and_the_reference_keeps_its_opposite():
    x, y = data()
    names, grad, per_sample = exact("all", 200.0)
    close(make_criterion("grasp").score(net(), x, y), restrict(theta(names) * (per_sample.mean(0) @ grad),
                                                                 names, scored()))
    names, grad, per_sample = exact("all", 1.0)  # the reference code: T = 1, every parameter, keep −θ ⊙ Hg
    s = -theta(names) * (per_sample.mean(0) @ grad)
    ref = make_criterion("grasp_reference")
    assert (ref.name, ref.temperature, ref.hessian_params) == ("grasp_reference", 1.0, "all")
    scores = ref.score(net(), x, y)
    close(scores, restrict(s, names, scored()))
    sel = scored()[:-1]  # the classifier is not pruned
    kept = flat(select_masks(scores, sel, 0.7), sel)
    s_sel = flat(restrict(s, names, sel), sel)
    top = torch.argsort(s_sel, descending=True)[:kept_count(s_sel.numel(), 0.7)]
    assert torch.equal(kept.nonzero().flatten().sort().values, top.sort().values)


def hutchinson_same_probes(which: str, temperature: float, num_probes: int, seed: int) -> dict[str, Tensor]:
    """Σ over samples i and probes z (drawn as pai draws them: per group, over the whole set) of z ⊙ (H_i z) / NK,
    with H_i the exact per-sample Hessian over the set; restricted to the scored weights."""
    names, _, per_sample = exact(which, temperature)
    params = dict(net().named_parameters())
    probes = RademacherProbes({n: params[n].detach() for n in names}, num_probes, seed)
    est = torch.zeros(len(theta(names)), dtype=torch.float64)
    for i in range(N):
        z = torch.cat([t.flatten(1) for t in probes.draw().values()], dim=1)  # (K, P)
        est += (z * (z @ per_sample[i])).sum(0)  # H_i is symmetric
    return restrict(est / (N * num_probes), names, scored())


@pytest.mark.parametrize("which", HESSIAN_PARAMS)
def test_hutchinson_probes_run_over_the_whole_set(which):
    """The estimate is z ⊙ (H z) with z over every parameter of the set: exact against the full Hessian of that
    set with the same probes, on every path."""
    x, y = data()
    want = hutchinson_same_probes(which, 200.0, 3, 7)
    for path in ("loop", "vmap", "fast"):
        got = make_criterion("hutch_diag", hessian_params=which, num_probes=3, seed=7, path=path).score(net(), x, y)
        close(got, want)


@pytest.mark.parametrize("which", HESSIAN_PARAMS)
def test_hutchinson_expectation_is_the_diagonal_whatever_the_set_but_its_noise_is_not(which):
    """Every entry within 5σ of the exact diagonal, σ_j² = Σ_i Σ_{l≠j} (H_i)_jl² / (N² K) over the set's
    off-diagonal entries; and the set with BN γ/β and biases has the larger σ on the conv weights."""
    x, y = data()
    k, temperature = 400, 5.0
    names, _, per_sample = exact(which, temperature)
    diag = torch.diagonal(per_sample, dim1=1, dim2=2)
    sigma = ((per_sample.square().sum(2) - diag.square()).sum(0) / (N**2 * k)).sqrt()
    got = make_criterion("hutch_diag", hessian_params=which, num_probes=k, seed=1, temperature=temperature,
                         chunk_size=4).score(net(), x, y)
    keep = [n for n in scored() if n in got]
    err = (flat(got, keep) - flat(restrict(diag.mean(0), names, keep), keep)).abs()
    sig = flat(restrict(sigma, names, keep), keep)
    assert (err <= 5 * sig + 1e-12).all(), float((err / sig).max())
    if which == "all":
        small_names, _, small = exact("prunable", temperature)
        small_sigma = (small.square().sum(2) - torch.diagonal(small, dim1=1, dim2=2).square()).sum(0)
        conv = ["conv1.weight", "conv2.weight"]
        big = flat(restrict(sigma.square() * N**2 * k, names, conv), conv)
        less = flat(restrict(small_sigma, small_names, conv), conv)
        assert (big >= less - 1e-12).all() and (big > 1.5 * less).any()


@pytest.mark.parametrize("code", ["grad_norm", "snip", "fisher_diag", "fisher_pruner", "fts", "ggn_diag", "obd",
                                  "ggn_taylor", "fisher_mc"])
def test_diagonal_criteria_do_not_depend_on_the_differentiated_set(code):
    """Their entries of a weight come from derivatives with respect to that weight alone: differentiating BN γ/β
    and biases as well (`all`) leaves the Conv/Linear weights' g, F and GGN diagonal unchanged on every path,
    and freezing those parameters does not change the scores either."""
    x, y = data()
    small, every = hessian_parameters(net(), "prunable_classifier"), hessian_parameters(net(), "all")
    if code in ("ggn_diag", "obd", "ggn_taylor", "fisher_mc"):
        kw = {"num_samples": 2, "seed": 3} if code == "fisher_mc" else {}
        for path in ("loop", "vmap", "fast"):
            a = ggn_diagonal(net(), small, x, y, temperature=3.0, path=path, **kw)
            b = ggn_diagonal(net(), every, x, y, temperature=3.0, path=path, **kw)
            close({n: b[n] for n in small}, a, 1e-12)
    else:
        for path in ("loop", "vmap", "fast"):
            a = gradient_moments(net(), small, x, y, temperature=3.0, path=path)
            b = gradient_moments(net(), every, x, y, temperature=3.0, path=path)
            for i in (0, 1):
                close({n: b[i][n] for n in small}, a[i], 1e-12)
    frozen = BNNet().double().eval()
    frozen.load_state_dict(net().state_dict())
    for n, p in frozen.named_parameters():
        p.requires_grad_(n in small)
    close(make_criterion(code).score(frozen, x, y), make_criterion(code).score(net(), x, y), 0.0)


# ---- every temperature knob at T = 3 ---------------------------------------------------------------------------

@functools.cache
def per_sample_grads(temperature: float) -> list[dict[str, Tensor]]:
    """Each sample's gradient of CE(logits / T) by a plain `.backward()` on the module."""
    model, (x, y) = net(), data()
    out = []
    for i in range(N):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[i:i + 1]) / temperature, y[i:i + 1]).backward()
        out.append({n: model.get_parameter(n).grad.clone() for n in scored()})
    model.zero_grad(set_to_none=True)
    return out


def ggn_brute_force(temperature: float, labels: Tensor | None = None) -> dict[str, Tensor]:
    """Mean over samples of Jᵀ A J's diagonal, A = (diag p − p pᵀ) / T², from explicit Jacobians J (C × P);
    with `labels` (N, S) the true-Fisher estimate: the mean squared gradient of CE(z / T, ŷ) over the draws."""
    names, (x, _) = scored(), data()
    logits, v0 = logits_of(names), theta(names)
    out = torch.zeros_like(v0)
    for i in range(N):
        jac = jacrev(lambda v, i=i: logits(v, x[i:i + 1])[0])(v0)
        p = torch.softmax(logits(v0, x[i:i + 1])[0] / temperature, 0)
        if labels is None:
            out += torch.einsum("cp,cd,dp->p", jac, (torch.diag(p) - torch.outer(p, p)) / temperature**2, jac)
        else:
            for c in labels[i]:
                out += ((p - F.one_hot(c, CLASSES).to(p)) @ jac / temperature).square() / labels.shape[1]
    return unflat(out.detach() / N, names)


def reference(code: str, temperature: float) -> dict[str, Tensor]:
    """The brute-force score of `code` at T (its yaml's other knobs; Hutchinson with 3 probes, seed 4)."""
    th = {n: net().get_parameter(n).detach() for n in scored()}
    grads = per_sample_grads(temperature)
    g = {n: sum(s[n] for s in grads) / N for n in th}
    fisher = {n: sum(s[n].square() for s in grads) / N for n in th}

    def obd(d):
        return {n: 0.5 * th[n].square() * d[n] for n in th}

    def taylor(d):
        return {n: (th[n] * g[n] + 0.5 * th[n].square() * d[n]).abs() for n in th}

    if code in ("grasp", "grasp_reference"):
        names, grad, per_sample = exact("all", temperature)
        sign = 1.0 if code == "grasp" else -1.0
        return restrict(sign * theta(names) * (per_sample.mean(0) @ grad), names, scored())
    if code in ("hutch_diag", "hutch_pruning", "hts"):
        h = hutchinson_same_probes("all", temperature, 3, 4)
        return {"hutch_diag": h, "hutch_pruning": obd(h), "hts": taylor(h)}[code]
    if code == "fisher_mc":
        x, _ = data()
        with torch.no_grad():
            probs = torch.softmax(net()(x) / temperature, 1)
        return ggn_brute_force(temperature, mc_labels(probs, 2, 3))
    if code in ("ggn_diag", "obd", "ggn_taylor"):
        d = ggn_brute_force(temperature)
        return {"ggn_diag": d, "obd": obd(d), "ggn_taylor": taylor(d)}[code]
    return {"grad_norm": {n: g[n].abs() for n in th}, "snip": {n: (th[n] * g[n]).abs() for n in th},
            "fisher_diag": fisher, "fisher_pruner": obd(fisher), "fts": taylor(fisher)}[code]


TEMPERATURE_CRITERIA = ["grad_norm", "snip", "fisher_diag", "fisher_pruner", "fts", "grasp", "grasp_reference",
                        "hutch_diag", "hutch_pruning", "hts", "ggn_diag", "obd", "ggn_taylor", "fisher_mc"]


def test_every_criterion_with_a_temperature_is_listed():
    """A new pruner with a `temperature` knob must join TEMPERATURE_CRITERIA (so it is tested at T = 3)."""
    root = Path(__file__).resolve().parents[1] / "conf" / "pruner"
    with_t = {p.stem for p in root.glob("*.yaml") if "temperature" in instantiate(pruner_cfg(p.stem).pruner).knobs()}
    assert with_t == set(TEMPERATURE_CRITERIA)


@pytest.mark.parametrize("code", TEMPERATURE_CRITERIA)
def test_temperature_three_against_brute_force(code):
    x, y = data()
    want = reference(code, 3.0)
    assert differ(want, reference(code, 1.0), 1e-2), "T = 3 and T = 1 must give different references here"
    knobs = {"num_probes": 3, "seed": 4} if code in ("hutch_diag", "hutch_pruning", "hts") else {}
    knobs |= {"num_samples": 2, "seed": 3} if code == "fisher_mc" else {}
    crit = make_criterion(code, temperature=3, **knobs)
    close(crit.score(net(), x, y), want)
    if "loop" in getattr(crit, "paths", ()):  # the batch-1 oracle too
        close(make_criterion(code, temperature=3, path="loop", **knobs).score(net(), x, y), want)
