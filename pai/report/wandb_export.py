"""Log a built report (tables + figures) to one Weights & Biases run of job_type `report`.

`python -m pai.report RUNS_DIR --wandb` adds this run to the sweep's group (`--group`, else the runs'
`wandb_group`). It holds, per (dataset, model, scope, bn_warmup) group `<g>` (`pai.report.tables.group_name`):
`tables/<g>` (numeric summary), `tables/<g>_display` (as printed), `tables/<g>_comparisons` (the paired tests
of comparisons.csv), `tables/<g>_connectivity` (nominal vs effective sparsity, connectivity.csv),
`tables/<g>_layer_density` (mean kept
fraction per criterion, sparsity and layer over seeds), `tables/<g>_collapsed` (per pruned run: how many and
which layers were pruned entirely), and the figures `plots/<g>_<kind>`; plus `tables/runs`, and
`tables/not_done` / `tables/unreadable` when there are such files. Its files go to `$WANDB_DIR/wandb/`, else to
the runs' out_root (`RUNS_DIR/..` for `out_root/runs`; for a runs.csv outside any `runs` folder, the report's
output folder), next to the runs' own offline W&B runs, so one
`wandb sync <out_root>/wandb/offline-run-*` uploads both. `pai.report.wandb_report` builds the W&B Report
(panels over the sweep's runs and this run's tables and figures) from code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pai.report.tables import DENSE, GROUP_KEYS, group_name, wide_table

DENSITY_COLUMNS = GROUP_KEYS + ["criterion", "sparsity", "layer", "density_mean", "density_min", "density_max",
                                "n"]
COLLAPSED_COLUMNS = GROUP_KEYS + ["criterion", "sparsity", "seed", "n_collapsed", "collapsed_layers"]


@dataclass
class LoggedReport:
    """The report's W&B run: where its files are, its id, and the keys it logged."""

    dir: Path
    id: str
    name: str
    group: str | None
    tables: dict[str, list[str]] = field(default_factory=dict)  # pai.report group name -> its table keys
    plots: dict[str, list[str]] = field(default_factory=dict)  # pai.report group name -> its figure keys
    extra_tables: list[str] = field(default_factory=list)  # tables/runs, tables/not_done, ...


def _table(frame: pd.DataFrame):
    import wandb

    # NaN (std of one seed, missing cells) becomes null: W&B's table JSON has no NaN.
    clean = frame.astype(object).where(frame.notna(), None)
    return wandb.Table(columns=[str(c) for c in clean.columns], data=clean.values.tolist())


def sweep_group(runs: pd.DataFrame) -> str | None:
    """The runs' W&B group when they agree on one, else None."""
    groups = sweep_groups(runs)
    return groups[0] if len(groups) == 1 else None


def sweep_groups(runs: pd.DataFrame) -> list[str]:
    """Every W&B group of the runs (a relaunched sweep without `experiment_name` spans several), sorted."""
    return sorted(str(g) for g in runs["wandb_group"].dropna().unique())


def default_wandb_dir(runs_dir: str | Path, out_dir: str | Path) -> Path:
    """Where the report's W&B run goes without WANDB_DIR: the runs' out_root (the folder above the `runs`
    folder that RUNS_DIR is or lies in), where `logger.dir` puts the runs' own W&B files; else RUNS_DIR when it
    is a folder, else (a runs.csv) the report's output folder `out_dir`."""
    path = Path(runs_dir).absolute()
    for folder in (path, *path.parents):
        if folder.name == "runs":
            return folder.parent
    return path if path.is_dir() else Path(out_dir).absolute()


def _pruned(done: pd.DataFrame) -> pd.DataFrame:
    return done[done["pruner"] != DENSE]


def layer_density_table(done: pd.DataFrame) -> pd.DataFrame:
    """Per group, criterion, sparsity and layer: the kept fraction's mean, min and max over the pruned runs
    (seeds), in the layers' order. Columns: DENSITY_COLUMNS."""
    rows = [{**{k: run[k] for k in GROUP_KEYS}, "criterion": run["criterion"], "sparsity": run["sparsity"],
             "layer": layer, "density": density}
            for _, run in _pruned(done).iterrows() for layer, density in run["layer_density"].items()]
    if not rows:
        return pd.DataFrame(columns=DENSITY_COLUMNS)
    stats = pd.DataFrame(rows).groupby(GROUP_KEYS + ["criterion", "sparsity", "layer"], sort=False)["density"]
    out = stats.agg(density_mean="mean", density_min="min", density_max="max", n="count").reset_index()
    return out[DENSITY_COLUMNS]


def collapsed_table(done: pd.DataFrame) -> pd.DataFrame:
    """One row per pruned run: how many layers were pruned entirely, and which. Columns: COLLAPSED_COLUMNS."""
    pruned = _pruned(done)
    out = pruned[GROUP_KEYS + ["criterion", "sparsity", "seed", "n_collapsed"]].copy()
    out["collapsed_layers"] = [", ".join(names) for names in pruned["collapsed_layers"]]
    return out.sort_values(GROUP_KEYS + ["criterion", "sparsity", "seed"]).reset_index(drop=True)


def log_report(report: dict[str, Any], project: str = "pai", group: str | None = None,
               mode: str | None = None, entity: str | None = None,
               wandb_dir: str | Path | None = None) -> LoggedReport:
    """Log `build_report`'s result to one W&B run (job_type `report`) and say what it holds.

    mode: the argument, else WANDB_MODE, else "offline". wandb_dir: the argument, else $WANDB_DIR, else
    `default_wandb_dir(runs_dir, out_dir)`. The run is finished even when logging fails.
    """
    import wandb  # lazy: a second or two of import time that a plain report does not need

    mode = mode or os.environ.get("WANDB_MODE") or "offline"
    group = group or sweep_group(report["runs"])
    folder = wandb_dir or os.environ.get("WANDB_DIR") or default_wandb_dir(report["runs_dir"], report["out_dir"])
    Path(folder).mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=project, entity=entity, group=group, job_type="report", mode=mode,  # type: ignore[arg-type]
        name=f"report-{group or Path(report['runs_dir']).resolve().name}", dir=str(folder),
        config={"runs_dir": str(report["runs_dir"]), "n_runs": len(report["runs"])},
        reinit="finish_previous",
    )
    try:
        logged = LoggedReport(dir=Path(run.dir).parent, id=run.id, name=str(run.name), group=group)
        runs = report["runs"]
        done = runs[runs["status"] == "done"]
        density, collapsed = layer_density_table(done), collapsed_table(done)
        payload: dict[str, Any] = {}
        for key, group_summary in report["summary"].groupby(GROUP_KEYS, sort=True):
            name = group_name(key)
            tables = {f"tables/{name}": group_summary,
                      f"tables/{name}_display": wide_table(group_summary, markdown=False).reset_index()}
            for kind in ("comparisons", "connectivity"):  # comparisons.csv, connectivity.csv: this group's rows
                frame = report[kind]
                tables[f"tables/{name}_{kind}"] = frame[(frame[GROUP_KEYS] == list(key)).all(axis=1)]
            in_group = (density[GROUP_KEYS] == list(key)).all(axis=1)
            if in_group.any():
                tables[f"tables/{name}_layer_density"] = density[in_group]
                tables[f"tables/{name}_collapsed"] = collapsed[(collapsed[GROUP_KEYS] == list(key)).all(axis=1)]
            payload.update({k: _table(v) for k, v in tables.items()})
            logged.tables[name] = list(tables)
        payload["tables/runs"] = _table(runs.drop(columns=["layer_density", "history", "collapsed_layers"]))
        logged.extra_tables.append("tables/runs")
        for key, frame in (("tables/not_done", report["failed"]), ("tables/unreadable", report["unreadable"])):
            if len(frame):
                payload[key] = _table(frame)
                logged.extra_tables.append(key)
        for name, figures in report["plots"].items():
            for kind, path in figures.items():
                payload[f"plots/{name}_{kind}"] = wandb.Image(str(path))
                logged.plots.setdefault(name, []).append(f"plots/{name}_{kind}")
        run.log(payload)
        run.summary.update({"n_done": int((runs["status"] == "done").sum()),
                            "n_not_done": len(report["failed"]), "n_unreadable": len(report["unreadable"])})
        return logged
    finally:
        run.finish()
