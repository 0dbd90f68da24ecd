"""ReconstructNet: decode class activation maps back into the image (the CRM of Chen et al.).

Layer list (docs/method.md): CAMs (K channels) -> Conv + LayerNorm block -> 1 ResBlock ->
N up-blocks (transposed conv x2, norm, ReLU, conv) -> Conv + Tanh to RGB. N follows from
image size / CAM size (5 take a 7x7 CAM to 224x224). The Tanh output lives in [-1, 1], so
the reconstruction target is the image mapped to [-1, 1] (:func:`to_tanh_range`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def to_tanh_range(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> [-1, 1], the range of ReconstructNet's Tanh output."""
    return images * 2.0 - 1.0


def resize_reconstruction(recon: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 3, r, r) reconstruction -> (B, 3, H, W), bilinear, for showing it beside the image.

    A ReconstructNet trained with a smaller ``recon_size`` decodes below the image size. Bilinear
    weights are a convex combination, so values stay in the input's range.
    """
    size = tuple(int(s) for s in size)
    if tuple(recon.shape[-2:]) == size:
        return recon
    return F.interpolate(recon.float(), size=size, mode="bilinear", align_corners=False)


def from_tanh_range(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] reconstructions -> [0, 1] images."""
    return ((images + 1.0) * 0.5).clamp(0.0, 1.0)


class ChannelAffineLayerNorm(nn.Module):
    """LayerNorm over (C, H, W) of each sample with a per-channel scale and shift."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GroupNorm with one group is exactly this: (x - mean_CHW) / sqrt(var_CHW + eps) * w_c + b_c
        # (biased variance). Its fused kernel replaces six elementwise passes over the largest
        # activations of ReconstructNet -- ~25% of the decoder's step on CPU (crm_core.experiments.bench).
        return F.group_norm(x, 1, self.weight.view(-1), self.bias.view(-1), self.eps)


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            ChannelAffineLayerNorm(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            ChannelAffineLayerNorm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class UpBlock(nn.Module):
    """Transposed conv (x2 spatial), norm, ReLU, conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1)
        self.norm = ChannelAffineLayerNorm(out_channels)
        self.conv = nn.Conv2d(out_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.relu(self.norm(self.up(x))))


def num_up_blocks(image_size: int, cam_size: int) -> int:
    """How many x2 up-blocks bring a ``cam_size`` map to at least ``image_size``."""
    if cam_size <= 0 or image_size < cam_size:
        raise ValueError(f"cannot decode a {cam_size}px CAM into a {image_size}px image")
    return max(0, math.ceil(math.log2(image_size / cam_size) - 1e-9))


class ReconstructNet(nn.Module):
    """CAMs (B, K, h, w) -> reconstruction (B, 3, H, W) in [-1, 1]."""

    def __init__(self, num_classes: int, image_size: int, cam_size: int, width: int = 256, min_width: int = 32) -> None:
        super().__init__()
        self.image_size = image_size
        self.cam_size = cam_size
        self.head = nn.Sequential(
            nn.Conv2d(num_classes, width, 3, padding=1),
            ChannelAffineLayerNorm(width),
            nn.ReLU(inplace=True),
        )
        self.res = ResBlock(width)
        blocks = []
        channels = width
        for _ in range(num_up_blocks(image_size, cam_size)):
            out = max(min_width, channels // 2)
            blocks.append(UpBlock(channels, out))
            channels = out
        self.up = nn.Sequential(*blocks)
        self.to_rgb = nn.Sequential(nn.Conv2d(channels, 3, 3, padding=1), nn.Tanh())

    def forward(self, cams: torch.Tensor) -> torch.Tensor:
        x = self.up(self.res(self.head(cams)))
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            # Image size not a power-of-two multiple of the CAM size: resample the last map.
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return self.to_rgb(x)
