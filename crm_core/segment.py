"""Stage 2 of WSSS: train a segmentation network on pseudo masks, score it against ground truth.

    python -m crm_core.postprocess --checkpoint checkpoints/drs_crm.pt --out pseudo/drs_crm --split train --at-val-threshold
    python -m crm_core.segment --masks pseudo/drs_crm --name seg_drs_crm
    python -m crm_core.segment --masks gt --name seg_gt          # the fully supervised ceiling
    torchrun --nproc_per_node=2 -m crm_core.segment ...          # data-parallel, as the trainer

``--masks DIR`` reads the trimaps ``crm_core.postprocess --out DIR`` wrote (1 object, 2
background, 3 uncertain; uncertain pixels are ignored by the cross-entropy; on multi-label data
class masks, 0 background, class + 1, 255 uncertain, and the network has a channel per class
beside the background's) and the manifest
beside them, which says which dataset and split they index: the dataset options default to
it, and an option that contradicts it is refused. A folder without a manifest is accepted when
its files fit the dataset. ``--masks gt`` trains on the ground-truth masks instead.

Leaves ``checkpoints/<name>.pt`` (kind "segmentation": arch, dataset config, mask source; read
with weights_only like every checkpoint), ``runs/<name>/metrics.csv`` and ``runs/<name>/eval.json``:
mIoU, fg / bg IoU and background false-positive rate of the network's masks on the test split
against ground truth, and on synthetic data the share of the head and of the body it covers.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn
from tqdm import tqdm

from crm_core.checkpoints import CheckpointError, load_segmentation_checkpoint, save_segmentation_checkpoint
from crm_core.cli_options import run_options
from crm_core.data import DATASETS, DatasetNotFoundError, build_dataset
from crm_core.data.synthetic import APPEARANCES
from crm_core.data.transforms import random_hflip_batch
from crm_core.metrics import IGNORE, ClassMaskScores, ThresholdCurve
from crm_core.models.segmentation import DEFAULT_SEG_ARCH, SEG_ARCHS, SegmentationNet, backbone_weights_enum
from crm_core.postprocess import BACKGROUND, FOREGROUND, MANIFEST_NAME, UNCERTAIN
from crm_core.pretrained import WeightsNotFoundError, resolve_weights
from crm_core.runs import MetricsWriter, RunDir
from crm_core.train_config import DATASET_DEFAULT_SIZE
from crm_core.train_loop import (DistInfo, deterministic_kernels, distributed, epoch_batches, lr_factor, make_loader,
                                 resolve_device, run_checkpoint)

log = logging.getLogger("crm_core.segment")

GT = "gt"  # --masks gt: the ground-truth masks (the fully supervised ceiling)
_MASK_NAME = re.compile(r"^(\d+)\.png$")
# The dataset options a manifest fixes; pets and voc have no seed, classes or appearance of their own.
_SYNTHETIC_ONLY = ("num_classes", "seed", "appearance", "max_objects")


class MaskError(ValueError):
    """A masks folder that does not fit the dataset; the message names the file and the problem."""


@dataclass
class SegConfig:
    name: str = "seg"  # checkpoint + run folder name
    masks: str = GT  # "gt" or a folder of trimaps written by python -m crm_core.postprocess --out
    arch: str = DEFAULT_SEG_ARCH  # a name in crm_core.models.segmentation.SEG_ARCHS
    dataset: str | None = None  # synthetic | pets; default: the masks' manifest, else synthetic
    data_root: str | None = None  # dataset folder (pets); default: the manifest's
    num_classes: int | None = None  # synthetic: classes; default: the manifest's, else 4
    appearance: str | None = None  # synthetic: object appearance; default: the manifest's, else random
    max_objects: int | None = None  # synthetic: animals per image at most; default: the manifest's, else 1
    image_size: int | None = None  # default: the manifest's, else 112 synthetic / 224 pets
    data_seed: int | None = None  # synthetic: seed of the data; default: the manifest's, else --seed
    train_size: int | None = None  # training images (the first N); default: every mask (gt: 2000 synthetic)
    steps: int = 300  # optimisation steps
    batch_size: int = 16  # per process
    lr: float = 1e-3  # Adam learning rate
    lr_schedule: str = "cosine"  # constant | cosine (to 0 over the run)
    weights: str = "none"  # backbone weights: none | imagenet | auto | PATH
    seed: int = 0  # seed of the weights, batches and flips
    test_limit: int | None = 200  # test images scored (None: the whole split)
    log_every: int = 10  # a metrics.csv row every N steps
    ckpt_every: int = 100  # save the checkpoint every N steps
    workers: int = 0  # DataLoader worker processes
    resume: bool = False  # continue checkpoints/<name>.pt where it stopped
    checkpoint_dir: str = "checkpoints"
    runs_dir: str = "runs"
    device: str = "auto"  # auto | cpu | cuda
    extra: dict[str, Any] = field(default_factory=dict)  # resolved facts recorded for the run

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the masks ------------------------------------------------------------------------------
@dataclass
class MaskSource:
    """Training targets and what they are: (N, S, S) uint8, 1 object, 0 background, 255 ignored
    (multi-label data: 0 background, class + 1, 255 ignored)."""

    dataset: dict[str, Any]  # build_dataset keyword arguments (without the split)
    split: str  # the split the masks index
    targets: torch.Tensor | None  # None for "gt": the dataset's own masks
    info: dict[str, Any]  # recorded in the checkpoint and eval.json: source, manifest, the masks' own mIoU
    classes: int | None = None  # multi-label data: the dataset's classes (the network adds the background); else None

    @property
    def outputs(self) -> int:
        """The network's output channels: background and object, or background and every class."""
        return 2 if self.classes is None else self.classes + 1


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest.json (postprocess), or None when it has none."""
    import json

    path = folder / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MaskError(f"{path}: unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("dataset"), dict):
        raise MaskError(f"{path}: not a pseudo-mask manifest (no 'dataset' entry)")
    return manifest


def resolve_dataset(cfg: SegConfig, manifest: dict[str, Any] | None) -> dict[str, Any]:
    """The dataset config of the run: options given, else the manifest's, else the defaults;
    an option that contradicts the manifest means the masks come from another dataset."""
    made = (manifest or {}).get("dataset", {})
    asked = {"name": cfg.dataset, "image_size": cfg.image_size, "num_classes": cfg.num_classes,
             "seed": cfg.data_seed, "appearance": cfg.appearance, "max_objects": cfg.max_objects}
    name = asked["name"] or made.get("name") or "synthetic"
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    defaults = {"name": name, "image_size": DATASET_DEFAULT_SIZE.get(name, 224), "num_classes": 4, "seed": cfg.seed,
                "appearance": "random", "max_objects": 1}
    config: dict[str, Any] = {}
    for key, value in asked.items():
        checked = key not in _SYNTHETIC_ONLY or name == "synthetic"
        if manifest is not None and checked and value is not None and key in made and made[key] != value:
            raise MaskError(f"the masks in {cfg.masks} were made from {_describe(made)}, not {key} {value}: "
                            "make pseudo masks from this dataset (python -m crm_core.postprocess) or drop the option")
        config[key] = value if value is not None else made.get(key, defaults[key]) if checked else defaults[key]
    config["data_root"] = cfg.data_root or made.get("data_root")
    if config["appearance"] not in APPEARANCES:
        raise ValueError(f"appearance must be one of {APPEARANCES}, got {config['appearance']!r}")
    return config


def _describe(made: dict[str, Any]) -> str:
    keys = ("name", "image_size") + (_SYNTHETIC_ONLY if made.get("name") == "synthetic" else ())
    return ", ".join(f"{k} {made.get(k)}" for k in keys)


def read_trimaps(folder: Path, count: int | None, image_size: int, available: int,
                 classes: int | None = None) -> torch.Tensor:
    """Trimaps ``000000.png`` .. of ``folder`` as (N, S, S) training targets (1 object, 0
    background, 255 uncertain). ``count``: how many (default: every one there); ``available``:
    images in the split, which the indices must not pass. ``classes``: the files are class masks
    of that many classes (0 background, class + 1, 255 uncertain), read as they are. Raises
    :class:`MaskError`."""
    if not folder.is_dir():
        raise MaskError(f"{folder}: no such masks folder (write one with python -m crm_core.postprocess --out {folder})")
    indices = sorted(int(m.group(1)) for p in folder.iterdir() if (m := _MASK_NAME.match(p.name)))
    if not indices:
        raise MaskError(f"{folder}: no trimap PNGs (000000.png, ...) in it; "
                        f"write them with python -m crm_core.postprocess --out {folder}")
    count = len(indices) if count is None else count
    if count > available:
        raise MaskError(f"{folder}: masks for {count} images, but the split has only {available}")
    missing = sorted(set(range(count)) - set(indices))
    if missing:
        raise MaskError(f"{folder}: {len(missing)} of {count} masks missing (first: {missing[0]:06d}.png)")
    targets = torch.empty(count, image_size, image_size, dtype=torch.uint8)
    lut = np.full(256, 254, dtype=np.uint8)  # 254: a value no trimap (nor class mask of < 254 classes) has
    allowed = {FOREGROUND, BACKGROUND, UNCERTAIN} if classes is None else {*range(classes + 1), IGNORE}
    if classes is None:
        lut[FOREGROUND], lut[BACKGROUND], lut[UNCERTAIN] = 1, 0, IGNORE
    else:
        lut[sorted(allowed)] = sorted(allowed)
    for index in range(count):
        path = folder / f"{index:06d}.png"
        try:
            with Image.open(path) as image:
                array = np.asarray(image)
        except (OSError, UnidentifiedImageError) as exc:
            raise MaskError(f"{path}: not a readable PNG ({type(exc).__name__})") from exc
        if array.shape != (image_size, image_size):
            raise MaskError(f"{path}: size {'x'.join(map(str, array.shape))}, expected a one-channel "
                            f"{image_size}x{image_size} {'class mask' if classes else 'trimap'} (the dataset's image size)")
        mapped = lut[array.astype(np.uint8)] if array.dtype != np.uint8 else lut[array]
        if array.min() < 0 or array.max() > 255 or (mapped == 254).any():
            bad = sorted(set(np.unique(array).tolist()) - allowed)
            what = "the trimap's {1, 2, 3}" if classes is None else f"the class mask's 0-{classes} and {IGNORE}"
            raise MaskError(f"{path}: values {bad[:5]} outside {what}")
        targets[index] = torch.from_numpy(mapped)
    return targets


def load_masks(cfg: SegConfig) -> MaskSource:
    """What ``cfg.masks`` names, checked against the dataset (raises :class:`MaskError`)."""
    if cfg.masks == GT:
        config = resolve_dataset(cfg, None)
        return MaskSource(config, "train", None, {"source": GT, "manifest": None, "miou": 1.0},
                          multi_label_classes(build_dataset(split="train", length=1, **config)))
    folder = Path(cfg.masks)
    manifest = read_manifest(folder) if folder.is_dir() else None
    config = resolve_dataset(cfg, manifest)
    split = (manifest or {}).get("split", "train")
    dataset = build_dataset(split=split, **config)
    available, classes = len(dataset), multi_label_classes(dataset)
    made = (manifest or {}).get("format", "classes" if classes else "trimap")
    if (made == "classes") != (classes is not None):
        raise MaskError(f"{folder}: {'class masks' if made == 'classes' else 'binary trimaps'}, but the dataset is "
                        f"{'multi-label' if classes else 'single-label'}: make its pseudo masks with "
                        "python -m crm_core.postprocess on a model of this dataset")
    count = cfg.train_size if cfg.train_size is not None else (manifest or {}).get("num_images")
    if manifest is not None and cfg.train_size is not None and cfg.train_size > manifest.get("num_images", 0):
        raise MaskError(f"{folder}: --train-size {cfg.train_size}, but its manifest lists {manifest.get('num_images')} masks")
    targets = read_trimaps(folder, count, config["image_size"], available, classes)
    info = {"source": str(folder), "manifest": manifest, "miou": (manifest or {}).get("miou")}
    return MaskSource(config, split, targets, info, classes)


def multi_label_classes(dataset: Any) -> int | None:
    """The class count of a multi-label dataset (its masks are class masks); None otherwise."""
    return int(dataset.num_classes) if getattr(dataset, "multi_label", False) else None


class MaskedDataset(torch.utils.data.Dataset):
    """The first ``len(targets)`` samples of ``base`` with ``mask`` replaced by the pseudo mask
    (``targets`` None: the ground truth, the class mask on multi-label data)."""

    def __init__(self, base: Any, targets: torch.Tensor | None, length: int | None = None) -> None:
        self.base, self.targets = base, targets
        self.length = len(targets) if targets is not None else len(base) if length is None else min(length, len(base))
        self.truth = "class_mask" if getattr(base, "multi_label", False) else "mask"

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.base[index]
        target = sample[self.truth] if self.targets is None else self.targets[index].long()
        return {"image": sample["image"], "mask": target, "index": sample["index"]}


# -- evaluation ---------------------------------------------------------------------------
@torch.no_grad()
def evaluate_segmentation(net: nn.Module, dataset: Any, *, limit: int | None = None, batch_size: int = 16,
                          device: torch.device | str = "cpu", progress: bool = False) -> dict[str, Any]:
    """The network's masks (argmax) against ground truth: IoUs over the whole set, and the share
    of each object part covered (synthetic: head, body). The masks' metrics are those of a CAM
    thresholded at 0.5 on the object probability (:class:`crm_core.metrics.ThresholdCurve`)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise ValueError("nothing to evaluate: the split is empty")
    part_names = dict(getattr(dataset, "part_names", {}))
    if getattr(dataset, "multi_label", False):
        return evaluate_class_segmentation(net, dataset, n=n, batch_size=batch_size, device=device, progress=progress)
    curve = ThresholdCurve((0.5,), tuple(sorted(part_names)))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(n)), batch_size=batch_size)
    was_training = net.training
    net.eval()
    for batch in tqdm(loader, desc="evaluate", unit="batch", disable=not progress):
        probs = net(batch["image"].to(device)).softmax(dim=1)[:, 1]  # (B, H, W) object probability
        curve.add(probs, batch["mask"], batch.get("parts"))
    net.train(was_training)
    return {"num_images": n, **curve.at(0), "coverage": curve.coverage_at(0, part_names)}


@torch.no_grad()
def evaluate_class_segmentation(net: nn.Module, dataset: Any, *, n: int, batch_size: int,
                                device: torch.device | str, progress: bool) -> dict[str, Any]:
    """:func:`evaluate_segmentation` on multi-label data: the argmax over background and every
    class against the class masks, from one confusion matrix of the split (metrics.confusion_ious:
    mIoU over background + classes, per-class IoU, confusions between classes); coverage is the
    share of each part given its own animal's class."""
    part_names = dict(getattr(dataset, "part_names", {}))
    scores = ClassMaskScores(int(dataset.num_classes), tuple(part_names))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(n)), batch_size=batch_size)
    was_training = net.training
    net.eval()
    for batch in tqdm(loader, desc="evaluate", unit="batch", disable=not progress):
        scores.add(net(batch["image"].to(device)).argmax(dim=1).cpu(), batch["class_mask"], batch.get("parts"))
    net.train(was_training)
    summary = scores.summary(part_names)
    names = ["background", *getattr(dataset, "class_names", [])]
    return {"num_images": n, **summary, "per_class_iou": dict(zip(names, summary["per_class_iou"]))}


# -- training -----------------------------------------------------------------------------
def _build_net(cfg: SegConfig, load_pretrained: bool, outputs: int = 2) -> tuple[SegmentationNet, str]:
    net = SegmentationNet(cfg.arch, outputs)
    if not load_pretrained:
        return net, "checkpoint"
    resolved = resolve_weights(cfg.weights, backbone_weights_enum(cfg.arch), f"{cfg.arch} backbone")
    if resolved.state_dict is not None:
        try:
            net.load_backbone(resolved.state_dict)
        except (ValueError, RuntimeError) as exc:
            raise WeightsNotFoundError(f"{cfg.weights}: {str(exc).splitlines()[0]}") from exc
    return net, resolved.source


def _check(cfg: SegConfig) -> None:
    checks = [
        (cfg.arch in SEG_ARCHS, f"unknown arch {cfg.arch!r}; choose from {sorted(SEG_ARCHS)}"),
        (cfg.steps >= 0, f"steps must be >= 0, got {cfg.steps}"),
        (cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}"),
        (math.isfinite(cfg.lr) and cfg.lr > 0, f"lr must be finite and > 0, got {cfg.lr}"),
        (cfg.lr_schedule in ("constant", "cosine"), f"lr_schedule must be constant or cosine, got {cfg.lr_schedule!r}"),
        (cfg.train_size is None or cfg.train_size >= 1, f"train_size must be >= 1, got {cfg.train_size}"),
        (cfg.test_limit is None or cfg.test_limit >= 1, f"test_limit must be >= 1, got {cfg.test_limit}"),
        (cfg.log_every >= 1 and cfg.ckpt_every >= 1, "log_every and ckpt_every must be >= 1"),
        (cfg.image_size is None or cfg.image_size >= 32, f"image_size must be >= 32, got {cfg.image_size}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def main(cfg: SegConfig, on_progress: Callable[[dict[str, Any]], None] | None = None,
         should_stop: Callable[[], bool] | None = None) -> Path:
    """Train and evaluate; returns the checkpoint path. Raises on bad input (MaskError, ...).

    Args:
        on_progress: called after every step with its row (step, epoch, max_steps, loss_total,
            lr, wall_time), as crm_core.train's: the dashboard draws its live chart from it.
        should_stop: polled after every step; when it returns True the run saves its checkpoint,
            scores it on the test split as a finished one and returns early (resumable with ``--resume``).
    """
    _check(cfg)
    device = resolve_device(cfg.device)
    with distributed(device) as dist_info:
        return _run(cfg, device, dist_info, on_progress, should_stop)


def _network_and_optimizer(cfg: SegConfig, device: torch.device, resumed: Any | None, outputs: int
                           ) -> tuple[nn.Module, torch.optim.Optimizer, str, tuple[int, int, int, float]]:
    """The network on ``device`` and its Adam, fresh or from the checkpoint being resumed, with
    where training stands: (step, epoch, step within the epoch, training seconds so far)."""
    net, weights_source = _build_net(cfg, load_pretrained=resumed is None, outputs=outputs)
    if resumed is not None:
        net.load_state_dict(resumed.net.state_dict())
        weights_source = resumed.weights_source
    net = net.to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    if resumed is None:
        return net, optimizer, weights_source, (0, 0, 0, 0.0)
    if resumed.optimizer:
        optimizer.load_state_dict(resumed.optimizer)
    return net, optimizer, weights_source, (resumed.step, resumed.epoch, resumed.epoch_step,
                                            float(resumed.extra.get("wall_time", 0.0)))


def _open_run(cfg: SegConfig, masks_info: dict[str, Any], dist_info: DistInfo,
              resumed_at: int | None) -> tuple[RunDir | None, MetricsWriter | None]:
    """The run folder and its metrics log, on the main process only; a fresh run of a name that
    ran before starts a fresh log, a resumed one (``resumed_at``: its step) appends to it."""
    if not dist_info.is_main:
        return None, None
    run = RunDir.create(cfg.runs_dir, cfg.name)
    run.write_config({"segment": cfg.to_dict(), "masks": masks_info})
    if resumed_at is None and run.metrics_path.is_file():
        run.metrics_path.unlink()
    return run, MetricsWriter(run.metrics_path, resume_from_step=resumed_at)


def _run(cfg: SegConfig, device: torch.device, dist_info: DistInfo,
         on_progress: Callable[[dict[str, Any]], None] | None = None,
         should_stop: Callable[[], bool] | None = None) -> Path:
    deterministic_kernels()
    torch.manual_seed(cfg.seed)
    ckpt_path, resume_from = run_checkpoint(cfg.checkpoint_dir, cfg.name, cfg.resume)
    resumed = None if resume_from is None else load_segmentation_checkpoint(resume_from)
    if resumed is not None and resumed.arch != cfg.arch:
        raise CheckpointError(f"{ckpt_path}: --resume of a {resumed.arch} network with --arch {cfg.arch}")
    masks = load_masks(cfg)
    if resumed is not None and resumed.net.num_classes != masks.outputs:
        raise CheckpointError(f"{ckpt_path}: --resume of a network with {resumed.net.num_classes} output classes "
                              f"on masks of {masks.outputs}")
    base = build_dataset(split=masks.split, length=cfg.train_size if masks.targets is None else None, **masks.dataset)
    train_set = MaskedDataset(base, masks.targets, cfg.train_size)
    test_set = build_dataset(split="test", **masks.dataset)
    net, optimizer, weights_source, (step, epoch, epoch_step, wall_time) = _network_and_optimizer(cfg, device, resumed,
                                                                                                  masks.outputs)
    train_net: nn.Module = net
    if dist_info.enabled:
        train_net = nn.parallel.DistributedDataParallel(net, device_ids=[dist_info.local_rank] if device.type == "cuda" else None)
    per_epoch = (len(train_set) // dist_info.world_size) // cfg.batch_size
    if per_epoch == 0 and cfg.steps > 0:
        raise ValueError(f"batch size {cfg.batch_size} x {dist_info.world_size} processes exceeds the "
                         f"{len(train_set)} training images")
    cfg.extra.update({"weights_source": weights_source, "device": str(device), "world_size": dist_info.world_size,
                      "train_images": len(train_set), "steps_per_epoch": per_epoch, "dataset": masks.dataset,
                      "split": masks.split})
    run, writer = _open_run(cfg, masks.info, dist_info, resumed_at=step if resumed is not None else None)

    def save() -> None:
        if dist_info.is_main:
            save_segmentation_checkpoint(
                ckpt_path, net=net, dataset=masks.dataset, masks=masks.info, seg_config=cfg.to_dict(),
                weights_source=weights_source, step=step, epoch=epoch, epoch_step=epoch_step,
                optimizer=optimizer.state_dict(), extra={"wall_time": wall_time, "run_dir": str(run.path) if run else None})

    loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE)
    progress = tqdm(total=cfg.steps, initial=min(step, cfg.steps), desc=cfg.name, unit="step", dynamic_ncols=True,
                    disable=not dist_info.is_main or os.environ.get("CRM_LAB_NO_PROGRESS") == "1")
    pending: list[float] = []
    stopped = False
    try:
        while step < cfg.steps and not stopped:
            batches = epoch_batches(len(train_set), cfg.batch_size, cfg.seed, epoch, dist_info)[epoch_step:]
            for batch in make_loader(train_set, batches, cfg.workers):
                if step >= cfg.steps:
                    break
                started = time.perf_counter()
                # flips drawn from (seed, step): a resumed run replays the same augmentations
                batch = random_hflip_batch(batch, torch.Generator().manual_seed(cfg.seed * 1_000_003 + step))
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * lr_factor(cfg.lr_schedule, step, cfg.steps)
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(train_net(batch["image"].to(device)), batch["mask"].to(device))
                if not torch.isfinite(loss):
                    raise ValueError(f"the loss became {float(loss)} at step {step}: lower --lr")
                loss.backward()
                optimizer.step()
                step += 1
                epoch_step += 1
                wall_time += time.perf_counter() - started
                pending.append(float(loss.detach()))
                progress.update(1)
                progress.set_postfix(loss=f"{pending[-1]:.3f}")
                if writer is not None and (step % cfg.log_every == 0 or step == cfg.steps):
                    writer.write({"step": step, "epoch": epoch, "split": "train", "lr": optimizer.param_groups[0]["lr"],
                                  "loss_total": sum(pending) / len(pending), "loss_cls": sum(pending) / len(pending),
                                  "wall_time": wall_time})
                    pending.clear()
                if step % cfg.ckpt_every == 0:
                    save()
                if on_progress is not None:
                    on_progress({"step": step, "epoch": epoch, "max_steps": cfg.steps, "loss_total": float(loss.detach()),
                                 "lr": optimizer.param_groups[0]["lr"], "wall_time": wall_time})
                if should_stop is not None and should_stop():
                    stopped = True
                    log.info("stopped at step %d of %d; checkpoint saved (continue with --resume)", step, cfg.steps)
                    break
            if epoch_step >= per_epoch:
                epoch, epoch_step = epoch + 1, 0
        save()
    finally:
        progress.close()
    if run is not None:
        results = evaluate_segmentation(net, test_set, limit=cfg.test_limit, batch_size=cfg.batch_size,
                                        device=device, progress=progress.disable is False)
        writer.write({"step": step, "epoch": epoch, "split": "test", "wall_time": wall_time, "miou": results["miou"]})
        writer.close()
        run.write_eval({"kind": "segmentation", "checkpoint": str(ckpt_path), "name": cfg.name, "arch": cfg.arch,
                        "split": "test", **results, "masks": masks.info, "dataset": masks.dataset,
                        "train_images": len(train_set), "step": step, "steps": cfg.steps, "stopped": stopped,
                        "train_s": wall_time, "weights_source": weights_source})
    return ckpt_path


# -- CLI ----------------------------------------------------------------------------------
def get_args_parser() -> argparse.ArgumentParser:
    d = SegConfig()
    p = argparse.ArgumentParser(description="Stage 2: train a segmentation network on pseudo masks (or ground truth) "
                                            "and score it on the test split.",
                                parents=[run_options(d)], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--masks", required=True,
                   help="'gt' (ground-truth masks: the ceiling) or a folder of trimaps from python -m crm_core.postprocess --out")
    p.add_argument("--name", required=True, help="checkpoint and run name")
    p.add_argument("--arch", default=d.arch, choices=sorted(SEG_ARCHS), help="torchvision segmentation network")
    p.add_argument("--dataset", default=None, choices=sorted(DATASETS),
                   help="dataset (default: the masks' manifest, else synthetic)")
    p.add_argument("--data-root", default=None, help="dataset folder (pets; default: the manifest's)")
    p.add_argument("--num-classes", type=int, default=None, help="synthetic: classes (default: the manifest's, else 4)")
    p.add_argument("--appearance", default=None, choices=APPEARANCES,
                   help="synthetic: object appearance (default: the manifest's, else random)")
    p.add_argument("--max-objects", type=int, default=None,
                   help="synthetic: animals per image at most (default: the manifest's, else 1; above 1 the masks "
                        "are class masks and the network has a channel per class)")
    p.add_argument("--image-size", type=int, default=None,
                   help="image size (default: the manifest's, else 112 synthetic / 224 pets)")
    p.add_argument("--data-seed", type=int, default=None, help="synthetic: data seed (default: the manifest's, else --seed)")
    p.add_argument("--train-size", type=int, default=None,
                   help="train on the first N images (default: every mask; gt: the whole split)")
    p.add_argument("--steps", type=int, default=d.steps, help="optimisation steps (0: save the untrained network)")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    p.add_argument("--lr-schedule", default=d.lr_schedule, choices=("constant", "cosine"), help="learning-rate schedule")
    p.add_argument("--weights", default=d.weights,
                   help="backbone weights: none | imagenet (from torchvision's cache; never downloads) | auto | PATH")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the weights, batches and flips")
    p.add_argument("--test-limit", type=int, default=d.test_limit, help="test images scored")
    return p


def format_summary(results: dict[str, Any]) -> str:
    coverage = ", ".join(f"{k} {v:.3f}" for k, v in results["coverage"].items())
    masks = results["masks"]
    source = "ground truth" if masks["source"] == GT else masks["source"]
    trained = f" (their own mIoU {masks['miou']:.4f})" if masks.get("miou") is not None and masks["source"] != GT else ""
    return (f"{results['name']}: {results['arch']} trained {results['step']} steps on {source}{trained}\n"
            f"test: {results['num_images']} images, mIoU {results['miou']:.4f} (fg {results['fg_iou']:.4f}, "
            f"bg {results['bg_iou']:.4f}, background false positives {results['bg_fpr']:.1%})"
            + (f"\ncoverage {coverage}" if coverage else "")
            + (f"\n{results['confusion']:.1%} of object pixels given another class; IoU per class "
               + ", ".join(f"{k} {v:.3f}" for k, v in results["per_class_iou"].items() if v == v)  # NaN: absent
               if "per_class_iou" in results else ""))


def cli(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = get_args_parser().parse_args(argv)
    cfg = SegConfig(**{k: v for k, v in vars(args).items() if k in SegConfig.__dataclass_fields__})
    try:
        path = main(cfg)
    except (ValueError, DatasetNotFoundError, WeightsNotFoundError, CheckpointError, OSError) as exc:
        log.error("%s", str(exc).strip().replace("\n", " "))
        return 2
    run = RunDir(Path(cfg.runs_dir) / cfg.name)
    if run.eval_path.is_file():
        print(format_summary(run.read_eval()))
    log.info("checkpoint: %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
