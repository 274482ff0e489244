"""Any timm or torchvision classification model by name, randomly initialised (no pretrained weights:
pruning at initialisation starts from a fresh init, and runs must not need the internet)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from pai.errors import PaiConfigError
from pai.models.init_from import initializable
from pai.models.small_input import SmallInput, adapt_in_channels, patch_small_input, wants_small_input


def _unknown_name(name: str, known: Iterable[str], library: str) -> PaiConfigError:
    close = difflib.get_close_matches(name, list(known), n=5, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    return PaiConfigError(f"model.name: unknown {library} model {name!r}{hint}")


def _plain(kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    # Hydra hands nested nodes over as DictConfig; libraries expect plain Python values.
    if kwargs is None:
        return {}
    if isinstance(kwargs, DictConfig):
        return OmegaConf.to_container(kwargs, resolve=True)  # type: ignore[return-value]
    return dict(kwargs)


@initializable
def timm_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 224,
    small_input: SmallInput = "auto",
    model_kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """``timm.create_model(name, pretrained=False, num_classes, in_chans)`` (+ ``model_kwargs``), then the
    small-input patch when ``small_input`` is true or 'auto' with ``image_size <= 64``.
    timm builds the stem for ``in_chans`` itself, so no extra adaptation is needed off the small path."""
    import timm

    if not timm.is_model(name):
        raise _unknown_name(name, timm.list_models(), "timm")
    model = timm.create_model(
        name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **_plain(model_kwargs)
    )
    if wants_small_input(small_input, image_size):
        patch_small_input(model, in_channels, f"timm model {name!r}")
    return model


@initializable
def torchvision_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 224,
    small_input: SmallInput = "auto",
    model_kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """``torchvision.models.get_model(name, weights=None, num_classes=...)`` (+ ``model_kwargs``), then the
    small-input patch (which also sets ``in_channels``), or, off the small path, the first conv rebuilt for
    ``in_channels`` when it is not 3."""
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)  # classification models only
    if name not in known:
        raise _unknown_name(name, known, "torchvision classification")
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **_plain(model_kwargs))
    what = f"torchvision model {name!r}"
    if wants_small_input(small_input, image_size):
        patch_small_input(model, in_channels, what)
    elif in_channels != 3:
        adapt_in_channels(model, in_channels, what)
    return model
