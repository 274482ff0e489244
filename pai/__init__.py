"""pai: pruning at initialization — compose, run, sweep and compare pruning criteria."""

__version__ = "0.1.0"
