"""What a training run is: :class:`TrainConfig` (every field, its default and its validation) and
the ``python -m crm_core.train`` options, read from those fields' defaults (a test checks that
every field has its option with the field's default, so a field is written once).
"""
from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, field
from typing import Any


from crm_core.cli_options import run_options
from crm_core.data import DATASETS
from crm_core.data.synthetic import APPEARANCES
from crm_core.losses import VGG19_LAYERS
from crm_core.models import DRS_DEFAULT_DELTA, MODEL_VARIANTS, ModelConfig
from crm_core.models.classifier import ARCHS, DRS_POSITIONS, FREEZE_RECIPES
from crm_core.crm import DECODER_INPUTS

DATASET_DEFAULT_SIZE = {"synthetic": 112, "pets": 224}

# Speed presets of CRM training, measured by ``python -m crm_core.experiments.bench`` (docs/benchmarks.md).
# A preset only fills levers the user left unset (None); the resolved values are recorded.
#   exact: the method as written -- ReconstructNet decodes the CAMs to the full image size and
#          the perceptual loss compares full-size images. channels_last is the same maths in
#          another memory layout, measured faster on CPU with and without CRM.
#   fast:  (default) ReconstructNet decodes to a quarter of the image size (two fewer up-blocks;
#          L1 against the antialiased, downsampled image) and VGG19 compares the reconstruction
#          and the image at an eighth of it (never below 16 px, where relu5_1 is 1x1): VGG was
#          most of what was left of CRM's cost. The CAM is 7x7 either way; docs/results.md
#          reports the CAM mIoU of both presets.
MIN_PERCEPTUAL_SIZE = 64  # VGG19 compares at >= 64 px: at 16 px relu5_1 is a single pixel
CRM_PRESETS: dict[str, dict[str, Any]] = {
    "exact": {"recon_size": None, "perceptual_size": None, "channels_last": True},
    "fast": {"recon_size": lambda image_size: max(16, image_size // 4),
             "perceptual_size": lambda image_size: max(MIN_PERCEPTUAL_SIZE, image_size // 8), "channels_last": True},
}
AMP_MODES = ("none", "bf16")
LR_SCHEDULES = ("constant", "cosine")


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite."""


@dataclass
class TrainConfig:
    name: str = "run"  # checkpoint + run folder name
    model: str = "resnet_drs"  # registered variant (crm_core.models.MODEL_VARIANTS)
    arch: str = "resnet50"  # resnet18 | resnet34 | resnet50 | efficientnet_b0 | efficientnet_b1 | efficientnet_b2
    dataset: str = "synthetic"  # synthetic | pets | voc | voc_aug
    data_root: str | None = None  # dataset folder (pets, voc, voc_aug)
    download: bool = False  # let torchvision download the dataset (needs internet)
    num_classes: int = 4  # synthetic only: number of head patterns
    appearance: str = "random"  # synthetic only: object appearance, random | informative (crm_core.data.synthetic)
    max_objects: int = 1  # synthetic only: 1..max_objects animals of distinct classes per image (> 1: multi-label)
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
    delta: str = str(DRS_DEFAULT_DELTA)  # DRS delta: a number in (0, 1] or "learnable"
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
            self.weights = "none" if self.dataset == "synthetic" else "imagenet"
        if self.freeze is None:
            self.freeze = "last2" if self.weights not in ("none", "random") else "none"
        self.drs_positions = tuple(self.drs_positions)
        # the model's own checks (arch, output stride, DRS positions under this variant), before any data loads
        MODEL_VARIANTS[self.model](ModelConfig(variant=self.model, arch=self.arch, output_stride=self.output_stride,
                                               drs_positions=self.drs_positions))
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
            (self.image_size // self.output_stride >= 2,
             f"image_size {self.image_size} at output stride {self.output_stride} gives "
             f"{self.image_size // self.output_stride}x{self.image_size // self.output_stride} CAMs ({self.arch}); "
             f"a CAM needs at least 2x2 cells: use --image-size >= {2 * self.output_stride} or --output-stride 16"),
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
            (self.max_objects == 1 or (self.dataset == "synthetic" and 1 <= self.max_objects <= self.num_classes),
             f"max_objects must be in [1, num_classes={self.num_classes}] on synthetic data (one animal per class) "
             f"and 1 elsewhere, got {self.max_objects}"),
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
            drs_delta=DRS_DEFAULT_DELTA if delta is None else delta, drs_learnable=delta is None,
            drs_positions=self.drs_positions, freeze=self.freeze, weights=self.weights, class_names=list(class_names),
        )

    @property
    def multi_label(self) -> bool:
        """Several classes per image: trained with the multi-label soft-margin loss."""
        return self.max_objects > 1 or bool(getattr(DATASETS[self.dataset], "multi_label", False))

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



# -- CLI -----------------------------------------------------------------------------------
def get_args_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(description="Train a CAM classifier (+ CAM-driven Reconstruction Module).",
                                parents=[run_options(d)], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--name", default=d.name, help="checkpoint and run name")
    p.add_argument("--model", default=d.model, choices=sorted(MODEL_VARIANTS), help="registered model variant")
    p.add_argument("--arch", default=d.arch, choices=sorted(ARCHS), help="CAM backbone (torchvision): ResNet or EfficientNet")
    p.add_argument("--dataset", default=d.dataset, choices=sorted(DATASETS),
                   help="synthetic (offline), Oxford-IIIT pets, or PASCAL VOC 2012 (multi-label; --data-root holds "
                        "VOCdevkit/VOC2012); voc_aug: VOC trained on the field's train_aug (VOC + SBD, 10,582 "
                        "images: SegmentationClassAug/ and ImageSets/Segmentation/train_aug.txt), tested on VOC val")
    p.add_argument("--data-root", default=None, help="dataset folder (pets, voc, voc_aug)")
    p.add_argument("--download", action="store_true", help="download the dataset (needs internet)")
    p.add_argument("--num-classes", type=int, default=d.num_classes, help="synthetic: number of classes")
    p.add_argument("--appearance", default=d.appearance, choices=APPEARANCES,
                   help="synthetic: random object colours (reconstruction cannot use the CAM) or informative "
                        "(one class-agnostic object appearance, where CRM's premise can hold)")
    p.add_argument("--max-objects", type=int, default=d.max_objects,
                   help="synthetic: 1 to N animals of distinct classes per image; above 1 the data is multi-label "
                        "and the classifier trains with the multi-label soft-margin loss (voc and voc_aug always are)")
    p.add_argument("--train-size", type=int, default=None, help="synthetic: number of training images")
    p.add_argument("--image-size", type=int, default=None, help="default 112 synthetic, 224 pets")
    p.add_argument("--output-stride", type=int, choices=(16, 32), default=None, help="default 16 below 224 px")
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
                   help="where DRS layers go (resnet_drs): after a stage, after every block of layer4, or "
                        "after every block (all_blocks, the official code's placement); positions that stack "
                        "two caps are refused")
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
    p.add_argument("--init-from", default=None, help="start from this checkpoint's weights")
    p.add_argument("--diag-every", type=int, default=d.diag_every,
                   help="log each loss term's gradient norm on the CAM features relative to CE's every N steps (0: never)")
    p.add_argument("--val-limit", type=int, default=d.val_limit, help="validation images per epoch")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = vars(args)
    return TrainConfig(**{k: v for k, v in values.items() if k in TrainConfig.__dataclass_fields__})
