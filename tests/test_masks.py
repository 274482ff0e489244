import pytest
import torch
from torch import nn

from pai.errors import PaiConfigError
from pai.pruning import (
    MaskEnforcer,
    achieved_sparsity,
    apply_masks,
    collapsed_layers,
    layer_density,
    make_masks,
    prunable_weights,
)
from pai.pruning.mask_calculator import select_masks
from pai.pruning.sparsity_schedules import schedule_sparsities


class Net(nn.Module):
    """Conv-BN with a 1x1 shortcut conv + BN (the reference code's name matching pruned such BN weights)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.shortcut = nn.Sequential(nn.Conv2d(3, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)) + self.shortcut(x))
        return self.fc(x.mean((2, 3)))


def test_prunable_weights_by_module_type():
    net = Net()
    assert list(prunable_weights(net)) == ["conv.weight", "shortcut.0.weight"]
    assert list(prunable_weights(net, prune_classifier=True)) == ["conv.weight", "shortcut.0.weight", "fc.weight"]


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.987, 0.999])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_exactly_k_kept(sparsity, scope):
    torch.manual_seed(0)
    scores = {"a": torch.randn(64, 3, 3, 3), "b": torch.randn(10, 7), "c": torch.randn(333)}
    masks = make_masks(scores, sparsity, scope)
    if scope == "global":
        total = sum(s.numel() for s in scores.values())
        assert sum(int(m.sum()) for m in masks.values()) == round((1 - sparsity) * total)
    else:
        for n, s in scores.items():
            assert int(masks[n].sum()) == round((1 - sparsity) * s.numel())


def test_global_keeps_the_highest_scores():
    scores = {"a": torch.tensor([0.1, 5.0, 3.0]), "b": torch.tensor([4.0, 0.2])}
    masks = make_masks(scores, sparsity=0.4, scope="global")  # keep 3 of 5
    assert masks["a"].tolist() == [False, True, True] and masks["b"].tolist() == [True, False]


def test_ties_take_exactly_k_deterministically():
    scores = {"a": torch.ones(10), "b": torch.ones(10)}
    m1 = make_masks(scores, 0.5, "global")
    m2 = make_masks(scores, 0.5, "global")
    assert sum(int(m.sum()) for m in m1.values()) == 10  # a threshold (>=) would keep all 20
    assert all(torch.equal(m1[n], m2[n]) for n in m1)


@pytest.mark.parametrize("k", [1, 2, 37, 500, 999, 1000])
def test_selection_equals_a_stable_full_sort(k):
    """The O(n) selection keeps exactly the entries a stable descending sort puts first (ties -> low index),
    with heavy ties at the threshold and -inf (weights pruned in an earlier round)."""
    g = torch.Generator().manual_seed(k)
    flat = torch.randint(0, 7, (1000,), generator=g).to(torch.float64)
    flat[torch.randperm(1000, generator=g)[:100]] = float("-inf")
    expected = torch.zeros(1000, dtype=torch.bool)
    expected[torch.argsort(flat, descending=True, stable=True)[:k]] = True
    got = make_masks({"w": flat}, 1.0 - k / 1000)["w"]
    assert torch.equal(got, expected)


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan")])
def test_bad_sparsity_names_the_key(bad):
    with pytest.raises(PaiConfigError, match="sparsity"):
        make_masks({"a": torch.ones(3)}, bad)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_scores_refused(bad):
    scores = {"a": torch.ones(2), "b": torch.tensor([1.0, bad])}
    with pytest.raises(PaiConfigError, match=r"^NaN/inf scores in 1 layer\(s\) \(first: b\)"):
        make_masks(scores, 0.5)
    with pytest.raises(PaiConfigError, match=r"^pruner=snip produced NaN/inf scores in 1 layer\(s\)"):
        select_masks(scores, ["a", "b"], 0.5, criterion="snip")


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True),
        lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.05),
        lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-4, amsgrad=True),
    ],
)
def test_pruned_weights_stay_exactly_zero_through_training(make_opt):
    torch.manual_seed(0)
    net = Net()
    weights = prunable_weights(net)
    masks = make_masks({n: torch.rand_like(w) for n, w in weights.items()}, 0.8)
    apply_masks(net, masks)
    opt = make_opt(net.parameters())
    enforcer = MaskEnforcer(net, masks, opt)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    before = {n: w.detach().clone() for n, w in weights.items()}
    for _ in range(50):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    enforcer.remove()
    for n, w in weights.items():
        assert torch.all(w[~masks[n]] == 0), n
        assert not torch.equal(w[masks[n]], before[n][masks[n]]), f"{n}: kept weights did not train"
    assert achieved_sparsity(masks) == pytest.approx(0.8, abs=1 / sum(m.numel() for m in masks.values()))


def test_enforcer_masks_gradients_so_momentum_never_sees_pruned_weights():
    net = Net()
    masks = make_masks({n: torch.rand_like(w) for n, w in prunable_weights(net).items()}, 0.5)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    MaskEnforcer(net, masks, opt)
    nn.functional.cross_entropy(net(torch.randn(4, 3, 8, 8)), torch.tensor([0, 1, 2, 3])).backward()
    opt.step()
    for n, p in prunable_weights(net).items():
        assert torch.all(p.grad[~masks[n]] == 0)
        assert torch.all(opt.state[p]["momentum_buffer"][~masks[n]] == 0)


def test_density_and_collapse():
    masks = {"a": torch.tensor([True, False, False, False]), "b": torch.zeros(3, dtype=torch.bool)}
    assert layer_density(masks) == {"a": 0.25, "b": 0.0}
    assert collapsed_layers(masks) == ["b"]
    assert achieved_sparsity(masks) == pytest.approx(6 / 7)


def test_schedules_end_at_the_target():
    exp = schedule_sparsities(0.99, 100, "exponential")
    assert exp[-1] == pytest.approx(0.99) and exp[0] == pytest.approx(1 - 0.01 ** 0.01)
    assert schedule_sparsities(0.9, 3, "linear") == pytest.approx([0.3, 0.6, 0.9])
    # The reference code's defect (pruner=synflow_seed): the sparsity where the formula wants the density, so the
    # rounds start near 1 and fall to the target.
    inv = schedule_sparsities(0.9, 100, "seed_inverted")
    assert inv[0] == pytest.approx(0.9 ** 0.01) and inv[-1] == pytest.approx(0.9) and inv == sorted(inv, reverse=True)
    assert schedule_sparsities(0.9, 4, "seed_inverted_linear") == pytest.approx([0.975, 0.95, 0.925, 0.9])
    with pytest.raises(PaiConfigError, match="prune.schedule"):
        schedule_sparsities(0.9, 3, "cubic")
