"""The sparsity after each round of iterative pruning (SynFlow's 100 rounds and `prune.rounds`)."""

from __future__ import annotations

from pai.errors import PaiConfigError

# seed_inverted*: reproductions of a defect of the paper's reference code, kept only to measure it
# (docs/departures.md); never a default except for `pruner=synflow_seed`.
SCHEDULES = ("exponential", "linear", "seed_inverted", "seed_inverted_linear")


def schedule_sparsities(sparsity: float, rounds: int, schedule: str = "exponential") -> list[float]:
    """Sparsity after each of `rounds` pruning rounds, ending at `sparsity`.

    exponential: density d^(r/R) (SynFlow); linear: sparsity s·r/R.

    seed_inverted: sparsity s^(r/R), the exponential formula fed the sparsity s where it wants the density d,
    as the reference code does. Round 1 keeps almost nothing (s = 0.9, R = 100: sparsity 0.99895), later rounds
    re-admit weights that are already zero, and only the last round reaches s. seed_inverted_linear is the
    linear analogue: sparsity 1 − d·r/R, which also starts near 1 and falls to s.
    """
    steps = range(1, rounds + 1)
    if schedule == "exponential":
        return [1.0 - (1.0 - sparsity) ** (r / rounds) for r in steps]
    if schedule == "linear":
        return [sparsity * r / rounds for r in steps]
    if schedule == "seed_inverted":
        return [sparsity ** (r / rounds) for r in steps]
    if schedule == "seed_inverted_linear":
        return [1.0 - (1.0 - sparsity) * r / rounds for r in steps]
    raise PaiConfigError(f"prune.schedule={schedule!r} must be one of {SCHEDULES}")
