"""Effective sparsity (Vysogorets & Kempe, JMLR 2023, "Connectivity Matters: Neural Network Pruning Through the
Lens of Effective Sparsity"): a kept weight is *effective* when it lies on at least one path from the input to
the output of the masked network; the others can never change the output, however they are trained.

One data-free method for any model pai builds (our ResNets and VGGs, timm/torchvision models, ViTs), with no
per-architecture code: a single forward and backward pass in float64 over a batch-1 all-ones input, in which
every value is a 0/1 flag and every operation is replaced, through a `TorchFunctionMode`, by what it does to
*dependence on the input*:

- Prunable weights take their mask as value (1 = kept), other Conv/Linear weights 1, every other parameter
  (biases, BN/LN affine, positional embeddings, class tokens, layer scales) 0: they are constants and must not
  create paths from nowhere.
- `conv*`, `linear` (the weighted operations) run with that weight and no bias; their output is reduced to a 0/1
  flag, "reached from the input" (a positive path count). Sums, means, average pooling and interpolation are
  non-negative linear maps: run as they are, then flagged. Shape operations (view, permute, cat, indexing, pad,
  ...) move flags and run as they are.
- Element-wise activations (ReLU, GELU, SiLU, sigmoid, ...) and BatchNorm (per channel) keep the flag of their
  input. Element-wise binary operations (x + y, x * gate, x / y, where) are reached when either side is: a
  product with a constant (an SE gate fed by nothing, a layer scale) still depends on the other side.
- Operations that mix a group of elements — LayerNorm/GroupNorm/RMSNorm, softmax, L2 normalisation, max
  pooling (the maximum can move to any element of the window) — make each output depend on its whole group.
  Attention (`scaled_dot_product_attention`, a matmul of two activations) makes each output depend on its query
  row, on every key and on its value column: softmax weights are never zero.
- Any other operation is treated as fully connected: each output depends on every element of every input, and
  a mask used inside it is counted effective whole. This is conservative: it can only call a dead weight
  effective, never the reverse. The operations so treated are logged once per pass.

Every intermediate result is re-flagged (forward: value > 0, backward: gradient > 0), so no path count can
overflow, whatever the depth. A kept weight w (from unit i to unit j) is then effective iff i is reached from the
input and j reaches the output, which is exactly ∂(Σ outputs)/∂w > 0 in this pass (SynFlow's |θ ⊙ ∂R/∂θ| with
θ = mask, made exact by the flags).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from pai.pruning.mask_calculator import Masks

log = logging.getLogger(__name__)
DTYPE = torch.float64

SHAPE_OPS = frozenset("""
view view_as reshape reshape_as permute transpose t flatten unflatten squeeze unsqueeze expand expand_as
contiguous clone cat concat concatenate stack hstack vstack split split_with_sizes tensor_split chunk unbind
narrow select __getitem__ __setitem__ index_select repeat tile roll flip movedim moveaxis swapaxes swapdims pad
unfold pixel_shuffle pixel_unshuffle channel_shuffle __get__ __set__ requires_grad_
""".split())
CONVERSIONS = frozenset("to type float double half bfloat16".split())
NONNEG_LINEAR = frozenset("""
sum mean nansum avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d
interpolate upsample upsample_nearest upsample_bilinear cumsum
""".split())
WEIGHTED = frozenset("linear conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d".split())
UNARY = frozenset("""
relu relu_ relu6 gelu silu silu_ sigmoid sigmoid_ tanh tanh_ hardswish hardsigmoid hardtanh hardtanh_ elu elu_
selu celu leaky_relu leaky_relu_ softplus mish prelu logsigmoid softsign tanhshrink threshold threshold_ glu_
dropout dropout_ dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout batch_norm exp exp_ log
sqrt rsqrt abs neg __neg__ __pos__ __abs__ square erf erfc sin cos clamp clamp_ clip clip_ reciprocal sign
__pow__ pow pow_ __rpow__ fill_ zero_ bernoulli_ uniform_ normal_ detach
""".split())
BINARY = frozenset("""
add add_ __add__ __radd__ __iadd__ sub sub_ __sub__ __rsub__ __isub__ mul mul_ __mul__ __rmul__ __imul__ div div_
__truediv__ __rtruediv__ __itruediv__ true_divide addcmul addcdiv where maximum minimum fmax fmin lerp atan2
hypot
""".split())
FACTORIES = frozenset("""
zeros_like ones_like full_like empty_like rand_like randn_like new_zeros new_ones new_full new_empty new_tensor
zeros ones full empty rand randn arange linspace tensor as_tensor
""".split())
MAX_POOLS = {"max_pool1d": 1, "max_pool2d": 2, "max_pool3d": 3, "max_pool1d_with_indices": 1,
             "max_pool2d_with_indices": 2, "max_pool3d_with_indices": 3}
ADAPTIVE_MAX_POOLS = {"adaptive_max_pool1d": 1, "adaptive_max_pool2d": 2, "adaptive_max_pool3d": 3}
MATMULS = frozenset("matmul mm bmm __matmul__ __rmatmul__".split())
SOFTMAXES = frozenset("softmax log_softmax softmin _softmax".split())


class _Flag(torch.autograd.Function):
    """value > 0 forward, gradient > 0 backward: 0/1 flags that never overflow."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return (grad > 0).to(grad.dtype)


def _flag(x: Tensor) -> Tensor:
    return _Flag.apply(x)


def _is_float(x: Any) -> bool:
    return isinstance(x, Tensor) and x.is_floating_point()


def _arg(args: tuple, kwargs: dict, pos: int, name: str, default: Any = None) -> Any:
    if len(args) > pos:
        return args[pos]
    return kwargs.get(name, default)


def _union(tensors: list[Tensor]) -> Tensor:
    """1 where any of the (broadcast) tensors is positive."""
    total = torch.broadcast_tensors(*tensors)
    out = total[0]
    for t in total[1:]:
        out = out + t
    return _flag(out)


class _ConnectivityMode(TorchFunctionMode):
    def __init__(self, masks: Mapping[int, str], constants: set[int]):
        super().__init__()
        self.masks = masks  # id(tensor) -> name of the prunable weight whose mask it is
        self.constants = constants  # ids of parameters that stand for constants (value 0)
        self.opaque: set[str] = set()  # masks used inside an operation treated as fully connected
        self.conservative: set[str] = set()  # names of the operations treated as fully connected

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        floats = [t for t in tree_flatten((args, kwargs))[0] if _is_float(t)]
        if not floats and name not in FACTORIES:
            return func(*args, **kwargs)  # index arithmetic, sizes, flags: nothing that carries a path
        if name in WEIGHTED:
            return self._weighted(func, args, kwargs)
        if name in SHAPE_OPS:
            return func(*args, **kwargs)
        if name in UNARY:
            first = floats[0]
            return self._in_place(name, args, first) if first is args[0] else first.clone()
        if name in BINARY:
            shape = torch.broadcast_shapes(*[t.shape for t in tree_flatten((args, kwargs))[0] if torch.is_tensor(t)])
            return self._in_place(name, args, _union(floats).expand(shape).contiguous())
        if name in MAX_POOLS or name in ADAPTIVE_MAX_POOLS:
            return self._max_pool(func, name, args, kwargs)
        if name in SOFTMAXES or name == "normalize":
            dim = _arg(args, kwargs, 1, "dim") if name in SOFTMAXES else _arg(args, kwargs, 2, "dim", 1)
            if dim is not None:
                return self._groups(args[0], [dim])
        if name in ("layer_norm", "rms_norm"):
            shape = _arg(args, kwargs, 1, "normalized_shape")
            shape = [shape] if isinstance(shape, int) else list(shape)
            return self._groups(args[0], list(range(-len(shape), 0)))
        if name == "group_norm":
            x, groups = args[0], _arg(args, kwargs, 1, "num_groups")
            return self._groups(x.reshape(x.shape[0], groups, -1), [-1]).reshape(x.shape)
        if name == "instance_norm":
            return self._groups(args[0], list(range(2, args[0].dim())))
        if name == "scaled_dot_product_attention":
            q, k, v = args[:3]
            return _union([q.sum(-1, keepdim=True), k.sum((-2, -1), keepdim=True),
                           v.sum(-2, keepdim=True)]).contiguous()
        if name in MATMULS and len(args) >= 2 and all(_is_float(a) and a.dim() >= 2 for a in args[:2]):
            a, b = args[:2]
            if not any(self._is_param(t) for t in (a, b)):  # two activations: a bilinear form
                return _union([a.sum(-1, keepdim=True), b.sum(-2, keepdim=True)]).contiguous()
            return _flag(func(*[self._weight(t) for t in (a, b)], *args[2:], **kwargs))
        out = func(*args, **kwargs)
        if not any(_is_float(t) for t in tree_flatten(out)[0]):
            return out  # comparisons, indices
        if name in CONVERSIONS:
            return out if _is_float(args[0]) else torch.zeros_like(out)  # a cast of a non-float is a constant
        if name in FACTORIES:
            return tree_map(lambda t: torch.zeros_like(t) if _is_float(t) else t, out)
        if name in NONNEG_LINEAR:
            return tree_map(lambda t: _flag(t) if _is_float(t) else t, out)
        return self._fully_connected(name, floats, out)

    def _is_param(self, t: Tensor) -> bool:
        return id(t) in self.masks or id(t) in self.constants

    def _weight(self, t: Tensor) -> Tensor:
        """A weight argument: its mask (prunable), else 1 (a parameter that would read as a constant 0)."""
        return torch.ones_like(t) if id(t) in self.constants else t

    def _weighted(self, func, args: tuple, kwargs: dict) -> Tensor:
        """conv/linear with the weight's mask (or 1) and no bias: a bias is a constant, not a path."""
        positional = list(args)
        weight = self._weight(_arg(args, kwargs, 1, "weight"))
        if len(positional) > 1:
            positional[1] = weight
        else:
            kwargs["weight"] = weight
        if len(positional) > 2:
            positional[2] = None
        elif "bias" in kwargs:
            kwargs["bias"] = None
        return _flag(func(*positional, **kwargs))

    def _groups(self, x: Tensor, dims: list[int]) -> Tensor:
        """Each element depends on every element of its group (the same index outside `dims`)."""
        return _flag(x.sum(dim=dims, keepdim=True)).expand_as(x).contiguous()

    def _max_pool(self, func, name: str, args: tuple, kwargs: dict):
        x = args[0]
        nd = MAX_POOLS.get(name) or ADAPTIVE_MAX_POOLS[name]
        if name in ADAPTIVE_MAX_POOLS:
            pooled = getattr(torch.nn.functional, f"adaptive_avg_pool{nd}d")(x, _arg(args, kwargs, 1, "output_size"))
            with_indices = _arg(args, kwargs, 2, "return_indices", False)
        else:
            kernel = _arg(args, kwargs, 1, "kernel_size")
            stride = _arg(args, kwargs, 2, "stride") or kernel
            padding = _arg(args, kwargs, 3, "padding", 0)
            dilation = _arg(args, kwargs, 4, "dilation", 1)
            ceil_mode = _arg(args, kwargs, 5, "ceil_mode", False)
            with_indices = _arg(args, kwargs, 6, "return_indices", False) or name.endswith("_with_indices")
            if any(d != 1 for d in ((dilation,) * nd if isinstance(dilation, int) else dilation)):
                return self._fully_connected(name, [x], func(*args, **kwargs))
            # Any element of the window can be its maximum: a window is reached when any element is.
            pooled = getattr(torch.nn.functional, f"avg_pool{nd}d")(x, kernel, stride, padding, ceil_mode, True)
        flags = _flag(pooled)
        if with_indices:
            real = func(*args, **kwargs)
            return flags, real[1]
        return flags

    def _in_place(self, name: str, args: tuple, result: Tensor) -> Tensor:
        """In-place variants (`x.add_(y)`, `x += y`, `relu_`) write their flags into their first argument."""
        target = args[0]
        if (name.endswith("_") and not name.endswith("__")) or name.startswith("__i"):
            if result is not target:
                target.copy_(result)
            return target
        return result

    def _fully_connected(self, name: str, inputs: list[Tensor], out: Any) -> Any:
        """Any other operation: every output depends on every input element (conservative)."""
        self.conservative.add(name or "?")
        for t in inputs:
            if id(t) in self.masks:
                self.opaque.add(self.masks[id(t)])
        activations = [t.sum() for t in inputs if not self._is_param(t)]
        reached = _flag(torch.stack(activations).sum()) if activations else None

        def fill(t: Any) -> Any:
            if not _is_float(t):
                return t
            if reached is None:
                return torch.zeros_like(t)
            return (reached.to(t.dtype) * torch.ones_like(t)).contiguous()

        return tree_map(fill, out)


def effective_masks(model: nn.Module, masks: Mapping[str, Tensor], input_shape: tuple[int, ...]) -> Masks:
    """The kept weights of `masks` that lie on at least one input→output path of `model` (see the module
    docstring); `input_shape` is one sample's shape (C, H, W). The model is not changed (a functional pass in
    eval mode; train/eval flags restored)."""
    weight_names = {f"{m}.weight" if m else "weight" for m, mod in model.named_modules()
                    if isinstance(mod, nn.modules.conv._ConvNd | nn.Linear)}
    params: dict[str, Tensor] = {}
    constants: set[int] = set()
    for name, p in model.named_parameters():
        if name in masks:
            params[name] = masks[name].to(device=p.device, dtype=DTYPE).requires_grad_()
        elif name in weight_names:
            params[name] = torch.ones_like(p, dtype=DTYPE)
        else:
            params[name] = torch.zeros_like(p, dtype=DTYPE)
            constants.add(id(params[name]))
    buffers = {n: b.to(DTYPE) if b.is_floating_point() else b for n, b in model.named_buffers()}
    first = next(model.parameters())
    x = torch.ones((1, *input_shape), dtype=DTYPE, device=first.device)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    mode = _ConnectivityMode({id(params[n]): n for n in masks}, constants)
    try:
        with torch.enable_grad(), mode:
            out = functional_call(model, {**params, **buffers}, (x,))
            total = sum(t.sum() for t in tree_flatten(out)[0] if _is_float(t))
        grads = torch.autograd.grad(total, [params[n] for n in masks], allow_unused=True) if torch.is_tensor(
            total) and total.requires_grad else [None] * len(masks)
    finally:
        for m, flag in modes:
            m.training = flag
    if mode.conservative:
        log.info("effective sparsity: treated as fully connected (conservative): %s", ", ".join(sorted(
            mode.conservative)))
    result: Masks = {}
    for (name, mask), grad in zip(masks.items(), grads, strict=True):
        mask = mask.to(torch.bool)
        if name in mode.opaque:
            result[name] = mask.clone()
        elif grad is None:  # never used on the way to the output
            result[name] = torch.zeros_like(mask)
        else:
            result[name] = mask & (grad > 0).to(mask.device)
    return result


def effective_stats(model: nn.Module, masks: Mapping[str, Tensor], input_shape: tuple[int, ...]) -> dict:
    """results.json's `effective_sparsity` (over prunable weights), `effective_layer_density` ({name: effective
    kept fraction}) and `effectively_empty_layers` (layers with no effective weight, collapsed ones included)."""
    effective = effective_masks(model, masks, input_shape)
    total = sum(m.numel() for m in effective.values())
    kept = sum(int(m.sum()) for m in effective.values())
    return {
        "effective_sparsity": 1.0 - kept / total if total else 0.0,
        "effective_layer_density": {n: m.float().mean().item() for n, m in effective.items()},
        "effectively_empty_layers": [n for n, m in effective.items() if not m.any()],
    }
