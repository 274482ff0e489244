"""Scoring speed: the batch-1 loop (reference semantics) vs the default (fast) path, for every criterion, in one
process, against one batched forward+backward pass of the same samples.

    python benchmarks/scoring.py --threads 1 --repeats 2 --check       # ResNet-20, 100 samples
    python benchmarks/scoring.py --model resnet18 --n 100 --hutch-n 10 --threads 1

CIFAR-shaped synthetic data (pai.data.synthetic), class-balanced augmented scoring samples. Per criterion, the
batched pass, the fast path and the loop are timed in turn, --repeats times, and each keeps its best (the least
disturbed by other processes on a shared machine). Columns: the path `fast` resolves to (where it resolves to
the loop, the loop is timed once per repeat and fast/loop is 1 by construction); seconds per path; fast/loop =
loop s / fast s (> 1: the default is faster than the loop); fast/batched pass = batched pass s / fast s (1: the
criterion costs what one ordinary batched pass costs; 0.667 = 1.5× that pass); peak memory growth during the
call (RSS sampled every 5 ms after malloc_trim; on CUDA the allocator's peak); and the fraction of kept weights
shared by the loop's and fast's masks at sparsity 0.9 and 0.98 (global, classifier not pruned).

--check exits with status 1 when a criterion's default path is slower than its loop (fast/loop < 1).
--clock cpu times the calling thread's CPU time instead of wall time (only with --threads 1): on a loaded
machine it leaves out the time spent waiting for a core. --probe-seeds adds, for hutch_diag, the mask overlap
and relative difference of H_d between two probe seeds, at T = 200 and T = 1.
"""

from __future__ import annotations

import argparse
import ctypes
import platform
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pai.data.synthetic import build_synthetic  # noqa: E402
from pai.models.cifar_resnet import resnet18, resnet50  # noqa: E402
from pai.models.he_resnet import resnet20  # noqa: E402
from pai.pruning import make_masks, prunable_weights  # noqa: E402
from pai.pruning.criteria.base import Criterion, hessian_parameters  # noqa: E402
from pai.pruning.estimators import (  # noqa: E402
    Objective,
    hooks_supported,
    hutchinson,
    hutchinson_fast_path,
    moments_fast_path,
)

try:
    LIBC = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc
    LIBC = None
MODELS = {"resnet20": resnet20, "resnet18": resnet18, "resnet50": resnet50}
FIRST_ORDER = ["grad_norm", "snip"]
PER_SAMPLE = [*FIRST_ORDER, "fisher_diag", "fisher_pruner", "fts"]
HUTCH = ["hutch_diag", "hutch_pruning", "hts"]
GAUSS_NEWTON = ["ggn_diag", "obd", "ggn_taylor", "fisher_mc"]
SINGLE = ["grasp", "synflow"]  # no per-sample loop: one path
SPARSITIES = (0.9, 0.98)


class PeakMemory:
    """Peak memory growth (MB) inside the block: CUDA allocator peak, or RSS sampled by a thread on a CPU."""

    def __init__(self, device: torch.device):
        self.device, self.peak, self._stop = device, 0.0, threading.Event()

    @staticmethod
    def _rss() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    def _poll(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss() - self.base)

    def __enter__(self) -> PeakMemory:
        if LIBC is not None:  # hand freed heap memory back, so the growth measured is this call's own peak
            LIBC.malloc_trim(0)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated() / 2**20
        else:
            self.base = self._rss()
            self.thread = threading.Thread(target=self._poll, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated() / 2**20 - self.base
        else:
            self._stop.set()
            self.thread.join()


class Timer:
    """Best seconds, peak memory and last result of each labelled call, over repeated calls."""

    def __init__(self, device: torch.device, clock: Callable[[], float]):
        self.device, self.clock = device, clock
        self.best: dict[str, float] = {}
        self.peak: dict[str, float] = {}
        self.result: dict[str, object] = {}

    def __call__(self, label: str, fn: Callable[..., object], *args: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        with PeakMemory(self.device) as mem:
            t0 = self.clock()
            out = fn(*args)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            seconds = self.clock() - t0
        self.best[label] = min(self.best.get(label, float("inf")), seconds)
        self.peak[label] = max(self.peak.get(label, 0.0), mem.peak)
        self.result[label] = out


def overlap(a: dict, b: dict, names: list[str], sparsity: float) -> float:
    ma, mb = make_masks({n: a[n] for n in names}, sparsity), make_masks({n: b[n] for n in names}, sparsity)
    kept = sum(int(m.sum()) for m in ma.values())
    return sum(int((ma[n] & mb[n]).sum()) for n in names) / kept


def batched_pass(model, x, y) -> None:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)


def resolved_path(code: str, crit: Criterion, model: torch.nn.Module) -> str:
    """The path the criterion's `fast` takes on this model (before any fallback of the hooks to vmap)."""
    names = list(crit.weights(model))
    if code in PER_SAMPLE:
        return moments_fast_path(model, names, squares=code not in FIRST_ORDER)
    if code in GAUSS_NEWTON:
        return "hooks" if hooks_supported(model, names) else "vmap"
    if code in HUTCH:
        differentiated = hessian_parameters(model, crit.hessian_params)
        return hutchinson_fast_path(Objective(model, differentiated).weights)
    return "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20", choices=sorted(MODELS))
    ap.add_argument("--n", type=int, default=100, help="scoring samples (the first n of a class-balanced draw)")
    ap.add_argument("--hutch-n", type=int, default=None, help="scoring samples for the Hutchinson family (--n)")
    ap.add_argument("--criteria", default=",".join(PER_SAMPLE + HUTCH + GAUSS_NEWTON + SINGLE))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs of every path")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall time, or the calling thread's CPU time (only with --threads 1)")
    ap.add_argument("--check", action="store_true", help="exit 1 if a default path is slower than its loop")
    ap.add_argument("--probe-seeds", action="store_true", help="H_d of two probe seeds compared (hutch_diag)")
    ap.add_argument("--out", default=None, help="also write the tables (markdown) here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu" and torch.get_num_threads() != 1:
        ap.error("--clock cpu measures one thread: use it with --threads 1")
    device = torch.device(args.device)
    timer = Timer(device, time.thread_time if args.clock == "cpu" else time.perf_counter)
    torch.manual_seed(0)
    model = MODELS[args.model](10).to(device).eval()
    data = build_synthetic(num_train=max(1000, 10 * args.n))
    names = list(prunable_weights(model))
    rows, hrows = [], []
    x, y = data.scoring_samples(1, 0, device)  # functorch's one-time setup (seconds) is not charged to anyone:
    hutchinson(model, names, x[:2], y[:2], temperature=1.0, batch_size=1, num_probes=1, seed=0, path="vmap")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for code in args.criteria.split(","):
            n = args.hutch_n if code in HUTCH and args.hutch_n else args.n
            x, y = (t[:n] for t in data.scoring_samples(-(-n // 10), 0, device))
            cfg = compose("config", overrides=[f"pruner={code}"])
            fast = instantiate(cfg.pruner)
            path = resolved_path(code, fast, model)
            loop = instantiate(cfg.pruner, path="loop") if code not in SINGLE else None
            for _ in range(args.repeats):  # in turn, so that a burst of load hits every path alike
                timer("batched", batched_pass, model, x, y)
                if path != "loop":
                    timer("fast", fast.score, model, x, y)
                if loop is not None:
                    timer("loop", loop.score, model, x, y)
            if path == "loop":  # the same code: one measurement for both
                for table in (timer.best, timer.peak, timer.result):
                    table["fast"] = table["loop"]
            t_fast, t_batch = timer.best.pop("fast"), timer.best.pop("batched")
            row = {"criterion": code, "N": n, "fast path": path, "fast s": t_fast, "batched pass s": t_batch,
                   "fast/batched pass": t_batch / t_fast, "fast peak MB": timer.peak.pop("fast")}
            s_fast = timer.result.pop("fast")
            if loop is not None:
                t_loop, s_loop = timer.best.pop("loop"), timer.result.pop("loop")
                row.update({"loop s": t_loop, "fast/loop": t_loop / t_fast, "loop peak MB": timer.peak.pop("loop")})
                row.update({f"mask overlap @{s}": overlap(s_loop, s_fast, names, s) for s in SPARSITIES})
            rows.append(row)
            print(row, flush=True)
            if code == "hutch_diag" and args.probe_seeds:
                hrows += hutch_seeds(model, names, x, y, cfg.pruner)
    cols = ["criterion", "N", "fast path", "loop s", "fast s", "batched pass s", "fast/loop", "fast/batched pass",
            "loop peak MB", "fast peak MB", *(f"mask overlap @{s}" for s in SPARSITIES)]
    frame = pd.DataFrame(rows).reindex(columns=cols)
    # overlaps with enough digits to tell 1 from 0.9999
    table = frame.assign(**{f"mask overlap @{s}": frame[f"mask overlap @{s}"].map(
        lambda v: "–" if pd.isna(v) else f"{v:.6g}") for s in SPARSITIES}).to_markdown(
        index=False, floatfmt=".3g").replace("nan", "–")
    header = (f"# Scoring benchmark: {args.model}, CIFAR-shaped synthetic data, device {device} "
              f"({platform.processor() or platform.machine()}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, {args.clock} clock, best of {args.repeats})\n\n"
              f"`python benchmarks/scoring.py {' '.join(sys.argv[1:])}`\n")
    text = f"{header}\n{table}\n"
    if hrows:
        text += ("\nHutchinson probe seeds (fast path: its probes are the loop's, so it is the loop's estimator):\n\n"
                 f"{pd.DataFrame(hrows).to_markdown(index=False, floatfmt='.3g')}\n")
    slower = frame[frame["fast/loop"] < 1]
    if len(slower):
        text += f"\nDefault path slower than its loop: {', '.join(slower['criterion'])}\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    if args.check and len(slower):
        sys.exit(f"check failed: the default path is slower than the loop for {', '.join(slower['criterion'])}")


def hutch_seeds(model, names, x, y, pcfg) -> list[dict]:
    """Run-to-run variability of H_d from the probes alone: two seeds, same samples."""
    out = []
    for temperature in (200.0, 1.0):
        h = [hutchinson(model, names, x, y, temperature=temperature, batch_size=1, num_probes=pcfg.num_probes,
                        seed=s, chunk_size=pcfg.chunk_size)[1] for s in (0, 1)]
        diff = torch.cat([(h[0][n] - h[1][n]).flatten() for n in names]).norm()
        scale = torch.cat([(h[0][n] + h[1][n]).flatten() / 2 for n in names]).norm()
        out.append({"T": temperature, "N": x.shape[0], "probes/sample": pcfg.num_probes,
                    "HD mask overlap seed 0 vs 1 @0.9": overlap(h[0], h[1], names, 0.9),
                    "rel. diff ‖H_d(0) − H_d(1)‖ / ‖H_d‖": float(diff / scale)})
        print(out[-1], flush=True)
    return out


if __name__ == "__main__":
    main()
