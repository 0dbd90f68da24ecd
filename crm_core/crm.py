"""The CAM-driven Reconstruction Module (CRM) as one network: classifier + ReconstructNet.

What ReconstructNet decodes is configuration (``DECODER_INPUTS``):

- ``gradcampp`` (default): the maps of every class by the registry's default CAM method
  (:func:`crm_core.cams.class_cams`: closed-form Grad-CAM++ from the same forward pass,
  differentiable), each divided by its own maximum.
- ``scores``: the raw, signed class-score maps ``W[c] . A`` of every class, unnormalised -- what
  the official SSC code decodes (``net/decoder.py`` there). Max-normalising each map raises the
  maps of absent classes to peak 1; the raw scores keep "how much" as well as "where".
"""
from __future__ import annotations

import torch
from torch import nn

from crm_core.cams.registry import class_cams
from crm_core.models.classifier import CamClassifier
from crm_core.models.decoder import ReconstructNet

DECODER_INPUTS = ("gradcampp", "scores")
# The divisor floor of the max-normalisation inside training (decoder input, alignment map): a map
# whose peak is below it is not blown up to 1, so the normalisation's gradient stays bounded.
# The maps that are scored or shown are normalised scale-free (crm_core.cams.utils.normalize_cams).
TRAINING_MIN_PEAK = 1e-8


def class_score_maps(features: torch.Tensor, fc_weight: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) features, (C, K) head -> (B, C, h, w) signed score maps (GAP of map c = logit c - bias)."""
    return torch.einsum("ck,bkhw->bchw", fc_weight, features)


def decoder_input(classifier: CamClassifier, features: torch.Tensor, kind: str = "gradcampp") -> torch.Tensor:
    """What ReconstructNet decodes, (B, C, h, w), from ``classifier``'s ``features`` (B, K, h, w) of a
    forward pass already run; differentiable in features and head."""
    if kind == "gradcampp":
        return class_cams(classifier, features, min_peak=TRAINING_MIN_PEAK)
    if kind == "scores":
        return class_score_maps(features, classifier.fc.weight)
    raise ValueError(f"unknown decoder input {kind!r}; choose from {list(DECODER_INPUTS)}")


class CRMNet(nn.Module):
    """Classifier + ReconstructNet as one module, so one DDP wrapper syncs both.

    forward returns logits, features, all-class Grad-CAM++ maps (max-normalised; the alignment
    loss uses the true class's), the decoder's input and the reconstruction (the last three
    None without CRM).
    """

    def __init__(self, classifier: CamClassifier, reconstructor: ReconstructNet | None,
                 decoder_input_kind: str = "gradcampp") -> None:
        super().__init__()
        if decoder_input_kind not in DECODER_INPUTS:
            raise ValueError(f"unknown decoder input {decoder_input_kind!r}; choose from {list(DECODER_INPUTS)}")
        self.classifier = classifier
        self.reconstructor = reconstructor
        self.decoder_input_kind = decoder_input_kind

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor | None]:
        logits, features = self.classifier(images)
        if self.reconstructor is None:
            return {"logits": logits, "features": features, "cams": None, "decoder_in": None, "recon": None}
        cams = class_cams(self.classifier, features, min_peak=TRAINING_MIN_PEAK)  # (B, C, h, w), default method
        decoder_in = cams if self.decoder_input_kind == "gradcampp" else decoder_input(
            self.classifier, features, self.decoder_input_kind)
        return {"logits": logits, "features": features, "cams": cams, "decoder_in": decoder_in,
                "recon": self.reconstructor(decoder_in)}
