"""The dashboard's engine adapter: the one object the UI is given to reach checkpoints, data, runs and training.

:class:`Engine` implements :class:`demo.protocol.DashboardEngine`, the surface the UI modules
(layout, tabs, callbacks) call; ``demo.layout.build_app(engine)`` receives it, so tests build the UI
around a fake instead (fish-speech's ``build_app(inference_fn)``). The engine work the views
need lives in the adapter, not in the callbacks, split by job into services that ``Engine``
composes and delegates to:

- ``store`` (:class:`demo.checkpoint_store.CheckpointStore`): checkpoint names and paths, which
  files load and why the others are refused, the LRU cache of loaded models, ``warm_up``.
- ``inference`` (:class:`demo.inference.Inference`): samples and uploads, CAMs, reconstructions,
  superpixel refinement, pseudo-mask scores, the CAM methods on offer.
- ``evaluation`` (:class:`demo.evaluation.Evaluation`): ``evaluate``, the val-chosen threshold,
  CAM dependence, a results-table row, a fine-tune's eval.json (scores through ``crm_core.evaluate``).
- ``finetune`` (:class:`demo.finetune.FineTuneRunner`): what a fine-tune may train, its
  TrainConfig, the one running job.
- ``results`` (:class:`demo.results_reader.ResultsReader`): run folders and docs/results.json.
- ``stage2`` (:class:`demo.stage2.Stage2`): the stage-2 segmentation networks and the Stage 2 tab's view.
- ``stage2_trainer`` (:class:`demo.stage2_train.Stage2Trainer`): the Stage 2 tab's trainings (pseudo
  masks, then a network), in the fine-tune runner's one training slot.

This module, those seven, ``demo.locks``, ``demo.bootstrap`` and ``demo.bench`` are the adapter:
the only dashboard modules that may import ``crm_core`` beyond ``crm_core.api``
(``tests/test_layering.py``); none of them but ``demo.bench`` imports gradio.

State: the seven services, nothing else (each service's docstring lists its shared state and
locks). Locks: none of its own. Every lock of the services is a ``demo.locks.OrderedLock``, taken
in one order, outermost first: TRAINING, EVALUATION, CHECKED, MODELS, HOOKS, PERCEPTUAL; a
thread that waits for one out of that order gets ``demo.locks.LockOrderError``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from crm_core.api import CamModel
from crm_core.explain import superpixel_cache_sizes
from crm_core.cams import DEFAULT_CAM_METHOD
from crm_core.thresholds import THRESHOLDS
from demo.bootstrap import DEMO_MODELS, DEMO_RECIPE  # the demo set is defined with the code that trains it
from demo.checkpoint_store import CheckpointStore
from demo.evaluation import Evaluation
from demo.finetune import FineTuneRunner
from demo.memory import format_owners, memory_by_owner
from demo.inference import (PACKAGE_METHODS, PACKAGE_REQUIREMENT, Inference, package_cam_available,
                            refine_with_superpixels, score_pseudo_mask)
from demo.protocol import (NAME_RE, CamOutput, FineTuneRequest, InvalidName, Reconstruction, RunInfo, Sample,
                           Stage2Request, Stage2View, SuperpixelRefinement, TrainingBusy, finite)
from demo.results_reader import REPO_ROOT, ResultsReader, read_results
from demo.stage2 import Stage2
from demo.stage2_train import Stage2Trainer

if TYPE_CHECKING:
    from crm_core.train import TrainConfig

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
        self.store = CheckpointStore(checkpoint_dir, device, cache_size)
        self.inference = Inference(self.store)
        self.evaluation = Evaluation(self.store, self.inference, runs_dir, device, eval_limit)
        self.finetune = FineTuneRunner(self.store, self.evaluation, runs_dir, device)
        self.results = ResultsReader(runs_dir, results_path)
        self.stage2 = Stage2(self.store, self.inference, runs_dir)
        self.stage2_trainer = Stage2Trainer(self.store, self.inference, self.evaluation, self.finetune, self.stage2,
                                            runs_dir, device, eval_limit)

    # The configuration, read from the services that use it (one copy of each value).
    @property
    def checkpoint_dir(self) -> Path:
        return self.store.checkpoint_dir

    @property
    def runs_dir(self) -> Path:
        return self.results.runs_dir

    @property
    def results_path(self) -> Path:
        return self.results.results_path

    @property
    def device(self) -> str:
        return self.store.device

    @property
    def eval_limit(self) -> int:
        return self.evaluation.eval_limit

    # -- checkpoints (store) -------------------------------------------------------------
    def checkpoint_names(self, verify: bool = True) -> list[str]:
        """Names of the checkpoints that load; see :meth:`refused_checkpoints` for the others.

        ``verify=False`` reads each file without building its model: the menus' first fill at
        start-up, which the page's load event then verifies.
        """
        return self.store.names(verify)

    def refused_checkpoints(self) -> dict[str, str]:
        """name -> why it cannot be loaded (truncated, not ours, a pickle that wants to run code...)."""
        return self.store.refused()

    def warm_up(self) -> None:
        """Verify every checkpoint now, in a thread after the page is served (CheckpointStore.warm_up),
        then log the memory by owner."""
        self.store.warm_up()
        log.info("%s", format_owners(self.memory_report()))

    # -- memory (the server's log, demo.bench and demo.load read it; no view does) ---------
    def cache_sizes(self) -> dict[str, tuple[int, int]]:
        """Every cache the engine keeps: name -> (entries, bound)."""
        return {**self.store.cache_sizes(), **self.evaluation.cache_sizes(), **self.stage2.cache_sizes(),
                "superpixel parameter sets": superpixel_cache_sizes()}

    def memory_report(self) -> dict[str, Any]:
        """The server's resident memory by owner (demo.memory.memory_by_owner)."""
        return memory_by_owner(self)

    def checkpoint_path(self, name: str) -> Path:
        """Validated path of checkpoint ``name``; refuses anything but a plain existing name."""
        return self.store.path(name)

    def model(self, name: str) -> CamModel:
        """The loaded checkpoint, from the LRU cache keyed by (path, mtime)."""
        return self.store.model(name)

    def describe(self, name: str) -> str:
        return self.store.describe(name)

    def class_names(self, name: str) -> list[str]:
        return list(self.store.model(name).class_names)

    def has_drs(self, name: str) -> bool:
        return self.store.has_drs(name)

    def has_reconstructor(self, name: str) -> bool:
        return self.store.has_reconstructor(name)

    def variant(self, name: str) -> str:
        return self.store.variant(name)

    def default_delta(self, name: str) -> float | None:
        """The DRS delta a model was trained with (None: no DRS, or learnable)."""
        return self.store.default_delta(name)

    def arch(self, name: str) -> str:
        return self.store.summary(name).model_config.arch

    # -- registries ----------------------------------------------------------------------
    def model_variants(self) -> list[str]:
        return self.finetune.model_variants()

    def datasets(self) -> list[str]:
        return self.finetune.datasets()

    def backbones(self) -> list[str]:
        return self.finetune.backbones()

    def cam_methods(self) -> dict[str, str]:
        """value -> label of every CAM method on offer (grad-cam package ones only if installed)."""
        return self.inference.cam_methods()

    def cam_methods_note(self) -> str:
        return self.inference.cam_methods_note()

    # -- data (inference) ----------------------------------------------------------------
    def dataset_length(self, name: str, split: str = "test") -> int:
        return self.inference.dataset_length(name, split)

    def sample(self, name: str, index: int, split: str = "test") -> Sample:
        return self.inference.samples(name, [index], split)[0]

    def samples(self, name: str, indices: Sequence[int], split: str = "test") -> list[Sample]:
        return self.inference.samples(name, indices, split)

    def load_upload(self, name: str, image: str | Path | np.ndarray) -> Sample:
        return self.inference.load_upload(name, image)

    # -- inference -----------------------------------------------------------------------
    def cam(self, name: str, image: np.ndarray, class_index: int | None = None, drs_delta: float | None = None,
            method: str = DEFAULT_CAM_METHOD, size: tuple[int, int] | None = None) -> CamOutput:
        return self.inference.cam(name, image, class_index, drs_delta, method, size)

    def cams_for_samples(self, name: str, samples: Sequence[Sample], classes: str = "label",
                         drs_delta: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.inference.cams_for_samples(name, samples, classes, drs_delta)

    def reconstruct(self, name: str, image: np.ndarray, drs_delta: float | None = None) -> Reconstruction:
        return self.inference.reconstruct(name, image, drs_delta)

    def perceptual_loss(self) -> torch.nn.Module:
        """VGG19 perceptual loss ("auto" weights: ImageNet if cached, else seeded random), built once."""
        return self.inference.perceptual_loss()

    def perceptual_source(self) -> str:
        return self.inference.perceptual_source()

    def superpixels(self, image: np.ndarray, n_segments: int, compactness: float) -> np.ndarray:
        """SLIC labels int32 (H, W) of a uint8 image (cached on disk by crm_core)."""
        return self.inference.superpixels(image, n_segments, compactness)

    def superpixel_refinement(self, name: str, image: np.ndarray, class_index: int | None, n_segments: int,
                              compactness: float, low: float, high: float,
                              mask: np.ndarray | None = None) -> SuperpixelRefinement:
        return self.inference.superpixel_refinement(name, image, class_index, n_segments, compactness, low, high, mask)

    def mask_scores(self, cam: np.ndarray, gt: np.ndarray, threshold: float) -> dict[str, float]:
        return self.inference.mask_scores(cam, gt, threshold)

    # -- evaluation ----------------------------------------------------------------------
    def cam_dependence(self, name: str, limit: int = 32) -> dict[str, float]:
        return self.evaluation.cam_dependence(name, limit)

    def evaluate(self, name: str, limit: int = 32, drs_delta: float | None = None, split: str = "test",
                 val_threshold: bool = False) -> dict[str, Any]:
        return self.evaluation.evaluate(name, limit, drs_delta, split, val_threshold)

    def val_threshold(self, name: str, limit: int | None = None, drs_delta: float | None = None) -> float:
        return self.evaluation.val_threshold(name, limit, drs_delta)

    def results_row(self, name: str, limit: int = 100) -> dict[str, Any]:
        return self.evaluation.results_row(name, limit)

    def write_eval(self, checkpoint: Path) -> dict[str, Any]:
        """Evaluate a checkpoint on ``eval_limit`` test images (the threshold chosen on as many val
        images) and store eval.json in its run."""
        return self.evaluation.write_eval(checkpoint)

    # -- results and runs ----------------------------------------------------------------
    def results_report(self) -> dict[str, Any] | None:
        """docs/results.json as written by ``python -m crm_core.results`` (None: not made yet), read on every call."""
        return self.results.results_report()

    def run_names(self) -> list[str]:
        return self.results.run_names()

    def run(self, name: str) -> RunInfo:
        return self.results.run(name)

    # -- training ------------------------------------------------------------------------
    def train_config(self, request: FineTuneRequest) -> TrainConfig:
        return self.finetune.train_config(request)

    def training_status(self) -> str | None:
        return self.finetune.training_status()

    def train(self, request: FineTuneRequest, on_progress: Callable[[dict[str, Any]], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> Path:
        """Train (one job at a time, else TrainingBusy), evaluate on a few test images, return the checkpoint path."""
        return self.finetune.train(request, on_progress, should_stop)

    def request_stop(self, name: str) -> bool:
        return self.finetune.request_stop(name)

    # -- stage 2 (stage2) ------------------------------------------------------------------
    def segmentation_names(self) -> list[str]:
        return self.stage2.names()

    def segmentation_info(self, name: str) -> dict[str, Any]:
        return self.stage2.info(name)

    def segmentation_archs(self) -> list[str]:
        return self.stage2_trainer.archs()

    def stage2_config(self, request: Stage2Request) -> dict[str, Any]:
        return self.stage2_trainer.config(request)

    def train_stage2(self, request: Stage2Request, on_progress: Callable[[dict[str, Any]], None] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> Path | None:
        """Pseudo masks, then a stage-2 network (one training job at a time, with fine-tunes); its path."""
        return self.stage2_trainer.train(request, on_progress, should_stop)

    def stage2_view(self, seg_name: str | None, cam_name: str | None, index: int, low: float = THRESHOLDS.low,
                    high: float = THRESHOLDS.high) -> Stage2View:
        return self.stage2.view(seg_name, cam_name, index, low, high)
