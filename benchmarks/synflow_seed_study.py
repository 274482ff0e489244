"""SynFlow vs the reference code's inverted schedule (`pruner=synflow_seed`), trained: the table of
docs/results/fashion_mnist/synflow_seed.md from the runs of `make synflow-seed`.

    python benchmarks/synflow_seed_study.py outputs/synflow_seed/runs --out docs/results/fashion_mnist

Per (criterion, sparsity): final test accuracy, mean with a 95 % t-interval over seeds (scipy.stats), collapsed
layers per run, and the best test accuracy over epochs (what selecting the checkpoint on the test set, as the
reference code's "best validation" does, would report). Per sparsity: a paired t-test by seed of synflow vs
synflow_seed. Writes synflow_seed_runs.csv (one row per run) and synflow_seed_table.md under --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from scipy import stats

PRUNERS = ("synflow", "synflow_seed")


def load_runs(runs_dir: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(runs_dir.rglob("results.json")):
        r = json.loads(path.read_text())
        if r.get("status") != "done" or r.get("pruner") not in PRUNERS or r.get("bn_warmup"):
            continue
        rows.append({
            "pruner": r["pruner"], "sparsity": float(r["sparsity"]), "seed": int(r["seed"]),
            "test_acc": round(100 * r["test_acc"], 2),
            "best_epoch_test_acc": round(100 * max(h["test_acc"] for h in r["history"]), 2),
            "collapsed_layers": len(r["collapsed_layers"]), "layers": len(r["layer_density"]),
            "collapsed": " ".join(n.removesuffix(".weight") for n in r["collapsed_layers"]),
            "sparsity_achieved": r["sparsity_achieved"], "run": r["run_name"],
        })
    if not rows:
        raise SystemExit(f"no finished synflow / synflow_seed runs under {runs_dir}")
    return pd.DataFrame(rows).sort_values(["pruner", "sparsity", "seed"], ignore_index=True)


def interval(values: pd.Series) -> tuple[float, float, float]:
    """Mean and 95 % t-interval (a zero-width interval when every value is equal)."""
    mean, n = float(values.mean()), len(values)
    sem = float(values.sem()) if n > 1 else float("nan")
    if n < 2 or sem == 0:
        return mean, mean, mean
    lo, hi = stats.t.interval(0.95, n - 1, loc=mean, scale=sem)
    return mean, float(lo), float(hi)


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (pruner, sparsity), g in runs.groupby(["pruner", "sparsity"]):
        mean, lo, hi = interval(g["test_acc"])
        best, best_lo, best_hi = interval(g["best_epoch_test_acc"])
        rows.append({
            "criterion": pruner, "sparsity": sparsity, "n": len(g), "seeds": " ".join(map(str, g["seed"])),
            "test acc % (95 % CI)": f"{mean:.2f} [{lo:.2f}, {hi:.2f}]",
            "collapsed layers of 21, per seed": " ".join(str(c) for c in g["collapsed_layers"]),
            "best-epoch test acc % (95 % CI)": f"{best:.2f} [{best_lo:.2f}, {best_hi:.2f}]",
        })
    return pd.DataFrame(rows)


def paired(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for sparsity, g in runs.groupby("sparsity"):
        wide = g.pivot(index="seed", columns="pruner", values="test_acc").dropna()
        if not set(PRUNERS) <= set(wide.columns) or len(wide) < 2:
            continue
        diff = wide["synflow"] - wide["synflow_seed"]
        mean, lo, hi = interval(diff)
        test = stats.ttest_rel(wide["synflow"], wide["synflow_seed"])
        rows.append({"sparsity": sparsity, "paired seeds": len(wide),
                     "synflow − synflow_seed, points (95 % CI)": f"{mean:.2f} [{lo:.2f}, {hi:.2f}]",
                     "t": round(float(test.statistic), 2), "p (paired t-test)": f"{test.pvalue:.2g}"})
    return pd.DataFrame(rows)


def selection_gap(runs: pd.DataFrame) -> pd.DataFrame:
    """What picking the epoch on the test set adds: best-epoch minus final test accuracy, per criterion."""
    rows = []
    for pruner, g in runs.groupby("pruner"):
        gap = g["best_epoch_test_acc"] - g["test_acc"]
        mean, lo, hi = interval(gap)
        rows.append({"criterion": pruner, "runs": len(g), "earlier epoch better": int((gap > 0).sum()),
                     "best-epoch − final test acc, points (95 % CI)": f"{mean:.2f} [{lo:.2f}, {hi:.2f}]"})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, help="a runs directory (…/runs)")
    ap.add_argument("--out", type=Path, default=None, help="write synflow_seed_runs.csv and synflow_seed_table.md")
    args = ap.parse_args()
    runs = load_runs(args.runs)
    text = "\n\n".join([
        summary(runs).to_markdown(index=False),
        paired(runs).to_markdown(index=False),
        selection_gap(runs).to_markdown(index=False),
    ])
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        runs.to_csv(args.out / "synflow_seed_runs.csv", index=False)
        (args.out / "synflow_seed_table.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
