"""The paper presets in conf/experiment/: each composes, expands to its full grid (compose only), and runs one
tiny step on synthetic data of its dataset's shape."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import REPO_ROOT, all_results

from pai.conf_groups import group_options
from pai.report.tables import DEFECT_REPRODUCTIONS

CRITERIA = group_options(REPO_ROOT / "conf", "pruner")  # the one list of criteria: the files in conf/pruner/
# The grids leave out the labelled reproductions of the reference code's defects (docs/departures.md).
GRID_CRITERIA = [c for c in CRITERIA if c not in DEFECT_REPRODUCTIONS]
PAPER_SPARSITIES = [0.8, 0.9, 0.95, 0.98, 0.99]
SEEDS = [0, 42, 123]

# preset: (dataset, model target, train recipe, num_classes, in_channels, image_size, sparsities)
PRESETS = {
    "resnet18_cifar10": ("cifar10", "cifar_resnet.resnet18", "paper", 10, 3, 32, PAPER_SPARSITIES),
    "vgg19_cifar100": ("cifar100", "vgg.vgg19", "paper", 100, 3, 32, PAPER_SPARSITIES),
    "resnet18_tinyimagenet": ("tinyimagenet", "cifar_resnet.resnet18_tiny", "paper", 200, 3, 64, PAPER_SPARSITIES),
    "vit_imagenet": ("imagenet", "vit.vit_tiny", "vit", 1000, 3, 224, PAPER_SPARSITIES),
    "fmnist_validation": ("fashion_mnist", "he_resnet.resnet20", "quick", 10, 1, 28, [0.9, 0.98, 0.995]),
}


def _compose(overrides: list[str], hydra_node: bool = True):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=hydra_node)


def expand_sweep(cfg) -> list[list[str]]:
    """The jobs Hydra's basic sweeper makes of `hydra.sweeper.params` (same parser, same expansion; the config
    loader expands `glob(*)` over a group's options)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra._internal.utils import create_config_search_path
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(REPO_ROOT / "conf")))
    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    overrides = OverridesParser.create(config_loader=loader).parse_overrides(params)
    (batch,) = BasicSweeper.split_arguments(overrides, None)
    return batch


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_to_its_full_grid(preset):
    dataset, model, recipe, classes, channels, size, sparsities = PRESETS[preset]
    cfg = _compose([f"experiment={preset}"])
    assert cfg.experiment_name == preset
    assert cfg.dataset.name == dataset and cfg.model._target_ == f"pai.models.{model}"
    assert (cfg.dataset.num_classes, cfg.dataset.in_channels, cfg.dataset.image_size) == (classes, channels, size)
    assert cfg.hydra.runtime.choices["train"] == recipe
    jobs = expand_sweep(cfg)
    assert len(jobs) == len(GRID_CRITERIA) * len(sparsities) * len(SEEDS) * 2  # 540 (fmnist: 324)
    grid = {tuple(sorted(o.lower() for o in job)) for job in jobs}  # Hydra writes the bools as False/True
    expected = {tuple(sorted([f"pruner={p}", f"sparsity={s}", f"seed={n}", f"prune.bn_warmup={w}"]))
                for p, s, n, w in itertools.product(GRID_CRITERIA, sparsities, SEEDS, ["false", "true"])}
    assert grid == expected


def test_paper_presets_use_the_paper_recipe():
    for preset in ("resnet18_cifar10", "vgg19_cifar100", "resnet18_tinyimagenet"):
        t = _compose([f"experiment={preset}"]).train
        assert (t.epochs, t.batch_size, t.optimizer.lr, t.optimizer.momentum, t.optimizer.weight_decay) == (
            160, 512, 0.03, 0.9, 5e-4)
        assert list(t.scheduler.milestones) == [80, 120] and t.scheduler.gamma == 0.2 and t.precision == "fp32"
    vit = _compose(["experiment=vit_imagenet"])
    assert vit.train.optimizer._target_ == "torch.optim.AdamW" and vit.train.label_smoothing == 0.1
    assert vit.model.patch_size == 16
    fm = _compose(["experiment=fmnist_validation"])
    assert (fm.model.width, fm.train.batch_size, fm.train.epochs) == (0.5, 256, 2)


def test_the_criteria_are_the_pruner_folder():
    """The presets sweep `glob(*,exclude=synflow_seed)` over conf/pruner/, so the list is the folder, the dense
    baseline included (a new yaml there joins every grid and must join the report's order too)."""
    from pai.report.tables import CRITERION_ORDER

    assert {"none", "snip", "hutch_diag", "fisher_mc"} <= set(CRITERIA)
    assert sorted(CRITERION_ORDER) == CRITERIA and len(GRID_CRITERIA) == 18


WARMUP_SMOKE = ("resnet18_cifar10", "fmnist_validation")
# A few criteria families, where scoring stays cheap (10 samples, small inputs); magnitude/random elsewhere.
SMOKE_PRUNER = {"resnet18_cifar10": "snip", "vgg19_cifar100": "magnitude", "resnet18_tinyimagenet": "random",
                "vit_imagenet": "magnitude", "fmnist_validation": "hts"}


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_smoke_one_step(preset, tmp_path):
    """One training step of the preset's model/recipe on synthetic data of its dataset's shape, with scoring and
    masks (BN warmup on the two small-input CNN presets only: a full pass costs seconds at 64/224 px)."""
    from pai.run import run

    _, _, _, classes, channels, size, sparsities = PRESETS[preset]
    cfg = _compose([
        f"experiment={preset}", "dataset=synthetic", f"dataset.num_classes={classes}",
        f"dataset.in_channels={channels}", f"dataset.image_size={size}", f"dataset.num_train={max(64, classes)}",
        "dataset.num_test=16", "train.epochs=1", "train.steps_per_epoch=1", "train.batch_size=8",
        "train.eval_batch_size=16", "prune.samples_per_class=1", f"pruner={SMOKE_PRUNER[preset]}",
        f"sparsity={sparsities[1]}", f"prune.bn_warmup={preset in WARMUP_SMOKE}", "logger=none", f"out_root={tmp_path}",
    ], hydra_node=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = run(cfg)
    finally:
        torch.set_num_threads(threads)
    assert res["status"] == "done" and len(res["history"]) == 1
    assert res["sparsity_achieved"] == pytest.approx(sparsities[1], abs=1e-4)
    assert res["wandb_group"] == preset and res["pruner"] == SMOKE_PRUNER[preset]


def test_preset_grid_narrowed_from_the_command_line(run_launch, tmp_path):
    """A command-line value replaces the preset's list: a 2-job slice of the paper grid, through launch.py -m."""
    out = tmp_path / "out"
    proc = run_launch(["-m", "experiment=resnet18_cifar10", "dataset=synthetic", "dataset.num_train=64",
                       "dataset.num_test=16", "train.epochs=1", "train.steps_per_epoch=1", "train.batch_size=8",
                       "prune.samples_per_class=1", "pruner=none,magnitude", "sparsity=0.9", "seed=0",
                       "prune.bn_warmup=true", "logger=none"], out)
    assert proc.returncode == 0, proc.output
    assert "Launching 2 jobs" in proc.output
    results = all_results(out)
    assert sorted(r["pruner"] for r in results) == ["magnitude", "none"]
    assert all(r["status"] == "done" and r["wandb_group"] == "resnet18_cifar10" for r in results)


# The paper's criteria, the reference code's grasp_reference and synflow_seed, ggn_diag and obd.
STUDY_CRITERIA = [c for c in CRITERIA if c not in ("ggn_taylor", "fisher_mc")]


def test_fmnist_study_grid_and_its_reuse_of_the_validation_runs():
    from hydra.utils import instantiate

    from pai.results import config_hash

    cfg = _compose(["experiment=fmnist_study"])
    assert cfg.experiment_name == "fmnist_study" and not cfg.prune.bn_warmup
    grid = {tuple(sorted(job)) for job in expand_sweep(cfg)}
    assert grid == {tuple(sorted([f"pruner={p}", f"sparsity={s}", f"seed={n}", f"prune.ablation={a}"]))
                    for p, s, n, a in itertools.product(STUDY_CRITERIA, [0.9, 0.98], [0, 42, 123, 1, 2],
                                                        ["none", "layer_shuffle"])}
    # The same model, recipe and prune node as the validation without warmup: its runs have the same hash.
    for pruner in ("snip", "none"):
        study = _compose(["experiment=fmnist_study", f"pruner={pruner}", "seed=42", "sparsity=0.98"], False)
        valid = _compose(["experiment=fmnist_validation", f"pruner={pruner}", "seed=42", "sparsity=0.98",
                          "prune.bn_warmup=false"], False)
        crit = instantiate(study.pruner)
        assert config_hash(study, crit) == config_hash(valid, crit)
    shuffled = _compose(["experiment=fmnist_study", "pruner=snip", "prune.ablation=layer_shuffle"], False)
    assert config_hash(shuffled, instantiate(shuffled.pruner)) != config_hash(
        _compose(["experiment=fmnist_study", "pruner=snip"], False), instantiate(shuffled.pruner))


def test_make_fmnist_study_walks_the_same_grid_backwards():
    """The second job of `make fmnist-study` must cover the preset's grid in the opposite order."""
    cfg = _compose(["experiment=fmnist_study"])
    text = (REPO_ROOT / "Makefile").read_text()
    backwards = next(line for line in text.splitlines() if line.startswith("STUDY_BACKWARDS :="))
    values = dict(item.split("=", 1) for item in backwards.split(":=", 1)[1].split())
    assert set(values) == set(cfg.hydra.sweeper.params)
    for key, forward in cfg.hydra.sweeper.params.items():
        assert values[key].split(",") == str(forward).split(",")[::-1], key
    pruners = next(line for line in text.splitlines() if line.startswith("STUDY_PRUNERS :="))
    assert pruners.split(":=")[1].strip() == cfg.hydra.sweeper.params.pruner
