"""Effective sparsity: on small hand-built networks whose dead weights are known by construction, against a
brute-force path search, and on the models pai builds (a dense mask is effective everywhere)."""

from __future__ import annotations

import pytest
import torch
from test_criteria_common import one_thread  # noqa: F401 (autouse fixture)
from torch import nn

from pai.pruning.connectivity import effective_masks, effective_stats
from pai.pruning.masks import prunable_weights


def ones(model: nn.Module, prune_classifier: bool = True) -> dict[str, torch.Tensor]:
    return {n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable_weights(model, prune_classifier).items()}


class Block(nn.Module):
    """y = relu(bn(conv_c(relu(conv_b(relu(conv_a(x))))))) + shortcut(x): a three-convolution residual branch
    beside an identity or a 1x1 projection shortcut."""

    def __init__(self, cin: int, cout: int, projection: bool):
        super().__init__()
        self.conv_a = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv_b = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_c = nn.Conv2d(cout, cout, 3, padding=1)
        self.bn = nn.BatchNorm2d(cout)
        self.shortcut = nn.Conv2d(cin, cout, 1, bias=False) if projection else nn.Identity()

    def forward(self, x):
        y = torch.relu(self.conv_b(torch.relu(self.conv_a(x))))
        return torch.relu(self.bn(self.conv_c(y)) + self.shortcut(x))


class Net(nn.Module):
    def __init__(self, projection: bool):
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.block = Block(4, 6 if projection else 4, projection)
        self.fc = nn.Linear(6 if projection else 4, 3)

    def forward(self, x):
        return self.fc(self.block(self.stem(x)).mean((2, 3)))


def test_a_channel_without_incoming_weights_kills_its_outgoing_weights():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    masks = ones(net, prune_classifier=False)
    masks["0.weight"][1] = False  # channel 1 gets no input; its bias and BN shift are constants, not paths
    eff = effective_masks(net, masks, (1, 5, 5))
    assert torch.equal(eff["0.weight"], masks["0.weight"])
    assert not eff["3.weight"][:, 1].any()  # everything leaving channel 1
    assert eff["3.weight"][:, [0, 2]].all()
    stats = effective_stats(net, masks, (1, 5, 5))
    kept = sum(int(m.sum()) for m in masks.values()) - 2 * 9
    total = sum(m.numel() for m in masks.values())
    assert stats["effective_sparsity"] == pytest.approx(1 - kept / total)
    assert stats["effective_layer_density"]["3.weight"] == pytest.approx(2 / 3)
    assert stats["effectively_empty_layers"] == []


def test_a_residual_branch_cut_in_the_middle_leaves_the_identity_path():
    net = Net(projection=False)
    masks = ones(net)
    masks["block.conv_b.weight"][:] = False
    eff = effective_masks(net, masks, (2, 4, 4))
    assert not eff["block.conv_a.weight"].any()  # reached, but leads nowhere
    assert not eff["block.conv_c.weight"].any()  # leads to the output, but nothing reaches it
    for name in ("stem.weight", "fc.weight"):  # the identity shortcut keeps the network alive
        assert torch.equal(eff[name], masks[name])
    stats = effective_stats(net, masks, (2, 4, 4))
    assert stats["effectively_empty_layers"] == ["block.conv_a.weight", "block.conv_b.weight",
                                                 "block.conv_c.weight"]


def test_a_fully_pruned_projection_shortcut_beside_a_live_branch():
    net = Net(projection=True)
    masks = ones(net)
    masks["block.shortcut.weight"][:] = False
    masks["block.conv_b.weight"][2] = False  # and one branch channel without input: conv_c's column 2 dies
    eff = effective_masks(net, masks, (2, 4, 4))
    assert not eff["block.shortcut.weight"].any()
    for name in ("stem.weight", "block.conv_a.weight", "fc.weight"):
        assert torch.equal(eff[name], masks[name]), name
    assert torch.equal(eff["block.conv_b.weight"], masks["block.conv_b.weight"])
    assert not eff["block.conv_c.weight"][:, 2].any() and eff["block.conv_c.weight"][:, [0, 1, 3, 4, 5]].all()
    # The branch cut too: nothing reaches the output, and no kept weight is effective.
    masks["block.conv_a.weight"][:] = False
    assert effective_stats(net, masks, (2, 4, 4))["effective_sparsity"] == 1.0


def reference_mlp_effective(masks: list[torch.Tensor]) -> list[torch.Tensor]:
    """Brute force on a plain MLP: forward reachability and backward co-reachability as boolean products."""
    reach = [torch.ones(masks[0].shape[1], dtype=torch.bool)]
    for m in masks:
        reach.append((m.int() @ reach[-1].int()) > 0)
    live = [torch.ones(masks[-1].shape[0], dtype=torch.bool)]
    for m in reversed(masks):
        live.insert(0, (m.int().T @ live[0].int()) > 0)
    return [m & live[i + 1][:, None] & reach[i][None, :] for i, m in enumerate(masks)]


@pytest.mark.parametrize("density", [0.05, 0.15, 0.4])
def test_random_sparse_mlp_matches_a_path_search(density):
    widths = [12, 16, 16, 16, 8, 4]
    layers = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.GELU()]
    net = nn.Sequential(nn.Flatten(), *layers)
    g = torch.Generator().manual_seed(int(density * 100))
    masks = {n: torch.rand(p.shape, generator=g) < density for n, p in prunable_weights(net, True).items()}
    eff = effective_masks(net, masks, (3, 4))
    want = reference_mlp_effective(list(masks.values()))
    for (name, got), expected in zip(eff.items(), want, strict=True):
        assert torch.equal(got, expected), name
    assert sum(int(m.sum()) for m in want) < sum(int(m.sum()) for m in masks.values())  # something was dead


def test_max_pool_counts_every_element_of_its_window():
    """With an all-ones input every window is a tie; a max-pool backward would credit one element only, and
    the 3x3 taps that reach the input only at the other positions would look dead."""
    net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1, 1))
    eff = effective_masks(net, ones(net), (1, 2, 2))
    assert eff["0.weight"].all()


def test_taps_that_only_ever_see_padding_are_dead():
    net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Flatten(), nn.Linear(1, 1))
    eff = effective_masks(net, ones(net), (1, 1, 1))
    assert eff["0.weight"].sum() == 1 and eff["0.weight"][0, 0, 1, 1]


def test_a_deep_net_neither_overflows_nor_underflows():
    net = nn.Sequential(*[nn.Sequential(nn.Linear(64, 64), nn.ReLU()) for _ in range(300)])
    masks = ones(net)
    masks["150.0.weight"][:, 1:] = False  # unit 0 alone carries every path through the middle
    eff = effective_masks(net, masks, (64,))  # 64**300 paths: a float64 path count would overflow
    assert eff["149.0.weight"][0].all() and not eff["149.0.weight"][1:].any()
    assert eff["0.0.weight"].all() and eff["299.0.weight"].all()
    assert torch.equal(eff["150.0.weight"], masks["150.0.weight"])


def test_vit_constants_do_not_create_paths_and_a_cut_mlp_is_bypassed():
    from pai.models.vit import vit_tiny

    torch.manual_seed(0)
    vit = vit_tiny(num_classes=3, in_channels=1, image_size=8)
    masks = ones(vit)
    masks["blocks.0.mlp.fc1.weight"][:] = False
    eff = effective_masks(vit, masks, (1, 8, 8))
    assert not eff["blocks.0.mlp.fc2.weight"].any()
    assert eff["blocks.0.attn.qkv.weight"].all() and eff["blocks.11.mlp.fc2.weight"].all()
    assert eff["patch_embed.proj.weight"].all() and eff["head.weight"].all()
    # No patch embedding: the class token and positional embeddings are constants, so nothing is effective.
    masks["patch_embed.proj.weight"][:] = False
    assert effective_stats(vit, masks, (1, 8, 8))["effective_sparsity"] == 1.0


@pytest.mark.parametrize("name", ["resnet20", "vgg11", "resnet18"])
def test_dense_masks_are_effective_everywhere_in_our_models(name):
    from pai.models import cifar_resnet, he_resnet, vgg

    torch.manual_seed(0)
    build = {"resnet20": lambda: he_resnet.resnet20(10, 3, 0.25), "vgg11": lambda: vgg.vgg11(10, 3, 32),
             "resnet18": lambda: cifar_resnet.resnet18(10, 3)}[name]
    model = build()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = ones(model, prune_classifier=False)
    eff = effective_masks(model, masks, (3, 32, 32))
    assert all(torch.equal(eff[n], masks[n]) for n in masks)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # the model is untouched
    # Emptying the first layer after the stem kills the whole network in a VGG, not in a ResNet.
    first_after_stem = list(masks)[1]
    masks[first_after_stem][:] = False
    expect_dead = name == "vgg11"
    assert (effective_stats(model, masks, (3, 32, 32))["effective_sparsity"] == 1.0) == expect_dead
