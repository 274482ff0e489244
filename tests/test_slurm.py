"""Sweeps through a real SLURM (`make slurm-up`, scripts/slurm/up.sh): a job array via `hydra/launcher=slurm`,
failure reporting (also of a job killed without a result), and preemption/timeout → requeue → resume from
last.pt with unchanged metrics. (Relaunch/skip is the same code under every launcher: tests/test_sweep.py.)

Skipped (with the reason) when no SLURM controller answers `scontrol ping`.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from conftest import SLURM_TEST, TINY, all_results, job_records, launch_env, popen_launch, wait_for

pytestmark = pytest.mark.slurm

# Epochs of ≈1 s (one thread), so a job can be interrupted between its first checkpoint and its end.
LONGER = [
    "dataset=synthetic", "dataset.image_size=16", "dataset.num_train=2048", "dataset.num_test=128",
    "model=resnet20", "model.width=0.25", "train=quick", "train.batch_size=32", "prune.samples_per_class=4",
    "pruner=magnitude", "sparsity=0.8", "logger=none",
]


def _results(root: Path) -> dict:
    return json.loads(next(root.glob("runs/*/*/*/*/results.json")).read_text())


def test_slurm_array_sweep_six_jobs(run_launch, tmp_path):
    out, sweep = tmp_path / "out", tmp_path / "sweep"
    args = ["-m", *TINY, *SLURM_TEST, "pruner=none,random,magnitude", "seed=0,1"]
    proc = run_launch(args, out, sweep_dir=sweep)
    assert proc.returncode == 0, proc.output
    assert "Submitit 'slurm' sweep output dir" in proc.output
    results = all_results(out)
    assert len(results) == 6 and all(r["status"] == "done" for r in results)
    assert {(r["pruner"], r["seed"]) for r in results} == {(p, s) for p in ("none", "random", "magnitude")
                                                          for s in (0, 1)}
    recs = job_records(sweep)
    assert [r["status"] for r in recs] == ["done"] * 6
    array_ids = {r["slurm_job_id"].split("_")[0] for r in recs}
    assert len(array_ids) == 1, "one SLURM job array"
    assert sorted(int(r["slurm_job_id"].split("_")[1]) for r in recs) == list(range(6))
    assert {r["run_dir"] for r in recs} == {r["run_dir"] for r in results}



def test_slurm_failed_run_is_listed_and_exit_1(run_launch, tmp_path):
    """Under submitit, Hydra alone would re-raise the first failure only; every job still runs."""
    out = tmp_path / "out"
    proc = run_launch(["-m", *TINY, *SLURM_TEST, "pruner=magnitude", "sparsity=0.5,1.5", "model.num_classes=10,5"],
                      out)
    assert proc.returncode == 1, proc.output
    assert "4 job(s): 1 done, 3 failed" in proc.output
    assert proc.output.count("FAILED #") == 3
    assert "model.num_classes: the model has 5 outputs" in proc.output
    assert "sparsity=1.5 must be a number in [0, 1)" in proc.output  # before the run starts
    statuses = sorted(r["status"] for r in all_results(out))
    assert statuses == ["done"]  # a config that fails its checks leaves no run directory


def test_slurm_cancelled_job_is_reported_while_the_others_finish(tmp_path):
    """One job of three is cancelled (scancel) while the others run, and the job after it fails: the launcher
    waits for all three and the report lists how each ended, `cancelled` and `failed` included
    (hydra-submitit-launcher alone stops waiting at the first job without a result, so the jobs after it were
    reported "without record" and a later failure never).
    The sweep folder is the default one (date, time, launch id): the jobs must find it too."""
    env = launch_env(tmp_path)
    out = tmp_path / "out"
    # Job 1 trains for 500 epochs, so the scancel always lands while it runs; job 2 asks for 0 epochs, which
    # its own validation refuses: a failure listed after the cancelled job.
    proc = popen_launch(["-m", *LONGER, *SLURM_TEST, "train.epochs=2,500,0", f"out_root={out}"], env)
    sweep = wait_for("sweeps/*/*", out, proc)
    job_log = wait_for("1/pai.log", sweep, proc)
    array_task = wait_for(".submitit/*_1", sweep, proc).name
    deadline = time.monotonic() + 150
    while "epoch 1/500" not in job_log.read_text() and time.monotonic() < deadline:  # its run is under way
        time.sleep(0.2)
    subprocess.run(["scancel", array_task], check=True)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, output
    assert "3 job(s): 1 cancelled, 1 done, 1 failed" in output
    assert "CANCELLED #1: train.epochs=500" in output and "the job was cancelled (CANCELLED" in output
    assert "FAILED #2: train.epochs=0" in output and "train.epochs=0 must be an integer ≥ 1" in output
    recs = job_records(sweep)
    assert [r["status"] for r in recs] == ["done", "cancelled", "failed"]
    assert recs[1]["slurm_job_id"] == array_task and Path(recs[1]["run_dir"], "last.pt").exists()
    assert [len(r["history"]) for r in all_results(out)] == [2]


def test_slurm_preempted_job_requeues_and_resumes_identically(tmp_path):
    """Preempt one job of a running array with submitit's `_interrupt()` (SIGTERM + USR2, as SLURM does): the
    launcher's `checkpoint` resubmits the same job, SLURM requeues it, and it resumes from last.pt in the same
    run directory. Its twin (same config, other out_root, same array) runs uninterrupted: equal metrics."""
    import submitit

    env = launch_env(tmp_path)
    a, b, sweep = tmp_path / "a", tmp_path / "b", tmp_path / "sweep"
    proc = popen_launch(["-m", *LONGER, *SLURM_TEST, "train.epochs=8", "hydra.launcher.timeout_min=60",
                   "hydra.launcher.max_num_timeout=1", f"out_root={a},{b}", f"hydra.sweep.dir={sweep}"], env)
    ckpt = wait_for("runs/*/*/*/*/last.pt", a, proc)
    submitit_dir = wait_for(".submitit/*_0", sweep, proc)
    job = submitit.SlurmJob(folder=sweep / ".submitit" / "%j", job_id=submitit_dir.name)
    job._interrupt()  # preemption
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, output

    recs = job_records(sweep)
    assert [r["status"] for r in recs] == ["done", "done"]
    assert recs[0]["slurm_restart_count"] == 1 and recs[1]["slurm_restart_count"] == 0
    # submitit's log of the job (both attempts): the signal, the launcher's checkpoint → requeue, the resume
    log = (submitit_dir / f"{submitit_dir.name}_0_log.out").read_text()
    assert "this job is preempted" in log and f"Requeued job {submitit_dir.name}" in log
    assert f"resuming from {ckpt} at epoch" in log
    resumed, reference = _results(a), _results(b)
    assert resumed["run_dir"] == str(ckpt.parent)
    assert resumed["resumed_after_epoch"] >= 1 and reference["resumed_after_epoch"] is None
    assert resumed["history"] == reference["history"]
    assert resumed["test_acc"] == reference["test_acc"]


@pytest.mark.slow
def test_slurm_timed_out_job_requeues_and_resumes_identically(tmp_path):
    """A job that hits its time limit (timeout_min=1; USR2 `signal_delay_s` before it) is requeued up to
    max_num_timeout times and finishes from its checkpoints with the metrics of an uninterrupted local run.

    On the test cluster slurmctld checks time limits on 30 s ticks, so an attempt gets the USR2 after 0-30 s
    (measured: 9 s for the first, then ≈15 s of every 30 s cycle, less ≈3 s of start-up). 100 epochs of
    0.75 s (idle machine; ≈1.5 s when the other core is busy) are 75-150 s of training: no attempt can finish
    them, so the job is timed out several times and its last attempt resumes from a checkpoint. (20 epochs, as
    before, fitted in one attempt on an idle machine.)"""
    env = launch_env(tmp_path)
    a, ref_root, sweep = tmp_path / "a", tmp_path / "ref", tmp_path / "sweep"
    run = [*LONGER, "dataset.num_train=1536", "train.epochs=100"]
    ref = popen_launch([*run, f"out_root={ref_root}", f"hydra.run.dir={ref_root}/hydra"], env)
    proc = popen_launch(["-m", *run, *SLURM_TEST, "hydra.launcher.timeout_min=1",
                   "hydra.launcher.signal_delay_s=30", "hydra.launcher.max_num_timeout=20", f"out_root={a}",
                   f"hydra.sweep.dir={sweep}"], env)
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, output
    assert ref.wait(timeout=120) == 0, ref.stdout.read()
    (rec,) = job_records(sweep)
    assert rec["status"] == "done" and rec["slurm_restart_count"] >= 1
    resumed, reference = _results(a), _results(ref_root)
    assert resumed["resumed_after_epoch"] >= 1
    assert resumed["history"] == reference["history"]
    assert resumed["test_acc"] == reference["test_acc"]


@pytest.mark.slow
def test_slurm_job_out_of_requeues_is_reported_timed_out(tmp_path):
    """A job that reaches its time limit with no requeue left (max_num_timeout=0) is reported `timed_out`, not
    as an ordinary failure; the job beside it finishes and is reported `done`.

    SLURM may send the USR2 up to 60 s earlier than `signal_delay_s` before the limit (its event resolution; on
    the test cluster it came 22 s after the start with a 1-minute limit and a 30 s delay, and in CI it once
    caught a 2-epoch "short" job). With a 2-minute limit and a 30 s delay it comes at least 30 s after the
    start; the short job, one epoch of 8 steps, is done within its start-up time (8 s measured with both cores
    busy), and the long one, 2000 such epochs of 0.25 s (≈500 s), cannot finish before the limit."""
    env = launch_env(tmp_path)
    out, sweep = tmp_path / "out", tmp_path / "sweep"
    proc = popen_launch(["-m", *LONGER, *SLURM_TEST, "train.epochs=1,2000", "train.steps_per_epoch=8",
                         "hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=30",
                         "hydra.launcher.max_num_timeout=0", f"out_root={out}", f"hydra.sweep.dir={sweep}"], env)
    output, _ = proc.communicate(timeout=600)
    records = job_records(sweep)
    assert proc.returncode == 1, output
    assert [r["status"] for r in records] == ["done", "timed_out"], (records, output[-3000:])
    assert "2 job(s): 1 done, 1 timed_out" in output and "TIMED OUT #1: train.epochs=2000" in output, output[-3000:]
