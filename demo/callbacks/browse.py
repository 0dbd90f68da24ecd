"""Browse tab: CAM overlays of many test images, ordered by how well their pseudo mask fits."""
from __future__ import annotations

from typing import Any, Callable

import gradio as gr
import numpy as np
import pandas as pd

from demo import render
from demo.callbacks.common import MAX_BROWSE, _model_name, _number, _threshold, user_errors
from demo.callbacks.compare import load_sample
from demo.protocol import DashboardEngine

BROWSE_ORDERS = ("worst IoU first", "best IoU first", "dataset order")


@user_errors
def browse(engine: DashboardEngine, model: Any, count: Any, order: Any, threshold: Any,
           progress: Callable | None = None) -> tuple[list, pd.DataFrame, list[int]]:
    """CAM overlays of the first ``count`` test images with their IoU, sorted as asked."""
    model = _model_name(engine, model)
    count = min(_number(count, "number of images", 1, MAX_BROWSE, integer=True), engine.inference.dataset_length(model))
    threshold = _threshold(threshold)
    if order not in BROWSE_ORDERS:
        raise gr.Error(f"order must be one of {BROWSE_ORDERS}")
    if progress is not None:
        progress(0.1, desc=f"CAMs of {count} images")
    samples = engine.inference.samples(model, range(count))
    if engine.checkpoints.multi_label(model):
        return _browse_classes(engine, model, samples, order, threshold)
    cams, predicted = engine.inference.cams_for_samples(model, samples, classes="label")
    names = engine.checkpoints.class_names(model)
    records = []
    for sample, cam, pred in zip(samples, cams, predicted):
        scores = engine.inference.mask_scores(cam, sample.mask, threshold)
        records.append((sample, cam, int(pred), scores["fg_iou"]))
    if order != "dataset order":
        records.sort(key=lambda r: (np.nan_to_num(r[3], nan=-1.0), r[0].index), reverse=order == "best IoU first")
    items, table = [], []
    for sample, cam, pred, iou in records:
        wrong = "" if pred == sample.label else f" · predicted {names[pred]}"
        items.append((render.overlay(sample.image, cam, sample.mask, size=render.THUMB),
                      f"IoU {iou:.2f} · #{sample.index} {sample.class_name}{wrong}"))
        table.append({"index": sample.index, "class": sample.class_name, "predicted": names[pred],
                      "object IoU": round(float(iou), 4)})
    return items, pd.DataFrame(table, columns=["index", "class", "predicted", "object IoU"]), [r[0].index for r in records]


def _browse_classes(engine: DashboardEngine, model: str, samples: list, order: str,
                    threshold: float) -> tuple[list, pd.DataFrame, list[int]]:
    """Browse for a multi-label model: each image's class mask (the CAMs of its own classes, the
    threshold as the background score) in VOC's palette with its legend, scored by the mean IoU
    over the object classes in the image or the mask; "predicted" lists the classes scored
    above 0.5."""
    names = engine.checkpoints.class_names(model)
    records = []
    for sample, cams in zip(samples, engine.inference.class_cams_for_samples(model, samples)):
        scores = engine.inference.class_mask_scores(cams, sample.class_mask, threshold, len(names))
        records.append((sample, cams, scores["fg_iou"]))
    if order != "dataset order":
        records.sort(key=lambda r: (np.nan_to_num(r[2], nan=-1.0), r[0].index), reverse=order == "best IoU first")
    items, table = [], []
    for sample, cams, iou in records:
        own = " + ".join(cams.names)
        predicted = " + ".join(n for n, p in zip(cams.names, cams.scores) if p > 0.5) or "none of them"
        wrong = "" if predicted == own else f" · predicted {predicted}"
        items.append((render.class_mask_view(sample.image, cams.cams, cams.classes, cams.names, threshold,
                                             sample.mask, size=render.THUMB),
                      f"IoU {iou:.2f} · #{sample.index} {own}{wrong}"))
        table.append({"index": sample.index, "class": own, "predicted": predicted, "object IoU": round(float(iou), 4)})
    return items, pd.DataFrame(table, columns=["index", "class", "predicted", "object IoU"]), [r[0].index for r in records]


@user_errors
def open_in_compare(engine: DashboardEngine, model: Any, positions: Any, position: Any) -> tuple:
    """A Browse thumbnail clicked: its sample becomes Compare's image (model A = the browsed model)."""
    model = _model_name(engine, model)
    positions = list(positions or [])
    pos = _number(position, "gallery position", 0, max(len(positions) - 1, 0), integer=True)
    if not positions:
        raise gr.Error("browse some images first")
    index, picture = load_sample(engine, model, positions[pos])
    return model, index, picture, gr.Tabs(selected="compare")

