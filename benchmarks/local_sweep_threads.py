"""Wall time of the headline sweep under the local launcher (9 jobs at once): torch's default threads vs pai's rule.

    python benchmarks/local_sweep_threads.py                 # one before/after pair, a few minutes on 2 cores
    python benchmarks/local_sweep_threads.py --pairs 2 --out benchmarks/results/local_sweep_threads_cpu.md

The sweep is `python launch.py -m hydra/launcher=local pruner=hutch_diag,fts,snip seed=0,42,123` with the
defaults (digits, ResNet-20) cut short: --samples-per-class scoring samples (default 4, not 10), one epoch of
--steps steps, no W&B, no score cache. `before` = every job with torch's default intra-op thread count (what
torch picks in a fresh process: one per core of the machine), passed as `threads=<n>`; `after` = pai's rule
(`threads=null`: the job's CPU affinity divided among the 9 jobs of the batch). OMP_NUM_THREADS is removed from
the jobs' environment in both.
Runs alternate (before, after, before, ...) so slow drifts of the machine's load hit both; the ratio is
before / after of each pair. On a shared machine other users' jobs add noise: the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["-m", "hydra/launcher=local", "pruner=hutch_diag,fts,snip", "seed=0,42,123"]


def torch_default_threads(env: dict[str, str]) -> int:
    """torch's intra-op thread count in a fresh process with this environment (no OMP_NUM_THREADS)."""
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=env,
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def run_sweep(threads: str, args: argparse.Namespace, env: dict[str, str], workdir: Path) -> dict:
    out = workdir / f"out-{threads}-{time.monotonic_ns()}"
    cmd = [sys.executable, str(ROOT / "launch.py"), *SWEEP, "train.epochs=1", f"train.steps_per_epoch={args.steps}",
           f"prune.samples_per_class={args.samples_per_class}", "logger=none", "prune.cache=false",
           f"threads={threads}", f"out_root={out}",
           f"hydra.sweep.dir={out}/sweep"]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed (threads={threads}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    results = [json.loads(p.read_text()) for p in (out / "runs").rglob("results.json")]
    assert len(results) == 9, len(results)
    score = {c: statistics.mean(r["score_seconds"] for r in results if r["pruner"] == c)
             for c in ("hutch_diag", "fts", "snip")}
    logs = " ".join(p.read_text() for p in (out / "sweep").glob("*/pai.log"))
    used = sorted({line.split("torch threads: ")[1].split()[0] for line in logs.splitlines()
                   if "torch threads: " in line})
    return {"wall": wall, "score": score, "load": load, "threads_used": used}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1, help="before/after pairs (alternating)")
    parser.add_argument("--steps", type=int, default=2, help="training steps of the one epoch")
    parser.add_argument("--samples-per-class", type=int, default=4, help="scoring samples per class")
    parser.add_argument("--out", type=Path, help="also write the table as Markdown here")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "PAI_OUT")}
    env["PYTHONUNBUFFERED"] = "1"
    default = torch_default_threads(env)
    cpus = len(os.sched_getaffinity(0))
    rows = []
    with tempfile.TemporaryDirectory(prefix="pai-threads-") as tmp:
        for pair in range(args.pairs):
            before = run_sweep(str(default), args, env, Path(tmp))
            after = run_sweep("null", args, env, Path(tmp))
            rows.append((pair, before, after))
            print(f"pair {pair}: before {before['wall']:.1f} s (threads {before['threads_used']}, load "
                  f"{before['load']:.1f}), after {after['wall']:.1f} s (threads {after['threads_used']}, load "
                  f"{after['load']:.1f}), ratio {before['wall'] / after['wall']:.2f}", flush=True)
    ratios = [b["wall"] / a["wall"] for _, b, a in rows]
    lines = [
        "# Headline sweep, local launcher, 9 jobs at once: torch default threads vs pai's rule",
        "",
        f"Machine: {platform.machine()}, {cpus} CPUs in this process's affinity, torch default {default} "
        f"threads per process; shared with other users (load average at each start in the table).",
        f"`python benchmarks/local_sweep_threads.py --pairs {args.pairs} --steps {args.steps} "
        f"--samples-per-class {args.samples_per_class}`",
        "",
        "| pair | before: wall s | after: wall s | before / after | hutch_diag score s (before → after) | "
        "fts | snip | load at start (before, after) |",
        "|---:|---:|---:|---:|---|---|---|---|",
    ]
    for pair, b, a in rows:
        lines.append(
            f"| {pair} | {b['wall']:.1f} | {a['wall']:.1f} | {b['wall'] / a['wall']:.2f} | "
            f"{b['score']['hutch_diag']:.1f} → {a['score']['hutch_diag']:.1f} | "
            f"{b['score']['fts']:.2f} → {a['score']['fts']:.2f} | {b['score']['snip']:.2f} → "
            f"{a['score']['snip']:.2f} | {b['load']:.1f}, {a['load']:.1f} |")
    lines += ["", f"wall-time ratio before / after: {statistics.mean(ratios):.2f}"
              + (f" (pairs: {', '.join(f'{r:.2f}' for r in ratios)})" if len(ratios) > 1 else "")]
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
