"""prune.ablation (layer_shuffle, reinit) on any criterion's mask: exact per-layer counts, seeded, composed with
invert/scope/rounds, the score cache reused, pruned weights kept at zero, recorded in results.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from test_criteria_common import ROOT, one_thread  # noqa: F401 (autouse fixture)

from pai.errors import PaiConfigError
from pai.pruning.ablations import overlap, shuffle_within_layers
from pai.pruning.masks import MaskEnforcer, apply_masks, prunable_weights
from pai.pruning.options import PruneOptions
from pai.pruning.pipeline import score_and_mask
from pai.results import config_hash
from pai.run import run as run_pipeline

CPU = torch.device("cpu")
TINY = ["dataset=synthetic", "dataset.image_size=8", "dataset.num_train=80", "dataset.num_classes=4",
        "model=resnet20", "model.width=0.25", "prune.samples_per_class=3", "logger=none"]


def make_cfg(tmp_path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*TINY, f"out_root={tmp_path}", *overrides])


def masks_of(tmp_path, *overrides: str, sparsity: float = 0.9):
    """(masks, info, model, initial parameters) of one `score_and_mask` call on a fresh seeded model."""
    cfg = make_cfg(tmp_path, *overrides)
    torch.manual_seed(cfg.seed)
    model = instantiate(cfg.model)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    names = list(prunable_weights(model))
    masks, info = score_and_mask(cfg, PruneOptions.from_config(cfg.prune), instantiate(cfg.pruner), model,
                                 instantiate(cfg.dataset), CPU, names, sparsity, warmup_batch_size=32)
    return masks, info, model, initial


def counts(masks) -> dict[str, int]:
    return {n: int(m.sum()) for n, m in masks.items()}


def test_shuffle_keeps_every_layer_count_and_moves_positions():
    g = torch.Generator().manual_seed(0)
    masks = {f"l{i}.weight": torch.rand(8, 4, 3, 3, generator=g) < d for i, d in enumerate((0.05, 0.3, 0.9))}
    masks["empty.weight"] = torch.zeros(5, 5, dtype=torch.bool)
    masks["full.weight"] = torch.ones(7, dtype=torch.bool)
    shuffled = shuffle_within_layers(masks, seed=0)
    assert counts(shuffled) == counts(masks)
    assert all(s.dtype == torch.bool and s.shape == masks[n].shape for n, s in shuffled.items())
    assert not torch.equal(shuffled["l1.weight"], masks["l1.weight"])
    # About the density of the layer is shared by chance (0.3 here), far from the 1.0 of the original mask.
    assert overlap({"l1.weight": shuffled["l1.weight"]}, {"l1.weight": masks["l1.weight"]}) < 0.6
    again = shuffle_within_layers(masks, seed=0)
    assert all(torch.equal(again[n], shuffled[n]) for n in masks)
    other = shuffle_within_layers(masks, seed=1)
    assert not all(torch.equal(other[n], shuffled[n]) for n in ["l0.weight", "l1.weight", "l2.weight"])
    assert counts(other) == counts(masks)


def test_shuffle_of_a_layer_does_not_depend_on_other_layers():
    a = {"x.weight": torch.zeros(50, dtype=torch.bool), "y.weight": torch.arange(40) < 10}
    b = {"x.weight": torch.arange(50) < 30, "y.weight": torch.arange(40) >= 30}
    assert torch.equal(shuffle_within_layers(a, 3)["y.weight"], shuffle_within_layers(b, 3)["y.weight"])


@pytest.mark.parametrize("extra", [[], ["prune.invert=true"], ["prune.scope=layer"]])
def test_layer_shuffle_of_any_mask_in_the_pipeline(tmp_path, extra):
    own, info, _, _ = masks_of(tmp_path, "pruner=snip", *extra)
    shuffled, sinfo, _, _ = masks_of(tmp_path, "pruner=snip", "prune.ablation=layer_shuffle", *extra)
    assert info["ablation"] == "none" and info["ablation_overlap"] == 1.0
    assert sinfo["ablation"] == "layer_shuffle" and counts(shuffled) == counts(own)
    assert sinfo["cache_hit"], "the ablation must reuse the criterion's cached scores"
    shared = sum(int((shuffled[n] & own[n]).sum()) for n in own) / sum(counts(own).values())
    assert sinfo["ablation_overlap"] == pytest.approx(shared) and shared < 0.5


def test_layer_shuffle_after_iterative_rounds(tmp_path):
    own, _, _, _ = masks_of(tmp_path, "pruner=synflow", "prune.rounds=3")
    shuffled, info, _, _ = masks_of(tmp_path, "pruner=synflow", "prune.rounds=3", "prune.ablation=layer_shuffle")
    assert counts(shuffled) == counts(own) and info["ablation_overlap"] < 0.5


def test_cache_reused_across_sparsity_and_ablation(tmp_path):
    _, first, _, _ = masks_of(tmp_path, "pruner=fisher_diag", sparsity=0.5)
    for ablation in ("none", "layer_shuffle", "reinit"):
        _, info, _, _ = masks_of(tmp_path, "pruner=fisher_diag", f"prune.ablation={ablation}", sparsity=0.9)
        assert info["cache_hit"], ablation
    assert not first["cache_hit"] and len(list((tmp_path / "cache").glob("*.pt"))) == 1


def test_reinit_keeps_the_mask_redraws_weights_and_pruned_weights_stay_zero(tmp_path):
    own, _, model_own, initial = masks_of(tmp_path, "pruner=magnitude")
    masks, info, model, _ = masks_of(tmp_path, "pruner=magnitude", "prune.ablation=reinit")
    _, _, again, _ = masks_of(tmp_path, "pruner=magnitude", "prune.ablation=reinit")
    assert all(torch.equal(masks[n], own[n]) for n in own) and info["ablation_overlap"] == 1.0
    params = dict(model.named_parameters())
    for name, p in model_own.named_parameters():
        assert torch.equal(p, initial[name])  # without the ablation the model is the one that was scored
        if p.numel() > 1 and p.std() > 0:  # BN weights start at 1 and biases at 0 with any seed
            assert not torch.equal(params[name], p), name
            # the model's own initializer: the same scale (kaiming for convs, uniform for the classifier)
            assert params[name].std().item() == pytest.approx(p.std().item(), rel=0.25), name
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters(), strict=True))
    other, _, _, _ = masks_of(tmp_path, "pruner=magnitude", "prune.ablation=reinit", "seed=1")
    apply_masks(model, masks)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    enforcer = MaskEnforcer(model, masks, optimizer)
    model.train()
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    enforcer.remove()
    for name, mask in masks.items():
        assert torch.all(params[name][~mask] == 0), name
        assert torch.all(params[name][mask] != 0), name


def test_reinit_depends_on_the_seed(tmp_path):
    _, _, a, _ = masks_of(tmp_path, "pruner=random", "prune.ablation=reinit")
    _, _, b, _ = masks_of(tmp_path, "pruner=random", "prune.ablation=reinit", "seed=1")
    assert not torch.equal(next(a.parameters()), next(b.parameters()))


def test_ablation_is_validated_and_hashed(tmp_path):
    with pytest.raises(PaiConfigError, match=r"prune\.ablation"):
        PruneOptions.from_config(make_cfg(tmp_path, "prune.ablation=shuffle").prune)
    crit = instantiate(make_cfg(tmp_path, "pruner=snip").pruner)
    hashes = {a: config_hash(make_cfg(tmp_path, "pruner=snip", f"prune.ablation={a}"), crit)
              for a in ("none", "layer_shuffle", "reinit")}
    assert len(set(hashes.values())) == 3
    # Runs from before the option existed keep their directory: `none` hashes like a config without the key.
    legacy = make_cfg(tmp_path, "pruner=snip", "~prune.ablation")
    assert "ablation" not in legacy.prune and config_hash(legacy, crit) == hashes["none"]


def test_results_record_the_ablation_and_effective_sparsity(tmp_path):
    res = run_pipeline(make_cfg(tmp_path, "pruner=snip", "prune.ablation=layer_shuffle", "sparsity=0.98",
                                "train=quick", "train.epochs=1", "train.steps_per_epoch=2", "train.batch_size=16"))
    saved = json.loads(Path(res["run_dir"], "results.json").read_text())
    assert saved["ablation"] == "layer_shuffle" and 0.0 <= saved["ablation_overlap"] < 0.5
    assert saved["effective_sparsity"] >= saved["sparsity_achieved"]
    assert set(saved["effective_layer_density"]) == set(saved["layer_density"])
    assert all(saved["effective_layer_density"][n] <= d for n, d in saved["layer_density"].items())
    assert set(saved["collapsed_layers"]) <= set(saved["effectively_empty_layers"])


def test_reinitialize_leaves_the_global_random_state_alone():
    from pai.pruning.ablations import reinitialize

    def build():
        return torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.Linear(3, 2))

    torch.manual_seed(0)
    model = build()
    state = torch.get_rng_state()
    before = [p.detach().clone() for p in model.parameters()]
    reinitialize(model, build, seed=0)
    assert torch.equal(state, torch.get_rng_state())
    assert not torch.equal(model[0].weight, before[0]) and not torch.equal(model[2].bias, before[-1])
