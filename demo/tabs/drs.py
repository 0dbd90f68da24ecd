"""DRS thresholds tab: re-run a DRS model on Compare's image with another cap (delta), a strip of
deltas, and CAM mIoU against delta on the test split."""
from __future__ import annotations

from typing import Any

import gradio as gr

from crm_core.api import DRS_DEFAULT_DELTA
from demo import callbacks as cb
from demo.tabs.common import PICK, PRIVATE, RESULTS, VIEW, Page


def build(page: Page, source: list) -> gr.Dropdown:
    """The tab, wired, on ``source`` (Compare's image); returns its model menu."""
    engine = page.engine
    with gr.Tab("DRS thresholds", id="drs") as tab:
        gr.Markdown("DRS caps each channel at `delta × its spatial max`. Move the slider to re-run the model "
                    "with another cap (image: the one selected in **Compare**).")
        with gr.Row():
            drs_model = gr.Dropdown(page.names, value=cb.default_drs(engine, page.names), label="DRS model", **PICK)
            delta = gr.Slider(0.05, 1.0, value=DRS_DEFAULT_DELTA, step=0.01, label="delta (DRS cap)", elem_id="delta-slider")
        drs_model_md = gr.Markdown()
        with gr.Row(equal_height=False):
            drs_image = gr.Image(format="png", label="CAM at this delta", interactive=False, **VIEW,
                                 elem_id="drs-image")
            drs_label = gr.Label(num_top_classes=5, label="top-5 at this delta")
            drs_md = gr.Markdown(elem_id="drs-info")
        strip_btn = gr.Button("Render the delta strip")
        drs_strip = gr.Gallery(label="Same image, several deltas", height=640, **RESULTS)
        with gr.Row():
            curve_limit = gr.Slider(4, 200, value=32, step=4, label="Evaluation images (test split)")
            curve_btn = gr.Button("Compute CAM mIoU vs delta")
        with gr.Row():
            curve_plot = gr.Plot(label="CAM mIoU vs delta")
            curve_table = gr.Dataframe(headers=list(cb.CURVE_COLUMNS.values()), interactive=False,
                                       elem_id="drs-curve-table")

    drs_view = page.bind(cb.drs_view)
    drs_in = [drs_model, *source, delta]
    drs_out = [drs_image, drs_label, drs_md]
    delta.release(drs_view, drs_in, drs_out, api_name="drs_cam")
    strip = page.bind(cb.drs_strip)
    strip_btn.click(strip, [drs_model, *source], [drs_strip], api_name="drs_strip")  # public name first
    drs_model.input(page.bind(cb.drs_model_info), [drs_model], [drs_model_md, delta], api_name="drs_model_info").then(
        drs_view, drs_in, drs_out, **PRIVATE).then(strip, [drs_model, *source], [drs_strip], **PRIVATE)

    def curve(model: Any, limit: Any, progress: gr.Progress = gr.Progress()) -> tuple:
        return cb.drs_curve(engine, model, limit, progress=progress)

    curve_btn.click(curve, [drs_model, curve_limit], [curve_plot, curve_table], api_name="drs_curve")

    def drs_text(model: Any) -> str:
        return cb.drs_model_info(engine, model)[0]

    page.on_open(tab, lambda opened: opened.then(drs_text, [drs_model], [drs_model_md], **PRIVATE).then(
        drs_view, drs_in, drs_out, **PRIVATE).then(strip, [drs_model, *source], [drs_strip], **PRIVATE))
    return drs_model
