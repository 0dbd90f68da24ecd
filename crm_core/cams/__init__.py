"""Class activation maps: Grad-CAM++ in closed form and hook-based, a shared base, utilities."""
from crm_core.cams.base import BaseCAM, CamResult, ClassSelection, GradientSource, resolve_classes
from crm_core.cams.closed_form import gradcampp_closed_form, gradcampp_closed_form_weights, gradcampp_weight_terms
from crm_core.cams.gradcam import GradCAM
from crm_core.cams.gradcampp import (
    CAM_METHODS,
    PACKAGE_EPS,
    ClosedFormGradCAMPlusPlus,
    GradCAMPlusPlus,
    compute_cams,
    create_cam,
)
from crm_core.cams.hooks import CapturedTensors, capture_activations_and_grads
from crm_core.cams.utils import cam_overlay, jet_colormap, mask_outline, normalize_cams, to_uint8_image, upsample_cams

__all__ = [
    "BaseCAM", "CamResult", "ClassSelection", "GradientSource", "resolve_classes",
    "gradcampp_closed_form", "gradcampp_closed_form_weights", "gradcampp_weight_terms",
    "GradCAM", "CAM_METHODS", "PACKAGE_EPS", "ClosedFormGradCAMPlusPlus", "GradCAMPlusPlus",
    "compute_cams", "create_cam", "CapturedTensors", "capture_activations_and_grads",
    "cam_overlay", "jet_colormap", "mask_outline", "normalize_cams", "to_uint8_image", "upsample_cams",
]
