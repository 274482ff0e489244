"""torch's intra-op threads from the CPUs a job was given, so parallel jobs do not oversubscribe a machine.

Torch's default is one thread per core of the whole machine, in every process: nine jobs of a local sweep on two
cores ran 18 spinning threads. The rule, in order:

1. `threads=<n>` (the config knob);
2. `OMP_NUM_THREADS`, when set (an explicit choice; torchrun sets it to 1 for its ranks);
3. the CPUs this job was given, shared with the jobs that run beside it:
   SLURM's `SLURM_CPUS_PER_TASK` (already per task), else the process's CPU affinity (`os.sched_getaffinity`:
   what cgroups/taskset/SLURM binding allow) divided by the number of jobs that the local launcher started at
   once (`PAI_LOCAL_JOBS`, set by hydra_plugins.pai_submitit.launchers.LocalLauncher) times the ranks of a
   torchrun on this node (`LOCAL_WORLD_SIZE`); at least 1.
"""

from __future__ import annotations

import logging
import os

from pai.errors import PaiConfigError

log = logging.getLogger(__name__)

LOCAL_JOBS_ENV = "PAI_LOCAL_JOBS"  # jobs of one local-launcher batch, all running at once


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    try:
        return int(value) if value and int(value) >= 1 else None
    except ValueError:
        return None


def allowed_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_threads(threads: int | None) -> tuple[int, str]:
    """(intra-op threads, where the number comes from) for this process."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise PaiConfigError(f"threads={threads!r} must be an integer ≥ 1 or null (from the job's CPUs)")
        return threads, "threads="
    omp = _env_int("OMP_NUM_THREADS")
    if omp is not None:
        return omp, "OMP_NUM_THREADS"
    slurm = _env_int("SLURM_CPUS_PER_TASK")
    if slurm is not None:
        return slurm, "SLURM_CPUS_PER_TASK"
    cpus = allowed_cpus()
    jobs = _env_int(LOCAL_JOBS_ENV) or 1
    ranks = _env_int("LOCAL_WORLD_SIZE") or 1
    share = jobs * ranks
    why = f"{cpus} CPUs (affinity)" + (f" / {share} processes running at once" if share > 1 else "")
    return max(1, cpus // share), why


def set_threads(threads: int | None) -> int:
    """Apply `resolve_threads` to torch and log it once per run."""
    import torch  # here: Hydra imports this module (via the local launcher plugin) for every command, --help too

    n, why = resolve_threads(threads)
    torch.set_num_threads(n)
    log.info("torch threads: %d (%s)", n, why)
    return n
