"""Profile CPU training steps of ResNet-20 through pai's real loop (`pai.train.loop.train`).

Synthetic CIFAR-shaped data (3x32x32, 10 classes), batch 128, SGD 0.03 / momentum 0.9 / wd 5e-4 (the paper's
optimizer), 90 % random global masks (so the mask enforcer runs), fp32, contiguous. The loop itself is timed
without touching it: the dataset is wrapped so that every training batch handed to the loop is time-stamped,
and the gap between two consecutive batches is one step (forward, backward, optimizer, mask enforcement,
bookkeeping, plus producing the next batch). The time of `train()` outside those gaps is the per-epoch
overhead (setup, test evaluation, checkpoint).

`--before DIR` loads a second, independent copy of the `pai` package from DIR (a checkout of the code before a
change) into the same process; the two versions then run interleaved, round by round, so that a CPU shared
with other jobs slows both alike, and the report gives the ratio. Example:

    mkdir -p /tmp/before && git archive <rev> pai | tar -x -C /tmp/before
    python benchmarks/profile_step.py --before /tmp/before --out benchmarks/results/profile_resnet20_cpu.md
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def load_pai(root: Path | None) -> SimpleNamespace:
    """The pieces of `pai` this benchmark uses, imported from the package under `root` (None: this checkout)
    as a copy of its own: the current `pai` modules are set aside during the import and put back after."""
    ours = {k: v for k, v in sys.modules.items() if k == "pai" or k.startswith("pai.")}
    if root is not None:
        for k in ours:
            del sys.modules[k]
        sys.path.insert(0, str(root))
    try:
        ns = SimpleNamespace(
            loop=importlib.import_module("pai.train.loop"),
            recipe=importlib.import_module("pai.train.recipe"),
            synthetic=importlib.import_module("pai.data.synthetic"),
            masks=importlib.import_module("pai.pruning.masks"),
            models=importlib.import_module("pai.models.he_resnet"),
            where=str(root or ROOT),
        )
    finally:
        if root is not None:
            sys.path.remove(str(root))
            for k in [k for k in sys.modules if k == "pai" or k.startswith("pai.")]:
                del sys.modules[k]
            sys.modules.update(ours)
    return ns


class StampedData:
    """An ImageData wrapper that records `time.perf_counter()` whenever the loop receives a training batch."""

    def __init__(self, data) -> None:
        self.data = data
        self.stamps: list[float] = []

    def __getattr__(self, name: str):
        return getattr(self.data, name)

    def train_batches(self, *args, **kwargs):
        for batch in self.data.train_batches(*args, **kwargs):
            self.stamps.append(time.perf_counter())
            yield batch


def make_setup(pai: SimpleNamespace, args: argparse.Namespace, masked: bool):
    """Model, masks, data and recipe of one run; the same seeds give the same start for every variant."""
    torch.manual_seed(0)
    data = pai.synthetic.build_synthetic(num_train=args.num_train, num_test=args.num_test)
    model = pai.models.resnet20(10)
    masks = None
    if masked:
        g = torch.Generator().manual_seed(1)
        scores = {n: torch.rand(p.shape, generator=g) for n, p in pai.masks.prunable_weights(model).items()}
        masks = pai.masks.make_masks(scores, args.sparsity)
    recipe = pai.recipe.Recipe(
        epochs=1,
        batch_size=args.batch_size,
        optimizer=functools.partial(torch.optim.SGD, lr=0.03, momentum=0.9, weight_decay=5e-4),
        eval_batch_size=1024,
        steps_per_epoch=args.steps,
        precision="fp32",
        channels_last=False,
    )
    return data, model, masks, recipe


def run_once(pai: SimpleNamespace, args: argparse.Namespace, masked: bool = True, profiler=None) -> dict:
    data, model, masks, recipe = make_setup(pai, args, masked)
    stamped = StampedData(data)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if profiler is not None:
            with profiler:
                pai.loop.train(model, stamped, recipe, torch.device("cpu"), 0, masks, Path(tmp) / "last.pt")
        else:
            pai.loop.train(model, stamped, recipe, torch.device("cpu"), 0, masks, Path(tmp) / "last.pt")
        total = time.perf_counter() - t0
    stamps = stamped.stamps[: args.steps]  # a loop may fetch one batch more than it trains on
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    steps = gaps[args.warmup :]
    return {"steps_ms": [1e3 * s for s in steps], "total_s": total, "fetched": len(stamped.stamps)}


def run_floor(pai: SimpleNamespace, args: argparse.Namespace) -> dict:
    """The floor: forward, backward and SGD step of the same model on one fixed batch, no data pipeline, no
    masks, no bookkeeping. The loop's step minus this is everything the loop adds."""
    data, model, _, recipe = make_setup(pai, args, masked=False)
    x, y = next(data.train_batches(args.batch_size, 0, 0, torch.device("cpu")))
    opt = recipe.optimizer(model.parameters())
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for _ in range(args.steps - 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return {"steps_ms": [1e3 * s for s in times[args.warmup :]], "total_s": sum(times), "fetched": 1}


def enforcer_work_ms(pai: SimpleNamespace, args: argparse.Namespace, reps: int = 200) -> float:
    """The mask enforcer's per-step work timed alone: what its gradient hooks compute (g * m for every masked
    weight) plus its post-step re-multiply, on ResNet-20's real weights and masks."""
    _, model, masks, recipe = make_setup(pai, args, masked=True)
    opt = recipe.optimizer(model.parameters())
    enforcer = pai.masks.MaskEnforcer(model, masks, opt)
    grads = [torch.randn_like(p) for p, _ in enforcer.pairs]
    t0 = time.perf_counter()
    for _ in range(reps):
        for g, (_, m) in zip(grads, enforcer.pairs, strict=True):
            g * m
        enforcer.reapply()
    enforcer.remove()
    return 1e3 * (time.perf_counter() - t0) / reps


def top_ops(prof, n: int) -> str:
    rows = ["| op | self CPU ms | % | calls |", "|---|---:|---:|---:|"]
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    for e in events[:n]:
        rows.append(f"| `{e.key}` | {e.self_cpu_time_total / 1e3:.1f} | {100 * e.self_cpu_time_total / total:.1f} "
                    f"| {e.count} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, default=None, help="root of a pai checkout to compare against")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8, help="steps per train() call (the first --warmup not timed)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--num-train", type=int, default=50_000, help="synthetic training set (CIFAR-10 size)")
    ap.add_argument("--num-test", type=int, default=1024, help="test images evaluated at the end of the epoch")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--profile-steps", type=int, default=4, help="steps in the torch.profiler run; 0 = none")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    variants = {"after": (load_pai(None), True), "after, no masks": (load_pai(None), False),
                "floor": (load_pai(None), None)}
    if args.before is not None:
        variants = {"before": (load_pai(args.before.resolve()), True), **variants}
    steps: dict[str, list[float]] = {k: [] for k in variants}
    totals: dict[str, list[float]] = {k: [] for k in variants}
    fetched: dict[str, int] = {}
    for r in range(args.rounds):
        names = list(variants) if r % 2 == 0 else list(reversed(variants))  # alternate who runs first
        for name in names:
            pai, masked = variants[name]
            res = run_floor(pai, args) if masked is None else run_once(pai, args, masked)
            steps[name] += res["steps_ms"]
            totals[name].append(res["total_s"])
            fetched[name] = res["fetched"]
            print(f"round {r + 1} {name:16s} step median {statistics.median(res['steps_ms']):8.1f} ms  "
                  f"train() {res['total_s']:.2f} s", flush=True)

    lines = [
        "# One CPU training step of ResNet-20 through `pai.train.loop.train`",
        "",
        f"Command: `python benchmarks/profile_step.py {' '.join(sys.argv[1:])}`",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs "
        f"(load average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())} — shared with other jobs); "
        f"batch {args.batch_size}, CIFAR-shaped synthetic data ({args.num_train} train / {args.num_test} test), "
        f"SGD momentum 0.9 wd 5e-4, {args.sparsity:.0%} random global masks, fp32, contiguous. "
        f"{args.rounds} rounds x {args.steps - args.warmup - 1} timed steps per variant, variants interleaved.",
        "",
        "| variant | median ms/step | min | max | steps | train() s (incl. setup, eval, checkpoint) "
        "| batches fetched |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    med = {k: statistics.median(v) for k, v in steps.items()}
    for k, v in steps.items():
        lines.append(f"| {k} | {med[k]:.1f} | {min(v):.1f} | {max(v):.1f} | {len(v)} "
                     f"| {statistics.median(totals[k]):.2f} | {fetched[k]} |")
    lines.append("")
    if "before" in med:
        lines.append(f"before / after (median step): **{med['before'] / med['after']:.3f}x**")
    lines.append(f"mask enforcer cost (after vs after, no masks): {med['after'] - med['after, no masks']:+.1f} ms/step "
                 f"({100 * (med['after'] / med['after, no masks'] - 1):+.1f} %)")
    lines.append(f"loop overhead over the floor (after vs floor): {med['after'] - med['floor']:+.1f} ms/step "
                 f"({100 * (med['after'] / med['floor'] - 1):+.1f} %)")
    lines.append(f"mask enforcer work timed alone: {enforcer_work_ms(variants['after'][0], args):.2f} ms/step")
    lines.append("")
    if args.profile_steps:
        from torch.profiler import ProfilerActivity, profile

        prof_args = argparse.Namespace(**{**vars(args), "steps": args.profile_steps, "num_test": 256})
        for name in [k for k in variants if k in ("before", "after")]:
            pai, masked = variants[name]
            prof = profile(activities=[ProfilerActivity.CPU])
            run_once(pai, prof_args, masked, profiler=prof)
            lines += [f"## Profile, {name}: top ops by self CPU time", "",
                      f"One `train()` call: {args.profile_steps} steps of batch {args.batch_size} + evaluation "
                      "of 256 test images + checkpoint.", "", top_ops(prof, args.top), ""]
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
