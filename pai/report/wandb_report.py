"""A W&B Report comparing a sweep's criteria, built from code with `wandb-workspaces` (`wandb_workspaces.reports.v2`).

`python -m pai.report RUNS_DIR --wandb-report` logs the report run (`pai.report.wandb_export`), then builds:

- per (dataset, model, scope, bn_warmup) group of `pai.report` (so one section per BN-warmup setting), a panel
  grid over the sweep's finished runs of that group — one run set of the pruned runs, one of the dense
  baseline, both filtered to the sweep's W&B group(s) and grouped by job type (= the `label` where set, else the
  criterion) — with these panels:
  * "test accuracy vs sparsity": a line plot of `final/test_acc` against `final/sparsity` (each run logs one
    such point at its last step), grouped by job type: the mean over seeds with a ±1 std band;
  * "final test accuracy per run": a scatter plot of summary `test_acc` against summary `sparsity_achieved`;
  * "collapsed layers": a bar plot of `prune/collapsed_layers` per job type (mean, min–max over runs);
  * "layer density": the runs' `prune/layer_density` tables;
  and, per sparsity of the group, a panel grid with the per-epoch `test_acc` (mean ± std over seeds) of the
  runs at that sparsity and the dense baseline;
- a panel grid over the report run alone (filtered by its run id) with `pai.report`'s tables (per group: the
  printed table, the paired comparisons, nominal vs effective sparsity, layer density, collapsed layers; all
  runs) as table panels and its figures as a media panel.

Saving a report needs a W&B server and an API key. When the mode is online and a key is there, the report is
saved and its URL printed; otherwise (WANDB_MODE=offline, no key) its specification — the report model of
`wandb-workspaces`, as JSON — is written to `<out>/wandb_report.json`, and `publish` uploads it later:

    wandb sync <out_root>/wandb/offline-run-*          # the runs and the report run
    python -m pai.report.wandb_report <out>/wandb_report.json [--entity ENTITY]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from pai.report.tables import DENSE, GROUP_KEYS, sparsity_label
from pai.report.wandb_export import LoggedReport, sweep_groups

SPEC_FILE = "wandb_report.json"
PUBLISH = "python -m pai.report.wandb_report"
# Keys that every run logs (pai.tracking): at step = epoch, at step 0, and its last point.
EPOCH_X, EPOCH_ACC = "epoch", "test_acc"
FINAL_SPARSITY, FINAL_ACC = "final/sparsity", "final/test_acc"
COLLAPSED, LAYER_DENSITY = "prune/collapsed_layers", "prune/layer_density"


def _group_title(key: tuple) -> str:
    dataset, model, scope, warm = key
    return f"{dataset} / {model} / {scope} / BN warmup {'on' if warm else 'off'}"


def _base_filters(groups: list[str], dataset: str, model: str) -> list:
    from wandb_workspaces import expr

    return [expr.Metric("Group").isin(groups), expr.Metric("JobType") != "report",
            expr.Summary("status") == "done", expr.Summary("dataset") == dataset, expr.Summary("model") == model]


def _runsets(groups: list[str], key: tuple, sparsity: float | None = None) -> list:
    """The pruned runs of one pai.report group (optionally one sparsity) and the dense baseline of its dataset
    and model, each grouped by job type."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    dataset, model, scope, warm = key
    pruned = [*_base_filters(groups, dataset, model), expr.Summary("pruner") != DENSE,
              expr.Summary("scope") == scope, expr.Summary("bn_warmup") == bool(warm)]
    if sparsity is not None:
        pruned.append(expr.Config("sparsity") == float(sparsity))
    dense = [*_base_filters(groups, dataset, model), expr.Summary("pruner") == DENSE]
    warm_name = "on" if warm else "off"
    return [wr.Runset(name=f"criteria ({scope}, BN warmup {warm_name})", filters=pruned, groupby=["JobType"]),
            wr.Runset(name="dense baseline", filters=dense, groupby=["JobType"])]


def _comparison_grid(groups: list[str], key: tuple):
    import wandb_workspaces.reports.v2 as wr

    panels: list[Any] = [
        wr.LinePlot(title="test accuracy vs sparsity (mean ± std over seeds)", x=FINAL_SPARSITY, y=[FINAL_ACC],
                    title_x="sparsity", title_y="test accuracy", groupby="JobType", groupby_aggfunc="mean",
                    groupby_rangefunc="stddev", layout=wr.Layout(x=0, y=0, w=12, h=8)),
        wr.ScatterPlot(title="final test accuracy per run", x=wr.SummaryMetric("sparsity_achieved"),
                       y=wr.SummaryMetric("test_acc"), layout=wr.Layout(x=12, y=0, w=12, h=8)),
        wr.BarPlot(title="collapsed layers (mean, min–max over runs)", metrics=[COLLAPSED], groupby="JobType",
                   groupby_aggfunc="mean", groupby_rangefunc="minmax", layout=wr.Layout(x=0, y=8, w=12, h=8)),
        wr.WeavePanelSummaryTable(table_name=LAYER_DENSITY, layout=wr.Layout(x=12, y=8, w=12, h=8)),
    ]
    return wr.PanelGrid(runsets=_runsets(groups, key), panels=panels)


def _epoch_grid(groups: list[str], key: tuple, sparsity: float):
    import wandb_workspaces.reports.v2 as wr

    plot = wr.LinePlot(title=f"test accuracy per epoch at sparsity {sparsity_label(sparsity)} (mean ± std over "
                             "seeds)", x=EPOCH_X, y=[EPOCH_ACC], title_x="epoch", title_y="test accuracy",
                       groupby="JobType", groupby_aggfunc="mean", groupby_rangefunc="stddev",
                       layout=wr.Layout(x=0, y=0, w=24, h=8))
    return wr.PanelGrid(runsets=_runsets(groups, key, sparsity), panels=[plot])


def _report_grid(logged: LoggedReport):
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    panels: list = []
    for name in sorted(logged.tables):
        for table in logged.tables[name]:
            if table != f"tables/{name}":  # the numeric twin of `_display`, for downloads, not for reading
                panels.append(wr.WeavePanelSummaryTable(table_name=table))
        if logged.plots.get(name):
            panels.append(wr.MediaBrowser(title=f"{name}: figures", media_keys=logged.plots[name], num_columns=3))
    panels += [wr.WeavePanelSummaryTable(table_name=t) for t in logged.extra_tables]
    for i, panel in enumerate(panels):  # two columns
        panel.layout = wr.Layout(x=12 * (i % 2), y=8 * (i // 2), w=12, h=8)
    runset = wr.Runset(name="pai.report", filters=[expr.Metric("ID") == logged.id])
    return wr.PanelGrid(runsets=[runset], panels=panels)


def build(report: dict[str, Any], logged: LoggedReport, project: str = "pai", entity: str | None = None,
          groups: list[str] | None = None, title: str | None = None):
    """The `wandb_workspaces.reports.v2.Report` of a built pai report and its logged W&B run (no network).

    groups: the W&B groups of the sweep's runs (default: every `wandb_group` of the runs, or the report run's
    group when the runs record none).
    """
    import wandb_workspaces.reports.v2 as wr

    from pai import __version__

    runs = report["runs"]
    done = runs[runs["status"] == "done"]
    groups = groups or sweep_groups(done) or ([logged.group] if logged.group else [])
    if not groups:
        raise ValueError("no W&B group: the runs record no wandb_group; pass --group")
    blocks: list = [wr.P(
        f"Sweep group(s) {', '.join(groups)}: {len(done)} finished runs of {report['runs_dir']}, "
        f"{len(report['failed'])} not done (pai {__version__}). Lines: one per criterion (the run's job type = "
        "its label where set), the mean over seeds with a ±1 std band; the dense baseline is its own run set. "
        "Built by `python -m pai.report --wandb-report`.")]
    pruned = done[done["pruner"] != DENSE]
    for key, frame in pruned.groupby(GROUP_KEYS, sort=True):
        blocks += [wr.H2(_group_title(key)), _comparison_grid(groups, key)]
        for sparsity in sorted(frame["sparsity"].unique()):
            blocks.append(_epoch_grid(groups, key, float(sparsity)))
    blocks += [wr.H2("Tables and figures of pai.report"), _report_grid(logged)]
    return wr.Report(project=project, entity=entity or "", title=title or f"pai: {', '.join(groups)}"[:128],
                     description=f"pai {__version__} comparison report", blocks=blocks)


def to_spec(report_obj) -> dict[str, Any]:
    """The report model as JSON-ready data (what `save()` would send, plus title and project)."""
    return report_obj._to_model().model_dump(mode="json", by_alias=True, exclude_none=True)


def from_spec(spec: dict[str, Any]):
    """A `wandb_workspaces.reports.v2.Report` from `to_spec`'s output (the inverse, up to generated ids)."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces.reports.v2 import internal

    return wr.Report._from_model(internal.ReportViewspec.model_validate(spec))


def _api_key() -> str | None:
    """The W&B API key of this machine, if any, without network: WANDB_API_KEY, else the entry that `wandb
    login` wrote to the netrc file ($NETRC, else ~/.netrc) for the server's host (WANDB_BASE_URL)."""
    import netrc
    from urllib.parse import urlparse

    if os.environ.get("WANDB_API_KEY"):
        return os.environ["WANDB_API_KEY"]
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    try:
        entry = netrc.netrc(os.environ.get("NETRC") or None).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    return entry[2] if entry and entry[2] else None


def publish(report_obj, entity: str | None = None) -> str:
    """Save the report on the W&B server (entity: the argument, the report's, else the account's default)."""
    if entity or not report_obj.entity:
        import wandb

        report_obj.entity = entity or wandb.Api().default_entity
    report_obj.save()
    return str(report_obj.url)


def save_or_write(report_obj, out_dir: Path, mode: str | None) -> tuple[Path, str | None]:
    """Write the spec to `out_dir/wandb_report.json`; also save the report when the mode is online and an API
    key is there. Returns (spec path, URL or None)."""
    spec_path = Path(out_dir) / SPEC_FILE
    spec_path.write_text(json.dumps(to_spec(report_obj), indent=1))
    mode = mode or os.environ.get("WANDB_MODE") or "offline"
    if mode == "online" and _api_key():
        return spec_path, publish(report_obj)
    return spec_path, None


def publish_hint(spec_path: Path, logged: LoggedReport) -> str:
    return (f"to publish it: wandb sync {logged.dir.parent}/offline-run-*   (the runs and the report run), then "
            f"{PUBLISH} {spec_path} [--entity ENTITY]")


def panel_summary(report_obj) -> list[str]:
    """One line per panel grid: its run sets and its panels."""
    import wandb_workspaces.reports.v2 as wr

    def describe(panel) -> str:
        name = getattr(panel, "title", None) or getattr(panel, "table_name", None) or ""
        return f"{type(panel).__name__}({name})"

    return [f"[{' | '.join(rs.name for rs in block.runsets)}] {', '.join(describe(p) for p in block.panels)}"
            for block in report_obj.blocks if isinstance(block, wr.PanelGrid)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PUBLISH, description="Publish a W&B report specification written by "
                                "`python -m pai.report RUNS_DIR --wandb-report` (needs `wandb login`).")
    p.add_argument("spec", type=Path, help=f"the {SPEC_FILE} file")
    p.add_argument("--entity", default=None, help="W&B team or user (default: the spec's, else your default)")
    args = p.parse_args(argv)
    try:
        report_obj = from_spec(json.loads(args.spec.read_text()))
    except (OSError, ValueError) as exc:
        print(f"{PUBLISH}: error: {args.spec}: {exc}", file=sys.stderr)
        return 2
    if not _api_key():
        print(f"{PUBLISH}: error: no W&B API key: run `wandb login` (or set WANDB_API_KEY) first", file=sys.stderr)
        return 2
    print(publish(report_obj, args.entity))
    return 0


if __name__ == "__main__":
    sys.exit(main())
