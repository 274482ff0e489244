"""`instantiate` for config nodes, keeping our one-line config errors visible.

Hydra wraps every exception raised while building an object in an InstantiationException; a PaiConfigError
(a bad dataset.num_classes, missing data, an unknown model.name, ...) is unwrapped so the user sees its message,
and so is any other error raised inside the target (it is not the config's fault).
"""

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from pai.errors import PaiConfigError


def resolved(node: Any) -> dict[str, Any]:
    """A config node as a plain dict with every interpolation resolved."""
    out = OmegaConf.to_container(node, resolve=True)
    if not isinstance(out, dict):  # to_container's type covers lists and scalars; a mapping node is a dict
        raise TypeError(f"expected a mapping config node, got {type(out).__name__}")
    return {str(k): v for k, v in out.items()}


def build(node: Any, key: str, **kwargs: Any) -> Any:
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        while cause is not None:
            if isinstance(cause, PaiConfigError):
                raise cause from None
            cause = cause.__cause__
        if exc.__cause__ is None or isinstance(exc.__cause__, ImportError | AttributeError | TypeError):
            # A `_target_` that is not found, or arguments it does not take: say which config node, in one line.
            raise PaiConfigError(f"{key}: {' '.join(str(exc).split())}") from exc
        # Anything else was raised while the target ran (a download that failed, a bug): the run failed, not its
        # config, and the error goes on as itself.
        raise exc.__cause__ from None
