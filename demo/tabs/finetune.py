"""Fine-tune tab: train a new checkpoint (from scratch or from a base) with a live loss chart.

One training at a time, stage-2 networks included (:meth:`demo.tabs.common.Page.training_queue`).
"""
from __future__ import annotations

from typing import Any

import gradio as gr

from demo import callbacks as cb
from demo.protocol import FineTuneRequest
from demo.tabs.common import PICK, PRIVATE, Page

#: The tab starts from FineTuneRequest's defaults (one place for them).
FT_DEFAULTS = FineTuneRequest(name="")


def build(page: Page, runs_sel: gr.Dropdown) -> gr.Dropdown:
    """The tab, wired (a finished fine-tune selects its run in ``runs_sel``); returns its base menu."""
    engine, access = page.engine, page.access
    with gr.Tab("Fine-tune", id="finetune") as tab:
        with gr.Row():
            ft_name = gr.Textbox(value=cb.suggest_name(engine), label="New checkpoint name", elem_id="ft-name",
                                 lines=1, max_lines=1)
            ft_base = gr.Dropdown([cb.NO_BASE] + page.names, value=cb.NO_BASE, label="Base checkpoint", **PICK)
            ft_model = gr.Radio(engine.training.model_variants(), value=FT_DEFAULTS.model, label="Model variant")
            ft_dataset = gr.Dropdown(engine.training.datasets(), value=FT_DEFAULTS.dataset, label="Dataset")
            ft_arch = gr.Dropdown(engine.training.backbones(), value=FT_DEFAULTS.arch,
                                  label="Backbone (a base keeps its own)", elem_id="ft-arch")
        with gr.Row():
            ft_steps = gr.Slider(1, 500, value=FT_DEFAULTS.steps, step=1, label="Steps", elem_id="ft-steps")
            ft_batch = gr.Slider(2, 64, value=FT_DEFAULTS.batch_size, step=1, label="Batch size")
            ft_delta = gr.Slider(0.05, 1.0, value=float(FT_DEFAULTS.delta), step=0.01, label="DRS delta")
            ft_learnable = gr.Checkbox(value=False, label="learnable delta")
            ft_objects = gr.Number(value=FT_DEFAULTS.max_objects, precision=0, minimum=1, maximum=10,
                                   label="Objects per image at most (synthetic; above 1: multi-label)",
                                   elem_id="ft-objects")
        with gr.Row():
            ft_cls_lr = gr.Number(value=FT_DEFAULTS.cls_lr, label="classifier lr")
            ft_rec_lr = gr.Number(value=FT_DEFAULTS.rec_lr, label="ReconstructNet lr")
            ft_l1 = gr.Number(value=FT_DEFAULTS.l1_weight, label="w L1")
            ft_vgg = gr.Number(value=FT_DEFAULTS.vgg_weight, label="w perceptual")
            ft_align = gr.Number(value=FT_DEFAULTS.align_weight, label="w alignment")
        with gr.Row():
            ft_start = gr.Button("Start", variant="primary", elem_id="ft-start")
            ft_stop = gr.Button("Stop", variant="stop", elem_id="ft-stop")
        ft_status = gr.Markdown("One training job at a time; others wait in the queue" + (
            f" (at most {access.jobs_per_user} running or queued per user; Stop stops your own jobs)."
            if access.logins else "."), elem_id="ft-status")
        ft_plot = gr.Plot(label="Live losses")

    def fine_tune(name: Any, base: Any, model: Any, dataset: Any, steps: Any, batch: Any, cls_lr: Any,
                  rec_lr: Any, l1: Any, vgg: Any, align: Any, drs_delta: Any, learnable: Any, arch: Any = None,
                  objects: Any = None, request: gr.Request = None,
                  progress: gr.Progress = gr.Progress()) -> Any:  # type: ignore[assignment]
        yield from cb.fine_tune(engine, name, base, model, dataset, steps, batch, cls_lr, rec_lr, l1, vgg, align,
                                drs_delta, learnable, arch, progress=progress, jobs=page.jobs, owner=page.owner(request),
                                max_objects=objects)

    ft_in = [ft_name, ft_base, ft_model, ft_dataset, ft_steps, ft_batch, ft_cls_lr, ft_rec_lr, ft_l1, ft_vgg,
             ft_align, ft_delta, ft_learnable, ft_arch, ft_objects]
    trained = ft_start.click(fine_tune, ft_in, [ft_status, ft_plot], api_name="fine_tune", **page.training_queue(),
                             show_progress_on=[ft_status])
    page.refresh_menus_after(trained, lambda refreshed: refreshed.then(
        page.bind(cb.select_new_run), [runs_sel, ft_name], [runs_sel], **PRIVATE).then(
        lambda: cb.suggest_name(engine), None, [ft_name], **PRIVATE))
    ft_base.input(page.bind(cb.base_defaults), [ft_base], [ft_model, ft_delta, ft_arch], **PRIVATE)
    ft_stop.click(page.stop_training, [ft_name], [ft_status], api_name="stop_training")
    page.on_open(tab)
    return ft_base
