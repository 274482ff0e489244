"""Sanity-check ablations of a criterion's mask (Frankle et al., ICLR 2021, "Pruning Neural Networks at
Initialization: Why are We Missing the Mark?"), applied by the shared pipeline to whatever mask a criterion
produced (after `prune.invert`, `prune.scope` and iterative rounds), so every criterion gets them:

- `layer_shuffle`: in every prunable layer the kept positions are redrawn uniformly at random, keeping the
  layer's kept count exactly. What survives is the criterion's choice of layer densities only; a criterion that
  loses nothing under it carries no information about *which* weights inside a layer to keep.
- `reinit`: the mask is kept, and every parameter (weights, biases, BN affine) is redrawn with the model's own
  initializer from a stream of its own before training (also under `model.init_from`: the fresh model is built
  without loading those weights); the pruned weights are then zeroed again by the caller. What survives is the
  mask alone, not its fit to the initial values it was scored on.

Each draw comes from `pai.seeding.Stream` (LAYER_SHUFFLE per layer index, REINIT), so the same seed repeats
it and no other random consumer shifts.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from pai.pruning.mask_calculator import Masks
from pai.seeding import Stream, derive_seed, make_generator

ABLATIONS = ("none", "layer_shuffle", "reinit")  # report rows `snip+shuffle`, `snip+reinit`: pai.results.row_name


def shuffle_within_layers(masks: Mapping[str, Tensor], seed: int) -> Masks:
    """The same number of kept weights in every layer, at positions drawn uniformly without replacement.

    Layer i draws from `make_generator(Stream.LAYER_SHUFFLE, seed, i)` (i = its index in `masks`' order, the
    network order): one layer's draw never depends on another layer's size."""
    out: Masks = {}
    for index, (name, mask) in enumerate(masks.items()):
        kept = int(mask.sum())
        g = make_generator(Stream.LAYER_SHUFFLE, seed, index)
        positions = torch.randperm(mask.numel(), generator=g)[:kept]
        flat = torch.zeros(mask.numel(), dtype=torch.bool)
        flat[positions] = True
        out[name] = flat.view(mask.shape).to(mask.device)
    return out


@torch.no_grad()
def reinitialize(model: nn.Module, build_fresh: Callable[[], nn.Module], seed: int) -> None:
    """Redraw every parameter of `model` in place with the model's own initializer: `build_fresh()` builds the
    same architecture again with the global RNG seeded from `Stream.REINIT` (the caller's RNG state is restored
    afterwards), and its parameters are copied in. Buffers (BN running statistics, after an optional warmup)
    are kept: they describe the data, not the initial values."""
    with torch.random.fork_rng(devices=[]):  # models are built on the CPU: only its generator is drawn from
        torch.default_generator.manual_seed(derive_seed(Stream.REINIT, seed))
        fresh = build_fresh()
    fresh_params = dict(fresh.named_parameters())
    own = dict(model.named_parameters())
    if fresh_params.keys() != own.keys():
        raise RuntimeError("prune.ablation=reinit: the rebuilt model has different parameters")
    for name, p in own.items():
        p.copy_(fresh_params[name].to(p.device, p.dtype))


def reinitialized_state(model: nn.Module, build_fresh: Callable[[], nn.Module], seed: int) -> dict[str, Tensor]:
    """The state_dict `model` has after `reinitialize(model, build_fresh, seed)`, on a copy: `model` is left as
    it is (the draw is seeded, so the copy gets exactly the parameters the ablation will give the model)."""
    twin = copy.deepcopy(model)
    reinitialize(twin, build_fresh, seed)
    return twin.state_dict()


def overlap(ablated: Mapping[str, Tensor], original: Mapping[str, Tensor]) -> float:
    """Fraction of the original mask's kept weights that the ablated mask keeps too (1.0 = the same mask)."""
    kept = sum(int(m.sum()) for m in original.values())
    shared = sum(int((ablated[n].to(m.device) & m).sum()) for n, m in original.items())
    return shared / kept if kept else 1.0
