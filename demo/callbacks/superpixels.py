"""Superpixels tab: SLIC boundaries, the superpixel-averaged CAM (the alignment target), refined pseudo masks."""
from __future__ import annotations

from typing import Any

import gradio as gr

from crm_core.api import THRESHOLDS
from demo import render
from demo.callbacks.common import (_model_name, _number, _source_line, _threshold, explained_class, resolve_source,
                                   user_errors)
from demo.protocol import DashboardEngine


@user_errors
def superpixel_view(engine: DashboardEngine, model: Any, model_a: Any, image: Any, index: Any, n_segments: Any,
                    compactness: Any, low: Any = THRESHOLDS.low, high: Any = THRESHOLDS.high) -> tuple:
    """SLIC boundaries, raw CAM, superpixel-averaged CAM (alignment target), refined trimap."""
    model = _model_name(engine, model)
    n_segments = _number(n_segments, "n_segments", 2, 1000, integer=True)
    compactness = _number(compactness, "compactness", 0.0, 1000.0, lo_open=True)
    low, high = _threshold(low), _threshold(high)
    if low > high:
        raise gr.Error(f"low threshold {low} is above high threshold {high}")
    source = resolve_source(engine, model_a, image, index)
    view = engine.inference.superpixel_refinement(model, source.image, explained_class(source), n_segments, compactness,
                                        low, high, mask=source.mask)
    lines = [_source_line(source), f"{int(view.labels.max()) + 1} superpixels; CAM of class **{view.class_name}**"]
    for what, scores in (("raw CAM", view.raw_scores), ("superpixel-refined", view.refined_scores)):
        if scores is not None:
            lines.append(f"{what} pseudo mask (fg ≥ {high:.2f}): object IoU **{scores['fg_iou']:.3f}**, "
                         f"mIoU {scores['miou']:.3f}")
    return (render.boundaries_view(source.image, view.labels), render.overlay(source.image, view.cam, source.mask),
            render.overlay(source.image, view.pooled, source.mask),
            render.trimap_view(source.image, view.refined_trimap, source.mask), "\n\n".join(lines))
