"""Content digests: one for named tensors (the score cache's weight fingerprint, the distributed run's mask/model
checksums) and one for any nested state; files saved with the latter inside (checkpoints, score-cache entries)
and loaded only when it matches."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pai.files import atomic_open, brief, set_aside


def _update(h, name: str, t: Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
    h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def tensor_digest(tensors: Mapping[str, Tensor]) -> str:
    """sha256 (hex) of every tensor's name, shape, dtype and bytes, in the mapping's order."""
    h = hashlib.sha256()
    for name, t in tensors.items():
        _update(h, name, t)
    return h.hexdigest()


def state_digest(state: object) -> str:
    """sha256 (hex) of a nested state of dicts, lists, tuples, tensors and plain values (int, float, str, bool,
    None): its structure, keys, tensor bytes and values' reprs (exact for floats). Equal after a save/load
    round trip through `torch.save`; any changed byte of a tensor or value changes it."""
    h = hashlib.sha256()

    def walk(path: str, obj: object) -> None:
        if isinstance(obj, Tensor):
            _update(h, path, obj)
        elif isinstance(obj, Mapping):
            h.update(f"{path}:{{{len(obj)};".encode())
            for key, value in obj.items():
                walk(f"{path}/{key!r}", value)
        elif isinstance(obj, list | tuple):
            h.update(f"{path}:[{len(obj)};".encode())
            for i, value in enumerate(obj):
                walk(f"{path}/{i}", value)
        else:
            h.update(f"{path}={type(obj).__name__}:{obj!r};".encode())

    walk("", state)
    return h.hexdigest()


DIGEST = "digest"  # the key of the content digest inside a file written by `save_checked`


def save_checked(state: dict[str, Any], path: str | Path) -> None:
    """Atomically `torch.save` `state` (tensors and plain values only) plus the digest of its content."""
    with atomic_open(path, "wb") as f:
        torch.save({**state, DIGEST: state_digest(state)}, f)


def load_checked(path: str | Path, what: str, then: str, required: str,
                 check: Callable[[dict[str, Any]], str | None] | None = None) -> dict[str, Any] | None:
    """The state `save_checked` wrote at `path` (without its digest), or None: no file, or one that fails a
    check — it does not load with `weights_only=True`, has no dict under `required`, carries no digest or does
    not match it, or `check(state)` names a problem. Such a file is set aside (`pai.files.set_aside`) with the
    warning "set aside PATH: not a usable WHAT (problem); THEN"."""
    path = Path(path)
    if not path.is_file():
        return None
    state, problem = _read_checked(path, required)
    if state is not None and problem is None and check is not None:
        problem = check(state)
    if problem is not None:
        set_aside(path, f"not a usable {what} ({problem}); {then}")
        return None
    return state


def _read_checked(path: Path, required: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        return None, f"unreadable: {brief(exc)}"
    if not isinstance(state, dict) or not isinstance(state.get(required), dict):
        return None, f"no {required} in it"
    digest = state.pop(DIGEST, None)
    if digest is None:
        return None, "it carries no content digest"
    if state_digest(state) != digest:
        return None, "its content does not match its digest"
    return state, None
