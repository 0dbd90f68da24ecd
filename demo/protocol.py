"""The dashboard's engine surface: :class:`DashboardEngine`, its services and the values that cross it.

The engine is a composition of small services, one per job: checkpoints, inference, evaluation,
training, runs, results, stage 2 and stage-2 training. Each is a Protocol here
(:class:`CheckpointService`, :class:`InferenceService`, ...), and :class:`DashboardEngine` names
them as its attributes. The UI modules (layout, tabs, callbacks, plots, render, messages) call an
engine only as ``engine.<service>.<method>`` with the methods listed here, and use ``crm_core``
only through ``crm_core.api``. :class:`demo.engine.Engine` composes the real services (each
implements its Protocol directly) and the tests' ``FakeEngine`` one fake per service.
``tests/test_layering.py`` keeps each service, its real class and its fake in step: same members,
same parameters, same return annotations, and no engine call in the UI outside them.

Here live the values that cross the surface: what the engine returns (:class:`Sample`,
:class:`CamOutput`, :class:`Reconstruction`, :class:`SuperpixelRefinement`, :class:`Stage2View`,
:class:`RunInfo`),
what the Fine-tune tab and the Stage 2 tab's training panel hand it (:class:`FineTuneRequest`,
:class:`Stage2Request`), the errors it raises for the user
(:class:`InvalidName`, :class:`TrainingBusy`; the others come from ``crm_core.api``) and the
name rule of checkpoints and runs (:data:`NAME_RE`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import numpy as np

from crm_core.api import CRM_RECIPE, DEFAULT_CAM_METHOD, DRS_DEFAULT_DELTA, RESULTS_RECIPE, THRESHOLDS

if TYPE_CHECKING:
    from crm_core.api import TrainConfig

#: Checkpoint and run names: a plain file stem, so a name can never walk out of its folder.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class InvalidName(ValueError):
    """A checkpoint or run name that is not a plain name in its folder."""


class TrainingBusy(RuntimeError):
    """Another training job (a fine-tune or a stage-2 training) holds the training lock."""


@dataclass
class Sample:
    """An image the views work on, with ground truth when it comes from a dataset."""

    image: np.ndarray  # uint8 (H, W, 3)
    mask: np.ndarray | None = None  # int (H, W): 1 object, 0 background, 255 ignored
    label: int | None = None  # image-level class index
    class_name: str | None = None
    index: int | None = None  # dataset index (None: uploaded)
    labels: tuple[int, ...] | None = None  # every class in the image (a dataset sample's ground truth)
    class_mask: np.ndarray | None = None  # int (H, W): 0 background, class + 1, 255 ignored (a dataset sample's)


@dataclass
class ClassCams:
    """The CAMs of several classes of one image, from one forward pass (a multi-label view)."""

    classes: list[int]  # class indices, in the order shown
    names: list[str]
    cams: np.ndarray  # float32 (K, H, W), each max-normalised
    scores: list[float]  # each class's probability: sigmoid for a multi-label model, softmax otherwise
    multi_label: bool  # the model was trained on several classes per image


@dataclass
class CamOutput:
    cam: np.ndarray  # float32 (H, W) in [0, 1]
    probs: dict[str, float]  # class name -> probability, every class
    class_index: int  # the class the map explains
    class_name: str
    predicted: int  # argmax class index


@dataclass
class Reconstruction:
    image: np.ndarray  # uint8 (S, S, 3): the input as the model sees it
    recon: np.ndarray  # uint8 (S, S, 3): ReconstructNet's decoding of the CAMs
    error: np.ndarray  # float32 (S, S): mean |recon - image| over channels, in [0, 1]
    l1: float  # mean absolute error, pixel values in [0, 1]
    perceptual: float  # VGG19 perceptual distance (training's definition, tanh range)
    decoder_input: np.ndarray | None = None  # float32 (C, h, w): the maps ReconstructNet decoded, one per class
    decoder_input_kind: str = "gradcampp"  # gradcampp (max-normalised, in [0, 1]) | scores (raw, signed)


@dataclass
class SuperpixelRefinement:
    """A CAM, its superpixel average (the alignment target) and the pseudo masks of both."""

    labels: np.ndarray  # int (H, W): SLIC superpixel ids
    cam: np.ndarray  # float32 (H, W) in [0, 1]: the CAM of class_name
    class_name: str
    pooled: np.ndarray  # float32 (H, W): the CAM averaged per superpixel, max-normalised (as the alignment loss)
    raw_trimap: np.ndarray  # uint8 (H, W): 1 foreground (CAM >= high), 2 background (< low), 3 uncertain
    refined_trimap: np.ndarray  # uint8 (H, W): the same from the per-superpixel average of the CAM
    raw_scores: dict[str, float] | None = None  # raw_trimap's foreground against the mask given (mask_scores' keys)
    refined_scores: dict[str, float] | None = None  # refined_trimap's, likewise


@dataclass
class Stage2View:
    """A stage-2 segmentation network's mask beside a CAM model's pseudo mask and the ground truth,
    for one test image of the network's dataset (the Stage 2 tab)."""

    sample: Sample  # the image and its ground truth
    prediction: np.ndarray | None  # uint8 (H, W) trimap of the network's mask: 1 object, 2 background; None: no network
    prediction_scores: dict[str, float] | None  # its fg_iou, bg_iou, miou, bg_fpr against the ground truth
    pseudo: np.ndarray | None  # uint8 (H, W) the CAM model's pseudo trimap (1 fg, 2 bg, 3 uncertain); None: no CAM model
    pseudo_scores: dict[str, float] | None  # its foreground against the ground truth (uncertain = background)
    description: str  # the stage-2 checkpoint in one line: arch, masks it was trained on, step ("" without one)


@dataclass
class RunInfo:
    name: str
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    eval: dict[str, Any]


@dataclass
class FineTuneRequest:
    """What the Fine-tune tab asks for; :meth:`TrainingService.config` turns it into a TrainConfig.

    Its defaults are the tab's initial values (demo.tabs.finetune reads them from here): the results'
    recipe (batch size, learning rates), its CRM weight and DRS's default delta."""

    name: str  # new checkpoint / run name
    base: str | None = None  # checkpoint to start from (None: from scratch)
    model: str = "resnet_drs"  # registered variant
    dataset: str = "synthetic"
    steps: int = 30
    batch_size: int = RESULTS_RECIPE.batch_size
    cls_lr: float = RESULTS_RECIPE.cls_lr
    rec_lr: float = RESULTS_RECIPE.rec_lr
    l1_weight: float = CRM_RECIPE.l1_weight  # the demo CRM model's weight (x30: docs/results.md)
    vgg_weight: float = 1.0
    align_weight: float = 1.0
    delta: str = str(DRS_DEFAULT_DELTA)  # number in (0, 1] or "learnable"
    arch: str = RESULTS_RECIPE.arch  # backbone from scratch (a base keeps its own)
    max_objects: int = 1  # synthetic: animals of distinct classes per image at most (> 1: multi-label)
    extra: dict[str, Any] = field(default_factory=dict)  # further TrainConfig overrides (tests)
    owner: str | None = None  # the login that started it (None: no login); TrainConfig.extra["owner"]


#: The mask cuts a stage-2 training may make its pseudo masks at (Stage2Request.cut).
STAGE2_CUTS = ("val", "band")
#: The most steps a stage-2 training from the dashboard may take.
STAGE2_MAX_STEPS = 2000


@dataclass
class Stage2Request:
    """What the Stage 2 tab's training panel asks for: pseudo masks of CAM model ``cam_model`` on the
    first ``images`` train images, then a segmentation network trained on them for ``steps`` steps
    (crm_core.postprocess, then crm_core.segment). Its defaults are the panel's initial values."""

    name: str  # new checkpoint / run name
    cam_model: str  # the CAM checkpoint whose pseudo masks it trains on
    cut: str = "val"  # "val": the CAM's threshold chosen on val (postprocess --at-val-threshold); "band": low / high
    low: float = THRESHOLDS.low  # cut "band": CAM below this is background
    high: float = THRESHOLDS.high  # cut "band": CAM from this is object (between the two: ignored)
    images: int = 160  # training images (the first N of the train split)
    steps: int = 40
    arch: str | None = None  # a segmentation architecture (None: crm_core.segment's default)
    owner: str | None = None  # the login that started it (None: no login); SegConfig.extra["owner"]


def finite(value: Any) -> float | None:
    """float(value) when it is a finite number, else None (for tables: the engine's results hold NaN
    where a score is undefined)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class CheckpointService(Protocol):
    """The CAM checkpoints in the checkpoint folder and what each one is. ``name`` is always a
    checkpoint name (a file stem in that folder); a bad one raises :class:`InvalidName`."""

    def names(self, verify: bool = True) -> list[str]:
        """Names of the checkpoints that load (menus list these); ``verify=False``: those whose
        files read as checkpoints, their models not built yet (the menus' first fill)."""

    def refused(self) -> dict[str, str]:
        """name -> why that checkpoint file cannot be loaded."""

    def path(self, name: str) -> Path:
        """The path of checkpoint ``name``; InvalidName unless it is an existing plain name."""

    def describe(self, name: str) -> str:
        """One line a person can read: what the checkpoint is."""

    def class_names(self, name: str) -> list[str]:
        """The model's classes, in index order."""

    def has_drs(self, name: str) -> bool:
        """Whether the model has DRS layers (the delta slider acts on it)."""

    def has_reconstructor(self, name: str) -> bool:
        """Whether the model was trained with CRM (it has a ReconstructNet)."""

    def multi_label(self, name: str) -> bool:
        """Whether the model was trained on several classes per image (each class scored on its own)."""

    def variant(self, name: str) -> str:
        """Its registered model variant (a fine-tune from it must use the same)."""

    def default_delta(self, name: str) -> float | None:
        """The DRS delta it was trained with (None: no DRS, or learnable)."""

    def arch(self, name: str) -> str:
        """Its backbone (a fine-tune from it keeps it)."""


class InferenceService(Protocol):
    """Images and what a model makes of them: samples and uploads, CAMs, reconstructions,
    superpixel refinement and pseudo-mask scores (``name``: a checkpoint name)."""

    def cam_methods(self) -> dict[str, str]:
        """value -> label of every CAM method on offer."""

    def cam_methods_note(self) -> str:
        """One line under the CAM-method menu about methods missing from it ("" when none are)."""

    def dataset_length(self, name: str, split: str = "test") -> int:
        """Number of images in ``split`` of the model's dataset."""

    def sample(self, name: str, index: int, split: str = "test") -> Sample:
        """Image ``index`` of ``split`` of the model's dataset, with its ground truth."""

    def samples(self, name: str, indices: Sequence[int], split: str = "test") -> list[Sample]:
        """Several of them (ValueError for an index out of range)."""

    def load_upload(self, name: str, image: str | Path | np.ndarray) -> Sample:
        """A user's image (file or uint8 array) as the model sees it: square, at its input size
        (crm_core's load_image: alpha, 16 bit, EXIF rotation, corrupt files, size limit)."""

    def cam(self, name: str, image: np.ndarray, class_index: int | None = None, drs_delta: float | None = None,
            method: str = DEFAULT_CAM_METHOD, size: tuple[int, int] | None = None) -> CamOutput:
        """CAM of one uint8 image for ``class_index`` (None: predicted) by ``method`` (a key of
        :meth:`cam_methods`), with every class's probability."""

    def class_cams(self, name: str, image: np.ndarray, classes: Sequence[int] | None = None, top_k: int = 3,
                   drs_delta: float | None = None) -> ClassCams:
        """The closed-form Grad-CAM++ of each of ``classes`` (None: the ``top_k`` classes the model
        scores highest) on one uint8 image, from one forward pass."""

    def cams_for_samples(self, name: str, samples: Sequence[Sample], classes: str = "label",
                         drs_delta: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(CAMs float32 (N, H, W), predicted classes (N,)) of many samples in one batch;
        ``classes``: "label" explains the true class, "predicted" the argmax."""

    def class_cams_for_samples(self, name: str, samples: Sequence[Sample],
                               drs_delta: float | None = None) -> list[ClassCams]:
        """:meth:`class_cams` of each dataset sample's own classes, the samples in one batch."""

    def class_mask_scores(self, cams: ClassCams, class_mask: np.ndarray, threshold: float,
                          num_classes: int) -> dict[str, Any]:
        """The class mask ``cams`` make with ``threshold`` as the background score (each pixel: the
        leading class if its CAM reaches it) against a ground-truth class mask: crm_core.metrics'
        ``miou``, ``fg_iou`` (mean over the object classes in either), ``confusion``, ``per_class_iou``."""

    def reconstruct(self, name: str, image: np.ndarray, drs_delta: float | None = None) -> Reconstruction:
        """ReconstructNet's decoding of the image's CAMs, its error map and distances."""

    def perceptual_source(self) -> str:
        """Where the perceptual network's VGG19 weights came from."""

    def superpixel_refinement(self, name: str, image: np.ndarray, class_index: int | None, n_segments: int,
                              compactness: float, low: float, high: float,
                              mask: np.ndarray | None = None) -> SuperpixelRefinement:
        """SLIC superpixels of the image, the CAM of ``class_index`` (None: predicted) averaged over
        them, and the pseudo trimaps (thresholds ``low`` <= ``high``) of both, scored against ``mask``."""

    def cam_metrics(self, name: str, image: np.ndarray, cam: np.ndarray, class_index: int, gt: np.ndarray | None,
                    drs_delta: float | None = None) -> dict[str, float]:
        """One image's threshold-free and faithfulness metrics of ``cam`` (float (H, W) in [0, 1] at
        the image's size, as :meth:`cam` returns it) for ``class_index`` under model ``name``:
        ``probability`` (softmax, on the image) and ``probability_explained`` (on the map times the
        image, at the model's input size), ``average_drop`` (percent), ``cam_area`` (share at or
        above half the peak) and, with a ground truth ``gt``, ``pxap``."""

    def mask_scores(self, cam: np.ndarray, gt: np.ndarray, threshold: float) -> dict[str, float]:
        """The pseudo mask ``cam >= threshold`` against a ground-truth mask: ``fg_iou``, ``miou``,
        ``bg_fpr`` and the other keys of crm_core.metrics."""


class EvaluationService(Protocol):
    """A checkpoint scored on many images: crm_core.evaluate's report, the val-chosen threshold,
    CAM dependence and a results-table row."""

    def evaluate(self, name: str, limit: int = 32, drs_delta: float | None = None, split: str = "test",
                 val_threshold: bool = False) -> dict[str, Any]:
        """crm_core.evaluate's report on the first ``limit`` images of ``split`` (with
        ``val_threshold``, also at the threshold chosen on val)."""

    def val_threshold(self, name: str, limit: int | None = None, drs_delta: float | None = None) -> float:
        """The CAM threshold with the best mIoU on the first ``limit`` val images."""

    def cam_dependence(self, name: str, limit: int = 32) -> dict[str, float]:
        """Reconstruction L1 with real against batch-shuffled CAMs on ``limit`` test images
        (``recon_l1``, ``recon_l1_shuffled``, ``cam_dependence``)."""

    def results_row(self, name: str, limit: int = 100) -> dict[str, Any]:
        """The checkpoint scored as the results table scores its rows."""


class TrainingService(Protocol):
    """Fine-tunes, and the one training slot they share with stage-2 trainings."""

    def model_variants(self) -> list[str]:
        """Model variants a fine-tune can train."""

    def datasets(self) -> list[str]:
        """Datasets a fine-tune can train on, the offline default first."""

    def backbones(self) -> list[str]:
        """Backbones a fine-tune from scratch can train, the results' recipe's first."""

    def config(self, request: FineTuneRequest) -> TrainConfig:
        """The validated TrainConfig a fine-tune request stands for (ValueError when it is not valid)."""

    def status(self) -> str | None:
        """A line about the running training job (fine-tune or stage 2), or None when idle."""

    def train(self, request: FineTuneRequest, on_progress: Callable[[dict[str, Any]], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> Path:
        """Run the fine-tune (one at a time, else TrainingBusy); returns the checkpoint's path."""

    def request_stop(self, name: str) -> bool:
        """Ask the running training job ``name`` to save and return; False when it is not running."""


class RunService(Protocol):
    """The run folders: what each run was configured with, logged and scored."""

    def names(self) -> list[str]:
        """Names of the run folders."""

    def run(self, name: str) -> RunInfo:
        """A run's config, metrics rows and eval.json (InvalidName for an unknown run)."""


class ResultsService(Protocol):
    """The results report ``python -m crm_core.experiments.results`` wrote (the Results tab's table)
    and what the studies say about it."""

    def report(self) -> dict[str, Any] | None:
        """docs/results.json (None: not made yet; ValueError when it cannot be read)."""

    def provenance(self, report: dict[str, Any]) -> dict[str, Any]:
        """How ``report`` was made: ``plan`` (the command that rebuilds it whole), ``parts`` (the
        commands it was merged from, oldest first), ``runs``, ``dirty_runs``, ``minutes`` and
        ``jobs_at_once``."""

    def plan_command(self) -> str:
        """The command that rebuilds the results table whole."""

    def group_order(self) -> tuple[str, ...]:
        """The table's row groups in the report's order: the floor and the no-model cues first,
        the ceilings last."""

    def reference_labels(self) -> dict[str, str]:
        """Name -> label of the maps from no model that the report scores beside each CAM row under
        its classifier (a row's ``references``)."""


class Stage2Service(Protocol):
    """The stage-2 segmentation networks in the checkpoint folder and the Stage 2 tab's view."""

    def names(self) -> list[str]:
        """Stage-2 segmentation checkpoints (``python -m crm_core.segment``) in the checkpoint folder;
        the CAM menus list none of them (they are refused there with the reason)."""

    def info(self, name: str) -> dict[str, Any]:
        """What stage-2 network ``name`` is, from its run's eval.json: ``miou`` (test mIoU as
        crm_core.segment scored it; None when not scored), ``test_images``, ``cam_model`` (the CAM
        checkpoint its pseudo masks came from; None: ground truth or another folder), ``low`` and
        ``high`` (the masks' band), ``train_images``, ``step``, ``arch``, ``owner``."""

    def view(self, seg_name: str | None, cam_name: str | None, index: int, low: float = THRESHOLDS.low,
             high: float = THRESHOLDS.high) -> Stage2View:
        """Test image ``index`` of stage-2 network ``seg_name``'s dataset: its mask, the pseudo trimap
        of CAM model ``cam_name`` (None: none; thresholds ``low`` <= ``high``, as postprocess) and the
        ground truth, each scored against the ground truth. ``seg_name`` None: no network, the
        image is one of ``cam_name``'s own dataset (which is then required)."""


class Stage2TrainingService(Protocol):
    """The Stage 2 tab's trainings: pseudo masks of a CAM model, then a network trained on them."""

    def archs(self) -> list[str]:
        """Segmentation architectures a stage-2 training can use, crm_core.segment's default first."""

    def config(self, request: Stage2Request) -> dict[str, Any]:
        """The validated stage-2 job a request stands for (ValueError when it is not valid): the
        SegConfig fields it will train with (``segment``) and how its masks are cut (``cut``)."""

    def train(self, request: Stage2Request, on_progress: Callable[[dict[str, Any]], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> Path | None:
        """Make the pseudo masks and train the network (one training job at a time, with fine-tunes:
        else TrainingBusy); ``on_progress`` gets ``phase`` rows (masks) then step rows. Returns the
        checkpoint's path, or None when stopped before the network's first step (nothing kept)."""


class DashboardEngine(Protocol):
    """Everything the dashboard asks of an engine: one service per job, each a small Protocol
    above. A tab's callbacks call ``engine.<service>.<method>`` and nothing else."""

    checkpoints: CheckpointService
    inference: InferenceService
    evaluation: EvaluationService
    training: TrainingService
    runs: RunService
    results: ResultsService
    stage2: Stage2Service
    stage2_training: Stage2TrainingService
