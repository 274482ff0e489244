"""How noisy are the Hutchinson criteria? Their scores against the exact Gauss–Newton diagonal G (pai.pruning.
gauss_newton), which for these ReLU nets with eval-mode BN is the exact Hessian diagonal that H_d estimates.

    python benchmarks/curvature_noise.py --threads 1 --out docs/curvature-noise-tables.md

At initialisation (seed 0), with and without BN warmup, at T = 200 and T = 1, on the paper's scoring set (the
pipeline's class-balanced augmented draw, `scoring_samples`), for every configuration: the cosine, the relative
error ‖A − B‖/‖B‖ and the kept-set overlap |kept_A ∩ kept_B| / |kept_B| at sparsities 0.9 and 0.98 (global,
classifier not pruned, as the pipeline) of A against the truth B:

- HD with K probes per sample vs G (K = 10, the paper's budget, and 10x, 100x); HD with K probes is the mean of
  K/10 independent 10-probe runs (seeds 0, 1, ...), which is the same estimator with K probes per sample;
- fisher_mc (1 label per sample), fisher_diag (empirical Fisher) and SNIP vs G, all at the same T; SNIP
  (at that T) vs ggn_taylor, which shows how much the curvature term ½ θ² G changes the Taylor score;
- HP vs obd and HTS vs ggn_taylor at each budget; the fraction of negative HD entries (G ≥ 0);
- floors: HD (10 probes) seed 0 vs seed 1, and two random masks (overlap = 1 − sparsity in expectation).
Seconds are wall time of one call on this process's threads; passes are per-sample backward passes (HD:
Hessian-vector products, each about two backward passes).

BN warmup runs pai.pruning.warmup.bn_warmup on the first --warmup-batches training batches with BN momentum
None (a plain average of the batch statistics, so a subset leaves no trace of the initial statistics), for speed.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import platform
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pai.data import build_dataset  # noqa: E402
from pai.models.vgg import CFGS, VGG  # noqa: E402
from pai.pruning import make_masks, prunable_weights  # noqa: E402
from pai.pruning.criteria.base import Criterion  # noqa: E402
from pai.pruning.estimators import Objective, ggn_diagonal, gradient_moments, hutchinson, predictive  # noqa: E402  # noqa: E402
from pai.pruning.warmup import bn_warmup  # noqa: E402

CPU = torch.device("cpu")
SPARSITIES = (0.9, 0.98)
Scores = dict[str, Tensor]


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"data_root={ROOT / 'data'}", *overrides])


def narrow_vgg11(classes: int, in_channels: int, image_size: int, divisor: int = 8) -> VGG:
    """VGG-11-BN (pai.models.vgg) with every width / divisor (8/16/32/32/64/64/64/64 at 8): a CPU-sized VGG."""
    cfg = [v if v == "M" else int(v) // divisor for v in CFGS["vgg11"]]
    model = VGG(cfg, classes, in_channels, image_size)
    model.classifier = nn.Linear(512 // divisor, classes)
    return model


def setups(args) -> list[dict]:
    """(name, data config, model factory, samples per class, HD probe budgets) per network."""
    fm = compose_cfg("dataset=fashion_mnist", "model=resnet20", "model.width=0.5")
    syn = compose_cfg("dataset=synthetic", "model=resnet18", f"dataset.num_train={args.synthetic_train}")
    ds = fm.dataset
    out = [
        {"name": "resnet20x0.5 / fashion_mnist", "data": fm.dataset, "model": lambda: instantiate(fm.model),
         "per_class": 10, "probes": args.probes},
        {"name": "vgg11-bn/8 / fashion_mnist", "data": fm.dataset,
         "model": lambda: narrow_vgg11(ds.num_classes, ds.in_channels, ds.image_size),
         "per_class": 10, "probes": args.probes},
        {"name": "resnet18 / synthetic 32px", "data": syn.dataset, "model": lambda: instantiate(syn.model),
         "per_class": args.resnet18_per_class, "probes": args.resnet18_probes},
    ]
    return [s for s in out if s["name"].split(" ")[0] in args.models.split(",")]


class FirstBatches:
    """The first `n` BN-warmup batches of a dataset (bn_warmup only calls bn_warmup_batches)."""

    def __init__(self, data, n: int):
        self.data, self.n = data, n

    def bn_warmup_batches(self, batch_size: int, seed: int, device: torch.device, augment: bool = True):
        return itertools.islice(self.data.bn_warmup_batches(batch_size, seed, device, augment), self.n)


def warm_up(model: nn.Module, data, batches: int, batch_size: int) -> int:
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.momentum = None  # cumulative average: a subset leaves no trace of the initial running statistics
    try:
        return bn_warmup(model, FirstBatches(data, batches), CPU, seed=0, batch_size=batch_size)
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def flat(s: Scores, names: list[str]) -> Tensor:
    return torch.cat([s[n].flatten().double() for n in names])


def compare(a: Scores, b: Scores, names: list[str]) -> dict:
    """Cosine, ‖a − b‖/‖b‖ and kept-set overlaps of a against the truth b."""
    fa, fb = flat(a, names), flat(b, names)
    row = {"cos": float(fa @ fb / (fa.norm() * fb.norm())), "rel err": float((fa - fb).norm() / fb.norm())}
    for s in SPARSITIES:
        ma, mb = make_masks({n: a[n] for n in names}, s), make_masks({n: b[n] for n in names}, s)
        kept_b = sum(int(m.sum()) for m in mb.values())
        row[f"overlap@{s}"] = sum(int((ma[n] & mb[n]).sum()) for n in names) / kept_b
    return row


def zeros(s: Scores, names: list[str]) -> float:
    """Fraction of entries exactly 0 (weights that no scoring sample's loss reaches, e.g. behind dead ReLUs)."""
    return float((flat(s, names) == 0).double().mean())


def obd(theta: Scores, d: Scores) -> Scores:
    return {n: 0.5 * theta[n].square() * d[n] for n in d}


def taylor(theta: Scores, g: Scores, d: Scores) -> Scores:
    return {n: (theta[n] * g[n] + 0.5 * theta[n].square() * d[n]).abs() for n in d}


def measure(model: nn.Module, x: Tensor, y: Tensor, temperature: float, probes: list[int]) -> list[dict]:
    """Every comparison row of one (network, warmup, T)."""
    all_names = list(Criterion.weights(model))  # the criteria score the classifier too
    names = list(prunable_weights(model))  # the masks leave it alone (prune.prune_classifier: false)
    theta = {n: w.detach() for n, w in Criterion.weights(model).items()}
    n, c = x.shape[0], None
    kw = dict(temperature=temperature, batch_size=1)
    ggn, t_ggn = timed(ggn_diagonal, model, all_names, x, y, **kw)
    g, t_g = timed(lambda: gradient_moments(model, all_names, x, y, squares=False, **kw)[0])
    with torch.no_grad():
        c = predictive(Objective(model, all_names, temperature), x, 32).shape[1]
    truth = {"G": ggn, "OBD": obd(theta, ggn), "GGN-Taylor": taylor(theta, g, ggn)}
    rows = []

    def add(what: str, est: Scores, vs: str, seconds: float, passes: str, **extra) -> None:
        rows.append({"estimate": what, "truth": vs, **compare(est, truth[vs], names), **extra, "s": seconds,
                     "passes": passes})

    rows.append({"estimate": "G (exact)", "truth": "G", "cos": 1.0, "zeros": zeros(ggn, names), "s": t_ggn,
                 "passes": f"{n}x{c} bwd"})
    fmc, t = timed(ggn_diagonal, model, all_names, x, y, num_samples=1, seed=0, **kw)
    distinct = n  # one label per sample: one backward each
    add("fisher_mc (1 label)", fmc, "G", t, f"{distinct} bwd")
    fd, t = timed(lambda: gradient_moments(model, all_names, x, y, **kw)[1])
    add("fisher_diag (empirical)", fd, "G", t, f"{n} bwd")
    snip = {k: (theta[k] * g[k]).abs() for k in g}
    add("SNIP |θ g|", snip, "G", t_g, f"{n} bwd (1 batched)")
    add("SNIP |θ g| (no curvature)", snip, "GGN-Taylor", t_g, f"{n} bwd (1 batched)")  # how much ½θ²G adds
    # HD with K probes = mean of K/10 independent 10-probe runs
    runs, seconds = [], []
    for seed in range(max(probes) // 10):
        (_, h), t = timed(hutchinson, model, all_names, x, y, num_probes=10, seed=seed, chunk_size=2, **kw)
        runs.append(h)
        seconds.append(t)
    for k in probes:
        m = k // 10
        h = {key: sum(r[key] for r in runs[:m]) / m for key in runs[0]}
        neg = float((flat(h, names) < 0).double().mean())
        passes = f"{n}x{k} HVP"
        add(f"HD {k} probes", h, "G", sum(seconds[:m]), passes, **{"HD < 0": neg, "zeros": zeros(h, names)})
        add(f"HP {k} probes", obd(theta, h), "OBD", sum(seconds[:m]), passes)
        add(f"HTS {k} probes", taylor(theta, g, h), "GGN-Taylor", sum(seconds[:m]), passes)
    if len(runs) > 1:  # the floors
        rows.append({"estimate": "floor: HD 10 probes seed 0", "truth": "HD 10 probes seed 1",
                     **compare(runs[0], runs[1], names), "s": seconds[1], "passes": f"{n}x10 HVP"})
    gen = torch.Generator().manual_seed(0)
    rand = [{k: torch.rand(theta[k].shape, generator=gen) for k in names} for _ in range(2)]
    r = compare(rand[0], rand[1], names)
    rows.append({"estimate": "floor: random mask", "truth": "random mask", "cos": None, "rel err": None,
                 **{k: v for k, v in r.items() if k.startswith("overlap")}, "s": 0.0, "passes": "0"})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20x0.5,vgg11-bn/8,resnet18")
    ap.add_argument("--temperatures", default="200,1")
    ap.add_argument("--warmup", default="false,true")
    ap.add_argument("--probes", default="10,100", help="HD probe budgets per sample (multiples of 10)")
    ap.add_argument("--resnet18-probes", default="10,20", help="ResNet-18's budgets (HVPs are slow on a CPU)")
    ap.add_argument("--resnet18-per-class", type=int, default=1, help="ResNet-18's scoring samples per class")
    ap.add_argument("--synthetic-train", type=int, default=1000)
    ap.add_argument("--warmup-batches", type=int, default=8)
    ap.add_argument("--warmup-batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="write the markdown tables here")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = ap.parse_args()
    args.probes = [int(k) for k in args.probes.split(",")]
    args.resnet18_probes = [int(k) for k in args.resnet18_probes.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    rows = []
    for setup in setups(args):
        data = build_dataset(setup["data"])
        x, y = data.scoring_samples(setup["per_class"], 0, CPU, True)  # the pipeline's draw, seed 0
        for warm in (w == "true" for w in args.warmup.split(",")):
            torch.manual_seed(0)  # the same initialisation with and without warmup
            model = setup["model"]().eval()
            t_warm = 0.0
            if warm:
                _, t_warm = timed(warm_up, model, data, args.warmup_batches, args.warmup_batch_size)
            for temperature in (float(t) for t in args.temperatures.split(",")):
                t0 = time.perf_counter()
                for r in measure(model, x, y, temperature, setup["probes"]):
                    rows.append({"network": setup["name"], "N": x.shape[0], "BN warmup": warm, "T": temperature,
                                 **r})
                print(f"{setup['name']} warmup={warm} (+{t_warm:.1f}s) T={temperature}: "
                      f"{time.perf_counter() - t0:.1f}s", flush=True)
    total = time.perf_counter() - t_start
    frame = pd.DataFrame(rows)
    cols = ["network", "N", "BN warmup", "T", "estimate", "truth", "cos", "rel err", "overlap@0.9", "overlap@0.98",
            "HD < 0", "zeros", "s", "passes"]
    frame = frame.reindex(columns=cols)
    with contextlib.suppress(Exception):
        frame["T"] = frame["T"].map(lambda t: f"{t:g}")
    parts = [f"# Curvature noise: Hutchinson estimates vs the exact Gauss–Newton diagonal\n\n"
             f"`python benchmarks/curvature_noise.py {' '.join(sys.argv[1:])}` — {total:.0f} s on "
             f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)\n"]
    for (net, warm, temp), part in frame.groupby(["network", "BN warmup", "T"], sort=False):
        parts.append(f"\n## {net}, N = {part['N'].iloc[0]}, BN warmup {'on' if warm else 'off'}, T = {temp}\n\n"
                     + part.drop(columns=["network", "N", "BN warmup", "T"]).to_markdown(index=False, floatfmt=".3g"))
    text = "\n".join(parts) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    print(f"total {total:.0f} s", flush=True)


if __name__ == "__main__":
    main()
