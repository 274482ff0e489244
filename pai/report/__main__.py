"""CLI: `python -m pai.report RUNS_DIR ...` (see `pai.report` for the options and outputs)."""

from __future__ import annotations

import argparse
import os
import sys

from pai.report.build import build_report
from pai.report.load import ReportError
from pai.report.stats import ALPHA

PROG = "python -m pai.report"


def _sparsity(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1)")
    return value


def _alpha(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1)")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description="Tables and plots from a directory of pai runs.")
    p.add_argument("runs_dir", metavar="RUNS_DIR", help="directory searched recursively for results.json, or the "
                   "runs.csv of an earlier report (rebuilds its tables and plots, but not the density plots)")
    p.add_argument("--out", default=None, help="output directory (default: RUNS_DIR/report)")
    p.add_argument("--sparsity", type=_sparsity, default=None,
                   help="sparsity of the per-layer density plot (default: the highest one present)")
    p.add_argument("--baseline", default="random",
                   help="row every criterion is compared with, paired by seed (default: random)")
    p.add_argument("--alpha", type=_alpha, default=ALPHA,
                   help=f"significance level after Holm's correction (default: {ALPHA:g})")
    p.add_argument("--only", action="append", default=None, metavar="COLUMN=V1,V2",
                   help="keep only the runs whose COLUMN (a runs.csv column) is one of the values; repeatable "
                        "(e.g. --only bn_warmup=false --only sparsity=0.9,0.98 --only label=)")
    p.add_argument("--wandb", action="store_true", help="also log tables and plots to one W&B run")
    p.add_argument("--wandb-report", action="store_true",
                   help="--wandb, then build the W&B Report comparing the sweep (saved when online with an API "
                        "key, else its spec is written to OUT/wandb_report.json)")
    p.add_argument("--wandb-mode", choices=["offline", "online"], default=None,
                   help="W&B mode (default: $WANDB_MODE, else offline)")
    p.add_argument("--project", default="pai", help="W&B project (default: pai)")
    p.add_argument("--entity", default=None, help="W&B entity (default: WANDB_ENTITY, else the account's)")
    p.add_argument("--group", default=None, help="W&B group (default: the runs' wandb_group)")
    p.add_argument("--wandb-dir", default=None,
                   help="where the report's W&B run goes (default: $WANDB_DIR, else the runs' out_root; for a "
                        "runs.csv outside a `runs` folder, the --out folder)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = build_report(args.runs_dir, args.out, args.sparsity, args.baseline, args.alpha, args.only)
    except ReportError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. an unwritable --out
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    print(report["markdown"])
    for note in report["notes"]:
        print(f"{PROG}: warning: {note}", file=sys.stderr)
    print(f"{PROG}: wrote {report['out_dir']}", file=sys.stderr)
    if args.wandb or args.wandb_report:
        from pai.report.wandb_export import log_report

        entity = args.entity or os.environ.get("WANDB_ENTITY")
        try:
            logged = log_report(report, project=args.project, group=args.group, mode=args.wandb_mode,
                                entity=entity, wandb_dir=args.wandb_dir)
        except OSError as exc:  # e.g. a --wandb-dir / WANDB_DIR that is a file
            print(f"{PROG}: error: W&B dir: {exc} (set --wandb-dir or WANDB_DIR to a folder)", file=sys.stderr)
            return 2
        print(f"{PROG}: W&B run in {logged.dir}", file=sys.stderr)
        if args.wandb_report:
            from pai.report import wandb_report

            try:
                spec = wandb_report.build(report, logged, project=args.project, entity=entity,
                                          groups=[args.group] if args.group else None)
            except ValueError as exc:
                print(f"{PROG}: error: {exc}", file=sys.stderr)
                return 2
            for line in wandb_report.panel_summary(spec):
                print(f"{PROG}: report panel grid {line}", file=sys.stderr)
            spec_path, url = wandb_report.save_or_write(spec, report["out_dir"], args.wandb_mode)
            print(f"{PROG}: W&B report spec in {spec_path}", file=sys.stderr)
            if url:
                print(f"{PROG}: W&B report saved: {url}", file=sys.stderr)
            else:
                print(f"{PROG}: {wandb_report.publish_hint(spec_path, logged)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
