"""Tiny name -> constructor registry of model variants (timm ``_registry.py`` style).

CLI ``choices`` come from :data:`MODEL_VARIANTS`, and tests are parametrised over it.
"""
from __future__ import annotations

from typing import Callable

from crm_core.models.classifier import CamClassifier, ModelConfig, build_classifier

# variant name -> function that fills in the variant's fixed parts of a ModelConfig
MODEL_VARIANTS: dict[str, Callable[[ModelConfig], ModelConfig]] = {}


def register_model(name: str) -> Callable[[Callable[[ModelConfig], ModelConfig]], Callable[[ModelConfig], ModelConfig]]:
    def wrap(fn: Callable[[ModelConfig], ModelConfig]) -> Callable[[ModelConfig], ModelConfig]:
        MODEL_VARIANTS[name] = fn
        return fn

    return wrap


@register_model("resnet")
def _resnet(cfg: ModelConfig) -> ModelConfig:
    cfg.drs = False
    return cfg


@register_model("resnet_drs")
def _resnet_drs(cfg: ModelConfig) -> ModelConfig:
    cfg.drs = True
    return cfg


def create_model(cfg: ModelConfig, load_pretrained: bool = True) -> CamClassifier:
    """Build the variant named by ``cfg.variant`` (its fixed parts override ``cfg``)."""
    if cfg.variant not in MODEL_VARIANTS:
        raise ValueError(f"unknown model {cfg.variant!r}; choose from {sorted(MODEL_VARIANTS)}")
    return build_classifier(MODEL_VARIANTS[cfg.variant](cfg), load_pretrained=load_pretrained)
