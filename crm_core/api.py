"""crm_core's public API: what notebooks and the dashboard use.

    from crm_core.api import CamModel, superpixels
    model = CamModel.load("checkpoints/drs_crm.pt")
    image = model.preprocess("cat.jpg")                  # (3, H, W) float in [0, 1]
    pred = model.predict(image[None])                    # probabilities + all-class CAMs
    cam = model.cam(image[None], classes=[2])            # (1, H, W) Grad-CAM++ in [0, 1]
    cam_capped = model.cam(image[None], drs_delta=0.3)   # DRS cap overridden at inference
    hooked = model.cam(image[None], method="gradcam")    # any method of crm_core.cams.CAM_METHODS
    out = model.explain(image[None])                     # logits, classes, CAMs, features of one pass
    recon = model.reconstruct(image[None])               # (1, 3, H, W) in [0, 1]
    segments = superpixels(image, n_segments=64)         # cached SLIC labels

CAMs come from the registry :data:`crm_core.cams.CAM_METHODS`; its default, the closed-form
Grad-CAM++, takes them from the same forward pass as the logits (no backward).

This module is also the one door of the dashboard's UI modules into ``crm_core``
(``tests/test_layering.py`` checks it): besides the model API above, it re-exports the error
types the UI turns into messages (:class:`CheckpointError`, :class:`DatasetNotFoundError`,
:class:`ImageError`, :class:`WeightsNotFoundError`, :class:`TrainingDiverged`) and the few pure
helpers the UI draws and formats with (``load_image``, ``describe_cam_dependence``,
``METRIC_COLUMNS``, the :mod:`crm_core.viz` drawing functions, ``upsample_cams``) and the threshold
defaults (``THRESHOLDS``, :mod:`crm_core.thresholds`). Importing it
stays light: ``TrainingDiverged`` and ``TrainConfig`` (crm_core.train) load on first use. ``RESULTS_RECIPE`` and ``CRM_RECIPE`` are :mod:`crm_core.recipes`' typed
recipes. The dashboard's engine adapter
(``demo.engine``) may use any ``crm_core`` module, the studies of :mod:`crm_core.experiments`
included (the Results tab's report is theirs); nothing in ``crm_core`` imports the dashboard.
"""
from __future__ import annotations

from typing import Any

from crm_core.cams import DEFAULT_CAM_METHOD, upsample_cams, upsample_normalised
from crm_core.checkpoints import CheckpointError
from crm_core.data.errors import DatasetNotFoundError, ImageError
from crm_core.data.transforms import load_image, to_uint8_image
from crm_core.data.voc import voc_palette
from crm_core.explain import CamModel, Explanation, Prediction, dataset_for, list_checkpoints, superpixels
from crm_core.metrics import describe_cam_dependence
from crm_core.models import DRS_DEFAULT_DELTA
from crm_core.pretrained import WeightsNotFoundError
from crm_core.recipes import CRM as CRM_RECIPE
from crm_core.recipes import RESULTS as RESULTS_RECIPE
from crm_core.runs import METRIC_COLUMNS
from crm_core.thresholds import THRESHOLDS
from crm_core.viz import boundaries_overlay, cam_overlay, jet_colormap, mask_outline

__all__ = [
    # the model API
    "CamModel", "Explanation", "Prediction", "DEFAULT_CAM_METHOD", "dataset_for", "list_checkpoints", "superpixels",
    # errors a caller shows to its user
    "CheckpointError", "DatasetNotFoundError", "ImageError", "TrainingDiverged", "WeightsNotFoundError",
    # images, CAM maps and their pictures
    "load_image", "to_uint8_image", "upsample_cams", "upsample_normalised",
    "boundaries_overlay", "cam_overlay", "jet_colormap", "mask_outline", "voc_palette",
    # runs and training
    "CRM_RECIPE", "DRS_DEFAULT_DELTA", "METRIC_COLUMNS", "RESULTS_RECIPE", "TrainConfig", "describe_cam_dependence",
    # where CAMs are cut: the pseudo-mask band, the fixed threshold, the sliders' first value
    "THRESHOLDS",
]

#: Names loaded on first use (module, attribute): importing crm_core.train costs the CLI's imports.
_LAZY = {
    "TrainingDiverged": ("crm_core.train", "TrainingDiverged"),  # a loss became NaN or infinite
    "TrainConfig": ("crm_core.train", "TrainConfig"),  # what a training run is; demo's fine-tunes build one
}


def __getattr__(name: str) -> Any:
    """The lazily loaded names of :data:`_LAZY` (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value
