"""The project around the code: the `debug` config, the version, and the wheel — built, installed into a fresh
virtual environment and run from another directory with a criterion and config folder of the user's own."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, TINY
from hydra import compose, initialize_config_dir

import pai
from pai.run import run


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_debug_config_is_one_step_tiny_data_no_logger(tmp_path):
    cfg = compose_cfg("debug=default", f"out_root={tmp_path}")
    assert (cfg.train.epochs, cfg.train.steps_per_epoch) == (1, 1)
    assert cfg.dataset.name == "synthetic" and cfg.dataset.num_train <= 64 and cfg.dataset.num_test <= 32
    assert cfg.logger._target_ == "pai.tracking.Tracker"  # no W&B
    # on top of a preset: the preset's model and criteria, debug's budget
    preset = compose_cfg("experiment=resnet18_cifar10", "debug=default")
    assert preset.model._target_.endswith("resnet18") and preset.train.steps_per_epoch == 1
    assert preset.logger._target_ == "pai.tracking.Tracker" and str(preset.out_root).endswith("/debug")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = run(cfg)
    finally:
        torch.set_num_threads(threads)
    assert res["status"] == "done" and len(res["history"]) == 1 and res["dataset"] == "synthetic"
    assert Path(res["run_dir"]).is_relative_to(tmp_path / "runs") and not (tmp_path / "wandb").exists()


def test_version_is_one_constant():
    text = (REPO_ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text and 'version = {attr = "pai.__version__"}' in text
    assert f"## [{pai.__version__}]" in (REPO_ROOT / "CHANGELOG.md").read_text()


# A criterion that lives outside the repository, with its config folder: the README's example.
USER_CRITERION = '''
from pai.pruning.criteria.base import Criterion


class LayerScaledMagnitude(Criterion):
    """|θ| divided by the mean |θ| of its layer: every layer keeps weights, whatever its scale."""

    name = "layer_scaled_magnitude"
    data_free = True

    def score(self, model, inputs, targets):
        return {n: w.detach().abs() / w.detach().abs().mean() for n, w in self.weights(model).items()}
'''
USER_CONFIG = "_target_: my_criteria.LayerScaledMagnitude\n"


def _copy_sources(dest: Path) -> Path:
    """What a source distribution holds (no tests, outputs or build folders)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pai", "conf", "hydra_plugins"):
        shutil.copytree(REPO_ROOT / name, dest / name, ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy2(REPO_ROOT / name, dest / name)
    return dest


def test_wheel_installs_and_runs_from_another_directory(tmp_path):
    src = _copy_sources(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("pai-*.whl")
    assert wheel.name.startswith(f"pai-{pai.__version__}-")
    names = set(zipfile.ZipFile(wheel).namelist())
    conf = {p.relative_to(REPO_ROOT / "conf").as_posix() for p in (REPO_ROOT / "conf").rglob("*.yaml")}
    assert {f"pai/conf/{p}" for p in conf} <= names and "pai/conf/__init__.py" in names  # every config
    modules = {p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "pai").rglob("*.py")}
    assert modules <= names  # every module, the __init__-less pai/train too
    assert "hydra_plugins/pai_submitit/launchers.py" in names  # the slurm and local launchers
    assert not any(n.startswith(("tests/", "conf/", "benchmarks/")) for n in names)
    entry_points = zipfile.ZipFile(wheel).read(f"pai-{pai.__version__}.dist-info/entry_points.txt").decode()
    assert "pai = pai.cli:cli" in entry_points and "pai-report = pai.report.__main__:main" in entry_points

    # A fresh venv that reuses this environment's packages (torch, hydra, ...) but not its pai: --no-deps.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    (purelib,) = venv.glob("lib/python*/site-packages")
    (purelib / "_reuse_test_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", str(wheel)], check=True, capture_output=True, timeout=300)

    user = tmp_path / "elsewhere"
    (user / "my_conf" / "pruner").mkdir(parents=True)
    (user / "my_criteria.py").write_text(textwrap.dedent(USER_CRITERION))
    (user / "my_conf" / "pruner" / "layer_scaled_magnitude.yaml").write_text(USER_CONFIG)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PAI_OUT", "VIRTUAL_ENV")}
    env.update(PYTHONPATH=str(user), OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1")
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import pai, pai.cli; print(pai.__file__); "
                            "print(pai.cli.config_dir())"], cwd=user, env=env, capture_output=True, text=True)
    assert where.stdout.split() == [str(purelib / "pai" / "__init__.py"), "pkg://pai.conf"], where.stderr
    out = tmp_path / "out"
    proc = subprocess.run([str(venv / "bin" / "pai"), *TINY, "pruner=layer_scaled_magnitude", "sparsity=0.5",
                           f"hydra.searchpath=[file://{user / 'my_conf'}]", f"out_root={out}",
                           f"hydra.run.dir={out}/hydra"], cwd=user, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (results,) = out.glob("runs/*/*/*/*/results.json")
    res = json.loads(results.read_text())
    assert res["status"] == "done" and res["pruner"] == "layer_scaled_magnitude"
    assert res["pai_version"] == pai.__version__ and res["sparsity_achieved"] == pytest.approx(0.5, abs=1e-3)
    report = subprocess.run([str(venv / "bin" / "pai-report"), str(out / "runs")], cwd=user, env=env,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0 and "layer_scaled_magnitude" in report.stdout, report.stderr


@pytest.mark.parametrize("down", ["no scontrol", "ping fails", "not up"])
def test_every_slurm_skip_reason_names_the_in_repo_cluster_scripts(monkeypatch, down):
    """Whatever keeps SLURM from answering, the skip reason says how to start the test cluster."""
    import conftest

    def ping(*args, **kwargs):
        if down == "ping fails":
            raise subprocess.TimeoutExpired("scontrol ping", 10)
        return subprocess.CompletedProcess(args, 1, stdout="", stderr="slurm_load_ctl_conf error")

    monkeypatch.setattr(shutil, "which", lambda name: None if down == "no scontrol" else "/usr/bin/scontrol")
    monkeypatch.setattr(subprocess, "run", ping)
    reason = conftest.slurm_status.__wrapped__()
    assert "scripts/slurm/up.sh" in reason and "make slurm-up" in reason, reason
