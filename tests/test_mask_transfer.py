"""Masks and weights out (masks.safetensors, init.safetensors, `python -m pai.export`) and in
(`prune.mask_from`, `model.init_from`), alone and with `prune.ablation`: round trips reproduce a run exactly,
mismatched files fail in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, TINY
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from safetensors.torch import load_file, save_file

from pai import run_files
from pai.errors import PaiConfigError
from pai.export import main as export_main
from pai.pruning.masks import prunable_weights
from pai.pruning.options import PruneOptions
from pai.pruning.pipeline import score_and_mask
from pai.results import config_hash
from pai.run import run


def make_cfg(out_root: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*TINY, "train.steps_per_epoch=2", f"out_root={out_root}", *overrides])


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """One finished snip run at sparsity 0.8 (seed 0), exported with its initial weights."""
    root = tmp_path_factory.mktemp("source")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = run(make_cfg(root, "pruner=snip", "sparsity=0.8"))
    finally:
        torch.set_num_threads(threads)
    export_dir = root / "export"
    assert export_main([res["run_dir"], "--out", str(export_dir), "--initial"]) == 0  # python -m pai.export
    return {"res": res, "dir": Path(res["run_dir"]), "export": export_dir, "root": root}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_export_writes_masked_weights_masks_and_initial(source_run, tmp_path, capsys):
    run_dir, export = source_run["dir"], source_run["export"]
    masks = {n: m.bool() for n, m in load_file(run_dir / run_files.MASKS).items()}
    assert set(masks) == set(source_run["res"]["layer_density"])
    assert all(load_file(run_dir / run_files.MASKS)[n].dtype == torch.uint8 for n in masks)
    for n, m in masks.items():  # the file's masks are the run's (its per-layer densities)
        assert m.float().mean().item() == pytest.approx(source_run["res"]["layer_density"][n])
    trained = load_file(export / "weights.safetensors")
    state = torch.load(run_dir / "last.pt", weights_only=True)["model"]
    assert set(trained) == set(state)  # the whole state_dict, BN buffers included
    initial, init_dense = load_file(export / "initial.safetensors"), load_file(run_dir / run_files.INIT)
    for n, m in masks.items():
        assert torch.all(trained[n][~m] == 0) and torch.equal(trained[n][m], state[n][m])
        assert torch.all(initial[n][~m] == 0) and torch.equal(initial[n][m], init_dense[n][m])
        assert not torch.equal(init_dense[n], state[n])  # initial ≠ trained
    assert torch.equal(load_file(export / "masks.safetensors")[next(iter(masks))],
                       load_file(run_dir / run_files.MASKS)[next(iter(masks))])
    assert export_main([str(tmp_path)]) == 2  # not a run: one error line, exit 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path}: not a finished run")


def test_round_trip_mask_from_reproduces_the_run(source_run, tmp_path):
    """Training the exported mask (same seed) gives the same mask checksum and the same history, bit for bit.
    The runs name another criterion, whose own scores would give another mask: the mask is the file's."""
    a = source_run["res"]
    b = run(make_cfg(tmp_path, "pruner=magnitude", "sparsity=0.8",
                     f"prune.mask_from={source_run['export'] / 'masks.safetensors'}"))
    assert b["mask_checksum"] == a["mask_checksum"]
    assert b["history"] == a["history"]
    assert b["label"] == "magnitude+mask_from"  # reported apart from magnitude's own runs
    assert b["inputs"]["prune.mask_from"]["sha256"] == run_files.file_sha256(source_run["export"] /
                                                                              "masks.safetensors")
    # A run directory as the source, with its initial weights: the same run again.
    c = run(make_cfg(tmp_path, "pruner=random", "sparsity=0.8", f"prune.mask_from={source_run['dir']}",
                     f"model.init_from={source_run['dir']}", "model.init_from_state=initial"))
    assert c["mask_checksum"] == a["mask_checksum"] and c["history"] == a["history"]


def test_init_from_trained_weights_prunes_them(source_run, tmp_path):
    """model.init_from=<run dir> (trained, the default) starts from its last.pt weights."""
    res = run(make_cfg(tmp_path, "pruner=magnitude", "sparsity=0.5", f"model.init_from={source_run['dir']}"))
    started = load_file(Path(res["run_dir"]) / run_files.INIT)
    trained = torch.load(source_run["dir"] / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(started[n], trained[n].to(started[n].dtype)) for n in trained)
    assert res["label"] == "magnitude+init_from"
    # The model node's builder does the loading, so instantiate(cfg.model) gives the same model outside pai.run.
    model = instantiate(make_cfg(tmp_path, f"model.init_from={source_run['dir']}").model)
    assert all(torch.equal(t, trained[n]) for n, t in model.state_dict().items())


def masks_and_model(out_root: Path, *overrides: str):
    """(masks, model) of one `score_and_mask` call on the model node's build (model.init_from loaded)."""
    cfg = make_cfg(out_root, *overrides)
    torch.manual_seed(cfg.seed)
    model = instantiate(cfg.model)
    names = list(prunable_weights(model))
    masks, _ = score_and_mask(cfg, PruneOptions.from_config(cfg.prune), instantiate(cfg.pruner), model,
                              instantiate(cfg.dataset), torch.device("cpu"), names, 0.5, warmup_batch_size=32)
    return masks, model


def test_reinit_with_init_from_redraws_the_weights(source_run, tmp_path):
    """prune.ablation=reinit under model.init_from: the mask is the one scored on the loaded weights, the
    parameters are redrawn (not reloaded), and init.safetensors holds the redrawn ones training starts from."""
    init = f"model.init_from={source_run['dir']}"
    trained = torch.load(source_run["dir"] / "last.pt", weights_only=True)["model"]
    own, loaded = masks_and_model(tmp_path, "pruner=magnitude", init)
    masks, model = masks_and_model(tmp_path, "pruner=magnitude", init, "prune.ablation=reinit")
    assert all(torch.equal(masks[n], own[n]) for n in own)
    assert all(torch.equal(p, trained[n]) for n, p in loaded.named_parameters())  # no ablation: the loaded ones
    redrawn = [n for n, p in model.named_parameters() if p.numel() > 1 and not torch.equal(p, trained[n])]
    assert set(own) <= set(redrawn)  # every prunable weight, at least
    res = run(make_cfg(tmp_path, "pruner=magnitude", "sparsity=0.5", init, "prune.ablation=reinit"))
    run_dir = Path(res["run_dir"])
    assert all(torch.equal(m.bool(), own[n]) for n, m in load_file(run_dir / run_files.MASKS).items())
    started = load_file(run_dir / run_files.INIT)
    assert all(torch.equal(started[n], p) for n, p in model.named_parameters())


def test_mask_from_with_layer_shuffle_keeps_each_layer_count(source_run, tmp_path):
    """prune.mask_from + prune.ablation=layer_shuffle: the loaded mask's kept count in every layer, at other
    positions."""
    loaded = {n: m.bool() for n, m in load_file(source_run["dir"] / run_files.MASKS).items()}
    cfg = make_cfg(tmp_path, "pruner=magnitude", f"prune.mask_from={source_run['dir']}",
                   "prune.ablation=layer_shuffle")
    torch.manual_seed(cfg.seed)
    model = instantiate(cfg.model)
    shuffled, info = score_and_mask(cfg, PruneOptions.from_config(cfg.prune), instantiate(cfg.pruner), model,
                                    instantiate(cfg.dataset), torch.device("cpu"), list(loaded), 0.8,
                                    warmup_batch_size=32)
    assert {n: int(m.sum()) for n, m in shuffled.items()} == {n: int(m.sum()) for n, m in loaded.items()}
    assert not all(torch.equal(shuffled[n], loaded[n]) for n in loaded)
    assert info["ablation"] == "layer_shuffle" and info["ablation_overlap"] < 0.5


def test_mismatched_mask_file_is_rejected_in_one_line(source_run, tmp_path):
    masks = load_file(source_run["dir"] / run_files.MASKS)
    name = next(iter(masks))
    bad = tmp_path / "bad.safetensors"
    save_file({**masks, name: torch.ones(3, 3, dtype=torch.uint8)}, bad)
    with pytest.raises(PaiConfigError) as err:
        run(make_cfg(tmp_path, "pruner=snip", "sparsity=0.8", f"prune.mask_from={bad}"))
    msg = str(err.value)
    assert msg.startswith(f"prune.mask_from={bad}") and name in msg and "shape" in msg and "\n" not in msg
    renamed = tmp_path / "renamed.safetensors"
    save_file({("x." + n if n == name else n): m for n, m in masks.items()}, renamed)
    with pytest.raises(PaiConfigError, match=rf"prune.mask_from=.*missing {name}.*not in the model x.{name}"):
        run(make_cfg(tmp_path, "pruner=snip", "sparsity=0.8", f"prune.mask_from={renamed}"))
    # The mask of another sparsity is not filed under this one.
    with pytest.raises(PaiConfigError, match=r"prune.mask_from=.*set sparsity=0.8\b"):
        run(make_cfg(tmp_path, "pruner=snip", "sparsity=0.5", f"prune.mask_from={source_run['dir']}"))
    with pytest.raises(PaiConfigError, match="prune.mask_from needs a pruning criterion"):
        run(make_cfg(tmp_path, "pruner=none", f"prune.mask_from={source_run['dir']}"))
    with pytest.raises(PaiConfigError, match="prune.mask_from=.*no such file"):
        run(make_cfg(tmp_path, "pruner=snip", f"prune.mask_from={tmp_path / 'nothing'}"))


def test_mismatched_init_weights_are_rejected(source_run, tmp_path):
    with pytest.raises(PaiConfigError, match=r"model.init_from=.*does not match the model's state_dict: .*shape"):
        run(make_cfg(tmp_path, "pruner=snip", "model.width=0.5", f"model.init_from={source_run['dir']}"))
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "results.json").write_text('{"status": "running"}')
    (unfinished / "last.pt").write_bytes(b"")
    with pytest.raises(PaiConfigError, match="model.init_from=.*has not finished"):
        run_files.weights_file(unfinished, "trained")
    with pytest.raises(PaiConfigError, match="model.init_from_state='best' must be one of initial, trained"):
        run_files.weights_file(unfinished, "best")


def test_input_files_are_hashed_by_content(source_run, tmp_path):
    """A different file under the same path is a different run; unset keys leave old hashes unchanged."""
    mask_file = tmp_path / "m.safetensors"
    masks = load_file(source_run["dir"] / run_files.MASKS)
    save_file(masks, mask_file)
    cfg = make_cfg(tmp_path, "pruner=snip", "sparsity=0.8", f"prune.mask_from={mask_file}")
    criterion = instantiate(cfg.pruner)
    before = config_hash(cfg, criterion)
    name = next(iter(masks))
    flipped = masks[name].clone()
    flipped.view(-1)[0] = 1 - flipped.view(-1)[0]
    save_file({**masks, name: flipped}, mask_file)
    assert config_hash(cfg, criterion) != before
    plain = make_cfg(tmp_path, "pruner=snip", "sparsity=0.8")
    with_null = make_cfg(tmp_path, "pruner=snip", "sparsity=0.8", "prune.mask_from=null", "model.init_from=null",
                         "model.init_from_state=initial")
    assert config_hash(plain, criterion) == config_hash(with_null, criterion)
