"""Shared fixtures: tiny training configs, a session-wide pair of trained checkpoints, and
:func:`require` for the optional test dependencies."""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Iterator

import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


#: Set to 1 in CI (.ci/run): a missing test dependency then fails the tests that need it
#: instead of skipping them (as CRM_LAB_REQUIRE_BROWSER does for the browser tests).
REQUIRE_DEPS = "CRM_LAB_REQUIRE_DEPS"


def require(module: str) -> ModuleType:
    """Import the test dependency ``module`` (requirements-test.txt) for the calling test.

    Missing, the test is skipped, or fails when CRM_LAB_REQUIRE_DEPS=1, so a broken install
    cannot pass CI by skipping. Call it in a test or fixture, never at module level, where a
    skip would silently drop every test of the file.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        message = f"{module} is not installed (pip install -r requirements-test.txt): {exc}"
        if os.environ.get(REQUIRE_DEPS) == "1":
            pytest.fail(f"{REQUIRE_DEPS}=1 but {message}", pytrace=False)
        pytest.skip(message)


@pytest.fixture
def grad_cam_package() -> ModuleType:
    """The grad-cam package (pytorch_grad_cam), the Grad-CAM++ oracle; see :func:`require`."""
    return require("pytorch_grad_cam")


@pytest.fixture
def network_attempts(monkeypatch: pytest.MonkeyPatch) -> list:
    """No network for this test: sockets and torchvision's pets download raise, and each attempt
    is recorded in the returned list (a test asserts it stays empty)."""
    import socket

    import torchvision.datasets.oxford_iiit_pet as tv_pets

    attempts: list = []

    def no_network(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(tv_pets, "download_and_extract_archive", no_network)
    return attempts


@pytest.fixture
def no_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    """No tqdm bars from training in this test (CRM_LAB_NO_PROGRESS=1, restored afterwards)."""
    monkeypatch.setenv("CRM_LAB_NO_PROGRESS", "1")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Superpixel cache and torch hub in a temp folder: tests never touch the user's caches."""
    root = tmp_path_factory.mktemp("cache")
    hub = torch.hub.get_dir()
    with pytest.MonkeyPatch.context() as mp:  # session-wide, restored when the session ends
        mp.setenv("CRM_LAB_CACHE", str(root / "crm_lab"))
        mp.setenv("TORCH_HOME", str(root / "torch"))
        torch.hub.set_dir(str(root / "torch" / "hub"))
        yield
    torch.hub.set_dir(hub)


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
    paths = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRM_LAB_NO_PROGRESS", "1")
        for variant in ("resnet", "resnet_drs"):
            paths[variant] = main(tiny_config(root, name=variant, model=variant, steps=2))
    paths["root"] = root
    return paths


#: The demo models the evidence and first-visit tests need: the plain CAM and the CRM one.
DEMO_SET_NAMES = ("resnet", "resnet_drs_crm")


@pytest.fixture(scope="session")
def demo_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``resnet`` and ``resnet_drs_crm`` trained exactly as ``python app.py`` bootstraps them
    (demo.bootstrap.DEMO_RECIPE, side by side, eval.json at the val-chosen threshold). Minutes: slow
    tests only. Returns {"checkpoints": dir, "runs": dir}."""
    from demo.bootstrap import bootstrap_demo

    root = tmp_path_factory.mktemp("demo_set")
    dirs = {"checkpoints": root / "checkpoints", "runs": root / "runs"}
    bootstrap_demo(dirs["checkpoints"], dirs["runs"], processes=len(DEMO_SET_NAMES), names=DEMO_SET_NAMES)
    return dirs


# Oxford pets on a fake folder with torchvision's layout (oxford-iiit-pet/images, annotations/trimaps,
# annotations/{trainval,test}.txt): 3 breeds x 7 random images of 40-90 px, 5 trainval + 2 test each.
PETS_BREEDS = [("Abyssinian", 1, 1), ("Bengal", 1, 2), ("beagle", 2, 1)]  # (name, species, breed id)


def make_pets_folder(root: Path) -> Path:
    """Write the fake pets folder under ``root`` (its data_root) and return ``root``."""
    import numpy as np
    from PIL import Image

    base = root / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations" / "trimaps").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines: dict[str, list[str]] = {"trainval": [], "test": []}
    modes = ["RGB", "L", "CMYK"]
    for class_id, (breed, species, breed_id) in enumerate(PETS_BREEDS, start=1):
        for n in range(1, 8):
            image_id = f"{breed}_{n}"
            w, h = int(rng.integers(40, 90)), int(rng.integers(40, 90))
            img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(modes[n % 3])
            img.save(base / "images" / f"{image_id}.jpg", quality=90)
            tri = np.full((h, w), 2, np.uint8)
            tri[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 3
            tri[h // 4 + 2: 3 * h // 4 - 2, w // 4 + 2: 3 * w // 4 - 2] = 1
            Image.fromarray(tri).save(base / "annotations" / "trimaps" / f"{image_id}.png")
            split = "test" if n > 5 else "trainval"
            lines[split].append(f"{image_id} {class_id} {species} {breed_id}")
    for split, rows in lines.items():
        (base / "annotations" / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def pets_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fake Oxford pets folder (:func:`make_pets_folder`); its path is the data_root."""
    return make_pets_folder(tmp_path_factory.mktemp("pets"))


def torchrun(module: str, args: list[str], timeout: int = 300) -> "subprocess.CompletedProcess[str]":
    """``python -m <module> args`` as two data-parallel processes (torchrun, gloo on CPU), from the
    repository root, without progress bars; --standalone: a local rendezvous on a free port (a fixed
    port collides with any other run)."""
    import subprocess
    import sys

    env = dict(os.environ, CRM_LAB_NO_PROGRESS="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", module, *args]
    return subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True,
                          timeout=timeout)
