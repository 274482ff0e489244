"""The options of the config groups in conf/ (one yaml file each): the one list of the criteria is the files
in conf/pruner/, of the presets those in conf/experiment/. Also the command line's check of group choices."""

from __future__ import annotations

from collections.abc import Iterable
from importlib.resources.abc import Traversable
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ValueType
from hydra.errors import HydraException

from pai.errors import PaiConfigError

# What an unknown option of a group is called in the error message.
NOUNS = {"experiment": "preset", "pruner": "criterion"}


def group_options(conf_dir: Path | Traversable, group: str) -> list[str]:
    """The options of `group`, sorted: the names of conf/<group>/*.yaml (a checkout's folder or the installed
    package's files)."""
    folder = conf_dir / group
    if not folder.is_dir():
        return []
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def check_group_choices(overrides: Iterable[str], conf_dir: Path | Traversable) -> None:
    """Refuse a `group=option` command-line override (also `group=a,b` in a sweep) that names no file of
    conf/<group>/, in one line listing the available options.

    Hydra reports an unknown option itself, over several lines with exit status 1 (and would skip one of an
    optional default such as `experiment=` silently). Anything this does not recognise (Hydra's own groups,
    glob/range sweeps, syntax errors) is left to Hydra, and so is every choice when the command adds config
    folders (`hydra.searchpath`, `--config-dir`): their groups may hold more options.
    """
    overrides = list(overrides)
    if any(o.lstrip("+~").startswith("hydra.searchpath") or o.startswith(("--config-dir", "-cd")) for o in overrides):
        return
    parser = OverridesParser.create()
    for text in overrides:
        if text.startswith("-") or "=" not in text:
            continue  # a flag (-m, --cfg job, ...) or its value
        try:
            (override,) = parser.parse_overrides([text])
        except HydraException:
            continue
        group = override.key_or_group
        known = [] if override.is_hydra_override() or override.is_delete() else group_options(conf_dir, group)
        if not known:  # not one of pai's groups
            continue
        if override.value_type == ValueType.ELEMENT:
            values = [override.get_value_element_as_str()]
        elif override.value_type in (ValueType.CHOICE_SWEEP, ValueType.SIMPLE_CHOICE_SWEEP):
            values = list(override.sweep_string_iterator())
        else:
            continue
        for value in values:
            if value not in known and value != "null":
                raise PaiConfigError(f"{group}={value}: no such {NOUNS.get(group, 'option')} in conf/{group}/; "
                                     f"available: {', '.join(known)}")
