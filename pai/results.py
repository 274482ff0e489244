"""Where a run lives on disk, and its results.json: the `RunResult` schema, written and read back verified.

A run's directory is derived from a hash of its resolved config (without the keys that do not change the
experiment: logger, output/data roots, device, caching), so relaunching a sweep finds its own runs.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import math
import os
import socket
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from omegaconf import DictConfig

from pai import __version__, files
from pai.build import resolved as resolved_config
from pai.files import set_aside, write_json
from pai.tracking import default_group

if TYPE_CHECKING:  # the report reads results without importing torch
    from pai.pruning.criteria.base import Criterion

# `label` only names a variant in reports; the knobs that make the variant already change the hash.
NOT_HASHED = ("logger", "out_root", "data_root", "device", "experiment_name", "label", "threads")
# How many processes train a run is not part of its identity (same global batch, same epoch order), so a run
# started on one GPU can resume on eight, and hashes from before these keys existed stay valid.
NOT_HASHED_TRAIN = ("distributed", "sync_bn", "dist_timeout_s", "dist_wait_timeout_s")


def config_hash(cfg: DictConfig, criterion: Criterion) -> str:
    from pai.run_files import hash_inputs  # here: reading results (the report) does not import torch

    resolved = resolved_config(cfg)
    for key in NOT_HASHED:
        resolved.pop(key, None)
    resolved.get("prune", {}).pop("cache", None)
    if "schedule" in resolved.get("prune", {}):  # the schedule that runs, as hashed before null
        from pai.pruning.options import schedule_for

        resolved["prune"]["schedule"] = schedule_for(resolved["prune"]["schedule"], criterion.default_schedule)
    if resolved.get("prune", {}).get("ablation") == "none":  # runs from before prune.ablation keep their hash
        resolved["prune"].pop("ablation")
    for key in NOT_HASHED_TRAIN:
        resolved.get("train", {}).pop(key, None)
    hash_inputs(cfg, resolved)  # prune.mask_from, model.init_from: + the sha256 of their files; null: not hashed
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
        return files.results(self.dir)

    @property
    def checkpoint(self) -> Path:
        return files.checkpoint(self.dir)

    @property
    def lock(self) -> Path:
        return files.run_lock(self.dir)

    def checkpoint_state(self) -> dict | None:
        """The verified last.pt (see pai.train.checkpoint), or None."""
        from pai.train.checkpoint import load_checkpoint

        return load_checkpoint(self.checkpoint)

    def try_lock(self) -> IO | None:
        """An exclusive lock on the run directory (flock on `.lock`, released when the file is closed or the
        process dies), or None when another live process holds it: two jobs of one config (e.g. the dense
        baseline, which every sparsity of a sweep maps to one run) never train into the same directory."""
        self.dir.mkdir(parents=True, exist_ok=True)
        f = open(self.lock, "a+")  # the caller closes it
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
        from pai.run_files import default_label

        return {
            "config_hash": self.hash,
            "run_dir": str(self.dir),
            "run_name": self.name,
            "pai_version": __version__,
            "wandb_group": self.group,
            "dataset": cfg.dataset.name,
            "model": model_name(cfg),
            "pruner": criterion.name,
            "label": default_label(cfg, criterion.name),
            "hessian_params": getattr(criterion, "hessian_params", None),
            "schedule": _schedule(cfg, criterion),
            "seed": cfg.seed,
            "scope": cfg.prune.scope,
            "ablation": cfg.prune.get("ablation", "none") if criterion.prunes else None,
            "bn_warmup": bool(cfg.prune.bn_warmup) and criterion.prunes,
        }


def _schedule(cfg: DictConfig, criterion: Criterion) -> str | None:
    """`prune.schedule` when it changes the run (hashed as such): not null, not the criterion's default."""
    schedule = cfg.prune.get("schedule")
    return None if not criterion.prunes or schedule in (None, criterion.default_schedule) else str(schedule)


def run_paths(cfg: DictConfig, criterion: Criterion) -> RunPaths:
    h = config_hash(cfg, criterion)
    sp = f"sp{cfg.sparsity:g}" if criterion.prunes else "dense"
    rel = Path(f"{cfg.dataset.name}-{model_name(cfg)}") / criterion.name / sp / f"seed{cfg.seed}-{h[:8]}"
    group = cfg.get("experiment_name") or default_group(cfg, model_name(cfg))
    return RunPaths(dir=files.runs_root(cfg.out_root) / rel, name=str(rel).replace(os.sep, "/"), hash=h,
                    group=str(group))


RESULTS_STATUSES = ("running", "done", "failed", "interrupted")  # what results.json may say
STATUSES = (*RESULTS_STATUSES, "busy")  # + what `pai.run.run` returns for a run another job is running
REQUIRED_DONE = ("dataset", "model", "pruner", "seed", "sparsity", "test_acc")  # a finished run carries these
# The float key a finished run may hold NaN/inf in (every other is refused): a run whose training diverged is
# finished, and its NaN loss says so.
NONFINITE_DONE = ("test_loss",)
SCHEMA_VERSION = 1  # bump when a key changes meaning or type; a file without the key predates it (version 0)
# A finished run is reused only from this schema on. Version-0 files were trained before pai.seeding's table of
# streams (stream first, then seed) changed the training order and crops of every config: the same config hash
# now trains another run (dense seed 42 of the Fashion-MNIST validation: 75.83 % then, 77.62 % now), so such a
# run is set aside and run again instead of being mixed with runs of today's code. Bump it with any change that
# alters what an unchanged config trains.
REUSABLE_FROM_SCHEMA = 1


ROW_SUFFIX = {"layer_shuffle": "shuffle", "reinit": "reinit"}  # report rows / W&B job types `snip+shuffle`
INPUT_TAGS = ("init_from", "mask_from")  # `default_label`'s tags: `snip+mask_from`
DEFAULT_HESSIAN_PARAMS = "all"  # conf/pruner/{grasp,grasp_reference,hts,hutch_*}.yaml


def row_name(pruner: str, label: str | None = None, ablation: str | None = None,
             hessian_params: str | None = None, schedule: str | None = None) -> str:
    """The name a run's mask goes by in reports and as its W&B job type, so that no variant is averaged with
    another: an explicit `label` as given; else the pruner, `[…]` naming a non-default `hessian_params` and
    `prune.schedule` (`grasp[prunable]`, `synflow[seed_inverted]`), then `+mask_from` / `+init_from` for a run
    given a mask or weights; either way `+shuffle` / `+reinit` when ablated (`snip+shuffle`).

    `label` is what results.json records: `default_label` writes `<pruner>+mask_from` there when `label=` is not
    set, which is read as those tags, not as an explicit label."""
    tags = _input_tags(pruner, label)
    if tags is None:
        name = str(label)
    else:
        variants = [v for v in (hessian_params, schedule) if v is not None and v != DEFAULT_HESSIAN_PARAMS]
        name = "".join([pruner, f"[{','.join(variants)}]" if variants else "", *(f"+{t}" for t in tags)])
    suffix = ROW_SUFFIX.get(ablation or "none")
    return f"{name}+{suffix}" if suffix else name


def _input_tags(pruner: str, label: str | None) -> list[str] | None:
    """The `+init_from` / `+mask_from` tags of a label `default_label` wrote (`[]` for none), None for an explicit
    label."""
    if label is None:
        return []
    head, *tags = label.split("+")
    return tags if head == pruner and tags and all(t in INPUT_TAGS for t in tags) else None


class ResultsError(ValueError):
    """A results.json (or a record about to be written) that does not fit RunResult; the message says why."""


def key(doc: str, default: Any = None) -> Any:
    """One results.json key: its documentation (README's key table is generated from it) and default."""
    return field(default=default, metadata={"doc": doc})


@dataclass
class RunResult:
    """The one schema of results.json: `pai.run` fills it, the report, W&B and the tests read it.

    Adding a key is one line here, `name: type | None = key("what it means")`, plus the README table that
    `python -m pai.results` prints (tests/test_results.py checks that the README shows this table). Keys of a
    file that are not fields (written by a newer pai) are kept in `extra` and written back unchanged.
    """

    schema_version: int = key("version of this schema (missing = 0: written before the key existed)",
                              SCHEMA_VERSION)
    status: str = key("`done` \\| `failed` \\| `interrupted` (killed or preempted; a rerun resumes) \\| "
                      "`running`", "running")
    config_hash: str | None = key("hash of the resolved config (the run directory ends with its first 8 "
                                  "characters)")
    dataset: str | None = key("dataset name")
    model: str | None = key("model builder, `timm-<name>` / `torchvision-<name>` for models chosen by name")
    pruner: str | None = key("criterion code (`none` = dense baseline)")
    label: str | None = key("report row name of a pruner variant (`label=`); else `<pruner>+mask_from` / "
                            "`+init_from` for a run given a mask or weights; else null")
    hessian_params: str | None = key("`pruner.hessian_params` of a criterion with that knob: `all` \\| `prunable` "
                                     "\\| `prunable_classifier` (null: no such knob, or a file from before the key)")
    schedule: str | None = key("`prune.schedule` when it is not the criterion's default (null: the default, the "
                               "dense baseline, or a file from before the key)")
    seed: int | None = key("the run's seed")
    sparsity: float | None = key("sparsity asked for (0 for the dense baseline: the sparsity it used)")
    sparsity_achieved: float | None = key("fraction of prunable weights removed")
    scope: str | None = key("`global` \\| `layer`")
    bn_warmup: bool | None = key("BatchNorm statistics refreshed before scoring")
    num_prunable: int | None = key("number of prunable weights")
    layer_density: dict[str, float] | None = key("{param_name: kept fraction}")
    collapsed_layers: list[str] | None = key("layers with every weight pruned")
    mask_checksum: str | None = key("sha256 of the masks (every rank of a distributed run checks it)")
    ablation: str | None = key("`prune.ablation` of the trained mask: `none` \\| `layer_shuffle` \\| `reinit` "
                               "(null: the dense baseline, or a file from before the option)")
    ablation_overlap: float | None = key("fraction of the criterion's kept weights that the trained mask keeps "
                                         "(1.0 unless `layer_shuffle`)")
    effective_sparsity: float | None = key("fraction of prunable weights pruned or on no input→output path "
                                           "(Vysogorets & Kempe 2023)")
    effective_layer_density: dict[str, float] | None = key("{param_name: fraction of weights kept and on an "
                                                           "input→output path}")
    effectively_empty_layers: list[str] | None = key("layers with no weight on an input→output path (collapsed "
                                                     "ones included)")
    cache_hit: bool | None = key("scores came from the score cache (then `score_seconds` is 0: no scoring "
                                 "ran)")
    score_seconds: float | None = key("scoring time")
    warmup_seconds: float | None = key("BN warmup time")
    train_seconds: float | None = key("training time (of this attempt)")
    test_acc: float | None = key("final test accuracy, in [0, 1]")
    test_loss: float | None = key("final test loss")
    history: list[dict] | None = key("per epoch: `epoch`, `train_loss`, `train_acc`, `test_loss`, `test_acc`, "
                                     "`lr`")
    resumed_after_epoch: int | None = key("epoch whose checkpoint the run resumed from (null = not resumed)")
    world_size: int | None = key("number of processes that trained the run")
    error: str | None = key("`<exception type>: <message>` of a failed or interrupted run")
    traceback: str | None = key("its traceback")
    run_dir: str | None = key("the run directory")
    run_name: str | None = key("its path below `runs/` (also the W&B run name)")
    pai_version: str | None = key("version of pai that wrote the file")
    hydra_dir: str | None = key("this attempt's Hydra job folder (`.hydra/`: config, overrides; null from the "
                                "Python API)")
    log_file: str | None = key("this attempt's log file (`pai.log` in `hydra_dir`)")
    inputs: dict[str, dict[str, str]] | None = key("files the run read: {`prune.mask_from` \\| `model.init_from`: "
                                                   "{`path`, `sha256`}}")
    wandb_group: str | None = key("W&B group (`experiment_name`, else `<dataset>-<model>-<launch>`)")
    skipped: bool = key("true only in what `pai.run.run` returns for a run it did not train (finished before, "
                        "or `busy`: another job is running it)", False)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # keys of a newer schema, kept as read

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The documented keys, in results.json order."""
        return tuple(f.name for f in fields(cls) if f.name != "extra")

    @classmethod
    def from_dict(cls, data: Any) -> RunResult:
        """A validated RunResult from parsed JSON; ResultsError (with the reason) when it does not fit."""
        if not isinstance(data, dict):
            raise ResultsError(f"top level is {type(data).__name__}, not an object")
        known = set(cls.keys())
        result = cls(**{"schema_version": 0, **{k: v for k, v in data.items() if k in known}})
        result.extra = {k: v for k, v in data.items() if k not in known}
        result.validate()
        return result

    def update(self, values: Mapping[str, Any]) -> RunResult:
        """Set the fields named in `values`; any other key lands in `extra` (and is written too)."""
        known = set(self.keys())
        for name, value in values.items():
            if name in known:
                setattr(self, name, value)
            else:
                self.extra[name] = value
        return self

    def to_dict(self) -> dict[str, Any]:
        """results.json's content: every key in schema order, then the extra ones."""
        return {**{name: getattr(self, name) for name in self.keys()}, **self.extra}

    def summary(self) -> dict[str, Any]:
        """The scalars (W&B run summary): everything but the per-epoch/per-layer lists and the traceback."""
        return {k: v for k, v in self.to_dict().items()
                if k != "traceback" and not isinstance(v, dict | list | tuple)}

    def row_name(self) -> str | None:
        """Its report row and W&B job type (`row_name`); None without a pruner."""
        if self.pruner is None:
            return None
        return row_name(self.pruner, self.label, self.ablation, self.hessian_params, self.schedule)

    @property
    def finished(self) -> bool:
        return self.status == "done"

    @property
    def reusable(self) -> bool:
        """Finished by a pai whose runs the current one reproduces (REUSABLE_FROM_SCHEMA)."""
        return self.finished and self.schema_version >= REUSABLE_FROM_SCHEMA

    def validate(self) -> None:
        hints = _hints()
        for name in self.keys():
            value = getattr(self, name)
            if not _conforms(value, hints[name]):
                raise ResultsError(f"{name}: {_short(value)} is not {_type_name(hints[name])}")
        if self.status not in STATUSES:
            raise ResultsError(f"status: {self.status!r} is not one of {', '.join(RESULTS_STATUSES)}")
        if self.status == "done":
            missing = [k for k in REQUIRED_DONE if getattr(self, k) is None]
            if missing:
                raise ResultsError(f"status done but {', '.join(missing)} missing or null")
            # A percentage or NaN here would silently skew every mean it enters.
            if self.test_acc is None or not 0.0 <= self.test_acc <= 1.0:
                raise ResultsError(f"test_acc: {self.test_acc!r} is not in [0, 1]")
            if self.sparsity is None or not 0.0 <= self.sparsity < 1.0:
                raise ResultsError(f"sparsity: {self.sparsity!r} is not in [0, 1)")
            for name, hint in hints.items():
                value = getattr(self, name)
                if (float in typing.get_args(hint) and name not in NONFINITE_DONE and value is not None
                        and not math.isfinite(value)):
                    raise ResultsError(f"{name}: {value!r} is not finite")

    @classmethod
    def keys_markdown(cls) -> str:
        """README's table of results.json keys (`python -m pai.results` prints it)."""
        hints = _hints()
        rows = [f"| `{f.name}` | {_type_name(hints[f.name])} | {f.metadata['doc']} |"
                for f in fields(cls) if f.name != "extra"]
        return "\n".join(["| key | type | meaning |", "|---|---|---|", *rows])


@functools.cache
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(RunResult)


def _conforms(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_conforms(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # JSON writes 1.0 as 1.0 but a hand-written 1 is an int: both are numbers
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is dict:
        return isinstance(value, dict) and all(_conforms(k, args[0]) and _conforms(v, args[1])
                                               for k, v in value.items())
    if origin is list:
        return isinstance(value, list) and all(_conforms(v, args[0]) for v in value)
    if hint in (dict, list):
        return isinstance(value, hint)
    raise TypeError(f"RunResult: no check for the type {hint!r}")


def _type_name(hint: Any) -> str:
    """`int or null`, `dict[str, float] or null`: a type as the README table and error messages show it."""
    union = typing.get_origin(hint) in (types.UnionType, typing.Union)
    return " or ".join("null" if a is type(None) else a.__name__ if isinstance(a, type) else str(a)
                       for a in (typing.get_args(hint) if union else (hint,)))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def write_results(path: Path, result: RunResult) -> None:
    """Validate and write atomically: a reader never sees half a file or one that does not fit the schema."""
    result.validate()
    write_json(path, result.to_dict())


def parse_results(path: Path) -> RunResult:
    """The RunResult in `path`; OSError when it cannot be read, ResultsError when it is not a valid one."""
    try:
        data = json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"not JSON: {exc}") from exc
    return RunResult.from_dict(data)


def read_results(path: Path) -> RunResult | None:
    """A run's own results.json, verified: None when there is none, or when it does not fit the schema (then it
    is set aside as `results.json.corrupt-<time>` with a warning, and the run is run again)."""
    try:
        return parse_results(path)
    except FileNotFoundError:
        return None
    except (OSError, ResultsError) as exc:
        set_aside(path, f"not a valid results.json ({exc}); the run is run again")
        return None


if __name__ == "__main__":  # README's key table: python -m pai.results
    print(RunResult.keys_markdown())
