"""Where a run lives on disk and its results.json.

A run's directory is derived from a hash of its resolved config (without the keys that do not change the
experiment: logger, output/data roots, device, caching), so relaunching a sweep finds its own runs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from omegaconf import DictConfig

from pai import __version__
from pai.build import resolved as resolved_config
from pai.pruning.criteria.base import Criterion
from pai.tracking import default_group
from pai.train.checkpoint import load_checkpoint

# `label` only names a variant in reports; the knobs that make the variant already change the hash.
NOT_HASHED = ("logger", "out_root", "data_root", "device", "experiment_name", "label")
# How many processes train a run is not part of its identity (same global batch, same epoch order), so a run
# started on one GPU can resume on eight, and hashes from before these keys existed stay valid.
NOT_HASHED_TRAIN = ("distributed", "sync_bn", "dist_timeout_s", "dist_wait_timeout_s")


def config_hash(cfg: DictConfig, criterion: Criterion) -> str:
    resolved = resolved_config(cfg)
    for key in NOT_HASHED:
        resolved.pop(key, None)
    resolved.get("prune", {}).pop("cache", None)
    for key in NOT_HASHED_TRAIN:
        resolved.get("train", {}).pop(key, None)
    if not criterion.prunes:  # the dense baseline is one run whatever sparsity a sweep asks for
        resolved.pop("sparsity", None)
        resolved.pop("prune", None)
    blob = json.dumps(resolved, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def model_name(cfg: DictConfig) -> str:
    """`resnet20` for our builders; `timm-<name>` / `torchvision-<name>` for models chosen by name."""
    builder = cfg.model["_target_"].rsplit(".", 1)[-1]
    name = cfg.model.get("name")
    return f"{builder.removesuffix('_model')}-{name}" if name else builder


@dataclass
class RunPaths:
    dir: Path
    name: str
    hash: str
    group: str

    @property
    def results(self) -> Path:
        return self.dir / "results.json"

    @property
    def checkpoint(self) -> Path:
        return self.dir / "last.pt"

    def checkpoint_state(self) -> dict | None:
        return load_checkpoint(self.checkpoint)

    def try_lock(self) -> IO | None:
        """An exclusive lock on the run directory (flock on `.lock`, released when the file is closed or the
        process dies), or None when another live process holds it: two jobs of one config (e.g. the dense
        baseline, which every sparsity of a sweep maps to one run) never train into the same directory."""
        self.dir.mkdir(parents=True, exist_ok=True)
        f = open(self.dir / ".lock", "a+")  # the caller closes it
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            return None
        f.truncate(0)
        f.write(f"{socket.gethostname()} pid {os.getpid()} slurm {os.environ.get('SLURM_JOB_ID', '-')}\n")
        f.flush()
        return f

    def identity(self, cfg: DictConfig, criterion: Criterion) -> dict:
        return {
            "config_hash": self.hash,
            "run_dir": str(self.dir),
            "run_name": self.name,
            "pai_version": __version__,
            "wandb_group": self.group,
            "dataset": cfg.dataset.name,
            "model": model_name(cfg),
            "pruner": criterion.name,
            "label": cfg.get("label"),
            "seed": cfg.seed,
            "scope": cfg.prune.scope,
            "bn_warmup": bool(cfg.prune.bn_warmup) and criterion.prunes,
        }


def run_paths(cfg: DictConfig, criterion: Criterion) -> RunPaths:
    h = config_hash(cfg, criterion)
    sp = f"sp{cfg.sparsity:g}" if criterion.prunes else "dense"
    rel = Path(f"{cfg.dataset.name}-{model_name(cfg)}") / criterion.name / sp / f"seed{cfg.seed}-{h[:8]}"
    group = cfg.get("experiment_name") or default_group(cfg, model_name(cfg))
    return RunPaths(dir=Path(cfg.out_root) / "runs" / rel, name=str(rel).replace(os.sep, "/"), hash=h,
                    group=str(group))


def write_results(path: Path, results: dict) -> None:
    """Atomic write (temp file + rename): a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".results.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(results, f, indent=2, default=str)
    os.replace(tmp, path)


def read_results(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
