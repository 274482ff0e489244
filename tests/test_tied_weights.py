"""Tied weights: one Parameter in two modules is one prunable weight — scored once (with the gradient of both
uses), masked together and counted once — for every criterion and through a whole run. An all-zero prunable
layer is named in one warning before scoring."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from test_criteria_common import ALL_SCORING, HUTCHINSON, PER_SAMPLE, batch, make_criterion, one_thread, rel_close
from torch import nn

from pai.models.init_from import initializable
from pai.pruning.estimators.hook_grads import hooks_supported
from pai.pruning.estimators.per_sample import gradient_moments
from pai.pruning.mask_calculator import make_masks
from pai.pruning.masks import MaskEnforcer, achieved_sparsity, apply_masks, prunable_weights
from pai.run import run

__all__ = ["one_thread"]
ROOT = Path(__file__).resolve().parents[1]


class SharedWeightNet(nn.Module):
    """`b` is given `a`'s weight Parameter (two modules, one weight), and the Conv `conv` is applied twice."""

    def __init__(self, num_classes: int = 4, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(torch.relu(self.conv(torch.relu(self.stem(x))))))
        return self.fc(torch.relu(self.b(torch.relu(self.a(h.mean((2, 3)))))))


@initializable
def shared_weight_net(num_classes: int, in_channels: int = 3, width: float = 1.0,
                      zero_layer: str | None = None) -> SharedWeightNet:
    """Builder for `model._target_` (the resnet20 node's keys, `width` unused, and model.init_from as every
    builder); `zero_layer` zeroes one weight."""
    net = SharedWeightNet(num_classes, in_channels)
    if zero_layer:
        with torch.no_grad():
            net.get_parameter(zero_layer).zero_()
    return net


def _net() -> SharedWeightNet:
    torch.manual_seed(0)
    return SharedWeightNet().double()


def test_a_shared_weight_is_listed_once_under_its_parameter_name():
    net = _net()
    assert list(prunable_weights(net)) == ["stem.weight", "conv.weight", "a.weight"]
    assert list(prunable_weights(net, prune_classifier=True)) == ["stem.weight", "conv.weight", "a.weight",
                                                                  "fc.weight"]


@pytest.mark.parametrize("code", ALL_SCORING)
def test_every_criterion_scores_a_shared_weight_once(code):
    net = _net()
    x, y = batch(6)
    scores = make_criterion(code, **({"num_probes": 2} if code in HUTCHINSON else {})).score(net, x, y)
    assert set(prunable_weights(net, prune_classifier=True)) <= set(scores)
    assert "b.weight" not in scores and all(torch.isfinite(s).all() for s in scores.values())


@pytest.mark.parametrize("code", PER_SAMPLE)
def test_the_fast_paths_agree_with_the_loop_on_shared_weights(code, caplog):
    """Layer hooks would see one of the two uses only: the fast path goes to vmap directly, without first
    failing the hooks' check against autograd."""
    net = _net()
    x, y = batch(6)
    assert not hooks_supported(net, list(prunable_weights(net, prune_classifier=True)))
    rel_close(make_criterion(code).score(net, x, y), make_criterion(code, path="loop").score(net, x, y), 1e-10)
    assert "failed their check" not in caplog.text


def test_a_shared_weight_gets_the_gradient_of_both_uses():
    net = _net()
    x, y = batch(6)
    names = list(prunable_weights(net, prune_classifier=True))
    g, _ = gradient_moments(net, names, x, y, path="fast")
    (expected,) = torch.autograd.grad(F.cross_entropy(net(x), y), [net.a.weight])
    rel_close({"a.weight": g["a.weight"]}, {"a.weight": expected}, 1e-10)
    snip = make_criterion("snip").score(net, x, y)
    rel_close({"a.weight": snip["a.weight"]}, {"a.weight": (net.a.weight * expected).abs().detach()}, 1e-10)


def test_a_shared_weight_is_masked_together_and_counted_once():
    net = _net()
    weights = prunable_weights(net)
    masks = make_masks({n: torch.rand(w.shape, dtype=torch.float64) for n, w in weights.items()}, 0.5)
    apply_masks(net, masks)
    assert torch.equal(net.b.weight == 0, ~masks["a.weight"])
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    enforcer = MaskEnforcer(net, masks, optimizer)
    x, y = batch(6)
    F.cross_entropy(net(x), y).backward()
    optimizer.step()
    enforcer.remove()
    assert torch.all(net.b.weight[~masks["a.weight"]] == 0) and torch.any(net.b.weight[masks["a.weight"]] != 0)
    total = sum(w.numel() for w in weights.values())
    assert total == 4 * 3 * 9 + 4 * 4 * 9 + 4 * 4  # the shared 4x4 weight once
    assert achieved_sparsity(masks) == pytest.approx(1 - round(0.5 * total) / total)


def _cfg(out_root: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[
            "dataset=synthetic", "dataset.image_size=8", "dataset.num_train=64", "dataset.num_test=32",
            "model=resnet20", "model._target_=test_tied_weights.shared_weight_net", "train=quick",
            "train.epochs=1", "train.batch_size=32", "prune.samples_per_class=2", "logger=none",
            f"out_root={out_root}", *overrides])


def test_a_run_with_a_shared_weight_scores_masks_and_counts_it_once(tmp_path):
    res = run(_cfg(tmp_path, "pruner=fts", "sparsity=0.5"))
    assert res["status"] == "done"
    assert list(res["layer_density"]) == ["stem.weight", "conv.weight", "a.weight"]
    assert res["num_prunable"] == 3 * 4 * 9 + 4 * 4 * 9 + 4 * 4


def test_an_all_zero_layer_is_named_once_before_scoring(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    res = run(_cfg(tmp_path, "pruner=snip", "sparsity=0.5", "+model.zero_layer=conv.weight"))
    assert res["status"] == "done"
    warnings = [r.getMessage() for r in caplog.records if "all-zero" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].endswith(": conv.weight")
    first_epoch = next(i for i, r in enumerate(caplog.records) if "epoch 1/1" in r.getMessage())
    assert caplog.records.index(next(r for r in caplog.records if "all-zero" in r.getMessage())) < first_epoch
