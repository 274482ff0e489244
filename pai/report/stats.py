"""The report's statistics, from scipy.stats: t confidence intervals of a mean over seeds, paired comparisons of
two criteria over the seeds they share, and Holm's step-down correction over the rows of a table.

Runs pair by seed: the seed fixes the initialization, the data order and the scoring samples, so the paired
difference removes the (large, shared) seed-to-seed spread that an unpaired test would have to fight.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

LEVEL = 0.95  # confidence level of every interval
ALPHA = 0.05  # significance level of every test (after Holm's correction where a table has several rows)


def scipy_stats():
    """scipy.stats, imported on first use: it costs the CLI about a second, which `--help` and the error paths
    need not pay."""
    from scipy import stats

    return stats


def mean_ci(values: np.ndarray | list[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean (ddof 1); low/high NaN for fewer than two values, and
    equal to the mean when all values are equal."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean()) if len(x) else math.nan
    if len(x) < 2:
        return mean, math.nan, math.nan
    stats = scipy_stats()
    sem = float(stats.sem(x))
    if sem == 0.0:
        return mean, mean, mean
    low, high = stats.t.interval(level, len(x) - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


@dataclass(frozen=True)
class Paired:
    """a − b over the seeds both have: n pairs, mean difference, its t interval and the paired t-test p-value
    (two-sided; NaN for fewer than two pairs or identical differences, which no t-test can judge)."""

    n: int
    diff: float
    ci_low: float
    ci_high: float
    p: float

    def as_dict(self) -> dict:
        return asdict(self)


def paired(a: pd.Series, b: pd.Series, level: float = LEVEL) -> Paired:
    """Compare two per-seed series (index = seed)."""
    common = a.index.intersection(b.index)
    d = (a.loc[common] - b.loc[common]).to_numpy(dtype=float)
    diff, low, high = mean_ci(d, level)
    if len(d) < 2 or np.ptp(d) == 0.0:
        return Paired(len(d), diff, low, high, math.nan)
    p = float(scipy_stats().ttest_rel(a.loc[common].to_numpy(float), b.loc[common].to_numpy(float)).pvalue)
    return Paired(len(d), diff, low, high, p)


def holm(pvalues: list[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control over the non-NaN p-values; NaN stays NaN).

    Sorted ascending, the i-th (0-based) of m is multiplied by (m − i); the running maximum keeps the order."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    order = valid[np.argsort(p[valid], kind="stable")]
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        out[idx] = running
    return out
