"""The field's CAM metrics, each against an independent implementation.

- PxAP (:func:`crm_core.metrics.pxap`, through :class:`ThresholdCurve`) against scikit-learn's
  ``average_precision_score`` on the pooled pixels: equal to 1e-12 when the map values are rounded
  down to the threshold grid (the binning is the only difference), within 0.01 on the raw values.
- Average Drop and Increase in Confidence (:class:`crm_core.metrics.Faithfulness`, as
  ``crm_core.evaluate`` computes them) against torchcam 0.5's ``ClassificationMetric`` given the
  same maps, on ResNet and EfficientNet: Increase in Confidence equal, Average Drop within 0.01
  percentage points (torchcam divides by Y + 1e-7, which tells where a barely trained model gives
  its class a probability near 1e-4).
- The pitfalls: a constant map's PxAP is the foreground's share (the floor), and the all-ones map
  has no drop and the largest area.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from functools import partial

import numpy as np
import pytest
import torch

from conftest import require, tiny_config
from crm_core.metrics import IGNORE, Faithfulness, ThresholdCurve, pxap
from crm_core.thresholds import THRESHOLDS


def _maps_and_masks(seed: int, n: int = 6, size: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps correlated with their masks (plus noise), with some ignored (255) pixels."""
    g = torch.Generator().manual_seed(seed)
    masks = (torch.rand(n, size, size, generator=g) < 0.3).long()
    maps = (0.5 * masks + 0.7 * torch.rand(n, size, size, generator=g)).clamp(0, 1)
    masks[:, 0, :] = IGNORE
    return maps, masks


def _sklearn_ap(maps: torch.Tensor, masks: torch.Tensor) -> float:
    metrics = require("sklearn.metrics")
    keep = masks != IGNORE
    return float(metrics.average_precision_score(masks[keep].numpy(), maps[keep].double().numpy()))


def _round_down_to_grid(maps: torch.Tensor) -> torch.Tensor:
    grid = torch.tensor(sorted(THRESHOLDS.grid), dtype=torch.float64)
    index = torch.searchsorted(grid, maps.double().contiguous(), right=True) - 1
    return grid[index.clamp_min(0)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pxap_is_sklearns_average_precision_of_the_pooled_pixels(seed: int) -> None:
    maps, masks = _maps_and_masks(seed)
    curve = ThresholdCurve(THRESHOLDS.grid)
    for i in range(0, len(maps), 4):  # pooled over batches, as evaluate adds them
        curve.add(maps[i:i + 4], masks[i:i + 4])
    binned = _round_down_to_grid(maps)
    exact = ThresholdCurve(THRESHOLDS.grid)  # grid values in float32 meet the curve's float32 thresholds
    exact.add(binned.float(), masks)
    assert exact.pxap() == pytest.approx(_sklearn_ap(binned, masks), abs=1e-12)
    assert curve.pxap() == pytest.approx(_sklearn_ap(maps, masks), abs=0.01)
    assert 0.3 < curve.pxap() < 1.0


def test_a_map_that_says_nothing_scores_the_foreground_share() -> None:
    maps, masks = _maps_and_masks(3)
    for value in (0.0, 0.4, 1.0):
        curve = ThresholdCurve(THRESHOLDS.grid)
        curve.add(torch.full_like(maps, value), masks)
        share = float((masks == 1).sum()) / float((masks != IGNORE).sum())
        assert curve.pxap() == pytest.approx(share, abs=1e-12)
        assert curve.pxap() == pytest.approx(_sklearn_ap(torch.full_like(maps, value), masks), abs=1e-12)
    perfect = ThresholdCurve(THRESHOLDS.grid)
    perfect.add((masks == 1).float(), masks)
    assert perfect.pxap() == pytest.approx(1.0)
    assert np.isnan(pxap(torch.zeros(3, 4, dtype=torch.int64), (0.0, 0.5, 0.9)))  # no foreground: undefined


def test_the_all_ones_map_has_no_drop_and_the_largest_area() -> None:
    y = torch.tensor([0.9, 0.6, 0.3])
    everything = Faithfulness()
    everything.add(y, y.clone(), torch.ones(3, 8, 8))  # E = image: the same probability
    point = Faithfulness()
    cams = torch.zeros(3, 8, 8)
    cams[:, 4, 4] = 1.0
    point.add(y, torch.tensor([0.45, 0.9, 0.3]), cams)
    assert everything.summary() == {"average_drop": 0.0, "increase_in_confidence": 0.0, "cam_area": 1.0}
    summary = point.summary()
    assert summary["average_drop"] == pytest.approx(100 * 0.5 / 3)  # only the first image drops, by half
    assert summary["increase_in_confidence"] == pytest.approx(100 / 3)
    assert summary["cam_area"] == pytest.approx(1 / 64) and summary["cam_area"] < everything.summary()["cam_area"]
    empty = Faithfulness()
    empty.add(y, y, torch.zeros(3, 8, 8))
    assert empty.summary()["cam_area"] == 0.0  # an empty map covers nothing, not everything


class _OurMaps:
    """torchcam's CAM-extractor interface over CRM Lab's maps, so that torchcam's metric scores
    exactly the maps evaluate scored (its own CAM methods would give other maps)."""

    def __init__(self, model, images: torch.Tensor, labels: torch.Tensor, maps: torch.Tensor | None = None) -> None:
        self.model = _Logits(model)  # torchcam calls .model(x) for the logits
        self._labels = labels
        # (B, H, W), as evaluate_model takes them: the model's CAMs, or the maps given
        self.maps = model.explain(images, labels).cams if maps is None else maps

    def __call__(self, class_idx, scores=None, normalized=True, **kwargs):
        assert list(class_idx) == self._labels.tolist()
        return [self.maps]

    def fuse_cams(self, cams):
        return cams[0]

    @contextmanager
    def _hooks_off(self):
        yield


class _Logits(torch.nn.Module):
    def __init__(self, cam_model) -> None:
        super().__init__()
        self.classifier = cam_model.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x).logits


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0"])
def test_average_drop_and_increase_in_confidence_match_torchcam(tmp_path, arch: str) -> None:
    metrics = require("torchcam.metrics")
    from crm_core.evaluate import evaluate_model
    from crm_core.explain import CamModel, dataset_for
    from crm_core.train import main as train_main

    cfg = tiny_config(tmp_path, name=f"faithful_{arch}", model="resnet", arch=arch, crm=False, steps=3)
    model = CamModel.load(train_main(cfg))
    dataset = dataset_for(model, "test")
    ours = evaluate_model(model, dataset, limit=12, batch_size=6, progress=False, reconstruction=False)
    oracle = metrics.ClassificationMetric(None, partial(torch.softmax, dim=-1))
    for start in (0, 6):
        batch = [dataset[i] for i in range(start, start + 6)]
        images = torch.stack([b["image"] for b in batch])
        labels = torch.tensor([int(b["label"]) for b in batch])
        oracle.cam_extractor = _OurMaps(model, images, labels)
        with torch.no_grad():
            oracle.update(images, class_idx=labels.tolist())
    theirs = oracle.summary()
    assert ours["average_drop"] == pytest.approx(100 * theirs["avg_drop"], abs=0.01)
    assert ours["increase_in_confidence"] == pytest.approx(100 * theirs["conf_increase"], abs=1e-9)
    assert 0.0 < ours["cam_area"] < 1.0 and 0.0 <= ours["pxap"] <= 1.0


def test_evaluate_writes_the_metrics_and_its_help_explains_them(tmp_path, capsys) -> None:
    from crm_core import evaluate
    from crm_core.train import main as train_main

    checkpoint = train_main(tiny_config(tmp_path, name="metrics_cli", steps=2))
    assert evaluate.cli(["--checkpoint", str(checkpoint), "--split", "test", "--limit", "8", "--val-limit", "8",
                         "--samples", "0", "--runs-dir", str(tmp_path / "runs")]) == 0
    written = json.loads((tmp_path / "runs" / "metrics_cli" / "eval.json").read_text())
    for key in ("pxap", "average_drop", "increase_in_confidence", "cam_area"):
        assert isinstance(written[key], float) and np.isfinite(written[key]), key
    assert "PxAP" in capsys.readouterr().out
    assert "deletion_auc" not in written  # basic: the default
    assert evaluate.cli(["--checkpoint", str(checkpoint), "--split", "test", "--limit", "4", "--val-limit", "4",
                         "--samples", "0", "--runs-dir", str(tmp_path / "runs"), "--faithfulness", "full"]) == 0
    full = json.loads((tmp_path / "runs" / "metrics_cli" / "eval.json").read_text())
    assert 0.0 <= full["deletion_auc"] <= 1.0 and 0.0 <= full["insertion_auc"] <= 1.0
    assert full["deletion_images"] == 4
    assert "deletion AUC" in capsys.readouterr().out
    assert evaluate.cli(["--checkpoint", str(checkpoint), "--split", "test", "--limit", "4", "--val-limit", "4",
                         "--samples", "0", "--runs-dir", str(tmp_path / "runs"), "--faithfulness", "full",
                         "--deletion-images", "1"]) == 0
    assert json.loads((tmp_path / "runs" / "metrics_cli" / "eval.json").read_text())["deletion_images"] == 1
    assert "over the first 1 image(s)" in capsys.readouterr().out
    assert evaluate.cli(["--checkpoint", str(checkpoint), "--deletion-images", "0"]) == 2
    assert evaluate.cli(["--checkpoint", str(checkpoint), "--split", "test", "--limit", "4", "--val-limit", "4",
                         "--samples", "0", "--runs-dir", str(tmp_path / "runs"), "--faithfulness", "none"]) == 0
    bare = json.loads((tmp_path / "runs" / "metrics_cli" / "eval.json").read_text())
    assert "average_drop" not in bare and "cam_area" not in bare and np.isfinite(bare["pxap"])
    help_text = evaluate.get_args_parser().format_help()
    for key in ("pxap", "average_drop", "increase_in_confidence", "cam_area", "deletion_auc", "insertion_auc",
                "--faithfulness {none,basic,full}"):
        assert key in help_text


@pytest.mark.parametrize("seed", [0, 4])
def test_one_images_pxap_counts_what_the_curve_counts(seed: int) -> None:
    from crm_core.metrics import pixel_ap

    maps, masks = _maps_and_masks(seed, n=2, size=33)
    curve = ThresholdCurve(THRESHOLDS.grid)
    curve.add(maps, masks)
    assert pixel_ap(maps, masks) == pytest.approx(curve.pxap(), abs=1e-12)
    edges = torch.tensor([[0.0, 0.3, 0.999, 1.0]]).repeat(4, 1)  # values exactly on the grid and below it
    target = torch.tensor([[0, 1, 1, 0]]).repeat(4, 1)
    curve = ThresholdCurve(THRESHOLDS.grid)
    curve.add(edges[None], target[None])
    assert pixel_ap(edges, target) == pytest.approx(curve.pxap(), abs=1e-12)


def test_deletion_and_insertion_match_torchcam(tmp_path) -> None:
    """RISE's deletion and insertion AUCs (crm_core.metrics.deletion_insertion, as evaluate computes
    them with --faithfulness full) against torchcam 0.5's DeletionInsertionMetric on the same maps:
    20 steps, a black baseline, softmax probabilities; equal to 1e-5 (float32 forward passes of
    differently batched inputs)."""
    metrics = require("torchcam.metrics")
    from crm_core.evaluate import evaluate_model
    from crm_core.explain import CamModel, dataset_for
    from crm_core.train import main as train_main

    model = CamModel.load(train_main(tiny_config(tmp_path, name="rise", model="resnet", crm=False, steps=3)))
    dataset = dataset_for(model, "test")
    ours = evaluate_model(model, dataset, limit=4, batch_size=4, progress=False, reconstruction=False,
                          deletion_steps=20)
    batch = [dataset[i] for i in range(4)]
    images = torch.stack([b["image"] for b in batch])
    labels = torch.tensor([int(b["label"]) for b in batch])
    oracle = metrics.DeletionInsertionMetric(_OurMaps(model, images, labels), partial(torch.softmax, dim=-1), steps=20)
    with torch.no_grad():
        oracle.update(images, class_idx=labels.tolist())
    theirs = oracle.summary()
    assert ours["deletion_auc"] == pytest.approx(theirs["deletion_auc"], abs=1e-5)
    assert ours["insertion_auc"] == pytest.approx(theirs["insertion_auc"], abs=1e-5)
    assert "deletion_auc" not in evaluate_model(model, dataset, limit=4, batch_size=4, progress=False,
                                                reconstruction=False)  # basic: not measured


def test_deletion_on_the_first_images_and_for_a_map_from_no_model_matches_torchcam(tmp_path) -> None:
    """``deletion_images`` draws the curves of the split's first N images only (here across a batch
    boundary: batches of 2, N = 3), for the CAM and for each map from no model beside it (ranked by
    that map, judged by the same classifier): both equal torchcam 0.5's DeletionInsertionMetric on
    those images and maps to 1e-5."""
    metrics = require("torchcam.metrics")
    from crm_core.evaluate import evaluate_model
    from crm_core.explain import CamModel, dataset_for
    from crm_core.train import main as train_main

    model = CamModel.load(train_main(tiny_config(tmp_path, name="rise_n", model="resnet", crm=False, steps=3)))
    dataset = dataset_for(model, "test")
    size = dataset[0]["image"].shape[-2:]
    noise = torch.rand(2, *size, generator=torch.Generator().manual_seed(7))  # no ties: a strict order

    def fixed_noise(images, grid, generator):
        return noise[:len(images)]

    ours = evaluate_model(model, dataset, limit=5, batch_size=2, progress=False, reconstruction=False,
                          deletion_steps=20, deletion_images=3, references={"noise": fixed_noise})
    assert ours["deletion_images"] == 3
    batch = [dataset[i] for i in range(4)]
    images = torch.stack([b["image"] for b in batch])
    labels = torch.tensor([int(b["label"]) for b in batch])
    with torch.no_grad():  # the CAMs as evaluate made them, batch by batch
        cams = torch.cat([model.explain(images[:2], labels[:2]).cams, model.explain(images[2:], labels[2:]).cams])
    for maps, scored in ((cams[:3], ours), (torch.cat([noise, noise[:1]]), ours["references"]["noise"])):
        oracle = metrics.DeletionInsertionMetric(_OurMaps(model, images[:3], labels[:3], maps),
                                                 partial(torch.softmax, dim=-1), steps=20)
        with torch.no_grad():
            oracle.update(images[:3], class_idx=labels[:3].tolist())
        theirs = oracle.summary()
        assert scored["deletion_auc"] == pytest.approx(theirs["deletion_auc"], abs=1e-5)
        assert scored["insertion_auc"] == pytest.approx(theirs["insertion_auc"], abs=1e-5)


def test_deletion_of_the_pixels_a_classifier_needs_first_scores_lower() -> None:
    """A toy classifier that reads one pixel: the map that ranks that pixel first deletes the evidence
    at once (deletion AUC near 0, insertion near 1); the map that ranks it last does the opposite."""
    from crm_core.metrics import deletion_insertion

    images = torch.zeros(1, 3, 4, 4)
    images[0, :, 1, 2] = 1.0

    def score(x: torch.Tensor) -> torch.Tensor:  # probability of the class: the pixel's brightness
        return x[:, 0, 1, 2]

    good, bad = torch.zeros(1, 4, 4), torch.ones(1, 4, 4)
    good[0, 1, 2], bad[0, 1, 2] = 1.0, 0.0
    d_good, i_good = deletion_insertion(score, images, good, steps=16)
    d_bad, i_bad = deletion_insertion(score, images, bad, steps=16)
    assert d_good.item() == pytest.approx(0.5 / 16) and i_good.item() == pytest.approx(1 - 0.5 / 16)
    assert d_bad.item() > 0.9 and i_bad.item() < 0.1
