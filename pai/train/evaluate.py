from __future__ import annotations

import torch
from torch import nn

from pai.data.base import ImageData


@torch.inference_mode()
def evaluate(model: nn.Module, data: ImageData, device: torch.device, batch_size: int = 1024) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on the test set, in eval mode (restores the previous mode)."""
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for x, y in data.test_batches(batch_size, device):
        logits = model(x).float()
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        count += y.numel()
    model.train(was_training)
    return loss_sum / count, correct / count
