"""Shared fixtures: tiny training configs and a session-wide pair of trained checkpoints."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Superpixel cache and torch hub in a temp folder: tests never touch the user's caches."""
    root = tmp_path_factory.mktemp("cache")
    os.environ["CRM_LAB_CACHE"] = str(root / "crm_lab")
    os.environ["TORCH_HOME"] = str(root / "torch")
    torch.hub.set_dir(str(root / "torch" / "hub"))


def tiny_config(tmp_path: Path, **overrides):
    """A TrainConfig that trains in seconds on 2 CPU cores."""
    from crm_core.train import TrainConfig

    values = dict(
        name="tiny", model="resnet_drs", arch="resnet18", dataset="synthetic", num_classes=3, train_size=24,
        image_size=64, batch_size=4, epochs=1, steps=3, val_limit=8, workers=0,
        n_segments=16, align_warmup=0, checkpoint_dir=str(tmp_path / "checkpoints"), runs_dir=str(tmp_path / "runs"),
    )
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="session")
def trained_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """resnet and resnet_drs, both with CRM, trained for a few steps (shared by many tests)."""
    from crm_core.train import main

    root = tmp_path_factory.mktemp("pair")
    os.environ["CRM_LAB_NO_PROGRESS"] = "1"
    paths = {}
    for variant in ("resnet", "resnet_drs"):
        paths[variant] = main(tiny_config(root, name=variant, model=variant, steps=2))
    paths["root"] = root
    return paths
