"""Masked training with per-epoch checkpoints; a run resumed from `last.pt` ends exactly where an
uninterrupted one would (batch order and augmentation are functions of (seed, epoch))."""

from __future__ import annotations

import contextlib
import itertools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import cast

import torch
from torch import nn
from tqdm import tqdm

from pai import distributed
from pai.data.base import ImageData
from pai.data.batching import check_batch_size, num_batches
from pai.pruning.mask_calculator import Masks
from pai.pruning.masks import MaskEnforcer
from pai.seeding import rng_state, set_rng_state
from pai.train.checkpoint import load_checkpoint, save_checkpoint
from pai.train.evaluate import evaluate
from pai.train.recipe import Recipe

log = logging.getLogger(__name__)


def train(
    model: nn.Module,
    data: ImageData,
    recipe: Recipe,
    device: torch.device,
    seed: int,
    masks: Masks | None,
    checkpoint: Path,
    extra_state: dict | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train `model` in place with `masks` enforced; return the per-epoch history.

    Every epoch ends with a test evaluation and an atomic checkpoint (model, optimizer, scheduler, masks,
    RNG states, history, `extra_state`); if `checkpoint` exists, training continues from it.

    Distributed (pai.distributed): the model is wrapped in DistributedDataParallel, every rank trains on its
    slice of each global batch of `recipe.batch_size`, all ranks load the same checkpoint (rank 0's), and only
    rank 0 writes it.
    """
    world, rank = distributed.world_size(), distributed.rank()
    check_batch_size(recipe.batch_size, world)
    memory_format = torch.channels_last if recipe.use_channels_last(device) else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)  # type: ignore[call-overload]  # torch's stub lacks it
    if world > 1 and recipe.use_sync_bn(device):
        # In place for every BN below the top module (the model's own BN layers, same Parameters and buffers,
        # same state_dict keys): checkpoints stay interchangeable with single-process runs.
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = recipe.optimizer(model.parameters())
    scheduler = recipe.scheduler(optimizer) if recipe.scheduler else None
    history: list[dict] = []
    start = 0
    state = load_checkpoint(checkpoint)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        history, start = state["history"], state["epoch"] + 1
        log.info("resuming from %s at epoch %d/%d", checkpoint, start + 1, recipe.epochs)
    # Hooks on the Parameters themselves: they act under the DDP wrapper too (the gradient is masked before
    # DDP all-reduces it, and the post-step re-mask runs on every rank's optimizer).
    enforcer = MaskEnforcer(model, masks, optimizer) if masks else None
    step_model = ddp_wrap(model, device) if world > 1 else model
    if recipe.compile:
        step_model = cast(nn.Module, torch.compile(step_model))  # an OptimizedModule wrapping the model
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    autocast_dtype = recipe.autocast_dtype(device)
    main = distributed.is_main()
    try:
        for epoch in range(start, recipe.epochs):
            model.train()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            batches = data.train_batches(recipe.batch_size, epoch, seed, device, augment=recipe.augment,
                                         rank=rank, world=world)
            total = num_batches(data.num_train, recipe.batch_size, world)
            if recipe.steps_per_epoch:
                total = min(total, recipe.steps_per_epoch)
            # islice: a shortened epoch stops without producing (and augmenting) one batch too many.
            bar = tqdm(itertools.islice(batches, total), total=total, desc=f"epoch {epoch + 1}/{recipe.epochs}",
                       leave=False, disable=not (main and sys.stderr.isatty()))
            for step, (x, y) in enumerate(bar):
                x = x.contiguous(memory_format=memory_format)  # a no-op unless channels_last
                autocast = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype
                            else contextlib.nullcontext())
                with autocast:
                    logits = step_model(x)
                    loss = loss_fn(logits.float(), y)
                objective = loss
                if world > 1:
                    # DDP averages the ranks' gradients; weighting each rank's mean by its share of the global
                    # batch makes that average the gradient of the global-batch mean, also for an uneven last
                    # batch (for full batches the factor is exactly 1).
                    n_global = min(recipe.batch_size, data.num_train - step * recipe.batch_size)
                    objective = loss * (y.numel() * world / n_global)
                optimizer.zero_grad(set_to_none=True)
                objective.backward()
                optimizer.step()
                loss_sum += loss.detach() * y.numel()
                correct += (logits.detach().argmax(1) == y).sum()
                seen += y.numel()
            if scheduler is not None:
                scheduler.step()
            train_loss, train_acc = distributed.mean_loss_and_accuracy(loss_sum, correct, seen,
                                                                          "the training metrics")
            if world > 1:
                # Without SyncBatchNorm each rank's running statistics follow its own slices: take rank 0's
                # everywhere, so every rank evaluates (and would checkpoint) the same model.
                distributed.broadcast_module_state(model, "the BN statistics broadcast", parameters=False)
            test_loss, test_acc = evaluate(model, data, device, recipe.eval_batch_size, memory_format)
            record = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "train_acc": train_acc,
                "test_loss": test_loss,
                "test_acc": test_acc,
                "lr": optimizer.param_groups[0]["lr"],
            }
            history.append(record)
            log.info("epoch %d/%d  train_loss %.4f  train_acc %.4f  test_loss %.4f  test_acc %.4f",
                     epoch + 1, recipe.epochs, record["train_loss"], record["train_acc"], test_loss, test_acc)
            if main:
                save_checkpoint({
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler else None,
                    "masks": masks,
                    "rng": rng_state(),
                    "epoch": epoch,
                    "history": history,
                    **(extra_state or {}),
                }, checkpoint)
            if on_epoch is not None:
                on_epoch(record)
        if world > 1:
            # DDP keeps the replicas identical; checked once, cheaply, so a divergence cannot go unnoticed.
            distributed.agree(distributed.checksum(model.state_dict()), "the trained model (state_dict checksum)")
    finally:
        if enforcer is not None:
            enforcer.remove()
    return history


def ddp_wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `model`. Its constructor broadcasts rank 0's parameters and buffers, so
    every rank starts from rank 0's (pruned, BN-warmed) model; buffers are re-broadcast before every forward."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
