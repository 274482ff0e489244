"""Experiment tracking. `Tracker` logs nothing (logger=none); `WandbTracker` logs to Weights & Biases.

A run calls start → log_pruning (once, before training) → log (per epoch) → summary → finish; `finish()` is
always reached (pai.run calls it in `finally`), so a failed run never leaks into the next run of the same process.

What a W&B run holds (README.md, "Weights & Biases"):
- config: the resolved run config (every key of conf/, e.g. `seed`, `pruner._target_`, `train.lr`);
- identity: project/entity/tags from `conf/logger/wandb.yaml`, group = `experiment_name` (else
  `<dataset>-<model>`), job_type = the criterion's name, name = the run's directory name under runs/;
- at step 0: `prune/*` scalars (sparsity_achieved, num_prunable, score_seconds, warmup_seconds, collapsed_layers
  count, …) and the `prune/layer_density` table (layer, density, collapsed);
- at step = epoch (1, 2, …): the results.json `history` record of that epoch (train_loss, train_acc, test_loss,
  test_acc, lr, epoch);
- summary: results.json without its per-epoch and per-layer lists (test_acc, status, error, timings, …).
"""

from __future__ import annotations

import logging
from numbers import Number
from typing import Any

log = logging.getLogger(__name__)

SUMMARY_SKIP = ("history", "layer_density", "traceback")


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

    def summary(self, results: dict[str, Any]) -> None:
        pass

    def finish(self, failed: bool = False) -> None:
        pass


class WandbTracker(Tracker):
    """Weights & Biases; offline unless `mode` (logger.mode, default from WANDB_MODE) says online."""

    def __init__(self, project: str = "pai", entity: str | None = None, mode: str = "offline",
                 tags: list[str] | None = None, group: str | None = None, dir: str | None = None,
                 job_type: str | None = None, notes: str | None = None):
        if mode not in ("online", "offline", "disabled", "shared"):
            from pai.errors import PaiConfigError

            raise PaiConfigError(f"logger.mode={mode!r}: expected online, offline or disabled")
        self.project, self.entity, self.mode = project, entity, mode
        self.tags, self.group, self.dir = [str(t) for t in tags or []], group, dir
        self.job_type, self.notes = job_type, notes
        self._run = None

    def start(self, name: str, config: dict, group: str, job_type: str) -> None:
        import wandb  # imported lazily: a few seconds of import time that logger=none runs do not pay

        if self.dir:
            from pathlib import Path

            Path(self.dir).mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
            project=self.project, entity=self.entity, mode=self.mode, tags=self.tags, notes=self.notes,
            group=self.group or group, job_type=self.job_type or job_type, name=name, config=config,
            dir=self.dir, reinit="finish_previous",
        )

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self._run.log(dict(metrics), step=step)

    def log_pruning(self, info: dict[str, Any]) -> None:
        import wandb

        density = info.get("layer_density", {})
        collapsed = list(info.get("collapsed_layers", []))
        table = wandb.Table(columns=["layer", "density", "collapsed"],
                            data=[[n, float(d), n in collapsed] for n, d in density.items()])
        scalars = {f"prune/{k}": v for k, v in info.items() if isinstance(v, Number)}  # incl. cache_hit
        self._run.log({**scalars, "prune/layer_density": table, "prune/collapsed_layers": len(collapsed)}, step=0)
        self._run.summary["prune/collapsed_layer_names"] = collapsed

    def log_masks(self, layer_density: dict[str, float], collapsed: list[str]) -> None:
        self.log_pruning({"layer_density": layer_density, "collapsed_layers": collapsed})

    def summary(self, results: dict[str, Any]) -> None:
        self._run.summary.update({k: v for k, v in results.items() if k not in SUMMARY_SKIP})

    def finish(self, failed: bool = False) -> None:
        run, self._run = self._run, None  # forget the run even if finish() raises: the next start is fresh
        if run is not None:
            run.finish(exit_code=1 if failed else 0)
