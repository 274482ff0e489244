"""One run: seed → data → model → [BN warmup] → score → mask → masked training → test → results.json."""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
import traceback
from pathlib import Path
from typing import cast

import torch
from omegaconf import DictConfig

from pai import distributed, files, run_files
from pai.build import build
from pai.data import build_dataset
from pai.data.batching import check_batch_size
from pai.device import resolve_device
from pai.errors import PaiConfigError
from pai.pruning.ablations import reinitialized_state
from pai.pruning.connectivity import effective_stats
from pai.pruning.criteria.base import Criterion
from pai.pruning.mask_calculator import Masks, check_keeps_weights, check_sparsity
from pai.pruning.masks import achieved_sparsity, apply_masks, collapsed_layers, layer_density, prunable_weights
from pai.pruning.options import PruneOptions
from pai.pruning.pipeline import fresh_model, score_and_mask
from pai.results import REUSABLE_FROM_SCHEMA, RunPaths, RunResult, read_results, run_paths, write_results
from pai.seeding import check_seed, seed_everything
from pai.threads import set_threads
from pai.tracking import Tracker, run_config
from pai.train.loop import train
from pai.train.recipe import Recipe

log = logging.getLogger(__name__)


def build_model(cfg: DictConfig, data) -> torch.nn.Module:
    model = build(cfg.model, "model")  # with model.init_from, the builder loads those weights
    model.eval()
    with torch.no_grad():
        x, _ = next(iter(data.test_batches(2, torch.device("cpu"))))
        out = model(x)
    _check_outputs(out.shape[-1], data.num_classes, data.name)
    return model


def _check_outputs(outputs: int, num_classes: int, dataset: str) -> None:
    if outputs != num_classes:
        raise PaiConfigError(f"model.num_classes: the model has {outputs} outputs but dataset={dataset} has "
                             f"{num_classes} classes")


def check_model(cfg: DictConfig, options: PruneOptions, sparsity: float | None) -> None:
    """The model's options, before any work: it is built on the meta device (no memory, no random draws), its
    outputs must match dataset.num_classes, and `sparsity` (None for the dense baseline) must keep a weight."""
    with torch.device("meta"):
        model = build(cfg.model, "model").eval()
        size = cfg.dataset.get("image_size")
        try:
            outputs = model(torch.zeros(2, cfg.dataset.in_channels, size, size)).shape[-1] if size else None
        except Exception as exc:  # an op without a meta kernel; the real build in the pipeline has the final word
            log.debug("model check on the meta device skipped: %s", exc)
            outputs = None
    if outputs is not None:
        _check_outputs(outputs, cfg.dataset.num_classes, cfg.dataset.name)
    if sparsity is not None:
        sizes = {n: w.numel() for n, w in prunable_weights(model, options.prune_classifier).items()}
        check_keeps_weights(sizes, sparsity, options.scope)


def run(cfg: DictConfig) -> dict:
    """Carry one configuration from data to results; a finished run is skipped, an interrupted one resumes.
    Returns the run's `RunResult.to_dict()` (what its results.json holds).

    Under torchrun or in a multi-task SLURM job (train.distributed=auto) every process calls this: they join one
    process group, rank 0 decides skip/resume and scores, and all ranks train the model data-parallel.
    """
    check_seed(cfg.seed)  # first: the pruner's own `seed: ${seed}` would otherwise name pruner.seed
    set_threads(cfg.get("threads"))
    criterion: Criterion = build(cfg.pruner, "pruner")
    sparsity = check_sparsity(cfg.sparsity) if criterion.prunes else 0.0
    options = PruneOptions.from_config(cfg.prune)
    if options.prune_classifier and getattr(criterion, "hessian_params", None) == "prunable":
        raise PaiConfigError("pruner.hessian_params=prunable leaves the classifier out of the Hessian products, so "
                             "prune.prune_classifier=true has no score for it: use all or prunable_classifier")
    if options.mask_from is not None and not criterion.prunes:
        raise PaiConfigError(f"prune.mask_from needs a pruning criterion: pruner={criterion.name} trains the dense "
                             "network (name the mask's criterion, e.g. pruner=snip)")
    device = resolve_device(cfg.device)
    recipe: Recipe = build(cfg.train, "train")  # validates the train keys before a process group is joined
    check_model(cfg, options, sparsity if criterion.prunes else None)
    env = distributed.wanted(recipe.distributed)
    with distributed.session(env, device, recipe.dist_timeout_s, recipe.dist_wait_timeout_s) as device:
        return _run(cfg, options, criterion, recipe, sparsity, device)


def _run(cfg: DictConfig, options: PruneOptions, criterion: Criterion, recipe: Recipe, sparsity: float,
         device: torch.device) -> dict:
    paths = run_paths(cfg, criterion)
    # Ranks started with different overrides would train different runs into one directory.
    distributed.agree(paths.hash, "the run config (config hash)")
    check_batch_size(recipe.batch_size, distributed.world_size())  # before any work, on every rank
    main = distributed.is_main()  # rank 0 alone writes results.json, checkpoints and W&B
    tracker = build(cfg.logger, "logger") if main else Tracker()
    created = main and not paths.dir.exists()  # a config that fails a check later removes what it made
    lock = paths.try_lock() if main else None
    decision: tuple[str, RunResult | str | None] = ("run", None)
    if main:
        if lock is None:  # another job is running this very config right now: do not train it twice
            decision = ("busy", paths.lock.read_text().strip())
        # Read (and, if invalid, set aside) only under the lock: a finished run is skipped, anything else reruns.
        elif (previous := read_results(paths.results)) is not None and previous.reusable:
            lock.close()
            decision = ("done", previous)
        elif previous is not None and previous.finished:  # trained by an older pai: its last.pt must not resume
            for stale in (paths.results, paths.checkpoint):
                if stale.exists():
                    files.set_aside(stale, f"finished under results schema {previous.schema_version} < "
                                           f"{REUSABLE_FROM_SCHEMA}, which the current code does not reproduce; "
                                           "the run is run again")
    # Every rank follows rank 0's decision; the broadcast is also the barrier after which all ranks may read
    # rank 0's last.pt (the resume point).
    decision = distributed.broadcast_object(decision, "the skip/resume decision")
    if decision[0] == "busy":
        log.warning("skipping run %s: another job is running it (%s)", paths.dir, decision[1])
        return RunResult(**paths.identity(cfg, criterion), status="busy", skipped=True).to_dict()
    if decision[0] == "done":
        previous = cast(RunResult, decision[1])
        log.info("skipping finished run %s (test_acc %.4f)", paths.dir, previous.test_acc)
        return {**previous.to_dict(), "skipped": True}
    result = RunResult(**paths.identity(cfg, criterion), sparsity=sparsity, world_size=distributed.world_size(),
                       **run_files.record(cfg))
    failed = True
    t_start = time.perf_counter()
    try:
        if main:
            run_files.write_config(paths.dir, cfg)
        tracker.start(name=paths.name, config=run_config(cfg, criterion.prunes), group=paths.group,
                      job_type=str(result.row_name()))
        result.update(_pipeline(cfg, options, criterion, recipe, sparsity, device, paths, tracker))
        result.status = "done"
        if main:
            write_results(paths.results, result)
        tracker.summary(result)
        failed = False
        log.info("finished %s sparsity %g seed %s: test_acc %.4f, %d collapsed layer(s), %.0f s, %s",
                 result.label or criterion.name, sparsity, cfg.seed, result.test_acc,
                 len(result.collapsed_layers or []), time.perf_counter() - t_start, paths.dir)
        return result.to_dict()
    except BaseException as exc:
        # SystemExit/KeyboardInterrupt: preempted or stopped (submitit exits after requeueing); the rerun resumes
        status = "failed" if isinstance(exc, Exception) else "interrupted"
        result.update({"status": status, "error": f"{type(exc).__name__}: {exc}",
                       "traceback": traceback.format_exc()})
        if created and isinstance(exc, PaiConfigError):  # a bad config (e.g. missing data) leaves no run behind
            _remove_run_dir(paths.dir, Path(cfg.out_root) / "runs")
        elif main:
            write_results(paths.results, result)
        with contextlib.suppress(Exception):
            tracker.summary(result)
        raise
    finally:
        try:
            tracker.finish(failed=failed)
        finally:
            if lock is not None:
                lock.close()


def _remove_run_dir(run_dir: Path, runs_root: Path) -> None:
    """Delete a run directory made by this attempt, and the folders above it that are left empty."""
    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in run_dir.parents:
        if parent == runs_root or runs_root not in parent.parents:
            break
        try:
            parent.rmdir()  # only when empty: a sibling run keeps it
        except OSError:
            break


def _save_initial(cfg: DictConfig, options: PruneOptions, criterion: Criterion, model: torch.nn.Module,
                  paths: RunPaths) -> None:
    """init.safetensors: the weights training starts from, before BN warmup and pruning. Under
    prune.ablation=reinit those are the redrawn parameters (the same seeded draw the ablation makes after
    scoring), not the ones the mask was scored on (the seeded build, or model.init_from's weights)."""
    content, state = "initial weights (before BN warmup and pruning)", model.state_dict()
    if criterion.prunes and options.ablation == "reinit":
        content = "initial weights after prune.ablation=reinit (before BN warmup and pruning)"
        state = reinitialized_state(model, lambda: fresh_model(cfg), cfg.seed)
    run_files.save_tensors(paths.dir / run_files.INIT, state, {"content": content, "run": paths.name})


def _pipeline(cfg, options: PruneOptions, criterion: Criterion, recipe: Recipe, sparsity: float, device,
              paths: RunPaths, tracker) -> dict:
    seed_everything(cfg.seed)
    with distributed.rank0_first("loading the dataset"):  # a download (dataset.download=true) happens once
        data = build_dataset(cfg.dataset)
    model = build_model(cfg, data).to(device)
    weights = prunable_weights(model, options.prune_classifier)
    names = list(weights)
    info: dict = {"warmup_seconds": 0.0, "score_seconds": 0.0,
                  "num_prunable": sum(w.numel() for w in weights.values())}
    state = paths.checkpoint_state()
    main = distributed.is_main()
    if main and (state is None or not (paths.dir / run_files.INIT).exists()):  # a resumed run rebuilds the same
        _save_initial(cfg, options, criterion, model, paths)
    masks = None
    if state is not None:  # resuming: the masks (and the weights) come from the checkpoint
        masks, info = state["masks"], state["prune_info"]
    elif criterion.prunes:
        def prune() -> tuple[Masks, dict]:
            masks, timings = score_and_mask(cfg, options, criterion, model, data, device, names, sparsity,
                                            recipe.batch_size)
            apply_masks(model, masks)
            return {n: m.cpu() for n, m in masks.items()}, {**info, **timings}

        # Scoring is done once, by rank 0 (which also owns the score cache); the others receive its masks and
        # its model (pruned weights, BN statistics after warmup).
        cpu_masks, info = distributed.run_on_rank0(prune, "pruning (BN warmup, scoring, masks)")
        masks = {n: m.to(device) for n, m in cpu_masks.items()}
        distributed.broadcast_module_state(model, "the pruned model broadcast")
    if masks is not None:
        # Every rank logs the checksum of the masks it trains with, and the run stops unless they agree.
        info["mask_checksum"] = distributed.checksum(masks)
        if main and (state is None or not (paths.dir / run_files.MASKS).exists()):
            run_files.save_masks(paths.dir / run_files.MASKS, masks, {
                "run": paths.name, "pruner": criterion.name, "sparsity": sparsity,
                "mask_checksum": info["mask_checksum"]})
        log.info("mask checksum %s (rank %d of %d)", info["mask_checksum"], distributed.rank(),
                 distributed.world_size())
        distributed.agree(info["mask_checksum"], "the masks (checksum)")
        info.update(sparsity_achieved=achieved_sparsity(masks), layer_density=layer_density(masks),
                    collapsed_layers=collapsed_layers(masks))
        info.update(effective_stats(model, masks, (data.in_channels, data.image_size, data.image_size)))
        log.info("sparsity %.4f, effective sparsity %.4f (kept weights on no input-output path count as pruned)",
                 info["sparsity_achieved"], info["effective_sparsity"])
        if info["collapsed_layers"]:
            log.warning("layer collapse: %d layer(s) fully pruned: %s", len(info["collapsed_layers"]),
                        ", ".join(info["collapsed_layers"]))
    else:
        info.update(sparsity_achieved=0.0, layer_density={n: 1.0 for n in names}, collapsed_layers=[])
    tracker.log_pruning(info)
    t0 = time.perf_counter()
    history = train(model, data, recipe, device, cfg.seed, masks, paths.checkpoint,
                    extra_state={"prune_info": info}, on_epoch=lambda r: tracker.log(r, step=r["epoch"]))
    last = history[-1]
    return {**info, "train_seconds": time.perf_counter() - t0, "test_acc": last["test_acc"],
            "test_loss": last["test_loss"], "history": history,
            "resumed_after_epoch": state["epoch"] + 1 if state is not None else None}
