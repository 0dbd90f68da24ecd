"""The dashboard engine on real tiny checkpoints: name validation, model cache, CAM methods, data, runs."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from demo import callbacks as cb
from demo.engine import (Engine, FineTuneRequest, InvalidName, TrainingBusy, package_cam_available,
                         refine_with_superpixels, score_pseudo_mask)
from crm_core.checkpoints import CheckpointError
from demo.locks import LockOrderError
from demo_fixtures import copy_pair


@pytest.fixture(scope="module")
def engine(trained_pair: dict, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    checkpoints, runs = copy_pair(trained_pair, tmp_path_factory.mktemp("demo_engine"))
    return Engine(checkpoints, runs, eval_limit=4)


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "..", "a/b", "resnet.pt/..", "", None, 3,
                                  "x" * 200, "resnet\n"])
def test_checkpoint_names_are_validated(engine: Engine, name: object) -> None:
    with pytest.raises(InvalidName):
        engine.checkpoints.path(name)  # type: ignore[arg-type]


def test_lists_describes_and_caches_models_by_path_and_mtime(engine: Engine) -> None:
    assert engine.checkpoints.names() == ["resnet", "resnet_drs"]
    assert "resnet_drs" in engine.checkpoints.describe("resnet_drs") and "DRS" in engine.checkpoints.describe("resnet_drs")
    first = engine.checkpoints.model("resnet")
    assert engine.checkpoints.model("resnet") is first  # shared, loaded once
    path = engine.checkpoints.path("resnet")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # "retrained"
    second = engine.checkpoints.model("resnet")
    assert second is not first and engine.checkpoints.model("resnet") is second
    assert sum(key[0] == str(path) for key in engine.checkpoints.loaded()) == 1  # the stale version was dropped


def test_every_cam_method_gives_a_normalised_map(engine: Engine) -> None:
    methods = engine.inference.cam_methods()
    assert "gradcampp" in methods
    assert any(m.startswith("pgc:") for m in methods) == package_cam_available()
    sample = engine.inference.sample("resnet_drs", 1)
    assert sample.image.shape == (64, 64, 3) and sample.mask.shape == (64, 64) and sample.class_name
    # Ours, plus a gradient-based and a gradient-free method of the package (the rest share their code path).
    for method in [m for m in methods if not m.startswith("pgc:")] + [m for m in ("pgc:GradCAM", "pgc:EigenCAM")
                                                                        if m in methods]:
        out = engine.inference.cam("resnet_drs", sample.image, class_index=1, drs_delta=0.4, method=method)
        assert out.cam.shape == (64, 64) and np.isfinite(out.cam).all(), method
        assert 0.0 <= out.cam.min() and out.cam.max() <= 1.0 + 1e-6 and out.class_index == 1
        assert sum(out.probs.values()) == pytest.approx(1.0, abs=1e-4)


def test_drs_delta_changes_the_drs_model_only(engine: Engine) -> None:
    image = engine.inference.sample("resnet", 2).image
    capped = engine.inference.cam("resnet_drs", image, drs_delta=0.1).cam
    loose = engine.inference.cam("resnet_drs", image, drs_delta=1.0).cam
    assert not np.allclose(capped, loose)
    np.testing.assert_allclose(engine.inference.cam("resnet", image, drs_delta=0.1).cam, engine.inference.cam("resnet", image).cam)


def test_batch_cams_reconstruction_superpixels_and_eval(engine: Engine) -> None:
    samples = engine.inference.samples("resnet", range(3))
    cams, predicted = engine.inference.cams_for_samples("resnet", samples)
    assert cams.shape == (3, 64, 64) and predicted.shape == (3,)
    rec = engine.inference.reconstruct("resnet", samples[0].image)
    assert rec.recon.shape == (64, 64, 3) and 0 <= rec.l1 <= 1 and rec.perceptual >= 0
    assert engine.inference.perceptual_loss() is engine.inference.perceptual_loss()  # built once
    labels = engine.inference.superpixels(samples[0].image, 16, 10.0)
    assert labels.shape == (64, 64) and labels.max() >= 3
    assert engine.evaluation.evaluate("resnet_drs", limit=4, drs_delta=0.3)["num_images"] == 4
    with pytest.raises(ValueError, match="sample index"):
        engine.inference.sample("resnet", 10**6)


def test_superpixel_refinement_pools_the_cam_and_scores_both_trimaps() -> None:
    cam = np.zeros((8, 8), np.float32)
    cam[:, :4] = np.linspace(0.2, 1.0, 4)  # the object's CAM rises left to right; superpixel 0 is the left half
    labels = np.zeros((8, 8), np.int32)
    labels[:, 4:] = 1
    mask = np.zeros((8, 8), np.int64)
    mask[:, :4] = 1
    view = refine_with_superpixels(cam, labels, "c", low=0.2, high=0.45, mask=mask)
    np.testing.assert_array_equal(view.cam, cam)
    np.testing.assert_allclose(view.pooled, (labels == 0).astype(np.float32))  # mean 0.6, max-normalised to 1
    np.testing.assert_array_equal(view.raw_trimap[0], [3, 1, 1, 1, 2, 2, 2, 2])  # 0.2 is neither fg nor bg
    np.testing.assert_array_equal(view.refined_trimap[0], [1, 1, 1, 1, 2, 2, 2, 2])  # the superpixel's mean, 0.6
    assert view.raw_scores["fg_iou"] == pytest.approx(0.75) and view.refined_scores["fg_iou"] == pytest.approx(1.0)
    assert refine_with_superpixels(cam, labels, "c", 0.2, 0.45).refined_scores is None  # no mask, no scores
    assert score_pseudo_mask(cam, mask, 0.45)["fg_iou"] == pytest.approx(0.75)
    assert score_pseudo_mask(cam, mask, 0.1)["bg_fpr"] == pytest.approx(0.0)


def test_engine_work_of_the_views(engine: Engine) -> None:
    """What the callbacks ask of the engine instead of computing it: refinement, scores, uploads."""
    sample = engine.inference.sample("resnet_drs", 1)
    view = engine.inference.superpixel_refinement("resnet_drs", sample.image, sample.label, 16, 10.0, 0.2, 0.45, mask=sample.mask)
    assert view.labels.shape == view.cam.shape == view.pooled.shape == view.refined_trimap.shape == (64, 64)
    np.testing.assert_allclose(view.cam, engine.inference.cam("resnet_drs", sample.image, class_index=sample.label).cam)
    assert view.pooled.max() == pytest.approx(1.0) and view.class_name == sample.class_name
    for segment in np.unique(view.labels):  # the refined trimap is one class per superpixel
        assert len(np.unique(view.refined_trimap[view.labels == segment])) == 1
    assert 0.0 <= view.refined_scores["fg_iou"] <= 1.0 and 0.0 <= view.raw_scores["miou"] <= 1.0
    gt = sample.mask.astype(np.float32)
    assert engine.inference.mask_scores(gt, sample.mask, 0.5)["fg_iou"] == pytest.approx(1.0)
    assert engine.inference.mask_scores(gt, sample.mask, 1.5)["fg_iou"] == pytest.approx(0.0)
    upload = engine.inference.load_upload("resnet_drs", np.full((100, 50, 3), 7, np.uint8))
    assert upload.image.shape == (64, 64, 3) and upload.image.dtype == np.uint8 and upload.mask is None
    assert engine.checkpoints.has_reconstructor("resnet") == engine.checkpoints.model("resnet").has_reconstructor


def test_runs_are_read_and_names_validated(engine: Engine) -> None:
    assert engine.runs.names() == ["resnet", "resnet_drs"]
    info = engine.runs.run("resnet")
    assert info.metrics and info.config["train"]["model"] == "resnet"
    with pytest.raises(InvalidName):
        engine.runs.run("../checkpoints")
    table = cb.runs_table(engine)
    assert list(table["run"]) == ["resnet", "resnet_drs"]


def test_fine_tune_requests_are_checked_before_training(engine: Engine) -> None:
    cfg = engine.training.config(FineTuneRequest(name="ft", base="resnet_drs", model="resnet_drs", steps=2))
    assert cfg.init_from.endswith("resnet_drs.pt") and cfg.image_size == 64 and cfg.num_classes == 3
    assert cfg.checkpoint_dir == str(engine.checkpoints.checkpoint_dir)
    with pytest.raises(ValueError, match="already exists"):
        engine.training.config(FineTuneRequest(name="resnet"))
    with pytest.raises(ValueError, match="fine-tune it as resnet_drs"):
        engine.training.config(FineTuneRequest(name="ft", base="resnet_drs", model="resnet"))
    with pytest.raises(ValueError, match="learning rates"):
        engine.training.config(FineTuneRequest(name="ft", cls_lr=-1))
    with pytest.raises(InvalidName):
        engine.training.config(FineTuneRequest(name="../ft"))


def test_one_training_job_at_a_time(engine: Engine) -> None:
    runner = engine.training  # another job holds the runner's lock, as a running fine-tune does
    assert runner._lock.acquire(blocking=False)
    runner._job = {"name": "other", "stop": None, "row": {"step": 3, "max_steps": 9}}
    try:
        with pytest.raises(TrainingBusy, match="one training job at a time"):
            engine.training.train(FineTuneRequest(name="ft", steps=1))
        assert engine.training.status() == "fine-tune 'other' is running (step 3/9)"
        assert not engine.training.request_stop("ft")
    finally:
        runner._job = {}
        runner._lock.release()


def test_the_engine_refuses_to_wait_for_its_locks_out_of_order(engine: Engine) -> None:
    """Checking a file takes the checked-files lock, then the model cache's: a thread holding the
    cache that asked what a file is could deadlock against the warm-up, so it fails at once."""
    with engine.checkpoints._models_lock:
        with pytest.raises(LockOrderError, match="checked files.*while holding.*models"):
            engine.checkpoints.describe("resnet")
    with engine.training._lock:  # the outermost lock: a fine-tune reads its base checkpoint inside it
        assert "resnet_drs" in engine.checkpoints.describe("resnet_drs")
        assert engine.checkpoints.model("resnet_drs") is engine.checkpoints.model("resnet_drs")


def test_bootstrap_trains_the_demo_set_side_by_side(tmp_path: Path) -> None:
    from demo.bootstrap import bootstrap_demo, needs_bootstrap

    checkpoints, runs = tmp_path / "checkpoints", tmp_path / "runs"
    assert needs_bootstrap(checkpoints)
    tiny = dict(steps=1, train_size=8, batch_size=8, val_limit=4, n_segments=16, image_size=64)
    paths = bootstrap_demo(checkpoints, runs, processes=3, eval_images=4, **tiny)
    assert [p.name for p in paths] == ["resnet.pt", "resnet_drs.pt", "resnet_drs_crm.pt"]
    assert all(p.is_file() for p in paths) and not needs_bootstrap(checkpoints)
    engine = Engine(checkpoints, runs)
    # the two contrasts: DRS off/on (resnet, resnet_drs) and CRM off/on (resnet_drs, resnet_drs_crm)
    assert [engine.checkpoints.has_drs(n) for n in ("resnet", "resnet_drs", "resnet_drs_crm")] == [False, True, True]
    models = [engine.checkpoints.model(n) for n in ("resnet", "resnet_drs", "resnet_drs_crm")]
    assert [model.has_reconstructor for model in models] == [False, False, True]
    for name in ("resnet", "resnet_drs", "resnet_drs_crm"):
        info = engine.runs.run(name)
        assert info.metrics and info.eval["num_images"] == 4 and info.eval["threshold_split"] == "val"
        assert info.config["train"]["appearance"] == "informative"
    mtime = paths[0].stat().st_mtime_ns
    assert bootstrap_demo(checkpoints, runs, processes=2, **tiny) == paths  # nothing left to train
    assert paths[0].stat().st_mtime_ns == mtime


def test_a_background_bootstrap_shows_each_model_only_once_trained(tmp_path: Path) -> None:
    """Beside a running dashboard the model trains in a hidden folder (menus list checkpoints/*.pt)
    and moves in with its eval.json still matching it."""
    from demo.bootstrap import bootstrap_demo

    checkpoints, runs = tmp_path / "checkpoints", tmp_path / "runs"
    tiny = dict(steps=1, train_size=8, batch_size=8, val_limit=4, n_segments=16, image_size=64)
    paths = bootstrap_demo(checkpoints, runs, eval_images=4, names=["resnet_drs"], background=True, **tiny)
    assert paths == [checkpoints / "resnet_drs.pt"] and paths[0].is_file()
    assert not (checkpoints / ".training").exists(), "the staging folder was left behind"
    engine = Engine(checkpoints, runs, eval_limit=4)
    info = engine.runs.run("resnet_drs")
    assert Path(info.config["train"]["checkpoint_dir"]).name == ".training"  # where it was written while training
    assert info.eval["checkpoint_mtime_ns"] == paths[0].stat().st_mtime_ns  # so its val threshold is reused
    assert engine.checkpoints.names() == ["resnet_drs"]


def test_menus_are_filled_from_the_files_and_verified_by_building(trained_pair: dict, tmp_path: Path) -> None:
    """The first fill reads each file (no model built); verifying builds the model, which refuses
    weights that do not fit their config; a file that fails when first used leaves the menus."""
    import torch

    checkpoints, runs = copy_pair(trained_pair, tmp_path)
    payload = torch.load(checkpoints / "resnet.pt", weights_only=True)
    payload["model_config"]["arch"] = "resnet34"  # a readable checkpoint whose weights do not fit
    torch.save(payload, checkpoints / "wrong_arch.pt")
    (checkpoints / "truncated.pt").write_bytes((checkpoints / "resnet.pt").read_bytes()[:5000])
    engine = Engine(checkpoints, runs)
    assert engine.checkpoints.names(verify=False) == ["resnet", "resnet_drs", "wrong_arch"]
    assert not engine.checkpoints.loaded(), "listing from the files built a model"
    assert engine.checkpoints.has_drs("resnet_drs") and not engine.checkpoints.has_drs("wrong_arch")
    assert not engine.checkpoints.loaded()
    assert "truncated or corrupt" in engine.checkpoints.refused()["truncated"]
    assert engine.checkpoints.names() == ["resnet", "resnet_drs"]
    assert "do not match" in engine.checkpoints.refused()["wrong_arch"]

    fresh = Engine(checkpoints, runs)
    assert "wrong_arch" in fresh.checkpoints.names(verify=False)
    with pytest.raises(CheckpointError, match="do not match"):
        fresh.checkpoints.model("wrong_arch")  # chosen before the warm-up verified it
    assert fresh.checkpoints.names(verify=False) == ["resnet", "resnet_drs"]
    fresh.warm_up()
    assert fresh.checkpoints.names(verify=False) == ["resnet", "resnet_drs"] and len(fresh.checkpoints.loaded()) == 2


def test_the_val_threshold_eval_json_stored_is_reused_for_that_file_only(trained_pair: dict, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import demo.evaluation as evaluation_module

    checkpoints, runs = copy_pair(trained_pair, tmp_path)
    stored = Engine(checkpoints, runs, eval_limit=4).evaluation.write_eval(checkpoints / "resnet_drs.pt")
    chosen = stored["cam_miou_val_threshold"]["threshold"]
    calls: list[int] = []

    def select(*args, **kwargs) -> float:
        calls.append(kwargs.get("limit"))
        return 0.123

    monkeypatch.setattr(evaluation_module, "select_threshold", select)
    engine = Engine(checkpoints, runs, eval_limit=4)
    assert engine.evaluation.val_threshold("resnet_drs") == chosen and calls == []  # from eval.json, not evaluated again
    assert engine.evaluation.val_threshold("resnet_drs", limit=8) == 0.123 and calls == [8]  # another val size
    assert engine.evaluation.val_threshold("resnet_drs", drs_delta=0.3) == 0.123  # another delta
    path = checkpoints / "resnet_drs.pt"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # another version of the file
    assert Engine(checkpoints, runs, eval_limit=4).evaluation.val_threshold("resnet_drs") == 0.123


def test_the_page_is_built_before_any_model_is(trained_pair: dict, tmp_path: Path) -> None:
    """app.py serves the page, then builds the models (torchvision's import alone is ~2 s of
    the cold start): building the app must not build a model."""
    import subprocess
    import sys

    checkpoints, runs = copy_pair(trained_pair, tmp_path)
    code = ("import sys\nfrom demo.engine import Engine\nfrom demo.layout import build_app\n"
            f"engine = Engine({str(checkpoints)!r}, {str(runs)!r})\nbuild_app(engine)\n"
            "print(sorted(m for m in ('torchvision', 'torch._dynamo') if m in sys.modules), len(engine.checkpoints.loaded()))\n"
            "engine.warm_up()\nprint('torchvision' in sys.modules, len(engine.checkpoints.loaded()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parent.parent, env=dict(os.environ, GRADIO_ANALYTICS_ENABLED="False"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:2] == ["[] 0", "True 2"], out.stdout


def test_an_efficientnet_checkpoint_works_in_every_view_and_as_a_fine_tune_base(tmp_path: Path) -> None:
    """The dashboard needs nothing per backbone: an EfficientNet-b0 DRS + CRM checkpoint is listed,
    explained by our CAM and the grad-cam package's, reconstructed, evaluated and fine-tuned from."""
    from conftest import tiny_config
    from crm_core.train import main

    os.environ["CRM_LAB_NO_PROGRESS"] = "1"
    main(tiny_config(tmp_path, name="effnet", arch="efficientnet_b0", steps=2, drs_positions=("all_blocks",)))
    engine = Engine(tmp_path / "checkpoints", tmp_path / "runs", eval_limit=4)
    assert engine.checkpoints.names() == ["effnet"]
    assert "efficientnet_b0" in engine.checkpoints.describe("effnet") and engine.checkpoints.arch("effnet") == "efficientnet_b0"
    image = engine.inference.sample("effnet", 0).image
    methods = ["gradcampp"] + (["pgc:GradCAMPlusPlus"] if package_cam_available() else [])
    for method in methods:
        out = engine.inference.cam("effnet", image, class_index=0, method=method)
        assert out.cam.shape == image.shape[:2] and np.isfinite(out.cam).all() and out.cam.max() <= 1 + 1e-6
    assert not np.allclose(engine.inference.cam("effnet", image, drs_delta=0.1).cam,
                           engine.inference.cam("effnet", image, drs_delta=1.0).cam)
    assert engine.inference.reconstruct("effnet", image).recon.shape == image.shape
    assert engine.evaluation.evaluate("effnet", limit=4)["num_images"] == 4
    cfg = engine.training.config(FineTuneRequest(name="effnet-ft", base="effnet", model="resnet_drs", arch="resnet18"))
    assert cfg.arch == "efficientnet_b0" and cfg.drs_positions == ("all_blocks",)  # the base's own
    scratch = engine.training.config(FineTuneRequest(name="scratch", arch="efficientnet_b1"))
    assert scratch.arch == "efficientnet_b1" and scratch.init_from is None
    assert engine.training.backbones()[0] == "resnet18" and "efficientnet_b0" in engine.training.backbones()


def test_one_images_cam_metrics_in_the_engine(engine: Engine) -> None:
    """Compare's per-image PxAP and faithfulness: the map of ones keeps the image (no drop, all of
    it), the perfect map ranks every pixel right (PxAP 1), and the model's own CAM lies between;
    the probabilities are the model's own (crm_core.api), and PxAP is crm_core.metrics' curve's."""
    import torch

    from crm_core.api import CamModel
    from crm_core.metrics import ThresholdCurve
    from crm_core.thresholds import THRESHOLDS

    sample = engine.inference.sample("resnet_drs", 2)
    ones = engine.inference.cam_metrics("resnet_drs", sample.image, np.ones(sample.mask.shape, np.float32),
                                        sample.label, sample.mask)
    assert ones["average_drop"] == 0.0 and ones["cam_area"] == 1.0
    assert ones["probability"] == ones["probability_explained"]
    model = CamModel.load(engine.checkpoints.path("resnet_drs"))
    expected = float(model.predict(model.preprocess(sample.image)[None]).probs[0, sample.label])
    assert ones["probability"] == pytest.approx(expected, abs=1e-6)
    perfect = engine.inference.cam_metrics("resnet_drs", sample.image, (sample.mask == 1).astype(np.float32),
                                           sample.label, sample.mask)
    assert perfect["pxap"] == pytest.approx(1.0)
    cam = engine.inference.cam("resnet_drs", sample.image, class_index=sample.label).cam
    own = engine.inference.cam_metrics("resnet_drs", sample.image, cam, sample.label, sample.mask)
    curve = ThresholdCurve(THRESHOLDS.grid)
    curve.add(torch.from_numpy(cam)[None], torch.from_numpy(sample.mask)[None])
    assert own["pxap"] == pytest.approx(curve.pxap(), abs=1e-12)
    assert 0.0 < own["cam_area"] <= 1.0 and own["average_drop"] >= 0.0  # a barely trained map may be flat
    assert "pxap" not in engine.inference.cam_metrics("resnet_drs", sample.image, cam, sample.label, None)
