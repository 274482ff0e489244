"""Content digests: one for named tensors (the score cache's weight fingerprint, the distributed run's mask/model
checksums) and one for any nested state (checkpoints and score-cache entries, checked when read back)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch
from torch import Tensor


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
