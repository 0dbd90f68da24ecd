"""Reconstructions tab: what each model's ReconstructNet makes of Compare's image from its CAMs."""
from __future__ import annotations

from typing import Any

import gradio as gr

from demo import callbacks as cb
from demo.tabs.common import PICK, PRIVATE, RESULTS, Page


def build(page: Page, source: list) -> gr.Dropdown:
    """The tab, wired, on ``source`` (Compare's image); returns its models menu."""
    with gr.Tab("Reconstructions", id="reconstructions") as tab:
        with gr.Row():
            rec_models = gr.Dropdown(page.names, value=[m for m in dict.fromkeys([page.model_a, page.model_b]) if m],
                                     multiselect=True, label="Models", **PICK)
            rec_btn = gr.Button("Reconstruct", variant="primary")
        rec_gallery = gr.Gallery(label="input · reconstruction · error map · decoder input, per model", height=640,
                                 elem_id="rec-gallery", **RESULTS)
        rec_table = gr.Dataframe(headers=cb.RECON_COLUMNS, interactive=False, elem_id="rec-table")
        rec_md = gr.Markdown(elem_id="rec-info")

    def reconstruct(models: Any, model: Any, image: Any, index: Any, progress: gr.Progress = gr.Progress()) -> tuple:
        return cb.reconstructions(page.engine, models, model, image, index, progress=progress)

    rec_in = [rec_models, *source]
    rec_out = [rec_gallery, rec_table, rec_md]
    gr.on([rec_btn.click, rec_models.input], reconstruct, rec_in, rec_out, api_name="reconstructions")
    page.on_open(tab, lambda opened: opened.then(reconstruct, rec_in, rec_out, **PRIVATE))
    return rec_models
