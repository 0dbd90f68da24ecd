"""CAM post-processing in torch: max-normalisation and bilinear upsampling.

:func:`normalize_cams` is the one max-normalisation of the code base (CRM's decoder input, the
alignment loss, every displayed or thresholded CAM). Drawing CAMs is :mod:`crm_core.viz`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def normalize_cams(cams: torch.Tensor, min_peak: float = 0.0) -> torch.Tensor:
    """Divide each map by its own maximum (CAM papers compare maps in [0, 1] this way).

    Works on (h, w), (B, h, w) and (B, C, h, w): the max is taken over the last two dims.
    Maps are expected non-negative (raw CAMs are, after the final ReLU). Scale-free: any map
    with a positive maximum reaches exactly 1, however small that maximum is (an untrained
    network's raw Grad-CAM++ can peak near 1e-14 and still has structure; an absolute epsilon
    would squash it to an empty map and turn the floor into the all-background prediction).
    Only an exact all-zero map stays zero, with finite gradients.

    ``min_peak`` > 0 clamps the divisor instead, for the training losses alone: there the
    normalisation is differentiated, and a divisor near 0 would make its gradient explode.
    Every map that is scored, thresholded or shown uses the scale-free default.
    """
    peak = cams.amax(dim=(-2, -1), keepdim=True)  # (..., 1, 1)
    if min_peak > 0:
        return cams / peak.clamp_min(min_peak)
    return cams / torch.where(peak > 0, peak, torch.ones_like(peak))


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
