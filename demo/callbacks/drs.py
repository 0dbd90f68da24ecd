"""DRS tab: a DRS model re-run with its cap overridden, a strip of deltas, CAM mIoU against delta."""
from __future__ import annotations

from typing import Any, Callable

import gradio as gr
import pandas as pd

from demo import plots, render
from demo.callbacks.common import (DEFAULT_THRESHOLD, _delta, _model_name, _number, _scores_text, _source_line,
                                   _threshold, _top5, explained_class, resolve_source, user_errors)
from demo.protocol import DashboardEngine

STRIP_DELTAS = (0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0)
CURVE_DELTAS = (0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0)
#: The curve table's columns (a point's key -> its header), the protocol's number first: mIoU at the
#: threshold chosen on val. The best-test-threshold columns peek at the test masks, so they are
#: labelled optimistic and come last.
CURVE_COLUMNS = {
    "delta": "DRS delta",
    "miou_val_threshold": "CAM mIoU (threshold chosen on val)",
    "val_threshold": "threshold chosen on val",
    "bg_fpr": "background false positives (val threshold)",
    "head_covered": "head covered (val threshold)",
    "body_covered": "body covered (val threshold)",
    "accuracy": "accuracy",
    "miou_fixed": "CAM mIoU (fixed threshold)",
    "miou_best": "CAM mIoU at the best test threshold (optimistic)",
    "best_threshold": "best test threshold (optimistic)",
}


@user_errors
def drs_model_info(engine: DashboardEngine, model: Any) -> tuple[str, Any]:
    """Description of the DRS tab's model and its trained delta (slider default)."""
    model = _model_name(engine, model)
    delta = engine.checkpoints.default_delta(model)
    text = engine.checkpoints.describe(model)
    if not engine.checkpoints.has_drs(model):
        text += "\n\n**Note:** this model has no DRS layers: the delta slider has no effect on it."
    return text, gr.update(value=delta) if delta is not None else gr.update()


@user_errors
def drs_view(engine: DashboardEngine, model: Any, model_a: Any, image: Any, index: Any, delta: Any,
             threshold: Any = DEFAULT_THRESHOLD) -> tuple:
    """The DRS model re-run with every DRS layer capped at ``delta``: CAM, top-5, summary."""
    model = _model_name(engine, model)
    delta, threshold = _delta(delta), _threshold(threshold)
    source = resolve_source(engine, model_a, image, index)
    out = engine.inference.cam(model, source.image, class_index=explained_class(source), drs_delta=delta)
    # The threshold chosen on val at the trained delta: re-choosing it per slider move would cost a
    # pass over the val images each time; the curve below re-chooses it per delta.
    iou = _scores_text(engine, model, out.cam, source.mask, threshold)
    trained = engine.checkpoints.default_delta(model)
    lines = [_source_line(source),
             f"**delta {delta:.2f}** (trained with {trained if trained is not None else 'no fixed delta'}); "
             f"CAM of class **{out.class_name}**; {iou}"]
    if not engine.checkpoints.has_drs(model):
        lines.append("**Note:** no DRS layers in this model: delta changes nothing")
    return render.overlay(source.image, out.cam, source.mask), _top5(out.probs), "\n\n".join(lines)


@user_errors
def drs_strip(engine: DashboardEngine, model: Any, model_a: Any, image: Any, index: Any, threshold: Any = DEFAULT_THRESHOLD) -> list:
    """The same image at several deltas, side by side."""
    model = _model_name(engine, model)
    threshold = _threshold(threshold)
    source = resolve_source(engine, model_a, image, index)
    items = []
    for delta in STRIP_DELTAS:
        out = engine.inference.cam(model, source.image, class_index=explained_class(source), drs_delta=delta)
        caption = f"δ {delta:.2f}"
        if source.mask is not None:
            caption += f" · IoU {engine.inference.mask_scores(out.cam, source.mask, threshold)['fg_iou']:.2f}"
        items.append((render.overlay(source.image, out.cam, source.mask, size=render.THUMB), caption))
    return items


@user_errors
def drs_curve(engine: DashboardEngine, model: Any, limit: Any, progress: Callable | None = None) -> tuple:
    """CAM mIoU vs delta on the first ``limit`` test images (crm_core.evaluate): the figure and a table
    whose headers are :data:`CURVE_COLUMNS`' words."""
    model = _model_name(engine, model)
    limit = _number(limit, "evaluation images", 1, 500, integer=True)
    points = []
    for i, delta in enumerate(CURVE_DELTAS):
        if progress is not None:
            progress((i, len(CURVE_DELTAS)), desc=f"delta {delta:.2f}")
        res = engine.evaluation.evaluate(model, limit=limit, drs_delta=delta, val_threshold=True)
        at_val = res["cam_miou_val_threshold"]
        points.append({"delta": delta, "miou_val_threshold": at_val["miou"], "val_threshold": at_val["threshold"],
                       "bg_fpr": at_val["bg_fpr"], **{f"{part}_covered": v for part, v in
                                                      res.get("coverage_val_threshold", {}).items()},
                       "miou_best": res["cam_miou_best"]["miou"], "best_threshold": res["cam_miou_best"]["threshold"],
                       "miou_fixed": res["cam_miou_fixed"]["miou"], "accuracy": res["accuracy"]})
    columns = [key for key in CURVE_COLUMNS if any(key in point for point in points)]
    table = pd.DataFrame(points, columns=columns).round(4).rename(columns=CURVE_COLUMNS)
    return plots.delta_figure(points, model), table

