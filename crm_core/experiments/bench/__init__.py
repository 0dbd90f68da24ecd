"""Side-by-side benchmarks of CRM Lab on this machine.

    python -m crm_core.experiments.bench --quick                                  # a few minutes on 2 CPU cores
    python -m crm_core.experiments.bench --json bench.json --markdown docs/benchmarks.md   # the full run

One module per section, each section a function that returns a plain dict, so tests can run
them at tiny sizes:

1. :mod:`~crm_core.experiments.bench.cams` -- our closed-form Grad-CAM++ (one forward, no backward) against
   the ``grad-cam`` package's ``GradCAMPlusPlus`` on ``layer4[-1]``: times and map difference.
2. :mod:`~crm_core.experiments.bench.train_step` -- one optimisation step with CRM over one without, for
   every speed lever (perceptual size / layers, channels_last, bf16, torch.compile, fused LayerNorm).
3. :mod:`~crm_core.experiments.bench.throughput` -- training throughput and peak RSS, each run in its own
   process; and 6., ``torchrun`` with 1 process x 2 threads against 2 processes x 1 thread.
4. :mod:`~crm_core.experiments.bench.dashboard` -- Compare / DRS latencies and the cold start of ``app.py``:
   measured by ``python -m demo.bench`` (the dashboard side), run here as a subprocess.
5. :mod:`~crm_core.experiments.bench.superpixels` -- cached SLIC lookup against recomputing it.
7. :mod:`~crm_core.experiments.bench.segment_step` -- stage 2: a training step and an inference pass of every
   segmentation network of ``crm_core.segment`` (per image, on ``--device``); the fastest step
   chose its default architecture.
8. :mod:`~crm_core.experiments.bench.evaluation` -- what PxAP, faithfulness and the maps from no
   model add to an evaluation, per image.
9. :mod:`~crm_core.experiments.bench.voc_training` -- only when asked (``--sections voc_training
   --device cuda``): resnet50 at 448 px, batch 16, plain and with CRM, on a VOC-sized folder it writes.

Around them: :mod:`~crm_core.timing` (the harness), :mod:`~crm_core.experiments.bench.workers`
(fresh interpreters), :mod:`~crm_core.experiments.bench.suite` (the whole run), :mod:`~crm_core.experiments.bench.report`
(tables, summary, the generated Markdown block) and :mod:`~crm_core.experiments.bench.cli`.

Timings are measured side by side in one process, interleaving the candidates (the order
rotates every round) and reporting min / median / max, because a shared machine is noisy.
Every model is randomly initialised: timing does not depend on the weights.
"""
from crm_core.experiments.bench.cams import bench_gradcampp
from crm_core.experiments.bench.cli import cli, get_args_parser
from crm_core.experiments.bench.dashboard import dashboard_latencies
from crm_core.experiments.bench.report import MARK_BEGIN, MARK_END, format_summary, format_tables, machine_line, write_markdown
from crm_core.experiments.bench.suite import ALL_SECTIONS, BenchConfig, default_crm_preset, run_all
from crm_core.experiments.bench.evaluation import bench_evaluation
from crm_core.experiments.bench.segment_step import bench_segment_step
from crm_core.experiments.bench.superpixels import bench_superpixels
from crm_core.experiments.bench.throughput import bench_scale, bench_training, run_train_subprocess, training_config
from crm_core.timing import Stats, machine_info, time_interleaved
from crm_core.experiments.bench.train_step import (RECIPES, TINY_RECIPES, Lever, ReferenceLayerNorm, StepRecipe, StepRunner,
                                       bench_crm_step, default_levers, use_reference_norms)
from crm_core.experiments.bench.voc_training import VOC_RECIPE, bench_voc_training, write_voc_sized_folder

__all__ = [
    "ALL_SECTIONS", "MARK_BEGIN", "MARK_END", "RECIPES", "TINY_RECIPES", "BenchConfig", "Lever", "ReferenceLayerNorm", "Stats",
    "StepRecipe", "StepRunner", "bench_crm_step", "bench_evaluation", "bench_gradcampp", "bench_scale", "bench_segment_step", "bench_superpixels",
    "bench_training", "cli", "dashboard_latencies", "default_crm_preset", "default_levers", "format_summary",
    "format_tables", "get_args_parser", "machine_info", "machine_line", "run_all", "run_train_subprocess",
    "time_interleaved", "training_config", "use_reference_norms", "write_markdown",
    "VOC_RECIPE", "bench_voc_training", "write_voc_sized_folder",
]
