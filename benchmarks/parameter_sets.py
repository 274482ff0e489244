"""How much the parameter set of the Hessian products (`pruner.hessian_params`) changes GraSP and HD masks.

    OMP_NUM_THREADS=1 python benchmarks/parameter_sets.py --threads 1 --out /tmp/parameter-sets.md

The validation net at initialisation (ResNet-20 x0.5, seed 0, no BN warmup) on the pipeline's scoring set of
Fashion-MNIST (10 samples per class, augmented, seed 0, batch 1), masks over the prunable weights (global,
classifier not pruned, pai's kept count); overlap = |kept_A ∩ kept_B| / |kept_B| at sparsity 0.9 and 0.98.

- GraSP at T = 1 and T = 200, in both directions (keep the largest θ ⊙ Hg: `grasp`; keep the largest
  −θ ⊙ Hg: `grasp_reference`), each set against `all`; and every set against the reference code's procedure
  re-derived with module autograd (g summed over batch-1 losses of every parameter with requires_grad, then
  H g by one double backward per sample, keep the largest −θ ⊙ Hg, T = 1): the set that reproduces it
  overlaps 1.
- HD (10 probes per sample, probe seeds 0..S-1) at T = 200 (the paper's) and T = 1, at each set: cosine and
  relative error ‖HD − G‖/‖G‖ against the exact diagonal G (`ggn_diag`, the exact Hessian diagonal of these
  ReLU nets with eval-mode BN), the fraction of negative entries (G ≥ 0), the kept-set overlap with G, and each
  set against `all` with the same seed, beside the seed floor (`all` seed s vs seed s+1). Means over seeds
  ± the half-width of their 95 % t confidence interval.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import pandas as pd
import scipy.stats
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pai.data import build_dataset  # noqa: E402
from pai.pruning import make_masks, prunable_weights  # noqa: E402
from pai.pruning.criteria.base import HESSIAN_PARAMS, Criterion  # noqa: E402
from pai.pruning.criteria.gauss_newton import GGNDiag  # noqa: E402
from pai.pruning.criteria.grasp import GraSP  # noqa: E402
from pai.pruning.criteria.hutchinson import HutchDiag  # noqa: E402

CPU = torch.device("cpu")
SPARSITIES = (0.9, 0.98)
Scores = dict[str, Tensor]


def flat(s: Scores, names: list[str]) -> Tensor:
    return torch.cat([s[n].flatten().double() for n in names])


def overlap(a: Scores, b: Scores, names: list[str]) -> dict[str, float]:
    out = {}
    for s in SPARSITIES:
        ma, mb = make_masks({n: a[n] for n in names}, s), make_masks({n: b[n] for n in names}, s)
        out[f"overlap@{s}"] = sum(int((ma[n] & mb[n]).sum()) for n in names) / sum(int(m.sum()) for m in mb.values())
    return out


def negate(s: Scores) -> Scores:
    return {n: -v for n, v in s.items()}


def reference_procedure_grasp(model: nn.Module, x: Tensor, y: Tensor) -> Scores:
    """The reference code's GraSP, re-derived with module autograd: −θ ⊙ (Σ_i H_i)(Σ_i g_i) over every parameter
    with requires_grad, T = 1, one sample per batch (a positive multiple of −θ ⊙ H g of the mean loss)."""
    params = dict((n, p) for n, p in model.named_parameters() if p.requires_grad)
    model.eval()
    g = [torch.zeros_like(p) for p in params.values()]
    for i in range(x.shape[0]):
        for acc, gi in zip(g, torch.autograd.grad(F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]),
                                                  list(params.values())), strict=True):
            acc += gi
    hg = [torch.zeros_like(p) for p in params.values()]
    for i in range(x.shape[0]):
        gi = torch.autograd.grad(F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), list(params.values()),
                                 create_graph=True)
        dot = sum((a * b).sum() for a, b in zip(gi, g, strict=True))
        for acc, h in zip(hg, torch.autograd.grad(dot, list(params.values())), strict=True):
            acc += h
    return {n: -(p.detach() * h) for (n, p), h in zip(params.items(), hg, strict=True)}


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def grasp_rows(model: nn.Module, x: Tensor, y: Tensor, names: list[str]) -> list[dict]:
    rows = []
    reference, t_ref = timed(reference_procedure_grasp, model, x, y)
    for temperature in (1.0, 200.0):
        keep_hg = {}  # keep score θ ⊙ Hg per set
        for which in HESSIAN_PARAMS:
            keep_hg[which], t = timed(GraSP(temperature, hessian_params=which).score, model, x, y)
            print(f"GraSP T={temperature:g} {which}: {t:.1f}s", flush=True)
        for direction, sign in (("keep θ⊙Hg (grasp)", 1), ("keep −θ⊙Hg (grasp_reference)", -1)):
            for which in HESSIAN_PARAMS:
                mine = keep_hg[which] if sign > 0 else negate(keep_hg[which])
                vs_all = keep_hg["all"] if sign > 0 else negate(keep_hg["all"])
                row = {"T": temperature, "direction": direction, "set": which,
                       **{f"vs all {k}": v for k, v in overlap(mine, vs_all, names).items()}}
                if temperature == 1.0 and sign < 0:
                    row |= {f"vs reference code {k}": v for k, v in overlap(mine, reference, names).items()}
                rows.append(row)
    print(f"reference procedure: {t_ref:.1f}s", flush=True)
    return rows


def hd_rows(model: nn.Module, x: Tensor, y: Tensor, names: list[str], seeds: int) -> list[dict]:
    rows = []
    for temperature in (200.0, 1.0):
        g = GGNDiag(temperature).score(model, x, y)
        fg = flat(g, names)
        hd = {}
        for which in HESSIAN_PARAMS:
            for seed in range(seeds + (which == "all")):  # one more `all` seed for the floor
                hd[which, seed], t = timed(HutchDiag(temperature, num_probes=10, seed=seed,
                                                     hessian_params=which).score, model, x, y)
                print(f"HD T={temperature:g} {which} seed {seed}: {t:.1f}s", flush=True)
        for which in HESSIAN_PARAMS:
            for seed in range(seeds):
                h = hd[which, seed]
                fh = flat(h, names)
                row = {"T": temperature, "set": which, "seed": seed,
                       "cos with G": float(fh @ fg / (fh.norm() * fg.norm())),
                       "rel err": float((fh - fg).norm() / fg.norm()), "HD < 0": float((fh < 0).double().mean()),
                       **{f"with G {k}": v for k, v in overlap(h, g, names).items()},
                       **{f"vs all {k}": v for k, v in overlap(h, hd["all", seed], names).items()},
                       **{f"floor {k}": v for k, v in overlap(hd["all", seed + 1], hd["all", seed], names).items()}}
                rows.append(row)
    return rows


def summarize(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean over seeds ± the half-width of its 95 % t confidence interval."""
    values = [c for c in frame.columns if c not in keys + ["seed"]]
    groups = frame.groupby(keys, sort=False)[values]
    mean, sem, n = groups.mean(), groups.sem(), groups.count()
    half = sem * scipy.stats.t.ppf(0.975, n - 1)
    out = mean.copy().astype(object)
    for c in values:
        out[c] = [f"{m:.3g} ± {h:.2g}" for m, h in zip(mean[c], half[c], strict=True)]
    return out.reset_index()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3, help="HD probe seeds per set")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="write the markdown tables here")
    ap.add_argument("--json", default=None, help="also write every row (HD: per seed) as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start, cpu_start = time.perf_counter(), time.process_time()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"data_root={ROOT / 'data'}", "dataset=fashion_mnist", "model=resnet20",
                                           "model.width=0.5"])
    x, y = build_dataset(cfg.dataset).scoring_samples(10, 0, CPU, True)  # the pipeline's draw, seed 0
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    names = list(prunable_weights(model))  # masks: classifier not pruned
    assert set(names) < set(Criterion.weights(model))
    grasp = pd.DataFrame(grasp_rows(model, x, y, names))
    hd_seeds = pd.DataFrame(hd_rows(model, x, y, names, args.seeds))
    hd = summarize(hd_seeds, ["T", "set"])
    total, cpu = time.perf_counter() - t_start, time.process_time() - cpu_start
    text = (f"`python benchmarks/parameter_sets.py {' '.join(sys.argv[1:])}` — {total:.0f} s wall, {cpu:.0f} s CPU on "
            f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s); ResNet-20 x0.5 "
            f"at init, N = {x.shape[0]}, {sum(model.get_parameter(n).numel() for n in names)} prunable weights\n\n"
            "### GraSP: kept-set overlap with the `all` set and with the reference code's procedure\n\n"
            + grasp.to_markdown(index=False, floatfmt=".3g")
            + f"\n\n### HD (10 probes per sample): mean ± 95 % CI half-width over probe seeds 0..{args.seeds - 1}\n\n"
            + hd.to_markdown(index=False) + "\n")
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"grasp": grasp.to_dict("records"),
                                               "hd": hd_seeds.to_dict("records")}, indent=1))
    print(f"total {total:.0f} s", flush=True)


if __name__ == "__main__":
    main()
