"""Report figures. Built on `matplotlib.figure.Figure` (Agg canvas), never pyplot: no global figure state,
no GUI backend, safe to call from tests and from a headless cluster node."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pai.report.tables import CRITERION_ORDER, DENSE, criterion_order, sparsity_label

COLLAPSED_LABEL = "collapsed (≥1 seed)"
ERROR_BARS = "95 % CI over seeds"  # what the accuracy plot's error bars show (said in its legend)
TICK_PT = 8  # smallest tick-label size, in points at the saved size
# Markers and line styles cycle with different periods (15 and 4), so criteria that share one still differ in
# the other, and lines that coincide (snip and fts often do) stay distinguishable.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h", "p", "d", "8", "H")
LINESTYLES = ("-", "--", "-.", ":")


def _colors(names: list[str]) -> dict[str, tuple]:
    """A fixed colour per known criterion, so a criterion keeps its colour across every figure."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    slots = list(range(0, 20, 2)) + list(range(1, 20, 2))  # tab20's strong colours first, then the pale ones
    known = [n for n in names if n in CRITERION_ORDER]
    others = [n for n in names if n not in CRITERION_ORDER]
    out = {n: cmap(slots[(CRITERION_ORDER.index(n) - 1) % 20]) for n in known}
    out.update({n: cmap(slots[(len(CRITERION_ORDER) - 1 + i) % 20]) for i, n in enumerate(others)})
    return out


def _slot(name: str, names: list[str]) -> int:
    """A criterion's fixed position: its index in CRITERION_ORDER, else after them in `names` order."""
    if name in CRITERION_ORDER:
        return CRITERION_ORDER.index(name)
    others = [n for n in names if n not in CRITERION_ORDER]
    return len(CRITERION_ORDER) + others.index(name)


def _styles(names: list[str]) -> dict[str, dict]:
    """A fixed colour, marker and line style per criterion (matplotlib keyword arguments)."""
    colors = _colors(names)
    return {n: {"color": colors[n], "marker": MARKERS[_slot(n, names) % len(MARKERS)],
                "ls": LINESTYLES[_slot(n, names) % len(LINESTYLES)]} for n in names}


ABLATION_STYLES = {"shuffle": "--", "reinit": ":"}  # `snip+shuffle`: snip's colour and marker, hollow, dashed


def _base(name: str) -> tuple[str, str]:
    """(`snip`, `--`) for `snip+shuffle`; (name, `-`) for a criterion's own mask."""
    base, sep, suffix = name.rpartition("+")
    return (base, ABLATION_STYLES[suffix]) if sep and suffix in ABLATION_STYLES else (name, "-")


def accuracy_figure(summary: pd.DataFrame, title: str) -> Figure:
    """Test accuracy (%) vs sparsity, one line per criterion with 95 % t confidence intervals over seeds as
    error bars; dense as a horizontal line with its interval as a band. Every criterion has its own colour,
    marker and line style; ablated rows (`snip+shuffle`) share their criterion's colour and marker, hollow and
    dashed (dotted for `+reinit`).

    Sparsity levels are equally spaced (0.8, 0.9, 0.95, 0.98, 0.99 would crowd a linear axis), and the criteria
    at one level are dodged sideways so that their intervals do not hide each other.
    """
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    levels = sorted(summary["sparsity"].dropna().unique())
    pos = {s: i for i, s in enumerate(levels)}
    names = criterion_order(summary)
    styles = _styles(list(dict.fromkeys(_base(n)[0] for n in names)))
    pruned = [n for n in names if summary.loc[summary["criterion"] == n, "pruner"].iloc[0] != DENSE]
    width = min(0.6, 0.06 * len(pruned))  # total spread of the dodged points at one level
    offsets = {n: (i - (len(pruned) - 1) / 2) * (width / max(len(pruned) - 1, 1)) for i, n in enumerate(pruned)}
    for name in names:
        rows = summary[summary["criterion"] == name]
        if rows["pruner"].iloc[0] == DENSE:
            row = rows.iloc[0]
            ax.axhline(row["mean"], color="black", ls="--", lw=1, label=f"dense ({row['mean']:.2f}, n={row['n']})")
            if pd.notna(row["ci_low"]) and row["ci_high"] > row["ci_low"]:
                ax.axhspan(row["ci_low"], row["ci_high"], color="black", alpha=0.08, lw=0)
            continue
        rows = rows.sort_values("sparsity")
        base, ablated = _base(name)
        style = styles[base] if ablated == "-" else {**styles[base], "ls": ablated, "mfc": "none"}
        low = (rows["mean"] - rows["ci_low"]).fillna(0.0).to_numpy()
        high = (rows["ci_high"] - rows["mean"]).fillna(0.0).to_numpy()
        ax.errorbar([pos[s] + offsets[name] for s in rows["sparsity"]], rows["mean"], yerr=[low, high],
                    ms=5, capsize=3, label=name, **style)
    ax.set_xticks(range(len(levels)), [sparsity_label(s) for s in levels])
    ax.set_xlabel("sparsity")
    n = summary["n"]
    seeds = f"n = {n.min()}" if n.min() == n.max() else f"n = {n.min()}–{n.max()}"
    ax.set_ylabel(f"test accuracy (%): mean, 95 % CI over seeds ({seeds})")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncols=2, title=f"error bars: {ERROR_BARS}", title_fontsize=8)
    return fig


def density_figure(runs: pd.DataFrame, sparsity: float, title: str) -> Figure | None:
    """Kept fraction per prunable layer (network order) for each criterion at one sparsity, mean over seeds.

    A layer fully pruned in at least one seed is marked with a red x (at its mean density). None when no
    pruned run of `runs` has that sparsity.
    """
    at = runs[np.isclose(runs["sparsity"], sparsity) & (runs["pruner"] != DENSE)]
    if at.empty:
        return None
    layers: list[str] = []
    for density in at["layer_density"]:  # union in first-seen order = network order
        layers.extend(k for k in density if k not in layers)
    idx = {name: i for i, name in enumerate(layers)}
    fig = Figure(figsize=(max(7.0, 0.22 * len(layers) + 2), 4.8), layout="constrained")
    ax = fig.add_subplot()
    names = criterion_order(at)
    styles = _styles(names)
    marked = False
    for name in names:
        rows = at[at["criterion"] == name]
        table = pd.DataFrame(list(rows["layer_density"])).reindex(columns=layers)
        mean = table.mean(axis=0).to_numpy()
        ax.plot(range(len(layers)), mean, lw=1, ms=4, label=name, **styles[name])
        collapsed = set().union(*rows["collapsed_layers"]) | set(table.columns[(table == 0).any(axis=0)])
        xs = sorted(idx[c] for c in collapsed if c in idx)
        if xs:
            ax.plot(xs, mean[xs], ls="none", marker="x", ms=9, mew=2, color="red", clip_on=False, zorder=5,
                    label=None if marked else COLLAPSED_LABEL)
            marked = True
    ax.axhline(1.0 - sparsity, color="gray", ls=":", lw=1, label=f"uniform ({1.0 - sparsity:.3g})")
    short = [n.removesuffix(".weight") for n in layers]
    ax.set_xticks(range(len(layers)), short, rotation=90, fontsize=TICK_PT)
    # Log-like axis (densities at high sparsity span decades) that still shows 0 = collapsed, linear below 1e-3.
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_ylim(0.0, 1.2)
    ax.set_xlabel("layer (network order)")
    ax.set_ylabel("remaining density")
    ax.set_title(f"{title} — sparsity {sparsity:g}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncols=2)
    return fig


def score_time_stats(runs: pd.DataFrame) -> pd.DataFrame:
    """Scoring time per criterion (mean, std, count over the pruned runs that scored), in criterion order.

    Runs whose scores came from the cache (`cache_hit`: no scoring ran, score_seconds 0) are left out: they
    would pull every mean toward 0.
    """
    scored = ~runs["cache_hit"].eq(True)  # None/NaN (not recorded) counts as scored
    d = runs[(runs["pruner"] != DENSE) & runs["score_seconds"].notna() & scored]
    return d.groupby("criterion")["score_seconds"].agg(["mean", "std", "count"]).reindex(criterion_order(d))


def score_time_figure(runs: pd.DataFrame, title: str) -> Figure | None:
    """Mean scoring time per criterion (bars on a log axis, ±std over runs that scored, cache hits left out);
    None when no pruned run scored."""
    stats = score_time_stats(runs)
    if stats.empty:
        return None
    names = list(stats.index)
    fig = Figure(figsize=(max(6.0, 0.6 * len(names) + 2), 4.2), layout="constrained")
    ax = fig.add_subplot()
    colors = _colors(names)
    ax.bar(range(len(names)), stats["mean"], yerr=stats["std"].fillna(0.0), capsize=3,
           color=[colors[n] for n in names])
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yscale("log")  # times span 0.01 s to hours: sub-second bars would vanish on a linear axis
    ax.set_ylabel("scoring time (s, mean over runs that scored, log scale)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return fig


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
