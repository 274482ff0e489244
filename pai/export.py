"""`python -m pai.export RUN_DIR [--out DIR] [--initial]`: a finished run's weights as safetensors, for use
outside pai.

Writes into DIR (default `RUN_DIR/export/`):
    weights.safetensors   the trained state_dict with the masks applied (pruned weights exactly 0)
    masks.safetensors     the masks, uint8 per prunable weight (1 = kept); absent for the dense baseline
    initial.safetensors   with --initial: the initial state_dict (before BN warmup) with the masks applied
Each file's metadata names the run (run, config_hash, pruner, sparsity, test_acc, content).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from pai import files, run_files
from pai.errors import PaiConfigError
from pai.results import read_results
from pai.train.checkpoint import load_checkpoint

WEIGHTS = "weights.safetensors"
INITIAL = "initial.safetensors"


def _masked(state: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {n: torch.where(masks[n].to(t.device), t, torch.zeros_like(t)) if n in masks else t
            for n, t in state.items()}


def export(run_dir: str | Path, out: str | Path | None = None, initial: bool = False) -> dict[str, Path]:
    """Write the export files of a finished run; returns {what: path}. PaiConfigError when it cannot."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PaiConfigError(f"{run_dir}: not a directory")
    result = read_results(files.results(run_dir))
    if result is None or not result.finished:
        raise PaiConfigError(f"{run_dir}: not a finished run (results.json status "
                             f"{result.status if result else None}); nothing to export")
    state = load_checkpoint(files.checkpoint(run_dir))
    if state is None:
        raise PaiConfigError(f"{run_dir}: no usable last.pt (the trained weights)")
    masks_path = run_dir / run_files.MASKS
    if masks_path.is_file():
        masks = {n: m.bool() for n, m in load_file(masks_path).items()}
    else:  # a run written before masks.safetensors existed keeps its masks only in last.pt
        masks = {n: m.bool() for n, m in (state.get("masks") or {}).items()}
    meta = {"run": result.run_name, "config_hash": result.config_hash, "pruner": result.pruner,
            "sparsity": result.sparsity_achieved, "test_acc": result.test_acc}
    out = Path(out) if out is not None else run_dir / "export"
    written = {"weights": out / WEIGHTS}
    run_files.save_tensors(written["weights"], _masked(state["model"], masks),
                           {**meta, "content": "trained weights, masks applied"})
    if masks:
        written["masks"] = out / run_files.MASKS
        run_files.save_masks(written["masks"], masks, {**meta, "content": "masks, 1 = kept"})
    if initial:
        init_path = run_dir / run_files.INIT
        if not init_path.is_file():
            raise PaiConfigError(f"{run_dir}: no {run_files.INIT} (run written before pai saved initial weights)")
        written["initial"] = out / INITIAL
        run_files.save_tensors(written["initial"], _masked(load_file(init_path), masks),
                               {**meta, "content": "initial weights (before BN warmup), masks applied"})
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pai.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run directory (runs/<dataset>-<model>/<pruner>/sp<s>/seed<n>-<hash>)")
    parser.add_argument("--out", help="output directory (default: RUN_DIR/export)")
    parser.add_argument("--initial", action="store_true", help="also write the initial weights, masks applied")
    args = parser.parse_args(argv)
    try:
        written = export(args.run_dir, args.out, args.initial)
    except PaiConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for what, path in written.items():
        print(f"{what}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
