"""The W&B Report built by `python -m pai.report RUNS --wandb-report`, offline: its spec file is read back and its
panels, groupings and filters are checked against the sweep and against what the report run really logged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("wandb")
pytest.importorskip("wandb_workspaces")

import wandb_workspaces.reports.v2 as wr  # noqa: E402
from test_wandb import read_records  # noqa: E402

from pai import tracking  # noqa: E402
from pai.report import wandb_report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["conv1.weight", "layer1.0.conv1.weight", "linear.weight"]
GROUPS = ["sweepA", "sweepA-relaunch"]  # a relaunched sweep without experiment_name spans two groups


def write_run(runs: Path, pruner: str, sparsity: float, seed: int, warmup: bool, label: str | None = None,
              acc: float = 0.8, group: str = GROUPS[0]) -> dict:
    dense = pruner == "none"
    density = {name: 1.0 if dense else round(1 - sparsity + 0.01 * seed, 4) for name in LAYERS}
    collapsed = []
    if (label or pruner) == "hts@T1" and sparsity == 0.98:
        density["layer1.0.conv1.weight"], collapsed = 0.0, ["layer1.0.conv1.weight"]
    res = {"config_hash": f"{pruner}{label}{sparsity}{seed}{warmup}", "dataset": "synthetic", "model": "resnet20",
           "pruner": pruner, "label": label, "seed": seed, "sparsity": 0.0 if dense else sparsity,
           "sparsity_achieved": 0.0 if dense else sparsity, "scope": "global", "bn_warmup": warmup and not dense,
           "test_acc": acc, "test_loss": 0.5, "layer_density": density, "collapsed_layers": collapsed,
           "score_seconds": 0.1, "warmup_seconds": 0.0, "train_seconds": 1.0, "status": "done",
           "history": [{"epoch": 1, "test_acc": acc}], "wandb_group": group,
           "effective_sparsity": None if dense else sparsity + 0.001, "effectively_empty_layers": collapsed}
    folder = runs / "synthetic-resnet20" / (label or pruner) / f"sp{sparsity}-{warmup}" / f"seed{seed}"
    folder.mkdir(parents=True)
    res["run_dir"] = str(folder)
    (folder / "results.json").write_text(json.dumps(res))
    return res


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    out_root = tmp_path_factory.mktemp("sweep")
    runs = out_root / "runs"
    for seed in (0, 1):
        write_run(runs, "none", 0.9, seed, False, acc=0.9 + 0.01 * seed, group=GROUPS[seed])
        for warmup in (False, True):
            for sparsity in (0.9, 0.98):
                for pruner, label in (("random", None), ("snip", None), ("hts", None), ("hts", "hts@T1")):
                    write_run(runs, pruner, sparsity, seed, warmup, label, acc=0.7 + 0.01 * seed, group=GROUPS[seed])
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}  # no WANDB_DIR, no API key
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", HOME=str(out_root), WANDB_CONFIG_DIR=str(out_root))
    proc = subprocess.run([sys.executable, "-m", "pai.report", str(runs), "--wandb-report"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    spec_path = runs / "report" / wandb_report.SPEC_FILE
    (run_dir,) = (out_root / "wandb").glob("offline-run-*")  # the out_root's wandb/, where `wandb sync` looks
    return {"proc": proc, "spec": json.loads(spec_path.read_text()), "spec_path": spec_path, "run_dir": run_dir,
            "out_root": out_root}


def grids_by_heading(report) -> dict[str, list]:
    """{H2 text: [the panel grids after it]}."""
    sections: dict[str, list] = {}
    current = None
    for block in report.blocks:
        if isinstance(block, wr.H2):
            current = "".join(str(part) for part in block.text) if isinstance(block.text, list) else str(block.text)
            sections[current] = []
        elif isinstance(block, wr.PanelGrid):
            sections[current].append(block)
    return sections


def test_cli_writes_the_spec_and_says_how_to_publish(built):
    err = built["proc"].stderr
    assert f"W&B report spec in {built['spec_path']}" in err
    assert f"wandb sync {built['out_root']}/wandb/offline-run-*" in err
    assert f"python -m pai.report.wandb_report {built['spec_path']}" in err
    assert built["spec"]["displayName"] == f"pai: {', '.join(sorted(GROUPS))}"
    assert built["spec"]["project"]["name"] == "pai"


def test_comparison_grids_per_bn_warmup_setting(built):
    report = wandb_report.from_spec(built["spec"])
    sections = grids_by_heading(report)
    assert list(sections) == ["synthetic / resnet20 / global / BN warmup off",
                              "synthetic / resnet20 / global / BN warmup on", "Tables and figures of pai.report"]
    for title, grids in list(sections.items())[:2]:
        warm = title.endswith("on")
        comparison, *per_epoch = grids
        assert len(per_epoch) == 2  # one per sparsity
        line, scatter, bars, density = comparison.panels
        assert isinstance(line, wr.LinePlot) and line.x.name == "final/sparsity"
        assert [m.name for m in line.y] == ["final/test_acc"]
        assert (line.x.name, line.y[0].name) == tracking.FINAL_KEYS  # what every run logs at its last step
        assert (line.groupby, line.groupby_aggfunc, line.groupby_rangefunc) == ("JobType", "mean", "stddev")
        assert isinstance(scatter, wr.ScatterPlot) and (scatter.x.name, scatter.y.name) == ("sparsity_achieved",
                                                                                              "test_acc")
        assert isinstance(bars, wr.BarPlot) and [m.name for m in bars.metrics] == ["prune/collapsed_layers"]
        assert isinstance(density, wr.WeavePanelSummaryTable) and density.table_name == "prune/layer_density"
        criteria, dense = comparison.runsets
        for runset in (criteria, dense):
            assert runset.groupby == ["run.JobType"]  # one line per job type = label, else criterion
            assert f"Metric(\"Group\") in {sorted(GROUPS)!r}" in runset.filters
            assert "SummaryMetric(\"status\") == 'done'" in runset.filters
            assert "Metric(\"JobType\") != 'report'" in runset.filters
        assert f"SummaryMetric(\"bn_warmup\") == {warm}" in criteria.filters
        assert "SummaryMetric(\"pruner\") != 'none'" in criteria.filters
        assert "SummaryMetric(\"pruner\") == 'none'" in dense.filters and "bn_warmup" not in dense.filters
        for grid, sparsity in zip(per_epoch, (0.9, 0.98), strict=True):
            (plot,) = grid.panels
            assert plot.x.name == "epoch" and [m.name for m in plot.y] == ["test_acc"]
            assert plot.groupby == "JobType" and plot.groupby_rangefunc == "stddev"
            assert f"Config(\"sparsity\") == {sparsity}" in grid.runsets[0].filters
            assert "sparsity" not in grid.runsets[1].filters  # the dense baseline joins every sparsity


def test_filters_in_the_servers_format(built):
    grids = [b for b in built["spec"]["spec"]["blocks"] if b["type"] == "panel-grid"]
    assert len(grids) == 2 * 3 + 1
    criteria = grids[0]["metadata"]["runSets"][0]
    assert criteria["grouping"] == [{"section": "run", "name": "jobType"}]
    leaves = {(f["key"]["section"], f["key"]["name"]): (f["op"], f["value"]) for f in criteria["filters"]["filters"]}
    assert leaves[("run", "group")] == ("IN", sorted(GROUPS))
    assert leaves[("summary", "bn_warmup")] == ("=", False) and leaves[("summary", "status")] == ("=", "done")
    line = grids[0]["metadata"]["panelBankSectionConfig"]["panels"][0]
    assert line["viewType"] == "Run History Line Plot"
    assert (line["config"]["xAxis"], line["config"]["groupBy"], line["config"]["groupArea"]) == (
        "final/sparsity", "jobType", "stddev")


def test_report_grid_shows_what_the_report_run_logged(built):
    records = read_records(next(built["run_dir"].glob("run-*.wandb")))
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    logged: dict[str, dict] = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            for item in r.history.item:
                path = list(item.nested_key) or [item.key]
                logged.setdefault(path[0], {})["/".join(path[1:])] = json.loads(item.value_json)
    report = wandb_report.from_spec(built["spec"])
    (grid,) = grids_by_heading(report)["Tables and figures of pai.report"]
    (runset,) = grid.runsets
    assert runset.filters == f"Metric(\"ID\") == '{run.run_id}'"  # this report run, not older ones
    tables = {p.table_name for p in grid.panels if isinstance(p, wr.WeavePanelSummaryTable)}
    media = [k for p in grid.panels if isinstance(p, wr.MediaBrowser) for k in p.media_keys]
    names = ["synthetic-resnet20-global-nowarmup", "synthetic-resnet20-global-bnwarmup"]
    kinds = ("display", "comparisons", "connectivity", "layer_density", "collapsed")
    assert tables == {f"tables/{n}_{kind}" for n in names for kind in kinds} | {"tables/runs"}
    assert all(logged[t]["_type"] == "table-file" for t in tables)
    assert media and all(logged[k]["_type"] == "image-file" for k in media)
    # the collapsed-layer table names the layer that hts@T1 pruned entirely at 0.98 (both seeds), and only it
    ref = logged["tables/synthetic-resnet20-global-nowarmup_collapsed"]
    table = json.loads((built["run_dir"] / "files" / ref["path"]).read_text())
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert {(r["criterion"], r["sparsity"], r["seed"]) for r in rows if r["n_collapsed"]} == {
        ("hts@T1", 0.98, 0), ("hts@T1", 0.98, 1)}
    assert {r["collapsed_layers"] for r in rows if r["n_collapsed"]} == {"layer1.0.conv1.weight"}
    # the paired tests of comparisons.csv and the effective sparsity of connectivity.csv, this group's rows
    ref = logged["tables/synthetic-resnet20-global-nowarmup_comparisons"]
    table = json.loads((built["run_dir"] / "files" / ref["path"]).read_text())
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert {(r["criterion"], r["reference"], r["sparsity"]) for r in rows} == {
        (c, "random", s) for c in ("snip", "hts", "hts@T1") for s in (0.9, 0.98)}
    assert {r["bn_warmup"] for r in rows} == {False} and all(r["n"] == 2 for r in rows)
    ref = logged["tables/synthetic-resnet20-global-bnwarmup_connectivity"]
    table = json.loads((built["run_dir"] / "files" / ref["path"]).read_text())
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert {(r["criterion"], r["sparsity"]) for r in rows} == {
        (c, s) for c in ("random", "snip", "hts", "hts@T1") for s in (0.9, 0.98)}
    assert {r["bn_warmup"] for r in rows} == {True}
    assert {round(r["effective"] - r["nominal"], 6) for r in rows} == {0.001}
    ref = logged["tables/synthetic-resnet20-global-nowarmup_layer_density"]
    table = json.loads((built["run_dir"] / "files" / ref["path"]).read_text())
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    (snip,) = [r for r in rows if (r["criterion"], r["sparsity"], r["layer"]) == ("snip", 0.9, "conv1.weight")]
    assert snip["density_mean"] == pytest.approx(0.105) and snip["n"] == 2  # seeds 0, 1: 0.1 and 0.11


def test_publish_without_an_api_key_fails_cleanly(built, monkeypatch, capsys):
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(built["out_root"]))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(built["out_root"]))
    assert wandb_report.main([str(built["spec_path"])]) == 2
    assert "no W&B API key" in capsys.readouterr().err
