"""From an initialized model to masks: optional BN warmup, the scoring samples, scoring, masking."""

from __future__ import annotations

import time

import torch
from omegaconf import DictConfig
from torch import nn

from pai.data.base import ImageData
from pai.pruning.criteria.base import Criterion
from pai.pruning.masks import Masks
from pai.pruning.prune import prune_masks
from pai.pruning.warmup import bn_warmup


def score_and_mask(cfg: DictConfig, criterion: Criterion, model: nn.Module, data: ImageData,
                   device: torch.device, names: list[str], sparsity: float,
                   warmup_batch_size: int = 512) -> tuple[Masks, dict]:
    """Masks for `names` at `sparsity`, plus timings. `cfg.prune` holds the options shared by all criteria.

    BN warmup changes the model's running statistics in place: training then starts from the warmed-up model,
    as in the paper.
    """
    p = cfg.prune
    info = {"warmup_seconds": 0.0}
    if p.bn_warmup:
        t0 = time.perf_counter()
        bn_warmup(model, data, device, cfg.seed, warmup_batch_size, p.augment)
        info["warmup_seconds"] = time.perf_counter() - t0
    inputs, targets = data.scoring_samples(p.samples_per_class, cfg.seed, device, p.augment)
    t0 = time.perf_counter()
    masks = prune_masks(criterion, model, inputs, targets, names, sparsity, p.scope, p.rounds, p.schedule, p.invert)
    info["score_seconds"] = time.perf_counter() - t0
    return masks, info
