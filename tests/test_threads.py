"""torch threads from the CPUs a job was given (pai.threads) and the local launcher's job count."""

from __future__ import annotations

import os
import pickle

import pytest
from conftest import TINY, launch_env

from pai.errors import PaiConfigError
from pai.threads import LOCAL_JOBS_ENV, resolve_threads

ENV = ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK", LOCAL_JOBS_ENV, "LOCAL_WORLD_SIZE")


@pytest.fixture
def clean_env(monkeypatch):
    for key in ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))  # a job allowed 8 CPUs
    return monkeypatch


def test_threads_rule_in_order(clean_env):
    assert resolve_threads(None) == (8, "8 CPUs (affinity)")
    clean_env.setenv(LOCAL_JOBS_ENV, "3")  # 3 local jobs at once share the 8 CPUs
    assert resolve_threads(None)[0] == 2
    clean_env.setenv("LOCAL_WORLD_SIZE", "2")  # ... each a torchrun of 2 ranks
    assert resolve_threads(None)[0] == 1
    clean_env.setenv(LOCAL_JOBS_ENV, "20")  # more jobs than CPUs: still one thread each
    assert resolve_threads(None)[0] == 1
    clean_env.setenv("SLURM_CPUS_PER_TASK", "6")  # SLURM's per-task count wins over the affinity
    assert resolve_threads(None) == (6, "SLURM_CPUS_PER_TASK")
    clean_env.setenv("OMP_NUM_THREADS", "3")  # an explicit environment choice wins over SLURM
    assert resolve_threads(None) == (3, "OMP_NUM_THREADS")
    assert resolve_threads(5) == (5, "threads=")  # the knob wins over everything


@pytest.mark.parametrize("bad", [0, -1, 1.5, "two", True])
def test_bad_threads_knob_names_the_key(clean_env, bad):
    with pytest.raises(PaiConfigError, match="threads="):
        resolve_threads(bad)


def test_local_launcher_tells_each_job_the_batch_size(clean_env, monkeypatch):
    """The launcher is pickled into every job after `launch` counted the batch; in the job it exports the count."""
    from hydra_plugins.pai_submitit import launchers

    seen = {}
    # Both patched on _WaitForEveryJob, the class right after pai's LocalLauncher in its MRO: patching submitit's
    # module attribute misses when Hydra's plugin scan has re-imported that module (another class object).
    monkeypatch.setattr(launchers._WaitForEveryJob, "launch", lambda self, overrides, idx: [None] * len(overrides))
    monkeypatch.setattr(launchers._WaitForEveryJob, "__call__",
                        lambda self, *a, **k: seen.setdefault("jobs", os.environ[LOCAL_JOBS_ENV]), raising=False)
    launcher = launchers.LocalLauncher(submitit_folder="x")
    launcher.launch([["seed=0"], ["seed=1"], ["seed=2"]], 0)
    pickle.loads(pickle.dumps(launcher))()  # what a job process does
    assert seen["jobs"] == "3" and resolve_threads(None)[0] == 8 // 3


@pytest.mark.slow
def test_local_launcher_divides_the_cpus_among_its_jobs(run_launch, tmp_path):
    """Two jobs at once under hydra/launcher=local: each job learns the count and takes its share."""
    env = launch_env(tmp_path)
    env.pop("OMP_NUM_THREADS")
    out = tmp_path / "out"
    proc = run_launch(["-m", *TINY, "hydra/launcher=local", "pruner=random", "seed=0,1"], out, env=env)
    assert proc.returncode == 0, proc.output
    cpus = len(os.sched_getaffinity(0))
    logs = sorted(proc.sweep_dir.glob("*/pai.log"))
    assert len(logs) == 2
    for log in logs:
        line = f"torch threads: {max(1, cpus // 2)} ({cpus} CPUs (affinity) / 2 processes running at once)"
        assert line in log.read_text()
