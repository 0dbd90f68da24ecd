"""The dashboard in a real chromium (Playwright): every tab, an upload, the delta slider, a fine-tune,
Stage 2 without a network, then a stage-2 training from its panel.

Screenshots go to test-artifacts/ (git-ignored). Without /usr/bin/chromium the test is skipped,
unless CRM_LAB_REQUIRE_BROWSER=1 (CI), where a missing browser is a failure.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from demo_fixtures import copy_pair, served_app

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
# tab -> (element, text it shows once the tab's view is filled)
TABS = {
    "Browse heatmaps": ("#browse-gallery", "IoU"),
    "DRS thresholds": ("#drs-info", "delta 0.55"),
    "Superpixels": ("#sp-info", "superpixels"),
    "Reconstructions": ("#rec-info", "L1 ="),
    "Runs": ("#runs-table", "resnet_drs"),
    "Fine-tune": ("#ft-status", "One training job at a time"),
    "Compare": ("#compare-info", "test sample #3"),
}


def _require_browser():
    required = os.environ.get("CRM_LAB_REQUIRE_BROWSER") == "1"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if required:
            pytest.fail("CRM_LAB_REQUIRE_BROWSER=1 but playwright is not installed")
        pytest.skip("playwright is not installed")
    if not CHROMIUM.is_file():
        if required:
            pytest.fail(f"CRM_LAB_REQUIRE_BROWSER=1 but {CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing")
    return sync_playwright


def _open(playwright) -> tuple:
    """(browser, a 1400x1000 page, the list its uncaught page errors are appended to)."""
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"])
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return browser, page, errors


def _drag_delta_slider_down(page) -> None:
    """Drag the DRS tab's delta slider from 0.55 to about 0.25 with the mouse; its release re-runs
    the DRS model with the new cap."""
    box = page.locator("#delta-slider input[type=range]").bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.53, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.2, y, steps=5)
    page.mouse.up()


def test_dashboard_in_chromium(trained_pair: dict, tmp_path: Path) -> None:
    sync_playwright = _require_browser()
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    checkpoints, runs = copy_pair(trained_pair, tmp_path)
    upload = tmp_path / "upload.png"
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((80, 100, 3)) * 255).astype(np.uint8)).save(upload)

    with served_app(checkpoints, runs) as url, sync_playwright() as playwright:
        browser, page, errors = _open(playwright)
        try:
            page.goto(url)
            # The page opens on a filled Compare view (demo.load).
            expect(page.locator("#overlay-a img")).to_be_visible(timeout=90_000)
            expect(page.locator("#compare-info")).to_contain_text("test sample #0", timeout=60_000)
            # the field's other CAM metrics, per image: threshold-free PxAP and the faithfulness of the map
            expect(page.locator("#compare-info")).to_contain_text(re.compile(r"PxAP \d\.\d{3} \(no threshold\)"))
            expect(page.locator("#compare-info")).to_contain_text(re.compile(r"Average Drop \d+\.\d%"))
            page.screenshot(path=str(ARTIFACTS / "01_compare.png"), full_page=True)

            # Upload an image: index becomes -1 and both CAMs are recomputed.
            page.locator("#input-image input[type=file]").set_input_files(str(upload))
            expect(page.locator("#compare-info")).to_contain_text("your upload", timeout=60_000)
            expect(page.locator("#compare-info")).not_to_contain_text("PxAP")  # no ground truth, no PxAP
            expect(page.locator("#compare-info")).to_contain_text("Average Drop")
            page.screenshot(path=str(ARTIFACTS / "02_upload.png"), full_page=True)
            # Back to a dataset sample from the gallery.
            page.locator("#sample-gallery").get_by_text(re.compile(r"^#3 ")).click()
            expect(page.locator("#compare-info")).to_contain_text("test sample #3", timeout=60_000)

            for i, (tab, (element, text)) in enumerate(TABS.items(), start=3):
                page.get_by_role("tab", name=tab).click()
                expect(page.locator(element)).to_contain_text(text, timeout=60_000)
                if tab == "DRS thresholds":
                    _drag_delta_slider_down(page)
                    expect(page.locator("#drs-info")).not_to_contain_text("delta 0.55", timeout=60_000)
                    expect(page.locator("#drs-info")).to_contain_text(re.compile(r"delta 0\.[0-4]\d"))
                page.screenshot(path=str(ARTIFACTS / f"{i:02d}_{tab.split()[0].lower()}.png"), full_page=True)

            # A tiny fine-tune from resnet_drs; the new checkpoint appears in the model menus.
            page.get_by_role("tab", name="Fine-tune").click()
            page.locator("#ft-name textarea, #ft-name input").first.fill("ft-browser")
            page.get_by_label("Base checkpoint").click()
            page.get_by_role("option", name="resnet_drs").click()
            steps = page.locator("#ft-steps input[type=number]")
            steps.fill("2")
            steps.press("Enter")
            page.locator("#ft-start").click()
            expect(page.locator("#ft-status")).to_contain_text("saved", timeout=240_000)
            page.screenshot(path=str(ARTIFACTS / "10_finetuned.png"), full_page=True)
            assert (checkpoints / "ft-browser.pt").is_file()
            page.get_by_role("tab", name="Compare").click()
            page.get_by_label("Model A").click()
            expect(page.get_by_role("option", name="ft-browser")).to_be_visible(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "11_new_checkpoint_in_menu.png"), full_page=True)
            page.keyboard.press("Escape")

            # Stage 2 before any network: the tab opens on the CAM model's pseudo mask and the ground
            # truth, and says how to make a network; then one trained from its panel joins the menu.
            page.get_by_role("tab", name="Stage 2").click()
            info = page.locator("#s2-info")
            expect(info).to_contain_text("no stage-2 network", timeout=60_000)
            expect(info).to_contain_text("pseudo mask of")
            expect(page.locator("#s2-pseudo img")).to_be_visible()
            expect(page.locator("#s2-gt img")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "12_stage2_without_network.png"), full_page=True)
            page.locator("#s2-train-name textarea, #s2-train-name input").first.fill("s2-browser")
            for element, value in (("#s2-train-images", "8"), ("#s2-train-steps", "2")):
                box = page.locator(f"{element} input[type=number]")
                box.fill(value)
                box.press("Enter")
            page.locator("#s2-train-start").click()
            expect(page.locator("#s2-train-status")).to_contain_text("Done: s2-browser", timeout=240_000)
            expect(page.locator("#s2-train-status")).to_contain_text("test mIoU")
            assert (checkpoints / "s2-browser.pt").is_file()
            # chosen in the menu with its test mIoU, and shown: network | pseudo mask | ground truth
            expect(page.locator("#s2-seg input")).to_have_value(re.compile(r"^s2-browser · test mIoU 0\.\d{3}$"),
                                                                 timeout=30_000)
            expect(page.locator("#s2-pred img")).to_be_visible(timeout=60_000)
            expect(info).to_contain_text("stage-2 network: mIoU")
            page.screenshot(path=str(ARTIFACTS / "13_stage2_trained_in_browser.png"), full_page=True)
        finally:
            browser.close()
        assert not errors, errors


@pytest.mark.slow
def test_first_visit_shows_the_evidence(demo_set: dict, tmp_path: Path) -> None:
    """A new user's first visit, on models trained as the first launch trains them: the Compare
    view opens on two visibly different CAMs with the ground truth outlined, the DRS slider moves
    the cap, and Reconstructions and Results fill. Any console error fails the test."""
    sync_playwright = _require_browser()
    from playwright.sync_api import expect

    shots = tmp_path / "screenshots"
    shots.mkdir()
    with served_app(demo_set["checkpoints"], demo_set["runs"], "--eval-images", "16") as url, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
        try:
            page.goto(url)
            info = page.locator("#compare-info")
            expect(info).to_contain_text("test sample #0", timeout=120_000)
            expect(info).to_contain_text("resnet_drs_crm")  # the pair that shows CRM: resnet vs resnet_drs_crm
            expect(info).to_contain_text("val-chosen threshold")
            page.screenshot(path=str(shots / "1_compare.png"), full_page=True)
            if os.environ.get("CRM_LAB_SCREENSHOT"):  # the README's picture: CRM_LAB_SCREENSHOT=docs/compare.png
                page.screenshot(path=os.environ["CRM_LAB_SCREENSHOT"])
            overlays = []
            for tag in "ab":
                page.locator(f"#overlay-{tag} img").screenshot(path=str(shots / f"overlay_{tag}.png"))
                overlays.append(np.asarray(Image.open(shots / f"overlay_{tag}.png").convert("RGB")).astype(np.int16))
            a, b = overlays
            assert a.shape == b.shape and np.abs(a - b).mean() > 3, "the two models' overlays look the same"
            for overlay in overlays:  # the ground-truth outline (pure green) is drawn on both
                green = (np.abs(overlay - np.array([0, 255, 0])) < 60).all(axis=-1)
                assert green.sum() > 100, green.sum()

            page.get_by_role("tab", name="DRS thresholds").click()
            drs_info = page.locator("#drs-info")
            expect(drs_info).to_contain_text("delta 0.55", timeout=60_000)
            _drag_delta_slider_down(page)
            expect(drs_info).to_contain_text(re.compile(r"delta 0\.[0-4]\d"), timeout=60_000)
            page.screenshot(path=str(shots / "2_drs.png"), full_page=True)

            page.get_by_role("tab", name="Reconstructions").click()
            expect(page.locator("#rec-info")).to_contain_text("L1 =", timeout=60_000)
            # the CRM model's decoder uses its CAM, and the table says so beside the picture
            expect(page.locator("#rec-table")).to_contain_text("uses the CAM", timeout=60_000)
            page.screenshot(path=str(shots / "3_reconstructions.png"), full_page=True)

            page.get_by_role("tab", name="Results").click()
            expect(page.locator("#results-table")).to_contain_text("floor", timeout=60_000)
            expect(page.locator("#results-table")).to_contain_text("PxAP (no threshold)")  # its column
            expect(page.locator("#results-table")).to_contain_text("Average Drop %")
            # a faithfulness metric picked from the menu: the tab says what it rewards and its pitfall
            page.get_by_label("Metric").click()
            page.get_by_role("option", name="Average Drop %").click()
            expect(page.locator("#results-info")).to_contain_text("a map of ones keeps everything", timeout=60_000)
            page.screenshot(path=str(shots / "4_results.png"), full_page=True)
        finally:
            browser.close()
    assert not problems, problems


def test_the_first_launchs_stage2_networks_fill_the_stage2_tab(trained_pair: dict, tmp_path: Path) -> None:
    """The first launch's stage-2 phase (demo.bootstrap.bootstrap_stage2: pseudo masks at the CAM's
    val-chosen threshold, a network on each, in worker processes) on the session's tiny pair named as
    the demo models, with fewer images and steps: the Stage 2 tab then lists both networks with their
    test mIoU and opens on the CRM one, its CAM model and band: network | pseudo mask | ground truth."""
    sync_playwright = _require_browser()
    from playwright.sync_api import expect

    from demo.bootstrap import DEMO_STAGE2, bootstrap_stage2

    checkpoints, runs = copy_pair(trained_pair, tmp_path)
    (checkpoints / "resnet_drs").with_suffix(".pt").rename(checkpoints / "resnet_drs_crm.pt")
    (runs / "resnet_drs").rename(runs / "resnet_drs_crm")
    trained = bootstrap_stage2(checkpoints, runs, eval_images=4, background=False, images=16, steps=2)
    assert sorted(p.name for p in trained) == sorted(f"{n}.pt" for n in DEMO_STAGE2)
    assert not (checkpoints / ".training").exists()
    with served_app(checkpoints, runs) as url, sync_playwright() as playwright:
        browser, page, errors = _open(playwright)
        try:
            page.goto(url)
            page.get_by_role("tab", name="Stage 2").click()
            info = page.locator("#s2-info")
            expect(info).to_contain_text("stage-2 network: mIoU", timeout=90_000)
            expect(info).to_contain_text("pseudo mask of resnet_drs_crm")
            expect(info).to_contain_text("16 pseudo masks of resnet_drs_crm")
            for element in ("#s2-pred img", "#s2-pseudo img", "#s2-gt img"):
                expect(page.locator(element)).to_be_visible()
            expect(page.locator("#s2-seg input")).to_have_value(
                re.compile(r"^stage2_resnet_drs_crm · test mIoU 0\.\d{3}$"))
            page.locator("#s2-seg input").click()
            for name in DEMO_STAGE2:
                expect(page.get_by_role("option", name=re.compile(rf"^{name} · test mIoU"))).to_be_visible()
            page.get_by_role("option", name=re.compile(r"^stage2_resnet · ")).click()  # its own CAM model follows
            expect(page.locator("#s2-cam input")).to_have_value("resnet", timeout=30_000)
            expect(info).to_contain_text("16 pseudo masks of resnet ", timeout=60_000)
            expect(info).to_contain_text("pseudo mask of resnet (fg")
            expect(page.locator("#s2-pred img")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "14_stage2_first_launch_networks.png"), full_page=True)
        finally:
            browser.close()
        assert not errors, errors
