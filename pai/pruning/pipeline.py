"""From an initialized model to masks, the machinery shared by every criterion: optional BN warmup, the scoring
samples, scoring (or the score cache), the finiteness check, iterative rounds along a sparsity schedule, the
exact top-k masks, and the sanity-check ablations (`prune.ablation`) of the final mask."""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from pai.build import build
from pai.data.base import ImageData
from pai.errors import PaiConfigError
from pai.progress import progress
from pai.pruning.ablations import overlap, reinitialize, shuffle_within_layers
from pai.pruning.cache import ScoreCache, cache_identity
from pai.pruning.criteria.base import Criterion, Scores
from pai.pruning.mask_calculator import Masks, select_masks
from pai.pruning.masks import apply_masks, zero_layers
from pai.pruning.options import PruneOptions
from pai.pruning.sparsity_schedules import schedule_sparsities
from pai.pruning.warmup import bn_warmup
from pai.run_files import check_sparsity_of, load_masks

log = logging.getLogger(__name__)


def score_and_mask(cfg: DictConfig, options: PruneOptions, criterion: Criterion, model: nn.Module,
                   data: ImageData, device: torch.device, names: list[str], sparsity: float,
                   warmup_batch_size: int = 512) -> tuple[Masks, dict]:
    """Masks for `names` at `sparsity`, plus timings, `cache_hit`, `ablation` and `ablation_overlap`.

    BN warmup changes the model's running statistics in place: training then starts from the warmed-up model,
    as in the paper. Single-round scores are cached (`prune.cache`) under `${out_root}/cache`; a hit also
    restores the warmed-up BN buffers stored with the scores, so the model leaves in the same state either way.
    Concurrent jobs that need the same entry wait on its lock, so only the first one scores.

    With `prune.mask_from` nothing is scored: the given masks are loaded (after the BN warmup, which is part of
    the model that training starts from). The ablation (`ablate`) acts on the final mask, after scoring, a cache
    hit or a loaded mask alike.
    """
    params = dict(model.named_parameters())
    zero = zero_layers({n: params[n] for n in names})
    if zero:
        log.warning("all-zero prunable layer(s), whose scores all tie (the mask there falls to position): %s",
                    ", ".join(zero))
    masks, info = _criterion_masks(cfg, options, criterion, model, data, device, names, sparsity,
                                   warmup_batch_size)
    return ablate(cfg, options, model, masks, info)


def ablate(cfg: DictConfig, options: PruneOptions, model: nn.Module, masks: Masks, info: dict) -> tuple[Masks, dict]:
    """`prune.ablation` applied to a criterion's final mask: `layer_shuffle` redraws the kept positions of every
    layer, `reinit` redraws the model's parameters in place (the caller zeroes the pruned ones, as after any
    pruning). `ablation_overlap` is the fraction of the criterion's kept weights that the trained mask keeps."""
    ablated = shuffle_within_layers(masks, cfg.seed) if options.ablation == "layer_shuffle" else masks
    if options.ablation == "reinit":
        reinitialize(model, lambda: fresh_model(cfg), cfg.seed)
    return ablated, {**info, "ablation": options.ablation, "ablation_overlap": overlap(ablated, masks)}


def fresh_model(cfg: DictConfig) -> nn.Module:
    """The model node built with its own initializer: with `model.init_from` set, without loading those weights
    (the reinit ablation redraws the parameters, whatever the run started from)."""
    skip_init_from = {"init_from": None} if cfg.model.get("init_from") is not None else {}
    return build(cfg.model, "model", **skip_init_from)


def _criterion_masks(cfg: DictConfig, options: PruneOptions, criterion: Criterion, model: nn.Module,
                     data: ImageData, device: torch.device, names: list[str], sparsity: float,
                     warmup_batch_size: int) -> tuple[Masks, dict]:
    rounds = options.rounds_for(criterion.default_rounds)
    info = {"warmup_seconds": 0.0, "score_seconds": 0.0, "cache_hit": False}
    if options.mask_from is not None:
        if options.bn_warmup:
            info["warmup_seconds"] = _warmup(model, data, device, cfg.seed, warmup_batch_size, options.augment)
        params = dict(model.named_parameters())
        masks = load_masks(options.mask_from, {n: params[n].shape for n in names})
        check_sparsity_of(masks, sparsity, options.mask_from)
        log.info("masks from %s (prune.mask_from); no scoring", options.mask_from)
        return {n: m.to(device) for n, m in masks.items()}, info
    cache = ScoreCache(Path(cfg.out_root) / "cache") if options.cache and rounds == 1 else None
    identity = cache_identity(cfg, options, criterion, model, warmup_batch_size) if cache else {}
    with cache.lock(identity) if cache else contextlib.nullcontext():
        entry = cache.load(identity) if cache else None
        if cache is not None and entry is not None:
            info["cache_hit"] = True
            log.info("scoring: %s, scores from the cache (%s)", criterion.name, cache.path(identity))
            if options.bn_warmup:
                _load_buffers(model, entry["buffers"])
            scores = {n: s.to(device) for n, s in entry["scores"].items()}
            return select_masks(scores, names, sparsity, options.scope, options.invert,
                                criterion=criterion.name), info
        if options.bn_warmup:
            info["warmup_seconds"] = _warmup(model, data, device, cfg.seed, warmup_batch_size, options.augment)
        inputs, targets = data.scoring_samples(options.samples_per_class, cfg.seed, device, options.augment)
        samples = "data-free" if criterion.data_free else (
            f"{inputs.shape[0]} samples ({options.samples_per_class}/class, groups of {options.score_batch_size})")
        path = f", path {criterion.path}" if hasattr(criterion, "path") else ""
        log.info("scoring: %s, %s%s, %d round(s)", criterion.name, samples, path, rounds)
        t0 = time.perf_counter()
        if rounds > 1:
            masks = prune_masks(criterion, model, inputs, targets, names, sparsity, options.scope, rounds,
                                options.schedule_for(criterion.default_schedule), options.invert)
        else:
            scores = checked_scores(criterion, model, inputs, targets, names)
            # masks first: NaN/inf scores are refused there, before anything is cached
            masks = select_masks(scores, names, sparsity, options.scope, options.invert, criterion=criterion.name)
            if cache:
                cache.save(identity, scores, dict(model.named_buffers()) if options.bn_warmup else None)
    info["score_seconds"] = time.perf_counter() - t0
    return masks, info


def _warmup(model: nn.Module, data: ImageData, device: torch.device, seed: int, batch_size: int,
            augment: bool) -> float:
    """The BN warmup pass; returns its seconds."""
    log.info("BN warmup: one pass over %d training samples", data.num_train)
    t0 = time.perf_counter()
    bn_warmup(model, data, device, seed, batch_size, augment)
    return time.perf_counter() - t0


def checked_scores(criterion: Criterion, model: nn.Module, inputs: Tensor, targets: Tensor,
                   names: list[str]) -> Scores:
    """The criterion's raw scores (every weight it scores: the cache serves runs that prune the classifier and
    runs that do not), refused (one line naming the criterion) if one of `names` is missing; NaN/inf scores are
    refused by `select_masks`."""
    scores = criterion.score(model, inputs, targets)
    missing = [n for n in names if n not in scores]
    if missing:
        raise PaiConfigError(f"pruner={criterion.name} gives no score for {missing[0]}")
    return scores


def prune_masks(criterion: Criterion, model: nn.Module, inputs: Tensor, targets: Tensor, names: list[str],
                sparsity: float, scope: str = "global", rounds: int = 1, schedule: str = "exponential",
                invert: bool = False) -> Masks:
    """Score `names` with `criterion` and keep the top (1 - sparsity) fraction.

    With several rounds the network is pruned step by step along `schedule`, rescoring the masked network
    each time (on a copy: the caller's model is not touched); weights removed in a round stay removed.
    """
    work = copy.deepcopy(model) if rounds > 1 else model
    masks: Masks | None = None
    steps = schedule_sparsities(sparsity, rounds, schedule)
    for step_sparsity in progress(steps, f"{criterion.name} rounds", total=len(steps), unit="round"):
        masks = select_masks(checked_scores(criterion, work, inputs, targets, names), names, step_sparsity, scope,
                             invert, masks, criterion.name)
        if rounds > 1:
            apply_masks(work, masks)
    assert masks is not None
    return masks


@torch.no_grad()
def _load_buffers(model: nn.Module, buffers: dict[str, torch.Tensor] | None) -> None:
    if buffers is None:
        raise RuntimeError("score cache entry lacks the warmed-up BN buffers")
    for name, b in model.named_buffers():
        b.copy_(buffers[name])
