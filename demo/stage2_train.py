"""The Stage 2 tab's trainings: a CAM model's pseudo masks, then a segmentation network trained on them.

:class:`Stage2Trainer` (the engine's ``stage2_training``: a :class:`demo.protocol.Stage2TrainingService`)
checks a :class:`demo.protocol.Stage2Request` (a CAM model, not a stage-2 network; a free name;
images, steps, architecture and mask cut in range) and runs the job
(:func:`demo.stage2_job.train_stage2_network`) in the engine's one training slot
(:meth:`demo.finetune.FineTuneRunner.job`: never beside a fine-tune), in the hidden staging
folder of the checkpoint folder, so no menu lists a network still training.

State: none of its own (the slot is the fine-tune runner's). Locks: none of its own; a job holds
the ``TRAINING`` slot and reads its CAM model through the store (``CHECKED``, ``MODELS``) and its
threshold through the evaluation (``EVALUATION``), in that order.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from crm_core.thresholds import THRESHOLDS
from demo.bootstrap import STAGING
from demo.checkpoint_store import CheckpointStore, path_in
from demo.evaluation import Evaluation
from demo.finetune import FineTuneRunner
from demo.inference import Inference
from demo.protocol import STAGE2_CUTS, STAGE2_MAX_STEPS, Stage2Request
from demo.stage2 import Stage2
from demo.stage2_job import BATCH_SIZE, MASKS_FOLDER, train_stage2_network

__all__ = ["Stage2Trainer"]

log = logging.getLogger(__name__)


class Stage2Trainer:
    """The Stage 2 tab's trainings into the store's checkpoint folder and ``runs_dir``, one at a
    time with the fine-tunes (``finetune``'s slot); see the module docstring."""

    def __init__(self, store: CheckpointStore, inference: Inference, evaluation: Evaluation,
                 finetune: FineTuneRunner, stage2: Stage2, runs_dir: str | Path, device: str = "cpu",
                 test_limit: int = 64) -> None:
        self._store, self._inference, self._evaluation = store, inference, evaluation
        self._finetune, self._stage2 = finetune, stage2
        self.runs_dir = Path(runs_dir).resolve()
        self.device = device
        self.test_limit = test_limit  # test images a network is scored on (app.py --eval-images, as fine-tunes)

    def archs(self) -> list[str]:
        from crm_core.models.segmentation import DEFAULT_SEG_ARCH, SEG_ARCHS

        return sorted(SEG_ARCHS, key=lambda a: (a != DEFAULT_SEG_ARCH, a))

    def config(self, request: Stage2Request) -> dict[str, Any]:
        """See :meth:`demo.protocol.Stage2TrainingService.config`."""
        from crm_core.segment import SegConfig

        checkpoint_dir = self._store.checkpoint_dir
        path_in(checkpoint_dir, request.name, ".pt", "checkpoint")
        if any(p.exists() for p in (checkpoint_dir / f"{request.name}.pt", checkpoint_dir / STAGING / f"{request.name}.pt",
                                    self.runs_dir / request.name)):
            raise ValueError(f"{request.name!r} already exists (checkpoint or run); choose a new name")
        if self._stage2.is_network(request.cam_model):
            raise ValueError(f"{request.cam_model!r} is a stage-2 segmentation network, not a CAM model: choose a "
                             "classifier checkpoint, whose CAMs make the pseudo masks")
        self._store.model(request.cam_model)  # loads, or says why it cannot
        if request.cut not in STAGE2_CUTS:
            raise ValueError(f"mask cut must be one of {', '.join(STAGE2_CUTS)}, got {request.cut!r}")
        if request.cut == "band" and not 0.0 <= request.low <= request.high <= 1.0:
            raise ValueError(f"the band needs 0 <= low <= high <= 1, got low {request.low}, high {request.high}")
        available = self._inference.dataset_length(request.cam_model, "train")
        if not 1 <= int(request.images) <= available:
            raise ValueError(f"training images must be between 1 and {available} (the train split of "
                             f"{request.cam_model}'s dataset), got {request.images}")
        if not 1 <= int(request.steps) <= STAGE2_MAX_STEPS:
            raise ValueError(f"steps must be between 1 and {STAGE2_MAX_STEPS}, got {request.steps}")
        arch = request.arch or self.archs()[0]
        if arch not in self.archs():
            raise ValueError(f"unknown segmentation architecture {arch!r}; choose from {', '.join(self.archs())}")
        cfg = SegConfig(name=request.name, masks=str(self.runs_dir / request.name / MASKS_FOLDER), arch=arch,
                        train_size=int(request.images), steps=int(request.steps),
                        batch_size=min(BATCH_SIZE, int(request.images)), device=self.device, test_limit=self.test_limit,
                        checkpoint_dir=str(checkpoint_dir / STAGING), runs_dir=str(self.runs_dir),
                        extra={"owner": request.owner} if request.owner else {})
        cut = {"cam_model": request.cam_model, "cut": request.cut,
               **({"low": float(request.low), "high": float(request.high)} if request.cut == "band" else {})}
        return {"segment": cfg.to_dict(), "cut": cut}

    def train(self, request: Stage2Request, on_progress: Callable[[dict[str, Any]], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> Path | None:
        """See :meth:`demo.protocol.Stage2TrainingService.train`."""
        with self._finetune.job(request.name, "stage-2 training", on_progress, should_stop) as (progress, stopping):
            cfg = self.config(request)
            threshold = None
            if request.cut == "val":
                progress({"phase": "threshold", "phase_text": f"choosing {request.cam_model}'s CAM threshold on val"})
                threshold = self._evaluation.val_threshold(request.cam_model)
            log.info("stage-2 training %s: %s", request.name, cfg)
            segment = cfg["segment"]
            return train_stage2_network(
                self._store.model(request.cam_model), request.name, self._store.checkpoint_dir, self.runs_dir,
                self._store.checkpoint_dir / STAGING,
                images=segment["train_size"], steps=segment["steps"], arch=segment["arch"], val_threshold=threshold,
                low=float(request.low) if threshold is None else THRESHOLDS.low,
                high=float(request.high) if threshold is None else THRESHOLDS.high,
                device=self.device, owner=request.owner, on_progress=progress, should_stop=stopping,
                test_limit=segment["test_limit"])
