"""pai.report: tables equal independently computed statistics, plots are real PNGs, the CLI fails cleanly,
W&B offline export holds the tables."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from pai.report import CRITERION_ORDER, build_report
from pai.report.plots import COLLAPSED_LABEL, density_figure, score_time_stats
from pai.report.tables import GROUP_KEYS

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["conv1.weight", "layer1.0.conv1.weight", "layer2.0.conv1.weight", "layer3.0.conv1.weight"]
CRITERIA = {"snip": 0.90, "magnitude": 0.88, "hts": 0.91}  # base accuracy; criteria listed out of order
SPARSITIES = [0.9, 0.99]
SEEDS = [0, 42, 123]
MISSING = ("hts", 0.99, 123)  # a partial sweep: this seed never finished


def accuracy(crit: str, sp: float, seed: int) -> float:
    # Distinct per seed so std > 0; hts wins at 0.9, snip at 0.99 (hts@0.99 is penalised).
    drop = 0.0 if sp == 0.9 else (0.06 if crit == "hts" else 0.02)
    return CRITERIA[crit] - drop + {0: 0.0, 42: 0.004, 123: -0.003}[seed] * (1 + len(crit) % 3)


def write_run(root: Path, **fields) -> Path:
    results = {
        "config_hash": f"h{abs(hash((fields['pruner'], fields['sparsity'], fields['seed']))) % 10**8:08d}",
        "dataset": "cifar10", "model": "resnet18", "scope": "global", "bn_warmup": False,
        "sparsity_achieved": fields["sparsity"], "test_loss": 0.5, "score_seconds": 1.0, "warmup_seconds": 0.0,
        "train_seconds": 10.0, "status": "done", "collapsed_layers": [],
        "layer_density": {name: 1.0 - fields["sparsity"] for name in LAYERS},
        "history": [{"epoch": 0, "train_loss": 1.0, "train_acc": 0.5, "test_loss": 0.6, "test_acc": 0.6,
                     "lr": 0.03}],
        **fields,
    }
    d = root / f"{results['dataset']}-{results['model']}" / str(results.get("label") or results["pruner"]) / (
        f"sp{results['sparsity']}") / f"seed{results['seed']}-{results['config_hash']}"
    d.mkdir(parents=True)
    results["run_dir"] = str(d)
    (d / "results.json").write_text(json.dumps(results))
    return d


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep") / "runs"
    for crit in CRITERIA:
        for sp in SPARSITIES:
            for seed in SEEDS:
                if (crit, sp, seed) == MISSING:
                    continue
                extra = {}
                if (crit, sp) == ("hts", 0.99):
                    density = dict.fromkeys(LAYERS, 0.02)
                    density["layer2.0.conv1.weight"] = 0.0
                    extra = {"layer_density": density, "collapsed_layers": ["layer2.0.conv1.weight"]}
                write_run(root, pruner=crit, sparsity=sp, seed=seed, test_acc=accuracy(crit, sp, seed),
                          score_seconds=float(len(crit)), **extra)
    write_run(root, pruner="none", sparsity=0.0, seed=0, test_acc=0.95, score_seconds=0.0)
    # A failed run with an accuracy that would visibly shift the snip@0.9 mean if it were averaged in.
    write_run(root, pruner="snip", sparsity=0.9, seed=7, test_acc=0.10, status="failed",
              error="RuntimeError: boom")
    bad = root / "cifar10-resnet18" / "grasp" / "sp0.9" / "seed0-broken"
    bad.mkdir(parents=True)
    (bad / "results.json").write_text('{"dataset": "cifar10", "status": "do')  # killed mid-write
    return root


@pytest.fixture(scope="module")
def report(sweep, tmp_path_factory) -> dict:
    return build_report(sweep, tmp_path_factory.mktemp("out"))


def expected(crit: str, sp: float) -> tuple[float, float, int]:
    accs = [accuracy(crit, sp, s) * 100 for s in SEEDS if (crit, sp, s) != MISSING]
    return statistics.mean(accs), statistics.stdev(accs), len(accs)


def expected_cell(crit: str, sp: float) -> str:
    """The table cell, from scipy's t interval computed here independently."""
    m, s, n = expected(crit, sp)
    lo, hi = scipy.stats.t.interval(0.95, n - 1, loc=m, scale=s / np.sqrt(n))
    return f"{m:.2f} [{lo:.2f}, {hi:.2f}] ({n})"


def table_rows(md: str) -> list[str]:
    """Row names of the first Markdown table in `md` (the accuracy table)."""
    lines = md[md.index("|"):].split("\n\n")[0].splitlines()
    return [line.split("|")[1].strip() for line in lines if line.startswith("|")][2:]


def test_table_values_match_independent_statistics(report):
    summary = report["summary"].set_index(["criterion", "sparsity"])
    for crit in CRITERIA:
        for sp in SPARSITIES:
            mean, std, n = expected(crit, sp)
            row = summary.loc[(crit, sp)]
            assert row["mean"] == pytest.approx(mean, abs=1e-9)
            assert row["std"] == pytest.approx(std, abs=1e-9)
            assert np.std([accuracy(crit, sp, s) * 100 for s in SEEDS if (crit, sp, s) != MISSING],
                          ddof=1) == pytest.approx(row["std"])
            assert row["n"] == n
            lo, hi = scipy.stats.t.interval(0.95, n - 1, loc=mean, scale=std / np.sqrt(n))
            assert (row["ci_low"], row["ci_high"]) == pytest.approx((lo, hi), abs=1e-9)
    assert summary.loc[("hts", 0.99), "n"] == 2  # the missing seed shows
    assert expected_cell("magnitude", 0.9) in report["markdown"]


def test_dense_row_first_and_in_every_column(report):
    summary = report["summary"]
    dense = summary[summary["criterion"] == "none"]
    assert sorted(dense["sparsity"]) == SPARSITIES
    assert np.allclose(dense["mean"], 95.0) and (dense["n"] == 1).all() and dense["std"].isna().all()
    assert not dense["best"].any()
    table = Path(report["tables"]["cifar10-resnet18-global-nowarmup"]["md"]).read_text()
    assert table_rows(table) == ["none", "magnitude", "snip", "hts"]  # CRITERION_ORDER, not file order
    assert table.count(" 95.00 (1) |") == 2  # one seed: no interval


def test_dense_baseline_joins_the_bn_warmup_group(tmp_path):
    """The dense run has bn_warmup False (it prunes nothing), but it is the baseline of the warmup table too."""
    runs = tmp_path / "runs"
    for seed in (0, 1):
        write_run(runs, pruner="none", seed=seed, test_acc=0.9, sparsity=0.9)
        write_run(runs, pruner="snip", seed=seed, test_acc=0.8, sparsity=0.9, bn_warmup=True, config_hash=f"w{seed}")
        write_run(runs, pruner="snip", seed=seed, test_acc=0.7, sparsity=0.9)
        write_run(runs, pruner="none", dataset="digits", seed=seed, test_acc=0.5, sparsity=0.9)
    summary = build_report(runs, tmp_path / "out")["summary"]
    dense = summary[summary["criterion"] == "none"].set_index(["dataset", "bn_warmup"])
    assert dense.loc[("cifar10", True), "mean"] == pytest.approx(90.0)
    assert dense.loc[("cifar10", False), "mean"] == pytest.approx(90.0)
    assert (dense["n"] == 2).all() and len(dense) == 3
    assert np.isnan(dense.loc[("digits", False), "sparsity"])  # nothing pruned there: its own group


def test_failed_and_corrupt_runs_are_listed_not_averaged(report):
    failed = report["failed"]
    assert list(failed["status"]) == ["failed"] and "boom" in failed["error"].iloc[0]
    assert report["summary"].set_index(["criterion", "sparsity"]).loc[("snip", 0.9), "n"] == 3
    assert len(report["unreadable"]) == 1 and "seed0-broken" in report["unreadable"]["path"].iloc[0]
    md = report["markdown"]
    assert "Runs not done" in md and "RuntimeError: boom" in md and "Unreadable" in md


def test_best_cell_marked(report):
    """hts leads snip at 0.9 by about one point in each seed (paired p = 0.04), snip leads at 0.99."""
    summary = report["summary"]
    best = summary[summary["best"]].set_index("sparsity")["criterion"].to_dict()
    assert best == {0.9: "hts", 0.99: "snip"}
    assert f"**{expected_cell('hts', 0.9)}**" in report["markdown"]
    cell = expected_cell("snip", 0.9)
    assert f"**{cell}" not in report["markdown"] and cell in report["markdown"]


def test_csv_round_trips(report):
    paths = report["tables"]["cifar10-resnet18-global-nowarmup"]
    back = pd.read_csv(paths["csv"])
    pd.testing.assert_frame_equal(back, report["summary"], check_dtype=False)
    assert back["best"].dtype == bool
    pd.testing.assert_frame_equal(pd.read_csv(report["summary_csv"]), report["summary"], check_dtype=False)


def test_plots_are_png_and_density_marks_collapse(report):
    plots = report["plots"]["cifar10-resnet18-global-nowarmup"]
    assert set(plots) == {"accuracy", "density", "score_time"}
    assert plots["density"].name.endswith("sp0.99.png")  # default: the highest sparsity
    for path in plots.values():
        data = Path(path).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    runs = report["runs"][report["runs"]["status"] == "done"]
    fig = density_figure(runs, 0.99, "t")
    marks = [ln for ln in fig.axes[0].lines if ln.get_label() == COLLAPSED_LABEL]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [LAYERS.index("layer2.0.conv1.weight")]
    assert marks[0].get_color() == "red"
    assert density_figure(runs, 0.9, "t").axes[0].lines  # other level: drawn, nothing marked
    assert not [ln for ln in density_figure(runs, 0.9, "t").axes[0].lines if ln.get_label() == COLLAPSED_LABEL]


def test_score_time_leaves_out_cache_hits(tmp_path):
    # Scores read from the cache record score_seconds 0 (no scoring ran): averaged in, they would halve the time.
    root = tmp_path / "runs"
    for seed, (seconds, hit) in enumerate([(6.0, False), (0.0, True), (0.0, True), (8.0, False)]):
        write_run(root, pruner="hts", sparsity=0.9, seed=seed, test_acc=0.5, score_seconds=seconds, cache_hit=hit)
    write_run(root, pruner="snip", sparsity=0.9, seed=0, test_acc=0.5, score_seconds=0.5)  # cache_hit not recorded
    stats = score_time_stats(build_report(root)["runs"])
    assert stats.loc["hts"].tolist() == [7.0, pytest.approx(2**0.5), 2] and stats.loc["snip", "count"] == 1


def test_rebuild_from_runs_csv(report, tmp_path):
    rebuilt = build_report(report["runs_csv"], tmp_path / "again")
    pd.testing.assert_frame_equal(rebuilt["summary"], report["summary"], check_dtype=False)
    def tables(markdown: str) -> str:  # between the title and the listings of failed / unreadable files
        return markdown.split("\n", 1)[1].split("\n## Runs not done")[0]

    assert tables(rebuilt["markdown"]) == tables(report["markdown"])
    assert len(rebuilt["failed"]) == len(report["failed"]) == 1
    plots = rebuilt["plots"]["cifar10-resnet18-global-nowarmup"]
    assert set(plots) == {"accuracy", "score_time"}  # no per-layer densities in a runs.csv
    assert any("density plot not rebuilt" in n for n in rebuilt["notes"])
    # A runs.csv from before the cache_hit column: a pruned run's score_seconds of exactly 0 was a cache hit.
    legacy = pd.read_csv(report["runs_csv"]).rename(columns={"cache_hit": "score_cached"})
    legacy["score_cached"] = None
    hit = legacy.index[legacy["pruner"] != "none"][0]
    legacy.loc[hit, "score_seconds"] = 0.0  # the dense run's 0.0 (it never scores) is no hit
    legacy.to_csv(tmp_path / "runs.csv", index=False)
    runs = build_report(tmp_path / "runs.csv", tmp_path / "legacy")["runs"]
    assert runs.index[runs["cache_hit"] == True].tolist() == [hit]  # noqa: E712


def test_mixed_sweep_and_labels(tmp_path):
    runs = tmp_path / "runs"
    common = {"dataset": "digits", "model": "resnet20", "bn_warmup": True, "sparsity": 0.9}
    for seed in (0, 1):
        write_run(runs, pruner="hutch_diag", label="hutch_diag@T1", seed=seed, test_acc=0.8, **common)
        write_run(runs, pruner="hutch_diag", seed=seed, test_acc=0.81, **common)
        write_run(runs, pruner="zeta_custom", seed=seed, test_acc=0.7, **common)
        write_run(runs, pruner="alpha_custom", seed=seed, test_acc=0.7, **common)
        write_run(runs, pruner="random", seed=seed, test_acc=0.75, **common)
        write_run(runs, pruner="snip", seed=seed, test_acc=0.9, sparsity=0.5)  # second group (cifar10)
    report = build_report(runs, tmp_path / "out", sparsity=0.9)
    assert set(report["tables"]) == {"digits-resnet20-global-bnwarmup", "cifar10-resnet18-global-nowarmup"}
    digits = report["summary"][report["summary"]["dataset"] == "digits"]
    table = Path(report["tables"]["digits-resnet20-global-bnwarmup"]["md"]).read_text()
    assert table_rows(table) == ["random", "hutch_diag", "hutch_diag@T1", "alpha_custom", "zeta_custom"]
    assert (digits["n"] == 2).all() and "none" not in set(digits["criterion"])
    assert "density" not in report["plots"]["cifar10-resnet18-global-nowarmup"]  # no run at 0.9 there
    assert any("density plot skipped" in note for note in report["notes"])
    assert list(CRITERION_ORDER[:2]) == ["none", "random"]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pai.report", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("case", ["missing", "empty", "only_failed"])
def test_cli_bad_directory_exit_2(tmp_path, case):
    target = tmp_path / "runs"
    if case != "missing":
        target.mkdir()
    if case == "only_failed":
        write_run(target, pruner="snip", sparsity=0.9, seed=0, test_acc=0.1, status="failed", error="x")
    proc = run_cli(str(target))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m pai.report: error:"), proc.stderr
    assert "Traceback" not in proc.stderr and str(target) in lines[0]


def test_cli_writes_and_prints(sweep, tmp_path):
    proc = run_cli(str(sweep), "--out", str(tmp_path / "rep"))
    assert proc.returncode == 0, proc.stderr
    assert "| none" in proc.stdout and (tmp_path / "rep" / "report.md").is_file()
    assert sorted(p.name for p in (tmp_path / "rep" / "plots").iterdir()) == [
        "cifar10-resnet18-global-nowarmup_accuracy.png", "cifar10-resnet18-global-nowarmup_density_sp0.99.png",
        "cifar10-resnet18-global-nowarmup_score_time.png"]


def wandb_records(path: Path):
    """Records of a .wandb file: a LevelDB-style log (7-byte header, 32 KiB blocks, chunked records)."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, buf = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk  # FULL/FIRST start a record, MIDDLE/LAST extend it
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            yield record


def test_wandb_offline_holds_tables(sweep, tmp_path):
    pytest.importorskip("wandb")
    proc = run_cli(str(sweep), "--out", str(tmp_path / "rep"), "--wandb", "--group", "g-test",
                   env={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"})
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    (log,) = run_dir.glob("*.wandb")
    records = list(wandb_records(log))
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.job_type == "report" and run.run_group == "g-test" and run.project == "pai"
    items: dict = {}  # history items arrive flattened: nested_key = [logged key, field of its media dict]
    for r in records:
        if r.WhichOneof("record_type") == "history":
            for i in r.history.item:
                path = list(i.nested_key) or [i.key]
                items.setdefault(path[0], {})["/".join(path[1:]) or "value"] = json.loads(i.value_json)
    ref = items["tables/cifar10-resnet18-global-nowarmup"]
    assert ref["_type"] == "table-file" and items["plots/cifar10-resnet18-global-nowarmup_density"][
        "_type"] == "image-file"
    table = json.loads((run_dir / "files" / ref["path"]).read_text())
    got = pd.DataFrame(table["data"], columns=table["columns"])
    want = pd.read_csv(tmp_path / "rep" / "summary.csv")
    assert got.columns.tolist() == want.columns.tolist()
    np.testing.assert_allclose(got["mean"].astype(float), want["mean"])
    assert got["n"].tolist() == want["n"].tolist() and got["criterion"].tolist() == want["criterion"].tolist()


def test_wandb_from_a_runs_csv_outside_a_runs_folder(tmp_path):
    """A runs.csv with no `runs` folder on its path (docs/results/...): the report's W&B run goes beside the
    report (its --out folder, by default the CSV's own), and a W&B dir that is a file fails in one line."""
    pytest.importorskip("wandb")
    csv = tmp_path / "study" / "runs.csv"
    csv.parent.mkdir()
    csv.write_bytes((ROOT / "docs" / "results" / "fashion_mnist" / "report" / "runs.csv").read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_CONFIG_DIR=str(tmp_path), HOME=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "pai.report", str(csv), "--wandb", "--out", str(tmp_path / "rep")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "rep" / "wandb").glob("offline-run-*")
    assert f"W&B run in {run_dir}" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "pai.report", str(csv), "--wandb", "--wandb-dir", str(csv)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("python -m pai.report: error: W&B dir:")


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / "launch.py").exists(), reason="needs launch.py (the lead's pipeline)")
def test_report_on_real_sweep(tmp_path):
    cmd = [sys.executable, "launch.py", "-m", "dataset=digits", "model=resnet20", "pruner=none,random,magnitude",
           "seed=0,1", "sparsity=0.9", "train=quick", "train.epochs=1", "logger=none", f"out_root={tmp_path}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    report = build_report(tmp_path / "runs", tmp_path / "report")
    summary = report["summary"]
    assert summary[GROUP_KEYS[:2]].drop_duplicates().values.tolist() == [["digits", "resnet20"]]
    assert set(summary["criterion"]) == {"none", "random", "magnitude"}
    assert (summary["n"] == 2).all() and (summary["sparsity"] == 0.9).all()
    assert report["failed"].empty and report["unreadable"].empty
    (md,) = [p["md"] for p in report["tables"].values()]
    assert table_rows(Path(md).read_text()) == ["none", "random", "magnitude"]


# ---- statistics: CIs, paired tests against a baseline and against a criterion's own ablated mask, Holm ----

STUDY_SEEDS = [0, 1, 2, 3, 4, 5]


def study_accuracy(crit: str, seed: int) -> float:
    """Seeds share a large offset (the init), which pairing removes; `good` is 3 points above random in every
    seed (± 0.5), `noise` is random ± 1 point with mean 0; `good+shuffle` loses those 3 points again."""
    shared = [0.0, 8.0, -6.0, 3.0, -9.0, 5.0][seed]
    own = {"good": 3.0 + [0.3, -0.5, 0.2, 0.4, -0.1, 0.0][seed], "noise": [0.9, -1.0, 0.4, -0.6, 0.7, -0.4][seed],
           "good+shuffle": [0.2, -0.3, 0.1, 0.4, -0.2, -0.1][seed], "random": 0.0}[crit]
    return (60.0 + shared + own) / 100.0


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    runs = tmp_path_factory.mktemp("study") / "runs"
    for seed in STUDY_SEEDS:
        for crit in ("random", "good", "noise", "good+shuffle"):
            pruner, _, suffix = crit.partition("+")
            write_run(runs, pruner=pruner, sparsity=0.9, seed=seed, test_acc=study_accuracy(crit, seed),
                      config_hash=f"{crit}{seed}", ablation="layer_shuffle" if suffix else "none",
                      effective_sparsity=0.95 if pruner == "good" else 0.92, ablation_overlap=0.1 if suffix else 1.0,
                      effectively_empty_layers=["conv1.weight"] if crit == "noise" else [])
    return build_report(runs, tmp_path_factory.mktemp("study_out"))


def per_seed(crit: str) -> np.ndarray:
    return np.array([study_accuracy(crit, s) * 100 for s in STUDY_SEEDS])


def test_paired_comparison_against_the_baseline(study):
    comps = study["comparisons"].set_index(["kind", "criterion"])
    good, noise = comps.loc[("baseline", "good")], comps.loc[("baseline", "noise")]
    d = per_seed("good") - per_seed("random")
    lo, hi = scipy.stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=scipy.stats.sem(d))
    assert good["n"] == 6 and good["diff"] == pytest.approx(d.mean())
    assert (good["ci_low"], good["ci_high"]) == pytest.approx((lo, hi))
    assert good["p"] == pytest.approx(scipy.stats.ttest_rel(per_seed("good"), per_seed("random")).pvalue)
    assert good["significant"] and not noise["significant"] and noise["p"] > 0.3
    # An unpaired test drowns the same 3 points in the seed-to-seed spread: pairing is what finds them.
    assert scipy.stats.ttest_ind(per_seed("good"), per_seed("random")).pvalue > 0.2
    # Holm over the rows of the table: the smaller p is doubled, the larger one kept (m = 2).
    assert good["p_holm"] == pytest.approx(min(1.0, 2 * good["p"]))
    assert noise["p_holm"] == pytest.approx(max(noise["p"], good["p_holm"]))
    md = study["markdown"]
    row = next(line for line in md.splitlines() if line.startswith("| good ") and "[" in line)
    assert row.rstrip(" |").endswith("↑")
    noise_row = next(line for line in md.splitlines() if line.startswith("| noise "))
    assert "↑" not in noise_row and "↓" not in noise_row
    assert f"{d.mean():+.2f} [{lo:+.2f}, {hi:+.2f}] p<0.001* (6)" in md


def test_a_criterion_against_its_own_shuffled_mask(study):
    comps = study["comparisons"]
    (row,) = comps[comps["kind"] == "ablation:shuffle"].itertuples()
    assert (row.criterion, row.reference) == ("good", "good+shuffle") and row.significant
    d = per_seed("good") - per_seed("good+shuffle")
    assert row.diff == pytest.approx(d.mean()) and row.n == 6
    assert "Own mask − its layer-shuffled mask" in study["markdown"]
    shuffled = comps[(comps["kind"] == "baseline:shuffle")]
    assert list(shuffled["criterion"]) == ["good+shuffle"] and not shuffled["significant"].any()
    runs = study["runs"]
    assert set(runs.loc[runs["ablation"] == "layer_shuffle", "criterion"]) == {"good+shuffle"}


def test_no_best_without_a_significant_lead_and_a_warning_without_dense(study):
    summary = study["summary"]
    # good leads noise by 3 points with p < 0.05 in the paired test: bold
    assert summary.set_index("criterion").loc["good", "best"]
    assert study["notes"] and any("no dense baseline" in n for n in study["notes"])
    assert "**Warning:** no dense baseline" in study["markdown"]


def test_best_needs_a_significant_lead(tmp_path):
    runs = tmp_path / "runs"
    for seed in range(4):
        write_run(runs, pruner="snip", sparsity=0.9, seed=seed, test_acc=0.600 + [0.01, -0.02, 0.015, 0.0][seed],
                  config_hash=f"s{seed}")
        write_run(runs, pruner="hts", sparsity=0.9, seed=seed, test_acc=0.601 + [-0.01, 0.02, -0.01, 0.005][seed],
                  config_hash=f"h{seed}")
        write_run(runs, pruner="none", sparsity=0.9, seed=seed, test_acc=0.7, config_hash=f"n{seed}")
    report = build_report(runs, tmp_path / "out")
    assert not report["summary"]["best"].any() and "**" not in report["markdown"].split("\n## ")[1]
    assert not any("no dense baseline" in n for n in report["notes"])


def test_holm_step_down():
    from pai.report.stats import holm

    adjusted = holm([0.04, 0.01, np.nan, 0.03, 0.5])
    # sorted 0.01, 0.03, 0.04, 0.5 (m = 4): 0.04, 0.09, max(0.09, 0.08), max(0.09, 0.5)
    np.testing.assert_allclose(adjusted, [0.09, 0.04, np.nan, 0.09, 0.5])
    assert np.all(np.diff(np.sort(adjusted[~np.isnan(adjusted)])) >= 0)
    assert holm([0.4, 0.9]).tolist() == [0.8, 0.9] and holm([]).size == 0


def test_effective_sparsity_beside_nominal(study):
    conn = study["connectivity"].set_index("criterion")
    assert conn.loc["good", "effective"] == pytest.approx(0.95) and conn.loc["noise", "effectively_empty"] == 1
    assert conn.loc["good", "nominal"] == pytest.approx(0.9)
    assert "0.9000 → 0.9500 (0.0 empty, 0.0 collapsed)" in study["markdown"]


def test_accuracy_plot_error_bars_are_the_intervals_and_points_are_dodged(study):
    from pai.report.plots import accuracy_figure

    summary = study["summary"]
    fig = accuracy_figure(summary, "t")
    ax = fig.axes[0]
    assert "95 % CI" in ax.get_ylabel() and "n = 6" in ax.get_ylabel()
    xs, spans = {}, {}
    for container in ax.containers:
        line, _, (bars,) = container.lines[0], container.lines[1], container.lines[2]
        xs[container.get_label()] = float(line.get_xdata()[0])
        (segment,) = bars.get_segments()
        spans[container.get_label()] = (segment[0][1], segment[1][1])
    assert len(set(xs.values())) == len(xs) == 4  # one sparsity, four criteria at four x positions
    row = summary.set_index("criterion").loc["good"]
    assert spans["good"] == pytest.approx((row["ci_low"], row["ci_high"]))


def test_only_keeps_the_selected_runs(study, tmp_path):
    report = build_report(study["runs_dir"], tmp_path / "o", only=["pruner=good,random", "ablation=none"])
    assert set(report["summary"]["criterion"]) == {"good", "random"}
    proc = run_cli(str(study["runs_dir"]), "--out", str(tmp_path / "o2"), "--only", "nonsense=1")
    assert proc.returncode == 2 and "--only" in proc.stderr


def test_a_defect_reproduction_is_labelled_under_its_table(tmp_path):
    """synflow_seed's row carries the note that it reproduces the reference code's defect, not SynFlow; a table
    without it carries no such note."""
    runs = tmp_path / "runs"
    for seed in range(2):
        write_run(runs, pruner="synflow", sparsity=0.9, seed=seed, test_acc=0.6, config_hash=f"a{seed}")
        write_run(runs, pruner="none", sparsity=0.9, seed=seed, test_acc=0.7, config_hash=f"n{seed}")
    assert "not SynFlow" not in build_report(runs, tmp_path / "without")["markdown"]
    for seed in range(2):
        write_run(runs, pruner="synflow_seed", sparsity=0.9, seed=seed, test_acc=0.1, config_hash=f"b{seed}")
    md = build_report(runs, tmp_path / "with")["markdown"]
    assert "> **`synflow_seed`** reproduces a defect of the reference code" in md and "it is not SynFlow" in md


def test_only_on_sparsity_or_warmup_keeps_the_dense_baseline(tmp_path):
    """The dense baseline records sparsity 0 and stands for every sparsity and BN-warmup column: `--only
    sparsity=0.9` must not drop it (the table would lose its dense row and warn that it has none)."""
    runs = tmp_path / "runs"
    for seed in range(2):
        for sp in (0.9, 0.98):
            write_run(runs, pruner="snip", sparsity=sp, seed=seed, test_acc=0.5, config_hash=f"s{sp}{seed}")
        write_run(runs, pruner="none", sparsity=0.0, seed=seed, test_acc=0.8, config_hash=f"n{seed}")
    report = build_report(runs, tmp_path / "out", only=["sparsity=0.9", "bn_warmup=false", "pruner=snip,none"])
    summary = report["summary"]
    assert set(summary["sparsity"]) == {0.9} and set(summary["criterion"]) == {"none", "snip"}
    assert not any("no dense baseline" in n for n in report["notes"])
    assert set(build_report(runs, tmp_path / "o2", only=["pruner=snip"])["summary"]["criterion"]) == {"snip"}
