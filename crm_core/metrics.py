"""Mask metrics: foreground/background IoU against ground truth, threshold curves, coverage.

IoUs are accumulated over the whole evaluation set (counts summed, then divided), the
standard way segmentation mIoU is reported, not averaged per image. Pixels labelled 255
in the ground truth (Oxford pets' uncertain border) are ignored.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

IGNORE = 255
DEFAULT_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.0, 1.0, 0.05))


def binary_counts(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(tp, fp, fn, tn) of a foreground prediction; ``pred`` bool (..., H, W), ``target`` 0/1/255.

    ``pred`` may carry leading threshold dimensions: counts come back with those dims + 4.
    """
    valid = target != IGNORE
    fg = (target == 1) & valid
    bg = (target == 0) & valid
    dims = (-2, -1)
    tp = (pred & fg).sum(dim=dims)
    fp = (pred & bg).sum(dim=dims)
    fn = (~pred & fg).sum(dim=dims)
    tn = (~pred & bg).sum(dim=dims)
    return torch.stack([tp, fp, fn, tn], dim=-1).to(torch.int64)


def ious_from_counts(counts: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Foreground IoU, background IoU and their mean from (tp, fp, fn, tn)."""
    tp, fp, fn, tn = (float(c) for c in counts)
    fg = tp / (tp + fp + fn) if tp + fp + fn > 0 else float("nan")
    bg = tn / (tn + fn + fp) if tn + fn + fp > 0 else float("nan")
    return {"fg_iou": fg, "bg_iou": bg, "miou": float(np.nanmean([fg, bg])) if not (np.isnan(fg) and np.isnan(bg)) else float("nan")}


def mask_iou(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """IoUs of a single (H, W) binary prediction."""
    return ious_from_counts(binary_counts(pred.bool(), target))


@dataclass
class ThresholdCurve:
    """Accumulates CAM-vs-ground-truth counts at many thresholds at once.

    Each ``add`` takes max-normalised CAMs (B, H, W) in [0, 1] at image resolution.
    ``parts`` (B, H, W) optionally labels object parts (synthetic: 1 body, 2 head), and the
    curve then also records which share of each part the CAM covers.
    """

    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    part_ids: tuple[int, ...] = ()
    counts: torch.Tensor = field(init=False)
    part_covered: torch.Tensor = field(init=False)
    part_total: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self._t = torch.tensor(self.thresholds, dtype=torch.float32)
        self.counts = torch.zeros(len(self.thresholds), 4, dtype=torch.int64)
        self.part_covered = torch.zeros(len(self.thresholds), len(self.part_ids), dtype=torch.int64)
        self.part_total = torch.zeros(len(self.part_ids), dtype=torch.int64)

    def add(self, cams: torch.Tensor, masks: torch.Tensor, parts: torch.Tensor | None = None) -> None:
        cams = cams.detach().float().cpu()
        masks = masks.cpu()
        pred = cams[:, None] >= self._t[None, :, None, None]  # (B, T, H, W)
        self.counts += binary_counts(pred, masks[:, None]).sum(dim=0)
        if parts is not None and self.part_ids:
            parts = parts.cpu()
            for j, part in enumerate(self.part_ids):
                inside = (parts == part)[:, None]  # (B, 1, H, W)
                self.part_covered[:, j] += (pred & inside).sum(dim=(0, 2, 3))
                self.part_total[j] += int(inside.sum())

    def at(self, index: int) -> dict[str, float]:
        return ious_from_counts(self.counts[index])

    def coverage_at(self, index: int, part_names: dict[int, str]) -> dict[str, float]:
        return {
            part_names.get(part, str(part)): float(self.part_covered[index, j]) / max(int(self.part_total[j]), 1)
            for j, part in enumerate(self.part_ids)
        }

    def best_index(self) -> int:
        mious = [self.at(i)["miou"] for i in range(len(self.thresholds))]
        return int(np.nanargmax(mious))

    def index_of(self, threshold: float) -> int:
        return int(np.argmin([abs(t - threshold) for t in self.thresholds]))
