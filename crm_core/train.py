"""Train a CAM classifier, optionally with the CAM-driven Reconstruction Module (CRM).

    python -m crm_core.train --model resnet_drs --dataset synthetic --epochs 3 --name drs_crm
    torchrun --nproc_per_node=2 -m crm_core.train ...   # data-parallel (gloo on CPU, nccl on GPU)

Leaves ``checkpoints/<name>.pt`` and ``runs/<name>/`` (config.json, metrics.csv).
Structure after torchvision's references: ``get_args_parser``, ``main``, ``train_one_epoch``.
"""
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm import tqdm

from crm_core.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from crm_core.data import DatasetNotFoundError, SuperpixelCache, build_dataset
from crm_core.data.superpixels import prefill_superpixels
from crm_core.losses import VGGPerceptualLoss
from crm_core.models import ReconstructNet, create_model
from crm_core.models.classifier import CamClassifier
from crm_core.crm import CRMNet
from crm_core.pretrained import WeightsNotFoundError
from crm_core.runs import MetricsWriter, RunDir
from crm_core.train_config import TrainConfig, TrainingDiverged, config_from_args, get_args_parser
from crm_core.train_loop import (DistInfo, TrainState, apply_memory_format, deterministic_kernels, distributed,
                                 epoch_batches, make_loader, resolve_device, run_checkpoint, steps_per_epoch,
                                 train_one_epoch, validate)

log = logging.getLogger("crm_core.train")


# -- main ----------------------------------------------------------------------------------
def build_datasets(cfg: TrainConfig) -> tuple[Any, Any]:
    superpixels = SuperpixelCache(n_segments=cfg.n_segments, compactness=cfg.compactness) if cfg.uses_alignment else None
    common = dict(image_size=cfg.image_size, data_root=cfg.data_root, num_classes=cfg.num_classes, seed=cfg.seed,
                  download=cfg.download, appearance=cfg.appearance, max_objects=cfg.max_objects)
    train_set = build_dataset(cfg.dataset, "train", superpixels=superpixels, length=cfg.train_size, **common)
    val_set = build_dataset(cfg.dataset, "val", **common)
    if cfg.val_limit is not None and len(val_set) > cfg.val_limit:
        val_set = torch.utils.data.Subset(val_set, range(cfg.val_limit))
    return train_set, val_set


def cam_size_of(classifier: CamClassifier, image_size: int) -> int:
    with torch.no_grad():
        was_training = classifier.training
        classifier.eval()
        size = classifier(torch.zeros(1, 3, image_size, image_size)).features.shape[-1]
        classifier.train(was_training)
    return int(size)


class TrainingStopped(Exception):
    """Raised inside the loop when ``should_stop`` says so; the run is saved first."""


@dataclass
class TrainModules:
    """What one training run optimises (:func:`build_modules`)."""

    classifier: CamClassifier
    reconstructor: ReconstructNet | None  # None without CRM
    perceptual: VGGPerceptualLoss | None  # None when the perceptual term is off
    net: CRMNet  # classifier + reconstructor, on the device, in cfg's memory format
    optimizers: dict[str, torch.optim.Optimizer]  # "cls" and, with CRM, "rec": one Adam each (docs/method.md)


def build_modules(cfg: TrainConfig, class_names: list[str], device: torch.device | str = "cpu") -> TrainModules:
    """Classifier, ReconstructNet, perceptual network and optimisers of a resolved ``cfg``.

    The one setup shared by the trainer, the benchmark (``crm_core.experiments.bench``) and the tests.
    Pretrained backbone weights load unless the run resumes or starts from ``cfg.init_from``
    (whose weights are loaded here). The modules are built in a fixed order (classifier,
    decoder, perceptual network), so a seeded run draws the same random weights every time.
    Resolved facts (weights sources, CAM size, notices) are recorded in ``cfg.extra``.
    """
    device = torch.device(device)
    classifier = create_model(cfg.model_config(class_names), load_pretrained=not cfg.resume and cfg.init_from is None)
    cfg.extra["weights_source"] = classifier.weights_source
    reconstructor = None
    if cfg.crm:
        cam_size = cam_size_of(classifier, cfg.image_size)
        reconstructor = ReconstructNet(len(class_names), cfg.recon_size, cam_size)
        cfg.extra["cam_size"] = cam_size
    if cfg.init_from:
        _init_from(classifier, reconstructor, cfg.init_from, class_names)
    perceptual = _build_perceptual(cfg, device)
    net = apply_memory_format(CRMNet(classifier, reconstructor, cfg.decoder_input).to(device), cfg)
    optimizers = {"cls": torch.optim.Adam([p for p in classifier.parameters() if p.requires_grad], lr=cfg.cls_lr)}
    if reconstructor is not None:
        optimizers["rec"] = torch.optim.Adam(reconstructor.parameters(), lr=cfg.rec_lr)
    return TrainModules(classifier, reconstructor, perceptual, net, optimizers)


def _build_perceptual(cfg: TrainConfig, device: torch.device) -> VGGPerceptualLoss | None:
    """The perceptual network of the run, or None when its term is off."""
    if not cfg.uses_perceptual:
        return None
    perceptual = VGGPerceptualLoss(cfg.perceptual_weights, layers=cfg.perceptual_layers, size=cfg.perceptual_size)
    cfg.extra["perceptual_weights_source"] = perceptual.weights_source
    if cfg.perceptual_weights == "auto" and perceptual.weights_source.startswith("random"):
        # A VGG19 with random weights sends ~1e-4 of CE's gradient: inert, yet it would be
        # counted as "the method". Only an explicit --perceptual-weights random runs it.
        notice = ("perceptual loss off: no ImageNet VGG19 weights cached, and random VGG features are inert; "
                  "pass --perceptual-weights random to run it anyway, or put the weights in torchvision's cache")
        cfg.extra.setdefault("notices", []).append(notice)
        log.warning("%s", notice)
        return None
    return apply_memory_format(perceptual.to(device), cfg)


def _restore(modules: TrainModules, payload: Any) -> TrainState:
    """``--resume``: the checkpoint's weights and optimiser states; returns where it stopped."""
    modules.classifier.load_state_dict(payload.classifier.state_dict())
    modules.classifier.apply_freeze()
    if modules.reconstructor is not None and payload.reconstructor is not None:
        modules.reconstructor.load_state_dict(payload.reconstructor.state_dict())
    for key, optimizer in modules.optimizers.items():
        if key in payload.optimizers:
            optimizer.load_state_dict(payload.optimizers[key])
    return TrainState(payload.step, payload.epoch, payload.epoch_step, float(payload.extra.get("wall_time", 0.0)))


@dataclass
class TrainSetup:
    """Everything the training loop works on (:func:`setup_training`)."""

    cfg: TrainConfig
    device: torch.device
    dist_info: DistInfo
    modules: TrainModules
    train_net: nn.Module  # modules.net, wrapped in DistributedDataParallel when distributed
    train_set: Any
    val_set: Any
    state: TrainState  # where the run stands (restored by --resume)
    ckpt_path: Path
    per_epoch: int  # optimisation steps per epoch (this process)
    max_steps: int  # steps of the whole run
    run: RunDir | None  # the run folder (main process only)
    writer: MetricsWriter | None  # its metrics.csv (main process only)

    def save(self) -> None:
        """Write the checkpoint (main process only)."""
        if not self.dist_info.is_main:
            return
        cfg, state, modules = self.cfg, self.state, self.modules
        save_checkpoint(
            self.ckpt_path, classifier=modules.classifier, reconstructor=modules.reconstructor,
            train_config=cfg.to_dict(), image_size=cfg.image_size, dataset=cfg.dataset, step=state.step,
            epoch=state.epoch, epoch_step=state.epoch_step,
            optimizers={k: o.state_dict() for k, o in modules.optimizers.items()},
            extra={"wall_time": state.wall_time, "run_dir": str(self.run.path) if self.run else None},
        )


def main(
    cfg: TrainConfig,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Path:
    """Train; returns the checkpoint path. Raises on bad configuration or missing data.

    Args:
        on_progress: called after every step with the step's row (step, epoch, max_steps,
            loss terms, accuracy, wall_time) — the dashboard draws its live chart from it.
        should_stop: polled after every step; when it returns True the run saves its
            checkpoint and returns early (a clean cancel, resumable with ``--resume``).
    """
    cfg.resolve()
    device = resolve_device(cfg.device)
    with distributed(device) as dist_info:
        return run_training(setup_training(cfg, device, dist_info), on_progress, should_stop)


def setup_training(cfg: TrainConfig, device: torch.device, dist_info: DistInfo) -> TrainSetup:
    """Seed, data, modules (restored on ``--resume``), step budget and run folder of a resolved ``cfg``."""
    deterministic_kernels()
    torch.manual_seed(cfg.seed)
    ckpt_path, resume_from = run_checkpoint(cfg.checkpoint_dir, cfg.name, cfg.resume)
    resume_payload = None if resume_from is None else load_checkpoint(resume_from)

    train_set, val_set = build_datasets(cfg)
    modules = build_modules(cfg, list(train_set.class_names), device)
    state = _restore(modules, resume_payload) if resume_payload is not None else TrainState()
    train_net: nn.Module = modules.net
    if dist_info.enabled:
        train_net = nn.parallel.DistributedDataParallel(
            modules.net, device_ids=[dist_info.local_rank] if device.type == "cuda" else None)

    per_epoch = steps_per_epoch(len(train_set), cfg, dist_info)
    if per_epoch == 0:
        raise ValueError(f"batch size {cfg.batch_size} x {dist_info.world_size} processes exceeds the {len(train_set)} training images")
    max_steps = per_epoch * cfg.epochs if cfg.steps is None else min(cfg.steps, per_epoch * cfg.epochs)
    cfg.extra.update({"world_size": dist_info.world_size, "device": str(device), "steps_per_epoch": per_epoch,
                      "max_steps": max_steps, "train_images": len(train_set)})

    run = RunDir.create(cfg.runs_dir, cfg.name) if dist_info.is_main else None
    writer = None
    if run is not None:
        run.write_config({"train": cfg.to_dict(), "model": modules.classifier.cfg.to_dict()})
        if resume_payload is None and run.metrics_path.is_file():
            run.metrics_path.unlink()  # a fresh run of the same name starts a fresh log
        writer = MetricsWriter(run.metrics_path, resume_from_step=state.step if resume_payload is not None else None)
    return TrainSetup(cfg, device, dist_info, modules, train_net, train_set, val_set, state, ckpt_path, per_epoch,
                      max_steps, run, writer)


def run_training(
    setup: TrainSetup,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Path:
    """The loop: epochs of steps, a validation and a checkpoint after each, metrics rows and
    periodic checkpoints in between (see :func:`main` for the callbacks); returns the checkpoint path."""
    cfg, state, dist_info = setup.cfg, setup.state, setup.dist_info
    optimizers, writer = setup.modules.optimizers, setup.writer
    progress = tqdm(total=setup.max_steps, initial=state.step, desc=cfg.name, unit="step", dynamic_ncols=True,
                    disable=not dist_info.is_main or os.environ.get("CRM_LAB_NO_PROGRESS") == "1")
    pending_terms: list[dict[str, float]] = []

    def on_step(terms: dict[str, float]) -> None:
        pending_terms.append(terms)
        if writer is not None and state.step % cfg.log_every == 0:
            keys = {k for t in pending_terms for k in t}  # diagnostics are only in some steps' terms
            averaged = {k: sum(t[k] for t in pending_terms if k in t) / sum(k in t for t in pending_terms) for k in keys}
            writer.write({"step": state.step, "epoch": state.epoch, "split": "train",
                          "lr": optimizers["cls"].param_groups[0]["lr"], "wall_time": state.wall_time, **averaged})
            pending_terms.clear()
        if state.step % cfg.ckpt_every == 0:
            setup.save()
        if on_progress is not None:
            on_progress({"step": state.step, "epoch": state.epoch, "max_steps": setup.max_steps,
                         "wall_time": state.wall_time, **terms})
        if should_stop is not None and should_stop():
            raise TrainingStopped

    try:
        if setup.max_steps == 0:
            setup.save()  # --steps 0: the untrained model (the floor every results table carries)
        elif dist_info.is_main and cfg.uses_alignment:
            prefill_superpixels(setup.train_set, progress=progress.disable is False)  # all cores, before SLIC holds up epoch 1
        while state.step < setup.max_steps:
            batches = epoch_batches(len(setup.train_set), cfg.batch_size, cfg.seed, state.epoch, dist_info)[state.epoch_step:]
            train_one_epoch(setup.train_net, optimizers, make_loader(setup.train_set, batches, cfg.workers), cfg, state,
                            setup.modules.perceptual, setup.device, setup.max_steps, on_step, progress)
            epoch_done = state.epoch_step >= setup.per_epoch
            if dist_info.is_main:
                _validate_epoch(setup, progress)
            if epoch_done:
                state.epoch += 1
                state.epoch_step = 0
            setup.save()
    except TrainingStopped:
        setup.save()
        log.info("stopped at step %d; checkpoint saved (continue with --resume)", state.step)
    finally:
        progress.close()
        if writer is not None:
            writer.close()
    return setup.ckpt_path


def _validate_epoch(setup: TrainSetup, progress: tqdm) -> None:
    """Validate after an epoch (main process): a metrics row and a progress line."""
    cfg, state = setup.cfg, setup.state
    loader = make_loader(setup.val_set, _sequential_batches(len(setup.val_set), cfg.batch_size), cfg.workers)
    val = validate(setup.modules.net, loader, setup.device, cfg.multi_label)
    if setup.writer is not None:
        setup.writer.write({"step": state.step, "epoch": state.epoch, "split": "val", "wall_time": state.wall_time, **val})
    dependence = (f", reconstruction L1 {val['recon_l1']:.4f} (shuffled CAMs {val['recon_l1_shuffled']:.4f}, "
                  f"CAM dependence {val['cam_dependence']:+.1%})" if "recon_l1" in val else "")
    labels = f", F1 {val['f1']:.3f}, mAP {val['map']:.3f}" if "f1" in val else ""
    progress.write(f"epoch {state.epoch} step {state.step}: val accuracy {val['accuracy']:.3f}{labels} "
                   f"loss_cls {val['loss_cls']:.3f}{dependence}")


def _sequential_batches(n: int, batch_size: int) -> list[list[int]]:
    return [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]


def _init_from(classifier: CamClassifier, reconstructor: ReconstructNet | None, path: str, class_names: list[str]) -> None:
    """Fine-tune from another checkpoint: same architecture and classes required."""
    base = load_checkpoint(path)
    if base.class_names != class_names:
        raise CheckpointError(f"{path}: its classes {base.class_names} differ from the dataset's {class_names}")
    try:
        classifier.load_state_dict(base.classifier.state_dict())
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the requested model: {str(exc).splitlines()[0]}") from exc
    classifier.weights_source = f"checkpoint:{Path(path).name}"
    classifier.apply_freeze()
    if reconstructor is not None and base.reconstructor is not None:
        try:
            reconstructor.load_state_dict(base.reconstructor.state_dict())
        except RuntimeError:
            log.warning("%s: ReconstructNet shape differs; starting the decoder from scratch", path)


def cli(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = get_args_parser().parse_args(argv)
    try:
        path = main(config_from_args(args))
    except (ValueError, DatasetNotFoundError, WeightsNotFoundError, CheckpointError, TrainingDiverged, OSError) as exc:
        log.error("%s", exc)
        return 2
    log.info("checkpoint: %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(cli())