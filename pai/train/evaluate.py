from __future__ import annotations

import torch
from torch import nn

from pai import distributed
from pai.data.base import ImageData


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    data: ImageData,
    device: torch.device,
    batch_size: int = 1024,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on the test set, in eval mode (restores the previous mode).

    Inputs are laid out in `memory_format` (the training loop passes the model's), and the sums stay on the
    device until the end: one host sync per evaluation, not two per batch. The loss is summed in float64, as
    the Python floats of a per-batch `.item()` would be, so the result is the same to the last bit.

    In a distributed run each rank tests its share of the test set and the (loss, correct, count) sums are
    added over the ranks: every rank returns the metrics of the whole test set.
    """
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    for x, y in data.test_batches(batch_size, device, rank=distributed.rank(), world=distributed.world_size()):
        logits = model(x.contiguous(memory_format=memory_format)).float()
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
        count += y.numel()
    model.train(was_training)
    return distributed.mean_loss_and_accuracy(loss_sum, correct, count, "the test-set evaluation")
