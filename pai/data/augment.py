"""Batched, on-device versions of RandomCrop(size, padding) + RandomHorizontalFlip + ToTensor + Normalize.

The random parameters are drawn by the caller (on the CPU, from a seeded generator); these functions only
apply them, for a whole batch at once, on whatever device the images are on. The arithmetic is the same as
torchvision's (x.float() / 255, then subtract mean and divide by std), so without augmentation the output is
bit-identical to `Normalize(mean, std)(ToTensor()(img))`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def draw_crop_flip(
    n: int, padding: int, flip: bool, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Random parameters for n samples: row/column offsets into the zero-padded image, uniform over
    0..2*padding (as torchvision's RandomCrop(size, padding) draws them), and flip flags with p = 0.5."""
    oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    fl = torch.rand(n, generator=generator) < 0.5 if flip else None
    return oy, ox, fl


def crop_flip(x: Tensor, padding: int, oy: Tensor, ox: Tensor, flip: Tensor | None) -> Tensor:
    """Crop each image of `x` (B, C, H, W; any dtype) at (oy, ox) of its zero-padded copy and mirror the
    samples whose `flip` flag is set. Whole-batch ops only (one pad, two gathers), no per-sample loop.

    Rows are gathered first, whole padded rows at a time: for uint8 images the padded row is widened to a
    multiple of 8 bytes and gathered as int64 words (8x fewer elements for the gather kernel to visit). Then
    the columns are gathered per element; reading the crop's columns backwards is the flip of the crop (crop
    then flip, as torchvision does).
    """
    b, c, h, w = x.shape
    dev = x.device
    oy, ox = oy.to(dev), ox.to(dev)
    if padding:
        word = 8 // x.element_size() if x.element_size() < 8 else 1
        extra = -(w + 2 * padding) % word  # zero columns on the right that no crop reads
        # Zero fill, like RandomCrop's default fill=0; contiguous (a no-op here) so the int64 view is legal.
        x = F.pad(x, (padding, padding + extra, padding, padding)).contiguous()
        rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]  # (B, 1, H, 1)
        if word > 1:
            words = x.view(torch.int64)
            x = words.gather(2, rows.expand(b, c, h, words.shape[3])).view(x.dtype)
        else:
            x = x.gather(2, rows.expand(b, c, h, x.shape[3]))
    ar_w = torch.arange(w, device=dev)
    cols = ox[:, None] + ar_w  # (B, W)
    if flip is not None:
        cols = torch.where(flip.to(dev)[:, None], ox[:, None] + (w - 1 - ar_w), cols)
    return x.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def normalize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 (B, C, H, W) -> float32 normalised, with torchvision's arithmetic; mean/std are (1, C, 1, 1)."""
    return x.to(torch.float32).div_(255).sub_(mean).div_(std)
