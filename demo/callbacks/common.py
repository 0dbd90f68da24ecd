"""What every tab's callbacks share: user-facing errors, input validation, the image a view works on.

Every failure reaches the user as a one-line ``gr.Error`` whose text went through
:func:`demo.messages.safe_message` (no server path); unexpected exceptions, our bugs among them
(TypeError, IndexError), are logged with their traceback on the server and shown as a short
message, never a traceback.
"""
from __future__ import annotations

import functools
import inspect
import logging
import math
from pathlib import Path
from typing import Any, Callable, Iterator

import gradio as gr
import numpy as np

from crm_core.api import (THRESHOLDS, CheckpointError, DatasetNotFoundError, ImageError, TrainingDiverged,
                          WeightsNotFoundError)
from demo.messages import safe_message
from demo.protocol import DashboardEngine, InvalidName, Sample, TrainingBusy

log = logging.getLogger(__name__)

PREDICTED = "(predicted class)"
MAX_BROWSE = 96  # most images a gallery shows
DEFAULT_THRESHOLD = THRESHOLDS.view  # CAM >= this is foreground: the threshold sliders' first value

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


def _model_name(engine: DashboardEngine, name: Any, what: str = "model") -> str:
    if not name:
        raise gr.Error(f"choose a {what} checkpoint first")
    engine.checkpoints.path(name)  # raises InvalidName for anything but an existing plain name
    return str(name)


def _threshold(value: Any) -> float:
    return _number(value, "threshold", 0.0, 1.0)


def _delta(value: Any) -> float:
    return _number(value, "DRS delta", 0.0, 1.0, lo_open=True)


# -- the image a view works on -------------------------------------------------------------
def resolve_source(engine: DashboardEngine, dataset_model: Any, image: Any, index: Any) -> Sample:
    """The image a view works on: dataset sample ``index`` of ``dataset_model``'s test split
    (with ground truth), or the uploaded ``image`` when ``index`` is negative / empty."""
    if index is not None and index != "":
        idx = _number(index, "sample index", -1, 10**9, integer=True)
        if idx >= 0:
            return engine.inference.sample(_model_name(engine, dataset_model, "dataset (Compare model A)"), idx)
    if image is None:
        raise gr.Error("no image: pick a dataset sample in Compare or upload an image")
    if isinstance(image, dict) and "path" in image:  # FileData from a client
        image = image["path"]
    if not isinstance(image, (np.ndarray, str, Path)):
        raise gr.Error(f"cannot use an image of type {type(image).__name__}")
    # Uploads are shown as the models see them: square, at model A's input size.
    return engine.inference.load_upload(_model_name(engine, dataset_model, "dataset (Compare model A)"), image)


def explained_class(source: Sample) -> int | None:
    """The class a view explains: the true class of a dataset sample, the predicted one of an upload."""
    return source.label if source.mask is not None else None


def _class_for(engine: DashboardEngine, model: str, choice: Any) -> int | None:
    if choice in (None, "", PREDICTED):
        return None
    names = engine.checkpoints.class_names(model)
    return names.index(choice) if choice in names else None


# -- texts ---------------------------------------------------------------------------------
def _iou_text(engine: DashboardEngine, cam: np.ndarray, gt: np.ndarray | None, threshold: float) -> str:
    if gt is None:
        return "no ground truth (uploaded image)"
    scores = engine.inference.mask_scores(cam, gt, threshold)
    return (f"object IoU **{scores['fg_iou']:.3f}** · mIoU {scores['miou']:.3f} · background false positives "
            f"{scores['bg_fpr']:.1%} (threshold {threshold:.2f})")


def _scores_text(engine: DashboardEngine, model: str, cam: np.ndarray, gt: np.ndarray | None, threshold: float,
                 drs_delta: float | None = None) -> str:
    """The image's scores at the model's own CAM threshold chosen on val (the honest number), then
    at the slider's threshold (the pseudo mask shown)."""
    if gt is None:
        return "no ground truth (uploaded image)"
    chosen = engine.evaluation.val_threshold(model, drs_delta=drs_delta)
    at_val = _iou_text(engine, cam, gt, chosen)
    at_slider = _iou_text(engine, cam, gt, threshold)
    return f"at its val-chosen threshold: {at_val}; at the slider's: {at_slider}"


def _top5(probs: dict[str, float]) -> dict[str, float]:
    return dict(sorted(probs.items(), key=lambda kv: -kv[1])[:5])


def _source_line(source: Sample) -> str:
    if source.index is None:
        return "**Image:** your upload (no ground truth)"
    return f"**Image:** test sample #{source.index}, true class **{source.class_name}** (green outline = ground truth)"
