"""Aggregate finished runs into tables (Markdown + CSV) and figures (PNG); optionally log them to W&B and build
a W&B Report.

    python -m pai.report RUNS_DIR [--out DIR] [--sparsity S] [--wandb | --wandb-report]
                                  [--wandb-mode offline|online] [--project pai] [--entity E] [--group NAME]
                                  [--wandb-dir DIR]

Every `results.json` below RUNS_DIR (recursive) is read and validated against `pai.results.RunResult` (RUNS_DIR
may instead be the runs.csv of an earlier report: everything but the density plots is rebuilt from it); the
output goes to `--out`, default `RUNS_DIR/report` (`report.md`, `summary.csv`, `runs.csv`,
`tables/<group>.md|csv`, `plots/<group>_*.png`, and `wandb_report.json` with `--wandb-report`). `--wandb` logs
them to one W&B run (`pai.report.wandb_export`; its files go to `$WANDB_DIR/wandb/`, else `<out_root>/wandb/`
beside the runs' own); `--wandb-report` also builds the W&B Report (`pai.report.wandb_report`). A group is one
(dataset, model, scope, bn_warmup) — scope is part of the key so that global and layer-wise masks are never
pooled. Exit code 2 with one line on stderr when RUNS_DIR is missing, holds no results.json or no finished run;
corrupt files and runs not `done` are listed in report.md, never fatal.

Runs DataFrame (`build_report(...)["runs"]`, `load_runs`): one row per readable results.json, any status.
  path (str)              the results.json file
  run_dir (str)           results' `run_dir`, else the file's directory
  status (str)            done | failed | interrupted | running (also when the key is absent)
  error (str|None)        failure message of a failed run
  config_hash (str|None)  hash of the resolved config
  dataset, model (str)
  pruner (str)            criterion code (`none` = dense baseline)
  label (str|None)        display name of a pruner variant (e.g. `hutch_diag@T1`)
  criterion (str)         table row name: `label` if set, else `pruner`
  seed (int)
  sparsity (float)        asked sparsity, rounded to 6 decimals
  sparsity_achieved (float)
  scope (str)             global | layer (default global when absent)
  bn_warmup (bool)        (default False when absent)
  test_acc (float)        final test accuracy in [0, 1] (a done run outside [0, 1] is unreadable)
  test_loss, score_seconds, warmup_seconds, train_seconds (float, NaN when absent)
  epochs (int)            len(history)
  n_collapsed (int), collapsed_layers (list[str]), layer_density (dict[str, float]), history (list[dict])
  cache_hit (bool|None)    true = scores came from the cache (left out of the scoring-time plot)
  wandb_group (str|None)  optional: the sweep's W&B group
Unreadable DataFrame: path, reason.  Not-done DataFrame: path, status, error.

Summary DataFrame (`summary.csv`, `tables/<group>.csv`; one row per group × criterion × sparsity):
  dataset, model, scope, bn_warmup, criterion, pruner, sparsity, mean, std, n, best
mean/std are test accuracy in %, over seeds (runs of one seed are averaged first, so n counts seeds);
std uses ddof=1 (NaN for n = 1, printed "—"). The dense baseline (`pruner == none`, any asked sparsity)
is one row per group whose statistics are repeated in every sparsity column (sparsity NaN, printed
"dense", when the group has no pruned runs); it is never `best`. `best` is True for the highest pruned
mean of each column (ties all True); Markdown shows it in bold. Rows: in CRITERION_ORDER (labelled
variants next to their pruner), then other pruners alphabetically.
"""

from pai.report.build import build_report, default_out_dir
from pai.report.load import ReportError, load_runs
from pai.report.tables import CRITERION_ORDER, summarize

__all__ = ["CRITERION_ORDER", "ReportError", "build_report", "default_out_dir", "load_runs", "summarize"]
