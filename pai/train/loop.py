"""Masked training with per-epoch checkpoints; a run resumed from `last.pt` ends exactly where an
uninterrupted one would (batch order and augmentation are functions of (seed, epoch))."""

from __future__ import annotations

import contextlib
import itertools
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from pai.data.base import ImageData
from pai.pruning.masks import MaskEnforcer, Masks
from pai.seeding import rng_state, set_rng_state
from pai.train.checkpoint import atomic_save, load_checkpoint
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
    """
    memory_format = torch.channels_last if recipe.use_channels_last(device) else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
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
    enforcer = MaskEnforcer(model, masks, optimizer) if masks else None
    step_model = torch.compile(model) if recipe.compile else model
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    autocast_dtype = recipe.autocast_dtype(device)
    try:
        for epoch in range(start, recipe.epochs):
            model.train()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            batches = data.train_batches(recipe.batch_size, epoch, seed, device, augment=recipe.augment)
            total = -(-data.num_train // recipe.batch_size)
            if recipe.steps_per_epoch:
                total = min(total, recipe.steps_per_epoch)
            # islice: a shortened epoch stops without producing (and augmenting) one batch too many.
            bar = tqdm(itertools.islice(batches, total), total=total, desc=f"epoch {epoch + 1}/{recipe.epochs}",
                       leave=False, disable=not sys.stderr.isatty())
            for x, y in bar:
                x = x.contiguous(memory_format=memory_format)  # a no-op unless channels_last
                autocast = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype
                            else contextlib.nullcontext())
                with autocast:
                    logits = step_model(x)
                    loss = loss_fn(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach() * y.numel()
                correct += (logits.detach().argmax(1) == y).sum()
                seen += y.numel()
            if scheduler is not None:
                scheduler.step()
            test_loss, test_acc = evaluate(model, data, device, recipe.eval_batch_size, memory_format)
            record = {
                "epoch": epoch + 1,
                "train_loss": loss_sum.item() / seen,
                "train_acc": correct.item() / seen,
                "test_loss": test_loss,
                "test_acc": test_acc,
                "lr": optimizer.param_groups[0]["lr"],
            }
            history.append(record)
            log.info("epoch %d/%d  train_loss %.4f  train_acc %.4f  test_loss %.4f  test_acc %.4f",
                     epoch + 1, recipe.epochs, record["train_loss"], record["train_acc"], test_loss, test_acc)
            atomic_save({
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
    finally:
        if enforcer is not None:
            enforcer.remove()
    return history
