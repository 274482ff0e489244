"""Epoch checkpoints (`last.pt`): written atomically with a content digest, verified when read back.

A checkpoint holds only tensors and plain Python values (the RNG states included), so it loads with
`torch.load(weights_only=True)`: nothing in it is unpickled as code. `load_checkpoint` trusts a file only if it
loads, carries the digest of its content, matches that digest and holds a finite model; anything else (a torn
or overwritten file, one from an older pai without a digest, NaN weights) is set aside as
`last.pt.corrupt-<time>` with a warning, and the run starts over from its initial state instead of training
from garbage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pai.digest import load_checked, save_checked


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        out = obj.copy()  # keeps the mapping's type (e.g. a scheduler's Counter of milestones)
        for key, value in out.items():
            out[key] = _to_cpu(value)
        return out
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_cpu(v) for v in obj)
    return obj


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Atomically write `state` plus its content digest (tensors moved to the CPU once, for both)."""
    save_checked(_to_cpu(state), path)


def load_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """The verified checkpoint at `path` (without its digest), or None when there is none or it failed a check
    (then it has been set aside)."""
    return load_checked(path, "checkpoint", "the run starts over", required="model", check=_finite_model)


def _finite_model(state: dict[str, Any]) -> str | None:
    bad = [name for name, t in state["model"].items()
           if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]
    return f"non-finite values in {', '.join(bad[:3])}{' …' if len(bad) > 3 else ''}" if bad else None
