"""Stage 2 tab: a segmentation network's mask beside a CAM model's pseudo mask and the ground
truth (the last two need no network), and a panel that trains a network on a CAM model's pseudo
masks. Its trainings share the fine-tunes' queue (:meth:`demo.tabs.common.Page.training_queue`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr

from crm_core.api import THRESHOLDS
from demo import callbacks as cb
from demo.protocol import Stage2Request
from demo.tabs.common import PICK, PRIVATE, VIEW, Page

#: The training panel starts from Stage2Request's defaults (one place for them).
S2_DEFAULTS = Stage2Request(name="", cam_model="")


@dataclass
class _View:
    """The view's menus (which a training or the tab's opening refreshes) and its event."""

    seg: gr.Dropdown
    cam: gr.Dropdown
    index: gr.Number
    low: gr.Slider
    high: gr.Slider
    outputs: list
    show: Callable

    @property
    def inputs(self) -> list:
        return [self.seg, self.cam, self.index, self.low, self.high]

    @property
    def menus(self) -> list:
        return [self.seg, self.cam, self.low, self.high]


def build(page: Page) -> None:
    engine = page.engine
    with gr.Tab("Stage 2", id="stage2") as tab:
        seg0 = engine.stage2.names()
        seg_default = cb.default_network(seg0)
        info0 = engine.stage2.info(seg_default) if seg_default else {}
        cam0 = info0.get("cam_model") if info0.get("cam_model") in page.names else page.model_a
        with gr.Row():
            s2_seg = gr.Dropdown(cb.stage2_menu(engine, seg0), value=seg_default,
                                 label="Stage-2 network (its test mIoU)", elem_id="s2-seg", **PICK)
            s2_cam = gr.Dropdown(page.names, value=cam0, label="CAM model (its pseudo mask)", elem_id="s2-cam",
                                 **PICK)
            s2_index = gr.Number(value=0, precision=0, label="test image index", elem_id="s2-index")
            s2_low = gr.Slider(0.0, 1.0, value=round(info0.get("low") or THRESHOLDS.low, 2), step=0.01,
                               label="background below", elem_id="s2-low")
            s2_high = gr.Slider(0.0, 1.0, value=round(info0.get("high") or THRESHOLDS.high, 2), step=0.01,
                                label="foreground from", elem_id="s2-high")
            s2_btn = gr.Button("Show", variant="primary", elem_id="s2-show")
        with gr.Row():
            s2_pred = gr.Image(format="png", label="stage-2 network's mask", interactive=False,
                               elem_id="s2-pred", **VIEW)
            s2_pseudo = gr.Image(format="png", label="CAM pseudo mask (red fg, yellow uncertain)",
                                 interactive=False, elem_id="s2-pseudo", **VIEW)
            s2_gt = gr.Image(format="png", label="ground truth", interactive=False, elem_id="s2-gt", **VIEW)
        s2_md = gr.Markdown(cb.NO_STAGE2 if not seg0 else "", elem_id="s2-info")
        view = _View(s2_seg, s2_cam, s2_index, s2_low, s2_high, [s2_pred, s2_pseudo, s2_gt, s2_md],
                     page.bind(cb.stage2_view))
        train_cam = _training_panel(page, view, open_panel=not seg0)

    gr.on([s2_btn.click, s2_cam.input, s2_index.submit, s2_low.release, s2_high.release],
          view.show, view.inputs, view.outputs, api_name="stage2")
    s2_seg.input(page.bind(cb.network_defaults), [s2_seg], [s2_cam, s2_low, s2_high], **PRIVATE).then(
        view.show, view.inputs, view.outputs, **PRIVATE)
    # On opening, a network trained meanwhile appears, and the view fills.
    page.on_open(tab, lambda opened: opened.then(
        page.bind(cb.checkpoint_choices), [s2_cam], [s2_cam], **PRIVATE).then(
        page.bind(cb.checkpoint_choices), [train_cam], [train_cam], **PRIVATE).then(
        page.bind(cb.stage2_choices), view.menus, view.menus, **PRIVATE).then(
        view.show, view.inputs, view.outputs, **PRIVATE))


def _training_panel(page: Page, view: _View, open_panel: bool) -> gr.Dropdown:
    """The panel that trains a network (its mask cut from the view's sliders), wired; returns its CAM menu."""
    engine = page.engine
    with gr.Accordion("Train stage 2: pseudo masks of a CAM model, then a segmentation network on them",
                      open=open_panel, elem_id="s2-train"):
        with gr.Row():
            s2t_name = gr.Textbox(value=cb.suggest_name(engine, "stage2"), label="New network name",
                                  elem_id="s2-train-name", lines=1, max_lines=1)
            s2t_cam = gr.Dropdown(page.names, value=page.model_a, label="CAM model (its pseudo masks)",
                                  elem_id="s2-train-cam", **PICK)
            s2t_cut = gr.Radio(list(cb.CUTS), value=next(iter(cb.CUTS)), label="Mask cut",
                               elem_id="s2-train-cut")
        with gr.Row():
            s2t_images = gr.Slider(1, 640, value=S2_DEFAULTS.images, step=1, label="Training images",
                                   elem_id="s2-train-images")
            s2t_steps = gr.Slider(1, 500, value=S2_DEFAULTS.steps, step=1, label="Steps",
                                  elem_id="s2-train-steps")
            s2t_arch = gr.Dropdown(engine.stage2_training.archs(), value=engine.stage2_training.archs()[0],
                                   label="Segmentation architecture", elem_id="s2-train-arch")
        with gr.Row():
            s2t_start = gr.Button("Start", variant="primary", elem_id="s2-train-start")
            s2t_stop = gr.Button("Stop", variant="stop", elem_id="s2-train-stop")
        s2t_status = gr.Markdown("One training job at a time, fine-tunes included; others wait in the "
                                 "queue.", elem_id="s2-train-status")
        s2t_plot = gr.Plot(label="Live loss")

    def stage2_train(name: Any, cam: Any, cut: Any, low: Any, high: Any, images: Any, steps: Any, arch: Any,
                     request: gr.Request = None, progress: gr.Progress = gr.Progress()) -> Any:  # type: ignore[assignment]
        yield from cb.stage2_train(engine, name, cam, cut, low, high, images, steps, arch, progress=progress,
                                   jobs=page.jobs, owner=page.owner(request))

    trained = s2t_start.click(
        stage2_train, [s2t_name, s2t_cam, s2t_cut, view.low, view.high, s2t_images, s2t_steps, s2t_arch],
        [s2t_status, s2t_plot], api_name="stage2_train", **page.training_queue(),
        show_progress_on=[s2t_status]).then(
        page.bind(cb.stage2_choices), [*view.menus, s2t_name], view.menus, **PRIVATE).then(
        view.show, view.inputs, view.outputs, **PRIVATE)
    page.refresh_menus_after(trained, lambda refreshed: refreshed.then(
        lambda: cb.suggest_name(engine, "stage2"), None, [s2t_name], **PRIVATE))
    s2t_stop.click(page.stop_training, [s2t_name], [s2t_status], api_name="stage2_stop")
    return s2t_cam
