"""Files read back are verified: a corrupt `last.pt`, score-cache entry or results.json is named in a warning,
set aside (renamed, never deleted), and the run starts over, rescores or reruns — it never trains from garbage
and never crashes on every rerun."""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from test_criteria_common import one_thread  # noqa: F401 (autouse fixture)

from pai.pruning.masks import prunable_weights
from pai.pruning.options import PruneOptions
from pai.pruning.pipeline import score_and_mask
from pai.results import read_results
from pai.run import run
from pai.tracking import Tracker
from pai.train.checkpoint import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = ["dataset=synthetic", "dataset.image_size=8", "dataset.in_channels=1", "dataset.num_train=128",
        "dataset.num_test=64", "model=resnet20", "model.width=0.25", "train=quick", "train.batch_size=32",
        "prune.samples_per_class=2", "logger=none", "pruner=snip", "sparsity=0.8"]


def make_cfg(out_root: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*TINY, f"out_root={out_root}", *overrides])


def overwrite(path: Path, data: bytes, offset: int | None = None) -> None:
    """Overwrite bytes of `path` in place (default: in its middle), as a bad disk block or a stray `dd` would."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(max(0, size // 2 - len(data) // 2) if offset is None else offset)
        f.write(data)


def largest_tensor_offset(path: Path) -> int:
    """Where the bytes of the largest tensor of a torch.save file start (its zip record's data)."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
    return info.header_offset + 30 + name_len + extra_len


def corrupt_files(tmp_path: Path) -> list[Path]:
    return sorted(tmp_path.rglob("*.corrupt-*"))


# --- checkpoints --------------------------------------------------------------------------------------------

def _state() -> dict:
    model = torch.nn.Linear(64, 32)
    return {"model": model.state_dict(), "epoch": 0, "history": [{"epoch": 1, "test_loss": float("nan")}],
            "rng": {"numpy": ("MT19937", [1, 2, 3], 0, 0, 0.0)}}


def test_a_checkpoint_loads_with_weights_only_and_round_trips(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(_state(), path)
    torch.load(path, weights_only=True)  # nothing in it needs full unpickling
    state = load_checkpoint(path)
    assert state is not None and "digest" not in state and state["epoch"] == 0
    assert torch.equal(state["model"]["weight"], torch.load(path, weights_only=True)["model"]["weight"])
    assert not corrupt_files(tmp_path)


@pytest.mark.parametrize("damage", ["tensor bytes", "random 4 KB", "zeros 4 KB", "truncated", "no digest",
                                    "nan weights"])
def test_a_checkpoint_that_fails_a_check_is_set_aside(tmp_path, caplog, damage):
    path = tmp_path / "last.pt"
    state = _state()
    if damage == "nan weights":  # a valid digest of a model that is not finite
        state["model"]["weight"][0, 0] = float("nan")
    if damage == "no digest":
        torch.save(state, path)
    else:
        save_checkpoint(state, path)
    if damage == "tensor bytes":  # loads fine; only the digest can tell
        overwrite(path, b"\x7f\x7f\x7f\x7f", largest_tensor_offset(path) + 40)
        assert torch.load(path, weights_only=True)["model"]["weight"].isfinite().all()
    elif damage == "random 4 KB":
        overwrite(path, os.urandom(4096))
    elif damage == "zeros 4 KB":
        overwrite(path, bytes(4096))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    before = path.read_bytes()
    with caplog.at_level("WARNING"):
        assert load_checkpoint(path) is None
    (aside,) = corrupt_files(tmp_path)
    assert aside.read_bytes() == before and not path.exists()
    assert str(path) in caplog.text and "starts over" in caplog.text


class _InterruptAfterEpoch1(Tracker):
    def log(self, metrics, step=None):
        if step == 1:
            raise SystemExit("preempted")  # what submitit does after requeueing


def test_a_corrupt_last_pt_restarts_the_run_cleanly(tmp_path, monkeypatch, caplog):
    """A last.pt overwritten with 4 KB of random bytes after epoch 1 used to resume from NaN weights and end
    `done` at chance accuracy; now it is set aside and the run ends exactly like an uninterrupted one."""
    reference = run(make_cfg(tmp_path / "ref", "train.epochs=2"))
    cfg = make_cfg(tmp_path / "victim", "train.epochs=2")
    monkeypatch.setattr("pai.run.build", _build_with_tracker(_InterruptAfterEpoch1()))
    with pytest.raises(SystemExit):
        run(cfg)
    monkeypatch.undo()
    run_dir = Path(reference["run_dir"].replace(str(tmp_path / "ref"), str(tmp_path / "victim")))
    assert json.loads((run_dir / "results.json").read_text())["status"] == "interrupted"
    assert torch.load(run_dir / "last.pt", weights_only=True)["epoch"] == 0
    overwrite(run_dir / "last.pt", os.urandom(4096))
    caplog.set_level("INFO")
    result = run(cfg)
    assert "resuming from" not in caplog.text and f"set aside {run_dir / 'last.pt'}" in caplog.text
    assert [p.name.split(".corrupt-")[0] for p in corrupt_files(tmp_path)] == ["last.pt"]
    assert result["status"] == "done" and result["resumed_after_epoch"] is None
    assert result["history"] == reference["history"] and result["test_acc"] == reference["test_acc"]


def _build_with_tracker(tracker: Tracker):
    import pai.run

    real = pai.run.build

    def build(node, group):
        return tracker if group == "logger" else real(node, group)

    return build


# --- score cache --------------------------------------------------------------------------------------------

def _score(cfg):
    torch.manual_seed(cfg.seed)
    model = instantiate(cfg.model)
    names = list(prunable_weights(model))
    return score_and_mask(cfg, PruneOptions.from_config(cfg.prune), instantiate(cfg.pruner), model,
                          instantiate(cfg.dataset), torch.device("cpu"), names, 0.8, warmup_batch_size=32)


@pytest.mark.parametrize("damage", ["zeros 4 KB", "random 4 KB", "tensor bytes"])
def test_a_corrupt_cache_entry_is_set_aside_and_rescored(tmp_path, caplog, damage):
    """4 KB of zeros used to be read as all-zero scores (a different mask, silently); random bytes gave NaN
    scores blamed on the criterion. Now both are set aside and the scores computed again."""
    cfg = make_cfg(tmp_path)
    masks, info = _score(cfg)
    (entry,) = (tmp_path / "cache").glob("*.pt")
    if damage == "tensor bytes":  # still loads; only the digest can tell
        overwrite(entry, b"\x00" * 64, largest_tensor_offset(entry))
        assert torch.load(entry, weights_only=True)["scores"]
    else:
        overwrite(entry, bytes(4096) if damage.startswith("zeros") else os.urandom(4096))
    with caplog.at_level("WARNING"):
        again, info2 = _score(cfg)
    assert not info["cache_hit"] and not info2["cache_hit"]  # rescored, not read
    assert f"set aside {entry}" in caplog.text and "scoring again" in caplog.text
    assert len(corrupt_files(tmp_path)) == 1
    assert all(torch.equal(masks[n], again[n]) for n in masks)
    third, info3 = _score(cfg)  # the rewritten entry is whole again
    assert info3["cache_hit"] and all(torch.equal(masks[n], third[n]) for n in masks)


# --- results.json -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content", ['"x"', '{"status": "done"}', {"test_acc": None}, {"sparsity": 1.5},
                                     {"effective_sparsity": math.nan}], ids=str)
def test_a_bad_results_json_is_set_aside_and_the_run_reruns(tmp_path, caplog, content):
    """`"x"` and `{"status": "done"}` used to crash every rerun (AttributeError / KeyError); `done` with
    `test_acc: null`, a sparsity outside [0, 1) or a NaN float was skipped as finished. A dict: these keys
    changed in the run's own done record."""
    cfg = make_cfg(tmp_path, "train.epochs=1")
    first = run(cfg)
    path = Path(first["run_dir"], "results.json")
    if isinstance(content, dict):
        content = json.dumps({**json.loads(path.read_text()), **content})
    path.write_text(content)
    caplog.set_level("INFO")
    again = run(cfg)
    assert "skipping finished run" not in caplog.text and f"set aside {path}" in caplog.text
    assert again["status"] == "done" and again["test_acc"] == first["test_acc"]
    assert read_results(path).test_acc == first["test_acc"]  # a valid record again
    (aside,) = corrupt_files(tmp_path)
    assert aside.read_text() == content
