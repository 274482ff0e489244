"""pai's Hydra launchers (see launchers.py)."""
