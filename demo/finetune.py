"""The dashboard's fine-tune runner: what the Fine-tune tab may train, and one training job at a time.

:class:`FineTuneRunner` (the engine's ``training``: a :class:`demo.protocol.TrainingService`)
turns a :class:`demo.protocol.FineTuneRequest` into a validated ``crm_core.train.TrainConfig``
(the demo recipe, the base checkpoint's architecture, the new names checked against the
checkpoint and run folders), runs ``crm_core.train.main`` with progress and stop callbacks, and
scores the new checkpoint (:meth:`demo.evaluation.Evaluation.write_eval`) before returning its path.

Its :meth:`FineTuneRunner.job` is the one training slot of the engine: the stage-2 trainings of
the Stage 2 tab (:class:`demo.stage2_train.Stage2Trainer`) run in it too, so a fine-tune and a
stage-2 training never run at once and Stop reaches either by name.

State: ``_job``, the running job (its name, what it is, stop event and last progress row; empty
when idle). It is replaced whole, never edited in place, except for the progress row its own job writes.

Locks (levels in ``demo.locks``): ``_lock`` (``TRAINING``, the outermost level) is taken without
waiting (a second job is told it is busy) and held for the whole job, which reads its base
checkpoint through the store (``CHECKED``, ``MODELS``).
"""
from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from demo.bootstrap import DEMO_RECIPE  # the demo set is defined with the code that trains it
from demo.checkpoint_store import CheckpointStore, path_in
from demo.evaluation import Evaluation
from demo.locks import TRAINING, OrderedLock
from demo.protocol import FineTuneRequest, TrainingBusy

if TYPE_CHECKING:
    from crm_core.train import TrainConfig

__all__ = ["FineTuneRunner"]

log = logging.getLogger(__name__)


class FineTuneRunner:
    """Fine-tunes into the store's checkpoint folder and ``runs_dir``; see the module docstring."""

    def __init__(self, store: CheckpointStore, evaluation: Evaluation, runs_dir: str | Path,
                 device: str = "cpu") -> None:
        self._store = store
        self._evaluation = evaluation
        self.runs_dir = Path(runs_dir).resolve()
        self.device = device
        self._lock = OrderedLock("fine-tune: one job", TRAINING)
        self._job: dict[str, Any] = {}  # the running fine-tune: name, stop event, last progress row

    # -- what a fine-tune can train ------------------------------------------------------
    def model_variants(self) -> list[str]:
        from crm_core.models import MODEL_VARIANTS

        return sorted(MODEL_VARIANTS)

    def datasets(self) -> list[str]:
        from crm_core.data import DATASETS

        return sorted(DATASETS, key=lambda d: d != "synthetic")  # the offline default first

    def backbones(self) -> list[str]:
        from crm_core.models import ARCHS

        return sorted(ARCHS, key=lambda a: (a != DEMO_RECIPE["arch"], a))  # the results' recipe's first

    def config(self, request: FineTuneRequest) -> TrainConfig:
        """The TrainConfig a fine-tune request stands for (validated, not yet resolved)."""
        from crm_core.train import TrainConfig

        checkpoint_dir = self._store.checkpoint_dir
        path_in(checkpoint_dir, request.name, ".pt", "checkpoint")
        if (checkpoint_dir / f"{request.name}.pt").exists() or (self.runs_dir / request.name).exists():
            raise ValueError(f"{request.name!r} already exists (checkpoint or run); choose a new name")
        values = {**DEMO_RECIPE, "arch": request.arch}
        init_from = None
        if request.base:
            base = self._store.model(request.base).checkpoint
            if base.model_config.variant != request.model:
                raise ValueError(f"base {request.base!r} is a {base.model_config.variant} model: fine-tune it as "
                                 f"{base.model_config.variant}, or start from scratch for {request.model}")
            init_from = str(base.path)
            train = base.train_config
            # init_from needs the base's architecture, input size and classes.
            values.update(arch=base.model_config.arch, image_size=base.image_size,
                          output_stride=base.model_config.output_stride, num_classes=len(base.class_names),
                          drs_positions=tuple(base.model_config.drs_positions), seed=int(train.get("seed", 0)))
            if train.get("train_size"):
                values["train_size"] = int(train["train_size"])
        values.update(
            name=request.name, model=request.model, dataset=request.dataset, steps=int(request.steps),
            batch_size=int(request.batch_size), cls_lr=float(request.cls_lr), rec_lr=float(request.rec_lr),
            l1_weight=float(request.l1_weight), vgg_weight=float(request.vgg_weight),
            align_weight=float(request.align_weight), delta=str(request.delta), init_from=init_from,
            max_objects=int(request.max_objects),
            checkpoint_dir=str(checkpoint_dir), runs_dir=str(self.runs_dir), device=self.device,
        )
        values.update(request.extra)
        if request.owner:  # in the run's config.json and the checkpoint's train_config (docs/serving.md)
            values["extra"] = {**values.get("extra", {}), "owner": request.owner}
        cfg = TrainConfig(**values)
        cfg.resolve()
        return cfg

    # -- the job -------------------------------------------------------------------------
    def status(self) -> str | None:
        """A line about the running job, or None when idle."""
        job = dict(self._job)
        if not job:
            return None
        row = job.get("row") or {}
        where = row.get("phase_text") or f"step {row.get('step', 0)}/{row.get('max_steps', '?')}"
        return f"{job.get('what', 'fine-tune')} {job['name']!r} is running ({where})"

    @contextmanager
    def job(self, name: str, what: str, on_progress: Callable[[dict[str, Any]], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> Iterator[tuple[Callable, Callable]]:
        """The training slot, taken without waiting (TrainingBusy when another job holds it) for
        job ``name`` (``what``: "fine-tune", "stage-2 training"); yields (progress, stopping): the
        callbacks to train with, which record the job's last row and add :meth:`request_stop`."""
        if not self._lock.acquire(blocking=False):
            raise TrainingBusy(f"{self.status() or 'another training job is running'}; "
                               "one training job at a time — try again when it finishes")
        stop = threading.Event()
        self._job = {"name": name, "what": what, "stop": stop, "row": None}

        def progress(row: dict[str, Any]) -> None:
            self._job["row"] = row
            if on_progress is not None:
                on_progress(row)

        def stopping() -> bool:
            return stop.is_set() or (should_stop is not None and bool(should_stop()))

        try:
            yield progress, stopping
        finally:
            self._job = {}
            self._lock.release()

    def train(self, request: FineTuneRequest, on_progress: Callable[[dict[str, Any]], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> Path:
        """Train (one job at a time), evaluate on a few test images, return the checkpoint path."""
        from crm_core.train import main as train_main

        with self.job(request.name, "fine-tune", on_progress, should_stop) as (progress, stopping):
            cfg = self.config(request)
            log.info("fine-tune %s: %s", cfg.name, cfg.to_dict())
            path = train_main(cfg, on_progress=progress, should_stop=stopping)
            self._evaluation.write_eval(path)
            return path

    def request_stop(self, name: str) -> bool:
        """Ask the running job ``name`` to save and return; False if it is not running."""
        job = self._job
        if job and job.get("name") == name:
            job["stop"].set()
            return True
        return False
