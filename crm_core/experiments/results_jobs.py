"""The table's jobs beyond training and scoring a CAM model: a row made by no model (its maps on the
recipe's data), stage 2's floor (the better constant mask) and stage 2's networks (pseudo masks of
a source row, a segmentation network trained on them), and the names and seeds they run under.
:mod:`crm_core.experiments.results` runs them as jobs of the table."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from crm_core.experiments.results_table import ROW_BY_KEY, SEG_RECIPE, Row
from crm_core.recipes import RESULTS


def checkpoint_name(row: Row, seed: int, stage2_seed: int = 0) -> str:
    return f"results_{row.key}_s{seed}" + (f"_n{stage2_seed}" if stage2_seed else "")


def stage2_network_seed(seed: int, stage2_seed: int) -> int:
    """The seed of a stage-2 network's weights, batches and flips. The CAM seed ``seed`` draws the
    data and the CAM model whose masks it learns; ``stage2_seed`` k draws further networks on the
    same masks (k = 0 is the CAM seed itself)."""
    return seed + 1000 * stage2_seed


def run_stage2(row: Row, seed: int, source: dict[str, Any] | None, test_limit: int, checkpoint_dir: str,
               runs_dir: str, device: str, train_size: int | None, steps: int | None = None,
               stage2_seed: int = 0) -> dict[str, Any]:
    """A stage-2 row: pseudo masks of the source CAM model (``source``: its job; None for ground
    truth) on the train split, a segmentation network (SEG_RECIPE, network seed
    :func:`stage2_network_seed`) trained on them, its test scores."""
    from crm_core.explain import CamModel
    from crm_core.postprocess import write_pseudo_masks
    from crm_core.segment import GT, SegConfig, main as segment_main

    name = checkpoint_name(row, seed, stage2_seed)
    masks = GT
    source_row = ROW_BY_KEY[row.stage2] if row.stage2 in ROW_BY_KEY else None
    if source_row is not None and source_row.baseline is not None:  # a map that comes from no model
        masks = str(Path(runs_dir) / name / "pseudo_masks")
        write_baseline_masks(source_row, seed, Path(masks), train_size, source["threshold"],
                             refine=bool(row.overrides.get("superpixels")))
    elif source is not None:  # cut at the threshold the source job chose on val (the band moved there)
        masks = str(Path(runs_dir) / name / "pseudo_masks")
        write_pseudo_masks(CamModel.load(source["checkpoint"], device), Path(masks), "train", limit=train_size,
                           refine=bool(row.overrides.get("superpixels")), progress=False,
                           val_threshold=source["threshold"])
    data = dict(dataset=RESULTS.dataset, image_size=RESULTS.image_size, num_classes=RESULTS.num_classes,
                appearance=row.appearance, data_seed=seed, max_objects=row.max_objects) if source is None else {}
    recipe = {**SEG_RECIPE, **({} if steps is None else {"steps": steps}), **({"steps": 0} if row.untrained else {})}
    cfg = SegConfig(name=name, masks=masks, seed=stage2_network_seed(seed, stage2_seed), train_size=train_size,
                    test_limit=test_limit,
                    checkpoint_dir=checkpoint_dir, runs_dir=runs_dir, device=device, **recipe, **data)
    started = time.perf_counter()
    path = segment_main(cfg)
    evaluation = json.loads((Path(runs_dir) / name / "eval.json").read_text())
    return {
        "checkpoint": str(path), "source_checkpoint": None if source is None else source.get("checkpoint"),
        "miou": evaluation["miou"], "fg_iou": evaluation["fg_iou"], "bg_iou": evaluation["bg_iou"],
        "bg_fpr": evaluation["bg_fpr"], "head": evaluation["coverage"].get("head"),
        "body": evaluation["coverage"].get("body"),
        "masks_miou": None if row.untrained else evaluation["masks"]["miou"],  # an untrained network saw none
        "cam_miou": None if source is None else source["miou"], "arch": evaluation["arch"],
        "masks_threshold": None if source is None else source["threshold"],
        "train_s": evaluation["train_s"], "eval_s": time.perf_counter() - started - evaluation["train_s"],
    }


def recipe_data(row: Row, seed: int) -> dict[str, Any]:
    """The build_dataset keyword arguments (all but the split) of the recipe's data for ``row`` and
    ``seed``: what a no-model row is scored on and its stage-2 masks index."""
    return dict(name=RESULTS.dataset, image_size=RESULTS.image_size, data_root=None,
                num_classes=RESULTS.num_classes, seed=seed, appearance=row.appearance, max_objects=row.max_objects)


def write_baseline_masks(row: Row, seed: int, out: Path, train_size: int | None, threshold: float,
                         refine: bool = False) -> dict[str, Any]:
    """Pseudo masks of a no-model row's maps (crm_core.experiments.baselines) on the recipe's train split (same
    seed), cut at the threshold its job chose on val: the stage-2 baseline a CAM's masks must beat."""
    from crm_core.experiments.baselines import baseline_maps, fit_colour_classifier
    from crm_core.data import build_dataset
    from crm_core.postprocess import write_masks_of

    config = recipe_data(row, seed)
    train = build_dataset(split="train", **config)
    colour = fit_colour_classifier(train) if row.baseline == "colour" else None
    cam_size = RESULTS.cam_size
    return write_masks_of(lambda batch: baseline_maps(row.baseline, batch, cam_size, colour),
                          f"baseline {row.baseline}", train, config, out, "train", progress=False,
                          val_threshold=threshold, limit=train_size, refine=refine)


def score_row_baseline(row: Row, seed: int, test_limit: int, val_limit: int) -> dict[str, Any]:
    """A baseline row: the no-model map on the recipe's data (same seed, size and classes), same protocol."""
    from crm_core.experiments.baselines import score_baseline
    from crm_core.data import build_dataset

    started = time.perf_counter()
    splits = {split: build_dataset(split=split, **recipe_data(row, seed)) for split in ("train", "val", "test")}
    scores = score_baseline(row.baseline, train=splits["train"], val=splits["val"], test=splits["test"],
                            cam_size=RESULTS.cam_size, val_limit=val_limit,
                            test_limit=test_limit)
    return {**scores, "train_s": 0.0, "eval_s": time.perf_counter() - started}


def score_constant_floor(row: Row, seed: int, test_limit: int, val_limit: int) -> dict[str, Any]:
    """The stage-2 floor row: the better constant mask (chosen on val) on the recipe's test split."""
    from crm_core.experiments.baselines import score_constant_masks
    from crm_core.data import build_dataset

    started = time.perf_counter()
    val, test = (build_dataset(split=split, **recipe_data(row, seed)) for split in ("val", "test"))
    scores = score_constant_masks(val=val, test=test, val_limit=val_limit, test_limit=test_limit)
    return {**scores, "train_s": 0.0, "eval_s": time.perf_counter() - started}
