"""Stage 2: one training step and one inference pass of every segmentation architecture
(:data:`crm_core.models.segmentation.SEG_ARCHS`), timed interleaved on one synthetic batch.

The default architecture of ``python -m crm_core.segment`` is the fastest step at the synthetic
default (112 px, batch 16); the per-image costs are what stage 2 adds to a WSSS run.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from crm_core.timing import time_interleaved
from crm_core.data import build_dataset
from crm_core.models.segmentation import SEG_ARCHS, SegmentationNet


def bench_segment_step(archs: tuple[str, ...] = tuple(SEG_ARCHS), image_size: int = 112, batch_size: int = 16,
                       repeats: int = 3, warmup: int = 1, device: str = "cpu") -> dict[str, Any]:
    """Seconds per training step (forward, CE with ignored pixels, backward, Adam) and per
    inference batch of each arch; returns a plain dict (min / median / max of each, and the
    median per image)."""
    data = build_dataset("synthetic", "train", image_size=image_size, length=batch_size)
    batch = [data[i] for i in range(batch_size)]
    images = torch.stack([b["image"] for b in batch]).to(device)
    targets = torch.stack([b["mask"] for b in batch]).to(device)
    torch.manual_seed(0)
    nets = {arch: SegmentationNet(arch).to(device) for arch in archs}
    optimizers = {arch: torch.optim.Adam(net.parameters(), lr=1e-3) for arch, net in nets.items()}
    loss_fn = nn.CrossEntropyLoss(ignore_index=255)

    def sync() -> None:
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()

    def train_step(arch: str):
        def run() -> None:
            net = nets[arch].train()
            optimizers[arch].zero_grad(set_to_none=True)
            loss_fn(net(images), targets).backward()
            optimizers[arch].step()
            sync()
        return run

    def infer(arch: str):
        def run() -> None:
            with torch.no_grad():
                nets[arch].eval()(images)
            sync()
        return run

    steps = time_interleaved({arch: train_step(arch) for arch in archs}, repeats=repeats, warmup=warmup)
    inference = time_interleaved({arch: infer(arch) for arch in archs}, repeats=repeats, warmup=warmup)
    return {
        "image_size": image_size, "batch_size": batch_size, "device": device,
        "step_s": {arch: s.as_dict() for arch, s in steps.items()},
        "inference_s": {arch: s.as_dict() for arch, s in inference.items()},
        "train_ms_per_image": {arch: 1000 * s.median / batch_size for arch, s in steps.items()},
        "inference_ms_per_image": {arch: 1000 * s.median / batch_size for arch, s in inference.items()},
        "parameters": {arch: sum(p.numel() for p in net.parameters()) for arch, net in nets.items()},
        "fastest_step": min(steps, key=lambda arch: steps[arch].median),
    }


if __name__ == "__main__":  # a quick look: python -m crm_core.experiments.bench.segment_step
    import json

    print(json.dumps(bench_segment_step(), indent=2))
