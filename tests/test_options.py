"""The `prune:` node is validated (PruneOptions) before any work: one error naming the key, nothing written."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from pai.errors import PaiConfigError
from pai.pruning.options import PruneOptions
from pai.run import run

ROOT = Path(__file__).resolve().parents[1]


def make_cfg(out_root: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=["dataset=synthetic", "logger=none", f"out_root={out_root}", *overrides])


def test_the_default_node_is_valid_and_typed(tmp_path):
    options = PruneOptions.from_config(make_cfg(tmp_path).prune)
    assert options == PruneOptions()
    assert options.rounds_for(100) == 100 and PruneOptions(rounds=3).rounds_for(100) == 3
    assert options.schedule is None and options.schedule_for("seed_inverted") == "seed_inverted"
    assert PruneOptions(schedule="linear").schedule_for("seed_inverted") == "linear"


def test_a_null_schedule_hashes_as_the_schedule_that_runs(tmp_path):
    """prune.schedule: null stands for the criterion's default, so runs from when the node said `exponential`
    keep their directories, and the seed-schedule variant hashes as seed_inverted."""
    from hydra.utils import instantiate

    from pai.results import config_hash

    def hashed(*overrides: str) -> str:
        cfg = make_cfg(tmp_path, *overrides)
        return config_hash(cfg, instantiate(cfg.pruner))

    assert hashed("pruner=synflow") == hashed("pruner=synflow", "prune.schedule=exponential")
    assert hashed("pruner=snip") == hashed("pruner=snip", "prune.schedule=exponential")
    assert hashed("pruner=synflow") != hashed("pruner=synflow", "prune.schedule=linear")
    assert hashed("pruner=synflow_seed") == hashed("pruner=synflow_seed", "prune.schedule=seed_inverted")
    assert hashed("pruner=synflow_seed") != hashed("pruner=synflow_seed", "prune.schedule=exponential")


@pytest.mark.parametrize(
    ("override", "key"),
    [("prune.rounds=0", "prune.rounds"), ("prune.rounds=-1", "prune.rounds"), ("prune.rounds=1.5", "prune.rounds"),
     ("prune.schedule=foo", "prune.schedule"), ("prune.scope=row", "prune.scope"),
     ("prune.samples_per_class=0", "prune.samples_per_class"), ("prune.score_batch_size=0", "prune.score_batch_size"),
     ("prune.invert=maybe", "prune.invert"), ("prune.bn_warmup=1", "prune.bn_warmup"),
     ("+prune.roundz=2", "prune.roundz")],
)
def test_a_bad_prune_option_fails_before_any_work(tmp_path, override, key):
    # A one-round criterion with a bad schedule used to train silently: the schedule was never read.
    with pytest.raises(PaiConfigError, match=key.replace(".", r"\.")):
        run(make_cfg(tmp_path, "pruner=magnitude", override))
    assert not any(tmp_path.iterdir()), "a config that fails validation must leave nothing behind"
