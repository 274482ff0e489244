"""FolderImageData (imagenet) on a small ImageFolder tree of real JPEG files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision.transforms as T
from data_files import build_from_yaml, write_image_folder
from PIL import Image

from pai.data import DataMissingError, FolderImageData, ImageData
from pai.errors import PaiConfigError

CPU = torch.device("cpu")
CLASSES = ["n001", "n002", "n003"]
SMALL = {"num_classes": 3, "image_size": 16, "resize_size": 18, "num_workers": 0}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_image_folder(root / "imagenet" / "train", CLASSES, per_class=6, seed=0)
    write_image_folder(root / "imagenet" / "val", CLASSES, per_class=2, seed=1)
    return root


def collect(it) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*it, strict=True)
    return torch.cat(xs), torch.cat(ys)


def test_imagenet_folder_pipeline(tree: Path) -> None:
    d = build_from_yaml("imagenet", tree, **SMALL)
    assert isinstance(d, FolderImageData) and isinstance(d, ImageData)
    assert (d.num_train, d.num_test, d.num_classes, d.in_channels, d.image_size) == (18, 6, 3, 3, 16)
    # Test: Resize + CenterCrop + ToTensor + Normalize, fixed order, exactly torchvision's output.
    x, y = collect(d.test_batches(4, CPU))
    tf = T.Compose([T.Resize(18), T.CenterCrop(16), T.ToTensor(), T.Normalize(d_mean := (0.485, 0.456, 0.406),
                                                                               (0.229, 0.224, 0.225))])
    assert d_mean == tuple(d.test_transform.transforms[-1].mean)
    want = torch.stack([tf(Image.open(p).convert("RGB")) for p, _ in d.test_set.samples])
    assert torch.allclose(x, want, atol=1e-6, rtol=0) and y.tolist() == [0, 0, 1, 1, 2, 2]
    # Train: every sample once (label counts), 16x16 crops, last partial batch kept.
    batches = list(d.train_batches(5, epoch=0, seed=0, device=CPU))
    assert [b[0].shape[0] for b in batches] == [5, 5, 5, 3] and batches[0][0].shape[1:] == (3, 16, 16)
    assert torch.bincount(torch.cat([b[1] for b in batches])).tolist() == [6, 6, 6]


def test_imagenet_reproducible_across_workers_and_epochs(tree: Path) -> None:
    d = build_from_yaml("imagenet", tree, **SMALL)
    torch.manual_seed(1)
    a = collect(d.train_batches(4, epoch=2, seed=5, device=CPU))
    state = torch.get_rng_state()
    b = collect(d.train_batches(4, epoch=2, seed=5, device=CPU))
    assert torch.equal(torch.get_rng_state(), state), "loading must not consume the global RNG"
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    d.num_workers = 2  # worker processes load the samples: same batches
    c = collect(d.train_batches(4, epoch=2, seed=5, device=CPU))
    assert torch.equal(a[0], c[0]) and torch.equal(a[1], c[1])
    d.num_workers = 0
    for other in (collect(d.train_batches(4, epoch=3, seed=5, device=CPU)),
                  collect(d.train_batches(4, epoch=2, seed=6, device=CPU))):
        assert not torch.equal(a[0], other[0])


def test_imagenet_scoring_samples(tree: Path) -> None:
    d = build_from_yaml("imagenet", tree, **SMALL)
    x, y = d.scoring_samples(2, seed=0, device=CPU)
    assert x.shape == (6, 3, 16, 16) and torch.bincount(y).tolist() == [2, 2, 2]
    x2, y2 = d.scoring_samples(2, seed=0, device=CPU)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = d.scoring_samples(2, seed=1, device=CPU)
    assert not torch.equal(x, x3)
    with pytest.raises(PaiConfigError, match="prune.samples_per_class=7"):
        d.scoring_samples(7, seed=0, device=CPU)


def test_imagenet_missing_and_mismatch(tmp_path: Path, tree: Path) -> None:
    with pytest.raises(DataMissingError) as err:
        build_from_yaml("imagenet", tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "dataset=imagenet" in msg and str(tmp_path / "imagenet") in msg
    with pytest.raises(PaiConfigError, match=r"dataset\.num_classes=1000"):
        build_from_yaml("imagenet", tree, num_workers=0)


def test_imagenet_rank_slices_equal_the_single_process_batches(tree: Path) -> None:
    """Distributed sharding (pai.data.batching): rank r's batches are slice r of the one-process batches, with
    the same per-sample augmentation; the test shards make up the test set."""
    d = build_from_yaml("imagenet", tree, **SMALL)
    single = list(d.train_batches(6, epoch=1, seed=3, device=CPU))
    ranks = [list(d.train_batches(6, epoch=1, seed=3, device=CPU, rank=r, world=2)) for r in range(2)]
    for (x, y), (x0, y0), (x1, y1) in zip(single, *ranks, strict=True):
        assert x0.shape[0] == x1.shape[0] == 3
        assert torch.equal(x, torch.cat([x0, x1])) and torch.equal(y, torch.cat([y0, y1]))
    test = collect(d.test_batches(4, CPU))[0]
    assert torch.equal(test, torch.cat([collect(d.test_batches(4, CPU, rank=r, world=2))[0] for r in range(2)]))
    with pytest.raises(PaiConfigError, match="train.batch_size=5 .* divisible by the number of ranks"):
        d.train_batches(5, epoch=0, seed=0, device=CPU, rank=0, world=2)
