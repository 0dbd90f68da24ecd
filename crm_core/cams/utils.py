"""CAM post-processing in torch: max-normalisation and bilinear upsampling.

:func:`normalize_cams` is the one max-normalisation of the code base (CRM's decoder input, the
alignment loss, every displayed or thresholded CAM). Drawing CAMs is :mod:`crm_core.viz`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def normalize_cams(cams: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Divide each map by its own maximum (CAM papers compare maps in [0, 1] this way).

    Works on (h, w), (B, h, w) and (B, C, h, w): the max is taken over the last two dims.
    Maps are expected non-negative (raw CAMs are, after the final ReLU). The divisor is
    clamped at ``eps``, so an all-zero map stays zero with finite gradients, and a map whose
    maximum exceeds ``eps`` reaches exactly 1.
    """
    peak = cams.amax(dim=(-2, -1), keepdim=True)  # (..., 1, 1)
    return cams / peak.clamp_min(eps)


def upsample_cams(cams: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Bilinear upsampling (half-pixel centres, like cv2.resize) of (h, w), (B, h, w) or (B, C, h, w) maps."""
    out_size = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if cams.ndim not in (2, 3, 4):
        raise ValueError(f"expected (h, w), (B, h, w) or (B, C, h, w) maps, got shape {tuple(cams.shape)}")
    leading = cams.shape[:-2]
    flat = cams.reshape(-1, 1, *cams.shape[-2:])  # (N, 1, h, w) with N = prod(leading)
    if not flat.is_floating_point():
        flat = flat.float()
    up = F.interpolate(flat, size=out_size, mode="bilinear", align_corners=False)  # (N, 1, H, W)
    return up.reshape(*leading, *out_size)


def upsample_normalised(cams: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """(B, h, w) raw CAMs -> (B, H, W) bilinear-upsampled, clamped at 0 and max-normalised to [0, 1]."""
    return normalize_cams(upsample_cams(cams.float(), size).clamp_min(0))
