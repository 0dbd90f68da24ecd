"""ResNet classifier whose last feature map is the CAM source.

The backbone is torchvision's ResNet taken apart into stem + 4 stages, a GAP and a new
linear head for K classes. Variable parts come in as arguments (timm style): the
suppression layer (DRS) and where it goes, the output stride and the fine-tuning recipe.
``forward`` returns logits *and* the final feature map, so Grad-CAM++ in closed form
(see ``crm_core.cams.closed_form``) comes from the same forward pass as the logits.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, NamedTuple

import torch
from torch import nn

from crm_core.models.drs import DRS, DRS_DEFAULT_DELTA
from crm_core.pretrained import ResolvedWeights, resolve_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: arch -> (torchvision.models builder, its ImageNet weights), by name: torchvision is imported on
#: the first model build (:func:`torchvision_arch`), not with this module. Its import pulls in
#: torch._dynamo (~2 s), which the dashboard's cold start and the CLIs' --help need not pay.
ARCHS: dict[str, tuple[str, str]] = {
    "resnet18": ("resnet18", "ResNet18_Weights.IMAGENET1K_V1"),
    "resnet34": ("resnet34", "ResNet34_Weights.IMAGENET1K_V1"),
    "resnet50": ("resnet50", "ResNet50_Weights.IMAGENET1K_V2"),
}
# Where a DRS layer can be inserted: after a whole stage, or after every block of layer4.
DRS_POSITIONS = ("layer1", "layer2", "layer3", "layer4", "layer4_blocks")
FREEZE_RECIPES = ("last2", "none")


def torchvision_arch(arch: str) -> tuple[Callable[..., nn.Module], object]:
    """(builder, ImageNet weights enum) of ``arch`` from torchvision.models."""
    import torchvision.models as tvm

    builder, weights = ARCHS[arch]
    enum_name, member = weights.split(".")
    return getattr(tvm, builder), getattr(getattr(tvm, enum_name), member)


@dataclass
class ModelConfig:
    variant: str = "resnet"  # registry name, e.g. "resnet", "resnet_drs"
    arch: str = "resnet50"  # resnet18 | resnet34 | resnet50
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
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["drs_positions"] = list(self.drs_positions)
        return d


class ClassifierOutput(NamedTuple):
    logits: torch.Tensor  # (B, C)
    features: torch.Tensor  # (B, K, h, w): input of GAP, the CAM source


def _stride_one(stage: nn.Sequential) -> None:
    """Turn a stage's stride-2 first block into stride 1 (output stride 32 -> 16)."""
    for module in stage[0].modules():
        if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
            module.stride = (1, 1)


def _stage_channels(stage: nn.Sequential) -> int:
    last = stage[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features


class CamClassifier(nn.Module):
    """ResNet + GAP + linear head, with optional suppression layers.

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
        build, _ = torchvision_arch(cfg.arch)
        net = build(weights=None)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        stages = [net.layer1, net.layer2, net.layer3, net.layer4]
        if cfg.output_stride == 16:
            _stride_one(stages[3])
        if suppression_layer is not None:
            for i, name in enumerate(("layer1", "layer2", "layer3", "layer4")):
                channels = _stage_channels(stages[i])
                if name == "layer4" and "layer4_blocks" in cfg.drs_positions:
                    stages[i] = nn.Sequential(*[nn.Sequential(b, suppression_layer(channels)) for b in stages[i]])
                if name in cfg.drs_positions:
                    stages[i] = nn.Sequential(*stages[i], suppression_layer(channels))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.feature_dim = _stage_channels(net.layer4)
        self.fc = nn.Linear(self.feature_dim, cfg.num_classes)
        self.weights_source = "random"

    # -- weights -----------------------------------------------------------------------
    def load_backbone(self, resolved: ResolvedWeights) -> None:
        """Copy pretrained torchvision weights into the backbone (the head stays new)."""
        self.weights_source = resolved.source
        if resolved.state_dict is None:
            return
        own = self.state_dict()
        mapped: dict[str, torch.Tensor] = {}
        for key, value in resolved.state_dict.items():
            if key.startswith("fc."):
                continue
            target = _map_torchvision_key(key, own)
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
        logits = self.fc(features.mean(dim=(2, 3)))  # GAP then linear: (B, C)
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


def _map_torchvision_key(key: str, own: dict[str, torch.Tensor]) -> str | None:
    """Map a torchvision ResNet key to ours (stem regrouped, DRS wrappers shift block indices)."""
    stem_map = {"conv1.": "stem.0.", "bn1.": "stem.1."}
    for prefix, ours in stem_map.items():
        if key.startswith(prefix):
            return ours + key[len(prefix):]
    if key in own:
        return key
    # layer4 blocks wrapped as Sequential(block, DRS): layer4.<i>.<rest> -> layer4.<i>.0.<rest>
    parts = key.split(".", 2)
    if len(parts) == 3:
        candidate = f"{parts[0]}.{parts[1]}.0.{parts[2]}"
        if candidate in own:
            return candidate
    return None


def build_classifier(cfg: ModelConfig, load_pretrained: bool = True) -> CamClassifier:
    """Build the classifier described by ``cfg``; optionally load its pretrained backbone."""
    suppression = None
    if cfg.drs:
        suppression = lambda channels: DRS(channels, cfg.drs_delta, cfg.drs_learnable)  # noqa: E731
    model = CamClassifier(cfg, suppression)
    if load_pretrained and cfg.weights not in ("none", "random"):
        model.load_backbone(resolve_weights(cfg.weights, torchvision_arch(cfg.arch)[1], f"{cfg.arch} backbone"))
    model.apply_freeze()
    return model
