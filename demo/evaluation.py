"""The dashboard's evaluation: scores of a checkpoint, its val-chosen CAM threshold, its CAM dependence.

:class:`Evaluation` (the engine's ``evaluation``: a :class:`demo.protocol.EvaluationService`)
scores the models of a :class:`demo.checkpoint_store.CheckpointStore` with ``crm_core.evaluate``:
``evaluate_model`` for the Evaluate view, ``select_threshold`` for the CAM threshold chosen on
val, ``evaluate_protocol`` for a row scored as the results table scores its rows,
``evaluate_checkpoint`` for the eval.json a fine-tune leaves in its run. It measures
the CAM dependence of a ReconstructNet on test images taken as the views take them
(:class:`demo.inference.Inference`).

State: two caches per checkpoint version (its training step): the CAM dependence per
``(name, step, images)`` and the val-chosen threshold per ``(name, step, val images, delta)``,
each an LRU bounded by entries (``DEPENDENCE_BOUND``, ``THRESHOLD_BOUND``).
A fresh server takes the threshold from the run's eval.json when it was chosen for this very file.

Locks (levels in ``demo.locks``): ``_lock`` (``EVALUATION``) guards both caches. It is held while
a CAM dependence is measured (one measurement per key; loading the model inside takes the
store's ``CHECKED`` and ``MODELS``), and only around the cache's reads and writes for a threshold
(choosing one is not serialised).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from crm_core.api import dataset_for
from crm_core.data.synthetic import data_setting
from crm_core.evaluate import evaluate_checkpoint, evaluate_model, evaluate_protocol, select_threshold
from crm_core.runs import RunDir
from demo.checkpoint_store import CheckpointStore
from demo.inference import Inference
from demo.locks import EVALUATION, OrderedLock
from demo.memory import BoundedDict
from demo.protocol import finite

__all__ = ["Evaluation"]


class Evaluation:
    """Scores of the store's checkpoints; runs (eval.json) in ``runs_dir``; see the module docstring."""

    #: Entries each cache keeps, least recently used out first (a few dozen bytes each; the keys
    #: come from users -- any delta, any image count -- so they are bounded).
    DEPENDENCE_BOUND = 64
    THRESHOLD_BOUND = 256

    def __init__(self, store: CheckpointStore, inference: Inference, runs_dir: str | Path, device: str = "cpu",
                 eval_limit: int = 64) -> None:
        self._store = store
        self._inference = inference
        self.runs_dir = Path(runs_dir).resolve()
        self.device = device
        self.eval_limit = eval_limit
        # (name, step, images) -> CAM dependence
        self._dependence: BoundedDict = BoundedDict(self.DEPENDENCE_BOUND)
        # (name, step, val images, delta) -> CAM threshold chosen on val
        self._val_thresholds: BoundedDict = BoundedDict(self.THRESHOLD_BOUND)
        self._lock = OrderedLock("evaluation: caches", EVALUATION)  # guards both caches above

    def evaluate(self, name: str, limit: int = 32, drs_delta: float | None = None, split: str = "test",
                 val_threshold: bool = False) -> dict[str, Any]:
        """crm_core.evaluate.evaluate_model on the first ``limit`` images of ``split``; with
        ``val_threshold`` also at the CAM threshold chosen on as many val images
        (``cam_miou_val_threshold``, ``coverage_val_threshold``)."""
        model = self._store.model(name)
        threshold = self.val_threshold(name, limit, drs_delta) if val_threshold else None
        return evaluate_model(model, dataset_for(model, split), limit=limit, drs_delta=drs_delta,
                              val_threshold=threshold, progress=False)

    def val_threshold(self, name: str, limit: int | None = None, drs_delta: float | None = None) -> float:
        """The CAM threshold with the best mIoU on the first ``limit`` (default ``eval_limit``) val
        images of ``name``'s dataset, at DRS ``drs_delta`` (None: as trained); cached per checkpoint version."""
        model = self._store.model(name)
        limit = self.eval_limit if limit is None else int(limit)
        key = (name, model.checkpoint.step, limit, drs_delta)
        with self._lock:
            cached = self._val_thresholds.get(key)
        if cached is None and drs_delta is None:
            cached = self._stored_val_threshold(name, limit)
        if cached is None:
            cached = select_threshold(model, dataset_for(model, "val"), limit=limit, drs_delta=drs_delta)
        with self._lock:
            self._val_thresholds[key] = cached
        return cached

    def _stored_val_threshold(self, name: str, limit: int) -> float | None:
        """The threshold :meth:`write_eval` chose for this very checkpoint file on as many val
        images (its run's eval.json), so a fresh server does not evaluate val again; None when
        there is none, or it belongs to another version of the file or another val size."""
        try:
            stored = RunDir(self.runs_dir / name).read_eval()
            mtime = self._store.path(name).stat().st_mtime_ns
            if (stored.get("threshold_split") == "val" and stored.get("val_images") == limit
                    and stored.get("checkpoint_mtime_ns") == mtime):
                return float(stored["cam_miou_val_threshold"]["threshold"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # no usable record: choose it again
        return None

    def cam_dependence(self, name: str, limit: int = 32) -> dict[str, float]:
        """CAM dependence of ``name``'s ReconstructNet on the first ``limit`` test images (cached per
        checkpoint version): L1 with real against batch-shuffled CAMs."""
        model = self._store.model(name)
        key = (name, model.checkpoint.step, limit)
        with self._lock:
            if key not in self._dependence:
                samples = self._inference.samples(name, range(min(limit, self._inference.dataset_length(name))))
                images = torch.stack([model.preprocess(s.image) for s in samples])  # (N, 3, S, S)
                self._dependence[key] = model.cam_dependence(images)
            return self._dependence[key]

    def cache_sizes(self) -> dict[str, tuple[int, int]]:
        """cache -> (entries, bound)."""
        with self._lock:
            return {"CAM dependence": (len(self._dependence), self._dependence.bound),
                    "val thresholds": (len(self._val_thresholds), self._val_thresholds.bound)}

    def results_row(self, name: str, limit: int = 100) -> dict[str, Any]:
        """Checkpoint ``name`` scored as the results table scores its rows: the CAM threshold is
        chosen on the first ``limit`` val images, the metrics reported on the first ``limit`` test images."""
        model = self._store.model(name)
        results = evaluate_protocol(model, limit=limit, val_limit=limit)
        at, coverage = results["cam_miou_val_threshold"], results["coverage_val_threshold"]
        return {
            "name": name, "appearance": model.checkpoint.train_config.get("appearance", "random"),
            "setting": data_setting(model.checkpoint.train_config.get("appearance", "random"),
                                    model.checkpoint.train_config.get("max_objects", 1)),
            "model": model.checkpoint.model_config.variant, "threshold": finite(at["threshold"]),
            "accuracy": finite(results["accuracy"]), "miou": finite(at["miou"]), "bg_fpr": finite(at["bg_fpr"]),
            "head": finite(coverage.get("head")), "body": finite(coverage.get("body")),
            "cam_dependence": finite(results.get("cam_dependence")),
            **{key: finite(results.get(key)) for key in ("pxap", "average_drop", "increase_in_confidence", "cam_area")},
        }

    def write_eval(self, checkpoint: Path) -> dict[str, Any]:
        """Evaluate a checkpoint on ``eval_limit`` test images and store eval.json in its run.

        The CAM threshold is chosen on as many val images (``cam_miou_val_threshold``), never
        on the test images it is reported on.
        """
        return evaluate_checkpoint(checkpoint, self.device, limit=self.eval_limit, val_limit=self.eval_limit,
                                   runs_dir=self.runs_dir)
