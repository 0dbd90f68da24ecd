"""Superpixels tab: SLIC superpixels of Compare's image, the CAM averaged over them (the alignment
target) and the pseudo mask it refines."""
from __future__ import annotations

import gradio as gr

from crm_core.api import THRESHOLDS
from demo import callbacks as cb
from demo.tabs.common import PICK, PRIVATE, VIEW, Page


def build(page: Page, source: list) -> gr.Dropdown:
    """The tab, wired, on ``source`` (Compare's image); returns its model menu."""
    with gr.Tab("Superpixels", id="superpixels") as tab:
        with gr.Row():
            sp_model = gr.Dropdown(page.names, value=page.model_a, label="Model", **PICK)
            n_segments = gr.Slider(4, 256, value=64, step=1, label="SLIC n_segments")
            compactness = gr.Slider(0.5, 50, value=10, step=0.5, label="SLIC compactness")
            sp_low = gr.Slider(0.0, 1.0, value=THRESHOLDS.low, step=0.05, label="background below")
            sp_high = gr.Slider(0.0, 1.0, value=THRESHOLDS.high, step=0.05, label="foreground from")
        with gr.Row():
            sp_bounds = gr.Image(format="png", label="SLIC superpixels", interactive=False, **VIEW)
            sp_raw = gr.Image(format="png", label="raw CAM", interactive=False, **VIEW)
            sp_avg = gr.Image(format="png", label="superpixel-averaged CAM (alignment target)",
                              interactive=False, **VIEW)
            sp_mask = gr.Image(format="png", label="refined pseudo mask (red fg, yellow uncertain)",
                               interactive=False, **VIEW)
        sp_md = gr.Markdown(elem_id="sp-info")

    sp_in = [sp_model, *source, n_segments, compactness, sp_low, sp_high]
    sp_out = [sp_bounds, sp_raw, sp_avg, sp_mask, sp_md]
    view = page.bind(cb.superpixel_view)
    gr.on([sp_model.input, n_segments.release, compactness.release, sp_low.release, sp_high.release],
          view, sp_in, sp_out, api_name="superpixels")
    page.on_open(tab, lambda opened: opened.then(view, sp_in, sp_out, **PRIVATE))
    return sp_model
