"""Event functions of the dashboard: plain functions of (engine, UI values) -> UI values.

Every function takes the engine first and is testable without a server. Inputs are validated
here and every failure reaches the user as a one-line ``gr.Error`` whose text went through
:func:`demo.messages.safe_message` (no server path); unexpected exceptions, our bugs among them
(TypeError, IndexError), are logged with their traceback on the server and shown as a short
message, never a traceback.
"""
from __future__ import annotations

import functools
import inspect
import logging
import math
import queue
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import gradio as gr
import numpy as np
import pandas as pd
import torch

from crm_core.checkpoints import CheckpointError
from crm_core.data import DatasetNotFoundError, ImageError, load_image, superpixel_mean
from crm_core.data.transforms import to_uint8_image
from crm_core.metrics import describe_cam_dependence, mask_iou
from crm_core.postprocess import pseudo_trimap
from crm_core.pretrained import WeightsNotFoundError
from crm_core.train import TrainingDiverged
from crm_core.runs import METRIC_COLUMNS

from demo import plots, render
from demo.messages import safe_message
from demo.engine import NAME_RE, FineTuneRequest, InvalidName, Sample, TrainingBusy, finite

log = logging.getLogger(__name__)

PREDICTED = "(predicted class)"
NO_BASE = "(none: from scratch)"
STRIP_DELTAS = (0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0)
CURVE_DELTAS = (0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0)
BROWSE_ORDERS = ("worst IoU first", "best IoU first", "dataset order")
MAX_BROWSE = 96
MAX_STEPS = 2000
DEFAULT_THRESHOLD = 0.5  # CAM >= this is foreground (small demo models' CAMs are broad: 0.3 covers everything)

#: Exceptions whose message is meant for the user (shown through safe_message). TypeError and
#: IndexError are not among them: those are our bugs, logged with their traceback.
USER_ERRORS = (ValueError, InvalidName, CheckpointError, ImageError, DatasetNotFoundError, TrainingBusy,
               WeightsNotFoundError, TrainingDiverged, FileNotFoundError)


def _to_gr_error(exc: BaseException, where: str, upload_name: str | None = None) -> gr.Error:
    """The one-line gr.Error a user sees for ``exc``, with no server path in it; the full text is logged."""
    if isinstance(exc, gr.Error):
        message = safe_message(exc.message, upload_name)
        if message == exc.message:
            return exc
        log.info("%s: %s", where, exc.message)
        return gr.Error(message, duration=exc.duration, visible=exc.visible, title=exc.title,
                        print_exception=exc.print_exception)
    if isinstance(exc, USER_ERRORS):
        log.info("%s: %s", where, exc)
        message = " ".join(line.strip() for line in safe_message(exc, upload_name).splitlines() if line.strip())
        return gr.Error(message[:800] or type(exc).__name__)
    log.exception("%s failed", where)
    return gr.Error(f"{where} failed unexpectedly ({type(exc).__name__}); details are in the server log")


def _upload_name(fn: Callable, args: tuple, kwargs: dict) -> str | None:
    """The user's name of the file in ``fn``'s ``image`` argument (gradio keeps it as the last
    component of the upload's path; a client's FileData has it as ``orig_name``)."""
    try:
        image = inspect.signature(fn).bind_partial(*args, **kwargs).arguments.get("image")
    except TypeError:
        return None
    if isinstance(image, dict):
        image = image.get("orig_name") or image.get("path")
    return str(image) if isinstance(image, (str, Path)) and str(image) else None


def user_errors(fn: Callable) -> Callable:
    """Turn any exception of ``fn`` (function or generator) into a short gr.Error."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - mapped to a user-facing message
                raise _to_gr_error(exc, fn.__name__, _upload_name(fn, args, kwargs)) from None
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - mapped to a user-facing message
            raise _to_gr_error(exc, fn.__name__, _upload_name(fn, args, kwargs)) from None
    return wrapper


# -- validation ----------------------------------------------------------------------------
def _number(value: Any, what: str, lo: float, hi: float, *, integer: bool = False, lo_open: bool = False) -> Any:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{what} must be a number, got {str(value)[:40]!r}") from None
    bad = not math.isfinite(number) or number > hi or number < lo or (lo_open and number <= lo)
    if bad:
        low = f"> {lo}" if lo_open else f">= {lo}"
        raise gr.Error(f"{what} must be {low} and <= {hi}, got {value}")
    if integer:
        if number != int(number):
            raise gr.Error(f"{what} must be a whole number, got {value}")
        return int(number)
    return number


def _model_name(engine: Any, name: Any, what: str = "model") -> str:
    if not name:
        raise gr.Error(f"choose a {what} checkpoint first")
    engine.checkpoint_path(name)  # raises InvalidName for anything but an existing plain name
    return str(name)


def _threshold(value: Any) -> float:
    return _number(value, "threshold", 0.0, 1.0)


def _delta(value: Any) -> float:
    return _number(value, "DRS delta", 0.0, 1.0, lo_open=True)


def resolve_source(engine: Any, dataset_model: Any, image: Any, index: Any) -> Sample:
    """The image a view works on: dataset sample ``index`` of ``dataset_model``'s test split
    (with ground truth), or the uploaded ``image`` when ``index`` is negative / empty."""
    if index is not None and index != "":
        idx = _number(index, "sample index", -1, 10**9, integer=True)
        if idx >= 0:
            return engine.sample(_model_name(engine, dataset_model, "dataset (Compare model A)"), idx)
    if image is None:
        raise gr.Error("no image: pick a dataset sample in Compare or upload an image")
    if isinstance(image, dict) and "path" in image:  # FileData from a client
        image = image["path"]
    if not isinstance(image, (np.ndarray, str, Path)):
        raise gr.Error(f"cannot use an image of type {type(image).__name__}")
    # Uploads are shown as the models see them: square, at model A's input size. load_image is
    # crm_core's gate for user images (alpha, 16 bit, EXIF rotation, corrupt files, size limit).
    size = engine.model(_model_name(engine, dataset_model, "dataset (Compare model A)")).image_size
    tensor = load_image(str(image) if isinstance(image, Path) else image, size)
    return Sample(image=to_uint8_image(tensor))


def _class_for(engine: Any, model: str, choice: Any) -> int | None:
    if choice in (None, "", PREDICTED):
        return None
    names = engine.class_names(model)
    return names.index(choice) if choice in names else None


def _iou_text(cam: np.ndarray, gt: np.ndarray | None, threshold: float) -> tuple[str, dict[str, float] | None]:
    if gt is None:
        return "no ground truth (uploaded image)", None
    scores = mask_iou(torch.from_numpy(cam >= threshold), torch.from_numpy(np.asarray(gt)))
    return (f"object IoU **{scores['fg_iou']:.3f}** · mIoU {scores['miou']:.3f} · background false positives "
            f"{scores['bg_fpr']:.1%} (threshold {threshold:.2f})"), scores


def _scores_text(engine: Any, model: str, cam: np.ndarray, gt: np.ndarray | None, threshold: float,
                 drs_delta: float | None = None) -> str:
    """The image's scores at the model's own CAM threshold chosen on val (the honest number), then
    at the slider's threshold (the pseudo mask shown)."""
    if gt is None:
        return "no ground truth (uploaded image)"
    chosen = engine.val_threshold(model, drs_delta=drs_delta)
    at_val, _ = _iou_text(cam, gt, chosen)
    at_slider, _ = _iou_text(cam, gt, threshold)
    return f"at its val-chosen threshold: {at_val}; at the slider's: {at_slider}"


def _top5(probs: dict[str, float]) -> dict[str, float]:
    return dict(sorted(probs.items(), key=lambda kv: -kv[1])[:5])


def _source_line(source: Sample) -> str:
    if source.index is None:
        return "**Image:** your upload (no ground truth)"
    return f"**Image:** test sample #{source.index}, true class **{source.class_name}** (green outline = ground truth)"


# -- checkpoints / refresh -----------------------------------------------------------------
def checkpoints_markdown(engine: Any) -> str:
    names = engine.checkpoint_names()
    refused = engine.refused_checkpoints()
    lines = [f"- {engine.describe(name)}" for name in names]
    if not names:
        lines.append("No checkpoints yet: train one in **Fine-tune** (or restart `python app.py` to bootstrap the demo pair).")
    if refused:
        lines.append("\n**Not listed** (cannot be loaded safely):")
        lines += [f"- `{name}.pt`: {reason}" for name, reason in refused.items()]
    return "\n".join(lines)


#: Model B of the first view, in order of preference: the demo set's CRM model shows the
#: contrast the lab is about (the plain CAM lights the head, CRM's the whole animal).
PREFERRED_B = ("resnet_drs_crm", "resnet_drs")


def default_pair(names: Sequence[str]) -> tuple[str | None, str | None]:
    """(resnet, resnet_drs_crm or else resnet_drs) when present, else the first two checkpoints."""
    a = "resnet" if "resnet" in names else (names[0] if names else None)
    rest = [n for n in names if n != a]
    b = next((n for n in PREFERRED_B if n in rest), rest[0] if rest else a)
    return a, b


def default_drs(engine: Any, names: Sequence[str]) -> str | None:
    if "resnet_drs" in names:
        return "resnet_drs"
    for name in names:
        try:
            if engine.has_drs(name):
                return name
        except USER_ERRORS:
            continue
    return names[0] if names else None


def suggest_name(engine: Any, stem: str = "finetune") -> str:
    taken = set(engine.checkpoint_names()) | set(engine.run_names())
    i = 1
    while f"{stem}-{i}" in taken:
        i += 1
    return f"{stem}-{i}"


@user_errors
def refresh_checkpoints(engine: Any, model_a: Any, model_b: Any, drs_model: Any, sp_model: Any, browse_model: Any,
                        rec_models: Any, base: Any, runs_selected: Any) -> tuple:
    """New choices for every checkpoint / run selector (after training, on tab change); values kept when valid."""
    names = engine.checkpoint_names()
    a0, b0 = default_pair(names)

    def keep(value: Any, fallback: Any) -> dict:
        return gr.update(choices=names, value=value if value in names else fallback)

    rec = [m for m in (rec_models or []) if m in names] or [m for m in dict.fromkeys([a0, b0]) if m]
    runs = engine.run_names()
    selected = [r for r in (runs_selected or []) if r in runs] or runs
    return (
        keep(model_a, a0), keep(model_b, b0), keep(drs_model, default_drs(engine, names)), keep(sp_model, a0),
        keep(browse_model, a0 if browse_model not in names else browse_model),
        gr.update(choices=names, value=rec),
        gr.update(choices=[NO_BASE] + names, value=base if base in names else NO_BASE),
        gr.update(choices=runs, value=selected),
        checkpoints_markdown(engine),
    )


# -- Compare -------------------------------------------------------------------------------
@user_errors
def sample_gallery(engine: Any, model_a: Any, count: Any = 24) -> tuple[list[tuple[np.ndarray, str]], dict]:
    """Thumbnails of the first ``count`` test samples of model A's dataset, and its class choices."""
    model_a = _model_name(engine, model_a, "model A")
    count = _number(count, "number of samples", 1, MAX_BROWSE, integer=True)
    count = min(count, engine.dataset_length(model_a))
    samples = engine.samples(model_a, range(count))
    items = [(render.upscale(s.image, render.THUMB), f"#{s.index} {s.class_name}") for s in samples]
    return items, gr.update(choices=[PREDICTED] + engine.class_names(model_a), value=PREDICTED)


@user_errors
def load_sample(engine: Any, model_a: Any, index: Any) -> tuple[int, np.ndarray]:
    """(index, picture) of test sample ``index`` of model A's dataset, for the input image box."""
    source = resolve_source(engine, model_a, None, index)
    if source.index is None:
        raise gr.Error("sample index must be >= 0")
    return source.index, render.upscale(source.image)


@user_errors
def current_picture(engine: Any, model_a: Any, index: Any) -> Any:
    """Model A changed: redraw the input box from its dataset (uploads stay as they are)."""
    if index is None or index == "" or _number(index, "sample index", -1, 10**9, integer=True) < 0:
        return gr.update()
    return load_sample(engine, model_a, index)[1]


@user_errors
def compare(engine: Any, model_a: Any, model_b: Any, image: Any, index: Any, class_choice: Any,
            threshold: Any, method: Any) -> tuple:
    """Both models on one image: CAM overlays, top-5, pseudo masks and a summary."""
    model_a = _model_name(engine, model_a, "model A")
    model_b = _model_name(engine, model_b, "model B")
    threshold = _threshold(threshold)
    methods = engine.cam_methods()
    method = method or "gradcampp"
    if method not in methods:
        raise gr.Error(f"unknown CAM method {method!r}")
    if class_choice not in (None, "", PREDICTED) and not any(
            class_choice in engine.class_names(m) for m in (model_a, model_b)):
        raise gr.Error(f"class {str(class_choice)[:60]!r} is not a class of {model_a} or {model_b}")
    source = resolve_source(engine, model_a, image, index)
    outputs: list[Any] = []
    rows = []
    for model in (model_a, model_b):
        wanted = _class_for(engine, model, class_choice)
        out = engine.cam(model, source.image, class_index=wanted, method=method)
        iou = _scores_text(engine, model, out.cam, source.mask, threshold)
        note = "" if wanted is not None or class_choice in (None, "", PREDICTED) else \
            f" ({class_choice!r} is not one of its classes)"
        predicted = max(out.probs, key=out.probs.get)
        rows.append((model, engine.describe(model), predicted, out.probs[predicted], out.class_name + note, iou))
        outputs.append((render.overlay(source.image, out.cam, source.mask),
                        _top5(out.probs), render.mask_view(source.image, out.cam >= threshold, source.mask)))
    lines = [_source_line(source), f"**CAM method:** {methods[method]}", ""]
    for tag, (model, description, predicted, p, shown, iou) in zip("AB", rows):
        lines.append(f"**{tag} — {description}**  \npredicted **{predicted}** ({p:.1%}); CAM of class "
                     f"**{shown}**; {iou}")
    (ov_a, lab_a, mask_a), (ov_b, lab_b, mask_b) = outputs
    return ov_a, ov_b, lab_a, lab_b, mask_a, mask_b, "\n\n".join(lines)


@user_errors
def startup(engine: Any, model_a: Any, model_b: Any, class_choice: Any, threshold: Any, method: Any) -> tuple:
    """Page load: sample gallery, sample #0 and both models' CAMs, so the page opens on something."""
    names = engine.checkpoint_names()
    if not names:
        empty = (None,) * 6 + ("No checkpoints yet — train one in **Fine-tune**.",)
        return ([], gr.update(), -1, None) + empty + (checkpoints_markdown(engine),)
    a0, b0 = default_pair(names)
    model_a = model_a if model_a in names else a0
    model_b = model_b if model_b in names else b0
    gallery, classes = sample_gallery(engine, model_a)
    index, picture = load_sample(engine, model_a, 0)
    results = compare(engine, model_a, model_b, None, index, PREDICTED, threshold, method or "gradcampp")
    return (gallery, classes, index, picture) + results + (checkpoints_markdown(engine),)


# -- Browse --------------------------------------------------------------------------------
@user_errors
def browse(engine: Any, model: Any, count: Any, order: Any, threshold: Any,
           progress: Callable | None = None) -> tuple[list, pd.DataFrame, list[int]]:
    """CAM overlays of the first ``count`` test images with their IoU, sorted as asked."""
    model = _model_name(engine, model)
    count = min(_number(count, "number of images", 1, MAX_BROWSE, integer=True), engine.dataset_length(model))
    threshold = _threshold(threshold)
    if order not in BROWSE_ORDERS:
        raise gr.Error(f"order must be one of {BROWSE_ORDERS}")
    if progress is not None:
        progress(0.1, desc=f"CAMs of {count} images")
    samples = engine.samples(model, range(count))
    cams, predicted = engine.cams_for_samples(model, samples, classes="label")
    names = engine.class_names(model)
    records = []
    for sample, cam, pred in zip(samples, cams, predicted):
        scores = mask_iou(torch.from_numpy(cam >= threshold), torch.from_numpy(sample.mask))
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


@user_errors
def open_in_compare(engine: Any, model: Any, positions: Any, position: Any) -> tuple:
    """A Browse thumbnail clicked: its sample becomes Compare's image (model A = the browsed model)."""
    model = _model_name(engine, model)
    positions = list(positions or [])
    pos = _number(position, "gallery position", 0, max(len(positions) - 1, 0), integer=True)
    if not positions:
        raise gr.Error("browse some images first")
    index, picture = load_sample(engine, model, positions[pos])
    return model, index, picture, gr.Tabs(selected="compare")


# -- DRS -----------------------------------------------------------------------------------
@user_errors
def drs_model_info(engine: Any, model: Any) -> tuple[str, Any]:
    """Description of the DRS tab's model and its trained delta (slider default)."""
    model = _model_name(engine, model)
    delta = engine.default_delta(model)
    text = engine.describe(model)
    if not engine.has_drs(model):
        text += "\n\n**Note:** this model has no DRS layers: the delta slider has no effect on it."
    return text, gr.update(value=delta) if delta is not None else gr.update()


@user_errors
def drs_view(engine: Any, model: Any, model_a: Any, image: Any, index: Any, delta: Any,
             threshold: Any = DEFAULT_THRESHOLD) -> tuple:
    """The DRS model re-run with every DRS layer capped at ``delta``: CAM, top-5, summary."""
    model = _model_name(engine, model)
    delta, threshold = _delta(delta), _threshold(threshold)
    source = resolve_source(engine, model_a, image, index)
    out = engine.cam(model, source.image, class_index=source.label if source.mask is not None else None,
                     drs_delta=delta)
    # The threshold chosen on val at the trained delta: re-choosing it per slider move would cost a
    # pass over the val images each time; the curve below re-chooses it per delta.
    iou = _scores_text(engine, model, out.cam, source.mask, threshold)
    trained = engine.default_delta(model)
    lines = [_source_line(source),
             f"**delta {delta:.2f}** (trained with {trained if trained is not None else 'no fixed delta'}); "
             f"CAM of class **{out.class_name}**; {iou}"]
    if not engine.has_drs(model):
        lines.append("**Note:** no DRS layers in this model: delta changes nothing")
    return render.overlay(source.image, out.cam, source.mask), _top5(out.probs), "\n\n".join(lines)


@user_errors
def drs_strip(engine: Any, model: Any, model_a: Any, image: Any, index: Any, threshold: Any = DEFAULT_THRESHOLD) -> list:
    """The same image at several deltas, side by side."""
    model = _model_name(engine, model)
    threshold = _threshold(threshold)
    source = resolve_source(engine, model_a, image, index)
    items = []
    for delta in STRIP_DELTAS:
        out = engine.cam(model, source.image, class_index=source.label if source.mask is not None else None,
                         drs_delta=delta)
        caption = f"δ {delta:.2f}"
        if source.mask is not None:
            scores = mask_iou(torch.from_numpy(out.cam >= threshold), torch.from_numpy(source.mask))
            caption += f" · IoU {scores['fg_iou']:.2f}"
        items.append((render.overlay(source.image, out.cam, source.mask, size=render.THUMB), caption))
    return items


@user_errors
def drs_curve(engine: Any, model: Any, limit: Any, progress: Callable | None = None) -> tuple:
    """CAM mIoU vs delta on the first ``limit`` test images (crm_core.evaluate)."""
    model = _model_name(engine, model)
    limit = _number(limit, "evaluation images", 1, 500, integer=True)
    points = []
    for i, delta in enumerate(CURVE_DELTAS):
        if progress is not None:
            progress((i, len(CURVE_DELTAS)), desc=f"delta {delta:.2f}")
        res = engine.evaluate(model, limit=limit, drs_delta=delta, val_threshold=True)
        at_val = res["cam_miou_val_threshold"]
        points.append({"delta": delta, "miou_val_threshold": at_val["miou"], "val_threshold": at_val["threshold"],
                       "bg_fpr": at_val["bg_fpr"], **{f"{part}_covered": v for part, v in
                                                      res.get("coverage_val_threshold", {}).items()},
                       "miou_best": res["cam_miou_best"]["miou"], "best_threshold": res["cam_miou_best"]["threshold"],
                       "miou_fixed": res["cam_miou_fixed"]["miou"], "accuracy": res["accuracy"]})
    table = pd.DataFrame(points).round(4)
    return plots.delta_figure(points, model), table


# -- Superpixels ---------------------------------------------------------------------------
@user_errors
def superpixel_view(engine: Any, model: Any, model_a: Any, image: Any, index: Any, n_segments: Any,
                    compactness: Any, low: Any = 0.2, high: Any = 0.45) -> tuple:
    """SLIC boundaries, raw CAM, superpixel-averaged CAM (alignment target), refined trimap."""
    model = _model_name(engine, model)
    n_segments = _number(n_segments, "n_segments", 2, 1000, integer=True)
    compactness = _number(compactness, "compactness", 0.0, 1000.0, lo_open=True)
    low, high = _threshold(low), _threshold(high)
    if low > high:
        raise gr.Error(f"low threshold {low} is above high threshold {high}")
    source = resolve_source(engine, model_a, image, index)
    labels = engine.superpixels(source.image, n_segments, compactness)
    out = engine.cam(model, source.image, class_index=source.label if source.mask is not None else None)
    cam = torch.from_numpy(out.cam)
    seg = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    pooled = superpixel_mean(cam, seg)
    pooled = pooled / pooled.max().clamp_min(1e-8)  # the alignment loss compares max-normalised maps
    raw_tri = pseudo_trimap(cam[None], low, high)[0].numpy()
    refined = pseudo_trimap(cam[None], low, high, segments=seg[None])[0].numpy()
    lines = [_source_line(source), f"{int(labels.max()) + 1} superpixels; CAM of class **{out.class_name}**"]
    if source.mask is not None:
        for what, tri in (("raw CAM", raw_tri), ("superpixel-refined", refined)):
            s = mask_iou(torch.from_numpy(tri == 1), torch.from_numpy(source.mask))
            lines.append(f"{what} pseudo mask (fg ≥ {high:.2f}): object IoU **{s['fg_iou']:.3f}**, mIoU {s['miou']:.3f}")
    return (render.boundaries_view(source.image, labels), render.overlay(source.image, out.cam, source.mask),
            render.overlay(source.image, pooled.numpy(), source.mask),
            render.trimap_view(source.image, refined, source.mask), "\n\n".join(lines))


# -- Reconstructions -----------------------------------------------------------------------
@user_errors
def reconstructions(engine: Any, models: Any, model_a: Any, image: Any, index: Any,
                    progress: Callable | None = None) -> tuple:
    """Input vs each model's ReconstructNet output, error maps, L1 and perceptual distances."""
    if isinstance(models, str):
        models = [models]
    models = [_model_name(engine, m) for m in (models or [])]
    if not models:
        raise gr.Error("choose at least one model")
    source = resolve_source(engine, model_a, image, index)
    items: list[tuple[np.ndarray, str]] = [(render.upscale(source.image), "input")]
    rows = []
    for i, model in enumerate(models):
        if progress is not None:
            progress((i, len(models)), desc=f"reconstructing with {model}")
        if not engine.model(model).has_reconstructor:
            rows.append({"model": model, "L1": None, "perceptual": None, "note": "no ReconstructNet (trained without CRM)"})
            continue
        rec = engine.reconstruct(model, source.image)
        dependence = engine.cam_dependence(model)
        items.append((render.upscale(rec.recon), f"{model}: reconstruction — {describe_cam_dependence(dependence['cam_dependence'])}"))
        items.append((render.error_view(rec.error), f"{model}: |error| (blue 0 → red ≥ 0.5)"))
        if rec.decoder_input is not None:
            signed = rec.decoder_input_kind == "scores"
            what = "raw class scores (SSC)" if signed else "Grad-CAM++ maps, each divided by its max"
            items.append((render.map_strip(rec.decoder_input, list(engine.class_names(model)), signed=signed),
                          f"{model}: decoder input — {what}, one per class; the reconstruction is drawn from these alone"))
        rows.append({"model": model, "L1": round(rec.l1, 4), "perceptual": round(rec.perceptual, 4),
                     "test L1 real / shuffled CAMs": f"{dependence['recon_l1']:.4f} / {dependence['recon_l1_shuffled']:.4f}",
                     "CAM dependence": round(dependence["cam_dependence"], 3),
                     "note": describe_cam_dependence(dependence["cam_dependence"])})
    info = (f"{_source_line(source)}\n\nL1 = mean |reconstruction − input| (pixels in [0, 1]); perceptual = "
            f"VGG19 relu1_1..relu5_1 feature L1, weights 1/32..1 (VGG19 weights: {engine.perceptual_source()}).\n\n"
            "CAM dependence = (L1 with CAMs shuffled across 32 test images − L1 with their own CAMs) / the former: "
            "near 0 means the decoder ignores the CAM (it draws the same picture for every image), so the "
            "reconstruction cannot be pushing the CAM toward the object.")
    return items, pd.DataFrame(rows, columns=RECON_COLUMNS), info


RECON_COLUMNS = ["model", "L1", "perceptual", "test L1 real / shuffled CAMs", "CAM dependence", "note"]


# -- Runs ----------------------------------------------------------------------------------
def _last(rows: Sequence[dict], split: str, key: str) -> Any:
    for row in reversed(rows):
        if row.get("split") == split and row.get(key) is not None:
            return row[key]
    return None


def runs_table(engine: Any, names: Sequence[str] | None = None) -> pd.DataFrame:
    records = []
    for name in names if names is not None else engine.run_names():
        info = engine.run(name)
        train = info.config.get("train", {})
        extra = train.get("extra", {})
        ev = info.eval or {}
        best = ev.get("cam_miou_best") or {}
        records.append({
            "run": name, "model": train.get("model"), "arch": train.get("arch"), "dataset": train.get("dataset"),
            "image px": train.get("image_size"), "steps": _last(info.metrics, "train", "step"),
            "wall time s": finite(_last(info.metrics, "train", "wall_time")),
            "final loss_total": finite(_last(info.metrics, "train", "loss_total")),
            "val accuracy": finite(_last(info.metrics, "val", "accuracy")),
            "eval accuracy": finite(ev.get("accuracy")), "CAM mIoU (best thr)": finite(best.get("miou")),
            "best thr": finite(best.get("threshold")), "recon L1": finite(ev.get("recon_l1")),
            "cls lr": train.get("cls_lr"), "delta": train.get("delta") if train.get("model") == "resnet_drs" else None,
            "init from": Path(train["init_from"]).stem if train.get("init_from") else None,
            "weights": extra.get("weights_source"),
        })
    frame = pd.DataFrame(records)
    return frame.round(4) if not frame.empty else pd.DataFrame(columns=["run"])


@user_errors
def runs_view(engine: Any, names: Any, terms: Any, smoothing: Any, x_axis: Any, log_y: Any, split: Any = "train") -> tuple:
    """Loss curves of the selected runs and the table of every run."""
    names = [str(n) for n in (names or [])]
    smoothing = _number(smoothing, "smoothing", 0.0, 0.99)
    if x_axis not in plots.X_AXES:
        raise gr.Error(f"x axis must be one of {list(plots.X_AXES)}")
    if split not in ("train", "val"):
        raise gr.Error("split must be train or val")
    terms = [t for t in (terms or []) if t in plots.TERMS] or ["loss_total"]
    data = {name: engine.run(name).metrics for name in names}
    figure = plots.loss_figure(data, terms, smoothing, x_axis, bool(log_y), split)
    return figure, runs_table(engine)


@user_errors
def runs_csv(engine: Any, names: Any) -> str:
    """Every metrics row of the selected runs as one CSV (a ``run`` column first)."""
    names = [str(n) for n in (names or [])] or engine.run_names()
    frames = []
    for name in names:
        rows = engine.run(name).metrics
        frames.append(pd.DataFrame(rows, columns=list(METRIC_COLUMNS)).assign(run=name))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run", *METRIC_COLUMNS])
    frame = frame[["run", *METRIC_COLUMNS]]
    path = Path(tempfile.mkdtemp(prefix="crm-lab-csv-")) / "crm_lab_metrics.csv"
    frame.to_csv(path, index=False)
    return str(path)


# -- Results -------------------------------------------------------------------------------
#: Metrics of docs/results.json the tab plots (key -> label); the table also shows train time.
RESULT_METRICS = {"miou": "CAM mIoU (val threshold)", "accuracy": "accuracy", "head": "head covered",
                  "body": "body covered", "bg_fpr": "background FP rate", "cam_dependence": "CAM dependence"}
RESULT_COLUMNS = {**RESULT_METRICS, "train_s": "train time (s)"}
RESULTS_COMMAND = "python -m crm_core.results --seeds 3"
APPEARANCES = ("random", "informative")  # the report's data appearances, in display order


def _result_metric(metric: Any) -> str:
    if metric not in RESULT_METRICS:
        raise gr.Error(f"metric must be one of {list(RESULT_METRICS)}, got {str(metric)[:40]!r}")
    return str(metric)


def _yours(user_row: dict[str, Any]) -> str:
    return f"{user_row['name']} (yours)"


def _mean_std(stats: dict[str, Any], metric: str) -> str:
    entry = stats.get(metric) or {}
    mean = finite(entry.get("mean"))
    return "–" if mean is None else f"{mean:.3f} ± {finite(entry.get('std')) or 0.0:.3f}"


def results_table(rows: dict[str, dict[str, Any]], user_rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One line per report row (mean ± std over seeds) and per checkpoint the user evaluated (one value)."""
    records = []
    for key, row in rows.items():
        stats = row["stats"]
        records.append({"row": row.get("label", key), "group": row.get("group"),
                        "seeds": max((int(s.get("n", 1)) for s in stats.values()), default=0),
                        **{title: _mean_std(stats, metric) for metric, title in RESULT_COLUMNS.items()}})
    for user_row in user_rows:
        records.append({"row": _yours(user_row), "group": "yours", "seeds": 1, **{
            title: "–" if finite(user_row.get(metric)) is None else f"{user_row[metric]:.3f}"
            for metric, title in RESULT_COLUMNS.items()}})
    return pd.DataFrame(records, columns=["row", "group", "seeds", *RESULT_COLUMNS.values()])


def results_plot(rows: dict[str, dict[str, Any]], jobs: Sequence[dict[str, Any]], user_rows: Sequence[dict[str, Any]],
                 metric: str) -> Any:
    """The strip plot of ``metric``: a dot per (row, seed) from the report's jobs, the floors as lines."""
    points: dict[str, list[tuple[int, float]]] = {}
    for key, row in rows.items():
        values = [(job.get("seed"), finite(job.get(metric))) for job in jobs if job.get("row") == key]
        if any(v is not None for _, v in values):
            points[row.get("label", key)] = [(seed, v) for seed, v in values if v is not None]
    floors = [(row.get("model", key), row["stats"][metric]["mean"]) for key, row in rows.items()
              if row.get("group") == "floor" and finite((row["stats"].get(metric) or {}).get("mean")) is not None]
    yours = {_yours(u): u[metric] for u in user_rows if finite(u.get(metric)) is not None}
    return plots.results_figure(points, floors, RESULT_METRICS[metric], yours)


def comparisons_markdown(summary: dict[str, Any], rows: dict[str, dict[str, Any]], metric: str) -> str:
    """The report's paired comparisons of ``metric`` (same seeds) among ``rows``, one bullet each."""
    labels = {key: row.get("label", key) for key, row in summary.get("rows", {}).items()}
    lines = []
    for comparison in summary.get("comparisons", []):
        entry = (comparison.get("metrics") or {}).get(metric) or {}
        diff, se = finite(entry.get("diff")), finite(entry.get("se"))
        if comparison.get("row") not in rows or diff is None:
            continue
        effect = entry.get("effect") and se is not None
        verdict = f"{diff:+.3f} ± {se:.3f} (effect)" if effect else f"no effect ({diff:+.3f})"
        baseline = comparison.get("baseline")
        lines.append(f"- {labels[comparison['row']]} vs {labels.get(baseline, baseline)}: {verdict}")
    if not lines:
        return ""
    return (f"**Paired comparisons of {RESULT_METRICS[metric]}** (same seeds; an effect is a mean difference "
            "beyond 2 standard errors):\n" + "\n".join(lines))


def _report_line(report: dict[str, Any]) -> str:
    meta = report.get("meta") or {}
    seeds = meta.get("seeds") or sorted({job.get("seed") for job in report["jobs"]}, key=str)
    wall = finite(meta.get("wall_s"))
    made = f" in {wall / 60:.0f} min" if wall is not None else ""
    return safe_message(f"{len(report['jobs'])} models ({meta.get('steps', '?')} steps, seeds {seeds}, "
                        f"{meta.get('device', '?')}{made}), made by `{meta.get('command', RESULTS_COMMAND)}`. "
                        "Threshold chosen on val, scores on test; mean ± std over seeds.")


@user_errors
def results_view(engine: Any, appearance: Any, metric: Any, user_rows: Any = None) -> tuple:
    """The Results tab: docs/results.json's rows of one data appearance (table, strip plot, comparisons),
    with the checkpoints the user evaluated; a missing or unreadable report is one line saying how to make it."""
    metric = _result_metric(metric)
    user_rows = [u for u in (user_rows or []) if isinstance(u, dict) and "name" in u]
    try:
        report = engine.results_report()
    except (OSError, ValueError) as exc:
        log.warning("results report: %s", exc)
        report, status = None, f"{' '.join(safe_message(exc).split())}; remake it with `{RESULTS_COMMAND}`"
    else:
        status = _report_line(report) if report else \
            f"No results report yet (docs/results.json is missing): make it with `{RESULTS_COMMAND}`"
    summary = (report or {}).get("summary") or {}
    every_row = summary.get("rows") or {}
    present = {str(r.get("appearance", "random")) for r in every_row.values()}
    present |= {str(u.get("appearance")) for u in user_rows}
    # Every known appearance stays a choice (an API call may ask for one the report lacks yet);
    # the default is the first one the report has.
    choices = list(dict.fromkeys([*APPEARANCES, *sorted(present, key=str)]))
    appearance = appearance if appearance in choices else next((a for a in choices if a in present), choices[0])
    rows = {key: r for key, r in every_row.items() if r.get("appearance", "random") == appearance}
    mine = [u for u in user_rows if str(u.get("appearance")) == appearance]
    figure = results_plot(rows, (report or {}).get("jobs") or [], mine, metric) if rows or mine else None
    return (gr.update(choices=choices, value=appearance), status, results_table(rows, mine), figure,
            comparisons_markdown(summary, rows, metric))


@user_errors
def results_evaluate(engine: Any, model: Any, appearance: Any, metric: Any, user_rows: Any,
                     progress: Callable | None = None) -> tuple:
    """Score a checkpoint as the results table scores its rows (threshold on val, scores on test); it joins
    the table and the plot as "<name> (yours)" under the appearance it was trained on."""
    model = _model_name(engine, model, "checkpoint to evaluate")
    metric = _result_metric(metric)
    if progress is not None:
        progress(0.05, desc=f"evaluating {model}: threshold on val, scores on test")
    row = engine.results_row(model)
    rows = [u for u in (user_rows or []) if isinstance(u, dict) and u.get("name") != model] + [row]
    return (rows, *results_view(engine, row.get("appearance", appearance), metric, rows))


@user_errors
def checkpoint_choices(engine: Any, value: Any) -> dict:
    """A checkpoint menu's choices now (a new checkpoint appears), its value kept when it still exists."""
    names = engine.checkpoint_names()
    return gr.update(choices=names, value=value if value in names else default_pair(names)[0])


# -- Fine-tune -----------------------------------------------------------------------------
def fine_tune_request(engine: Any, name: Any, base: Any, model: Any, dataset: Any, steps: Any, batch_size: Any,
                      cls_lr: Any, rec_lr: Any, l1_weight: Any, vgg_weight: Any, align_weight: Any, delta: Any,
                      learnable: Any) -> FineTuneRequest:
    name = str(name or "").strip()
    if not NAME_RE.match(name) or ".." in name:
        raise gr.Error(f"checkpoint name {name[:60]!r}: use 1-64 letters, digits, '_', '-', '.' (no path)")
    if base in (None, "", NO_BASE):
        base = None
    else:
        base = _model_name(engine, base, "base")
    return FineTuneRequest(
        name=name, base=base, model=str(model), dataset=str(dataset),
        steps=_number(steps, "steps", 1, MAX_STEPS, integer=True),
        batch_size=_number(batch_size, "batch size", 1, 256, integer=True),
        cls_lr=_number(cls_lr, "classifier learning rate", 0.0, 1.0, lo_open=True),
        rec_lr=_number(rec_lr, "ReconstructNet learning rate", 0.0, 1.0, lo_open=True),
        l1_weight=_number(l1_weight, "L1 weight", 0.0, 1000.0), vgg_weight=_number(vgg_weight, "perceptual weight", 0.0, 1000.0),
        align_weight=_number(align_weight, "alignment weight", 0.0, 1000.0),
        delta="learnable" if learnable else f"{_delta(delta):g}",
    )


@user_errors
def fine_tune(engine: Any, name: Any, base: Any, model: Any, dataset: Any, steps: Any, batch_size: Any,
              cls_lr: Any, rec_lr: Any, l1_weight: Any, vgg_weight: Any, align_weight: Any, delta: Any,
              learnable: Any, progress: Callable | None = None, poll_s: float = 0.5,
              plot_every_s: float = 1.0) -> Iterator[tuple[str, Any]]:
    """Train in a worker thread; yield (status, live loss chart) while it runs.

    Closing the generator (Stop, or the browser leaving) asks the run to save and return.
    """
    request = fine_tune_request(engine, name, base, model, dataset, steps, batch_size, cls_lr, rec_lr,
                                l1_weight, vgg_weight, align_weight, delta, learnable)
    busy = engine.training_status()
    if busy:
        raise gr.Error(f"{busy}; one training job at a time — wait for it to finish, then start again")
    engine.train_config(request)  # validate (name free, base compatible) before starting a thread
    rows: list[dict[str, Any]] = []
    updates: queue.Queue = queue.Queue()
    stop = threading.Event()
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["path"] = engine.train(request, on_progress=updates.put, should_stop=stop.is_set)
        except BaseException as exc:  # noqa: BLE001 - handed to the generator, re-raised there
            result["error"] = exc

    worker = threading.Thread(target=work, name=f"fine-tune-{request.name}", daemon=True)
    worker.start()
    last_plot = time.monotonic()
    try:
        yield f"Starting **{request.name}** ({request.steps} steps)…", plots.live_figure(request.name, rows)
        while worker.is_alive() or not updates.empty():
            worker.join(timeout=poll_s)
            fresh = []
            while not updates.empty():
                fresh.append(updates.get_nowait())
            if not fresh:
                continue
            rows.extend(fresh)
            row = rows[-1]
            total = int(row.get("max_steps") or request.steps)
            if progress is not None:
                progress((int(row["step"]), total), desc=f"training {request.name}", unit="steps")
            if time.monotonic() - last_plot >= plot_every_s or not worker.is_alive():
                last_plot = time.monotonic()
                yield (f"**{request.name}**: step {row['step']}/{total}, loss {row.get('loss_total', float('nan')):.4f}",
                       plots.live_figure(request.name, rows))
    finally:
        if worker.is_alive():  # generator closed early (Stop button, page closed): save and return
            stop.set()
            worker.join()
    if "error" in result:
        raise result["error"]
    path = Path(result["path"])
    done = rows[-1]["step"] if rows else 0
    total = int(rows[-1].get("max_steps", request.steps)) if rows else request.steps
    stopped = " (stopped early; resumable)" if done < total else ""
    yield (f"Done: **{request.name}** saved as `{path.parent.name}/{path.name}` after {done} steps{stopped}; "
           f"it is now in every model menu.\n\n{engine.describe(request.name)}", plots.live_figure(request.name, rows))


def select_new_run(engine: Any, selected: Any, name: Any) -> dict:
    """After a fine-tune: its run joins the runs selected in the Runs tab."""
    selected = [str(r) for r in (selected or [])]
    if name in engine.run_names() and name not in selected:
        selected.append(str(name))
    return gr.update(value=selected)


@user_errors
def base_defaults(engine: Any, base: Any) -> tuple[dict, dict]:
    """A base checkpoint chosen: its variant (init_from needs the same one) and its delta."""
    if base in (None, "", NO_BASE):
        return gr.update(), gr.update()
    base = _model_name(engine, base, "base")
    delta = engine.default_delta(base)
    return gr.update(value=engine.variant(base)), gr.update(value=delta) if delta is not None else gr.update()


@user_errors
def stop_training(engine: Any, name: Any) -> str:
    name = str(name or "").strip()
    if engine.request_stop(name):
        return f"Stopping **{name}**: it saves its checkpoint at the end of the current step."
    status = engine.training_status()
    return f"No running fine-tune named {name!r}." + (f" ({status})" if status else "")
