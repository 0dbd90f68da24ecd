"""Compare tab: two models' CAMs, predictions and pseudo masks on one image.

Its image (model A's dataset sample or an upload) is the one the DRS, Superpixels and
Reconstructions tabs work on (:attr:`Compare.source`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr

from crm_core.api import DEFAULT_CAM_METHOD
from demo import callbacks as cb
from demo.tabs.common import PICK, PRIVATE, VIEW, Page, readable_upload_errors


@dataclass
class Compare:
    """What the other tabs and the page's load use of this tab."""

    model_a: gr.Dropdown
    model_b: gr.Dropdown
    class_choice: gr.Dropdown
    threshold: gr.Slider
    method: gr.Dropdown
    input_image: gr.Image
    sample_index: gr.Number
    samples: gr.Gallery
    outputs: list
    compare: Callable
    sample_gallery: Callable
    class_gallery: gr.Gallery
    class_view: Callable

    @property
    def inputs(self) -> list:
        return [self.model_a, self.model_b, self.input_image, self.sample_index, self.class_choice, self.threshold,
                self.method]

    @property
    def source(self) -> list:
        """The image the view shows: model A (its dataset), the upload, the sample index."""
        return [self.model_a, self.input_image, self.sample_index]

    @property
    def startup(self) -> tuple[list, list]:
        """The page load's inputs and outputs (the checkpoint list is the page's)."""
        return ([self.model_a, self.model_b, self.class_choice, self.threshold, self.method],
                [self.samples, self.class_choice, self.sample_index, self.input_image] + self.outputs)

    @property
    def class_inputs(self) -> list:
        """What the per-class view reads: both models, the image and the threshold (the background score)."""
        return [self.model_a, self.model_b, self.input_image, self.sample_index, self.threshold]

    def then_classes(self, event: Any) -> Any:
        """After ``event`` redrew the comparison: the per-class CAMs of multi-label models."""
        return event.then(self.class_view, self.class_inputs, [self.class_gallery, self.class_choice], **PRIVATE)

    def show_sample(self, event: Any) -> Any:
        """After ``event`` picked model A and its sample: its gallery, then the comparison."""
        return self.then_classes(event.then(self.sample_gallery, [self.model_a], [self.samples, self.class_choice],
                                            **PRIVATE).then(self.compare, self.inputs, self.outputs, **PRIVATE))


def build(page: Page) -> Compare:
    engine, names = page.engine, page.names
    methods = engine.inference.cam_methods()
    with gr.Tab("Compare", id="compare") as tab:
        with gr.Row():
            model_a = gr.Dropdown(names, value=page.model_a, label="Model A", **PICK)
            model_b = gr.Dropdown(names, value=page.model_b, label="Model B", **PICK)
            method = gr.Dropdown([(label, value) for value, label in methods.items()], value=DEFAULT_CAM_METHOD,
                                 label="CAM method", info=engine.inference.cam_methods_note() or None)
            class_choice = gr.Dropdown([cb.PREDICTED], value=cb.PREDICTED, label="CAM of class", **PICK)
            threshold = gr.Slider(0.0, 1.0, value=cb.DEFAULT_THRESHOLD, step=0.05, label="Pseudo-mask threshold")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                # image_mode=None: gradio hands the file over undecoded, and crm_core's
                # load_image (alpha, 16 bit, CMYK, EXIF, pixel limit) is the one gate.
                input_image = readable_upload_errors(gr.Image(
                    type="filepath", format="png", image_mode=None, label="Input (upload your own)",
                    sources=["upload", "clipboard"], elem_id="input-image", **VIEW))
                with gr.Row():
                    sample_index = gr.Number(value=0, precision=0, minimum=-1, label="Test sample # (-1 = upload)",
                                             elem_id="sample-index")
                    compare_btn = gr.Button("Compare", variant="primary", elem_id="compare-btn")
            with gr.Column(scale=1, min_width=300):
                overlay_a = gr.Image(format="png", label="A: CAM overlay", interactive=False, **VIEW,
                                     elem_id="overlay-a")
                label_a = gr.Label(num_top_classes=5, label="A: top-5")
            with gr.Column(scale=1, min_width=300):
                overlay_b = gr.Image(format="png", label="B: CAM overlay", interactive=False, **VIEW,
                                     elem_id="overlay-b")
                label_b = gr.Label(num_top_classes=5, label="B: top-5")
        with gr.Row(equal_height=False):
            mask_a = gr.Image(format="png", label="A: pseudo mask (red) vs ground truth (green)",
                              interactive=False, **VIEW)
            mask_b = gr.Image(format="png", label="B: pseudo mask (red) vs ground truth (green)",
                              interactive=False, **VIEW)
            with gr.Column(scale=2):
                compare_md = gr.Markdown(elem_id="compare-info")
        class_gallery = gr.Gallery(label="Multi-label models: the CAM of each class in the image (an upload: the three "
                                         "top-scored) and the class mask they make, the threshold as the background "
                                         "score", columns=6, height=320, format="png", allow_preview=True,
                                   object_fit="contain", elem_id="class-gallery")
        samples = gr.Gallery(label="Test samples of model A's dataset: click one", columns=8,
                             height=300, format="png", allow_preview=False, object_fit="contain",
                             elem_id="sample-gallery")
    view = Compare(model_a, model_b, class_choice, threshold, method, input_image, sample_index, samples,
                   [overlay_a, overlay_b, label_a, label_b, mask_a, mask_b, compare_md],
                   page.bind(cb.compare), page.bind(cb.sample_gallery), class_gallery, page.bind(cb.class_view))
    _wire(page, view, compare_btn)
    page.on_open(tab)
    return view


def _wire(page: Page, view: Compare, compare_btn: gr.Button) -> None:
    compare, compare_in, compare_out = view.compare, view.inputs, view.outputs
    then_classes = view.then_classes
    then_classes(gr.on([compare_btn.click, view.model_b.input, view.class_choice.input, view.method.input,
                        view.threshold.release], compare, compare_in, compare_out, api_name="compare"))
    then_classes(view.model_a.input(view.sample_gallery, [view.model_a], [view.samples, view.class_choice],
                                    api_name="sample_gallery").then(
        page.bind(cb.current_picture), [view.model_a, view.sample_index], [view.input_image], **PRIVATE).then(
        compare, compare_in, compare_out, **PRIVATE))
    then_classes(view.sample_index.submit(page.bind(cb.load_sample), [view.model_a, view.sample_index],
                                          [view.sample_index, view.input_image], api_name="load_sample").then(
        compare, compare_in, compare_out, **PRIVATE))

    def pick_sample(model: Any, evt: gr.SelectData) -> tuple:
        return cb.load_sample(page.engine, model, evt.index)

    then_classes(view.samples.select(pick_sample, [view.model_a], [view.sample_index, view.input_image],
                                     **PRIVATE).then(compare, compare_in, compare_out, **PRIVATE))
    then_classes(view.input_image.upload(lambda: -1, None, [view.sample_index], **PRIVATE).then(
        compare, compare_in, compare_out, **PRIVATE))
