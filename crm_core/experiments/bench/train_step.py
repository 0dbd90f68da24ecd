"""Section 2: one optimisation step with CRM against one without, for every speed lever.

Each :class:`Lever` is a TrainConfig override (perceptual size and layers, channels_last, bf16,
the presets) or a change the bench makes around the trainer (torch.compile, the reference
LayerNorm kernel). Every step runs through the trainer's own ``build_modules`` and
``train_one_epoch`` on one synthetic batch, and all levers of a recipe are timed interleaved.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crm_core.timing import Stats, time_interleaved
from crm_core.data import SuperpixelCache, build_dataset
from crm_core.models.decoder import ChannelAffineLayerNorm


@dataclass(frozen=True)
class StepRecipe:
    """Model, resolution, batch and freezing shared by every lever of one comparison."""

    name: str
    arch: str
    image_size: int
    output_stride: int
    batch_size: int
    freeze: str
    model: str = "resnet_drs"
    num_classes: int = 4
    n_segments: int = 64


RECIPES: dict[str, StepRecipe] = {
    # The synthetic benchmark's training recipe (docs/method.md): trained from scratch.
    "synthetic": StepRecipe("synthetic", "resnet18", 112, 16, 16, "none"),
    # The pets recipe: ResNet50 at 224, only layer4 + fc train.
    "224_last2": StepRecipe("224_last2", "resnet50", 224, 32, 8, "last2"),
    # The second backbone family on the same pets-sized recipe.
    "efficientnet_b0_224_last2": StepRecipe("efficientnet_b0_224_last2", "efficientnet_b0", 224, 32, 8, "last2"),
}
#: The same two recipes at toy sizes (resnet18, 64 px, batch 2): for tests of the pipeline.
TINY_RECIPES: dict[str, StepRecipe] = {
    "synthetic": StepRecipe("synthetic", "resnet18", 64, 16, 2, "none", n_segments=16),
    "224_last2": StepRecipe("224_last2", "resnet18", 64, 32, 2, "last2", n_segments=16),
    "efficientnet_b0_224_last2": StepRecipe("efficientnet_b0_224_last2", "efficientnet_b0", 64, 32, 2, "last2",
                                            n_segments=16),
}


@dataclass(frozen=True)
class Lever:
    """One configuration of a training step.

    ``train`` holds TrainConfig overrides (the levers that live in the trainer); the other
    fields are levers the bench applies around it (not worth a config field unless they pay).
    """

    name: str
    description: str
    crm: bool = True
    train: dict[str, Any] = field(default_factory=dict)
    compile: bool = False  # torch.compile the network and the perceptual net
    reference_norm: bool = False  # the straightforward mean/var LayerNorm instead of the fused kernel
    baseline: str = "plain"  # the plain-step lever this one is divided by, beside "plain"


def _perceptual_sizes(image_size: int) -> tuple[int, int]:
    return max(64, image_size // 2), max(64, image_size // 4)  # the trainer refuses VGG below 64 px


# crm_core.recipes.CRM on the fast preset, with the perceptual term off as the trainer turns it
# off when no ImageNet VGG19 is cached (the bench forces random VGG weights on for the other levers).
CRM_RECIPE_LEVER: dict[str, Any] = {"crm_preset": "fast", "l1_weight": 30.0, "crm_gate": True, "vgg_weight": 0.0}


def default_levers(image_size: int, quick: bool = False, with_compile: bool = False, with_bf16: bool = True) -> list[Lever]:
    """The levers measured for one recipe (``quick``: only what the JSON summary needs).

    Every CRM lever is divided by the plain step of the default layout ("plain") and by the
    plain step with the same layout / precision / compilation ("own baseline"), because
    channels_last, bf16 and torch.compile speed up (or slow down) the classifier alone too.
    """
    half, quarter = _perceptual_sizes(image_size)
    exact = {"crm_preset": "exact"}
    contiguous = {**exact, "channels_last": False}
    levers = [
        Lever("plain", "no CRM (classifier + CE only), default layout", crm=False, train=exact),
        Lever("crm_exact", "crm_preset=exact: all four losses, reconstruction and perceptual loss at full size",
              train=exact),
        Lever("crm_fast", "crm_preset=fast: reconstruction at 1/4 size, perceptual loss at 1/8 (>= 64 px)",
              train={"crm_preset": "fast"}),
        Lever("crm_recipe", "the results table's CRM recipe: fast preset, L1 x30 with the CRM gate, perceptual "
              "term off (as it is without ImageNet VGG19 weights)", train=CRM_RECIPE_LEVER),
    ]
    if quick:
        return levers
    levers += [
        Lever("plain_contiguous", "no CRM, NCHW (torch default) layout", crm=False, train=contiguous),
        Lever("crm_exact_contiguous", "CRM exact, NCHW layout", train=contiguous, baseline="plain_contiguous"),
        Lever("crm_exact_unfused_norm", "CRM exact, NCHW, mean/var LayerNorm: the straightforward recipe",
              train=contiguous, reference_norm=True, baseline="plain_contiguous"),
        Lever(f"crm_recon_{half}", f"CRM exact but reconstruction at {half} px",
              train={**exact, "recon_size": half}),
        Lever(f"crm_perceptual_{half}", f"CRM exact but perceptual loss on a {half} px image",
              train={**exact, "perceptual_size": half}),
        Lever(f"crm_perceptual_{quarter}", f"CRM exact but perceptual loss on a {quarter} px image",
              train={**exact, "perceptual_size": quarter}),
        Lever("crm_fast_vgg_to_relu4", "crm_preset=fast, VGG taps relu1_1..relu4_1 (no relu5_1)",
              train={"crm_preset": "fast", "perceptual_layers": ("relu1_1", "relu2_1", "relu3_1", "relu4_1")}),
        Lever("crm_fast_vgg_to_relu3", "crm_preset=fast, VGG taps relu1_1..relu3_1",
              train={"crm_preset": "fast", "perceptual_layers": ("relu1_1", "relu2_1", "relu3_1")}),
        Lever("crm_no_perceptual", "CRM without the perceptual term (lower bound, not the method)",
              train={**exact, "vgg_weight": 0.0}),
    ]
    if with_bf16:
        levers += [
            Lever("plain_bf16", "no CRM, bf16 autocast", crm=False, train={**exact, "amp": "bf16"}),
            Lever("crm_fast_bf16", "crm_preset=fast + bf16 autocast", train={"crm_preset": "fast", "amp": "bf16"},
                  baseline="plain_bf16"),
        ]
    if with_compile:
        levers += [
            Lever("plain_compiled", "no CRM, torch.compile", crm=False, train=exact, compile=True),
            Lever("crm_fast_compiled", "crm_preset=fast + torch.compile", train={"crm_preset": "fast"}, compile=True,
                  baseline="plain_compiled"),
        ]
    unique: dict[str, Lever] = {}
    for lever in levers:  # small images: half and quarter perceptual sizes can coincide
        unique.setdefault(lever.name, lever)
    return list(unique.values())



class ReferenceLayerNorm(ChannelAffineLayerNorm):
    """ChannelAffineLayerNorm written out as mean / variance: six elementwise passes, same maths.

    ReconstructNet runs the fused group-norm kernel; the ``crm_exact_unfused_norm`` lever swaps
    these in (:func:`use_reference_norms`) to measure what that kernel saves.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
        var = x.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias  # weight, bias: (1, C, 1, 1)


def use_reference_norms(net: nn.Module) -> int:
    """Replace every ChannelAffineLayerNorm inside ``net`` by a :class:`ReferenceLayerNorm` that
    shares its parameters (so optimisers keep working); returns how many were replaced."""
    replaced = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is ChannelAffineLayerNorm:
                reference = ReferenceLayerNorm(child.weight.shape[1], child.eps)
                reference.weight, reference.bias = child.weight, child.bias
                setattr(parent, name, reference)
                replaced += 1
    return replaced


def make_batch(recipe: StepRecipe, cache_root: str | Path) -> dict[str, torch.Tensor]:
    """The first ``batch_size`` synthetic images of the recipe, with (cached) superpixels."""
    cache = SuperpixelCache(root=cache_root, n_segments=recipe.n_segments)
    dataset = build_dataset("synthetic", "train", image_size=recipe.image_size, num_classes=recipe.num_classes,
                            superpixels=cache, length=max(recipe.batch_size, 2))
    return torch.utils.data.default_collate([dataset[i] for i in range(recipe.batch_size)])


class StepRunner:
    """One lever's modules (the trainer's ``build_modules``), optimisers and batch; ``__call__``
    runs one optimisation step through the trainer's own ``train_one_epoch`` (one-batch loader)."""

    def __init__(self, recipe: StepRecipe, lever: Lever, batch: dict[str, torch.Tensor], seed: int = 0,
                 device: str = "cpu") -> None:
        from crm_core.train import TrainConfig, build_modules
        from crm_core.train_loop import TrainState

        values = dict(model=recipe.model, arch=recipe.arch, image_size=recipe.image_size,
                      output_stride=recipe.output_stride, batch_size=recipe.batch_size, freeze=recipe.freeze,
                      weights="none", num_classes=recipe.num_classes, crm=lever.crm, perceptual_weights="random",
                      align_warmup=0, n_segments=recipe.n_segments, seed=seed, device=device)
        self.device = torch.device(device)
        values.update(lever.train)
        self.cfg = cfg = TrainConfig(**values).resolve()
        self.lever = lever
        torch.manual_seed(seed)
        modules = build_modules(cfg, [f"class_{i}" for i in range(recipe.num_classes)], self.device)
        if lever.reference_norm and modules.reconstructor is not None:
            use_reference_norms(modules.reconstructor)
        self.net, self.perceptual, self.optimizers = modules.net, modules.perceptual, modules.optimizers
        self.train_net: nn.Module = self.net
        if lever.compile:
            self.train_net = torch.compile(self.net)
            if self.perceptual is not None:
                self.perceptual = torch.compile(self.perceptual)
        self.batch = {k: v.to(self.device) for k, v in batch.items()}
        self.state = TrainState()
        self.last_terms: dict[str, float] = {}

    def __call__(self) -> None:
        from crm_core.train_loop import train_one_epoch

        train_one_epoch(self.train_net, self.optimizers, [self.batch], self.cfg, self.state, self.perceptual,
                        self.device, max_steps=10 ** 9, on_step=self.last_terms.update, progress=None)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # time the step, not its launch


def bench_crm_step(recipe: StepRecipe, levers: list[Lever] | None = None, repeats: int = 3, warmup: int = 1,
                   cache_root: str | Path | None = None, device: str = "cpu") -> dict[str, Any]:
    """Time one optimisation step per lever, interleaved; ratios over the plain step."""
    levers = levers if levers is not None else default_levers(recipe.image_size)
    with tempfile.TemporaryDirectory(prefix="crm_bench_sp_") as tmp:
        batch = make_batch(recipe, cache_root or tmp)
    runners: dict[str, StepRunner] = {}
    compile_s: dict[str, float] = {}
    for lever in levers:
        runners[lever.name] = runner = StepRunner(recipe, lever, batch, device=device)
        if lever.compile:  # the first call compiles: timed on its own, then left out of the step times
            started = time.perf_counter()
            runner()
            compile_s[lever.name] = time.perf_counter() - started
    stats = time_interleaved(dict(runners), repeats, warmup)
    plain = stats.get("plain", Stats.of([]))
    rows = []
    for lever in levers:
        s = stats[lever.name]
        base = stats.get(lever.baseline, plain)
        cfg = runners[lever.name].cfg
        rows.append({
            "lever": lever.name, "description": lever.description, "crm": lever.crm,
            # medians are the headline; ratios of the minima are less exposed to other processes
            "step_s": s.as_dict(), "ratio_vs_plain": s.median / plain.median, "ratio_vs_plain_min": s.min / plain.min,
            "baseline": lever.baseline, "ratio_vs_baseline": s.median / base.median,
            "ratio_vs_baseline_min": s.min / base.min,
            "recon_size": cfg.recon_size if cfg.crm else None,
            "perceptual_size": cfg.perceptual_size if cfg.uses_perceptual else None,
            "perceptual_layers": list(cfg.perceptual_layers) if cfg.uses_perceptual else None,
            "channels_last": cfg.channels_last, "amp": cfg.amp, "compile": lever.compile,
            "loss_terms": sorted(k for k in runners[lever.name].last_terms if k.startswith("loss_") and k != "loss_total"),
            **({"compile_s": compile_s[lever.name]} if lever.name in compile_s else {}),
        })
    return {"recipe": recipe.__dict__, "repeats": repeats, "rows": rows,
            "ratio": {row["lever"]: row["ratio_vs_plain"] for row in rows},
            "images_per_s": {row["lever"]: recipe.batch_size / row["step_s"]["median"] for row in rows}}

