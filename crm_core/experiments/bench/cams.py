"""Section 1: our closed-form Grad-CAM++ against the ``grad-cam`` package's ``GradCAMPlusPlus``.

Both on ``layer4[-1]`` of the same randomly initialised model and batch: times, and how far
the maps differ after max-normalisation.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from crm_core.api import upsample_normalised
from crm_core.timing import time_interleaved
from crm_core.cams.closed_form import gradcampp_closed_form
from crm_core.cams.gradcampp import PACKAGE_EPS
from crm_core.cams.utils import normalize_cams
from crm_core.models import LogitsOnly, ModelConfig, create_model


def _normalised(maps: np.ndarray | torch.Tensor) -> np.ndarray:
    """(B, h, w) maps, each divided by its own max, as float64 numpy (all-zero maps stay zero)."""
    maps = torch.as_tensor(maps, dtype=torch.float64)
    return normalize_cams(maps).numpy()


def bench_gradcampp(arch: str = "resnet50", batch: int = 8, size: int = 224, num_classes: int = 37,
                    repeats: int = 5, warmup: int = 1, seed: int = 0) -> dict[str, Any]:
    """Closed-form Grad-CAM++ vs ``pytorch_grad_cam.GradCAMPlusPlus`` on the same model and batch.

    Ours: the forward pass that gives the logits, the closed form for the predicted classes
    and the upsampling to the input size (the package's output is input-sized too).
    The package: its public ``__call__`` (forward with hooks, backward, numpy maths, resize).
    The map difference is taken at feature resolution, both max-normalised, ours computed with
    the package's eps (1e-6); the exact eq. 19 (eps = 0) is reported beside it for reference.
    """
    import pytorch_grad_cam

    torch.manual_seed(seed)
    model = create_model(ModelConfig(variant="resnet", arch=arch, num_classes=num_classes, output_stride=32),
                         load_pretrained=False).eval()
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    package = pytorch_grad_cam.GradCAMPlusPlus(model=LogitsOnly(model), target_layers=[model.layer4[-1]])
    captured: dict[str, Any] = {}
    package_cam_image = package.get_cam_image

    def capture(*args: Any, **kwargs: Any) -> np.ndarray:  # its feature-resolution maps of the timed call
        maps = package_cam_image(*args, **kwargs)
        captured["maps"] = np.maximum(maps, 0)  # as its compute_cam_per_layer does
        return maps

    package.get_cam_image = capture
    ours: dict[str, torch.Tensor] = {}

    def run_ours() -> None:
        with torch.no_grad():
            logits, features = model(images)
            classes = logits.argmax(dim=1)
            raw = gradcampp_closed_form(features, model.fc.weight, classes, eps=PACKAGE_EPS)  # (B, h, w)
            ours["maps"] = upsample_normalised(raw, (size, size))  # (B, H, W) in [0, 1]
        ours["raw"], ours["classes"], ours["features"] = raw, classes, features

    def run_package() -> None:
        captured["public"] = package(input_tensor=images, targets=None)  # predicted classes

    try:
        stats = time_interleaved({"ours": run_ours, "package": run_package}, repeats, warmup)
        run_ours()
        run_package()
    finally:
        package.activations_and_grads.release()
    package_maps = _normalised(captured["maps"])
    ours_maps = _normalised(ours["raw"])
    exact = gradcampp_closed_form(ours["features"], model.fc.weight.detach(), ours["classes"])
    return {
        "config": {"arch": arch, "batch": batch, "size": size, "num_classes": num_classes, "target_layer": "layer4[-1]",
                   "device": "cpu", "repeats": repeats},
        "ours_s": stats["ours"].as_dict(),
        "package_s": stats["package"].as_dict(),
        "speedup": stats["package"].median / stats["ours"].median,
        "max_abs_diff": float(np.abs(ours_maps - package_maps).max()),
        "max_abs_diff_exact_eq19_vs_package": float(np.abs(_normalised(exact) - package_maps).max()),
        "feature_size": list(ours["raw"].shape[-2:]),
    }
