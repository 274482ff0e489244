"""Epoch checkpoints (`last.pt`): written atomically with a content digest, verified when read back.

A checkpoint holds only tensors and plain Python values (the RNG states included), so it loads with
`torch.load(weights_only=True)`: nothing in it is unpickled as code. `load_checkpoint` trusts a file only if it
loads, carries the digest of its content, matches that digest and holds a finite model; anything else (a torn
or overwritten file, one from an older pai without a digest, NaN weights) is set aside as
`last.pt.corrupt-<time>` with a warning, and the run starts over from its initial state instead of training
from garbage.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from pai.digest import state_digest
from pai.files import atomic_open, brief, set_aside

log = logging.getLogger(__name__)

DIGEST = "digest"  # the key of the content digest inside a checkpoint


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
    state = _to_cpu(state)
    state[DIGEST] = state_digest(state)
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """The verified checkpoint at `path` (without its digest), or None when there is none or it failed a check
    (then it has been set aside)."""
    path = Path(path)
    if not path.exists():
        return None
    state, problem = _read(path)
    if problem is not None:
        set_aside(path, f"not a usable checkpoint ({problem}); the run starts over")
        return None
    return state


def _read(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        return None, f"unreadable: {brief(exc)}"
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        return None, "no model state in it"
    digest = state.pop(DIGEST, None)
    if digest is None:
        return None, "it carries no content digest"
    if state_digest(state) != digest:
        return None, "its content does not match its digest"
    bad = [name for name, t in state["model"].items()
           if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        return None, f"non-finite values in {', '.join(bad[:3])}{' …' if len(bad) > 3 else ''}"
    return state, None
