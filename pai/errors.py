"""The one-line config error, and the checks of single values that raise it (each message names the key)."""

from __future__ import annotations

from typing import Any


class PaiConfigError(Exception):
    """A bad config value; the message names the key."""


def check_int(key: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """`value` as an int, refused unless it is an integer in [minimum, maximum] (bool and 1.5 are refused: YAML
    and the command line give `true` and `1.5`, and int() would quietly accept both)."""
    bounds = [f"≥ {minimum}"] if minimum is not None else []
    bounds += [f"≤ {maximum}"] if maximum is not None else []
    if (isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum)
            or (maximum is not None and value > maximum)):
        raise PaiConfigError(f"{key}={value!r} must be an integer" + (f" {' and '.join(bounds)}" if bounds else ""))
    return value
