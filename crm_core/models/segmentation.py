"""Stage-2 segmentation networks: torchvision segmentation models with a 2-class head
(0 background, 1 object; on multi-label data, background and every class), trained by
:mod:`crm_core.segment` on pseudo masks.

:data:`SEG_ARCHS` maps a name to its builder and the ImageNet weights of its backbone (the
classification network whose ``features`` / stages it reuses). Builders are looked up on the
first build, so importing this module does not import torchvision.

- ``lraspp_mobilenet_v3_large``, ``deeplabv3_mobilenet_v3_large``: torchvision's, as they are.
- ``fcn_resnet18``: torchvision's FCN head on a ResNet18 whose ``layer4`` runs at stride 1
  (output stride 16, as the CAM classifiers do at small sizes: 7x7 at 112 px), since
  torchvision has no FCN on ResNet18 and its BasicBlock cannot dilate.

Every model maps (B, 3, H, W) images in [0, 1] to (B, N, H, W) logits (:class:`SegmentationNet`
normalises with ImageNet statistics and returns the ``"out"`` entry of torchvision's dict).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from crm_core.models.backbones import stride_one, torchvision_backbone

NUM_SEG_CLASSES = 2  # background, object (the trimap's uncertain pixels are ignored in the loss); multi-label data: C + 1
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class SegArch:
    builder: Callable[[int], nn.Module]  # an N-class model with random weights, forward -> {"out": logits}
    backbone_weights: str  # "EnumName.MEMBER" of torchvision.models: the ImageNet classifier it reuses
    backbone_prefix: str  # keys of that classifier's state dict that belong to the backbone ("features.", "")


def _lraspp(num_classes: int) -> nn.Module:
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    return lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)


def _deeplabv3(num_classes: int) -> nn.Module:
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    return deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)


def _fcn_resnet18(num_classes: int) -> nn.Module:
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.fcn import FCN, FCNHead

    builder, _ = torchvision_backbone("resnet18")
    net = builder(weights=None)
    stride_one(net.layer4)  # output stride 16
    return FCN(IntermediateLayerGetter(net, return_layers={"layer4": "out"}), FCNHead(512, num_classes))


SEG_ARCHS: dict[str, SegArch] = {
    "lraspp_mobilenet_v3_large": SegArch(_lraspp, "MobileNet_V3_Large_Weights.IMAGENET1K_V1", "features."),
    "deeplabv3_mobilenet_v3_large": SegArch(_deeplabv3, "MobileNet_V3_Large_Weights.IMAGENET1K_V1", "features."),
    "fcn_resnet18": SegArch(_fcn_resnet18, "ResNet18_Weights.IMAGENET1K_V1", ""),
}
# Chosen by time per training step on two CPU cores at the synthetic default (112 px, batch 16),
# measured with ``python -m crm_core.experiments.bench.segment_step`` (docs/cli.md, stage 2): fcn_resnet18 median
# 6.2 s, lraspp_mobilenet_v3_large 11.4 s, deeplabv3_mobilenet_v3_large 18.1 s (6 interleaved
# rounds on a machine shared with other trainings; the minima were 4.7, 4.8 and 8.6 s).
DEFAULT_SEG_ARCH = "fcn_resnet18"


def backbone_weights_enum(arch: str) -> object:
    """The torchvision weights enum member of ``arch``'s ImageNet backbone."""
    import torchvision.models as tvm

    enum_name, member = SEG_ARCHS[arch].backbone_weights.split(".")
    return getattr(getattr(tvm, enum_name), member)


class SegmentationNet(nn.Module):
    """A torchvision segmentation model behind ImageNet normalisation: images in [0, 1] ->
    (B, num_classes, H, W) logits: background and object, or background and every class of a
    multi-label dataset."""

    def __init__(self, arch: str, num_classes: int = NUM_SEG_CLASSES) -> None:
        super().__init__()
        if arch not in SEG_ARCHS:
            raise ValueError(f"unknown segmentation arch {arch!r}; choose from {sorted(SEG_ARCHS)}")
        if num_classes < 2:
            raise ValueError(f"a segmentation network needs >= 2 classes (background and one), got {num_classes}")
        self.arch = arch
        self.num_classes = int(num_classes)
        self.net = SEG_ARCHS[arch].builder(self.num_classes)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images - self.mean) / self.std)["out"]  # (B, num_classes, H, W)

    def load_backbone(self, classifier_state: dict[str, torch.Tensor]) -> None:
        """Load an ImageNet classifier's weights into the backbone (every backbone tensor must be there)."""
        prefix = SEG_ARCHS[self.arch].backbone_prefix
        backbone = self.net.backbone
        wanted = backbone.state_dict()
        state = {k[len(prefix):]: v for k, v in classifier_state.items() if k.startswith(prefix) and k[len(prefix):] in wanted}
        missing = sorted(set(wanted) - set(state))
        if missing:
            raise ValueError(f"{self.arch}: the backbone weights lack {len(missing)} tensors (first: {missing[0]})")
        backbone.load_state_dict(state, strict=True)
