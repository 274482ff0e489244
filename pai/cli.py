"""pai's command line: `pai [group=option ...] [key=value ...]`, `-m` to sweep, `--help`.

The installed command `pai` and `python launch.py` in a checkout are this one function. The config tree is
`conf/` at the repository root; a wheel ships it as the package `pai.conf`, read through Hydra's `pkg://`
search path. Users add their own config folders with `hydra.searchpath` (README, "Your own configs").
"""

import importlib.resources
import importlib.util
import logging
import os
import sys
from importlib.resources.abc import Traversable
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pai.callbacks import launch_token
from pai.conf_groups import check_group_choices
from pai.errors import PaiConfigError

log = logging.getLogger("pai")
# `${pai.launch:}` in hydra.run.dir / hydra.sweep.dir (conf/config.yaml): cached, so one value per launch.
OmegaConf.register_new_resolver("pai.launch", launch_token, use_cache=True)


CHECKOUT_CONF = Path(__file__).resolve().parents[1] / "conf"


def config_dir() -> str:
    """`pkg://pai.conf` when pai is installed (a wheel, or an editable install, which maps it to conf/), else
    the checkout's conf/ beside the pai package."""
    return "pkg://pai.conf" if _installed_conf() else str(CHECKOUT_CONF)


def config_tree() -> Traversable:
    """The same folder, to read: the installed package's files or the checkout's conf/."""
    return importlib.resources.files("pai.conf") if _installed_conf() else CHECKOUT_CONF


def _installed_conf() -> bool:
    return importlib.util.find_spec("pai.conf") is not None


def _process_rank() -> int:
    """This process's rank in a torchrun / multi-task SLURM job (0 when alone), from the environment."""
    from pai.distributed import detect_env

    env = detect_env()
    return env.rank if env else 0


def _quiet_other_ranks(rank: int) -> None:
    """Ranks > 0 log to the console only, each line tagged with the rank: the job's log file (pai.log) is rank
    0's, so N ranks never interleave or duplicate lines in it."""
    if rank == 0:
        return
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, logging.FileHandler):
            root.removeHandler(h)
            h.close()
        else:
            h.setFormatter(logging.Formatter(f"[%(asctime)s][rank {rank}][%(name)s][%(levelname)s] - %(message)s"))


def _unswept_preset_keys() -> list[str]:
    """Keys a preset sweeps (hydra.sweeper.params) that the command line does not fix to one value."""
    hc = HydraConfig.get()
    params = hc.sweeper.get("params") or {}
    given = {o.split("=", 1)[0].lstrip("+~") for o in hc.overrides.task}
    return [key for key in params if key not in given]


def _out_of_requeues(exc: Exception) -> bool:
    """submitit's signal handler raises this inside the run when a SLURM job reaches its time limit once more
    than hydra.launcher.max_num_timeout allows requeueing it."""
    return type(exc).__name__ == "UncompletedJobError" and "timed-out too many times" in str(exc)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> float | None:
    from pai.callbacks import record_job
    from pai.run import run  # imported here so `--help` and `--cfg job` stay fast

    rank = _process_rank()
    _quiet_other_ranks(rank)
    record = record_job if rank == 0 else (lambda *_a, **_k: None)  # the sweep's job record is rank 0's
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    swept = [] if multirun else _unswept_preset_keys()
    if swept:  # without -m Hydra would quietly train the first point of the preset's sweep
        choices = HydraConfig.get().runtime.choices
        preset = choices.get("experiment") or "the preset"
        if choices.get("debug") is None:
            log.error("error: experiment=%s is a sweep over %s (hydra.sweeper.params): add -m to run the whole "
                      "sweep (-m experiment=%s), or fix %s on the command line for one run", preset,
                      ", ".join(swept), preset, " and ".join(swept))
            sys.exit(2)
        # A fast trial of a preset (debug=...) checks it end to end on its first point, and says so.
        log.warning("experiment=%s sweeps %s: debug=%s runs its first point only", preset, ", ".join(swept),
                    choices.get("debug"))
    try:
        results = run(cfg)
    except Exception as exc:
        if not multirun:
            if isinstance(exc, PaiConfigError):
                log.error("error: %s", exc)
                sys.exit(2)
            raise
        log.exception("run failed: %s: %s", type(exc).__name__, exc)
        if rank != 0:
            # Rank 0 records the run. This rank's process exits non-zero (SystemExit passes Hydra's and submitit's
            # `except Exception`), so srun (SLURM_KILL_BAD_EXIT) ends the job at once: on NCCL rank 0 would
            # otherwise wait out train.dist_timeout_s in its next collective.
            sys.exit(1)
        # In a sweep the other jobs go on: the run's results.json says `failed`, this job's record too, and the
        # SweepReport callback lists the failure when the sweep ends (the command then exits with status 1).
        record(cfg, "timed_out" if _out_of_requeues(exc) else "failed", error=f"{type(exc).__name__}: {exc}")
        return None
    # done | skipped (finished before) | busy (another job is running the same config right now)
    status = "busy" if results.get("status") == "busy" else "skipped" if results.get("skipped") else "done"
    record(cfg, status, run_dir=results.get("run_dir"), test_acc=results.get("test_acc"),
           pruner=results.get("pruner"), criterion=results.get("label") or results.get("pruner"),
           sparsity=results.get("sparsity") if results.get("pruner") != "none" else None)
    return results["test_acc"]


def cli() -> None:
    """The `pai` console script and `python launch.py`."""
    # torchrun (RANK is its variable; read directly, so `--help` does not pay for importing torch): every rank
    # composes the same config, and only rank 0 writes the run directory's .hydra/ files.
    if os.environ.get("RANK", "0") != "0" and "-m" not in sys.argv and "--multirun" not in sys.argv:
        sys.argv.append("hydra.output_subdir=null")
    try:
        check_group_choices(sys.argv[1:], config_tree())
    except PaiConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    main()
