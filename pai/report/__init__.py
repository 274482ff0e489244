"""Aggregate finished runs into tables (Markdown + CSV) and figures (PNG); optionally log them to W&B and build
a W&B Report.

    python -m pai.report RUNS_DIR [--out DIR] [--sparsity S] [--baseline random] [--alpha 0.05]
                                  [--only COLUMN=V1,V2 ...] [--wandb | --wandb-report]
                                  [--wandb-mode offline|online] [--project pai] [--entity E] [--group NAME]
                                  [--wandb-dir DIR]

Every `results.json` below RUNS_DIR (recursive) is read and validated against `pai.results.RunResult` (RUNS_DIR
may instead be the runs.csv of an earlier report: everything but the density plots is rebuilt from it); the
output goes to `--out`, default `RUNS_DIR/report` (`report.md`, `summary.csv`, `comparisons.csv`,
`connectivity.csv`, `runs.csv`, `tables/<group>.md|csv`, `tables/<group>_comparisons.csv`,
`plots/<group>_*.png`, and `wandb_report.json` with `--wandb-report`). `--only` keeps the runs whose COLUMN (of
the runs DataFrame) is one of the values (null = empty, booleans lower case, numbers as %g). `--wandb` logs
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
  criterion (str)         table row name: `label` if set, else `pruner`; `+shuffle` / `+reinit` appended for
                          an ablated mask (`snip+shuffle`)
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
  ablation (str)          none | layer_shuffle | reinit (default none when absent); ablation_overlap (float)
  effective_sparsity (float, NaN when absent), n_effectively_empty (float), effective_layer_density (dict),
  effectively_empty_layers (list)
Unreadable DataFrame: path, reason.  Not-done DataFrame: path, status, error.

Summary DataFrame (`summary.csv`, `tables/<group>.csv`; one row per group × criterion × sparsity):
  dataset, model, scope, bn_warmup, criterion, pruner, sparsity, mean, std, ci_low, ci_high, n, best
mean/std are test accuracy in %, over seeds (runs of one seed are averaged first, so n counts seeds);
std uses ddof=1, ci_low/ci_high the 95 % Student-t interval of the mean (NaN for n = 1). The dense baseline
(`pruner == none`, any asked sparsity) is one row per group whose seeds are repeated in every sparsity column
(sparsity NaN, printed "dense", when the group has no pruned runs); it is never `best`. `best` is True for the
highest pruned mean of a column only when a paired t-test over shared seeds puts it ahead of the runner-up
(p < alpha); Markdown shows it in bold. Rows: in CRITERION_ORDER (labelled and ablated variants next to their
pruner), then other pruners alphabetically.

Comparisons DataFrame (`comparisons.csv`): dataset, model, scope, bn_warmup, sparsity, kind, criterion,
reference, n, diff, ci_low, ci_high, p, p_holm, significant — diff = criterion − reference in points over the
n seeds both have; kind `baseline` (own masks vs `--baseline`), `baseline:shuffle` / `baseline:reinit`
(ablated rows vs `--baseline`), `ablation:shuffle` / `ablation:reinit` (criterion − its own ablated row);
p from the paired t-test, p_holm Holm-corrected within one group × sparsity × kind.

Connectivity DataFrame (`connectivity.csv`): group keys, criterion, pruner, sparsity, n, nominal (mean
sparsity_achieved), effective (mean effective_sparsity), effectively_empty, collapsed (mean layer counts),
accuracy (mean %), over the runs that recorded an effective sparsity.
"""

from pai.report.build import build_report, default_out_dir
from pai.report.load import ReportError, load_runs
from pai.report.tables import CRITERION_ORDER, summarize

__all__ = ["CRITERION_ORDER", "ReportError", "build_report", "default_out_dir", "load_runs", "summarize"]
