"""The dashboard's stage 2: segmentation networks trained on pseudo masks (``python -m crm_core.segment``).

:class:`Stage2` (the engine's ``stage2``: a :class:`demo.protocol.Stage2Service`) lists the
stage-2 checkpoints of the checkpoint folder (the CAM store refuses them with the reason), says
what each is (its run's eval.json: test mIoU, the CAM model and band of its pseudo masks) and
answers the Stage 2 tab: a test image of a network's own dataset, the network's mask, the pseudo trimap a CAM model makes of the same image (through
:class:`demo.inference.Inference`, as the Superpixels tab) and the ground truth, each scored
against the ground truth. Without a network, the image is a test image of the CAM model's dataset.
Training one is :mod:`demo.stage2_train`'s.

State: ``_kinds``, per checkpoint file version ``(path, mtime ns, size)``, whether it is a stage-2
network (an LRU of ``KINDS_BOUND`` versions); ``_nets``, the loaded networks keyed by ``(path, mtime ns)``, at most ``cache_size``.

Locks (levels in ``demo.locks``): ``_lock`` (``MODELS``) guards both dicts and is held only to
read or write them: files are read and networks loaded outside it, and nothing is acquired
inside it, so it never waits while holding another lock of this module.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from crm_core.api import list_checkpoints
from crm_core.checkpoints import (SEGMENTATION_KIND, CheckpointError, SegmentationCheckpoint,
                                  load_segmentation_checkpoint, read_checkpoint)
from crm_core.data import build_dataset
from crm_core.data.transforms import to_uint8_image
from crm_core.postprocess import BACKGROUND, FOREGROUND, pseudo_trimap
from crm_core.runs import RunDir
from crm_core.thresholds import THRESHOLDS
from demo.checkpoint_store import CheckpointStore, _file_key
from demo.inference import Inference, _scores
from demo.locks import MODELS, OrderedLock
from demo.memory import BoundedDict
from demo.protocol import NAME_RE, Sample, Stage2View

__all__ = ["Stage2"]


class Stage2:
    """Stage-2 networks of ``store``'s checkpoint folder; see the module docstring."""

    KINDS_BOUND = 1024  # file versions remembered (a bool each)

    def __init__(self, store: CheckpointStore, inference: Inference, runs_dir: str | Path = "runs",
                 cache_size: int = 2) -> None:
        self._store, self._inference = store, inference
        self.runs_dir = Path(runs_dir).resolve()
        self._kinds: BoundedDict = BoundedDict(self.KINDS_BOUND)  # (path, mtime ns, size) -> is a stage-2 network
        self._nets: BoundedDict = BoundedDict(cache_size)  # (path, mtime ns) -> SegmentationCheckpoint, LRU
        self._lock = OrderedLock("stage 2: segmentation networks", MODELS)

    def _is_stage2(self, path: Path) -> bool:
        key = _file_key(path)
        with self._lock:
            if key in self._kinds:
                return self._kinds[key]
        try:
            kind = read_checkpoint(path, "cpu", mmap=True, cam_kind=False).get("kind") == SEGMENTATION_KIND
        except CheckpointError:
            kind = False  # unreadable: the CAM store says why
        with self._lock:
            self._kinds[key] = kind
        return kind

    def is_network(self, name: str) -> bool:
        """Whether checkpoint ``name`` exists and is a stage-2 network (InvalidName for a bad name)."""
        path = self._store.path(name)
        return path.is_file() and self._is_stage2(path)

    def info(self, name: str) -> dict[str, Any]:
        """See :meth:`demo.protocol.Stage2Service.info`."""
        path = self._store.path(name)
        try:
            results = RunDir(self.runs_dir / name).read_eval()
            if results.get("kind") != "segmentation" or Path(str(results.get("checkpoint"))).name != path.name:
                results = {}
        except (OSError, ValueError):
            results = {}
        if not results:  # no run of it here: what its checkpoint says, unscored
            try:
                net = self.network(name)
            except (CheckpointError, OSError):
                return {key: None for key in ("miou", "test_images", "cam_model", "low", "high", "train_images",
                                              "step", "arch", "owner")}  # the view says why when it is chosen
            results = {"masks": net.masks, "arch": net.arch, "step": net.step,
                       "train_images": net.seg_config.get("extra", {}).get("train_images"),
                       "owner": net.seg_config.get("extra", {}).get("owner")}
        manifest = (results.get("masks") or {}).get("manifest") or {}
        source = manifest.get("checkpoint")
        cam = Path(source).stem if source and Path(source).parent.resolve() == self._store.checkpoint_dir else None
        return {"miou": results.get("miou"), "test_images": results.get("num_images"), "cam_model": cam,
                "low": manifest.get("low"), "high": manifest.get("high"), "train_images": results.get("train_images"),
                "step": results.get("step"), "arch": results.get("arch"), "owner": results.get("owner")}

    def names(self) -> list[str]:
        """Names of the stage-2 checkpoints in the folder."""
        return [p.stem for p in list_checkpoints(self._store.checkpoint_dir)
                if NAME_RE.match(p.stem) and self._is_stage2(p)]

    def network(self, name: str) -> SegmentationCheckpoint:
        """The loaded stage-2 network ``name`` (a CAM checkpoint is refused with the reason)."""
        path = self._store.path(name)
        key = (str(path), path.stat().st_mtime_ns)
        with self._lock:
            cached = self._nets.get(key)
        if cached is not None:
            return cached
        loaded = load_segmentation_checkpoint(path, optimizer=False)  # it segments, never resumes
        with self._lock:
            self._nets[key] = loaded
        return loaded

    def cache_sizes(self) -> dict[str, tuple[int, int]]:
        """cache -> (entries, bound)."""
        with self._lock:
            return {"stage-2 networks": (len(self._nets), self._nets.bound),
                    "stage-2 file kinds": (len(self._kinds), self._kinds.bound)}

    def networks(self) -> list[Any]:
        """The loaded stage-2 networks (modules), least recently used first."""
        with self._lock:
            return [loaded.net for loaded in self._nets.values()]

    def view(self, seg_name: str | None, cam_name: str | None, index: int, low: float = THRESHOLDS.low,
             high: float = THRESHOLDS.high) -> Stage2View:
        """See :meth:`demo.protocol.Stage2Service.view`."""
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"thresholds must satisfy 0 <= low <= high <= 1, got low={low}, high={high}")
        prediction = prediction_scores = None
        if seg_name:
            net = self.network(seg_name)
            dataset = build_dataset(split="test", **net.dataset)
            if not 0 <= int(index) < len(dataset):
                raise ValueError(f"index must be in 0..{len(dataset) - 1}, got {index}")
            item: dict[str, Any] = dataset[int(index)]
            label = int(item["label"])
            classes = list(getattr(dataset, "class_names", []))
            sample = Sample(image=to_uint8_image(item["image"]), mask=item["mask"].numpy(), label=label,
                            class_name=classes[label] if label < len(classes) else None, index=int(index))
            with torch.no_grad():
                fg = net.net(item["image"][None]).argmax(dim=1)[0].numpy() == 1  # (H, W) the network's object mask
            prediction = np.where(fg, FOREGROUND, BACKGROUND).astype(np.uint8)
            prediction_scores = _scores(fg, sample.mask)
        elif cam_name:
            sample = self._inference.samples(cam_name, [int(index)])[0]  # a test image of the CAM model's dataset
            label = int(sample.label)
        else:
            raise ValueError("choose a stage-2 network or a CAM model")
        pseudo, pseudo_scores = None, None
        if cam_name:
            cam_classes = self._store.model(cam_name).class_names
            explained = label if label < len(cam_classes) else None  # another class set: the predicted class
            cam = self._inference.cam(cam_name, sample.image, class_index=explained).cam
            pseudo = pseudo_trimap(torch.from_numpy(cam)[None], low, high)[0].numpy()
            pseudo_scores = _scores(pseudo == FOREGROUND, sample.mask)
        return Stage2View(sample=sample, prediction=prediction, prediction_scores=prediction_scores,
                          pseudo=pseudo, pseudo_scores=pseudo_scores,
                          description=self._describe(seg_name, net) if seg_name else "")

    def _describe(self, name: str, net: SegmentationCheckpoint) -> str:
        """The network in one line, its masks named by their CAM model (no server path)."""
        info = self.info(name)
        source = net.masks.get("source")
        manifest = net.masks.get("manifest") or {}
        if source == "gt":
            masks = "the ground-truth masks"
        else:
            count = f"{info['train_images']} " if info.get("train_images") else ""
            of = f"of {info['cam_model']}" if info.get("cam_model") else f"in {Path(str(source)).name}"
            masks = f"{count}pseudo masks {of}"
            if isinstance(manifest.get("low"), (int, float)) and isinstance(manifest.get("high"), (int, float)):
                at_val = ", the CAM's val-chosen threshold" if manifest.get("val_threshold") is not None else ""
                masks += f" (object ≥ {manifest['high']:.2f}{at_val}; background < {manifest['low']:.2f})"
        scored = f", test mIoU {info['miou']:.3f} on {info['test_images']} test images" if info.get("miou") is not None else ""
        return (f"{name}: stage-2 {net.arch} trained {net.step} steps on {masks}, {net.dataset.get('name')} "
                f"{net.dataset.get('image_size')}px{scored}")
