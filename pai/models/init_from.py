"""`model.init_from`: every builder takes the model node's `init_from` / `init_from_state` keys, so the model that
`instantiate(cfg.model)` returns already starts from the given weights (pai.run_files.init_model)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TypeVar

from torch import nn

log = logging.getLogger(__name__)

M = TypeVar("M", bound=nn.Module)


def initializable(builder: Callable[..., M]) -> Callable[..., M]:
    """Wrap a builder: `init_from` (a weights file or a run directory; None = the builder's own seeded
    initialization) and `init_from_state` (`initial` | `trained`, for a run directory)."""

    @functools.wraps(builder)
    def build(*args, init_from: str | None = None, init_from_state: str = "trained", **kwargs) -> M:
        model = builder(*args, **kwargs)
        if init_from is not None:
            from pai.run_files import init_model

            path = init_model(model, init_from, init_from_state)
            if not any(p.is_meta for p in model.parameters()):  # the meta-device check build only checks the file
                log.info("initial weights from %s (model.init_from)", path)
        return model

    return build
