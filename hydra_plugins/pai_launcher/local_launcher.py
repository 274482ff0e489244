"""pai's local launcher (`hydra/launcher=local`, conf/hydra/launcher/local.yaml): submitit's, plus telling every
job how many jobs of its batch run at once, so that each takes its share of the CPUs (pai.threads)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher as SubmititLocalLauncher

from pai.threads import LOCAL_JOBS_ENV


class LocalLauncher(SubmititLocalLauncher):
    """submitit's local executor starts every job of a batch at once, each in its own process."""

    concurrent_jobs: int = 1

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        self.concurrent_jobs = len(job_overrides)  # pickled with the launcher into every job
        return super().launch(job_overrides, initial_job_idx)

    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:  # runs in the job's process
        os.environ[LOCAL_JOBS_ENV] = str(self.concurrent_jobs)
        return super().__call__(*args, **kwargs)
