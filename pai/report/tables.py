"""Accuracy tables: a tidy summary (one row per group × criterion × sparsity) and its Markdown rendering."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from pai.report.stats import ALPHA, holm, mean_ci, paired, scipy_stats
from pai.results import ROW_SUFFIX

DENSE = "none"
# Keys whose every value the dense baseline's runs stand for (it is trained once per dataset, model and seed).
DENSE_JOINS_EVERY = ("sparsity", "bn_warmup", "scope")
# The report's row order (tables, plot legends and colours): the options of conf/pruner/ (tests/
# test_sweep_presets.py checks that these are the same), in the paper's order by family.
CRITERION_ORDER = (
    "none", "random", "magnitude", "grad_norm", "snip", "grasp", "grasp_reference", "synflow", "synflow_seed",
    "fisher_diag", "fisher_pruner", "fts", "hutch_diag", "hutch_pruning", "hts", "ggn_diag", "obd", "ggn_taylor",
    "fisher_mc",
)
# Options of conf/pruner/ that reproduce a defect of the paper's reference code rather than a criterion: the paper
# grids leave them out (`glob(*,exclude=...)`), and a report table that holds one says so under it.
DEFECT_REPRODUCTIONS = {
    "synflow_seed": "reproduces a defect of the reference code (its SynFlow schedule prunes to sparsity^(r/R), "
                    "fed the sparsity instead of the density); it is not SynFlow (docs/departures.md)",
}
# One table (and one set of plots) per value of these. `scope` is in the key because pooling global- and
# layer-wise masks into one cell would average two different experiments.
GROUP_KEYS = ["dataset", "model", "scope", "bn_warmup"]
SUMMARY_COLUMNS = GROUP_KEYS + ["criterion", "pruner", "sparsity", "mean", "std", "ci_low", "ci_high", "n", "best"]
COMPARISON_COLUMNS = GROUP_KEYS + ["sparsity", "kind", "criterion", "reference", "n", "diff", "ci_low", "ci_high", "p",
                                   "p_holm", "significant"]
ABLATION_SUFFIXES = tuple(ROW_SUFFIX.values())  # `snip+shuffle`, `snip+reinit`
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


def per_seed(done: pd.DataFrame) -> pd.DataFrame:
    """Accuracy in % per group × criterion × sparsity × seed (runs of one seed averaged: a rerun of the same seed
    is one sample, not two). Every `none` run of a dataset and model is the dense baseline: its seeds are repeated
    in each sparsity column of every group of that dataset and model (with and without BN warmup, any scope;
    sparsity NaN when nothing of that model was pruned)."""
    d = done.assign(acc=done["test_acc"] * 100.0)
    dense_mask = d["pruner"] == DENSE
    keys = GROUP_KEYS + ["criterion", "pruner"]
    parts = []
    pruned = d[~dense_mask]
    if len(pruned):
        parts.append(pruned.groupby(keys + ["sparsity", "seed"], dropna=False)["acc"].mean().reset_index())
    if dense_mask.any():
        model_keys = ["dataset", "model"]
        dense = d[dense_mask].groupby(model_keys + ["criterion", "pruner", "seed"])["acc"].mean().reset_index()
        columns = pruned[GROUP_KEYS + ["sparsity"]].drop_duplicates()
        parts.append(dense.merge(columns, on=model_keys, how="inner"))
        alone = ~d[model_keys].apply(tuple, axis=1).isin(set(columns[model_keys].apply(tuple, axis=1)))
        if (dense_mask & alone).any():  # nothing pruned for this model: its own group, sparsity NaN
            lonely = d[dense_mask & alone].groupby(keys + ["seed"])["acc"].mean().reset_index()
            parts.append(lonely.assign(sparsity=np.nan))
    out = pd.concat(parts, ignore_index=True)
    return out[keys + ["sparsity", "seed", "acc"]]


def _series(seeds: pd.DataFrame, criterion: str) -> pd.Series:
    rows = seeds[seeds["criterion"] == criterion]
    return rows.set_index("seed")["acc"]


def summarize(done: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Tidy accuracy summary of finished runs, in % (columns: SUMMARY_COLUMNS).

    mean/std/n over seeds (`per_seed`), ci_low/ci_high the 95 % t interval of the mean. `best` marks, per column,
    the highest pruned mean only when a paired t-test over shared seeds puts it significantly (p < alpha) ahead
    of the runner-up; the dense row is never best.
    """
    seeds = per_seed(done)
    cell = GROUP_KEYS + ["criterion", "pruner", "sparsity"]
    rows = []
    for key, frame in seeds.groupby(cell, dropna=False, sort=False):
        mean, low, high = mean_ci(frame["acc"].to_numpy())
        std = frame["acc"].std(ddof=STD_DDOF) if len(frame) > 1 else np.nan
        rows.append({**dict(zip(cell, key, strict=True)), "mean": mean, "std": std, "ci_low": low, "ci_high": high,
                     "n": len(frame)})
    out = pd.DataFrame(rows)
    out["n"] = out["n"].astype(int)
    out["best"] = False
    columns = dict(iter(seeds.groupby(GROUP_KEYS + ["sparsity"], dropna=False)))
    for key, column in out[out["pruner"] != DENSE].groupby(GROUP_KEYS + ["sparsity"], dropna=False):
        if len(column) < 2:
            continue
        top = column.sort_values("mean", ascending=False, kind="stable")
        first, second = top["criterion"].iloc[0], top["criterion"].iloc[1]
        result = paired(_series(columns[key], first), _series(columns[key], second))
        if result.diff > 0 and result.p < alpha:
            out.loc[top.index[0], "best"] = True
    return out[SUMMARY_COLUMNS].sort_values(GROUP_KEYS + ["sparsity", "criterion"]).reset_index(drop=True)


def comparisons(done: pd.DataFrame, baseline: str = "random", alpha: float = ALPHA) -> pd.DataFrame:
    """Paired comparisons per table column (group × sparsity), columns COMPARISON_COLUMNS:

    - kind `baseline`: every other criterion (not the dense row) minus `baseline` (`baseline:shuffle` for the
      layer-shuffled rows, a table of their own);
    - kind `ablation`: a criterion minus its own ablated row (`snip` − `snip+shuffle`): positive = the
      criterion's mask carries information that the ablation destroys.
    Runs pair by seed. p is the paired t-test's; p_holm is Holm-corrected over the rows of one table (one
    group, sparsity and kind — for ablations, one ablation); `significant` = p_holm < alpha.
    """
    seeds = per_seed(done)
    rows = []
    for key, column in seeds.groupby(GROUP_KEYS + ["sparsity"], dropna=False):
        where = dict(zip(GROUP_KEYS + ["sparsity"], key, strict=True))
        names = criterion_order(column)
        pruners = column.drop_duplicates("criterion").set_index("criterion")["pruner"]
        if baseline in names:
            ref = _series(column, baseline)
            for name in names:
                if name != baseline and pruners[name] != DENSE:
                    _, sep, suffix = name.rpartition("+")
                    kind = f"baseline:{suffix}" if sep and suffix in ABLATION_SUFFIXES else "baseline"
                    rows.append({**where, "kind": kind, "criterion": name, "reference": baseline,
                                 **paired(_series(column, name), ref).as_dict()})
        for name in names:
            base, sep, suffix = name.rpartition("+")
            if sep and base in names and suffix in ABLATION_SUFFIXES:
                rows.append({**where, "kind": f"ablation:{suffix}", "criterion": base, "reference": name,
                             **paired(_series(column, base), _series(column, name)).as_dict()})
    out = pd.DataFrame(rows, columns=COMPARISON_COLUMNS[:-2])
    out["p_holm"] = np.nan
    for _, table in out.groupby(GROUP_KEYS + ["sparsity", "kind"], dropna=False):
        out.loc[table.index, "p_holm"] = holm(table["p"].to_numpy())
    out["significant"] = out["p_holm"] < alpha
    return out[COMPARISON_COLUMNS].reset_index(drop=True)


def sparsity_label(s: float) -> str:
    return "dense" if pd.isna(s) else f"{s:g}"


def format_cell(mean: float, low: float, high: float, n: int, bold: bool = False, mark: str = "") -> str:
    """`90.12 [89.50, 90.74] (3)`: mean, 95 % t interval, number of seeds; `95.00 (1)` for one seed."""
    interval = "" if pd.isna(low) else f" [{low:.2f}, {high:.2f}]"
    text = f"{mean:.2f}{interval} ({n})"
    text = f"**{text}**" if bold else text
    return f"{text} {mark}" if mark else text


def format_p(p: float) -> str:
    """`=0.012`, `<0.001`, `=n/a` (fewer than two pairs, or identical differences)."""
    return "=n/a" if pd.isna(p) else "<0.001" if p < 0.001 else f"={p:.3f}"


def baseline_marks(comps: pd.DataFrame) -> dict[tuple[str, float], str]:
    """↑ / ↓ for the cells significantly above / below the baseline (Holm-corrected paired test)."""
    rows = comps[comps["kind"].str.startswith("baseline") & comps["significant"]]
    return {(r.criterion, r.sparsity): "↑" if r.diff > 0 else "↓" for r in rows.itertuples()}


def _wide(frame: pd.DataFrame, cells: list[str], order: list[str]) -> pd.DataFrame:
    frame = frame.assign(cell=cells, column=frame["sparsity"].map(sparsity_label))
    columns = [sparsity_label(s) for s in sorted(frame["sparsity"].unique(), key=lambda s: (pd.isna(s), s))]
    wide = frame.pivot(index="criterion", columns="column", values="cell")
    wide = wide.reindex(index=[o for o in order if o in wide.index], columns=columns).fillna("")
    wide.columns.name = "sparsity"
    wide.index.name = "criterion"
    return wide


def wide_table(summary: pd.DataFrame, markdown: bool = True,
               marks: dict[tuple[str, float], str] | None = None) -> pd.DataFrame:
    """One group's table: rows = criteria in CRITERION_ORDER, columns = sparsity; blank = no finished run."""
    marks = marks or {}
    cells = [format_cell(r.mean, r.ci_low, r.ci_high, r.n, bool(r.best) and markdown,
                         marks.get((r.criterion, r.sparsity), "")) for r in summary.itertuples()]
    return _wide(summary, cells, criterion_order(summary))


def _markdown(wide: pd.DataFrame) -> str:
    # Criterion names left, numbers right-aligned so the columns line up.
    return wide.to_markdown(colalign=("left",) + ("right",) * wide.shape[1])


def to_markdown(summary: pd.DataFrame, marks: dict[tuple[str, float], str] | None = None) -> str:
    return _markdown(wide_table(summary, True, marks))


def comparison_markdown(comps: pd.DataFrame, kind: str, order: list[str]) -> str:
    """One kind of paired comparison as a table: `+3.10 [1.20, 5.00] p=0.012* (5)` per cell (difference in
    points, its 95 % t interval, Holm-corrected p, * = significant, number of paired seeds); "" if none."""
    rows = comps[comps["kind"] == kind]
    if rows.empty:
        return ""
    cells = [f"{r.diff:+.2f}" + ("" if pd.isna(r.ci_low) else f" [{r.ci_low:+.2f}, {r.ci_high:+.2f}]")
             + f" p{format_p(r.p_holm)}{'*' if r.significant else ''} ({r.n})" for r in rows.itertuples()]
    return _markdown(_wide(rows, cells, order))


CONNECTIVITY_COLUMNS = GROUP_KEYS + ["criterion", "pruner", "sparsity", "n", "nominal", "effective",
                                     "effectively_empty", "collapsed", "accuracy"]


def connectivity(done: pd.DataFrame) -> pd.DataFrame:
    """Nominal (`sparsity_achieved`) vs effective sparsity per group × criterion × sparsity, means over the runs
    that recorded an effective sparsity (columns CONNECTIVITY_COLUMNS; accuracy in %)."""
    d = done[(done["pruner"] != DENSE) & done["effective_sparsity"].notna()]
    if d.empty:
        return pd.DataFrame(columns=CONNECTIVITY_COLUMNS)
    d = d.assign(effectively_empty=d["n_effectively_empty"], accuracy=d["test_acc"] * 100.0)
    out = d.groupby(GROUP_KEYS + ["criterion", "pruner", "sparsity"], dropna=False).agg(
        n=("seed", "nunique"), nominal=("sparsity_achieved", "mean"), effective=("effective_sparsity", "mean"),
        effectively_empty=("effectively_empty", "mean"), collapsed=("n_collapsed", "mean"),
        accuracy=("accuracy", "mean")).reset_index()
    return out[CONNECTIVITY_COLUMNS]


MIN_CORRELATION_ROWS = 5  # Spearman's p (t approximation) means little over fewer criteria


def connectivity_markdown(conn: pd.DataFrame, order: list[str]) -> str:
    """`0.9800 → 0.9871 (2.0 empty, 1.0 collapsed)`: nominal → effective sparsity (mean effectively empty and
    collapsed layers per run),
    then, per sparsity, Spearman's rank correlation between effective sparsity and accuracy over the criteria's
    own masks."""
    if conn.empty:
        return ""
    cells = [f"{r.nominal:.4f} → {r.effective:.4f} ({r.effectively_empty:.1f} empty, {r.collapsed:.1f} collapsed)"
             for r in conn.itertuples()]
    lines = [_markdown(_wide(conn, cells, order)), ""]
    own = conn[~conn["criterion"].str.contains("+", regex=False)]
    for sp, column in own.groupby("sparsity"):
        if len(column) >= MIN_CORRELATION_ROWS and column["effective"].nunique() > 1:
            rho, p = scipy_stats().spearmanr(column["effective"], column["accuracy"])
            lines.append(f"- sparsity {sparsity_label(sp)}: Spearman ρ(effective sparsity, mean accuracy) over "
                         f"{len(column)} criteria = {rho:+.2f}, p{format_p(p)}")
    return "\n".join(lines).rstrip() + "\n"
