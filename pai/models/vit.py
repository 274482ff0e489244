"""ViT-Tiny (timm ``vit_tiny_patch16_224`` architecture: dim 192, depth 12, 3 heads) at any image size."""

from __future__ import annotations

from torch import nn

from pai.errors import PaiConfigError
from pai.models.init_from import initializable


def auto_patch_size(image_size: int) -> int:
    """Patch size giving a usable token grid: 2 (<= 16 px), 4 (<= 32 px), 8 (<= 64 px), else 16."""
    for limit, patch in ((16, 2), (32, 4), (64, 8)):
        if image_size <= limit:
            return patch
    return 16


@initializable
def vit_tiny(
    num_classes: int, in_channels: int = 3, image_size: int = 32, patch_size: int | str = "auto"
) -> nn.Module:
    """timm ViT-Tiny, randomly initialised, with ``img_size=image_size`` and the given patch size
    ('auto': 4 for 32 px inputs, see ``auto_patch_size``)."""
    import timm

    patch = auto_patch_size(int(image_size)) if patch_size == "auto" else int(patch_size)
    if patch < 1 or image_size % patch:
        # timm would silently crop or fail later; say which key to change instead.
        raise PaiConfigError(f"model.patch_size: {patch} does not divide image_size {image_size}")
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=int(image_size),
        patch_size=patch,
        num_classes=num_classes,
        in_chans=in_channels,
    )
