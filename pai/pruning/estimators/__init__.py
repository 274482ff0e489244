"""How gradient statistics of the scoring samples are computed; the criteria (pai.pruning.criteria) combine them
into scores.

- objective: the loss as a function of the scored weights, scoring mode, groups of samples (mask batches);
- per_sample: first-order moments g and F of per-group gradients (loop / vmap / hooks / batched);
- hook_grads: per-group weight gradients from one batched pass (saved inputs and output gradients);
- hutchinson: Hutchinson's Hessian diagonal with Rademacher probes;
- hessian_gradient: the exact Hessian-gradient product H g (GraSP);
- gauss_newton: the exact Gauss–Newton diagonal and its Monte-Carlo (true Fisher) estimate;
- paths: the names of the scoring paths (loop / vmap / hooks / batched / fast) and the subsets each accepts.
"""

from pai.pruning.estimators.gauss_newton import ggn_diagonal, mc_labels, predictive, sample_weights
from pai.pruning.estimators.hessian_gradient import hessian_gradient_product
from pai.pruning.estimators.hook_grads import hooks_supported
from pai.pruning.estimators.hutchinson import RademacherProbes, hutchinson
from pai.pruning.estimators.hutchinson import fast_path as hutchinson_fast_path
from pai.pruning.estimators.objective import Grads, Objective, grads_of, group_chunks, num_groups, scoring_mode
from pai.pruning.estimators.per_sample import fast_path as moments_fast_path
from pai.pruning.estimators.per_sample import gradient_moments

__all__ = [
    "Grads",
    "Objective",
    "RademacherProbes",
    "ggn_diagonal",
    "gradient_moments",
    "grads_of",
    "group_chunks",
    "hessian_gradient_product",
    "hooks_supported",
    "hutchinson",
    "hutchinson_fast_path",
    "mc_labels",
    "moments_fast_path",
    "num_groups",
    "predictive",
    "sample_weights",
    "scoring_mode",
]
