"""The data-dependent criteria: fast paths equal the batch-1 loop, the model is left as found, the yamls carry
the paper's knobs, and the score definitions hold on explicit formulas."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from test_criteria_common import (
    ALL_SCORING,
    FAMILY,
    GAUSS_NEWTON,
    HUTCHINSON,
    PER_SAMPLE,
    TEN,
    TiedNet,
    assert_untouched,
    batch,
    make_criterion,
    one_thread,  # noqa: F401 (autouse fixture)
    pruner_cfg,
    rel_close,
    small_net,
    snapshot,
)
from torch import nn

from pai.errors import PaiConfigError
from pai.pruning.criteria.base import Criterion
from pai.pruning.criteria.hutchinson import HutchDiag
from pai.pruning.estimators.paths import MEAN_GRADIENT_PATHS, SQUARED_GRADIENT_PATHS
from pai.pruning.estimators.per_sample import gradient_moments
from pai.pruning.mask_calculator import kept_count
from pai.pruning.masks import prunable_weights
from pai.pruning.pipeline import prune_masks

# every path of each per-sample family but the loop it is compared against
FAST_PATHS = {code: [p for p in (MEAN_GRADIENT_PATHS if FAMILY[code] == "first_order" else SQUARED_GRADIENT_PATHS)
                     if p != "loop"] for code in PER_SAMPLE}


@pytest.mark.parametrize("batch_size", [1, 2, 5])
@pytest.mark.parametrize("code", PER_SAMPLE)
def test_fast_paths_equal_the_loop(code, batch_size):
    net = small_net()
    x, y = batch(7 if batch_size < 5 else 13)  # the last mask batch is short for 2 and 5
    loop = make_criterion(code, path="loop", score_batch_size=batch_size).score(net, x, y)
    for path in FAST_PATHS[code]:
        fast = make_criterion(code, path=path, chunk_size=2, score_batch_size=batch_size).score(net, x, y)
        rel_close(fast, loop, 1e-5)


@pytest.mark.parametrize("code", ["fisher_diag", "fts"])
def test_fast_equals_loop_in_float32(code):
    net = small_net(dtype=torch.float32)
    x, y = batch(10, dtype=torch.float32)
    loop = make_criterion(code, path="loop").score(net, x, y)
    rel_close(make_criterion(code).score(net, x, y), loop, 1e-4)


def test_hutchinson_fast_equals_loop_with_the_same_probes():
    net = small_net()
    x, y = batch(7)
    for code in HUTCHINSON:
        loop = make_criterion(code, path="loop", num_probes=3).score(net, x, y)
        fast = make_criterion(code, num_probes=3, chunk_size=3).score(net, x, y)
        rel_close(fast, loop, 1e-8)


def test_definitions():
    """The scores against their formulas, from g and F computed by hand with one autograd call per sample."""
    net = small_net()
    x, y = batch(6)
    theta = {n: w.detach() for n, w in Criterion.weights(net).items()}
    per_sample = []
    for i in range(6):
        net.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net.eval()(x[i : i + 1]), y[i : i + 1]).backward()
        per_sample.append({n: net.get_parameter(n).grad.clone() for n in theta})
    net.zero_grad(set_to_none=True)
    g = {n: sum(p[n] for p in per_sample) / 6 for n in theta}
    fisher = {n: sum(p[n] ** 2 for p in per_sample) / 6 for n in theta}
    expected = {
        "grad_norm": {n: g[n].abs() for n in theta},
        "snip": {n: (theta[n] * g[n]).abs() for n in theta},
        "fisher_diag": fisher,
        "fisher_pruner": {n: 0.5 * theta[n] ** 2 * fisher[n] for n in theta},
        "fts": {n: (theta[n] * g[n] + 0.5 * theta[n] ** 2 * fisher[n]).abs() for n in theta},
    }
    for code, want in expected.items():
        rel_close(make_criterion(code).score(net, x, y), want, 1e-10)


@pytest.mark.parametrize("code", ALL_SCORING)
def test_scoring_leaves_the_model_untouched(code):
    net = small_net().train()  # train mode, a frozen parameter and a stale .grad: all must survive scoring
    net.fc1.bias.requires_grad_(False)
    net.conv1.weight.grad = torch.ones_like(net.conv1.weight)
    net.bn1.eval()
    before = snapshot(net)
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(m.training)) for m in (net.bn1, net.bn2, net.drop)]
    x, y = batch(6)
    scores = make_criterion(code, **({"num_probes": 2} if code in HUTCHINSON else {})).score(net, x, y)
    for h in hooks:
        h.remove()
    assert_untouched(net, before)
    if code not in ("magnitude", "random"):  # the data-free ones need no forward pass
        assert seen and not any(seen), "scoring must run in eval mode (BN running statistics, no dropout)"
    assert scores.keys() == Criterion.weights(net).keys()
    for n, s in scores.items():
        assert s.shape == net.get_parameter(n).shape and not s.requires_grad and torch.isfinite(s).all()


def test_yaml_knobs_follow_the_paper():
    expected_t = {"grad_norm": 1, "snip": 1, "fisher_diag": 1, "fisher_pruner": 1, "fts": 1, "hutch_diag": 200,
                  "hutch_pruning": 200, "hts": 200, "grasp": 200, "ggn_diag": 200, "obd": 200, "ggn_taylor": 200,
                  "fisher_mc": 200}
    for code in TEN + GAUSS_NEWTON:
        crit = instantiate(pruner_cfg(code, ("seed=7", "prune.score_batch_size=3")).pruner)
        assert crit.name == code
        assert pruner_cfg(code).pruner._target_.startswith("pai.pruning.criteria.")
        if code in expected_t:
            assert crit.temperature == expected_t[code]
        if code in PER_SAMPLE + HUTCHINSON + GAUSS_NEWTON:
            assert crit.score_batch_size == 3 and crit.path == "fast"
        if code in HUTCHINSON:
            assert crit.num_probes == 10 and crit.seed == 7
        if code == "fisher_mc":
            assert crit.num_samples == 1 and crit.seed == 7
    assert make_criterion("synflow").default_rounds == 100 and make_criterion("synflow").data_free
    assert all(make_criterion(c).default_rounds == 1 for c in TEN + GAUSS_NEWTON if c != "synflow")


def test_bad_path_is_a_config_error():
    with pytest.raises(PaiConfigError, match="hutch_diag"):
        HutchDiag(path="hooks")


def test_hooks_fall_back_when_a_weight_is_used_outside_its_module():
    torch.manual_seed(0)
    net = TiedNet().double()
    x, y = batch(5)
    names = list(Criterion.weights(net))
    ref = gradient_moments(net, names, x, y, path="loop")
    with pytest.raises(RuntimeError, match="fc.weight"):
        gradient_moments(net, names, x, y, path="hooks")
    fast = gradient_moments(net, names, x, y, path="fast")
    rel_close(fast[1], ref[1], 1e-10)


def test_hooks_fall_back_when_a_layer_output_is_modified_in_place():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3), nn.ReLU(inplace=True),
                        nn.Flatten(), nn.LazyLinear(3)).double()
    x, y = batch(5, classes=3)
    net(x)
    names = list(Criterion.weights(net))
    ref = gradient_moments(net, names, x, y, path="loop")
    with pytest.raises(RuntimeError, match="differs from autograd"):
        gradient_moments(net, names, x, y, path="hooks")
    rel_close(gradient_moments(net, names, x, y)[1], ref[1], 1e-10)


def test_batch_statistics_bn_uses_a_per_group_path():
    """BN without running statistics couples the samples of a batch: fast must still equal the loop."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.Flatten(),
                        nn.LazyLinear(3)).double()
    x, y = batch(6, classes=3)
    net(x)
    names = list(Criterion.weights(net))
    ref = gradient_moments(net, names, x, y, batch_size=2, path="loop")
    rel_close(gradient_moments(net, names, x, y, batch_size=2)[1], ref[1], 1e-8)
    rel_close(gradient_moments(net, names, x, y, batch_size=2, squares=False)[0], ref[0], 1e-8)


@pytest.mark.parametrize("conv", [
    nn.Conv2d(3, 6, 3, stride=2, padding=2, dilation=2, groups=3, padding_mode="reflect"),
    nn.Conv2d(3, 4, (3, 1), padding="same", padding_mode="circular"),
    nn.Conv2d(3, 4, 2, stride=(1, 2), padding="valid"),
])
def test_hook_gradients_for_conv_variants(conv):
    net = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.LazyLinear(4)).double()
    x, y = batch(7, size=7)
    net(x)
    names = list(Criterion.weights(net))
    for b in (1, 3):
        ref = gradient_moments(net, names, x, y, batch_size=b, path="loop")
        got = gradient_moments(net, names, x, y, batch_size=b, path="hooks", chunk_size=2)
        rel_close(got[0], ref[0], 1e-10)
        rel_close(got[1], ref[1], 1e-10)


CONV_FORMS = [
    nn.Conv2d(3, 5, 3, padding=1),
    nn.Conv2d(3, 5, 3, stride=2, padding=1, bias=False),
    nn.Conv2d(3, 5, 1, stride=2),
    nn.Conv2d(3, 4, (3, 2), stride=(2, 3), padding=(2, 1), dilation=(2, 1), padding_mode="reflect"),
    nn.Conv2d(3, 4, (3, 1), padding="same", padding_mode="circular"),
    nn.Conv2d(3, 4, 2, padding="same"),  # asymmetric padding
    nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2),
    nn.Conv1d(3, 4, 5, stride=2, padding=2, dilation=2),
    nn.Conv3d(2, 3, 3, stride=(1, 2, 2), padding=1),
]


@pytest.mark.parametrize("conv", CONV_FORMS, ids=repr)
def test_every_conv_form_gives_the_per_sample_gradients(conv):
    """The grouped-convolution, shifted-slice and patch forms of a layer's per-group weight gradients against
    autograd, one group at a time, for groups of 1 and 2 samples (the shifted form: 1 sample, groups=1)."""
    from pai.pruning.estimators.hook_grads import Scratch, grouped_grads, patch_grads, shifted_grads

    conv = conv.double()
    nd = conv.weight.dim() - 2
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, conv.in_channels, *([9] * nd), generator=g, dtype=torch.float64)
    d = torch.randn(conv(a).shape, generator=g, dtype=torch.float64)
    for b in (1, 2):
        want = torch.stack([torch.autograd.grad((conv(a[i:i + b]) * d[i:i + b]).sum(), conv.weight)[0]
                            for i in range(0, 6, b)])
        forms = {"grouped": grouped_grads(conv, a, d, 6 // b, b), "patches": patch_grads(conv, a, d, 6 // b, b,
                                                                                         Scratch())}
        if b == 1 and conv.groups == 1:
            forms["shifted"] = shifted_grads(conv, a, d, Scratch())
        for form, got in forms.items():
            torch.testing.assert_close(got.reduce(got.values), want.sum(0), rtol=1e-10, atol=1e-12, msg=form)
            torch.testing.assert_close(got.reduce(got.values.square_()), want.square().sum(0), rtol=1e-10,
                                       atol=1e-12, msg=form)


@pytest.mark.parametrize("form", ["grouped", "shifted", "patches"])
def test_hooks_equal_the_loop_whichever_conv_form_the_layers_take(form, monkeypatch):
    """The layer-shape rule picks a form per layer (tiny layers: grouped); here every layer takes the form
    under test where it can, through the whole hooks path (sums, squares, layouts, groups of 1 and 3)."""
    import pai.pruning.estimators.hook_grads as hook_grads

    monkeypatch.setattr(hook_grads, "MAX_GROUPED_WEIGHTS", 10**9 if form == "grouped" else 0)
    monkeypatch.setattr(hook_grads, "MAX_SHIFT_WASTE", float("inf") if form == "shifted" else 0.0)
    net = small_net()
    x, y = batch(7)
    names = list(Criterion.weights(net))
    for b in (1, 3):
        ref = gradient_moments(net, names, x, y, batch_size=b, path="loop")
        got = gradient_moments(net, names, x, y, batch_size=b, path="hooks", chunk_size=2)
        rel_close(got[0], ref[0], 1e-10)
        rel_close(got[1], ref[1], 1e-10)
        squares_only = gradient_moments(net, names, x, y, batch_size=b, path="hooks", chunk_size=2, mean=False)
        assert squares_only[0] is None
        rel_close(squares_only[1], ref[1], 1e-10)


def test_hook_gradients_for_conv1d_and_sequence_linear():
    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(3, 5, 3, padding=1)
            self.proj = nn.Linear(5, 6)
            self.head = nn.Linear(6, 4)

        def forward(self, x):
            h = self.proj(self.conv(x.flatten(2)).transpose(1, 2))  # Linear on (N, T, C)
            return self.head(torch.tanh(h).mean(1))

    torch.manual_seed(0)
    net = Seq().double()
    x, y = batch(6)
    names = list(Criterion.weights(net))
    ref = gradient_moments(net, names, x, y, path="loop")
    got = gradient_moments(net, names, x, y, path="hooks")
    rel_close(got[1], ref[1], 1e-10)


@pytest.mark.parametrize("schedule", ["exponential", "linear"])
@pytest.mark.parametrize("code", ALL_SCORING)
def test_rounds_and_schedules_work_for_every_criterion(code, schedule):
    net = small_net()
    x, y = batch(4)
    names = list(prunable_weights(net))
    before = snapshot(net)
    crit = make_criterion(code, **({"num_probes": 2} if code in HUTCHINSON else {}))
    masks = prune_masks(crit, net, x, y, names, 0.8, rounds=3, schedule=schedule)
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == kept_count(total, 0.8)
    assert_untouched(net, before)


def test_rounds_rescore_the_masked_network():
    """Each round scores a copy with the previous round's pruned weights at zero; those stay pruned."""
    seen = []

    class Spy(Criterion):
        name = "spy"

        def score(self, model, inputs, targets):
            weights = self.weights(model)
            seen.append({n: w.detach().clone() for n, w in weights.items()})
            return {n: w.detach().abs() + torch.rand(w.shape, dtype=w.dtype) for n, w in weights.items()}

    net = small_net()
    names = list(prunable_weights(net))
    final = prune_masks(Spy(), net, *batch(2), names, 0.9, rounds=3, schedule="linear")
    assert len(seen) == 3
    for earlier, later in zip(seen, seen[1:], strict=False):
        newly_zero = {n: (later[n] == 0) & (earlier[n] != 0) for n in names}
        assert sum(int(z.sum()) for z in newly_zero.values()) > 0
    for n in names:
        assert not final[n][seen[2][n] == 0].any()  # pruned in an earlier round: still pruned
