"""Exact top-k mask selection: the O(n) kthvalue path (pai.pruning.masks) vs a stable full argsort, in one run.

    .venv/bin/python benchmarks/mask_selection.py --threads 1
Prints seconds per call and the ratio for prunable-weight counts of ResNet-20 x0.5, ResNet-18 and ResNet-50,
and checks that both keep exactly the same weights (ties included).
"""

from __future__ import annotations

import argparse
import time

import torch

from pai.pruning import top_k


def full_sort(flat: torch.Tensor, k: int) -> torch.Tensor:
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[torch.argsort(flat, descending=True, stable=True)[:k]] = True
    return keep


def best_of(fn, flat: torch.Tensor, k: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(flat, k)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sparsity", type=float, default=0.98)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    print("| weights | sort (s) | select (s) | ratio | same mask |\n|---|---|---|---|---|")
    for n in (67_528, 11_164_352, 23_454_912):
        flat = torch.randn(n, generator=g, dtype=torch.float64)
        flat[::7] = 0.5  # ties, as magnitude/SNIP scores of zero-initialised or repeated weights give
        k = int(round((1 - args.sparsity) * n))
        t_sort = best_of(full_sort, flat, k, args.repeats)
        t_select = best_of(top_k, flat, k, args.repeats)
        same = torch.equal(full_sort(flat, k), top_k(flat, k))
        print(f"| {n:,} | {t_sort:.3f} | {t_select:.3f} | {t_sort / t_select:.1f}x | {same} |")


if __name__ == "__main__":
    main()
