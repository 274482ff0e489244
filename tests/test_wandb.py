"""W&B logging, checked by reading the offline run files back (the .wandb record log, parsed with wandb's own
protobuf `Record`), not by mocking wandb."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, TINY, all_results, launch_env

import pai

pytest.importorskip("wandb")

# -- reading a .wandb file -------------------------------------------------------------------------------------
# wandb ≥ 0.19 dropped its Python reader (wandb.sdk.internal.datastore). The format is unchanged: a 7-byte file
# header (":W&B", magic 0xBEE1, version 0), then LevelDB-log records in 32 KiB blocks, each chunk with a 7-byte
# header (crc32c, length, type: 1 full, 2 first, 3 middle, 4 last); each record is a serialized
# wandb.proto.wandb_internal_pb2.Record.
_BLOCK, _HEADER = 32768, 7


def read_records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a .wandb file"
    records, pos, parts = [], _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        if kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        chunk = data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        if kind in (1, 2):
            parts = chunk
        else:
            parts += chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(parts)
            records.append(rec)
    return records


def _items(items) -> dict:
    """{key: value} of config/history/summary items; a nested key (e.g. a table's fields) becomes a nested dict."""
    out: dict = {}
    for item in items:
        path = [item.key] if item.key else list(item.nested_key)
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = json.loads(item.value_json)
    return out


class WandbRun:
    """What an offline run logged: run identity, config, per-step history, final summary, exit code."""

    def __init__(self, run_dir: Path):
        (wandb_file,) = run_dir.glob("run-*.wandb")
        self.dir, self.records = run_dir, read_records(wandb_file)
        self.run = next(r.run for r in self.records if r.WhichOneof("record_type") == "run")
        self.config = _items(self.run.config.update)
        for r in self.records:
            if r.WhichOneof("record_type") == "config":
                self.config.update(_items(r.config.update))
        self.history: dict[int, dict] = {}
        self.summary: dict = {}
        self.exit_code = None
        for r in self.records:
            kind = r.WhichOneof("record_type")
            if kind == "history":
                row = _items(r.history.item)
                self.history[row["_step"]] = row
            elif kind == "summary":
                self.summary.update(_items(r.summary.update))
            elif kind == "exit":
                self.exit_code = r.exit.exit_code


def offline_runs(wandb_root: Path) -> list[WandbRun]:
    return [WandbRun(d) for d in sorted(Path(wandb_root).glob("wandb/offline-run-*"))]


# -- tests -----------------------------------------------------------------------------------------------------
WANDB_TINY = [o for o in TINY if o != "logger=none"] + ["logger=wandb", "train.epochs=2"]


def test_offline_run_logs_config_metrics_masks_and_summary(run_launch, tmp_path):
    out, wb = tmp_path / "out", tmp_path / "wb"
    proc = run_launch([*WANDB_TINY, "pruner=magnitude", "sparsity=0.9", "seed=3", "experiment_name=wbtest",
                       "logger.tags=[paper,tiny]", "logger.project=pai-test", "label=magnitude@x"], out,
                      env=launch_env(tmp_path, WANDB_DIR=str(wb)))
    assert proc.returncode == 0, proc.output
    (res,) = all_results(out)
    (run,) = offline_runs(wb)
    # identity
    assert run.run.project == "pai-test"
    assert run.run.run_group == "wbtest" and run.run.job_type == "magnitude@x"  # the label names the variant
    assert run.run.display_name == res["run_name"] and list(run.run.tags) == ["paper", "tiny"]
    # the resolved config
    assert run.config["seed"] == 3 and run.config["sparsity"] == 0.9
    assert run.config["pruner"]["_target_"].endswith("Magnitude")
    assert run.config["dataset"]["num_train"] == 64 and run.config["experiment_name"] == "wbtest"
    assert run.config["pai_version"] == res["pai_version"] == pai.__version__
    # per-epoch metrics at step = epoch, equal to results.json's history
    assert [s for s in run.history if s > 0] == [1, 2]
    for h in res["history"]:
        row = run.history[h["epoch"]]
        assert {k: row[k] for k in h} == h
    # scoring/mask statistics at step 0: scalars and the per-layer density table (a file next to the run)
    prune = run.history[0]
    assert prune["prune/sparsity_achieved"] == pytest.approx(res["sparsity_achieved"])
    assert prune["prune/collapsed_layers"] == len(res["collapsed_layers"])
    assert prune["prune/num_prunable"] == res["num_prunable"] and "prune/score_seconds" in prune
    assert prune["prune/cache_hit"] == res["cache_hit"]
    assert prune["prune/layer_density"]["_type"] == "table-file"
    (table_file,) = run.dir.glob("files/media/table/prune/layer_density_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["layer", "density", "collapsed"]
    assert {row[0]: row[1] for row in table["data"]} == pytest.approx(res["layer_density"])
    assert {row[0] for row in table["data"] if row[2]} == set(res["collapsed_layers"])
    # final summary = results.json (without the per-epoch/per-layer lists)
    assert run.summary["test_acc"] == res["test_acc"] and run.summary["status"] == "done"
    assert run.summary["config_hash"] == res["config_hash"]
    assert run.summary["prune/collapsed_layer_names"] == res["collapsed_layers"]
    # one point per run for accuracy vs sparsity, merged into the last epoch's step
    assert run.history[2]["final/sparsity"] == 0.9 and run.history[2]["final/test_acc"] == res["test_acc"]
    assert run.history[2]["test_acc"] == res["history"][-1]["test_acc"]
    assert run.exit_code == 0


def test_sweep_group_and_the_dense_runs_config(run_launch, tmp_path):
    """Without experiment_name the group names this sweep (its sweep directory), not the dataset; the dense
    baseline logs the sparsity it used (0) and none of the prune options it never read."""
    out, wb = tmp_path / "out", tmp_path / "wb"
    proc = run_launch(["-m", *WANDB_TINY, "train.epochs=1", "pruner=none,magnitude", "sparsity=0.5"], out,
                      sweep_dir=out / "sweeps" / "2030-01-02" / "03-04-05", env=launch_env(tmp_path, WANDB_DIR=str(wb)))
    assert proc.returncode == 0, proc.output
    runs = {r.run.job_type: r for r in offline_runs(wb)}
    assert set(runs) == {"none", "magnitude"}
    assert {r.run.run_group for r in runs.values()} == {"synthetic-resnet20-2030-01-02_03-04-05"}
    assert {r["wandb_group"] for r in all_results(out)} == {"synthetic-resnet20-2030-01-02_03-04-05"}
    dense, pruned = runs["none"], runs["magnitude"]
    assert dense.config["sparsity"] == 0.0 and "prune" not in dense.config
    assert dense.history[1]["final/sparsity"] == 0.0 and dense.summary["sparsity"] == 0.0
    assert pruned.config["sparsity"] == 0.5 and pruned.config["prune"]["scope"] == "global"
    assert pruned.history[1]["final/sparsity"] == 0.5


def test_failed_run_finishes_its_wandb_run_and_the_next_starts_fresh(tmp_path, monkeypatch):
    """Two runs in one process (as under the basic launcher): the first raises inside the pipeline after
    wandb.init, the second must get its own W&B run, not log into the first."""
    import wandb
    from hydra import compose, initialize_config_dir

    from pai.errors import PaiConfigError
    from pai.run import run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        common = [*WANDB_TINY, "pruner=random", f"out_root={tmp_path}"]
        bad = compose("config", overrides=[*common, "prune.samples_per_class=50"])  # fails drawing the samples
        good = compose("config", overrides=[*common, "seed=1"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny runs: far faster than 2 spinning threads on a busy 2-core machine
    try:
        with pytest.raises(PaiConfigError, match="samples_per_class"):
            run(bad)
        assert wandb.run is None, "the failed run's W&B run was left open"
        ok = run(good)
        assert wandb.run is None
    finally:
        torch.set_num_threads(threads)
        wandb.teardown()
    failed_run, good_run = sorted(offline_runs(tmp_path), key=lambda r: r.config["seed"])
    assert failed_run.run.run_id != good_run.run.run_id
    assert failed_run.exit_code == 1 and good_run.exit_code == 0
    assert failed_run.summary["status"] == "failed" and "samples_per_class" in failed_run.summary["error"]
    assert not [s for s in failed_run.history if s > 0], "no epoch was logged into the failed run"
    assert [s for s in good_run.history if s > 0] == [1, 2]
    assert good_run.summary["test_acc"] == ok["test_acc"] and good_run.config["seed"] == 1


def test_mode_group_and_project_are_configurable(monkeypatch):
    from hydra import compose, initialize_config_dir

    monkeypatch.delenv("WANDB_MODE", raising=False)
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config")
        assert cfg.logger.mode == "offline" and cfg.logger.project == "pai"  # offline by default
        assert compose("config", overrides=["logger.mode=online"]).logger.mode == "online"
        monkeypatch.setenv("WANDB_MODE", "online")
        assert compose("config").logger.mode == "online"
        cfg = compose("config", overrides=["logger.entity=me", "logger.group=g", "logger.tags=[a]"])
        assert (cfg.logger.entity, cfg.logger.group, list(cfg.logger.tags)) == ("me", "g", ["a"])


def test_bad_mode_is_a_config_error():
    from pai.errors import PaiConfigError
    from pai.tracking import WandbTracker

    with pytest.raises(PaiConfigError, match="logger.mode"):
        WandbTracker(mode="onlne")


def test_each_variant_has_its_own_row_and_the_same_wandb_job_type(tmp_path, monkeypatch):
    """Non-default `pruner.hessian_params` / `prune.schedule`, `prune.mask_from` and ablations each get a report
    row of their own, and W&B's job type is that row's name (one function, fed by results.json)."""
    from hydra import compose, initialize_config_dir

    from pai.report.load import load_runs
    from pai.run import run
    from pai.tracking import Tracker

    job_types: dict[str, str] = {}
    monkeypatch.setattr(Tracker, "start", lambda self, name, config, group, job_type: job_types.update(
        {name: job_type}))
    common = [*TINY, f"out_root={tmp_path}", "sparsity=0.5"]
    variants = {
        "grasp": ["pruner=grasp"],
        "grasp[prunable]": ["pruner=grasp", "pruner.hessian_params=prunable"],
        "grasp@x": ["pruner=grasp", "pruner.hessian_params=prunable_classifier", "label=grasp@x"],  # label wins
        "synflow": ["pruner=synflow", "prune.rounds=2"],
        "synflow[seed_inverted]": ["pruner=synflow", "prune.rounds=2", "prune.schedule=seed_inverted"],
        "synflow_seed[exponential]": ["pruner=synflow_seed", "prune.rounds=2", "prune.schedule=exponential"],
        "grasp+shuffle": ["pruner=grasp", "prune.ablation=layer_shuffle"],
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
            done = {row: run(compose("config", overrides=[*common, *args])) for row, args in variants.items()}
            source = done["grasp"]["run_dir"]
            done["snip+mask_from"] = run(compose("config", overrides=[*common, "pruner=snip",
                                                                      f"prune.mask_from={source}"]))
    finally:
        torch.set_num_threads(threads)
    runs, _ = load_runs(tmp_path / "runs")
    rows = dict(zip(runs["run_dir"], runs["criterion"], strict=True))
    assert {row: rows[r["run_dir"]] for row, r in done.items()} == {row: row for row in done}
    assert {row: job_types[r["run_name"]] for row, r in done.items()} == {row: row for row in done}
