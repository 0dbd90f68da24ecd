"""Dashboard event functions, plots and layout, driven directly with a fake engine (no server, no model)."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from PIL import Image

from crm_core.cams import CAM_METHODS
from demo import callbacks as cb
from demo import plots, render
from demo.layout import build_app
from demo_fixtures import SIZE, FakeEngine, assert_no_server_detail, run_metrics

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def engine() -> FakeEngine:
    return FakeEngine()


# -- Compare -------------------------------------------------------------------------------
def test_compare_dataset_sample_gives_overlays_top5_masks_and_iou(engine: FakeEngine) -> None:
    ov_a, ov_b, lab_a, lab_b, mask_a, mask_b, info = cb.compare(engine, "resnet", "resnet_drs", None, 3,
                                                                cb.PREDICTED, 0.3, "gradcampp")
    for image in (ov_a, ov_b):  # picture + colour bar
        assert image.shape == (render.DISPLAY, render.DISPLAY + render.BAR_WIDTH, 3) and image.dtype == np.uint8
    for image in (mask_a, mask_b):
        assert image.shape == (render.DISPLAY, render.DISPLAY, 3) and image.dtype == np.uint8
    assert set(lab_a) == set(engine.checkpoints.class_names("resnet")) and max(lab_a, key=lab_a.get) == "checker"
    assert "test sample #3" in info and "object IoU" in info and "resnet_drs" in info
    assert "val-chosen threshold" in info and "background false positives" in info
    assert (ov_a == render.GT_COLOUR).all(axis=-1).any()  # ground-truth outline drawn


def test_compare_class_selector_and_threshold_change_the_result(engine: FakeEngine) -> None:
    low = cb.compare(engine, "resnet", "resnet", None, 0, "stripes_v", 0.1, "gradcam")
    high = cb.compare(engine, "resnet", "resnet", None, 0, "stripes_v", 0.9, "gradcam")
    assert "CAM of class **stripes_v**" in low[-1]
    assert not np.array_equal(low[4], high[4])  # pseudo mask follows the threshold


def test_compare_upload_from_path_and_array(engine: FakeEngine, tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    Image.fromarray(np.full((50, 70, 4), 120, np.uint8), "RGBA").save(path)  # alpha + odd size
    for image in (str(path), {"path": str(path)}, np.full((40, 40, 3), 9, np.uint8)):
        out = cb.compare(engine, "resnet", "resnet_drs", image, -1, cb.PREDICTED, 0.3, "gradcampp")
        assert "your upload" in out[-1] and "no ground truth" in out[-1]


@pytest.mark.parametrize("kwargs, message", [
    (dict(model_a="../../etc/passwd"), "invalid checkpoint name"),
    (dict(model_a="/etc/passwd"), "invalid checkpoint name"),
    (dict(model_b="missing"), "no checkpoint named"),
    (dict(model_a=None), "choose a model A"),
    (dict(threshold=1.5), "threshold"),
    (dict(threshold=float("nan")), "threshold"),
    (dict(index=2.5), "whole number"),
    (dict(index=10**6), "sample index"),
    (dict(index=-1, image=None), "no image"),
    (dict(method="evil"), "unknown CAM method"),
])
def test_compare_refuses_bad_input_with_a_clear_message(engine: FakeEngine, kwargs: dict, message: str) -> None:
    values = dict(model_a="resnet", model_b="resnet_drs", image=None, index=1, class_choice=cb.PREDICTED,
                  threshold=0.3, method="gradcampp")
    values.update(kwargs)
    with pytest.raises(gr.Error, match=message):
        cb.compare(engine, *values.values())


def test_upload_that_is_not_an_image_is_a_gr_error(engine: FakeEngine, tmp_path: Path) -> None:
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(gr.Error, match="not an image"):
        cb.compare(engine, "resnet", "resnet_drs", str(bad), -1, cb.PREDICTED, 0.3, "gradcampp")


def test_unexpected_exception_becomes_short_message_and_is_logged(engine: FakeEngine, monkeypatch, caplog) -> None:
    def boom(*args, **kwargs):
        raise ZeroDivisionError("deep internal detail")

    monkeypatch.setattr(engine.inference, "cam", boom)
    with pytest.raises(gr.Error) as info:
        cb.compare(engine, "resnet", "resnet_drs", None, 1, cb.PREDICTED, 0.3, "gradcampp")
    assert "ZeroDivisionError" in str(info.value) and "deep internal detail" not in str(info.value)
    assert "Traceback" not in str(info.value) and any(r.exc_info for r in caplog.records)


@pytest.mark.parametrize("bug", [TypeError, IndexError])
def test_our_own_bugs_are_logged_with_traceback_not_shown(engine: FakeEngine, monkeypatch, caplog, bug) -> None:
    def boom(*args, **kwargs):
        raise bug(f"list index out of range in {tempfile.gettempdir()}/crm/x.py")

    monkeypatch.setattr(engine.inference, "cam", boom)
    with pytest.raises(gr.Error) as info:
        cb.compare(engine, "resnet", "resnet_drs", None, 1, cb.PREDICTED, 0.3, "gradcampp")
    message = info.value.message
    assert "failed unexpectedly" in message and "server log" in message and "out of range" not in message
    logged = [r for r in caplog.records if r.exc_info and r.exc_info[0] is bug]
    assert logged and logged[0].levelname == "ERROR"


def test_image_errors_name_the_users_file_not_the_server_path(engine: FakeEngine, tmp_path: Path, caplog) -> None:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 90, 200)).save(buffer, format="PNG")
    upload = tmp_path / "gradio" / "3f2a9c" / "holiday photo.png"  # gradio's upload folder layout
    upload.parent.mkdir(parents=True)
    upload.write_bytes(buffer.getvalue()[:100])  # truncated
    for image in (str(upload), {"path": str(upload), "orig_name": "holiday photo.png"}):
        with caplog.at_level("INFO", logger="demo.callbacks"), pytest.raises(gr.Error) as info:
            cb.compare(engine, "resnet", "resnet_drs", image, -1, cb.PREDICTED, 0.3, "gradcampp")
        assert info.value.message.startswith("holiday photo.png: ") and str(tmp_path) not in info.value.message
        assert_no_server_detail(info.value.message)
        assert any(str(upload) in r.getMessage() for r in caplog.records)  # the full text, server side
    # Our own gr.Error echoing a value goes through the same filter.
    with pytest.raises(gr.Error) as info:
        cb.compare(engine, "resnet", "resnet_drs", None, 1, os.path.expanduser("~") + "/cls", 0.3, "gradcampp")
    assert "not a class" in info.value.message
    assert_no_server_detail(info.value.message)


def test_startup_fills_compare_and_gallery(engine: FakeEngine) -> None:
    out = cb.startup(engine, "resnet", "resnet_drs", cb.PREDICTED, 0.3, "gradcampp")
    gallery, classes, index, picture = out[:4]
    assert len(gallery) == 24 and index == 0 and picture.shape[-1] == 3
    assert classes["choices"][0] == cb.PREDICTED
    assert out[4].shape == (render.DISPLAY, render.DISPLAY + render.BAR_WIDTH, 3) and "fake" in out[-1]


def test_changing_model_a_redraws_a_dataset_picture_but_keeps_an_upload(engine: FakeEngine) -> None:
    assert cb.current_picture(engine, "resnet_drs", 4).shape == (render.DISPLAY, render.DISPLAY, 3)
    assert cb.current_picture(engine, "resnet_drs", -1) == gr.update()


def test_startup_without_checkpoints_says_what_to_do() -> None:
    out = cb.startup(FakeEngine(names=()), None, None, cb.PREDICTED, 0.3, "gradcampp")
    assert "Fine-tune" in out[-1] and out[2] == -1


# -- Browse --------------------------------------------------------------------------------
@pytest.mark.parametrize("order", cb.BROWSE_ORDERS)
def test_browse_sorts_by_iou(engine: FakeEngine, order: str) -> None:
    items, table, positions = cb.browse(engine, "resnet", 12, order, 0.3)
    assert len(items) == len(table) == len(positions) == 12
    ious = table["object IoU"].tolist()
    if order == "best IoU first":
        assert ious == sorted(ious, reverse=True)
    elif order == "worst IoU first":
        assert ious == sorted(ious)
    else:
        assert positions == list(range(12))
    assert all(f"· #{i} " in caption for i, (_, caption) in zip(positions, items))


def test_browse_click_opens_the_sample_in_compare(engine: FakeEngine) -> None:
    _, _, positions = cb.browse(engine, "resnet_drs", 8, "best IoU first", 0.3)
    model, index, picture, tabs = cb.open_in_compare(engine, "resnet_drs", positions, 2)
    assert model == "resnet_drs" and index == positions[2] and tabs.selected == "compare"
    with pytest.raises(gr.Error):
        cb.open_in_compare(engine, "resnet_drs", positions, 99)


# -- DRS -----------------------------------------------------------------------------------
def test_drs_view_strip_and_curve(engine: FakeEngine) -> None:
    image_a, label_a, info = cb.drs_view(engine, "resnet_drs", "resnet", None, 5, 0.3)
    image_b, _, _ = cb.drs_view(engine, "resnet_drs", "resnet", None, 5, 0.9)
    assert "delta 0.30" in info and not np.array_equal(image_a, image_b)
    strip = cb.drs_strip(engine, "resnet_drs", "resnet", None, 5)
    assert [c.split(" ·")[0] for _, c in strip] == [f"δ {d:.2f}" for d in cb.STRIP_DELTAS]
    seen = []
    figure, table = cb.drs_curve(engine, "resnet_drs", 8, progress=lambda *a, **k: seen.append(a))
    assert isinstance(figure, go.Figure) and list(table["DRS delta"]) == list(cb.CURVE_DELTAS) and seen
    # the table speaks in words, the protocol's number (mIoU at the val-chosen threshold) first and the
    # best-on-test columns last, labelled optimistic; no raw key is a header
    columns = list(table.columns)
    assert columns[:3] == ["DRS delta", "CAM mIoU (threshold chosen on val)", "threshold chosen on val"]
    assert all("optimistic" in c for c in columns[-2:]) and sum("optimistic" in c for c in columns) == 2
    assert not set(columns) & (set(cb.CURVE_COLUMNS) - {"accuracy"}) and "background false positives (val threshold)" in columns
    assert "body covered (val threshold)" in columns
    assert table["CAM mIoU (threshold chosen on val)"].between(0, 1).all()
    assert "CAM mIoU (val threshold)" in {trace.name for trace in figure.data}
    with pytest.raises(gr.Error, match="delta"):
        cb.drs_view(engine, "resnet_drs", "resnet", None, 5, 0.0)
    assert "no DRS layers" in cb.drs_model_info(engine, "resnet")[0]


# -- Superpixels / Reconstructions ---------------------------------------------------------
def test_superpixel_view(engine: FakeEngine) -> None:
    bounds, raw, pooled, mask, info = cb.superpixel_view(engine, "resnet", "resnet", None, 1, 16, 10)
    assert bounds.shape == mask.shape == (render.DISPLAY, render.DISPLAY, 3)
    assert raw.shape == pooled.shape == (render.DISPLAY, render.DISPLAY + render.BAR_WIDTH, 3)
    assert "16 superpixels" in info and "superpixel-refined" in info
    with pytest.raises(gr.Error, match="low threshold"):
        cb.superpixel_view(engine, "resnet", "resnet", None, 1, 16, 10, 0.8, 0.2)
    with pytest.raises(gr.Error, match="compactness"):
        cb.superpixel_view(engine, "resnet", "resnet", None, 1, 16, 0)


def test_stage2_view_shows_the_network_the_pseudo_mask_and_the_ground_truth_with_ious(engine: FakeEngine) -> None:
    pred, pseudo, gt, info = cb.stage2_view(engine, "seg", "resnet", 3)
    assert pred.shape == pseudo.shape == gt.shape == (render.DISPLAY, render.DISPLAY, 3)
    assert not np.array_equal(pred, gt)  # the fake network's mask is shifted
    assert "fake stage-2 network" in info and info.count("mIoU **") == 2 and "pseudo mask of resnet" in info
    pred, pseudo, gt, info = cb.stage2_view(engine, "seg", None, 3)  # no CAM model: no pseudo mask
    assert pseudo is None and info.count("mIoU **") == 1
    # a network no longer there: the menu falls back to one that is, and the CAM model and band follow it
    menu, cam, low, high = cb.stage2_choices(engine, "gone")
    assert menu["value"] == "seg" and menu["choices"] == [("seg · test mIoU 0.600", "seg")]
    assert (cam["value"], low["value"], high["value"]) == ("resnet_drs", 0.25, 0.55)
    menu, cam, *_ = cb.stage2_choices(engine, "seg")  # kept: nothing else moves
    assert menu["value"] == "seg" and cam == gr.update()
    for args, message in ((("seg", "resnet", 3, 0.8, 0.2), "low threshold"), (("seg", "resnet", -1), "index"),
                          (("resnet", "resnet", 3), "not a stage-2 network"), (("seg", "../x", 3), "invalid"),
                          ((None, None, 3), "choose a CAM model")):
        with pytest.raises(gr.Error, match=message):
            cb.stage2_view(engine, *args)


def test_stage2_show_without_a_network_shows_the_pseudo_mask_and_the_ground_truth() -> None:
    engine = FakeEngine(seg_names=())
    pred, pseudo, gt, info = cb.stage2_view(engine, None, "resnet", 3)
    assert pred is None and pseudo.shape == gt.shape == (render.DISPLAY, render.DISPLAY, 3)
    assert "no stage-2 network" in info and "Train stage 2" in info and "pseudo mask of resnet" in info
    assert info.count("mIoU **") == 1 and "test image 3" in info


def test_stage2_training_panel_trains_shows_its_chart_and_refuses_bad_input() -> None:
    engine = FakeEngine(seg_names=("seg",), step_s=0.05)
    seen: list = []
    updates = list(cb.stage2_train(engine, "s2-new", "resnet", next(iter(cb.CUTS)), 0.2, 0.45, 32, 4,
                                   "fcn_resnet18", poll_s=0.01, plot_every_s=0.0, owner="ann",
                                   progress=lambda *a, **k: seen.append((a, k))))
    assert ((32, 32),) in [a for a, _ in seen] and any(k.get("desc") == "pseudo masks 32/32" for _, k in seen)
    text, figure = updates[-1]
    assert "Done: **s2-new**" in text and "test mIoU **0.600**" in text and len(figure.data[0].x) == 4
    assert "s2-new" in engine.stage2.names() and engine.runs.owners["s2-new"] == "ann"
    menu, *_ = cb.stage2_choices(engine, "seg", "resnet", 0.2, 0.45, "s2-new")  # the new one is chosen
    assert menu["value"] == "s2-new"
    band = list(cb.CUTS)[1]
    for args, message in ((("x", "seg", band, 0.2, 0.45, 8, 4), "stage-2 segmentation network, not a CAM model"),
                          (("x", "resnet", band, 0.2, 0.45, 0, 4), "training images must be"),
                          (("seg", "resnet", band, 0.2, 0.45, 8, 4), "already exists"),
                          (("x", "resnet", band, 0.2, 0.45, 8, 0), "steps must be"),
                          (("x", "resnet", band, 0.2, 0.45, 8, 5000), "steps must be"),
                          (("x", "resnet", band, 0.6, 0.45, 8, 4), "band's background threshold"),
                          (("x", "resnet", "somewhere", 0.2, 0.45, 8, 4), "mask cut"),
                          (("x", "resnet", band, 0.2, 0.45, 999, 4), "between 1 and 640"),
                          (("../x", "resnet", band, 0.2, 0.45, 8, 4), "checkpoint name")):
        with pytest.raises(gr.Error, match=message):
            list(cb.stage2_train(engine, *args))
    with pytest.raises(gr.Error, match="architecture"):
        list(cb.stage2_train(engine, "x", "resnet", band, 0.2, 0.45, 8, 4, "resnet999"))
    # stopped: the generator closed early stops the job, which keeps what it trained
    slow = FakeEngine(step_s=0.05)
    run = cb.stage2_train(slow, "s2-stop", "resnet", band, 0.2, 0.45, 8, 200, poll_s=0.01, plot_every_s=0.0)
    for text, _ in run:
        if "step 3/" in text:
            break
    run.close()
    assert 3 <= slow.stage2.seg_steps["s2-stop"] < 200 and slow.training.status() is None


def test_reconstructions_table_and_model_without_crm(engine: FakeEngine) -> None:
    items, table, info = cb.reconstructions(engine, ["resnet", "plain"], "resnet", None, 0)
    assert len(items) == 4  # input + resnet's reconstruction, error map and decoder input
    strip, caption = items[3]
    assert "decoder input" in caption and "one per class" in caption
    # one captioned tile per class plus the colour bar, each tile coloured by its own map
    assert strip.shape == (render.MAP_TILE + render.CAPTION_HEIGHT, 3 * render.MAP_TILE + render.BAR_WIDTH, 3)
    tiles = [strip[:render.MAP_TILE, i * render.MAP_TILE:(i + 1) * render.MAP_TILE] for i in range(3)]
    assert not np.array_equal(tiles[0], tiles[2])
    assert table.loc[0, "model"] == "resnet" and table.loc[0, "L1"] > 0
    assert "no ReconstructNet" in table.loc[1, "note"] and "VGG19" in info
    assert table.loc[0, "CAM dependence"] > 0 and "uses the CAM" in table.loc[0, "note"] and "shuffled" in info
    assert "uses the CAM" in items[1][1]  # the reading sits beside the picture too
    with pytest.raises(gr.Error, match="at least one"):
        cb.reconstructions(engine, [], "resnet", None, 0)


# -- Runs ----------------------------------------------------------------------------------
def test_runs_view_and_csv(engine: FakeEngine) -> None:
    figure, table = cb.runs_view(engine, ["resnet"], ["loss_total", "loss_l1"], 0.6, "wall time", True)
    assert isinstance(figure, go.Figure) and figure.layout.yaxis.type == "log"
    assert table.loc[0, "run"] == "resnet" and table.loc[0, "CAM mIoU (best thr)"] == 0.4
    path = Path(cb.runs_csv(engine, ["resnet"]))
    frame = pd.read_csv(path)
    assert list(frame.columns[:3]) == ["run", "step", "epoch"] and len(frame) == 11
    with pytest.raises(gr.Error):
        cb.runs_view(engine, ["../secret"], ["loss_total"], 0.6, "step", False)
    with pytest.raises(gr.Error, match="smoothing"):
        cb.runs_view(engine, ["resnet"], ["loss_total"], 1.0, "step", False)


def test_refresh_keeps_valid_values_and_lists_new_checkpoints(engine: FakeEngine) -> None:
    engine.checkpoints.checkpoint_names.append("finetune-1")
    out = cb.refresh_checkpoints(engine, "resnet_drs", "gone", None, "resnet", "resnet", ["gone"], "resnet", None)
    assert all("finetune-1" in u["choices"] for u in out[:5])
    assert out[0]["value"] == "resnet_drs" and out[1]["value"] == "resnet_drs"  # invalid -> default
    assert out[6]["choices"][0] == cb.NO_BASE and out[7]["value"] == ["resnet"]
    assert "finetune-1" in out[-1]


# -- Fine-tune -----------------------------------------------------------------------------
FT = dict(name="ft-a", base=cb.NO_BASE, model="resnet_drs", dataset="synthetic", steps=5, batch_size=4, cls_lr=1e-3,
          rec_lr=2e-3, l1_weight=1.0, vgg_weight=1.0, align_weight=1.0, delta=0.55, learnable=False, arch="resnet18")


def test_fine_tune_streams_progress_and_saves(engine: FakeEngine) -> None:
    seen = []
    updates = list(cb.fine_tune(engine, *FT.values(), progress=lambda *a, **k: seen.append(a), poll_s=0.01,
                                plot_every_s=0.0))
    assert "Starting" in updates[0][0] and "saved" in updates[-1][0] and "stopped early" not in updates[-1][0]
    assert isinstance(updates[-1][1], go.Figure) and len(updates[-1][1].data[0].x) == 5
    assert seen[-1][0] == (5, 5) and engine.training.trained[0].delta == "0.55"
    assert "ft-a" in engine.checkpoints.checkpoint_names


def _first_step(engine: FakeEngine) -> threading.Event:
    """An event set when the engine's fine-tune reports its first step: the job is then running."""
    event = threading.Event()
    train = engine.training.train

    def observed(request, on_progress=None, should_stop=None):
        def progress(row: dict) -> None:
            event.set()
            if on_progress is not None:
                on_progress(row)
        return train(request, on_progress=progress, should_stop=should_stop)

    engine.training.train = observed  # this test's engine only
    return event


def test_fine_tune_stop_and_closing_the_generator_stop_cleanly(engine: FakeEngine) -> None:
    engine.training.step_s = 0.02
    running = _first_step(engine)
    gen = cb.fine_tune(engine, *dict(FT, steps=500).values(), poll_s=0.01, plot_every_s=0.0)
    next(gen)
    assert running.wait(30)
    assert "Stopping" in cb.stop_training(engine, "ft-a")
    last = list(gen)[-1][0]
    assert "stopped early" in last and engine.training.trained[-1].name == "ft-a"
    gen = cb.fine_tune(engine, *dict(FT, name="ft-b", steps=500).values(), poll_s=0.01, plot_every_s=0.0)
    next(gen)
    gen.close()  # browser gone: the worker is told to stop and joined
    assert engine.training.status() is None and engine.training.trained[-1].name == "ft-b"
    assert "No running training job" in cb.stop_training(engine, "ft-b")


def test_second_training_job_is_told_to_wait(engine: FakeEngine) -> None:
    engine.training.step_s = 0.02
    running = _first_step(engine)
    first = cb.fine_tune(engine, *dict(FT, steps=500).values(), poll_s=0.01)
    next(first)
    assert running.wait(30)  # the first job holds the engine (not just: its thread was started)
    with pytest.raises(gr.Error, match="one training job at a time"):
        next(cb.fine_tune(engine, *dict(FT, name="ft-other").values()))
    assert "Stopping" in cb.stop_training(engine, "ft-a")
    assert "stopped early" in list(first)[-1][0]


@pytest.mark.parametrize("override, message", [
    (dict(name="../evil"), "checkpoint name"), (dict(name=""), "checkpoint name"), (dict(steps=0), "steps"),
    (dict(cls_lr=0), "learning rate"), (dict(cls_lr=float("inf")), "learning rate"), (dict(delta=0), "delta"),
    (dict(l1_weight=-1), "L1 weight"), (dict(base="../../etc/passwd"), "invalid checkpoint name"),
    (dict(name="resnet"), "already exists"), (dict(arch="vgg_evil"), "backbone"),
])
def test_fine_tune_validates_inputs(engine: FakeEngine, override: dict, message: str) -> None:
    with pytest.raises(gr.Error, match=message):
        next(cb.fine_tune(engine, *dict(FT, **override).values()))


def test_base_defaults_follow_the_base_checkpoint(engine: FakeEngine) -> None:
    variant, delta, arch = cb.base_defaults(engine, "resnet_drs")
    assert variant["value"] == "resnet_drs" and delta["value"] == 0.55 and arch["value"] == "resnet18"
    assert cb.base_defaults(engine, cb.NO_BASE) == (gr.update(), gr.update(), gr.update())


# -- plots and pictures --------------------------------------------------------------------
def test_ema_is_debiased_like_tensorboard() -> None:
    values = [1.0, 2.0, float("nan"), 3.0]
    out = plots.ema(values, 0.6)
    assert out[0] == pytest.approx(1.0)  # debiased: the first point is not pulled towards 0
    last = 0.0
    expected = []
    for n, v in enumerate([1.0, 2.0, 3.0], start=1):
        last = last * 0.6 + 0.4 * v
        expected.append(last / (1 - 0.6 ** n))
    assert [out[0], out[1], out[3]] == pytest.approx(expected) and math.isnan(out[2])
    assert plots.ema(values, 0.0)[:2] == [1.0, 2.0]
    with pytest.raises(ValueError):
        plots.ema(values, 1.0)


def test_run_colours_are_stable_and_distinct() -> None:
    """A run keeps its colour across server restarts: not from hash(), which each process salts."""
    probe = "from demo.plots import run_colour; print(run_colour('resnet'), run_colour('ft-1'))"
    seen = {subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2")}
    assert seen == {f"{plots.run_colour('resnet')} {plots.run_colour('ft-1')}"}
    assert len({plots.run_colour(f"run{i}") for i in range(20)}) >= 18


def test_loss_figure_has_raw_and_smoothed_curves_per_run_and_term() -> None:
    rows = run_metrics("a")
    figure = plots.loss_figure({"a": rows, "b": rows}, ["loss_total", "loss_cls"], 0.5, "epoch", False)
    assert len(figure.data) == 8  # 2 runs x 2 terms x (raw + smoothed)
    raw = [t for t in figure.data if t.name == "a (raw)"]
    assert raw and raw[0].opacity < 0.5 and raw[0].line.color == plots.run_colour("a")
    assert len(plots.loss_figure({"a": rows}, ["accuracy"], 0.0, "step", False, split="val").data) == 1
    with pytest.raises(ValueError):
        plots.loss_figure({"a": rows}, ["loss_total"], 0.5, "minutes", False)


def test_render_shapes() -> None:
    rgb = np.zeros((SIZE, SIZE, 3), np.uint8)
    tri = np.array([[1, 2], [3, 2]], np.uint8).repeat(SIZE // 2, 0).repeat(SIZE // 2, 1)
    assert render.trimap_view(rgb + 100, tri).shape == (render.DISPLAY, render.DISPLAY, 3)
    assert render.error_view(np.ones((SIZE, SIZE)) * 0.6)[0, 0].tolist() == [128, 0, 0]
    assert render.upscale_labels(np.arange(4).reshape(2, 2), 4).tolist() == [[0, 0, 1, 1]] * 2 + [[2, 2, 3, 3]] * 2


# -- overlays ------------------------------------------------------------------------------
def test_overlay_keeps_the_image_where_the_cam_is_zero_and_shows_the_colormap_where_it_is_one() -> None:
    rgb = (np.random.default_rng(0).random((SIZE, SIZE, 3)) * 255).astype(np.uint8)
    cam = np.zeros((render.DISPLAY, render.DISPLAY))
    cam[:, render.DISPLAY // 2:] = 1.0
    out = render.overlay(rgb, cam)[:, :render.DISPLAY].astype(float)
    image = render.upscale(rgb).astype(float)
    zero, one = cam == 0, cam == 1
    assert np.array_equal(out[zero], image[zero])
    heat = render.jet_colormap(1.0) * 255  # dark red
    to_heat, to_image = np.abs(out[one] - heat).sum(-1), np.abs(out[one] - image[one]).sum(-1)
    assert (to_heat < to_image).mean() > 0.95
    assert np.allclose(out[one], (1 - render.CAM_ALPHA) * image[one] + render.CAM_ALPHA * heat, atol=1)


@pytest.mark.parametrize("size", [render.DISPLAY, render.THUMB])
def test_a_7x7_cam_is_shown_smooth_not_in_blocks(size: int) -> None:
    assert size >= 224
    cam = np.random.default_rng(1).random((7, 7))
    out = render.overlay(np.full((SIZE, SIZE, 3), 128, np.uint8), cam, size=size)[:, :size]
    colours = out.astype(np.int64) @ np.array([1, 256, 65536])  # (size, size) one int per colour
    assert min(len(np.unique(row)) for row in colours) > 64
    block = -(-size // 7)  # the side of a nearest-neighbour block
    for i in range(0, size - block + 1, block):
        for j in range(0, size - block + 1, block):
            assert len(np.unique(colours[i:i + block, j:j + block])) > 1


def test_every_heat_map_has_a_jet_colour_bar() -> None:
    rgb = np.full((SIZE, SIZE, 3), 128, np.uint8)
    strip = slice(render.BAR_MARGIN, render.DISPLAY - render.BAR_MARGIN)
    want = np.round(render.jet_colormap(np.linspace(1, 0, strip.stop - strip.start)) * 255)
    for picture in (render.overlay(rgb, np.zeros((4, 4))), render.error_view(np.zeros((SIZE, SIZE)))):
        assert picture.shape == (render.DISPLAY, render.DISPLAY + render.BAR_WIDTH, 3)
        bar = picture[:, render.DISPLAY:].astype(float)
        for x in range(*render.BAR_STRIP):  # top red, bottom blue, jet in between
            assert np.abs(bar[strip, x] - want).max() <= 1
        labels = bar[:, render.BAR_STRIP[1] + 1:]
        assert (labels[:render.DISPLAY // 4] < 100).all(-1).any() and (labels[-render.DISPLAY // 4:] < 100).all(-1).any()


# -- layout --------------------------------------------------------------------------------
def test_build_app_with_a_fake_engine_names_every_event_and_serves_png() -> None:
    app = build_app(FakeEngine())
    config = app.get_config_file()
    names = {d.get("api_name") for d in config["dependencies"] if d.get("api_visibility", "public") == "public"}
    assert names == {"compare", "startup", "sample_gallery", "load_sample", "browse", "drs_cam", "drs_model_info",
                     "drs_strip", "drs_curve", "superpixels", "reconstructions", "runs", "runs_csv", "fine_tune",
                     "stop_training", "refresh_checkpoints", "results", "results_evaluate", "stage2", "stage2_train",
                     "stage2_stop"}
    tabs = [(c["props"].get("label"), c["props"].get("id")) for c in config["components"] if c["type"] == "tabitem"]
    assert tabs == [("Compare", "compare"), ("Browse heatmaps", "browse"), ("DRS thresholds", "drs"),
                    ("Superpixels", "superpixels"), ("Reconstructions", "reconstructions"), ("Stage 2", "stage2"),
                    ("Runs", "runs"), ("Results", "results"), ("Fine-tune", "finetune")]
    images = [c for c in config["components"] if c["type"] in ("image", "gallery")]
    assert images and all(c["props"].get("format") == "png" for c in images)
    training = [d for d in config["dependencies"] if d.get("api_name") == "fine_tune"][0]
    assert training["show_progress_on"] and training["types"]["generator"]
    assert app.fns[training["id"]].concurrency_limit == 1


def _method_menu(app: gr.Blocks) -> list[tuple[str, str]]:
    """(label, value) pairs of the built app's "CAM method" dropdown."""
    menus = [c for c in app.get_config_file()["components"]
             if c["type"] == "dropdown" and c["props"].get("label") == "CAM method"]
    assert len(menus) == 1
    return [tuple(choice) for choice in menus[0]["props"]["choices"]]


def test_build_app_hides_package_methods_when_grad_cam_is_missing(monkeypatch, tmp_path: Path) -> None:
    import demo.engine as engine_module
    import demo.inference as inference_module

    # The menu shows exactly the engine's methods, in its order, with its labels.
    fake = FakeEngine()
    assert _method_menu(build_app(fake)) == [(label, value) for value, label in fake.inference.cam_methods().items()]
    # The real engine (no checkpoints needed to build the app) offers the package's methods only
    # when the package is there; our own methods always.
    for available in (True, False):
        monkeypatch.setattr(inference_module, "package_cam_available", lambda a=available: a)
        engine = engine_module.Engine(tmp_path / "checkpoints", tmp_path / "runs")
        menu = _method_menu(build_app(engine))
        values = [value for _, value in menu]
        # Every registered CAM method, in the registry's order, with the registry's label.
        assert [(label, value) for label, value in menu if value in CAM_METHODS] == [
            (entry.label, name) for name, entry in CAM_METHODS.items()]
        assert {v for v in values if v.startswith("pgc:")} == (
            {f"pgc:{m}" for m in engine_module.PACKAGE_METHODS} if available else set())
        # Without the package, the menu says in one line why its methods are missing and how to add them.
        info = [c for c in build_app(engine).get_config_file()["components"]
                if c["type"] == "dropdown" and c["props"].get("label") == "CAM method"][0]["props"].get("info")
        if available:
            assert not info
        else:
            assert "not installed" in info and f"pip install {engine_module.PACKAGE_REQUIREMENT}" in info
