"""pai.models: parameter counts, every conf/model option builds, small/grayscale inputs, determinism."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from pai.errors import PaiConfigError
from pai.models import (
    resnet18,
    resnet20,
    resnet50,
    timm_model,
    torchvision_model,
    vgg11,
    vgg19,
    vit_tiny,
)
from pai.models.small_input import wants_small_input

CONF_MODEL = Path(__file__).resolve().parents[1] / "conf" / "model"
OPTIONS = {
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnet18_tiny", "resnet34_tiny", "resnet50_tiny",
    "vgg11", "vgg13", "vgg16", "vgg19", "resnet20", "vit_tiny", "timm", "torchvision",
}  # fmt: skip
CIFAR10 = dict(num_classes=10, in_channels=3, image_size=32)
TINY = dict(num_classes=200, in_channels=3, image_size=64)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def logits(model: nn.Module, in_channels: int, size: int) -> torch.Tensor:
    return model.eval()(torch.randn(2, in_channels, size, size))


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        # kuangliu ResNet-18, CIFAR-10: the count every CIFAR PaI paper quotes.
        (lambda: resnet18(10), 11_173_962),
        # kuangliu ResNet-50 (Bottleneck, stride on the 3x3), CIFAR-10.
        (lambda: resnet50(10), 23_520_842),
        # VGG-19-BN with conv bias and one Linear 512->100: 20,040,522 at 10 classes + 90 x 513.
        (lambda: vgg19(100), 20_086_692),
        # ResNet-20 with option-B shortcuts: option A's 269,722 + two 1x1 projections with BN
        # (16*32 + 2*32) + (32*64 + 2*64) = 2,752.
        (lambda: resnet20(10), 272_474),
        # width 0.5 (8/16/32 channels): the fast CPU recipe's net.
        (lambda: resnet20(10, width=0.5), 68_786),
    ],
    ids=["resnet18-c10", "resnet50-c10", "vgg19-c100", "resnet20-c10", "resnet20w0.5-c10"],
)
def test_parameter_counts(build, expected: int) -> None:
    assert n_params(build()) == expected


def test_every_option_has_a_yaml() -> None:
    assert {p.stem for p in CONF_MODEL.glob("*.yaml")} >= OPTIONS


@pytest.mark.parametrize("path", sorted(CONF_MODEL.glob("*.yaml")), ids=lambda p: p.stem)
def test_yaml_composes_and_builds(path: Path) -> None:
    dataset = TINY if path.stem.endswith("_tiny") else CIFAR10
    cfg = OmegaConf.create({"dataset": dataset, "model": OmegaConf.load(path)})
    OmegaConf.resolve(cfg)
    assert cfg.model.num_classes == dataset["num_classes"]
    model = instantiate(cfg.model)
    out = logits(model, dataset["in_channels"], dataset["image_size"])
    assert out.shape == (2, dataset["num_classes"])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "build",
    [
        lambda: resnet20(10, in_channels=1),
        lambda: resnet18(10, in_channels=1),
        lambda: vgg11(10, in_channels=1, image_size=28),
        lambda: timm_model("resnet18", 10, in_channels=1, image_size=28),
        lambda: torchvision_model("resnet18", 10, in_channels=1, image_size=28),
    ],
    ids=["resnet20", "resnet18", "vgg11", "timm-resnet18", "torchvision-resnet18"],
)
def test_grayscale_28px(build) -> None:
    assert logits(build(), 1, 28).shape == (2, 10)


@pytest.mark.parametrize(
    "build",
    [
        lambda: resnet20(10, in_channels=1, width=0.5),
        lambda: resnet18(10, in_channels=1),
        lambda: vgg11(10, in_channels=1, image_size=8),
        lambda: vit_tiny(10, in_channels=1, image_size=8),
    ],
    ids=["resnet20", "resnet18", "vgg11", "vit_tiny"],
)
def test_digits_8px(build) -> None:
    assert logits(build(), 1, 8).shape == (2, 10)


@pytest.mark.parametrize(("size", "pools"), [(32, 5), (28, 4), (8, 3), (64, 5)])
def test_vgg_skips_pools_on_a_1px_map(size: int, pools: int) -> None:
    model = vgg11(10, image_size=size)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == pools
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 8  # depth never changes


def test_cifar_resnet_has_small_stem() -> None:
    model = resnet18(10)
    assert model.conv1.stride == (1, 1) and model.conv1.kernel_size == (3, 3)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


@pytest.mark.parametrize("library", ["timm", "torchvision"])
def test_small_input_patch_keeps_resolution_through_the_stem(library: str) -> None:
    build = timm_model if library == "timm" else torchvision_model
    model = build("resnet18", 10, in_channels=1, image_size=28, small_input="auto")
    assert isinstance(model.maxpool, nn.Identity)
    assert model.conv1.stride == (1, 1) and model.conv1.in_channels == 1
    seen: list[torch.Size] = []
    model.maxpool.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    logits(model, 1, 28)
    assert seen[0][-2:] == (28, 28)  # stem output = input size: no stride-2 conv, no max-pool


def test_no_small_input_patch_keeps_imagenet_stem_but_adapts_channels() -> None:
    model = torchvision_model("resnet18", 10, in_channels=1, image_size=64, small_input=False)
    assert isinstance(model.maxpool, nn.MaxPool2d)
    assert model.conv1.in_channels == 1 and model.conv1.stride == (2, 2) and model.conv1.kernel_size == (7, 7)
    assert logits(model, 1, 64).shape == (2, 10)


def test_small_input_auto_threshold() -> None:
    assert wants_small_input("auto", 28) and wants_small_input("auto", 64)
    assert not wants_small_input("auto", 224)
    assert wants_small_input(True, 224) and not wants_small_input(False, 32)
    with pytest.raises(PaiConfigError, match="model.small_input"):
        wants_small_input("maybe", 32)


@pytest.mark.parametrize("build", [timm_model, torchvision_model], ids=["timm", "torchvision"])
def test_unknown_model_name(build) -> None:
    with pytest.raises(PaiConfigError, match=r"model\.name.*resnet18"):
        build("resnett18", 10, in_channels=3, image_size=32)


def test_small_input_without_known_stem_is_a_config_error() -> None:
    with pytest.raises(PaiConfigError, match=r"model\.small_input"):
        timm_model("vit_tiny_patch16_224", 10, in_channels=3, image_size=32, small_input=True)


def test_vit_patch_size_must_divide_image_size() -> None:
    with pytest.raises(PaiConfigError, match=r"model\.patch_size"):
        vit_tiny(10, image_size=32, patch_size=5)


@pytest.mark.parametrize(
    "build",
    [
        lambda: resnet20(10, width=0.5),
        lambda: vgg11(10, image_size=8),
        lambda: timm_model("resnet18", 10, in_channels=1, image_size=28),
        lambda: torchvision_model("resnet18", 10, in_channels=1, image_size=64, small_input=False),
    ],
    ids=["resnet20", "vgg11", "timm-resnet18-small", "torchvision-resnet18-1ch"],
)
def test_same_seed_same_weights(build) -> None:
    def weights(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return build().state_dict()

    a, b, c = weights(0), weights(0), weights(1)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
