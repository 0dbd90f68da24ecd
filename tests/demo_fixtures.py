"""Helpers for the dashboard tests: a fake engine, a copy of the tiny trained pair, a served app."""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from crm_core.api import TrainConfig, load_image, to_uint8_image
from demo.engine import read_results, refine_with_superpixels, score_pseudo_mask
from demo.inference import score_class_mask
from demo.results_reader import ResultsReader
from demo.protocol import (NAME_RE, STAGE2_MAX_STEPS, CamOutput, ClassCams, FineTuneRequest, InvalidName,
                           Reconstruction, RunInfo, Sample, Stage2Request, Stage2View, SuperpixelRefinement,
                           TrainingBusy)

SIZE = 32
CLASSES = ["stripes_h", "stripes_v", "checker"]


class _FakeModel:
    def __init__(self, name: str) -> None:
        self.name = name
        self.image_size = SIZE
        self.has_reconstructor = name != "plain"
        self.has_drs = "drs" in name


def _sample(index: int) -> Sample:
    rng = np.random.default_rng(index)
    image = (rng.random((SIZE, SIZE, 3)) * 80).astype(np.uint8)
    mask = np.zeros((SIZE, SIZE), np.int64)
    lo = 4 + index % 8
    mask[lo:lo + 12, lo:lo + 14] = 1
    image[mask == 1] = (200, 120, 40)
    label = index % len(CLASSES)
    return Sample(image=image, mask=mask, label=label, class_name=CLASSES[label], index=index, labels=(label,))


def _cam_map(image: np.ndarray, spread: float) -> np.ndarray:
    """A smooth blob near the top left: the fakes' CAM of any image."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    return np.exp(-((yy - 0.4) ** 2 + (xx - 0.4) ** 2) / spread).astype(np.float32)


class FakeCheckpoints:
    """demo.protocol.CheckpointService over the names given: "drs" in a name means DRS layers,
    "plain" no ReconstructNet."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.checkpoint_names = list(names)  # a fine-tune adds its new name here

    def names(self, verify: bool = True) -> list[str]:
        return list(self.checkpoint_names)

    def refused(self) -> dict[str, str]:
        return {}

    def path(self, name: Any) -> Path:
        if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
            raise InvalidName(f"invalid checkpoint name {name!r}")
        if name not in self.checkpoint_names:
            raise InvalidName(f"no checkpoint named {name!r}")
        return Path("/nonexistent") / f"{name}.pt"

    def model(self, name: str) -> _FakeModel:
        self.path(name)
        return _FakeModel(name)

    def describe(self, name: str) -> str:
        return f"{name}: fake {name} model"

    def class_names(self, name: str) -> list[str]:
        return list(CLASSES)

    def has_drs(self, name: str) -> bool:
        return self.model(name).has_drs

    def has_reconstructor(self, name: str) -> bool:
        return self.model(name).has_reconstructor

    def multi_label(self, name: str) -> bool:
        self.path(name)
        return False

    def variant(self, name: str) -> str:
        return "resnet_drs" if self.has_drs(name) else "resnet"

    def default_delta(self, name: str) -> float | None:
        return 0.55 if self.has_drs(name) else None

    def arch(self, name: str) -> str:
        return "resnet18"


class FakeInference:
    """demo.protocol.InferenceService: 40 synthetic images, a blob for a CAM. Pure steps (scoring a
    mask, superpixel refinement) are the real service module's own functions."""

    def __init__(self, checkpoints: FakeCheckpoints) -> None:
        self._checkpoints = checkpoints

    def cam_methods(self) -> dict[str, str]:
        return {"gradcampp": "Grad-CAM++ (fake)", "gradcam": "Grad-CAM (fake)"}

    def cam_methods_note(self) -> str:
        return ""

    def dataset_length(self, name: str, split: str = "test") -> int:
        return 40

    def sample(self, name: str, index: int, split: str = "test") -> Sample:
        return self.samples(name, [index])[0]

    def samples(self, name: str, indices: Any, split: str = "test") -> list[Sample]:
        self._checkpoints.path(name)
        out = []
        for index in indices:
            if not 0 <= int(index) < 40:
                raise ValueError(f"sample index must be in 0..39, got {index}")
            out.append(_sample(int(index)))
        return out

    def load_upload(self, name: str, image: Any) -> Sample:
        self._checkpoints.path(name)
        return Sample(image=to_uint8_image(load_image(str(image) if isinstance(image, Path) else image, SIZE)))

    def cam(self, name: str, image: np.ndarray, class_index: int | None = None, drs_delta: float | None = None,
            method: str = "gradcampp", size: Any = None) -> CamOutput:
        self._checkpoints.path(name)
        if method not in self.cam_methods():
            raise ValueError(f"unknown CAM method {method!r}")
        spread = 0.02 + (1.0 - (drs_delta or 0.55)) * 0.1
        c = 2 if class_index is None else class_index
        probs = {n: (0.7 if i == 2 else 0.15) for i, n in enumerate(CLASSES)}
        return CamOutput(cam=_cam_map(image, spread), probs=probs, class_index=c, class_name=CLASSES[c], predicted=2)

    def class_cams(self, name: str, image: np.ndarray, classes: Any = None, top_k: int = 3,
                   drs_delta: float | None = None) -> ClassCams:
        self._checkpoints.path(name)
        chosen = list(range(min(top_k, len(CLASSES)))) if classes is None else [int(c) for c in classes]
        cams = np.stack([_cam_map(image, 0.02 + 0.01 * c) for c in chosen])
        return ClassCams(classes=chosen, names=[CLASSES[c] for c in chosen], cams=cams,
                         scores=[0.5] * len(chosen), multi_label=False)  # the fakes are single-label models

    def class_cams_for_samples(self, name: str, samples: list[Sample],
                               drs_delta: float | None = None) -> list[ClassCams]:
        return [self.class_cams(name, s.image, s.labels or (s.label,)) for s in samples]

    def class_mask_scores(self, cams: ClassCams, class_mask: np.ndarray, threshold: float,
                          num_classes: int) -> dict[str, Any]:
        return score_class_mask(cams, class_mask, threshold, num_classes)

    def cams_for_samples(self, name: str, samples: list[Sample], classes: str = "label",
                         drs_delta: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        cams = np.stack([_cam_map(s.image, 0.01 + 0.01 * (s.index % 5)) for s in samples])
        return cams, np.array([s.index % 2 for s in samples])

    def reconstruct(self, name: str, image: np.ndarray, drs_delta: float | None = None) -> Reconstruction:
        if not self._checkpoints.has_reconstructor(name):
            raise ValueError(f"{name} was trained without CRM")
        recon = (image // 2).astype(np.uint8)
        error = np.abs(recon.astype(np.float32) - image) .mean(-1) / 255.0
        maps = np.stack([_cam_map(image, 0.02 * (i + 1)) for i in range(len(CLASSES))])[:, ::4, ::4]
        return Reconstruction(image=image, recon=recon, error=error, l1=float(error.mean()), perceptual=0.1,
                              decoder_input=maps.astype(np.float32), decoder_input_kind="gradcampp")

    def perceptual_source(self) -> str:
        return "random (fake)"

    def superpixels(self, image: np.ndarray, n_segments: int, compactness: float) -> np.ndarray:
        h, w = image.shape[:2]
        side = max(1, int(round(np.sqrt(n_segments))))
        rows = np.minimum(np.arange(h) * side // h, side - 1)
        cols = np.minimum(np.arange(w) * side // w, side - 1)
        return (rows[:, None] * side + cols[None, :]).astype(np.int32)

    def superpixel_refinement(self, name: str, image: np.ndarray, class_index: int | None, n_segments: int,
                              compactness: float, low: float, high: float,
                              mask: np.ndarray | None = None) -> SuperpixelRefinement:
        out = self.cam(name, image, class_index=class_index)
        return refine_with_superpixels(out.cam, self.superpixels(image, n_segments, compactness), out.class_name,
                                       low, high, mask)

    def cam_metrics(self, name: str, image: np.ndarray, cam: np.ndarray, class_index: int, gt: np.ndarray | None,
                    drs_delta: float | None = None) -> dict[str, float]:
        self._checkpoints.path(name)
        area = float((cam >= 0.5 * cam.max()).mean()) if cam.max() > 0 else 0.0
        out = {"probability": 0.7, "probability_explained": 0.6, "average_drop": 100 * 0.1 / 0.7, "cam_area": area}
        return out if gt is None else {**out, "pxap": 0.8}

    def mask_scores(self, cam: np.ndarray, gt: np.ndarray, threshold: float) -> dict[str, float]:
        return score_pseudo_mask(cam, gt, threshold)


class FakeEvaluation:
    """demo.protocol.EvaluationService: scores that grow with the DRS delta."""

    def __init__(self, checkpoints: FakeCheckpoints) -> None:
        self._checkpoints = checkpoints

    def evaluate(self, name: str, limit: int = 32, drs_delta: float | None = None, split: str = "test",
                 val_threshold: bool = False) -> dict[str, Any]:
        d = drs_delta or 0.55
        out = {"accuracy": 0.5, "cam_miou_best": {"miou": 0.3 + 0.2 * d, "threshold": 0.3},
               "cam_miou_fixed": {"miou": 0.2 + 0.1 * d, "threshold": 0.3}}
        if val_threshold:
            out["cam_miou_val_threshold"] = {"miou": 0.25 + 0.2 * d, "threshold": self.val_threshold(name),
                                             "bg_fpr": 0.3 * (1 - d)}
            out["coverage_val_threshold"] = {"body": 1 - d, "head": 0.9}
        return out

    def val_threshold(self, name: str, limit: int | None = None, drs_delta: float | None = None) -> float:
        self._checkpoints.model(name)
        return 0.35

    def cam_dependence(self, name: str, limit: int = 32) -> dict[str, float]:
        if not self._checkpoints.has_reconstructor(name):
            raise ValueError(f"{name} was trained without CRM")
        return {"recon_l1": 0.2, "recon_l1_shuffled": 0.3, "cam_dependence": 1 / 3}

    def results_row(self, name: str, limit: int = 100) -> dict[str, Any]:
        checkpoints = self._checkpoints
        checkpoints.path(name)
        drs = checkpoints.has_drs(name)
        return {"name": name, "appearance": "informative" if "informative" in name else "random",
                "model": checkpoints.variant(name), "threshold": 0.35, "accuracy": 0.8, "miou": 0.55 if drs else 0.45,
                "bg_fpr": 0.1, "head": 0.9, "body": 0.4, "pxap": 0.7, "average_drop": 20.0, "cam_area": 0.3,
                "cam_dependence": 0.2 if checkpoints.model(name).has_reconstructor else None}


def run_metrics(name: str) -> list[dict[str, Any]]:
    """The metrics rows of a fake run: ten train steps and one val row."""
    rows = [{"step": s, "epoch": 0, "split": "train", "lr": 1e-3, "loss_total": 2.0 / s, "loss_cls": 1.0 / s,
             "loss_l1": 0.5, "loss_vgg": 0.1, "loss_align": 0.01, "accuracy": 0.5, "wall_time": 0.5 * s}
            for s in range(1, 11)]
    rows.append({"step": 10, "epoch": 0, "split": "val", "loss_cls": 0.9, "accuracy": 0.6, "wall_time": 5.0})
    return rows


class FakeRuns:
    """demo.protocol.RunService over the run names given; a training adds its run and owner."""

    def __init__(self, runs: tuple[str, ...]) -> None:
        self.metrics = {name: run_metrics(name) for name in runs}
        self.owners: dict[str, str | None] = {}  # run name -> the owner its training recorded

    def add(self, name: str, owner: str | None) -> None:
        self.metrics[name] = run_metrics(name)
        self.owners[name] = owner

    def names(self) -> list[str]:
        return sorted(self.metrics)

    def run(self, name: str) -> RunInfo:
        if not isinstance(name, str) or name not in self.metrics:
            raise InvalidName(f"no run named {name!r}")
        train = {"model": "resnet", "arch": "resnet18", "image_size": SIZE}
        if self.owners.get(name):
            train["extra"] = {"owner": self.owners[name]}
        return RunInfo(name=name, config={"train": train},
                       metrics=self.metrics[name], eval={"accuracy": 0.5, "cam_miou_best": {"miou": 0.4, "threshold": 0.3}})


class FakeResults(ResultsReader):
    """demo.protocol.ResultsService: the report at ``results_path`` (None: no report, as before
    ``python -m crm_core.experiments.results``), read with the real service module's reader; the
    study's answers (provenance, plan, group order) are the real service's."""

    def __init__(self, results_path: Path | None) -> None:
        self.results_path = results_path

    def report(self) -> dict[str, Any] | None:
        return read_results(self.results_path) if self.results_path is not None else None


class FakeTraining:
    """demo.protocol.TrainingService: fake steps, ``step_s`` seconds each, in one training slot that
    the fake stage-2 trainings share."""

    def __init__(self, checkpoints: FakeCheckpoints, runs: FakeRuns, step_s: float) -> None:
        self._checkpoints, self._runs = checkpoints, runs
        self.step_s = step_s
        self.trained: list[FineTuneRequest] = []
        self._lock = threading.Lock()
        self._job: dict[str, Any] = {}

    def model_variants(self) -> list[str]:
        return ["resnet", "resnet_drs"]

    def datasets(self) -> list[str]:
        return ["synthetic", "pets"]

    def backbones(self) -> list[str]:
        return ["resnet18", "efficientnet_b0"]

    def config(self, request: FineTuneRequest) -> TrainConfig:
        if request.name in self._checkpoints.checkpoint_names:
            raise ValueError(f"{request.name!r} already exists")
        values = dict(request.extra)
        if request.owner:  # as demo.finetune.FineTuneRunner.config records it
            values["extra"] = {**values.get("extra", {}), "owner": request.owner}
        return TrainConfig(name=request.name, model=request.model, dataset=request.dataset, steps=request.steps,
                           batch_size=request.batch_size, cls_lr=request.cls_lr, rec_lr=request.rec_lr,
                           l1_weight=request.l1_weight, vgg_weight=request.vgg_weight,
                           align_weight=request.align_weight, delta=request.delta, **values)

    def status(self) -> str | None:
        return f"fine-tune {self._job['name']!r} is running" if self._job else None

    def steps(self, name: str, steps: int, on_progress: Callable | None, should_stop: Callable | None) -> int:
        """Fake training steps of job ``name`` in the one training slot; returns the steps done."""
        if not self._lock.acquire(blocking=False):
            raise TrainingBusy("another training job is running")
        stop = threading.Event()
        self._job = {"name": name, "stop": stop}
        try:
            for step in range(1, steps + 1):
                time.sleep(self.step_s)
                if on_progress is not None:
                    on_progress({"step": step, "epoch": 0, "max_steps": steps, "wall_time": step * 0.1,
                                 "loss_total": 1.0 / step, "loss_cls": 0.5 / step, "accuracy": 0.5})
                if stop.is_set() or (should_stop is not None and should_stop()):
                    return step
            return steps
        finally:
            self._job = {}
            self._lock.release()

    def train(self, request: FineTuneRequest, on_progress: Callable | None = None,
              should_stop: Callable[[], bool] | None = None) -> Path:
        self.steps(request.name, request.steps, on_progress, should_stop)
        self.trained.append(request)
        self._checkpoints.checkpoint_names.append(request.name)
        self._runs.add(request.name, request.owner)
        return Path("/nonexistent") / f"{request.name}.pt"

    def request_stop(self, name: str) -> bool:
        if self._job and self._job["name"] == name:
            self._job["stop"].set()
            return True
        return False


class FakeStage2:
    """demo.protocol.Stage2Service: fake segmentation networks whose mask is the ground truth shifted by 2 px."""

    def __init__(self, seg_names: tuple[str, ...], inference: FakeInference, runs: FakeRuns) -> None:
        self.seg_names = list(seg_names)  # a stage-2 training adds its new name here
        self.seg_steps: dict[str, int] = {}  # stage-2 network -> the steps its training did
        self._inference, self._runs = inference, runs

    def names(self) -> list[str]:
        return list(self.seg_names)

    def info(self, name: str) -> dict[str, Any]:
        if name not in self.seg_names:
            raise InvalidName(f"no stage-2 checkpoint named {name!r}")
        return {"miou": 0.6, "test_images": 200, "cam_model": "resnet_drs", "low": 0.25, "high": 0.55,
                "train_images": 160, "step": self.seg_steps.get(name, 40), "arch": "fcn_resnet18",
                "owner": self._runs.owners.get(name)}

    def view(self, seg_name: str | None, cam_name: str | None, index: int, low: float = 0.2,
             high: float = 0.45) -> Stage2View:
        if seg_name is not None and seg_name not in self.seg_names:
            raise InvalidName(f"no stage-2 checkpoint named {seg_name!r}")
        if seg_name is None and not cam_name:
            raise ValueError("choose a stage-2 network or a CAM model")
        if not 0 <= int(index) < 200:
            raise ValueError(f"index must be in 0..199, got {index}")
        sample = _sample(int(index))
        fg = np.roll(sample.mask == 1, 2, axis=1)
        pseudo = pseudo_scores = None
        if cam_name:
            cam = self._inference.cam(cam_name, sample.image, class_index=sample.label).cam
            pseudo = np.where(cam >= high, 1, np.where(cam < low, 2, 3)).astype(np.uint8)
            pseudo_scores = score_pseudo_mask(cam, sample.mask, high)
        if seg_name is None:
            return Stage2View(sample=sample, prediction=None, prediction_scores=None, pseudo=pseudo,
                              pseudo_scores=pseudo_scores, description="")
        return Stage2View(sample=sample, prediction=np.where(fg, 1, 2).astype(np.uint8),
                          prediction_scores=score_pseudo_mask(fg.astype(np.float32), sample.mask, 0.5),
                          pseudo=pseudo, pseudo_scores=pseudo_scores, description=f"{seg_name}: fake stage-2 network")


class FakeStage2Training:
    """demo.protocol.Stage2TrainingService: pseudo masks in one progress row, then fake steps in the
    fine-tunes' training slot."""

    def __init__(self, checkpoints: FakeCheckpoints, training: FakeTraining, stage2: FakeStage2,
                 runs: FakeRuns) -> None:
        self._checkpoints, self._training, self._stage2, self._runs = checkpoints, training, stage2, runs

    def archs(self) -> list[str]:
        return ["fcn_resnet18", "lraspp_mobilenet_v3_large"]

    def config(self, request: Stage2Request) -> dict[str, Any]:
        if request.name in self._checkpoints.checkpoint_names or request.name in self._stage2.seg_names:
            raise ValueError(f"{request.name!r} already exists")
        if request.cam_model in self._stage2.seg_names:
            raise ValueError(f"{request.cam_model!r} is a stage-2 segmentation network, not a CAM model")
        self._checkpoints.path(request.cam_model)
        if not 1 <= request.images <= 640 or not 1 <= request.steps <= STAGE2_MAX_STEPS:
            raise ValueError("training images must be between 1 and 640, steps between 1 and 2000")
        return {"segment": {"name": request.name, "train_size": request.images, "steps": request.steps,
                            "arch": request.arch or "fcn_resnet18", "extra": {"owner": request.owner}},
                "cut": {"cam_model": request.cam_model, "cut": request.cut}}

    def train(self, request: Stage2Request, on_progress: Callable | None = None,
              should_stop: Callable[[], bool] | None = None) -> Path | None:
        self.config(request)
        if on_progress is not None:
            on_progress({"phase": "masks", "done": request.images, "total": request.images,
                         "phase_text": f"pseudo masks {request.images}/{request.images}"})
        self._stage2.seg_steps[request.name] = self._training.steps(request.name, request.steps, on_progress,
                                                                    should_stop)
        self._stage2.seg_names.append(request.name)
        self._runs.owners[request.name] = request.owner
        return Path("/nonexistent") / f"{request.name}.pt"


class FakeEngine:
    """demo.protocol.DashboardEngine with no model behind, for layout and callback tests: one fake
    per service (tests/test_layering.py keeps each in step with its Protocol and the real service)."""

    def __init__(self, names: tuple[str, ...] = ("resnet", "resnet_drs", "plain"), runs: tuple[str, ...] = ("resnet",),
                 step_s: float = 0.0, results_path: Path | None = None, seg_names: tuple[str, ...] = ("seg",)) -> None:
        self.checkpoints = FakeCheckpoints(names)
        self.inference = FakeInference(self.checkpoints)
        self.evaluation = FakeEvaluation(self.checkpoints)
        self.runs = FakeRuns(runs)
        self.results = FakeResults(results_path)
        self.training = FakeTraining(self.checkpoints, self.runs, step_s)
        self.stage2 = FakeStage2(seg_names, self.inference, self.runs)
        self.stage2_training = FakeStage2Training(self.checkpoints, self.training, self.stage2, self.runs)


def assert_no_server_detail(message: str) -> None:
    """No temp dir (gradio's upload folder is in it), home dir or working dir in a user's message."""
    for secret in (tempfile.gettempdir(), os.path.expanduser("~"), os.getcwd()):
        assert secret not in message, f"{secret!r} leaks into {message!r}"


def copy_pair(trained_pair: dict, dest: Path) -> tuple[Path, Path]:
    """The session's tiny trained checkpoints and runs, copied into ``dest`` (checkpoints/, runs/)."""
    checkpoints, runs = dest / "checkpoints", dest / "runs"
    checkpoints.mkdir(parents=True, exist_ok=True)
    runs.mkdir(parents=True, exist_ok=True)
    for name in ("resnet", "resnet_drs"):
        target = checkpoints / f"{name}.pt"
        if not target.exists():
            try:
                os.link(trained_pair[name], target)  # checkpoints are large: link, do not copy
            except OSError:
                shutil.copy2(trained_pair[name], target)
        source_run = Path(trained_pair["root"]) / "runs" / name
        if source_run.is_dir() and not (runs / name).exists():
            shutil.copytree(source_run, runs / name)
    return checkpoints, runs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def served_app(checkpoints: Path, runs: Path, *extra_args: str) -> Iterator[str]:
    """``app.py``'s own launch path on a free port of 127.0.0.1; yields the URL."""
    import app as app_module

    args = app_module.get_args_parser().parse_args(
        ["--checkpoints", str(checkpoints), "--runs", str(runs), "--port", str(free_port()), "--no-bootstrap",
         "--eval-images", "4", *extra_args])
    blocks = app_module.launch(args, prevent_thread_lock=True)
    try:
        yield blocks.local_url
    finally:
        blocks.close()
