"""The dashboard's engine adapter: the one object that touches checkpoints, data, runs and training.

:class:`Engine` implements :class:`demo.protocol.DashboardEngine`, the surface the UI modules
(layout, callbacks) call; ``demo.layout.build_app(engine)`` receives it, so tests build the UI
around a fake instead (fish-speech's ``build_app(inference_fn)``). The engine work the views
need lives here, not in the callbacks: CAMs, reconstructions, superpixel refinement, scoring a
pseudo mask against ground truth, evaluation, fine-tuning. This module, ``demo.bootstrap`` and
``demo.bench`` are the only dashboard modules that import ``crm_core`` beyond ``crm_core.api``
(``tests/test_layering.py``); none of them imports gradio.

Shared state is deliberately small: an LRU cache of loaded checkpoints keyed by
``(path, mtime)`` (a retrained file is reloaded, every user shares the loaded models) with their
one-line descriptions, the lazily built perceptual network, and the training lock that allows
one fine-tune at a time.
"""
from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from crm_core.api import CamModel, dataset_for, list_checkpoints, load_image, upsample_normalised
from crm_core.checkpoints import CheckpointError, CheckpointSummary, inspect_checkpoint
from crm_core.api import superpixels as slic_labels
from crm_core.cams import CAM_METHODS, DEFAULT_CAM_METHOD, normalize_cams
from crm_core.data import superpixel_mean
from crm_core.data.transforms import to_uint8_image
from crm_core.evaluate import evaluate_checkpoint, evaluate_model, evaluate_protocol, select_threshold
from crm_core.losses import reconstruction_target
from crm_core.metrics import mask_iou
from crm_core.models import LogitsOnly, delta_override, from_tanh_range, resize_reconstruction, to_tanh_range
from crm_core.postprocess import FOREGROUND, pseudo_trimap
from crm_core.runs import RunDir, list_runs
from demo.bootstrap import DEMO_MODELS, DEMO_RECIPE  # the demo set is defined with the code that trains it
from demo.messages import safe_message
from demo.protocol import (NAME_RE, CamOutput, FineTuneRequest, InvalidName, Reconstruction, RunInfo, Sample,
                           SuperpixelRefinement, TrainingBusy, finite)

if TYPE_CHECKING:
    from crm_core.train import TrainConfig

__all__ = [  # the values of demo.protocol are re-exported: they were defined here before
    "DEMO_MODELS", "DEMO_RECIPE", "Engine", "NAME_RE", "CamOutput", "FineTuneRequest", "InvalidName", "Reconstruction",
    "RunInfo", "Sample", "SuperpixelRefinement", "TrainingBusy", "finite", "package_cam_available", "read_results",
    "refine_with_superpixels", "score_pseudo_mask",
]

log = logging.getLogger(__name__)

#: The repository root: a relative ``results_path`` is taken from here, not from the working dir.
REPO_ROOT = Path(__file__).resolve().parent.parent
#: Methods of the grad-cam package offered when it is importable (value prefix "pgc:").
PACKAGE_REQUIREMENT = "grad-cam==1.5.7"  # as pinned in requirements-test.txt
PACKAGE_METHODS = ("GradCAM", "GradCAMPlusPlus", "XGradCAM", "HiResCAM", "LayerCAM", "EigenCAM", "EigenGradCAM")


def package_cam_available() -> bool:
    """Whether the optional grad-cam package (pytorch_grad_cam) is installed.

    Looked up, not imported: importing it pulls in OpenCV and costs seconds of the dashboard's
    cold start; it is imported the first time one of its methods is chosen.
    """
    import importlib.util

    return importlib.util.find_spec("pytorch_grad_cam") is not None


def read_results(path: Path) -> dict[str, Any] | None:
    """The report ``python -m crm_core.results`` wrote at ``path``; None when there is none yet.

    Raises ValueError (a one-line reason naming only the file) when it exists but cannot be read,
    is not JSON, or lacks the parts the Results tab reads (jobs, summary.rows with stats).
    """
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"{path.name} cannot be read ({exc.strerror or type(exc).__name__})") from exc
    except ValueError as exc:  # not UTF-8, not JSON
        raise ValueError(f"{path.name} is not valid JSON ({str(exc).splitlines()[0][:120]})") from exc
    summary = report.get("summary") if isinstance(report, dict) else None
    rows = summary.get("rows") if isinstance(summary, dict) else None
    valid = (isinstance(rows, dict) and isinstance(report.get("jobs"), list)
             and isinstance(summary.get("comparisons", []), list)
             and all(isinstance(job, dict) and "row" in job for job in report["jobs"])
             and all(isinstance(row, dict) and isinstance(row.get("stats"), dict)
                     and all(isinstance(s, dict) and "mean" in s for s in row["stats"].values())
                     for row in rows.values()))
    if not valid:
        raise ValueError(f"{path.name} is not a results report (it needs jobs and summary.rows with stats)")
    return report


def score_pseudo_mask(cam: np.ndarray, gt: np.ndarray, threshold: float) -> dict[str, float]:
    """:meth:`Engine.mask_scores` without an engine: the pseudo mask ``cam >= threshold`` against
    ``gt`` (1 object, 0 background, 255 ignored)."""
    return _scores(np.asarray(cam) >= threshold, gt)


def _scores(foreground: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """crm_core.metrics.mask_iou of a boolean (H, W) foreground against ``gt``."""
    return mask_iou(torch.from_numpy(foreground), torch.from_numpy(np.asarray(gt)))


def refine_with_superpixels(cam: np.ndarray, labels: np.ndarray, class_name: str, low: float, high: float,
                            mask: np.ndarray | None = None) -> SuperpixelRefinement:
    """:meth:`Engine.superpixel_refinement` given the CAM (float (H, W) in [0, 1]) and the SLIC
    labels (int (H, W)): the superpixel average of the CAM and the pseudo trimaps of both."""
    cam_t = torch.from_numpy(np.asarray(cam, dtype=np.float32))  # (H, W)
    segments = torch.from_numpy(np.asarray(labels, dtype=np.int64))  # (H, W)
    pooled = normalize_cams(superpixel_mean(cam_t, segments))  # the alignment loss compares max-normalised maps
    raw = pseudo_trimap(cam_t[None], low, high)[0].numpy()  # (H, W)
    refined = pseudo_trimap(cam_t[None], low, high, segments=segments[None])[0].numpy()
    scores = (None, None) if mask is None else tuple(_scores(t == FOREGROUND, mask) for t in (raw, refined))
    return SuperpixelRefinement(labels=np.asarray(labels), cam=cam_t.numpy(), class_name=class_name,
                                pooled=pooled.numpy(), raw_trimap=raw, refined_trimap=refined,
                                raw_scores=scores[0], refined_scores=scores[1])


@dataclass
class _Checked:
    """What the engine knows of one checkpoint file version (see Engine._check)."""
    ok: bool
    text: str  # its description, or why it is refused
    summary: CheckpointSummary | None
    verified: bool  # its model was built and its weights loaded (or it is refused)


class Engine:
    """Checkpoints in ``checkpoint_dir``, runs in ``runs_dir``; see the module docstring."""

    def __init__(self, checkpoint_dir: str | Path = "checkpoints", runs_dir: str | Path = "runs",
                 device: str = "cpu", cache_size: int = 6, eval_limit: int = 64,
                 results_path: str | Path = Path("docs/results.json")) -> None:
        self.checkpoint_dir = Path(checkpoint_dir).resolve()
        self.runs_dir = Path(runs_dir).resolve()
        self.results_path = REPO_ROOT / results_path  # an absolute results_path stays as it is
        self.device = device
        self.eval_limit = eval_limit
        self._cache_size = cache_size
        self._models: OrderedDict[tuple[str, int], CamModel] = OrderedDict()
        self._models_lock = threading.Lock()
        # One entry per checkpoint file version (path, mtime, size): what it is, or why it cannot
        # be loaded. Menus list only the loadable ones; the refused ones are reported.
        self._checked: dict[tuple[str, int, int], _Checked] = {}
        self._checked_lock = threading.Lock()
        self._hooks_lock = threading.Lock()  # hook-based CAMs register hooks on shared modules
        self._perceptual: torch.nn.Module | None = None
        self._perceptual_lock = threading.Lock()
        self._dependence: dict[tuple[str, int, int], dict[str, float]] = {}  # (name, step, images) -> CAM dependence
        # (name, step, val images, delta) -> CAM threshold chosen on val
        self._val_thresholds: dict[tuple[str, int, int, float | None], float] = {}
        self._dependence_lock = threading.Lock()  # guards both caches above
        self._train_lock = threading.Lock()
        self._job: dict[str, Any] = {}  # the running fine-tune: name, stop event, last progress row
        # Our methods are crm_core.cams.CAM_METHODS, each with its label: a registered method is on the menu.
        self._method_labels = {name: entry.label for name, entry in CAM_METHODS.items()}
        if package_cam_available():
            self._method_labels.update({f"pgc:{m}": f"{m} (grad-cam package)" for m in PACKAGE_METHODS})

    # -- checkpoints ---------------------------------------------------------------------
    def checkpoint_names(self, verify: bool = True) -> list[str]:
        """Names of the checkpoints that load; see :meth:`refused_checkpoints` for the others.

        ``verify=False`` reads each file without building its model (:meth:`_check`): the menus'
        first fill at start-up, which the page's load event then verifies.
        """
        return [name for name, entry in self._check_all(verify).items() if entry.ok]

    def refused_checkpoints(self) -> dict[str, str]:
        """name -> why it cannot be loaded (truncated, not ours, a pickle that wants to run code...)."""
        return {name: entry.text for name, entry in self._check_all().items() if not entry.ok}

    def _check_all(self, verify: bool = True) -> dict[str, _Checked]:
        return {p.stem: self._check(p, verify) for p in list_checkpoints(self.checkpoint_dir) if NAME_RE.match(p.stem)}

    def warm_up(self) -> None:
        """Verify every checkpoint now (the cache keeps the first few models it builds): run in a
        thread after the page is served, so the first view does not wait for it."""
        started = time.perf_counter()
        try:
            names = self.checkpoint_names()
        except Exception:  # noqa: BLE001 - a thread's last word: each view reports its own errors
            log.exception("checking the checkpoints failed")
            return
        log.info("checked %d checkpoints in %.1f s", len(names), time.perf_counter() - started)

    @staticmethod
    def _file_key(path: Path) -> tuple[str, int, int]:
        stat = path.stat()
        return str(path.resolve()), stat.st_mtime_ns, stat.st_size

    def _check(self, path: Path, verify: bool = True) -> _Checked:
        """What ``path`` is (``ok``, its description and summary), or why it cannot be used.

        Reading the file (inspect_checkpoint: a weights_only load, the config checked) refuses
        what is not a safe checkpoint of ours; ``verify`` also builds the model and loads its
        weights, which refuses weights that do not fit the architecture in the config. Each
        file version is read once and verified once; a refusal is final for that version.
        """
        try:
            key = self._file_key(path)
        except OSError as exc:
            return _Checked(False, f"cannot be read: {exc.strerror}", None, verified=True)
        with self._checked_lock:
            entry = self._checked.get(key)
            if entry is None or (verify and entry.ok and not entry.verified):
                try:
                    if verify:
                        loaded = self._models.get(key[:2]) or self._keep_if_room(key[:2], CamModel.load(path, self.device))
                        entry = _Checked(True, loaded.describe(), loaded.checkpoint.summary, verified=True)
                    else:
                        summary = inspect_checkpoint(path)
                        entry = _Checked(True, summary.describe(), summary, verified=False)
                except (CheckpointError, OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
                    log.warning("refusing checkpoint %s: %s", path, exc)
                    entry = self._refusal(exc, path)
                self._checked[key] = entry
            return entry

    def _refusal(self, exc: BaseException, path: Path) -> _Checked:
        return _Checked(False, self._public_message(exc, path).splitlines()[0][:300], None, verified=True)

    def _summary(self, name: str) -> CheckpointSummary:
        """What checkpoint ``name`` is, from its file (no model built)."""
        entry = self._check(self.checkpoint_path(name), verify=False)
        if entry.summary is None:
            raise CheckpointError(f"{name}.pt cannot be loaded: {entry.text}")
        return entry.summary

    def checkpoint_path(self, name: str) -> Path:
        """Validated path of checkpoint ``name``; refuses anything but a plain existing name."""
        path = self._path_in(self.checkpoint_dir, name, ".pt", "checkpoint")
        if not path.is_file():
            raise InvalidName(f"no checkpoint named {name!r} in {self.checkpoint_dir.name}/")
        return path

    @staticmethod
    def _path_in(root: Path, name: Any, suffix: str, what: str) -> Path:
        if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
            raise InvalidName(f"invalid {what} name {str(name)[:80]!r}: use letters, digits, '_', '-', '.'")
        path = (root / f"{name}{suffix}").resolve()
        if path.parent != root:
            raise InvalidName(f"invalid {what} name {name!r}")
        return path

    def model(self, name: str) -> CamModel:
        """The loaded checkpoint, from the LRU cache keyed by (path, mtime)."""
        path = self.checkpoint_path(name)
        key = (str(path), path.stat().st_mtime_ns)
        with self._models_lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            log.info("loading checkpoint %s", path)
            try:
                model = CamModel.load(path, self.device)
            except CheckpointError as exc:
                refused = exc
            else:
                self._cache_put(key, model, evict=True)
                return model
        # Recorded after _models_lock is released: _check takes _checked_lock, then _models_lock.
        with self._checked_lock:  # the menus drop it from now on, and say why
            self._checked[self._file_key(path)] = self._refusal(refused, path)
        raise CheckpointError(self._public_message(refused, path)) from refused

    def _cache_put(self, key: tuple[str, int], model: CamModel, evict: bool) -> None:
        """Put ``model`` in the LRU cache (caller holds ``_models_lock``), replacing older versions
        of its file; ``evict=False`` adds it only when no model in use would have to leave."""
        for old in [k for k in self._models if k[0] == key[0] and k != key]:
            del self._models[old]  # an older version of the same file
        if evict or len(self._models) < self._cache_size:
            self._models[key] = model
        while len(self._models) > self._cache_size:
            self._models.popitem(last=False)

    def _keep_if_room(self, key: tuple[str, int], model: CamModel) -> CamModel:
        """A model loaded to check its file joins the cache if there is room, so the first view of
        it (at start-up: the default pair) does not load it a second time."""
        with self._models_lock:
            if key not in self._models:
                self._cache_put(key, model, evict=False)
        return model

    def _public_message(self, exc: BaseException, path: Path) -> str:
        """The error with this server's folders left out: users see ``name.pt``, not the path."""
        return safe_message(exc, keep_name=path.name)

    def describe(self, name: str) -> str:
        """CamModel.describe(), remembered per file version: menus list every checkpoint on each
        refresh, and describing must not push the models in use out of the LRU cache."""
        entry = self._check(self.checkpoint_path(name))
        if not entry.ok:
            raise CheckpointError(f"{name}.pt cannot be loaded: {entry.text}")
        return entry.text

    def class_names(self, name: str) -> list[str]:
        return list(self.model(name).class_names)

    def has_drs(self, name: str) -> bool:
        return self._summary(name).model_config.drs

    def has_reconstructor(self, name: str) -> bool:
        return self._summary(name).has_reconstructor

    def variant(self, name: str) -> str:
        return self._summary(name).model_config.variant

    def default_delta(self, name: str) -> float | None:
        """The DRS delta a model was trained with (None: no DRS, or learnable)."""
        cfg = self._summary(name).model_config
        return None if not cfg.drs or cfg.drs_learnable else float(cfg.drs_delta)

    # -- registries ----------------------------------------------------------------------
    def model_variants(self) -> list[str]:
        from crm_core.models import MODEL_VARIANTS

        return sorted(MODEL_VARIANTS)

    def datasets(self) -> list[str]:
        from crm_core.data import DATASETS

        return sorted(DATASETS, key=lambda d: d != "synthetic")  # the offline default first

    def cam_methods(self) -> dict[str, str]:
        """value -> label of every CAM method on offer (grad-cam package ones only if installed)."""
        return dict(self._method_labels)

    def cam_methods_note(self) -> str:
        """One line under the CAM-method menu: why the grad-cam package's methods are missing and
        how to add them ("" when they are on offer)."""
        if any(value.startswith("pgc:") for value in self._method_labels):
            return ""
        return (f"The grad-cam package's {', '.join(PACKAGE_METHODS[:3])}, ... are not offered: the package is not "
                f"installed (it is a test dependency). Add them with `pip install {PACKAGE_REQUIREMENT}` and restart.")

    # -- data ----------------------------------------------------------------------------
    def dataset_length(self, name: str, split: str = "test") -> int:
        return len(dataset_for(self.model(name), split))

    def sample(self, name: str, index: int, split: str = "test") -> Sample:
        return self.samples(name, [index], split)[0]

    def samples(self, name: str, indices: Sequence[int], split: str = "test") -> list[Sample]:
        model = self.model(name)
        dataset = dataset_for(model, split)
        out = []
        for index in indices:
            index = int(index)
            if not 0 <= index < len(dataset):
                raise ValueError(f"sample index must be in 0..{len(dataset) - 1}, got {index}")
            item = dataset[index]
            label = int(item["label"])
            out.append(Sample(image=to_uint8_image(item["image"]), mask=item["mask"].numpy(), label=label,
                              class_name=model.class_names[label], index=index))
        return out

    def load_upload(self, name: str, image: str | Path | np.ndarray) -> Sample:
        """A user's image (file or uint8 array) as model ``name`` sees it: square, at its input size.

        crm_core's load_image is the gate for user images (alpha, 16 bit, EXIF rotation, corrupt
        files, size limit); its errors name the file, which the UI shows as the user's upload name."""
        size = self.model(name).image_size
        return Sample(image=to_uint8_image(load_image(str(image) if isinstance(image, Path) else image, size)))

    # -- inference -----------------------------------------------------------------------
    def cam(self, name: str, image: np.ndarray, class_index: int | None = None, drs_delta: float | None = None,
            method: str = DEFAULT_CAM_METHOD, size: tuple[int, int] | None = None) -> CamOutput:
        """CAM of one image (uint8 HxWx3) for ``class_index`` (None: predicted), at ``size`` (default: image size).

        ``method``: a name in crm_core.cams.CAM_METHODS (through CamModel.explain) or "pgc:<class>" of
        the grad-cam package."""
        model = self.model(name)
        if method not in self._method_labels:
            raise ValueError(f"unknown CAM method {method!r}; choose from {sorted(self._method_labels)}")
        if class_index is not None and not 0 <= int(class_index) < len(model.class_names):
            raise ValueError(f"class index must be in 0..{len(model.class_names) - 1}, got {class_index}")
        size = tuple(size or image.shape[:2])
        x = model.preprocess(image)[None]  # (1, 3, S, S)
        if method in CAM_METHODS:
            # Hook-based methods register hooks on the shared model: one at a time.
            with self._hooks_lock if CAM_METHODS[method].uses_hooks else contextlib.nullcontext():
                out = model.explain(x, None if class_index is None else int(class_index), drs_delta, size, method)
            probs, c, cam = out.probs[0], int(out.classes[0]), out.cams[0]  # cam (H, W)
        else:
            probs = model.predict(x, drs_delta).probs[0]
            c = int(probs.argmax()) if class_index is None else int(class_index)
            cam = upsample_normalised(self._package_cam(model, x, c, drs_delta, method.split(":", 1)[1]), size)[0]
        return CamOutput(cam=cam.cpu().numpy().astype(np.float32),
                         probs={n: float(p) for n, p in zip(model.class_names, probs.tolist())},
                         class_index=c, class_name=model.class_names[c], predicted=int(probs.argmax()))

    def _package_cam(self, model: CamModel, x: torch.Tensor, c: int, drs_delta: float | None, method: str) -> torch.Tensor:
        try:
            import pytorch_grad_cam
            from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        except ImportError as exc:  # installed but broken (e.g. its OpenCV dependency)
            raise ValueError(f"the grad-cam package cannot be imported ({exc}); use our Grad-CAM++") from exc

        cls = getattr(pytorch_grad_cam, method)
        with self._hooks_lock, delta_override(drs_delta), torch.enable_grad():
            with cls(model=LogitsOnly(model.classifier), target_layers=[model.classifier.feature_layer]) as cam:
                maps = cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(c)])  # (1, S, S) numpy
        return torch.from_numpy(np.nan_to_num(np.asarray(maps, dtype=np.float32))).clamp_min(0)

    def cams_for_samples(self, name: str, samples: Sequence[Sample], classes: str = "label",
                         drs_delta: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Closed-form Grad-CAM++ of many dataset samples at once.

        Returns (cams float32 (N, H, W) at the samples' size, predicted class indices (N,)).
        ``classes``: "label" explains the true class (as evaluation does), "predicted" the argmax.
        """
        model = self.model(name)
        if not samples:
            return np.zeros((0, 1, 1), np.float32), np.zeros(0, np.int64)
        images = torch.stack([model.preprocess(s.image) for s in samples])  # (N, 3, S, S)
        chosen = torch.tensor([s.label for s in samples]) if classes == "label" else None  # None: predicted
        out = model.explain(images, chosen, drs_delta, tuple(samples[0].image.shape[:2]))
        return out.cams.cpu().numpy().astype(np.float32), out.logits.argmax(1).cpu().numpy()

    def reconstruct(self, name: str, image: np.ndarray, drs_delta: float | None = None) -> Reconstruction:
        model = self.model(name)
        if not model.has_reconstructor:
            raise ValueError(f"{name} was trained without CRM: it has no ReconstructNet")
        x = model.preprocess(image)[None]  # (1, 3, S, S)
        # Scored where it was trained: at the size ReconstructNet decodes to (r = S unless trained
        # with a smaller recon_size), against the image downsampled the same way as in training.
        decoder_in = model.decoder_maps(x, drs_delta)  # (1, C, h, w): one classifier pass for both views
        recon = to_tanh_range(model.decode(decoder_in))  # (1, 3, r, r) in [-1, 1]
        target = reconstruction_target(x, recon)
        error = (recon - target).abs().mean(dim=1, keepdim=True) * 0.5  # (1, 1, r, r), in [0, 1] image units
        with torch.no_grad():
            perceptual = float(self.perceptual_loss()(recon, target))
        size = tuple(x.shape[-2:])
        shown = from_tanh_range(resize_reconstruction(recon, size))  # (1, 3, S, S)
        error_shown = F.interpolate(error, size=size, mode="nearest")[0, 0]  # (S, S)
        return Reconstruction(image=to_uint8_image(x[0]), recon=to_uint8_image(shown[0]), error=error_shown.numpy(),
                              l1=float(error.mean()), perceptual=perceptual,
                              decoder_input=decoder_in[0].float().numpy(),
                              decoder_input_kind=model.decoder_input_kind)

    def cam_dependence(self, name: str, limit: int = 32) -> dict[str, float]:
        """CAM dependence of ``name``'s ReconstructNet on the first ``limit`` test images (cached per
        checkpoint version): L1 with real against batch-shuffled CAMs."""
        model = self.model(name)
        key = (name, model.checkpoint.step, limit)
        with self._dependence_lock:
            if key not in self._dependence:
                samples = self.samples(name, range(min(limit, self.dataset_length(name))))
                images = torch.stack([model.preprocess(s.image) for s in samples])  # (N, 3, S, S)
                self._dependence[key] = model.cam_dependence(images)
            return self._dependence[key]

    def perceptual_loss(self) -> torch.nn.Module:
        """VGG19 perceptual loss ("auto" weights: ImageNet if cached, else seeded random), built once."""
        with self._perceptual_lock:
            if self._perceptual is None:
                from crm_core.losses import VGGPerceptualLoss

                self._perceptual = VGGPerceptualLoss("auto").eval()
                log.info("perceptual network: VGG19 %s", self._perceptual.weights_source)
            return self._perceptual

    def perceptual_source(self) -> str:
        return str(getattr(self.perceptual_loss(), "weights_source", "?"))

    def superpixels(self, image: np.ndarray, n_segments: int, compactness: float) -> np.ndarray:
        """SLIC labels int32 (H, W) of a uint8 image (cached on disk by crm_core)."""
        return slic_labels(image, n_segments=int(n_segments), compactness=float(compactness))

    def superpixel_refinement(self, name: str, image: np.ndarray, class_index: int | None, n_segments: int,
                              compactness: float, low: float, high: float,
                              mask: np.ndarray | None = None) -> SuperpixelRefinement:
        """SLIC superpixels of ``image``, the CAM of ``class_index`` (None: predicted) averaged over
        them, and the pseudo trimaps of both (crm_core.postprocess), scored against ``mask`` when given."""
        labels = self.superpixels(image, n_segments, compactness)
        out = self.cam(name, image, class_index=class_index)
        return refine_with_superpixels(out.cam, labels, out.class_name, low, high, mask)

    def mask_scores(self, cam: np.ndarray, gt: np.ndarray, threshold: float) -> dict[str, float]:
        """The pseudo mask ``cam >= threshold`` against ``gt``: crm_core.metrics.mask_iou's ``fg_iou``,
        ``miou``, ``bg_fpr``, ..."""
        return score_pseudo_mask(cam, gt, threshold)

    def evaluate(self, name: str, limit: int = 32, drs_delta: float | None = None, split: str = "test",
                 val_threshold: bool = False) -> dict[str, Any]:
        """crm_core.evaluate.evaluate_model on the first ``limit`` images of ``split``; with
        ``val_threshold`` also at the CAM threshold chosen on as many val images
        (``cam_miou_val_threshold``, ``coverage_val_threshold``)."""
        model = self.model(name)
        threshold = self.val_threshold(name, limit, drs_delta) if val_threshold else None
        return evaluate_model(model, dataset_for(model, split), limit=limit, drs_delta=drs_delta,
                              val_threshold=threshold, progress=False)

    def val_threshold(self, name: str, limit: int | None = None, drs_delta: float | None = None) -> float:
        """The CAM threshold with the best mIoU on the first ``limit`` (default ``eval_limit``) val
        images of ``name``'s dataset, at DRS ``drs_delta`` (None: as trained); cached per checkpoint version."""
        model = self.model(name)
        limit = self.eval_limit if limit is None else int(limit)
        key = (name, model.checkpoint.step, limit, drs_delta)
        with self._dependence_lock:
            cached = self._val_thresholds.get(key)
        if cached is None and drs_delta is None:
            cached = self._stored_val_threshold(name, limit)
        if cached is None:
            cached = select_threshold(model, dataset_for(model, "val"), limit=limit, drs_delta=drs_delta)
        with self._dependence_lock:
            self._val_thresholds[key] = cached
        return cached

    def _stored_val_threshold(self, name: str, limit: int) -> float | None:
        """The threshold :meth:`write_eval` chose for this very checkpoint file on as many val
        images (its run's eval.json), so a fresh server does not evaluate val again; None when
        there is none, or it belongs to another version of the file or another val size."""
        try:
            stored = RunDir(self.runs_dir / name).read_eval()
            mtime = self.checkpoint_path(name).stat().st_mtime_ns
            if (stored.get("threshold_split") == "val" and stored.get("val_images") == limit
                    and stored.get("checkpoint_mtime_ns") == mtime):
                return float(stored["cam_miou_val_threshold"]["threshold"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # no usable record: choose it again
        return None

    # -- results -------------------------------------------------------------------------
    def results_report(self) -> dict[str, Any] | None:
        """docs/results.json as written by ``python -m crm_core.results`` (None: not made yet).

        Read on every call (when the Results tab is selected), so a new report shows without a restart.
        """
        return read_results(self.results_path)

    def results_row(self, name: str, limit: int = 100) -> dict[str, Any]:
        """Checkpoint ``name`` scored as the results table scores its rows: the CAM threshold is
        chosen on the first ``limit`` val images, the metrics reported on the first ``limit`` test images."""
        model = self.model(name)
        results = evaluate_protocol(model, limit=limit, val_limit=limit)
        at, coverage = results["cam_miou_val_threshold"], results["coverage_val_threshold"]
        return {
            "name": name, "appearance": model.checkpoint.train_config.get("appearance", "random"),
            "model": model.checkpoint.model_config.variant, "threshold": finite(at["threshold"]),
            "accuracy": finite(results["accuracy"]), "miou": finite(at["miou"]), "bg_fpr": finite(at["bg_fpr"]),
            "head": finite(coverage.get("head")), "body": finite(coverage.get("body")),
            "cam_dependence": finite(results.get("cam_dependence")),
        }

    # -- runs ----------------------------------------------------------------------------
    def run_names(self) -> list[str]:
        return [r.name for r in list_runs(self.runs_dir) if NAME_RE.match(r.name)]

    def run(self, name: str) -> RunInfo:
        path = self._path_in(self.runs_dir, name, "", "run")
        if not path.is_dir():
            raise InvalidName(f"no run named {name!r} in {self.runs_dir.name}/")
        run = RunDir(path)
        return RunInfo(name=name, config=run.read_config(), metrics=run.read_metrics(), eval=run.read_eval())

    # -- training ------------------------------------------------------------------------
    def train_config(self, request: FineTuneRequest) -> TrainConfig:
        """The TrainConfig a fine-tune request stands for (validated, not yet resolved)."""
        from crm_core.train import TrainConfig

        self._path_in(self.checkpoint_dir, request.name, ".pt", "checkpoint")
        if (self.checkpoint_dir / f"{request.name}.pt").exists() or (self.runs_dir / request.name).exists():
            raise ValueError(f"{request.name!r} already exists (checkpoint or run); choose a new name")
        values = dict(DEMO_RECIPE)
        init_from = None
        if request.base:
            base = self.model(request.base).checkpoint
            if base.model_config.variant != request.model:
                raise ValueError(f"base {request.base!r} is a {base.model_config.variant} model: fine-tune it as "
                                 f"{base.model_config.variant}, or start from scratch for {request.model}")
            init_from = str(base.path)
            train = base.train_config
            # init_from needs the base's architecture, input size and classes.
            values.update(arch=base.model_config.arch, image_size=base.image_size,
                          output_stride=base.model_config.output_stride, num_classes=len(base.class_names),
                          seed=int(train.get("seed", 0)))
            if train.get("train_size"):
                values["train_size"] = int(train["train_size"])
        values.update(
            name=request.name, model=request.model, dataset=request.dataset, steps=int(request.steps),
            batch_size=int(request.batch_size), cls_lr=float(request.cls_lr), rec_lr=float(request.rec_lr),
            l1_weight=float(request.l1_weight), vgg_weight=float(request.vgg_weight),
            align_weight=float(request.align_weight), delta=str(request.delta), init_from=init_from,
            checkpoint_dir=str(self.checkpoint_dir), runs_dir=str(self.runs_dir), device=self.device,
        )
        values.update(request.extra)
        cfg = TrainConfig(**values)
        cfg.resolve()
        return cfg

    def training_status(self) -> str | None:
        """A line about the running fine-tune, or None when idle."""
        job = dict(self._job)
        if not job:
            return None
        row = job.get("row") or {}
        step = f"step {row.get('step', 0)}/{row.get('max_steps', '?')}"
        return f"fine-tune {job['name']!r} is running ({step})"

    def train(self, request: FineTuneRequest, on_progress: Callable[[dict[str, Any]], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> Path:
        """Train (one job at a time), evaluate on a few test images, return the checkpoint path."""
        from crm_core.train import main as train_main

        if not self._train_lock.acquire(blocking=False):
            raise TrainingBusy(f"{self.training_status() or 'another fine-tune is running'}; "
                               "one training job at a time — try again when it finishes")
        stop = threading.Event()
        self._job = {"name": request.name, "stop": stop, "row": None}
        try:
            cfg = self.train_config(request)

            def progress(row: dict[str, Any]) -> None:
                self._job["row"] = row
                if on_progress is not None:
                    on_progress(row)

            def stopping() -> bool:
                return stop.is_set() or (should_stop is not None and bool(should_stop()))

            log.info("fine-tune %s: %s", cfg.name, cfg.to_dict())
            path = train_main(cfg, on_progress=progress, should_stop=stopping)
            self.write_eval(path)
            return path
        finally:
            self._job = {}
            self._train_lock.release()

    def request_stop(self, name: str) -> bool:
        """Ask the running fine-tune ``name`` to save and return; False if it is not running."""
        job = self._job
        if job and job.get("name") == name:
            job["stop"].set()
            return True
        return False

    def write_eval(self, checkpoint: Path) -> dict[str, Any]:
        """Evaluate a checkpoint on ``eval_limit`` test images and store eval.json in its run.

        The CAM threshold is chosen on as many val images (``cam_miou_val_threshold``), never
        on the test images it is reported on.
        """
        return evaluate_checkpoint(checkpoint, self.device, limit=self.eval_limit, val_limit=self.eval_limit,
                                   runs_dir=self.runs_dir)

