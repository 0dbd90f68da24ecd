"""Evaluate a checkpoint: accuracy, CAM mIoU against ground truth, object coverage, reconstruction.

    python -m crm_core.evaluate --checkpoint checkpoints/drs_crm.pt --split test

Writes ``runs/<name>/eval.json`` and sample panels (image | CAM | ground truth | reconstruction,
drawn by :mod:`crm_core.viz`). CAMs are taken for the ground-truth class, as WSSS evaluates CAMs:
image labels are known at training time, so the question is where the CAM puts the object, not
which class wins. They come from :meth:`crm_core.api.CamModel.explain` (``--cam-method``: any name
of :data:`crm_core.cams.CAM_METHODS`, default the closed-form Grad-CAM++), whose forward pass
also gives the accuracy and ReconstructNet's input.

The headline number is the CAM mIoU at the threshold chosen on the *val* split
(``cam_miou_val_threshold``), reported with the object coverage and the background
false-positive rate at that threshold. The best threshold on the reported split
(``cam_miou_best``) is kept for comparison only: chosen on the split it scores, it rewards
blobs -- an untrained model's CAM can win on it.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from crm_core.explain import CamModel, dataset_for
from crm_core.cams import DEFAULT_CAM_METHOD
from crm_core.checkpoints import CheckpointError
from crm_core.cli_options import cam_options, checkpoint_options, device_option
from crm_core.data import DatasetNotFoundError
from crm_core.data.transforms import to_uint8_image
from crm_core.metrics import (DELETION_STEPS, CamDependence, ClassMapCurve, Faithfulness, MultiLabelScores,
                              ThresholdCurve, deletion_insertion, label_hits,
                              describe_cam_dependence)
from crm_core.models import from_tanh_range, resize_reconstruction
from crm_core.runs import RunDir
from crm_core.thresholds import THRESHOLDS
from crm_core.viz import cam_overlay, mask_outline, side_by_side

log = logging.getLogger("crm_core.evaluate")


@dataclass
class EvalConfig:
    checkpoint: str  # path to a .pt checkpoint
    split: str = "test"  # train | val | test
    limit: int | None = None  # evaluate the first N images
    threshold: float = THRESHOLDS.fixed  # the fixed CAM threshold reported beside the best one
    threshold_split: str = "val"  # split the reported threshold is chosen on ("none": skip)
    val_limit: int | None = 200  # images of that split used to choose it
    batch_size: int = 16
    samples: int = 5  # sample panels written as PNG
    data_root: str | None = None  # override the dataset folder recorded in the checkpoint
    drs_delta: float | None = None  # override DRS delta at inference
    cam_method: str = DEFAULT_CAM_METHOD  # CAM method, a name in crm_core.cams.CAM_METHODS
    faithfulness: str = "basic"  # basic | full (adds RISE's deletion and insertion AUCs)
    deletion_images: int | None = None  # full: the curves of the first N images only (None: all)
    runs_dir: str = "runs"
    device: str = "cpu"


#: A map that comes from no model, for the ``references`` of :func:`evaluate_model`: (images (B, 3, H, W)
#: in [0, 1], the CAM grid (h, w), a seeded generator) -> (B, H, W) maps in [0, 1].
ReferenceMap = Callable[[torch.Tensor, tuple[int, int], torch.Generator], torch.Tensor]


class FaithfulnessScorer:
    """The faithfulness side of an evaluation, batch by batch: the CAM's Average Drop, Increase in
    Confidence and area (and, with ``deletion_steps``, RISE's deletion and insertion AUCs: 2 x
    (steps + 1) forward passes per image), and the same metrics and PxAP of each map from no model
    in ``references``, all judged by ``model``'s classifier on the image's class."""

    def __init__(self, model: CamModel, drs_delta: float | None, references: Mapping[str, ReferenceMap] | None,
                 deletion_steps: int = 0, deletion_images: int | None = None) -> None:
        self.model, self.drs_delta, self.deletion_steps = model, drs_delta, deletion_steps
        # the deletion and insertion curves cost 2 x (steps + 1) passes per image and per map: only
        # the split's first ``deletion_images`` images get them (None: every image)
        self.deletion_left = deletion_images if deletion_images is not None else float("inf")
        self.references = dict(references or {})
        self.cam = Faithfulness()
        self.reference_scores = {name: (ThresholdCurve(THRESHOLDS.grid), Faithfulness()) for name in self.references}
        self.generator = torch.Generator().manual_seed(0)  # a random reference map is the same in every evaluation

    def _class_score(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """The classifier's softmax probability of ``classes``, one per image."""
        return self.model.probabilities(images, self.drs_delta).gather(1, classes[:, None])[:, 0]

    def add(self, images: torch.Tensor, out: Any, masks: torch.Tensor) -> None:
        """One batch: ``out`` is the model's Explanation of ``images`` (its class, logits and CAMs)."""
        score = out.logits.softmax(1).gather(1, out.classes[:, None])[:, 0]  # Y: the class on the image
        self.cam.add(score, self._class_score(images * out.cams[:, None], out.classes), out.cams)  # O: on E
        curves = int(min(len(images), self.deletion_left)) if self.deletion_steps else 0
        self.deletion_left -= curves
        if curves:
            self._deletion_insertion(self.cam, images[:curves], out.cams[:curves], out.classes[:curves])
        for name, make in self.references.items():
            maps = make(images.cpu(), tuple(out.features.shape[-2:]), self.generator).to(images.device)
            curve, judged = self.reference_scores[name]
            curve.add(maps, masks)
            judged.add(score, self._class_score(images * maps[:, None], out.classes), maps)
            if curves:  # the same images, ranked by a map from no model: what doing nothing scores
                self._deletion_insertion(judged, images[:curves], maps[:curves], out.classes[:curves])

    def _deletion_insertion(self, into: Faithfulness, images: torch.Tensor, maps: torch.Tensor,
                            classes: torch.Tensor) -> None:
        into.add_deletion_insertion(*deletion_insertion(
            lambda x: self._class_score(x, classes), images, maps, self.deletion_steps))

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = self.cam.summary()
        if self.references:
            out["references"] = {name: {"pxap": curve.pxap(), **judged.summary()}
                                 for name, (curve, judged) in self.reference_scores.items()}
        return out


def evaluate_model(
    model: CamModel,
    dataset: Any,
    *,
    limit: int | None = None,
    threshold: float = THRESHOLDS.fixed,
    batch_size: int = 16,
    drs_delta: float | None = None,
    samples: int = 0,
    samples_dir: Path | None = None,
    progress: bool = True,
    val_threshold: float | None = None,
    reconstruction: bool = True,
    cam_method: str = DEFAULT_CAM_METHOD,
    faithfulness: bool = True,
    references: Mapping[str, ReferenceMap] | None = None,
    deletion_steps: int = 0,
    deletion_images: int | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``dataset``; returns the eval.json dict.

    ``val_threshold``: the threshold chosen on another split (:func:`select_threshold`); the
    result then has ``cam_miou_val_threshold`` and ``coverage_val_threshold`` at it.
    ``reconstruction=False`` skips ReconstructNet (CAM metrics only). ``cam_method``: a name in
    :data:`crm_core.cams.CAM_METHODS`. Every result has ``pxap`` (threshold-free, see
    :func:`crm_core.metrics.pxap`); ``faithfulness`` adds ``average_drop``,
    ``increase_in_confidence`` and ``cam_area`` (:class:`crm_core.metrics.Faithfulness`: one more
    forward pass per image, on the map times the image) and, with ``deletion_steps``,
    ``deletion_auc`` and ``insertion_auc`` (on the first ``deletion_images`` images, all when None;
    ``deletion_images`` records how many). ``references`` (with ``faithfulness``): maps that come
    from no model, each scored the same way under the same classifier, in
    ``results["references"][name]`` (what doing nothing scores on these metrics). See
    :class:`FaithfulnessScorer`.
    """
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise ValueError("nothing to evaluate: the split is empty")
    if getattr(dataset, "multi_label", False):
        return evaluate_multi_label(model, dataset, n=n, threshold=threshold, batch_size=batch_size,
                                    drs_delta=drs_delta, val_threshold=val_threshold, progress=progress,
                                    reconstruction=reconstruction, cam_method=cam_method)
    part_names = dict(getattr(dataset, "part_names", {}))
    curve = ThresholdCurve(THRESHOLDS.grid, tuple(sorted(part_names)))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(n)), batch_size=batch_size)
    correct = 0
    dependence = CamDependence()
    reconstruct = reconstruction and model.reconstructor is not None
    faithful = (FaithfulnessScorer(model, drs_delta, references, deletion_steps, deletion_images)
                if faithfulness else None)
    panels: list[np.ndarray] = []
    with torch.no_grad():
        for batch in tqdm(loader, desc=f"evaluate {model.name}", unit="batch", disable=not progress):
            images = batch["image"].to(model.device)
            out = model.explain(images, batch["label"], drs_delta, method=cam_method)  # ground-truth class
            correct += int((out.logits.argmax(1) == out.classes).sum())
            cams = out.cams  # (B, H, W)
            curve.add(cams, batch["mask"], batch.get("parts"))
            if faithful is not None:
                faithful.add(images, out, batch["mask"])
            recon = None
            if reconstruct:
                decoder_in = model.decoder_input(out.features)  # (B, C, h, w), from the same forward pass
                recon = model.reconstructor(decoder_in)  # (B, 3, r, r), r = recon size
                dependence.add(model.reconstructor, decoder_in, recon, images)
            for i in range(len(images)):
                if len(panels) >= samples:
                    break
                panels.append(sample_panel(images[i], cams[i], batch["mask"][i],
                                           None if recon is None else from_tanh_range(recon[i])))
    fixed_index = curve.index_of(threshold)
    best_index = curve.best_index()
    results: dict[str, Any] = {
        "checkpoint": str(model.checkpoint.path),
        "model": model.describe(),
        "num_images": n,
        "drs_delta": drs_delta,
        "accuracy": correct / n,
        "cam_miou_fixed": {"threshold": curve.thresholds[fixed_index], **curve.at(fixed_index)},
        "cam_miou_best": {"threshold": curve.thresholds[best_index], **curve.at(best_index)},
        "coverage_fixed": curve.coverage_at(fixed_index, part_names),
        "coverage_best": curve.coverage_at(best_index, part_names),
        "curve": [
            {"threshold": t, **curve.at(i), "coverage": curve.coverage_at(i, part_names)}
            for i, t in enumerate(curve.thresholds)
        ],
        "pxap": curve.pxap(),
        **(faithful.summary() if faithful is not None else {}),
        **({"deletion_images": faithful.cam.curves} if faithful is not None and faithful.cam.curves else {}),
        "recon_l1": None,
    }
    if val_threshold is not None:
        index = curve.index_of(val_threshold)
        results["cam_miou_val_threshold"] = {"threshold": curve.thresholds[index], **curve.at(index)}
        results["coverage_val_threshold"] = curve.coverage_at(index, part_names)
    if reconstruct:
        # recon_l1_shuffled / cam_dependence: does the decoder use its CAMs? (~0: it ignores them)
        results.update(dependence.summary())
    if samples_dir is not None and panels:
        results["samples"] = _write_samples(panels, samples_dir)
    return results


def evaluate_multi_label(model: CamModel, dataset: Any, *, n: int, threshold: float, batch_size: int,
                         drs_delta: float | None, val_threshold: float | None, progress: bool, reconstruction: bool,
                         cam_method: str) -> dict[str, Any]:
    """:func:`evaluate_model` on a multi-label dataset (several objects of different classes).

    The classes in each image's labels compete with a constant background score, the threshold
    (:class:`crm_core.metrics.ClassMapCurve`): mIoU over the C + 1 classes from one confusion
    matrix of the split, ``per_class_iou`` (background first), the background false-positive rate
    and ``confusion`` (the share of object pixels given another present class), at the fixed, the
    val-chosen and the best background score. Classification: ``accuracy`` is the share of images
    whose label set is predicted exactly (logit > 0), with the macro ``f1`` and ``map``. PxAP and
    the faithfulness metrics are single-label measures and are not computed here."""
    part_names = dict(getattr(dataset, "part_names", {}))
    curve = ClassMapCurve(len(model.class_names), THRESHOLDS.grid, tuple(sorted(part_names)))
    scores, dependence = MultiLabelScores(), CamDependence()
    reconstruct = reconstruction and model.reconstructor is not None
    hits = 0
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(n)), batch_size=batch_size)
    with torch.no_grad():
        for batch in tqdm(loader, desc=f"evaluate {model.name}", unit="batch", disable=not progress):
            images = batch["image"].to(model.device)
            logits, cams, features = model.class_maps(images, drs_delta, method=cam_method)
            hits += int(label_hits(logits.cpu(), batch, multi_label=True).sum())
            scores.add(logits, batch["labels"])
            curve.add(cams, batch["labels"], batch["class_mask"], batch.get("parts"))
            if reconstruct:
                decoder_in = model.decoder_input(features)  # the same forward pass as the maps
                dependence.add(model.reconstructor, decoder_in, model.reconstructor(decoder_in), images)
    names = ["background", *model.class_names]

    def scored(index: int) -> dict[str, Any]:
        at = curve.at(index)
        return {"threshold": curve.thresholds[index], **at, "per_class_iou": dict(zip(names, at["per_class_iou"]))}

    fixed_index, best_index = curve.index_of(threshold), curve.best_index()
    results: dict[str, Any] = {
        "checkpoint": str(model.checkpoint.path), "model": model.describe(), "num_images": n, "drs_delta": drs_delta,
        "multi_label": True, "accuracy": hits / n, **scores.summary(),
        "cam_miou_fixed": scored(fixed_index), "cam_miou_best": scored(best_index),
        "coverage_fixed": curve.coverage_at(fixed_index, part_names),
        "coverage_best": curve.coverage_at(best_index, part_names),
        "curve": [{"threshold": t, **{k: v for k, v in curve.at(i).items() if k != "per_class_iou"},
                   "coverage": curve.coverage_at(i, part_names)} for i, t in enumerate(curve.thresholds)],
        "recon_l1": None,
    }
    if val_threshold is not None:
        index = curve.index_of(val_threshold)
        results["cam_miou_val_threshold"] = scored(index)
        results["coverage_val_threshold"] = curve.coverage_at(index, part_names)
    if reconstruct:
        results.update(dependence.summary())
    return results


def _write_samples(panels: list[np.ndarray], samples_dir: Path) -> list[str]:
    """The sample panels as ``eval_NN.png`` in ``samples_dir``; their paths."""
    samples_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, panel in enumerate(panels):
        paths.append(str(samples_dir / f"eval_{i:02d}.png"))
        Image.fromarray(panel).save(paths[-1])
    return paths


def sample_panel(image: torch.Tensor, cam: torch.Tensor, mask: torch.Tensor, recon: torch.Tensor | None) -> np.ndarray:
    """image | CAM overlay | ground-truth outline [| reconstruction], side by side (uint8 HxWx3)."""
    rgb = to_uint8_image(image)
    tiles = [rgb, cam_overlay(rgb, cam), mask_outline(rgb, mask == 1)]
    if recon is not None:
        recon = resize_reconstruction(recon[None], image.shape[-2:])[0]  # a smaller recon_size: at the image's
        tiles.append(to_uint8_image(recon))
    return side_by_side(tiles)


def training_diagnostics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The run's gradient diagnostics in one place: median of each loss term's gradient norm on
    the CAM features relative to CE's, the mean CRM gate, and the last validation CAM dependence."""
    out: dict[str, float] = {}
    train = [r for r in rows if r.get("split") == "train"]
    for key in ("grad_l1", "grad_vgg", "grad_align"):
        values = [float(r[key]) for r in train if r.get(key) is not None]
        if values:
            out[f"{key}_median"] = float(np.median(values))
    gates = [float(r["crm_gate"]) for r in train if r.get("crm_gate") is not None]
    if gates:
        out["crm_gate_mean"] = float(np.mean(gates))
    val = [r for r in rows if r.get("split") == "val" and r.get("cam_dependence") is not None]
    if val:
        out["val_cam_dependence_last"] = float(val[-1]["cam_dependence"])
    return out


def select_threshold(model: CamModel, dataset: Any, *, limit: int | None = None, batch_size: int = 16,
                     drs_delta: float | None = None, progress: bool = False,
                     cam_method: str = DEFAULT_CAM_METHOD) -> float:
    """The CAM threshold with the best mIoU on ``dataset`` (the val split: never the reported one)."""
    scan = evaluate_model(model, dataset, limit=limit, batch_size=batch_size, drs_delta=drs_delta,
                          progress=progress, reconstruction=False, cam_method=cam_method, faithfulness=False)
    return float(scan["cam_miou_best"]["threshold"])


def evaluate_protocol(
    model: CamModel,
    *,
    split: str = "test",
    limit: int | None = None,
    threshold_split: str = "val",
    val_limit: int | None = None,
    data_root: str | None = None,
    threshold: float = THRESHOLDS.fixed,
    batch_size: int = 16,
    drs_delta: float | None = None,
    cam_method: str = DEFAULT_CAM_METHOD,
    samples: int = 0,
    runs_dir: str | Path | None = None,
    checkpoint_mtime_ns: int | None = None,
    progress: bool = False,
    references: Mapping[str, ReferenceMap] | None = None,
    faithfulness: str = "basic",
    deletion_images: int | None = None,
) -> dict[str, Any]:
    """The evaluation protocol, the one place it is written: the CAM threshold is chosen on the
    first ``val_limit`` images of ``threshold_split`` (``"none"``: not chosen), and the metrics
    are reported on the first ``limit`` images of ``split`` at it (``cam_miou_val_threshold``,
    ``coverage_val_threshold``) as well as at the fixed and the best-on-``split`` thresholds.

    The result records what it is about: ``split``, ``threshold_split`` and ``val_images`` (the
    dashboard reuses a stored threshold only for the same val size), and ``checkpoint_mtime_ns``
    when given (which version of the file; :func:`evaluate_checkpoint` stats it before reading).
    With ``runs_dir`` it also carries the run's training diagnostics and ``samples`` sample panels,
    and is written atomically to ``<runs_dir>/<model name>/eval.json``. ``references``: maps that
    come from no model, scored on the reported split beside the CAM (:func:`evaluate_model`).
    ``faithfulness``: "none" (mIoU and PxAP only: no forward pass beyond the CAM's), "basic"
    (Average Drop, Increase in Confidence, map area) or "full" (and RISE's deletion and insertion
    AUCs, :data:`crm_core.metrics.DELETION_STEPS` steps, on the first ``deletion_images`` images
    of ``split``; all when None).
    """
    if faithfulness not in FAITHFULNESS_LEVELS:
        raise ValueError(f"faithfulness must be one of {FAITHFULNESS_LEVELS}, got {faithfulness!r}")
    val_threshold = None
    if threshold_split != "none":
        val_threshold = select_threshold(model, dataset_for(model, threshold_split, data_root), limit=val_limit,
                                         batch_size=batch_size, drs_delta=drs_delta, progress=progress,
                                         cam_method=cam_method)
    run = RunDir.create(runs_dir, model.name) if runs_dir is not None else None
    results = evaluate_model(model, dataset_for(model, split, data_root), limit=limit, threshold=threshold,
                             batch_size=batch_size, drs_delta=drs_delta, samples=samples if run else 0,
                             samples_dir=run.samples_dir if run else None, val_threshold=val_threshold,
                             cam_method=cam_method, progress=progress, references=references,
                             deletion_steps=DELETION_STEPS if faithfulness == "full" else 0,
                             deletion_images=deletion_images, faithfulness=faithfulness != "none")
    results["split"] = split
    if val_threshold is not None:
        results.update(threshold_split=threshold_split, val_images=val_limit)
        if threshold_split == split:
            log.warning("the threshold was chosen on the split it is reported on (%s): an optimistic number", split)
    if checkpoint_mtime_ns is not None:
        results["checkpoint_mtime_ns"] = checkpoint_mtime_ns
    if run is not None:
        diagnostics = training_diagnostics(run.read_metrics())
        if diagnostics:
            results["training_diagnostics"] = diagnostics
        run.write_eval(results)
    return results


def evaluate_checkpoint(path: str | Path, device: str = "cpu", **protocol: Any) -> dict[str, Any]:
    """:func:`evaluate_protocol` on the checkpoint file ``path``, stamped with the version of the
    file it read (its mtime, taken before reading: a file replaced meanwhile does not match)."""
    mtime = Path(path).stat().st_mtime_ns
    return evaluate_protocol(CamModel.load(path, device), checkpoint_mtime_ns=mtime, **protocol)


def main(cfg: EvalConfig) -> dict[str, Any]:
    return evaluate_checkpoint(cfg.checkpoint, cfg.device, split=cfg.split, limit=cfg.limit,
                               threshold_split=cfg.threshold_split, val_limit=cfg.val_limit, data_root=cfg.data_root,
                               threshold=cfg.threshold, batch_size=cfg.batch_size, drs_delta=cfg.drs_delta,
                               cam_method=cfg.cam_method, samples=cfg.samples, runs_dir=cfg.runs_dir, progress=True,
                               faithfulness=cfg.faithfulness, deletion_images=cfg.deletion_images)


def format_summary(results: dict[str, Any]) -> str:
    fixed, best = results["cam_miou_fixed"], results["cam_miou_best"]
    lines = [
        results["model"],
        f"split {results.get('split', '?')}: {results['num_images']} images",
        f"accuracy            {results['accuracy']:.4f}",
    ]
    if "cam_miou_val_threshold" in results:
        val = results["cam_miou_val_threshold"]
        lines.append(f"CAM mIoU @ {val['threshold']:.2f} ({results.get('threshold_split', 'val')} threshold) {val['miou']:.4f} "
                     f"(fg {val['fg_iou']:.4f}, bg {val['bg_iou']:.4f}, background false positives {val['bg_fpr']:.1%})")
        if results["coverage_val_threshold"]:
            cov = ", ".join(f"{k} {v:.3f}" for k, v in results["coverage_val_threshold"].items())
            lines.append(f"coverage @ val threshold {cov}")
    lines += [
        f"CAM mIoU @ {fixed['threshold']:.2f}      {fixed['miou']:.4f} (fg {fixed['fg_iou']:.4f}, bg {fixed['bg_iou']:.4f})",
        f"CAM mIoU best @ {best['threshold']:.2f} {best['miou']:.4f} (fg {best['fg_iou']:.4f}, bg {best['bg_iou']:.4f}; "
        "threshold chosen on this split: optimistic)",
    ]
    if results["coverage_best"]:
        cov = ", ".join(f"{k} {v:.3f}" for k, v in results["coverage_best"].items())
        lines.append(f"coverage @ best      {cov}")
    if "average_drop" in results:
        lines.append(f"PxAP {results['pxap']:.4f}; Average Drop {results['average_drop']:.1f}%, Increase in Confidence "
                     f"{results['increase_in_confidence']:.1f}%, map area {results['cam_area']:.3f}")
    if results.get("multi_label"):
        at = results.get("cam_miou_val_threshold", results["cam_miou_best"])
        lines.append(f"multi-label: F1 {results['f1']:.4f}, mAP {results['map']:.4f} (accuracy: whole label set right); "
                     f"the thresholds are the background score; {at['confusion']:.1%} of object pixels given another "
                     "present class")
        lines.append("IoU per class " + ", ".join(f"{name} {iou:.3f}" for name, iou in at["per_class_iou"].items()
                                                  if iou == iou))  # NaN: a class absent from the split
    if "deletion_auc" in results:
        lines.append(f"deletion AUC {results['deletion_auc']:.4f} (lower is better), insertion AUC "
                     f"{results['insertion_auc']:.4f} (higher is better), over the first {results['deletion_images']} "
                     "image(s)")
    if results["recon_l1"] is not None:
        lines.append(f"reconstruction L1   {results['recon_l1']:.4f}, with shuffled CAMs {results['recon_l1_shuffled']:.4f}: "
                     f"{describe_cam_dependence(results['cam_dependence'])}")
    return "\n".join(lines)


METRICS_HELP = """\
eval.json, besides accuracy and the CAM mIoU at the val-chosen, fixed and best thresholds
(multi-label data -- voc, synthetic with --max-objects > 1: the threshold is a constant background
score that the CAMs of each image's classes compete with; the mIoU is over background + every class,
with per_class_iou, confusion (share of object pixels given another present class), f1 and map
of the classifier; the five metrics below are single-label and left out):
  pxap                    area under the pixel precision-recall curve of the split's maps pooled
                          (no threshold; binned on the threshold grid); a constant map scores the
                          foreground's share of the pixels
  average_drop            mean of max(0, Y - O) / Y in percent, Y the softmax probability of the
                          image's class on the image and O on the map times the image (lower is better)
  increase_in_confidence  share of images with O > Y, percent (higher is better)
  cam_area                mean share of the image at or above half the map's peak: a map covering
                          everything has no drop, so read it beside average_drop
  deletion_auc            (--faithfulness full) area under the class's probability as the map's top
                          pixels are blacked out, most salient first, in 20 steps (lower is better)
  insertion_auc           (--faithfulness full) the same as they are put back on a black image
                          (higher is better)
"""
FAITHFULNESS_LEVELS = ("none", "basic", "full")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the options' help; the metrics' epilog as written."""


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Evaluate a CRM Lab checkpoint.", epilog=METRICS_HELP,
                                parents=[checkpoint_options(), cam_options(), device_option(), faithfulness_options()],
                                formatter_class=_HelpFormatter)
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split to report")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N images")
    p.add_argument("--threshold", type=float, default=THRESHOLDS.fixed, help="fixed CAM threshold reported beside the chosen one")
    p.add_argument("--threshold-split", default="val", choices=("train", "val", "test", "none"),
                   help="split the reported CAM threshold is chosen on (none: skip)")
    p.add_argument("--val-limit", type=int, default=200, help="images of --threshold-split used to choose the threshold")
    p.add_argument("--samples", type=int, default=5, help="sample panels to save")
    p.add_argument("--drs-delta", type=float, default=None, help="override DRS delta")
    p.add_argument("--runs-dir", default="runs", help="eval.json goes to <runs-dir>/<checkpoint name>/")
    return p


def faithfulness_options(levels: tuple[str, ...] = FAITHFULNESS_LEVELS,
                         deletion_images: int | None = None) -> argparse.ArgumentParser:
    """``--faithfulness`` (one of ``levels``) and ``--deletion-images`` (default ``deletion_images``;
    None: every image), as this CLI and the results runner take them: a parent parser."""
    described = {"none": "mIoU and PxAP only",
                 "basic": "PxAP, Average Drop, Increase in Confidence and map area (one more forward pass per image)",
                 "full": f"also RISE's deletion_auc and insertion_auc ({2 * (DELETION_STEPS + 1)} forward passes "
                         "per image and map)"}
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("faithfulness")
    group.add_argument("--faithfulness", default="basic", choices=levels,
                       help="; ".join(f"{level}: {described[level]}" for level in levels))
    group.add_argument("--deletion-images", type=int, default=deletion_images,
                       help="with --faithfulness full: draw the deletion and insertion curves on the first N images "
                            "of the split only" + (" (default: every image)" if deletion_images is None else ""))
    return parser


def cli(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = get_args_parser().parse_args(argv)
    for option in ("limit", "deletion_images"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            log.error("--%s must be >= 1", option.replace("_", "-"))
            return 2
    try:
        results = main(EvalConfig(**vars(args)))
    except (CheckpointError, DatasetNotFoundError, ValueError, OSError) as exc:
        log.error("%s", exc)
        return 2
    print(format_summary(results))
    log.info("wrote %s", Path(args.runs_dir) / Path(args.checkpoint).stem / "eval.json")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
