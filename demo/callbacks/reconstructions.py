"""Reconstructions tab: each model's ReconstructNet output beside the input, its error and decoder input."""
from __future__ import annotations

from typing import Any, Callable

import gradio as gr
import numpy as np
import pandas as pd

from crm_core.api import describe_cam_dependence
from demo import render
from demo.callbacks.common import _model_name, _source_line, resolve_source, user_errors
from demo.protocol import DashboardEngine

RECON_COLUMNS = ["model", "L1", "perceptual", "test L1 real / shuffled CAMs", "CAM dependence", "note"]


@user_errors
def reconstructions(engine: DashboardEngine, models: Any, model_a: Any, image: Any, index: Any,
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
        if not engine.checkpoints.has_reconstructor(model):
            rows.append({"model": model, "L1": None, "perceptual": None, "note": "no ReconstructNet (trained without CRM)"})
            continue
        rec = engine.inference.reconstruct(model, source.image)
        dependence = engine.evaluation.cam_dependence(model)
        items.append((render.upscale(rec.recon), f"{model}: reconstruction — {describe_cam_dependence(dependence['cam_dependence'])}"))
        items.append((render.error_view(rec.error), f"{model}: |error| (blue 0 → red ≥ 0.5)"))
        if rec.decoder_input is not None:
            signed = rec.decoder_input_kind == "scores"
            what = "raw class scores (SSC)" if signed else "Grad-CAM++ maps, each divided by its max"
            strip = render.map_strip(rec.decoder_input, list(engine.checkpoints.class_names(model)), signed=signed)
            items.append((strip, f"{model}: decoder input — {what}, one per class; the reconstruction is drawn from these alone"))
        rows.append({"model": model, "L1": round(rec.l1, 4), "perceptual": round(rec.perceptual, 4),
                     "test L1 real / shuffled CAMs": f"{dependence['recon_l1']:.4f} / {dependence['recon_l1_shuffled']:.4f}",
                     "CAM dependence": round(dependence["cam_dependence"], 3),
                     "note": describe_cam_dependence(dependence["cam_dependence"])})
    info = (f"{_source_line(source)}\n\nL1 = mean |reconstruction − input| (pixels in [0, 1]); perceptual = "
            f"VGG19 relu1_1..relu5_1 feature L1, weights 1/32..1 (VGG19 weights: {engine.inference.perceptual_source()}).\n\n"
            "CAM dependence = (L1 with CAMs shuffled across 32 test images − L1 with their own CAMs) / the former: "
            "near 0 means the decoder ignores the CAM (it draws the same picture for every image), so the "
            "reconstruction cannot be pushing the CAM toward the object.")
    return items, pd.DataFrame(rows, columns=RECON_COLUMNS), info

