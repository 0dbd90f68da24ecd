"""The property the synthetic dataset exists for: high accuracy, yet the plain CAM lights the
(class-deciding) head far more than the (shared) body -- and the metric cannot be won by doing
nothing: a trained plain model beats the untrained floor. Measured on the demo set's plain model
(trained as ``python app.py`` trains it) against the same architecture with no training step."""
from __future__ import annotations

from pathlib import Path

import pytest

from crm_core.evaluate import evaluate_checkpoint
from crm_core.train import TrainConfig
from crm_core.train import main as train_main
from demo.bootstrap import demo_config


def _val_threshold_result(path: Path) -> dict:
    return evaluate_checkpoint(path, limit=96, val_limit=96)


@pytest.mark.slow
def test_plain_classifier_is_accurate_covers_the_head_not_the_body_and_beats_the_floor(
        demo_set: dict[str, Path], tmp_path: Path) -> None:
    trained = _val_threshold_result(demo_set["checkpoints"] / "resnet.pt")
    floor_config = dict(demo_config("resnet", tmp_path / "checkpoints", tmp_path / "runs", steps=0), name="floor")
    floor = _val_threshold_result(train_main(TrainConfig(**floor_config)))
    coverage = trained["coverage_val_threshold"]
    assert trained["accuracy"] >= 0.9, trained["accuracy"]  # chance is 0.25
    assert coverage["head"] >= 2 * coverage["body"], coverage
    # The target is a gap of 0.10; the plain model does not reach it (README, results: +0.03
    # to +0.06 over seeds). A plain CAM that lights only the head is a poor segmentation of
    # head + body, so a saliency blob comes close; the CRM model clears the floor by ~0.15.
    gap = trained["cam_miou_val_threshold"]["miou"] - floor["cam_miou_val_threshold"]["miou"]
    assert gap >= 0.03, (trained["cam_miou_val_threshold"], floor["cam_miou_val_threshold"])
