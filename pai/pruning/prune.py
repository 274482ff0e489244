"""One entry point from a criterion to masks: rounds, schedule, inversion and the scope, shared by all criteria."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from pai.pruning.criteria.base import Criterion
from pai.pruning.masks import Masks, apply_masks, check_finite, make_masks, schedule_sparsities


def select_masks(all_scores: Mapping[str, Tensor], names: list[str], sparsity: float, scope: str = "global",
                 invert: bool = False, criterion: str = "criterion", previous: Masks | None = None) -> Masks:
    """Masks for `names` from raw scores (every scored weight; higher = keep): finiteness check, optional
    inversion, weights pruned in an earlier round kept pruned (-inf), exact top-k."""
    scores = {n: all_scores[n] for n in names}
    check_finite(scores, criterion)
    if invert:
        scores = {n: -s for n, s in scores.items()}
    if previous is not None:
        scores = {n: s.masked_fill(~previous[n].to(s.device), float("-inf")) for n, s in scores.items()}
    return {n: m.to(torch.bool) for n, m in make_masks(scores, sparsity, scope).items()}


def prune_masks(
    criterion: Criterion,
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    names: list[str],
    sparsity: float,
    scope: str = "global",
    rounds: int | None = None,
    schedule: str = "exponential",
    invert: bool = False,
) -> Masks:
    """Score `names` with `criterion` and keep the top (1 - sparsity) fraction.

    With several rounds the network is pruned step by step along `schedule`, rescoring the masked network
    each time (on a copy: the caller's model is not touched); weights removed in a round stay removed.
    """
    rounds = rounds or criterion.default_rounds
    work = copy.deepcopy(model) if rounds > 1 else model
    masks: Masks | None = None
    for step_sparsity in schedule_sparsities(sparsity, rounds, schedule):
        masks = select_masks(criterion.score(work, inputs, targets), names, step_sparsity, scope, invert,
                             criterion.name, masks)
        if rounds > 1:
            apply_masks(work, masks)
    assert masks is not None
    return masks
