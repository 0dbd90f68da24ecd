"""Compare tab: two models' CAMs, top-5 and pseudo masks on one image; the page-load view."""
from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np

from crm_core.api import DEFAULT_CAM_METHOD
from demo import render
from demo.callbacks.common import (MAX_BROWSE, PREDICTED, _class_for, _model_name, _number, _scores_text,
                                   _source_line, _threshold, _top5, resolve_source, user_errors)
from demo.callbacks.menus import checkpoints_markdown, default_pair
from demo.protocol import DashboardEngine


@user_errors
def sample_gallery(engine: DashboardEngine, model_a: Any, count: Any = 24) -> tuple[list[tuple[np.ndarray, str]], dict]:
    """Thumbnails of the first ``count`` test samples of model A's dataset, and its class choices."""
    model_a = _model_name(engine, model_a, "model A")
    count = _number(count, "number of samples", 1, MAX_BROWSE, integer=True)
    count = min(count, engine.inference.dataset_length(model_a))
    samples = engine.inference.samples(model_a, range(count))
    items = [(render.upscale(s.image, render.THUMB), f"#{s.index} {s.class_name}") for s in samples]
    return items, gr.update(choices=[PREDICTED] + engine.checkpoints.class_names(model_a), value=PREDICTED)


@user_errors
def load_sample(engine: DashboardEngine, model_a: Any, index: Any) -> tuple[int, np.ndarray]:
    """(index, picture) of test sample ``index`` of model A's dataset, for the input image box."""
    source = resolve_source(engine, model_a, None, index)
    if source.index is None:
        raise gr.Error("sample index must be >= 0")
    return source.index, render.upscale(source.image)


@user_errors
def current_picture(engine: DashboardEngine, model_a: Any, index: Any) -> Any:
    """Model A changed: redraw the input box from its dataset (uploads stay as they are)."""
    if index is None or index == "" or _number(index, "sample index", -1, 10**9, integer=True) < 0:
        return gr.update()
    return load_sample(engine, model_a, index)[1]


@user_errors
def compare(engine: DashboardEngine, model_a: Any, model_b: Any, image: Any, index: Any, class_choice: Any,
            threshold: Any, method: Any) -> tuple:
    """Both models on one image: CAM overlays, top-5, pseudo masks and a summary."""
    model_a = _model_name(engine, model_a, "model A")
    model_b = _model_name(engine, model_b, "model B")
    threshold = _threshold(threshold)
    methods = engine.inference.cam_methods()
    method = method or DEFAULT_CAM_METHOD
    if method not in methods:
        raise gr.Error(f"unknown CAM method {method!r}")
    if class_choice not in (None, "", PREDICTED) and not any(
            class_choice in engine.checkpoints.class_names(m) for m in (model_a, model_b)):
        raise gr.Error(f"class {str(class_choice)[:60]!r} is not a class of {model_a} or {model_b}")
    source = resolve_source(engine, model_a, image, index)
    outputs: list[Any] = []
    rows = []
    for model in (model_a, model_b):
        wanted = _class_for(engine, model, class_choice)
        out = engine.inference.cam(model, source.image, class_index=wanted, method=method)
        iou = _scores_text(engine, model, out.cam, source.mask, threshold)
        iou += "  \n" + _cam_metrics_text(engine.inference.cam_metrics(model, source.image, out.cam, out.class_index,
                                                                      source.mask))
        note = "" if wanted is not None or class_choice in (None, "", PREDICTED) else \
            f" ({class_choice!r} is not one of its classes)"
        predicted = max(out.probs, key=out.probs.get)
        rows.append((model, engine.checkpoints.describe(model), predicted, out.probs[predicted], out.class_name + note,
                     iou))
        outputs.append((render.overlay(source.image, out.cam, source.mask),
                        _top5(out.probs), render.mask_view(source.image, out.cam >= threshold, source.mask)))
    lines = [_source_line(source), f"**CAM method:** {methods[method]}", ""]
    for tag, (model, description, predicted, p, shown, iou) in zip("AB", rows):
        lines.append(f"**{tag} — {description}**  \npredicted **{predicted}** ({p:.1%}); CAM of class "
                     f"**{shown}**; {iou}")
    (ov_a, lab_a, mask_a), (ov_b, lab_b, mask_b) = outputs
    return ov_a, ov_b, lab_a, lab_b, mask_a, mask_b, "\n\n".join(lines)


@user_errors
def class_view(engine: DashboardEngine, model_a: Any, model_b: Any, image: Any, index: Any,
               threshold: Any) -> tuple[list[tuple[np.ndarray, str]], dict]:
    """A multi-label model's view of several objects: the CAM of each class in the image (a dataset
    sample's own classes; an upload's three top-scored) and the class mask they make at the
    threshold as the background score, for model A then model B. A single-label model adds
    nothing here: its one CAM is the view above. With it, the class menu, the image's own
    classes first."""
    model_a = _model_name(engine, model_a, "model A")
    model_b = _model_name(engine, model_b, "model B")
    threshold = _threshold(threshold)
    source = resolve_source(engine, model_a, image, index)
    items: list[tuple[np.ndarray, str]] = []
    for tag, model in (("A", model_a), ("B", model_b)):
        count = len(engine.checkpoints.class_names(model))
        own = list(source.labels) if source.labels and all(c < count for c in source.labels) else None
        out = engine.inference.class_cams(model, source.image, own)
        if not out.multi_label:
            continue
        for name, cam, score in zip(out.names, out.cams, out.scores):
            items.append((render.overlay(source.image, cam, source.mask), f"{tag}: {name} (p {score:.2f})"))
        items.append((render.class_mask_view(source.image, out.cams, out.classes, out.names, threshold, source.mask),
                      f"{tag}: class mask, background score {threshold:.2f}"))
    names = engine.checkpoints.class_names(model_a)
    own = [names[c] for c in (source.labels or ()) if c < len(names)]
    return items, gr.update(choices=[PREDICTED] + own + [n for n in names if n not in own])


def _cam_metrics_text(metrics: dict[str, float]) -> str:
    """PxAP (with a ground truth) and the faithfulness of the map: the class's probability on the map
    times the image against the image itself, and how much of the image the map keeps."""
    pxap = f"PxAP **{metrics['pxap']:.3f}** (no threshold) · " if "pxap" in metrics else ""
    return (f"{pxap}Average Drop **{metrics['average_drop']:.1f}%**: the class's probability is "
            f"{metrics['probability']:.1%} on the image, {metrics['probability_explained']:.1%} on the map × image · "
            f"map area {metrics['cam_area']:.0%} (at half its peak; a map of ones has no drop)")


@user_errors
def startup(engine: DashboardEngine, model_a: Any, model_b: Any, class_choice: Any, threshold: Any, method: Any) -> tuple:
    """Page load: sample gallery, sample #0 and both models' CAMs, so the page opens on something."""
    names = engine.checkpoints.names()
    if not names:
        empty = (None,) * 6 + ("No checkpoints yet — train one in **Fine-tune**.",)
        return ([], gr.update(), -1, None) + empty + (checkpoints_markdown(engine),)
    a0, b0 = default_pair(names)
    model_a = model_a if model_a in names else a0
    model_b = model_b if model_b in names else b0
    gallery, classes = sample_gallery(engine, model_a)
    index, picture = load_sample(engine, model_a, 0)
    results = compare(engine, model_a, model_b, None, index, PREDICTED, threshold, method or DEFAULT_CAM_METHOD)
    return (gallery, classes, index, picture) + results + (checkpoints_markdown(engine),)

