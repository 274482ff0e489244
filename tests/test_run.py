"""The pipeline end to end on embedded data: results, skipping, reproducibility, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from pai.results import SCHEMA_VERSION, RunResult
from pai.run import run

ROOT = Path(__file__).resolve().parents[1]


def make_cfg(out_root: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[
            "dataset=digits", "model=resnet20", "model.width=0.5", "train=quick", "train.epochs=2",
            "logger=none", f"out_root={out_root}", *overrides,
        ])


def test_run_writes_results_and_reproduces(tmp_path):
    res = run(make_cfg(tmp_path / "a", "pruner=magnitude", "sparsity=0.8"))
    assert res["status"] == "done"
    saved = RunResult.from_dict(json.loads(Path(res["run_dir"], "results.json").read_text()))  # fits the schema
    assert saved.extra == {}, "every key a run writes is a RunResult field (and so in the README's table)"
    assert saved.to_dict() == res and 0 <= res["test_acc"] <= 1 and saved.schema_version == SCHEMA_VERSION
    assert saved.cache_hit is False and saved.score_seconds > 0
    total = 68_786 - 32 * 10 - 10  # ResNet-20 width 0.5: all parameters minus the classifier...
    n_prunable = res["num_prunable"]
    assert n_prunable < total  # ...minus BN and biases too
    assert abs(res["sparsity_achieved"] - 0.8) <= 1 / n_prunable
    assert len(res["history"]) == 2 and set(res["layer_density"]) and "linear.weight" not in res["layer_density"]
    # The same configuration under another out_root repeats bit for bit (CPU).
    again = run(make_cfg(tmp_path / "b", "pruner=magnitude", "sparsity=0.8"))
    assert again["history"] == res["history"] and again["config_hash"] == res["config_hash"]


def test_finished_run_is_skipped(tmp_path, caplog):
    cfg = make_cfg(tmp_path, "pruner=random", "train.epochs=1")
    first = run(cfg)
    ckpt = Path(first["run_dir"], "last.pt")
    stamp = ckpt.stat().st_mtime_ns
    caplog.set_level("INFO")
    second = run(cfg)
    assert "skipping finished run" in caplog.text
    assert second["test_acc"] == first["test_acc"] and ckpt.stat().st_mtime_ns == stamp


def test_finished_run_of_an_older_schema_is_set_aside_and_rerun(tmp_path, caplog):
    """A results.json without schema_version was trained by a pai whose random streams differed: the same config
    hash no longer reproduces it, so it is not skipped, and its last.pt is not resumed (it would hand the old
    run's final weights to the new one); both are kept beside the run as `*.corrupt-<time>`."""
    cfg = make_cfg(tmp_path, "pruner=random", "train.epochs=1")
    first = run(cfg)
    run_dir = Path(first["run_dir"])
    old = {k: v for k, v in first.items() if k != "schema_version"}
    old["test_acc"] = 0.123  # what the old code got
    (run_dir / "results.json").write_text(json.dumps(old))
    caplog.set_level("INFO")
    second = run(cfg)
    assert "skipping finished run" not in caplog.text
    assert second["status"] == "done" and second["schema_version"] == SCHEMA_VERSION
    assert second["resumed_after_epoch"] is None and second["history"] == first["history"]
    aside = sorted(p.name.split(".corrupt-")[0] for p in run_dir.glob("*.corrupt-*"))
    assert aside == ["last.pt", "results.json"]
    assert json.loads(next(run_dir.glob("results.json.corrupt-*")).read_text())["test_acc"] == 0.123
    caplog.clear()
    run(cfg)
    assert "skipping finished run" in caplog.text  # the rerun is reused


def test_dense_baseline_ignores_sparsity(tmp_path):
    a = run(make_cfg(tmp_path, "pruner=none", "sparsity=0.5", "train.epochs=1"))
    b = run(make_cfg(tmp_path, "pruner=none", "sparsity=0.9", "train.epochs=1"))
    assert a["run_dir"] == b["run_dir"] and a["sparsity_achieved"] == 0.0 and a["collapsed_layers"] == []


def test_pruned_weights_are_zero_in_the_final_checkpoint(tmp_path):
    res = run(make_cfg(tmp_path, "pruner=random", "sparsity=0.95", "train.epochs=1"))
    state = torch.load(Path(res["run_dir"], "last.pt"), weights_only=False)
    for name, mask in state["masks"].items():
        assert torch.all(state["model"][name][~mask] == 0)
        assert torch.any(state["model"][name][mask] != 0)


def test_a_failing_run_records_failed_not_done(tmp_path, monkeypatch):
    def broken_training(*args, **kwargs):
        raise RuntimeError("the training step broke")

    monkeypatch.setattr("pai.run.train", broken_training)
    with pytest.raises(RuntimeError, match="training step broke"):
        run(make_cfg(tmp_path, "pruner=magnitude", "train.epochs=1"))
    (results,) = tmp_path.rglob("results.json")
    saved = json.loads(results.read_text())
    assert saved["status"] == "failed" and "training step broke" in saved["error"]


def launch(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two threads on a shared 2-core machine run slower
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=env)


@pytest.mark.parametrize(
    ("override", "key"),
    [("sparsity=1.0", "sparsity="), ("sparsity=-0.1", "sparsity="), ("device=cuda", "device=cuda"),
     ("model.num_classes=3", "model.num_classes"), ("prune.scope=row", "prune.scope"),
     ("dataset=cifar10", "dataset=cifar10")],
)
def test_bad_input_fails_with_one_line_naming_the_key(tmp_path, override, key):
    if override == "device=cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = launch("logger=none", f"out_root={tmp_path}", f"data_root={tmp_path / 'data'}", override)
    assert proc.returncode == 2, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert key in out and "Traceback" not in out
    errors = [line for line in out.splitlines() if "error:" in line]
    assert len(errors) == 1
    assert not list(tmp_path.glob("runs/*")), "a config that fails its checks leaves nothing in runs/"


@pytest.mark.parametrize("override", ["pruner=nope", "experiment=nope", "-m pruner=snip,nope"])
def test_unknown_option_lists_the_choices(tmp_path, override):
    """One line with the available options, exit 2; `experiment=` is an optional default, which Hydra would
    skip silently (the default config would train)."""
    proc = launch(*override.split(), f"out_root={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {override.split('=')[0].split()[-1]}=nope") and "available:" in line
    assert ("magnitude" in line) if "pruner" in override else ("resnet18_cifar10" in line)
    assert not (tmp_path / "runs").exists()


def test_help_and_cfg_job():
    help_text = launch("--help").stdout
    for group in ("dataset", "model", "pruner", "train", "logger", "experiment"):
        assert f"{group}:" in help_text
    cfg = launch("--cfg", "job", "pruner=random", "sparsity=0.5").stdout
    assert "sparsity: 0.5" in cfg and "pai.pruning.criteria.random.Random" in cfg


@pytest.mark.fmnist
@pytest.mark.slow
def test_fashion_mnist_magnitude_run(tmp_path):
    if not Path("/usr/share/datasets/fashion-mnist").exists():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    args = ["dataset=fashion_mnist", "model=resnet20", "model.width=0.5", "pruner=magnitude", "sparsity=0.9",
            "train=quick", "train.epochs=1", "train.steps_per_epoch=100", "logger=none",
            f"data_root={tmp_path / 'data'}"]
    first = launch(*args, f"out_root={tmp_path / 'a'}")
    assert first.returncode == 0, first.stderr[-3000:]
    (path,) = (tmp_path / "a").rglob("results.json")
    res = json.loads(path.read_text())
    assert abs(res["sparsity_achieved"] - 0.9) <= 1 / res["num_prunable"]
    assert res["test_acc"] > 0.4  # chance is 0.1
    rerun = launch(*args, f"out_root={tmp_path / 'a'}")
    assert "skipping finished run" in rerun.stdout + rerun.stderr
    launch(*args, f"out_root={tmp_path / 'b'}")
    (again,) = (tmp_path / "b").rglob("results.json")
    assert json.loads(again.read_text())["test_acc"] == res["test_acc"]
