"""Multi-process data parallelism (torch.distributed): process-group setup and teardown, rank helpers, and the
few collectives the run needs. In one process every helper is a no-op (rank 0 of a world of 1), so callers
never branch on "distributed or not".

Where the ranks come from:
- torchrun: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT are set for every process;
- a SLURM job with several tasks (hydra-submitit-launcher with tasks_per_node > 1 or nodes > 1): submitit's
  `TorchDistributedEnvironment` derives them from the SLURM variables (master = first host of the job, port
  from the job id) and exports them.

A rank that dies: torchrun and srun stop the other ranks when one exits non-zero. A rank that hangs (or dies
in a way the launcher does not see) makes the others' next collective fail after `timeout_s` with
`DistributedError`, instead of blocking forever.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pai.digest import tensor_digest
from pai.errors import PaiConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")


class DistributedError(RuntimeError):
    """A collective failed or timed out (another rank died or hung), or the ranks disagree."""


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    source: str  # "torchrun" | "slurm": where the ranks came from (for messages)


@dataclass
class _State:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")  # where collective tensors live (cuda for NCCL)
    wait_group: Any = None  # the group with the long timeout (waits on rank-0 work such as scoring)
    timeout_s: float = 0.0
    wait_timeout_s: float = 0.0


_state = _State()


def _reset() -> None:
    global _state
    _state = _State()


def detect_env(environ: Mapping[str, str] | None = None) -> DistEnv | None:
    """The job's ranks when it has more than one process, else None."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env and int(env["WORLD_SIZE"]) > 1:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)), "torchrun")
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_PROCID" in env:
        return DistEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)),
                       "slurm")
    return None


def wanted(setting: str | bool) -> DistEnv | None:
    """`train.distributed` (auto | true | false, checked by Recipe) against the environment: the ranks to use,
    or None."""
    env = detect_env()
    if setting is True and env is None:
        raise PaiConfigError("train.distributed=true but this process is alone (no WORLD_SIZE > 1 from torchrun, "
                             "no SLURM job with several tasks); start it with torchrun --nproc_per_node=N or "
                             "hydra/launcher=slurm_multigpu")
    return None if setting is False else env


def rank() -> int:
    return _state.rank


def world_size() -> int:
    return _state.world_size


def is_main() -> bool:
    """Rank 0: the process that writes results, checkpoints and W&B."""
    return _state.rank == 0


def is_distributed() -> bool:
    return _state.world_size > 1


@contextlib.contextmanager
def session(env: DistEnv | None, device: torch.device, timeout_s: float,
            wait_timeout_s: float) -> Iterator[torch.device]:
    """Join the process group for the duration of a run and yield this rank's device (cuda:<local rank> on a
    multi-GPU node). Without `env`: nothing to join, yields `device`."""
    if env is None:
        yield device
        return
    if dist.is_initialized():
        raise DistributedError("torch.distributed is already initialized in this process")
    if env.source == "slurm":
        from submitit.helpers import TorchDistributedEnvironment

        # Sets MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE for env:// init (overwriting any inherited from the
        # submitting shell: the job's own SLURM variables are authoritative). CUDA_VISIBLE_DEVICES is left
        # alone: CUDA may already be initialized, and cuda:<local rank> works whether or not SLURM binds GPUs.
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    if device.type == "cuda":
        device = torch.device("cuda", env.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    log.info("rank %d/%d (%s, local rank %d): joining the %s process group at %s:%s (timeout %g s)", env.rank,
             env.world_size, env.source, env.local_rank, backend, os.environ.get("MASTER_ADDR"),
             os.environ.get("MASTER_PORT"), timeout_s)
    try:
        dist.init_process_group(backend, rank=env.rank, world_size=env.world_size,
                                timeout=timedelta(seconds=timeout_s),
                                device_id=device if device.type == "cuda" else None)
    except Exception as exc:
        raise DistributedError(f"rank {env.rank}: could not join the process group of {env.world_size} ranks "
                               f"within {timeout_s:g} s (train.dist_timeout_s): {type(exc).__name__}: {exc}. "
                               "Another rank failed to start; see its log") from exc
    _state.rank, _state.world_size, _state.device = env.rank, env.world_size, device
    _state.timeout_s, _state.wait_timeout_s = timeout_s, wait_timeout_s
    try:
        # A second group with a longer timeout for the waits on rank 0's one-off work (scoring, downloads),
        # which may take far longer than any training step.
        _state.wait_group = dist.new_group(timeout=timedelta(seconds=max(wait_timeout_s, timeout_s)))
        yield device
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
        _reset()  # back to one process: the next run in this process starts fresh


@contextlib.contextmanager
def _collective(what: str, long_wait: bool = False) -> Iterator[None]:
    """Turn a failed/timed-out collective into one clear error naming the rank, the step and the remedy."""
    timeout = max(_state.wait_timeout_s, _state.timeout_s) if long_wait else _state.timeout_s
    key = "train.dist_wait_timeout_s" if long_wait else "train.dist_timeout_s"
    try:
        yield
    except DistributedError:
        raise
    except Exception as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise DistributedError(
            f"rank {_state.rank}/{_state.world_size}: {what} failed ({type(exc).__name__}: {first_line}); another "
            f"rank died or did not arrive within {timeout:g} s ({key}). Its log says why") from exc


@contextlib.contextmanager
def rank0_first(what: str) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. a download into a shared directory), the others after it. If it fails
    on rank 0, the others raise too instead of waiting for a rank that will never come."""
    if not is_distributed():
        yield
        return
    if is_main():
        with _announce_outcome(what):
            yield
        _send_outcome(what, None)
        return
    _receive_outcome(what)
    yield


def run_on_rank0(fn: Callable[[], T], what: str) -> T:
    """`fn()` computed once, on rank 0, and its (picklable, CPU) result on every rank; the others wait up to
    train.dist_wait_timeout_s. An exception on rank 0 is re-raised there and ends the others with
    DistributedError, instead of leaving them waiting."""
    if not is_distributed():
        return fn()
    if not is_main():
        return _receive_outcome(what)
    with _announce_outcome(what):
        result = fn()
    _send_outcome(what, result)
    return result


@contextlib.contextmanager
def _announce_outcome(what: str) -> Iterator[None]:
    """Rank 0: if the block raises, tell the waiting ranks (they raise too), then re-raise here."""
    try:
        yield
    except Exception as exc:
        broadcast_object(("failed", f"{type(exc).__name__}: {exc}"), what, long_wait=True)
        raise


def _send_outcome(what: str, value: Any) -> None:
    broadcast_object(("ok", value), what, long_wait=True)


def _receive_outcome(what: str) -> Any:
    """The other ranks: rank 0's value, or DistributedError carrying rank 0's error."""
    status, value = broadcast_object(None, f"waiting for rank 0: {what}", long_wait=True)
    if status == "failed":
        raise DistributedError(f"rank {_state.rank}: rank 0 failed {what} ({value}); see rank 0's log")
    return value


def broadcast_object(obj: Any, what: str, long_wait: bool = False) -> Any:
    """Rank 0's `obj` on every rank (pickled; keep tensors in it on the CPU)."""
    if not is_distributed():
        return obj
    box = [obj if is_main() else None]
    with _collective(what, long_wait):
        dist.broadcast_object_list(box, src=0, group=_state.wait_group if long_wait else None,
                                   device=_state.device)
    return box[0]


def all_gather_object(obj: Any, what: str) -> list[Any]:
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * _state.world_size
    with _collective(what):
        dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(t: Tensor, what: str) -> Tensor:
    """Sum `t` over the ranks, in place (and returned)."""
    if is_distributed():
        with _collective(what):
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


@torch.no_grad()
def broadcast_module_state(model: nn.Module, what: str, parameters: bool = True) -> None:
    """Overwrite every rank's buffers (and parameters) with rank 0's."""
    if not is_distributed():
        return
    tensors = list(model.buffers()) + (list(model.parameters()) if parameters else [])
    with _collective(what):
        for t in tensors:
            dist.broadcast(t, src=0)


def agree(value: Any, what: str) -> None:
    """Raise DistributedError unless every rank holds the same `value` (a checksum, a config hash)."""
    values = all_gather_object(value, what)
    if any(v != values[0] for v in values):
        listing = ", ".join(f"rank {r}: {v}" for r, v in enumerate(values))
        raise DistributedError(f"the ranks disagree on {what}: {listing}")


def checksum(tensors: Mapping[str, Tensor]) -> str:
    """First 16 hex digits of the tensors' digest (names in sorted order): equal iff the tensors are equal."""
    return tensor_digest({name: tensors[name] for name in sorted(tensors)})[:16]


def mean_loss_and_accuracy(loss_sum: Tensor, correct: Tensor, count: int, what: str) -> tuple[float, float]:
    """(loss_sum / count, correct / count) over the samples of every rank: one all-reduce of the three sums
    (float64 holds the counts exactly, below 2**53)."""
    if not is_distributed():
        return loss_sum.item() / count, correct.item() / count
    sums = torch.stack([loss_sum.double(), correct.double(),
                        torch.tensor(float(count), dtype=torch.float64, device=loss_sum.device)])
    all_reduce_sum(sums, what)
    return sums[0].item() / sums[2].item(), sums[1].item() / sums[2].item()
