"""Tiny name -> constructor registry of model variants (timm ``_registry.py`` style).

A variant fixes what it is about (DRS on or off) and leaves the backbone to ``--arch``: the
names ``resnet`` / ``resnet_drs`` are historical and mean "plain" / "with DRS" for every
backbone of :data:`crm_core.models.backbones.BACKBONES` (EfficientNet included). An entry
returns a new config; the caller's is never changed. CLI ``choices`` come from
:data:`MODEL_VARIANTS`, and tests are parametrised over it.
"""
from __future__ import annotations

from dataclasses import replace
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
    return replace(cfg, drs=False)


@register_model("resnet_drs")
def _resnet_drs(cfg: ModelConfig) -> ModelConfig:
    return replace(cfg, drs=True)


def create_model(cfg: ModelConfig, load_pretrained: bool = True) -> CamClassifier:
    """Build the variant named by ``cfg.variant`` (its fixed parts override ``cfg``)."""
    if cfg.variant not in MODEL_VARIANTS:
        raise ValueError(f"unknown model {cfg.variant!r}; choose from {sorted(MODEL_VARIANTS)}")
    return build_classifier(MODEL_VARIANTS[cfg.variant](cfg), load_pretrained=load_pretrained)
