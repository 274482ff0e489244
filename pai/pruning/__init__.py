"""Pruning, in three layers:

- criteria/ (what to score): one small class per family; each only returns scores (higher = keep);
- estimators/ (how gradient statistics are computed): the functional objective, per-sample moments, hooks,
  Hutchinson, the Hessian-gradient product, the exact Gauss–Newton diagonal;
- the shared machinery: options (the validated `prune:` node), pipeline (warmup → score/cache → masks),
  mask_calculator (exact top-k), sparsity_schedules (iterative rounds), masks (prunable weights, enforcement,
  statistics), cache, warmup.
"""

from pai.pruning.mask_calculator import kept_count, make_masks, select_masks, top_k
from pai.pruning.masks import (
    MaskEnforcer,
    achieved_sparsity,
    apply_masks,
    collapsed_layers,
    layer_density,
    prunable_weights,
)
from pai.pruning.pipeline import prune_masks

__all__ = [
    "MaskEnforcer",
    "achieved_sparsity",
    "apply_masks",
    "collapsed_layers",
    "kept_count",
    "layer_density",
    "make_masks",
    "prunable_weights",
    "prune_masks",
    "select_masks",
    "top_k",
]
