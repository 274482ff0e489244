"""Accuracy tables: a tidy summary (one row per group × criterion × sparsity) and its Markdown rendering."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

DENSE = "none"
# The report's row order (tables, plot legends and colours): the options of conf/pruner/ (tests/
# test_sweep_presets.py checks that these are the same), in the paper's order by family.
CRITERION_ORDER = (
    "none", "random", "magnitude", "grad_norm", "snip", "grasp", "grasp_reference", "synflow", "synflow_seed",
    "fisher_diag", "fisher_pruner", "fts", "hutch_diag", "hutch_pruning", "hts", "ggn_diag", "obd", "ggn_taylor",
    "fisher_mc",
)
# One table (and one set of plots) per value of these. `scope` is in the key because pooling global- and
# layer-wise masks into one cell would average two different experiments.
GROUP_KEYS = ["dataset", "model", "scope", "bn_warmup"]
SUMMARY_COLUMNS = GROUP_KEYS + ["criterion", "pruner", "sparsity", "mean", "std", "n", "best"]
STD_DDOF = 1  # sample standard deviation over seeds, as pandas' default; undefined (NaN) for n = 1


def criterion_order(pairs: pd.DataFrame) -> list[str]:
    """Criteria (`criterion` column) sorted: `none`, then CRITERION_ORDER by pruner, then others A→Z.

    Labelled variants of one pruner (e.g. `hutch_diag@T1`) sit next to that pruner, sorted by label.
    """
    first = pairs.drop_duplicates("criterion").set_index("criterion")["pruner"]

    def key(name: str) -> tuple:
        pruner = first.get(name) or name
        rank = CRITERION_ORDER.index(pruner) if pruner in CRITERION_ORDER else len(CRITERION_ORDER)
        return (rank, pruner, name != pruner, name)

    return sorted(first.index, key=key)


def group_name(key: tuple) -> str:
    """File-name-safe name of one (dataset, model, scope, bn_warmup) group."""
    dataset, model, scope, warm = key
    raw = f"{dataset}-{model}-{scope}-{'bnwarmup' if warm else 'nowarmup'}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", raw)


def summarize(done: pd.DataFrame) -> pd.DataFrame:
    """Tidy accuracy summary of finished runs, in % (columns: SUMMARY_COLUMNS).

    Runs are first averaged per seed (a rerun of the same seed is one sample, not two), then mean/std/n are
    taken over seeds. Every `none` run of a dataset and model is the dense baseline: its statistics are
    repeated in each sparsity column of every group of that dataset and model (with and without BN warmup,
    any scope; sparsity NaN when nothing of that model was pruned). `best` marks, per
    column, the pruned criteria whose mean equals the column maximum; the dense row is never best.
    """
    d = done.assign(acc=done["test_acc"] * 100.0)
    pruners = d[["criterion", "pruner"]].drop_duplicates("criterion")
    dense_mask = d["pruner"] == DENSE

    def stats(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
        per_seed = frame.groupby(keys + ["seed"])["acc"].mean()
        out = per_seed.groupby(level=keys).agg(mean="mean", std=lambda s: s.std(ddof=STD_DDOF), n="count")
        return out.reset_index()

    keys = GROUP_KEYS + ["criterion"]
    parts = []
    pruned = d[~dense_mask]
    if len(pruned):
        parts.append(stats(pruned, keys + ["sparsity"]))
    if dense_mask.any():
        # The dense baseline is one run per (dataset, model, seed) whatever scope or BN warmup a sweep asks for
        # (it prunes nothing), so it joins every group of its dataset and model.
        model_keys = ["dataset", "model"]
        dense = stats(d[dense_mask], model_keys + ["criterion"])
        columns = pruned[GROUP_KEYS + ["sparsity"]].drop_duplicates()
        parts.append(dense.merge(columns, on=model_keys, how="inner"))
        alone = ~d[model_keys].apply(tuple, axis=1).isin(set(columns[model_keys].apply(tuple, axis=1)))
        if (dense_mask & alone).any():  # nothing pruned for this model: its own group, sparsity NaN
            parts.append(stats(d[dense_mask & alone], keys).assign(sparsity=np.nan))
    out = pd.concat(parts, ignore_index=True).merge(pruners, on="criterion", how="left")
    out["n"] = out["n"].astype(int)
    is_dense = out["pruner"] == DENSE
    col_max = out[~is_dense].groupby(GROUP_KEYS + ["sparsity"], dropna=False)["mean"].transform("max")
    out["best"] = False
    out.loc[~is_dense, "best"] = np.isclose(out.loc[~is_dense, "mean"], col_max, rtol=0.0, atol=1e-9)
    return out[SUMMARY_COLUMNS].sort_values(GROUP_KEYS + ["sparsity", "criterion"]).reset_index(drop=True)


def sparsity_label(s: float) -> str:
    return "dense" if pd.isna(s) else f"{s:g}"


def format_cell(mean: float, std: float, n: int, bold: bool = False) -> str:
    """`90.12 ± 0.31 (3)`; std is "—" when it is undefined (one seed)."""
    spread = "—" if pd.isna(std) else f"{std:.2f}"
    text = f"{mean:.2f} ± {spread} ({n})"
    return f"**{text}**" if bold else text


def wide_table(summary: pd.DataFrame, markdown: bool = True) -> pd.DataFrame:
    """One group's table: rows = criteria in CRITERION_ORDER, columns = sparsity; blank = no finished run."""
    cells = summary.assign(
        cell=[format_cell(m, s, n, b and markdown) for m, s, n, b in
              zip(summary["mean"], summary["std"], summary["n"], summary["best"], strict=True)],
        column=summary["sparsity"].map(sparsity_label),
    )
    columns = [sparsity_label(s) for s in sorted(summary["sparsity"].unique(), key=lambda s: (pd.isna(s), s))]
    wide = cells.pivot(index="criterion", columns="column", values="cell")
    wide = wide.reindex(index=criterion_order(summary), columns=columns).fillna("")
    wide.columns.name = "sparsity"
    wide.index.name = "criterion"
    return wide


def to_markdown(summary: pd.DataFrame) -> str:
    wide = wide_table(summary, markdown=True)
    # Criterion names left, numbers right-aligned so the ± columns line up.
    return wide.to_markdown(colalign=("left",) + ("right",) * wide.shape[1])
