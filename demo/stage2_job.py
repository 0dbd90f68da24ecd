"""A stage-2 job: a CAM model's pseudo masks, then a segmentation network trained on them.

:func:`train_stage2_network` does what ``python -m crm_core.postprocess --at-val-threshold`` then
``python -m crm_core.segment`` would do, in process: the trimaps of the first N train images go to
``runs/<name>/pseudo_masks/`` (written beside it and renamed into place, so a stopped job leaves no
half-written folder), the network trains with ``crm_core.segment.main`` (progress and stop
callbacks) into a staging folder no menu lists, is scored on the test split as
``crm_core.segment`` scores every network (its eval.json), and moves into the checkpoint folder
only then. Two callers: :class:`demo.stage2_train.Stage2Trainer` (the Stage 2 tab's panel) and
``demo.bootstrap`` (the first launch's stage-2 networks, in worker processes). Light at import:
torch and crm_core load when a job runs. State and locks: none.
"""
from __future__ import annotations

import logging
import os
import shutil
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from crm_core.thresholds import THRESHOLDS

if TYPE_CHECKING:
    from crm_core.api import CamModel

__all__ = ["BATCH_SIZE", "MASKS_FOLDER", "train_stage2_network"]

log = logging.getLogger(__name__)

MASKS_FOLDER = "pseudo_masks"  # in the run folder, as crm_core.experiments.results' stage-2 rows keep theirs
BATCH_SIZE = 16  # crm_core.segment's default (fewer images: one batch of all of them)


class _Stopped(Exception):
    """Raised between two batches of pseudo masks when the job is asked to stop."""


def _write_masks(model: CamModel, folder: Path, images: int, val_threshold: float | None, low: float, high: float,
                 on_progress: Callable[[dict[str, Any]], None], should_stop: Callable[[], bool]) -> dict[str, Any]:
    """The trimaps of ``model``'s first ``images`` train images in ``folder`` (written in a sibling
    folder and renamed into place); their scores. :class:`_Stopped` when asked to stop."""
    from crm_core.postprocess import write_pseudo_masks

    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)

    def on_batch(done: int, total: int) -> None:
        on_progress({"phase": "masks", "done": done, "total": total, "phase_text": f"pseudo masks {done}/{total}"})
        if should_stop():
            raise _Stopped

    try:
        scores = write_pseudo_masks(model, partial, "train", progress=False, val_threshold=val_threshold,
                                    low=low, high=high, limit=images, on_batch=on_batch)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)
    return scores


def train_stage2_network(model: CamModel, name: str, checkpoint_dir: str | Path, runs_dir: str | Path,
                         staging: str | Path, *,
                         images: int, steps: int, arch: str | None = None, val_threshold: float | None = None,
                         low: float = THRESHOLDS.low, high: float = THRESHOLDS.high, device: str = "cpu",
                         owner: str | None = None,
                         on_progress: Callable[[dict[str, Any]], None] | None = None,
                         should_stop: Callable[[], bool] | None = None, **segment: Any) -> Path | None:
    """Pseudo masks of ``model`` on its first ``images`` train images, cut at ``val_threshold``
    (postprocess --at-val-threshold: the ``low``/``high`` band moved there) or, when None, at the
    band itself; then a ``crm_core.segment`` network ``name`` trained ``steps`` steps on them.
    It trains in ``staging`` and moves into ``checkpoint_dir`` once scored.
    ``segment``: further SegConfig fields. Returns the checkpoint in ``checkpoint_dir``, or None
    when stopped while the masks were made (the run folder is removed: nothing was trained)."""
    from crm_core.models.segmentation import DEFAULT_SEG_ARCH
    from crm_core.runs import RunDir
    from crm_core.segment import SegConfig
    from crm_core.segment import main as segment_main

    checkpoint_dir, runs_dir = Path(checkpoint_dir), Path(runs_dir)
    progress = on_progress or (lambda row: None)
    stopping = should_stop or (lambda: False)
    run = RunDir.create(runs_dir, name)
    try:
        scores = _write_masks(model, run.path / MASKS_FOLDER, images, val_threshold, low, high, progress, stopping)
    except _Stopped:
        shutil.rmtree(run.path, ignore_errors=True)
        log.info("stage 2 %s: stopped while making its pseudo masks; nothing was trained", name)
        return None
    except BaseException:
        shutil.rmtree(run.path, ignore_errors=True)
        raise
    log.info("stage 2 %s: %d pseudo masks of %s (object >= %.2f, background < %.2f): mIoU %.3f", name,
             scores["num_images"], model.checkpoint.path.name, scores["high"], scores["low"], scores["miou"])
    cam_model = Path(model.checkpoint.path).stem
    cut = {"cam_model": cam_model, "val_threshold": val_threshold, "low": scores["low"], "high": scores["high"]}
    values = dict(name=name, masks=str(run.path / MASKS_FOLDER), arch=arch or DEFAULT_SEG_ARCH, train_size=images,
                  steps=steps, batch_size=min(BATCH_SIZE, images), checkpoint_dir=str(staging),
                  runs_dir=str(runs_dir), device=device,
                  extra={"stage2_masks": cut, **({"owner": owner} if owner else {})})
    values.update(segment)
    staged = segment_main(SegConfig(**values), on_progress=progress, should_stop=stopping)
    final = checkpoint_dir / f"{name}.pt"
    os.replace(staged, final)  # keeps its mtime
    with suppress(OSError):
        staged.parent.rmdir()  # when empty
    results = run.read_eval()
    run.write_eval({**results, "checkpoint": str(final), **({"owner": owner} if owner else {})})
    return final
