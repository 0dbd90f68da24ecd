"""Grad-CAM++ (Chattopadhay et al., WACV 2018, arXiv 1710.11063) as :class:`BaseCAM` methods.

* :class:`GradCAMPlusPlus`: eq. 19 per position from hooked gradients -- any head, any layer.
* :class:`ClosedFormGradCAMPlusPlus`: the same eq. 19 for the GAP + linear head, where
  ``g = W[c, k] / (h w)`` is constant over space; weights come from the forward pass alone (no
  backward) and are differentiable. This is the default CAM of the rest of the code.

Both are exact (``eps = 0``) by default; ``eps = 1e-6`` reproduces the grad-cam package, whose
``eps`` dominates ``2 g^2 ~ 1e-8`` for GAP heads (see :mod:`crm_core.cams.closed_form`).

The module also holds the name -> method registry :data:`CAM_METHODS` (timm ``_registry.py``
style; CLI ``choices`` and the dashboard's menu come from it) and :func:`compute_cams`.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from crm_core.cams.base import BaseCAM, CamResult, ClassSelection, GradientSource
from crm_core.cams.closed_form import gradcampp_weight_terms
from crm_core.cams.gradcam import GradCAM
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

    def __init__(
        self,
        model: CamClassifier,
        target_layer: nn.Module | None = None,
        gradients: GradientSource | None = None,
        create_graph: bool = False,
        eps: float = 0.0,
    ) -> None:
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
    ``torch.no_grad()`` for inference. Equals :func:`~crm_core.cams.closed_form.gradcampp_closed_form`
    on the model's features.

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

    def cam_weights(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        h, w = activations.shape[-2:]
        constant_grads = grads[:, :, 0, 0]  # (B, K): analytic gradients do not vary over space
        sums = activations.sum(dim=(2, 3))  # (B, K)
        # sum_ij relu(g) alpha = h w relu(g) alpha because g is the same at every position.
        return h * w * gradcampp_weight_terms(constant_grads, sums, self.eps)  # (B, K)


CAM_METHODS: dict[str, Callable[..., BaseCAM]] = {
    "gradcampp": ClosedFormGradCAMPlusPlus,  # default: closed form, one forward pass, differentiable
    "gradcampp_hooks": GradCAMPlusPlus,  # hooks + backward, any head
    "gradcam": GradCAM,  # hooks + backward; pass gradients="analytic" for no backward
}


def create_cam(method: str, model: CamClassifier, **kwargs: Any) -> BaseCAM:
    """Build the CAM method registered as ``method`` for ``model``."""
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose from {sorted(CAM_METHODS)}")
    return CAM_METHODS[method](model, **kwargs)


def compute_cams(
    model: CamClassifier,
    images: torch.Tensor,
    classes: ClassSelection = None,
    method: str = "gradcampp",
    **kwargs: Any,
) -> CamResult:
    """CAMs of ``images`` (B, 3, H, W) in [0, 1] for ``classes`` (None: predicted class).

    ``kwargs`` go to the method's constructor (e.g. ``eps``). Returns raw maps at feature
    resolution; see :mod:`crm_core.cams.utils` to normalise, upsample and overlay them.
    """
    return create_cam(method, model, **kwargs)(images, classes)
