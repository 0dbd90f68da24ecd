"""Stage 2 (crm_core.segment): a segmentation network trained on pseudo masks or ground truth.

Tiny everything: a resnet18 CAM model trained for one step at 64 px, pseudo masks of 12 images,
segmentation runs of a few steps on a handful of images."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_config, torchrun
from crm_core import postprocess, segment
from crm_core.checkpoints import (CheckpointError, inspect_checkpoint, load_checkpoint, load_segmentation_checkpoint,
                                  read_checkpoint)
from crm_core.explain import CamModel
from crm_core.models.segmentation import DEFAULT_SEG_ARCH, SEG_ARCHS, SegmentationNet
from crm_core.runs import RunDir

REPO = Path(__file__).resolve().parent.parent
ARCH = DEFAULT_SEG_ARCH
PSEUDO_IMAGES = 12


@pytest.fixture(scope="module")
def cam_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A resnet18 CAM classifier at 64 px, 3 classes, one training step."""
    from crm_core.train import main

    root = tmp_path_factory.mktemp("cam")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRM_LAB_NO_PROGRESS", "1")
        return main(tiny_config(root, name="cam", model="resnet", crm=False, steps=1))


@pytest.fixture(scope="module")
def pseudo_dir(cam_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Its pseudo-mask trimaps of the first 12 train images, with scores.json and manifest.json."""
    out = tmp_path_factory.mktemp("pseudo") / "masks"
    postprocess.write_pseudo_masks(CamModel.load(cam_checkpoint), out, "train", limit=PSEUDO_IMAGES, progress=False)
    return out


def seg_args(tmp_path: Path, masks: str | Path, name: str = "seg", *extra: str) -> list[str]:
    return ["--masks", str(masks), "--name", name, "--arch", ARCH, "--steps", "2", "--batch-size", "4",
            "--test-limit", "6", "--device", "cpu", "--checkpoint-dir", str(tmp_path / "ck"),
            "--runs-dir", str(tmp_path / "runs"), *extra]


def test_postprocess_writes_a_manifest_of_the_dataset(pseudo_dir: Path, cam_checkpoint: Path) -> None:
    manifest = json.loads((pseudo_dir / postprocess.MANIFEST_NAME).read_text())
    assert manifest["split"] == "train" and manifest["num_images"] == PSEUDO_IMAGES
    assert manifest["dataset"] == {"name": "synthetic", "image_size": 64, "num_classes": 3, "seed": 0,
                                   "appearance": "random", "max_objects": 1, "data_root": None}
    scores = json.loads((pseudo_dir / "scores.json").read_text())
    assert manifest["miou"] == scores["miou"] and manifest["checkpoint"] == str(cam_checkpoint)
    assert sorted(p.name for p in pseudo_dir.glob("*.png")) == [f"{i:06d}.png" for i in range(PSEUDO_IMAGES)]


def test_cli_trains_on_pseudo_masks_writes_checkpoint_metrics_eval_and_resumes(
        pseudo_dir: Path, tmp_path: Path, no_progress: None, capsys: pytest.CaptureFixture) -> None:
    assert segment.cli(seg_args(tmp_path, pseudo_dir)) == 0
    assert "mIoU" in capsys.readouterr().out
    ckpt = load_segmentation_checkpoint(tmp_path / "ck" / "seg.pt")
    assert ckpt.arch == ARCH and ckpt.step == 2 and ckpt.weights_source == "random"
    # the dataset options came from the manifest: 64 px, 3 classes
    assert ckpt.dataset["image_size"] == 64 and ckpt.dataset["num_classes"] == 3
    assert ckpt.masks["source"] == str(pseudo_dir) and ckpt.masks["manifest"]["num_images"] == PSEUDO_IMAGES
    run = RunDir(tmp_path / "runs" / "seg")
    results = run.read_eval()
    assert results["kind"] == "segmentation" and results["split"] == "test" and results["num_images"] == 6
    for key in ("miou", "fg_iou", "bg_iou", "bg_fpr"):
        assert 0.0 <= results[key] <= 1.0
    assert set(results["coverage"]) == {"head", "body"}
    assert results["masks"]["miou"] == json.loads((pseudo_dir / "scores.json").read_text())["miou"]
    assert results["train_images"] == PSEUDO_IMAGES
    # --resume continues to the new step budget; no step is logged twice
    assert segment.cli(seg_args(tmp_path, pseudo_dir, "seg", "--resume", "--steps", "3", "--log-every", "1")) == 0
    assert load_segmentation_checkpoint(tmp_path / "ck" / "seg.pt").step == 3
    rows = run.read_metrics()
    train_steps = [r["step"] for r in rows if r["split"] == "train"]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == 3
    assert [r["miou"] for r in rows if r["split"] == "test"][-1] == pytest.approx(run.read_eval()["miou"], abs=1e-5)


def test_ground_truth_training_beats_the_untrained_network(tmp_path: Path, no_progress: None) -> None:
    common = ["--image-size", "64", "--num-classes", "3", "--train-size", "32", "--batch-size", "8",
              "--test-limit", "16", "--lr", "3e-3", "--arch", ARCH, "--device", "cpu",
              "--checkpoint-dir", str(tmp_path / "ck"), "--runs-dir", str(tmp_path / "runs")]
    assert segment.cli(["--masks", "gt", "--name", "floor", "--steps", "0", *common]) == 0
    assert segment.cli(["--masks", "gt", "--name", "trained", "--steps", "12", *common]) == 0
    floor = RunDir(tmp_path / "runs" / "floor").read_eval()
    trained = RunDir(tmp_path / "runs" / "trained").read_eval()
    assert trained["masks"] == {"source": "gt", "manifest": None, "miou": 1.0}
    assert trained["miou"] > floor["miou"] + 0.1, (trained["miou"], floor["miou"])


def _error_of(caplog: pytest.LogCaptureFixture) -> str:
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    return errors[0]


def _copy(pseudo_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pseudo_dir, tmp_path / "masks"))


@pytest.mark.parametrize("damage, message", [
    ("empty", "no trimap PNGs"),
    ("missing", "masks missing (first: 000003.png)"),
    ("size", "size 32x32, expected a one-channel 64x64 trimap"),
    ("rgb", "size 64x64x3"),
    ("values", "values [0, 7] outside the trimap's {1, 2, 3}"),
    ("not_png", "not a readable PNG"),
    ("no_folder", "no such masks folder"),
])
def test_a_masks_folder_that_does_not_fit_is_one_error_line_and_exit_2(
        damage: str, message: str, pseudo_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = _copy(pseudo_dir, tmp_path)
    if damage == "empty":
        shutil.rmtree(folder)
        folder.mkdir()
    elif damage == "missing":
        (folder / "000003.png").unlink()
    elif damage == "size":
        Image.fromarray(np.full((32, 32), 2, np.uint8)).save(folder / "000005.png")
    elif damage == "rgb":
        Image.fromarray(np.full((64, 64, 3), 2, np.uint8)).save(folder / "000005.png")
    elif damage == "values":
        tri = np.full((64, 64), 2, np.uint8)
        tri[0, 0], tri[1, 1] = 0, 7
        Image.fromarray(tri).save(folder / "000005.png")
    elif damage == "not_png":
        (folder / "000005.png").write_bytes(b"not an image")
    elif damage == "no_folder":
        folder = tmp_path / "nowhere"
    assert segment.cli(seg_args(tmp_path, folder)) == 2
    assert message in _error_of(caplog)
    assert not (tmp_path / "ck" / "seg.pt").exists()


def test_masks_of_another_dataset_are_refused(pseudo_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # the manifest says 3 classes, random appearance, 64 px: asking for another dataset is refused
    for option in (["--num-classes", "4"], ["--appearance", "informative"], ["--image-size", "96"],
                   ["--data-seed", "5"], ["--dataset", "pets"]):
        caplog.clear()
        assert segment.cli(seg_args(tmp_path, pseudo_dir, "seg", *option)) == 2, option
        assert f"the masks in {pseudo_dir} were made from name synthetic, image_size 64" in _error_of(caplog)
    # a manifest that names another dataset than its files fit is refused by the files
    folder = _copy(pseudo_dir, tmp_path)
    manifest = json.loads((folder / postprocess.MANIFEST_NAME).read_text())
    manifest["dataset"]["image_size"] = 80
    (folder / postprocess.MANIFEST_NAME).write_text(json.dumps(manifest))
    caplog.clear()
    assert segment.cli(seg_args(tmp_path, folder)) == 2
    assert "expected a one-channel 80x80 trimap" in _error_of(caplog)


def test_a_folder_without_manifest_is_accepted_when_its_files_fit(
        pseudo_dir: Path, tmp_path: Path, no_progress: None, caplog: pytest.LogCaptureFixture) -> None:
    folder = _copy(pseudo_dir, tmp_path)
    (folder / postprocess.MANIFEST_NAME).unlink()
    # without a manifest the defaults apply: 112 px does not fit these 64 px masks
    assert segment.cli(seg_args(tmp_path, folder)) == 2
    assert "expected a one-channel 112x112 trimap" in _error_of(caplog)
    args = seg_args(tmp_path, folder, "seg", "--image-size", "64", "--num-classes", "3", "--steps", "1")
    assert segment.cli(args) == 0
    ckpt = load_segmentation_checkpoint(tmp_path / "ck" / "seg.pt")
    assert ckpt.masks["manifest"] is None and ckpt.masks["miou"] is None and ckpt.dataset["num_classes"] == 3


def test_the_error_reaches_stderr_as_one_line_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = subprocess.run([sys.executable, "-m", "crm_core.segment", *seg_args(tmp_path, tmp_path / "empty")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR crm_core.segment:") and "no trimap PNGs" in lines[0]


def test_segmentation_and_cam_checkpoints_refuse_each_other(
        pseudo_dir: Path, cam_checkpoint: Path, tmp_path: Path, no_progress: None,
        caplog: pytest.LogCaptureFixture) -> None:
    assert segment.cli(seg_args(tmp_path, pseudo_dir, "seg", "--steps", "0")) == 0
    seg_path = tmp_path / "ck" / "seg.pt"
    for load in (load_checkpoint, inspect_checkpoint, CamModel.load, read_checkpoint):
        with pytest.raises(CheckpointError, match="a stage-2 segmentation network .* not a CAM classifier"):
            load(seg_path)
    with pytest.raises(CheckpointError, match="not a stage-2 segmentation network"):
        load_segmentation_checkpoint(cam_checkpoint)
    # the CLIs say so in one line: postprocess given a segmentation checkpoint, segment resuming a CAM one
    assert postprocess.cli(["--checkpoint", str(seg_path), "--out", str(tmp_path / "out")]) == 2
    assert "not a CAM classifier" in _error_of(caplog)
    caplog.clear()
    shutil.copy(cam_checkpoint, tmp_path / "ck" / "cam.pt")
    assert segment.cli(seg_args(tmp_path, pseudo_dir, "cam", "--resume")) == 2
    assert "not a stage-2 segmentation network" in _error_of(caplog)


def test_the_dashboards_cam_menus_refuse_a_stage2_checkpoint_with_the_reason(
        cam_checkpoint: Path, tmp_path: Path, no_progress: None) -> None:
    from demo.checkpoint_store import CheckpointStore

    assert segment.cli(seg_args(tmp_path, "gt", "seg", "--steps", "0", "--image-size", "64")) == 0
    shutil.copy(cam_checkpoint, tmp_path / "ck" / "cam.pt")
    store = CheckpointStore(tmp_path / "ck")
    assert store.names(verify=False) == ["cam"] and store.names() == ["cam"]
    assert "seg.pt: a stage-2 segmentation network" in store.refused()["seg"]
    assert "not a CAM classifier" in store.refused()["seg"]


def test_the_engine_shows_a_stage2_network_beside_a_cam_pseudo_mask_and_the_ground_truth(
        pseudo_dir: Path, cam_checkpoint: Path, tmp_path: Path, no_progress: None) -> None:
    from demo.engine import Engine
    from demo.inference import score_pseudo_mask

    assert segment.cli(seg_args(tmp_path, pseudo_dir, "seg", "--steps", "1")) == 0
    shutil.copy(cam_checkpoint, tmp_path / "ck" / "cam.pt")
    engine = Engine(tmp_path / "ck", tmp_path / "runs")
    assert engine.stage2.names() == ["seg"] and engine.checkpoints.names() == ["cam"]
    view = engine.stage2.view("seg", "cam", 2)
    data = segment.build_dataset("synthetic", "test", image_size=64, num_classes=3)  # the network's dataset
    assert np.array_equal(view.sample.mask, data[2]["mask"].numpy()) and view.sample.image.shape == (64, 64, 3)
    assert view.prediction.shape == (64, 64) and set(np.unique(view.prediction)) <= {1, 2}
    assert view.prediction_scores == score_pseudo_mask((view.prediction == 1).astype(np.float32), view.sample.mask, 0.5)
    cam = engine.inference.cam("cam", view.sample.image, class_index=view.sample.label).cam
    assert np.array_equal(view.pseudo, postprocess.pseudo_trimap(torch.from_numpy(cam)[None])[0].numpy())
    assert view.pseudo_scores["miou"] == pytest.approx(score_pseudo_mask(cam, view.sample.mask, 0.45)["miou"])
    assert "stage-2 fcn_resnet18" in view.description and engine.stage2.view("seg", None, 2).pseudo is None
    assert "(object ≥ 0.45; background < 0.20)" in view.description  # the band its masks were cut at
    with pytest.raises(CheckpointError, match="not a stage-2 segmentation network"):
        engine.stage2.view("cam", None, 0)
    with pytest.raises(ValueError, match="index must be in 0..199"):
        engine.stage2.view("seg", None, 200)


def test_pets_folder_works_unchanged(pets_root: Path, tmp_path: Path, no_progress: None) -> None:
    """The whole path on a torchvision-layout pets folder: CAM model, pseudo masks, stage 2."""
    from crm_core.train import main

    cam = main(tiny_config(tmp_path, name="pets_cam", model="resnet", crm=False, dataset="pets",
                           data_root=str(pets_root), image_size=48, weights="none", steps=1, train_size=None, val_limit=2))
    out = tmp_path / "pseudo"
    postprocess.write_pseudo_masks(CamModel.load(cam), out, "train", progress=False)
    assert json.loads((out / postprocess.MANIFEST_NAME).read_text())["dataset"]["name"] == "pets"
    for masks, name in ((out, "pets_pseudo"), ("gt", "pets_gt")):
        extra = ["--dataset", "pets", "--data-root", str(pets_root), "--image-size", "48"] if masks == "gt" else []
        assert segment.cli(seg_args(tmp_path, masks, name, "--steps", "1", "--batch-size", "2", *extra)) == 0
        results = RunDir(tmp_path / "runs" / name).read_eval()
        assert results["dataset"]["name"] == "pets" and results["num_images"] == 6  # the fake test split
        assert 0.0 <= results["miou"] <= 1.0 and set(results["coverage"]) == {"pet"}


@pytest.mark.parametrize("arch", sorted(SEG_ARCHS))
def test_every_arch_segments_and_loads_its_imagenet_backbone_by_name(arch: str) -> None:
    import torchvision.models as tvm

    net = SegmentationNet(arch)
    assert net(torch.rand(2, 3, 64, 64)).shape == (2, 2, 64, 64)
    classifier = {"lraspp_mobilenet_v3_large": tvm.mobilenet_v3_large, "deeplabv3_mobilenet_v3_large": tvm.mobilenet_v3_large,
                  "fcn_resnet18": tvm.resnet18}[arch](weights=None)
    net.load_backbone(classifier.state_dict())
    first = next(iter(net.net.backbone.state_dict().items()))
    prefix = SEG_ARCHS[arch].backbone_prefix
    assert torch.equal(first[1], classifier.state_dict()[prefix + first[0]])
    with pytest.raises(ValueError, match="lack"):
        net.load_backbone({})


def test_imagenet_weights_offline_are_a_clear_error(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                    network_attempts: list) -> None:
    assert segment.cli(["--masks", "gt", "--name", "w", "--weights", "imagenet", "--steps", "0", "--image-size", "64",
                        "--checkpoint-dir", str(tmp_path / "ck"), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "ImageNet weights are not available offline" in _error_of(caplog)
    assert network_attempts == []


def test_bench_section_times_every_arch_and_reports_it(no_progress: None) -> None:
    from crm_core.experiments import bench

    doc = bench.run_all(bench.BenchConfig(tiny=True, sections=("segment_step",)))
    result = doc["details"]["segment_step"]
    assert set(result["step_s"]) == set(SEG_ARCHS) and result["fastest_step"] in SEG_ARCHS
    assert all(v > 0 for v in result["train_ms_per_image"].values())
    assert doc["segment_step_s"] == result["step_s"][DEFAULT_SEG_ARCH]["median"] > 0
    text = bench.format_tables(doc)
    assert "### 7. Stage 2: segmentation networks (48 px, batch 2, cpu)" in text
    assert all(f"| {arch} |" in text for arch in SEG_ARCHS)


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path: Path) -> None:
    result = torchrun("crm_core.segment", seg_args(tmp_path, "gt", "ddp", "--image-size", "64", "--train-size", "16",
                                                   "--batch-size", "2", "--log-every", "1"))
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = load_segmentation_checkpoint(tmp_path / "ck" / "ddp.pt")
    assert ckpt.step == 2 and ckpt.seg_config["extra"]["world_size"] == 2
    rows = RunDir(tmp_path / "runs" / "ddp").read_metrics()
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2]  # rank 0 alone writes
    assert RunDir(tmp_path / "runs" / "ddp").read_eval()["num_images"] == 6


def test_progress_and_stop_callbacks_save_a_loadable_scored_network(pseudo_dir: Path, tmp_path: Path,
                                                                    no_progress: None) -> None:
    rows: list = []
    cfg = segment.SegConfig(name="stopped", masks=str(pseudo_dir), arch=ARCH, steps=50, batch_size=4, test_limit=4,
                            device="cpu", checkpoint_dir=str(tmp_path / "ck"), runs_dir=str(tmp_path / "runs"))
    path = segment.main(cfg, on_progress=rows.append, should_stop=lambda: len(rows) >= 2)
    assert [r["step"] for r in rows] == [1, 2] and all(r["max_steps"] == 50 and r["loss_total"] > 0 for r in rows)
    assert load_segmentation_checkpoint(path).step == 2  # saved when stopped, resumable
    results = RunDir(tmp_path / "runs" / "stopped").read_eval()
    assert results["stopped"] is True and results["step"] == 2 and results["steps"] == 50 and results["num_images"] == 4
