"""pai's Hydra config tree. A wheel installs it as the package `pai.conf` (Hydra's `pkg://pai.conf`); this file
makes it one (Hydra reads a `pkg://` search path entry only from a package)."""
