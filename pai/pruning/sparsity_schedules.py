"""The sparsity after each round of iterative pruning (SynFlow's 100 rounds and `prune.rounds`)."""

from __future__ import annotations

from pai.errors import PaiConfigError

SCHEDULES = ("exponential", "linear")


def schedule_sparsities(sparsity: float, rounds: int, schedule: str = "exponential") -> list[float]:
    """Sparsity after each of `rounds` pruning rounds, ending at `sparsity`.

    exponential: density d^(r/R) (SynFlow); linear: sparsity r/R.
    """
    if schedule == "exponential":
        return [1.0 - (1.0 - sparsity) ** (r / rounds) for r in range(1, rounds + 1)]
    if schedule == "linear":
        return [sparsity * r / rounds for r in range(1, rounds + 1)]
    raise PaiConfigError(f"prune.schedule={schedule!r} must be one of {SCHEDULES}")
