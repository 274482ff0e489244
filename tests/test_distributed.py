"""Data-parallel runs (pai.distributed): two CPU processes (gloo, torchrun) train exactly like one process with the
same global batch, agree on the masks, keep pruned weights at zero, write one results.json, resume after a
failure, and fail (not hang) when a rank dies or hangs. The SLURM test runs the same through
hydra/launcher=slurm_multigpu with two tasks (skipped without a local SLURM)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, TINY, all_results, job_records, launch_env

from pai import distributed
from pai.data.batching import batch_slices, check_batch_size
from pai.data.tensor_data import TensorImageData
from pai.errors import PaiConfigError

# BatchNorm-free (ViT: LayerNorm) so that two ranks with per-rank slices compute exactly the one-process
# gradients: on the CPU each rank's BatchNorm sees only its slice (DDP rejects SyncBatchNorm there).
VIT = [*(a for a in TINY if not a.startswith("model")), "model=vit_tiny", "model.patch_size=4", "pruner=magnitude",
       "sparsity=0.8", "train.epochs=2"]
# ResNet (BatchNorm, per-rank statistics) with BN warmup on rank 0, two epochs of two steps.
RESNET = [*TINY, "pruner=random", "sparsity=0.8", "prune.bn_warmup=true", "train.epochs=2"]


# One run over two SLURM tasks (ranks) of one CPU each on the local test cluster.
SLURM_TWO_TASKS = ["hydra/launcher=slurm_multigpu", "hydra.launcher.gpus_per_node=0",
                   "hydra.launcher.tasks_per_node=2", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
                   "hydra.launcher.timeout_min=10"]


def fault_env(tmp: Path, fault: str, **extra: str) -> dict[str, str]:
    """launch_env with a fault injected into one rank (tests/fault/sitecustomize.py)."""
    # The repository root too: sitecustomize imports pai before launch.py puts its own folder on sys.path.
    path = os.pathsep.join([str(REPO_ROOT / "tests" / "fault"), str(REPO_ROOT)])
    return launch_env(tmp, PAI_TEST_FAULT=fault, PYTHONPATH=path, **extra)


def torchrun(args: list[str], out_root: Path, env: dict, nproc: int = 2,
             timeout: float = 180) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=<nproc> launch.py <args>` (a free port, one node)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(REPO_ROOT / "launch.py"), *args, f"out_root={out_root}", f"hydra.run.dir={out_root}/hydra"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    proc.output = proc.stdout + proc.stderr
    return proc


def _run_dir(out_root: Path) -> Path:
    (results,) = list(Path(out_root, "runs").rglob("results.json"))  # exactly one results.json
    return results.parent


def _checksums(output: str) -> dict[int, str]:
    """rank -> the mask checksum it logged."""
    return {int(r): c for c, r in re.findall(r"mask checksum (\w+) \(rank (\d+) of", output)}


# ---- batching and helpers (in-process) --------------------------------------------------------------------
@pytest.mark.parametrize(("num", "batch", "world"), [(70, 16, 1), (70, 16, 2), (70, 16, 4), (64, 32, 2)])
def test_rank_slices_make_up_the_global_batches(num, batch, world):
    single = list(batch_slices(num, batch))
    per_rank = [list(batch_slices(num, batch, r, world)) for r in range(world)]
    assert all(len(p) == len(single) for p in per_rank)
    for i, whole in enumerate(single):
        parts = [p[i] for p in per_rank]
        assert parts[0].start == whole.start and parts[-1].stop == whole.stop
        assert all(a.stop == b.start for a, b in zip(parts, parts[1:], strict=False))
        assert max(s.stop - s.start for s in parts) - min(s.stop - s.start for s in parts) <= 1


def test_last_batch_smaller_than_world_is_dropped_only_when_distributed():
    assert len(list(batch_slices(65, 16))) == 5
    assert all(len(list(batch_slices(65, 16, r, 4))) == 4 for r in range(4))


def test_global_batch_must_split_over_ranks():
    assert check_batch_size(512, 8) == 64
    with pytest.raises(PaiConfigError, match=r"train.batch_size=30 .* divisible by the number of ranks \(4\)"):
        check_batch_size(30, 4)


def test_tensor_data_rank_slices_equal_the_single_process_batches():
    g = torch.Generator().manual_seed(0)
    d = TensorImageData("t", torch.randint(0, 256, (50, 1, 8, 8), dtype=torch.uint8, generator=g),
                        torch.arange(50) % 5, torch.randint(0, 256, (9, 1, 8, 8), dtype=torch.uint8, generator=g),
                        torch.arange(9) % 5, 5, (0.5,), (0.25,), crop_padding=2, flip=True)
    cpu = torch.device("cpu")
    single = list(d.train_batches(16, 3, 7, cpu))
    ranks = [list(d.train_batches(16, 3, 7, cpu, rank=r, world=2)) for r in range(2)]
    for (x, y), (x0, y0), (x1, y1) in zip(single, *ranks, strict=True):
        assert torch.equal(x, torch.cat([x0, x1])) and torch.equal(y, torch.cat([y0, y1]))
    test = torch.cat([x for x, _ in d.test_batches(4, cpu)])
    shards = [torch.cat([x for x, _ in d.test_batches(4, cpu, rank=r, world=2)]) for r in range(2)]
    assert torch.equal(test, torch.cat(shards))


def test_env_detection():
    assert distributed.detect_env({}) is None
    assert distributed.detect_env({"RANK": "0", "WORLD_SIZE": "1"}) is None
    assert distributed.detect_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == distributed.DistEnv(
        1, 2, 1, "torchrun")
    assert distributed.detect_env({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) is None  # an array task
    assert distributed.detect_env({"SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_LOCALID": "1"}) == \
        distributed.DistEnv(3, 4, 1, "slurm")
    assert distributed.world_size() == 1 and distributed.is_main()  # one process: helpers are no-ops
    assert distributed.broadcast_object({"a": 1}, "x") == {"a": 1}
    distributed.agree("anything", "x")


# ---- torchrun ------------------------------------------------------------------------------------------------
def test_two_ranks_train_like_one_process(tmp_path):
    env = launch_env(tmp_path)
    one = subprocess.run([sys.executable, str(REPO_ROOT / "launch.py"), *VIT, f"out_root={tmp_path / 'one'}",
                          f"hydra.run.dir={tmp_path / 'one/hydra'}"], cwd=REPO_ROOT, env=env, capture_output=True,
                         text=True, timeout=180)
    assert one.returncode == 0, one.stdout + one.stderr
    two = torchrun(VIT, tmp_path / "two", env)
    assert two.returncode == 0, two.output
    a, b = _run_dir(tmp_path / "one"), _run_dir(tmp_path / "two")
    ra, rb = json.loads((a / "results.json").read_text()), json.loads((b / "results.json").read_text())
    assert ra["world_size"] == 1 and rb["world_size"] == 2 and rb["status"] == "done"
    assert a.relative_to(tmp_path / "one") == b.relative_to(tmp_path / "two")  # the world size is not hashed
    # rank 0 scores exactly as one process does; both ranks train with those masks
    assert _checksums(two.output) == {0: ra["mask_checksum"], 1: ra["mask_checksum"]}
    assert rb["mask_checksum"] == ra["mask_checksum"]
    for ha, hb in zip(ra["history"], rb["history"], strict=True):
        assert ha["test_acc"] == hb["test_acc"] and ha["train_acc"] == hb["train_acc"]
        for key in ("train_loss", "test_loss"):
            assert hb[key] == pytest.approx(ha[key], rel=1e-5)
    sa, sb = (torch.load(d / "last.pt", map_location="cpu", weights_only=False) for d in (a, b))
    for name, w in sa["model"].items():
        torch.testing.assert_close(sb["model"][name], w, rtol=1e-4, atol=1e-5, msg=name)
    for name, m in sb["masks"].items():
        assert not sb["model"][name][~m.cpu()].any(), f"pruned weights of {name} are not zero"
    # rank 1 checked that its trained model is rank 0's (state_dict checksum) and wrote nothing of its own
    assert "[rank 1]" in two.output and "ranks disagree" not in two.output
    assert len(list((tmp_path / "two").rglob("pai.log"))) == 1
    assert len(list((tmp_path / "two").rglob(".hydra"))) == 1


def test_failed_rank_stops_the_run_and_the_rerun_resumes(tmp_path):
    """Rank 1 dies in epoch 2 (after the epoch-1 checkpoint): the run fails at once, not after the timeout. The
    rerun resumes every rank from rank 0's last.pt and ends as an uninterrupted two-rank run."""
    env = fault_env(tmp_path, "1:raise:2")
    t0 = time.monotonic()
    failed = torchrun([*RESNET, "train.dist_timeout_s=120"], tmp_path / "a", env)
    assert failed.returncode != 0 and "injected failure on rank 1" in failed.output, failed.output
    assert time.monotonic() - t0 < 60, "a dead rank must stop the run before the collective timeout"
    run_dir = _run_dir(tmp_path / "a") if list((tmp_path / "a").rglob("results.json")) else None
    ckpt = next((tmp_path / "a").rglob("last.pt"))
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"] == 0
    assert run_dir is None or json.loads((run_dir / "results.json").read_text())["status"] != "done"

    env = launch_env(tmp_path)
    rerun = torchrun([*RESNET, "train.dist_timeout_s=120"], tmp_path / "a", env)
    assert rerun.returncode == 0, rerun.output
    assert rerun.output.count(f"resuming from {ckpt} at epoch 2/2") == 2  # both ranks
    reference = torchrun([*RESNET, "train.dist_timeout_s=120"], tmp_path / "b", env)
    assert reference.returncode == 0, reference.output
    resumed = json.loads((ckpt.parent / "results.json").read_text())
    uninterrupted = json.loads((_run_dir(tmp_path / "b") / "results.json").read_text())
    assert resumed["resumed_after_epoch"] == 1 and uninterrupted["resumed_after_epoch"] is None
    assert resumed["history"] == uninterrupted["history"]
    assert resumed["mask_checksum"] == uninterrupted["mask_checksum"]
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    for name, m in state["masks"].items():
        assert not state["model"][name][~m.cpu()].any()


def test_hung_rank_fails_the_run_after_the_timeout(tmp_path):
    env = fault_env(tmp_path, "1:hang")
    t0 = time.monotonic()
    proc = torchrun([*RESNET, "train.dist_timeout_s=5"], tmp_path, env, timeout=120)
    assert proc.returncode != 0, proc.output
    assert "DistributedError: rank 0/2: the test-set evaluation failed" in proc.output
    assert "train.dist_timeout_s" in proc.output
    assert time.monotonic() - t0 < 60


def test_rank0_pruning_failure_ends_the_other_ranks_with_its_error(tmp_path):
    """Without a launcher that kills the rest (two plain processes): rank 0's scoring fails, and rank 1, which
    waits for its masks, fails at once with rank 0's error instead of waiting out dist_wait_timeout_s."""
    from conftest import popen_launch

    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [popen_launch([*RESNET, f"out_root={tmp_path}", f"hydra.run.dir={tmp_path}/hydra"], fault_env(
        tmp_path, "0:score", RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))) for r in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [1, 1], outputs
    assert "RuntimeError: injected scoring failure on rank 0" in outputs[0]
    assert ("DistributedError: rank 1: rank 0 failed pruning (BN warmup, scoring, masks) (RuntimeError: injected "
            "scoring failure on rank 0)") in outputs[1]
    (results,) = all_results(tmp_path)
    assert results["status"] == "failed" and "injected scoring failure" in results["error"]


def test_global_batch_not_divisible_by_ranks_is_a_config_error(tmp_path):
    proc = torchrun([*TINY, "train.batch_size=33"], tmp_path, launch_env(tmp_path))
    assert proc.returncode != 0
    assert "train.batch_size=33 is the global batch and must be divisible by the number of ranks (2)" in proc.output
    assert not list(tmp_path.rglob("results.json"))


# ---- SLURM ---------------------------------------------------------------------------------------------------
@pytest.mark.slurm
def test_slurm_two_task_job_is_one_distributed_run(run_launch, tmp_path):
    out, sweep = tmp_path / "out", tmp_path / "sweep"
    proc = run_launch(["-m", *RESNET, *SLURM_TWO_TASKS], out, sweep_dir=sweep)
    assert proc.returncode == 0, proc.output
    (results,) = all_results(out)  # one results.json
    assert results["status"] == "done" and results["world_size"] == 2
    (rec,) = job_records(sweep)  # one job record (rank 0's)
    assert rec["status"] == "done" and rec["run_dir"] == results["run_dir"]
    logs = "".join(p.read_text() for p in sweep.rglob(".submitit/*/*_log.*"))
    assert _checksums(logs) == {0: results["mask_checksum"], 1: results["mask_checksum"]}


@pytest.mark.slurm
def test_slurm_failed_rank_fails_the_sweep_job_and_the_relaunch_resumes(run_launch, tmp_path):
    """Rank 1 of a two-task sweep job fails in epoch 2. Its task exits 1 (it used to return like a finished
    job and exit 0, leaving rank 0 to notice at its next collective: on NCCL only after dist_timeout_s), so srun
    ends the job; the sweep exits 1 with rank 1's error, rank 0 records the run as failed, and the relaunch
    resumes it from rank 0's epoch-1 checkpoint."""
    out, sweep = tmp_path / "out", tmp_path / "sweep"
    args = ["-m", *RESNET, *SLURM_TWO_TASKS, "train.dist_timeout_s=120"]
    failed = run_launch(args, out, sweep_dir=sweep, env=fault_env(tmp_path, "1:raise:2"))
    assert failed.returncode == 1, failed.output
    assert "RuntimeError: injected failure on rank 1" in failed.output  # rank 1's own error, not only rank 0's
    assert "(task: 1)" in failed.output and "(state: FAILED)" in failed.output
    assert "1 job(s): 1 failed" in failed.output
    (results,) = all_results(out)
    assert results["status"] == "failed"
    relaunch = run_launch(args, out, sweep_dir=tmp_path / "sweep2")
    assert relaunch.returncode == 0, relaunch.output
    (results,) = all_results(out)
    assert results["status"] == "done" and results["resumed_after_epoch"] == 1


@pytest.mark.slurm
def test_slurm_preempted_two_task_job_resumes_identically(tmp_path):
    """Preempt a running two-task job (SIGTERM + USR2 to every task, as SLURM does): rank 0 requeues it, and
    in the requeued job both ranks resume from rank 0's last.pt. Its twin (other out_root, same array, runs
    after it: the node has two cores) runs uninterrupted: equal histories."""
    import submitit
    from conftest import popen_launch, wait_for

    env = launch_env(tmp_path)
    a, b, sweep = tmp_path / "a", tmp_path / "b", tmp_path / "sweep"
    longer = [*RESNET, "dataset.image_size=16", "dataset.num_train=1024", "train.epochs=3", *SLURM_TWO_TASKS,
              "hydra.launcher.timeout_min=60", "hydra.launcher.max_num_timeout=1"]
    proc = popen_launch(["-m", *longer, f"out_root={a},{b}", f"hydra.sweep.dir={sweep}"], env)
    ckpt = wait_for("runs/*/*/*/*/last.pt", a, proc, timeout=150)
    submitit_dir = wait_for(".submitit/*_0", sweep, proc)
    submitit.SlurmJob(folder=sweep / ".submitit" / "%j", job_id=submitit_dir.name)._interrupt()
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert [r["status"] for r in job_records(sweep)] == ["done", "done"]
    logs = {p.name: p.read_text() for p in submitit_dir.glob("*_log.*")}
    assert f"Requeued job {submitit_dir.name}" in "".join(logs.values())
    for task in (0, 1):  # both ranks resumed
        assert f"resuming from {ckpt} at epoch" in logs[f"{submitit_dir.name}_{task}_log.out"]
    resumed = json.loads((ckpt.parent / "results.json").read_text())
    reference = json.loads(next(b.glob("runs/*/*/*/*/results.json")).read_text())
    assert resumed["resumed_after_epoch"] >= 1 and reference["resumed_after_epoch"] is None
    assert resumed["world_size"] == reference["world_size"] == 2
    assert resumed["history"] == reference["history"]
