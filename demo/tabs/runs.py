"""Runs tab: the training curves and final metrics of the run folders, and their metrics CSV."""
from __future__ import annotations

import gradio as gr

from demo import callbacks as cb
from demo import plots
from demo.tabs.common import PICK, PRIVATE, Page


def build(page: Page) -> gr.Dropdown:
    """The tab, wired; returns its runs menu (the page refreshes it; a fine-tune selects its new run)."""
    runs0 = page.engine.runs.names()
    with gr.Tab("Runs", id="runs") as tab:
        with gr.Row():
            runs_sel = gr.Dropdown(runs0, value=runs0, multiselect=True, label="Runs", **PICK)
            terms = gr.CheckboxGroup(list(plots.TERMS), value=["loss_total", "loss_cls"], label="Terms")
        with gr.Row():
            smoothing = gr.Slider(0.0, 0.99, value=0.6, step=0.01, label="Smoothing (debiased EMA)")
            x_axis = gr.Radio(list(plots.X_AXES), value="step", label="x axis")
            split = gr.Radio(["train", "val"], value="train", label="Split")
            log_y = gr.Checkbox(value=False, label="log scale")
        runs_plot = gr.Plot(label="Loss curves")
        runs_df = gr.Dataframe(interactive=False, label="Runs: config and final metrics", elem_id="runs-table")
        with gr.Row():
            csv_btn = gr.Button("Export metrics CSV")
            csv_file = gr.File(label="metrics CSV", interactive=False, height=80)

    runs_in = [runs_sel, terms, smoothing, x_axis, log_y, split]
    runs_out = [runs_plot, runs_df]
    view = page.bind(cb.runs_view)
    gr.on([runs_sel.input, terms.input, smoothing.release, x_axis.input, log_y.input, split.input],
          view, runs_in, runs_out, api_name="runs")
    csv_btn.click(page.bind(cb.runs_csv), [runs_sel], [csv_file], api_name="runs_csv")
    page.on_open(tab, lambda opened: opened.then(view, runs_in, runs_out, **PRIVATE))
    return runs_sel
