"""Scoring speed: the batch-1 loop (reference semantics) vs the fast path, for every criterion, in one process.

    python benchmarks/scoring.py --threads 1           # ResNet-20, 100 samples
    python benchmarks/scoring.py --model resnet18 --n 100 --hutch-n 10 --out benchmarks/results/scoring_cpu.md

CIFAR-shaped synthetic data (pai.data.synthetic), class-balanced augmented scoring samples. Columns: seconds per
path (best of --repeats; the loop runs once), speedup of fast over loop, speedup of fast over ONE batched
forward+backward pass of the same samples (what a per-sample criterion costs at best on a CPU; < 1 = slower
than that pass), peak RSS growth during the call (sampled every 5 ms after malloc_trim; on CUDA the
allocator's peak), and the fraction of kept weights shared by the loop and fast masks at sparsity 0.9 (global,
classifier not pruned). For the Hutchinson family also the mask overlap and relative difference of H_d between
two probe seeds, at T = 200 and T = 1 (fast path: its probes are the loop's, so it is the loop's estimator).
"""

from __future__ import annotations

import argparse
import ctypes
import platform
import sys
import threading
import time
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
from pai.pruning.estimators import hutchinson  # noqa: E402

try:
    LIBC = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc
    LIBC = None
MODELS = {"resnet20": resnet20, "resnet18": resnet18, "resnet50": resnet50}
PER_SAMPLE = ["grad_norm", "snip", "fisher_diag", "fisher_pruner", "fts"]
HUTCH = ["hutch_diag", "hutch_pruning", "hts"]
GAUSS_NEWTON = ["ggn_diag", "obd", "ggn_taylor", "fisher_mc"]
SINGLE = ["grasp", "synflow"]  # no per-sample loop: one path


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


def timed(device: torch.device, repeats: int, fn, *args):
    """(result, best seconds of `repeats` calls, peak memory MB): the minimum is the least disturbed by other
    processes on a shared machine."""
    best, peak = float("inf"), 0.0
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        with PeakMemory(device) as mem:
            t0 = time.perf_counter()
            out = fn(*args)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        peak = max(peak, mem.peak)
    return out, best, peak


def overlap(a: dict, b: dict, names: list[str]) -> float:
    ma, mb = make_masks({n: a[n] for n in names}, 0.9), make_masks({n: b[n] for n in names}, 0.9)
    kept = sum(int(m.sum()) for m in ma.values())
    return sum(int((ma[n] & mb[n]).sum()) for n in names) / kept


def batched_pass(model, x, y) -> None:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20", choices=sorted(MODELS))
    ap.add_argument("--n", type=int, default=100, help="scoring samples (the first n of a class-balanced draw)")
    ap.add_argument("--hutch-n", type=int, default=None, help="scoring samples for the Hutchinson family (--n)")
    ap.add_argument("--criteria", default=",".join(PER_SAMPLE + HUTCH + GAUSS_NEWTON + SINGLE))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs for fast and batched (loop: 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", default=None, help="also write the tables (markdown) here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = MODELS[args.model](10).to(device).eval()
    data = build_synthetic(num_train=max(1000, 10 * args.n))
    names = list(prunable_weights(model))
    rows, hrows = [], []
    x, y = data.scoring_samples(1, 0, device)  # functorch's one-time setup (seconds) is not charged to anyone:
    hutchinson(model, names, x[:2], y[:2], temperature=1.0, batch_size=1, num_probes=1, seed=0)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for code in args.criteria.split(","):
            n = args.hutch_n if code in HUTCH and args.hutch_n else args.n
            x, y = (t[:n] for t in data.scoring_samples(-(-n // 10), 0, device))
            _, t_batch, _ = timed(device, args.repeats, batched_pass, model, x, y)
            cfg = compose("config", overrides=[f"pruner={code}"])
            fast = instantiate(cfg.pruner)
            s_fast, t_fast, m_fast = timed(device, args.repeats, fast.score, model, x, y)
            row = {"criterion": code, "N": n, "fast s": t_fast, "batched pass s": t_batch,
                   "fast speedup vs batched pass": t_batch / t_fast, "fast peak MB": m_fast}
            if code not in SINGLE:
                loop = instantiate(cfg.pruner, path="loop")
                s_loop, t_loop, m_loop = timed(device, 1, loop.score, model, x, y)
                row.update({"loop s": t_loop, "fast speedup vs loop": t_loop / t_fast, "loop peak MB": m_loop,
                            "mask overlap @0.9": overlap(s_loop, s_fast, names)})
            rows.append(row)
            print(row, flush=True)
            if code == "hutch_diag":
                hrows += hutch_seeds(model, names, x, y, cfg.pruner)
    cols = ["criterion", "N", "loop s", "fast s", "fast speedup vs loop", "batched pass s",
            "fast speedup vs batched pass", "loop peak MB", "fast peak MB", "mask overlap @0.9"]
    table = pd.DataFrame(rows).reindex(columns=cols).to_markdown(index=False, floatfmt=".3g")
    htable = pd.DataFrame(hrows).to_markdown(index=False, floatfmt=".3g") if hrows else ""
    header = (f"# Scoring benchmark: {args.model}, CIFAR-shaped synthetic data, device {device} "
              f"({platform.processor() or platform.machine()}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads)\n\n`python benchmarks/scoring.py {' '.join(sys.argv[1:])}`\n")
    text = f"{header}\n{table}\n\nHutchinson probe seeds (fast path = the loop's estimator):\n\n{htable}\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


def hutch_seeds(model, names, x, y, pcfg) -> list[dict]:
    """Run-to-run variability of H_d from the probes alone: two seeds, same samples."""
    out = []
    for temperature in (200.0, 1.0):
        h = [hutchinson(model, names, x, y, temperature=temperature, batch_size=1, num_probes=pcfg.num_probes,
                        seed=s, chunk_size=pcfg.chunk_size)[1] for s in (0, 1)]
        diff = torch.cat([(h[0][n] - h[1][n]).flatten() for n in names]).norm()
        scale = torch.cat([(h[0][n] + h[1][n]).flatten() / 2 for n in names]).norm()
        out.append({"T": temperature, "N": x.shape[0], "probes/sample": pcfg.num_probes,
                    "HD mask overlap seed 0 vs 1 @0.9": overlap(h[0], h[1], names),
                    "rel. diff ‖H_d(0) − H_d(1)‖ / ‖H_d‖": float(diff / scale)})
        print(out[-1], flush=True)
    return out


if __name__ == "__main__":
    main()
