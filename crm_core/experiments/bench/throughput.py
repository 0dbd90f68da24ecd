"""Sections 3 and 6: training throughput and peak memory, each run in a fresh process.

3. :func:`bench_training` -- images/s and peak RSS of short training runs (synthetic data unless
   a run's overrides name another dataset: section 9's VOC-sized folder).
6. :func:`bench_scale` -- ``torchrun`` with 1 process x 2 threads against 2 processes x 1 thread.

The child is ``python -m crm_core.experiments.bench --worker-train CONFIG``: it trains through
``crm_core.train.main``, timestamps every step and writes :func:`train_worker`'s JSON.
"""
from __future__ import annotations

import json
import math
import os
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from crm_core.experiments.bench.train_step import StepRecipe
from crm_core.experiments.bench.workers import environ, run_python
from crm_core.data import SuperpixelCache, build_dataset

MB = 1024.0 * 1024.0


def _peak_rss_mb() -> dict[str, float]:
    """Peak resident set size of this process and of its waited-for children, MiB.

    On Linux the process's own peak is VmHWM from /proc/self/status: ``ru_maxrss`` survives
    ``fork`` + ``exec``, so a worker started by a big parent would report the parent's peak.
    """
    scale = 1.0 if sys.platform == "darwin" else 1024.0  # ru_maxrss: bytes on macOS, KiB on Linux
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MB
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                own = float(line.split()[1]) / 1024.0  # kB -> MiB
    except OSError:
        pass
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale / MB
    return {"self": own, "children_max": children}


def train_worker(config: dict[str, Any], out: str, warmup_steps: int) -> None:
    """Inside the subprocess: train, timestamp every step, report throughput and peak RSS."""
    from crm_core.train import TrainConfig
    from crm_core.train import main as train_main

    stamps: list[float] = []
    cfg = TrainConfig(**config)
    started = time.perf_counter()
    train_main(cfg, on_progress=lambda row: stamps.append(time.perf_counter()))
    total_s = time.perf_counter() - started
    if int(os.environ.get("RANK", "0")) != 0:
        return
    world = int(os.environ.get("WORLD_SIZE", "1"))
    timed = stamps[warmup_steps:]
    steps = len(timed) - 1
    seconds = timed[-1] - timed[0] if steps > 0 else math.nan
    images = steps * cfg.batch_size * world
    Path(out).write_text(json.dumps({
        "world_size": world, "steps_timed": steps, "seconds": seconds,
        "images_per_s": images / seconds if steps > 0 else math.nan,
        "step_s": seconds / steps if steps > 0 else math.nan,
        "peak_rss_mb": _peak_rss_mb(), "total_s": total_s, "torch_threads": torch.get_num_threads(),
        "resolved": {k: v for k, v in cfg.to_dict().items() if k in ("perceptual_size", "channels_last", "crm_preset")},
    }))


def run_train_subprocess(config: dict[str, Any], warmup_steps: int = 1, nproc: int = 1,
                         threads: int | None = None, timeout: float = 3600) -> dict[str, Any]:
    """Run :func:`train_worker` in a fresh interpreter (``torchrun`` when ``nproc > 1``)."""
    with tempfile.TemporaryDirectory(prefix="crm_bench_train_") as tmp:
        config = dict(config, checkpoint_dir=str(Path(tmp) / "checkpoints"), runs_dir=str(Path(tmp) / "runs"))
        out = Path(tmp) / "result.json"
        worker = ["-m", "crm_core.experiments.bench", "--worker-train", json.dumps(config), "--worker-out", str(out),
                  "--worker-warmup", str(warmup_steps)]
        if nproc > 1:
            worker = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *worker]
        env = {"CRM_LAB_NO_PROGRESS": "1", **({"OMP_NUM_THREADS": str(threads)} if threads is not None else {})}
        result, wall = run_python(worker, out, "training subprocess", env, timeout)
    result["process_wall_s"] = wall
    return result


def _prefill_superpixels(config: dict[str, Any], cache_root: Path) -> None:
    """Compute the SLIC labels of the run's training images once (steady state of training:
    after the first epoch every lookup hits the on-disk cache, keyed by the pixels)."""
    cache = SuperpixelCache(root=cache_root, n_segments=config.get("n_segments", 64))
    dataset = build_dataset(config.get("dataset", "synthetic"), "train", image_size=config["image_size"],
                            num_classes=config.get("num_classes", 4), data_root=config.get("data_root"),
                            superpixels=cache, length=config["train_size"], seed=config.get("seed", 0))
    for i in range(len(dataset)):
        dataset[i]


def training_config(recipe: StepRecipe, steps: int, crm: bool, **overrides: Any) -> dict[str, Any]:
    """A TrainConfig dict training ``steps`` steps of ``recipe`` on synthetic data in one epoch."""
    config = dict(name=f"bench_{recipe.name}", model=recipe.model, arch=recipe.arch, dataset="synthetic",
                  num_classes=recipe.num_classes, image_size=recipe.image_size, output_stride=recipe.output_stride,
                  batch_size=recipe.batch_size, freeze=recipe.freeze, weights="none", crm=crm, epochs=1, steps=steps,
                  train_size=recipe.batch_size * steps, perceptual_weights="random", align_warmup=0,
                  n_segments=recipe.n_segments, val_limit=recipe.batch_size, ckpt_every=10 ** 6, workers=1, seed=0,
                  device="cpu")
    config.update(overrides)
    return config


def bench_training(runs: list[tuple[str, StepRecipe, bool, dict[str, Any]]], steps: int, warmup_steps: int = 1) -> dict[str, Any]:
    """Images/s and peak RSS of short training runs, each in a fresh process.

    ``runs``: (label, recipe, crm, TrainConfig overrides). Superpixels are prefilled in a
    private cache (steady state); data loading runs in one worker, as the trainer's default.
    """
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="crm_bench_cache_") as cache:
        for label, recipe, crm, overrides in runs:
            config = training_config(recipe, steps, crm, **overrides)
            if crm:
                _prefill_superpixels(config, Path(cache) / "superpixels")
            with environ("CRM_LAB_CACHE", cache):
                result = run_train_subprocess(config, warmup_steps)
            results[label] = {"recipe": recipe.name, "crm": crm, "overrides": overrides,
                              "batch_size": recipe.batch_size, **result}
    return results


def bench_scale(recipe: StepRecipe, steps: int, global_batch: int = 16, crm_preset: str = "fast",
                warmup_steps: int = 1) -> dict[str, Any]:
    """Whole-job images/s of 1 process x 2 threads vs ``torchrun`` 2 processes x 1 thread,
    at the same global batch (so both runs optimise the same thing)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    results = {}
    with tempfile.TemporaryDirectory(prefix="crm_bench_cache_") as cache, environ("CRM_LAB_CACHE", cache):
        # (processes, threads each): the two ways to use the cores, and one process on one
        # thread to tell how much a second thread buys inside one process.
        for nproc, threads in ((1, cores), (2, max(1, cores // 2)), (1, 1)):
            per_proc = replace(recipe, batch_size=global_batch // nproc)
            config = training_config(per_proc, steps, True, crm_preset=crm_preset, workers=0,
                                     train_size=global_batch * steps)
            _prefill_superpixels(config, Path(cache) / "superpixels")
            results[f"{nproc}proc_x_{threads}threads"] = {
                "nproc": nproc, "threads_per_proc": threads, "per_process_batch": global_batch // nproc,
                **run_train_subprocess(config, warmup_steps, nproc=nproc, threads=threads)}
    one, two = list(results.values())[:2]
    return {"recipe": recipe.name, "global_batch": global_batch, "cores": cores, "runs": results,
            "speedup_2proc": two["images_per_s"] / one["images_per_s"]}
