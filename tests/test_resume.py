"""A run killed mid-training resumes from its last epoch checkpoint in the same run directory and ends with
exactly the metrics of an uninterrupted run (CPU, deterministic)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import torch
from conftest import REPO_ROOT, launch_env, popen_launch, wait_for

# Long enough epochs (≈0.3-1 s each) to kill the run between its first checkpoint and its end.
RESUME_RUN = [
    "dataset=synthetic", "dataset.image_size=16", "dataset.num_train=1024", "dataset.num_test=128",
    "model=resnet20", "model.width=0.25", "train=quick", "train.epochs=4", "train.batch_size=32",
    "prune.samples_per_class=4", "pruner=random", "sparsity=0.8", "prune.bn_warmup=true", "logger=none",
]


def _start(out_root: Path, env: dict) -> subprocess.Popen:
    return popen_launch([*RESUME_RUN, f"out_root={out_root}", f"hydra.run.dir={out_root}/hydra"], env)


def test_sigkilled_run_resumes_to_identical_metrics(tmp_path):
    env = launch_env(tmp_path)
    killed_root, ref_root = tmp_path / "killed", tmp_path / "ref"
    ref = _start(ref_root, env)  # the uninterrupted run, in parallel on the other core
    victim = _start(killed_root, env)
    ckpt = wait_for("runs/*/*/*/*/last.pt", killed_root, victim, timeout=120, poll=0.01)
    victim.send_signal(signal.SIGKILL)  # no handler, no cleanup: like an OOM kill or a node failure
    victim.wait(timeout=30)
    run_dir = ckpt.parent
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["epoch"] < 3, "the run finished before it could be killed; make the epochs longer"
    assert not (run_dir / "results.json").exists()

    rerun = subprocess.run([sys.executable, str(REPO_ROOT / "launch.py"), *RESUME_RUN, f"out_root={killed_root}",
                            f"hydra.run.dir={killed_root}/hydra2"], cwd=REPO_ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"resuming from {ckpt}" in rerun.stdout + rerun.stderr
    assert ref.wait(timeout=300) == 0, ref.stdout.read()

    resumed = json.loads((run_dir / "results.json").read_text())
    reference = json.loads(next(ref_root.glob("runs/*/*/*/*/results.json")).read_text())
    assert resumed["status"] == reference["status"] == "done"
    assert resumed["resumed_after_epoch"] == state["epoch"] + 1 and reference["resumed_after_epoch"] is None
    # same run directory name (derived from the config, not the out_root) and identical metrics
    assert run_dir.relative_to(killed_root) == Path(reference["run_dir"]).relative_to(ref_root)
    assert resumed["history"] == reference["history"]
    assert resumed["test_acc"] == reference["test_acc"] and resumed["test_loss"] == reference["test_loss"]
    assert resumed["layer_density"] == reference["layer_density"]
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3, 4]
