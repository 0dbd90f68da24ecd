"""Turn CAMs into pseudo-mask trimaps and score them against ground truth.

    python -m crm_core.postprocess --checkpoint checkpoints/drs_crm.pt --out pseudo/ --split train

Each image gets a trimap PNG (``<index>.png``, six digits) in the Oxford-IIIT Pet convention: 1 foreground, 2 background,
3 uncertain (CAM between the two thresholds). On multi-label data (several classes per image) it
gets a class mask instead, a palette PNG in VOC's colours: the leading class of the image's own
(IRN's ``conf_fg_thres`` / ``conf_bg_thres`` band): its index + 1 where its CAM reaches ``--high``,
0 (background) where the leading CAM is below ``--low``, 255 (uncertain) between. With ``--at-val-threshold`` the band is moved to
the CAM's own operating point: ``--high`` becomes the CAM threshold chosen on val (the
evaluation protocol's), and ``--low`` is scaled with it. The CAM is the ground-truth class's, from
:meth:`crm_core.api.CamModel.explain` (``--cam-method``: any name of
:data:`crm_core.cams.CAM_METHODS`, default the closed-form Grad-CAM++). With ``--superpixels``
the CAM is first averaged inside SLIC superpixels, so mask borders follow image edges.
Beside them: ``scores.json`` (the masks against ground truth) and ``manifest.json`` (the dataset
config and split they index, checked by ``python -m crm_core.segment --masks``).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image
from tqdm import tqdm

from crm_core.explain import CamModel, dataset_config, dataset_for
from crm_core.atomic import atomic_write_json
from crm_core.evaluate import select_threshold
from crm_core.cams import DEFAULT_CAM_METHOD
from crm_core.checkpoints import CheckpointError
from crm_core.cli_options import cam_options, checkpoint_options, device_option
from crm_core.data import DatasetNotFoundError, SuperpixelCache
from crm_core.data.superpixels import prefill_superpixels, superpixel_mean
from crm_core.data.voc import voc_palette
from crm_core.metrics import IGNORE, ClassMaskScores, binary_counts, ious_from_counts, leading_class
from crm_core.thresholds import THRESHOLDS

log = logging.getLogger("crm_core.postprocess")

FOREGROUND, BACKGROUND, UNCERTAIN = 1, 2, 3
MANIFEST_NAME = "manifest.json"  # beside the trimaps: the dataset config and split they were made from


def pseudo_trimap(cam: torch.Tensor, low: float = THRESHOLDS.low, high: float = THRESHOLDS.high,
                  segments: torch.Tensor | None = None) -> torch.Tensor:
    """CAM (B, H, W) in [0, 1] -> trimap (B, H, W) uint8: 1 fg (>= high), 2 bg (< low), 3 uncertain.

    ``segments`` (B, H, W): average the CAM inside each superpixel first (refinement).
    """
    if not (0.0 <= low <= high <= 1.0):
        raise ValueError(f"thresholds must satisfy 0 <= low <= high <= 1, got low={low}, high={high}")
    if segments is not None:
        cam = superpixel_mean(cam, segments)
    trimap = torch.full(cam.shape, UNCERTAIN, dtype=torch.uint8)
    trimap[cam >= high] = FOREGROUND
    trimap[cam < low] = BACKGROUND
    return trimap


def pseudo_class_mask(cams: torch.Tensor, labels: torch.Tensor, low: float = THRESHOLDS.low,
                      high: float = THRESHOLDS.high, segments: torch.Tensor | None = None) -> torch.Tensor:
    """CAMs of every class (B, C, H, W) in [0, 1] and the images' multi-hot labels (B, C) -> class
    mask (B, H, W) uint8: the leading labelled class + 1 where its CAM >= high, 0 where the leading
    CAM < low, 255 (uncertain) between. ``segments``: average each CAM in superpixels first."""
    if not (0.0 <= low <= high <= 1.0):
        raise ValueError(f"thresholds must satisfy 0 <= low <= high <= 1, got low={low}, high={high}")
    if segments is not None:
        cams = torch.stack([superpixel_mean(cams[:, c], segments) for c in range(cams.shape[1])], 1)
    top, lead = leading_class(cams, labels)
    mask = torch.full(top.shape, IGNORE, dtype=torch.uint8)
    above = top >= high
    mask[above] = (lead[above] + 1).to(torch.uint8)
    mask[top < low] = 0
    return mask


def score_trimaps(trimap: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Counts (2, 4): row 0 strict (uncertain = background), row 1 confident pixels only."""
    fg = trimap == FOREGROUND
    strict = binary_counts(fg, masks).sum(dim=0)
    confident_masks = torch.where(trimap == UNCERTAIN, torch.full_like(masks, 255), masks)
    confident = binary_counts(fg, confident_masks).sum(dim=0)
    return torch.stack([strict, confident])


#: Where a trimap's map comes from: a dataset batch -> (B, H, W) maps in [0, 1] (a CAM model's,
#: :func:`cam_maps`, or a map that comes from no model, crm_core.experiments.baselines).
MapSource = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def cam_maps(model: CamModel, drs_delta: float | None = None, cam_method: str = DEFAULT_CAM_METHOD,
             every_class: bool = False) -> MapSource:
    """``model``'s CAMs of each image's ground-truth class (image-level labels are known in WSSS);
    ``cam_method``: a name in :data:`crm_core.cams.CAM_METHODS`. ``every_class``: the maps of every
    class (B, C, H, W), from which a multi-label image's own classes compete."""
    def maps(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if every_class:
            return model.class_maps(batch["image"], drs_delta, method=cam_method)[1].cpu()
        return model.explain(batch["image"], batch["label"], drs_delta, method=cam_method).cams.cpu()
    return maps


def make_pseudo_masks(
    maps: MapSource,
    source: str,
    dataset: Any,
    out_dir: Path | None,
    *,
    low: float = THRESHOLDS.low,
    high: float = THRESHOLDS.high,
    refine: bool = False,
    n_segments: int = 64,
    compactness: float = 10.0,
    limit: int | None = None,
    batch_size: int = 16,
    progress: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write one trimap PNG per image of ``maps`` (``source``: what they are, e.g. a checkpoint's
    path) to ``out_dir`` (if given) and return their scores. ``on_batch(done, total)``: called
    after every batch with the images done so far (a caller's progress; it may raise to cancel).
    A multi-label ``dataset`` gets class masks (:func:`make_class_masks`)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise ValueError("nothing to process: the split is empty")
    if refine and getattr(dataset, "superpixels", None) is None:
        dataset.superpixels = SuperpixelCache(n_segments=n_segments, compactness=compactness)
    if refine:
        prefill_superpixels(dataset, indices=range(n), progress=progress)  # SLIC on every core first
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    if getattr(dataset, "multi_label", False):
        return make_class_masks(maps, source, dataset, out_dir, n=n, low=low, high=high, refine=refine,
                                n_segments=n_segments, compactness=compactness, batch_size=batch_size,
                                progress=progress, on_batch=on_batch)
    counts = torch.zeros(2, 4, dtype=torch.int64)
    uncertain = 0
    total = 0
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(n)), batch_size=batch_size)
    with torch.no_grad():
        for batch in tqdm(loader, desc=f"pseudo masks {Path(source).name}", unit="batch", disable=not progress):
            trimap = pseudo_trimap(maps(batch), low, high, batch["superpixels"] if refine else None)
            counts += score_trimaps(trimap, batch["mask"])
            uncertain += int((trimap == UNCERTAIN).sum())
            total += trimap.numel()
            if out_dir is not None:
                for index, tri in zip(batch["index"].tolist(), trimap.numpy()):
                    Image.fromarray(tri).save(out_dir / f"{index:06d}.png")
            if on_batch is not None:
                on_batch(int(batch["index"][-1]) + 1, n)
    strict, confident = ious_from_counts(counts[0]), ious_from_counts(counts[1])
    return {
        "checkpoint": source,
        "num_images": n,
        "low": low,
        "high": high,
        "refined": refine,
        "n_segments": n_segments if refine else None,
        "compactness": compactness if refine else None,
        "miou": strict["miou"],
        "fg_iou": strict["fg_iou"],
        "bg_iou": strict["bg_iou"],
        "confident_miou": confident["miou"],
        "uncertain_share": uncertain / max(total, 1),
    }


def make_class_masks(maps: MapSource, source: str, dataset: Any, out_dir: Path | None, *, n: int, low: float,
                     high: float, refine: bool, n_segments: int, compactness: float, batch_size: int, progress: bool,
                     on_batch: Callable[[int, int], None] | None) -> dict[str, Any]:
    """:func:`make_pseudo_masks` on multi-label data: ``maps`` gives every class's CAM, each image
    gets a class mask (:func:`pseudo_class_mask`) as a palette PNG in VOC's colours, scored
    against the class masks: ``miou`` with uncertain pixels as background, ``confident_miou`` on
    the confident pixels alone, with ``per_class_iou`` and ``confusion`` (metrics.confusion_ious).
    The superpixels and ``out_dir`` are ready (:func:`make_pseudo_masks` prepares them)."""
    classes = int(dataset.num_classes)
    strict, confident = ClassMaskScores(classes), ClassMaskScores(classes)
    uncertain = total = 0
    palette = voc_palette()
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(n)), batch_size=batch_size)
    with torch.no_grad():
        for batch in tqdm(loader, desc=f"pseudo masks {Path(source).name}", unit="batch", disable=not progress):
            mask = pseudo_class_mask(maps(batch), batch["labels"], low, high, batch["superpixels"] if refine else None)
            truth = batch["class_mask"]
            strict.add(torch.where(mask == IGNORE, 0, mask.long()), truth)
            confident.add(mask.long(), truth)
            uncertain += int((mask == IGNORE).sum())
            total += mask.numel()
            if out_dir is not None:
                for index, array in zip(batch["index"].tolist(), mask.numpy()):
                    png = Image.fromarray(array, mode="P")
                    png.putpalette(palette)
                    png.save(out_dir / f"{index:06d}.png")
            if on_batch is not None:
                on_batch(int(batch["index"][-1]) + 1, n)
    scores = strict.summary()
    return {
        "checkpoint": source, "num_images": n, "format": "classes", "num_classes": classes, "low": low, "high": high,
        "refined": refine, "n_segments": n_segments if refine else None,
        "compactness": compactness if refine else None, "miou": scores["miou"], "fg_iou": scores["fg_iou"],
        "bg_iou": scores["bg_iou"], "confusion": scores["confusion"],
        "per_class_iou": dict(zip(["background", *getattr(dataset, "class_names", [])], scores["per_class_iou"])),
        "confident_miou": confident.summary()["miou"], "uncertain_share": uncertain / max(total, 1),
    }


def write_pseudo_masks(model: CamModel, out: Path, split: str = "train", data_root: str | None = None,
                       progress: bool = True, val_threshold: float | None = None, drs_delta: float | None = None,
                       cam_method: str = DEFAULT_CAM_METHOD, **options: Any) -> dict[str, Any]:
    """:func:`write_masks_of` for ``model``'s CAMs on its own dataset's ``split``."""
    dataset = dataset_for(model, split, data_root)
    maps = cam_maps(model, drs_delta, cam_method, every_class=getattr(dataset, "multi_label", False))
    return write_masks_of(maps, str(model.checkpoint.path), dataset, dataset_config(model, data_root), out, split,
                          progress, val_threshold, cam_method=cam_method, **options)


def write_masks_of(maps: MapSource, source: str, dataset: Any, config: dict[str, Any], out: Path,
                   split: str = "train", progress: bool = True, val_threshold: float | None = None,
                   cam_method: str | None = None, **options: Any) -> dict[str, Any]:
    """:func:`make_pseudo_masks` on ``dataset`` (of dataset config ``config``, split ``split``) into
    ``out``, with ``scores.json`` (their scores) and ``manifest.json`` (:data:`MANIFEST_NAME`: which
    dataset, split and images they index, which :mod:`crm_core.segment` checks); returns the scores.

    ``val_threshold``: the map's val-chosen threshold; the ``low`` / ``high`` band (default
    :data:`~crm_core.thresholds.THRESHOLDS`'s) is moved there (:meth:`~crm_core.thresholds.ThresholdPolicy.band_at`)
    and the threshold recorded with the masks.
    ``cam_method``: recorded in the manifest (None: the maps are not a model's CAMs)."""
    if val_threshold is not None:
        options["low"], options["high"] = THRESHOLDS.band_at(val_threshold, options.get("low"), options.get("high"))
    results = make_pseudo_masks(maps, source, dataset, out, progress=progress, **options)
    results["split"] = split
    results["val_threshold"] = val_threshold
    atomic_write_json(out / "scores.json", results)
    manifest = {"kind": "pseudo-masks", "split": split, "dataset": config, "num_images": results["num_images"],
                "cam_method": cam_method, "format": results.get("format", "trimap"),
                **{k: results[k] for k in ("checkpoint", "low", "high", "val_threshold", "refined", "miou", "fg_iou", "bg_iou")}}
    atomic_write_json(out / MANIFEST_NAME, manifest)
    return results


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Write CAM pseudo-mask trimaps and score them.",
                                parents=[checkpoint_options(), cam_options(), device_option()],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the trimap PNGs")
    p.add_argument("--split", default="train", choices=("train", "val", "test"), help="split to make pseudo masks for")
    p.add_argument("--low", type=float, default=THRESHOLDS.low, help="CAM below this: background")
    p.add_argument("--high", type=float, default=THRESHOLDS.high, help="CAM at or above this: foreground")
    p.add_argument("--at-val-threshold", action="store_true",
                   help="move the band to the CAM's own threshold: --high becomes the CAM threshold chosen on the "
                        "val split (as evaluate's), --low is scaled by the same factor")
    p.add_argument("--val-limit", type=int, default=100, help="val images the threshold is chosen on (--at-val-threshold)")
    p.add_argument("--superpixels", action="store_true", help="refine with SLIC superpixels")
    p.add_argument("--n-segments", type=int, default=64, help="SLIC superpixels per image (--superpixels)")
    p.add_argument("--compactness", type=float, default=10.0, help="SLIC compactness (--superpixels)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--drs-delta", type=float, default=None, help="override the DRS delta at inference")
    return p


def cli(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = get_args_parser().parse_args(argv)
    try:
        model = CamModel.load(args.checkpoint, args.device)
        out = Path(args.out)
        val_threshold = None
        if args.at_val_threshold:
            if args.val_limit < 1:
                raise ValueError(f"--val-limit must be >= 1, got {args.val_limit}")
            val_threshold = select_threshold(model, dataset_for(model, "val", args.data_root), limit=args.val_limit,
                                             batch_size=args.batch_size, drs_delta=args.drs_delta,
                                             cam_method=args.cam_method, progress=True)
            log.info("CAM threshold chosen on %d val images: %.2f", args.val_limit, val_threshold)
        results = write_pseudo_masks(model, out, args.split, args.data_root, val_threshold=val_threshold,
                                     low=args.low, high=args.high,
                                     refine=args.superpixels, n_segments=args.n_segments, compactness=args.compactness,
                                     limit=args.limit, batch_size=args.batch_size, drs_delta=args.drs_delta,
                                     cam_method=args.cam_method)
    except (CheckpointError, DatasetNotFoundError, ValueError, OSError) as exc:
        log.error("%s", exc)
        return 2
    kind = "class masks" if results.get("format") == "classes" else "trimaps"
    print(f"{results['num_images']} {kind} in {out} (object >= {results['high']:.2f}, background < "
          f"{results['low']:.2f}): mIoU {results['miou']:.4f} "
          f"(fg {results['fg_iou']:.4f}, bg {results['bg_iou']:.4f}), confident-pixel mIoU "
          f"{results['confident_miou']:.4f}, uncertain {results['uncertain_share']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
