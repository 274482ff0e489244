"""Masks on a model: which weights are prunable, zeroing and keeping pruned weights at zero, mask statistics.

A mask is ``{param_name: bool Tensor shaped like the weight}``; True = kept. Building masks from scores is
pai.pruning.mask_calculator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch
from torch import Tensor, nn


def prunable_weights(model: nn.Module, prune_classifier: bool = False) -> dict[str, nn.Parameter]:
    """Conv and Linear weights, selected by module type (never by name, which would catch BN weights).

    The classifier is the last Linear layer in registration order (``fc``, ``linear``, ``head``...). A weight
    shared by several modules (tied: an embedding and the classifier, one Conv's weight set on two modules) is
    listed once, under its `named_parameters()` name, so it is scored, masked and counted once.
    """
    canonical = {id(p): name for name, p in model.named_parameters()}
    found: dict[str, nn.Parameter] = {}
    classifier = None
    for module_name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd | nn.Linear) and module.weight is not None:
            name = canonical.get(id(module.weight), f"{module_name}.weight" if module_name else "weight")
            found[name] = cast(nn.Parameter, module.weight)  # typed Tensor; a Parameter at run time
            if isinstance(module, nn.Linear):
                classifier = name
    if not prune_classifier and classifier is not None:
        found.pop(classifier)
    return found


def zero_layers(weights: Mapping[str, Tensor]) -> list[str]:
    """Prunable layers whose weights are all zero: every score there ties, so their mask is decided by the
    tie-break (position), not by the criterion."""
    return [name for name, w in weights.items() if not w.detach().any()]


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
