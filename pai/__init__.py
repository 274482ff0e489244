"""pai: pruning at initialization — compose, run, sweep and compare pruning criteria."""

__version__ = "0.2.0"  # the one version constant: pyproject.toml reads it, results.json and W&B record it
