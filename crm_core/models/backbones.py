"""CAM backbones: torchvision classification networks taken apart into a stem and four stages.

Every backbone is cut the same way, so the classifier, DRS placement, output stride, the
fine-tuning recipe and the CAM methods need no per-family code:

- ``stem`` then ``layer1`` .. ``layer4`` at output strides 4, 8, 16 and 32, each stage an
  ``nn.Sequential`` of *blocks* (the unit a DRS layer can follow, see ``DRS_POSITIONS``);
- ``layer4``'s output is the CAM source (the input of the GAP);
- output stride 16 turns the stride-2 convolution of ``layer4``'s first block into stride 1
  (no dilation, as the SSC code does for ResNet), so CAMs are 7x7 at 112 px.

Families (:data:`FAMILIES`):

- ``resnet``: ``conv1 bn1 relu maxpool`` as the stem, torchvision's ``layer1`` .. ``layer4`` as
  the stages; every block ends in a ReLU.
- ``efficientnet``: ``features[0]`` (the stride-2 stem conv) as the stem; ``features[1:3]``,
  ``[3]``, ``[4:6]`` and ``[6:9]`` flattened to their MBConv blocks as ``layer1`` .. ``layer4``
  (strides 4, 8, 16, 32), ``layer4`` ending in the 1x1 head conv + BN + SiLU (1280 channels for
  b0). torchvision's head is dropout + linear on the GAP; the dropout is kept (identity at
  evaluation, so Grad-CAM++'s closed form stays exact there). An MBConv block ends in a linear
  projection (no activation): a DRS after it caps the positive peaks only; the last block of
  ``layer4`` is the post-SiLU head conv, which is where ``layer4`` puts its DRS.

Add a backbone: a :class:`Backbone` entry in :data:`BACKBONES` (torchvision builder and
ImageNet weights by name, or any constructor taking ``weights=None``); a new family also needs its
cutting function in :data:`FAMILIES` and its head prefix in :data:`HEAD_PREFIXES`
(``tests/test_models.py`` adds a toy family this way).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn


@dataclass(frozen=True)
class Backbone:
    family: str  # key of FAMILIES: how the network is cut into stem + stages
    builder: str | Callable[..., nn.Module]  # a torchvision.models function by name, or any constructor
    weights: str | None  # its ImageNet weights, "EnumName.MEMBER" of torchvision.models (None: none exist)
    head_dropout: float = 0.0  # dropout before the linear head (torchvision's, for EfficientNet)


#: arch name -> backbone. Names are torchvision's; builders and weights are looked up by name on
#: the first model build, so importing this module does not import torchvision (~2 s of
#: torch._dynamo, which the dashboard's cold start and the CLIs' --help need not pay).
BACKBONES: dict[str, Backbone] = {
    "resnet18": Backbone("resnet", "resnet18", "ResNet18_Weights.IMAGENET1K_V1"),
    "resnet34": Backbone("resnet", "resnet34", "ResNet34_Weights.IMAGENET1K_V1"),
    "resnet50": Backbone("resnet", "resnet50", "ResNet50_Weights.IMAGENET1K_V2"),
    "efficientnet_b0": Backbone("efficientnet", "efficientnet_b0", "EfficientNet_B0_Weights.IMAGENET1K_V1", 0.2),
    "efficientnet_b1": Backbone("efficientnet", "efficientnet_b1", "EfficientNet_B1_Weights.IMAGENET1K_V1", 0.2),
    "efficientnet_b2": Backbone("efficientnet", "efficientnet_b2", "EfficientNet_B2_Weights.IMAGENET1K_V1", 0.3),
}

Stages = tuple[nn.Module, list[nn.Sequential]]


def _resnet(net: nn.Module) -> Stages:
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    return stem, [net.layer1, net.layer2, net.layer3, net.layer4]


def _efficientnet(net: nn.Module) -> Stages:
    f = net.features
    return f[0], [nn.Sequential(*f[1], *f[2]), nn.Sequential(*f[3]), nn.Sequential(*f[4], *f[5]),
                  nn.Sequential(*f[6], *f[7], f[8])]


#: family -> function cutting a torchvision network into (stem, [layer1, layer2, layer3, layer4])
FAMILIES: dict[str, Callable[[nn.Module], Stages]] = {"resnet": _resnet, "efficientnet": _efficientnet}
#: torchvision's own classification head, per family: its keys are dropped when ImageNet weights load
HEAD_PREFIXES: dict[str, tuple[str, ...]] = {"resnet": ("fc.",), "efficientnet": ("classifier.",)}


def torchvision_backbone(arch: str) -> tuple[Callable[..., nn.Module], object | None]:
    """(constructor, ImageNet weights enum or None) of ``arch``; names are looked up in torchvision.models."""
    backbone = BACKBONES[arch]
    builder, weights = backbone.builder, None
    if isinstance(builder, str) or backbone.weights is not None:
        import torchvision.models as tvm

        if isinstance(builder, str):
            builder = getattr(tvm, builder)
        if backbone.weights is not None:
            enum_name, member = backbone.weights.split(".")
            weights = getattr(getattr(tvm, enum_name), member)
    return builder, weights


def stage_channels(stage: nn.Module) -> int:
    """Output channels of a stage: those of its last convolution (every block of both families
    ends in conv + BN, possibly + activation)."""
    convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def stride_one(stage: nn.Sequential) -> None:
    """Turn the stride-2 convolution of a stage's first block into stride 1 (output stride 32 -> 16)."""
    for module in stage[0].modules():
        if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
            module.stride = (1, 1)
