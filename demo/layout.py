"""The dashboard's layout: ``build_app(engine) -> gr.Blocks``.

Components and event wiring only; :mod:`demo.callbacks` (one module per tab section below)
translates between the components' values and the engine, an implementation of
:class:`demo.protocol.DashboardEngine` that does the work. Every public event has an ``api_name`` so gradio_client can
drive it; pure UI plumbing (tab changes, gallery clicks) is private.
"""
from __future__ import annotations

import functools
import logging
from typing import Any

import gradio as gr
from PIL import Image, UnidentifiedImageError

from crm_core.api import DEFAULT_CAM_METHOD, DRS_DEFAULT_DELTA, THRESHOLDS
from demo import callbacks as cb
from demo import plots
from demo.messages import safe_message
from demo.protocol import DashboardEngine, FineTuneRequest, Stage2Request
from demo.serving import Access, JobBook

log = logging.getLogger(__name__)

PRIVATE = dict(api_visibility="private")
# Checkpoint and run menus accept any value: the engine validates names with a clear message, and an
# API client can name a checkpoint trained after its page's menus were filled.
PICK = dict(allow_custom_value=True)
# Pictures are 256 px (render.DISPLAY) plus a colour bar; their boxes leave them at >= 224 px.
VIEW = dict(height=300, min_width=300)
# Galleries of results: 4 columns and "contain" (not cropped: the colour bar stays) show them at >= 224 px.
RESULTS = dict(columns=4, object_fit="contain", format="png", allow_preview=False)

#: The Fine-tune tab starts from FineTuneRequest's defaults (one place for them), the Stage 2
#: tab's training panel from Stage2Request's.
FT_DEFAULTS = FineTuneRequest(name="")
S2_DEFAULTS = Stage2Request(name="", cam_model="")


def readable_upload_errors(image: gr.Image) -> gr.Image:
    """Make ``image``'s decoding failures reach the user as a message.

    gr.Image opens every upload with PIL before any event handler runs; a file that is not an
    image would otherwise end in a generic "error" and a server-side traceback. The instance's
    ``preprocess`` is wrapped rather than gr.Image subclassed: gradio writes a ``.pyi`` stub next
    to the module of every component subclass.
    """
    preprocess = image.preprocess

    def checked(payload: Any) -> Any:
        try:
            return preprocess(payload)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
            log.info("upload refused: %s", exc)
            orig_name = getattr(payload, "orig_name", None)
            name = safe_message(orig_name or "the upload", keep_name=orig_name)[-80:]
            reason = "too large" if isinstance(exc, Image.DecompressionBombError) else "not an image file PIL can read"
            raise gr.Error(f"cannot use {name} as an image: {reason}; upload a PNG or JPEG") from exc

    image.preprocess = checked  # type: ignore[method-assign]
    return image


def build_app(engine: DashboardEngine, access: Access | None = None) -> gr.Blocks:
    """The whole dashboard around ``engine`` (demo.engine.Engine or a test fake).

    Building asks the engine only what it can answer without building a model: the menus'
    checkpoints are read, not verified, and the page's load event refreshes them (verified).
    ``access`` (demo.serving.Access; None: no logins) says whether users log in, who the admins
    are, each user's fine-tune limit and the banner of an app served without login to the network.
    """
    access = access or Access()
    # The fine-tune jobs of this app, with their owners. Without logins gradio's queue holds the
    # waiting jobs (concurrency_limit=1) and the book only ever holds the running one; with logins
    # every job is booked on arrival, so that each user's running plus queued jobs can be counted.
    jobs = JobBook(access.jobs_per_user if access.logins else None)
    names = engine.checkpoint_names(verify=False)
    a0, b0 = cb.default_pair(names)
    drs0 = cb.default_drs(engine, names)
    methods = engine.cam_methods()
    runs0 = engine.run_names()

    def bind(fn: Any) -> Any:
        """fn(engine, *inputs) -> fn(*inputs); gradio inspects the partial's remaining signature."""
        bound = functools.partial(fn, engine)
        bound.__name__, bound.__doc__ = fn.__name__, fn.__doc__  # type: ignore[attr-defined]
        return bound

    with gr.Blocks(title="CRM Lab", analytics_enabled=False) as app:
        if access.banner:
            gr.Markdown(f"⚠️ **{access.banner}**", elem_id="insecure-banner")
        gr.Markdown("# CRM Lab\nWeakly supervised segmentation: Grad-CAM++ maps of ResNet classifiers with "
                    "DRS (Discriminative Region Suppression) and CRM (a ReconstructNet decoding the CAMs back "
                    "into the image).", elem_id="crm-title")
        with gr.Accordion("Checkpoints: what each model is", open=False):
            models_md = gr.Markdown("…")
            refresh_btn = gr.Button("↻ Refresh checkpoint and run lists", size="sm")

        with gr.Tabs(selected="compare") as tabs:
            # -- 1 Compare ------------------------------------------------------------------
            with gr.Tab("Compare", id="compare") as tab_compare:
                with gr.Row():
                    model_a = gr.Dropdown(names, value=a0, label="Model A", **PICK)
                    model_b = gr.Dropdown(names, value=b0, label="Model B", **PICK)
                    method = gr.Dropdown([(label, value) for value, label in methods.items()], value=DEFAULT_CAM_METHOD,
                                         label="CAM method", info=engine.cam_methods_note() or None)
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
                samples = gr.Gallery(label="Test samples of model A's dataset: click one", columns=8,
                                     height=300, format="png", allow_preview=False, object_fit="contain",
                                     elem_id="sample-gallery")

            # -- 2 Browse -------------------------------------------------------------------
            with gr.Tab("Browse heatmaps", id="browse") as tab_browse:
                with gr.Row():
                    browse_model = gr.Dropdown(names, value=a0, label="Model", **PICK)
                    browse_count = gr.Slider(4, cb.MAX_BROWSE, value=24, step=4, label="Test images")
                    browse_order = gr.Radio(list(cb.BROWSE_ORDERS), value=cb.BROWSE_ORDERS[0], label="Order")
                    browse_thr = gr.Slider(0.0, 1.0, value=cb.DEFAULT_THRESHOLD, step=0.05, label="IoU threshold")
                    browse_btn = gr.Button("Show", variant="primary")
                browse_gallery = gr.Gallery(label="CAM of the true class, ground truth in green: click to open in Compare",
                                            height=760, elem_id="browse-gallery", **RESULTS)
                with gr.Accordion("Per-image table", open=False):
                    browse_table = gr.Dataframe(headers=["index", "class", "predicted", "object IoU"],
                                                interactive=False)
                browse_positions = gr.State([])

            # -- 3 DRS ----------------------------------------------------------------------
            with gr.Tab("DRS thresholds", id="drs") as tab_drs:
                gr.Markdown("DRS caps each channel at `delta × its spatial max`. Move the slider to re-run the model "
                            "with another cap (image: the one selected in **Compare**).")
                with gr.Row():
                    drs_model = gr.Dropdown(names, value=drs0, label="DRS model", **PICK)
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

            # -- 4 Superpixels --------------------------------------------------------------
            with gr.Tab("Superpixels", id="superpixels") as tab_sp:
                with gr.Row():
                    sp_model = gr.Dropdown(names, value=a0, label="Model", **PICK)
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

            # -- 5 Reconstructions ----------------------------------------------------------
            with gr.Tab("Reconstructions", id="reconstructions") as tab_rec:
                with gr.Row():
                    rec_models = gr.Dropdown(names, value=[m for m in dict.fromkeys([a0, b0]) if m],
                                             multiselect=True, label="Models", **PICK)
                    rec_btn = gr.Button("Reconstruct", variant="primary")
                rec_gallery = gr.Gallery(label="input · reconstruction · error map · decoder input, per model", height=640,
                                         elem_id="rec-gallery", **RESULTS)
                rec_table = gr.Dataframe(headers=cb.RECON_COLUMNS, interactive=False, elem_id="rec-table")
                rec_md = gr.Markdown(elem_id="rec-info")

            # -- Stage 2 --------------------------------------------------------------------
            with gr.Tab("Stage 2", id="stage2") as tab_s2:
                seg0 = engine.segmentation_names()
                seg_default = cb.default_network(seg0)
                info0 = engine.segmentation_info(seg_default) if seg_default else {}
                cam0 = info0.get("cam_model") if info0.get("cam_model") in names else a0
                with gr.Row():
                    s2_seg = gr.Dropdown(cb.stage2_menu(engine, seg0), value=seg_default,
                                         label="Stage-2 network (its test mIoU)", elem_id="s2-seg", **PICK)
                    s2_cam = gr.Dropdown(names, value=cam0, label="CAM model (its pseudo mask)", elem_id="s2-cam",
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
                with gr.Accordion("Train stage 2: pseudo masks of a CAM model, then a segmentation network on them",
                                  open=not seg0, elem_id="s2-train"):
                    with gr.Row():
                        s2t_name = gr.Textbox(value=cb.suggest_name(engine, "stage2"), label="New network name",
                                              elem_id="s2-train-name", lines=1, max_lines=1)
                        s2t_cam = gr.Dropdown(names, value=a0, label="CAM model (its pseudo masks)",
                                              elem_id="s2-train-cam", **PICK)
                        s2t_cut = gr.Radio(list(cb.CUTS), value=next(iter(cb.CUTS)), label="Mask cut",
                                           elem_id="s2-train-cut")
                    with gr.Row():
                        s2t_images = gr.Slider(1, 640, value=S2_DEFAULTS.images, step=1, label="Training images",
                                               elem_id="s2-train-images")
                        s2t_steps = gr.Slider(1, 500, value=S2_DEFAULTS.steps, step=1, label="Steps",
                                              elem_id="s2-train-steps")
                        s2t_arch = gr.Dropdown(engine.segmentation_archs(), value=engine.segmentation_archs()[0],
                                               label="Segmentation architecture", elem_id="s2-train-arch")
                    with gr.Row():
                        s2t_start = gr.Button("Start", variant="primary", elem_id="s2-train-start")
                        s2t_stop = gr.Button("Stop", variant="stop", elem_id="s2-train-stop")
                    s2t_status = gr.Markdown("One training job at a time, fine-tunes included; others wait in the "
                                             "queue.", elem_id="s2-train-status")
                    s2t_plot = gr.Plot(label="Live loss")

            # -- 6 Runs ---------------------------------------------------------------------
            with gr.Tab("Runs", id="runs") as tab_runs:
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

            # -- 7 Results ------------------------------------------------------------------
            with gr.Tab("Results", id="results") as tab_results:
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
                    res_model = gr.Dropdown(names, value=a0, label="Your checkpoint", **PICK)
                    res_btn = gr.Button("Evaluate it as the table does (threshold on val, scores on test)")
                res_user = gr.State([])  # this page's evaluated checkpoints (results_row dicts)

            # -- 8 Fine-tune ----------------------------------------------------------------
            with gr.Tab("Fine-tune", id="finetune") as tab_ft:
                with gr.Row():
                    ft_name = gr.Textbox(value=cb.suggest_name(engine), label="New checkpoint name", elem_id="ft-name",
                                         lines=1, max_lines=1)
                    ft_base = gr.Dropdown([cb.NO_BASE] + names, value=cb.NO_BASE, label="Base checkpoint", **PICK)
                    ft_model = gr.Radio(engine.model_variants(), value=FT_DEFAULTS.model, label="Model variant")
                    ft_dataset = gr.Dropdown(engine.datasets(), value=FT_DEFAULTS.dataset, label="Dataset")
                    ft_arch = gr.Dropdown(engine.backbones(), value=FT_DEFAULTS.arch, label="Backbone (a base keeps its own)",
                                          elem_id="ft-arch")
                with gr.Row():
                    ft_steps = gr.Slider(1, 500, value=FT_DEFAULTS.steps, step=1, label="Steps", elem_id="ft-steps")
                    ft_batch = gr.Slider(2, 64, value=FT_DEFAULTS.batch_size, step=1, label="Batch size")
                    ft_delta = gr.Slider(0.05, 1.0, value=float(FT_DEFAULTS.delta), step=0.01, label="DRS delta")
                    ft_learnable = gr.Checkbox(value=False, label="learnable delta")
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

        # -- wiring ---------------------------------------------------------------------------
        source = [model_a, input_image, sample_index]
        compare_in = [model_a, model_b, input_image, sample_index, class_choice, threshold, method]
        compare_out = [overlay_a, overlay_b, label_a, label_b, mask_a, mask_b, compare_md]
        pickers = [model_a, model_b, drs_model, sp_model, browse_model, rec_models, ft_base, runs_sel]
        refresh = bind(cb.refresh_checkpoints)
        compare = bind(cb.compare)

        refresh_btn.click(refresh, pickers, pickers + [models_md], api_name="refresh_checkpoints")
        app.load(refresh, pickers, pickers + [models_md], **PRIVATE).then(
            bind(cb.startup), [model_a, model_b, class_choice, threshold, method],
            [samples, class_choice, sample_index, input_image] + compare_out + [models_md], api_name="startup")

        # Compare
        gr.on([compare_btn.click, model_b.input, class_choice.input, method.input, threshold.release],
              compare, compare_in, compare_out, api_name="compare")
        model_a.input(bind(cb.sample_gallery), [model_a], [samples, class_choice], api_name="sample_gallery").then(
            bind(cb.current_picture), [model_a, sample_index], [input_image], **PRIVATE).then(
            compare, compare_in, compare_out, **PRIVATE)
        sample_index.submit(bind(cb.load_sample), [model_a, sample_index], [sample_index, input_image],
                            api_name="load_sample").then(compare, compare_in, compare_out, **PRIVATE)

        def pick_sample(model: Any, evt: gr.SelectData) -> tuple:
            return cb.load_sample(engine, model, evt.index)

        samples.select(pick_sample, [model_a], [sample_index, input_image], **PRIVATE).then(
            compare, compare_in, compare_out, **PRIVATE)
        input_image.upload(lambda: -1, None, [sample_index], **PRIVATE).then(
            compare, compare_in, compare_out, **PRIVATE)

        # Browse
        def browse(model: Any, count: Any, order: Any, thr: Any, progress: gr.Progress = gr.Progress()) -> tuple:
            return cb.browse(engine, model, count, order, thr, progress=progress)

        browse_in = [browse_model, browse_count, browse_order, browse_thr]
        browse_out = [browse_gallery, browse_table, browse_positions]
        gr.on([browse_btn.click, browse_model.input, browse_order.input, browse_count.release, browse_thr.release],
              browse, browse_in, browse_out, api_name="browse")

        def open_in_compare(model: Any, positions: Any, evt: gr.SelectData) -> tuple:
            return cb.open_in_compare(engine, model, positions, evt.index)

        browse_gallery.select(open_in_compare, [browse_model, browse_positions],
                              [model_a, sample_index, input_image, tabs], **PRIVATE).then(
            bind(cb.sample_gallery), [model_a], [samples, class_choice], **PRIVATE).then(
            compare, compare_in, compare_out, **PRIVATE)

        # DRS
        drs_view = bind(cb.drs_view)
        drs_in = [drs_model, *source, delta]
        drs_out = [drs_image, drs_label, drs_md]
        delta.release(drs_view, drs_in, drs_out, api_name="drs_cam")
        strip = bind(cb.drs_strip)
        strip_btn.click(strip, [drs_model, *source], [drs_strip], api_name="drs_strip")  # public name first
        drs_model.input(bind(cb.drs_model_info), [drs_model], [drs_model_md, delta], api_name="drs_model_info").then(
            drs_view, drs_in, drs_out, **PRIVATE).then(strip, [drs_model, *source], [drs_strip], **PRIVATE)

        def curve(model: Any, limit: Any, progress: gr.Progress = gr.Progress()) -> tuple:
            return cb.drs_curve(engine, model, limit, progress=progress)

        curve_btn.click(curve, [drs_model, curve_limit], [curve_plot, curve_table], api_name="drs_curve")

        # Superpixels
        sp_in = [sp_model, *source, n_segments, compactness, sp_low, sp_high]
        sp_out = [sp_bounds, sp_raw, sp_avg, sp_mask, sp_md]
        gr.on([sp_model.input, n_segments.release, compactness.release, sp_low.release, sp_high.release],
              bind(cb.superpixel_view), sp_in, sp_out, api_name="superpixels")

        # Reconstructions
        def reconstruct(models: Any, model: Any, image: Any, index: Any, progress: gr.Progress = gr.Progress()) -> tuple:
            return cb.reconstructions(engine, models, model, image, index, progress=progress)

        rec_in = [rec_models, *source]
        rec_out = [rec_gallery, rec_table, rec_md]
        gr.on([rec_btn.click, rec_models.input], reconstruct, rec_in, rec_out, api_name="reconstructions")

        # Runs
        runs_in = [runs_sel, terms, smoothing, x_axis, log_y, split]
        runs_out = [runs_plot, runs_df]
        gr.on([runs_sel.input, terms.input, smoothing.release, x_axis.input, log_y.input, split.input],
              bind(cb.runs_view), runs_in, runs_out, api_name="runs")
        csv_btn.click(bind(cb.runs_csv), [runs_sel], [csv_file], api_name="runs_csv")

        # Results
        results_in = [res_appearance, res_metric, res_user]
        results_out = [res_appearance, results_md, res_table, res_plot, res_comparisons]
        gr.on([res_appearance.input, res_metric.input], bind(cb.results_view), results_in, results_out,
              api_name="results")

        def results_evaluate(model: Any, appearance: Any, metric: Any, rows: Any,
                             progress: gr.Progress = gr.Progress()) -> tuple:
            return cb.results_evaluate(engine, model, appearance, metric, rows, progress=progress)

        res_btn.click(results_evaluate, [res_model, *results_in], [res_user, *results_out], api_name="results_evaluate")

        # Fine-tune: one job at a time. Without logins concurrency_limit=1 queues the others; with
        # logins they wait in ``jobs`` (so that each user's jobs are counted), whose first job trains.
        # The engine's lock refuses with a message anything that slips past, e.g. a second app on the
        # same engine. gradio hands each call its gr.Request: ``request.username`` is the login.
        def fine_tune(name: Any, base: Any, model: Any, dataset: Any, steps: Any, batch: Any, cls_lr: Any,
                      rec_lr: Any, l1: Any, vgg: Any, align: Any, drs_delta: Any, learnable: Any, arch: Any = None,
                      request: gr.Request = None, progress: gr.Progress = gr.Progress()) -> Any:  # type: ignore[assignment]
            owner = getattr(request, "username", None) if access.logins else None
            yield from cb.fine_tune(engine, name, base, model, dataset, steps, batch, cls_lr, rec_lr, l1, vgg, align,
                                    drs_delta, learnable, arch, progress=progress, jobs=jobs, owner=owner)

        def stop_training(name: Any, request: gr.Request = None) -> str:  # type: ignore[assignment]
            return cb.stop_training(engine, name, jobs=jobs, access=access, user=getattr(request, "username", None))

        ft_in = [ft_name, ft_base, ft_model, ft_dataset, ft_steps, ft_batch, ft_cls_lr, ft_rec_lr, ft_l1, ft_vgg,
                 ft_align, ft_delta, ft_learnable, ft_arch]
        ft_start.click(fine_tune, ft_in, [ft_status, ft_plot], api_name="fine_tune",
                       concurrency_limit=None if access.logins else 1,
                       concurrency_id="training", show_progress_on=[ft_status]).then(
            refresh, pickers, pickers + [models_md], **PRIVATE).then(
            bind(cb.select_new_run), [runs_sel, ft_name], [runs_sel], **PRIVATE).then(
            lambda: cb.suggest_name(engine), None, [ft_name], **PRIVATE)
        ft_base.input(bind(cb.base_defaults), [ft_base], [ft_model, ft_delta, ft_arch], **PRIVATE)
        ft_stop.click(stop_training, [ft_name], [ft_status], api_name="stop_training")

        # Stage 2: the view (no network needed: the pseudo mask and the ground truth), then the
        # training panel, whose jobs share the fine-tunes' queue (concurrency_id "training", ``jobs``).
        s2_in = [s2_seg, s2_cam, s2_index, s2_low, s2_high]
        s2_out = [s2_pred, s2_pseudo, s2_gt, s2_md]
        s2_view = bind(cb.stage2_view)
        gr.on([s2_btn.click, s2_cam.input, s2_index.submit, s2_low.release, s2_high.release],
              s2_view, s2_in, s2_out, api_name="stage2")
        s2_seg.input(bind(cb.network_defaults), [s2_seg], [s2_cam, s2_low, s2_high], **PRIVATE).then(
            s2_view, s2_in, s2_out, **PRIVATE)
        s2_menus = [s2_seg, s2_cam, s2_low, s2_high]

        def stage2_train(name: Any, cam: Any, cut: Any, low: Any, high: Any, images: Any, steps: Any, arch: Any,
                         request: gr.Request = None, progress: gr.Progress = gr.Progress()) -> Any:  # type: ignore[assignment]
            owner = getattr(request, "username", None) if access.logins else None
            yield from cb.stage2_train(engine, name, cam, cut, low, high, images, steps, arch, progress=progress,
                                       jobs=jobs, owner=owner)

        s2t_start.click(stage2_train, [s2t_name, s2t_cam, s2t_cut, s2_low, s2_high, s2t_images, s2t_steps, s2t_arch],
                        [s2t_status, s2t_plot], api_name="stage2_train",
                        concurrency_limit=None if access.logins else 1, concurrency_id="training",
                        show_progress_on=[s2t_status]).then(
            bind(cb.stage2_choices), [*s2_menus, s2t_name], s2_menus, **PRIVATE).then(
            s2_view, s2_in, s2_out, **PRIVATE).then(
            refresh, pickers, pickers + [models_md], **PRIVATE).then(
            lambda: cb.suggest_name(engine, "stage2"), None, [s2t_name], **PRIVATE)
        s2t_stop.click(stop_training, [s2t_name], [s2t_status], api_name="stage2_stop")

        # Tabs: refresh the menus (a new checkpoint appears without a restart), then fill the view.
        def drs_text(model: Any) -> str:
            return cb.drs_model_info(engine, model)[0]

        for tab, fn, inputs, outputs in (
            (tab_compare, None, None, None),
            (tab_browse, browse, browse_in, browse_out),
            (tab_drs, drs_text, [drs_model], [drs_model_md]),
            (tab_sp, bind(cb.superpixel_view), sp_in, sp_out),
            (tab_rec, reconstruct, rec_in, rec_out),
            (tab_s2, None, None, None),
            (tab_runs, bind(cb.runs_view), runs_in, runs_out),
            (tab_results, bind(cb.results_view), results_in, results_out),  # reads the report only now
            (tab_ft, None, None, None),
        ):
            event = tab.select(refresh, pickers, pickers + [models_md], **PRIVATE)
            if fn is not None:
                event = event.then(fn, inputs, outputs, **PRIVATE)
            if tab is tab_drs:
                event.then(drs_view, drs_in, drs_out, **PRIVATE).then(strip, [drs_model, *source], [drs_strip], **PRIVATE)
            if tab is tab_results:
                event.then(bind(cb.checkpoint_choices), [res_model], [res_model], **PRIVATE)
            if tab is tab_s2:  # a network trained meanwhile appears, and the view fills
                event.then(bind(cb.checkpoint_choices), [s2_cam], [s2_cam], **PRIVATE).then(
                    bind(cb.checkpoint_choices), [s2t_cam], [s2t_cam], **PRIVATE).then(
                    bind(cb.stage2_choices), s2_menus, s2_menus, **PRIVATE).then(s2_view, s2_in, s2_out, **PRIVATE)
    return app
