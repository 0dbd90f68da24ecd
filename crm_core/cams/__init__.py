"""Class activation maps: a registry of methods, Grad-CAM++ in closed form and hook-based, a shared base, utilities.

Look methods up by name in :data:`CAM_METHODS` (:mod:`crm_core.cams.registry`); drawing CAMs is
:mod:`crm_core.viz`.
"""
from crm_core.cams.base import BaseCAM, CamResult, ClassSelection, GradientSource, resolve_classes
from crm_core.cams.closed_form import gradcampp_closed_form, gradcampp_closed_form_weights, gradcampp_weight_terms
from crm_core.cams.gradcam import GradCAM
from crm_core.cams.gradcampp import PACKAGE_EPS, ClosedFormGradCAMPlusPlus, GradCAMPlusPlus
from crm_core.cams.hooks import CapturedTensors, capture_activations_and_grads
from crm_core.cams.registry import CAM_METHODS, DEFAULT_CAM_METHOD, CamMethod, class_cams, compute_cams, create_cam
from crm_core.cams.utils import normalize_cams, upsample_cams, upsample_normalised

__all__ = [
    "BaseCAM", "CamResult", "ClassSelection", "GradientSource", "resolve_classes",
    "gradcampp_closed_form", "gradcampp_closed_form_weights", "gradcampp_weight_terms",
    "GradCAM", "PACKAGE_EPS", "ClosedFormGradCAMPlusPlus", "GradCAMPlusPlus",
    "CapturedTensors", "capture_activations_and_grads",
    "CAM_METHODS", "DEFAULT_CAM_METHOD", "CamMethod", "class_cams", "compute_cams", "create_cam",
    "normalize_cams", "upsample_cams", "upsample_normalised",
]
