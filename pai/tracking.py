"""Experiment tracking. `Tracker` logs nothing (logger=none); `WandbTracker` logs to Weights & Biases.

A run calls start → log_pruning (once, before training) → log (per epoch) → summary → finish; `finish()` is
always reached (pai.run calls it in `finally`), so a failed run never leaks into the next run of the same process.

What a W&B run holds (README.md, "Weights & Biases"):
- config: the resolved run config (every key of conf/, e.g. `seed`, `pruner._target_`, `train.lr`);
- identity: project/entity/tags from `conf/logger/wandb.yaml`, group = `experiment_name` (else one name per
  launch, `default_group`), job_type = the run's report row (`pai.results.row_name`: the `label` when set,
  else the criterion's name with its non-default variants marked, `grasp[prunable]`), name = the run's
  directory name under runs/;
- config (`run_config`) also holds `pai_version`; the dense baseline's holds `sparsity: 0.0` and no `prune`
  node (it used neither);
- at step 0: `prune/*` scalars (sparsity_achieved, num_prunable, score_seconds, warmup_seconds, collapsed_layers
  count, …) and the `prune/layer_density` table (layer, density, collapsed);
- at step = epoch (1, 2, …): the results.json `history` record of that epoch (train_loss, train_acc, test_loss,
  test_acc, lr, epoch);
- summary: `RunResult.summary()`, results.json without its per-epoch and per-layer lists and the traceback
  (test_acc, status, error, timings, …);
- at the last epoch's step, once the run is done: `final/sparsity` (the sparsity the run used, 0 for the dense
  baseline) and `final/test_acc`, so that a W&B line plot over runs can draw accuracy against sparsity
  (`pai.report.wandb_report`).
"""

from __future__ import annotations

import logging
import time
from numbers import Number
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from omegaconf import DictConfig

from pai import __version__
from pai.build import resolved

if TYPE_CHECKING:
    from wandb.sdk.wandb_run import Run

    from pai.results import RunResult

log = logging.getLogger(__name__)

FINAL_KEYS = ("final/sparsity", "final/test_acc")  # what the W&B report's accuracy-vs-sparsity lines read
_PROCESS_START = time.strftime("%Y-%m-%d_%H-%M-%S")


def launch_name() -> str:
    """The name of this launch: the Hydra sweep directory of a `-m` sweep (the run directory of a single run),
    below `out_root/sweeps/` (`out_root/hydra/`) when it is there, `/` → `_`: `2026-11-25_20-04-10-3f9a2c1b` for
    the default layout (date, time, launch id), `mysweep` for `hydra.sweep.dir=.../mysweep`. Every job of one
    sweep (SLURM tasks and their requeues included) shares it. Outside Hydra (the compose API, tests): the time
    this process started."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return _PROCESS_START
    hc = HydraConfig.get()
    sweep = hc.mode == RunMode.MULTIRUN
    parts = Path(hc.sweep.dir if sweep else hc.run.dir).parts
    marker = "sweeps" if sweep else "hydra"
    if marker in parts[:-1]:
        after_last_marker = len(parts) - parts[::-1].index(marker)
        return "_".join(parts[after_last_marker:])
    return parts[-1]


def default_group(cfg: DictConfig, model: str) -> str:
    """The W&B group of a run without `experiment_name`: `<dataset>-<model>-<launch>` names one sweep (one
    launch), so unrelated sweeps of one dataset never share a group. Relaunching a sweep into a new sweep
    directory starts a new group; set `experiment_name` for one group across relaunches."""
    return f"{cfg.dataset.name}-{model}-{launch_name()}"


def run_config(cfg: DictConfig, prunes: bool) -> dict[str, Any]:
    """The W&B config of a run: the resolved config plus `pai_version`. The dense baseline prunes nothing:
    its `sparsity` is the 0.0 it used (not the level a sweep asked for) and the `prune` options it never read
    are left out."""
    config = resolved(cfg)
    if not prunes:
        config["sparsity"] = 0.0
        config.pop("prune", None)
    return {**config, "pai_version": __version__}


class Tracker:
    """The no-op tracker (logger=none); also the interface."""

    def start(self, name: str, config: dict, group: str, job_type: str) -> None:
        pass

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        pass

    def log_pruning(self, info: dict[str, Any]) -> None:
        """Mask and scoring statistics, once per run: scalars + `layer_density` + `collapsed_layers`."""
        self.log_masks(info.get("layer_density", {}), info.get("collapsed_layers", []))

    def log_masks(self, layer_density: dict[str, float], collapsed: list[str]) -> None:
        pass

    def summary(self, result: RunResult) -> None:
        pass

    def finish(self, failed: bool = False) -> None:
        pass


Mode = Literal["online", "offline", "disabled", "shared"]
MODES: tuple[Mode, ...] = get_args(Mode)


class WandbTracker(Tracker):
    """Weights & Biases; offline unless `mode` (logger.mode, default from WANDB_MODE) says online."""

    def __init__(self, project: str = "pai", entity: str | None = None, mode: str = "offline",
                 tags: list[str] | None = None, group: str | None = None, dir: str | None = None,
                 job_type: str | None = None, notes: str | None = None):
        if mode not in MODES:
            from pai.errors import PaiConfigError

            raise PaiConfigError(f"logger.mode={mode!r}: expected online, offline or disabled")
        self.project, self.entity, self.mode = project, entity, mode
        self.tags, self.group, self.dir = [str(t) for t in tags or []], group, dir
        self.job_type, self.notes = job_type, notes
        self._run: Run | None = None
        self._step = 0

    def start(self, name: str, config: dict, group: str, job_type: str) -> None:
        import wandb  # imported lazily: a few seconds of import time that logger=none runs do not pay

        if self.dir:
            from pathlib import Path

            Path(self.dir).mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
            project=self.project, entity=self.entity, mode=self.mode, tags=self.tags, notes=self.notes,
            group=self.group or group, job_type=self.job_type or job_type, name=name, config=config,
            dir=self.dir, reinit="finish_previous",
            # W&B's own banner, run history and sync hints (~30 lines a run) off; pai logs the one line below.
            settings=wandb.Settings(silent=True),
        )
        if self.mode == "online":
            log.info("W&B run %s: %s", name, self.run.url)
        elif self.mode == "offline":
            sync_dir = self.run.settings.sync_dir
            log.info("W&B run %s (offline): %s (upload: wandb sync %s)", name, sync_dir, sync_dir)
        self._step = 0

    @property
    def run(self) -> Run:
        if self._run is None:
            raise RuntimeError("WandbTracker: start() was not called or the run is finished")
        return self._run

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self.run.log(dict(metrics), step=step)
        self._step = max(self._step, step or 0)

    def log_pruning(self, info: dict[str, Any]) -> None:
        import wandb

        density = info.get("layer_density", {})
        collapsed = list(info.get("collapsed_layers", []))
        table = wandb.Table(columns=["layer", "density", "collapsed"],
                            data=[[n, float(d), n in collapsed] for n, d in density.items()])
        scalars = {f"prune/{k}": v for k, v in info.items() if isinstance(v, Number)}  # incl. cache_hit
        self.run.log({**scalars, "prune/layer_density": table, "prune/collapsed_layers": len(collapsed)}, step=0)
        self.run.summary["prune/collapsed_layer_names"] = collapsed

    def log_masks(self, layer_density: dict[str, float], collapsed: list[str]) -> None:
        self.log_pruning({"layer_density": layer_density, "collapsed_layers": collapsed})

    def summary(self, result: RunResult) -> None:
        if result.status == "done" and result.test_acc is not None:
            # Into the last epoch's step (still open, so merged with it): one point per run at x = sparsity.
            self.run.log({"final/sparsity": float(result.sparsity or 0.0), "final/test_acc": float(result.test_acc)},
                         step=self._step)
        self.run.summary.update(result.summary())

    def finish(self, failed: bool = False) -> None:
        run, self._run = self._run, None  # forget the run even if finish() raises: the next start is fresh
        if run is not None:
            run.finish(exit_code=1 if failed else 0)
