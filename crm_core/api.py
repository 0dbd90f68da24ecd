"""The small public API for the dashboard and notebooks.

    from crm_core.api import CamModel, superpixels
    model = CamModel.load("checkpoints/drs_crm.pt")
    image = model.preprocess("cat.jpg")                  # (3, H, W) float in [0, 1]
    pred = model.predict(image[None])                    # probabilities + all-class CAMs
    cam = model.cam(image[None], classes=[2])            # (1, H, W) Grad-CAM++ in [0, 1]
    cam_capped = model.cam(image[None], drs_delta=0.3)   # DRS cap overridden at inference
    recon = model.reconstruct(image[None])               # (1, 3, H, W) in [0, 1]
    segments = superpixels(image, n_segments=64)         # cached SLIC labels

Grad-CAM++ here is the closed form from the same forward pass as the logits (no backward).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from crm_core.cams.closed_form import gradcampp_closed_form
from crm_core.cams.utils import normalize_cams
from crm_core.checkpoints import Checkpoint, CheckpointError, load_checkpoint
from crm_core.data.superpixels import SuperpixelCache
from crm_core.data.transforms import load_image
from crm_core.metrics import CamDependence, describe_cam_dependence
from crm_core.models import delta_override, from_tanh_range, resize_reconstruction
from crm_core.models.crm import decoder_input

__all__ = ["CamModel", "Prediction", "CheckpointError", "dataset_for", "describe_cam_dependence", "list_checkpoints",
           "superpixels", "upsample_normalised"]


@dataclass
class Prediction:
    probs: torch.Tensor  # (B, C) softmax probabilities
    cams: torch.Tensor  # (B, C, h, w) Grad-CAM++ of every class, max-normalised per map

    def top(self, k: int = 5) -> list[list[tuple[int, float]]]:
        """Top-k (class index, probability) per image."""
        values, indices = self.probs.topk(min(k, self.probs.shape[1]), dim=1)
        return [[(int(i), float(v)) for i, v in zip(row_i, row_v)] for row_i, row_v in zip(indices, values)]


class CamModel:
    """A checkpoint loaded for inference (eval mode, no gradients)."""

    def __init__(self, checkpoint: Checkpoint, device: str | torch.device = "cpu") -> None:
        self.checkpoint = checkpoint
        self.device = torch.device(device)
        self.classifier = checkpoint.classifier.to(self.device).eval()
        self.reconstructor = None if checkpoint.reconstructor is None else checkpoint.reconstructor.to(self.device).eval()

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "CamModel":
        return cls(load_checkpoint(path, map_location="cpu"), device)

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
    def has_reconstructor(self) -> bool:
        return self.reconstructor is not None

    def describe(self) -> str:
        """One line a person can read: what this checkpoint is."""
        cfg, train = self.checkpoint.model_config, self.checkpoint.train_config
        crm = "CRM" if self.has_reconstructor else "no CRM"
        drs = f"DRS delta={'learnable' if cfg.drs_learnable else cfg.drs_delta}" if cfg.drs else "no DRS"
        return (f"{self.name}: {cfg.variant} ({cfg.arch}, {drs}, {crm}), {self.checkpoint.dataset} "
                f"{self.image_size}px, {len(self.class_names)} classes, step {self.checkpoint.step}, "
                f"weights {self.checkpoint.weights_source}, lr {train.get('cls_lr', '?')}")

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

    @torch.no_grad()
    def predict(self, images: torch.Tensor, drs_delta: float | None = None) -> Prediction:
        images = self._batch(images)
        with delta_override(drs_delta):
            logits, features = self.classifier(images)
        cams = normalize_cams(gradcampp_closed_form(features, self.classifier.fc.weight))  # (B, C, h, w)
        return Prediction(F.softmax(logits, dim=1), cams)

    @torch.no_grad()
    def cam(
        self,
        images: torch.Tensor,
        classes: Sequence[int] | torch.Tensor | None = None,
        drs_delta: float | None = None,
        size: int | tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Grad-CAM++ of ``classes`` (default: predicted) upsampled to ``size`` (default: input size).

        Returns (B, H, W) max-normalised to [0, 1].
        """
        images = self._batch(images)
        with delta_override(drs_delta):
            logits, features = self.classifier(images)
        if classes is None:
            classes = logits.argmax(dim=1)
        classes = torch.as_tensor(classes, device=self.device).long().reshape(-1)
        if classes.numel() == 1 and len(images) > 1:
            classes = classes.expand(len(images))
        if classes.min() < 0 or classes.max() >= len(self.class_names):
            raise ValueError(f"class index out of range 0..{len(self.class_names) - 1}")
        return self.cams_from_features(features, classes, size or tuple(images.shape[-2:]))

    def cams_from_features(self, features: torch.Tensor, classes: torch.Tensor,
                           size: int | tuple[int, int]) -> torch.Tensor:
        """Grad-CAM++ (closed form) of one class per image from the classifier's features
        (B, K, h, w), upsampled to ``size`` and max-normalised: (B, H, W) in [0, 1]."""
        return upsample_normalised(gradcampp_closed_form(features, self.classifier.fc.weight, classes), size)

    @property
    def decoder_input_kind(self) -> str:
        """What this checkpoint's ReconstructNet decodes (``crm_core.models.crm.DECODER_INPUTS``)."""
        return str(self.checkpoint.train_config.get("decoder_input", "gradcampp"))

    def decoder_input(self, features: torch.Tensor) -> torch.Tensor:
        """The (B, C, h, w) maps this checkpoint's ReconstructNet decodes, from the classifier's features."""
        return decoder_input(features, self.classifier.fc.weight, self.decoder_input_kind)

    @torch.no_grad()
    def cam_dependence(self, images: torch.Tensor, drs_delta: float | None = None) -> dict[str, float]:
        """Does ReconstructNet use the CAMs? Reconstruction L1 of ``images`` (B >= 2) with their own
        CAMs against CAMs shuffled across the batch: ``recon_l1``, ``recon_l1_shuffled``,
        ``cam_dependence`` (~0: the decoder ignores the CAM) -- :class:`crm_core.metrics.CamDependence`."""
        if self.reconstructor is None:
            raise ValueError(f"{self.name} was trained without CRM: it has no ReconstructNet")
        images = self._batch(images)
        with delta_override(drs_delta):
            _, features = self.classifier(images)
        decoder_in = self.decoder_input(features)
        dependence = CamDependence()
        dependence.add(self.reconstructor, decoder_in, self.reconstructor(decoder_in), images)
        return dependence.summary()

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, drs_delta: float | None = None, native: bool = False) -> torch.Tensor:
        """ReconstructNet's decoding of the CAMs in [0, 1]: (B, 3, H, W) at the input size, or
        with ``native`` at the size it decodes to (smaller when trained with ``recon_size``)."""
        if self.reconstructor is None:
            raise ValueError(f"{self.name} was trained without CRM: it has no ReconstructNet")
        images = self._batch(images)
        with delta_override(drs_delta):
            _, features = self.classifier(images)
        recon = from_tanh_range(self.reconstructor(self.decoder_input(features)))
        return recon if native else resize_reconstruction(recon, images.shape[-2:])


def upsample_normalised(cams: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """(B, h, w) raw CAMs -> (B, H, W) bilinear-upsampled, max-normalised to [0, 1]."""
    if isinstance(size, int):
        size = (size, size)
    up = F.interpolate(cams[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    return normalize_cams(up.clamp_min(0))


def list_checkpoints(directory: str | os.PathLike = "checkpoints") -> list[Path]:
    """Checkpoint files (``*.pt``) in ``directory``, sorted by name; loadability not checked."""
    root = Path(directory)
    return sorted(p for p in root.glob("*.pt") if p.is_file()) if root.is_dir() else []


_CACHES: dict[tuple[int, float], SuperpixelCache] = {}


def superpixels(image: torch.Tensor | np.ndarray, n_segments: int = 64, compactness: float = 10.0) -> np.ndarray:
    """SLIC labels (H, W) of an image, cached on disk by image content and parameters."""
    key = (int(n_segments), float(compactness))
    if key not in _CACHES:
        _CACHES[key] = SuperpixelCache(n_segments=key[0], compactness=key[1])
    return _CACHES[key].get(image)


def dataset_for(model: "CamModel | Checkpoint", split: str, data_root: str | None = None, superpixels: SuperpixelCache | None = None):
    """The dataset a checkpoint was trained on, at its image size, for ``split``.

    Synthetic data is rebuilt from the recorded seed and class count; real data needs its
    folder (``data_root``, default: the one recorded at training time).
    """
    from crm_core.data import build_dataset

    checkpoint = model.checkpoint if isinstance(model, CamModel) else model
    train = checkpoint.train_config
    return build_dataset(
        checkpoint.dataset, split, image_size=checkpoint.image_size,
        data_root=data_root or train.get("data_root"), num_classes=len(checkpoint.class_names),
        seed=int(train.get("seed", 0)), superpixels=superpixels, appearance=train.get("appearance", "random"),
    )
