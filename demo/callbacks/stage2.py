"""Stage 2 tab: a segmentation network trained on pseudo masks, beside a CAM model's pseudo mask and the ground truth."""
from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np

from demo import render
from demo.callbacks.common import _model_name, _number, _threshold, user_errors
from demo.protocol import DashboardEngine

NO_STAGE2 = ("no stage-2 network in the checkpoint folder: train one with "
             "`python -m crm_core.segment --masks DIR|gt --name NAME`")


@user_errors
def stage2_choices(engine: DashboardEngine, value: Any) -> dict:
    """The stage-2 menu's choices now (a new network appears), its value kept when it still exists."""
    names = engine.segmentation_names()
    return gr.update(choices=names, value=value if value in names else (names[0] if names else None))


def _line(what: str, scores: dict[str, float]) -> str:
    return (f"{what}: mIoU **{scores['miou']:.3f}** (object IoU {scores['fg_iou']:.3f}, background IoU "
            f"{scores['bg_iou']:.3f}, background false positives {scores['bg_fpr']:.1%})")


@user_errors
def stage2_view(engine: DashboardEngine, seg_model: Any, cam_model: Any, index: Any, low: Any = 0.2,
                high: Any = 0.45) -> tuple:
    """The network's mask | the CAM model's pseudo mask | the ground truth, with their IoUs."""
    if not seg_model:
        raise gr.Error(NO_STAGE2)
    if str(seg_model) not in engine.segmentation_names():
        raise gr.Error(f"{str(seg_model)[:64]!r} is not a stage-2 network in the checkpoint folder")
    cam = _model_name(engine, cam_model, "CAM") if cam_model else None
    index = _number(index, "index", 0, 1_000_000, integer=True)
    low, high = _threshold(low), _threshold(high)
    if low > high:
        raise gr.Error(f"low threshold {low} is above high threshold {high}")
    view = engine.stage2_view(str(seg_model), cam, index, low, high)
    image, mask = view.sample.image, view.sample.mask
    gt = np.where(mask == 1, 1, np.where(mask == 255, 3, 2)).astype(np.uint8)
    lines = [view.description, f"test image {index}" + (f" ({view.sample.class_name})" if view.sample.class_name else ""),
             _line("stage-2 network", view.prediction_scores)]
    if view.pseudo_scores is not None:
        lines.append(_line(f"pseudo mask of {cam} (fg ≥ {high:.2f}, uncertain counted as background)",
                           view.pseudo_scores))
    pseudo = None if view.pseudo is None else render.trimap_view(image, view.pseudo, mask)
    return (render.trimap_view(image, view.prediction, mask), pseudo, render.trimap_view(image, gt),
            "\n\n".join(lines))
