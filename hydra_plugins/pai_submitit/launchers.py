"""pai's submitit launchers (`hydra/launcher=slurm|slurm_multigpu|local`): hydra-submitit-launcher's, except that
the launching command waits for every job and records how each one ended.

hydra-submitit-launcher collects the results in job order and gives up at the first job that left none (one
cancelled with `scancel`, timed out for good, killed for memory): it raises UncompletedJobError at once, so
the jobs still running are never waited for and a later failure is never reported. Here every job is waited
for; one that ended without a result gets a record from the launcher (pai.callbacks.record_outcome:
`cancelled`, `timed_out`, or `failed` with the SLURM state and the error), unless it recorded itself, and is
returned to Hydra as completed like a run that failed inside a job, so the sweep's report
(pai.callbacks.SweepReport) lists every outcome and makes the command exit 1.

Hydra instantiates launchers only from the `hydra_plugins` package, hence this module's place.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf, open_dict

log = logging.getLogger(__name__)


class _WaitForEveryJob:
    """The launch of BaseSubmititLauncher (same executor, parameters and submission) with its last line, which
    stops at the first job without a result, replaced by `_outcome` for every job."""

    _EXECUTOR: str

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        assert self.config is not None
        assert len(job_overrides) > 0
        init_keys = {"max_num_timeout", "submitit_folder"}
        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR, folder=self.params["submitit_folder"],
            **{f"{self._EXECUTOR}_max_num_timeout": self.params["max_num_timeout"]}
            if "max_num_timeout" in self.params else {})
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v
                                      for k, v in self.params.items() if k not in init_keys})
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {self.config.hydra.sweep.dir}")
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        job_params = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*job_params, strict=True))
        return [self._outcome(job, overrides, idx) for job, (overrides, _, idx, _, _) in zip(jobs, job_params,
                                                                                               strict=True)]

    def _outcome(self, job: Any, overrides: list[str], idx: int) -> JobReturn:
        """The job's own JobReturn once it has ended; for a job that ended without one, a record of how it ended
        (kept if the job wrote its own) and a completed JobReturn without a value."""
        from submitit.core.utils import UncompletedJobError  # FailedJobError is a subclass

        from pai.callbacks import RECORD, record_outcome

        try:
            return job.results()[0]
        except UncompletedJobError as exc:
            state = job.state
            status, error = _ended_without_result(state, exc)
            job_dir = self._job_dir(overrides, idx)
            # submitit's message names the task without a result and ends with its error stream (e.g. the rank of a
            # multi-task job that failed)
            log.error("job #%d (%s %s) ended without a result (%s): %s", idx, self._EXECUTOR, job.job_id, state, exc)
            if not (job_dir / RECORD).exists():
                record_outcome(job_dir, idx, overrides, status, error=error, run_dir=self._run_dir(overrides, idx),
                               log_file=str(job.paths.stderr), slurm_job_id=str(job.job_id), slurm_state=state)
            return JobReturn(overrides=overrides, working_dir=str(job_dir), status=JobStatus.COMPLETED,
                             _return_value=None)

    def _sweep_config(self, overrides: list[str], idx: int) -> Any:
        """The job's config as the job composes it (BaseSubmititLauncher.__call__)."""
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = idx
        return cfg

    def _job_dir(self, overrides: list[str], idx: int) -> Path:
        cfg = self._sweep_config(overrides, idx)
        return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)

    def _run_dir(self, overrides: list[str], idx: int) -> str | None:
        from pai.callbacks import run_dir_of

        cfg = self._sweep_config(overrides, idx)
        with open_dict(cfg):
            del cfg["hydra"]  # the task function's config, as run_job passes it
        return run_dir_of(cfg)


def _ended_without_result(state: str, exc: Exception) -> tuple[str, str]:
    """(status, error) of a job that left no result, from its scheduler state (sacct: `CANCELLED by 0`,
    `TIMEOUT`, `OUT_OF_MEMORY`, `NODE_FAIL`, ...; the local executor: `INTERRUPTED`, ...)."""
    if state.startswith("CANCELLED"):
        return "cancelled", f"the job was cancelled ({state})"
    if state == "TIMEOUT":
        return "timed_out", "the job hit its time limit (hydra.launcher.timeout_min) more often than " \
                            "hydra.launcher.max_num_timeout allows requeueing it"
    lines = [line for line in str(exc).splitlines() if line.strip() and not line.startswith("---")]
    return "failed", f"{state}: {lines[-1].strip() if lines else type(exc).__name__}"


class SlurmLauncher(_WaitForEveryJob, submitit_launcher.SlurmLauncher):
    pass


class LocalLauncher(_WaitForEveryJob, submitit_launcher.LocalLauncher):
    """submitit's local executor starts every job of a batch at once, each in its own process: each job is told
    how many run beside it, so that it takes its share of the CPUs (pai.threads)."""

    concurrent_jobs: int = 1

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        self.concurrent_jobs = len(job_overrides)  # pickled with the launcher into every job
        return super().launch(job_overrides, initial_job_idx)

    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:  # runs in the job's process
        from pai.threads import LOCAL_JOBS_ENV

        os.environ[LOCAL_JOBS_ENV] = str(self.concurrent_jobs)
        return super().__call__(*args, **kwargs)
