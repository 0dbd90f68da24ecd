"""Loss terms of CAM-driven reconstruction training (docs/method.md, "Training objective").

total = CE + w_l1 * L1(recon, image) + w_vgg * Perceptual(recon, image) + w_align * Align(CAM, superpixels)

Reconstructions come out of a Tanh, so every comparison happens in [-1, 1]
(``crm_core.models.to_tanh_range`` maps the image there).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from crm_core.cams.utils import normalize_cams
from crm_core.data.superpixels import superpixel_mean
from crm_core.models.classifier import IMAGENET_MEAN, IMAGENET_STD
from crm_core.models.decoder import to_tanh_range
from crm_core.pretrained import resolve_weights

# VGG19 ``features`` indices of relu1_1 .. relu5_1 and their weights 1/32 .. 1 (SSC / pix2pixHD).
VGG19_LAYERS: dict[str, tuple[int, float]] = {
    "relu1_1": (1, 1.0 / 32),
    "relu2_1": (6, 1.0 / 16),
    "relu3_1": (11, 1.0 / 8),
    "relu4_1": (20, 1.0 / 4),
    "relu5_1": (29, 1.0),
}


def classification_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor], multi_label: bool = False) -> torch.Tensor:
    """CE on the class index ``batch["label"]``; with ``multi_label`` (several classes per image),
    the multi-label soft-margin loss on the multi-hot ``batch["labels"]``, as IRN and SSC train on VOC."""
    if multi_label:
        return F.multilabel_soft_margin_loss(logits, batch["labels"])
    return F.cross_entropy(logits, batch["label"])


def present_class_cams(cams: torch.Tensor, batch: dict[str, torch.Tensor], multi_label: bool = False) -> torch.Tensor:
    """(B, h, w): the CAM of each image's class from all-class ``cams`` (B, C, h, w); with
    ``multi_label``, the pixelwise maximum over the CAMs of the classes present in the image."""
    if multi_label:
        present = batch["labels"].bool()[:, :, None, None]
        return cams.masked_fill(~present, float("-inf")).amax(1)
    labels = batch["label"]
    return cams[torch.arange(len(labels), device=labels.device), labels]


def reconstruction_target(images: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> ReconstructNet's target: [-1, 1], at the reconstruction's size.

    A ReconstructNet trained with a smaller ``recon_size`` (a speed lever) is compared with
    the image downsampled with antialiasing (area-like), not with a sub-sampled one.
    """
    target = to_tanh_range(images)
    if target.shape[-2:] != recon.shape[-2:]:
        target = F.interpolate(target.float(), size=tuple(recon.shape[-2:]), mode="bilinear", align_corners=False,
                               antialias=True).to(recon.dtype)
    return target


def reconstruction_l1(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error; both tensors in [-1, 1]."""
    return (recon - target).abs().mean()


class VGGPerceptualLoss(nn.Module):
    """L1 between VGG19 relu1_1..relu5_1 features, weighted 1/32, 1/16, 1/8, 1/4, 1.

    Target features are computed without gradient (they are a fixed reference). ``size``
    optionally resizes both images before VGG: the perceptual term is the most expensive
    part of CRM, and a smaller input is one of the measured speed levers.
    """

    def __init__(self, weights: str = "auto", layers: tuple[str, ...] = tuple(VGG19_LAYERS), size: int | None = None) -> None:
        super().__init__()
        unknown = [name for name in layers if name not in VGG19_LAYERS]
        if unknown:
            raise ValueError(f"unknown VGG19 layers {unknown}; choose from {list(VGG19_LAYERS)}")
        import torchvision  # here, not at module level: see crm_core.models.classifier.ARCHS

        resolved = resolve_weights(weights, torchvision.models.VGG19_Weights.IMAGENET1K_V1, "VGG19 perceptual features")
        # Random features are a legitimate (weaker) perceptual metric; seed them so the loss
        # is the same function in every run, whatever the global RNG state.
        # Only VGG19's convolutional trunk is built: its 120M-parameter classifier is never used.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"], batch_norm=False)
        if resolved.state_dict is not None:
            trunk = {k[len("features."):]: v for k, v in resolved.state_dict.items() if k.startswith("features.")}
            features.load_state_dict(trunk)
        self.weights_source = resolved.source
        self.taps = {VGG19_LAYERS[name][0]: VGG19_LAYERS[name][1] for name in layers}
        last = max(self.taps)
        self.features = features[: last + 1].eval()
        for param in self.features.parameters():
            param.requires_grad_(False)
        self.size = size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "VGGPerceptualLoss":
        super().train(mode)
        self.features.eval()  # a fixed metric, never in training mode
        return self

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = (images + 1.0) * 0.5  # [-1, 1] -> [0, 1]
        if self.size is not None and x.shape[-1] != self.size:
            # Antialiased resizing has no bf16 CPU kernel: resize in float32 (autocast recasts for the convs).
            x = F.interpolate(x.float(), size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    def _tapped(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                outs.append(x)
        return outs

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_feats = self._tapped(self._prepare(target))
        recon_feats = self._tapped(self._prepare(recon))
        weights = [self.taps[i] for i in sorted(self.taps)]
        return sum(w * (r - t).abs().mean() for w, r, t in zip(weights, recon_feats, target_feats))


def erode(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Binary erosion of (B, H, W) masks with a ``size`` x ``size`` square (outside counts as set)."""
    if size <= 1:
        return mask
    before, after = size // 2, size - 1 - size // 2  # scipy.ndimage's origin for even sizes
    pad = (before, after, before, after)  # left, right, top, bottom
    inverted = F.pad((~mask)[:, None].float(), pad, value=0.0)  # (B, 1, H + size - 1, W + size - 1)
    return F.max_pool2d(inverted, size, stride=1)[:, 0] == 0


def alignment_target(cam: torch.Tensor, segments: torch.Tensor, confident: float | None = None,
                     erosion: int = 0) -> torch.Tensor:
    """The superpixel-averaged CAM, max-normalised, optionally max-ed with the confident CAM region.

    Args:
        cam: (B, H, W) CAM of the true class at image resolution, max-normalised.
        segments: (B, H, W) SLIC labels.
        confident: CAM values above this stay in the target (the paper keeps the confident
            region so averaging cannot erase a sharp, correct peak); ``None`` disables it.
        erosion: erode that confident region with a square of this side first (the SSC code:
            threshold 0.3, an 8 x 8 erosion); 0 keeps it whole.
    """
    target = normalize_cams(superpixel_mean(cam, segments), min_peak=1e-6)
    if confident is not None:
        target = torch.maximum(target, cam * erode(cam >= confident, erosion))
    return target


def alignment_loss(cam: torch.Tensor, segments: torch.Tensor, confident: float | None = 0.7, erosion: int = 0) -> torch.Tensor:
    """MSE between the true-class CAM and its detached superpixel-aligned target.

    Args:
        cam: (B, h, w) true-class CAM at feature resolution (non-negative).
        segments: (B, H, W) SLIC labels at image resolution.
    """
    size = segments.shape[-2:]
    cam_up = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]  # (B, H, W)
    cam_up = normalize_cams(cam_up, min_peak=1e-6)
    target = alignment_target(cam_up.detach(), segments, confident, erosion)
    return F.mse_loss(cam_up, target)
