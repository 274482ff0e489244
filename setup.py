"""One build detail that pyproject.toml cannot say: conf/ (the Hydra config tree, at the repository root where
`python launch.py` reads it) ships inside the wheel as the package `pai.conf`, which the installed `pai`
command reads through Hydra's `pkg://pai.conf`. Everything else is declared in pyproject.toml."""

from setuptools import find_namespace_packages, setup

# Namespace discovery: a folder of modules without __init__.py (pai/train, conf/dataset, ...) is a package too.
# hydra_plugins.pai_submitit: pai's submitit launchers (Hydra instantiates launchers only from hydra_plugins).
CODE = find_namespace_packages(include=["pai", "pai.*", "hydra_plugins", "hydra_plugins.*"],
                               exclude=["*.__pycache__"])
CONF = ["pai.conf", *(f"pai.conf.{p}" for p in find_namespace_packages(where="conf", exclude=["*__pycache__*"]))]

setup(
    packages=CODE + CONF,
    package_dir={"pai.conf": "conf"},  # pai.conf.dataset -> conf/dataset, ...
    package_data=dict.fromkeys(CONF, ["*.yaml"]),
)
