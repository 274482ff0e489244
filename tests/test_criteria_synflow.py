"""SynFlow: float64 keeps deep nets finite, pruned weights drop out of R, the default 100 exponential rounds."""

from __future__ import annotations

import time

import pytest
import torch
from test_criteria_common import one_thread  # noqa: F401 (autouse fixture)
from torch import nn

from pai.models.cifar_resnet import resnet50
from pai.models.he_resnet import resnet20
from pai.pruning.criteria.synflow import SynFlow
from pai.pruning.mask_calculator import kept_count, make_masks
from pai.pruning.masks import apply_masks, collapsed_layers, prunable_weights
from pai.pruning.pipeline import prune_masks


def deep_mlp(depth: int = 80) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Flatten(), nn.Linear(12, 64)]
    for _ in range(depth):
        layers += [nn.Linear(64, 64), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(64, 10))


def test_float64_keeps_a_deep_net_finite():
    net = deep_mlp()
    x = torch.zeros(2, 3, 2, 2)
    with torch.no_grad():  # what float32 would give: R = Π |W| 1 overflows
        r32 = nn.Sequential(*[m for m in net]).float()
        abs_net = type(r32)(*[m for m in r32])
        out = torch.ones(1, 3, 2, 2)
        for m in abs_net:
            out = nn.functional.linear(out, m.weight.abs(), m.bias.abs()) if isinstance(m, nn.Linear) else m(out)
        assert not torch.isfinite(out.sum())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    scores = SynFlow().score(net, x, None)
    assert all(s.dtype == torch.float64 and torch.isfinite(s).all() and (s > 0).any() for s in scores.values())
    assert max(float(s.max()) for s in scores.values()) > 1e38  # beyond float32
    assert all(torch.equal(v, net.state_dict()[k]) and v.dtype == torch.float32 for k, v in before.items())


def test_pruned_weights_drop_out_of_r():
    torch.manual_seed(0)
    net = resnet20(10, width=0.25)
    masks = make_masks({n: torch.rand(w.shape) for n, w in prunable_weights(net).items()}, 0.5)
    apply_masks(net, masks)
    scores = SynFlow().score(net, torch.zeros(1, 3, 8, 8), None)
    for n, m in masks.items():
        assert (scores[n][~m] == 0).all() and (scores[n][m] > 0).any()


def check_synflow_masks(net: nn.Module, size: int, sparsity: float = 0.9) -> dict:
    names = list(prunable_weights(net))
    masks = prune_masks(SynFlow(), net, torch.zeros(1, 3, size, size), torch.zeros(1, dtype=torch.long), names,
                        sparsity, rounds=SynFlow.default_rounds)  # 100 rounds, exponential schedule
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == kept_count(total, sparsity)
    assert collapsed_layers(masks) == []
    return masks


def test_default_rounds_keep_every_layer_of_a_plain_chain():
    """Without shortcuts a fully pruned layer would cut every input-output path, which SynFlow's iterative
    conservation prevents (at 0.98 here). A ResNet may lose whole residual branches (the shortcut still
    carries the flow): narrow ResNet-20s do at 0.9."""
    torch.manual_seed(0)
    assert SynFlow.default_rounds == 100
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                        nn.Conv2d(32, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    check_synflow_masks(net, 8, sparsity=0.98)


@pytest.mark.slow
def test_resnet50_is_finite_and_keeps_every_path_at_sparsity_0_9():
    """100 rounds of a float64 forward/backward of ResNet-50 at 32 px, batch 1: about 20 min on the 2-core CPU
    this was written on (per round ~5-7 s forward/backward plus ~3-7 s for the global top-k over 23.5M weights).

    Measured: scores finite; every layer keeps weights except the four 1x1 projection shortcuts
    (layer{1,2,3,4}.0.shortcut.0), which SynFlow empties: their flow is orders of magnitude below that of the
    three-conv bottleneck branch beside them, so the network stays connected through the branch. (The SynFlow
    authors' code does not prune residual connections by default; here every conv is prunable.)
    """
    torch.manual_seed(0)
    net = resnet50(10)
    t0 = time.perf_counter()
    scores = SynFlow().score(net, torch.zeros(1, 3, 32, 32), None)
    assert all(torch.isfinite(s).all() for s in scores.values())
    names = list(prunable_weights(net))
    masks = prune_masks(SynFlow(), net, torch.zeros(1, 3, 32, 32), None, names, 0.9,
                        rounds=SynFlow.default_rounds)
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == kept_count(total, 0.9)
    shortcuts = {n for n in names if ".shortcut." in n}
    assert set(collapsed_layers(masks)) <= shortcuts
    assert all(masks[n].any() for n in names if n not in shortcuts)
    print(f"ResNet-50 SynFlow, 100 rounds: {time.perf_counter() - t0:.0f} s; collapsed {collapsed_layers(masks)}")
