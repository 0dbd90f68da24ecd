"""Section 9, run only when asked (``--sections voc_training --device cuda``): training at PASCAL
VOC 2012's sizes, on a folder in VOC's layout that the bench writes itself (no VOC needed).

The folder holds ``images`` JPEGs of random content at 500 x 375 px (VOC's most common size;
train_aug has 10,582 images, VOC's own train list 1,464) and their class masks (one to three
rectangles of distinct classes with VOC's 255 boundary), so decoding, resizing and SLIC cost what
they cost on VOC. Then short training runs of the field's recipe, resnet50 at 448 px, batch 16,
whole network trained, plain and with the results' CRM recipe, each in a fresh process on
``device`` with ``workers`` data-loading workers and the trained images' superpixels cached (the
steady state after one epoch). Images/s and step time come from the steps after ``warmup``.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from crm_core.experiments.bench.throughput import bench_training
from crm_core.experiments.bench.train_step import CRM_RECIPE_LEVER, StepRecipe

VOC_IMAGE_SIZE = (500, 375)  # (width, height): VOC 2012's most common image size
VOC_TRAIN_IMAGES = 1464  # VOC 2012's segmentation train list
#: The field's CAM recipe on VOC: resnet50 at 448 px, output stride 16, batch 16, nothing frozen.
VOC_RECIPE = StepRecipe("voc_448", "resnet50", 448, 16, 16, "none", model="resnet", num_classes=20)
#: The same at toy sizes: for tests of the pipeline.
TINY_VOC_RECIPE = StepRecipe("voc_tiny", "resnet18", 64, 16, 2, "none", model="resnet", num_classes=20, n_segments=16)


def write_voc_sized_folder(root: str | Path, images: int = VOC_TRAIN_IMAGES, size: tuple[int, int] = VOC_IMAGE_SIZE,
                           seed: int = 0) -> Path:
    """Write a folder in VOC's layout under ``root`` (``images`` train images and a tenth as many
    val images, at least one) and return ``root``. Pixels are uniform noise; each mask holds one to
    three rectangles of distinct classes, each ringed by VOC's 255 boundary."""
    from crm_core.data.voc import voc_palette

    base = Path(root) / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    palette = voc_palette()
    for voc_list, count in (("train", images), ("val", max(1, images // 10))):
        ids = [f"bench_{voc_list}_{i:05d}" for i in range(count)]
        for image_id in ids:
            mask = np.zeros((height, width), dtype=np.uint8)
            classes = rng.choice(np.arange(1, 21), size=int(rng.integers(1, 4)), replace=False)
            for cls in classes:
                x0, y0 = int(rng.integers(0, width * 3 // 4)), int(rng.integers(0, height * 3 // 4))
                x1, y1 = int(rng.integers(x0 + 8, width + 1)), int(rng.integers(y0 + 8, height + 1))
                mask[max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 1] = 255
                mask[y0:y1, x0:x1] = cls
            png = Image.fromarray(mask, mode="P")
            png.putpalette(palette)
            png.save(base / "SegmentationClass" / f"{image_id}.png")
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(base / "JPEGImages" / f"{image_id}.jpg", quality=90)
        (base / "ImageSets" / "Segmentation" / f"{voc_list}.txt").write_text("\n".join(ids) + "\n")
    return Path(root)


def bench_voc_training(device: str = "cuda", steps: int = 20, images: int = VOC_TRAIN_IMAGES,
                       recipe: StepRecipe = VOC_RECIPE, workers: int = 4, warmup_steps: int = 2,
                       size: tuple[int, int] = VOC_IMAGE_SIZE) -> dict[str, Any]:
    """Images/s and step time of ``steps``-step trainings of ``recipe`` on a VOC-sized folder:
    plain, and with CRM (the results' recipe: fast preset, L1 x30, gate, perceptual term off as
    without ImageNet VGG19); ``crm_step_ratio`` is CRM's step time over the plain one."""
    if steps <= warmup_steps + 1:
        raise ValueError(f"steps must exceed warmup_steps + 1 ({warmup_steps + 1}) to time a step, got {steps}")
    with tempfile.TemporaryDirectory(prefix="crm_bench_voc_") as tmp:
        root = write_voc_sized_folder(Path(tmp) / "voc", images=images, size=size)
        train_size = min(images, recipe.batch_size * steps)
        data = {"dataset": "voc", "data_root": str(root), "device": device, "workers": workers,
                "val_limit": recipe.batch_size, "train_size": train_size,
                "epochs": math.ceil(recipe.batch_size * steps / train_size)}  # a small folder: several epochs
        runs = [("voc_plain", recipe, False, data), ("voc_crm", recipe, True, {**data, **CRM_RECIPE_LEVER})]
        results = bench_training(runs, steps=steps, warmup_steps=warmup_steps)
    plain, crm = results["voc_plain"], results["voc_crm"]
    return {"recipe": recipe.__dict__, "device": device, "images": images, "image_size_on_disk": list(size),
            "workers": workers, "steps": steps, "runs": results,
            "crm_step_ratio": crm["step_s"] / plain["step_s"]}
