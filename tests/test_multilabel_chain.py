"""Several objects per image end to end through the CLIs: train, evaluate, postprocess at the
val-chosen background score, and stage 2 on the class masks, on synthetic data with
--max-objects 3 and on a VOC-layout folder the test writes; bad VOC files stop each CLI in one line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crm_core.evaluate import cli as evaluate_cli
from crm_core.postprocess import cli as postprocess_cli
from crm_core.segment import cli as segment_cli
from crm_core.train import cli as train_cli
from tests.voc_fixture import write_train_aug, write_voc


def _chain(tmp_path: Path, name: str, data: list[str]) -> dict:
    ck, runs = str(tmp_path / "ck"), str(tmp_path / "runs")
    assert train_cli(["--arch", "resnet18", "--model", "resnet", "--steps", "2", "--epochs", "1", "--batch-size", "8",
                      "--perceptual", "none", "--align-warmup", "0", "--val-limit", "8", "--name", name,
                      "--checkpoint-dir", ck, "--runs-dir", runs, *data]) == 0
    checkpoint = str(tmp_path / "ck" / f"{name}.pt")
    assert evaluate_cli(["--checkpoint", checkpoint, "--limit", "8", "--val-limit", "8", "--runs-dir", runs,
                         "--samples", "0", *_root(data)]) == 0
    masks = tmp_path / f"{name}_masks"
    assert postprocess_cli(["--checkpoint", checkpoint, "--out", str(masks), "--at-val-threshold", "--val-limit", "8",
                            "--limit", "16", *_root(data)]) == 0
    assert segment_cli(["--masks", str(masks), "--name", f"{name}_seg", "--steps", "2", "--batch-size", "8",
                        "--test-limit", "8", "--checkpoint-dir", ck, "--runs-dir", runs, *_root(data)]) == 0
    evaluation = json.loads((tmp_path / "runs" / name / "eval.json").read_text())
    manifest = json.loads((masks / "manifest.json").read_text())
    stage2 = json.loads((tmp_path / "runs" / f"{name}_seg" / "eval.json").read_text())
    return {"eval": evaluation, "manifest": manifest, "stage2": stage2, "masks": masks}


def _root(data: list[str]) -> list[str]:
    return data[data.index("--data-root"):data.index("--data-root") + 2] if "--data-root" in data else []


def test_several_synthetic_objects_run_from_training_to_stage_2(tmp_path: Path) -> None:
    out = _chain(tmp_path, "multi", ["--max-objects", "3", "--appearance", "informative", "--train-size", "16",
                                     "--image-size", "64"])
    at = out["eval"]["cam_miou_val_threshold"]
    assert len(at["per_class_iou"]) == 5 and 0 <= at["confusion"] <= 1
    manifest = out["manifest"]
    assert manifest["format"] == "classes" and manifest["dataset"]["max_objects"] == 3
    assert manifest["val_threshold"] == manifest["high"] == at["threshold"]  # the band at the val-chosen score
    png = Image.open(out["masks"] / "000000.png")
    assert png.mode == "P" and set(np.unique(np.array(png))) <= {0, 1, 2, 3, 4, 255}
    stage2 = out["stage2"]
    assert stage2["dataset"]["max_objects"] == 3 and set(stage2["per_class_iou"]) == {
        "background", "stripes_h", "stripes_v", "checker", "dots"}
    from crm_core.checkpoints import load_segmentation_checkpoint

    assert load_segmentation_checkpoint(tmp_path / "ck" / "multi_seg.pt").net.num_classes == 5


@pytest.mark.parametrize("dataset", ["voc", "voc_aug"])
def test_a_voc_folder_runs_from_training_to_stage_2(tmp_path: Path, dataset: str) -> None:
    write_voc(tmp_path / "voc", train=18, val=8)
    if dataset == "voc_aug":
        write_train_aug(tmp_path / "voc", extra=8)  # 26 images, 23 of them train
    out = _chain(tmp_path, dataset, ["--dataset", dataset, "--data-root", str(tmp_path / "voc"), "--weights", "none",
                                     "--image-size", "64"])
    assert len(out["eval"]["cam_miou_val_threshold"]["per_class_iou"]) == 21
    assert out["manifest"]["format"] == "classes" and out["manifest"]["num_images"] == 16  # --limit 16
    assert len(out["stage2"]["per_class_iou"]) == 21 and 0 <= out["stage2"]["miou"] <= 1


def test_stage_2_refuses_binary_trimaps_for_multi_label_data(tmp_path: Path) -> None:
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray(np.full((64, 64), 2, dtype=np.uint8)).save(masks / "000000.png")
    (masks / "manifest.json").write_text(json.dumps({
        "kind": "pseudo-masks", "split": "train", "format": "trimap", "num_images": 1,
        "dataset": {"name": "synthetic", "image_size": 64, "num_classes": 4, "seed": 0, "appearance": "random",
                    "max_objects": 3, "data_root": None}}))
    assert segment_cli(["--masks", str(masks), "--name", "x", "--steps", "1", "--checkpoint-dir", str(tmp_path),
                        "--runs-dir", str(tmp_path)]) == 2


@pytest.mark.parametrize("damage", ["rgb", "value", "imagesets"])
def test_bad_voc_files_stop_each_cli_in_one_line(tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    write_voc(tmp_path / "voc", train=12, val=4)
    ck, runs = str(tmp_path / "ck"), str(tmp_path / "runs")
    assert train_cli(["--arch", "resnet18", "--model", "resnet", "--steps", "0", "--name", "voc", "--dataset", "voc",
                      "--data-root", str(tmp_path / "voc"), "--weights", "none", "--image-size", "64", "--no-crm", "--batch-size", "8",
                      "--checkpoint-dir", ck, "--runs-dir", runs]) == 0
    base = tmp_path / "voc" / "VOCdevkit" / "VOC2012"
    target = base / "SegmentationClass" / "2007_val_0002.png"
    if damage == "rgb":
        Image.open(target).convert("RGB").save(target)
    elif damage == "value":
        values = np.array(Image.open(target))
        values[0, 0] = 42
        bad = Image.fromarray(values, mode="P")
        bad.putpalette(Image.open(target).getpalette())
        bad.save(target)
    else:
        (base / "ImageSets" / "Segmentation" / "val.txt").unlink()
    caplog.clear()
    code = evaluate_cli(["--checkpoint", f"{ck}/voc.pt", "--runs-dir", runs, "--samples", "0", "--val-limit", "2",
                         "--threshold-split", "val"])
    assert code == 2
    errors = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0] and "Traceback" not in errors[0]
    expected = {"rgb": "palette (P) PNGs", "value": "mask values [42] are not classes", "imagesets": "val.txt"}[damage]
    assert expected in errors[0]


def test_the_results_table_runs_its_multi_object_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The multi-object rows through the results runner: cues, ceiling, floor, models and stage 2,
    scored by the multi-class protocol, in a table of their own with the class confusion."""
    from crm_core.experiments import results, results_summary
    from crm_core.experiments.results_table import ROW_BY_KEY

    monkeypatch.setenv("CRM_LAB_NO_PROGRESS", "1")
    rows = ["informative_m3_intensity", "informative_m3_perfect_object", "informative_m3_resnet_floor",
            "informative_m3_resnet", "informative_m3_stage2_constant", "informative_m3_stage2_resnet",
            "informative_m3_stage2_gt"]
    assert results.cli(["--rows", *rows, "--steps", "1", "--stage2-steps", "1", "--train-size", "16",
                        "--test-limit", "8", "--val-limit", "8", "--jobs", "1", "--allow-dirty",
                        "--checkpoint-dir", str(tmp_path / "ck"), "--runs-dir", str(tmp_path / "runs"),
                        "--out", str(tmp_path / "r.md"), "--json", str(tmp_path / "r.json")]) == 0
    jobs = {j["row"]: j for j in json.loads((tmp_path / "r.json").read_text())["jobs"]}
    assert set(jobs) == set(rows)
    for key in ("informative_m3_intensity", "informative_m3_perfect_object", "informative_m3_resnet",
                "informative_m3_stage2_constant"):
        assert 0 <= jobs[key]["confusion"] <= 1 and 0 <= jobs[key]["miou"] <= 1
    assert jobs["informative_m3_perfect_object"]["miou"] > jobs["informative_m3_intensity"]["miou"]
    from crm_core.checkpoints import load_checkpoint

    assert load_checkpoint(jobs["informative_m3_resnet"]["checkpoint"]).train_config["max_objects"] == 3
    stage2 = json.loads((tmp_path / "runs" / "results_informative_m3_stage2_resnet_s0" / "eval.json").read_text())
    assert len(stage2["per_class_iou"]) == 5 and jobs["informative_m3_stage2_resnet"]["miou"] == stage2["miou"]
    markdown = (tmp_path / "r.md").read_text()
    assert "1-3 objects of distinct classes per image" in markdown and "class confusion" in markdown
    assert results.select_rows(["main"], None, ["informative"], 3) == [ROW_BY_KEY["informative_m3_resnet"],
                                                                      ROW_BY_KEY["informative_m3_resnet_crm"]]
    assert all(r.max_objects == 1 for r in results.select_rows(["main"], None, ["informative"]))
    summary = results_summary.summarise(list(jobs.values()))
    assert summary["rows"]["informative_m3_resnet"]["max_objects"] == 3
