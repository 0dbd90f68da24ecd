"""First launch: train the demo pair so a fresh, offline clone opens on real models.

``resnet`` and ``resnet_drs``, both with CRM, on the synthetic dataset with
:data:`demo.engine.DEMO_RECIPE` (resnet18, 64 px, output stride 16). Each leaves
``checkpoints/<name>.pt`` and ``runs/<name>/`` (config, metrics.csv with the loss curves, eval.json).
tqdm shows the progress in the terminal.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from demo.engine import DEMO_PAIR, DEMO_RECIPE, Engine

log = logging.getLogger(__name__)


def needs_bootstrap(checkpoint_dir: str | Path) -> bool:
    """True when the folder holds no checkpoint at all."""
    return not any(Path(checkpoint_dir).glob("*.pt"))


def bootstrap_demo(checkpoint_dir: str | Path, runs_dir: str | Path, device: str = "cpu",
                   **overrides: Any) -> list[Path]:
    """Train the demo pair (skipping any that already exists); returns the checkpoint paths."""
    from crm_core.train import TrainConfig
    from crm_core.train import main as train_main

    engine = Engine(checkpoint_dir, runs_dir, device=device)
    Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
    paths = []
    started = time.perf_counter()
    for variant in DEMO_PAIR:
        path = Path(checkpoint_dir) / f"{variant}.pt"
        if path.is_file():
            paths.append(path)
            continue
        values = dict(DEMO_RECIPE, name=variant, model=variant, crm=True, checkpoint_dir=str(checkpoint_dir),
                      runs_dir=str(runs_dir), device=device)
        values.update(overrides)
        log.info("bootstrap: training %s (%s, %spx, %s steps)", variant, values["arch"], values["image_size"],
                 values["steps"])
        path = train_main(TrainConfig(**values))
        results = engine.write_eval(path)
        log.info("bootstrap: %s ready: accuracy %.3f, CAM mIoU %.3f (%d test images)", variant,
                 results["accuracy"], results["cam_miou_best"]["miou"], results["num_images"])
        paths.append(path)
    log.info("bootstrap finished in %.0f s", time.perf_counter() - started)
    return paths
