"""What a run directory holds besides results.json and last.pt, in standard formats, and what a run can take in.

    config.yaml        the run's resolved config (every key, interpolations resolved)
    overrides.yaml     the command-line overrides of the attempt that wrote it (a YAML list; [] from the API)
    init.safetensors   the initial weights (the whole state_dict, before BN warmup and pruning; under
                       prune.ablation=reinit the redrawn parameters training starts from)
    masks.safetensors  the masks of a pruned run, uint8 (1 = kept) per prunable weight

In:
- `prune.mask_from=<masks file | run dir>` trains exactly that mask (its layer names and shapes are checked);
- `model.init_from=<weights file | run dir>` starts from given weights; for a run directory
  `model.init_from_state` chooses its `initial` weights (init.safetensors) or its `trained` ones (last.pt).
Both paths and the sha256 of the files they name are part of the config hash (`hash_inputs`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from pai import files
from pai.errors import PaiConfigError

CONFIG, OVERRIDES, INIT, MASKS = files.CONFIG, files.OVERRIDES, files.INIT, files.MASKS
INIT_STATES = ("initial", "trained")
MASK_KEY = "prune.mask_from"
INIT_KEY = "model.init_from"
INIT_KEYS = ("init_from", "init_from_state")  # keys of the model node that are not the builder's arguments


# ---- writing -----------------------------------------------------------------------------------------------------

def write_atomic(path: Path, data: bytes) -> None:
    with files.atomic_open(path, "wb") as f:
        f.write(data)


def write_config(run_dir: Path, cfg: DictConfig) -> None:
    """config.yaml (resolved) and overrides.yaml (this attempt's command-line overrides) in the run directory."""
    write_atomic(run_dir / CONFIG, OmegaConf.to_yaml(cfg, resolve=True).encode())
    overrides = hydra_job().get("overrides", [])
    write_atomic(run_dir / OVERRIDES, yaml.safe_dump(overrides, default_flow_style=False).encode())


def hydra_job() -> dict[str, Any]:
    """Where this attempt's Hydra job lives: {hydra_dir, log_file, overrides}; {} outside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    log_file = out / f"{hc.job.name}.log"
    return {"hydra_dir": str(out), "log_file": str(log_file) if log_file.exists() else None,
            "overrides": list(hc.overrides.task)}


def record(cfg: DictConfig) -> dict[str, Any]:
    """results.json's pointers: this attempt's Hydra job folder and log, and the input files with their sha256."""
    job = hydra_job()
    inputs = {key: {"path": str(path), "sha256": file_sha256(path)} for key, path in input_files(cfg).items()}
    return {"hydra_dir": job.get("hydra_dir"), "log_file": job.get("log_file"), "inputs": inputs or None}


def save_tensors(path: Path, tensors: Mapping[str, Tensor], metadata: Mapping[str, Any] | None = None) -> None:
    """A safetensors file of CPU copies (contiguous, unshared), with string metadata."""
    data = {name: t.detach().cpu().contiguous().clone() for name, t in tensors.items()}
    meta = {k: str(v) for k, v in (metadata or {}).items() if v is not None}
    write_atomic(path, safetensors_bytes(data, metadata=meta))


def save_masks(path: Path, masks: Mapping[str, Tensor], metadata: Mapping[str, Any] | None = None) -> None:
    """Masks as uint8 (1 = kept): readable by every safetensors binding (numpy, JAX, …)."""
    save_tensors(path, {n: m.to(torch.uint8) for n, m in masks.items()}, metadata)


# ---- reading -----------------------------------------------------------------------------------------------------

def _existing(source: str | Path, key: str) -> Path:
    path = Path(source).expanduser()
    if not path.exists():
        raise PaiConfigError(f"{key}={source}: no such file or directory")
    return path


def _read_safetensors(path: Path, key: str) -> dict[str, Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise PaiConfigError(f"{key}={path}: not a readable safetensors file ({exc})") from None


def masks_file(source: str | Path) -> Path:
    """The masks file named by prune.mask_from: the file itself, or a run directory's masks.safetensors."""
    path = _existing(source, MASK_KEY)
    if path.is_dir():
        path = path / MASKS
        if not path.is_file():
            raise PaiConfigError(f"{MASK_KEY}={source}: the directory holds no {MASKS} (not a pruned run)")
    return path


def load_masks(source: str | Path, shapes: Mapping[str, torch.Size]) -> dict[str, Tensor]:
    """Bool masks from `source` for exactly the weights in `shapes` ({param name: shape}, in the model's order).

    Any difference in layer names, shapes or values other than 0/1 fails with one line naming prune.mask_from.
    """
    path = masks_file(source)
    raw = _read_safetensors(path, MASK_KEY)
    check_layers(MASK_KEY, path, {n: t.shape for n, t in raw.items()}, shapes, "prunable weights")
    masks = {}
    for name in shapes:
        t = raw[name]
        if t.is_floating_point() or t.is_complex() or not bool(((t == 0) | (t == 1)).all()):
            raise PaiConfigError(f"{MASK_KEY}={path}: {name} holds values other than 0 and 1 (dtype {t.dtype})")
        masks[name] = t.bool()
    return masks


def check_sparsity_of(masks: Mapping[str, Tensor], sparsity: float, source: str | Path) -> None:
    """The sparsity a run is filed and reported under must be its mask's: refuse a mask whose sparsity differs
    from `sparsity` by more than per-layer rounding (layer scope) and 0.001 allow."""
    total = sum(m.numel() for m in masks.values())
    achieved = 1.0 - sum(int(m.sum()) for m in masks.values()) / total
    if abs(achieved - sparsity) > 1e-3 + len(masks) / total:
        raise PaiConfigError(f"{MASK_KEY}={source}: the masks remove a fraction {achieved:.6g} of the prunable "
                             f"weights but sparsity={sparsity:g}; set sparsity={achieved:.6g}")


def check_layers(key: str, path: Path, found: Mapping[str, torch.Size], wanted: Mapping[str, torch.Size],
                 what: str) -> None:
    """One line listing missing, unexpected and differently shaped entries of a file against the model's."""
    missing = [n for n in wanted if n not in found]
    extra = [n for n in found if n not in wanted]
    shapes = [f"{n} {tuple(found[n])} in the file vs {tuple(wanted[n])}" for n in wanted
              if n in found and tuple(found[n]) != tuple(wanted[n])]
    if not (missing or extra or shapes):
        return
    parts = [f"{label} {_few(names)}" for label, names in
             (("missing", missing), ("not in the model", extra), ("shape", shapes)) if names]
    raise PaiConfigError(f"{key}={path}: does not match the model's {what}: {'; '.join(parts)}")


def _few(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def weights_file(source: str | Path, state: str = "trained") -> Path:
    """The weights file named by model.init_from: the file itself, or a run directory's init.safetensors
    (`initial`) or last.pt of a finished run (`trained`)."""
    if state not in INIT_STATES:
        raise PaiConfigError(f"model.init_from_state={state!r} must be one of {', '.join(INIT_STATES)}")
    path = _existing(source, INIT_KEY)
    if not path.is_dir():
        return path
    if state == "initial":
        if not (path / INIT).is_file():
            raise PaiConfigError(f"{INIT_KEY}={source}: the run directory holds no {INIT}")
        return path / INIT
    from pai.results import read_results  # here: pai.results imports this module

    result = read_results(files.results(path))
    if result is None or not result.finished or not files.checkpoint(path).is_file():
        raise PaiConfigError(f"{INIT_KEY}={source}: the run has not finished (status "
                             f"{result.status if result else None}), so it has no trained weights; use "
                             "model.init_from_state=initial for its initial ones")
    return files.checkpoint(path)


def load_weights(path: Path) -> dict[str, Tensor]:
    """A state_dict from a safetensors file, or from a torch file (pai's last.pt or a plain state_dict) loaded
    with weights_only=True."""
    if path.suffix == ".safetensors":
        return _read_safetensors(path, INIT_KEY)
    if path.name == files.CHECKPOINT:
        from pai.train.checkpoint import load_checkpoint

        state = load_checkpoint(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise PaiConfigError(f"{INIT_KEY}={path}: not a safetensors or weights-only torch file "
                                 f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a training checkpoint
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise PaiConfigError(f"{INIT_KEY}={path}: holds no state_dict (name → tensor)")
    return state


@torch.no_grad()
def init_model(model: nn.Module, source: str | Path, state: str) -> Path:
    """Load model.init_from's weights into `model` (every parameter and buffer; names and shapes checked).

    A model on the meta device (pai.run.check_model's early check) gets the checks only: there is nothing to copy
    into, so a bad file still fails before any work."""
    path = weights_file(source, state)
    weights = load_weights(path)
    own = model.state_dict()
    check_layers(INIT_KEY, path, {n: t.shape for n, t in weights.items()}, {n: t.shape for n, t in own.items()},
                 "state_dict")
    bad = [n for n, t in weights.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise PaiConfigError(f"{INIT_KEY}={path}: non-finite values in {_few(bad)}")
    if not any(t.is_meta for t in own.values()):
        model.load_state_dict({n: weights[n].to(own[n].dtype) for n in own})
    return path


# ---- identity --------------------------------------------------------------------------------------------------

def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def input_files(cfg: DictConfig) -> dict[str, Path]:
    """{config key: file} for the inputs a run reads (prune.mask_from, model.init_from); {} for none."""
    out: dict[str, Path] = {}
    mask_from = OmegaConf.select(cfg, MASK_KEY)
    if mask_from is not None:
        out[MASK_KEY] = masks_file(mask_from)
    init_from = OmegaConf.select(cfg, INIT_KEY)
    if init_from is not None:
        out[INIT_KEY] = weights_file(init_from, OmegaConf.select(cfg, "model.init_from_state") or "trained")
    return out


def hash_inputs(cfg: DictConfig, resolved: dict) -> None:
    """Adjust the resolved config that the run's hash is taken of (in place).

    The paths are config keys, so they are in the hash; the sha256 of the files they name is added, so a file
    changed under the same path is a new run, not a finished one that is skipped. Unset (null) keys are
    removed, so the hashes of runs from before these keys existed stay valid.
    """
    model, prune = resolved.get("model", {}), resolved.get("prune", {})
    if model.get("init_from") is None:
        for key in INIT_KEYS:
            model.pop(key, None)
    if prune.get("mask_from", ...) is None:
        prune.pop("mask_from")
    digests = {key: file_sha256(path) for key, path in input_files(cfg).items()}
    if digests:
        resolved["input_sha256"] = digests


def model_node(cfg: DictConfig) -> dict:
    """The model node, resolved, without the init_from keys (for identities that fingerprint the weights)."""
    from pai.build import resolved

    node = resolved(cfg.model)
    for key in INIT_KEYS:
        node.pop(key, None)
    return node


def default_label(cfg: DictConfig, criterion_name: str) -> str | None:
    """A run that trains a given mask or starts from given weights is not its criterion's own run: unless
    `label` names it, the report shows it as `<pruner>+mask_from` / `+init_from`, never averaged with them."""
    if cfg.get("label") is not None:
        return str(cfg.label)
    tags = [tag for tag, key in (("init_from", INIT_KEY), ("mask_from", MASK_KEY))
            if OmegaConf.select(cfg, key) is not None]
    return "+".join([criterion_name, *tags]) if tags else None
