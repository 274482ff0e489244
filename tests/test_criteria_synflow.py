"""SynFlow: float64 keeps deep nets finite, pruned weights drop out of R, the default 100 exponential rounds; the
reference code's inverted schedule (pruner=synflow_seed) and what it does to masks."""

from __future__ import annotations

import time

import pytest
import torch
from test_criteria_common import one_thread  # noqa: F401 (autouse fixture)
from torch import nn

from pai.models.cifar_resnet import resnet50
from pai.models.he_resnet import resnet20
from pai.pruning.criteria.synflow import SeedSynFlow, SynFlow
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


class ScoreSpy:
    """Wraps a criterion: records, for every round, how many prunable weights of the scored copy are nonzero
    (= the previous round's kept count) and that round's scores."""

    def __init__(self, criterion: SynFlow):
        self.criterion, self.name = criterion, criterion.name
        self.nonzero: list[int] = []
        self.scores: list[dict] = []

    def score(self, model, inputs, targets):
        self.nonzero.append(sum(int(w.count_nonzero()) for w in prunable_weights(model).values()))
        self.scores.append(self.criterion.score(model, inputs, targets))
        return self.scores[-1]


def run_schedule(criterion: SynFlow, sparsity: float, rounds: int = 100) -> tuple[dict, ScoreSpy, int]:
    """`criterion`'s masks on a quarter-width ResNet-20 (17k weights) along its own default schedule."""
    torch.manual_seed(0)
    net = resnet20(10, in_channels=1, width=0.25)
    names = list(prunable_weights(net))
    assert all(int(w.count_nonzero()) == w.numel() for w in prunable_weights(net).values())
    spy = ScoreSpy(criterion)
    masks = prune_masks(spy, net, torch.zeros(1, 1, 8, 8), None, names, sparsity, rounds=rounds,
                        schedule=criterion.default_schedule)
    return masks, spy, sum(m.numel() for m in masks.values())


def residual_branches(masks: dict) -> set[str]:
    """The convolutions of ResNet-20's residual branches, which a shortcut bypasses (not the stem, not the
    projection shortcuts)."""
    return {n for n in masks if n.startswith("layer") and ".conv" in n}


def flow_under(masks: dict) -> dict:
    """SynFlow scores of the freshly initialized network with `masks` applied."""
    torch.manual_seed(0)
    net = resnet20(10, in_channels=1, width=0.25)
    apply_masks(net, masks)
    return SynFlow().score(net, torch.zeros(1, 1, 8, 8), None)


@pytest.mark.parametrize("sparsity", [0.9, 0.98])
def test_seed_schedule_reproduces_the_reference_defect(sparsity):
    """pruner=synflow_seed: round 1 keeps round((1 - s^(1/R)) n) weights (the formula fed the sparsity), that cuts
    the network, so every kept weight ends with score 0 and whole layers are empty."""
    assert SeedSynFlow.default_schedule == "seed_inverted" and SeedSynFlow.name == "synflow_seed"
    masks, spy, n = run_schedule(SeedSynFlow(), sparsity)
    first_round = spy.nonzero[1]  # what round 2 scores = what round 1 kept
    assert first_round == round((1 - sparsity ** (1 / 100)) * n) == kept_count(n, sparsity ** (1 / 100))
    assert first_round < 0.002 * n
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == kept_count(n, sparsity)
    final_scores = spy.scores[-1]
    assert all((final_scores[k][m] == 0).all() for k, m in masks.items())  # every kept weight: score 0
    assert spy.nonzero[-1] == first_round  # later rounds only re-admit weights that are already zero
    assert len(collapsed_layers(masks)) >= 5
    assert set(collapsed_layers(masks)) - residual_branches(masks)  # the stem or a projection shortcut
    flow = flow_under(masks)
    assert all((flow[k][m] == 0).all() for k, m in masks.items())  # cut: no kept weight carries any flow


@pytest.mark.parametrize("sparsity", [0.9, 0.98])
def test_published_schedule_does_none_of_this(sparsity):
    """pruner=synflow (density d^(r/R)) on the same network: round 1 prunes a little, every kept weight still
    carries flow, no layer is empty."""
    masks, spy, n = run_schedule(SynFlow(), sparsity)
    assert SynFlow.default_schedule == "exponential"
    assert spy.nonzero[1] == kept_count(n, 1 - (1 - sparsity) ** (1 / 100)) > 0.95 * n
    assert sum(int(m.sum()) for m in masks.values()) == kept_count(n, sparsity)
    assert all((spy.scores[-1][k][m] > 0).all() for k, m in masks.items())
    flow = flow_under(masks)
    assert all((flow[k][m] > 0).all() for k, m in masks.items())  # connected: every kept weight carries flow
    # Narrow ResNets may lose a whole residual branch (its shortcut bypasses it), nothing else.
    assert set(collapsed_layers(masks)) <= residual_branches(masks)


def test_synflow_seed_runs_end_to_end_as_its_own_row(tmp_path):
    """pruner=synflow_seed through the pipeline: its own report row, the seed schedule without any prune.schedule
    override, and the collapse in results.json (20 rounds to keep it short: round 1 still keeps 0.5 %)."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from pai.run import run

    root = Path(__file__).resolve().parents[1]
    with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            "pruner=synflow_seed", "dataset=synthetic", "dataset.in_channels=1", "dataset.image_size=8",
            "dataset.num_train=64", "dataset.num_test=16", "model=resnet20", "model.width=0.25", "train=quick",
            "train.epochs=1", "train.steps_per_epoch=1", "train.batch_size=8", "prune.samples_per_class=1",
            "prune.rounds=20", "sparsity=0.9", "logger=none", f"out_root={tmp_path}"])
    res = run(cfg)
    assert res["status"] == "done" and res["pruner"] == "synflow_seed" and "/synflow_seed/" in res["run_dir"]
    collapsed = set(res["collapsed_layers"])
    assert len(collapsed) >= 5 and collapsed - residual_branches(res["layer_density"])
