"""Masks: which weights are prunable, exact top-k masks, keeping pruned weights at zero, mask statistics.

A mask is ``{param_name: bool Tensor shaped like the weight}``; True = kept.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from pai.errors import PaiConfigError

Masks = dict[str, Tensor]
SCOPES = ("global", "layer")


def prunable_weights(model: nn.Module, prune_classifier: bool = False) -> dict[str, nn.Parameter]:
    """Conv and Linear weights, selected by module type (never by name, which would catch BN weights).

    The classifier is the last Linear layer in registration order (``fc``, ``linear``, ``head``...).
    """
    found: dict[str, nn.Parameter] = {}
    last_linear = None
    for module_name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd | nn.Linear) and module.weight is not None:
            name = f"{module_name}.weight" if module_name else "weight"
            found[name] = module.weight
            if isinstance(module, nn.Linear):
                last_linear = name
    if not prune_classifier and last_linear is not None:
        found.pop(last_linear)
    return found


def check_sparsity(sparsity: float, key: str = "sparsity") -> float:
    if not isinstance(sparsity, int | float) or not 0.0 <= float(sparsity) < 1.0:
        raise PaiConfigError(f"{key}={sparsity!r} must be a number in [0, 1)")
    return float(sparsity)


def kept_count(total: int, sparsity: float) -> int:
    """Exactly k = round((1 - sparsity) * total) weights are kept."""
    return int(round((1.0 - sparsity) * total))


def _top_k(flat: Tensor, k: int) -> Tensor:
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


def make_masks(scores: Mapping[str, Tensor], sparsity: float, scope: str = "global") -> Masks:
    """Keep the highest scores: exactly round((1 - sparsity) * n) of them, globally or in every layer."""
    check_sparsity(sparsity)
    if scope not in SCOPES:
        raise PaiConfigError(f"prune.scope={scope!r} must be one of {SCOPES}")
    if not scores:
        raise ValueError("no scores to build masks from")
    for name, s in scores.items():
        # -inf is allowed: it marks weights that an earlier pruning round removed (kept last).
        if torch.isnan(s).any() or torch.isposinf(s).any():
            raise ValueError(f"scores of {name} contain NaN or +inf; no mask built")
    if scope == "layer":
        return {name: _top_k(s.flatten(), kept_count(s.numel(), sparsity)).view_as(s) for name, s in scores.items()}
    flat = torch.cat([s.detach().flatten().to(torch.float64) for s in scores.values()])
    keep = _top_k(flat, kept_count(flat.numel(), sparsity))
    masks, start = {}, 0
    for name, s in scores.items():
        masks[name] = keep[start : start + s.numel()].view_as(s)
        start += s.numel()
    return masks


def check_finite(scores: Mapping[str, Tensor], criterion: str) -> None:
    """Refuse scores with NaN/inf before any mask is built: one message naming the criterion."""
    bad = [name for name, s in scores.items() if not torch.isfinite(s).all()]
    if bad:
        raise PaiConfigError(
            f"pruner={criterion} produced NaN/inf scores in {len(bad)} layer(s) (first: {bad[0]}); no mask built"
        )


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> None:
    """Zero the pruned weights in place."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].device, params[name].dtype))


class MaskEnforcer:
    """Keeps pruned weights exactly zero during training.

    Gradients are masked by a hook (so momentum buffers and Adam moments of pruned weights stay zero, and
    weight decay acts on zeros), and weights are re-masked after every optimizer step as a guard against
    optimizers that move a weight with zero gradient.
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, Tensor], optimizer: torch.optim.Optimizer | None):
        params = dict(model.named_parameters())
        self.pairs = [(params[n], m.to(params[n].device, params[n].dtype)) for n, m in masks.items()]
        self.handles = [p.register_hook(lambda g, m=m: g * m) for p, m in self.pairs]
        if optimizer is not None:
            self.handles.append(optimizer.register_step_post_hook(lambda *_: self.reapply()))
        self.reapply()

    @torch.no_grad()
    def reapply(self) -> None:
        for p, m in self.pairs:
            p.mul_(m)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def layer_density(masks: Mapping[str, Tensor]) -> dict[str, float]:
    return {name: m.float().mean().item() for name, m in masks.items()}


def collapsed_layers(masks: Mapping[str, Tensor]) -> list[str]:
    """Layers with every weight pruned: the network is cut there."""
    return [name for name, m in masks.items() if not m.any()]


def achieved_sparsity(masks: Mapping[str, Tensor]) -> float:
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return 1.0 - kept / total if total else 0.0


def schedule_sparsities(sparsity: float, rounds: int, schedule: str = "exponential") -> list[float]:
    """Sparsity after each of `rounds` pruning rounds, ending at `sparsity`.

    exponential: density d^(r/R) (SynFlow); linear: sparsity r/R.
    """
    if schedule == "exponential":
        return [1.0 - (1.0 - sparsity) ** (r / rounds) for r in range(1, rounds + 1)]
    if schedule == "linear":
        return [sparsity * r / rounds for r in range(1, rounds + 1)]
    raise PaiConfigError(f"prune.schedule={schedule!r} must be 'exponential' or 'linear'")

