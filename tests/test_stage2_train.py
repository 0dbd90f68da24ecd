"""Stage 2 from the dashboard (demo.stage2_train): pseudo masks of a CAM model, then a segmentation
network, in the engine's one training slot; and the Stage 2 view without a network.

Tiny everything: the session's 64 px CAM pair, 8 pseudo masks, a few steps."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from crm_core.checkpoints import load_segmentation_checkpoint
from crm_core.data import build_dataset
from crm_core.segment import evaluate_segmentation
from demo.engine import Engine
from demo.protocol import Stage2Request, TrainingBusy
from demo_fixtures import copy_pair


@pytest.fixture
def engine(trained_pair: dict, tmp_path: Path, no_progress: None) -> Engine:
    checkpoints, runs = copy_pair(trained_pair, tmp_path)
    return Engine(checkpoints, runs, eval_limit=4)


def test_a_stage2_training_makes_masks_at_the_val_threshold_trains_scores_and_joins_the_menu(engine: Engine) -> None:
    rows: list = []
    path = engine.stage2_training.train(Stage2Request(name="s2", cam_model="resnet", images=8, steps=2, owner="ann"),
                               on_progress=rows.append)
    assert path == engine.checkpoints.checkpoint_dir / "s2.pt" and path.is_file()
    assert not (engine.checkpoints.checkpoint_dir / ".training").exists()  # trained in the staging folder, moved in when done
    assert any(r.get("phase") == "masks" and r["done"] == r["total"] == 8 for r in rows)
    assert [r["step"] for r in rows if "step" in r] == [1, 2] and all("loss_total" in r for r in rows if "step" in r)
    assert engine.stage2.names() == ["s2"] and "s2" not in engine.checkpoints.names()
    # the masks: in the run folder, cut at the CAM's threshold chosen on val (postprocess --at-val-threshold)
    manifest = json.loads((engine.runs.runs_dir / "s2" / "pseudo_masks" / "manifest.json").read_text())
    assert manifest["num_images"] == 8 and manifest["val_threshold"] == pytest.approx(engine.evaluation.val_threshold("resnet"))
    assert manifest["high"] == pytest.approx(manifest["val_threshold"])
    assert not list((engine.runs.runs_dir / "s2").glob("*.partial"))
    # scored as crm_core.segment scores every network: its eval.json, which the menu reads
    results = json.loads((engine.runs.runs_dir / "s2" / "eval.json").read_text())
    net = load_segmentation_checkpoint(path, optimizer=False)
    again = evaluate_segmentation(net.net, build_dataset(split="test", **net.dataset), limit=results["num_images"])
    assert results["miou"] == pytest.approx(again["miou"], abs=1e-6) and results["checkpoint"] == str(path)
    info = engine.stage2.info("s2")
    assert info["miou"] == results["miou"] and info["cam_model"] == "resnet" and info["step"] == 2
    assert info["train_images"] == 8 and info["owner"] == "ann" and info["high"] == pytest.approx(manifest["high"])
    # the owner is recorded as fine-tunes record theirs: in the run's config and the checkpoint
    config = json.loads((engine.runs.runs_dir / "s2" / "config.json").read_text())
    assert config["segment"]["extra"]["owner"] == "ann" and net.seg_config["extra"]["owner"] == "ann"
    # the view: the network, the CAM model's pseudo mask and the ground truth
    view = engine.stage2.view("s2", "resnet", 1, info["low"], info["high"])
    assert view.prediction is not None and view.pseudo is not None and "s2: stage-2" in view.description


def test_a_stage2_training_stops_and_keeps_a_scored_network_or_nothing_before_its_first_step(engine: Engine) -> None:
    rows: list = []
    path = engine.stage2_training.train(Stage2Request(name="s2-stop", cam_model="resnet", cut="band", low=0.1, high=0.5,
                                             images=8, steps=50),
                               on_progress=rows.append, should_stop=lambda: any("step" in r for r in rows))
    assert load_segmentation_checkpoint(path).step == 1
    results = json.loads((engine.runs.runs_dir / "s2-stop" / "eval.json").read_text())
    assert results["stopped"] and results["step"] == 1 and 0 <= results["miou"] <= 1
    manifest = json.loads((engine.runs.runs_dir / "s2-stop" / "pseudo_masks" / "manifest.json").read_text())
    assert (manifest["low"], manifest["high"], manifest["val_threshold"]) == (0.1, 0.5, None)  # the band as given
    # stopped while the masks were made: nothing kept, the name is free again
    assert engine.stage2_training.train(Stage2Request(name="s2-none", cam_model="resnet", cut="band", images=8, steps=5),
                               should_stop=lambda: True) is None
    assert not (engine.runs.runs_dir / "s2-none").exists() and "s2-none" not in engine.stage2.names()
    assert engine.training.status() is None


def test_stage2_requests_are_checked_and_share_the_one_training_slot(engine: Engine) -> None:
    engine.stage2_training.train(Stage2Request(name="net", cam_model="resnet", cut="band", images=4, steps=1))
    for request, message in (
        (Stage2Request(name="x", cam_model="net"), "stage-2 segmentation network, not a CAM model"),
        (Stage2Request(name="x", cam_model="resnet", images=0), "training images must be between 1 and"),
        (Stage2Request(name="x", cam_model="resnet", images=10**6), "training images must be between 1 and"),
        (Stage2Request(name="net", cam_model="resnet"), "already exists"),
        (Stage2Request(name="resnet", cam_model="resnet"), "already exists"),
        (Stage2Request(name="x", cam_model="resnet", steps=0), "steps must be between 1 and"),
        (Stage2Request(name="x", cam_model="resnet", arch="unet"), "unknown segmentation architecture"),
        (Stage2Request(name="x", cam_model="resnet", cut="band", low=0.6, high=0.4), "0 <= low <= high <= 1"),
    ):
        with pytest.raises(ValueError, match=message):
            engine.stage2_training.config(request)
    runner = engine.training  # a fine-tune holds the slot: a stage-2 training is refused, and the other way round
    with runner.job("ft", "fine-tune"):
        with pytest.raises(TrainingBusy, match="fine-tune 'ft' is running"):
            engine.stage2_training.train(Stage2Request(name="x", cam_model="resnet", images=4, steps=1))
    with runner.job("s2", "stage-2 training"):
        assert engine.training.status().startswith("stage-2 training 's2' is running")
        assert engine.training.request_stop("s2")


def test_show_without_a_network_uses_the_cam_models_own_test_image(engine: Engine) -> None:
    view = engine.stage2.view(None, "resnet", 2, 0.2, 0.45)
    assert view.prediction is None and view.prediction_scores is None and view.description == ""
    assert view.pseudo is not None and view.pseudo_scores is not None and view.sample.mask is not None
    assert view.sample.index == 2 and view.pseudo.shape == view.sample.mask.shape
    with pytest.raises(ValueError, match="choose a stage-2 network or a CAM model"):
        engine.stage2.view(None, None, 2)
