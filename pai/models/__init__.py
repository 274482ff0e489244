"""Model builders: plain functions ``f(num_classes, in_channels=3, ...) -> nn.Module``, one per
``conf/model/*.yaml`` (its ``_target_``)."""

from pai.models.cifar_resnet import (
    resnet18,
    resnet18_tiny,
    resnet34,
    resnet34_tiny,
    resnet50,
    resnet50_tiny,
    resnet101,
    resnet152,
)
from pai.models.external import timm_model, torchvision_model
from pai.models.he_resnet import resnet20
from pai.models.small_input import adapt_in_channels, patch_small_input
from pai.models.vgg import vgg11, vgg13, vgg16, vgg19
from pai.models.vit import vit_tiny

__all__ = [
    "adapt_in_channels",
    "patch_small_input",
    "resnet18",
    "resnet18_tiny",
    "resnet20",
    "resnet34",
    "resnet34_tiny",
    "resnet50",
    "resnet50_tiny",
    "resnet101",
    "resnet152",
    "timm_model",
    "torchvision_model",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "vit_tiny",
]
