"""pai's command line: `python launch.py [group=option ...] [key=value ...]`, `-m` to sweep, `--help`."""

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from pai.errors import PaiConfigError

log = logging.getLogger("pai")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from pai.callbacks import record_job
    from pai.run import run  # imported here so `--help` and `--cfg job` stay fast

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        results = run(cfg)
    except Exception as exc:
        if not multirun:
            if isinstance(exc, PaiConfigError):
                log.error("error: %s", exc)
                sys.exit(2)
            raise
        # In a sweep the other jobs go on: the run's results.json says `failed`, this job's record too, and the
        # SweepReport callback lists the failure when the sweep ends (the command then exits with status 1).
        log.exception("run failed: %s: %s", type(exc).__name__, exc)
        record_job(cfg, "failed", error=f"{type(exc).__name__}: {exc}")
        return None
    # done | skipped (finished before) | busy (another job is running the same config right now)
    status = "busy" if results.get("status") == "busy" else "skipped" if results.get("skipped") else "done"
    record_job(cfg, status, run_dir=results.get("run_dir"), test_acc=results.get("test_acc"))
    return results["test_acc"]


if __name__ == "__main__":
    main()
