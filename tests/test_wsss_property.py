"""The property the synthetic dataset exists for: high accuracy, yet the plain CAM lights
the (class-deciding) head far more than the (shared) body."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import tiny_config
from crm_core.api import CamModel, dataset_for
from crm_core.evaluate import evaluate_model
from crm_core.train import main as train_main


@pytest.mark.slow
def test_plain_classifier_is_accurate_but_its_cam_covers_the_head_not_the_body(tmp_path: Path) -> None:
    os.environ["CRM_LAB_NO_PROGRESS"] = "1"
    cfg = tiny_config(tmp_path, model="resnet", crm=False, num_classes=4, image_size=96, output_stride=16,
                      batch_size=16, train_size=1024, epochs=1, steps=60, val_limit=16, ckpt_every=1000)
    model = CamModel.load(train_main(cfg))
    result = evaluate_model(model, dataset_for(model, "test"), limit=96, progress=False)
    coverage = result["coverage_best"]
    assert result["accuracy"] >= 0.7, result["accuracy"]  # chance is 0.25
    assert coverage["head"] >= 2 * coverage["body"], coverage
