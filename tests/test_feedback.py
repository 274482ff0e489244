"""Live feedback: progress bars over scoring groups, SynFlow rounds and the BN-warmup pass on a terminal only; the
accuracy table at the end of a sweep; a sweep preset without -m refused in one line."""

from __future__ import annotations

import io
import statistics
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, launch_env
from test_criteria_common import SmallNet, one_thread  # noqa: F401 (autouse fixture)

from pai.callbacks import accuracy_table
from pai.data.synthetic import build_synthetic
from pai.pruning.criteria.first_order import SNIP
from pai.pruning.criteria.hutchinson import HutchDiag
from pai.pruning.criteria.synflow import SynFlow
from pai.pruning.masks import prunable_weights
from pai.pruning.pipeline import prune_masks
from pai.pruning.warmup import bn_warmup

CPU = torch.device("cpu")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _pruning_steps() -> None:
    torch.manual_seed(0)
    net = SmallNet()
    data = build_synthetic(num_classes=4, image_size=6, num_train=40, num_test=8)
    bn_warmup(net, data, CPU, seed=0, batch_size=8)
    x, y = data.scoring_samples(2, 0, CPU, augment=False)
    names = list(prunable_weights(net, prune_classifier=True))
    prune_masks(SynFlow(), net, x, y, names, 0.5, rounds=3)
    prune_masks(SNIP(), net, x, y, names, 0.5)
    prune_masks(HutchDiag(num_probes=2), net, x, y, names, 0.5)


@pytest.mark.parametrize("tty", [True, False])
def test_bars_on_a_terminal_only(monkeypatch, tty):
    err = Terminal() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    _pruning_steps()
    text = err.getvalue()
    if tty:
        for bar in ("BN warmup", "synflow rounds", "scoring"):
            assert bar in text, text
        assert "/5 [" in text and "/3 [" in text  # 40 samples in batches of 8; 3 rounds
        assert "group" in text  # the scoring bars count sample groups
    else:
        assert text == ""  # nothing in logs


def test_sweep_accuracy_table_mean_std_n():
    recs = [{"run_dir": f"r{c}{s}{seed}", "status": "done", "criterion": c, "pruner": c, "sparsity": s,
             "test_acc": acc}
            for c, s, seed, acc in [("snip", 0.9, 0, 0.81), ("snip", 0.9, 1, 0.83), ("snip", 0.9, 2, 0.86),
                                    ("fts", 0.9, 0, 0.7), ("snip", 0.5, 0, 0.9)]]
    recs += [{"run_dir": "dense", "status": "done", "criterion": "none", "pruner": "none", "sparsity": 0.9,
              "test_acc": 0.95},
             {"run_dir": "dense", "status": "skipped", "criterion": "none", "pruner": "none", "sparsity": 0.5,
              "test_acc": 0.95},  # the same run again: counted once
             {"run_dir": "x", "status": "failed", "criterion": "fts", "pruner": "fts", "sparsity": 0.5,
              "test_acc": None}]
    lines = accuracy_table(recs)
    header, rows = lines[1].split(), {ln.split()[0]: ln for ln in lines[3:]}
    assert header[-3:] == ["dense", "0.5", "0.9"] and list(rows) == ["none", "snip", "fts"]
    accs = [81.0, 83.0, 86.0]
    assert f"{statistics.mean(accs):.2f} ± {statistics.stdev(accs):.2f} (3)" in rows["snip"]
    assert "95.00 (1)" in rows["none"] and "90.00 (1)" in rows["snip"] and "70.00 (1)" in rows["fts"]
    assert accuracy_table([r for r in recs if r["status"] == "failed"]) == []


@pytest.mark.parametrize("args, refused", [
    (["experiment=demo"], True),
    (["experiment=demo", "pruner=random"], False),  # every swept key fixed: one explicit point
])
def test_sweep_preset_without_m_fails_in_one_line(tmp_path, args, refused):
    cmd = [sys.executable, str(REPO_ROOT / "launch.py"), *args, f"out_root={tmp_path}", "train.epochs=1",
           "train.steps_per_epoch=1", "model.width=0.25", f"hydra.run.dir={tmp_path}/hydra"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=launch_env(tmp_path), capture_output=True, text=True,
                          timeout=300)
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "error:" in ln]
    if refused:
        assert proc.returncode == 2 and len(errors) == 1, proc.stdout + proc.stderr
        assert "experiment=demo is a sweep over pruner" in errors[0] and "add -m" in errors[0]
        assert not (tmp_path / "runs").exists()  # nothing trained
    else:
        assert proc.returncode == 0 and not errors, proc.stdout + proc.stderr
        assert len(list((tmp_path / "runs").rglob("results.json"))) == 1
