"""One optimisation step and one epoch of CRM training: batching (sharded under DDP), the loss
terms with the CRM gate and the gradient diagnostics, the learning-rate schedule, validation.
:mod:`crm_core.train` builds the modules and runs these.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from crm_core.checkpoints import CheckpointError
from crm_core.data.transforms import random_hflip_batch
from crm_core.losses import (VGGPerceptualLoss, alignment_loss, classification_loss, present_class_cams,
                             reconstruction_l1, reconstruction_target)
from crm_core.metrics import CamDependence, MultiLabelScores, label_hits
from crm_core.train_config import TrainConfig, TrainingDiverged

log = logging.getLogger("crm_core.train")


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


@contextlib.contextmanager
def distributed(device: torch.device) -> Iterator[DistInfo]:
    """:func:`init_distributed` for the block, and the process group left after it (train, segment)."""
    info = init_distributed(device)
    try:
        yield info
    finally:
        if info.enabled and dist.is_initialized():
            dist.destroy_process_group()


def run_checkpoint(checkpoint_dir: str, name: str, resume: bool) -> tuple[Path, Path | None]:
    """A run's checkpoint path ``<checkpoint_dir>/<name>.pt``, and the same path again when the run
    resumes it (None otherwise); ``--resume`` without the file is a CheckpointError."""
    path = Path(checkpoint_dir) / f"{name}.pt"
    if resume and not path.is_file():
        raise CheckpointError(f"{path}: --resume given but there is no checkpoint to resume")
    return path, path if resume else None


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


def deterministic_kernels() -> None:
    """Ask torch for deterministic kernels. oneDNN (mkldnn), which runs CPU convolutions, may
    otherwise pick reductions whose order varies from run to run on several threads; for a given
    seed, thread count and machine a run then repeats itself. Ops with no deterministic version
    only warn. Measured on two cores: it does not change the results of a run that was already
    repeatable (same weights, bit for bit, on 1 and 2 threads)."""
    torch.backends.mkldnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


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
    images = batch["image"]
    out = net(images)
    loss_cls = classification_loss(out["logits"], batch, cfg.multi_label)
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
                # With the default decoder input the decoder reads the very CAM tensor that the
                # alignment term reads, so the hook scales the alignment's gradient into the
                # classifier as well: the gate governs everything CRM adds. With --decoder-input
                # scores it scales the reconstruction's gradient alone.
                out["decoder_in"].register_hook(lambda grad, g=gate: grad * g)
        if perceptual is not None:
            loss_vgg = perceptual(out["recon"], target)
            weighted["vgg"] = cfg.vgg_weight * loss_vgg
            terms["loss_vgg"] = loss_vgg.detach()
        if use_alignment:
            true_cams = present_class_cams(out["cams"], batch, cfg.multi_label)  # (B, h, w)
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
        terms["accuracy"] = float(label_hits(logits, batch, cfg.multi_label).float().mean())
        on_step(terms)
        if progress is not None:
            progress.update(1)
            progress.set_postfix({k.replace("loss_", ""): f"{v:.3f}" for k, v in terms.items()}, refresh=False)


@torch.no_grad()
def validate(net: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device,
             multi_label: bool = False) -> dict[str, float]:
    """Validation accuracy, classification loss and, with CRM, reconstruction L1 and the decoder's
    CAM dependence. Multi-label: accuracy is the share of images whose whole label set is predicted
    (logit > 0), with the macro F1 and mAP over the classes (:class:`MultiLabelScores`)."""
    net.eval()
    correct = total = 0
    ce_sum = 0.0
    dependence = CamDependence()
    scores = MultiLabelScores() if multi_label else None
    for batch in loader:
        batch = {key: batch[key].to(device) for key in ("image", "label", "labels")}
        images = batch["image"]
        out = net(images)
        correct += int(label_hits(out["logits"], batch, multi_label).sum())
        ce_sum += float(classification_loss(out["logits"], batch, multi_label)) * len(images)
        if scores is not None:
            scores.add(out["logits"], batch["labels"])
        if out["recon"] is not None:
            dependence.add(net.reconstructor, out["decoder_in"], out["recon"], images)
        total += len(images)
    result = {"accuracy": correct / max(total, 1), "loss_cls": ce_sum / max(total, 1)}
    if scores is not None:
        result.update(scores.summary())
    if dependence.images:
        result.update(dependence.summary())
        result["loss_l1"] = result["recon_l1"]
    return result



