"""The score cache inside `score_and_mask`, and the scoring samples it is keyed by."""

from __future__ import annotations

import copy

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict
from test_criteria_common import ROOT, one_thread  # noqa: F401 (autouse fixture)

import pai.files
import pai.pruning.pipeline as pipeline
from pai.errors import PaiConfigError
from pai.pruning.cache import ScoreCache, cache_identity
from pai.pruning.criteria.base import Criterion
from pai.pruning.masks import prunable_weights
from pai.pruning.options import PruneOptions
from pai.pruning.pipeline import score_and_mask

CPU = torch.device("cpu")
TINY = ["dataset=synthetic", "dataset.image_size=8", "dataset.num_train=80", "dataset.num_classes=4",
        "model=resnet20", "model.width=0.25", "prune.samples_per_class=3"]


def make_cfg(tmp_path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*TINY, f"out_root={tmp_path}", *overrides])


def build(cfg):
    torch.manual_seed(cfg.seed)
    model = instantiate(cfg.model)
    return model, instantiate(cfg.dataset), list(prunable_weights(model))


def run(cfg, criterion=None, sparsity=0.9):
    model, data, names = build(cfg)
    criterion = criterion or instantiate(cfg.pruner)
    options = PruneOptions.from_config(cfg.prune)
    masks, info = score_and_mask(cfg, options, criterion, model, data, CPU, names, sparsity, warmup_batch_size=32)
    return masks, info, model


@pytest.fixture
def count_scores(monkeypatch):
    """Count calls of a criterion class's `score` and record the samples it got (patched on the class: an
    instance attribute would show up in `knobs()` and change the cache key)."""
    calls = []

    def spy(cls):
        original = cls.score

        def score(self, model, inputs, targets):
            calls.append((inputs.clone(), targets.clone()))
            return original(self, model, inputs, targets)

        monkeypatch.setattr(cls, "score", score)
        return calls

    return spy


def test_a_sweep_over_sparsities_scores_once(tmp_path, count_scores):
    cfg = make_cfg(tmp_path, "pruner=fisher_diag")
    calls = count_scores(type(instantiate(cfg.pruner)))
    first, info1, _ = run(cfg, sparsity=0.5)
    second, info2, _ = run(cfg, sparsity=0.9)
    assert not info1["cache_hit"] and info2["cache_hit"] and len(calls) == 1
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    with open_dict(cfg):
        cfg.prune.cache = False
    fresh, info3, _ = run(cfg, sparsity=0.9)
    assert not info3["cache_hit"] and len(calls) == 2
    assert all(torch.equal(second[n], fresh[n]) for n in fresh)
    assert sum(int(m.sum()) for m in first.values()) > sum(int(m.sum()) for m in second.values())


def test_key_covers_what_scores_depend_on(tmp_path):
    base = make_cfg(tmp_path, "pruner=hutch_diag")
    model, _, _ = build(base)

    def key(*overrides: str, net=model) -> str:
        cfg = make_cfg(tmp_path, "pruner=hutch_diag", *overrides)
        options = PruneOptions.from_config(cfg.prune)
        return ScoreCache.key(cache_identity(cfg, options, instantiate(cfg.pruner), net, 32))

    k0 = key()
    for same in ("sparsity=0.5", "prune.scope=layer", "prune.invert=true", "prune.prune_classifier=true",
                 "prune.rounds=1", "data_root=/elsewhere", f"out_root={tmp_path}/other"):
        assert key(same) == k0, same
    for changed in ("seed=1", "pruner.num_probes=3", "pruner.temperature=1", "prune.samples_per_class=2",
                    "prune.augment=false", "prune.score_batch_size=2", "prune.bn_warmup=true",
                    "dataset.noise=10", "model.width=0.5", "pruner.hessian_params=prunable"):
        assert key(changed) != k0, changed
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    assert key(net=other) != k0
    warm = make_cfg(tmp_path, "pruner=hutch_diag", "prune.bn_warmup=true")
    crit = instantiate(warm.pruner)
    options = PruneOptions.from_config(warm.prune)
    keys = {ScoreCache.key(cache_identity(warm, options, crit, model, b)) for b in (32, 64)}  # warmup batch size
    assert len(keys) == 2


def test_one_entry_serves_runs_with_and_without_the_classifier(tmp_path, count_scores):
    """Classifier pruning is not in the key, so the entry holds every scored weight, the classifier's too."""
    calls = count_scores(type(instantiate(make_cfg(tmp_path, "pruner=snip").pruner)))
    without, _, _ = run(make_cfg(tmp_path, "pruner=snip"))
    cfg = make_cfg(tmp_path, "pruner=snip", "prune.prune_classifier=true")
    model, data, _ = build(cfg)
    names = list(prunable_weights(model, prune_classifier=True))
    masks, info = score_and_mask(cfg, PruneOptions.from_config(cfg.prune), instantiate(cfg.pruner), model, data, CPU,
                                 names, 0.9, warmup_batch_size=32)
    assert info["cache_hit"] and len(calls) == 1 and set(masks) == set(without) | {"linear.weight"}


def test_multi_round_scoring_and_cache_off_write_nothing(tmp_path, count_scores):
    for extra in (["prune.rounds=2"], ["prune.cache=false"], ["pruner=synflow", "prune.rounds=3"]):
        cfg = make_cfg(tmp_path, "pruner=snip", *extra)
        _, info, _ = run(cfg)
        _, info, _ = run(cfg)
        assert not info["cache_hit"]
    assert not list((tmp_path / "cache").glob("*.pt"))


def test_warmed_buffers_come_back_from_the_cache(tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path, "pruner=snip", "prune.bn_warmup=true")
    warmups = []
    original = pipeline.bn_warmup
    monkeypatch.setattr(pipeline, "bn_warmup", lambda *a, **k: warmups.append(1) or original(*a, **k))
    masks1, info1, model1 = run(cfg)
    masks2, info2, model2 = run(cfg)
    assert warmups == [1] and info2["cache_hit"] and info1["warmup_seconds"] > 0
    untouched, _, _ = build(cfg)
    bn = "bn1.running_mean"
    assert not torch.equal(model1.state_dict()[bn], untouched.state_dict()[bn])  # the warmup did something
    for k, v in model1.state_dict().items():  # a hit leaves the model as a miss does
        assert torch.equal(v, model2.state_dict()[k]), k
    assert all(torch.equal(masks1[n], masks2[n]) for n in masks1)


def test_writes_are_atomic_and_bad_files_are_set_aside(tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path, "pruner=grad_norm")
    model, _, _ = build(cfg)
    identity = cache_identity(cfg, PruneOptions.from_config(cfg.prune), instantiate(cfg.pruner), model, 32)
    store = ScoreCache(tmp_path / "cache")

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(pai.files.os, "replace", crash)
    with pytest.raises(OSError):
        store.save(identity, {"w": torch.ones(3)}, None)
    assert list((tmp_path / "cache").iterdir()) == []  # neither a torn entry nor a temporary file
    monkeypatch.undo()
    store.path(identity).write_bytes(b"torn")
    assert store.load(identity) is None
    (aside,) = (tmp_path / "cache").glob("*.pt.corrupt-*")  # kept for a look, never deleted
    assert aside.read_bytes() == b"torn" and not store.path(identity).exists()
    _, info, _ = run(cfg)
    assert not info["cache_hit"] and store.load(identity) is not None  # rescored and rewritten whole
    other = dict(identity, seed=99)
    store.path(identity).rename(store.path(other))  # same file name, another identity inside: a miss
    assert store.load(other) is None and len(list((tmp_path / "cache").glob("*.pt.corrupt-*"))) == 2


class NaNScores(Criterion):
    name = "nan_scores"

    def score(self, model, inputs, targets):
        return {n: torch.full_like(w, float("nan")) for n, w in self.weights(model).items()}


def test_nan_scores_are_one_clear_error_and_never_cached(tmp_path):
    cfg = make_cfg(tmp_path)
    with pytest.raises(PaiConfigError, match="pruner=nan_scores produced NaN/inf"):
        run(cfg, NaNScores())
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.pt"))
    with open_dict(cfg):
        cfg.prune.rounds = 3
    with pytest.raises(PaiConfigError, match="nan_scores"):
        run(cfg, NaNScores())


def test_scoring_samples_are_seeded_and_class_balanced(tmp_path, count_scores):
    cfg = make_cfg(tmp_path, "pruner=grad_norm", "prune.cache=false")
    calls = count_scores(type(instantiate(cfg.pruner)))
    run(cfg)
    run(cfg)
    run(make_cfg(tmp_path, "pruner=grad_norm", "prune.cache=false", "seed=1"))
    (x0, y0), (x1, y1), (x2, _) = calls
    assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert not torch.equal(x0, x2)
    assert torch.bincount(y0, minlength=4).tolist() == [3, 3, 3, 3]


def test_cache_lock_makes_a_second_holder_wait(tmp_path):
    """The entry lock is exclusive across open files (flock), so a second job blocks until the first is done."""
    import threading

    cache = ScoreCache(tmp_path)
    identity = {"k": 1}
    order: list[str] = []
    with cache.lock(identity):
        def second() -> None:
            with cache.lock(identity):
                order.append("second")

        t = threading.Thread(target=second)
        t.start()
        t.join(timeout=0.5)
        assert t.is_alive(), "the second holder got the lock while the first held it"
        order.append("first done")
    t.join(timeout=5)
    assert order == ["first done", "second"]
    with cache.lock({"k": 2}):  # another entry's lock is independent
        pass
