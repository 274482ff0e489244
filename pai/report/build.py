"""`build_report`: load runs → tables (md/csv) → plots (png) → report.md, all under one output directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from pai.report import plots
from pai.report.load import ReportError, load_runs
from pai.report.stats import ALPHA, LEVEL
from pai.report.tables import (
    DEFECT_REPRODUCTIONS,
    DENSE,
    DENSE_JOINS_EVERY,
    GROUP_KEYS,
    baseline_marks,
    comparison_markdown,
    comparisons,
    connectivity,
    connectivity_markdown,
    criterion_order,
    group_name,
    summarize,
    to_markdown,
)


def legend(baseline: str, alpha: float = ALPHA) -> str:
    return (
        f"Cells: mean [{LEVEL:.0%} t confidence interval] of final test accuracy in % over seeds, (n) = number of "
        f"seeds. ↑ / ↓ = significantly above / below `{baseline}` (paired t-test over shared seeds, "
        f"Holm-corrected over the rows of the column, p < {alpha:g}). **Bold** = best pruned mean of the column, "
        f"only when a paired t-test puts it ahead of the runner-up (p < {alpha:g}). `none` = dense baseline, the "
        "same seeds in every column. `X+shuffle` / `X+reinit` = X's mask shuffled inside every layer / trained "
        "from a fresh initialization (`prune.ablation`). Blank = no finished run."
    )


COMPARISON_TITLES = {
    "baseline": "Paired difference vs `{baseline}` (points; [95 % CI]; Holm-corrected p; (pairs))",
    "baseline:shuffle": "Layer-shuffled masks vs `{baseline}`",
    "baseline:reinit": "Reinitialized masks vs `{baseline}`",
    "ablation:shuffle": "Own mask − its layer-shuffled mask (positive: the mask carries information inside "
                        "layers, not only layer densities)",
    "ablation:reinit": "Own mask − the same mask trained from a fresh initialization",
}


def default_out_dir(runs_dir: str | Path) -> Path:
    """`RUNS_DIR/report`: next to the data it summarises, and never picked up as a run (no results.json); for a
    runs.csv, the report folder it came from."""
    runs_dir = Path(runs_dir)
    return runs_dir.parent if runs_dir.suffix == ".csv" else runs_dir / "report"


def _title(key: tuple) -> str:
    dataset, model, scope, warm = key
    return f"{dataset} / {model} / {scope} / bn_warmup={'on' if warm else 'off'}"


def _duplicate_note(done: pd.DataFrame) -> str | None:
    # Different configs in one cell usually mean a pruner knob was varied without a `label`: they would be
    # averaged as if they were seeds of one experiment.
    cell = GROUP_KEYS + ["criterion", "sparsity", "seed"]
    pruned = done[done["pruner"] != "none"]
    hashes = pruned.groupby(cell, dropna=False)["config_hash"].nunique()
    clash = hashes[hashes > 1]
    if clash.empty:
        return None
    where = ", ".join(f"{k[4]}@{k[5]:g} seed {k[6]}" for k in clash.index[:5])
    return (f"{len(clash)} cell(s) hold runs with different config_hash for the same seed ({where}); they are "
            "averaged per seed — give varied pruner knobs a `label`")


def _listing(frame: pd.DataFrame, title: str, runs_dir: Path) -> str:
    if frame.empty:
        return ""
    shown = frame.assign(path=[_relative(p, runs_dir) for p in frame["path"]])
    return f"\n## {title} ({len(frame)})\n\n{shown.to_markdown(index=False)}\n"


def _relative(path: str, runs_dir: Path) -> str:
    try:
        return str(Path(path).relative_to(runs_dir))
    except ValueError:
        return path


def _text(value: Any) -> str:
    """How `--only` matches a value: null/NaN = "", booleans lower case, numbers as %g."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def select(runs: pd.DataFrame, only: list[str] | None) -> pd.DataFrame:
    """Keep the runs whose COLUMN is one of the values of every `COLUMN=V1,V2` in `only` (`label=`: no label).
    The dense baseline joins every sparsity and BN-warmup column of its dataset and model (tables.per_seed), so a
    filter on those keys keeps it."""
    for item in only or []:
        column, sep, values = item.partition("=")
        if not sep or column not in runs.columns:
            raise ReportError(f"--only {item!r}: expected COLUMN=V1,V2 with COLUMN one of {', '.join(runs.columns)}")
        allowed = {v.strip().lower() for v in values.split(",")}
        keep = [_text(v).lower() in allowed for v in runs[column]]
        if column in DENSE_JOINS_EVERY:
            keep = [k or p == DENSE for k, p in zip(keep, runs["pruner"], strict=True)]
        runs = runs[keep]
    return runs.reset_index(drop=True)


def build_report(runs_dir: str | Path, out_dir: str | Path | None = None, sparsity: float | None = None,
                 baseline: str = "random", alpha: float = ALPHA, only: list[str] | None = None) -> dict[str, Any]:
    """Write tables, plots and report.md for every results.json below `runs_dir`.

    `sparsity` picks the level of the per-layer density plot (default: the highest level of each group).
    `baseline` is the row every criterion is compared with (paired by seed); `only` keeps a subset of the runs
    (`select`). Returns {"runs", "summary", "comparisons", "connectivity", "failed", "unreadable": DataFrames,
    "markdown": str, "runs_dir", "out_dir", "report_md", "summary_csv", "comparisons_csv", "runs_csv": Path,
    "tables": {group: {"md", "csv", "comparisons_csv"}}, "plots": {group: {kind: Path}}, "notes": [str]}.
    Raises ReportError when there is nothing to report on.
    """
    runs, unreadable = load_runs(runs_dir)
    runs = select(runs, only)
    done = runs[runs["status"] == "done"].reset_index(drop=True)
    failed = runs.loc[runs["status"] != "done", ["path", "status", "error"]].reset_index(drop=True)
    if done.empty:
        raise ReportError(f"no finished run below {str(runs_dir)!r}: {len(failed)} not done, "
                          f"{len(unreadable)} unreadable results.json")
    out = Path(out_dir) if out_dir is not None else default_out_dir(runs_dir)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    summary = summarize(done, alpha)
    comps = comparisons(done, baseline, alpha)
    conn = connectivity(done)
    notes = [n for n in [_duplicate_note(done)] if n]
    tables: dict[str, dict[str, Path]] = {}
    figures: dict[str, dict[str, Path]] = {}
    text = legend(baseline, alpha)
    sections = [f"# pai report: {runs_dir}\n\n{text}\n"]
    for key, group in summary.groupby(GROUP_KEYS, sort=True):
        name = group_name(key)
        group = group.reset_index(drop=True)
        in_group = (comps[GROUP_KEYS] == pd.Series(dict(zip(GROUP_KEYS, key, strict=True)))).all(axis=1)
        group_comps = comps[in_group].reset_index(drop=True)
        group_conn = conn[(conn[GROUP_KEYS] == pd.Series(dict(zip(GROUP_KEYS, key, strict=True)))).all(axis=1)]
        body = _group_markdown(key, group, group_comps, group_conn, baseline, notes)
        sections.append(f"\n## {_title(key)}\n\n{body}\n")
        paths = {"md": out / "tables" / f"{name}.md", "csv": out / "tables" / f"{name}.csv",
                 "comparisons_csv": out / "tables" / f"{name}_comparisons.csv"}
        paths["md"].write_text(f"# {_title(key)}\n\n{text}\n\n{body}\n")
        group.to_csv(paths["csv"], index=False)
        group_comps.to_csv(paths["comparisons_csv"], index=False)
        tables[name] = paths
        figures[name] = _plots(done, group, key, name, out / "plots", sparsity, notes)
    sections.append(_listing(failed, "Runs not done (left out of the tables)", Path(runs_dir)))
    sections.append(_listing(unreadable, "Unreadable results.json (left out)", Path(runs_dir)))
    markdown = "".join(sections)
    report_md = out / "report.md"
    report_md.write_text(markdown)
    summary_csv = out / "summary.csv"
    summary.to_csv(summary_csv, index=False)
    comparisons_csv = out / "comparisons.csv"
    comps.to_csv(comparisons_csv, index=False)
    conn.to_csv(out / "connectivity.csv", index=False)
    runs_csv = out / "runs.csv"
    runs.drop(columns=["layer_density", "history", "collapsed_layers", "effective_layer_density",
                       "effectively_empty_layers"]).to_csv(runs_csv, index=False)
    return {"runs": runs, "summary": summary, "comparisons": comps, "connectivity": conn, "failed": failed,
            "unreadable": unreadable, "markdown": markdown, "runs_dir": Path(runs_dir), "out_dir": out,
            "report_md": report_md, "summary_csv": summary_csv, "comparisons_csv": comparisons_csv,
            "runs_csv": runs_csv, "tables": tables, "plots": figures, "notes": notes}


def _group_markdown(key: tuple, summary: pd.DataFrame, comps: pd.DataFrame, conn: pd.DataFrame, baseline: str,
                    notes: list[str]) -> str:
    """The group's accuracy table, its paired comparisons and its nominal vs effective sparsity."""
    parts = []
    if not (summary["pruner"] == "none").any():
        notes.append(f"{_title(key)}: no dense baseline (pruner=none) in this table")
        parts.append("> **Warning:** no dense baseline (`pruner=none`) in this table.\n")
    parts.append(to_markdown(summary, baseline_marks(comps)))
    order = criterion_order(summary)
    parts.extend(f"\n> **`{code}`** {why}." for code, why in DEFECT_REPRODUCTIONS.items()
                 if (summary["pruner"] == code).any())
    if baseline not in order:
        parts.append(f"\nNo `{baseline}` rows here: no paired comparison against it (`--baseline`).")
    for kind, title in COMPARISON_TITLES.items():
        table = comparison_markdown(comps, kind, order)
        if table:
            parts.append(f"\n### {title.format(baseline=baseline)}\n\n{table}")
    table = connectivity_markdown(conn, order)
    if table:
        parts.append("\n### Nominal → effective sparsity (mean effectively empty and collapsed layers per run)\n\n"
                     "Effective sparsity counts kept weights on no input→output path as pruned (Vysogorets & "
                     f"Kempe 2023); means over the runs that recorded it.\n\n{table}")
    return "\n".join(parts)


def _plots(done: pd.DataFrame, summary: pd.DataFrame, key: tuple, name: str, out: Path,
           sparsity: float | None, notes: list[str]) -> dict[str, Path]:
    runs = done[(done[GROUP_KEYS] == pd.Series(dict(zip(GROUP_KEYS, key, strict=True)))).all(axis=1)]
    title = _title(key)
    written = {"accuracy": plots.save(plots.accuracy_figure(summary, title), out / f"{name}_accuracy.png")}
    levels = sorted(runs.loc[runs["pruner"] != "none", "sparsity"].unique())
    level = sparsity if sparsity is not None else (levels[-1] if levels else None)
    if level is not None and not runs["layer_density"].map(bool).any():
        notes.append(f"{title}: no per-layer densities in the source (a runs.csv); density plot not rebuilt")
    elif level is not None:
        fig = plots.density_figure(runs, level, title)
        if fig is None:
            notes.append(f"{title}: no pruned run at sparsity {level:g} (present: "
                         f"{', '.join(f'{s:g}' for s in levels) or 'none'}); density plot skipped")
        else:
            written["density"] = plots.save(fig, out / f"{name}_density_sp{level:g}.png")
    fig = plots.score_time_figure(runs, title)
    if fig is not None:
        written["score_time"] = plots.save(fig, out / f"{name}_score_time.png")
    return written

