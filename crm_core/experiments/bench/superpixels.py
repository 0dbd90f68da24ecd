"""Section 5: the on-disk superpixel cache against recomputing SLIC for every batch."""
from __future__ import annotations

import tempfile
from typing import Any

import numpy as np

from crm_core.timing import time_interleaved
from crm_core.data import SuperpixelCache, build_dataset, slic_superpixels, to_uint8_image


def bench_superpixels(image_size: int = 112, batch: int = 16, n_segments: int = 64, repeats: int = 3) -> dict[str, Any]:
    """SLIC labels for one batch: recomputed vs looked up in the on-disk cache."""
    dataset = build_dataset("synthetic", "train", image_size=image_size, num_classes=4, length=batch)
    images = [to_uint8_image(dataset[i]["image"]) for i in range(batch)]  # uint8 HxWx3, as the datasets pass them
    with tempfile.TemporaryDirectory(prefix="crm_bench_sp_") as tmp:
        cache = SuperpixelCache(root=tmp, n_segments=n_segments)
        for image in images:
            cache.get(image)  # fill
        stats = time_interleaved({
            "recompute": lambda: [slic_superpixels(image, n_segments) for image in images],
            "cached": lambda: [cache.get(image) for image in images],
        }, repeats, warmup=0)
        assert all(np.array_equal(cache.get(im), slic_superpixels(im, n_segments)) for im in images[:2])
    return {"image_size": image_size, "batch": batch, "n_segments": n_segments,
            "recompute_s": stats["recompute"].as_dict(), "cached_s": stats["cached"].as_dict(),
            "speedup": stats["recompute"].median / stats["cached"].median}

