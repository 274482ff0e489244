"""From scores to masks: exactly k = round((1 − sparsity) · n) weights kept, globally or in every layer.

A mask is ``{param_name: bool Tensor shaped like the weight}``; True = kept. Scores: higher = keep; -inf marks a
weight that an earlier pruning round removed (it is kept last).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from pai.errors import PaiConfigError

Masks = dict[str, Tensor]
SCOPES = ("global", "layer")


def check_sparsity(sparsity: float, key: str = "sparsity") -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, int | float) or not 0.0 <= float(sparsity) < 1.0:
        raise PaiConfigError(f"{key}={sparsity!r} must be a number in [0, 1)")
    return float(sparsity)


def kept_count(total: int, sparsity: float) -> int:
    """Exactly k = round((1 - sparsity) * total) weights are kept."""
    return int(round((1.0 - sparsity) * total))


def check_keeps_weights(sizes: Mapping[str, int], sparsity: float, scope: str = "global") -> None:
    """Refuse a sparsity that keeps no prunable weight at all (k = 0 globally, or in every layer): that network
    computes a constant, and would be trained and reported as if it were a result."""
    total = sum(sizes.values())
    kept = kept_count(total, sparsity) if scope == "global" else sum(kept_count(n, sparsity) for n in sizes.values())
    if total and kept == 0:
        raise PaiConfigError(f"sparsity={sparsity!r} keeps none of the {total:,} prunable weights "
                             f"(round((1 − sparsity) · n) = 0 with prune.scope={scope})")


def top_k(flat: Tensor, k: int) -> Tensor:
    """The k highest entries; ties at the threshold go to the lowest positions, so masks never depend on a
    backend's sort order. O(n) selection (kthvalue) instead of a full sort: SynFlow builds masks 100 times."""
    n = flat.numel()
    if k >= n:
        return torch.ones(n, dtype=torch.bool, device=flat.device)
    if k <= 0:
        return torch.zeros(n, dtype=torch.bool, device=flat.device)
    threshold = torch.kthvalue(flat, n - k + 1).values  # the k-th largest
    keep = flat > threshold
    ties = torch.nonzero(flat == threshold).flatten()
    keep[ties[: k - int(keep.sum())]] = True
    return keep


def check_scores(scores: Mapping[str, Tensor], criterion: str | None = None) -> None:
    """Refuse NaN or +inf scores (-inf is allowed: an earlier round's removals), in one line naming the
    criterion when it is known."""
    bad = [name for name, s in scores.items() if torch.isnan(s).any() or torch.isposinf(s).any()]
    if bad:
        source = f"pruner={criterion} produced " if criterion else ""
        raise PaiConfigError(f"{source}NaN/inf scores in {len(bad)} layer(s) (first: {bad[0]}); no mask built")


def make_masks(scores: Mapping[str, Tensor], sparsity: float, scope: str = "global",
               criterion: str | None = None) -> Masks:
    """Keep the highest scores: exactly round((1 - sparsity) * n) of them, globally or in every layer. Every
    mask goes through here, so this is where NaN/+inf scores (of `criterion`, when given) are refused."""
    check_sparsity(sparsity)
    if scope not in SCOPES:
        raise PaiConfigError(f"prune.scope={scope!r} must be one of {SCOPES}")
    if not scores:
        raise ValueError("no scores to build masks from")
    check_keeps_weights({name: s.numel() for name, s in scores.items()}, sparsity, scope)
    check_scores(scores, criterion)
    if scope == "layer":
        return {name: top_k(s.flatten(), kept_count(s.numel(), sparsity)).view_as(s) for name, s in scores.items()}
    flat = torch.cat([s.detach().flatten().to(torch.float64) for s in scores.values()])
    keep = top_k(flat, kept_count(flat.numel(), sparsity))
    masks, start = {}, 0
    for name, s in scores.items():
        masks[name] = keep[start : start + s.numel()].view_as(s)
        start += s.numel()
    return masks


def select_masks(all_scores: Mapping[str, Tensor], names: list[str], sparsity: float, scope: str = "global",
                 invert: bool = False, previous: Masks | None = None, criterion: str | None = None) -> Masks:
    """Masks for `names` from a criterion's raw scores (every scored weight; higher = keep): optional
    inversion, weights pruned in an earlier round kept pruned (-inf), exact top-k."""
    scores = {n: all_scores[n] for n in names}
    if invert:
        scores = {n: -s for n, s in scores.items()}
    if previous is not None:
        scores = {n: s.masked_fill(~previous[n].to(s.device), float("-inf")) for n, s in scores.items()}
    return {n: m.to(torch.bool) for n, m in make_masks(scores, sparsity, scope, criterion).items()}
