"""The dashboard's engine: the one object the UI is given to reach checkpoints, data, runs and training.

:class:`Engine` is the composition of the services of :class:`demo.protocol.DashboardEngine`, one
per job, each implementing its Protocol directly; the UI modules (layout, tabs, callbacks) call
``engine.<service>.<method>``. ``demo.layout.build_app(engine)`` receives it, so tests build the UI
around a fake instead. The services:

- ``checkpoints`` (:class:`demo.checkpoint_store.CheckpointStore`): checkpoint names and paths,
  which files load and why the others are refused, the LRU cache of loaded models, ``warm_up``.
- ``inference`` (:class:`demo.inference.Inference`): samples and uploads, CAMs, reconstructions,
  superpixel refinement, pseudo-mask scores, the CAM methods on offer.
- ``evaluation`` (:class:`demo.evaluation.Evaluation`): ``evaluate``, the val-chosen threshold,
  CAM dependence, a results-table row, a fine-tune's eval.json (scores through ``crm_core.evaluate``).
- ``training`` (:class:`demo.finetune.FineTuneRunner`): what a fine-tune may train, its
  TrainConfig, the one running job.
- ``runs`` (:class:`demo.results_reader.RunReader`): the run folders.
- ``results`` (:class:`demo.results_reader.ResultsReader`): docs/results.json.
- ``stage2`` (:class:`demo.stage2.Stage2`): the stage-2 segmentation networks and the Stage 2 tab's view.
- ``stage2_training`` (:class:`demo.stage2_train.Stage2Trainer`): the Stage 2 tab's trainings
  (pseudo masks, then a network), in the fine-tune runner's one training slot.

This module, the services' modules, ``demo.locks``, ``demo.bootstrap`` and ``demo.bench`` are
the adapter: the only dashboard modules that may import ``crm_core`` beyond ``crm_core.api``
(``tests/test_layering.py``); none of them but ``demo.bench`` imports gradio.

State: the services, nothing else (each service's docstring lists its shared state and locks).
Locks: none of its own. Every lock of the services is a ``demo.locks.OrderedLock``, taken in one
order, outermost first: TRAINING, EVALUATION, CHECKED, MODELS, HOOKS, PERCEPTUAL; a thread that
waits for one out of that order gets ``demo.locks.LockOrderError``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from crm_core.explain import superpixel_cache_sizes
from demo.bootstrap import DEMO_MODELS, DEMO_RECIPE  # the demo set is defined with the code that trains it
from demo.checkpoint_store import CheckpointStore
from demo.evaluation import Evaluation
from demo.finetune import FineTuneRunner
from demo.inference import (PACKAGE_METHODS, PACKAGE_REQUIREMENT, Inference, package_cam_available,
                            refine_with_superpixels, score_pseudo_mask)
from demo.memory import format_owners, memory_by_owner
from demo.protocol import (NAME_RE, CamOutput, FineTuneRequest, InvalidName, Reconstruction, RunInfo, Sample,
                           SuperpixelRefinement, TrainingBusy, finite)
from demo.results_reader import REPO_ROOT, ResultsReader, RunReader, read_results
from demo.stage2 import Stage2
from demo.stage2_train import Stage2Trainer

log = logging.getLogger(__name__)

__all__ = [  # the values of demo.protocol and the services' helpers are re-exported: they were defined here before
    "DEMO_MODELS", "DEMO_RECIPE", "Engine", "NAME_RE", "PACKAGE_METHODS", "PACKAGE_REQUIREMENT", "REPO_ROOT",
    "CamOutput", "FineTuneRequest", "InvalidName", "Reconstruction", "RunInfo", "Sample", "SuperpixelRefinement",
    "TrainingBusy", "finite", "package_cam_available", "read_results", "refine_with_superpixels",
    "score_pseudo_mask",
]


class Engine:
    """Checkpoints in ``checkpoint_dir``, runs in ``runs_dir``; see the module docstring.

    ``results_path`` (relative: from the repository root) is the report the Results tab reads;
    ``eval_limit`` the number of val and test images a fine-tune is scored on (a stage-2 network: test images).
    """

    def __init__(self, checkpoint_dir: str | Path = "checkpoints", runs_dir: str | Path = "runs",
                 device: str = "cpu", cache_size: int = 6, eval_limit: int = 64,
                 results_path: str | Path = Path("docs/results.json")) -> None:
        self.checkpoints = CheckpointStore(checkpoint_dir, device, cache_size)
        self.inference = Inference(self.checkpoints)
        self.evaluation = Evaluation(self.checkpoints, self.inference, runs_dir, device, eval_limit)
        self.training = FineTuneRunner(self.checkpoints, self.evaluation, runs_dir, device)
        self.runs = RunReader(runs_dir)
        self.results = ResultsReader(results_path)
        self.stage2 = Stage2(self.checkpoints, self.inference, runs_dir)
        self.stage2_training = Stage2Trainer(self.checkpoints, self.inference, self.evaluation, self.training,
                                             self.stage2, runs_dir, device, eval_limit)

    def warm_up(self) -> None:
        """Verify every checkpoint now, in a thread after the page is served (CheckpointStore.warm_up),
        then log the memory by owner."""
        self.checkpoints.warm_up()
        log.info("%s", format_owners(self.memory_report()))

    # -- memory (the server's log, demo.bench and demo.load read it; no view does) ---------
    def cache_sizes(self) -> dict[str, tuple[int, int]]:
        """Every cache the engine keeps: name -> (entries, bound)."""
        return {**self.checkpoints.cache_sizes(), **self.evaluation.cache_sizes(), **self.stage2.cache_sizes(),
                "superpixel parameter sets": superpixel_cache_sizes()}

    def memory_report(self) -> dict[str, Any]:
        """The server's resident memory by owner (demo.memory.memory_by_owner)."""
        return memory_by_owner(self)
