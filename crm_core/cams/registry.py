"""The CAM methods by name (timm ``_registry.py`` style): the one list every caller reads.

Training (CRM's decoder input and alignment loss, through :func:`class_cams`), evaluation,
pseudo masks (``--cam-method`` of ``crm_core.evaluate`` and ``crm_core.postprocess`` takes its
``choices`` from here), :class:`crm_core.api.CamModel` and the dashboard's menu (each entry's
``label``) all look methods up in :data:`CAM_METHODS`; :data:`DEFAULT_CAM_METHOD`, the closed-form
Grad-CAM++, is what they use unless told otherwise.

Adding a method: one file with a :class:`~crm_core.cams.base.BaseCAM` subclass (implement
``cam_weights``) and one line in :data:`CAM_METHODS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from crm_core.cams.base import BaseCAM, CamResult, ClassSelection
from crm_core.cams.gradcam import GradCAM
from crm_core.cams.gradcampp import ClosedFormGradCAMPlusPlus, GradCAMPlusPlus
from crm_core.cams.utils import normalize_cams
from crm_core.models import CamClassifier


@dataclass(frozen=True)
class CamMethod:
    """One registered CAM method."""

    build: Callable[..., BaseCAM]  # (model, **kwargs) -> the method; usually the BaseCAM subclass itself
    label: str  # what the dashboard's menu shows

    @property
    def uses_hooks(self) -> bool:
        """True when it registers hooks on the model (autograd gradients): callers serialise those."""
        return getattr(self.build, "default_gradients", "autograd") == "autograd"


CAM_METHODS: dict[str, CamMethod] = {
    "gradcampp": CamMethod(ClosedFormGradCAMPlusPlus, "Grad-CAM++ (ours, closed form)"),  # one forward pass, differentiable
    "gradcampp_hooks": CamMethod(GradCAMPlusPlus, "Grad-CAM++ (ours, hooks)"),  # hooks + backward, any head
    "gradcam": CamMethod(GradCAM, "Grad-CAM (ours)"),  # hooks + backward; gradients="analytic" for no backward
}

#: The method used wherever none is named: closed-form Grad-CAM++ (no backward, differentiable).
DEFAULT_CAM_METHOD = "gradcampp"


def create_cam(method: str, model: CamClassifier, **kwargs: Any) -> BaseCAM:
    """Build the CAM method registered as ``method`` for ``model`` (``kwargs`` to its constructor)."""
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose from {sorted(CAM_METHODS)}")
    return CAM_METHODS[method].build(model, **kwargs)


def compute_cams(
    model: CamClassifier,
    images: torch.Tensor,
    classes: ClassSelection = None,
    method: str = DEFAULT_CAM_METHOD,
    **kwargs: Any,
) -> CamResult:
    """CAMs of ``images`` (B, 3, H, W) in [0, 1] for ``classes`` (None: predicted class).

    ``kwargs`` go to the method's constructor (e.g. ``eps``). Returns raw maps at feature
    resolution; see :mod:`crm_core.cams.utils` to normalise and upsample them, :mod:`crm_core.viz`
    to draw them.
    """
    return create_cam(method, model, **kwargs)(images, classes)


def class_cams(model: CamClassifier, features: torch.Tensor, method: str = DEFAULT_CAM_METHOD,
               min_peak: float = 0.0) -> torch.Tensor:
    """Every class's map from the GAP input ``features`` (B, K, h, w) of a forward pass already run,
    each divided by its own maximum: (B, C, h, w) in [0, 1], differentiable.

    What CRM's ReconstructNet decodes (``decoder_input="gradcampp"``), what its alignment loss
    reads the true class's map from, and :meth:`crm_core.api.CamModel.predict`'s maps.
    ``min_peak``: see :func:`crm_core.cams.utils.normalize_cams` (training passes one; the maps
    that are scored or shown are scale-free).
    """
    return normalize_cams(create_cam(method, model).from_features(features), min_peak=min_peak)
