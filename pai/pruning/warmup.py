"""BatchNorm-statistics warmup: one no-grad pass over the training set in train mode.

Only BatchNorm running statistics change: weights are untouched (no gradients), every other module runs in
eval mode (dropout off), and the model's own train/eval mode is restored afterwards.
"""

from __future__ import annotations

import torch
from torch import nn

from pai.data.base import ImageData
from pai.data.batching import num_batches
from pai.progress import progress


@torch.no_grad()
def bn_warmup(model: nn.Module, data: ImageData, device: torch.device, seed: int, batch_size: int = 512,
              augment: bool = True) -> int:
    """Refresh BN running statistics; returns the number of samples seen (0 when the model has no BN)."""
    bns: list[nn.Module] = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    modes = {m: m.training for m in model.modules()}
    model.eval()
    for m in bns:
        m.train()
    seen = 0
    try:
        batches = data.bn_warmup_batches(batch_size, seed, device, augment=augment)
        for x, _ in progress(batches, "BN warmup", total=num_batches(data.num_train, batch_size), unit="batch"):
            model(x)
            seen += x.shape[0]
    finally:
        for m, mode in modes.items():
            m.training = mode
    return seen
