"""Stage 2 tab: a segmentation network trained on pseudo masks, beside a CAM model's pseudo mask and
the ground truth; and the panel that trains one from the browser (pseudo masks, then the network),
through the same queue and worker as the fine-tunes (demo.callbacks.finetune)."""
from __future__ import annotations

from typing import Any, Callable, Iterator

import gradio as gr
import numpy as np

from crm_core.api import THRESHOLDS
from demo import plots, render
from demo.callbacks.common import _model_name, _number, _threshold, user_errors
from demo.callbacks.finetune import booked, choice, in_worker, new_name, refuse_if_busy
from demo.protocol import STAGE2_MAX_STEPS, DashboardEngine, Stage2Request
from demo.serving import Job, JobBook

NO_STAGE2 = ("no stage-2 network in the checkpoint folder yet: train one in the **Train stage 2** panel below "
             "(or `python -m crm_core.segment --masks DIR|gt --name NAME`); Show meanwhile shows the CAM model's "
             "pseudo mask beside the ground truth")
#: The panel's mask cuts: label -> demo.protocol.Stage2Request.cut.
CUTS = {"the CAM's threshold chosen on val": "val", "the sliders' band (background below / foreground from)": "band"}
#: The networks the Stage 2 tab opens on, first found first (the first launch trains both).
PREFERRED_STAGE2 = ("stage2_resnet_drs_crm", "stage2_resnet")
MAX_IMAGES = 100_000


def _label(engine: DashboardEngine, name: str) -> str:
    """A network in the menu: its name and its test mIoU (as crm_core.segment scored it)."""
    info = engine.stage2.info(name)
    if info.get("miou") is None:
        return f"{name} (not scored)"
    return f"{name} · test mIoU {info['miou']:.3f}"


def stage2_menu(engine: DashboardEngine, names: list[str]) -> list[tuple[str, str]]:
    """The network menu's (label, name) choices."""
    return [(_label(engine, n), n) for n in names]


def default_network(names: list[str]) -> str | None:
    return next((n for n in PREFERRED_STAGE2 if n in names), names[0] if names else None)


@user_errors
def stage2_choices(engine: DashboardEngine, value: Any, cam: Any = None, low: Any = None, high: Any = None,
                   new: Any = None) -> tuple:
    """The network menu's choices now (a new network appears, labelled with its test mIoU), its value
    kept when it still exists (``new``: a network just trained is chosen). When the value changes,
    the CAM model and the band follow the chosen network's own (:func:`network_defaults`)."""
    names = engine.stage2.names()
    chosen = new if new in names else value if value in names else default_network(names)
    menu = gr.update(choices=stage2_menu(engine, names), value=chosen)
    if chosen == value or chosen is None:
        return menu, gr.update(), gr.update(), gr.update()
    return (menu, *network_defaults(engine, chosen))


@user_errors
def network_defaults(engine: DashboardEngine, seg_model: Any) -> tuple:
    """A network chosen: the CAM model, and the band, its pseudo masks were made with (unchanged when unknown)."""
    if not seg_model or str(seg_model) not in engine.stage2.names():
        return gr.update(), gr.update(), gr.update()
    info = engine.stage2.info(str(seg_model))
    cam = info.get("cam_model")
    return (gr.update(value=cam) if cam in engine.checkpoints.names(verify=False) else gr.update(),
            gr.update(value=round(info["low"], 2)) if info.get("low") is not None else gr.update(),
            gr.update(value=round(info["high"], 2)) if info.get("high") is not None else gr.update())


def _line(what: str, scores: dict[str, float]) -> str:
    return (f"{what}: mIoU **{scores['miou']:.3f}** (object IoU {scores['fg_iou']:.3f}, background IoU "
            f"{scores['bg_iou']:.3f}, background false positives {scores['bg_fpr']:.1%})")


@user_errors
def stage2_view(engine: DashboardEngine, seg_model: Any, cam_model: Any, index: Any, low: Any = THRESHOLDS.low,
                high: Any = THRESHOLDS.high) -> tuple:
    """The network's mask | the CAM model's pseudo mask | the ground truth, with their IoUs. Without
    a network: the pseudo mask and the ground truth of a test image of the CAM model's dataset."""
    if seg_model and str(seg_model) not in engine.stage2.names():
        raise gr.Error(f"{str(seg_model)[:64]!r} is not a stage-2 network in the checkpoint folder")
    if not seg_model and not cam_model:
        raise gr.Error("choose a CAM model: its pseudo mask is shown beside the ground truth (no stage-2 network yet)")
    cam = _model_name(engine, cam_model, "CAM") if cam_model else None
    index = _number(index, "index", 0, 1_000_000, integer=True)
    low, high = _threshold(low), _threshold(high)
    if low > high:
        raise gr.Error(f"low threshold {low} is above high threshold {high}")
    view = engine.stage2.view(str(seg_model) if seg_model else None, cam, index, low, high)
    image, mask = view.sample.image, view.sample.mask
    gt = np.where(mask == 1, 1, np.where(mask == 255, 3, 2)).astype(np.uint8)
    where = f"test image {index}" + (f" ({view.sample.class_name})" if view.sample.class_name else "")
    if view.prediction_scores is not None:
        lines = [view.description, where, _line("stage-2 network", view.prediction_scores)]
    else:
        lines = [NO_STAGE2 if not engine.stage2.names() else
                 "no stage-2 network chosen: choose one in the menu to see its mask", f"{where} of {cam}'s dataset"]
    if view.pseudo_scores is not None:
        lines.append(_line(f"pseudo mask of {cam} (fg ≥ {high:.2f}, uncertain counted as background)",
                           view.pseudo_scores))
    pseudo = None if view.pseudo is None else render.trimap_view(image, view.pseudo, mask)
    prediction = None if view.prediction is None else render.trimap_view(image, view.prediction, mask)
    return prediction, pseudo, render.trimap_view(image, gt), "\n\n".join(lines)


# -- the training panel -------------------------------------------------------------------
def stage2_request(engine: DashboardEngine, name: Any, cam_model: Any, cut: Any, low: Any, high: Any, images: Any,
                   steps: Any, arch: Any = None, owner: str | None = None) -> Stage2Request:
    """The panel's values, validated, as the request the engine trains from."""
    name = new_name(name)
    if cam_model and str(cam_model) in engine.stage2.names():
        raise gr.Error(f"{str(cam_model)[:64]!r} is a stage-2 segmentation network, not a CAM model: choose a "
                       "classifier checkpoint, whose CAMs make the pseudo masks")
    cam = _model_name(engine, cam_model, "CAM model")
    cut_value = CUTS.get(str(cut), str(cut))
    if cut_value not in CUTS.values():
        raise gr.Error(f"mask cut {str(cut)[:60]!r}: choose {' or '.join(repr(c) for c in CUTS)}")
    low, high = _threshold(low), _threshold(high)
    if cut_value == "band" and low > high:
        raise gr.Error(f"the band's background threshold {low} is above its foreground threshold {high}")
    return Stage2Request(
        name=name, cam_model=cam, cut=cut_value, low=low, high=high,
        images=_number(images, "training images", 1, MAX_IMAGES, integer=True),
        steps=_number(steps, "steps", 1, STAGE2_MAX_STEPS, integer=True),
        arch=None if arch in (None, "") else choice(arch, engine.stage2_training.archs(), "architecture"), owner=owner)


@user_errors
def stage2_train(engine: DashboardEngine, name: Any, cam_model: Any, cut: Any, low: Any, high: Any, images: Any,
                 steps: Any, arch: Any = None, progress: Callable | None = None, poll_s: float = 0.5,
                 plot_every_s: float = 1.0, jobs: JobBook | None = None,
                 owner: str | None = None) -> Iterator[tuple[str, Any]]:
    """Make the pseudo masks and train the network in a worker thread; yield (status, live loss
    chart). Queued, limited per user and stopped as fine-tunes are (they share the queue)."""
    request = stage2_request(engine, name, cam_model, cut, low, high, images, steps, arch, owner)
    if jobs is None:
        refuse_if_busy(engine)
    engine.stage2_training.config(request)  # validate (name free, images in range) before booking or starting a thread
    yield from booked(engine, jobs, request.name, owner, poll_s,
                      lambda job: _train(engine, request, progress, poll_s, plot_every_s, job))


def _train(engine: DashboardEngine, request: Stage2Request, progress: Callable | None, poll_s: float,
           plot_every_s: float, job: Job | None) -> Iterator[tuple[str, Any]]:
    def work(on_progress: Callable, should_stop: Callable) -> Any:
        return engine.stage2_training.train(request, on_progress=on_progress, should_stop=should_stop)

    path, rows = yield from in_worker(request.name, request.steps, work, progress, poll_s, plot_every_s, job)
    if path is None:
        yield (f"Stopped **{request.name}** while its pseudo masks were made: nothing was trained or kept.",
               plots.live_figure(request.name, rows))
        return
    info = engine.stage2.info(request.name)
    done = info.get("step") or (rows[-1]["step"] if rows else 0)
    stopped = " (stopped early)" if done < request.steps else ""
    score = (f"test mIoU **{info['miou']:.3f}** on {info.get('test_images')} test images (scored as "
             "`python -m crm_core.segment` scores it)" if info.get("miou") is not None else "not scored")
    yield (f"Done: **{request.name}** trained {done} steps{stopped} on {info.get('train_images')} pseudo masks of "
           f"{request.cam_model}: {score}. It is now in the stage-2 network menu above.",
           plots.live_figure(request.name, rows))
