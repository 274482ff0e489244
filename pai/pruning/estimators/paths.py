"""The names of the scoring paths, in one place: how a criterion's gradient statistics are computed.

- loop: the batch-1 reference, one backward per group (the tests' oracle);
- vmap: `torch.func.vmap` over chunks of groups;
- hooks: per-group weight gradients from one batched pass (saved inputs and output gradients, hook_grads);
- batched: one weighted batched backward; gives only the mean gradient (it is linear in the samples);
- fast: the fastest of the others that applies (each estimator's `fast_path`).

Each estimator and criterion family accepts a subset, derived here from `SCORING_PATHS`.
"""

from __future__ import annotations

from typing import Literal, get_args

ScoringPath = Literal["fast", "batched", "hooks", "vmap", "loop"]
SCORING_PATHS: tuple[ScoringPath, ...] = get_args(ScoringPath)


def _without(*left_out: ScoringPath) -> tuple[ScoringPath, ...]:
    return tuple(p for p in SCORING_PATHS if p not in left_out)


MEAN_GRADIENT_PATHS = SCORING_PATHS  # the mean gradient g alone: every path
SQUARED_GRADIENT_PATHS = _without("batched")  # squares of group gradients (Fisher, GGN): not batched
HUTCHINSON_PATHS = _without("batched", "hooks")  # Hessian-vector products: no hooks
REFERENCE_PATHS: tuple[ScoringPath, ...] = ("fast", "loop")  # the least a sample criterion offers

__all__ = ["HUTCHINSON_PATHS", "MEAN_GRADIENT_PATHS", "REFERENCE_PATHS", "SCORING_PATHS", "SQUARED_GRADIENT_PATHS",
           "ScoringPath"]
