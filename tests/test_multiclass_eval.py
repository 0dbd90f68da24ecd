"""The multi-class CAM protocol for several objects per image: each image's classes compete with a
background score; the mIoU over background + classes, checked against torchmetrics' confusion
matrix and IoU, and evaluate's eval.json on multi-object data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from crm_core.metrics import ClassMapCurve, confusion_ious


def _random_case(seed: int, batch: int = 6, classes: int = 4, size: int = 12):
    g = torch.Generator().manual_seed(seed)
    cams = (torch.rand(batch, classes, size, size, generator=g) * 100).round() / 100  # ties with the grid
    labels = (torch.rand(batch, classes, generator=g) < 0.5).float()
    labels[torch.arange(batch), torch.randint(classes, (batch,), generator=g)] = 1.0  # one class at least
    truth = torch.randint(0, classes + 1, (batch, size, size), generator=g)
    truth[torch.rand(batch, size, size, generator=g) < 0.1] = 255
    parts = torch.randint(0, 3, (batch, size, size), generator=g).to(torch.uint8)
    return cams, labels, truth, parts


def _prediction(cams: torch.Tensor, labels: torch.Tensor, background: float) -> torch.Tensor:
    """IRN's rule written out: stack the background score before the CAMs of the present classes
    and take the argmax; a class's CAM equal to the score wins (as a binary CAM's does)."""
    scores = torch.cat([torch.full_like(cams[:, :1], background - 1e-6),
                        torch.where(labels.bool()[:, :, None, None], cams, torch.full_like(cams, -1.0))], 1)
    return scores.argmax(1)


@pytest.mark.parametrize("background", [0.0, 0.3, 0.55, 0.99])
def test_the_multi_class_miou_matches_torchmetrics(background: float) -> None:
    curve = ClassMapCurve(4, part_ids=(1, 2))
    oracle = MulticlassJaccardIndex(num_classes=5, ignore_index=255, average=None, zero_division=float("nan"))
    for seed in range(3):  # accumulated over batches, as over a split
        cams, labels, truth, parts = _random_case(seed)
        curve.add(cams, labels, truth, parts)
        oracle.update(_prediction(cams, labels, background), truth)
    index = curve.index_of(background)
    assert curve.thresholds[index] == pytest.approx(background)
    ours = curve.at(index)
    expected = oracle.compute().double().numpy()
    assert np.allclose(ours["per_class_iou"], expected, equal_nan=True, atol=1e-6)
    assert ours["miou"] == pytest.approx(float(np.nanmean(expected)), abs=1e-6)
    assert ours["fg_iou"] == pytest.approx(float(np.nanmean(expected[1:])), abs=1e-6)


def test_confusion_false_positives_and_coverage_by_hand() -> None:
    """Two animals of classes 0 and 2 in a 2x4 image: one pixel of class 2 goes to class 0, one
    background pixel to class 2, one head pixel stays below the background score."""
    truth = torch.tensor([[[1, 1, 3, 3], [0, 0, 3, 255]]])
    parts = torch.tensor([[[2, 1, 2, 1], [0, 0, 1, 0]]], dtype=torch.uint8)
    class0 = torch.tensor([[0.9, 0.2, 0.8, 0.1], [0.0, 0.0, 0.1, 0.9]])
    class2 = torch.tensor([[0.1, 0.7, 0.1, 0.9], [0.0, 0.6, 0.9, 0.1]])
    cams = torch.stack([class0, torch.ones(2, 4), class2, torch.ones(2, 4)])[None]  # classes 1, 3: absent
    labels = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    curve = ClassMapCurve(4, part_ids=(1, 2))
    curve.add(cams, labels, truth, parts)
    index = curve.index_of(0.5)
    confusion = curve.confusion_at(index)
    # truth 1 (class 0): pixel 0 -> class 0 (0.9); pixel 1: class 2 leads at 0.7 -> confused
    # truth 3 (class 2): pixel 2 -> class 0 (0.8) confused; pixel 3 -> class 2; pixel 6 -> class 2
    # background: pixel 4 -> background (0.0), pixel 5 -> class 2 (0.6); pixel 7 ignored
    assert confusion[1].tolist() == [0, 1, 0, 1, 0] and confusion[3].tolist() == [0, 1, 0, 2, 0]
    assert confusion[0].tolist() == [1, 0, 0, 1, 0] and int(confusion.sum()) == 7
    at = curve.at(index)
    assert at["confusion"] == pytest.approx(2 / 5) and at["bg_fpr"] == pytest.approx(1 / 2)
    coverage = curve.coverage_at(index, {1: "body", 2: "head"})
    assert coverage == {"body": pytest.approx(2 / 3), "head": pytest.approx(1 / 2)}  # pixel 2 (head) went to class 0
    assert confusion_ious(np.eye(3))["miou"] == 1.0


def test_evaluate_writes_the_multi_class_protocol_for_several_objects(tmp_path: Path) -> None:
    from crm_core.evaluate import cli as evaluate_cli
    from crm_core.train import cli as train_cli

    assert train_cli(["--arch", "resnet18", "--model", "resnet", "--steps", "0", "--max-objects", "3",
                      "--appearance", "informative", "--image-size", "64", "--name", "multi", "--no-crm",
                      "--checkpoint-dir", str(tmp_path / "ck"), "--runs-dir", str(tmp_path / "runs")]) == 0
    assert evaluate_cli(["--checkpoint", str(tmp_path / "ck" / "multi.pt"), "--limit", "12", "--val-limit", "12",
                         "--runs-dir", str(tmp_path / "runs"), "--samples", "0"]) == 0
    result = json.loads((tmp_path / "runs" / "multi" / "eval.json").read_text())
    at = result["cam_miou_val_threshold"]
    assert result["multi_label"] and set(at["per_class_iou"]) == {"background", "stripes_h", "stripes_v", "checker",
                                                                    "dots"}
    assert 0 <= at["miou"] <= 1 and 0 <= at["confusion"] <= 1 and 0 <= at["threshold"] <= 1
    assert {"f1", "map", "accuracy"} <= set(result) and "pxap" not in result
    assert set(result["coverage_val_threshold"]) == {"body", "head"}
