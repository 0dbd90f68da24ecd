"""The dashboard's inference: dataset images, CAMs, reconstructions, superpixel refinement, mask scores.

:class:`Inference` (the engine's ``inference``: a :class:`demo.protocol.InferenceService`)
answers the views' per-image questions with the models of a
:class:`demo.checkpoint_store.CheckpointStore`: samples of a model's dataset and uploads as the
model sees them, CAMs by our methods (``crm_core.cams.CAM_METHODS``) or the optional grad-cam
package's, ReconstructNet's decoding and its distances, SLIC superpixels and the pseudo trimaps.
:func:`refine_with_superpixels`, :func:`score_pseudo_mask` and :func:`score_class_mask` are the same work
without a model.

State: the CAM methods on offer (value -> label, fixed at construction: the grad-cam package's
only when it is installed) and the perceptual network, built on first use.

Locks (levels in ``demo.locks``): ``_hooks_lock`` (``HOOKS``) lets one hook-based CAM at a time
register hooks on the shared models; ``_perceptual_lock`` (``PERCEPTUAL``) builds the VGG19
once. Both are taken after the model is fetched from the store and nothing is acquired inside them.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from crm_core.api import CamModel, dataset_for, load_image, upsample_normalised
from crm_core.api import superpixels as slic_labels
from crm_core.cams import CAM_METHODS, DEFAULT_CAM_METHOD, normalize_cams
from crm_core.data import superpixel_mean
from crm_core.data.transforms import to_uint8_image
from crm_core.losses import reconstruction_target
from crm_core.metrics import Faithfulness, class_confusion, confusion_ious, mask_iou, pixel_ap
from crm_core.models import LogitsOnly, delta_override, from_tanh_range, resize_reconstruction, to_tanh_range
from crm_core.postprocess import FOREGROUND, pseudo_class_mask, pseudo_trimap
from demo.checkpoint_store import CheckpointStore
from demo.locks import HOOKS, PERCEPTUAL, OrderedLock
from demo.protocol import CamOutput, ClassCams, Reconstruction, Sample, SuperpixelRefinement

__all__ = ["PACKAGE_METHODS", "PACKAGE_REQUIREMENT", "Inference", "cam_method_labels", "package_cam_available", "refine_with_superpixels",
           "score_class_mask", "score_pseudo_mask"]

log = logging.getLogger(__name__)

#: Methods of the grad-cam package offered when it is importable (value prefix "pgc:").
PACKAGE_REQUIREMENT = "grad-cam==1.5.7"  # as pinned in requirements-test.txt
PACKAGE_METHODS = ("GradCAM", "GradCAMPlusPlus", "XGradCAM", "HiResCAM", "LayerCAM", "EigenCAM", "EigenGradCAM")


def package_cam_available() -> bool:
    """Whether the optional grad-cam package (pytorch_grad_cam) is installed.

    Looked up, not imported: importing it pulls in OpenCV and costs seconds of the dashboard's
    cold start; it is imported the first time one of its methods is chosen.
    """
    return importlib.util.find_spec("pytorch_grad_cam") is not None


def cam_method_labels() -> dict[str, str]:
    """value -> label of every CAM method on offer: ours (crm_core.cams.CAM_METHODS: a registered
    method is on the menu) and, when it is installed, the grad-cam package's ("pgc:<class>")."""
    labels = {name: entry.label for name, entry in CAM_METHODS.items()}
    if package_cam_available():
        labels.update({f"pgc:{m}": f"{m} (grad-cam package)" for m in PACKAGE_METHODS})
    return labels


def score_class_mask(cams: ClassCams, class_mask: np.ndarray, threshold: float, num_classes: int) -> dict[str, Any]:
    """:meth:`Inference.class_mask_scores` without an engine: the class mask of ``cams`` with
    ``threshold`` as the background score (crm_core.postprocess.pseudo_class_mask with no uncertain
    band), scored as the multi-class evaluation scores a split (crm_core.metrics)."""
    maps = torch.zeros((1, num_classes, *np.asarray(cams.cams).shape[1:]), dtype=torch.float32)
    labels = torch.zeros((1, num_classes), dtype=torch.bool)
    for k, c in enumerate(cams.classes):
        maps[0, c], labels[0, c] = torch.from_numpy(np.asarray(cams.cams[k], dtype=np.float32)), True
    predicted = pseudo_class_mask(maps, labels, low=threshold, high=threshold)[0]
    return confusion_ious(class_confusion(predicted.long(), torch.as_tensor(np.asarray(class_mask)).long(), num_classes))


def score_pseudo_mask(cam: np.ndarray, gt: np.ndarray, threshold: float) -> dict[str, float]:
    """:meth:`Inference.mask_scores` without an engine: the pseudo mask ``cam >= threshold`` against
    ``gt`` (1 object, 0 background, 255 ignored)."""
    return _scores(np.asarray(cam) >= threshold, gt)


def _scores(foreground: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """crm_core.metrics.mask_iou of a boolean (H, W) foreground against ``gt``."""
    return mask_iou(torch.from_numpy(foreground), torch.from_numpy(np.asarray(gt)))


def refine_with_superpixels(cam: np.ndarray, labels: np.ndarray, class_name: str, low: float, high: float,
                            mask: np.ndarray | None = None) -> SuperpixelRefinement:
    """:meth:`Inference.superpixel_refinement` given the CAM (float (H, W) in [0, 1]) and the SLIC
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


class Inference:
    """Per-image work on the models of ``store``; see the module docstring."""

    def __init__(self, store: CheckpointStore) -> None:
        self._store = store
        self._hooks_lock = OrderedLock("inference: CAM hooks", HOOKS)  # hook-based CAMs hook shared modules
        self._perceptual: torch.nn.Module | None = None
        self._perceptual_lock = OrderedLock("inference: perceptual network", PERCEPTUAL)
        self._method_labels = cam_method_labels()

    # -- CAM methods ---------------------------------------------------------------------
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
        return len(dataset_for(self._store.model(name), split))

    def sample(self, name: str, index: int, split: str = "test") -> Sample:
        return self.samples(name, [index], split)[0]

    def samples(self, name: str, indices: Sequence[int], split: str = "test") -> list[Sample]:
        model = self._store.model(name)
        dataset = dataset_for(model, split)
        out = []
        for index in indices:
            index = int(index)
            if not 0 <= index < len(dataset):
                raise ValueError(f"sample index must be in 0..{len(dataset) - 1}, got {index}")
            item = dataset[index]
            label = int(item["label"])
            labels = tuple(int(c) for c in torch.nonzero(item["labels"]).flatten()) if "labels" in item else (label,)
            class_mask = item["class_mask"].numpy() if "class_mask" in item else None
            out.append(Sample(image=to_uint8_image(item["image"]), mask=item["mask"].numpy(), label=label,
                              class_name=model.class_names[label], index=index, labels=labels, class_mask=class_mask))
        return out

    def load_upload(self, name: str, image: str | Path | np.ndarray) -> Sample:
        """A user's image (file or uint8 array) as model ``name`` sees it: square, at its input size.

        crm_core's load_image is the gate for user images (alpha, 16 bit, EXIF rotation, corrupt
        files, size limit); its errors name the file, which the UI shows as the user's upload name."""
        size = self._store.model(name).image_size
        return Sample(image=to_uint8_image(load_image(str(image) if isinstance(image, Path) else image, size)))

    # -- CAMs ----------------------------------------------------------------------------
    def cam(self, name: str, image: np.ndarray, class_index: int | None = None, drs_delta: float | None = None,
            method: str = DEFAULT_CAM_METHOD, size: tuple[int, int] | None = None) -> CamOutput:
        """CAM of one image (uint8 HxWx3) for ``class_index`` (None: predicted), at ``size`` (default: image size).

        ``method``: a name in crm_core.cams.CAM_METHODS (through CamModel.explain) or "pgc:<class>" of
        the grad-cam package."""
        model = self._store.model(name)
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
            probs = model.probabilities(x, drs_delta)[0]
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
        # The package hooks its target layer and records every pass through it, any thread's: on the
        # shared model another request's forward pass would slip into its activations. So it gets a
        # private copy (a few ms and the model's size, freed on return).
        classifier = copy.deepcopy(model.classifier)
        with self._hooks_lock, delta_override(drs_delta), torch.enable_grad():
            with cls(model=LogitsOnly(classifier), target_layers=[classifier.feature_layer]) as cam:
                maps = cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(c)])  # (1, S, S) numpy
        return torch.from_numpy(np.nan_to_num(np.asarray(maps, dtype=np.float32))).clamp_min(0)

    def class_cams(self, name: str, image: np.ndarray, classes: Sequence[int] | None = None, top_k: int = 3,
                   drs_delta: float | None = None) -> ClassCams:
        return self._class_cams(self._store.model(name), [image], [classes], drs_delta, top_k)[0]

    def class_cams_for_samples(self, name: str, samples: Sequence[Sample],
                               drs_delta: float | None = None) -> list[ClassCams]:
        if not samples:
            return []
        own = [s.labels if s.labels is not None else (s.label,) for s in samples]
        return self._class_cams(self._store.model(name), [s.image for s in samples], own, drs_delta)

    @staticmethod
    def _class_cams(model: CamModel, images: Sequence[np.ndarray], classes: Sequence[Sequence[int] | None],
                    drs_delta: float | None, top_k: int = 3) -> list[ClassCams]:
        """The CAMs of ``classes[i]`` on ``images[i]`` (None: the ``top_k`` the model scores highest),
        all images in one forward pass, at the first image's size."""
        count = len(model.class_names)
        x = torch.stack([model.preprocess(image) for image in images])  # (N, 3, S, S)
        logits, maps, _ = model.class_maps(x, drs_delta, size=tuple(images[0].shape[:2]))
        scores = torch.sigmoid(logits) if model.multi_label else F.softmax(logits, dim=1)
        out = []
        for i, wanted in enumerate(classes):
            if wanted is None:
                chosen = scores[i].topk(min(max(int(top_k), 1), count)).indices.tolist()
            else:
                chosen = [int(c) for c in wanted]
                if any(not 0 <= c < count for c in chosen):
                    raise ValueError(f"class indices must be in 0..{count - 1}, got {chosen}")
            out.append(ClassCams(classes=chosen, names=[model.class_names[c] for c in chosen],
                                 cams=maps[i, chosen].cpu().numpy().astype(np.float32),
                                 scores=[float(scores[i, c]) for c in chosen], multi_label=model.multi_label))
        return out

    def class_mask_scores(self, cams: ClassCams, class_mask: np.ndarray, threshold: float,
                          num_classes: int) -> dict[str, Any]:
        return score_class_mask(cams, class_mask, threshold, num_classes)

    def cams_for_samples(self, name: str, samples: Sequence[Sample], classes: str = "label",
                         drs_delta: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Closed-form Grad-CAM++ of many dataset samples at once.

        Returns (cams float32 (N, H, W) at the samples' size, predicted class indices (N,)).
        ``classes``: "label" explains the true class (as evaluation does), "predicted" the argmax.
        """
        model = self._store.model(name)
        if not samples:
            return np.zeros((0, 1, 1), np.float32), np.zeros(0, np.int64)
        images = torch.stack([model.preprocess(s.image) for s in samples])  # (N, 3, S, S)
        chosen = torch.tensor([s.label for s in samples]) if classes == "label" else None  # None: predicted
        out = model.explain(images, chosen, drs_delta, tuple(samples[0].image.shape[:2]))
        return out.cams.cpu().numpy().astype(np.float32), out.logits.argmax(1).cpu().numpy()

    # -- reconstruction ------------------------------------------------------------------
    def reconstruct(self, name: str, image: np.ndarray, drs_delta: float | None = None) -> Reconstruction:
        model = self._store.model(name)
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

    def perceptual_loss(self) -> torch.nn.Module:
        """VGG19 perceptual loss ("auto" weights: ImageNet if cached, else seeded random), built once."""
        with self._perceptual_lock:
            if self._perceptual is None:
                from crm_core.losses import VGGPerceptualLoss

                self._perceptual = VGGPerceptualLoss("auto").eval()
                log.info("perceptual network: VGG19 %s", self._perceptual.weights_source)
            return self._perceptual

    def built_perceptual(self) -> torch.nn.Module | None:
        """The perceptual network if a view has built it (None: not yet), without building it."""
        with self._perceptual_lock:
            return self._perceptual

    def perceptual_source(self) -> str:
        return str(getattr(self.perceptual_loss(), "weights_source", "?"))

    # -- superpixels and pseudo masks ----------------------------------------------------
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

    def cam_metrics(self, name: str, image: np.ndarray, cam: np.ndarray, class_index: int, gt: np.ndarray | None,
                    drs_delta: float | None = None) -> dict[str, float]:
        model = self._store.model(name)
        x = model.preprocess(image)[None]  # (1, 3, S, S)
        cam_t = torch.from_numpy(np.asarray(cam, dtype=np.float32))
        at_input = F.interpolate(cam_t[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        c = torch.tensor([int(class_index)])
        with torch.no_grad():
            y = model.probabilities(x, drs_delta)[:, c[0]]
            o = model.probabilities(x * at_input[:, None].clamp(0, 1), drs_delta)[:, c[0]]  # E = map x image
        judged = Faithfulness()
        judged.add(y, o, cam_t[None])
        out = {"probability": float(y), "probability_explained": float(o), **judged.summary()}
        out.pop("increase_in_confidence")  # one image: it is the comparison of the two probabilities
        if gt is not None:
            out["pxap"] = pixel_ap(cam_t, torch.from_numpy(np.asarray(gt)))
        return out

    def mask_scores(self, cam: np.ndarray, gt: np.ndarray, threshold: float) -> dict[str, float]:
        """The pseudo mask ``cam >= threshold`` against ``gt``: crm_core.metrics.mask_iou's ``fg_iou``,
        ``miou``, ``bg_fpr``, ..."""
        return score_pseudo_mask(cam, gt, threshold)
