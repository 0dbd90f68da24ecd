"""Pretrained weights without surprises: torchvision's cache, a user file, or nothing.

``--weights imagenet`` must never hang trying to download on an offline machine, so the
cache file is looked up first and a missing file raises :class:`WeightsNotFoundError` with
the URL to fetch and the exact path to put it. ``auto`` falls back to random
initialisation and says so (the caller records the resolved source in the run config).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


class WeightsNotFoundError(RuntimeError):
    """Requested pretrained weights are not available offline."""


@dataclass(frozen=True)
class ResolvedWeights:
    state_dict: dict[str, torch.Tensor] | None
    source: str  # "imagenet:<file>", "file:<path>", "random", "random (imagenet not cached)"


def _cache_path(weights_enum: Any) -> Path:
    filename = os.path.basename(weights_enum.url)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def download_allowed() -> bool:
    """Downloads are opt-in (``CRM_LAB_ALLOW_DOWNLOAD=1``): the default is never to touch the network."""
    return os.environ.get("CRM_LAB_ALLOW_DOWNLOAD", "") == "1"


def resolve_weights(spec: str, weights_enum: Any, what: str) -> ResolvedWeights:
    """Resolve ``spec`` ("imagenet" | "none" | "random" | "auto" | a file path) to a state dict.

    Args:
        spec: what the user asked for.
        weights_enum: a torchvision weights enum member, e.g. ``ResNet50_Weights.IMAGENET1K_V2``.
        what: human name for messages ("resnet50 backbone", "VGG19 perceptual features").
    """
    if spec in ("none", "random"):
        return ResolvedWeights(None, "random")
    if spec in ("imagenet", "auto"):
        cached = _cache_path(weights_enum)
        if cached.is_file() or download_allowed():
            state = weights_enum.get_state_dict(progress=False, check_hash=False)
            return ResolvedWeights(state, f"imagenet:{cached.name}")
        if spec == "auto":
            log.warning("%s: ImageNet weights not cached at %s; using random initialisation", what, cached)
            return ResolvedWeights(None, "random (imagenet not cached)")
        raise WeightsNotFoundError(
            f"{what}: ImageNet weights are not available offline.\n"
            f"  Download {weights_enum.url}\n"
            f"  and put it at {cached}\n"
            f"  (or pass a file path instead of 'imagenet', or set CRM_LAB_ALLOW_DOWNLOAD=1 on a machine with internet)."
        )
    path = Path(spec).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"{what}: weights file {path} does not exist (expected 'imagenet', 'none' or a file path)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file named
        raise WeightsNotFoundError(f"{what}: cannot load weights file {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsNotFoundError(f"{what}: {path} does not hold a state dict")
    return ResolvedWeights(state, f"file:{path}")
