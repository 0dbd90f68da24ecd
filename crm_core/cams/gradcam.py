"""Grad-CAM (Selvaraju et al., ICCV 2017, arXiv 1610.02391) as a :class:`BaseCAM` method.

Kept as the smallest example of the override point: its weights are the spatial mean of the
gradients (eq. 1), ``w_k = mean_ij dS_c/dA_kij``. For a GAP + linear head that is
``W[c, k] / (h w)``, i.e. Grad-CAM is then the original CAM of Zhou et al. up to the factor
``1 / (h w)``; Grad-CAM++ differs by weighting each channel with ``1 / (2 + S_k g_k)``.
"""
from __future__ import annotations

import torch

from crm_core.cams.base import BaseCAM


class GradCAM(BaseCAM):
    """Grad-CAM: ``w_k = mean_ij g_kij`` (eq. 1), ``CAM = relu(sum_k w_k A_k)`` (eq. 2)."""

    def cam_weights(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return grads.mean(dim=(2, 3))  # (B, K)
