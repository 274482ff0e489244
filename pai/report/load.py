"""Read every `results.json` below a directory into one DataFrame (schema: see `pai.report`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

# Keys a finished run must carry for the tables; anything else is optional and filled with a default.
REQUIRED_DONE = ("dataset", "model", "pruner", "seed", "sparsity", "test_acc")

COLUMNS = (
    "path", "run_dir", "status", "error", "config_hash", "dataset", "model", "pruner", "label", "criterion",
    "seed", "sparsity", "sparsity_achieved", "scope", "bn_warmup", "test_acc", "test_loss", "score_seconds",
    "warmup_seconds", "train_seconds", "epochs", "n_collapsed", "collapsed_layers", "layer_density", "history",
    "score_cached", "wandb_group",
)


class ReportError(Exception):
    """Nothing to report on (missing/empty directory, no finished run); the message says why."""


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _row(path: Path, data: Any) -> dict[str, Any]:
    """One DataFrame row from one parsed results.json; ValueError (with the reason) when unusable."""
    if not isinstance(data, dict):
        raise ValueError(f"top level is {type(data).__name__}, not an object")
    status = str(data.get("status", "unknown"))
    if status == "done":
        missing = [k for k in REQUIRED_DONE if data.get(k) is None]
        if missing:
            raise ValueError(f"status done but missing {', '.join(missing)}")
        acc = float(data["test_acc"])
        # A percentage or NaN here would silently skew every mean it enters, so refuse it loudly.
        if math.isnan(acc) or not 0.0 <= acc <= 1.0:
            raise ValueError(f"test_acc {acc!r} is not in [0, 1]")
    label = data.get("label") or None
    pruner = data.get("pruner")
    density = data.get("layer_density") or {}
    collapsed = list(data.get("collapsed_layers") or [])
    history = list(data.get("history") or [])
    seed = data.get("seed")
    sparsity = data.get("sparsity")
    return {
        "path": str(path),
        "run_dir": str(data.get("run_dir") or path.parent),
        "status": status,
        "error": data.get("error"),
        "config_hash": data.get("config_hash"),
        "dataset": data.get("dataset"),
        "model": data.get("model"),
        "pruner": pruner,
        "label": label,
        "criterion": label or pruner,
        "seed": None if seed is None else int(seed),
        # Rounded so that 0.9 and 0.9000000001 (float noise from config arithmetic) land in one column.
        "sparsity": float("nan") if sparsity is None else round(float(sparsity), 6),
        "sparsity_achieved": _float(data.get("sparsity_achieved")),
        # Defaults are the config defaults (conf/config.yaml: prune.scope=global, prune.bn_warmup=false).
        "scope": data.get("scope") or "global",
        "bn_warmup": bool(data.get("bn_warmup", False)),
        "test_acc": _float(data.get("test_acc")),
        "test_loss": _float(data.get("test_loss")),
        "score_seconds": _float(data.get("score_seconds")),
        "warmup_seconds": _float(data.get("warmup_seconds")),
        "train_seconds": _float(data.get("train_seconds")),
        "epochs": len(history),
        "n_collapsed": len(collapsed),
        "collapsed_layers": collapsed,
        "layer_density": {str(k): float(v) for k, v in density.items()},
        "history": history,
        "score_cached": data.get("score_cached"),
        "wandb_group": data.get("wandb_group"),
    }


def find_results(runs_dir: Path) -> list[Path]:
    return sorted(p for p in Path(runs_dir).rglob("results.json") if p.is_file())


def load_runs(runs_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, unreadable): one row per parsed results.json (any status), and (path, reason) per bad file.

    Raises ReportError when `runs_dir` is not a directory or holds no results.json at all.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.exists():
        raise ReportError(f"runs directory {str(runs_dir)!r} does not exist")
    if not runs_dir.is_dir():
        raise ReportError(f"{str(runs_dir)!r} is not a directory")
    files = find_results(runs_dir)
    if not files:
        raise ReportError(f"no results.json found below {str(runs_dir)!r}")
    rows, bad = [], []
    for path in files:
        try:
            rows.append(_row(path, json.loads(path.read_text())))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError, TypeError, AttributeError) as exc:
            # A run killed mid-write (or a hand-edited file) must not sink the whole report.
            bad.append({"path": str(path), "reason": f"{type(exc).__name__}: {exc}"})
    runs = pd.DataFrame(rows, columns=list(COLUMNS))
    unreadable = pd.DataFrame(bad, columns=["path", "reason"])
    return runs, unreadable
