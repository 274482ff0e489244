"""The criterion contract: a criterion only computes scores (higher = keep); masks, schedules and caching are
shared machinery (pai.pruning)."""

from __future__ import annotations

from torch import Tensor, nn

from pai.errors import PaiConfigError
from pai.pruning.estimators.paths import REFERENCE_PATHS
from pai.pruning.masks import prunable_weights

Scores = dict[str, Tensor]

# The parameters a Hessian product (H z, H g) runs over; see `hessian_parameters`.
HESSIAN_PARAMS = ("all", "prunable", "prunable_classifier")


class Criterion:
    """Scores every Conv/Linear weight of `model`; the pipeline keeps the prunable ones.

    Subclasses implement `score` and must leave the model as they found it (weights, buffers, train/eval mode).
    """

    name: str = "criterion"
    data_free: bool = False  # uses only the input shape of the scoring samples
    prunes: bool = True  # False for the dense baseline
    default_rounds: int = 1  # scoring rounds when prune.rounds is null
    default_schedule: str = "exponential"  # sparsity schedule when prune.schedule is null

    def score(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> Scores:
        raise NotImplementedError

    def knobs(self) -> dict:
        """Everything the scores depend on besides model/data/seed: part of the score-cache key."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    @staticmethod
    def weights(model: nn.Module) -> dict[str, nn.Parameter]:
        return prunable_weights(model, prune_classifier=True)


def check_hessian_params(value: str, criterion: str) -> str:
    if value not in HESSIAN_PARAMS:
        raise PaiConfigError(f"pruner.hessian_params={value!r} must be one of {', '.join(HESSIAN_PARAMS)} "
                             f"(pruner={criterion})")
    return value


def hessian_parameters(model: nn.Module, which: str) -> list[str]:
    """The names of the parameters that a Hessian product differentiates (the `hessian_params` knob):

    - `all`: every trainable parameter (requires_grad: convolutions, Linear layers, BN γ/β, biases), in the
      model's order, as the reference code's `model.parameters()`; a frozen Conv/Linear weight is added, since
      every scored weight must be differentiated;
    - `prunable`: the Conv/Linear weights except the classifier (the weights pruned at
      prune.prune_classifier=false);
    - `prunable_classifier`: every Conv/Linear weight, classifier included.

    H z and H g of a weight sum over the other differentiated parameters (Σ_l H_jl v_l), so the set changes
    GraSP exactly and the Hutchinson estimates' noise (Σ_{l≠j} H_jl z_j z_l), though not their expectation.
    """
    scored = Criterion.weights(model)
    if which == "prunable_classifier":
        return list(scored)
    if which == "prunable":
        return list(prunable_weights(model, prune_classifier=False))
    if which == "all":
        return [n for n, p in model.named_parameters() if p.requires_grad or n in scored]
    raise ValueError(f"hessian_params={which!r} must be one of {HESSIAN_PARAMS}")


class SampleCriterion(Criterion):
    """A data-dependent criterion built from statistics of the scoring samples' gradients.

    Knobs (all part of the score-cache key): `temperature` T (the loss uses logits / T), `score_batch_size`
    (samples whose gradient is averaged before squaring: the reference's mask batch, 1 = per-sample), `path`
    (how the statistics are computed: `loop` is the batch-1 reference, the others give the same numbers up to
    rounding, see pai.pruning.estimators.per_sample) and `chunk_size` (groups per vectorised call; bounds memory).
    """

    paths: tuple[str, ...] = REFERENCE_PATHS

    def __init__(self, temperature: float = 1.0, score_batch_size: int = 1, path: str = "fast",
                 chunk_size: int = 32):
        if path not in self.paths:
            raise PaiConfigError(f"pruner.path={path!r} must be one of {self.paths} (pruner={self.name})")
        self._require_positive(temperature=temperature, score_batch_size=score_batch_size, chunk_size=chunk_size)
        self.temperature = float(temperature)
        self.score_batch_size = int(score_batch_size)
        self.path = path
        self.chunk_size = int(chunk_size)

    def _require_positive(self, **knobs: float) -> None:
        for key, value in knobs.items():
            if not value > 0:
                raise PaiConfigError(f"pruner.{key}={value!r} must be > 0 (pruner={self.name})")


class SecondOrderCriterion(SampleCriterion):
    """θ, the mean gradient g and a curvature diagonal D (empirical Fisher, Hutchinson, Gauss–Newton), scored
    in one of three forms shared by every family:

    - `diag`: D;
    - `obd`: ½ θ² ⊙ D, Optimal Brain Damage (LeCun et al. 1989): the second-order loss change of removing a
      weight at a minimum;
    - `taylor`: |θ ⊙ g + ½ θ² ⊙ D|, the second-order Taylor sensitivity with the paper's sign of θ ⊙ g
      (removing the weight, Δθ = −θ, would give −θ ⊙ g).
    """

    form: str = "diag"

    def moments(self, model: nn.Module, inputs: Tensor, targets: Tensor, gradient: bool) -> tuple[Scores | None,
                                                                                                 Scores]:
        """(g or None when not `gradient`, D)."""
        raise NotImplementedError

    def score(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> Scores:
        theta = {n: w.detach() for n, w in self.weights(model).items()}
        g, d = self.moments(model, inputs, targets, self.form == "taylor")
        if self.form == "diag":
            return d
        if self.form == "obd":
            return {n: 0.5 * theta[n].square() * d[n] for n in d}
        assert g is not None
        return {n: (theta[n] * g[n] + 0.5 * theta[n].square() * d[n]).abs() for n in d}
