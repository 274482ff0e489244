"""Every dataset builder on small files written in the real on-disk format, built from its yaml node."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from data_files import (
    build_from_yaml,
    closed_port_url,
    dataset_config,
    md5,
    patch_cifar_checksums,
    serve_directory,
    silent_server_url,
    write_cifar10,
    write_cifar100,
    write_fashion_mnist,
    write_tiny_imagenet,
    zip_tree,
)
from PIL import Image
from torchvision.datasets import CIFAR10, CIFAR100

from pai.data import DataMissingError, TensorImageData
from pai.data.tinyimagenet import cache_path
from pai.errors import PaiConfigError

CPU = torch.device("cpu")
FMNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")


def tv_tensors(images_hwc: np.ndarray, mean, std) -> torch.Tensor:
    """What torchvision's ToTensor + Normalize make of uint8 HWC (or HW) arrays."""
    tf = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    return torch.stack([tf(Image.fromarray(a)) for a in images_hwc])


def assert_is_permutation_of(got: torch.Tensor, want: torch.Tensor) -> None:
    """Each row of `got` equals (to 1e-6) a distinct row of `want`, and all rows are covered."""
    diff = (got.flatten(1)[:, None] - want.flatten(1)[None]).abs().amax(dim=2)
    best = diff.min(dim=1)
    assert float(best.values.max()) <= 1e-6
    assert torch.equal(torch.sort(best.indices).values, torch.arange(want.shape[0]))


def assert_one_line_missing(err: pytest.ExceptionInfo, key: str, path: Path) -> None:
    msg = str(err.value)
    assert isinstance(err.value, DataMissingError) and isinstance(err.value, PaiConfigError)
    assert "\n" not in msg, msg
    assert f"dataset={key}" in msg and str(path) in msg, msg


# ---- CIFAR ------------------------------------------------------------------------------------------------
def test_cifar10_from_python_pickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = write_cifar10(tmp_path)
    patch_cifar_checksums(monkeypatch, CIFAR10, tmp_path)
    d = build_from_yaml("cifar10", tmp_path, download=False)
    assert isinstance(d, TensorImageData)
    assert (d.num_train, d.num_test, d.num_classes, d.in_channels, d.image_size) == (100, 30, 10, 3, 32)
    assert (d.crop_padding, d.flip) == (4, True)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    assert d.mean == mean and d.std == std
    want_test = tv_tensors(arrays["test_x"], mean, std)
    xs, ys = zip(*d.test_batches(8, CPU), strict=True)
    assert torch.allclose(torch.cat(xs), want_test, atol=1e-6, rtol=0)
    assert torch.cat(ys).tolist() == arrays["test_y"].tolist()
    # Also against torchvision's own dataset object reading the same files.
    tv = CIFAR10(str(tmp_path), train=False, transform=T.Compose([T.ToTensor(), T.Normalize(mean, std)]))
    assert torch.allclose(torch.cat(xs)[5], tv[5][0], atol=1e-6, rtol=0)
    # A no-augmentation training epoch is a permutation of torchvision's training tensors, labels aligned.
    batches = list(d.train_batches(32, 0, 0, CPU, augment=False))
    got = torch.cat([x for x, _ in batches])
    want = tv_tensors(arrays["train_x"], mean, std)
    assert_is_permutation_of(got, want)
    order = d.epoch_plan(0, 0, augment=False)[0]
    assert torch.cat([y for _, y in batches]).tolist() == arrays["train_y"][order.numpy()].tolist()


def test_cifar100_fine_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = write_cifar100(tmp_path)
    patch_cifar_checksums(monkeypatch, CIFAR100, tmp_path)
    d = build_from_yaml("cifar100", tmp_path, download=False)
    assert (d.num_train, d.num_test, d.num_classes) == (200, 50, 100)
    assert d.mean == (0.5071, 0.4867, 0.4408) and d.std == (0.2675, 0.2565, 0.2761)
    xs, ys = zip(*d.test_batches(64, CPU), strict=True)
    assert torch.allclose(torch.cat(xs), tv_tensors(arrays["test_x"], d.mean, d.std), atol=1e-6, rtol=0)
    assert torch.cat(ys).tolist() == arrays["test_y"].tolist()
    x, y = d.scoring_samples(2, seed=0, device=CPU)
    assert x.shape == (200, 3, 32, 32) and torch.bincount(y).tolist() == [2] * 100


def test_cifar_config_mismatch_names_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar10(tmp_path)
    patch_cifar_checksums(monkeypatch, CIFAR10, tmp_path)
    with pytest.raises(PaiConfigError, match=r"dataset\.num_classes=100 .*num_classes=10"):
        build_from_yaml("cifar10", tmp_path, download=False, num_classes=100)
    with pytest.raises(PaiConfigError, match=r"dataset\.image_size=64"):
        build_from_yaml("cifar10", tmp_path, download=False, image_size=64)


def test_cifar_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataMissingError) as err:
        build_from_yaml("cifar10", tmp_path, download=False)
    assert_one_line_missing(err, "cifar10", tmp_path / "cifar-10-batches-py")
    with pytest.raises(DataMissingError) as err:
        build_from_yaml("cifar100", tmp_path, download=False)
    assert_one_line_missing(err, "cifar100", tmp_path / "cifar-100-python")
    # download=true without a reachable server: fails fast with the same kind of message.
    monkeypatch.setattr(CIFAR10, "url", closed_port_url("cifar-10-python.tar.gz"))
    start = time.monotonic()
    with pytest.raises(DataMissingError, match="download failed") as err:
        build_from_yaml("cifar10", tmp_path, download=True)
    assert time.monotonic() - start < 10
    assert_one_line_missing(err, "cifar10", tmp_path / "cifar-10-batches-py")


def test_build_dataset_unwraps_hydra_exception(tmp_path: Path) -> None:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from pai.data import build_dataset

    cfg = dataset_config("cifar10", tmp_path, download=False)
    with pytest.raises(InstantiationException) as wrapped:
        instantiate(cfg.dataset)  # what plain Hydra does: the DataMissingError is only the __cause__
    assert isinstance(wrapped.value.__cause__, DataMissingError)
    with pytest.raises(DataMissingError):
        build_dataset(cfg.dataset)


# ---- Tiny-ImageNet ----------------------------------------------------------------------------------------
WNIDS = ["n02", "n01", "n03"]  # deliberately unsorted in wnids.txt; classes are the sorted wnids


def _decoded(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).transpose(2, 0, 1)


def test_tinyimagenet_tree_and_cache(tmp_path: Path) -> None:
    folder = write_tiny_imagenet(tmp_path, WNIDS, per_class=4, num_val=9)
    d = build_from_yaml("tinyimagenet", tmp_path, download=False, num_classes=3)
    assert (d.num_train, d.num_test, d.in_channels, d.image_size) == (12, 9, 3, 64)
    assert d.classes == sorted(WNIDS)
    arrays = d._cpu
    # Training images in sorted-wnid order, pixels as PIL decodes them (greyscale converted to RGB).
    assert arrays["train_y"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert np.array_equal(arrays["train_x"][0].numpy(), _decoded(folder / "train/n01/images/n01_0.JPEG"))
    grey = arrays["train_x"][4].numpy()  # n02_0 was saved greyscale
    assert np.array_equal(grey, _decoded(folder / "train/n02/images/n02_0.JPEG"))
    assert np.array_equal(grey[0], grey[1])
    # The official val split is the test set, labelled from val_annotations.txt.
    assert arrays["test_y"].tolist() == [sorted(WNIDS).index(WNIDS[j % 3]) for j in range(9)]
    assert np.array_equal(arrays["test_x"][7].numpy(), _decoded(folder / "val/images/val_7.JPEG"))
    # Normalised on the way out, with the paper's statistics.
    x, _ = next(d.test_batches(9, CPU))
    want = tv_tensors(np.stack([_decoded(folder / f"val/images/val_{j}.JPEG").transpose(1, 2, 0)
                                for j in range(9)]), d.mean, d.std)
    assert torch.allclose(x, want, atol=1e-6, rtol=0)
    # Second build reads the cache (the tree may even be gone).
    assert cache_path(tmp_path).is_file()
    import shutil

    shutil.rmtree(folder)
    d2 = build_from_yaml("tinyimagenet", tmp_path, download=False, num_classes=3)
    assert torch.equal(d2._cpu["train_x"], arrays["train_x"]) and d2.classes == d.classes
    with pytest.raises(PaiConfigError, match=r"dataset\.num_classes=200"):
        build_from_yaml("tinyimagenet", tmp_path, download=False)


def test_tinyimagenet_download_and_unzip(tmp_path: Path) -> None:
    src = tmp_path / "server"
    src.mkdir()
    folder = write_tiny_imagenet(src, WNIDS, per_class=2, num_val=3)
    archive = zip_tree(folder, src / "tiny-imagenet-200.zip")
    root = tmp_path / "data"
    with serve_directory(src) as base:
        url = f"{base}/tiny-imagenet-200.zip"
        with pytest.raises(DataMissingError, match="download failed"):  # checksum mismatch is refused
            build_from_yaml("tinyimagenet", root, download=True, num_classes=3, url=url)
        d = build_from_yaml("tinyimagenet", root, download=True, num_classes=3, url=url, md5=md5(archive))
    assert (d.num_train, d.num_test) == (6, 3)
    assert (root / "tiny-imagenet-200" / "wnids.txt").is_file() and cache_path(root).is_file()


def test_tinyimagenet_missing(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError) as err:
        build_from_yaml("tinyimagenet", tmp_path, download=False)
    assert_one_line_missing(err, "tinyimagenet", tmp_path / "tiny-imagenet-200")
    start = time.monotonic()
    with pytest.raises(DataMissingError, match="download failed") as err:
        build_from_yaml("tinyimagenet", tmp_path, download=True, url=closed_port_url())
    assert time.monotonic() - start < 10
    assert_one_line_missing(err, "tinyimagenet", tmp_path / "tiny-imagenet-200")


def test_download_from_silent_server_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pai.data.base

    monkeypatch.setattr(pai.data.base, "DOWNLOAD_TIMEOUT_S", 0.5)
    start = time.monotonic()
    with silent_server_url() as url, pytest.raises(DataMissingError, match="download failed.*timed out"):
        build_from_yaml("tinyimagenet", tmp_path, download=True, url=url)
    assert time.monotonic() - start < 5


# ---- Fashion-MNIST ----------------------------------------------------------------------------------------
def test_fashion_mnist_from_system_dir(tmp_path: Path) -> None:
    system = tmp_path / "usr-share"  # stands in for the Debian package directory (gzipped idx files)
    arrays = write_fashion_mnist(system, num_train=60, num_test=20)
    root = tmp_path / "data"
    d = build_from_yaml("fashion_mnist", root, download=False, system_dir=str(system))
    assert (d.num_train, d.num_test, d.num_classes, d.in_channels, d.image_size) == (60, 20, 10, 1, 28)
    assert torch.equal(d._cpu["train_x"][:, 0], torch.from_numpy(arrays["train_x"]))
    assert d._cpu["test_y"].tolist() == arrays["test_y"].tolist()
    assert (root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    x, _ = next(d.test_batches(20, CPU))
    assert torch.allclose(x, tv_tensors(arrays["test_x"], (0.2860,), (0.3530,)), atol=1e-6, rtol=0)


def test_fashion_mnist_gz_in_root(tmp_path: Path) -> None:
    arrays = write_fashion_mnist(tmp_path / "FashionMNIST" / "raw", num_train=30, num_test=10)
    d = build_from_yaml("fashion_mnist", tmp_path, download=False, system_dir=None)
    assert torch.equal(d._cpu["train_x"][:, 0], torch.from_numpy(arrays["train_x"]))


def test_fashion_mnist_missing(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError) as err:
        build_from_yaml("fashion_mnist", tmp_path, download=False, system_dir=str(tmp_path / "nowhere"))
    assert_one_line_missing(err, "fashion_mnist", tmp_path / "FashionMNIST" / "raw")
    assert "nowhere" in str(err.value)


@pytest.mark.fmnist
@pytest.mark.skipif(
    not (FMNIST_SYSTEM / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST idx files not in {FMNIST_SYSTEM} (apt install dataset-fashion-mnist)",
)
def test_fashion_mnist_real_debian_files(tmp_path: Path) -> None:
    d = build_from_yaml("fashion_mnist", tmp_path, download=False)  # yaml default system_dir
    assert (d.num_train, d.num_test) == (60000, 10000)
    assert torch.bincount(d._cpu["train_y"]).tolist() == [6000] * 10
    assert torch.bincount(d._cpu["test_y"]).tolist() == [1000] * 10
    mean = d._cpu["train_x"].double().mean() / 255
    assert abs(float(mean) - 0.2860) < 1e-3  # the published normalisation matches the real data


# ---- digits / synthetic -----------------------------------------------------------------------------------
def test_digits_builds_fast_and_stratified(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    build_from_yaml("digits", tmp_path)  # warm imports
    start = time.perf_counter()
    d = build_from_yaml("digits", tmp_path)
    assert time.perf_counter() - start < 1.0  # ~0.1 s; generous for a busy 2-core machine
    assert (d.num_train, d.num_test, d.num_classes, d.in_channels, d.image_size) == (1437, 360, 10, 1, 8)
    assert (d.crop_padding, d.flip) == (1, False)
    test_counts = torch.bincount(d._cpu["test_y"]).tolist()
    assert all(35 <= c <= 37 for c in test_counts)  # 20% of each class (174..183 per class)
    ref = load_digits()
    all_x = torch.cat([d._cpu["train_x"], d._cpu["test_x"]])[:, 0].double()
    assert sorted(map(tuple, (all_x.round() * 16 / 255).round().flatten(1).tolist())) == sorted(
        map(tuple, ref.images.reshape(-1, 64).tolist())
    )
    mean = d._cpu["train_x"].double().mean() / 255
    assert abs(d.mean[0] - float(mean)) < 1e-9
    again = build_from_yaml("digits", tmp_path)
    other = build_from_yaml("digits", tmp_path, split_seed=1)
    assert torch.equal(again._cpu["test_x"], d._cpu["test_x"])
    assert not torch.equal(other._cpu["test_x"], d._cpu["test_x"])
    with pytest.raises(PaiConfigError, match=r"dataset\.in_channels=3"):
        build_from_yaml("digits", tmp_path, in_channels=3)


def test_synthetic_shapes_balance_and_learnable(tmp_path: Path) -> None:
    d = build_from_yaml("synthetic", tmp_path, num_train=400, num_test=100, num_classes=4, image_size=12)
    assert (d.num_train, d.num_test, d.in_channels, d.image_size) == (400, 100, 3, 12)
    assert torch.bincount(d._cpu["train_y"]).tolist() == [100] * 4
    same = build_from_yaml("synthetic", tmp_path, num_train=400, num_test=100, num_classes=4, image_size=12)
    assert torch.equal(same._cpu["train_x"], d._cpu["train_x"])
    # A linear model on channel means learns the labels: the loss falls well below log(4).
    torch.manual_seed(0)
    w = torch.zeros(3, 4, requires_grad=True)
    b = torch.zeros(4, requires_grad=True)
    losses = []
    for ep in range(6):
        for x, y in d.train_batches(100, ep, 0, CPU):
            loss = torch.nn.functional.cross_entropy(x.mean(dim=(2, 3)) @ w + b, y)
            w.grad = b.grad = None
            loss.backward()
            with torch.no_grad():  # plain gradient descent (no optimizer import needed)
                w -= 2.0 * w.grad
                b -= 2.0 * b.grad
            losses.append(loss.item())
    assert losses[-1] < 0.5 * np.log(4) < losses[0]


# ---- the yaml nodes themselves ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["cifar10", "cifar100", "tinyimagenet", "imagenet", "fashion_mnist", "digits", "synthetic"]
)
def test_yaml_contract(name: str) -> None:
    import inspect

    from data_files import CONF_DATASET
    from hydra.utils import get_method
    from omegaconf import OmegaConf
    path = CONF_DATASET / f"{name}.yaml"
    node = OmegaConf.load(path)
    for key in ("_target_", "name", "num_classes", "in_channels", "image_size", "root"):
        assert key in node, f"{path} lacks {key}"
    assert node.name == name
    assert OmegaConf.to_container(node)["root"] == "${data_root}"
    # Every knob is documented by a comment on its line.
    for line in path.read_text().splitlines():
        if line and not line.startswith((" ", "#")) and ":" in line and not line.startswith("_target_"):
            assert "#" in line, f"{path}: undocumented knob: {line}"
    # The builder accepts every key.
    fn = get_method(node._target_)
    raw = OmegaConf.to_container(node, resolve=False)
    inspect.signature(fn).bind(**{k: v for k, v in raw.items() if k != "_target_"})
