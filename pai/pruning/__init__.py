"""Pruning core: prunable weights, masks, criteria (pai.pruning.criteria) and the scoring pipeline."""

from pai.pruning.masks import (
    MaskEnforcer,
    achieved_sparsity,
    apply_masks,
    collapsed_layers,
    layer_density,
    make_masks,
    prunable_weights,
)

__all__ = [
    "MaskEnforcer",
    "achieved_sparsity",
    "apply_masks",
    "collapsed_layers",
    "layer_density",
    "make_masks",
    "prunable_weights",
]
