"""Shared helpers of the criteria tests (no tests here): a small CNN with BN, a snapshot of everything a
criterion must leave alone, and the pruner yamls composed through Hydra."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from pai.conf_groups import group_options

ROOT = Path(__file__).resolve().parents[1]
# The criteria are the files of conf/pruner/, grouped by the module of their class (`_target_`).
FAMILY = {code: OmegaConf.load(ROOT / "conf" / "pruner" / f"{code}.yaml")["_target_"].split(".")[-2]
          for code in group_options(ROOT / "conf", "pruner")}
PER_SAMPLE = [c for c, family in FAMILY.items() if family in ("first_order", "fisher")]
HUTCHINSON = [c for c, family in FAMILY.items() if family == "hutchinson"]
TEN = PER_SAMPLE + HUTCHINSON + ["grasp", "synflow"]  # the paper's ten
GAUSS_NEWTON = [c for c, family in FAMILY.items() if family == "gauss_newton"]
ALL_SCORING = [c for c, family in FAMILY.items() if family != "dense"]


class SmallNet(nn.Module):
    """Conv-BN-ReLU, a strided grouped conv, a 1x1 shortcut conv + BN, dropout and two Linear layers."""

    def __init__(self, classes: int = 4, channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 6, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1, groups=2)
        self.bn2 = nn.BatchNorm2d(8)
        self.shortcut = nn.Sequential(nn.Conv2d(6, 8, 1, stride=2, bias=False), nn.BatchNorm2d(8))
        self.drop = nn.Dropout(0.5)
        self.fc1 = nn.Linear(8, 12)
        self.fc = nn.Linear(12, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)) + self.shortcut(out))
        return self.fc(torch.relu(self.fc1(self.drop(out.mean((2, 3))))))


class TiedNet(nn.Module):
    """Uses fc.weight a second time outside fc(): layer hooks miss that use, so the hook path must refuse and the
    fast path must fall back to autograd."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        h = self.fc(self.conv(x).mean((2, 3)))
        return nn.functional.linear(torch.tanh(h), self.fc.weight)


def small_net(seed: int = 0, dtype: torch.dtype = torch.float64) -> SmallNet:
    """A SmallNet with non-trivial BN running statistics (so eval-mode BN is not the identity)."""
    torch.manual_seed(seed)
    net = SmallNet().to(dtype)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net


def batch(n: int = 12, seed: int = 1, dtype: torch.dtype = torch.float64, size: int = 6, classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g, dtype=dtype), torch.randint(0, classes, (n,), generator=g)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny nets run faster on one thread: on two (shared) cores the many small kernels wait on each other.
    Import this fixture into a test module to use it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@functools.cache
def pruner_cfg(code: str, overrides: tuple[str, ...] = ()):
    """The composed config with `pruner=code` (cached: composing costs ~0.3 s)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"pruner={code}", *overrides])


def make_criterion(code: str, **knobs):
    """The criterion of conf/pruner/<code>.yaml, with `knobs` replacing its yaml values."""
    return instantiate(pruner_cfg(code).pruner, **knobs)


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "modes": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
    }


def assert_untouched(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), f"{k} changed"
        assert v.dtype == after["state"][k].dtype
    assert after["modes"] == before["modes"]
    assert after["requires_grad"] == before["requires_grad"]
    for n, g in before["grads"].items():
        assert (g is None and after["grads"][n] is None) or torch.equal(g, after["grads"][n]), f"{n}.grad changed"


def rel_close(a: dict, b: dict, rtol: float) -> None:
    """Every layer: max |a - b| <= rtol * max |b| (elementwise agreement relative to the layer's scale)."""
    assert a.keys() == b.keys()
    for n in b:
        scale = b[n].abs().max().clamp_min(1e-300)
        err = (a[n] - b[n]).abs().max()
        assert err <= rtol * scale, f"{n}: max error {float(err):.3g} vs scale {float(scale):.3g}"
