"""Maps that come from no model: the baselines and ceilings every results table reads against.

A trained CAM means something only between what a trivial cue scores and what a perfect map
at the CAM's resolution scores, with the same protocol (threshold chosen on val, scored on
test, counts pooled over images):

- ``intensity``: the image's grayscale (ITU-R BT.601 luma) as the CAM. Where the object is
  simply brighter than its surroundings this segments it with no model at all.
- ``colour``: a per-pixel colour classifier fitted on the *training* split's masks,
  P(object | colour) from a 3-D colour histogram -- the best any per-pixel colour cue can do
  (a supervised upper bound for colour; a CAM sees no mask).
- ``perfect_head``: the exact head mask, average-pooled to the CAM grid and upsampled as CAMs
  are. What a CAM that lights exactly the class-deciding part would score.
- ``perfect_object``: the exact object mask pooled the same way: the ceiling of a CAM of that
  resolution.

The maps go through :func:`crm_core.cams.utils.upsample_normalised` like every CAM, so a
threshold means the same thing for a baseline and for a model.

On multi-label data (several objects of different classes per image) each baseline gives a map
per class (:func:`baseline_class_maps`) and is scored by the multi-class protocol
(:class:`crm_core.metrics.ClassMapCurve`): the perfect masks are each class's own, pooled to the
CAM grid; brightness and the colour classifier know no class, so every class of the image gets
the same map and the first of them takes each pixel -- what a cue that finds objects but cannot
name them scores.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from crm_core.cams.utils import normalize_cams, upsample_normalised
from crm_core.metrics import ClassMapCurve, ClassMaskScores, ThresholdCurve
from crm_core.thresholds import THRESHOLDS

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights of R, G, B
COLOUR_BINS = 16  # histogram bins per channel of the colour classifier (16^3 colours)
HEAD_PART, BODY_PART = 2, 1


@dataclass(frozen=True)
class Baseline:
    name: str
    label: str  # what a table shows
    kind: str  # "baseline" (a cue a method might exploit) | "ceiling" (a perfect map at the CAM grid)
    needs_parts: bool  # it reads the ground-truth parts (ceilings) rather than the image


BASELINES: dict[str, Baseline] = {
    b.name: b for b in (
        Baseline("intensity", "image brightness as the CAM (no model)", "baseline", False),
        Baseline("colour", "per-pixel colour classifier fitted on train masks (no model)", "baseline", False),
        Baseline("perfect_head", "perfect head mask at the CAM grid", "ceiling", True),
        Baseline("perfect_object", "perfect object mask at the CAM grid (ceiling)", "ceiling", True),
    )
}


def intensity_map(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) images in [0, 1] -> (B, H, W) grayscale, max-normalised like a CAM."""
    luma = torch.tensor(LUMA, dtype=images.dtype, device=images.device)
    return normalize_cams(torch.einsum("bchw,c->bhw", images, luma))


def all_ones_map(images: torch.Tensor, grid: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """A map that keeps the whole image: no Average Drop, and the largest area (the pitfall)."""
    return torch.ones(images.shape[0], *images.shape[-2:])


def random_map(images: torch.Tensor, grid: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """Uniform noise at the CAM grid, upsampled and max-normalised as CAMs are."""
    return upsample_normalised(torch.rand(images.shape[0], *grid, generator=generator), images.shape[-2:])


#: Maps from no model that ``crm_core.evaluate`` scores beside a CAM under the same classifier
#: (PxAP, Average Drop, Increase in Confidence, area): what doing nothing scores on those metrics.
FAITHFULNESS_REFERENCES = {
    "all_ones": all_ones_map,
    "random": random_map,
    "intensity": lambda images, grid, generator: intensity_map(images),
}


def pooled_mask_map(mask: torch.Tensor, cam_size: int) -> torch.Tensor:
    """(B, H, W) 0/1 mask -> the share of each CAM cell it covers, upsampled and max-normalised as CAMs are."""
    pooled = F.adaptive_avg_pool2d(mask[:, None].float(), cam_size)[:, 0]  # (B, h, w)
    return upsample_normalised(pooled, mask.shape[-2:])


def _colour_index(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, H, W) int64 histogram bin of each pixel's colour."""
    q = (images.clamp(0, 1) * COLOUR_BINS).long().clamp_max(COLOUR_BINS - 1)  # (B, 3, H, W)
    return (q[:, 0] * COLOUR_BINS + q[:, 1]) * COLOUR_BINS + q[:, 2]


class ColourClassifier:
    """P(object | colour bin) counted over training pixels (Laplace-smoothed)."""

    def __init__(self) -> None:
        self.object = torch.zeros(COLOUR_BINS ** 3, dtype=torch.float64)
        self.total = torch.zeros(COLOUR_BINS ** 3, dtype=torch.float64)

    def fit(self, images: torch.Tensor, masks: torch.Tensor) -> "ColourClassifier":
        index = _colour_index(images).flatten()
        self.total += torch.bincount(index, minlength=len(self.total)).double()
        self.object += torch.bincount(index, weights=(masks == 1).flatten().double(), minlength=len(self.total))
        return self

    def probability(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, H, W) P(object | colour); colours never seen get the prior."""
        prior = float(self.object.sum() / self.total.sum().clamp_min(1))
        p = (self.object + prior) / (self.total + 1.0)
        return p[_colour_index(images)].float()


def baseline_maps(name: str, batch: dict[str, torch.Tensor], cam_size: int,
                  colour: ColourClassifier | None = None) -> torch.Tensor:
    """(B, H, W) maps in [0, 1] of baseline ``name`` for a dataset batch."""
    if name == "intensity":
        return intensity_map(batch["image"])
    if name == "colour":
        if colour is None:
            raise ValueError("the colour baseline needs a fitted ColourClassifier")
        return normalize_cams(colour.probability(batch["image"]))
    if name == "perfect_head":
        return pooled_mask_map((batch["parts"] == HEAD_PART).long(), cam_size)
    if name == "perfect_object":
        return pooled_mask_map(batch["mask"].clamp_max(1), cam_size)
    raise ValueError(f"unknown baseline {name!r}; choose from {sorted(BASELINES)}")


def baseline_class_maps(name: str, batch: dict[str, torch.Tensor], cam_size: int, num_classes: int,
                        colour: ColourClassifier | None = None) -> torch.Tensor:
    """(B, C, H, W) maps of baseline ``name`` for every class of a multi-label batch."""
    class_mask = batch["class_mask"]
    if name in ("perfect_head", "perfect_object"):
        inside = (batch["parts"] == HEAD_PART) if name == "perfect_head" else class_mask != 255
        return torch.stack([pooled_mask_map((inside & (class_mask == c + 1)).long(), cam_size)
                            for c in range(num_classes)], 1)
    single = baseline_maps(name, batch, cam_size, colour)  # (B, H, W): no class in it
    return single[:, None].expand(-1, num_classes, -1, -1)


def _batches(dataset: Any, limit: int, batch_size: int = 32):
    n = min(limit, len(dataset))
    return torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(n)), batch_size=batch_size)


def fit_colour_classifier(train: Any, images: int = 400) -> ColourClassifier:
    colour = ColourClassifier()
    for batch in _batches(train, images):
        colour.fit(batch["image"], batch["mask"])
    return colour


def _curve(name: str, dataset: Any, limit: int, cam_size: int,
           colour: ColourClassifier | None) -> ThresholdCurve | ClassMapCurve:
    part_names = dict(getattr(dataset, "part_names", {}))
    if getattr(dataset, "multi_label", False):
        classes = int(dataset.num_classes)
        multi = ClassMapCurve(classes, THRESHOLDS.grid, tuple(sorted(part_names)))
        for batch in _batches(dataset, limit):
            multi.add(baseline_class_maps(name, batch, cam_size, classes, colour), batch["labels"],
                      batch["class_mask"], batch.get("parts"))
        return multi
    curve = ThresholdCurve(THRESHOLDS.grid, tuple(sorted(part_names)))
    for batch in _batches(dataset, limit):
        curve.add(baseline_maps(name, batch, cam_size, colour), batch["mask"], batch.get("parts"))
    return curve


def score_baseline(name: str, *, train: Any, val: Any, test: Any, cam_size: int, val_limit: int = 100,
                   test_limit: int = 200, colour_images: int = 400) -> dict[str, Any]:
    """Score baseline ``name`` with the results protocol: threshold chosen on ``val``, reported on ``test``.

    Returns the keys a results job has: threshold, miou, fg_iou, bg_fpr, head, body, pxap (and the
    best threshold on test, for comparison only). A map that comes from no model has no classifier
    to be faithful to: no Average Drop. On multi-label data: the multi-class protocol, with the
    class confusion and no PxAP (a single-label measure)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose from {sorted(BASELINES)}")
    colour = fit_colour_classifier(train, colour_images) if name == "colour" else None
    val_curve = _curve(name, val, val_limit, cam_size, colour)
    threshold = val_curve.thresholds[val_curve.best_index()]
    test_curve = _curve(name, test, test_limit, cam_size, colour)
    index = test_curve.index_of(threshold)
    at = test_curve.at(index)
    coverage = test_curve.coverage_at(index, dict(getattr(test, "part_names", {})))
    scores = {"threshold": threshold, "miou": at["miou"], "fg_iou": at["fg_iou"], "bg_fpr": at["bg_fpr"],
              "head": coverage.get("head"), "body": coverage.get("body"),
              "miou_best_on_test": test_curve.at(test_curve.best_index())["miou"]}
    if isinstance(test_curve, ClassMapCurve):
        return {**scores, "confusion": at["confusion"]}
    return {**scores, "pxap": test_curve.pxap()}


CONSTANT_MASKS = {"all background": 0.0, "all object": 1.0}


def score_constant_masks(*, val: Any, test: Any, val_limit: int = 100, test_limit: int = 200) -> dict[str, Any]:
    """The floor of any mask: the better constant prediction (all background or all object),
    chosen on ``val`` by mIoU and reported on ``test`` with the keys a results job has
    (``prediction`` names the one chosen; ``threshold`` is None, there is nothing to cut). On
    multi-label data "all object" gives every pixel the image's first labelled class."""
    if getattr(val, "multi_label", False):
        return _score_constant_class_masks(val=val, test=test, val_limit=val_limit, test_limit=test_limit)

    def curves(dataset: Any, limit: int) -> dict[str, ThresholdCurve]:
        part_names = dict(getattr(dataset, "part_names", {}))
        out = {name: ThresholdCurve((0.5,), tuple(sorted(part_names))) for name in CONSTANT_MASKS}
        for batch in _batches(dataset, limit):
            for name, value in CONSTANT_MASKS.items():
                out[name].add(torch.full(batch["mask"].shape, value), batch["mask"], batch.get("parts"))
        return out

    on_val = curves(val, val_limit)
    chosen = max(CONSTANT_MASKS, key=lambda name: on_val[name].at(0)["miou"])
    curve = curves(test, test_limit)[chosen]
    at = curve.at(0)
    coverage = curve.coverage_at(0, dict(getattr(test, "part_names", {})))
    return {"prediction": chosen, "threshold": None, "miou": at["miou"], "fg_iou": at["fg_iou"],
            "bg_fpr": at["bg_fpr"], "head": coverage.get("head"), "body": coverage.get("body")}


def _score_constant_class_masks(*, val: Any, test: Any, val_limit: int, test_limit: int) -> dict[str, Any]:
    """:func:`score_constant_masks` on multi-label data, from each constant's confusion matrix."""
    def scores(dataset: Any, limit: int) -> dict[str, dict[str, Any]]:
        parts = dict(getattr(dataset, "part_names", {}))
        counted = {name: ClassMaskScores(int(dataset.num_classes), tuple(parts)) for name in CONSTANT_MASKS}
        for batch in _batches(dataset, limit):
            truth = batch["class_mask"]
            first = batch["labels"].argmax(1)[:, None, None] + 1  # the first labelled class of each image
            for name, value in CONSTANT_MASKS.items():
                counted[name].add((first * int(value)).expand_as(truth), truth, batch.get("parts"))
        return {name: scores.summary(parts) for name, scores in counted.items()}

    on_val = scores(val, val_limit)
    chosen = max(CONSTANT_MASKS, key=lambda name: on_val[name]["miou"])
    at = scores(test, test_limit)[chosen]
    return {"prediction": chosen, "threshold": None, "miou": at["miou"], "fg_iou": at["fg_iou"],
            "bg_fpr": at["bg_fpr"], "head": at["coverage"].get("head"), "body": at["coverage"].get("body"),
            "confusion": at["confusion"]}


__all__ = ["BASELINES", "CONSTANT_MASKS", "score_constant_masks", "Baseline", "ColourClassifier", "baseline_maps", "fit_colour_classifier", "intensity_map",
           "pooled_mask_map", "score_baseline"]
