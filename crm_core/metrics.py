"""Mask metrics: foreground/background IoU against ground truth, threshold curves, coverage;
the threshold-free PxAP; and the faithfulness of a CAM to its classifier (Average Drop,
Increase in Confidence) with the map's area.

IoUs are accumulated over the whole evaluation set (counts summed, then divided), the
standard way segmentation mIoU is reported, not averaged per image. Pixels labelled 255
in the ground truth (Oxford pets' uncertain border) are ignored.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from crm_core.losses import reconstruction_l1, reconstruction_target
from crm_core.thresholds import THRESHOLDS

IGNORE = 255


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
    """Foreground IoU, background IoU, their mean, and the background false-positive rate
    (the share of background pixels called foreground) from (tp, fp, fn, tn)."""
    tp, fp, fn, tn = (float(c) for c in counts)
    fg = tp / (tp + fp + fn) if tp + fp + fn > 0 else float("nan")
    bg = tn / (tn + fn + fp) if tn + fn + fp > 0 else float("nan")
    miou = float(np.nanmean([fg, bg])) if not (np.isnan(fg) and np.isnan(bg)) else float("nan")
    bg_fpr = fp / (fp + tn) if fp + tn > 0 else float("nan")
    return {"fg_iou": fg, "bg_iou": bg, "miou": miou, "bg_fpr": bg_fpr}


def mask_iou(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """IoUs of a single (H, W) binary prediction."""
    return ious_from_counts(binary_counts(pred.bool(), target))


class ThresholdScan:
    """What a curve over the threshold grid answers the same way whatever it counts: the threshold
    of the best mIoU (where a threshold is chosen) and the grid point nearest a given one.
    Subclasses have ``thresholds`` and ``at(index)`` (a dict with ``miou``)."""

    thresholds: tuple[float, ...]

    def at(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def best_index(self) -> int:
        return int(np.nanargmax([self.at(i)["miou"] for i in range(len(self.thresholds))]))

    def index_of(self, threshold: float) -> int:
        return int(np.argmin([abs(t - threshold) for t in self.thresholds]))


@dataclass
class ThresholdCurve(ThresholdScan):
    """Accumulates CAM-vs-ground-truth counts at many thresholds at once.

    Each ``add`` takes max-normalised CAMs (B, H, W) in [0, 1] at image resolution.
    ``parts`` (B, H, W) optionally labels object parts (synthetic: 1 body, 2 head), and the
    curve then also records which share of each part the CAM covers.
    """

    thresholds: tuple[float, ...] = THRESHOLDS.grid
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

    def pxap(self) -> float:
        """PxAP of the maps added so far: :func:`pxap` on this curve's pooled counts."""
        return pxap(self.counts, self.thresholds)


def leading_class(cams: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(top, lead), each (B, H, W): the highest CAM value among the classes in each image's
    multi-hot ``labels`` (B, C) and that class's index, from CAMs (B, C, H, W) in [0, 1]; a class
    absent from the image never leads."""
    return cams.masked_fill(~labels.bool()[:, :, None, None], -1.0).max(1)


def class_confusion(pred: torch.Tensor, truth: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) confusion matrix, K = num_classes + 1 (rows: truth, columns: prediction) of class
    masks (..., H, W) with 0 background and class + 1; pixels 255 in either are left out."""
    k = num_classes + 1
    valid = (truth != IGNORE) & (pred != IGNORE)
    if ((truth[valid] >= k) | (pred[valid] >= k)).any():
        raise ValueError(f"class masks hold values outside 0..{num_classes} and {IGNORE}")
    return torch.bincount((truth[valid] * k + pred[valid]).long(), minlength=k * k).view(k, k)


def confusion_ious(confusion: torch.Tensor | np.ndarray) -> dict[str, Any]:
    """IoUs of a multi-class prediction from its (K, K) confusion matrix (rows: truth, columns:
    prediction; class 0 is the background). ``per_class_iou`` has NaN for a class neither in the
    truth nor in the prediction, and ``miou`` is the mean over the others (the field's nanmean);
    ``fg_iou`` is that mean over the object classes; ``bg_fpr`` the share of background pixels
    given a class; ``confusion`` the share of object pixels given another object class."""
    m = np.asarray(confusion, dtype=np.float64)
    hits = np.diag(m)
    union = m.sum(0) + m.sum(1) - hits
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, hits / union, np.nan)
    objects = m[1:, 1:]
    truth_objects = m[1:].sum()
    nan_mean = (lambda v: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan"))
    return {
        "miou": nan_mean(iou), "fg_iou": nan_mean(iou[1:]), "bg_iou": float(iou[0]),
        "bg_fpr": float(m[0, 1:].sum() / m[0].sum()) if m[0].sum() > 0 else float("nan"),
        "confusion": float((objects.sum() - np.trace(objects)) / truth_objects) if truth_objects > 0 else float("nan"),
        "per_class_iou": iou.tolist(),
    }


@dataclass
class ClassMapCurve(ThresholdScan):
    """Multi-class masks from the CAMs of the classes in each image, at every background score of
    the grid at once (IRN's protocol for several objects): a pixel takes the class whose CAM is
    highest there if that CAM reaches the background score t, else the background (a tie goes
    to the class, as a binary CAM's pixel at the threshold is foreground).

    Each ``add`` takes max-normalised CAMs (B, C, H, W) of every class, the multi-hot labels
    (B, C) that pick the classes to compete, the class mask (B, H, W: 0 background, class + 1,
    255 ignored) and optionally part labels; ``parts`` coverage is the share of each part given
    its own animal's class. Counts are kept per (truth, leading class, how many thresholds the
    leading CAM reaches), so every threshold's confusion matrix follows exactly."""

    num_classes: int
    thresholds: tuple[float, ...] = THRESHOLDS.grid
    part_ids: tuple[int, ...] = ()
    counts: torch.Tensor = field(init=False)
    part_hits: torch.Tensor = field(init=False)
    part_total: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self._t = torch.tensor(self.thresholds, dtype=torch.float32)
        k, steps = self.num_classes + 1, len(self.thresholds) + 1
        self.counts = torch.zeros(k, k, steps, dtype=torch.int64)  # [truth, leading class + 1, thresholds reached]
        self.part_hits = torch.zeros(len(self.part_ids), steps, dtype=torch.int64)
        self.part_total = torch.zeros(len(self.part_ids), dtype=torch.int64)

    def add(self, cams: torch.Tensor, labels: torch.Tensor, class_mask: torch.Tensor,
            parts: torch.Tensor | None = None) -> None:
        cams, labels, class_mask = cams.detach().float().cpu(), labels.cpu().bool(), class_mask.cpu()
        if cams.shape[1] != self.num_classes:
            raise ValueError(f"expected CAMs of {self.num_classes} classes, got {cams.shape[1]}")
        top, lead = leading_class(cams, labels)
        reached = torch.searchsorted(self._t, top.contiguous(), right=True)  # thresholds t with top >= t
        valid = (class_mask != IGNORE) & (class_mask <= self.num_classes)
        k, steps = self.num_classes + 1, len(self.thresholds) + 1
        index = (class_mask[valid] * k + lead[valid] + 1) * steps + reached[valid]
        self.counts += torch.bincount(index, minlength=k * k * steps).view(k, k, steps)
        if parts is not None and self.part_ids:
            parts = parts.cpu()
            right = lead + 1 == class_mask
            for j, part in enumerate(self.part_ids):
                inside = (parts == part) & valid
                self.part_hits[j] += torch.bincount(reached[inside & right], minlength=steps)
                self.part_total[j] += int(inside.sum())

    def confusion_at(self, index: int) -> torch.Tensor:
        """(K, K) confusion matrix at ``thresholds[index]``: leading class where its CAM reaches it."""
        above = self.counts[:, :, index + 1:].sum(-1)  # the leading CAM reaches thresholds[index]
        below = self.counts[:, :, : index + 1].sum(-1).sum(1)  # per truth: background
        confusion = above.clone()
        confusion[:, 0] += below
        return confusion

    def at(self, index: int) -> dict[str, Any]:
        return confusion_ious(self.confusion_at(index))

    def coverage_at(self, index: int, part_names: dict[int, str]) -> dict[str, float]:
        return {part_names.get(part, str(part)): float(self.part_hits[j, index + 1:].sum()) / max(int(self.part_total[j]), 1)
                for j, part in enumerate(self.part_ids)}


@dataclass
class ClassMaskScores:
    """Class masks (0 background, class + 1) against the truth over a split, batch by batch: one
    confusion matrix (:func:`class_confusion`, read by :func:`confusion_ious`) and the share of each
    of ``part_ids`` given its own class."""

    num_classes: int
    part_ids: tuple[int, ...] = ()
    confusion: torch.Tensor = field(init=False)
    part_hits: dict[int, int] = field(init=False)
    part_total: dict[int, int] = field(init=False)

    def __post_init__(self) -> None:
        self.confusion = torch.zeros(self.num_classes + 1, self.num_classes + 1, dtype=torch.int64)
        self.part_hits = {part: 0 for part in self.part_ids}
        self.part_total = {part: 0 for part in self.part_ids}

    def add(self, pred: torch.Tensor, truth: torch.Tensor, parts: torch.Tensor | None = None) -> None:
        self.confusion += class_confusion(pred, truth, self.num_classes)
        for part in self.part_ids if parts is not None else ():
            inside = parts == part
            self.part_hits[part] += int((inside & (pred == truth)).sum())
            self.part_total[part] += int(inside.sum())

    def summary(self, part_names: dict[int, str] | None = None) -> dict[str, Any]:
        """:func:`confusion_ious` of the split, with ``coverage`` (part name -> share) when parts were counted."""
        names = part_names or {}
        coverage = {names.get(p, str(p)): self.part_hits[p] / max(self.part_total[p], 1) for p in self.part_ids}
        return {**confusion_ious(self.confusion), "coverage": coverage}


def pxap(counts: torch.Tensor | np.ndarray, thresholds: tuple[float, ...]) -> float:
    """Pixel average precision (PxAP; Choe et al., CVPR 2020): the area under the precision-recall
    curve of every pixel of a split pooled, with no threshold to choose.

    ``counts`` (T, 4) are (tp, fp, fn, tn) with a pixel called foreground when its map value is
    >= ``thresholds[t]``. The curve is binned on those thresholds (the project's grid): PxAP =
    sum over thresholds, highest first, of precision x the recall it adds. That is exactly
    sklearn's ``average_precision_score`` of the map values rounded down to the grid, and it
    departs from the score of the raw values only by the binning. A map that says nothing (one
    value everywhere) scores the foreground's share of the pixels: the floor. NaN without
    foreground pixels.
    """
    counts = np.asarray(counts, dtype=np.float64)
    order = np.argsort(np.asarray(thresholds))[::-1]  # highest threshold first: recall grows
    tp, fp, fn = counts[order, 0], counts[order, 1], counts[order, 2]
    positives = tp[0] + fn[0]
    if positives == 0:
        return float("nan")
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=tp + fp > 0)
    recall = tp / positives
    return float(np.sum(precision * np.diff(recall, prepend=0.0)))


def pixel_ap(cams: torch.Tensor, target: torch.Tensor, thresholds: tuple[float, ...] = THRESHOLDS.grid) -> float:
    """:func:`pxap` of maps (..., H, W) against a 0/1/255 ``target`` without a curve: each pixel is
    counted once, in the bin of the highest threshold it reaches (what :class:`ThresholdCurve` counts
    threshold by threshold), so one image's PxAP costs a sort of the grid, not one pass per threshold."""
    grid = torch.tensor(sorted(thresholds), dtype=torch.float32)
    valid = target != IGNORE
    values, foreground = cams.detach().float().cpu()[valid.cpu()], (target[valid] == 1).cpu()
    bins = torch.searchsorted(grid, values.contiguous(), right=True) - 1  # -1: below every threshold
    reached = bins >= 0

    def at_or_above(pixels: torch.Tensor) -> torch.Tensor:  # per threshold: pixels whose value reaches it
        return torch.bincount(bins[pixels & reached], minlength=len(grid)).flip(0).cumsum(0).flip(0)

    tp, fp = at_or_above(foreground), at_or_above(~foreground)
    fn = int(foreground.sum()) - tp
    return pxap(torch.stack([tp, fp, fn, torch.zeros_like(tp)], dim=-1), tuple(grid.tolist()))


@dataclass
class Faithfulness:
    """Does the map show what the classifier used? Accumulates, per image, the classifier's
    softmax probability ``Y`` of the explained class on the image and ``O`` on the explanation
    E = map x image (the Grad-CAM++ paper's protocol), and the map's area.

    - ``average_drop``: 100 x mean of max(0, Y - O) / Y, percent (lower: E keeps the evidence);
    - ``increase_in_confidence``: 100 x share of images with Y < O, percent (higher is better);
    - ``cam_area``: mean share of the image at or above half the map's peak (0 for an empty map).
      A map that covers everything keeps the whole image and so has no drop: read the two
      together (Poppi et al., 2021).

    Probabilities, not logits: a logit can be <= 0, where the ratio means nothing.
    """

    drop: float = 0.0
    increases: int = 0
    area: float = 0.0
    images: int = 0
    deletion: float = 0.0  # sums of the per-image AUCs (add_deletion_insertion), when measured
    insertion: float = 0.0
    curves: int = 0

    def add(self, score_image: torch.Tensor, score_explanation: torch.Tensor, cams: torch.Tensor) -> None:
        """``score_image`` and ``score_explanation`` (B,) probabilities of each image's class;
        ``cams`` (B, H, W) the maps E was made of."""
        y, o = score_image.detach().double().cpu(), score_explanation.detach().double().cpu()
        self.drop += float((torch.relu(y - o) / y.clamp_min(torch.finfo(torch.float64).tiny)).sum())
        self.increases += int((y < o).sum())
        cams = cams.detach().float().cpu()
        peak = cams.amax(dim=(1, 2), keepdim=True)
        self.area += float(((cams >= 0.5 * peak) & (peak > 0)).float().mean(dim=(1, 2)).sum())
        self.images += len(y)

    def add_deletion_insertion(self, deletion: torch.Tensor, insertion: torch.Tensor) -> None:
        """(B,) per-image AUCs of :func:`deletion_insertion`."""
        self.deletion += float(deletion.double().sum())
        self.insertion += float(insertion.double().sum())
        self.curves += len(deletion)

    def summary(self) -> dict[str, float]:
        n = max(self.images, 1)
        out = {"average_drop": 100.0 * self.drop / n, "increase_in_confidence": 100.0 * self.increases / n,
               "cam_area": self.area / n}
        if self.curves:
            out.update(deletion_auc=self.deletion / self.curves, insertion_auc=self.insertion / self.curves)
        return out


#: Points of the deletion and insertion curves (RISE): the pixels are perturbed in this many steps.
DELETION_STEPS = 20


def deletion_insertion(score: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, cams: torch.Tensor,
                       steps: int = DELETION_STEPS) -> tuple[torch.Tensor, torch.Tensor]:
    """RISE's deletion and insertion AUCs (Petsiuk et al., 2018) of each image, (B,) each.

    Pixels are ranked by the map (``cams`` (B, H, W) at the images' size), highest first (ties in
    raster order). Deletion replaces the top k pixels, all channels, with the baseline, a black
    image; insertion starts from the baseline and puts them back. k goes 0, s, 2s, ... up to every
    pixel, s = ceil(pixels / ``steps``); ``score(x)`` is the class's softmax probability of each
    image of ``x``, and each AUC is the trapezoid over the share of pixels perturbed. Lower
    deletion and higher insertion: the map ranks the pixels the classifier needs first.
    """
    b, _, h, w = images.shape
    pixels = h * w
    order = torch.argsort(cams.reshape(b, -1), dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(pixels).expand(b, pixels).contiguous())
    step = -(-pixels // steps)
    counts = [*range(0, pixels, step), pixels]
    baseline = torch.zeros_like(images)
    deleted, inserted = [], []
    for k in counts:
        top = (rank < k).reshape(b, 1, h, w)
        deleted.append(score(torch.where(top, baseline, images)))
        inserted.append(score(torch.where(top, images, baseline)))
    fractions = torch.tensor(counts, dtype=torch.float64) / pixels
    return (torch.trapezoid(torch.stack(deleted, 1).double().cpu(), fractions, dim=1),
            torch.trapezoid(torch.stack(inserted, 1).double().cpu(), fractions, dim=1))


def describe_cam_dependence(cam_dependence: float | None, ignore_below: float = 0.03) -> str:
    """One line a person can read about a decoder's CAM dependence (see :class:`CamDependence`)."""
    if cam_dependence is None or not np.isfinite(cam_dependence):
        return "CAM dependence not measured"
    if cam_dependence < ignore_below:
        return f"the decoder ignores the CAM (shuffling the CAMs changes its L1 by {cam_dependence:+.1%})"
    return f"the decoder uses the CAM (shuffled CAMs reconstruct {cam_dependence:.1%} worse)"


def label_hits(logits: torch.Tensor, batch: dict[str, torch.Tensor], multi_label: bool = False) -> torch.Tensor:
    """(B,) bool: the image's class is the top logit; multi-label: the predicted set (logit > 0,
    the soft-margin loss's decision) is exactly the image's label set."""
    if multi_label:
        return ((logits > 0) == batch["labels"].bool()).all(1)
    return logits.argmax(1) == batch["label"]


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """The area under one class's precision-recall curve over images: sum of precision times the
    step in recall at each distinct score, highest first (tied scores form one step)."""
    order = np.argsort(-scores, kind="stable")
    scores, positive = scores[order], positive[order].astype(np.float64)
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tp = np.cumsum(positive)[last_of_tie]
    precision = tp / (last_of_tie + 1)
    recall = tp / max(positive.sum(), 1.0)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


@dataclass
class MultiLabelScores:
    """Multi-label classification over a split, accumulated batch by batch: per-class F1 at
    logit > 0 and per-class average precision of the logits, macro-averaged over the classes
    present in the split (a class no image holds has neither)."""

    logits: list[torch.Tensor] = field(default_factory=list)
    labels: list[torch.Tensor] = field(default_factory=list)

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.logits.append(logits.detach().float().cpu())
        self.labels.append(labels.detach().bool().cpu())

    def summary(self) -> dict[str, float]:
        logits, labels = torch.cat(self.logits).numpy(), torch.cat(self.labels).numpy()
        present = np.flatnonzero(labels.any(0))
        predicted = logits > 0
        tp = (predicted & labels).sum(0)
        f1 = 2 * tp / np.maximum(predicted.sum(0) + labels.sum(0), 1)
        ap = [average_precision(logits[:, c], labels[:, c]) for c in present]
        return {"f1": float(f1[present].mean()) if len(present) else 0.0,
                "map": float(np.mean(ap)) if ap else 0.0}


@dataclass
class CamDependence:
    """Does ReconstructNet use its input? Reconstruction L1 with the real CAMs against CAMs
    shuffled across the batch (each image decoded from the next image's CAMs).

    A decoder that ignores the CAM (it learned the mean image) scores the same on both: its
    ``cam_dependence`` = (L1 shuffled - L1 real) / L1 shuffled is ~0. Batches of one image have no
    partner to shuffle with and count towards the real L1 only.
    """

    real_sum: float = 0.0
    shuffled_sum: float = 0.0
    paired_real_sum: float = 0.0
    images: int = 0
    paired: int = 0

    @torch.no_grad()
    def add(self, decoder: torch.nn.Module, decoder_in: torch.Tensor, recon: torch.Tensor, images: torch.Tensor) -> None:
        """``decoder_in`` (B, C, h, w) what the decoder saw, ``recon`` its output, ``images`` (B, 3, H, W) in [0, 1]."""
        target = reconstruction_target(images, recon)
        real = float(reconstruction_l1(recon, target))
        self.real_sum += real * len(images)
        self.images += len(images)
        if len(images) > 1:
            shuffled = decoder(decoder_in.roll(1, dims=0))
            self.shuffled_sum += float(reconstruction_l1(shuffled, target)) * len(images)
            self.paired_real_sum += real * len(images)
            self.paired += len(images)

    def summary(self) -> dict[str, float]:
        real = self.real_sum / max(self.images, 1)
        if not self.paired:
            return {"recon_l1": real, "recon_l1_shuffled": float("nan"), "cam_dependence": float("nan")}
        shuffled = self.shuffled_sum / self.paired
        paired_real = self.paired_real_sum / self.paired
        return {"recon_l1": real, "recon_l1_shuffled": shuffled,
                "cam_dependence": (shuffled - paired_real) / max(shuffled, 1e-12)}
