"""BN warmup changes BatchNorm running statistics and nothing else."""

from __future__ import annotations

import torch
from test_criteria_common import SmallNet, one_thread  # noqa: F401 (autouse fixture)
from torch import nn

from pai.data.synthetic import build_synthetic
from pai.pruning.warmup import bn_warmup

CPU = torch.device("cpu")


def data():
    return build_synthetic(num_classes=4, image_size=6, num_train=50, num_test=8)


def test_only_bn_running_statistics_change():
    torch.manual_seed(0)
    net = SmallNet()
    net.train()
    net.fc.eval()  # a mixed mode must come back as it was
    modes = {n: m.training for n, m in net.named_modules()}
    params = {n: p.detach().clone() for n, p in net.named_parameters()}
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    seen_modes: dict[str, set] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: seen_modes.setdefault(n, set()).add(m.training))
             for n, m in net.named_modules() if n]
    seen = bn_warmup(net, data(), CPU, seed=0, batch_size=16)
    for h in hooks:
        h.remove()
    assert seen == 50
    for n, p in net.named_parameters():
        assert torch.equal(p, params[n]), n
        assert p.grad is None
    for n, b in net.named_buffers():
        if n.endswith("num_batches_tracked"):
            assert int(b) == int(buffers[n]) + 4  # 50 samples in batches of 16
        else:
            assert not torch.equal(b, buffers[n]), f"{n} was not refreshed"
    assert {n: m.training for n, m in net.named_modules()} == modes
    for n, m in net.named_modules():  # during the pass: BN in train mode, dropout and the rest in eval mode
        if n:
            assert seen_modes[n] == {isinstance(m, nn.BatchNorm2d)}, n


def test_same_seed_same_statistics_and_no_bn_no_pass():
    def warmed(seed):
        torch.manual_seed(0)
        net = SmallNet()
        bn_warmup(net, data(), CPU, seed=seed, batch_size=16)
        return net.bn1.running_mean

    assert torch.equal(warmed(0), warmed(0)) and not torch.equal(warmed(0), warmed(1))
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout(), nn.Flatten(), nn.LazyLinear(4))
    plain(torch.zeros(1, 3, 6, 6))
    state = {k: v.clone() for k, v in plain.state_dict().items()}
    assert bn_warmup(plain, data(), CPU, seed=0) == 0
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in state.items())
