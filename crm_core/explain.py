"""A trained checkpoint as an explainer: :class:`CamModel` loads a checkpoint safely and gives
predictions, CAMs (any method of :data:`crm_core.cams.CAM_METHODS`; the default closed-form
Grad-CAM++ from the same forward pass as the logits), reconstructions and the checkpoint's own
dataset (:func:`dataset_for`). The evaluation CLIs build on it; :mod:`crm_core.api` re-exports
it as the public surface.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from crm_core.cams import DEFAULT_CAM_METHOD, ClassSelection, class_cams, create_cam, upsample_normalised
from crm_core.checkpoints import Checkpoint, load_checkpoint
from crm_core.crm import decoder_input
from crm_core.data.superpixels import SuperpixelCache
from crm_core.lru import BoundedDict
from crm_core.data.transforms import load_image
from crm_core.metrics import CamDependence
from crm_core.models import ClassifierOutput, delta_override, from_tanh_range, resize_reconstruction


@dataclass
class Prediction:
    probs: torch.Tensor  # (B, C) softmax probabilities
    cams: torch.Tensor  # (B, C, h, w) Grad-CAM++ of every class, max-normalised per map

    def top(self, k: int = 5) -> list[list[tuple[int, float]]]:
        """Top-k (class index, probability) per image."""
        values, indices = self.probs.topk(min(k, self.probs.shape[1]), dim=1)
        return [[(int(i), float(v)) for i, v in zip(row_i, row_v)] for row_i, row_v in zip(indices, values)]


@dataclass
class Explanation:
    """One forward pass explained: what :meth:`CamModel.explain` returns."""

    logits: torch.Tensor  # (B, C) logits of the pass that gave the maps
    classes: torch.Tensor  # (B,) long: the class each map explains
    cams: torch.Tensor  # (B, H, W) max-normalised to [0, 1]
    features: torch.Tensor  # (B, K, h, w) the classifier's GAP input in that pass

    @property
    def probs(self) -> torch.Tensor:
        """(B, C) softmax probabilities."""
        return F.softmax(self.logits, dim=1)


class CamModel:
    """A checkpoint loaded for inference (eval mode, no gradients)."""

    def __init__(self, checkpoint: Checkpoint, device: str | torch.device = "cpu") -> None:
        self.checkpoint = checkpoint
        self.device = torch.device(device)
        self.classifier = checkpoint.classifier.to(self.device).eval()
        self.reconstructor = None if checkpoint.reconstructor is None else checkpoint.reconstructor.to(self.device).eval()

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "CamModel":
        return cls(load_checkpoint(path, map_location="cpu", optimizers=False), device)  # it explains, never resumes

    # -- what it is -------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.checkpoint.name

    @property
    def class_names(self) -> list[str]:
        return self.checkpoint.class_names

    @property
    def image_size(self) -> int:
        return self.checkpoint.image_size

    @property
    def has_drs(self) -> bool:
        return self.checkpoint.model_config.drs

    @property
    def multi_label(self) -> bool:
        """Trained on several classes per image (multi-label soft-margin loss): its classes are
        scored each on its own (sigmoid), not against each other."""
        return self.checkpoint.multi_label

    @property
    def has_reconstructor(self) -> bool:
        return self.reconstructor is not None

    def describe(self) -> str:
        """One line a person can read: what this checkpoint is."""
        return self.checkpoint.describe()

    # -- inference --------------------------------------------------------------------
    def preprocess(self, image: Any) -> torch.Tensor:
        """Path / PIL image / uint8 array -> (3, H, W) float in [0, 1] at the model's size."""
        return load_image(image, self.image_size)

    def _batch(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 3:
            images = images[None]
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        return images.to(self.device, torch.float32)

    def _forward(self, images: torch.Tensor, drs_delta: float | None) -> ClassifierOutput:
        """The classifier's logits and features, with the DRS delta overridden when given."""
        with delta_override(drs_delta):
            return self.classifier(self._batch(images))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, drs_delta: float | None = None) -> Prediction:
        """Probabilities and the default CAM method's maps of every class, from one forward pass."""
        logits, features = self._forward(images, drs_delta)
        return Prediction(F.softmax(logits, dim=1), class_cams(self.classifier, features))  # cams (B, C, h, w)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, drs_delta: float | None = None) -> torch.Tensor:
        """(B, C) softmax probabilities alone: :meth:`predict` without its maps, for callers that
        judge a map by the class's probability (faithfulness, deletion and insertion)."""
        return F.softmax(self._forward(images, drs_delta).logits, dim=1)

    @torch.no_grad()
    def explain(
        self,
        images: torch.Tensor,
        classes: ClassSelection = None,
        drs_delta: float | None = None,
        size: int | tuple[int, int] | None = None,
        method: str = DEFAULT_CAM_METHOD,
    ) -> Explanation:
        """CAMs of ``classes`` (default: predicted; one class or one per image) by ``method`` (a name
        in :data:`crm_core.cams.CAM_METHODS`), upsampled to ``size`` (default: input size) and
        max-normalised, with the logits and features of the same forward pass."""
        images = self._batch(images)
        with delta_override(drs_delta):
            result = create_cam(method, self.classifier)(images, classes)
        cams = upsample_normalised(result.cams, size or tuple(images.shape[-2:]))  # (B, H, W)
        return Explanation(logits=result.logits, classes=result.classes, cams=cams, features=result.activations)

    @torch.no_grad()
    def class_maps(self, images: torch.Tensor, drs_delta: float | None = None, size: int | tuple[int, int] | None = None,
                   method: str = DEFAULT_CAM_METHOD) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits (B, C), CAMs of every class (B, C, H, W), the classifier's features (B, K, h, w))
        from one forward pass: each map upsampled to ``size`` (default: input size) and
        max-normalised, what a multi-label image's classes compete with (``method`` must read the
        forward pass's features, as the closed-form Grad-CAM++ does)."""
        images = self._batch(images)
        logits, features = self._forward(images, drs_delta)
        raw = create_cam(method, self.classifier).from_features(features)  # (B, C, h, w)
        batch, classes = raw.shape[:2]
        maps = upsample_normalised(raw.flatten(0, 1), size or tuple(images.shape[-2:]))
        return logits, maps.view(batch, classes, *maps.shape[-2:]), features

    def cam(self, images: torch.Tensor, classes: ClassSelection = None, drs_delta: float | None = None,
            **options: Any) -> torch.Tensor:
        """:meth:`explain`'s maps only: (B, H, W) in [0, 1] (``options``: its ``size`` and ``method``)."""
        return self.explain(images, classes, drs_delta, **options).cams

    @property
    def decoder_input_kind(self) -> str:
        """What this checkpoint's ReconstructNet decodes (``crm_core.crm.DECODER_INPUTS``)."""
        return str(self.checkpoint.train_config.get("decoder_input", "gradcampp"))

    def decoder_input(self, features: torch.Tensor) -> torch.Tensor:
        """The (B, C, h, w) maps this checkpoint's ReconstructNet decodes, from the classifier's features."""
        return decoder_input(self.classifier, features, self.decoder_input_kind)

    @torch.no_grad()
    def decoder_maps(self, images: torch.Tensor, drs_delta: float | None = None) -> torch.Tensor:
        """The (B, C, h, w) maps ReconstructNet decodes for ``images`` (what it "sees" of the CAMs)."""
        return self.decoder_input(self._forward(images, drs_delta).features)

    @torch.no_grad()
    def cam_dependence(self, images: torch.Tensor, drs_delta: float | None = None) -> dict[str, float]:
        """Does ReconstructNet use the CAMs? Reconstruction L1 of ``images`` (B >= 2) with their own
        CAMs against CAMs shuffled across the batch: ``recon_l1``, ``recon_l1_shuffled``,
        ``cam_dependence`` (~0: the decoder ignores the CAM) -- :class:`crm_core.metrics.CamDependence`."""
        if self.reconstructor is None:
            raise ValueError(f"{self.name} was trained without CRM: it has no ReconstructNet")
        images = self._batch(images)
        decoder_in = self.decoder_maps(images, drs_delta)
        dependence = CamDependence()
        dependence.add(self.reconstructor, decoder_in, self.reconstructor(decoder_in), images)
        return dependence.summary()

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, drs_delta: float | None = None, native: bool = False) -> torch.Tensor:
        """ReconstructNet's decoding of the CAMs in [0, 1]: (B, 3, H, W) at the input size, or
        with ``native`` at the size it decodes to (smaller when trained with ``recon_size``)."""
        images = self._batch(images)
        return self.decode(self.decoder_maps(images, drs_delta), None if native else images.shape[-2:])

    @torch.no_grad()
    def decode(self, decoder_in: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
        """ReconstructNet's picture of :meth:`decoder_maps` output, in [0, 1]: (B, 3, r, r) at the
        size it decodes to, or resized to ``size``."""
        if self.reconstructor is None:
            raise ValueError(f"{self.name} was trained without CRM: it has no ReconstructNet")
        recon = from_tanh_range(self.reconstructor(decoder_in))
        return recon if size is None else resize_reconstruction(recon, tuple(size))


def list_checkpoints(directory: str | os.PathLike = "checkpoints") -> list[Path]:
    """Checkpoint files (``*.pt``) in ``directory``, sorted by name; loadability not checked."""
    root = Path(directory)
    return sorted(p for p in root.glob("*.pt") if p.is_file()) if root.is_dir() else []


#: One on-disk SLIC cache per (n_segments, compactness), the most recent SUPERPIXEL_CACHES of them:
#: the dashboard's sliders can ask for any pair, and each cache object is kept only to be reused.
SUPERPIXEL_CACHES = 16
_CACHES: BoundedDict = BoundedDict(SUPERPIXEL_CACHES)  # (n_segments, compactness) -> SuperpixelCache
_CACHES_LOCK = threading.Lock()


def superpixels(image: torch.Tensor | np.ndarray, n_segments: int = 64, compactness: float = 10.0) -> np.ndarray:
    """SLIC labels (H, W) of an image, cached on disk by image content and parameters."""
    key = (int(n_segments), float(compactness))
    with _CACHES_LOCK:
        cache = _CACHES.get(key)
        if cache is None:
            cache = _CACHES[key] = SuperpixelCache(n_segments=key[0], compactness=key[1])
    return cache.get(image)


def superpixel_cache_sizes() -> tuple[int, int]:
    """(SLIC parameter sets with a cache object kept, their bound)."""
    with _CACHES_LOCK:
        return len(_CACHES), SUPERPIXEL_CACHES


def dataset_config(model: "CamModel | Checkpoint", data_root: str | None = None) -> dict[str, Any]:
    """The keyword arguments of :func:`crm_core.data.build_dataset` (all but the split) that
    rebuild the dataset a checkpoint was trained on, at its image size: the one place they are read."""
    checkpoint = model.checkpoint if isinstance(model, CamModel) else model
    train = checkpoint.train_config
    return dict(name=checkpoint.dataset, image_size=checkpoint.image_size,
                data_root=data_root or train.get("data_root"), num_classes=len(checkpoint.class_names),
                seed=int(train.get("seed", 0)), appearance=train.get("appearance", "random"),
                max_objects=int(train.get("max_objects", 1)))


def dataset_for(model: "CamModel | Checkpoint", split: str, data_root: str | None = None, superpixels: SuperpixelCache | None = None):
    """The dataset a checkpoint was trained on, at its image size, for ``split``.

    Synthetic data is rebuilt from the recorded seed and class count; real data needs its
    folder (``data_root``, default: the one recorded at training time).
    """
    from crm_core.data import build_dataset

    return build_dataset(split=split, superpixels=superpixels, **dataset_config(model, data_root))
