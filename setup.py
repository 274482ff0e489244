"""One build detail that pyproject.toml cannot say: conf/ (the Hydra config tree, at the repository root where
`python launch.py` reads it) ships inside the wheel as the package `pai.conf`, which the installed `pai`
command reads through Hydra's `pkg://pai.conf`. Everything else is declared in pyproject.toml."""

from setuptools import find_namespace_packages, setup

# Namespace discovery: a folder of modules without __init__.py (pai/train, conf/dataset, ...) is a package too.
CODE = find_namespace_packages(include=["pai", "pai.*"], exclude=["*.__pycache__"])
# pai's local launcher: Hydra loads launchers only from the `hydra_plugins` namespace package.
CODE += find_namespace_packages(include=["hydra_plugins.pai_launcher"])
CONF = ["pai.conf", *(f"pai.conf.{p}" for p in find_namespace_packages(where="conf", exclude=["*__pycache__*"]))]

setup(
    packages=CODE + CONF,
    package_dir={"pai.conf": "conf"},  # pai.conf.dataset -> conf/dataset, ...
    package_data=dict.fromkeys(CONF, ["*.yaml"]),
)
