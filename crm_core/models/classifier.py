"""CAM classifier: a torchvision backbone whose last feature map is the CAM source.

The backbone (:mod:`crm_core.models.backbones`: ResNet or EfficientNet) is taken apart into
stem + 4 stages, then a GAP and a new linear head for K classes. Variable parts come in as
arguments (timm style): the suppression layer (DRS) and where it goes, the output stride and the
fine-tuning recipe. ``forward`` returns logits *and* the final feature map, so Grad-CAM++ in
closed form (see ``crm_core.cams.closed_form``) comes from the same forward pass as the logits.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import chain
from typing import Callable, NamedTuple

import torch
from torch import nn

from crm_core.models.backbones import (BACKBONES, FAMILIES, HEAD_PREFIXES, stage_channels, stride_one,
                                       torchvision_backbone)
from crm_core.models.drs import DRS, DRS_DEFAULT_DELTA
from crm_core.pretrained import ResolvedWeights, resolve_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: arch name -> Backbone: the registry itself (backbones.BACKBONES), so an entry added there is an arch here
ARCHS = BACKBONES
STAGES = ("layer1", "layer2", "layer3", "layer4")
# Where a DRS layer can be inserted: after a whole stage, after every block of layer4, or after
# every block of every stage ("all_blocks": the official DRS code's VGG16 puts one in place of
# every ReLU; for these backbones the analogue is one after every block).
DRS_POSITIONS = (*STAGES, "layer4_blocks", "all_blocks")
FREEZE_RECIPES = ("last2", "none")


def stacked_drs(positions: tuple[str, ...]) -> str | None:
    """Why ``positions`` would put two DRS layers back to back (the cap then becomes delta^2), or None."""
    if "all_blocks" in positions and len(positions) > 1:
        return "all_blocks already puts a DRS after every block; give it alone"
    if "layer4" in positions and "layer4_blocks" in positions:
        return "layer4 and layer4_blocks both put a DRS after layer4's last block (the cap would be delta^2)"
    return None


@dataclass
class ModelConfig:
    variant: str = "resnet"  # registry name, e.g. "resnet", "resnet_drs"
    arch: str = "resnet50"  # a key of backbones.BACKBONES: resnet18/34/50, efficientnet_b0/b1/b2
    num_classes: int = 4  # K, size of the new linear head
    output_stride: int = 32  # 32 (torchvision default) or 16 (layer4 at stride 1, as the SSC code)
    drs: bool = False  # insert DRS layers
    drs_delta: float = DRS_DEFAULT_DELTA  # fixed suppression ratio
    drs_learnable: bool = False  # delta = sigmoid(FC(GAP(x))) per channel instead of fixed
    drs_positions: tuple[str, ...] = ("layer4_blocks",)  # where DRS goes, see DRS_POSITIONS
    freeze: str = "none"  # "last2": only layer4 + fc (+ DRS) train; "none": everything trains
    weights: str = "none"  # "imagenet" | "none" | path to a state dict
    class_names: list[str] = field(default_factory=list)  # filled from the dataset

    def __post_init__(self) -> None:
        self.drs_positions = tuple(self.drs_positions)
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; choose from {sorted(ARCHS)}")
        if self.output_stride not in (16, 32):
            raise ValueError(f"output_stride must be 16 or 32, got {self.output_stride}")
        if self.freeze not in FREEZE_RECIPES:
            raise ValueError(f"freeze must be one of {FREEZE_RECIPES}, got {self.freeze!r}")
        bad = [p for p in self.drs_positions if p not in DRS_POSITIONS]
        if bad:
            raise ValueError(f"unknown DRS positions {bad}; choose from {DRS_POSITIONS}")
        if self.drs and (stacked := stacked_drs(self.drs_positions)):
            raise ValueError(f"DRS positions {list(self.drs_positions)}: {stacked}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["drs_positions"] = list(self.drs_positions)
        return d


class ClassifierOutput(NamedTuple):
    logits: torch.Tensor  # (B, C)
    features: torch.Tensor  # (B, K, h, w): input of GAP, the CAM source


class CamClassifier(nn.Module):
    """Backbone + GAP + (dropout) + linear head, with optional suppression layers.

    Input images are float (B, 3, H, W) in [0, 1]; ImageNet normalisation happens inside, so
    a checkpoint carries its own preprocessing.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        suppression_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        backbone = BACKBONES[cfg.arch]
        build, _ = torchvision_backbone(cfg.arch)
        net = build(weights=None)
        torchvision_names = {id(t): name for name, t in chain(net.named_parameters(), net.named_buffers())}
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.stem, stages = FAMILIES[backbone.family](net)
        self.feature_dim = stage_channels(stages[3])
        if cfg.output_stride == 16:
            stride_one(stages[3])
        if suppression_layer is not None:
            for i, name in enumerate(STAGES):
                channels = stage_channels(stages[i])
                if "all_blocks" in cfg.drs_positions or (name == "layer4" and "layer4_blocks" in cfg.drs_positions):
                    stages[i] = nn.Sequential(*[nn.Sequential(b, suppression_layer(stage_channels(b)))
                                                for b in stages[i]])
                if name in cfg.drs_positions:
                    stages[i] = nn.Sequential(*stages[i], suppression_layer(channels))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.head_dropout = nn.Dropout(backbone.head_dropout) if backbone.head_dropout else nn.Identity()
        self.fc = nn.Linear(self.feature_dim, cfg.num_classes)
        self.weights_source = "random"
        # torchvision's parameter name -> ours, for loading its ImageNet weights (the tensors are the
        # same objects, so this holds however the stages were regrouped or wrapped)
        self._from_torchvision = {torchvision_names[id(t)]: name
                                  for name, t in chain(self.named_parameters(), self.named_buffers())
                                  if id(t) in torchvision_names}

    # -- weights -----------------------------------------------------------------------
    def load_backbone(self, resolved: ResolvedWeights) -> None:
        """Copy pretrained torchvision weights into the backbone (the head stays new)."""
        self.weights_source = resolved.source
        if resolved.state_dict is None:
            return
        own = self.state_dict()
        head = HEAD_PREFIXES[BACKBONES[self.cfg.arch].family]
        mapped: dict[str, torch.Tensor] = {}
        for key, value in resolved.state_dict.items():
            if key.startswith(head):
                continue
            target = self._from_torchvision.get(key)
            if target is None:
                raise ValueError(f"pretrained key {key} has no place in {self.cfg.arch}")
            mapped[target] = value
        missing = [k for k in own if k not in mapped and not k.startswith("fc.") and "delta_fc" not in k]
        if missing:
            raise ValueError(f"pretrained weights miss {len(missing)} backbone tensors, e.g. {missing[:3]}")
        self.load_state_dict(mapped, strict=False)

    # -- fine-tuning recipe -----------------------------------------------------------
    def apply_freeze(self) -> None:
        """"last2": only layer4 and the head (and any DRS delta FCs) train."""
        if self.cfg.freeze == "none":
            return
        for name, param in self.named_parameters():
            param.requires_grad = name.startswith(("layer4.", "fc.")) or "delta_fc" in name

    def train(self, mode: bool = True) -> "CamClassifier":
        super().train(mode)
        if mode and self.cfg.freeze == "last2":
            # Frozen pretrained stages keep their BatchNorm statistics.
            for stage in (self.stem, self.layer1, self.layer2, self.layer3):
                stage.eval()
        return self

    # -- forward ----------------------------------------------------------------------
    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)  # (B, K, h, w)

    def forward(self, images: torch.Tensor) -> ClassifierOutput:
        features = self.forward_features(images)
        logits = self.fc(self.head_dropout(features.mean(dim=(2, 3))))  # GAP (dropout) linear: (B, C)
        return ClassifierOutput(logits, features)

    @property
    def feature_layer(self) -> nn.Module:
        """The module whose output is the CAM source (target layer for hook-based CAMs)."""
        return self.layer4


class LogitsOnly(nn.Module):
    """Adapter for tools that expect ``model(x) -> logits`` (e.g. the grad-cam package)."""

    def __init__(self, model: CamClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images).logits


def build_classifier(cfg: ModelConfig, load_pretrained: bool = True) -> CamClassifier:
    """Build the classifier described by ``cfg``; optionally load its pretrained backbone."""
    suppression = None
    if cfg.drs:
        suppression = lambda channels: DRS(channels, cfg.drs_delta, cfg.drs_learnable)  # noqa: E731
    model = CamClassifier(cfg, suppression)
    if load_pretrained and cfg.weights not in ("none", "random"):
        imagenet = torchvision_backbone(cfg.arch)[1]
        if imagenet is None and cfg.weights in ("imagenet", "auto"):
            raise ValueError(f"{cfg.arch} has no ImageNet weights; use weights 'none' or a file path")
        model.load_backbone(resolve_weights(cfg.weights, imagenet, f"{cfg.arch} backbone"))
    model.apply_freeze()
    return model
