"""`-m` sweeps: every job writes its results.json; failed runs are listed at the end and make the command exit 1;
a relaunch skips finished runs and reruns failed ones."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from conftest import REPO_ROOT, TINY, all_results, job_records, launch_env, popen_launch, wait_for

CRITERIA_USED_BY = ["hutch_diag", "fts", "snip"]


def _by(records: list[dict], *keys: str) -> dict[tuple[str, ...], dict]:
    """Records indexed by their `key=value` overrides for `keys`."""
    return {tuple(o for k in keys for o in r["overrides"] if o.startswith(f"{k}=")): r for r in records}


def test_basic_launcher_sweep_writes_every_result(run_launch, tmp_path):
    out = tmp_path / "out"
    proc = run_launch(["-m", *TINY, "pruner=none,random,magnitude", "seed=0,1"], out)
    assert proc.returncode == 0, proc.output
    results = all_results(out)
    assert len(results) == 6
    assert {(r["pruner"], r["seed"]) for r in results} == {(p, s) for p in ("none", "random", "magnitude")
                                                          for s in (0, 1)}
    assert all(r["status"] == "done" and 0.0 <= r["test_acc"] <= 1.0 for r in results)
    recs = job_records(proc.sweep_dir)
    assert [r["status"] for r in recs] == ["done"] * 6
    assert {r["run_dir"] for r in recs} == {r["run_dir"] for r in results}
    assert "6 job(s): 6 done" in proc.output
    # The sweep-end accuracy table: mean ± std over the two seeds (n = 2) per criterion and sparsity.
    start = proc.output.index("test accuracy (%), mean ± std over seeds (n):")
    table = [line.split("[HYDRA] ", 1)[-1] for line in proc.output[start:].splitlines()[1:6]]
    assert table[0].split() == ["criterion", "\\", "sparsity", "dense", "0.9"]
    rows = {line.split()[0]: line for line in table[2:]}
    assert set(rows) == {"none", "random", "magnitude"} and all(r.count(" ± ") == 1 and r.rstrip().endswith(" (2)")
                                                                 for r in rows.values())


FLAKY = """
import os
from pathlib import Path

from pai.data.synthetic import build_synthetic


def build(**kw):
    # Fails for generator_seed 1 while the marker file exists: a transient failure the test can fix.
    if kw["generator_seed"] == 1 and Path(os.environ["FLAKY_MARKER"]).exists():
        raise RuntimeError("flaky dataset is down")
    return build_synthetic(**kw)
"""


def test_failures_are_listed_exit_1_and_relaunch_reruns_them(run_launch, tmp_path):
    """All jobs run, every failure is listed at the end (Hydra alone shows only the first), exit code 1;
    relaunching the same command skips the finished run and reruns the failed ones."""
    (tmp_path / "flaky_data.py").write_text(textwrap.dedent(FLAKY))
    marker = tmp_path / "marker"
    marker.touch()
    env = launch_env(tmp_path, PYTHONPATH=f"{tmp_path}", FLAKY_MARKER=str(marker))
    out, sweep = tmp_path / "out", tmp_path / "sweep"
    args = ["-m", *TINY, "pruner=magnitude", "dataset._target_=flaky_data.build",
            "dataset.generator_seed=0,1", "sparsity=0.5,1.5"]
    proc = run_launch(args, out, sweep_dir=sweep, env=env)
    assert proc.returncode == 1, proc.output
    recs = _by(job_records(sweep), "dataset.generator_seed", "sparsity")
    assert len(recs) == 4
    ok = recs[("dataset.generator_seed=0", "sparsity=0.5")]
    flaky = recs[("dataset.generator_seed=1", "sparsity=0.5")]
    bad = [recs[(f"dataset.generator_seed={g}", "sparsity=1.5")] for g in (0, 1)]
    assert ok["status"] == "done"
    assert flaky["status"] == "failed" and "flaky dataset is down" in flaky["error"]
    for r in bad:  # fails before a run directory exists
        assert r["status"] == "failed" and "sparsity=1.5" in r["error"] and r["run_dir"] is None
    # results.json of the run that failed inside the pipeline says so, with the error
    failed = json.loads((Path(flaky["run_dir"]) / "results.json").read_text())
    assert failed["status"] == "failed" and "flaky dataset is down" in failed["error"]
    # the report at the end lists all three failures with their errors
    tail = proc.output[proc.output.rfind("4 job(s)"):]
    assert "4 job(s): 1 done, 3 failed" in tail
    assert tail.count("FAILED #") == 3
    assert "flaky dataset is down" in tail and "must be a number in [0, 1)" in tail
    assert "dataset.generator_seed=1 sparsity=0.5" in tail  # the failing job's own overrides

    marker.unlink()  # the transient cause is fixed: relaunch the very same command
    proc = run_launch(args, out, sweep_dir=sweep, env=env)
    assert proc.returncode == 1, proc.output  # the config errors still fail
    recs = _by(job_records(sweep), "dataset.generator_seed", "sparsity")
    assert recs[("dataset.generator_seed=0", "sparsity=0.5")]["status"] == "skipped"
    assert recs[("dataset.generator_seed=1", "sparsity=0.5")]["status"] == "done"
    assert "4 job(s): 1 done, 2 failed, 1 skipped" in proc.output
    statuses = sorted(r["status"] for r in all_results(out))
    assert statuses == ["done", "done"]


@pytest.mark.slow
def test_used_by_command_nine_jobs(run_launch, tmp_path):
    """The issue's command `python launch.py -m pruner=hutch_diag,fts,snip seed=0,42,123` (defaults: digits,
    ResNet-20, quick recipe), one epoch and no W&B to keep it short."""
    missing = [c for c in CRITERIA_USED_BY if not (REPO_ROOT / "conf/pruner" / f"{c}.yaml").exists()]
    pruners = "none,random,magnitude" if missing else ",".join(CRITERIA_USED_BY)
    out = tmp_path / "out"
    proc = run_launch(["-m", f"pruner={pruners}", "seed=0,42,123", "train.epochs=1", "logger=none"], out,
                      timeout=900)
    assert proc.returncode == 0, proc.output
    results = all_results(out)
    assert len(results) == 9 and all(r["status"] == "done" for r in results)
    assert sorted({r["seed"] for r in results}) == [0, 42, 123]


def test_parallel_duplicate_configs_train_once(run_launch, tmp_path):
    """The dense baseline ignores the sparsity, so a grid maps several jobs to one run directory: when they run
    at once (submitit local launcher), one trains, the others see the run directory's lock and step aside."""
    out = tmp_path / "out"
    proc = run_launch(["-m", *TINY, "hydra/launcher=local", "pruner=none", "sparsity=0.5,0.7,0.9",
                       "train.epochs=2"], out)
    assert proc.returncode == 0, proc.output
    assert "Submitit 'local' sweep output dir" in proc.output
    (res,) = all_results(out)
    assert res["status"] == "done" and [h["epoch"] for h in res["history"]] == [1, 2]
    statuses = [r["status"] for r in job_records(proc.sweep_dir)]
    assert statuses.count("done") == 1 and set(statuses) <= {"done", "busy", "skipped"}, statuses


# Every process started with this on its PYTHONPATH reads 2030-01-02 03:04:05 from Hydra's `${now:...}`, so
# launches started apart in time still name their folders "in the same second".
FROZEN_CLOCK = """
import datetime

import hydra.core.utils


class _Frozen(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(2030, 1, 2, 3, 4, 5)


hydra.core.utils.datetime = _Frozen
"""


def _frozen_clock_env(tmp_path: Path) -> dict[str, str]:
    clock = tmp_path / "clock"
    clock.mkdir()
    (clock / "sitecustomize.py").write_text(FROZEN_CLOCK)
    return launch_env(tmp_path, PYTHONPATH=str(clock))


def test_two_sweeps_started_in_the_same_second_report_their_own_jobs(tmp_path):
    """Sweep folders were named by the second only: two sweeps shared one, overwrote each other's job records
    and reported each other's jobs. Two sweeps over one out_root, 2 and 3 jobs, at the same (frozen) second."""
    env, out = _frozen_clock_env(tmp_path), tmp_path / "out"
    procs = {seeds: popen_launch(["-m", *TINY, "pruner=magnitude", f"seed={seeds}", f"out_root={out}"], env)
             for seeds in ("0,1", "2,3,4")}
    outputs = {seeds: p.communicate(timeout=600)[0] for seeds, p in procs.items()}
    for seeds, p in procs.items():
        assert p.returncode == 0, outputs[seeds]
    sweeps = sorted((out / "sweeps" / "2030-01-02").iterdir())
    assert len(sweeps) == 2 and all(d.name.startswith("03-04-05-") for d in sweeps)
    assert "2 job(s): 2 done" in outputs["0,1"] and "3 job(s): 3 done" in outputs["2,3,4"]
    seeds_of = {tuple(sorted(o for r in job_records(d) for o in r["overrides"] if o.startswith("seed=")))
                for d in sweeps}
    assert seeds_of == {("seed=0", "seed=1"), ("seed=2", "seed=3", "seed=4")}
    assert len(all_results(out)) == 5


def test_two_runs_started_in_the_same_second_log_apart(tmp_path):
    env, out = _frozen_clock_env(tmp_path), tmp_path / "out"
    procs = [popen_launch([*TINY, "pruner=magnitude", f"seed={seed}", f"out_root={out}"], env) for seed in (0, 1)]
    for p in procs:
        output = p.communicate(timeout=600)[0]
        assert p.returncode == 0, output
    folders = sorted((out / "hydra" / "2030-01-02").glob("03-04-05-*"))
    assert len(folders) == 2
    assert sorted(next(o for o in (d / ".hydra" / "overrides.yaml").read_text().split() if o.startswith("seed="))
                  for d in folders) == ["seed=0", "seed=1"]
    for d in folders:  # one run's lines each, not both runs' lines interleaved in one file
        assert (d / "pai.log").read_text().count("epoch 1/1") == 1


def test_a_second_sweep_into_a_running_sweeps_folder_stops(tmp_path):
    """An explicit hydra.sweep.dir shared by two running sweeps: the second stops before touching the first's
    job records (exit 2, one line); the first reports its own jobs."""
    env, out, sweep = launch_env(tmp_path), tmp_path / "out", tmp_path / "sweep"
    first = popen_launch(["-m", *TINY, "pruner=magnitude", "seed=0,1", "train.epochs=4", f"out_root={out}",
                          f"hydra.sweep.dir={sweep}"], env)
    wait_for("0/.hydra", sweep, first)
    second = popen_launch(["-m", *TINY, "pruner=random", "seed=5", f"out_root={out}", f"hydra.sweep.dir={sweep}"],
                          env)
    output = second.communicate(timeout=300)[0]
    assert second.returncode == 2, output
    assert f"error: hydra.sweep.dir={sweep} is in use by a running sweep" in output
    first_output = first.communicate(timeout=600)[0]
    assert first.returncode == 0 and "2 job(s): 2 done" in first_output, first_output
    assert [o for r in job_records(sweep) for o in r["overrides"] if o.startswith("seed=")] == ["seed=0", "seed=1"]


@pytest.mark.parametrize(("state", "status", "error"), [
    ("CANCELLED by 0", "cancelled", "the job was cancelled (CANCELLED by 0)"),
    ("TIMEOUT", "timed_out", "hit its time limit"),
    ("OUT_OF_MEMORY", "failed", "OUT_OF_MEMORY: MemoryError: killed"),
    ("NODE_FAIL", "failed", "NODE_FAIL: MemoryError: killed"),
])
def test_a_job_without_a_result_is_named_by_its_scheduler_state(state, status, error):
    """How pai's submitit launcher records a job that ended without a result (tests/test_slurm.py runs the
    cancelled case on a real SLURM)."""
    from hydra_plugins.pai_submitit.launchers import _ended_without_result

    got_status, got_error = _ended_without_result(state, RuntimeError("has not produced any output\n----\n"
                                                                       "MemoryError: killed\n----"))
    assert got_status == status and error in got_error
