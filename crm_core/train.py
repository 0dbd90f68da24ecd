"""Train a CAM classifier, optionally with the CAM-driven Reconstruction Module (CRM).

    python -m crm_core.train --model resnet_drs --dataset synthetic --epochs 3 --name drs_crm
    torchrun --nproc_per_node=2 -m crm_core.train ...   # data-parallel (gloo on CPU, nccl on GPU)

Leaves ``checkpoints/<name>.pt`` and ``runs/<name>/`` (config.json, metrics.csv).
Structure after torchvision's references: ``get_args_parser``, ``main``, ``train_one_epoch``.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from crm_core.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from crm_core.data import DATASETS, DatasetNotFoundError, SuperpixelCache, build_dataset
from crm_core.data.superpixels import prefill_superpixels
from crm_core.data.synthetic import APPEARANCES
from crm_core.data.transforms import random_hflip_batch
from crm_core.losses import (VGG19_LAYERS, VGGPerceptualLoss, alignment_loss, classification_loss, reconstruction_l1,
                             reconstruction_target)
from crm_core.models import MODEL_VARIANTS, ModelConfig, ReconstructNet, create_model
from crm_core.models.classifier import ARCHS, DRS_POSITIONS, FREEZE_RECIPES, CamClassifier
from crm_core.crm import DECODER_INPUTS, CRMNet
from crm_core.metrics import CamDependence
from crm_core.pretrained import WeightsNotFoundError
from crm_core.runs import MetricsWriter, RunDir

log = logging.getLogger("crm_core.train")

DATASET_DEFAULT_SIZE = {"synthetic": 112, "pets": 224}

# Speed presets of CRM training, measured by ``python -m crm_core.bench`` (docs/benchmarks.md).
# A preset only fills levers the user left unset (None); the resolved values are recorded.
#   exact: the method as written -- ReconstructNet decodes the CAMs to the full image size and
#          the perceptual loss compares full-size images. channels_last is the same maths in
#          another memory layout, measured faster on CPU with and without CRM.
#   fast:  (default) ReconstructNet decodes to a quarter of the image size (two fewer up-blocks;
#          L1 against the antialiased, downsampled image) and VGG19 compares the reconstruction
#          and the image at an eighth of it (never below 16 px, where relu5_1 is 1x1): VGG was
#          most of what was left of CRM's cost. The CAM is 7x7 either way; the README's results
#          table reports the CAM mIoU of both presets.
MIN_PERCEPTUAL_SIZE = 64  # VGG19 compares at >= 64 px: at 16 px relu5_1 is a single pixel
CRM_PRESETS: dict[str, dict[str, Any]] = {
    "exact": {"recon_size": None, "perceptual_size": None, "channels_last": True},
    "fast": {"recon_size": lambda image_size: max(16, image_size // 4),
             "perceptual_size": lambda image_size: max(MIN_PERCEPTUAL_SIZE, image_size // 8), "channels_last": True},
}
AMP_MODES = ("none", "bf16")


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite."""


@dataclass
class TrainConfig:
    name: str = "run"  # checkpoint + run folder name
    model: str = "resnet_drs"  # registered variant (crm_core.models.MODEL_VARIANTS)
    arch: str = "resnet50"  # resnet18 | resnet34 | resnet50
    dataset: str = "synthetic"  # synthetic | pets
    data_root: str | None = None  # dataset folder (pets)
    download: bool = False  # let torchvision download the dataset (needs internet)
    num_classes: int = 4  # synthetic only: number of head patterns
    appearance: str = "random"  # synthetic only: object appearance, random | informative (crm_core.data.synthetic)
    train_size: int | None = None  # synthetic only: number of training images (default 2000)
    image_size: int | None = None  # square input size; default 112 synthetic / 224 pets
    output_stride: int | None = None  # 16 or 32; default 16 below 224 px (keeps CAMs >= 7x7)
    batch_size: int = 16  # per process
    epochs: int = 3
    steps: int | None = None  # cap on optimisation steps (all epochs together); 0 saves the untrained model
    cls_lr: float = 1e-3  # Adam lr of the classifier
    rec_lr: float = 2e-3  # Adam lr of ReconstructNet
    lr_schedule: str = "constant"  # constant | cosine (decays both lrs to 0 over the run's max steps)
    crm: bool = True  # train ReconstructNet with the CAM-driven losses
    l1_weight: float = 1.0  # w_l1
    vgg_weight: float = 1.0  # w_vgg (0 disables the perceptual loss)
    align_weight: float = 1.0  # w_align (0 disables superpixel alignment)
    align_warmup: int = 1  # epochs before the alignment loss switches on
    align_confident: float | None = 0.7  # CAM values above this stay in the alignment target
    align_erosion: int = 0  # erode that confident region with a square of this side, px (SSC: 0.3 and 8)
    decoder_input: str = "gradcampp"  # what ReconstructNet decodes: gradcampp (max-normalised) | scores (SSC: raw class scores)
    crm_gate: bool = False  # scale the reconstruction gradient into the classifier by how image-specific the reconstruction is
    crm_gate_scale: float = 0.05  # specificity at which the gate is fully open
    delta: str = "0.55"  # DRS delta: a number in (0, 1] or "learnable"
    drs_positions: tuple[str, ...] = ("layer4_blocks",)  # where DRS layers go
    freeze: str | None = None  # last2 | none; default last2 with imagenet weights, else none
    weights: str | None = None  # imagenet | none | PATH; default imagenet for pets, none for synthetic
    perceptual: str = "vgg19"  # perceptual network (vgg19) or "none"
    perceptual_weights: str = "auto"  # imagenet | random | auto (imagenet if cached, else random) | PATH
    recon_size: int | None = None  # side ReconstructNet decodes to (speed lever); None = the image size / per crm_preset
    perceptual_size: int | None = None  # resize images to this before VGG (speed lever); None = as is / per crm_preset
    perceptual_layers: tuple[str, ...] = tuple(VGG19_LAYERS)  # VGG19 taps of the perceptual loss (fewer = cheaper, weaker)
    crm_preset: str = "fast"  # fast | exact: fills the speed levers left unset (CRM_PRESETS; docs/benchmarks.md)
    channels_last: bool | None = None  # NHWC memory format for classifier, ReconstructNet and VGG; None = per preset
    amp: str = "none"  # none | bf16: autocast the forward passes (pays on GPUs / CPUs with bf16 units only)
    n_segments: int = 64  # SLIC superpixels per image (alignment loss)
    compactness: float = 10.0  # SLIC compactness
    seed: int = 0
    resume: bool = False  # continue checkpoints/<name>.pt where it stopped
    init_from: str | None = None  # start from another checkpoint's weights (fine-tuning)
    workers: int = 1  # DataLoader worker processes
    log_every: int = 1  # write a metrics row every N steps
    diag_every: int = 25  # log each loss term's gradient norm on the CAM features, relative to CE's, every N steps (0: never)
    ckpt_every: int = 50  # save the checkpoint every N steps (and at every epoch end)
    val_limit: int | None = 200  # validation images per epoch (None = whole split)
    checkpoint_dir: str = "checkpoints"
    runs_dir: str = "runs"
    device: str = "auto"  # auto | cpu | cuda
    extra: dict[str, Any] = field(default_factory=dict)  # resolved facts recorded for the run

    def resolve(self) -> "TrainConfig":
        """Fill dataset-dependent defaults and validate; returns self."""
        if self.model not in MODEL_VARIANTS:
            raise ValueError(f"unknown model {self.model!r}; choose from {sorted(MODEL_VARIANTS)}")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose from {sorted(DATASETS)}")
        if self.image_size is None:
            self.image_size = DATASET_DEFAULT_SIZE.get(self.dataset, 224)
        if self.output_stride is None:
            self.output_stride = 16 if self.image_size < 224 else 32
        if self.weights is None:
            self.weights = "imagenet" if self.dataset == "pets" else "none"
        if self.freeze is None:
            self.freeze = "last2" if self.weights not in ("none", "random") else "none"
        self.drs_positions = tuple(self.drs_positions)
        self.perceptual_layers = tuple(self.perceptual_layers)
        if self.crm_preset not in CRM_PRESETS:
            raise ValueError(f"unknown crm_preset {self.crm_preset!r}; choose from {sorted(CRM_PRESETS)}")
        preset = CRM_PRESETS[self.crm_preset]
        for lever in ("recon_size", "perceptual_size"):
            if getattr(self, lever) is None and preset[lever] is not None:
                setattr(self, lever, preset[lever](self.image_size))
        if self.recon_size is None:
            self.recon_size = self.image_size
        if self.channels_last is None:
            self.channels_last = preset["channels_last"]
        checks = [
            (self.image_size >= 32, f"image_size must be >= 32, got {self.image_size}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.steps is None or self.steps >= 0, f"steps must be >= 0, got {self.steps}"),
            (all(math.isfinite(v) and v > 0 for v in (self.cls_lr, self.rec_lr)), "learning rates must be finite and > 0"),
            (all(math.isfinite(v) and v >= 0 for v in (self.l1_weight, self.vgg_weight, self.align_weight)),
             "loss weights must be finite and >= 0"),
            (self.perceptual in ("vgg19", "none"), f"perceptual must be vgg19 or none, got {self.perceptual!r}"),
            (self.n_segments >= 2, "n_segments must be >= 2"),
            (16 <= self.recon_size <= self.image_size, f"recon_size must be in [16, image_size], got {self.recon_size}"),
            (len(self.perceptual_layers) > 0 and all(n in VGG19_LAYERS for n in self.perceptual_layers),
             f"perceptual_layers must be a non-empty subset of {list(VGG19_LAYERS)}"),
            (self.amp in AMP_MODES, f"amp must be one of {AMP_MODES}, got {self.amp!r}"),
            (self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}"),
            (self.log_every >= 1 and self.ckpt_every >= 1, "log_every and ckpt_every must be >= 1"),
            (self.diag_every >= 0, "diag_every must be >= 0"),
            (self.appearance in APPEARANCES, f"appearance must be one of {APPEARANCES}, got {self.appearance!r}"),
            (self.decoder_input in DECODER_INPUTS, f"decoder_input must be one of {DECODER_INPUTS}, got {self.decoder_input!r}"),
            (self.align_erosion >= 0, "align_erosion must be >= 0"),
            (math.isfinite(self.crm_gate_scale) and self.crm_gate_scale > 0, "crm_gate_scale must be > 0"),
            (not self.uses_perceptual or self.perceptual_size is None or self.perceptual_size >= MIN_PERCEPTUAL_SIZE,
             f"perceptual_size must be >= {MIN_PERCEPTUAL_SIZE} (relu5_1 of VGG19 is 1x1 at 16 px)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        self.drs_delta_value()  # validates
        return self

    def drs_delta_value(self) -> float | None:
        """The fixed delta, or None when learnable."""
        if self.delta == "learnable":
            return None
        try:
            value = float(self.delta)
        except ValueError as exc:
            raise ValueError(f"delta must be a number in (0, 1] or 'learnable', got {self.delta!r}") from exc
        if not (0.0 < value <= 1.0):
            raise ValueError(f"delta must be in (0, 1], got {value}")
        return value

    def model_config(self, class_names: list[str]) -> ModelConfig:
        delta = self.drs_delta_value()
        return ModelConfig(
            variant=self.model, arch=self.arch, num_classes=len(class_names), output_stride=self.output_stride,
            drs_delta=0.55 if delta is None else delta, drs_learnable=delta is None,
            drs_positions=self.drs_positions, freeze=self.freeze, weights=self.weights, class_names=list(class_names),
        )

    @property
    def uses_alignment(self) -> bool:
        return self.crm and self.align_weight > 0

    @property
    def uses_perceptual(self) -> bool:
        return self.crm and self.vgg_weight > 0 and self.perceptual != "none"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["drs_positions"] = list(self.drs_positions)
        d["perceptual_layers"] = list(self.perceptual_layers)
        return d


# -- distributed helpers -------------------------------------------------------------------
@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group that torchrun describes through env vars (no-op otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device cuda requested but CUDA is not available")
    if name == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        name = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return torch.device(name)


# -- data ----------------------------------------------------------------------------------
def epoch_batches(num_items: int, batch_size: int, seed: int, epoch: int, dist_info: DistInfo) -> list[list[int]]:
    """This rank's batches of an epoch: a permutation fixed by (seed, epoch), sharded by rank.

    Deterministic, so a resumed run replays exactly the batches an uninterrupted run sees.
    """
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(num_items, generator=generator).tolist()
    per_rank = num_items // dist_info.world_size
    mine = order[dist_info.rank * per_rank:(dist_info.rank + 1) * per_rank]
    return [mine[i:i + batch_size] for i in range(0, len(mine) - batch_size + 1, batch_size)]


def make_loader(dataset: torch.utils.data.Dataset, batches: list[list[int]], workers: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=workers, persistent_workers=False,
        multiprocessing_context="fork" if workers > 0 and sys.platform.startswith("linux") else None,
    )


def steps_per_epoch(num_items: int, cfg: TrainConfig, dist_info: DistInfo) -> int:
    return (num_items // dist_info.world_size) // cfg.batch_size


# -- one step / one epoch ------------------------------------------------------------------
@dataclass
class TrainState:
    step: int = 0  # optimisation steps done
    epoch: int = 0  # current epoch
    epoch_step: int = 0  # steps done inside the current epoch
    wall_time: float = 0.0  # seconds of training so far (carried across resumes)


def compute_losses(
    net: nn.Module,
    batch: dict[str, torch.Tensor],
    cfg: TrainConfig,
    perceptual: VGGPerceptualLoss | None,
    use_alignment: bool,
    diagnose: bool = False,
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """Forward pass and every loss term; returns total, the logged terms and the logits.

    With ``diagnose``, the terms also hold each loss term's gradient norm on the CAM features
    (the classifier's last feature map) relative to CE's (``grad_l1``, ``grad_vgg``,
    ``grad_align``): how hard each term actually pushes the CAMs, after loss weights and gate.
    """
    images, labels = batch["image"], batch["label"]
    out = net(images)
    loss_cls = classification_loss(out["logits"], labels)
    total = loss_cls
    terms = {"loss_cls": loss_cls.detach()}
    weighted = {"cls": loss_cls}
    if out["recon"] is not None:
        target = reconstruction_target(images, out["recon"])
        loss_l1 = reconstruction_l1(out["recon"], target)
        weighted["l1"] = cfg.l1_weight * loss_l1
        terms["loss_l1"] = loss_l1.detach()
        specificity = reconstruction_specificity(out["recon"].detach(), target, loss_l1.detach())
        terms["recon_specificity"] = specificity
        if cfg.crm_gate:
            gate = float(min(max(specificity / cfg.crm_gate_scale, 0.0), 1.0))
            terms["crm_gate"] = gate
            if out["decoder_in"].requires_grad:
                # The decoder learns from the full loss; the classifier feels the reconstruction
                # only as far as the reconstruction depends on the CAM (when it does not, its
                # gradient into the CAM carries no information about the object, only noise).
                out["decoder_in"].register_hook(lambda grad, g=gate: grad * g)
        if perceptual is not None:
            loss_vgg = perceptual(out["recon"], target)
            weighted["vgg"] = cfg.vgg_weight * loss_vgg
            terms["loss_vgg"] = loss_vgg.detach()
        if use_alignment:
            true_cams = out["cams"][torch.arange(len(labels), device=labels.device), labels]  # (B, h, w)
            loss_align = alignment_loss(true_cams, batch["superpixels"], cfg.align_confident, cfg.align_erosion)
            weighted["align"] = cfg.align_weight * loss_align
            terms["loss_align"] = loss_align.detach()
        total = sum(weighted.values())
    if diagnose and out["features"].requires_grad:
        terms.update(gradient_ratios(weighted, out["features"]))
    terms["loss_total"] = total.detach()
    return total, {k: float(v) for k, v in terms.items()}, out["logits"].detach()


def reconstruction_specificity(recon: torch.Tensor, target: torch.Tensor, own_l1: torch.Tensor) -> torch.Tensor:
    """How much better each reconstruction matches its own image than the next image of the batch.

    (L1 against the batch's images rolled by one - L1 against its own) / the former. ReconstructNet
    sees nothing but the CAMs, so a decoder that ignores them outputs the same picture for every
    image and scores ~0; from the training forward pass and its L1 ``own_l1``, so it costs one
    extra L1 (0 for a batch of one).
    """
    if len(recon) < 2:
        return recon.new_zeros(())
    other = reconstruction_l1(recon, target.roll(1, dims=0))
    return (other - own_l1) / other.clamp_min(1e-8)


def gradient_ratios(weighted: dict[str, torch.Tensor], features: torch.Tensor) -> dict[str, float]:
    """Norm of d(term)/d(features) for each weighted loss term, divided by CE's norm."""
    norms = {}
    for key, term in weighted.items():
        (grad,) = torch.autograd.grad(term, features, retain_graph=True, allow_unused=True)
        norms[key] = 0.0 if grad is None else float(grad.norm())
    ce = max(norms.pop("cls"), 1e-12)
    return {f"grad_{key}": value / ce for key, value in norms.items()}


def autocast_context(cfg: TrainConfig, device: torch.device) -> Any:
    """bf16 autocast of the forward passes when ``cfg.amp == "bf16"`` (backward runs outside it)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16")


def apply_memory_format(module: nn.Module | None, cfg: TrainConfig) -> nn.Module | None:
    """channels_last (NHWC) weights when ``cfg.channels_last``: oneDNN / cuDNN then keep every
    activation NHWC, which the bench measured faster for these conv nets. Same maths."""
    if module is not None and cfg.channels_last:
        module.to(memory_format=torch.channels_last)
    return module


LR_SCHEDULES = ("constant", "cosine")


def lr_factor(schedule: str, step: int, max_steps: int) -> float:
    """Multiplier of the base learning rates for optimisation step ``step`` (0-based).

    A pure function of (step, max_steps) rather than an LR scheduler object, so a resumed run
    lands on exactly the lr an uninterrupted one would use, with no scheduler state to save.
    """
    if schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(step, max_steps) / max(max_steps, 1)))


def set_learning_rates(optimizers: dict[str, torch.optim.Optimizer], cfg: "TrainConfig", step: int, max_steps: int) -> None:
    base = {"cls": cfg.cls_lr, "rec": cfg.rec_lr}
    factor = lr_factor(cfg.lr_schedule, step, max_steps)
    for key, optimizer in optimizers.items():
        for group in optimizer.param_groups:
            group["lr"] = base[key] * factor


def train_one_epoch(
    net: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    loader: torch.utils.data.DataLoader,
    cfg: TrainConfig,
    state: TrainState,
    perceptual: VGGPerceptualLoss | None,
    device: torch.device,
    max_steps: int,
    on_step: Any,
    progress: tqdm | None,
) -> None:
    """Run the batches of ``loader`` (already positioned at ``state.epoch_step``)."""
    net.train()
    use_alignment = cfg.uses_alignment and state.epoch >= cfg.align_warmup
    for batch in loader:
        if state.step >= max_steps:
            break
        started = time.perf_counter()
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        # Flip decided in the main process from (seed, step): deterministic across resumes.
        batch = random_hflip_batch(batch, torch.Generator().manual_seed(cfg.seed * 7919 + state.step))
        for optimizer in optimizers.values():
            # Both optimisers are zeroed every step (the project this method comes from
            # never zeroed the reconstruction optimiser, so its gradients accumulated).
            optimizer.zero_grad(set_to_none=True)
        with autocast_context(cfg, device):
            diagnose = cfg.diag_every > 0 and state.step % cfg.diag_every == 0
            total, terms, logits = compute_losses(net, batch, cfg, perceptual, use_alignment, diagnose)
        if not torch.isfinite(total):
            raise TrainingDiverged(
                f"loss became {float(total.detach())} at step {state.step} (terms: {terms}); "
                "stopped — the last good checkpoint is kept; try lower learning rates"
            )
        total.backward()
        set_learning_rates(optimizers, cfg, state.step, max_steps)
        for optimizer in optimizers.values():
            optimizer.step()
        state.step += 1
        state.epoch_step += 1
        state.wall_time += time.perf_counter() - started
        terms["accuracy"] = float((logits.argmax(1) == batch["label"]).float().mean())
        on_step(terms)
        if progress is not None:
            progress.update(1)
            progress.set_postfix({k.replace("loss_", ""): f"{v:.3f}" for k, v in terms.items()}, refresh=False)


@torch.no_grad()
def validate(net: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device) -> dict[str, float]:
    """Validation accuracy, CE and, with CRM, reconstruction L1 and the decoder's CAM dependence."""
    net.eval()
    correct = total = 0
    ce_sum = 0.0
    dependence = CamDependence()
    for batch in loader:
        images, labels = batch["image"].to(device), batch["label"].to(device)
        out = net(images)
        correct += int((out["logits"].argmax(1) == labels).sum())
        ce_sum += float(classification_loss(out["logits"], labels)) * len(labels)
        if out["recon"] is not None:
            dependence.add(net.reconstructor, out["decoder_in"], out["recon"], images)
        total += len(labels)
    result = {"accuracy": correct / max(total, 1), "loss_cls": ce_sum / max(total, 1)}
    if dependence.images:
        result.update(dependence.summary())
        result["loss_l1"] = result["recon_l1"]
    return result



# -- main ----------------------------------------------------------------------------------
def build_datasets(cfg: TrainConfig) -> tuple[Any, Any]:
    superpixels = SuperpixelCache(n_segments=cfg.n_segments, compactness=cfg.compactness) if cfg.uses_alignment else None
    common = dict(image_size=cfg.image_size, data_root=cfg.data_root, num_classes=cfg.num_classes, seed=cfg.seed,
                  download=cfg.download, appearance=cfg.appearance)
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
    optimizers: dict[str, torch.optim.Optimizer]  # "cls" and, with CRM, "rec": one Adam each (DESIGN.md)


def build_modules(cfg: TrainConfig, class_names: list[str], device: torch.device | str = "cpu") -> TrainModules:
    """Classifier, ReconstructNet, perceptual network and optimisers of a resolved ``cfg``.

    The one setup shared by the trainer, the benchmark (``crm_core.bench``) and the tests.
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
    dist_info = init_distributed(device)
    try:
        return run_training(setup_training(cfg, device, dist_info), on_progress, should_stop)
    finally:
        if dist_info.enabled and dist.is_initialized():
            dist.destroy_process_group()


def setup_training(cfg: TrainConfig, device: torch.device, dist_info: DistInfo) -> TrainSetup:
    """Seed, data, modules (restored on ``--resume``), step budget and run folder of a resolved ``cfg``."""
    torch.manual_seed(cfg.seed)
    ckpt_path = Path(cfg.checkpoint_dir) / f"{cfg.name}.pt"
    resume_payload = None
    if cfg.resume:
        if not ckpt_path.is_file():
            raise CheckpointError(f"{ckpt_path}: --resume given but there is no checkpoint to resume")
        resume_payload = load_checkpoint(ckpt_path)

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
    val = validate(setup.modules.net, loader, setup.device)
    if setup.writer is not None:
        setup.writer.write({"step": state.step, "epoch": state.epoch, "split": "val", "wall_time": state.wall_time, **val})
    dependence = (f", reconstruction L1 {val['recon_l1']:.4f} (shuffled CAMs {val['recon_l1_shuffled']:.4f}, "
                  f"CAM dependence {val['cam_dependence']:+.1%})" if "recon_l1" in val else "")
    progress.write(f"epoch {state.epoch} step {state.step}: val accuracy {val['accuracy']:.3f} "
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


# -- CLI -----------------------------------------------------------------------------------
def get_args_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(description="Train a CAM classifier (+ CAM-driven Reconstruction Module).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--name", default=d.name, help="checkpoint and run name")
    p.add_argument("--model", default=d.model, choices=sorted(MODEL_VARIANTS), help="registered model variant")
    p.add_argument("--arch", default=d.arch, choices=sorted(ARCHS), help="ResNet backbone")
    p.add_argument("--dataset", default=d.dataset, choices=sorted(DATASETS), help="synthetic (offline) or Oxford-IIIT pets")
    p.add_argument("--data-root", default=None, help="dataset folder (pets)")
    p.add_argument("--download", action="store_true", help="download the dataset (needs internet)")
    p.add_argument("--num-classes", type=int, default=d.num_classes, help="synthetic: number of classes")
    p.add_argument("--appearance", default=d.appearance, choices=APPEARANCES,
                   help="synthetic: random object colours (reconstruction cannot use the CAM) or informative "
                        "(one class-agnostic object appearance, where CRM's premise can hold)")
    p.add_argument("--train-size", type=int, default=None, help="synthetic: number of training images")
    p.add_argument("--image-size", type=int, default=None, help="default 112 synthetic, 224 pets")
    p.add_argument("--output-stride", type=int, choices=(16, 32), default=None, help="default 16 below 224 px")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per step and process")
    p.add_argument("--epochs", type=int, default=d.epochs, help="passes over the training set")
    p.add_argument("--steps", type=int, default=None, help="cap on optimisation steps (0: save the untrained model)")
    p.add_argument("--cls-lr", type=float, default=d.cls_lr, help="Adam learning rate of the classifier")
    p.add_argument("--rec-lr", type=float, default=d.rec_lr, help="Adam learning rate of ReconstructNet")
    p.add_argument("--lr-schedule", default=d.lr_schedule, choices=LR_SCHEDULES,
                   help="cosine decays both learning rates to 0 over the run (steadier final model)")
    p.add_argument("--no-crm", dest="crm", action="store_false", help="plain classifier, no reconstruction")
    p.add_argument("--l1-weight", type=float, default=d.l1_weight, help="weight of the reconstruction L1 term")
    p.add_argument("--vgg-weight", type=float, default=d.vgg_weight, help="weight of the VGG19 perceptual term (0: off)")
    p.add_argument("--align-weight", type=float, default=d.align_weight, help="weight of the superpixel alignment term (0: off)")
    p.add_argument("--align-warmup", type=int, default=d.align_warmup, help="epochs before alignment switches on")
    p.add_argument("--align-confident", type=float, default=d.align_confident,
                   help="CAM values above this stay in the alignment target (SSC: 0.3)")
    p.add_argument("--align-erosion", type=int, default=d.align_erosion,
                   help="erode that confident region with a square of this side, px (SSC: 8; 0: none)")
    p.add_argument("--decoder-input", default=d.decoder_input, choices=DECODER_INPUTS,
                   help="what ReconstructNet decodes: max-normalised Grad-CAM++ maps, or SSC's raw signed class scores")
    p.add_argument("--crm-gate", action="store_true",
                   help="scale the reconstruction gradient into the classifier by how image-specific the "
                        "reconstruction is (0 when the decoder ignores the CAM)")
    p.add_argument("--crm-gate-scale", type=float, default=d.crm_gate_scale,
                   help="reconstruction specificity at which the gate is fully open")
    p.add_argument("--delta", default=d.delta, help="DRS delta in (0, 1] or 'learnable'")
    p.add_argument("--drs-positions", nargs="+", default=list(d.drs_positions), choices=DRS_POSITIONS,
                   help="where DRS layers go (resnet_drs)")
    p.add_argument("--freeze", choices=FREEZE_RECIPES, default=None, help="default last2 with imagenet weights")
    p.add_argument("--weights", default=None, help="imagenet | none | PATH (default imagenet for pets)")
    p.add_argument("--perceptual", default=d.perceptual, choices=("vgg19", "none"), help="perceptual network")
    p.add_argument("--perceptual-weights", default=d.perceptual_weights,
                   help="imagenet | random | auto (imagenet if cached; else the term is off, with a notice in the run) | PATH")
    p.add_argument("--recon-size", type=int, default=None,
                   help="side ReconstructNet decodes to (default per --crm-preset: exact = image size, fast = 1/4)")
    p.add_argument("--perceptual-size", type=int, default=None, help="resize before VGG (speed lever); default per --crm-preset")
    p.add_argument("--perceptual-layers", nargs="+", default=list(d.perceptual_layers), choices=list(VGG19_LAYERS),
                   help="VGG19 taps of the perceptual loss")
    p.add_argument("--crm-preset", default=d.crm_preset, choices=sorted(CRM_PRESETS),
                   help="speed preset filling unset levers (docs/benchmarks.md)")
    p.add_argument("--channels-last", dest="channels_last", action="store_true", default=None,
                   help="NHWC memory format (default per --crm-preset)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false", help="NCHW memory format")
    p.add_argument("--amp", default=d.amp, choices=AMP_MODES, help="bf16 autocast of the forward passes")
    p.add_argument("--n-segments", type=int, default=d.n_segments, help="SLIC superpixels per image (alignment)")
    p.add_argument("--compactness", type=float, default=d.compactness, help="SLIC compactness")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of weights, batches, flips and synthetic data")
    p.add_argument("--resume", action="store_true", help="continue checkpoints/<name>.pt")
    p.add_argument("--init-from", default=None, help="start from this checkpoint's weights")
    p.add_argument("--workers", type=int, default=d.workers, help="DataLoader worker processes")
    p.add_argument("--log-every", type=int, default=d.log_every, help="write a metrics.csv row every N steps")
    p.add_argument("--diag-every", type=int, default=d.diag_every,
                   help="log each loss term's gradient norm on the CAM features relative to CE's every N steps (0: never)")
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every, help="save the checkpoint every N steps")
    p.add_argument("--val-limit", type=int, default=d.val_limit, help="validation images per epoch")
    p.add_argument("--checkpoint-dir", default=d.checkpoint_dir, help="where <name>.pt is written")
    p.add_argument("--runs-dir", default=d.runs_dir, help="where the run folder <name>/ is written")
    p.add_argument("--device", default=d.device, help="auto | cpu | cuda")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = vars(args)
    return TrainConfig(**{k: v for k, v in values.items() if k in TrainConfig.__dataclass_fields__})


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
