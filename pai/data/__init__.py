"""Datasets: one builder per set (the `_target_` of `conf/dataset/<name>.yaml`), all returning `ImageData`.

`FolderImageData` is resolved lazily: it needs torchvision, whose import costs more than a second here,
and the demo path (digits) never uses it.
"""

from typing import Any

from pai.data.base import DataMissingError, ImageData
from pai.data.tensor_data import TensorImageData
from pai.errors import PaiConfigError
from pai.seeding import derive_seed, make_generator

__all__ = [
    "DataMissingError",
    "FolderImageData",
    "ImageData",
    "TensorImageData",
    "build_dataset",
    "derive_seed",
    "make_generator",
]


def __getattr__(name: str) -> Any:
    if name == "FolderImageData":
        from pai.data.folder_data import FolderImageData

        return FolderImageData
    raise AttributeError(f"module 'pai.data' has no attribute {name!r}")


def build_dataset(node: Any) -> ImageData:
    """`hydra.utils.instantiate(node)` for a dataset node, but a PaiConfigError raised by the builder (missing
    data, a mismatched dataset.num_classes, ...) comes out as itself: Hydra wraps every builder exception in an
    InstantiationException, which would hide the one-line message from `except PaiConfigError`."""
    from pai.build import build

    data = build(node, "dataset")
    if not isinstance(data, ImageData):
        raise PaiConfigError(f"dataset._target_={node.get('_target_')} did not return an ImageData ({type(data)})")
    return data
