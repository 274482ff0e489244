"""Every option is checked before any work: a bad value fails with one PaiConfigError naming its key, and leaves
nothing in runs/ (no `failed` run directory), also when the check can only be made inside the pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from pai.errors import PaiConfigError
from pai.run import run

ROOT = Path(__file__).resolve().parents[1]
TINY = ["dataset=synthetic", "dataset.image_size=8", "dataset.in_channels=1", "dataset.num_train=64",
        "dataset.num_test=32", "model=resnet20", "model.width=0.25", "train=quick", "train.epochs=1",
        "train.batch_size=32", "prune.samples_per_class=2", "logger=none"]


def _cfg(out_root: Path, overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*TINY, f"out_root={out_root}", *overrides])


# (overrides, what the one-line message must contain)
BAD = {
    "float seed": (["seed=1.5"], "seed=1.5 must be an integer"),
    "string seed": (["seed=abc"], "seed='abc' must be an integer"),
    "bool seed": (["seed=true"], "seed=True must be an integer"),
    "huge seed": (["seed=18446744073709551616"], "seed=18446744073709551616 must fit"),
    "pruner seed": (["pruner=random", "pruner.seed=0.5"], "pruner.seed=0.5 must be an integer"),
    "zero steps": (["train.steps_per_epoch=0"], "train.steps_per_epoch=0 must be an integer ≥ 1"),
    "negative steps": (["train.steps_per_epoch=-1"], "train.steps_per_epoch=-1 must be an integer ≥ 1"),
    "float epochs": (["train.epochs=1.5"], "train.epochs=1.5 must be an integer ≥ 1"),
    "string batch": (["train.batch_size=abc"], "train.batch_size='abc' must be an integer ≥ 1"),
    "zero eval batch": (["train.eval_batch_size=0"], "train.eval_batch_size=0 must be an integer ≥ 1"),
    "label smoothing": (["train.label_smoothing=2"], "train.label_smoothing=2 must be a number in [0, 1)"),
    "zero width": (["model.width=0"], "model.width=0 must be a number > 0"),
    "negative width": (["model.width=-1"], "model.width=-1 must be a number > 0"),
    "outputs": (["model.num_classes=5"], "model.num_classes: the model has 5 outputs"),
    "keeps nothing": (["sparsity=0.999999"], "sparsity=0.999999 keeps none of the"),
    "keeps nothing per layer": (["sparsity=0.9999", "prune.scope=layer"], "sparsity=0.9999 keeps none"),
    "zero rounds": (["prune.rounds=0"], "prune.rounds=0 must be an integer ≥ 1"),
    "unknown schedule": (["pruner=synflow", "prune.schedule=foo"], "prune.schedule='foo'"),
    "unknown scope": (["prune.scope=foo"], "prune.scope='foo'"),
    # found only while the data loads, inside the pipeline: the run directory it made is removed again
    "too few images": (["dataset.num_train=0"], "dataset.num_train=0"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_option_is_refused_naming_its_key_and_leaves_no_run(tmp_path, case):
    overrides, message = BAD[case]
    with pytest.raises(PaiConfigError) as err:
        run(_cfg(tmp_path, overrides))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not list(tmp_path.glob("runs/*")), "nothing may be left in runs/"


def test_an_extreme_sparsity_that_keeps_weights_is_accepted(tmp_path):
    """The largest sparsity that still keeps one weight of 16,900 passes the check (and trains)."""
    res = run(_cfg(tmp_path, ["sparsity=0.99994", "train.steps_per_epoch=1"]))
    assert res["status"] == "done" and res["sparsity_achieved"] == pytest.approx(1 - 1 / 16_900)


def test_dense_baseline_ignores_a_sparsity_that_would_keep_nothing(tmp_path):
    res = run(_cfg(tmp_path, ["pruner=none", "sparsity=0.999999", "train.steps_per_epoch=1"]))
    assert res["status"] == "done" and res["sparsity_achieved"] == 0.0


def test_a_config_error_inside_the_pipeline_keeps_an_existing_run(tmp_path, monkeypatch):
    """Only a directory this attempt made is removed: a run that exists already (e.g. interrupted, with a
    checkpoint to resume) is kept, and records the failure."""
    cfg = _cfg(tmp_path, ["train.steps_per_epoch=1"])
    first = run(cfg)
    (Path(first["run_dir"]) / "results.json").unlink()  # as if it had been interrupted after its checkpoint

    def data_gone(node):
        raise PaiConfigError("dataset=synthetic: data not found")

    monkeypatch.setattr("pai.run.build_dataset", data_gone)
    with pytest.raises(PaiConfigError, match="data not found"):
        run(cfg)
    assert Path(first["run_dir"], "last.pt").exists()
    assert "data not found" in Path(first["run_dir"], "results.json").read_text()
