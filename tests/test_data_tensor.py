"""TensorImageData: epoch order, reproducibility, batched augmentation vs torchvision, scoring samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image
from scipy.stats import chisquare

from pai.data import DataMissingError, ImageData, TensorImageData
from pai.errors import PaiConfigError
from pai.seeding import derive_seed

CPU = torch.device("cpu")


def indexed_set(n: int = 1000, num_classes: int = 10, padding: int = 0, flip: bool = False) -> TensorImageData:
    """Images whose first two pixels encode the sample index, so a batch tells which samples it holds."""
    x = torch.full((n, 1, 4, 4), 7, dtype=torch.uint8)
    idx = torch.arange(n)
    x[:, 0, 0, 0] = (idx % 256).to(torch.uint8)
    x[:, 0, 0, 1] = (idx // 256).to(torch.uint8)
    y = idx % num_classes
    return TensorImageData("indexed", x, y, x[:10], y[:10], num_classes, mean=(0.25,), std=(0.5,),
                           crop_padding=padding, flip=flip)


def decode_index(d: TensorImageData, x: torch.Tensor) -> torch.Tensor:
    raw = torch.round((x * d.std[0] + d.mean[0]) * 255).to(torch.int64)
    return raw[:, 0, 0, 0] + 256 * raw[:, 0, 0, 1]


def epoch(d: TensorImageData, bs: int, ep: int, seed: int, augment: bool = True):
    return [(x.clone(), y.clone()) for x, y in d.train_batches(bs, ep, seed, CPU, augment=augment)]


def test_satisfies_protocol() -> None:
    assert isinstance(indexed_set(), ImageData)
    assert issubclass(DataMissingError, PaiConfigError)


def test_epoch_visits_every_sample_once_and_keeps_last_partial_batch() -> None:
    d = indexed_set(1000)
    batches = epoch(d, 64, ep=0, seed=0, augment=False)
    assert [x.shape[0] for x, _ in batches] == [64] * 15 + [1000 - 15 * 64]
    seen = torch.cat([decode_index(d, x) for x, _ in batches])
    assert torch.equal(torch.sort(seen).values, torch.arange(1000))
    assert not torch.equal(seen, torch.arange(1000)), "training order must be shuffled"
    labels = torch.cat([y for _, y in batches])
    assert labels.dtype == torch.int64 and torch.equal(labels, seen % 10)
    assert batches[0][0].dtype == torch.float32 and batches[0][0].shape[1:] == (1, 4, 4)


def test_order_and_augmentation_are_a_function_of_seed_and_epoch() -> None:
    d = TensorImageData("s", torch.randint(0, 256, (300, 3, 8, 8), dtype=torch.uint8), torch.arange(300) % 3,
                        torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.zeros(1, dtype=torch.int64), 3,
                        (0.5,) * 3, (0.25,) * 3, crop_padding=2, flip=True)
    first = epoch(d, 32, ep=3, seed=7)
    # A "resumed" run: other epochs consumed first, global RNG disturbed -> the same epoch-3 batches.
    epoch(d, 32, ep=0, seed=7)
    torch.manual_seed(12345)
    torch.rand(100)
    again = epoch(d, 32, ep=3, seed=7)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    # Batch size only re-slices the same stream.
    whole = epoch(d, 1000, ep=3, seed=7)[0]
    assert torch.equal(torch.cat([x for x, _ in first]), whole[0])
    for other in (epoch(d, 32, ep=4, seed=7), epoch(d, 32, ep=3, seed=8)):
        assert not torch.equal(first[0][1], other[0][1])
        assert not torch.equal(first[0][0], other[0][0])
    warm = [x for x, _ in d.bn_warmup_batches(32, 7, CPU)]
    assert sum(x.shape[0] for x in warm) == 300 and not torch.equal(warm[0], first[0][0])


def test_derive_seed_separates_nearby_inputs() -> None:
    seeds = {derive_seed(s, e) for s in range(20) for e in range(-1, 20)}
    assert len(seeds) == 20 * 21
    assert derive_seed(0, 1) != derive_seed(1, 0)


def _candidates(img: np.ndarray, padding: int, mean: float, std: float) -> dict[tuple[int, int, bool], torch.Tensor]:
    """torchvision's output for every (top, left, flip): RandomCrop(size, padding) then hflip, ToTensor,
    Normalize — computed with torchvision's own functional ops on the PIL image."""
    pil = Image.fromarray(img)
    size = img.shape[0]
    padded = TF.pad(pil, padding, fill=0)
    norm = T.Compose([T.ToTensor(), T.Normalize((mean,), (std,))])
    out = {}
    for top in range(2 * padding + 1):
        for left in range(2 * padding + 1):
            crop = TF.crop(padded, top, left, size, size)
            out[(top, left, False)] = norm(crop)
            out[(top, left, True)] = norm(TF.hflip(crop))
    return out


def test_augmentation_matches_torchvision_in_distribution() -> None:
    padding, n = 2, 4000
    img = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 3 + 10)  # all pixels distinct and non-zero
    x = torch.from_numpy(img)[None, None].repeat(n, 1, 1, 1)
    d = TensorImageData("one", x, torch.zeros(n, dtype=torch.int64), x[:1], torch.zeros(1, dtype=torch.int64), 1,
                        (0.4,), (0.3,), crop_padding=padding, flip=True)
    cands = _candidates(img, padding, 0.4, 0.3)
    keys = list(cands)
    stack = torch.stack([cands[k] for k in keys]).flatten(1)  # (50, 64)
    out = torch.cat([b for b, _ in d.train_batches(512, 0, 0, CPU)]).flatten(1)
    dist = torch.cdist(out.double(), stack.double())
    best = dist.argmin(dim=1)
    # Every augmented sample is exactly one of torchvision's possible outputs (zero fill, crop then flip).
    assert float(dist.min(dim=1).values.max()) < 1e-5
    counts = torch.bincount(best, minlength=len(keys)).numpy()
    offsets = np.zeros(((2 * padding + 1) ** 2,))
    flips = 0
    for k, c in zip(keys, counts, strict=True):
        offsets[k[0] * (2 * padding + 1) + k[1]] += c
        flips += c if k[2] else 0
    assert (offsets > 0).all(), "every offset in 0..2*padding must occur"
    assert chisquare(offsets).pvalue > 1e-3, offsets
    assert chisquare(counts).pvalue > 1e-3  # uniform over (offset, flip) jointly
    assert abs(flips / n - 0.5) < 4 * np.sqrt(0.25 / n)
    # Without flip: never mirrored.
    d.flip = False
    out = torch.cat([b for b, _ in d.train_batches(512, 1, 0, CPU)]).flatten(1)
    best = torch.cdist(out.double(), stack.double()).argmin(dim=1)
    assert not any(keys[int(i)][2] for i in best.unique())


def test_no_augment_equals_totensor_normalize_exactly() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (50, 3, 6, 6), dtype=torch.uint8, generator=gen)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    d = TensorImageData("s", x, torch.arange(50) % 5, x, torch.arange(50) % 5, 5, mean, std, crop_padding=4,
                        flip=True)
    tv = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    want = torch.stack([tv(Image.fromarray(a.permute(1, 2, 0).numpy())) for a in x])
    got = torch.cat([b for b, _ in d.test_batches(16, CPU)])
    assert torch.allclose(got, want, atol=1e-6, rtol=0)
    order = d.epoch_plan(0, 0, augment=False)[0]
    got = torch.cat([b for b, _ in d.train_batches(16, 0, 0, CPU, augment=False)])
    assert torch.allclose(got, want[order], atol=1e-6, rtol=0)


def test_scoring_samples_class_balanced_and_seeded() -> None:
    n = 700
    y = torch.cat([torch.full((k * 20 + 10,), k) for k in range(5)])[:n]  # unbalanced: 10, 30, 50, 70, 90
    x = torch.randint(0, 256, (y.numel(), 1, 5, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    d = TensorImageData("s", x, y, x[:2], y[:2], 5, (0.5,), (0.2,), crop_padding=1, flip=True)
    xs, ys = d.scoring_samples(10, seed=3, device=CPU)
    assert xs.shape == (50, 1, 5, 5) and xs.dtype == torch.float32 and ys.dtype == torch.int64
    assert torch.bincount(ys).tolist() == [10] * 5
    xs2, ys2 = d.scoring_samples(10, seed=3, device="cpu")
    assert torch.equal(xs, xs2) and torch.equal(ys, ys2)
    xs3, _ = d.scoring_samples(10, seed=4, device=CPU)
    assert not torch.equal(xs, xs3)
    # Without augmentation the samples are training images, all different.
    plain, _ = d.scoring_samples(10, seed=3, device=CPU, augment=False)
    train = torch.cat([b for b, _ in d.train_batches(1000, 0, 0, CPU, augment=False)])
    match = (plain.flatten(1)[:, None] - train.flatten(1)[None]).abs().amax(dim=2).min(dim=1)
    assert float(match.values.max()) == 0.0 and match.indices.unique().numel() == 50
    # The training stream is not shifted by drawing scoring samples.
    assert torch.equal(epoch(d, 64, 0, 0)[0][0], epoch(d, 64, 0, 0)[0][0])
    with pytest.raises(PaiConfigError, match=r"prune\.samples_per_class=11.*only 10"):
        d.scoring_samples(11, seed=0, device=CPU)


def test_device_copy_is_cached() -> None:
    d = indexed_set(20)
    assert d._tensors("cpu") is d._tensors(CPU)
    d.release()
    assert not d._on_device


def test_rejects_bad_inputs() -> None:
    x = torch.zeros(4, 1, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="uint8"):
        TensorImageData("s", x.float(), torch.zeros(4), x, torch.zeros(4), 1, (0.5,), (0.5,))
    with pytest.raises(ValueError, match="labels"):
        TensorImageData("s", x, torch.zeros(3), x, torch.zeros(4), 1, (0.5,), (0.5,))
    d = TensorImageData("s", x, torch.zeros(4), x, torch.zeros(4), 1, (0.5,), (0.5,))
    with pytest.raises(PaiConfigError, match="batch_size"):
        next(iter(d.train_batches(0, 0, 0, CPU)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_equal_cpu_batches() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (200, 3, 8, 8), dtype=torch.uint8, generator=gen)
    d = TensorImageData("s", x, torch.arange(200) % 4, x[:50], torch.arange(50) % 4, 4, (0.5,) * 3, (0.25,) * 3,
                        crop_padding=2, flip=True)
    cuda = torch.device("cuda")
    for (a, ya), (b, yb) in zip(d.train_batches(64, 1, 3, CPU), d.train_batches(64, 1, 3, cuda), strict=True):
        assert b.device.type == "cuda" and yb.device.type == "cuda"
        assert torch.allclose(a, b.cpu(), atol=1e-6, rtol=0) and torch.equal(ya, yb.cpu())
    sa, sb = d.scoring_samples(5, 0, CPU), d.scoring_samples(5, 0, cuda)
    assert torch.allclose(sa[0], sb[0].cpu(), atol=1e-6, rtol=0) and torch.equal(sa[1], sb[1].cpu())
    ta, tb = next(d.test_batches(50, CPU)), next(d.test_batches(50, cuda))
    assert torch.allclose(ta[0], tb[0].cpu(), atol=1e-6, rtol=0)


def test_split_gives_the_cpu_tensors_and_preload_the_device_copy():
    d = indexed_set(50)
    (x, y), (tx, ty) = d.split("train"), d.split("test")
    assert x.dtype == torch.uint8 and x.shape == (50, 1, 4, 4) and y.dtype == torch.int64 and y.shape == (50,)
    assert tx.shape[0] == ty.shape[0] == 10 and x.device.type == "cpu"
    with pytest.raises(ValueError, match="train or test"):
        d.split("val")
    d.preload("cpu")
    assert d._tensors("cpu")["train_x"] is x  # on the CPU the tensors are shared, not copied
