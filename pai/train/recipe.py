"""A training recipe (conf/train/*.yaml): optimizer and scheduler factories plus the loop's knobs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from pai.errors import PaiConfigError, check_int

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


@dataclass
class Recipe:
    epochs: int
    batch_size: int
    optimizer: OptimizerFactory
    scheduler: SchedulerFactory | None = None  # stepped once per epoch
    label_smoothing: float = 0.0
    eval_batch_size: int = 1024
    augment: bool = True
    steps_per_epoch: int | None = None  # cut every epoch short (smoke runs; ≥ 1); null = the whole training set
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    channels_last: str | bool = "auto"  # auto = on CUDA only
    compile: bool = False  # torch.compile the model for training
    # Data parallelism over the processes of a torchrun / multi-task SLURM job (pai.distributed):
    distributed: str | bool = "auto"  # auto = on when the job has more than one process
    sync_bn: str | bool = "auto"  # SyncBatchNorm in distributed runs; auto = on CUDA (DDP refuses it on the CPU)
    dist_timeout_s: float = 600.0  # a collective that waits longer (a rank died or hung) fails the run
    dist_wait_timeout_s: float = 7200.0  # how long the other ranks wait for rank 0's scoring / data download

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "eval_batch_size"):
            check_int(f"train.{key}", getattr(self, key), minimum=1)
        if self.steps_per_epoch is not None:  # 0 must not pass as "no limit"
            check_int("train.steps_per_epoch", self.steps_per_epoch, minimum=1)
        smoothing = self.label_smoothing
        if isinstance(smoothing, bool) or not isinstance(smoothing, int | float) or not 0.0 <= smoothing < 1.0:
            raise PaiConfigError(f"train.label_smoothing={smoothing!r} must be a number in [0, 1)")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise PaiConfigError(f"train.precision={self.precision!r} must be auto, fp32 or bf16")
        # bool("false") is True: a string other than "auto" must not silently turn channels_last on.
        if self.channels_last != "auto" and not isinstance(self.channels_last, bool):
            raise PaiConfigError(f"train.channels_last={self.channels_last!r} must be auto, true or false")
        if not isinstance(self.compile, bool):
            raise PaiConfigError(f"train.compile={self.compile!r} must be true or false")
        for key in ("distributed", "sync_bn"):
            if getattr(self, key) not in ("auto", True, False):
                raise PaiConfigError(f"train.{key}={getattr(self, key)!r} must be auto, true or false")
        for key in ("dist_timeout_s", "dist_wait_timeout_s"):
            if not getattr(self, key) > 0:
                raise PaiConfigError(f"train.{key}={getattr(self, key)!r} must be > 0 seconds")

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        """bf16 for autocast, or None for plain fp32 (auto: bf16 on CUDA, fp32 elsewhere)."""
        bf16 = self.precision == "bf16" or (self.precision == "auto" and device.type == "cuda")
        return torch.bfloat16 if bf16 else None

    def use_channels_last(self, device: torch.device) -> bool:
        """Whether model and inputs are laid out channels_last (auto: on CUDA only)."""
        return device.type == "cuda" if self.channels_last == "auto" else bool(self.channels_last)

    def use_sync_bn(self, device: torch.device) -> bool:
        """SyncBatchNorm in a distributed run (auto: on CUDA). It computes BN statistics over the global batch,
        so N ranks train exactly like one process; torch's DDP rejects it on CPU modules, so on the CPU every
        rank normalises with its own per-rank batch (standard DDP)."""
        if self.sync_bn == "auto":
            return device.type == "cuda"
        if self.sync_bn and device.type != "cuda":
            raise PaiConfigError("train.sync_bn=true needs CUDA: DistributedDataParallel rejects SyncBatchNorm on "
                                 "CPU modules; use train.sync_bn=auto or false")
        return bool(self.sync_bn)
