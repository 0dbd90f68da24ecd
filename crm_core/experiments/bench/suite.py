"""The whole run: every requested section, at the sizes ``--quick`` / ``--tiny`` ask for,
gathered into one document (summary keys + ``details``) that the report renders."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

from crm_core.experiments.bench.cams import bench_gradcampp
from crm_core.experiments.bench.dashboard import dashboard_latencies
from crm_core.experiments.bench.evaluation import bench_evaluation
from crm_core.experiments.bench.segment_step import bench_segment_step
from crm_core.experiments.bench.superpixels import bench_superpixels
from crm_core.experiments.bench.throughput import bench_scale, bench_training
from crm_core.timing import machine_info
from crm_core.experiments.bench.train_step import RECIPES, TINY_RECIPES, bench_crm_step, default_levers
from crm_core.experiments.bench.voc_training import TINY_VOC_RECIPE, bench_voc_training

log = logging.getLogger(__name__)


@dataclass
class BenchConfig:
    """Which sections run, and at which sizes."""

    quick: bool = False  # small repeat counts and only the levers the summary needs
    sections: tuple[str, ...] = ("gradcampp", "crm_step", "training", "dashboard", "superpixels", "scale", "segment_step",
                                 "evaluation")  # voc_training (ALL_SECTIONS) runs only when asked: minutes on a GPU
    repeats: int | None = None  # timing repeats (default 3 quick / 5 full for fast sections)
    compile: bool = False  # also measure torch.compile (minutes of compilation on a small CPU)
    tiny: bool = False  # every section at toy sizes (resnet18, 64 px, batch 2): for tests of the pipeline
    device: str = "cpu"  # where the CRM-step and stage-2 sections run (cpu | cuda); the other sections measure the CPU


#: Every section ``--sections`` may name: the default ones and VOC-sized training (for a GPU).
ALL_SECTIONS: tuple[str, ...] = (*BenchConfig.sections, "voc_training")


def default_crm_preset() -> str:
    """The CRM preset the trainer uses by default (TrainConfig.crm_preset); imports the trainer
    only when a run needs it."""
    from crm_core.train import TrainConfig

    return TrainConfig().crm_preset


def run_all(cfg: BenchConfig) -> dict[str, Any]:
    """Every requested section; returns the JSON document (summary keys + details)."""
    quick = cfg.quick or cfg.tiny
    fast_repeats = cfg.repeats or (1 if cfg.tiny else 3 if quick else 7)
    step_repeats = cfg.repeats or (1 if cfg.tiny else 2 if quick else 3)
    recipes = TINY_RECIPES if cfg.tiny else RECIPES
    cam_size = dict(arch="resnet18", batch=2, size=64) if cfg.tiny else {}
    train_steps = 3 if cfg.tiny else 4 if quick else 8
    preset = default_crm_preset()
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
        # The headline is the reference step: resnet50 last2, batch 8, 224 px.
        summary["crm_step_ratio"] = r["224_last2"]["ratio"][f"crm_{preset}"]
        summary["crm_step_ratio_synthetic"] = r["synthetic"]["ratio"][f"crm_{preset}"]
        summary["crm_step_ratio_exact"] = r["224_last2"]["ratio"]["crm_exact"]
        summary["crm_step_ratio_exact_synthetic"] = r["synthetic"]["ratio"]["crm_exact"]
        summary["crm_step_ratio_recipe_synthetic"] = r["synthetic"]["ratio"]["crm_recipe"]  # the recipe that shows CRM's effect
        summary["crm_step_ratio_efficientnet_b0"] = r["efficientnet_b0_224_last2"]["ratio"][f"crm_{preset}"]
        # throughput of one optimisation step (images / median step time), beside the ResNet50 recipe's
        for name, key in (("efficientnet_b0_224_last2", "efficientnet_b0"), ("224_last2", "resnet50")):
            summary[f"step_images_per_s_{key}"] = r[name]["images_per_s"]["plain"]
            summary[f"step_images_per_s_{key}_crm"] = r[name]["images_per_s"][f"crm_{preset}"]

    def training() -> dict[str, Any]:
        synthetic = recipes["synthetic"]
        pets = recipes["224_last2"] if cfg.tiny else replace(recipes["224_last2"], batch_size=16)
        runs = [("synthetic_plain", synthetic, False, {}), ("synthetic_crm", synthetic, True, {"crm_preset": preset})]
        if not quick:
            runs += [("synthetic_crm_exact", synthetic, True, {"crm_preset": "exact"}),
                     ("synthetic_crm_no_worker", synthetic, True, {"crm_preset": preset, "workers": 0}),
                     ("224_last2_plain", pets, False, {}),
                     ("224_last2_crm", pets, True, {"crm_preset": preset})]
        return bench_training(runs, steps=train_steps, warmup_steps=1)

    if (r := section("training", training)) is not None:
        summary["train_images_per_s"] = r["synthetic_crm"]["images_per_s"]
        summary["train_peak_rss_mb"] = r["synthetic_crm"]["peak_rss_mb"]["self"]

    dashboard_repeats = 1 if cfg.tiny else 3 if quick else 7
    if (r := section("dashboard", lambda: dashboard_latencies(dashboard_repeats, cold_start=not cfg.tiny))) is not None:
        for key in ("compare_latency_s", "drs_update_latency_s", "cold_start_s"):
            summary[key] = r.get(key)  # None when the demo package is not there
        summary["dashboard_rss_mb"] = ((r.get("memory") or {}).get("bounded") or {}).get("rss_after_mb")

    section("superpixels", lambda: bench_superpixels(repeats=fast_repeats, **(
        dict(image_size=64, batch=2, n_segments=16) if cfg.tiny else {})))
    scale_batch = 2 if cfg.tiny else 16
    if (r := section("scale", lambda: bench_scale(recipes["synthetic"], steps=train_steps,
                                                  global_batch=scale_batch))) is not None:
        summary["scale_speedup_2proc"] = r["speedup_2proc"]
    if (r := section("segment_step", lambda: bench_segment_step(
            image_size=48 if cfg.tiny else 112, batch_size=2 if cfg.tiny else 16, repeats=step_repeats,
            warmup=0 if cfg.tiny else 1, device=cfg.device))) is not None:
        from crm_core.models.segmentation import DEFAULT_SEG_ARCH

        summary["segment_step_s"] = r["step_s"][DEFAULT_SEG_ARCH]["median"]  # the default stage-2 network's
        summary["segment_train_ms_per_image"] = r["train_ms_per_image"][DEFAULT_SEG_ARCH]
        summary["segment_inference_ms_per_image"] = r["inference_ms_per_image"][DEFAULT_SEG_ARCH]
    if (r := section("evaluation", lambda: bench_evaluation(repeats=fast_repeats, **(
            dict(image_size=64, images=4, batch_size=2) if cfg.tiny else {})))) is not None:
        summary["eval_faithfulness_ratio"] = r["faithfulness_ratio"]
        summary["eval_ms_per_image"] = 1000 * r["per_image_s"]["with_faithfulness"]
    if (r := section("voc_training", lambda: bench_voc_training(
            device=cfg.device, **(dict(steps=4, images=6, recipe=TINY_VOC_RECIPE, workers=0, warmup_steps=1,
                                       size=(50, 37)) if cfg.tiny else dict(steps=8 if quick else 20))))) is not None:
        for run, key in (("voc_plain", "voc_images_per_s_resnet50"), ("voc_crm", "voc_images_per_s_resnet50_crm")):
            summary[key] = r["runs"][run]["images_per_s"]
        summary["voc_crm_step_ratio"] = r["crm_step_ratio"]
    details["total_s"] = time.perf_counter() - started
    details["default_crm_preset"] = preset
    return {**summary, "details": details}

