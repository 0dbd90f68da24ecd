"""Browse heatmaps tab: a model's test images ranked by IoU; a click opens one in Compare."""
from __future__ import annotations

from typing import Any

import gradio as gr

from demo import callbacks as cb
from demo.tabs.common import PICK, PRIVATE, RESULTS, Page
from demo.tabs.compare import Compare


def build(page: Page, compare: Compare, tabs: gr.Tabs) -> gr.Dropdown:
    """The tab, wired; returns its model menu (one of the page's checkpoint menus)."""
    engine = page.engine
    with gr.Tab("Browse heatmaps", id="browse") as tab:
        with gr.Row():
            browse_model = gr.Dropdown(page.names, value=page.model_a, label="Model", **PICK)
            browse_count = gr.Slider(4, cb.MAX_BROWSE, value=24, step=4, label="Test images")
            browse_order = gr.Radio(list(cb.BROWSE_ORDERS), value=cb.BROWSE_ORDERS[0], label="Order")
            browse_thr = gr.Slider(0.0, 1.0, value=cb.DEFAULT_THRESHOLD, step=0.05, label="IoU threshold")
            browse_btn = gr.Button("Show", variant="primary")
        browse_gallery = gr.Gallery(label="CAM of the true class (a multi-label model: the class mask of the image's classes), "
                                          "ground truth in green: click to open in Compare",
                                    height=760, elem_id="browse-gallery", **RESULTS)
        with gr.Accordion("Per-image table", open=False):
            browse_table = gr.Dataframe(headers=["index", "class", "predicted", "object IoU"],
                                        interactive=False)
        browse_positions = gr.State([])

    def browse(model: Any, count: Any, order: Any, thr: Any, progress: gr.Progress = gr.Progress()) -> tuple:
        return cb.browse(engine, model, count, order, thr, progress=progress)

    browse_in = [browse_model, browse_count, browse_order, browse_thr]
    browse_out = [browse_gallery, browse_table, browse_positions]
    gr.on([browse_btn.click, browse_model.input, browse_order.input, browse_count.release, browse_thr.release],
          browse, browse_in, browse_out, api_name="browse")

    def open_in_compare(model: Any, positions: Any, evt: gr.SelectData) -> tuple:
        return cb.open_in_compare(engine, model, positions, evt.index)

    compare.show_sample(browse_gallery.select(open_in_compare, [browse_model, browse_positions],
                                              [compare.model_a, compare.sample_index, compare.input_image, tabs],
                                              **PRIVATE))
    page.on_open(tab, lambda opened: opened.then(browse, browse_in, browse_out, **PRIVATE))
    return browse_model
