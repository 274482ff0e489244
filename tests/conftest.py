"""Shared fixtures: the repo root, `launch.py` subprocess runners (blocking and background, plus a wait for a
file to appear), tiny configs, and the `slurm` marker's skip."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# A run of a few seconds: 8x8 grey synthetic images, ResNet-20 at quarter width, one short epoch.
TINY = [
    "dataset=synthetic", "dataset.image_size=8", "dataset.in_channels=1", "dataset.num_train=64",
    "dataset.num_test=32", "model=resnet20", "model.width=0.25", "train=quick", "train.epochs=1",
    "train.batch_size=32", "prune.samples_per_class=2", "logger=none",
]

# Settings that a sweep through `hydra/launcher=slurm` needs on the local one-node test cluster.
SLURM_TEST = [
    "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10",
]


SLURM_UP = "`make slurm-up` (scripts/slurm/up.sh, as root; `make slurm-down` stops it)"


@functools.cache
def slurm_status() -> str | None:
    """None when a SLURM controller answers, else why not, naming the in-repo test cluster's start command."""
    why = _slurm_down()
    return None if why is None else f"{why}: start the test cluster with {SLURM_UP}"


def _slurm_down() -> str | None:
    if not shutil.which("scontrol"):
        return "no scontrol on PATH"
    try:
        r = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"scontrol ping failed ({exc})"
    if "is UP" not in r.stdout:
        return f"SLURM controller not UP ({(r.stdout + r.stderr).strip()[:200]})"
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slurm") is not None and slurm_status() is not None:
            item.add_marker(pytest.mark.skip(reason=slurm_status()))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


def launch_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of a launch.py subprocess: offline W&B with its files in `tmp`, no inherited out_root,
    one thread per process."""
    env = dict(os.environ)
    env.pop("PAI_OUT", None)
    # One intra-op thread: tiny runs are 10-30x faster than with 2 threads on a busy 2-core machine (spinning
    # threads), and parallel jobs (submitit local, SLURM) do not oversubscribe the cores.
    env.update(WANDB_MODE="offline", WANDB_DIR=str(tmp), WANDB_SILENT="true", HYDRA_FULL_ERROR="1",
               PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.update(extra)
    return env


@pytest.fixture
def run_launch(tmp_path):
    """`run_launch(args, out_root, sweep_dir=None, timeout=…, env=…)` runs launch.py and returns the
    CompletedProcess (stdout+stderr in `.output`). `args` includes `-m` for a sweep; `hydra.sweep.dir` is
    set to `sweep_dir` (default: a fresh folder under out_root) so concurrent launches never share one."""
    counter = iter(range(1_000_000))

    def _run(args: list[str], out_root: Path, sweep_dir: Path | None = None, timeout: float = 300,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        out_root = Path(out_root)
        sweep_dir = sweep_dir or out_root / f"sweep{next(counter)}"
        cmd = [sys.executable, str(REPO_ROOT / "launch.py"), *args, f"out_root={out_root}",
               f"hydra.sweep.dir={sweep_dir}", f"hydra.run.dir={out_root}/hydra-run"]
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env or launch_env(tmp_path), capture_output=True,
                              text=True, timeout=timeout)
        proc.output = proc.stdout + proc.stderr
        proc.sweep_dir = sweep_dir
        return proc

    return _run


def all_results(out_root: Path) -> list[dict]:
    """Every results.json under `out_root/runs`, sorted by run directory."""
    return [json.loads(p.read_text()) for p in sorted(Path(out_root, "runs").rglob("results.json"))]


def job_records(sweep_dir: Path) -> list[dict]:
    """The pai_job.json record of every job of a sweep, by job number."""
    recs = [json.loads(p.read_text()) for p in Path(sweep_dir).rglob("pai_job.json")]
    return sorted(recs, key=lambda r: r["job_num"])


def popen_launch(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """launch.py in the background, stdout and stderr merged into `.stdout`."""
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "launch.py"), *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(pattern: str, root: Path, proc: subprocess.Popen, timeout: float = 150, poll: float = 0.02) -> Path:
    """The first path under `root` matching `pattern`, once one exists; fails (and kills `proc`) if `proc` ends
    first or nothing appears within `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(Path(root).glob(pattern))
        if found:
            return found[0]
        if proc.poll() is not None:
            raise AssertionError(f"the process ended before {pattern} appeared:\n{proc.stdout.read()}")
        time.sleep(poll)
    proc.kill()
    raise AssertionError(f"{pattern} did not appear within {timeout} s")
