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
import contextlib
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
DATA, EVAL, CKPT = "pai: produce a training batch", "pai: evaluate", "pai: checkpoint"
OPT = "Optimizer.step#SGD.step"  # torch labels every optimizer step (post-step hooks included)
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
            masks=importlib.import_module("pai.pruning"),  # make_masks, prunable_weights, MaskEnforcer
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
    """An ImageData wrapper that stamps (wall clock, process CPU time) whenever the loop receives a training
    batch, and labels the production of each batch in a profile."""

    def __init__(self, data) -> None:
        self.data = data
        self.stamps: list[tuple[float, float]] = []

    def __getattr__(self, name: str):
        return getattr(self.data, name)

    def train_batches(self, *args, **kwargs):
        it = iter(self.data.train_batches(*args, **kwargs))
        while True:
            with torch.profiler.record_function(DATA):
                batch = next(it, None)
            if batch is None:
                return
            self.stamps.append((time.perf_counter(), time.process_time()))
            yield batch


def labelled(label: str, fn):
    @functools.wraps(fn)
    def inner(*args, **kwargs):
        with torch.profiler.record_function(label):
            return fn(*args, **kwargs)

    return inner


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
    saved = pai.loop.evaluate, pai.loop.save_checkpoint
    with tempfile.TemporaryDirectory() as tmp, profiler or contextlib.nullcontext():
        if profiler is not None:  # label the per-epoch work in the loop's own namespace, for this run only
            pai.loop.evaluate, pai.loop.save_checkpoint = labelled(EVAL, saved[0]), labelled(CKPT, saved[1])
        try:
            t0 = time.perf_counter()
            pai.loop.train(model, stamped, recipe, torch.device("cpu"), 0, masks, Path(tmp) / "last.pt")
            total = time.perf_counter() - t0
        finally:
            pai.loop.evaluate, pai.loop.save_checkpoint = saved
    stamps = stamped.stamps[: args.steps]  # a loop may fetch one batch more than it trains on
    wall = [1e3 * (b[0] - a[0]) for a, b in zip(stamps, stamps[1:], strict=False)][args.warmup :]
    cpu = [1e3 * (b[1] - a[1]) for a, b in zip(stamps, stamps[1:], strict=False)][args.warmup :]
    return {"wall": wall, "cpu": cpu, "total_s": total, "fetched": len(stamped.stamps)}


def run_floor(pai: SimpleNamespace, args: argparse.Namespace) -> dict:
    """The floor: forward, backward and SGD step of the same model on one fixed batch, no data pipeline, no
    masks, no bookkeeping. The loop's step minus this is everything the loop adds."""
    data, model, _, recipe = make_setup(pai, args, masked=False)
    x, y = next(data.train_batches(args.batch_size, 0, 0, torch.device("cpu")))
    opt = recipe.optimizer(model.parameters())
    loss_fn = torch.nn.CrossEntropyLoss()
    wall, cpu = [], []
    for _ in range(args.steps - 1):
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
        wall.append(1e3 * (time.perf_counter() - t0))
        cpu.append(1e3 * (time.process_time() - c0))
    return {"wall": wall[args.warmup :], "cpu": cpu[args.warmup :], "total_s": sum(wall) / 1e3, "fetched": 1}


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


def data_alone_ms(pai: SimpleNamespace, data, args: argparse.Namespace, batches: int = 40) -> float:
    """CPU ms per training batch of `data.train_batches` alone (mid-epoch batches: the epoch plan excluded)."""
    it = data.train_batches(args.batch_size, 0, 0, torch.device("cpu"))
    next(it)
    c0 = time.process_time()
    for _ in range(batches):
        next(it)
    return 1e3 * (time.process_time() - c0) / batches


def top_ops(prof, n: int) -> str:
    rows = ["| op | self CPU ms | % | calls |", "|---|---:|---:|---:|"]
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    for e in events[:n]:
        rows.append(f"| `{e.key}` | {e.self_cpu_time_total / 1e3:.1f} | {100 * e.self_cpu_time_total / total:.1f} "
                    f"| {e.count} |")
    return "\n".join(rows)


def breakdown(prof, steps: int) -> tuple[dict[str, float], float]:
    """Per-step CPU ms of the labelled parts of a profiled train() call, and the unlabelled rest."""
    by_key = {e.key: e for e in prof.key_averages()}
    total = sum(e.self_cpu_time_total for e in by_key.values()) / 1e3
    parts = {}
    for label in (DATA, OPT, "Optimizer.zero_grad#SGD.zero_grad", EVAL, CKPT):
        e = by_key.get(label)
        parts[label] = (e.cpu_time_total / 1e3 if e is not None else 0.0) / steps
    return parts, total / steps


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
    ap.add_argument("--threads", type=int, default=1,
                    help="torch.set_num_threads; 1 (default) makes process CPU time a fair measure on a shared CPU")
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
    res_all: dict[str, list[dict]] = {k: [] for k in variants}
    for r in range(args.rounds):
        names = list(variants) if r % 2 == 0 else list(reversed(variants))  # alternate who runs first
        for name in names:
            pai, masked = variants[name]
            res = run_floor(pai, args) if masked is None else run_once(pai, args, masked)
            res_all[name].append(res)
            print(f"round {r + 1} {name:16s} CPU {statistics.median(res['cpu']):7.1f} ms/step  "
                  f"wall {statistics.median(res['wall']):7.1f} ms/step  train() {res['total_s']:.2f} s", flush=True)

    def med(name: str, key: str) -> float:
        return statistics.median([v for res in res_all[name] for v in res[key]])

    timed = args.steps - args.warmup - 1
    lines = [
        "# One CPU training step of ResNet-20 through `pai.train.loop.train`",
        "",
        f"Command: `python benchmarks/profile_step.py {' '.join(sys.argv[1:])}`",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s), {os.cpu_count()} CPUs shared "
        f"with other jobs (load average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}); "
        f"batch {args.batch_size}, CIFAR-shaped synthetic data ({args.num_train} train / {args.num_test} test), "
        f"SGD lr 0.03 momentum 0.9 wd 5e-4, {args.sparsity:.0%} random global masks (so the mask enforcer runs), "
        f"fp32, contiguous. {args.rounds} rounds x {timed} timed steps per variant, variants interleaved "
        "(order alternating). A step = the gap between two batches reaching the loop.",
        "",
        "CPU ms = process CPU time (one thread: the work done, whatever share of the cores the job got); "
        "wall ms depends on the load of the moment and is shown for completeness.",
        "",
        "| variant | median CPU ms/step | median wall ms/step | steps | median train() s | batches fetched |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for k, rs in res_all.items():
        lines.append(f"| {k} | {med(k, 'cpu'):.1f} | {med(k, 'wall'):.1f} | {sum(len(r['cpu']) for r in rs)} "
                     f"| {statistics.median(r['total_s'] for r in rs):.2f} | {rs[-1]['fetched']} |")
    lines.append("")
    lines.append("`floor` = forward + backward + SGD step of the same model on one fixed batch: no data pipeline, "
                 "no masks, no bookkeeping.")
    lines.append("")
    if "before" in res_all:
        paired = [statistics.median(b["cpu"]) / statistics.median(a["cpu"])
                  for b, a in zip(res_all["before"], res_all["after"], strict=True)]
        lines.append(f"- before / after, CPU time per step: **{med('before', 'cpu') / med('after', 'cpu'):.3f}x** "
                     f"(per round: {', '.join(f'{x:.3f}' for x in paired)})")
    if "before" in res_all:
        sets = {k: variants[k][0].synthetic.build_synthetic(num_train=args.num_train, num_test=10)
                for k in ("before", "after")}
        alone: dict[str, list[float]] = {"before": [], "after": []}
        for r in range(2 * args.rounds):
            for k in (("before", "after") if r % 2 == 0 else ("after", "before")):
                alone[k].append(data_alone_ms(variants[k][0], sets[k], args))
        b, a = statistics.median(alone["before"]), statistics.median(alone["after"])
        lines.append(f"- data path alone (`train_batches`, batch {args.batch_size}, CPU ms per batch, median of "
                     f"{2 * args.rounds} interleaved runs of 40 batches): before {b:.2f}, after {a:.2f} "
                     f"(**{b / a:.1f}x**)")
    lines.append(f"- loop overhead over the floor (after vs floor): {med('after', 'cpu') - med('floor', 'cpu'):+.1f} "
                 f"CPU ms/step ({100 * (med('after', 'cpu') / med('floor', 'cpu') - 1):+.1f} %)")
    lines.append(f"- mask enforcer, whole-step difference (after vs after, no masks): "
                 f"{med('after', 'cpu') - med('after, no masks', 'cpu'):+.1f} CPU ms/step")
    lines.append(f"- mask enforcer work timed alone (grad multiplies + post-step re-multiply): "
                 f"{enforcer_work_ms(variants['after'][0], args):.2f} ms/step")
    lines.append("")
    if args.profile_steps:
        from torch.profiler import ProfilerActivity, profile

        prof_args = argparse.Namespace(**{**vars(args), "steps": args.profile_steps, "num_test": 256})
        profiled = [k for k in variants if k in ("before", "after")]
        tables, parts = {}, {}
        for name in profiled:
            pai, masked = variants[name]
            prof = profile(activities=[ProfilerActivity.CPU])
            run_once(pai, prof_args, masked, profiler=prof)
            tables[name] = top_ops(prof, args.top)
            parts[name] = breakdown(prof, args.profile_steps)
        lines += [
            f"## Where a step goes (torch.profiler, one `train()` call of {args.profile_steps} steps + evaluation "
            "of 256 test images + checkpoint; CPU ms per step)",
            "",
            "| part | " + " | ".join(profiled) + " |",
            "|---|" + "---:|" * len(profiled),
        ]
        for label in parts[profiled[0]][0]:
            lines.append(f"| `{label}` | " + " | ".join(f"{parts[n][0][label]:.2f}" for n in profiled) + " |")
        lines.append("| model forward + backward, loss, bookkeeping (the rest) | " + " | ".join(
            f"{parts[n][1] - sum(parts[n][0].values()):.1f}" for n in profiled) + " |")
        lines.append("| all | " + " | ".join(f"{parts[n][1]:.1f}" for n in profiled) + " |")
        lines.append("")
        for name in profiled:
            lines += [f"## Top ops by self CPU time, {name}", "", tables[name], ""]
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
