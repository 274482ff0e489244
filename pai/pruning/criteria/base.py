"""The criterion contract: a criterion only computes scores (higher = keep); masks, schedules and caching are
shared machinery (pai.pruning)."""

from __future__ import annotations

from torch import Tensor, nn

from pai.pruning.masks import prunable_weights

Scores = dict[str, Tensor]


class Criterion:
    """Scores every Conv/Linear weight of `model`; the pipeline keeps the prunable ones.

    Subclasses implement `score` and must leave the model as they found it (weights, buffers, train/eval mode).
    """

    name: str = "criterion"
    data_free: bool = False  # uses only the input shape of the scoring samples
    prunes: bool = True  # False for the dense baseline
    default_rounds: int = 1  # scoring rounds when prune.rounds is null

    def score(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> Scores:
        raise NotImplementedError

    def knobs(self) -> dict:
        """Everything the scores depend on besides model/data/seed: part of the score-cache key."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    @staticmethod
    def weights(model: nn.Module) -> dict[str, nn.Parameter]:
        return prunable_weights(model, prune_classifier=True)
