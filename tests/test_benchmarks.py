"""Every benchmark script imports (its `main` is not run): a name pai stops exporting fails here, not on the
next person to run the benchmark."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from conftest import REPO_ROOT

SCRIPTS = sorted((REPO_ROOT / "benchmarks").glob("*.py"))


def test_the_benchmarks_are_found():
    assert len(SCRIPTS) >= 5


def load(path, monkeypatch):
    name = f"benchmark_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up there
    monkeypatch.setattr(sys, "path", list(sys.path))  # the scripts put the repository on sys.path
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_imports(path, monkeypatch):
    assert callable(getattr(load(path, monkeypatch), "main", None)), f"{path.name} has no main()"


def test_profile_step_finds_what_it_uses_in_pai(monkeypatch):
    """It imports pai inside main (to compare two checkouts); `pai.masks.make_masks` was missing there."""
    pai = load(REPO_ROOT / "benchmarks" / "profile_step.py", monkeypatch).load_pai(None)
    for name in ("make_masks", "prunable_weights", "MaskEnforcer"):
        assert callable(getattr(pai.masks, name))
    assert callable(pai.loop.train) and callable(pai.synthetic.build_synthetic) and callable(pai.models.resnet20)
