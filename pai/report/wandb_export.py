"""Log a built report (tables + figures) to one Weights & Biases run.

Comparing a sweep in W&B: every run of a sweep is logged to project `pai` with group = the sweep (experiment)
name, job_type = its pruner, config = the resolved Hydra config (so `sparsity`, `seed`, `pruner.*`,
`prune.*` are filterable) and summary = its results.json. `python -m pai.report RUNS_DIR --wandb` adds one
run of job_type `report` to the same group (`--group`, else the runs' `wandb_group`), holding the tables
(`tables/<dataset>-<model>-<scope>-<warmup>` numeric, `..._display` as printed, `runs`, `not_done`) and
the figures (`plots/...`). Offline runs are uploaded with `wandb sync <dir>/wandb/offline-run-*` (the
report's own run lives under `<out>/wandb/` unless WANDB_DIR is set). Then, in the W&B UI: project `pai`
→ Reports → Create report; add a panel grid whose run set is filtered to `Group = <name>` and
`Job Type != report`, grouped by `Job Type` (one line per criterion, mean with a std band over seeds), with a
Scatter plot of summary `test_acc` against config `sparsity`, a Line plot of the per-epoch `test_acc`, and a
Parallel-coordinates panel over `sparsity`, `seed`, `test_acc`; add a second panel grid whose run set is
`Job Type = report` with Table panels for `tables/*` (mean ± std per criterion and sparsity) and Media
panels for `plots/*`. The same report can be built from code with the `wandb-workspaces` package
(`wandb_workspaces.reports.v2`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from pai.report.tables import GROUP_KEYS, group_name, wide_table


def _table(frame: pd.DataFrame):
    import wandb

    # NaN (std of one seed, missing cells) becomes null: W&B's table JSON has no NaN.
    clean = frame.astype(object).where(frame.notna(), None)
    return wandb.Table(columns=[str(c) for c in clean.columns], data=clean.values.tolist())


def sweep_group(runs: pd.DataFrame) -> str | None:
    """The runs' W&B group when they agree on one, else None."""
    groups = runs["wandb_group"].dropna().unique()
    return str(groups[0]) if len(groups) == 1 else None


def log_report(report: dict[str, Any], project: str = "pai", group: str | None = None,
               mode: str | None = None, entity: str | None = None) -> Path:
    """Log `build_report`'s result to one W&B run (job_type `report`); returns that run's local directory.

    mode: the argument, else WANDB_MODE, else "offline". The run is finished even when logging fails.
    """
    import wandb  # lazy: a second or two of import time that a plain report does not need

    mode = mode or os.environ.get("WANDB_MODE") or "offline"
    group = group or sweep_group(report["runs"])
    out_dir: Path = report["out_dir"]
    run = wandb.init(
        project=project, entity=entity, group=group, job_type="report", mode=mode,
        name=f"report-{group or Path(report['runs_dir']).resolve().name}",
        dir=None if os.environ.get("WANDB_DIR") else str(out_dir),
        config={"runs_dir": str(report["runs_dir"]), "n_runs": len(report["runs"])},
        reinit="finish_previous",
    )
    try:
        run_dir = Path(run.dir).parent
        summary = report["summary"]
        payload: dict[str, Any] = {}
        for key, group_summary in summary.groupby(GROUP_KEYS, sort=True):
            name = group_name(key)
            payload[f"tables/{name}"] = _table(group_summary)
            payload[f"tables/{name}_display"] = _table(wide_table(group_summary, markdown=False).reset_index())
        flat = report["runs"].drop(columns=["layer_density", "history", "collapsed_layers"])
        payload["tables/runs"] = _table(flat)
        if len(report["failed"]):
            payload["tables/not_done"] = _table(report["failed"])
        if len(report["unreadable"]):
            payload["tables/unreadable"] = _table(report["unreadable"])
        for key, figures in report["plots"].items():
            for kind, path in figures.items():
                payload[f"plots/{key}_{kind}"] = wandb.Image(str(path))
        run.log(payload)
        run.summary.update({"n_done": int((report["runs"]["status"] == "done").sum()),
                            "n_not_done": len(report["failed"]), "n_unreadable": len(report["unreadable"])})
        return run_dir
    finally:
        run.finish()

