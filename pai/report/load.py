"""Read every `results.json` below a directory into one DataFrame (columns: see `pai.report`). Each file is
validated against `pai.results.RunResult`; one that does not fit is listed as unreadable (and left in place)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from pai.results import ResultsError, RunResult, parse_results

# Columns of the runs DataFrame: what the tables and plots need from each RunResult, plus derived ones (path,
# criterion, epochs, n_collapsed). The values are read from the typed record, never by key name from the JSON.
COLUMNS = (
    "path", "run_dir", "status", "error", "config_hash", "dataset", "model", "pruner", "label", "criterion",
    "seed", "sparsity", "sparsity_achieved", "scope", "bn_warmup", "test_acc", "test_loss", "score_seconds",
    "warmup_seconds", "train_seconds", "epochs", "n_collapsed", "collapsed_layers", "layer_density", "history",
    "cache_hit", "wandb_group", "ablation", "ablation_overlap", "effective_sparsity", "n_effectively_empty",
    "effective_layer_density", "effectively_empty_layers",
)


class ReportError(Exception):
    """Nothing to report on (missing/empty directory, no finished run); the message says why."""


def _float(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _row(path: Path, r: RunResult) -> dict[str, Any]:
    """One DataFrame row from one validated RunResult."""
    label = r.label or None
    collapsed = list(r.collapsed_layers or [])
    history = list(r.history or [])
    return {
        "path": str(path),
        "run_dir": str(r.run_dir or path.parent),
        "status": r.status,
        "error": r.error,
        "config_hash": r.config_hash,
        "dataset": r.dataset,
        "model": r.model,
        "pruner": r.pruner,
        "label": label,
        "criterion": r.row_name(),
        "seed": r.seed,
        # Rounded so that 0.9 and 0.9000000001 (float noise from config arithmetic) land in one column.
        "sparsity": float("nan") if r.sparsity is None else round(float(r.sparsity), 6),
        "sparsity_achieved": _float(r.sparsity_achieved),
        # Defaults are the config defaults (conf/config.yaml: prune.scope=global, prune.bn_warmup=false).
        "scope": r.scope or "global",
        "bn_warmup": bool(r.bn_warmup),
        "test_acc": _float(r.test_acc),
        "test_loss": _float(r.test_loss),
        "score_seconds": _float(r.score_seconds),
        "warmup_seconds": _float(r.warmup_seconds),
        "train_seconds": _float(r.train_seconds),
        "epochs": len(history),
        "n_collapsed": len(collapsed),
        "collapsed_layers": collapsed,
        "layer_density": {str(k): float(v) for k, v in (r.layer_density or {}).items()},
        "history": history,
        "cache_hit": r.cache_hit,
        "wandb_group": r.wandb_group,
        "ablation": r.ablation or "none",
        "ablation_overlap": _float(r.ablation_overlap),
        "effective_sparsity": _float(r.effective_sparsity),
        "n_effectively_empty": float("nan") if r.effectively_empty_layers is None else len(r.effectively_empty_layers),
        "effective_layer_density": dict(r.effective_layer_density or {}),
        "effectively_empty_layers": list(r.effectively_empty_layers or []),
    }


def find_results(runs_dir: Path) -> list[Path]:
    return sorted(p for p in Path(runs_dir).rglob("results.json") if p.is_file())


def load_runs(runs_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, unreadable): one row per parsed results.json (any status), and (path, reason) per bad file.

    `runs_dir` may also be a runs.csv written by an earlier report (see `load_runs_csv`). Raises ReportError
    when `runs_dir` is neither a directory nor a .csv file, or holds no results.json at all.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.exists():
        raise ReportError(f"runs directory {str(runs_dir)!r} does not exist")
    if runs_dir.is_file() and runs_dir.suffix == ".csv":
        return load_runs_csv(runs_dir)
    if not runs_dir.is_dir():
        raise ReportError(f"{str(runs_dir)!r} is not a directory")
    files = find_results(runs_dir)
    if not files:
        raise ReportError(f"no results.json found below {str(runs_dir)!r}")
    rows, bad = [], []
    for path in files:
        try:
            rows.append(_row(path, parse_results(path)))
        except (OSError, ResultsError) as exc:
            # A run killed mid-write (or a hand-edited file) must not sink the whole report.
            bad.append({"path": str(path), "reason": f"{type(exc).__name__}: {exc}"})
    runs = pd.DataFrame(rows, columns=list(COLUMNS))
    unreadable = pd.DataFrame(bad, columns=["path", "reason"])
    return runs, unreadable


def load_runs_csv(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, no unreadable) from the runs.csv an earlier report wrote, to rebuild tables and plots when the run
    directories are gone. It lacks the per-layer densities, histories and layer names (`layer_density`,
    `history`, `collapsed_layers` come back empty), so the density plot cannot be rebuilt from it.

    A runs.csv without a `cache_hit` column predates that column in the report; the runs it lists wrote
    `score_seconds` = 0.0 exactly when their scores came from the cache (0.0 is the value a cache hit keeps; a
    scoring that ran is timed, > 0), so there `cache_hit` is read back as `score_seconds == 0` for pruned runs.
    """
    try:
        csv = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise ReportError(f"{str(path)!r} is not a readable runs.csv: {exc}") from exc
    missing = [c for c in COLUMNS if c not in csv.columns and c not in ("cache_hit", *_LISTS, *_OPTIONAL)]
    if missing:
        raise ReportError(f"{str(path)!r} is not a runs.csv of pai.report (no column {', '.join(missing)})")
    if "cache_hit" not in csv.columns:
        csv["cache_hit"] = (csv["pruner"] != "none") & (csv["score_seconds"] == 0.0)
    for column in _LISTS:
        csv[column] = [{} if column.endswith("density") else [] for _ in range(len(csv))]
    for column, default in _OPTIONAL.items():  # a runs.csv from before these columns
        if column not in csv.columns:
            csv[column] = default
    runs = csv[list(COLUMNS)].astype(object).where(csv[list(COLUMNS)].notna(), None)
    for column in ("sparsity", "sparsity_achieved", "test_acc", "test_loss", "score_seconds", "warmup_seconds",
                   "train_seconds", "ablation_overlap", "effective_sparsity", "n_effectively_empty"):
        runs[column] = runs[column].astype(float)
    runs["seed"] = runs["seed"].astype(int)
    runs["bn_warmup"] = runs["bn_warmup"].astype(bool)
    return runs.reset_index(drop=True), pd.DataFrame(columns=["path", "reason"])


# Not in a runs.csv:
_LISTS = ("layer_density", "history", "collapsed_layers", "effective_layer_density", "effectively_empty_layers")
_OPTIONAL = {"ablation": "none", "ablation_overlap": float("nan"), "effective_sparsity": float("nan"),
             "n_effectively_empty": float("nan")}
