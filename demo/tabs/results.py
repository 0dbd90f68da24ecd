"""Results tab: the multi-seed results table (docs/results.json) as a table, a plot and its
comparisons, and a user's own checkpoint evaluated the way the table's rows are."""
from __future__ import annotations

from typing import Any

import gradio as gr

from demo import callbacks as cb
from demo.tabs.common import PICK, PRIVATE, Page


def build(page: Page) -> None:
    with gr.Tab("Results", id="results") as tab:
        results_md = gr.Markdown("The results table (`docs/results.json`) loads when this tab opens.",
                                 elem_id="results-info")
        with gr.Row():
            res_appearance = gr.Dropdown(list(cb.APPEARANCES), value=cb.APPEARANCES[0],
                                         label="Data appearance")
            res_metric = gr.Dropdown([(label, key) for key, label in cb.RESULT_METRICS.items()],
                                     value="miou", label="Metric")
        res_plot = gr.Plot(label="One dot per seed of each trained row; dashed: the untrained floor; "
                                 "dotted: baselines and ceilings (no model), at their mean")
        res_table = gr.Dataframe(interactive=False, elem_id="results-table",
                                 label="mean ± std over seeds; groups baseline and ceiling: no model")
        res_comparisons = gr.Markdown(elem_id="results-comparisons")
        with gr.Row():
            res_model = gr.Dropdown(page.names, value=page.model_a, label="Your checkpoint", **PICK)
            res_btn = gr.Button("Evaluate it as the table does (threshold on val, scores on test)")
        res_user = gr.State([])  # this page's evaluated checkpoints (results_row dicts)

    results_in = [res_appearance, res_metric, res_user]
    results_out = [res_appearance, results_md, res_table, res_plot, res_comparisons]
    view = page.bind(cb.results_view)
    gr.on([res_appearance.input, res_metric.input], view, results_in, results_out, api_name="results")

    def results_evaluate(model: Any, appearance: Any, metric: Any, rows: Any,
                         progress: gr.Progress = gr.Progress()) -> tuple:
        return cb.results_evaluate(page.engine, model, appearance, metric, rows, progress=progress)

    res_btn.click(results_evaluate, [res_model, *results_in], [res_user, *results_out], api_name="results_evaluate")
    # The report is read only when the tab opens, not at start-up.
    page.on_open(tab, lambda opened: opened.then(view, results_in, results_out, **PRIVATE).then(
        page.bind(cb.checkpoint_choices), [res_model], [res_model], **PRIVATE))
