"""Adapt ImageNet-style timm / torchvision models to small images and to non-RGB inputs.

ImageNet stems (7x7 stride-2 conv + 3x3 stride-2 max-pool) shrink a 32 px image to 8 px before the first
stage, which wastes most of the network on CIFAR-sized data. The small-input patch does what the CIFAR
ResNets do instead: a 3x3 stride-1 stem conv and no stem max-pool, so the stem keeps the input resolution.

Stems are found by attribute, not by guessing from module order:
  * ``conv1`` (+ ``maxpool``): torchvision ResNets/ResNeXts/Wide-ResNets, timm ResNets (``conv1`` is a
    Sequential for the deep-stem ``*d``/``*s`` variants: its first conv is replaced);
  * ``stem``: timm RegNet/ConvNeXt/NFNet/... (first conv inside it replaced, pools inside it removed);
  * ``conv_stem``: timm EfficientNet/MobileNet.
Anything else raises PaiConfigError naming ``model.small_input``.

Replacement convs are initialised with ``kaiming_normal_(mode="fan_out", nonlinearity="relu")`` and a zero
bias: the rule torchvision and timm use for the convs of ResNet-style models, so the new stem is drawn like
the rest of the network. It uses the global torch RNG, so construction stays deterministic under a seed.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

from pai.errors import PaiConfigError

SmallInput = bool | Literal["auto"]

# 'auto' patches images up to this size: 28 px (Fashion-MNIST) to 64 px (TinyImageNet) and smaller.
AUTO_MAX_SIZE = 64


def wants_small_input(small_input: SmallInput | str, image_size: int) -> bool:
    """Resolve the ``small_input`` knob: True / False, or 'auto' (image_size <= 64)."""
    if isinstance(small_input, bool):
        return small_input
    if isinstance(small_input, str) and small_input.lower() == "auto":
        return int(image_size) <= AUTO_MAX_SIZE
    if isinstance(small_input, str) and small_input.lower() in ("true", "false"):
        return small_input.lower() == "true"
    raise PaiConfigError(f"model.small_input must be true, false or 'auto', got {small_input!r}")


def _new_conv(old: nn.Conv2d, in_channels: int, *, small: bool) -> nn.Conv2d:
    """A conv with ``old``'s output channels and ``in_channels`` inputs; 3x3 stride 1 when ``small``."""
    geometry: dict[str, Any]
    if small:
        geometry = dict(kernel_size=3, stride=1, padding=1)
    else:
        if old.groups != 1 or isinstance(old.padding, str):
            raise PaiConfigError(
                f"model.in_channels: cannot adapt stem conv {old} to {in_channels} input channels"
            )
        geometry = dict(
            kernel_size=old.kernel_size, stride=old.stride, padding=old.padding, dilation=old.dilation
        )
    conv = nn.Conv2d(in_channels, old.out_channels, bias=old.bias is not None, **geometry)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def _replace_first_conv(parent: nn.Module, in_channels: int, *, small: bool) -> bool:
    """Replace the first Conv2d found under ``parent`` (depth-first, registration order)."""
    for name, child in parent.named_children():
        if isinstance(child, nn.Conv2d):
            setattr(parent, name, _new_conv(child, in_channels, small=small))
            return True
        if _replace_first_conv(child, in_channels, small=small):
            return True
    return False


def _drop_pools(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, (nn.MaxPool2d, nn.AvgPool2d)):
            setattr(module, name, nn.Identity())
        else:
            _drop_pools(child)


def patch_small_input(model: nn.Module, in_channels: int, what: str = "model") -> nn.Module:
    """Give ``model`` a 3x3 stride-1 stem conv with ``in_channels`` inputs and no stem pool (in place)."""
    conv1 = getattr(model, "conv1", None)
    if isinstance(conv1, nn.Conv2d):
        model.conv1 = _new_conv(conv1, in_channels, small=True)
    elif isinstance(conv1, nn.Sequential) and _replace_first_conv(conv1, in_channels, small=True):
        pass  # timm deep stem: only its first (stride-2) conv changes; the following 3x3s keep stride 1
    elif isinstance(stem := getattr(model, "stem", None), nn.Module):
        if isinstance(stem, nn.Conv2d):
            model.stem = _new_conv(stem, in_channels, small=True)
        elif _replace_first_conv(stem, in_channels, small=True):
            _drop_pools(stem)
        else:
            raise _no_stem(what)
    elif isinstance(conv_stem := getattr(model, "conv_stem", None), nn.Conv2d):
        model.conv_stem = _new_conv(conv_stem, in_channels, small=True)
    else:
        raise _no_stem(what)
    if isinstance(getattr(model, "maxpool", None), nn.Module):
        model.maxpool = nn.Identity()
    return model


def adapt_in_channels(model: nn.Module, in_channels: int, what: str = "model") -> nn.Module:
    """Rebuild the first conv (registration order) with ``in_channels`` inputs, same geometry (in place)."""
    first = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is None or first[1].in_channels != 3:
        raise PaiConfigError(f"model.in_channels: no RGB stem conv found in {what} to adapt to {in_channels}")
    name, old = first
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, _new_conv(old, in_channels, small=False))
    return model


def _no_stem(what: str) -> PaiConfigError:
    return PaiConfigError(
        f"model.small_input: no known stem (conv1/maxpool, stem, conv_stem) in {what}; "
        "set model.small_input=false to keep its ImageNet stem (for a ViT also pass "
        "model.model_kwargs.img_size / patch_size, or use model=vit_tiny), or pick a model with a known stem"
    )
