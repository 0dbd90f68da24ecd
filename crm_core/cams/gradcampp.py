"""Grad-CAM++ (Chattopadhay et al., WACV 2018, arXiv 1710.11063) as :class:`BaseCAM` methods.

* :class:`GradCAMPlusPlus`: eq. 19 per position from hooked gradients -- any head, any layer.
* :class:`ClosedFormGradCAMPlusPlus`: the same eq. 19 for the GAP + linear head, where
  ``g = W[c, k] / (h w)`` is constant over space; the maps come from the forward pass alone (no
  backward) through :func:`~crm_core.cams.closed_form.gradcampp_closed_form` and are
  differentiable. It is the registry's default (``"gradcampp"`` in
  :data:`~crm_core.cams.registry.CAM_METHODS`): training, evaluation, pseudo masks, the API and
  the dashboard all take their Grad-CAM++ from it.

Both are exact (``eps = 0``) by default; ``eps = 1e-6`` reproduces the grad-cam package, whose
``eps`` dominates ``2 g^2 ~ 1e-8`` for GAP heads (see :mod:`crm_core.cams.closed_form`).
"""
from __future__ import annotations

import torch
from torch import nn

from crm_core.cams.base import BaseCAM, GradientSource
from crm_core.cams.closed_form import gradcampp_closed_form, gradcampp_weight_terms
from crm_core.models import CamClassifier

#: The grad-cam package's (pytorch-grad-cam 1.5.7) eps in alpha's denominator.
PACKAGE_EPS = 1e-6


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++ from per-position gradients: ``w_k = sum_ij relu(g_kij) alpha_kij`` (eq. 19).

    Args:
        model, target_layer, gradients, create_graph: see :class:`BaseCAM` (default gradient
            source: hooks + backward, so it works for any head).
        eps: 0 for the exact eq. 19; :data:`PACKAGE_EPS` mimics the grad-cam package.
    """

    def __init__(self, model: CamClassifier, target_layer: nn.Module | None = None,
                 gradients: GradientSource | None = None, create_graph: bool = False, eps: float = 0.0) -> None:
        super().__init__(model, target_layer, gradients, create_graph)
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.eps = float(eps)

    def cam_weights(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        sums = activations.sum(dim=(2, 3), keepdim=True)  # (B, K, 1, 1): sum_ab A_kab, channel k only
        return gradcampp_weight_terms(grads, sums, self.eps).sum(dim=(2, 3))  # (B, K)


class ClosedFormGradCAMPlusPlus(BaseCAM):
    """Grad-CAM++ in closed form for a GAP + linear head -- one forward pass, no backward.

    ``w_k = h w relu(g_k) / (2 + S_k g_k)`` with ``g_k = W[c, k] / (h w)`` and ``S_k`` the spatial
    sum of channel ``k`` (eq. 19 with a spatially constant gradient). The result keeps the
    autograd graph of the forward pass, so it can feed a loss; wrap the call in
    ``torch.no_grad()`` for inference. It overrides :meth:`from_features` (the whole map in closed
    form, every class at once) rather than ``cam_weights``.

    Args:
        model: a classifier with a GAP + linear head ``fc``.
        eps: 0 for the exact eq. 19; :data:`PACKAGE_EPS` mimics the grad-cam package.
    """

    default_gradients = "analytic"

    def __init__(self, model: CamClassifier, eps: float = 0.0) -> None:
        super().__init__(model, gradients="analytic")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.eps = float(eps)

    def from_features(self, features: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        return gradcampp_closed_form(features, self.model.fc.weight, classes, self.eps)
