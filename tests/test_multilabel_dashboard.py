"""The dashboard on several objects per image: Compare's per-class view and Browse's class masks
for a multi-label model (the engine's class CAMs of a real checkpoint, the callback's pictures),
nothing added for a single-label one, and the same views in a real chromium."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crm_core.train import TrainConfig, main as train_main
from demo import callbacks as cb
from demo.engine import Engine
from demo_fixtures import FakeEngine


def _multi_object_checkpoint(checkpoints: Path, runs: Path) -> Path:
    return train_main(TrainConfig(name="multi", model="resnet", arch="resnet18", crm=False, max_objects=3,
                                  appearance="informative", image_size=64, steps=2, epochs=1, batch_size=8,
                                  train_size=16, val_limit=8, checkpoint_dir=str(checkpoints), runs_dir=str(runs),
                                  device="cpu"))


@pytest.fixture(scope="module")
def multi_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    root = tmp_path_factory.mktemp("multi")
    _multi_object_checkpoint(root / "checkpoints", root / "runs")
    return Engine(root / "checkpoints", root / "runs", eval_limit=4)


def test_a_multi_label_model_shows_each_class_of_the_image_and_their_class_mask(multi_engine: Engine) -> None:
    engine = multi_engine
    index = next(i for i in range(40) if len(engine.inference.sample("multi", i).labels) >= 2)
    sample = engine.inference.sample("multi", index)
    names = engine.checkpoints.class_names("multi")
    out = engine.inference.class_cams("multi", sample.image, sample.labels)
    assert out.multi_label and out.classes == list(sample.labels) and out.cams.shape == (len(sample.labels), 64, 64)
    assert all(0 <= s <= 1 for s in out.scores) and np.allclose(out.cams.max(axis=(1, 2)), 1.0, atol=1e-5)
    items, menu = cb.class_view(engine, "multi", "multi", None, index, 0.3)
    own = [names[c] for c in sample.labels]
    assert menu["choices"][:1 + len(own)] == [cb.PREDICTED, *own] and sorted(menu["choices"][1:]) == sorted(names)
    captions = [caption for _, caption in items]
    expected = [f"A: {names[c]}" for c in sample.labels]
    assert [c.split(" (p")[0] for c in captions[:len(expected)]] == expected
    assert captions[len(expected)] == "A: class mask, background score 0.30" and len(items) == 2 * (len(expected) + 1)
    mask_picture = items[len(expected)][0]
    assert mask_picture.shape[0] > mask_picture.shape[1]  # the legend below the mask, a line per class
    # an upload has no labels: the three classes the model scores highest
    upload, _ = cb.class_view(engine, "multi", "multi", sample.image, -1, 0.3)
    assert len(upload) == 2 * (3 + 1)


def test_browse_shows_a_multi_label_model_s_class_masks_scored_against_the_ground_truth(multi_engine: Engine) -> None:
    engine = multi_engine
    names = engine.checkpoints.class_names("multi")
    assert engine.checkpoints.multi_label("multi")
    items, table, positions = cb.browse(engine, "multi", 8, "dataset order", 0.3)
    assert positions == list(range(8)) and len(items) == 8 and list(table["index"]) == positions
    samples = engine.inference.samples("multi", positions)
    for (picture, caption), sample, row in zip(items, samples, table.itertuples()):
        own = " + ".join(names[c] for c in sample.labels)
        assert row[2] == own and f"#{sample.index} {own}" in caption
        assert picture.shape[0] > picture.shape[1]  # the class mask above its legend
        # independently: each pixel the leading CAM among the image's classes where it reaches
        # the background score, then the IoU of each object class in the truth or the mask
        cams = engine.inference.class_cams("multi", sample.image, sample.labels).cams
        predicted = np.where(cams.max(0) >= 0.3, np.asarray(sample.labels)[cams.argmax(0)] + 1, 0)
        truth, valid = sample.class_mask, sample.class_mask != 255
        ious = [((predicted == k) & (truth == k) & valid).sum() / ((predicted == k) | (truth == k))[valid].sum()
                for k in range(1, len(names) + 1) if ((predicted == k) | (truth == k))[valid].any()]
        assert row[4] == pytest.approx(float(np.mean(ious)), abs=1e-4)
        assert caption.startswith(f"IoU {np.mean(ious):.2f}")
    worst, _, order = cb.browse(engine, "multi", 8, "worst IoU first", 0.3)
    shown = [float(caption.split()[1]) for _, caption in worst]  # "IoU 0.42 · #3 ..."
    assert sorted(order) == positions and shown == sorted(shown)


def test_a_single_label_model_adds_nothing(tmp_path: Path) -> None:
    items, menu = cb.class_view(FakeEngine(), "resnet", "resnet_drs", None, 2, 0.3)
    assert items == [] and menu["choices"] == [cb.PREDICTED, "checker", "stripes_h", "stripes_v"]  # its class first


@pytest.mark.browser
def test_the_per_class_view_in_chromium(tmp_path: Path) -> None:
    """A multi-object checkpoint served as app.py serves it: Compare opens on its sample with one
    CAM per class of the image and the class mask with its legend; Browse shows each image's class
    mask; single-label views unchanged."""
    from test_browser import ARTIFACTS, _open, _require_browser

    from demo_fixtures import served_app

    sync_playwright = _require_browser()
    from playwright.sync_api import expect

    checkpoints, runs = tmp_path / "checkpoints", tmp_path / "runs"
    _multi_object_checkpoint(checkpoints, runs)
    engine = Engine(checkpoints, runs, eval_limit=4)
    index = next(i for i in range(40) if len(engine.inference.sample("multi", i).labels) >= 2)
    names = [engine.checkpoints.class_names("multi")[c] for c in engine.inference.sample("multi", index).labels]
    ARTIFACTS.mkdir(exist_ok=True)
    with served_app(checkpoints, runs) as url, sync_playwright() as playwright:
        browser, page, errors = _open(playwright)
        try:
            page.goto(url)
            gallery = page.locator("#class-gallery")
            expect(gallery).to_contain_text("A: class mask, background score", timeout=120_000)  # filled on load
            box = page.locator("#sample-index input[type=number]")
            box.fill(str(index))
            box.press("Enter")
            expect(page.locator("#compare-info")).to_contain_text(f"test sample #{index}", timeout=60_000)
            for name in names:
                expect(gallery).to_contain_text(f"A: {name}", timeout=60_000)
                expect(gallery).to_contain_text(f"B: {name}")
            expect(page.locator("#overlay-a img")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "multi_object_compare.png"), full_page=True)
            # Browse: each image's class mask, captioned with its classes (several: "a + b")
            page.get_by_role("tab", name="Browse heatmaps").click()
            expect(page.locator("#browse-gallery")).to_contain_text(" + ", timeout=60_000)
            expect(page.locator("#browse-gallery")).to_contain_text("IoU")
        finally:
            browser.close()
        assert not errors, errors


def test_fine_tune_takes_the_objects_per_image(tmp_path: Path) -> None:
    from demo.engine import Engine as RealEngine
    import gradio as gr

    engine = RealEngine(tmp_path / "checkpoints", tmp_path / "runs")
    args = ("multi_ft", None, "resnet", "synthetic", 2, 8, 1e-3, 2e-3, 30.0, 1.0, 1.0, 0.55, False, "resnet18")
    request = cb.fine_tune_request(engine, *args, max_objects=3)
    assert request.max_objects == 3 and engine.training.config(request).max_objects == 3
    assert cb.fine_tune_request(engine, *args).max_objects == 1  # the default: one animal, single-label
    with pytest.raises(gr.Error, match="objects per image"):
        cb.fine_tune_request(engine, *args, max_objects=0)
    with pytest.raises(ValueError, match="max_objects must be in"):  # four classes: four animals at most
        engine.training.config(cb.fine_tune_request(engine, *args, max_objects=5))
