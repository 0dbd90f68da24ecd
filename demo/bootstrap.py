"""First launch: train the demo pair so a fresh, offline clone opens on real models.

``resnet`` and ``resnet_drs``, both with CRM, on the synthetic dataset with
:data:`demo.engine.DEMO_RECIPE` (resnet18, 64 px, output stride 16, 100 steps). Each leaves
``checkpoints/<name>.pt`` and ``runs/<name>/`` (config, metrics.csv with the loss curves, eval.json).

With two or more cores the two models train side by side, one process and one torch thread
each: on 64 px batches a second intra-op thread buys little (small convolutions, many
synchronisation points), while a second process uses the second core fully. Progress shows as
one tqdm bar per model in the terminal.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue as queue_module
import time
from pathlib import Path
from typing import Any

from demo.engine import DEMO_PAIR, DEMO_RECIPE

log = logging.getLogger(__name__)


def needs_bootstrap(checkpoint_dir: str | Path) -> bool:
    """True when the folder holds no checkpoint at all."""
    return not any(Path(checkpoint_dir).glob("*.pt"))


def demo_config(variant: str, checkpoint_dir: str | Path, runs_dir: str | Path, device: str = "cpu",
                **overrides: Any) -> dict[str, Any]:
    """TrainConfig values of one demo model."""
    values = dict(DEMO_RECIPE, name=variant, model=variant, crm=True, checkpoint_dir=str(checkpoint_dir),
                  runs_dir=str(runs_dir), device=device)
    values.update(overrides)
    return values


def train_one(values: dict[str, Any], eval_images: int = 64, on_progress: Any = None) -> tuple[Path, dict[str, Any]]:
    """Train one demo model and store its eval.json; returns (checkpoint, eval results)."""
    from crm_core.train import TrainConfig
    from crm_core.train import main as train_main
    from demo.engine import Engine

    path = train_main(TrainConfig(**values), on_progress=on_progress)
    engine = Engine(values["checkpoint_dir"], values["runs_dir"], device=values.get("device", "cpu"),
                    eval_limit=eval_images)
    return path, engine.write_eval(path)


def _worker(values: dict[str, Any], eval_images: int, events: Any) -> None:
    """Child process: one thread, progress rows sent to the parent (which draws the bars)."""
    import torch

    os.environ["CRM_LAB_NO_PROGRESS"] = "1"
    torch.set_num_threads(1)
    name = values["name"]
    try:
        path, results = train_one(values, eval_images, on_progress=lambda row: events.put((name, "step", row)))
        events.put((name, "done", {"path": str(path), "accuracy": results["accuracy"],
                                   "miou": results["cam_miou_best"]["miou"], "images": results["num_images"]}))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        events.put((name, "error", f"{type(exc).__name__}: {exc}"))


def _train_parallel(configs: list[dict[str, Any]], eval_images: int) -> list[Path]:
    from tqdm import tqdm

    context = mp.get_context("spawn")  # a clean interpreter per model (no forked torch state)
    events = context.Queue()
    workers = {c["name"]: context.Process(target=_worker, args=(c, eval_images, events), name=f"bootstrap-{c['name']}", daemon=True)
               for c in configs}
    bars = {c["name"]: tqdm(total=c["steps"], desc=c["name"], unit="step", position=i, dynamic_ncols=True)
            for i, c in enumerate(configs)}
    done: dict[str, dict[str, Any]] = {}
    try:
        for worker in workers.values():
            worker.start()
        while len(done) < len(workers):
            try:
                name, kind, payload = events.get(timeout=1.0)
            except queue_module.Empty:
                dead = [n for n, w in workers.items() if n not in done and not w.is_alive() and w.exitcode is not None]
                if dead and events.empty():
                    raise RuntimeError(f"bootstrap worker(s) {dead} exited without a result")
                continue
            if kind == "step":
                bar = bars[name]
                bar.update(payload["step"] - bar.n)
                bar.set_postfix({k.replace("loss_", ""): f"{v:.3f}" for k, v in payload.items()
                                 if k.startswith("loss_") or k == "accuracy"}, refresh=False)
            elif kind == "done":
                done[name] = payload
            else:
                raise RuntimeError(f"bootstrap of {name} failed: {payload}")
    finally:
        for bar in bars.values():
            bar.close()
        for worker in workers.values():
            if worker.is_alive() and len(done) < len(workers):
                worker.terminate()
            worker.join(timeout=30)
    for name, result in done.items():
        log.info("bootstrap: %s ready: accuracy %.3f, CAM mIoU %.3f (%d test images)", name, result["accuracy"],
                 result["miou"], result["images"])
    return [Path(done[c["name"]]["path"]) for c in configs]


def bootstrap_demo(checkpoint_dir: str | Path, runs_dir: str | Path, device: str = "cpu",
                   processes: int | None = None, eval_images: int = 64, **overrides: Any) -> list[Path]:
    """Train the demo pair (skipping any that already exists); returns the checkpoint paths.

    ``processes``: models trained at once (default: one per model when there are >= 2 CPU
    cores and the device is the CPU; 1 trains them one after the other in this process).
    """
    Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    existing = {v: Path(checkpoint_dir) / f"{v}.pt" for v in DEMO_PAIR}
    configs = [demo_config(v, checkpoint_dir, runs_dir, device, **overrides) for v in DEMO_PAIR
               if not existing[v].is_file()]
    if processes is None:
        processes = min(len(configs), os.cpu_count() or 1) if device == "cpu" else 1
    for values in configs:
        log.info("bootstrap: training %s (%s, %spx, output stride %s, batch %s, %s steps, CRM)", values["name"],
                 values["arch"], values["image_size"], values["output_stride"], values["batch_size"], values["steps"])
    if processes >= 2 and len(configs) >= 2:
        _train_parallel(configs, eval_images)
    else:
        for values in configs:
            path, results = train_one(values, eval_images)
            log.info("bootstrap: %s ready: accuracy %.3f, CAM mIoU %.3f (%d test images)", values["name"],
                     results["accuracy"], results["cam_miou_best"]["miou"], results["num_images"])
    log.info("bootstrap finished in %.0f s", time.perf_counter() - started)
    return [existing[v] for v in DEMO_PAIR]
