"""A training recipe (conf/train/*.yaml): optimizer and scheduler factories plus the loop's knobs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from pai.errors import PaiConfigError

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
    steps_per_epoch: int | None = None  # cut every epoch short (smoke runs); null = the whole training set
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    channels_last: str | bool = "auto"  # auto = on CUDA only
    compile: bool = False  # torch.compile the model for training

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise PaiConfigError(f"train.epochs={self.epochs} must be ≥ 1")
        if self.batch_size < 1:
            raise PaiConfigError(f"train.batch_size={self.batch_size} must be ≥ 1")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise PaiConfigError(f"train.precision={self.precision!r} must be auto, fp32 or bf16")
        # bool("false") is True: a string other than "auto" must not silently turn channels_last on.
        if self.channels_last != "auto" and not isinstance(self.channels_last, bool):
            raise PaiConfigError(f"train.channels_last={self.channels_last!r} must be auto, true or false")
        if not isinstance(self.compile, bool):
            raise PaiConfigError(f"train.compile={self.compile!r} must be true or false")

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        """bf16 for autocast, or None for plain fp32 (auto: bf16 on CUDA, fp32 elsewhere)."""
        bf16 = self.precision == "bf16" or (self.precision == "auto" and device.type == "cuda")
        return torch.bfloat16 if bf16 else None

    def use_channels_last(self, device: torch.device) -> bool:
        """Whether model and inputs are laid out channels_last (auto: on CUDA only)."""
        return device.type == "cuda" if self.channels_last == "auto" else bool(self.channels_last)
