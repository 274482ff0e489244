"""From an initialized model to masks: optional BN warmup, the scoring samples, scoring (or the score cache),
masking."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from pai.data.base import ImageData
from pai.pruning.cache import ScoreCache, cache_identity
from pai.pruning.criteria.base import Criterion
from pai.pruning.masks import Masks, check_finite
from pai.pruning.prune import prune_masks, select_masks
from pai.pruning.warmup import bn_warmup


def score_and_mask(cfg: DictConfig, criterion: Criterion, model: nn.Module, data: ImageData,
                   device: torch.device, names: list[str], sparsity: float,
                   warmup_batch_size: int = 512) -> tuple[Masks, dict]:
    """Masks for `names` at `sparsity`, plus timings and `cache_hit`. `cfg.prune` holds the options shared by
    all criteria.

    BN warmup changes the model's running statistics in place: training then starts from the warmed-up model,
    as in the paper. Single-round scores are cached (`prune.cache`) under `${out_root}/cache`; a hit also
    restores the warmed-up BN buffers stored with the scores, so the model leaves in the same state either way.
    Concurrent jobs that need the same entry wait on its lock, so only the first one scores.
    """
    p = cfg.prune
    rounds = p.rounds or criterion.default_rounds
    info = {"warmup_seconds": 0.0, "score_seconds": 0.0, "cache_hit": False}
    cache = ScoreCache(Path(cfg.out_root) / "cache") if p.get("cache", True) and rounds == 1 else None
    identity = cache_identity(cfg, criterion, model, warmup_batch_size) if cache else None
    with cache.lock(identity) if cache else contextlib.nullcontext():
        entry = cache.load(identity) if cache else None
        if entry is not None:
            info["cache_hit"] = True
            if p.bn_warmup:
                _load_buffers(model, entry["buffers"])
            scores = {n: s.to(device) for n, s in entry["scores"].items()}
            return select_masks(scores, names, sparsity, p.scope, p.invert, criterion.name), info
        if p.bn_warmup:
            t0 = time.perf_counter()
            bn_warmup(model, data, device, cfg.seed, warmup_batch_size, p.augment)
            info["warmup_seconds"] = time.perf_counter() - t0
        inputs, targets = data.scoring_samples(p.samples_per_class, cfg.seed, device, p.augment)
        t0 = time.perf_counter()
        if rounds > 1:
            masks = prune_masks(criterion, model, inputs, targets, names, sparsity, p.scope, rounds, p.schedule,
                                p.invert)
        else:
            scores = criterion.score(model, inputs, targets)
            check_finite({n: scores[n] for n in names}, criterion.name)  # never cache NaN/inf
            if cache:
                cache.save(identity, scores, dict(model.named_buffers()) if p.bn_warmup else None)
            masks = select_masks(scores, names, sparsity, p.scope, p.invert, criterion.name)
    info["score_seconds"] = time.perf_counter() - t0
    return masks, info


@torch.no_grad()
def _load_buffers(model: nn.Module, buffers: dict[str, torch.Tensor] | None) -> None:
    if buffers is None:
        raise RuntimeError("score cache entry lacks the warmed-up BN buffers")
    for name, b in model.named_buffers():
        b.copy_(buffers[name])
