"""The `prune:` node of the config (options shared by every criterion), typed and validated before any work,
as `pai.train.recipe.Recipe` is for the `train:` node."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from pai.build import resolved
from pai.errors import PaiConfigError, check_int
from pai.pruning.ablations import ABLATIONS
from pai.pruning.mask_calculator import SCOPES
from pai.pruning.sparsity_schedules import SCHEDULES


@dataclass(frozen=True)
class PruneOptions:
    scope: str = "global"  # global | layer
    samples_per_class: int = 10  # scoring samples per class
    augment: bool = True  # scoring samples get the training augmentation
    score_batch_size: int = 1  # samples averaged before a gradient is squared (1 = per-sample)
    bn_warmup: bool = False  # refresh BN running statistics before scoring
    prune_classifier: bool = False  # also prune the final Linear layer
    rounds: int | None = None  # scoring rounds; None = the criterion's default
    schedule: str | None = None  # sparsity schedule between rounds; None = the criterion's default
    invert: bool = False  # keep the lowest scores instead
    ablation: str = "none"  # none | layer_shuffle | reinit: a sanity check applied to the final mask
    cache: bool = True  # reuse single-round scores across sparsities
    mask_from: str | None = None  # train this mask (a masks.safetensors or a run directory) instead of scoring

    def __post_init__(self) -> None:
        _one_of("scope", self.scope, SCOPES)
        if self.schedule is not None:
            _one_of("schedule", self.schedule, SCHEDULES)
        _one_of("ablation", self.ablation, ABLATIONS)
        for key in ("augment", "bn_warmup", "prune_classifier", "invert", "cache"):
            if not isinstance(getattr(self, key), bool):
                raise PaiConfigError(f"prune.{key}={getattr(self, key)!r} must be true or false")
        for key in ("samples_per_class", "score_batch_size"):
            check_int(f"prune.{key}", getattr(self, key), minimum=1)
        if self.rounds is not None:
            check_int("prune.rounds", self.rounds, minimum=1)
        if self.mask_from is not None:
            if not isinstance(self.mask_from, str) or not self.mask_from:
                raise PaiConfigError(f"prune.mask_from={self.mask_from!r} must be a path (a masks file or a run "
                                     "directory) or null")
            if self.invert:
                raise PaiConfigError("prune.invert=true needs scores to invert; with prune.mask_from the mask is "
                                     "given (invert it before, or drop prune.invert)")

    @classmethod
    def from_config(cls, node: DictConfig | dict[str, Any] | None) -> PruneOptions:
        values = resolved(node) if isinstance(node, DictConfig) else dict(node or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PaiConfigError(f"prune.{unknown[0]}: unknown option (known: {', '.join(sorted(known))})")
        return cls(**values)

    def rounds_for(self, default_rounds: int) -> int:
        """Scoring rounds: `rounds` when set, else the criterion's default (1; SynFlow 100)."""
        return self.rounds if self.rounds is not None else default_rounds

    def schedule_for(self, default_schedule: str) -> str:
        return schedule_for(self.schedule, default_schedule)


def schedule_for(schedule: str | None, default_schedule: str) -> str:
    """The sparsity schedule that runs: `prune.schedule` when set, else the criterion's default (exponential;
    synflow_seed: seed_inverted). The config hash names this schedule too (pai.results.config_hash)."""
    return schedule if schedule is not None else default_schedule


def _one_of(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise PaiConfigError(f"prune.{key}={value!r} must be one of {', '.join(allowed)}")

