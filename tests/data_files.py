"""Helpers for the data tests: write small datasets in their REAL on-disk formats (CIFAR python pickles,
Tiny-ImageNet JPEG tree, gzipped idx files, ImageFolder trees), serve a directory over local HTTP, and build
a dataset from its yaml node the way `hydra.utils.instantiate(cfg.dataset)` does in a run."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import pickle
import socket
import struct
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CONF_DATASET = REPO / "conf" / "dataset"


def dataset_config(name: str, data_root: Path | str, **overrides: Any) -> Any:
    """`conf/dataset/<name>.yaml` composed under a config that has `data_root`, with overrides applied."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"data_root": str(data_root), "dataset": OmegaConf.load(CONF_DATASET / f"{name}.yaml")})
    for key, value in overrides.items():
        OmegaConf.update(cfg, f"dataset.{key}", value, merge=False)
    return cfg


def build_from_yaml(name: str, data_root: Path | str, **overrides: Any) -> Any:
    """Build the dataset from its yaml node as a run does (`pai.data.build_dataset` = instantiate + unwrap)."""
    from pai.data import build_dataset

    return build_dataset(dataset_config(name, data_root, **overrides).dataset)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ---- CIFAR ------------------------------------------------------------------------------------------------
def _dump(path: Path, obj: dict) -> None:
    # Protocol 2 and str keys: what the original Python-2 pickles look like when read with encoding="latin1".
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, per_batch: int = 20, num_test: int = 30, seed: int = 0) -> dict[str, np.ndarray]:
    """`root/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`; returns the HWC arrays written."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    xs, ys = [], []
    for i in range(1, 6):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)  # rows: 1024 R, 1024 G, 1024 B
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        _dump(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", "labels": labels,
                                           "data": data, "filenames": [f"img{i}_{j}.png" for j in range(per_batch)]})
        xs.append(data)
        ys += labels
    test = rng.integers(0, 256, (num_test, 3072), dtype=np.uint8)
    test_labels = [int(v) for v in rng.integers(0, 10, num_test)]
    _dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": test_labels, "data": test,
                                  "filenames": [f"t{j}.png" for j in range(num_test)]})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _dump(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072})
    hwc = lambda a: a.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return {"train_x": hwc(np.concatenate(xs)), "train_y": np.array(ys), "test_x": hwc(test),
            "test_y": np.array(test_labels)}


def write_cifar100(root: Path, num_train: int = 200, num_test: int = 50, seed: int = 0) -> dict[str, np.ndarray]:
    """`root/cifar-100-python/{train,test,meta}` with fine and coarse labels."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for split, n in (("train", num_train), ("test", num_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(v) for v in np.arange(n) % 100]
        _dump(folder / split, {"filenames": [f"{split}{j}.png" for j in range(n)], "batch_label": split,
                               "fine_labels": fine, "coarse_labels": [f // 5 for f in fine], "data": data})
        out[f"{split}_x"] = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        out[f"{split}_y"] = np.array(fine)
    _dump(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                            "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    return out


def patch_cifar_checksums(monkeypatch: Any, cls: type, root: Path) -> None:
    """Replace the md5 entries torchvision checks (and ONLY those) with the md5s of the small files."""
    folder = root / cls.base_folder
    monkeypatch.setattr(cls, "train_list", [[f, md5(folder / f)] for f, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[f, md5(folder / f)] for f, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(folder / cls.meta["filename"])})


# ---- Tiny-ImageNet ----------------------------------------------------------------------------------------
def write_tiny_imagenet(root: Path, wnids: list[str], per_class: int = 4, num_val: int = 9, seed: int = 0) -> Path:
    """`root/tiny-imagenet-200/` in the official layout with 64x64 JPEGs (one greyscale, as in the real set)."""
    rng = np.random.default_rng(seed)
    folder = root / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    for k, w in enumerate(wnids):
        images = folder / "train" / w / "images"
        images.mkdir(parents=True)
        boxes = []
        for j in range(per_class):
            arr = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            img = Image.fromarray(arr).convert("L") if (k, j) == (0, 0) else Image.fromarray(arr)
            img.save(images / f"{w}_{j}.JPEG", format="JPEG", quality=90)
            boxes.append(f"{w}_{j}.JPEG\t0\t0\t63\t63\n")
        (folder / "train" / w / f"{w}_boxes.txt").write_text("".join(boxes))
    lines = []
    for j in range(num_val):
        w = wnids[j % len(wnids)]
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
            folder / "val" / "images" / f"val_{j}.JPEG", format="JPEG", quality=90
        )
        lines.append(f"val_{j}.JPEG\t{w}\t1\t2\t60\t61\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(lines))
    return folder


def zip_tree(folder: Path, zip_path: Path) -> Path:
    """Zip `folder` with its own name as the top-level entry, as the official archive does."""
    with zipfile.ZipFile(zip_path, "w") as zf:
        for p in sorted(folder.rglob("*")):
            zf.write(p, p.relative_to(folder.parent).as_posix())
    return zip_path


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """Serve `directory` on http://127.0.0.1:<free port>/ for the duration of the block."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url(path: str = "missing.zip") -> str:
    """A URL on 127.0.0.1 where nothing listens: connecting fails at once, like a machine without network."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{path}"


@contextlib.contextmanager
def silent_server_url(path: str = "stalled.zip") -> Iterator[str]:
    """A URL whose server accepts the connection (kernel backlog) but never answers: only a timeout ends it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"http://127.0.0.1:{s.getsockname()[1]}/{path}"


# ---- idx (MNIST / Fashion-MNIST) --------------------------------------------------------------------------
def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> None:
    """The idx format: magic (0, 0, dtype 0x08 = ubyte, ndim), big-endian int32 sizes, then the bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        with gzip.open(f"{path}.gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def write_fashion_mnist(folder: Path, num_train: int = 60, num_test: int = 20, seed: int = 0,
                        gz: bool = True) -> dict[str, np.ndarray]:
    """The four Fashion-MNIST idx files (gzipped like the Debian package by default) into `folder`."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n, key in (("train", num_train, "train"), ("t10k", num_test, "test")):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", x, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", y, gz)
        out[f"{key}_x"], out[f"{key}_y"] = x, y
    return out


# ---- ImageFolder ------------------------------------------------------------------------------------------
def write_image_folder(folder: Path, classes: list[str], per_class: int, seed: int = 0) -> None:
    """`folder/<class>/*.JPEG` RGB images of varied sizes (as ImageNet's are)."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (folder / c).mkdir(parents=True)
        for j in range(per_class):
            h, w = (int(v) for v in rng.integers(20, 40, 2))
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                folder / c / f"{c}_{j}.JPEG", format="JPEG"
            )
