"""Side-by-side benchmarks of CRM Lab on this machine.

    python -m crm_core.bench --quick                                  # a few minutes on 2 CPU cores
    python -m crm_core.bench --json bench.json --markdown docs/benchmarks.md   # the full run

Sections (each a function that returns a plain dict, so tests can run them at tiny sizes):

1. :func:`bench_gradcampp` -- our closed-form Grad-CAM++ (one forward, no backward) against the
   ``grad-cam`` package's ``GradCAMPlusPlus`` on ``layer4[-1]``: times and map difference.
2. :func:`bench_crm_step` -- one optimisation step with CRM over one without, for every speed
   lever (perceptual size / layers, channels_last, bf16, torch.compile, fused LayerNorm).
3. :func:`bench_training` -- training throughput and peak RSS, each run in its own process.
4. :func:`bench_dashboard` -- Compare / DRS latencies through the dashboard's engine (or the
   public :class:`~crm_core.api.CamModel` API) and the cold start of ``app.py``.
5. :func:`bench_superpixels` -- cached SLIC lookup against recomputing it.
6. :func:`bench_scale` -- ``torchrun`` with 1 process x 2 threads against 2 processes x 1 thread.

Timings are measured side by side in one process, interleaving the candidates (the order
rotates every round) and reporting min / median / max, because a shared machine is noisy.
Every model is randomly initialised: timing does not depend on the weights.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import json
import logging
import math
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from crm_core.api import CamModel, upsample_normalised
from crm_core.cams.closed_form import gradcampp_closed_form
from crm_core.cams.gradcampp import PACKAGE_EPS
from crm_core.data import SuperpixelCache, build_dataset, slic_superpixels
from crm_core.models import LogitsOnly, ModelConfig, ReconstructNet, create_model
from crm_core.models.decoder import ChannelAffineLayerNorm

log = logging.getLogger("crm_core.bench")

REPO_ROOT = Path(__file__).resolve().parents[1]
MB = 1024.0 * 1024.0


# -- timing --------------------------------------------------------------------------------
@dataclass
class Stats:
    """min / median / max of repeated wall-clock timings, seconds."""

    min: float
    median: float
    max: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> "Stats":
        if not values:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(min(values), statistics.median(values), max(values), len(values))

    def as_dict(self) -> dict[str, float]:
        return {"min": self.min, "median": self.median, "max": self.max, "n": self.n}


def time_interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, Stats]:
    """Time every callable ``repeats`` times, interleaved: round r runs them all, in an order
    rotated by r, so slow phases of a shared machine hit every candidate alike."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            gc.collect()
            started = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - started)
    return {name: Stats.of(values) for name, values in times.items()}


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores, torch, date."""
    cpu = platform.processor() or "unknown"
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("unknown", platform.processor()):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "memory_gb": mem_gb,
        "bf16_units": bool(flags & {"avx512_bf16", "amx_bf16"}),
        "simd": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.cuda.is_available(),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_average_at_start": load,
    }


# -- 1. Grad-CAM++ vs the grad-cam package -------------------------------------------------
def _max_normalise(maps: np.ndarray) -> np.ndarray:
    """Each (h, w) map of (B, h, w) divided by its max (all-zero maps stay zero)."""
    peak = maps.max(axis=(-2, -1), keepdims=True)
    return maps / np.where(peak > 0, peak, 1.0)


def bench_gradcampp(arch: str = "resnet50", batch: int = 8, size: int = 224, num_classes: int = 37,
                    repeats: int = 5, warmup: int = 1, seed: int = 0) -> dict[str, Any]:
    """Closed-form Grad-CAM++ vs ``pytorch_grad_cam.GradCAMPlusPlus`` on the same model and batch.

    Ours: the forward pass that gives the logits, the closed form for the predicted classes
    and the upsampling to the input size (the package's output is input-sized too).
    The package: its public ``__call__`` (forward with hooks, backward, numpy maths, resize).
    The map difference is taken at feature resolution, both max-normalised, ours computed with
    the package's eps (1e-6); the exact eq. 19 (eps = 0) is reported beside it for reference.
    """
    import pytorch_grad_cam

    torch.manual_seed(seed)
    model = create_model(ModelConfig(variant="resnet", arch=arch, num_classes=num_classes, output_stride=32),
                         load_pretrained=False).eval()
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    package = pytorch_grad_cam.GradCAMPlusPlus(model=LogitsOnly(model), target_layers=[model.layer4[-1]])
    captured: dict[str, Any] = {}
    package_cam_image = package.get_cam_image

    def capture(*args: Any, **kwargs: Any) -> np.ndarray:  # its feature-resolution maps of the timed call
        maps = package_cam_image(*args, **kwargs)
        captured["maps"] = np.maximum(maps, 0)  # as its compute_cam_per_layer does
        return maps

    package.get_cam_image = capture
    ours: dict[str, torch.Tensor] = {}

    def run_ours() -> None:
        with torch.no_grad():
            logits, features = model(images)
            classes = logits.argmax(dim=1)
            raw = gradcampp_closed_form(features, model.fc.weight, classes, eps=PACKAGE_EPS)  # (B, h, w)
            ours["maps"] = upsample_normalised(raw, (size, size))  # (B, H, W) in [0, 1]
        ours["raw"], ours["classes"], ours["features"] = raw, classes, features

    def run_package() -> None:
        captured["public"] = package(input_tensor=images, targets=None)  # predicted classes

    try:
        stats = time_interleaved({"ours": run_ours, "package": run_package}, repeats, warmup)
        run_ours()
        run_package()
    finally:
        package.activations_and_grads.release()
    package_maps = _max_normalise(captured["maps"].astype(np.float64))
    ours_maps = _max_normalise(ours["raw"].double().numpy())
    exact = gradcampp_closed_form(ours["features"], model.fc.weight.detach(), ours["classes"]).double().numpy()
    return {
        "config": {"arch": arch, "batch": batch, "size": size, "num_classes": num_classes, "target_layer": "layer4[-1]",
                   "device": "cpu", "repeats": repeats},
        "ours_s": stats["ours"].as_dict(),
        "package_s": stats["package"].as_dict(),
        "speedup": stats["package"].median / stats["ours"].median,
        "max_abs_diff": float(np.abs(ours_maps - package_maps).max()),
        "max_abs_diff_exact_eq19_vs_package": float(np.abs(_max_normalise(exact) - package_maps).max()),
        "feature_size": list(ours["raw"].shape[-2:]),
    }


# -- 2. CRM step vs plain step -------------------------------------------------------------
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
    # The synthetic benchmark's training recipe (DESIGN.md): trained from scratch.
    "synthetic": StepRecipe("synthetic", "resnet18", 112, 16, 16, "none"),
    # The pets recipe: ResNet50 at 224, only layer4 + fc train.
    "224_last2": StepRecipe("224_last2", "resnet50", 224, 32, 8, "last2"),
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


# crm_core.results.CRM_RECIPE on the fast preset, with the perceptual term off as the trainer turns it
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


def _reference_layernorm(self: ChannelAffineLayerNorm, x: torch.Tensor) -> torch.Tensor:
    """The straightforward LayerNorm over (C, H, W): six elementwise passes (same maths)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    var = x.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
    return (x - mean) * torch.rsqrt(var + self.eps) * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


@contextlib.contextmanager
def _norm_kernel(reference: bool) -> Iterator[None]:
    """Temporarily run ReconstructNet's LayerNorms with the reference kernel (restored after)."""
    if not reference:
        yield
        return
    fused = ChannelAffineLayerNorm.forward
    ChannelAffineLayerNorm.forward = _reference_layernorm
    try:
        yield
    finally:
        ChannelAffineLayerNorm.forward = fused


def make_batch(recipe: StepRecipe, cache_root: str | Path) -> dict[str, torch.Tensor]:
    """The first ``batch_size`` synthetic images of the recipe, with (cached) superpixels."""
    cache = SuperpixelCache(root=cache_root, n_segments=recipe.n_segments)
    dataset = build_dataset("synthetic", "train", image_size=recipe.image_size, num_classes=recipe.num_classes,
                            superpixels=cache, length=max(recipe.batch_size, 2))
    return torch.utils.data.default_collate([dataset[i] for i in range(recipe.batch_size)])


class StepRunner:
    """One lever's modules, optimisers and batch; ``__call__`` runs one optimisation step
    through the trainer's own ``train_one_epoch`` (one-batch loader)."""

    def __init__(self, recipe: StepRecipe, lever: Lever, batch: dict[str, torch.Tensor], seed: int = 0,
                 device: str = "cpu") -> None:
        from crm_core.losses import VGGPerceptualLoss
        from crm_core.train import CRMNet, TrainConfig, TrainState, apply_memory_format, cam_size_of

        values = dict(model=recipe.model, arch=recipe.arch, image_size=recipe.image_size,
                      output_stride=recipe.output_stride, batch_size=recipe.batch_size, freeze=recipe.freeze,
                      weights="none", num_classes=recipe.num_classes, crm=lever.crm, perceptual_weights="random",
                      align_warmup=0, n_segments=recipe.n_segments, seed=seed, device=device)
        self.device = torch.device(device)
        values.update(lever.train)
        self.cfg = cfg = TrainConfig(**values).resolve()
        self.lever = lever
        torch.manual_seed(seed)
        class_names = [f"class_{i}" for i in range(recipe.num_classes)]
        classifier = create_model(cfg.model_config(class_names), load_pretrained=False)
        reconstructor = None
        if cfg.crm:
            reconstructor = ReconstructNet(recipe.num_classes, cfg.recon_size, cam_size_of(classifier, recipe.image_size))
        self.perceptual = None
        if cfg.uses_perceptual:
            self.perceptual = apply_memory_format(
                VGGPerceptualLoss("random", layers=cfg.perceptual_layers, size=cfg.perceptual_size), cfg)
        if self.perceptual is not None:
            self.perceptual = self.perceptual.to(self.device)
        self.net = apply_memory_format(CRMNet(classifier, reconstructor).to(self.device), cfg)
        self.optimizers = {"cls": torch.optim.Adam([p for p in classifier.parameters() if p.requires_grad], lr=cfg.cls_lr)}
        if reconstructor is not None:
            self.optimizers["rec"] = torch.optim.Adam(reconstructor.parameters(), lr=cfg.rec_lr)
        self.train_net: torch.nn.Module = self.net
        if lever.compile:
            self.train_net = torch.compile(self.net)
            if self.perceptual is not None:
                self.perceptual = torch.compile(self.perceptual)
        self.batch = {k: v.to(self.device) for k, v in batch.items()}
        self.state = TrainState()
        self.last_terms: dict[str, float] = {}

    def __call__(self) -> None:
        from crm_core.train import train_one_epoch

        with _norm_kernel(self.lever.reference_norm):
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
            "ratio": {row["lever"]: row["ratio_vs_plain"] for row in rows}}


# -- 3. training throughput and peak memory (subprocesses) --------------------------------
def _peak_rss_mb() -> dict[str, float]:
    """Peak resident set size of this process and of its waited-for children, MiB.

    On Linux the process's own peak is VmHWM from /proc/self/status: ``ru_maxrss`` survives
    ``fork`` + ``exec``, so a worker started by a big parent would report the parent's peak.
    """
    scale = 1.0 if sys.platform == "darwin" else 1024.0  # ru_maxrss: bytes on macOS, KiB on Linux
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MB
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                own = float(line.split()[1]) / 1024.0  # kB -> MiB
    except OSError:
        pass
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale / MB
    return {"self": own, "children_max": children}


def _train_worker(config: dict[str, Any], out: str, warmup_steps: int) -> None:
    """Inside the subprocess: train, timestamp every step, report throughput and peak RSS."""
    from crm_core.train import TrainConfig
    from crm_core.train import main as train_main

    stamps: list[float] = []
    cfg = TrainConfig(**config)
    started = time.perf_counter()
    train_main(cfg, on_progress=lambda row: stamps.append(time.perf_counter()))
    total_s = time.perf_counter() - started
    if int(os.environ.get("RANK", "0")) != 0:
        return
    world = int(os.environ.get("WORLD_SIZE", "1"))
    timed = stamps[warmup_steps:]
    steps = len(timed) - 1
    seconds = timed[-1] - timed[0] if steps > 0 else math.nan
    images = steps * cfg.batch_size * world
    Path(out).write_text(json.dumps({
        "world_size": world, "steps_timed": steps, "seconds": seconds,
        "images_per_s": images / seconds if steps > 0 else math.nan,
        "step_s": seconds / steps if steps > 0 else math.nan,
        "peak_rss_mb": _peak_rss_mb(), "total_s": total_s, "torch_threads": torch.get_num_threads(),
        "resolved": {k: v for k, v in cfg.to_dict().items() if k in ("perceptual_size", "channels_last", "crm_preset")},
    }))


def run_train_subprocess(config: dict[str, Any], warmup_steps: int = 1, nproc: int = 1,
                         threads: int | None = None, timeout: float = 3600) -> dict[str, Any]:
    """Run :func:`_train_worker` in a fresh interpreter (``torchrun`` when ``nproc > 1``)."""
    with tempfile.TemporaryDirectory(prefix="crm_bench_train_") as tmp:
        config = dict(config, checkpoint_dir=str(Path(tmp) / "checkpoints"), runs_dir=str(Path(tmp) / "runs"))
        out = Path(tmp) / "result.json"
        worker = ["-m", "crm_core.bench", "--worker-train", json.dumps(config), "--worker-out", str(out),
                  "--worker-warmup", str(warmup_steps)]
        if nproc > 1:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *worker]
        else:
            cmd = [sys.executable, *worker]
        env = dict(os.environ, CRM_LAB_NO_PROGRESS="1", PYTHONPATH=os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - started
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(f"training subprocess failed ({proc.returncode}): {proc.stderr[-2000:]}")
        result = json.loads(out.read_text())
    result["process_wall_s"] = wall
    return result


def _prefill_superpixels(config: dict[str, Any], cache_root: Path) -> None:
    """Compute the SLIC labels of the run's training images once (steady state of training:
    after the first epoch every lookup hits the on-disk cache)."""
    cache = SuperpixelCache(root=cache_root, n_segments=config.get("n_segments", 64))
    dataset = build_dataset("synthetic", "train", image_size=config["image_size"], num_classes=config.get("num_classes", 4),
                            superpixels=cache, length=config["train_size"], seed=config.get("seed", 0))
    for i in range(len(dataset)):
        dataset[i]


def training_config(recipe: StepRecipe, steps: int, crm: bool, **overrides: Any) -> dict[str, Any]:
    """A TrainConfig dict training ``steps`` steps of ``recipe`` on synthetic data in one epoch."""
    config = dict(name=f"bench_{recipe.name}", model=recipe.model, arch=recipe.arch, dataset="synthetic",
                  num_classes=recipe.num_classes, image_size=recipe.image_size, output_stride=recipe.output_stride,
                  batch_size=recipe.batch_size, freeze=recipe.freeze, weights="none", crm=crm, epochs=1, steps=steps,
                  train_size=recipe.batch_size * steps, perceptual_weights="random", align_warmup=0,
                  n_segments=recipe.n_segments, val_limit=recipe.batch_size, ckpt_every=10 ** 6, workers=1, seed=0,
                  device="cpu")
    config.update(overrides)
    return config


def bench_training(runs: list[tuple[str, StepRecipe, bool, dict[str, Any]]], steps: int, warmup_steps: int = 1) -> dict[str, Any]:
    """Images/s and peak RSS of short training runs, each in a fresh process.

    ``runs``: (label, recipe, crm, TrainConfig overrides). Superpixels are prefilled in a
    private cache (steady state); data loading runs in one worker, as the trainer's default.
    """
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="crm_bench_cache_") as cache:
        for label, recipe, crm, overrides in runs:
            config = training_config(recipe, steps, crm, **overrides)
            if crm:
                _prefill_superpixels(config, Path(cache) / "superpixels")
            previous = os.environ.get("CRM_LAB_CACHE")
            os.environ["CRM_LAB_CACHE"] = cache
            try:
                result = run_train_subprocess(config, warmup_steps)
            finally:
                if previous is None:
                    os.environ.pop("CRM_LAB_CACHE", None)
                else:
                    os.environ["CRM_LAB_CACHE"] = previous
            results[label] = {"recipe": recipe.name, "crm": crm, "overrides": overrides,
                              "batch_size": recipe.batch_size, **result}
    return results


# -- 4. dashboard latencies ----------------------------------------------------------------
DASHBOARD_PAIR = ("resnet", "resnet_drs")


def make_demo_checkpoints(directory: str | Path, recipe: dict[str, Any] | None = None) -> list[Path]:
    """Two checkpoints (plain and DRS, both with CRM) after one training step of the demo recipe."""
    from crm_core.train import TrainConfig
    from crm_core.train import main as train_main

    values = dict(arch="resnet18", dataset="synthetic", num_classes=4, train_size=16, image_size=64, output_stride=16,
                  batch_size=8, epochs=1, steps=1, perceptual_size=64, perceptual_weights="random", n_segments=32,
                  align_warmup=0, val_limit=8, workers=0, seed=0, device="cpu")
    values.update(recipe or {})
    directory = Path(directory)
    paths = []
    for variant in DASHBOARD_PAIR:
        paths.append(train_main(TrainConfig(**dict(values, name=variant, model=variant, checkpoint_dir=str(directory),
                                                   runs_dir=str(directory.parent / "runs")))))
    return paths


def _demo_modules() -> tuple[Any, Any] | None:
    """(demo.engine.Engine, demo.callbacks) when the dashboard package is importable, else None."""
    try:
        from demo import callbacks
        from demo.engine import Engine
    except Exception as exc:  # the dashboard is optional here: fall back to the API path
        log.info("demo not importable (%s): measuring through crm_core.api only", exc)
        return None
    if not all(hasattr(callbacks, name) for name in ("compare", "drs_view")):
        return None
    return Engine, callbacks


def _upload_image(size: int = 256, seed: int = 1) -> np.ndarray:
    """A photo-like uint8 (H, W, 3) image, as Gradio hands an upload to a callback."""
    from crm_core.data import to_uint8_image

    dataset = build_dataset("synthetic", "test", image_size=size, num_classes=4, length=seed + 1)
    return to_uint8_image(dataset[seed]["image"])


def bench_dashboard_api(paths: list[Path], image: np.ndarray, repeats: int = 5, deltas: tuple[float, ...] = (0.3, 0.7)) -> dict[str, Any]:
    """Compare and DRS latencies through :class:`CamModel` calls equivalent to the callbacks."""
    def compare_cold() -> None:  # load both checkpoints, preprocess the upload, predict + CAM for both
        for path in paths:
            model = CamModel.load(path)
            x = model.preprocess(image)[None]
            pred = model.predict(x)
            upsample_normalised(pred.cams[:, int(pred.probs[0].argmax())], image.shape[:2])

    loaded = [CamModel.load(path) for path in paths]

    def compare_warm() -> None:
        for model in loaded:
            x = model.preprocess(image)[None]
            pred = model.predict(x)
            upsample_normalised(pred.cams[:, int(pred.probs[0].argmax())], image.shape[:2])

    drs_model = loaded[-1]
    counter = {"i": 0}

    def drs_update() -> None:
        counter["i"] += 1
        x = drs_model.preprocess(image)[None]
        drs_model.cam(x, drs_delta=deltas[counter["i"] % len(deltas)], size=image.shape[:2])
        drs_model.predict(x, drs_delta=deltas[counter["i"] % len(deltas)])

    stats = time_interleaved({"compare_cold": compare_cold, "compare_warm": compare_warm, "drs_update": drs_update},
                             repeats, warmup=1)
    return {name: s.as_dict() for name, s in stats.items()}


def bench_dashboard_engine(checkpoint_dir: Path, image: np.ndarray, repeats: int = 5,
                           deltas: tuple[float, ...] = (0.3, 0.7)) -> dict[str, Any]:
    """Compare and DRS latencies through the dashboard's own callbacks (demo.callbacks)."""
    modules = _demo_modules()
    if modules is None:
        return {"available": False}
    Engine, callbacks = modules
    predicted = getattr(callbacks, "PREDICTED", None)
    runs_dir = checkpoint_dir.parent / "runs"
    a, b = DASHBOARD_PAIR

    def compare(engine: Any) -> None:
        callbacks.compare(engine, a, b, image, None, predicted, 0.3, "gradcampp")

    def compare_cold() -> None:  # a fresh engine: both checkpoints are loaded inside the call
        compare(Engine(checkpoint_dir, runs_dir))

    warm_engine = Engine(checkpoint_dir, runs_dir)
    counter = {"i": 0}

    def drs_update() -> None:
        counter["i"] += 1
        callbacks.drs_view(warm_engine, b, a, image, None, deltas[counter["i"] % len(deltas)], 0.3)

    stats = time_interleaved({"compare_cold": compare_cold, "compare_warm": lambda: compare(warm_engine),
                              "drs_update": drs_update}, repeats, warmup=1)
    return {"available": True, **{name: s.as_dict() for name, s in stats.items()}}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_cold_start(checkpoint_dir: Path, timeout: float = 180.0) -> dict[str, Any]:
    """Seconds from ``python app.py --no-bootstrap`` to the first HTTP 200 on its port."""
    app = REPO_ROOT / "app.py"
    if not app.is_file():
        return {"available": False, "reason": "app.py does not exist"}
    port = _free_port()
    cmd = [sys.executable, str(app), "--no-bootstrap", "--checkpoints", str(checkpoint_dir),
           "--runs", str(checkpoint_dir.parent / "runs"), "--port", str(port), "--log-level", "WARNING"]
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_DISABLE_TELEMETRY="1")
    with tempfile.TemporaryFile() as output:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            while time.perf_counter() - started < timeout:
                if proc.poll() is not None:
                    output.seek(0)
                    tail = output.read().decode(errors="replace")[-1500:]
                    return {"available": False, "reason": f"app.py exited with {proc.returncode}: {tail}"}
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                        if response.status == 200:
                            return {"available": True, "seconds": time.perf_counter() - started, "port": port}
                except (urllib.error.URLError, ConnectionError, OSError):
                    pass
                time.sleep(0.1)
            return {"available": False, "reason": f"no HTTP answer within {timeout:.0f} s"}
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _import_time(module: str) -> float | None:
    """Seconds a fresh interpreter needs to ``import module`` (part of any cold start)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    try:
        return float(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def bench_dashboard(repeats: int = 5, cold_start: bool = True, checkpoint_recipe: dict[str, Any] | None = None,
                    workdir: str | Path | None = None, one_thread_too: bool = True) -> dict[str, Any]:
    """Compare / DRS latencies (engine callbacks when importable, and the API path) and cold start."""
    with contextlib.ExitStack() as stack:
        root = Path(workdir) if workdir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="crm_bench_dash_")))
        checkpoint_dir = root / "checkpoints"
        paths = sorted(checkpoint_dir.glob("*.pt")) if checkpoint_dir.is_dir() else []
        if len(paths) < 2:
            paths = make_demo_checkpoints(checkpoint_dir, checkpoint_recipe)
        image = _upload_image()
        result: dict[str, Any] = {"checkpoints": [p.name for p in paths], "image_shape": list(image.shape),
                                  "model_image_size": CamModel.load(paths[0]).image_size,
                                  "api": bench_dashboard_api(paths, image, repeats)}
        result["engine"] = bench_dashboard_engine(checkpoint_dir, image, repeats)
        if one_thread_too and torch.get_num_threads() > 1:
            # Small models on a busy machine: a second intra-op thread can cost more (waiting for
            # a descheduled partner at every op) than it gives. Same calls with one thread:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                result["api_1thread"] = bench_dashboard_api(paths, image, repeats)
                result["engine_1thread"] = bench_dashboard_engine(checkpoint_dir, image, repeats)
            finally:
                torch.set_num_threads(threads)
        result["cold_start"] = bench_cold_start(checkpoint_dir) if cold_start else {"available": False, "reason": "skipped"}
        if cold_start:
            result["import_gradio_s"] = _import_time("gradio")
    source = result["engine"] if result["engine"].get("available") else result["api"]
    result["measured_through"] = "demo.callbacks (Engine)" if source is result["engine"] else "crm_core.api.CamModel"
    result["compare_latency_s"] = source["compare_cold"]["median"]
    result["compare_warm_latency_s"] = source["compare_warm"]["median"]
    result["drs_update_latency_s"] = source["drs_update"]["median"]
    result["cold_start_s"] = result["cold_start"].get("seconds") if result["cold_start"].get("available") else None
    return result


# -- 5. superpixel cache -------------------------------------------------------------------
def bench_superpixels(image_size: int = 112, batch: int = 16, n_segments: int = 64, repeats: int = 3) -> dict[str, Any]:
    """SLIC labels for one batch: recomputed vs looked up in the on-disk cache."""
    from crm_core.data import to_uint8_image

    dataset = build_dataset("synthetic", "train", image_size=image_size, num_classes=4, length=batch)
    images = [to_uint8_image(dataset[i]["image"]) for i in range(batch)]  # uint8 HxWx3, as the datasets pass them
    with tempfile.TemporaryDirectory(prefix="crm_bench_sp_") as tmp:
        cache = SuperpixelCache(root=tmp, n_segments=n_segments)
        for image in images:
            cache.get(image)  # fill
        stats = time_interleaved({
            "recompute": lambda: [slic_superpixels(image, n_segments) for image in images],
            "cached": lambda: [cache.get(image) for image in images],
        }, repeats, warmup=0)
        assert all(np.array_equal(cache.get(im), slic_superpixels(im, n_segments)) for im in images[:2])
    return {"image_size": image_size, "batch": batch, "n_segments": n_segments,
            "recompute_s": stats["recompute"].as_dict(), "cached_s": stats["cached"].as_dict(),
            "speedup": stats["recompute"].median / stats["cached"].median}


# -- 6. scale: torchrun on CPU -------------------------------------------------------------
def bench_scale(recipe: StepRecipe, steps: int, global_batch: int = 16, crm_preset: str = "fast",
                warmup_steps: int = 1) -> dict[str, Any]:
    """Whole-job images/s of 1 process x 2 threads vs ``torchrun`` 2 processes x 1 thread,
    at the same global batch (so both runs optimise the same thing)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    results = {}
    with tempfile.TemporaryDirectory(prefix="crm_bench_cache_") as cache:
        previous = os.environ.get("CRM_LAB_CACHE")
        os.environ["CRM_LAB_CACHE"] = cache
        try:
            # (processes, threads each): the two ways to use the cores, and one process on one
            # thread to tell how much a second thread buys inside one process.
            for nproc, threads in ((1, cores), (2, max(1, cores // 2)), (1, 1)):
                per_proc = replace(recipe, batch_size=global_batch // nproc)
                config = training_config(per_proc, steps, True, crm_preset=crm_preset, workers=0,
                                         train_size=global_batch * steps)
                _prefill_superpixels(config, Path(cache) / "superpixels")
                results[f"{nproc}proc_x_{threads}threads"] = {
                    "nproc": nproc, "threads_per_proc": threads, "per_process_batch": global_batch // nproc,
                    **run_train_subprocess(config, warmup_steps, nproc=nproc, threads=threads)}
        finally:
            if previous is None:
                os.environ.pop("CRM_LAB_CACHE", None)
            else:
                os.environ["CRM_LAB_CACHE"] = previous
    one, two = list(results.values())[:2]
    return {"recipe": recipe.name, "global_batch": global_batch, "cores": cores, "runs": results,
            "speedup_2proc": two["images_per_s"] / one["images_per_s"]}


# -- the whole run -------------------------------------------------------------------------
@dataclass
class BenchConfig:
    quick: bool = False  # small repeat counts and only the levers the summary needs
    sections: tuple[str, ...] = ("gradcampp", "crm_step", "training", "dashboard", "superpixels", "scale")
    repeats: int | None = None  # timing repeats (default 3 quick / 5 full for fast sections)
    compile: bool = False  # also measure torch.compile (minutes of compilation on a small CPU)
    tiny: bool = False  # every section at toy sizes (resnet18, 64 px, batch 2): for tests of the pipeline
    device: str = "cpu"  # where the CRM-step section runs (cpu | cuda); the other sections measure the CPU


TINY_RECIPES: dict[str, StepRecipe] = {
    "synthetic": StepRecipe("synthetic", "resnet18", 64, 16, 2, "none", n_segments=16),
    "224_last2": StepRecipe("224_last2", "resnet18", 64, 32, 2, "last2", n_segments=16),
}


def run_all(cfg: BenchConfig) -> dict[str, Any]:
    """Every requested section; returns the JSON document (summary keys + details)."""
    quick = cfg.quick or cfg.tiny
    fast_repeats = cfg.repeats or (1 if cfg.tiny else 3 if quick else 7)
    step_repeats = cfg.repeats or (1 if cfg.tiny else 2 if quick else 3)
    recipes = TINY_RECIPES if cfg.tiny else RECIPES
    cam_size = dict(arch="resnet18", batch=2, size=64) if cfg.tiny else {}
    train_steps = 3 if cfg.tiny else 4 if quick else 8
    details: dict[str, Any] = {"machine": machine_info(), "quick": cfg.quick, "tiny": cfg.tiny}
    summary: dict[str, Any] = {}
    started = time.perf_counter()

    def section(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        if name not in cfg.sections:
            return None
        log.info("bench: %s ...", name)
        t = time.perf_counter()
        details[name] = fn()
        details.setdefault("section_s", {})[name] = time.perf_counter() - t
        log.info("bench: %s done in %.0f s", name, details["section_s"][name])
        return details[name]

    if (r := section("gradcampp", lambda: bench_gradcampp(repeats=fast_repeats, **cam_size))) is not None:
        summary["gradcampp_speedup_vs_grad_cam"] = r["speedup"]
        summary["gradcampp_max_abs_diff"] = r["max_abs_diff"]

    def crm_steps() -> dict[str, Any]:
        out = {}
        for name, recipe in recipes.items():
            # bf16 (emulated without bf16 units) and compile only on the small recipe: minutes each.
            levers = default_levers(recipe.image_size, quick=quick, with_compile=cfg.compile and name == "synthetic",
                                    with_bf16=name == "synthetic")
            out[name] = bench_crm_step(recipe, levers, repeats=step_repeats, warmup=0 if cfg.tiny else 1,
                                       device=cfg.device)
        return out

    if (r := section("crm_step", crm_steps)) is not None:
        # The headline is the issue's own reference: resnet50 last2, batch 8, 224 px.
        summary["crm_step_ratio"] = r["224_last2"]["ratio"][f"crm_{DEFAULT_PRESET}"]
        summary["crm_step_ratio_synthetic"] = r["synthetic"]["ratio"][f"crm_{DEFAULT_PRESET}"]
        summary["crm_step_ratio_exact"] = r["224_last2"]["ratio"]["crm_exact"]
        summary["crm_step_ratio_exact_synthetic"] = r["synthetic"]["ratio"]["crm_exact"]
        summary["crm_step_ratio_recipe_synthetic"] = r["synthetic"]["ratio"]["crm_recipe"]  # the recipe that shows CRM's effect

    def training() -> dict[str, Any]:
        synthetic = recipes["synthetic"]
        pets = recipes["224_last2"] if cfg.tiny else replace(recipes["224_last2"], batch_size=16)
        runs = [("synthetic_plain", synthetic, False, {}), ("synthetic_crm", synthetic, True, {"crm_preset": DEFAULT_PRESET})]
        if not quick:
            runs += [("synthetic_crm_exact", synthetic, True, {"crm_preset": "exact"}),
                     ("synthetic_crm_no_worker", synthetic, True, {"crm_preset": DEFAULT_PRESET, "workers": 0}),
                     ("224_last2_plain", pets, False, {}),
                     ("224_last2_crm", pets, True, {"crm_preset": DEFAULT_PRESET})]
        return bench_training(runs, steps=train_steps, warmup_steps=1)

    if (r := section("training", training)) is not None:
        summary["train_images_per_s"] = r["synthetic_crm"]["images_per_s"]
        summary["train_peak_rss_mb"] = r["synthetic_crm"]["peak_rss_mb"]["self"]

    if (r := section("dashboard", lambda: bench_dashboard(repeats=1 if cfg.tiny else 3 if quick else 7, cold_start=not cfg.tiny))) is not None:
        summary["compare_latency_s"] = r["compare_latency_s"]
        summary["drs_update_latency_s"] = r["drs_update_latency_s"]
        summary["cold_start_s"] = r["cold_start_s"]

    section("superpixels", lambda: bench_superpixels(repeats=fast_repeats, **(
        dict(image_size=64, batch=2, n_segments=16) if cfg.tiny else {})))
    scale_batch = 2 if cfg.tiny else 16
    if (r := section("scale", lambda: bench_scale(recipes["synthetic"], steps=train_steps,
                                                  global_batch=scale_batch))) is not None:
        summary["scale_speedup_2proc"] = r["speedup_2proc"]
    details["total_s"] = time.perf_counter() - started
    details["default_crm_preset"] = DEFAULT_PRESET
    return {**summary, "details": details}


#: The CRM preset the trainer uses by default (TrainConfig.crm_preset).
def _default_preset() -> str:
    from crm_core.train import TrainConfig

    return TrainConfig().crm_preset


DEFAULT_PRESET = _default_preset()


# -- report --------------------------------------------------------------------------------
def _f(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _mmm(stats: dict[str, float], digits: int = 3) -> str:
    return f"{_f(stats['min'], digits)} / {_f(stats['median'], digits)} / {_f(stats['max'], digits)}"


def format_tables(doc: dict[str, Any]) -> str:
    """The measured tables as Markdown (also what the CLI prints)."""
    d = doc["details"]
    lines: list[str] = []
    if "gradcampp" in d:
        r = d["gradcampp"]
        c = r["config"]
        lines += [f"### 1. Grad-CAM++ vs grad-cam {_package_version()} ({c['arch']}, batch {c['batch']}, "
                  f"{c['size']}x{c['size']}, CPU, {c['repeats']} repeats)", "",
                  "| | time s (min / median / max) |", "|---|---|",
                  f"| ours: closed form from the forward pass | {_mmm(r['ours_s'])} |",
                  f"| `pytorch_grad_cam.GradCAMPlusPlus` on `layer4[-1]` | {_mmm(r['package_s'])} |",
                  "", f"Speed-up (package / ours, medians): **{r['speedup']:.2f}x**. Max abs difference of the "
                  f"max-normalised {r['feature_size'][0]}x{r['feature_size'][1]} maps, ours at the package's "
                  f"eps=1e-6: **{r['max_abs_diff']:.1e}** (exact eq. 19, eps=0, vs the package: "
                  f"{r['max_abs_diff_exact_eq19_vs_package']:.1e}).", ""]
    if "crm_step" in d:
        for name, r in d["crm_step"].items():
            rec = r["recipe"]
            lines += [f"### 2. CRM step / plain step -- {name}: {rec['model']} {rec['arch']}, {rec['image_size']} px, "
                      f"output stride {rec['output_stride']}, batch {rec['batch_size']}, freeze {rec['freeze']} "
                      f"({r['repeats']} interleaved repeats)", "",
                      "| lever | step s (min / median / max) | / plain (medians; minima) | / own baseline (medians; minima) | what |",
                      "|---|---|---|---|---|"]
            for row in r["rows"]:
                own = "" if row["baseline"] == "plain" else \
                    f"{_f(row['ratio_vs_baseline'])}; {_f(row['ratio_vs_baseline_min'])} (/{row['baseline']})"
                extra = f"; compile took {row['compile_s']:.0f} s" if "compile_s" in row else ""
                lines.append(f"| `{row['lever']}` | {_mmm(row['step_s'], 2)} | **{_f(row['ratio_vs_plain'])}**; "
                             f"{_f(row['ratio_vs_plain_min'])} | {own} | {row['description']}{extra} |")
            lines.append("")
    if "training" in d:
        lines += ["### 3. Training throughput and peak memory (one fresh process per row, data in 1 worker, "
                  "superpixels cached)", "", "| run | batch | CRM preset | data workers | images/s | step s | peak RSS MiB (main process) |",
                  "|---|---|---|---|---|---|---|"]
        for label, r in d["training"].items():
            if not isinstance(r, dict) or "images_per_s" not in r:
                continue
            preset = r.get("resolved", {}).get("crm_preset", "") if r.get("crm", True) else "(no CRM)"
            workers = r.get("overrides", {}).get("workers", 1)
            lines.append(f"| {label} | {r['batch_size']} | {preset} | {workers} | {_f(r['images_per_s'])} | "
                         f"{_f(r['step_s'])} | {_f(r['peak_rss_mb']['self'], 0)} |")
        lines.append("")
    if "dashboard" in d:
        r = d["dashboard"]
        cold = r["cold_start"]
        lines += [f"### 4. Dashboard latencies (measured through {r['measured_through']}; checkpoints "
                  f"{', '.join(r['checkpoints'])} at {r['model_image_size']} px; upload {r['image_shape'][1]}x"
                  f"{r['image_shape'][0]})", "", "| action | seconds (min / median / max) | target |", "|---|---|---|"]
        src = r["engine"] if r["engine"].get("available") else r["api"]
        lines += [f"| Compare, 2 models, fresh engine (loads both checkpoints) | {_mmm(src['compare_cold'])} | <= 1 |",
                  f"| Compare, 2 models, checkpoints cached | {_mmm(src['compare_warm'])} | <= 1 |",
                  f"| DRS delta change | {_mmm(src['drs_update'])} | <= 0.5 |",
                  f"| cold start: `python app.py --no-bootstrap` to HTTP 200 | "
                  f"{_f(cold.get('seconds')) if cold.get('available') else 'n/a: ' + cold.get('reason', '')[:200]} | <= 10 |"]
        one = r.get("engine_1thread") if r.get("engine_1thread", {}).get("available") else r.get("api_1thread")
        if one:
            lines += [f"| same, torch limited to 1 thread: Compare (loads) | {_mmm(one['compare_cold'])} | <= 1 |",
                      f"| same, 1 thread: Compare (cached) | {_mmm(one['compare_warm'])} | <= 1 |",
                      f"| same, 1 thread: DRS delta change | {_mmm(one['drs_update'])} | <= 0.5 |"]
        if r["engine"].get("available"):
            a = r["api"]
            lines += ["", f"Same actions through `crm_core.api.CamModel` only: Compare {_f(a['compare_cold']['median'], 3)} s "
                      f"(loading) / {_f(a['compare_warm']['median'], 3)} s (cached), DRS {_f(a['drs_update']['median'], 3)} s."]
        if r.get("import_gradio_s") is not None:
            lines += ["", f"`import gradio` alone in a fresh interpreter: {_f(r['import_gradio_s'])} s."]
        lines.append("")
    if "superpixels" in d:
        r = d["superpixels"]
        lines += [f"### 5. Superpixels for one batch ({r['batch']} images, {r['image_size']} px, {r['n_segments']} segments)", "",
                  "| | seconds (min / median / max) |", "|---|---|",
                  f"| SLIC recomputed | {_mmm(r['recompute_s'])} |", f"| on-disk cache lookup | {_mmm(r['cached_s'])} |",
                  "", f"Cache speed-up: **{r['speedup']:.0f}x**.", ""]
    if "scale" in d:
        r = d["scale"]
        lines += [f"### 6. Scale: `torchrun` on CPU ({r['recipe']} recipe with CRM, global batch {r['global_batch']}, "
                  f"{r['cores']} cores)", "", "| processes x threads | per-process batch | images/s (whole job) | step s |",
                  "|---|---|---|---|"]
        for run in r["runs"].values():
            lines.append(f"| {run['nproc']} x {run['threads_per_proc']} | {run['per_process_batch']} | "
                         f"{_f(run['images_per_s'])} | {_f(run['step_s'])} |")
        lines += ["", f"2 processes x 1 thread / 1 process x {r['cores']} threads (images/s): **{r['speedup_2proc']:.2f}x**.", ""]
    return "\n".join(lines)


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("grad-cam")
    except Exception:
        return "(version unknown)"


def format_summary(doc: dict[str, Any]) -> str:
    keys = [k for k in doc if k != "details"]
    return "\n".join(f"{k}: {_f(doc[k], 4) if isinstance(doc[k], float) else doc[k]}" for k in keys)


def machine_line(machine: dict[str, Any]) -> str:
    return (f"{machine['cpu']}, {machine['usable_cores']} usable cores ({machine['logical_cores']} logical), "
            f"{machine['memory_gb']} GB RAM, SIMD {machine['simd']}, bf16 units: {'yes' if machine['bf16_units'] else 'no'}; "
            f"torch {machine['torch']} ({machine['torch_threads']} threads), Python {machine['python']}; "
            f"load average at start {machine['load_average_at_start']}; {machine['date']}")


# -- CLI -----------------------------------------------------------------------------------
def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Side-by-side benchmarks of CRM Lab on this machine.")
    p.add_argument("--quick", action="store_true", help="small repeat counts, only the summary's levers")
    p.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON")
    p.add_argument("--markdown", default=None, metavar="PATH", help="write the tables (+ machine) as Markdown")
    p.add_argument("--sections", nargs="+", default=list(BenchConfig.sections), choices=BenchConfig.sections,
                   help="benchmark sections to run")
    p.add_argument("--device", default="cpu", help="device of the CRM-step section (cpu | cuda)")
    p.add_argument("--repeats", type=int, default=None, help="timing repeats per candidate")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile)")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # toy sizes, for tests
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads in this process (default: torch's)")
    p.add_argument("--from-json", default=None, metavar="PATH",
                   help="measure nothing: re-render the tables of an earlier --json file (with --markdown)")
    # internal: the training subprocess of sections 3 and 6
    p.add_argument("--worker-train", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-warmup", type=int, default=1, help=argparse.SUPPRESS)
    return p


MARK_BEGIN = "<!-- bench:begin (generated by python -m crm_core.bench; edits inside are overwritten) -->"
MARK_END = "<!-- bench:end -->"


def write_markdown(doc: dict[str, Any], path: str | Path, command: str) -> None:
    """Write the measured tables; in an existing file only the block between the bench
    markers is replaced, so the hand-written analysis around it survives a re-run."""
    machine = doc["details"]["machine"]
    block = "\n".join([
        MARK_BEGIN, "", f"Reproduce: `{command}`", "", f"Machine: {machine_line(machine)}.", "",
        "#### Summary (JSON top-level keys)", "", "```", format_summary(doc), "```", "", format_tables(doc), MARK_END])
    path = Path(path)
    old = path.read_text() if path.is_file() else ""
    if MARK_BEGIN in old and MARK_END in old:
        head, rest = old.split(MARK_BEGIN, 1)
        text = head + block + rest.split(MARK_END, 1)[1]
    else:
        text = "# Benchmarks\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def cli(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = get_args_parser().parse_args(argv)
    if args.worker_train is not None:
        _train_worker(json.loads(args.worker_train), args.worker_out, args.worker_warmup)
        return 0
    os.environ.setdefault("CRM_LAB_NO_PROGRESS", "1")
    command = "python -m crm_core.bench " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.from_json:
        doc = json.loads(Path(args.from_json).read_text())
        command = doc["details"].get("command", command)
    else:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
            os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the training / app subprocesses too
        doc = run_all(BenchConfig(quick=args.quick, sections=tuple(args.sections), repeats=args.repeats,
                                  compile=args.compile, tiny=args.tiny, device=args.device))
        doc["details"]["command"] = command
    if args.json and not args.from_json:  # first, so a formatting problem never loses a long run
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=1, default=str))
    print(f"Machine: {machine_line(doc['details']['machine'])}\n")
    print(format_tables(doc))
    print(format_summary(doc))
    if args.markdown:
        write_markdown(doc, args.markdown, command)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
