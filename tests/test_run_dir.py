"""A run directory is self-contained (resolved config, overrides, pointers to its Hydra job and log; every file in
a standard format), and a run tells what it does: a line when scoring starts, one closing line, one W&B line."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from conftest import REPO_ROOT, TINY, launch_env
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from safetensors.torch import load_file

WANDB = [o for o in TINY if o != "logger=none"] + ["logger=wandb"]


def test_run_dir_holds_config_overrides_and_standard_files(run_launch, tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = [*WANDB, "pruner=snip", "sparsity=0.8", "seed=3"]
    env = launch_env(tmp_path)
    env.pop("WANDB_SILENT")  # W&B's own console output, as a user sees it
    proc = run_launch(args, out, env=env)
    assert proc.returncode == 0, proc.output
    (results_path,) = (out / "runs").rglob("results.json")
    run_dir = results_path.parent
    results = json.loads(results_path.read_text())
    assert {p.name for p in run_dir.iterdir()} == {
        ".lock", "results.json", "last.pt", "config.yaml", "overrides.yaml", "init.safetensors", "masks.safetensors"}

    # config.yaml is the run's whole resolved config; overrides.yaml the command line's task overrides.
    for key in ("WANDB_MODE", "WANDB_DIR", "PAI_OUT", "PAI_DATA"):  # what the launched process resolved
        monkeypatch.delenv(key, raising=False)
        if key in env:
            monkeypatch.setenv(key, env[key])
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        expected = compose("config", overrides=[*args, f"out_root={out}"])
    saved = OmegaConf.load(run_dir / "config.yaml")
    assert OmegaConf.to_container(saved) == OmegaConf.to_container(expected, resolve=True)
    assert yaml.safe_load((run_dir / "overrides.yaml").read_text()) == [*args, f"out_root={out}"]

    # results.json points at this attempt's Hydra job folder and log.
    hydra_dir, log_file = Path(results["hydra_dir"]), Path(results["log_file"])
    assert (hydra_dir / ".hydra" / "config.yaml").is_file() and log_file.parent == hydra_dir
    log = log_file.read_text()

    # Everything loads with a standard reader; last.pt with torch.load(weights_only=True).
    state = torch.load(run_dir / "last.pt", weights_only=True)
    masks = load_file(run_dir / "masks.safetensors")
    init = load_file(run_dir / "init.safetensors")
    assert set(init) == set(state["model"]) and set(masks) == set(results["layer_density"])
    assert all(torch.equal(masks[n].bool(), state["masks"][n].cpu()) for n in masks)
    assert all(bool(((m == 0) | (m == 1)).all()) and m.dtype == torch.uint8 for m in masks.values())
    assert " pid " in (run_dir / ".lock").read_text()  # plain text: host, pid, SLURM job

    # Live feedback: one line when scoring starts, one closing line, and W&B reduced to pai's one line.
    assert "scoring: snip, 20 samples (2/class, groups of 1), path fast, 1 round(s)" in log
    closing = [ln for ln in log.splitlines() if "finished snip sparsity 0.8 seed 3" in ln]
    assert len(closing) == 1 and f"test_acc {results['test_acc']:.4f}" in closing[0] and str(run_dir) in closing[0]
    assert not [ln for ln in proc.output.splitlines() if ln.startswith("wandb:")], proc.output
    assert proc.output.count("W&B run ") == 1 and "wandb sync" in proc.output
