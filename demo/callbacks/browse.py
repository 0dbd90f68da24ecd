"""Browse tab: CAM overlays of many test images, ordered by how well their pseudo mask fits."""
from __future__ import annotations

from typing import Any, Callable

import gradio as gr
import numpy as np
import pandas as pd

from demo import render
from demo.callbacks.common import MAX_BROWSE, _model_name, _number, _threshold, user_errors
from demo.callbacks.compare import load_sample
from demo.protocol import DashboardEngine, Sample

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
        records = _class_mask_records(engine, model, samples, threshold)
    else:
        records = _cam_records(engine, model, samples, threshold)
    if order != "dataset order":
        records.sort(key=lambda r: (np.nan_to_num(r[2], nan=-1.0), r[0].index), reverse=order == "best IoU first")
    items, table = [], []
    for sample, picture, iou, shown, predicted in records:
        wrong = "" if predicted == shown else f" · predicted {predicted}"
        items.append((picture, f"IoU {iou:.2f} · #{sample.index} {shown}{wrong}"))
        table.append({"index": sample.index, "class": shown, "predicted": predicted, "object IoU": round(float(iou), 4)})
    return items, pd.DataFrame(table, columns=["index", "class", "predicted", "object IoU"]), [r[0].index for r in records]


# One Browse record per image: (sample, thumbnail, its IoU, its class(es), the predicted class(es)).
BrowseRecord = tuple[Sample, np.ndarray, float, str, str]


def _cam_records(engine: DashboardEngine, model: str, samples: list[Sample], threshold: float) -> list[BrowseRecord]:
    """A single-label model: the CAM of each image's true class over it, scored by its object IoU
    at ``threshold``."""
    cams, predicted = engine.inference.cams_for_samples(model, samples, classes="label")
    names = engine.checkpoints.class_names(model)
    return [(sample, render.overlay(sample.image, cam, sample.mask, size=render.THUMB),
             engine.inference.mask_scores(cam, sample.mask, threshold)["fg_iou"], str(sample.class_name),
             names[int(pred)])
            for sample, cam, pred in zip(samples, cams, predicted)]


def _class_mask_records(engine: DashboardEngine, model: str, samples: list[Sample],
                        threshold: float) -> list[BrowseRecord]:
    """A multi-label model: each image's class mask (the CAMs of its own classes, the threshold as
    the background score) in VOC's palette with its legend, scored by the mean IoU over the object
    classes in the image or the mask; its prediction: the classes scored above 0.5."""
    count = len(engine.checkpoints.class_names(model))
    records = []
    for sample, cams in zip(samples, engine.inference.class_cams_for_samples(model, samples)):
        iou = engine.inference.class_mask_scores(cams, sample.class_mask, threshold, count)["fg_iou"]
        picture = render.class_mask_view(sample.image, cams.cams, cams.classes, cams.names, threshold, sample.mask,
                                         size=render.THUMB)
        predicted = " + ".join(n for n, p in zip(cams.names, cams.scores) if p > 0.5) or "none of them"
        records.append((sample, picture, iou, " + ".join(cams.names), predicted))
    return records


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

